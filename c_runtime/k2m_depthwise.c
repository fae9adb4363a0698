/* k2m runtime: depthwise convolution, int8 and float.
 *
 * Weights are CMSIS-NN's depthwise layout (1, kh, kw, in_c * mult): output
 * channel c * mult + m reads input channel c, where mult = out_c / in_c is
 * Keras's depth_multiplier.  A BatchNormalization with no conv before it
 * also runs here, as a 1x1 depthwise convolution with mult 1.
 */
#include "k2m.h"
#include "k2m_math.h"

void k2m_depthwise_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                             const int8_t *input, const int8_t *weights,
                             const int32_t *bias, int8_t *output)
{
    const int32_t in_c = g->in_c, out_c = g->out_c, mult = out_c / in_c;
    int32_t oy, ox, oc, ky, kx, ky0, ky1, kx0, kx1;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        k2m_tap_range(y0, g->in_h, g->k_h, g->dil_h, &ky0, &ky1);
        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            k2m_tap_range(x0, g->in_w, g->k_w, g->dil_w, &kx0, &kx1);
            for (oc = 0; oc < out_c; ++oc) {
                const int8_t *in_c0 = input + oc / mult;
                int32_t acc = bias ? bias[oc] : 0;
                for (ky = ky0; ky < ky1; ++ky) {
                    const int32_t iy = y0 + ky * g->dil_h;
                    const int8_t *w_row = weights + (ky * g->k_w) * out_c + oc;
                    for (kx = kx0; kx < kx1; ++kx) {
                        const int32_t ix = x0 + kx * g->dil_w;
                        const int32_t v = in_c0[(iy * g->in_w + ix) * in_c] + q->input_offset;
                        acc += v * w_row[kx * out_c];
                    }
                }
                acc = k2m_requantize(acc, q->multiplier[oc], q->shift[oc]) + q->output_offset;
                *output++ = (int8_t)k2m_clamp_s32(acc, q->act_min, q->act_max);
            }
        }
    }
}

void k2m_depthwise_conv2d_f32(const k2m_window *g, float act_min, float act_max,
                              const float *input, const float *weights,
                              const float *bias, float *output)
{
    const int32_t in_c = g->in_c, out_c = g->out_c, mult = out_c / in_c;
    int32_t oy, ox, oc, ky, kx, ky0, ky1, kx0, kx1;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        k2m_tap_range(y0, g->in_h, g->k_h, g->dil_h, &ky0, &ky1);
        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            k2m_tap_range(x0, g->in_w, g->k_w, g->dil_w, &kx0, &kx1);
            for (oc = 0; oc < out_c; ++oc) {
                const float *in_c0 = input + oc / mult;
                float acc = bias ? bias[oc] : 0.0f;
                for (ky = ky0; ky < ky1; ++ky) {
                    const int32_t iy = y0 + ky * g->dil_h;
                    const float *w_row = weights + (ky * g->k_w) * out_c + oc;
                    for (kx = kx0; kx < kx1; ++kx) {
                        const int32_t ix = x0 + kx * g->dil_w;
                        acc += in_c0[(iy * g->in_w + ix) * in_c] * w_row[kx * out_c];
                    }
                }
                acc = acc < act_min ? act_min : acc;
                *output++ = acc > act_max ? act_max : acc;
            }
        }
    }
}
