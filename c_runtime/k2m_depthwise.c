/* k2m runtime: depthwise convolution, int8 and float.
 *
 * Weights are CMSIS-NN's depthwise layout (1, kh, kw, in_c * mult): output
 * channel c * mult + m reads input channel c, where mult = out_c / in_c is
 * Keras's depth_multiplier.  A BatchNormalization with no conv before it
 * also runs here, as a 1x1 depthwise convolution with mult 1.
 */
#include "k2m.h"
#include "k2m_math.h"

/* Depth multiplier 1 (MobileNet, DS-CNN): four channels at a time, so each
 * tap reads 4 contiguous input and weight bytes.  On the DSP path those are
 * one word each, widened with SXTAB16 (adding the input offset per lane)
 * and SXTB16, and multiplied lane by lane with SMLABB/SMLATT into 4
 * accumulators; exact int32 either way, so both paths agree bit for bit. */
static void depthwise_mult1_block4(const k2m_window *g, int32_t input_offset,
                                   const int8_t *input, const int8_t *weights,
                                   int32_t y0, int32_t x0, int32_t ky0, int32_t ky1,
                                   int32_t kx0, int32_t kx1, int32_t c, int32_t acc[4])
{
    const int32_t ch = g->in_c;
    /* Locals, not acc[]: gcc keeps them in registers (through the array it
     * stored all four after every tap). */
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    int32_t ky, kx;
#if K2M_DSP
    const int32_t off2 = (int32_t)(((uint32_t)input_offset & 0xFFFFu)
                                   | ((uint32_t)input_offset << 16));
#endif

    for (ky = ky0; ky < ky1; ++ky) {
        const int8_t *in_row = input + ((y0 + ky * g->dil_h) * g->in_w) * ch + c;
        const int8_t *w_row = weights + ky * g->k_w * ch + c;
        for (kx = kx0; kx < kx1; ++kx) {
            const int8_t *ip = in_row + (x0 + kx * g->dil_w) * ch;
            const int8_t *wp = w_row + kx * ch;
#if K2M_DSP
            const int32_t in32 = k2m_ld32(ip), w32 = k2m_ld32(wp);
            const int32_t in02 = __sxtab16(off2, in32), in13 = k2m_sxtab16_ror8(off2, in32);
            const int32_t w02 = __sxtb16(w32), w13 = k2m_sxtb16_ror8(w32);
            a0 = __smlabb(in02, w02, a0);
            a2 = __smlatt(in02, w02, a2);
            a1 = __smlabb(in13, w13, a1);
            a3 = __smlatt(in13, w13, a3);
#else
            a0 += (ip[0] + input_offset) * wp[0];
            a1 += (ip[1] + input_offset) * wp[1];
            a2 += (ip[2] + input_offset) * wp[2];
            a3 += (ip[3] + input_offset) * wp[3];
#endif
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* Per-output requantization.  On the DSP path k2m_rq_apply, bit-identical
 * to k2m_requantize without its 64-bit division (a library call of ~100
 * instructions on the M4, which made requantization most of a 3x3
 * depthwise layer's cost: 9 MACs per output); the portable reference keeps
 * k2m_requantize. */
static inline int32_t depthwise_requantize(int32_t acc, int32_t multiplier,
                                           int32_t shift)
{
#if K2M_DSP
    k2m_rq r;
    k2m_rq_init(&r, multiplier, shift);
    return k2m_rq_apply(&r, acc);
#else
    return k2m_requantize(acc, multiplier, shift);
#endif
}

#if K2M_DSP
/* k2m_rq_apply without its final k2m_sat30, for a channel whose multiplier
 * is not INT32_MIN and whose shift is <= 0 (no left shift, the usual
 * case; blocks with a left shift take k2m_rq_apply).  When
 * [act_min - out_off, act_max - out_off] lies inside sat30's range
 * [-2^30, 2^30 - 1] (any int8 layer), then
 *   clamp(sat30(v) + out_off, act_min, act_max)
 *     == clamp(v, act_min - out_off, act_max - out_off) + out_off,
 * so the interior path clamps once instead of saturating and clamping. */
static inline int32_t depthwise_rq_nosat(const k2m_rq *r, int32_t acc)
{
    const int64_t y = (int64_t)acc * (int64_t)r->multiplier + ((int64_t)1 << 30);
    const int32_t x = (int32_t)(uint32_t)((uint64_t)y >> 31);

    return k2m_asr(x, r->right)
        + ((x & r->mask) > r->half + (int32_t)((uint32_t)x >> 31) ? 1 : 0);
}

/* Channels [oc_from, out_c) of one output pixel: the generic loops, which
 * take any window (border pixels included) and any depth multiplier. */
static void depthwise_pixel(const k2m_window *g, const k2m_quant_s8 *q,
                            const int8_t *input, const int8_t *weights,
                            const int32_t *bias, int8_t *output, int32_t y0,
                            int32_t ky0, int32_t ky1, int32_t ox, int32_t oc_from)
{
    const int32_t in_c = g->in_c, out_c = g->out_c, mult = out_c / in_c;
    const int32_t blocked = mult == 1 ? out_c & ~3 : 0;
    const int32_t x0 = ox * g->stride_w - g->pad_left;
    int32_t oc, ky, kx, kx0, kx1, j;

    k2m_tap_range(x0, g->in_w, g->k_w, g->dil_w, &kx0, &kx1);
    for (oc = oc_from; oc < blocked; oc += 4) {
        int32_t acc[4];
        for (j = 0; j < 4; ++j) {
            acc[j] = bias ? bias[oc + j] : 0;
        }
        depthwise_mult1_block4(g, q->input_offset, input, weights, y0, x0,
                               ky0, ky1, kx0, kx1, oc, acc);
        for (j = 0; j < 4; ++j) {
            const int32_t v = depthwise_requantize(acc[j], q->multiplier[oc + j],
                                                   q->shift[oc + j]) + q->output_offset;
            output[oc + j] = (int8_t)k2m_clamp_s32(v, q->act_min, q->act_max);
        }
    }
    for (oc = oc_from > blocked ? oc_from : blocked; oc < out_c; ++oc) {
        const int8_t *in_c0 = input + oc / mult;
        int32_t acc = bias ? bias[oc] : 0;
        for (ky = ky0; ky < ky1; ++ky) {
            const int32_t iy = y0 + ky * g->dil_h;
            const int8_t *w_row = weights + (ky * g->k_w) * out_c + oc;
            for (kx = kx0; kx < kx1; ++kx) {
                const int32_t ix = x0 + kx * g->dil_w;
                const int32_t v = in_c0[(iy * g->in_w + ix) * in_c] + q->input_offset;
                acc += v * w_row[kx * out_c];
            }
        }
        acc = depthwise_requantize(acc, q->multiplier[oc], q->shift[oc]) + q->output_offset;
        output[oc] = (int8_t)k2m_clamp_s32(acc, q->act_min, q->act_max);
    }
}

/* DSP, depth multiplier 1: every output pixel's 4-channel blocks, block by
 * block, so each block's requantization constants (and for 3x3 its widened
 * weights and offset-folded bias) are set up once for all pixels.  The
 * interior pixels [oy_lo, oy_hi) x [ox_lo, ox_hi), whose whole window lies
 * inside the input, walk their taps with fixed pointer strides (no per-tap
 * range logic); border pixels take depthwise_mult1_block4's tap ranges.
 * Same int32 sums (mod 2^32) and requantization as the portable path, so
 * the outputs are bit-identical. */
static void depthwise_interior(const k2m_window *g, const k2m_quant_s8 *q,
                                   const int8_t *input, const int8_t *weights,
                                   const int32_t *bias, int8_t *output,
                                   int32_t oy_lo, int32_t oy_hi,
                                   int32_t ox_lo, int32_t ox_hi, int32_t blocked)
{
    const int32_t ch = g->in_c, k_h = g->k_h, k_w = g->k_w;
    const int32_t tap_step = g->dil_w * ch;
    const int32_t row_step = g->dil_h * g->in_w * ch - k_w * tap_step;
    const int32_t row2 = row_step + tap_step;   /* last tap of a row to the next row */
    const int32_t out_off = q->output_offset, lo = q->act_min, hi = q->act_max;
    const int32_t off2 = (int32_t)(((uint32_t)q->input_offset & 0xFFFFu)
                                   | ((uint32_t)q->input_offset << 16));
    /* See depthwise_rq_nosat: clamp bounds relative to the output offset. */
    const int64_t lo64 = (int64_t)lo - out_off, hi64 = (int64_t)hi - out_off;
    const int range_ok = lo <= hi && lo64 >= -((int64_t)1 << 30)
                         && hi64 <= ((int64_t)1 << 30) - 1;
    const int32_t lo2 = range_ok ? (int32_t)lo64 : 0, hi2 = range_ok ? (int32_t)hi64 : 0;
    /* The full int8 range with |out_off| <= 2^15 - 129, so that
     * [lo2, hi2] lies inside int16: then clamp(v, lo2, hi2) + out_off ==
     * SSAT8(SSAT16(v) + out_off), three instructions. */
    const int full8 = range_ok && lo == -128 && hi == 127
                      && out_off >= -32767 + 128 && out_off <= 32767 - 128;
    int32_t oc, ox, j;

    for (oc = 0; oc < blocked; oc += 4) {
        k2m_rq rq[4];
        int fast = range_ok;
        int32_t b[4], e[4] = {0, 0, 0, 0}, wx[18] = {0};
        int32_t oy;

        for (j = 0; j < 4; ++j) {
            k2m_rq_init(&rq[j], q->multiplier[oc + j], q->shift[oc + j]);
            fast = fast && q->multiplier[oc + j] != INT32_MIN && rq[j].left == 0;
            b[j] = bias ? bias[oc + j] : 0;
        }
        if (k_h == 3 && k_w == 3) {
            /* sum (x + off) * w == sum x * w + off * sum w, exact mod 2^32
             * like the SMLA chain itself. */
            int32_t s02 = 0, s13 = 0, t;
            for (t = 0; t < 9; ++t) {
                /* per-lane sums of 9 int8 values: no 16-bit overflow */
                const int32_t w32 = k2m_ld32(weights + t * ch + oc);
                s02 = __sxtab16(s02, w32);
                s13 = k2m_sxtab16_ror8(s13, w32);
                /* the block's 9 taps widened once, for all its pixels */
                wx[2 * t] = __sxtb16(w32);
                wx[2 * t + 1] = k2m_sxtb16_ror8(w32);
            }
            e[0] = (int32_t)((uint32_t)b[0] + (uint32_t)(int16_t)(s02 & 0xFFFF) * (uint32_t)q->input_offset);
            e[1] = (int32_t)((uint32_t)b[1] + (uint32_t)(int16_t)(s13 & 0xFFFF) * (uint32_t)q->input_offset);
            e[2] = (int32_t)((uint32_t)b[2] + (uint32_t)k2m_asr(s02, 16) * (uint32_t)q->input_offset);
            e[3] = (int32_t)((uint32_t)b[3] + (uint32_t)k2m_asr(s13, 16) * (uint32_t)q->input_offset);
        }
        for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        const int row_in = oy >= oy_lo && oy < oy_hi;
        int8_t *op = output + oy * g->out_w * g->out_c + oc;
        int32_t ky0, ky1;
        k2m_tap_range(y0, g->in_h, k_h, g->dil_h, &ky0, &ky1);
        for (ox = 0; ox < g->out_w; ++ox, op += g->out_c) {
            int32_t a0 = b[0], a1 = b[1], a2 = b[2], a3 = b[3];
            const int8_t *ip = input + (y0 * g->in_w + ox * g->stride_w - g->pad_left) * ch + oc;
            const int8_t *wp = weights + oc;
            int32_t ky, kx;

            if (!row_in || ox < ox_lo || ox >= ox_hi) {
                /* border pixel: the generic tap ranges */
                int32_t acc[4], kx0, kx1;
                const int32_t x0 = ox * g->stride_w - g->pad_left;
                k2m_tap_range(x0, g->in_w, k_w, g->dil_w, &kx0, &kx1);
                acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
                depthwise_mult1_block4(g, q->input_offset, input, weights, y0, x0,
                                       ky0, ky1, kx0, kx1, oc, acc);
                a0 = acc[0]; a1 = acc[1]; a2 = acc[2]; a3 = acc[3];
            } else {

#define K2M_DW_TAP(IP, WP)                                                  \
            do {                                                            \
                const int32_t in32 = k2m_ld32(IP), w32 = k2m_ld32(WP);      \
                const int32_t in02 = __sxtab16(off2, in32);                 \
                const int32_t in13 = k2m_sxtab16_ror8(off2, in32);          \
                const int32_t w02 = __sxtb16(w32), w13 = k2m_sxtb16_ror8(w32); \
                a0 = __smlabb(in02, w02, a0);                               \
                a2 = __smlatt(in02, w02, a2);                               \
                a1 = __smlabb(in13, w13, a1);                               \
                a3 = __smlatt(in13, w13, a3);                               \
            } while (0)
            if (k_h == 3 && k_w == 3) {
                /* Input offset folded into e[] (all taps valid), weights
                 * pre-widened in wx[], the 9 taps fully unrolled with a
                 * walking input pointer: 9 instructions a tap. */
                a0 = e[0]; a1 = e[1]; a2 = e[2]; a3 = e[3];
#define K2M_DW_TAP0(IP, T)                                                  \
                do {                                                        \
                    const int32_t in32 = k2m_ld32(IP);                      \
                    const int32_t in02 = __sxtb16(in32);                    \
                    const int32_t in13 = k2m_sxtb16_ror8(in32);             \
                    const int32_t w02 = wx[2 * (T)], w13 = wx[2 * (T) + 1]; \
                    a0 = __smlabb(in02, w02, a0);                           \
                    a2 = __smlatt(in02, w02, a2);                           \
                    a1 = __smlabb(in13, w13, a1);                           \
                    a3 = __smlatt(in13, w13, a3);                           \
                } while (0)
                K2M_DW_TAP0(ip, 0); ip += tap_step;
                K2M_DW_TAP0(ip, 1); ip += tap_step;
                K2M_DW_TAP0(ip, 2); ip += row2;
                K2M_DW_TAP0(ip, 3); ip += tap_step;
                K2M_DW_TAP0(ip, 4); ip += tap_step;
                K2M_DW_TAP0(ip, 5); ip += row2;
                K2M_DW_TAP0(ip, 6); ip += tap_step;
                K2M_DW_TAP0(ip, 7); ip += tap_step;
                K2M_DW_TAP0(ip, 8);
#undef K2M_DW_TAP0
            } else {
                for (ky = 0; ky < k_h; ++ky, ip += row_step) {
                    for (kx = 0; kx < k_w; ++kx, ip += tap_step, wp += ch) {
                        K2M_DW_TAP(ip, wp);
                    }
                }
            }
            }
#undef K2M_DW_TAP
            if (fast && full8) {
                op[0] = (int8_t)__ssat(__ssat(depthwise_rq_nosat(&rq[0], a0), 16) + out_off, 8);
                op[1] = (int8_t)__ssat(__ssat(depthwise_rq_nosat(&rq[1], a1), 16) + out_off, 8);
                op[2] = (int8_t)__ssat(__ssat(depthwise_rq_nosat(&rq[2], a2), 16) + out_off, 8);
                op[3] = (int8_t)__ssat(__ssat(depthwise_rq_nosat(&rq[3], a3), 16) + out_off, 8);
            } else if (fast) {
                op[0] = (int8_t)(k2m_clamp_s32(depthwise_rq_nosat(&rq[0], a0), lo2, hi2) + out_off);
                op[1] = (int8_t)(k2m_clamp_s32(depthwise_rq_nosat(&rq[1], a1), lo2, hi2) + out_off);
                op[2] = (int8_t)(k2m_clamp_s32(depthwise_rq_nosat(&rq[2], a2), lo2, hi2) + out_off);
                op[3] = (int8_t)(k2m_clamp_s32(depthwise_rq_nosat(&rq[3], a3), lo2, hi2) + out_off);
            } else {
                op[0] = (int8_t)k2m_clamp_s32(k2m_rq_apply(&rq[0], a0) + out_off, lo, hi);
                op[1] = (int8_t)k2m_clamp_s32(k2m_rq_apply(&rq[1], a1) + out_off, lo, hi);
                op[2] = (int8_t)k2m_clamp_s32(k2m_rq_apply(&rq[2], a2) + out_off, lo, hi);
                op[3] = (int8_t)k2m_clamp_s32(k2m_rq_apply(&rq[3], a3) + out_off, lo, hi);
            }
        }
        }
    }
}

void k2m_depthwise_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                             const int8_t *input, const int8_t *weights,
                             const int32_t *bias, int8_t *output)
{
    const int32_t out_c = g->out_c;
    int32_t oy, ox, ky0, ky1;
    int32_t ox_lo = 0, ox_hi = 0, oy_lo = 0, oy_hi = 0;   /* interior outputs */
    const int32_t blocked = out_c == g->in_c ? out_c & ~3 : 0;

    if (blocked > 0) {
        int32_t k0, k1;
        ox_lo = g->out_w;
        for (ox = 0; ox < g->out_w; ++ox) {
            k2m_tap_range(ox * g->stride_w - g->pad_left, g->in_w, g->k_w, g->dil_w,
                          &k0, &k1);
            if (k0 == 0 && k1 == g->k_w) {
                ox_lo = ox < ox_lo ? ox : ox_lo;
                ox_hi = ox + 1;
            }
        }
        oy_lo = g->out_h;
        for (oy = 0; oy < g->out_h; ++oy) {
            k2m_tap_range(oy * g->stride_h - g->pad_top, g->in_h, g->k_h, g->dil_h,
                          &k0, &k1);
            if (k0 == 0 && k1 == g->k_h) {
                oy_lo = oy < oy_lo ? oy : oy_lo;
                oy_hi = oy + 1;
            }
        }
        if (ox_hi <= ox_lo || oy_hi <= oy_lo) {
            ox_lo = ox_hi = oy_lo = oy_hi = 0;
        }
        depthwise_interior(g, q, input, weights, bias, output, oy_lo, oy_hi,
                           ox_lo, ox_hi, blocked);
    }
    if (blocked == out_c) {
        return;
    }

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        int8_t *out_row = output + oy * g->out_w * out_c;
        k2m_tap_range(y0, g->in_h, g->k_h, g->dil_h, &ky0, &ky1);
        for (ox = 0; ox < g->out_w; ++ox) {
            /* The 4-channel blocks are done already. */
            const int32_t from = blocked;
            depthwise_pixel(g, q, input, weights, bias, out_row + ox * out_c, y0,
                            ky0, ky1, ox, from);
        }
    }
}

#else /* portable reference */

void k2m_depthwise_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                             const int8_t *input, const int8_t *weights,
                             const int32_t *bias, int8_t *output)
{
    const int32_t in_c = g->in_c, out_c = g->out_c, mult = out_c / in_c;
    const int32_t blocked = mult == 1 ? out_c & ~3 : 0;
    int32_t oy, ox, oc, ky, kx, ky0, ky1, kx0, kx1, j;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        k2m_tap_range(y0, g->in_h, g->k_h, g->dil_h, &ky0, &ky1);
        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            k2m_tap_range(x0, g->in_w, g->k_w, g->dil_w, &kx0, &kx1);
            for (oc = 0; oc < blocked; oc += 4) {
                int32_t acc[4];
                for (j = 0; j < 4; ++j) {
                    acc[j] = bias ? bias[oc + j] : 0;
                }
                depthwise_mult1_block4(g, q->input_offset, input, weights, y0, x0,
                                       ky0, ky1, kx0, kx1, oc, acc);
                for (j = 0; j < 4; ++j) {
                    const int32_t v = depthwise_requantize(acc[j], q->multiplier[oc + j],
                                                           q->shift[oc + j]) + q->output_offset;
                    *output++ = (int8_t)k2m_clamp_s32(v, q->act_min, q->act_max);
                }
            }
            for (oc = blocked; oc < out_c; ++oc) {
                const int8_t *in_c0 = input + oc / mult;
                int32_t acc = bias ? bias[oc] : 0;
                for (ky = ky0; ky < ky1; ++ky) {
                    const int32_t iy = y0 + ky * g->dil_h;
                    const int8_t *w_row = weights + (ky * g->k_w) * out_c + oc;
                    for (kx = kx0; kx < kx1; ++kx) {
                        const int32_t ix = x0 + kx * g->dil_w;
                        const int32_t v = in_c0[(iy * g->in_w + ix) * in_c] + q->input_offset;
                        acc += v * w_row[kx * out_c];
                    }
                }
                acc = depthwise_requantize(acc, q->multiplier[oc], q->shift[oc]) + q->output_offset;
                *output++ = (int8_t)k2m_clamp_s32(acc, q->act_min, q->act_max);
            }
        }
    }
}
#endif

void k2m_depthwise_conv2d_f32(const k2m_window *g, float act_min, float act_max,
                              const float *input, const float *weights,
                              const float *bias, float *output)
{
    const int32_t in_c = g->in_c, out_c = g->out_c, mult = out_c / in_c;
    int32_t oy, ox, oc, ky, kx, ky0, ky1, kx0, kx1;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        k2m_tap_range(y0, g->in_h, g->k_h, g->dil_h, &ky0, &ky1);
        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            k2m_tap_range(x0, g->in_w, g->k_w, g->dil_w, &kx0, &kx1);
            for (oc = 0; oc < out_c; ++oc) {
                const float *in_c0 = input + oc / mult;
                float acc = bias ? bias[oc] : 0.0f;
                for (ky = ky0; ky < ky1; ++ky) {
                    const int32_t iy = y0 + ky * g->dil_h;
                    const float *w_row = weights + (ky * g->k_w) * out_c + oc;
                    for (kx = kx0; kx < kx1; ++kx) {
                        const int32_t ix = x0 + kx * g->dil_w;
                        acc += in_c0[(iy * g->in_w + ix) * in_c] * w_row[kx * out_c];
                    }
                }
                acc = acc < act_min ? act_min : acc;
                *output++ = acc > act_max ? act_max : acc;
            }
        }
    }
}
