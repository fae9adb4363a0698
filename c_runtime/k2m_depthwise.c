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

/* ---- 3x3, depth multiplier 1: the CHW row ring --------------------------
 * No dilation, horizontal stride 1 or 2 (dw_ring_ok).  Channels
 * go in groups of 4 (the last group 1-3).  The input rows the windows of
 * the current output row need are widened to int16 with the input offset
 * added and transposed into one row per channel ("CHW"), zero outside the
 * input's columns, in a ring of 3 slots (input row iy in slot iy % 3), so
 * borders need no tests: padding columns add (q + input_offset) = 0 as the
 * portable loop's skipping does, and a kernel row in the top or bottom
 * padding gets weights 0.  A channel's ring is word-interleaved: word w
 * (elements 2w, 2w + 1) of slot k is word 3w + k, so the three words one
 * window position needs are adjacent (one LDM).  With a kernel row's taps
 * paired as P = (w0, w1) and Q = (w1, w2) (int16 halves), the outputs o
 * (even) and o + 1 of stride 1 are, per kernel row, with u = word o/2 and
 * v = word o/2 + 1 of its slot,
 *   out[o] += u.lo w0 + u.hi w1 + v.lo w2        = SMLAD(u, P) + SMLABT(v, Q)
 *   out[o+1] += u.hi w0 + v.lo w1 + v.hi w2      = SMLATB(u, P) + SMLAD(v, Q)
 * and those of stride 2, with words o, o + 1, o + 2 = u, v, t,
 *   out[o] += SMLAD(u, P) + SMLABT(v, Q),  out[o+1] += SMLAD(v, P) + SMLABT(t, Q):
 * six multiply instructions an output for 9 MACs, every word aligned.  The
 * sums (exact int32, as in the portable loop) go to a row of accumulators,
 * then are requantized (k2m_rqs where its bounds hold) and stored.
 *
 * Each input row is read once per channel group, when an output row first
 * needs it, and every output of a group is written after the rows its
 * window needs were read: writing output pixel p over input pixel p - m
 * (in place, the input starting m pixels after the output) only destroys
 * input bytes of the same channels already in the ring. */

static int dw_ring_ok(const k2m_window *g)
{
    return g->out_c == g->in_c && g->k_h == 3 && g->k_w == 3 && g->dil_h == 1
        && g->dil_w == 1 && (g->stride_w == 1 || g->stride_w == 2);
}

/* Input row iy, channels c0 .. c0 + nc - 1, into slot iy % 3 of the
 * channels' rings, `block` words each. */
static __attribute__((noinline))
void dw_load_row(const k2m_window *g, const int8_t *input, int32_t input_offset,
                 int32_t iy, int32_t c0, int32_t nc, int32_t *ring, int32_t block)
{
    const int32_t ch = g->in_c, w = g->in_w, slot = iy % 3, pad = g->pad_left;
    const int8_t *src = input + iy * w * ch + c0;
    const int32_t off2 = (int32_t)(((uint32_t)input_offset & 0xFFFFu)
                                   | ((uint32_t)input_offset << 16));
    /* word e / 2 holds elements e, e + 1 (pixels e - pad and e - pad + 1) */
    int32_t *d = ring + 3 * (pad >> 1) + slot;
    int32_t x = 0, j;

    if (nc < 4) {
        for (; x < w; ++x, src += ch) {
            int16_t *h = (int16_t *)(void *)(ring + 3 * ((pad + x) >> 1) + slot) + ((pad + x) & 1);
            for (j = 0; j < nc; ++j) {
                h[2 * j * block] = (int16_t)(src[j] + input_offset);
            }
        }
        return;
    }
#define K2M_DW_PUT(A02, A13, B02, B13)            \
    do {                                          \
        d[0] = k2m_pack_lo(A02, B02);             \
        d[block] = k2m_pack_lo(A13, B13);         \
        d[2 * block] = k2m_pack_hi(A02, B02);     \
        d[3 * block] = k2m_pack_hi(A13, B13);     \
        d += 3;                                   \
    } while (0)
    if (pad & 1) {
        /* pixel 0 shares its word with a padding column (0) */
        const int32_t v = k2m_ld32(src);
        K2M_DW_PUT(0, 0, __sxtab16(off2, v), k2m_sxtab16_ror8(off2, v));
        src += ch;
        x = 1;
    }
    for (; x + 1 < w; x += 2, src += 2 * ch) {
        const int32_t va = k2m_ld32(src), vb = k2m_ld32(src + ch);
        K2M_DW_PUT(__sxtab16(off2, va), k2m_sxtab16_ror8(off2, va),
                   __sxtab16(off2, vb), k2m_sxtab16_ror8(off2, vb));
    }
    if (x < w) {
        /* the last pixel, before a padding (or spare) column */
        const int32_t v = k2m_ld32(src);
        K2M_DW_PUT(__sxtab16(off2, v), k2m_sxtab16_ror8(off2, v), 0, 0);
    }
#undef K2M_DW_PUT
}

/* One output row of one channel.  The asm blocks below read the first
 * fields at fixed offsets. */
typedef struct {
    const int32_t *p;     /*  0: the channel's ring */
    const int32_t *k;     /*  4: P, Q of the kernel row in each slot (0 in the padding) */
    int32_t *acc;         /*  8: row of accumulators, even length */
    int32_t pairs;        /* 12: (out_w + 1) / 2 */
    int32_t bias, mult, ls, ho, rs, lo2, hi2;  /* 16..40: k2m_rqs, clamp in both lanes */
    int8_t *out;          /* 44 */
    int32_t step, n;      /* 48, 52: output stride (channels), out_w */
    int32_t fast, out_off, lo, hi;
    k2m_rq r;
} dw_job;

/* acc[] = the row's sums without bias (pairs of outputs). */
static void dw_mac3(dw_job *j, int32_t stride)
{
#if defined(__OPTIMIZE__)
    /* every register: the job pointer is r0 on entry, the six weights stay
     * in r5-r10 for the row, the words of one position in r2-r4 (LDM) */
    register dw_job *job __asm__("r0") = j;
    if (stride == 1) {
        __asm__ volatile(
            "ldr    r1, [r0, #4]\n\t"
            "ldm    r1, {r5, r6, r7, r8, r9, r10}\n\t"
            "ldr    r1, [r0, #8]\n\t"
            "ldr    r11, [r0, #12]\n\t"
            "ldr    r0, [r0]\n"
            "1:\n\t"
            "ldmia  r0!, {r2, r3, r4}\n\t"
            "smuad  r12, r2, r5\n\t"
            "smultb lr, r2, r5\n\t"
            "smlad  r12, r3, r7, r12\n\t"
            "smlatb lr, r3, r7, lr\n\t"
            "smlad  r12, r4, r9, r12\n\t"
            "smlatb lr, r4, r9, lr\n\t"
            "ldm    r0, {r2, r3, r4}\n\t"
            "smlabt r12, r2, r6, r12\n\t"
            "smlad  lr, r2, r6, lr\n\t"
            "smlabt r12, r3, r8, r12\n\t"
            "smlad  lr, r3, r8, lr\n\t"
            "smlabt r12, r4, r10, r12\n\t"
            "smlad  lr, r4, r10, lr\n\t"
            "strd   r12, lr, [r1], #8\n\t"
            "subs   r11, r11, #1\n\t"
            "bne    1b\n\t"
            : "+r"(job) :
            : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12",
              "lr", "cc", "memory");
    } else {
        __asm__ volatile(
            "ldr    r1, [r0, #4]\n\t"
            "ldm    r1, {r5, r6, r7, r8, r9, r10}\n\t"
            "ldr    r1, [r0, #8]\n\t"
            "ldr    r11, [r0, #12]\n\t"
            "ldr    r0, [r0]\n"
            "1:\n\t"
            "ldmia  r0!, {r2, r3, r4}\n\t"
            "smuad  r12, r2, r5\n\t"
            "smlad  r12, r3, r7, r12\n\t"
            "smlad  r12, r4, r9, r12\n\t"
            "ldmia  r0!, {r2, r3, r4}\n\t"
            "smlabt r12, r2, r6, r12\n\t"
            "smuad  lr, r2, r5\n\t"
            "smlabt r12, r3, r8, r12\n\t"
            "smlad  lr, r3, r7, lr\n\t"
            "smlabt r12, r4, r10, r12\n\t"
            "smlad  lr, r4, r9, lr\n\t"
            "ldm    r0, {r2, r3, r4}\n\t"
            "smlabt lr, r2, r6, lr\n\t"
            "smlabt lr, r3, r8, lr\n\t"
            "smlabt lr, r4, r10, lr\n\t"
            "strd   r12, lr, [r1], #8\n\t"
            "subs   r11, r11, #1\n\t"
            "bne    1b\n\t"
            : "+r"(job) :
            : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12",
              "lr", "cc", "memory");
    }
#else
    /* Unoptimised builds keep a frame pointer: the same sums in C. */
    const int32_t *p = j->p, *k = j->k;
    int32_t *acc = j->acc, pairs;
    for (pairs = j->pairs; pairs > 0; --pairs, acc += 2) {
        const int32_t *v = p + 3, *t = p + 6;
        int32_t a = 0, b = 0, i;
        for (i = 0; i < 3; ++i) {
            a = __smlabt(v[i], k[2 * i + 1], __smlad(p[i], k[2 * i], a));
            b = stride == 1 ? __smlad(v[i], k[2 * i + 1], __smlatb(p[i], k[2 * i], b))
                            : __smlabt(t[i], k[2 * i + 1], __smlad(v[i], k[2 * i], b));
        }
        acc[0] = a;
        acc[1] = b;
        p += 3 * stride;
    }
#endif
}

/* out[i * step] = clamp(rq(acc[i] + bias)), i < n. */
static void dw_requant(dw_job *j)
{
    const int32_t *acc = j->acc;
    int8_t *out = j->out;
    int32_t i;

    if (!j->fast) {
        for (i = 0; i < j->n; ++i, out += j->step) {
            *out = (int8_t)k2m_clamp_s32(k2m_rq_apply(&j->r, acc[i] + j->bias) + j->out_off,
                                         j->lo, j->hi);
        }
        return;
    }
#if defined(__OPTIMIZE__)
    {
        /* two outputs a step, clamped together as int16 lanes (SSUB16 /
         * SEL against lo and hi in both lanes); the second is not stored
         * past the row's end */
        register dw_job *job __asm__("r0") = j;
        __asm__ volatile(
            "add    r1, r0, #16\n\t"
            "ldm    r1, {r2, r3, r4, r5, r6, r7, r8}\n\t"
            "ldr    r9, [r0, #44]\n\t"
            "ldr    r10, [r0, #48]\n\t"
            "ldr    r11, [r0, #52]\n\t"
            "ldr    r1, [r0, #8]\n"
            "1:\n\t"
            "ldrd   r12, lr, [r1], #8\n\t"
            "add    r12, r12, r2\n\t"
            "add    lr, lr, r2\n\t"
            "lsl    r12, r12, r4\n\t"
            "lsl    lr, lr, r4\n\t"
            "smmulr r12, r12, r3\n\t"
            "smmulr lr, lr, r3\n\t"
            "add    r0, r5, r12, lsl #1\n\t"
            "add    r12, r0, r12, asr #31\n\t"
            "add    r0, r5, lr, lsl #1\n\t"
            "add    lr, r0, lr, asr #31\n\t"
            "asr    r12, r12, r6\n\t"
            "asr    lr, lr, r6\n\t"
            "ssat   r12, #16, r12\n\t"
            "ssat   lr, #16, lr\n\t"
            "pkhbt  r12, r12, lr, lsl #16\n\t"
            "ssub16 r0, r12, r7\n\t"
            "sel    r12, r12, r7\n\t"
            "ssub16 r0, r8, r12\n\t"
            "sel    r12, r12, r8\n\t"
            "strb   r12, [r9]\n\t"
            "lsr    r12, r12, #16\n\t"
            "subs   r11, r11, #2\n\t"
            "it     ge\n\t"
            "strbge r12, [r9, r10]\n\t"
            "add    r9, r9, r10, lsl #1\n\t"
            "bgt    1b\n\t"
            : "+r"(job) :
            : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12",
              "lr", "cc", "memory");
    }
#else
    {
        k2m_rqs f;
        f.mult = j->mult;
        f.ls = j->ls;
        f.ho = j->ho;
        f.rs = j->rs;
        for (i = 0; i < j->n; ++i, out += j->step) {
            *out = (int8_t)k2m_clamp_s32(k2m_rqs_apply(&f, acc[i] + j->bias), j->lo, j->hi);
        }
    }
#endif
}

static void depthwise_ring(const k2m_window *g, const k2m_quant_s8 *q,
                           const int8_t *input, const int8_t *weights,
                           const int32_t *bias, int8_t *output, int16_t *scratch)
{
    const int32_t ch = g->in_c, out_w = g->out_w, block = 3 * (K2M_DEPTHWISE_ROW(g) >> 1);
    int32_t *ring = (int32_t *)(void *)scratch;
    int32_t *acc = ring + 4 * block;
    /* per channel and value of y0 % 3: P, Q of the kernel row in each slot */
    int32_t *rot = acc + ((out_w + 1) & ~1);
    int32_t *masked = rot + 72;  /* the same, for a row with taps in the padding */
    const int32_t lo2 = (int32_t)(((uint32_t)q->act_min & 0xFFFFu) | ((uint32_t)q->act_min << 16));
    const int32_t hi2 = (int32_t)(((uint32_t)q->act_max & 0xFFFFu) | ((uint32_t)q->act_max << 16));
    int32_t c0, j, i;

    for (i = 0; i < 4 * block; ++i) {
        ring[i] = 0;  /* the padding columns stay 0 */
    }
    for (c0 = 0; c0 < ch; c0 += 4) {
        const int32_t nc = ch - c0 < 4 ? ch - c0 : 4;
        dw_job job[4];
        int32_t next = 0, oy;  /* next input row to read into the ring */
        for (j = 0; j < nc; ++j) {
            const int32_t c = c0 + j;
            dw_job *f = &job[j];
            k2m_rqs rf;
            int32_t *rj = rot + 18 * j;
            f->p = ring + j * block;
            f->acc = acc;
            f->pairs = (out_w + 1) >> 1;
            f->bias = bias ? bias[c] : 0;
            f->fast = k2m_rqs_init(&rf, q->multiplier[c], q->shift[c], q->output_offset,
                                   k2m_acc_bound(f->bias, 9, q->input_offset));
            f->mult = rf.mult;
            f->ls = rf.ls;
            f->ho = rf.ho;
            f->rs = rf.rs;
            f->lo2 = lo2;
            f->hi2 = hi2;
            f->step = ch;
            f->n = out_w;
            k2m_rq_init(&f->r, q->multiplier[c], q->shift[c]);
            f->out_off = q->output_offset;
            f->lo = q->act_min;
            f->hi = q->act_max;
            for (i = 0; i < 3; ++i) {
                /* kernel row i is in slot (r + i) % 3 when y0 % 3 == r */
                const int8_t *w = weights + 3 * i * ch + c;
                const uint32_t w0 = (uint16_t)w[0], w1 = (uint16_t)w[ch], w2 = (uint16_t)w[2 * ch];
                const int32_t pw = (int32_t)(w0 | (w1 << 16)), qw = (int32_t)(w1 | (w2 << 16));
                rj[2 * i] = pw;
                rj[2 * i + 1] = qw;
                rj[6 + 2 * (i == 2 ? 0 : i + 1)] = pw;
                rj[6 + 2 * (i == 2 ? 0 : i + 1) + 1] = qw;
                rj[12 + 2 * (i == 0 ? 2 : i - 1)] = pw;
                rj[12 + 2 * (i == 0 ? 2 : i - 1) + 1] = qw;
            }
        }
        for (oy = 0; oy < g->out_h; ++oy) {
            const int32_t y0 = oy * g->stride_h - g->pad_top;
            const int32_t r = ((y0 % 3) + 3) % 3;
            const int border = y0 < 0 || y0 + 3 > g->in_h;
            int8_t *out_row = output + oy * out_w * ch + c0;
            int32_t mask[6], ky;
            for (ky = 0; ky < 3; ++ky) {
                const int32_t iy = y0 + ky, slot = (r + ky) % 3;
                mask[2 * slot] = mask[2 * slot + 1] = iy >= 0 && iy < g->in_h ? -1 : 0;
                if (iy >= next && iy < g->in_h) {
                    dw_load_row(g, input, q->input_offset, iy, c0, nc, ring, block);
                    next = iy + 1;
                }
            }
            for (j = 0; j < nc; ++j) {
                const int32_t *k = rot + 18 * j + 6 * r;
                if (border) {
                    for (i = 0; i < 6; ++i) {
                        masked[i] = k[i] & mask[i];
                    }
                    k = masked;
                }
                job[j].k = k;
                job[j].out = out_row + j;
                dw_mac3(&job[j], g->stride_w);
                dw_requant(&job[j]);
            }
        }
    }
}

void k2m_depthwise_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                             const int8_t *input, const int8_t *weights,
                             const int32_t *bias, int8_t *output, int16_t *scratch)
{
    int32_t oy, ox, ky0, ky1;

    if (dw_ring_ok(g) && scratch != NULL) {
        depthwise_ring(g, q, input, weights, bias, output, scratch);
        return;
    }
    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        int8_t *out_row = output + oy * g->out_w * g->out_c;
        k2m_tap_range(y0, g->in_h, g->k_h, g->dil_h, &ky0, &ky1);
        for (ox = 0; ox < g->out_w; ++ox) {
            depthwise_pixel(g, q, input, weights, bias, out_row + ox * g->out_c, y0,
                            ky0, ky1, ox, 0);
        }
    }
}

#else /* portable reference */

void k2m_depthwise_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                             const int8_t *input, const int8_t *weights,
                             const int32_t *bias, int8_t *output, int16_t *scratch)
{
    const int32_t in_c = g->in_c, out_c = g->out_c, mult = out_c / in_c;
    const int32_t blocked = mult == 1 ? out_c & ~3 : 0;
    int32_t oy, ox, oc, ky, kx, ky0, ky1, kx0, kx1, j;

    (void)scratch;

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
