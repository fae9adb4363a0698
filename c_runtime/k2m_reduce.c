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

/* Runs BODY once per output, in order, with x pointing at the first of its
 * `len` inputs (stride `inner`) and y at the output; T is the data type. */
#define REDUCE_WALK(T, d, input, output, BODY)                                \
    do {                                                                      \
        const int32_t len = (d)->length, inner = (d)->inner;                  \
        int32_t a_, c_;                                                       \
        for (a_ = 0; a_ < (d)->outer; ++a_) {                                 \
            for (c_ = 0; c_ < inner; ++c_) {                                  \
                const T *x = (input) + a_ * len * inner + c_;                 \
                T *y = (output)++;                                            \
                BODY;                                                         \
            }                                                                 \
        }                                                                     \
    } while (0)

void k2m_reduce_sum_s8(const k2m_reduce_dims *d, const k2m_reduce_s8_params *p,
                       const int8_t *input, int8_t *output)
{
    const int32_t offset_sum = d->length * p->input_offset;
    k2m_rq r;
    int32_t b;

    k2m_rq_init(&r, p->multiplier, p->shift);
    REDUCE_WALK(int8_t, d, input, output, {
        int32_t sum = offset_sum;
        for (b = 0; b < len; ++b) {
            sum += x[b * inner];
        }
        *y = (int8_t)k2m_clamp_s32(k2m_rq_apply_sat(&r, sum) + p->output_offset,
                                   p->act_min, p->act_max);
    });
}

void k2m_reduce_max_min_s8(const k2m_reduce_dims *d, int32_t is_max, int32_t act_min,
                           int32_t act_max, const int8_t *input, int8_t *output)
{
    int32_t b;

    REDUCE_WALK(int8_t, d, input, output, {
        int32_t m = x[0];
        for (b = 1; b < len; ++b) {
            const int32_t v = x[b * inner];
            m = is_max ? (v > m ? v : m) : (v < m ? v : m);
        }
        *y = (int8_t)k2m_clamp_s32(m, act_min, act_max);
    });
}

void k2m_reduce_f32(k2m_reduce_fn fn, const k2m_reduce_dims *d, float act_min,
                    float act_max, const float *input, float *output)
{
    int32_t b;

    REDUCE_WALK(float, d, input, output, {
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
        *y = v > act_max ? act_max : v;
    });
}
