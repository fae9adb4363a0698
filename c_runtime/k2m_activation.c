/* k2m runtime: activations and softmax.
 *
 * int8 activations never compute a transcendental on the target: any
 * elementwise function is a 256-entry table, and softmax uses a table of
 * exp(-input_scale * d), both built by the exporter.  The int16-input
 * versions do the same with a 257-point interpolated table and two exp
 * factor tables.  Only the float functions need libm (expf, tanhf).
 */
#include "k2m.h"
#include "k2m_math.h"

#include <math.h>

void k2m_lut_s8(const int8_t *input, int8_t *output, int32_t size,
                const int8_t table[256])
{
    int32_t i;
    /* Reads input[i] before writing output[i], so output == input works. */
    for (i = 0; i < size; ++i) {
        output[i] = table[(int32_t)input[i] + 128];
    }
}

void k2m_softmax_s8(const int8_t *input, int8_t *output, int32_t rows,
                    int32_t cols, const uint32_t exp_table[256])
{
    int32_t r, i;

    for (r = 0; r < rows; ++r) {
        int32_t max = INT8_MIN;
        uint32_t sum = 0;

        for (i = 0; i < cols; ++i) {
            max = input[i] > max ? input[i] : max;
        }
        /* d = max - x is in [0, 255]: exp(x - max) needs no range check.
         * cols * exp_table[0] < 2^31 keeps the sum (and sum / 2 below)
         * exact in 32 bits. */
        for (i = 0; i < cols; ++i) {
            sum += exp_table[max - input[i]];
        }
        for (i = 0; i < cols; ++i) {
            /* e << 8 scales to the output's 1/256 step; exp_table[0] <= 2^23
             * keeps it, plus sum / 2, below 2^32. */
            const uint32_t e = exp_table[max - input[i]];
            const int32_t p = (int32_t)(((e << 8) + sum / 2u) / sum);
            output[i] = (int8_t)k2m_clamp_s32(p - 128, -128, 127);
        }
        input += cols;
        output += cols;
    }
}

void k2m_lut_s16_s8(const int16_t *input, int8_t *output, int32_t size,
                    const int32_t table[257])
{
    int32_t i;

    for (i = 0; i < size; ++i) {
        const int32_t u = (int32_t)input[i] + 32768;  /* 0..65535 */
        const int32_t k = u >> 8;                     /* 0..255: table[k + 1] exists */
        const int32_t f = u & 255;
        const int32_t lo = table[k];
        /* The slope term may be negative (falling tables): k2m_asr floors,
         * where a plain >> of a negative int is implementation-defined. */
        const int32_t y = lo + k2m_asr((table[k + 1] - lo) * f + 128, 8);
        output[i] = (int8_t)k2m_clamp_s32(k2m_asr(y + 128, 8), -128, 127);
    }
}

/* exp(-(max - x)) in Q15 from the two 256-entry factor tables; at most 2^15
 * when exp_hi[0] = exp_lo[0] = 2^15 (the product is at most 2^30). */
static inline uint32_t k2m_exp_s16(uint32_t d, const uint16_t exp_hi[256],
                                   const uint16_t exp_lo[256])
{
    return ((uint32_t)exp_hi[d >> 8] * (uint32_t)exp_lo[d & 255u]
            + (1u << 14)) >> 15;
}

void k2m_softmax_s16_s8(const int16_t *input, int8_t *output, int32_t rows,
                        int32_t cols, const uint16_t exp_hi[256],
                        const uint16_t exp_lo[256])
{
    int32_t r, i;

    for (r = 0; r < rows; ++r) {
        int32_t max = INT16_MIN;
        uint32_t sum = 0;

        for (i = 0; i < cols; ++i) {
            max = input[i] > max ? input[i] : max;
        }
        /* d = max - x is in [0, 65535].  e <= 2^15 and cols < 2^16 keep the
         * sum below 2^31, so sum / 2 and (e << 8) + sum / 2 fit in 32 bits.
         * e is recomputed in the second pass (no scratch buffer). */
        for (i = 0; i < cols; ++i) {
            sum += k2m_exp_s16((uint32_t)(max - input[i]), exp_hi, exp_lo);
        }
        for (i = 0; i < cols; ++i) {
            const uint32_t e = k2m_exp_s16((uint32_t)(max - input[i]),
                                           exp_hi, exp_lo);
            /* sum >= e(max) >= 1 for sane tables; a zero sum (all-zero
             * tables) would divide by zero, so guard it. */
            const int32_t p = sum != 0u
                ? (int32_t)(((e << 8) + sum / 2u) / sum) : 0;
            output[i] = (int8_t)k2m_clamp_s32(p - 128, -128, 127);
        }
        input += cols;
        output += cols;
    }
}

void k2m_softmax_f32(const float *input, float *output, int32_t rows,
                     int32_t cols)
{
    int32_t r, i;

    if (cols <= 0) {
        return;
    }
    for (r = 0; r < rows; ++r) {
        float max = input[0];
        float sum = 0.0f;

        for (i = 1; i < cols; ++i) {
            max = input[i] > max ? input[i] : max;
        }
        /* Subtracting the max keeps expf <= 1: no overflow, and the sum is
         * at least 1 so the division is safe. */
        for (i = 0; i < cols; ++i) {
            output[i] = expf(input[i] - max);
            sum += output[i];
        }
        for (i = 0; i < cols; ++i) {
            output[i] /= sum;
        }
        input += cols;
        output += cols;
    }
}

void k2m_relu_f32(const float *input, float *output, int32_t size,
                  float act_min, float act_max)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        float v = input[i];
        v = v < act_min ? act_min : v;
        v = v > act_max ? act_max : v;
        output[i] = v;
    }
}

void k2m_sigmoid_f32(const float *input, float *output, int32_t size)
{
    int32_t i;
    /* expf(-x) overflows to +inf for x < -88: 1 / inf is the right 0. */
    for (i = 0; i < size; ++i) {
        output[i] = 1.0f / (1.0f + expf(-input[i]));
    }
}

void k2m_tanh_f32(const float *input, float *output, int32_t size)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        output[i] = tanhf(input[i]);
    }
}

/* The other Keras activations in float.  One switch per call, one tight
 * loop per function; alpha is the function's parameter where it has one
 * (LeakyReLU's negative slope, ELU's alpha) and threshold the ReLU
 * threshold. */
void k2m_activation_f32(k2m_act_fn fn, const float *input, float *output,
                        int32_t size, float alpha, float threshold)
{
    int32_t i;

    switch (fn) {
    case K2M_ACT_LEAKY_RELU:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = x >= threshold ? x : alpha * (x - threshold);
        }
        break;
    case K2M_ACT_ELU:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = x > 0.0f ? x : alpha * (expf(x) - 1.0f);
        }
        break;
    case K2M_ACT_SELU:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = 1.05070098f * (x > 0.0f ? x : 1.67326324f * (expf(x) - 1.0f));
        }
        break;
    case K2M_ACT_HARD_SIGMOID:
        for (i = 0; i < size; ++i) {
            float y = (input[i] + 3.0f) / 6.0f;
            y = y < 0.0f ? 0.0f : y;
            output[i] = y > 1.0f ? 1.0f : y;
        }
        break;
    case K2M_ACT_HARD_SWISH:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            float y = (x + 3.0f) / 6.0f;
            y = y < 0.0f ? 0.0f : y;
            output[i] = x * (y > 1.0f ? 1.0f : y);
        }
        break;
    case K2M_ACT_SWISH:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = x / (1.0f + expf(-x));
        }
        break;
    case K2M_ACT_GELU:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = 0.5f * x * (1.0f + erff(x * 0.707106781f));
        }
        break;
    case K2M_ACT_GELU_TANH:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = 0.5f * x * (1.0f + tanhf(0.797884561f * (x + 0.044715f * x * x * x)));
        }
        break;
    case K2M_ACT_SOFTPLUS:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            /* log1p(exp(x)) without overflow for large x */
            output[i] = x > 15.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
        }
        break;
    case K2M_ACT_SOFTSIGN:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = x / (1.0f + fabsf(x));
        }
        break;
    case K2M_ACT_EXPONENTIAL:
        for (i = 0; i < size; ++i) {
            output[i] = expf(input[i]);
        }
        break;
    case K2M_ACT_MISH:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            const float sp = x > 15.0f ? x : log1pf(expf(x));
            output[i] = x * tanhf(sp);
        }
        break;
    }
}

/* PReLU: x for x >= 0, alpha * x below; alpha repeats every alpha_period
 * elements (the channel count when Keras shares it over the spatial axes,
 * the whole size when not).  int8 as TFLite: the two sides requantize with
 * their own multipliers, alpha quantized symmetric per tensor. */
void k2m_prelu_s8(const k2m_prelu_s8_params *p, const int8_t *input,
                  const int8_t *alpha, int32_t alpha_period, int8_t *output,
                  int32_t size)
{
    int32_t i, a = 0;

    for (i = 0; i < size; ++i) {
        const int32_t x = input[i] + p->input_offset;
        int32_t v;
        if (x >= 0) {
            v = k2m_requantize(x, p->positive_multiplier, p->positive_shift);
        } else {
            v = k2m_requantize(x * alpha[a], p->negative_multiplier, p->negative_shift);
        }
        output[i] = (int8_t)k2m_clamp_s32(v + p->output_offset, -128, 127);
        if (++a == alpha_period) {
            a = 0;
        }
    }
}

void k2m_prelu_f32(const float *input, const float *alpha, int32_t alpha_period,
                   float *output, int32_t size)
{
    int32_t i, a = 0;

    for (i = 0; i < size; ++i) {
        const float x = input[i];
        output[i] = x >= 0.0f ? x : alpha[a] * x;
        if (++a == alpha_period) {
            a = 0;
        }
    }
}
