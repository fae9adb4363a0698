/* k2m runtime: reduction over one axis (mean, sum, max, min), int8 and
 * float.
 *
 * The input is (outer, length, inner) row-major and the middle axis goes
 * (k2m.h).  Each output walks its `length` inputs at stride `inner`: on a
 * Cortex-M4 (no data cache) a strided load costs what a contiguous one
 * does, so no accumulator row is needed and the kernels take no scratch.
 * int8 mean and sum requantize the exact int32 sum once (TFLite's MEAN and
 * SUM); max and min keep the input's scale, so they are exact.
 */
#include "k2m.h"
#include "k2m_math.h"

void k2m_reduce_sum_s8(const k2m_reduce_dims *d, const k2m_reduce_s8_params *p,
                       const int8_t *input, int8_t *output)
{
    const int32_t len = d->length, inner = d->inner;
    const int32_t offset_sum = len * p->input_offset;
    k2m_rq r;
    int32_t a, c, b;

    k2m_rq_init(&r, p->multiplier, p->shift);
    for (a = 0; a < d->outer; ++a) {
        for (c = 0; c < inner; ++c) {
            const int8_t *x = input + c;
            int32_t sum = offset_sum;
            for (b = 0; b < len; ++b) {
                sum += x[b * inner];
            }
            *output++ = (int8_t)k2m_clamp_s32(k2m_rq_apply_sat(&r, sum) + p->output_offset,
                                              p->act_min, p->act_max);
        }
        input += len * inner;
    }
}

void k2m_reduce_max_min_s8(const k2m_reduce_dims *d, int32_t is_max, int32_t act_min,
                           int32_t act_max, const int8_t *input, int8_t *output)
{
    const int32_t len = d->length, inner = d->inner;
    int32_t a, c, b;

    for (a = 0; a < d->outer; ++a) {
        for (c = 0; c < inner; ++c) {
            const int8_t *x = input + c;
            int32_t m = x[0];
            for (b = 1; b < len; ++b) {
                const int32_t v = x[b * inner];
                m = is_max ? (v > m ? v : m) : (v < m ? v : m);
            }
            *output++ = (int8_t)k2m_clamp_s32(m, act_min, act_max);
        }
        input += len * inner;
    }
}

void k2m_reduce_f32(k2m_reduce_fn fn, const k2m_reduce_dims *d, float act_min,
                    float act_max, const float *input, float *output)
{
    const int32_t len = d->length, inner = d->inner;
    int32_t a, c, b;

    for (a = 0; a < d->outer; ++a) {
        for (c = 0; c < inner; ++c) {
            const float *x = input + c;
            float v = x[0];
            for (b = 1; b < len; ++b) {
                const float t = x[b * inner];
                switch (fn) {
                case K2M_REDUCE_MAX: v = t > v ? t : v; break;
                case K2M_REDUCE_MIN: v = t < v ? t : v; break;
                default: v += t; break;  /* mean and sum */
                }
            }
            if (fn == K2M_REDUCE_MEAN) {
                v /= (float)len;
            }
            v = v < act_min ? act_min : v;
            *output++ = v > act_max ? act_max : v;
        }
        input += len * inner;
    }
}
