/* k2m runtime: data movement (padding, cropping, nearest upsampling,
 * permute, repeat, concatenation) as strided copies.
 *
 * Every such layer is one or more moves of a box of up to K2M_COPY_DIMS
 * axes: element (i0..i5) goes from input[Σ i_k * in_stride[k]] to
 * output[Σ i_k * out_stride[k]].  A stride of 0 on the input repeats an
 * element (upsampling, RepeatVector).  int8 copies between tensors of
 * different scale (Concatenate) requantize on the way.
 */
#include "k2m.h"
#include "k2m_math.h"

#define K2M_COPY_LOOPS(BODY)                                                  \
    int32_t i0, i1, i2, i3, i4, i5;                                           \
    for (i0 = 0; i0 < d->count[0]; ++i0)                                      \
    for (i1 = 0; i1 < d->count[1]; ++i1)                                      \
    for (i2 = 0; i2 < d->count[2]; ++i2)                                      \
    for (i3 = 0; i3 < d->count[3]; ++i3)                                      \
    for (i4 = 0; i4 < d->count[4]; ++i4) {                                    \
        const int32_t in0 = i0 * d->in_stride[0] + i1 * d->in_stride[1]      \
            + i2 * d->in_stride[2] + i3 * d->in_stride[3] + i4 * d->in_stride[4]; \
        const int32_t out0 = i0 * d->out_stride[0] + i1 * d->out_stride[1]   \
            + i2 * d->out_stride[2] + i3 * d->out_stride[3] + i4 * d->out_stride[4]; \
        for (i5 = 0; i5 < d->count[5]; ++i5) {                                \
            const int32_t src = in0 + i5 * d->in_stride[5];                  \
            const int32_t dst = out0 + i5 * d->out_stride[5];                \
            BODY;                                                             \
        }                                                                     \
    }

void k2m_copy_s8(const k2m_copy_dims *d, const k2m_requant_s8 *rq,
                 const int8_t *input, int8_t *output)
{
    if (rq == 0) {
        K2M_COPY_LOOPS(output[dst] = input[src])
    } else {
        K2M_COPY_LOOPS({
            const int32_t v = k2m_requantize(input[src] + rq->input_offset,
                                             rq->multiplier, rq->shift) + rq->output_offset;
            output[dst] = (int8_t)k2m_clamp_s32(v, -128, 127);
        })
    }
}

void k2m_copy_f32(const k2m_copy_dims *d, const float *input, float *output)
{
    K2M_COPY_LOOPS(output[dst] = input[src])
}

void k2m_fill_s8(int8_t *output, int32_t size, int8_t value)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        output[i] = value;
    }
}

void k2m_fill_f32(float *output, int32_t size, float value)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        output[i] = value;
    }
}

void k2m_fill_s16(int16_t *output, int32_t size, int16_t value)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        output[i] = value;
    }
}

/* Bilinear resize (UpSampling2D(interpolation='bilinear'), TensorFlow's
 * half-pixel centres).  The exporter precomputes, per output row and
 * column, the two source indices (y_index[2 oy], y_index[2 oy + 1]) and the
 * weight of the second: Q11 for int8, float for float, so the kernels do
 * no coordinate arithmetic.  int8 in/out share scale and zero point. */
void k2m_resize_bilinear_s8(const k2m_resize_dims *d, const int16_t *y_index,
                            const int16_t *y_frac, const int16_t *x_index,
                            const int16_t *x_frac, const int8_t *input,
                            int8_t *output)
{
    const int32_t c_n = d->channels, row = d->in_w * c_n;
    int32_t oy, ox, c;

    for (oy = 0; oy < d->out_h; ++oy) {
        const int8_t *r0 = input + y_index[2 * oy] * row;
        const int8_t *r1 = input + y_index[2 * oy + 1] * row;
        const int32_t fy = y_frac[oy];
        for (ox = 0; ox < d->out_w; ++ox) {
            const int32_t x0 = x_index[2 * ox] * c_n, x1 = x_index[2 * ox + 1] * c_n;
            const int32_t fx = x_frac[ox];
            for (c = 0; c < c_n; ++c) {
                const int32_t top = r0[x0 + c] * (2048 - fx) + r0[x1 + c] * fx;
                const int32_t bottom = r1[x0 + c] * (2048 - fx) + r1[x1 + c] * fx;
                const int32_t v = top * (2048 - fy) + bottom * fy;  /* Q22 */
                *output++ = (int8_t)k2m_clamp_s32(k2m_asr(v + (1 << 21), 22), -128, 127);
            }
        }
    }
}

void k2m_resize_bilinear_f32(const k2m_resize_dims *d, const int16_t *y_index,
                             const float *y_frac, const int16_t *x_index,
                             const float *x_frac, const float *input,
                             float *output)
{
    const int32_t c_n = d->channels, row = d->in_w * c_n;
    int32_t oy, ox, c;

    for (oy = 0; oy < d->out_h; ++oy) {
        const float *r0 = input + y_index[2 * oy] * row;
        const float *r1 = input + y_index[2 * oy + 1] * row;
        const float fy = y_frac[oy];
        for (ox = 0; ox < d->out_w; ++ox) {
            const int32_t x0 = x_index[2 * ox] * c_n, x1 = x_index[2 * ox + 1] * c_n;
            const float fx = x_frac[ox];
            for (c = 0; c < c_n; ++c) {
                const float top = r0[x0 + c] + (r0[x1 + c] - r0[x0 + c]) * fx;
                const float bottom = r1[x0 + c] + (r1[x1 + c] - r1[x0 + c]) * fx;
                *output++ = top + (bottom - top) * fy;
            }
        }
    }
}

/* Clamping the index keeps a corrupted or out-of-vocabulary token from
 * reading outside the table; the exporter documents it, since Keras itself
 * fails (or returns zeros) on such an index. */
static int32_t k2m_embedding_row(int32_t index, int32_t rows)
{
    return index < 0 ? 0 : (index >= rows ? rows - 1 : index);
}

void k2m_embedding_s8(const int32_t *index, int32_t count, const int8_t *table,
                      int32_t rows, int32_t dim, int8_t *output)
{
    int32_t t, k;

    for (t = 0; t < count; ++t) {
        const int8_t *row = table + k2m_embedding_row(index[t], rows) * dim;
        for (k = 0; k < dim; ++k) {
            *output++ = row[k];
        }
    }
}

void k2m_embedding_f32(const int32_t *index, int32_t count, const float *table,
                       int32_t rows, int32_t dim, float *output)
{
    int32_t t, k;

    for (t = 0; t < count; ++t) {
        const float *row = table + k2m_embedding_row(index[t], rows) * dim;
        for (k = 0; k < dim; ++k) {
            *output++ = row[k];
        }
    }
}
