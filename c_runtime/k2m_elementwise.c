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

void k2m_add_s8(const k2m_add_s8_params *p, const int8_t *input1,
                const int8_t *input2, int8_t *output, int32_t size)
{
    int32_t i;

    for (i = 0; i < size; ++i) {
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
    int32_t i;

    for (i = 0; i < size; ++i) {
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
