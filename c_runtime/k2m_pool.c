/* k2m runtime: max and average pooling, int8 and float.
 *
 * Pixels in the padding are excluded, not treated as zero: TensorFlow's
 * 'same' average pooling divides by the number of real pixels only.  Input
 * and output share scale and zero point in int8, so no requantization.
 *
 * A window can miss the input entirely only with dilation and heavy
 * padding, which Keras never produces; the result is then defined anyway
 * (max: the lowest value, avg: 0, both before the clamp) rather than
 * dividing by zero.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <float.h>

/* Shared driver state: which taps of the current window are inside. */
typedef struct {
    int32_t ky0, ky1, kx0, kx1;
    int32_t y0, x0;
} k2m_pool_win;

static void k2m_pool_window(const k2m_window *g, int32_t oy, int32_t ox,
                            k2m_pool_win *w)
{
    w->y0 = oy * g->stride_h - g->pad_top;
    w->x0 = ox * g->stride_w - g->pad_left;
    k2m_tap_range(w->y0, g->in_h, g->k_h, g->dil_h, &w->ky0, &w->ky1);
    k2m_tap_range(w->x0, g->in_w, g->k_w, g->dil_w, &w->kx0, &w->kx1);
}

/* TFLite's average rounding: to nearest, ties away from zero. */
static int32_t k2m_div_round(int32_t sum, int32_t count)
{
    return sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
}

void k2m_max_pool_s8(const k2m_window *g, int32_t act_min, int32_t act_max,
                     const int8_t *input, int8_t *output)
{
    const int32_t in_w = g->in_w, c_n = g->in_c;
    int32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < g->out_h; ++oy) {
        for (ox = 0; ox < g->out_w; ++ox) {
            k2m_pool_win w;
            k2m_pool_window(g, oy, ox, &w);
            for (c = 0; c < c_n; ++c) {
                int32_t m = INT8_MIN;
                for (ky = w.ky0; ky < w.ky1; ++ky) {
                    const int8_t *row = input + (w.y0 + ky * g->dil_h) * in_w * c_n + c;
                    for (kx = w.kx0; kx < w.kx1; ++kx) {
                        const int32_t v = row[(w.x0 + kx * g->dil_w) * c_n];
                        m = v > m ? v : m;
                    }
                }
                *output++ = (int8_t)k2m_clamp_s32(m, act_min, act_max);
            }
        }
    }
}

void k2m_avg_pool_s8(const k2m_window *g, int32_t act_min, int32_t act_max,
                     const int8_t *input, int8_t *output)
{
    const int32_t in_w = g->in_w, c_n = g->in_c;
    int32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < g->out_h; ++oy) {
        for (ox = 0; ox < g->out_w; ++ox) {
            k2m_pool_win w;
            int32_t count;
            k2m_pool_window(g, oy, ox, &w);
            count = (w.ky1 - w.ky0) * (w.kx1 - w.kx0);
            for (c = 0; c < c_n; ++c) {
                int32_t sum = 0;
                for (ky = w.ky0; ky < w.ky1; ++ky) {
                    const int8_t *row = input + (w.y0 + ky * g->dil_h) * in_w * c_n + c;
                    for (kx = w.kx0; kx < w.kx1; ++kx) {
                        sum += row[(w.x0 + kx * g->dil_w) * c_n];
                    }
                }
                sum = count > 0 ? k2m_div_round(sum, count) : 0;
                *output++ = (int8_t)k2m_clamp_s32(sum, act_min, act_max);
            }
        }
    }
}

void k2m_max_pool_f32(const k2m_window *g, float act_min, float act_max,
                      const float *input, float *output)
{
    const int32_t in_w = g->in_w, c_n = g->in_c;
    int32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < g->out_h; ++oy) {
        for (ox = 0; ox < g->out_w; ++ox) {
            k2m_pool_win w;
            k2m_pool_window(g, oy, ox, &w);
            for (c = 0; c < c_n; ++c) {
                float m = -FLT_MAX;
                for (ky = w.ky0; ky < w.ky1; ++ky) {
                    const float *row = input + (w.y0 + ky * g->dil_h) * in_w * c_n + c;
                    for (kx = w.kx0; kx < w.kx1; ++kx) {
                        const float v = row[(w.x0 + kx * g->dil_w) * c_n];
                        m = v > m ? v : m;
                    }
                }
                m = m < act_min ? act_min : m;
                m = m > act_max ? act_max : m;
                *output++ = m;
            }
        }
    }
}

void k2m_avg_pool_f32(const k2m_window *g, float act_min, float act_max,
                      const float *input, float *output)
{
    const int32_t in_w = g->in_w, c_n = g->in_c;
    int32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < g->out_h; ++oy) {
        for (ox = 0; ox < g->out_w; ++ox) {
            k2m_pool_win w;
            int32_t count;
            k2m_pool_window(g, oy, ox, &w);
            count = (w.ky1 - w.ky0) * (w.kx1 - w.kx0);
            for (c = 0; c < c_n; ++c) {
                float sum = 0.0f;
                for (ky = w.ky0; ky < w.ky1; ++ky) {
                    const float *row = input + (w.y0 + ky * g->dil_h) * in_w * c_n + c;
                    for (kx = w.kx0; kx < w.kx1; ++kx) {
                        sum += row[(w.x0 + kx * g->dil_w) * c_n];
                    }
                }
                sum = count > 0 ? sum / (float)count : 0.0f;
                sum = sum < act_min ? act_min : sum;
                sum = sum > act_max ? act_max : sum;
                *output++ = sum;
            }
        }
    }
}

/* Global average pooling as TFLite's MEAN: the mean of a whole map has a
 * much smaller range than the map itself, so unlike avg_pool the output has
 * its own scale and the channel sum is requantized once:
 *   out = requantize(sum(q + input_offset), multiplier[0], shift[0]) + output_offset
 * with the multiplier for input_scale / (output_scale * spatial). */
void k2m_mean_s8(int32_t spatial, int32_t channels, const k2m_quant_s8 *q,
                 const int8_t *input, int8_t *output)
{
    int32_t c, p;

    for (c = 0; c < channels; ++c) {
        const int8_t *src = input + c;
        int32_t sum = 0;
        for (p = 0; p < spatial; ++p) {
            sum += src[p * channels];
        }
        sum += spatial * q->input_offset;
        sum = k2m_requantize(sum, q->multiplier[0], q->shift[0]) + q->output_offset;
        output[c] = (int8_t)k2m_clamp_s32(sum, q->act_min, q->act_max);
    }
}
