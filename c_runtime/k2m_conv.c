/* k2m runtime: 2-D convolution (Keras Conv1D/Conv2D): int8 -> int8,
 * int8 -> int16 and float.
 *
 * Cross-correlation as Keras computes it (no kernel flip), NHWC input,
 * OHWI weights.  Taps that fall in the padding are skipped rather than
 * multiplied by a materialised zero: for int8 that zero is the real value 0,
 * i.e. (q + input_offset) == 0, so skipping is exact.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <stddef.h>

#if !K2M_DSP
/* The int8-input loop behind k2m_conv2d_s8 and k2m_conv2d_s8_s16: they
 * differ only in the width of the stored output element, so that is the
 * one branch (per output element, outside the MAC loops). */
static void conv2d_s8_core(const k2m_window *g, const k2m_quant_s8 *q,
                           const int8_t *input, const int8_t *weights,
                           const int32_t *bias, void *output,
                           int out_is_16bit)
{
    const int32_t in_w = g->in_w, in_c = g->in_c;
    const int32_t k_h = g->k_h, k_w = g->k_w;
    const int32_t dil_h = g->dil_h, dil_w = g->dil_w;
    const int32_t out_c = g->out_c;
    const int32_t input_offset = q->input_offset;
    /* Stride between consecutive taps, in input elements. */
    const int32_t tap_step_y = dil_h * in_w * in_c;
    const int32_t tap_step_x = dil_w * in_c;
    const int32_t w_row = k_w * in_c;
    const int32_t w_filter = k_h * w_row;
    int32_t n = 0;  /* index of the next output element */
    int32_t oy, ox, oc;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        int32_t ky0, ky1;
        k2m_tap_range(y0, g->in_h, k_h, dil_h, &ky0, &ky1);

        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            int32_t kx0, kx1;
            /* First valid tap of this window; the loops below only walk
             * pointers from here. */
            const int8_t *in_base;
            k2m_tap_range(x0, in_w, k_w, dil_w, &kx0, &kx1);
            /* An empty window (all taps in the padding) leaves in_base
             * unused; it must still not point outside the array. */
            in_base = (ky0 < ky1 && kx0 < kx1)
                ? input + ((y0 + ky0 * dil_h) * in_w + (x0 + kx0 * dil_w)) * in_c
                : input;

            for (oc = 0; oc < out_c; ++oc) {
                const int8_t *w_base = weights + oc * w_filter + ky0 * w_row + kx0 * in_c;
                int32_t acc = bias != NULL ? bias[oc] : 0;
                int32_t ky, kx, ic;

                for (ky = ky0; ky < ky1; ++ky) {
                    const int8_t *in_px = in_base + (ky - ky0) * tap_step_y;
                    const int8_t *w_px = w_base + (ky - ky0) * w_row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        for (ic = 0; ic < in_c; ++ic) {
                            acc += ((int32_t)in_px[ic] + input_offset) * (int32_t)w_px[ic];
                        }
                        in_px += tap_step_x;
                        w_px += in_c;
                    }
                }
                acc = k2m_requantize(acc, q->multiplier[oc], q->shift[oc]);
                acc += q->output_offset;
                k2m_store_s8_s16(output, n++,
                                 k2m_clamp_s32(acc, q->act_min, q->act_max),
                                 out_is_16bit);
            }
        }
    }
}

#endif /* !K2M_DSP: the portable reference loop */

#if K2M_DSP
/* ---- Cortex-M4 DSP path (SMLAD) ----------------------------------------
 * CMSIS-NN's scheme: the windows of two output pixels are unrolled
 * ("im2col") into int16 columns in the caller's scratch buffer, with the
 * input offset added and real zeros for the padding, then 2 output channels
 * x 2 pixels are accumulated together, each pair of loaded weights and
 * column values feeding two SMLADs.  The accumulation is exact int32 as in
 * the portable loop; only the order of the additions differs.
 *
 * Column layout (K = k_h * k_w * in_c, K4 = K rounded down to a multiple
 * of 4, r = K - K4; 2 K int16 in all, the scratch size of k2m.h): for each
 * group of 4 column elements x0..x3, pixel A's group then pixel B's, each
 * stored as x0, x2, x1, x3 - the order SXTB16 / SXTB16 ROR #8 unpack 4
 * weight bytes in, so no repacking is needed in the MAC loop; then the r
 * leftover elements of A, then those of B, in natural order. */

/* Column index of element j of pixel `sel` (0 = A, 1 = B). */
static inline int32_t col_index(int32_t j, int32_t sel, int32_t k4,
                                int32_t r)
{
    if (j < k4) {
        return ((j & ~3) << 1) + (sel << 2) + ((j & 1) << 1) + ((j >> 1) & 1);
    }
    return (k4 << 1) + sel * r + (j - k4);
}

/* im2col of output pixel p (raster order) into half `sel` of `col`. */
static void im2col_s8(const k2m_window *g, const int8_t *input,
                      int32_t input_offset, int32_t p, int32_t sel,
                      int16_t *col)
{
    const int32_t in_h = g->in_h, in_w = g->in_w, in_c = g->in_c;
    const int32_t k_h = g->k_h, k_w = g->k_w;
    const int32_t oy = p / g->out_w, ox = p - (p / g->out_w) * g->out_w;
    const int32_t y0 = oy * g->stride_h - g->pad_top;
    const int32_t x0 = ox * g->stride_w - g->pad_left;
    const int32_t k = k_h * k_w * in_c;
    const int32_t k4 = k & ~3, r = k - k4;
    int32_t ky, kx, ic;

    if ((in_c & 3) == 0) {
        /* Every tap is whole groups: 4 input bytes -> 2 words, the offset
         * added per int16 lane by SXTAB16 (|q + offset| <= 255 fits). */
        const int32_t off2 = (int32_t)(((uint32_t)input_offset & 0xFFFFu)
                                       | ((uint32_t)input_offset << 16));
        int16_t *dst = col + (sel << 2);
        for (ky = 0; ky < k_h; ++ky) {
            const int32_t y = y0 + ky * g->dil_h;
            for (kx = 0; kx < k_w; ++kx) {
                const int32_t x = x0 + kx * g->dil_w;
                if (y >= 0 && y < in_h && x >= 0 && x < in_w) {
                    const int8_t *src = input + (y * in_w + x) * in_c;
                    for (ic = 0; ic < in_c; ic += 4) {
                        const int32_t v = k2m_ld32(src + ic);
                        k2m_st32(dst, __sxtab16(off2, v));
                        k2m_st32(dst + 2, k2m_sxtab16_ror8(off2, v));
                        dst += 8;
                    }
                } else {
                    for (ic = 0; ic < in_c; ic += 4) {
                        k2m_st32(dst, 0);
                        k2m_st32(dst + 2, 0);
                        dst += 8;
                    }
                }
            }
        }
    } else {
        int32_t j = 0;
        for (ky = 0; ky < k_h; ++ky) {
            const int32_t y = y0 + ky * g->dil_h;
            for (kx = 0; kx < k_w; ++kx) {
                const int32_t x = x0 + kx * g->dil_w;
                if (y >= 0 && y < in_h && x >= 0 && x < in_w) {
                    const int8_t *src = input + (y * in_w + x) * in_c;
                    for (ic = 0; ic < in_c; ++ic, ++j) {
                        col[col_index(j, sel, k4, r)] =
                            (int16_t)((int32_t)src[ic] + input_offset);
                    }
                } else {
                    for (ic = 0; ic < in_c; ++ic, ++j) {
                        col[col_index(j, sel, k4, r)] = 0;
                    }
                }
            }
        }
    }
}

/* 2 channels (weights wa, wb) x 2 pixels (the whole column pair):
 * acc[0] = (wa, A), acc[1] = (wa, B), acc[2] = (wb, A), acc[3] = (wb, B). */
static void mac_2x2(const int16_t *col, const int8_t *wa, const int8_t *wb,
                    int32_t k, int32_t *acc)
{
    const int32_t k4 = k & ~3, r = k - k4;
    const int16_t *c = col;
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    int32_t n = k4 >> 2;  /* groups of 4 column elements */
    int32_t t;

#if defined(__OPTIMIZE__)
    if (n > 0) {
        int32_t w, wl, x0, x1;
        /* The group loop in assembly: gcc's register allocation of the
         * same code in C spills (14 values live).  One group is 16 MACs:
         * 2 LDR + 4 SXTB16 for the weights of both channels, 3 LDRD of
         * column words (pixel A's pair is loaded again for the second
         * channel so that only 4 temporaries are live: 12 registers in
         * all, fewer than the M4 has even with a frame pointer or a PIC
         * register reserved) and 8 SMLAD.  LDRD needs the column 4-byte
         * aligned: the scratch buffer's contract (k2m.h) and groups of
         * 16 bytes keep it so.  Two groups per iteration when n is even
         * halve the loop overhead. */
#define K2M_MAC_2X2_GROUP_ASM                                               \
            "ldr    %[w], [%[wa]], #4\n\t"                                  \
            "ldrd   %[x0], %[x1], [%[c]]\n\t"                               \
            "sxtb16 %[wl], %[w]\n\t"                                        \
            "sxtb16 %[w], %[w], ror #8\n\t"                                 \
            "smlad  %[a0], %[wl], %[x0], %[a0]\n\t"                         \
            "smlad  %[a0], %[w], %[x1], %[a0]\n\t"                          \
            "ldrd   %[x0], %[x1], [%[c], #8]\n\t"                           \
            "smlad  %[a1], %[wl], %[x0], %[a1]\n\t"                         \
            "smlad  %[a1], %[w], %[x1], %[a1]\n\t"                          \
            "ldr    %[w], [%[wb]], #4\n\t"                                  \
            "sxtb16 %[wl], %[w]\n\t"                                        \
            "sxtb16 %[w], %[w], ror #8\n\t"                                 \
            "smlad  %[b1], %[wl], %[x0], %[b1]\n\t"                         \
            "smlad  %[b1], %[w], %[x1], %[b1]\n\t"                          \
            "ldrd   %[x0], %[x1], [%[c]], #16\n\t"                          \
            "smlad  %[b0], %[wl], %[x0], %[b0]\n\t"                         \
            "smlad  %[b0], %[w], %[x1], %[b0]\n\t"
        if (n & 1) {
            __asm__ volatile(
                K2M_MAC_2X2_GROUP_ASM
                : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1),
                  [wa] "+r"(wa), [wb] "+r"(wb), [c] "+r"(c),
                  [w] "=&r"(w), [wl] "=&r"(wl), [x0] "=&r"(x0), [x1] "=&r"(x1)
                :
                : "memory");
        }
        n >>= 1;
        if (n > 0) {
            __asm__ volatile(
                "1:\n\t"
                K2M_MAC_2X2_GROUP_ASM
                K2M_MAC_2X2_GROUP_ASM
                "subs   %[n], %[n], #1\n\t"
                "bne    1b\n\t"
                : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1),
                  [wa] "+r"(wa), [wb] "+r"(wb), [c] "+r"(c), [n] "+r"(n),
                  [w] "=&r"(w), [wl] "=&r"(wl), [x0] "=&r"(x0), [x1] "=&r"(x1)
                :
                : "cc", "memory");
        }
#undef K2M_MAC_2X2_GROUP_ASM
    }
#else
    /* Unoptimised builds (-O0 keeps a frame pointer and cannot give the
     * assembly its 12 registers): the same arithmetic with intrinsics. */
    for (; n > 0; --n) {
        const int32_t wa4 = k2m_ld32(wa), wb4 = k2m_ld32(wb);
        const int32_t wa02 = __sxtb16(wa4), wa13 = k2m_sxtb16_ror8(wa4);
        const int32_t wb02 = __sxtb16(wb4), wb13 = k2m_sxtb16_ror8(wb4);
        const int32_t ca02 = k2m_ld32(c), ca13 = k2m_ld32(c + 2);
        const int32_t cb02 = k2m_ld32(c + 4), cb13 = k2m_ld32(c + 6);
        a0 = __smlad(wa13, ca13, __smlad(wa02, ca02, a0));
        a1 = __smlad(wa13, cb13, __smlad(wa02, cb02, a1));
        b0 = __smlad(wb13, ca13, __smlad(wb02, ca02, b0));
        b1 = __smlad(wb13, cb13, __smlad(wb02, cb02, b1));
        wa += 4;
        wb += 4;
        c += 8;
    }
#endif
    for (t = 0; t < r; ++t) {
        const int32_t xa = c[t], xb = c[r + t];
        a0 += (int32_t)wa[t] * xa;
        a1 += (int32_t)wa[t] * xb;
        b0 += (int32_t)wb[t] * xa;
        b1 += (int32_t)wb[t] * xb;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

/* 1 channel x 1 pixel (`sel`) of the column pair: the odd leftovers. */
static int32_t mac_1x1(const int16_t *col, int32_t sel, const int8_t *w,
                       int32_t k, int32_t acc)
{
    const int32_t k4 = k & ~3, r = k - k4;
    const int16_t *c = col + (sel << 2);
    int32_t i, t;

    for (i = 0; i < k4; i += 4) {
        const int32_t w4 = k2m_ld32(w + i);
        acc = __smlad(__sxtb16(w4), k2m_ld32(c), acc);
        acc = __smlad(k2m_sxtb16_ror8(w4), k2m_ld32(c + 2), acc);
        c += 8;
    }
    c = col + (k4 << 1) + sel * r;
    for (t = 0; t < r; ++t) {
        acc += (int32_t)w[k4 + t] * c[t];
    }
    return acc;
}

/* always_inline: each public kernel gets its own copy with out_is_16bit a
 * constant, so the store's type test folds away. */
static inline __attribute__((always_inline))
void conv2d_s8_dsp(const k2m_window *g, const k2m_quant_s8 *q,
                          const int8_t *input, const int8_t *weights,
                          const int32_t *bias, void *output,
                          int out_is_16bit, int16_t *col)
{
    const int32_t out_c = g->out_c;
    const int32_t k = g->k_h * g->k_w * g->in_c;
    const int32_t n_px = g->out_h * g->out_w;
    const int32_t out_off = q->output_offset;
    const int32_t lo = q->act_min, hi = q->act_max;
    int32_t p, oc;

    for (p = 0; p < n_px; p += 2) {
        const int32_t pair = p + 1 < n_px;
        const int32_t n0 = p * out_c, n1 = n0 + out_c;
        im2col_s8(g, input, q->input_offset, p, 0, col);
        if (pair) {
            im2col_s8(g, input, q->input_offset, p + 1, 1, col);
        }
        for (oc = 0; oc < out_c; oc += 2) {
            const int8_t *wa = weights + oc * k;
            const int32_t ba = bias != NULL ? bias[oc] : 0;
            k2m_rq ra;
            k2m_rq_init(&ra, q->multiplier[oc], q->shift[oc]);
            if (pair && oc + 1 < out_c) {
                const int32_t bb = bias != NULL ? bias[oc + 1] : 0;
                int32_t acc[4];
                k2m_rq rb;
                k2m_rq_init(&rb, q->multiplier[oc + 1], q->shift[oc + 1]);
                acc[0] = ba;
                acc[1] = ba;
                acc[2] = bb;
                acc[3] = bb;
                mac_2x2(col, wa, wa + k, k, acc);
                k2m_store_s8_s16(output, n0 + oc, k2m_clamp_s32(
                    k2m_rq_apply(&ra, acc[0]) + out_off, lo, hi), out_is_16bit);
                k2m_store_s8_s16(output, n1 + oc, k2m_clamp_s32(
                    k2m_rq_apply(&ra, acc[1]) + out_off, lo, hi), out_is_16bit);
                k2m_store_s8_s16(output, n0 + oc + 1, k2m_clamp_s32(
                    k2m_rq_apply(&rb, acc[2]) + out_off, lo, hi), out_is_16bit);
                k2m_store_s8_s16(output, n1 + oc + 1, k2m_clamp_s32(
                    k2m_rq_apply(&rb, acc[3]) + out_off, lo, hi), out_is_16bit);
            } else {
                /* Odd leftovers: the last pixel and/or the last channel. */
                int32_t c_end = oc + 2 < out_c ? oc + 2 : out_c;
                int32_t c, s;
                for (c = oc; c < c_end; ++c) {
                    k2m_rq rc;
                    k2m_rq_init(&rc, q->multiplier[c], q->shift[c]);
                    for (s = 0; s <= pair; ++s) {
                        const int32_t acc = mac_1x1(col, s, weights + c * k, k,
                                                    bias != NULL ? bias[c] : 0);
                        k2m_store_s8_s16(output, n0 + s * out_c + c,
                                         k2m_clamp_s32(k2m_rq_apply(&rc, acc) + out_off,
                                                       lo, hi),
                                         out_is_16bit);
                    }
                }
            }
        }
    }
}
#endif /* K2M_DSP */

void k2m_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                   const int8_t *input, const int8_t *weights,
                   const int32_t *bias, int8_t *output, int16_t *scratch)
{
#if K2M_DSP
    conv2d_s8_dsp(g, q, input, weights, bias, output, 0, scratch);
#else
    (void)scratch;
    conv2d_s8_core(g, q, input, weights, bias, output, 0);
#endif
}

void k2m_conv2d_s8_s16(const k2m_window *g, const k2m_quant_s8 *q,
                       const int8_t *input, const int8_t *weights,
                       const int32_t *bias, int16_t *output,
                       int16_t *scratch)
{
#if K2M_DSP
    conv2d_s8_dsp(g, q, input, weights, bias, output, 1, scratch);
#else
    (void)scratch;
    conv2d_s8_core(g, q, input, weights, bias, output, 1);
#endif
}

void k2m_conv2d_f32(const k2m_window *g, float act_min, float act_max,
                    const float *input, const float *weights,
                    const float *bias, float *output)
{
    const int32_t in_w = g->in_w, in_c = g->in_c;
    const int32_t k_h = g->k_h, k_w = g->k_w;
    const int32_t dil_h = g->dil_h, dil_w = g->dil_w;
    const int32_t out_c = g->out_c;
    const int32_t tap_step_y = dil_h * in_w * in_c;
    const int32_t tap_step_x = dil_w * in_c;
    const int32_t w_row = k_w * in_c;
    const int32_t w_filter = k_h * w_row;
    int32_t oy, ox, oc;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        int32_t ky0, ky1;
        k2m_tap_range(y0, g->in_h, k_h, dil_h, &ky0, &ky1);

        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            int32_t kx0, kx1;
            const float *in_base;
            k2m_tap_range(x0, in_w, k_w, dil_w, &kx0, &kx1);
            /* An empty window (all taps in the padding) leaves in_base
             * unused; it must still not point outside the array. */
            in_base = (ky0 < ky1 && kx0 < kx1)
                ? input + ((y0 + ky0 * dil_h) * in_w + (x0 + kx0 * dil_w)) * in_c
                : input;

            for (oc = 0; oc < out_c; ++oc) {
                const float *w_base = weights + oc * w_filter + ky0 * w_row + kx0 * in_c;
                float acc = bias != NULL ? bias[oc] : 0.0f;
                int32_t ky, kx, ic;

                for (ky = ky0; ky < ky1; ++ky) {
                    const float *in_px = in_base + (ky - ky0) * tap_step_y;
                    const float *w_px = w_base + (ky - ky0) * w_row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        for (ic = 0; ic < in_c; ++ic) {
                            acc += in_px[ic] * w_px[ic];
                        }
                        in_px += tap_step_x;
                        w_px += in_c;
                    }
                }
                /* Comparisons rather than fminf/fmaxf keep -lm out. */
                acc = acc < act_min ? act_min : acc;
                acc = acc > act_max ? act_max : acc;
                *output++ = acc;
            }
        }
    }
}
