/* k2m runtime: float <-> int8 at the model's input and output.
 *
 * No libm: the rounding is done by hand so a model with int8 layers only
 * links without -lm.
 */
#include "k2m.h"
#include "k2m_math.h"

void k2m_quantize_f32_s8(const float *input, int8_t *output, int32_t size,
                         float scale, int32_t zero_point)
{
    int32_t i;

    for (i = 0; i < size; ++i) {
        float v = input[i] / scale;
        int32_t r;
        if (v != v) {
            /* NaN compares false with everything: map it to real 0. */
            r = zero_point;
        } else {
            /* Beyond +-512 the result saturates whatever the zero point
             * (|zero_point| <= 128), and converting a float outside int32's
             * range is undefined: clamp first.  Also handles +-inf. */
            v = v > 512.0f ? 512.0f : (v < -512.0f ? -512.0f : v);
            r = (int32_t)(v >= 0.0f ? v + 0.5f : v - 0.5f) + zero_point;
        }
        output[i] = (int8_t)k2m_clamp_s32(r, -128, 127);
    }
}

void k2m_dequantize_s8_f32(const int8_t *input, float *output, int32_t size,
                           float scale, int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        output[i] = scale * (float)((int32_t)input[i] - zero_point);
    }
}

void k2m_float_to_index(const float *input, int32_t *output, int32_t size)
{
    int32_t i;

    for (i = 0; i < size; ++i) {
        float v = input[i];
        if (v != v) {
            v = 0.0f;
        }
        /* 2^31 is exact in float; converting beyond int32 is undefined. */
        v = v >= 2147483520.0f ? 2147483520.0f : (v <= -2147483648.0f ? -2147483648.0f : v);
        output[i] = (int32_t)(v >= 0.0f ? v + 0.5f : v - 0.5f);
    }
}
