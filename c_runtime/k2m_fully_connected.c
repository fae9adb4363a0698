/* k2m runtime: fully connected (Keras Dense): int8 -> int8, int8 -> int16
 * and float.
 *
 * Keras's Dense on an N-D input acts on the last axis, so the exporter
 * flattens the leading axes into `batches`.  Weights are (out, in): each
 * output is one contiguous dot product.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <stddef.h>

/* The int8-input loop behind k2m_fully_connected_s8 and _s8_s16: only the
 * width of the stored output differs, one branch per output element. */
static void fully_connected_s8_core(const k2m_fc_dims *d,
                                    const k2m_quant_s8 *q,
                                    const int8_t *input,
                                    const int8_t *weights,
                                    const int32_t *bias, void *output,
                                    int out_is_16bit)
{
    const int32_t n_in = d->in_features, n_out = d->out_features;
    const int32_t input_offset = q->input_offset;
    int32_t n = 0;  /* index of the first output of this batch row */
    int32_t b, o, i;

    for (b = 0; b < d->batches; ++b) {
        const int8_t *w = weights;
        for (o = 0; o < n_out; ++o) {
            int32_t acc = bias != NULL ? bias[o] : 0;
            for (i = 0; i < n_in; ++i) {
                acc += ((int32_t)input[i] + input_offset) * (int32_t)w[i];
            }
            w += n_in;
            acc = k2m_requantize(acc, q->multiplier[o], q->shift[o]);
            acc += q->output_offset;
            k2m_store_s8_s16(output, n + o,
                             k2m_clamp_s32(acc, q->act_min, q->act_max),
                             out_is_16bit);
        }
        input += n_in;
        n += n_out;
    }
}

void k2m_fully_connected_s8(const k2m_fc_dims *d, const k2m_quant_s8 *q,
                            const int8_t *input, const int8_t *weights,
                            const int32_t *bias, int8_t *output)
{
    fully_connected_s8_core(d, q, input, weights, bias, output, 0);
}

void k2m_fully_connected_s8_s16(const k2m_fc_dims *d, const k2m_quant_s8 *q,
                                const int8_t *input, const int8_t *weights,
                                const int32_t *bias, int16_t *output)
{
    fully_connected_s8_core(d, q, input, weights, bias, output, 1);
}

void k2m_fully_connected_f32(const k2m_fc_dims *d, float act_min, float act_max,
                             const float *input, const float *weights,
                             const float *bias, float *output)
{
    const int32_t n_in = d->in_features, n_out = d->out_features;
    int32_t b, o, i;

    for (b = 0; b < d->batches; ++b) {
        const float *w = weights;
        for (o = 0; o < n_out; ++o) {
            float acc = bias != NULL ? bias[o] : 0.0f;
            for (i = 0; i < n_in; ++i) {
                acc += input[i] * w[i];
            }
            w += n_in;
            acc = acc < act_min ? act_min : acc;
            acc = acc > act_max ? act_max : acc;
            output[o] = acc;
        }
        input += n_in;
        output += n_out;
    }
}
