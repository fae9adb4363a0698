/* k2m runtime: 2-D convolution (Keras Conv1D/Conv2D): int8 -> int8,
 * int8 -> int16 and float.
 *
 * Cross-correlation as Keras computes it (no kernel flip), NHWC input,
 * OHWI weights.  Taps that fall in the padding are skipped rather than
 * multiplied by a materialised zero: for int8 that zero is the real value 0,
 * i.e. (q + input_offset) == 0, so skipping is exact.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <stddef.h>

/* The int8-input loop behind k2m_conv2d_s8 and k2m_conv2d_s8_s16: they
 * differ only in the width of the stored output element, so that is the
 * one branch (per output element, outside the MAC loops). */
static void conv2d_s8_core(const k2m_window *g, const k2m_quant_s8 *q,
                           const int8_t *input, const int8_t *weights,
                           const int32_t *bias, void *output,
                           int out_is_16bit)
{
    const int32_t in_w = g->in_w, in_c = g->in_c;
    const int32_t k_h = g->k_h, k_w = g->k_w;
    const int32_t dil_h = g->dil_h, dil_w = g->dil_w;
    const int32_t out_c = g->out_c;
    const int32_t input_offset = q->input_offset;
    /* Stride between consecutive taps, in input elements. */
    const int32_t tap_step_y = dil_h * in_w * in_c;
    const int32_t tap_step_x = dil_w * in_c;
    const int32_t w_row = k_w * in_c;
    const int32_t w_filter = k_h * w_row;
    int32_t n = 0;  /* index of the next output element */
    int32_t oy, ox, oc;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        int32_t ky0, ky1;
        k2m_tap_range(y0, g->in_h, k_h, dil_h, &ky0, &ky1);

        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            int32_t kx0, kx1;
            /* First valid tap of this window; the loops below only walk
             * pointers from here. */
            const int8_t *in_base;
            k2m_tap_range(x0, in_w, k_w, dil_w, &kx0, &kx1);
            /* An empty window (all taps in the padding) leaves in_base
             * unused; it must still not point outside the array. */
            in_base = (ky0 < ky1 && kx0 < kx1)
                ? input + ((y0 + ky0 * dil_h) * in_w + (x0 + kx0 * dil_w)) * in_c
                : input;

            for (oc = 0; oc < out_c; ++oc) {
                const int8_t *w_base = weights + oc * w_filter + ky0 * w_row + kx0 * in_c;
                int32_t acc = bias != NULL ? bias[oc] : 0;
                int32_t ky, kx, ic;

                for (ky = ky0; ky < ky1; ++ky) {
                    const int8_t *in_px = in_base + (ky - ky0) * tap_step_y;
                    const int8_t *w_px = w_base + (ky - ky0) * w_row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        for (ic = 0; ic < in_c; ++ic) {
                            acc += ((int32_t)in_px[ic] + input_offset) * (int32_t)w_px[ic];
                        }
                        in_px += tap_step_x;
                        w_px += in_c;
                    }
                }
                acc = k2m_requantize(acc, q->multiplier[oc], q->shift[oc]);
                acc += q->output_offset;
                k2m_store_s8_s16(output, n++,
                                 k2m_clamp_s32(acc, q->act_min, q->act_max),
                                 out_is_16bit);
            }
        }
    }
}

void k2m_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                   const int8_t *input, const int8_t *weights,
                   const int32_t *bias, int8_t *output)
{
    conv2d_s8_core(g, q, input, weights, bias, output, 0);
}

void k2m_conv2d_s8_s16(const k2m_window *g, const k2m_quant_s8 *q,
                       const int8_t *input, const int8_t *weights,
                       const int32_t *bias, int16_t *output)
{
    conv2d_s8_core(g, q, input, weights, bias, output, 1);
}

void k2m_conv2d_f32(const k2m_window *g, float act_min, float act_max,
                    const float *input, const float *weights,
                    const float *bias, float *output)
{
    const int32_t in_w = g->in_w, in_c = g->in_c;
    const int32_t k_h = g->k_h, k_w = g->k_w;
    const int32_t dil_h = g->dil_h, dil_w = g->dil_w;
    const int32_t out_c = g->out_c;
    const int32_t tap_step_y = dil_h * in_w * in_c;
    const int32_t tap_step_x = dil_w * in_c;
    const int32_t w_row = k_w * in_c;
    const int32_t w_filter = k_h * w_row;
    int32_t oy, ox, oc;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        int32_t ky0, ky1;
        k2m_tap_range(y0, g->in_h, k_h, dil_h, &ky0, &ky1);

        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            int32_t kx0, kx1;
            const float *in_base;
            k2m_tap_range(x0, in_w, k_w, dil_w, &kx0, &kx1);
            /* An empty window (all taps in the padding) leaves in_base
             * unused; it must still not point outside the array. */
            in_base = (ky0 < ky1 && kx0 < kx1)
                ? input + ((y0 + ky0 * dil_h) * in_w + (x0 + kx0 * dil_w)) * in_c
                : input;

            for (oc = 0; oc < out_c; ++oc) {
                const float *w_base = weights + oc * w_filter + ky0 * w_row + kx0 * in_c;
                float acc = bias != NULL ? bias[oc] : 0.0f;
                int32_t ky, kx, ic;

                for (ky = ky0; ky < ky1; ++ky) {
                    const float *in_px = in_base + (ky - ky0) * tap_step_y;
                    const float *w_px = w_base + (ky - ky0) * w_row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        for (ic = 0; ic < in_c; ++ic) {
                            acc += in_px[ic] * w_px[ic];
                        }
                        in_px += tap_step_x;
                        w_px += in_c;
                    }
                }
                /* Comparisons rather than fminf/fmaxf keep -lm out. */
                acc = acc < act_min ? act_min : acc;
                acc = acc > act_max ? act_max : acc;
                *output++ = acc;
            }
        }
    }
}
