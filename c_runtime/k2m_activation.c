/* k2m runtime: activations and softmax.
 *
 * int8 activations never compute a transcendental on the target: any
 * elementwise function is a 256-entry table, and softmax uses a table of
 * exp(-input_scale * d), both built by the exporter.  The int16-input
 * versions do the same with a 257-point interpolated table and two exp
 * factor tables.  The float activations, which need libm, are in
 * k2m_activation_f32.c, so that an int8 model links without it.
 */
#include "k2m.h"
#include "k2m_math.h"


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
