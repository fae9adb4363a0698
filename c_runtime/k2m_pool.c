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

#if K2M_DSP
/* ---- Cortex-M4 DSP paths ------------------------------------------------
 * Four channels a word: max as SSUB8 (GE per byte where a >= b, signed)
 * then SEL; sums as SXTAB16 into two int16 lanes each (exact while a sum
 * has at most 256 terms: |sum| <= 32768).  Bit-identical to the portable
 * loops: the same maxima, the same integer sums and divisions. */
static inline int32_t pool_max4(int32_t a, int32_t b)
{
    int32_t t;
    __asm__("ssub8 %1, %0, %2\n\t"
            "sel   %0, %0, %2" : "+r"(a), "=&r"(t) : "r"(b) : "cc");
    return a;
}

static inline int32_t pool_min4(int32_t a, int32_t b)
{
    int32_t t;
    __asm__("ssub8 %1, %0, %2\n\t"
            "sel   %0, %2, %0" : "+r"(a), "=&r"(t) : "r"(b) : "cc");
    return a;
}

static inline int32_t pool_bytes4(int32_t v)
{
    return (int32_t)(((uint32_t)v & 0xFFu) * 0x01010101u);
}
#endif

void k2m_max_pool_s8(const k2m_window *g, int32_t act_min, int32_t act_max,
                     const int8_t *input, int8_t *output)
{
    const int32_t in_w = g->in_w, c_n = g->in_c;
    int32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < g->out_h; ++oy) {
        for (ox = 0; ox < g->out_w; ++ox) {
            k2m_pool_win w;
            k2m_pool_window(g, oy, ox, &w);
            c = 0;
#if K2M_DSP
            {
                const int32_t lo4 = pool_bytes4(act_min), hi4 = pool_bytes4(act_max);
                for (; c + 4 <= c_n; c += 4) {
                    int32_t m = (int32_t)0x80808080u;  /* INT8_MIN in every byte */
                    for (ky = w.ky0; ky < w.ky1; ++ky) {
                        const int8_t *row = input + (w.y0 + ky * g->dil_h) * in_w * c_n + c;
                        for (kx = w.kx0; kx < w.kx1; ++kx) {
                            m = pool_max4(m, k2m_ld32(row + (w.x0 + kx * g->dil_w) * c_n));
                        }
                    }
                    k2m_st32(output, pool_min4(pool_max4(m, lo4), hi4));
                    output += 4;
                }
            }
#endif
            for (; c < c_n; ++c) {
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
            c = 0;
#if K2M_DSP
            for (; count > 0 && count <= 256 && c + 4 <= c_n; c += 4) {
                int32_t s02 = 0, s13 = 0, j;
                int32_t v[4];
                for (ky = w.ky0; ky < w.ky1; ++ky) {
                    const int8_t *row = input + (w.y0 + ky * g->dil_h) * in_w * c_n + c;
                    for (kx = w.kx0; kx < w.kx1; ++kx) {
                        const int32_t x = k2m_ld32(row + (w.x0 + kx * g->dil_w) * c_n);
                        s02 = __sxtab16(s02, x);
                        s13 = k2m_sxtab16_ror8(s13, x);
                    }
                }
                v[0] = (int16_t)s02;
                v[1] = (int16_t)s13;
                v[2] = k2m_asr(s02, 16);
                v[3] = k2m_asr(s13, 16);
                for (j = 0; j < 4; ++j) {
                    *output++ = (int8_t)k2m_clamp_s32(k2m_div_nearest(v[j], count),
                                                      act_min, act_max);
                }
            }
#endif
            for (; c < c_n; ++c) {
                int32_t sum = 0;
                for (ky = w.ky0; ky < w.ky1; ++ky) {
                    const int8_t *row = input + (w.y0 + ky * g->dil_h) * in_w * c_n + c;
                    for (kx = w.kx0; kx < w.kx1; ++kx) {
                        sum += row[(w.x0 + kx * g->dil_w) * c_n];
                    }
                }
                sum = count > 0 ? k2m_div_nearest(sum, count) : 0;
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
