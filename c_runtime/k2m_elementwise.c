/* k2m runtime: elementwise ops of two same-shape tensors (Add), int8 and
 * float.
 *
 * int8 Add is TFLite's: both inputs are brought to a common scale (twice
 * the larger input scale) with 20 bits of headroom, summed exactly, and the
 * sum is requantized to the output's scale.  Multipliers come from the
 * exporter; each input's is below one.
 */
#include "k2m.h"
#include "k2m_math.h"

#if K2M_DSP

/* The Cortex-M4 paths: every requantization as k2m_rqs (five
 * instructions, no 64-bit division) when its bound holds for the whole
 * tensor, which the inputs' int8 range gives before the loop; otherwise
 * the reference loop. */
static int64_t bound_after(const k2m_rqs *r, int64_t acc_max)
{
    /* |rq(acc)| <= |acc| * m / 2^31 / 2^(rs - 1) + 1 */
    return ((acc_max * (int64_t)(r->mult < 0 ? -(int64_t)r->mult : r->mult)) >> 31
            >> (r->rs - 1)) + 1;
}

static int add_fast(const k2m_add_s8_params *p, k2m_rqs *r1, k2m_rqs *r2, k2m_rqs *ro)
{
    const int64_t x1 = 128 + (int64_t)(p->input1_offset < 0 ? -p->input1_offset : p->input1_offset);
    const int64_t x2 = 128 + (int64_t)(p->input2_offset < 0 ? -p->input2_offset : p->input2_offset);
    int64_t a, b;

    if (p->left_shift < 0 || p->left_shift > 24) {
        return 0;
    }
    a = x1 << p->left_shift;
    b = x2 << p->left_shift;
    return k2m_rqs_init(r1, p->input1_multiplier, p->input1_shift, 0, a)
        && k2m_rqs_init(r2, p->input2_multiplier, p->input2_shift, 0, b)
        && k2m_rqs_init(ro, p->output_multiplier, p->output_shift, p->output_offset,
                        bound_after(r1, a) + bound_after(r2, b));
}
#endif

void k2m_add_s8(const k2m_add_s8_params *p, const int8_t *input1,
                const int8_t *input2, int8_t *output, int32_t size)
{
    int32_t i = 0;

#if K2M_DSP
    k2m_rqs r1, r2, ro;
    if (add_fast(p, &r1, &r2, &ro)) {
        /* Two elements a step in one pass: both terms, the sum requantized,
         * the pair clamped as int16 lanes and stored; in place (output ==
         * input1) stays correct because a pair is read before it is
         * stored. */
        const int32_t lo = p->act_min, hi = p->act_max;
        const int32_t lo2 = (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)lo << 16));
        const int32_t hi2 = (int32_t)(((uint32_t)hi & 0xFFFFu) | ((uint32_t)hi << 16));
        /* the input's left_shift and its k2m_rqs shift in one (add_fast's
         * bounds keep the sum below 23) */
        r1.ls += p->left_shift;
        r2.ls += p->left_shift;
        for (; i + 1 < size; i += 2) {
            const int32_t s0 = k2m_rqs_apply(&r1, input1[i] + p->input1_offset)
                             + k2m_rqs_apply(&r2, input2[i] + p->input2_offset);
            const int32_t s1 = k2m_rqs_apply(&r1, input1[i + 1] + p->input1_offset)
                             + k2m_rqs_apply(&r2, input2[i + 1] + p->input2_offset);
            const int32_t v = k2m_clamp2_s16(k2m_pack_lo(__ssat(k2m_rqs_apply(&ro, s0), 16),
                                                         __ssat(k2m_rqs_apply(&ro, s1), 16)),
                                             lo2, hi2);
            output[i] = (int8_t)v;
            output[i + 1] = (int8_t)(v >> 16);
        }
        if (i < size) {
            const int32_t s0 = k2m_rqs_apply(&r1, input1[i] + p->input1_offset)
                             + k2m_rqs_apply(&r2, input2[i] + p->input2_offset);
            output[i] = (int8_t)k2m_clamp_s32(k2m_rqs_apply(&ro, s0), lo, hi);
        }
        return;
    }
#endif
    for (; i < size; ++i) {
        const int32_t a = (input1[i] + p->input1_offset) * (1 << p->left_shift);
        const int32_t b = (input2[i] + p->input2_offset) * (1 << p->left_shift);
        const int32_t sum = k2m_requantize(a, p->input1_multiplier, p->input1_shift)
                          + k2m_requantize(b, p->input2_multiplier, p->input2_shift);
        const int32_t out = k2m_requantize(sum, p->output_multiplier, p->output_shift)
                          + p->output_offset;
        output[i] = (int8_t)k2m_clamp_s32(out, p->act_min, p->act_max);
    }
}

void k2m_add_f32(const float *input1, const float *input2, float *output,
                 int32_t size, float act_min, float act_max)
{
    int32_t i;

    for (i = 0; i < size; ++i) {
        float v = input1[i] + input2[i];
        v = v < act_min ? act_min : v;
        output[i] = v > act_max ? act_max : v;
    }
}

/* int8 product: out = requantize((q1 + o1) * (q2 + o2), multiplier, shift)
 * + output_offset, the multiplier for s1 * s2 / s_out (TFLite's MUL). */
void k2m_mul_s8(const k2m_binary_s8_params *p, const int8_t *input1,
                const int8_t *input2, int8_t *output, int32_t size)
{
    int32_t i = 0;

#if K2M_DSP
    k2m_rqs r;
    const int64_t x1 = 128 + (int64_t)(p->input1_offset < 0 ? -p->input1_offset : p->input1_offset);
    const int64_t x2 = 128 + (int64_t)(p->input2_offset < 0 ? -p->input2_offset : p->input2_offset);
    if (k2m_rqs_init(&r, p->output_multiplier, p->output_shift, p->output_offset, x1 * x2)) {
        const int32_t o1 = p->input1_offset, o2 = p->input2_offset;
        const int32_t lo = p->act_min, hi = p->act_max;
        for (; i < size; ++i) {
            const int32_t v = k2m_rqs_apply(&r, (input1[i] + o1) * (input2[i] + o2));
            output[i] = (int8_t)k2m_clamp_s32(v, lo, hi);
        }
        return;
    }
#endif
    for (; i < size; ++i) {
        const int32_t prod = (input1[i] + p->input1_offset) * (input2[i] + p->input2_offset);
        const int32_t v = k2m_requantize(prod, p->output_multiplier, p->output_shift)
                        + p->output_offset;
        output[i] = (int8_t)k2m_clamp_s32(v, p->act_min, p->act_max);
    }
}

/* int8 maximum / minimum: both inputs requantized to the output's scale,
 * then compared. */
void k2m_max_min_s8(const k2m_binary_s8_params *p, int32_t is_max,
                    const int8_t *input1, const int8_t *input2, int8_t *output,
                    int32_t size)
{
    int32_t i;

    for (i = 0; i < size; ++i) {
        const int32_t a = k2m_requantize(input1[i] + p->input1_offset,
                                         p->input1_multiplier, p->input1_shift);
        const int32_t b = k2m_requantize(input2[i] + p->input2_offset,
                                         p->input2_multiplier, p->input2_shift);
        const int32_t v = (is_max ? (a > b ? a : b) : (a < b ? a : b)) + p->output_offset;
        output[i] = (int8_t)k2m_clamp_s32(v, p->act_min, p->act_max);
    }
}

void k2m_binary_f32(k2m_binary_op op, const float *input1, const float *input2,
                    float *output, int32_t size, float act_min, float act_max)
{
    int32_t i;

    for (i = 0; i < size; ++i) {
        const float a = input1[i], b = input2[i];
        float v;
        switch (op) {
        case K2M_BINARY_SUB: v = a - b; break;
        case K2M_BINARY_MUL: v = a * b; break;
        case K2M_BINARY_MAX: v = a > b ? a : b; break;
        case K2M_BINARY_MIN: v = a < b ? a : b; break;
        default: v = (a + b) * 0.5f; break;  /* K2M_BINARY_AVG */
        }
        v = v < act_min ? act_min : v;
        output[i] = v > act_max ? act_max : v;
    }
}
