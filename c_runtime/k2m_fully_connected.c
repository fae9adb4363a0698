/* k2m runtime: fully connected (Keras Dense): int8 -> int8, int8 -> int16
 * and float.
 *
 * Keras's Dense on an N-D input acts on the last axis, so the exporter
 * flattens the leading axes into `batches`.  Weights are (out, in): each
 * output is one contiguous dot product.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <stddef.h>

#if !K2M_DSP
/* The int8-input loop behind k2m_fully_connected_s8 and _s8_s16: only the
 * width of the stored output differs, one branch per output element. */
static void fully_connected_s8_core(const k2m_fc_dims *d,
                                    const k2m_quant_s8 *q,
                                    const int8_t *input,
                                    const int8_t *weights,
                                    const int32_t *bias, void *output,
                                    int out_is_16bit)
{
    const int32_t n_in = d->in_features, n_out = d->out_features;
    const int32_t input_offset = q->input_offset;
    int32_t n = 0;  /* index of the first output of this batch row */
    int32_t b, o, i;

    for (b = 0; b < d->batches; ++b) {
        const int8_t *w = weights;
        for (o = 0; o < n_out; ++o) {
            int32_t acc = bias != NULL ? bias[o] : 0;
            for (i = 0; i < n_in; ++i) {
                acc += ((int32_t)input[i] + input_offset) * (int32_t)w[i];
            }
            w += n_in;
            acc = k2m_requantize(acc, q->multiplier[o], q->shift[o]);
            acc += q->output_offset;
            k2m_store_s8_s16(output, n + o,
                             k2m_clamp_s32(acc, q->act_min, q->act_max),
                             out_is_16bit);
        }
        input += n_in;
        n += n_out;
    }
}

#endif /* !K2M_DSP: the portable reference loop */

#if K2M_DSP
/* ---- Cortex-M4 DSP path (SMLAD) ----------------------------------------
 * Four output rows at a time share each input load and its unpacking.  4
 * input bytes are unpacked by SXTAB16 (bytes 0, 2) and SXTAB16 ROR #8
 * (bytes 1, 3) with the input offset added per int16 lane (|q + offset| <=
 * 255 fits), 4 weight bytes by SXTB16 likewise, so each pair of words is 2
 * MACs in one SMLAD: per 16 MACs 5 loads, 10 unpacks and 8 SMLADs.  The
 * last out_features % 4 rows go two or one at a time.  Exact int32
 * accumulation as in the portable loop, only the order of the additions
 * differs.  Requantization is fc_requantize (bit-identical to
 * k2m_requantize). */

/* Dot products of rows w, w + n, w + 2n, w + 3n with input + offset, added
 * to acc[0..3].  Registers are the limit: 4 accumulators, the offset, 4
 * row pointers, the input pointer and its end and the temporaries are more
 * than Thumb-2's 14, and gcc spilled ~7 instructions per 16 MACs.  So rows
 * 1 and 3 are read at [row 0 + n] and [row 2 + n] (LDR with a register
 * offset, before the post-incremented loads of rows 0 and 2) and the 16
 * MACs of one step are one asm block with 4 temporaries, the input word
 * unpacked in place: 14 registers, 25 instructions per 16 MACs (5 LDR,
 * 2 SXTAB16, 8 SXTB16, 8 SMLAD, the loop test). */
#define K2M_FC_ROW(acc, load)                         \
    load                                              \
    "sxtb16  %[t1], %[t0]\n\t"                        \
    "smlad   %[" acc "], %[t1], %[x02], %[" acc "]\n\t" \
    "sxtb16  %[t0], %[t0], ror #8\n\t"                \
    "smlad   %[" acc "], %[t0], %[x13], %[" acc "]\n\t"

/* 4 inputs x 4 rows: the input word and row 1's weights loaded back to
 * back (pipelined), the input widened with the offset added, then row by
 * row. */
#define K2M_FC_STEP                                                       \
    "ldr     %[x13], [%[x]], #4\n\t"                                      \
    "ldr     %[t0], [%[w0], %[n]]\n\t"                                    \
    "sxtab16 %[x02], %[off], %[x13]\n\t"                                  \
    "sxtab16 %[x13], %[off], %[x13], ror #8\n\t"                          \
    K2M_FC_ROW("a1", "")                                                  \
    K2M_FC_ROW("a0", "ldr     %[t0], [%[w0]], #4\n\t")                     \
    K2M_FC_ROW("a3", "ldr     %[t0], [%[w2], %[n]]\n\t")                   \
    K2M_FC_ROW("a2", "ldr     %[t0], [%[w2]], #4\n\t")

static void fc_rows4_dsp(const int8_t *input, const int8_t *w, int32_t n,
                         int32_t input_offset, int32_t acc[4])
{
    const int32_t off2 = (int32_t)(((uint32_t)input_offset & 0xFFFFu)
                                   | ((uint32_t)input_offset << 16));
    const int32_t n4 = n & ~3;
    const int8_t *x = input;
    const int8_t *const x_end = input + n4;
    const int8_t *w0 = w, *w2 = w + 2 * n;
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    int32_t i;

#if defined(__OPTIMIZE__)
    if (x != x_end) {
        /* two steps of 4 inputs per iteration (an odd count enters at the
         * second): the loop test costs once per 32 MACs */
        int32_t x02, x13, t0, t1, steps = (int32_t)(x_end - x) >> 2;
        __asm__(
            "adds    %[t1], %[s], #1\n\t"
            "lsrs    %[s], %[t1], #1\n\t"
            "bcc     2f\n"
            "1:\n\t"
            K2M_FC_STEP
            "2:\n\t"
            K2M_FC_STEP
            "subs    %[s], %[s], #1\n\t"
            "bne     1b\n\t"
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),
              [x] "+r"(x), [w0] "+r"(w0), [w2] "+r"(w2), [s] "+r"(steps),
              [x02] "=&r"(x02), [x13] "=&r"(x13), [t0] "=&r"(t0), [t1] "=&r"(t1)
            : [n] "r"(n), [off] "r"(off2)
            : "cc", "memory");
    }
#else
    /* Unoptimised builds keep variables in memory and cannot give the asm
     * its 14 registers: the same exact sums through intrinsics. */
    while (x != x_end) {
        const int32_t x4 = k2m_ld32(x);
        const int32_t x02 = __sxtab16(off2, x4), x13 = k2m_sxtab16_ror8(off2, x4);
        const int32_t r0 = k2m_ld32(w0), r1 = k2m_ld32(w0 + n);
        const int32_t r2 = k2m_ld32(w2), r3 = k2m_ld32(w2 + n);
        a0 = __smlad(k2m_sxtb16_ror8(r0), x13, __smlad(__sxtb16(r0), x02, a0));
        a1 = __smlad(k2m_sxtb16_ror8(r1), x13, __smlad(__sxtb16(r1), x02, a1));
        a2 = __smlad(k2m_sxtb16_ror8(r2), x13, __smlad(__sxtb16(r2), x02, a2));
        a3 = __smlad(k2m_sxtb16_ror8(r3), x13, __smlad(__sxtb16(r3), x02, a3));
        x += 4;
        w0 += 4;
        w2 += 4;
    }
#endif
    for (i = 0; i < n - n4; ++i) {
        const int32_t xi = (int32_t)x[i] + input_offset;
        a0 += xi * (int32_t)w0[i];
        a1 += xi * (int32_t)w0[n + i];
        a2 += xi * (int32_t)w2[i];
        a3 += xi * (int32_t)w2[n + i];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#undef K2M_FC_ROW
#undef K2M_FC_STEP

/* Dot product of row(s) wa (and wb if two) with input + offset; n4 is a
 * multiple of 4, the n - n4 leftovers are done scalar. */
static void fc_rows_dsp(const int8_t *input, const int8_t *wa,
                        const int8_t *wb, int32_t n, int32_t input_offset,
                        int32_t *acc_a, int32_t *acc_b)
{
    const int32_t off2 = (int32_t)(((uint32_t)input_offset & 0xFFFFu)
                                   | ((uint32_t)input_offset << 16));
    const int32_t n4 = n & ~3;
    const int8_t *x = input;
    const int8_t *const x_end = input + n4;
    int32_t a = *acc_a, b = *acc_b;
    int32_t i;

    if (wb != NULL) {
        while (x != x_end) {
            const int32_t x4 = k2m_ld32(x);
            const int32_t x02 = __sxtab16(off2, x4);
            const int32_t x13 = k2m_sxtab16_ror8(off2, x4);
            const int32_t wa4 = k2m_ld32(wa), wb4 = k2m_ld32(wb);
            a = __smlad(__sxtb16(wa4), x02, a);
            a = __smlad(k2m_sxtb16_ror8(wa4), x13, a);
            b = __smlad(__sxtb16(wb4), x02, b);
            b = __smlad(k2m_sxtb16_ror8(wb4), x13, b);
            x += 4;
            wa += 4;
            wb += 4;
        }
        for (i = 0; i < n - n4; ++i) {
            const int32_t xi = (int32_t)x[i] + input_offset;
            a += xi * (int32_t)wa[i];
            b += xi * (int32_t)wb[i];
        }
    } else {
        while (x != x_end) {
            const int32_t x4 = k2m_ld32(x);
            const int32_t wa4 = k2m_ld32(wa);
            a = __smlad(__sxtb16(wa4), __sxtab16(off2, x4), a);
            a = __smlad(k2m_sxtb16_ror8(wa4), k2m_sxtab16_ror8(off2, x4), a);
            x += 4;
            wa += 4;
        }
        for (i = 0; i < n - n4; ++i) {
            a += ((int32_t)x[i] + input_offset) * (int32_t)wa[i];
        }
    }
    *acc_a = a;
    *acc_b = b;
}

/* The largest right shift r <= 29 for which k2m_rqs's ho = 2^r * (1 + 2 *
 * offset) stays inside +-2^30 (k2m_rqs_init's test on it, once per call):
 * 30 minus the bit length of |1 + 2 offset|; -1 if none. */
static int32_t fc_rqs_right_max(int32_t offset)
{
    const int64_t u = 2 * (int64_t)offset + 1;
    const uint64_t a = (uint64_t)(u < 0 ? -u : u);  /* odd: >= 1 */
    int32_t r;

    if (a >= ((uint64_t)1 << 30)) {
        return -1;
    }
    r = 30 - (32 - __builtin_clz((uint32_t)a));
    return r > 29 ? 29 : r;
}

/* k2m_requantize(acc, m, shift) + offset, out of line: the accumulators
 * fc_requantize's fast form does not cover (rare). */
static __attribute__((noinline))
int32_t fc_requantize_general(int32_t acc, int32_t m, int32_t shift, int32_t offset)
{
    return k2m_requantize(acc, m, shift) + offset;
}

/* k2m_requantize(acc, m, shift) + offset, bit for bit.  The accumulator at
 * hand bounds k2m_rqs's fast form: k2m_rqs_init's conditions, in 32 bits,
 * for this one |acc| (right_max from fc_rqs_right_max), so SMMULR and a
 * rounding shift serve every channel, left shifts included, where
 * k2m_rq_apply's 64-bit product and mask tests took twice the instructions
 * and a call. */
static inline int32_t fc_requantize(int32_t acc, int32_t m, int32_t shift,
                                    int32_t offset, int32_t right_max)
{
    const int32_t left = shift > 0 ? shift : 0, right = left - shift;
    const uint32_t a = acc < 0 ? 0u - (uint32_t)acc : (uint32_t)acc;

    if (__builtin_expect(right <= right_max && left <= 29 && m != INT32_MIN
                         && a < (1u << (29 - left)), 1)) {
        k2m_rqs r;
        r.mult = m;
        r.ls = left + 1;
        r.rs = right + 1;
        /* 2^right + offset * 2^(right + 1), exact: right_max bounds it */
        r.ho = (int32_t)((1u << right) + (uint32_t)offset * (2u << right));
        return k2m_rqs_apply(&r, acc);
    }
    return fc_requantize_general(acc, m, shift, offset);
}

/* Requantizes, clamps and stores outputs index .. index + count - 1
 * (channels o ..) from acc[0 .. count - 1]: one copy for every caller,
 * its code being most of this file's. */
static __attribute__((noinline))
void fc_store_dsp(const k2m_quant_s8 *q, int32_t right_max, void *output,
                  int32_t index, int32_t o, const int32_t *acc, int32_t count,
                  int out_is_16bit)
{
    const int32_t *mult = q->multiplier + o, *shift = q->shift + o;
    const int32_t offset = q->output_offset, lo = q->act_min, hi = q->act_max;
    int32_t j;

    for (j = 0; j < count; ++j) {
        const int32_t y = fc_requantize(acc[j], mult[j], shift[j], offset, right_max);
        k2m_store_s8_s16(output, index + j, k2m_clamp_s32(y, lo, hi), out_is_16bit);
    }
}

static void fully_connected_s8_dsp(const k2m_fc_dims *d,
                                   const k2m_quant_s8 *q,
                                   const int8_t *input,
                                   const int8_t *weights,
                                   const int32_t *bias, void *output,
                                   int out_is_16bit)
{
    const int32_t n_in = d->in_features, n_out = d->out_features;
    const int32_t n_out4 = n_out & ~3;
    const int32_t right_max = fc_rqs_right_max(q->output_offset);
    int32_t n = 0;  /* index of the first output of this batch row */
    int32_t b, o;

    for (b = 0; b < d->batches; ++b) {
        for (o = 0; o < n_out4; o += 4) {
            int32_t acc[4] = {0, 0, 0, 0};
            if (bias != NULL) {
                acc[0] = bias[o];
                acc[1] = bias[o + 1];
                acc[2] = bias[o + 2];
                acc[3] = bias[o + 3];
            }
            fc_rows4_dsp(input, weights + o * n_in, n_in, q->input_offset, acc);
            fc_store_dsp(q, right_max, output, n + o, o, acc, 4, out_is_16bit);
        }
        for (; o < n_out; o += 2) {
            const int8_t *wa = weights + o * n_in;
            const int32_t two = o + 1 < n_out;
            int32_t acc[2];
            acc[0] = bias != NULL ? bias[o] : 0;
            acc[1] = (two && bias != NULL) ? bias[o + 1] : 0;
            fc_rows_dsp(input, wa, two ? wa + n_in : NULL, n_in,
                        q->input_offset, &acc[0], &acc[1]);
            fc_store_dsp(q, right_max, output, n + o, o, acc, 1 + two, out_is_16bit);
        }
        input += n_in;
        n += n_out;
    }
}
#endif /* K2M_DSP */

void k2m_fully_connected_s8(const k2m_fc_dims *d, const k2m_quant_s8 *q,
                            const int8_t *input, const int8_t *weights,
                            const int32_t *bias, int8_t *output)
{
#if K2M_DSP
    fully_connected_s8_dsp(d, q, input, weights, bias, output, 0);
#else
    fully_connected_s8_core(d, q, input, weights, bias, output, 0);
#endif
}

void k2m_fully_connected_s8_s16(const k2m_fc_dims *d, const k2m_quant_s8 *q,
                                const int8_t *input, const int8_t *weights,
                                const int32_t *bias, int16_t *output)
{
#if K2M_DSP
    fully_connected_s8_dsp(d, q, input, weights, bias, output, 1);
#else
    fully_connected_s8_core(d, q, input, weights, bias, output, 1);
#endif
}

void k2m_fully_connected_f32(const k2m_fc_dims *d, float act_min, float act_max,
                             const float *input, const float *weights,
                             const float *bias, float *output)
{
    const int32_t n_in = d->in_features, n_out = d->out_features;
    int32_t b, o, i;

    for (b = 0; b < d->batches; ++b) {
        const float *w = weights;
        for (o = 0; o < n_out; ++o) {
            float acc = bias != NULL ? bias[o] : 0.0f;
            for (i = 0; i < n_in; ++i) {
                acc += input[i] * w[i];
            }
            w += n_in;
            acc = acc < act_min ? act_min : acc;
            acc = acc > act_max ? act_max : acc;
            output[o] = acc;
        }
        input += n_in;
        output += n_out;
    }
}
