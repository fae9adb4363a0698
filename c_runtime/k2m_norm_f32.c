/* k2m runtime: normalization over groups, float32 (k2m.h).  Apart from
 * k2m_norm.c so that int8 models link without libm (sqrtf). */
#include <math.h>

#include "k2m.h"

#define K2M_NORM_BLOCK 64

/* sum of (x - center) (squared if `square`) over one group, in blocks of
 * K2M_NORM_BLOCK elements: the rounding error grows with the block count
 * and length, not the group's. */
static float k2m_norm_sum_f32(const float *x, int32_t rows, int32_t len,
                              int32_t stride, float center, int square)
{
    float total = 0.0f, block = 0.0f;
    int32_t r, i, count = 0;

    for (r = 0; r < rows; ++r) {
        const float *row = x + r * stride;
        for (i = 0; i < len; ++i) {
            const float v = row[i] - center;
            block += square ? v * v : v;
            if (++count == K2M_NORM_BLOCK) {
                total += block;
                block = 0.0f;
                count = 0;
            }
        }
    }
    return total + block;
}

void k2m_norm_f32(const k2m_norm_dims *d, const k2m_norm_f32_params *p,
                  const float *input, float *output)
{
    const int32_t stride = d->c * d->d;
    const float n = (float)(d->b * d->d);
    const int32_t *ps = p->param_stride;
    int32_t a, c, b, i;

    for (a = 0; a < d->a; ++a) {
        for (c = 0; c < d->c; ++c) {
            const int32_t base = a * d->b * stride + c * d->d;
            const float *x = input + base;
            float mean = 0.0f, inv, shift;

            if (p->mode == K2M_NORM_LAYER || p->mode == K2M_NORM_RMS_SCALING) {
                /* deviations from the first value: exact for a constant
                 * group (x - mean is then 0, not an ulp over sqrt(eps)),
                 * and small terms when the mean dwarfs the spread */
                float var;
                mean = x[0] + k2m_norm_sum_f32(x, d->b, d->d, stride, x[0], 0) / n;
                var = k2m_norm_sum_f32(x, d->b, d->d, stride, mean, 1) / n;
                inv = 1.0f / sqrtf(var + p->epsilon);
            } else {
                const float squares = k2m_norm_sum_f32(x, d->b, d->d, stride, 0.0f, 1);
                if (p->mode == K2M_NORM_RMS) {
                    inv = 1.0f / sqrtf(squares / n + p->epsilon);
                } else {
                    /* min(rsqrt(sum), 1 / eps); a zero sum gives 1 / eps */
                    const float cap = 1.0f / p->epsilon;
                    inv = squares > 0.0f ? 1.0f / sqrtf(squares) : cap;
                    inv = inv < cap ? inv : cap;
                }
            }
            shift = p->mode == K2M_NORM_LAYER ? mean : 0.0f;
            for (b = 0; b < d->b; ++b) {
                const int32_t at = base + b * stride;
                const int32_t j0 = b * ps[0] + c * ps[1];
                for (i = 0; i < d->d; ++i) {
                    const int32_t j = j0 + i * ps[2];
                    float y = (input[at + i] - shift) * inv;
                    if (p->gamma != 0) {
                        y *= p->gamma[j];
                    }
                    if (p->beta != 0) {
                        y += p->beta[j];
                    }
                    y = y < p->act_min ? p->act_min : y;
                    output[at + i] = y > p->act_max ? p->act_max : y;
                }
            }
        }
    }
}
