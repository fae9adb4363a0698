/* k2m runtime: the C kernels behind models emitted by `export-model`.
 *
 * One function per op and data type, parameters grouped in small structs,
 * CMSIS-NN's conventions:
 *   - activations are NHWC with the batch dimension dropped (Keras's layout);
 *     a 1-D op is the 2-D op with height 1;
 *   - conv weights are OHWI (out, kh, kw, in), dense weights (out, in);
 *   - int8 tensors are asymmetric: real = scale * (q - zero_point); kernels
 *     take input_offset = -input_zero_point and output_offset =
 *     output_zero_point, weights are symmetric (zero point 0) per output
 *     channel, biases int32 with scale input_scale * weight_scale[c];
 *   - requantization is TFLite's: a Q31 multiplier and a shift per output
 *     channel (k2m_requantize in k2m_math.h).
 *   - int16 tensors (the _s16 kernels) are symmetric, zero point 0: a
 *     conv/dense output that feeds tanh/sigmoid/softmax is kept in int16,
 *     because an int8 pre-activation loses too much of the input range
 *     these functions are sensitive to (TFLite has the same loss).
 * Portable C99, no heap, no VLAs, no stdio.  The portable loops are the
 * reference: any DSP-specialised loop added later must be bit-identical.
 */
#ifndef K2M_H
#define K2M_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Geometry of a 2-D sliding-window op (conv, pool).  Padding is explicit:
 * the exporter resolves Keras's 'same' (TensorFlow puts the odd pixel at
 * the bottom/right) and 'causal' into pad_top/pad_left; pixels outside the
 * input are zero for conv and excluded for pooling. */
typedef struct {
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w;
    int32_t dil_h, dil_w;
    int32_t pad_top, pad_left;
} k2m_window;

/* int8 requantization of one layer's output. */
typedef struct {
    int32_t input_offset;       /* -input zero point */
    int32_t output_offset;      /* output zero point */
    int32_t act_min, act_max;   /* output clamp: int8 range or a fused ReLU/ReLU6 */
    const int32_t *multiplier;  /* Q31, one per output channel */
    const int32_t *shift;       /* >0 left, <0 right, one per output channel */
} k2m_quant_s8;

/* A dense layer applied to `batches` rows of `in_features` (Keras's Dense
 * on an N-D input works along the last axis). */
typedef struct {
    int32_t batches, in_features, out_features;
} k2m_fc_dims;

/* ---- convolution (k2m_conv.c) ---------------------------------------- */
/* bias may be NULL (no bias) in the conv and fully connected kernels.
 *
 * scratch (int8 conv kernels only): caller-provided work space for the
 * im2col columns of the DSP path (CMSIS-NN style), 4-byte aligned, of
 * K2M_CONV_S8_SCRATCH_BYTES(g) = 4 * k_h * k_w * in_c bytes (two columns
 * of k_h * k_w * in_c int16 each); the kernels never touch more than that.
 * Its contents on entry are ignored and on return unspecified.  The
 * portable path (no __ARM_FEATURE_DSP, or K2M_PORTABLE defined) does not
 * use it, and accepts NULL; the DSP path needs it. */
#define K2M_CONV_S8_SCRATCH_BYTES(g) (4 * (g)->k_h * (g)->k_w * (g)->in_c)
void k2m_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                   const int8_t *input, const int8_t *weights,
                   const int32_t *bias, int8_t *output, int16_t *scratch);
void k2m_conv2d_f32(const k2m_window *g, float act_min, float act_max,
                    const float *input, const float *weights,
                    const float *bias, float *output);

/* Conv2D followed by a pooling of its whole int8 output map to one value
 * per channel, without storing the map (the exporter fuses a conv with a
 * following global AveragePooling2D / GlobalAveragePooling2D): per channel
 * the sum s of the out_h * out_w outputs k2m_conv2d_s8 would store, then
  *   mean == NULL: k2m_avg_pool_s8's clamp(div_nearest(s, out_h * out_w),
 *                 act_min, act_max)
 *   otherwise:    k2m_mean_s8's clamp(requantize(s + n * input_offset,
 *                 multiplier[0], shift[0]) + output_offset) with *mean.
 * output: out_c values.  scratch: K2M_CONV_POOL_S8_SCRATCH_BYTES(g), 4-byte
 * aligned (the im2col columns, one pixel pair's outputs, the sums); both
 * paths use it. */
typedef struct {
    const k2m_quant_s8 *mean;
    int32_t act_min, act_max;
} k2m_global_pool_s8;
#define K2M_CONV_POOL_S8_SCRATCH_BYTES(g) (K2M_CONV_S8_SCRATCH_BYTES(g) + (((g)->out_c * 2 + 3) & ~3) + 4 * (g)->out_c)
void k2m_conv2d_pool_s8(const k2m_window *g, const k2m_quant_s8 *q,
                        const int8_t *input, const int8_t *weights,
                        const int32_t *bias, const k2m_global_pool_s8 *pool,
                        int8_t *output, int16_t *scratch);

/* int8 in, int16 out: the same arithmetic as k2m_conv2d_s8 (one shared
 * loop), but the requantized value is clamped to [act_min, act_max] and
 * stored as int16.  The exporter passes output_offset 0 (int16 is
 * symmetric), act_min/act_max within [-32768, 32767], and shifts up to +14
 * (an int16 output scale is ~256x finer than an int8 one). */
void k2m_conv2d_s8_s16(const k2m_window *g, const k2m_quant_s8 *q,
                       const int8_t *input, const int8_t *weights,
                       const int32_t *bias, int16_t *output,
                       int16_t *scratch);

/* ---- depthwise convolution (k2m_depthwise.c) ------------------------
 * Weights (1, kh, kw, out_c) with out_c = in_c * depth multiplier; output
 * channel c * mult + m reads input channel c.  Per-channel quantization as
 * for conv.
 *
 * scratch (int8 only): work space for the DSP path's ring of transposed
 * input rows, 4-byte aligned, K2M_DEPTHWISE_S8_SCRATCH_BYTES(g) bytes,
 * used for 3x3 kernels with depth multiplier 1, no dilation and horizontal
 * stride 1 or 2; contents ignored on entry,
 * unspecified on return.  The portable path does not use it, and NULL is
 * accepted (the DSP path then takes its generic loop).
 *
 * In place: output pixels are written in raster order, all channels of
 * one before the next on the portable path, and the output may overlap
 * the input when it starts m pixels earlier (m >= 0) and no output pixel
 * is written over an input byte that a later window (or its own) still
 * reads; the DSP path writes channel group by channel group, which such an
 * overlap also allows (each input byte is read before the output of its
 * own channel reaches it).  The exporter's planner checks the condition. */
/* ROW: int16 elements of one ring row (the padded input row, and every
 * word a pair of outputs reads) */
#define K2M_MAX(a, b) ((a) > (b) ? (a) : (b))
#define K2M_DEPTHWISE_ROW(g) ((K2M_MAX((g)->pad_left + (g)->in_w, (g)->stride_w * (g)->out_w + 6) + 1) & ~1)
#define K2M_DEPTHWISE_S8_SCRATCH_BYTES(g) (24 * K2M_DEPTHWISE_ROW(g) + 4 * (((g)->out_w + 1) & ~1) + 312)
void k2m_depthwise_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                             const int8_t *input, const int8_t *weights,
                             const int32_t *bias, int8_t *output, int16_t *scratch);
void k2m_depthwise_conv2d_f32(const k2m_window *g, float act_min, float act_max,
                              const float *input, const float *weights,
                              const float *bias, float *output);

/* ---- elementwise (k2m_elementwise.c) ---------------------------------
 * Add of two tensors of the same shape.  int8 follows TFLite: inputs
 * rescaled to a common scale with left_shift bits of headroom (20), summed,
 * the sum requantized to the output scale.  In place (output == input1,
 * or output == input2) is allowed: each element is read before it is
 * written. */
typedef struct {
    int32_t input1_offset, input1_multiplier, input1_shift;
    int32_t input2_offset, input2_multiplier, input2_shift;
    int32_t left_shift;
    int32_t output_offset, output_multiplier, output_shift;
    int32_t act_min, act_max;
} k2m_add_s8_params;

void k2m_add_s8(const k2m_add_s8_params *p, const int8_t *input1,
                const int8_t *input2, int8_t *output, int32_t size);
void k2m_add_f32(const float *input1, const float *input2, float *output,
                 int32_t size, float act_min, float act_max);
/* A ResNet basic block, x + conv_b(conv_a(x)), row by row (k2m_stream.c):
 * conv_a's output rows are kept only while conv_b reads them, conv_b's
 * output one row at a time, and the add writes each row over x's, so
 * neither conv's map is stored.  x (in_h x in_w x in_c, the add's first
 * input: the exporter swaps the add's inputs if needed) is overwritten with
 * the block's output, bit-identical to k2m_conv2d_s8, k2m_conv2d_s8 and
 * k2m_add_s8 run unfused.  Valid when conv_b's output has x's shape, both
 * convs have vertical dilation 1, every output row reads some input row,
 * and no conv_a row still to be computed reads a row already written; the
 * exporter's planner checks this.  scratch: K2M_CONV_PAIR_ADD_S8_SCRATCH_BYTES,
 * 4-byte aligned (conv_b's k_h rows of conv_a's output, one output row, the
 * convs' im2col columns), contents ignored on entry. */
typedef struct {
    const k2m_window *a, *b;
    const k2m_quant_s8 *qa, *qb;
    const int8_t *weights_a, *weights_b;
    const int32_t *bias_a, *bias_b;
    const k2m_add_s8_params *add;
} k2m_conv_pair_add_s8_params;
#define K2M_ALIGN4(n) (((n) + 3) & ~3)
#define K2M_CONV_PAIR_ADD_S8_SCRATCH_BYTES(a, b) \
    (K2M_ALIGN4((b)->k_h * (a)->out_w * (a)->out_c) + K2M_ALIGN4((a)->in_w * (a)->in_c) \
     + K2M_MAX(K2M_CONV_S8_SCRATCH_BYTES(a), K2M_CONV_S8_SCRATCH_BYTES(b)))
void k2m_conv_pair_add_s8(const k2m_conv_pair_add_s8_params *p, int8_t *x, int8_t *scratch);
/* Subtract and Average are k2m_add_s8 with the second input's multiplier
 * negated, or the output multiplier halved.  Multiply requantizes the
 * product of the offset inputs; Maximum/Minimum compare both inputs after
 * requantizing each to the output scale.  Fields unused by an op are 0. */
typedef k2m_add_s8_params k2m_binary_s8_params;
void k2m_mul_s8(const k2m_binary_s8_params *p, const int8_t *input1,
                const int8_t *input2, int8_t *output, int32_t size);
void k2m_max_min_s8(const k2m_binary_s8_params *p, int32_t is_max,
                    const int8_t *input1, const int8_t *input2, int8_t *output,
                    int32_t size);
/* k2m_binary_f32 takes SUB..AVG; ADD and DIV are k2m_broadcast_f32's. */
typedef enum {
    K2M_BINARY_SUB, K2M_BINARY_MUL, K2M_BINARY_MAX, K2M_BINARY_MIN, K2M_BINARY_AVG,
    K2M_BINARY_ADD, K2M_BINARY_DIV
} k2m_binary_op;
void k2m_binary_f32(k2m_binary_op op, const float *input1, const float *input2,
                    float *output, int32_t size, float act_min, float act_max);

/* ---- broadcasting binary ops (k2m_broadcast.c) -----------------------
 * output = input1 <op> input2 with numpy's broadcasting.  The output is a
 * contiguous row-major box of K2M_BROADCAST_DIMS axes (outermost first;
 * the exporter pads with leading axes of count 1); stride1/stride2 give
 * each input's element stride along every axis, 0 where that input is
 * broadcast.  The exporter merges adjacent axes that broadcast alike, so
 * the per-channel case (H, W, C) with (C,) or (1, 1, C), either operand
 * first, is the box (H*W, C) with strides (C, 1) and (0, 1): the
 * squeeze-and-excitation multiply.  In place is allowed: output may be
 * either input that has the output's shape (each element is read before it
 * is written, and by no other output).
 *
 * int8, per element: add/sub/avg are k2m_add_s8's arithmetic, mul
 * k2m_mul_s8's, max/min k2m_max_min_s8's (same params; sub and avg as
 * there), except that every requantization whose shift is a left shift
 * saturates instead of wrapping when acc << shift leaves int32
 * (k2m_rq_apply_sat: the exact result is beyond every clamp then).
 * Division, with n = input1 + input1_offset, d = input2 + input2_offset
 * (both within [-255, 255]) and F = left_shift (the exporter uses 22):
 *   d != 0:  t = k2m_div_nearest(n * 2^F, d)  (round half away from zero,
 *                                            |t| < 2^30)
 *            out = clamp(k2m_rq_apply_sat(t, output_multiplier,
 *                        output_shift) + output_offset)
 *   d == 0:  act_max if n > 0, act_min if n < 0, and
 *            clamp(output_offset) for 0 / 0 (NaN -> the zero point, as
 *            k2m_quantize_f32_s8 maps it)
 * with the multiplier for s1 / (s2 * s_out * 2^F): the quotient keeps F
 * fraction bits, so its rounding moves the output by at most
 * multiplier * 2^-F / 2 steps.  The exporter caps the multiplier at 1/2
 * (shift <= 0): beyond it every nonzero quotient saturates anyway. */
#define K2M_BROADCAST_DIMS 6
typedef struct {
    int32_t count[K2M_BROADCAST_DIMS];
    int32_t stride1[K2M_BROADCAST_DIMS];
    int32_t stride2[K2M_BROADCAST_DIMS];
} k2m_broadcast_dims;
void k2m_broadcast_add_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                          const int8_t *input1, const int8_t *input2, int8_t *output);
void k2m_broadcast_mul_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                          const int8_t *input1, const int8_t *input2, int8_t *output);
void k2m_broadcast_max_min_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                              int32_t is_max, const int8_t *input1, const int8_t *input2,
                              int8_t *output);
void k2m_broadcast_div_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                          const int8_t *input1, const int8_t *input2, int8_t *output);
/* float: one float32 operation per element (avg: (a + b) * 0.5f, div:
 * IEEE division, x / 0 is inf or NaN as in Keras), then the clamp. */
void k2m_broadcast_f32(k2m_binary_op op, const k2m_broadcast_dims *d,
                       const float *input1, const float *input2, float *output,
                       float act_min, float act_max);

/* ---- 3-D convolution and pooling (k2m_conv3d.c) ---------------------
 * NDHWC without the batch; axes in the arrays are (depth, height, width).
 * Conv weights (out, kd, kh, kw, in); per-channel int8 quantization as for
 * 2-D.  Pools: int8 in/out share scale, padding excluded. */
typedef struct {
    int32_t in[3], in_c;
    int32_t out[3], out_c;
    int32_t k[3], stride[3], dil[3], pad[3];
} k2m_window3d;
void k2m_conv3d_s8(const k2m_window3d *g, const k2m_quant_s8 *q,
                   const int8_t *input, const int8_t *weights,
                   const int32_t *bias, int8_t *output);
void k2m_conv3d_f32(const k2m_window3d *g, float act_min, float act_max,
                    const float *input, const float *weights, const float *bias,
                    float *output);
void k2m_max_pool3d_s8(const k2m_window3d *g, int32_t act_min, int32_t act_max,
                       const int8_t *input, int8_t *output);
void k2m_avg_pool3d_s8(const k2m_window3d *g, int32_t act_min, int32_t act_max,
                       const int8_t *input, int8_t *output);
void k2m_max_pool3d_f32(const k2m_window3d *g, float act_min, float act_max,
                        const float *input, float *output);
void k2m_avg_pool3d_f32(const k2m_window3d *g, float act_min, float act_max,
                        const float *input, float *output);

/* ---- fully connected (k2m_fully_connected.c) ------------------------- */
void k2m_fully_connected_s8(const k2m_fc_dims *d, const k2m_quant_s8 *q,
                            const int8_t *input, const int8_t *weights,
                            const int32_t *bias, int8_t *output);
/* int8 in, int16 out, as k2m_conv2d_s8_s16 is to k2m_conv2d_s8. */
void k2m_fully_connected_s8_s16(const k2m_fc_dims *d, const k2m_quant_s8 *q,
                                const int8_t *input, const int8_t *weights,
                                const int32_t *bias, int16_t *output);
void k2m_fully_connected_f32(const k2m_fc_dims *d, float act_min, float act_max,
                             const float *input, const float *weights,
                             const float *bias, float *output);

/* ---- batched matrix product (k2m_matmul.c) ---------------------------
 * Both operands are tensors with k contiguous ("NT" form: B given as n
 * rows of k, attention's Q K^T directly, A V as P (V^T)):
 *   c[off_c + i * c_row + j] = sum_{t < k} a[off_a + i * a_row + t]
 *                                          * b[off_b + j * b_row + t]
 * for i < m, j < n and every batch (i0, i1, i2) < batch_count, with
 * off_x = i0 * x_batch[0] + i1 * x_batch[1] + i2 * x_batch[2] (unused
 * levels: count 1).  Strides count elements.  c must not overlap a or b.
 * int8: a and b asymmetric with their own zero points (a_offset,
 * b_offset = -zero point), the exact int32 sum of
 * (a + a_offset) * (b + b_offset) (the exporter keeps k <= 32767, so no
 * partial sum of either path leaves int32),
 * requantized once per tensor:
 *   out = clamp(k2m_rq_apply_sat(acc, multiplier, shift) + output_offset)
 * k2m_matmul_s8_s16 stores the same value clamped to [act_min, act_max]
 * within int16 (symmetric, output_offset 0): attention scores that only a
 * softmax reads keep 16 bits.  The DSP path accumulates sum (a +
 * a_offset) * b four b rows at a time (SMLAD) and adds b_offset * sum (a +
 * a_offset) per a row: the same integers, bit for bit.  No scratch. */
#define K2M_MATMUL_LEVELS 3
typedef struct {
    int32_t m, n, k;
    int32_t a_row, b_row, c_row;
    int32_t batch_count[K2M_MATMUL_LEVELS];
    int32_t a_batch[K2M_MATMUL_LEVELS], b_batch[K2M_MATMUL_LEVELS];
    int32_t c_batch[K2M_MATMUL_LEVELS];
} k2m_matmul_dims;
typedef struct {
    int32_t a_offset, b_offset, output_offset;
    int32_t multiplier, shift;
    int32_t act_min, act_max;
} k2m_matmul_s8_params;
void k2m_matmul_s8(const k2m_matmul_dims *d, const k2m_matmul_s8_params *p,
                   const int8_t *a, const int8_t *b, int8_t *c);
void k2m_matmul_s8_s16(const k2m_matmul_dims *d, const k2m_matmul_s8_params *p,
                       const int8_t *a, const int8_t *b, int16_t *c);
/* float: sum in float32 in order of t, then the clamp. */
void k2m_matmul_f32(const k2m_matmul_dims *d, float act_min, float act_max,
                    const float *a, const float *b, float *c);

/* ---- pooling (k2m_pool.c); in_c == out_c; int8 in/out share scale and
 * zero point, so act_min/act_max are the only parameters.  int8 average
 * rounds to nearest, ties away from zero (TFLite).  A window with no pixel
 * inside the input (only possible with dilation) gives the lowest value
 * (max) or 0 (avg) before the clamp. -------------------------------------- */
void k2m_max_pool_s8(const k2m_window *g, int32_t act_min, int32_t act_max,
                     const int8_t *input, int8_t *output);
void k2m_avg_pool_s8(const k2m_window *g, int32_t act_min, int32_t act_max,
                     const int8_t *input, int8_t *output);
void k2m_max_pool_f32(const k2m_window *g, float act_min, float act_max,
                      const float *input, float *output);
void k2m_avg_pool_f32(const k2m_window *g, float act_min, float act_max,
                      const float *input, float *output);
/* Mean over `spatial` positions of `channels` channels (global average
 * pooling): TFLite's MEAN, whose int8 output has its own scale.  q holds one
 * multiplier and shift (multiplier[0], shift[0]) for
 * input_scale / (output_scale * spatial). */
void k2m_mean_s8(int32_t spatial, int32_t channels, const k2m_quant_s8 *q,
                 const int8_t *input, int8_t *output);

/* ---- reduction over one axis (k2m_reduce.c) ---------------------------
 * The input viewed as row-major (outer, length, inner) is reduced over the
 * middle axis: output[a * inner + c] from input[(a * length + b) * inner
 * + c], b = 0 .. length - 1.  Not in place.
 * int8 mean and sum (TFLite's MEAN / SUM): the int32 sum of
 * q + input_offset over b, then
 *   out = clamp(k2m_rq_apply_sat(sum, multiplier, shift) + output_offset)
 * with the multiplier for input_scale / (output_scale * length) (mean) or
 * input_scale / output_scale (sum); the exporter keeps 255 * length below
 * 2^31.  int8 max and min keep the input's scale and zero point: the
 * largest or smallest q, then the clamp.  float: sum in float32 in order
 * of b, mean = sum / length. */
typedef struct {
    int32_t outer, length, inner;
} k2m_reduce_dims;
typedef struct {
    int32_t input_offset, output_offset;
    int32_t multiplier, shift;
    int32_t act_min, act_max;
} k2m_reduce_s8_params;
void k2m_reduce_sum_s8(const k2m_reduce_dims *d, const k2m_reduce_s8_params *p,
                       const int8_t *input, int8_t *output);
void k2m_reduce_max_min_s8(const k2m_reduce_dims *d, int32_t is_max, int32_t act_min,
                           int32_t act_max, const int8_t *input, int8_t *output);
typedef enum {
    K2M_REDUCE_MEAN, K2M_REDUCE_SUM, K2M_REDUCE_MAX, K2M_REDUCE_MIN
} k2m_reduce_fn;
void k2m_reduce_f32(k2m_reduce_fn fn, const k2m_reduce_dims *d, float act_min,
                    float act_max, const float *input, float *output);

/* ---- activations (k2m_activation.c) ---------------------------------- */
/* Any elementwise int8 function through a 256-entry table computed by the
 * exporter: output[i] = table[input[i] + 128].  In place is allowed. */
void k2m_lut_s8(const int8_t *input, int8_t *output, int32_t size,
                const int8_t table[256]);
/* Softmax over the last axis, `rows` x `cols`.  int8 output has scale 1/256
 * and zero point -128 (TFLite's); exp_table[d] = exp(-input_scale * d)
 * in fixed point, scaled by the exporter so that cols * exp_table[0] fits
 * in 31 bits (the row sum is a uint32) and exp_table[0] <= 2^23 (the kernel
 * computes (exp_table[d] << 8) + sum / 2 in 32 bits).  Each output is
 * round((e << 8) / sum) - 128, clamped to int8. */
void k2m_softmax_s8(const int8_t *input, int8_t *output, int32_t rows,
                    int32_t cols, const uint32_t exp_table[256]);
/* int16 -> int8 elementwise function (tanh, sigmoid, ...) through a
 * 257-point table with linear interpolation: 256 table steps of 256 input
 * steps each cover the whole int16 range, which a 65536-entry table could
 * not afford in flash.  table[k] = 256 * (the int8 output, zero point
 * included, at input -32768 + 256 k), so the interpolation keeps 8 extra
 * bits.  For x, with u = x + 32768, i = u >> 8, f = u & 255:
 *   y = table[i] + floor(((table[i+1] - table[i]) * f + 128) / 256)
 *   output = clamp(floor((y + 128) / 256), -128, 127)
 * (floor = arithmetic shift, k2m_asr).  Needs |table[i+1] - table[i]| <
 * 2^23 and |table[k]| < 2^30 (no int32 overflow); the exporter's tables are
 * within +-2^15.  Not in place: input and output have different types. */
void k2m_lut_s16_s8(const int16_t *input, int8_t *output, int32_t size,
                    const int32_t table[257]);
/* Softmax over the last axis from an int16 input; output as k2m_softmax_s8
 * (scale 1/256, zero point -128).  exp(-input_scale * d), d = max - x in
 * [0, 65535], factors as exp_hi[d >> 8] * exp_lo[d & 255] with
 * exp_hi[k] = exp(-input_scale * 256 k) and exp_lo[k] = exp(-input_scale * k)
 * in Q15 (two 256-entry tables instead of one of 65536):
 *   e = (exp_hi[d >> 8] * exp_lo[d & 255] + 2^14) >> 15
 *   output = clamp(round_half_up((e << 8) / sum(e)) - 128, -128, 127).
 * The exporter guarantees exp_hi[0] = exp_lo[0] = 32768 (so e <= 2^15,
 * e << 8 <= 2^23) and cols < 65536 (so the uint32 row sum < 2^31).
 * Not in place: input is int16, output int8. */
void k2m_softmax_s16_s8(const int16_t *input, int8_t *output, int32_t rows,
                        int32_t cols, const uint16_t exp_hi[256],
                        const uint16_t exp_lo[256]);
void k2m_softmax_f32(const float *input, float *output, int32_t rows,
                     int32_t cols);
void k2m_relu_f32(const float *input, float *output, int32_t size,
                  float act_min, float act_max);
void k2m_sigmoid_f32(const float *input, float *output, int32_t size);
void k2m_tanh_f32(const float *input, float *output, int32_t size);
/* The other Keras activations, float.  (In int8 every elementwise function
 * is a k2m_lut_s8 / k2m_lut_s16_s8 table.) */
typedef enum {
    K2M_ACT_LEAKY_RELU,   /* x >= threshold ? x : alpha * (x - threshold) */
    K2M_ACT_ELU,          /* x > 0 ? x : alpha * (exp(x) - 1) */
    K2M_ACT_SELU,
    K2M_ACT_HARD_SIGMOID, /* Keras 3: relu6(x + 3) / 6 */
    K2M_ACT_HARD_SWISH,   /* x * hard_sigmoid(x), also hard_silu */
    K2M_ACT_SWISH,        /* x * sigmoid(x), also silu */
    K2M_ACT_GELU,         /* exact, with erf */
    K2M_ACT_GELU_TANH,    /* the tanh approximation */
    K2M_ACT_SOFTPLUS,
    K2M_ACT_SOFTSIGN,
    K2M_ACT_EXPONENTIAL,
    K2M_ACT_MISH,
    /* functions of keras.ops nodes; alpha is the op's constant */
    K2M_ACT_AFFINE,       /* alpha * x + threshold: x * c + d with scalars */
    K2M_ACT_SQUARE,       /* x * x */
    K2M_ACT_SQRT,
    K2M_ACT_RSQRT,        /* 1 / sqrt(x) */
    K2M_ACT_ABS,
    K2M_ACT_LOG,
    K2M_ACT_LOG1P,
    K2M_ACT_EXPM1,
    K2M_ACT_RECIPROCAL,   /* 1 / x */
    K2M_ACT_RDIV,         /* alpha / x */
    K2M_ACT_POW,          /* x ** alpha */
    K2M_ACT_RPOW,         /* alpha ** x */
    K2M_ACT_SIGN,         /* -1, 0 or 1 (NaN stays NaN) */
    K2M_ACT_ERF,
    K2M_ACT_SIN,
    K2M_ACT_COS,
    K2M_ACT_FLOOR,
    K2M_ACT_CEIL
} k2m_act_fn;
void k2m_activation_f32(k2m_act_fn fn, const float *input, float *output,
                        int32_t size, float alpha, float threshold);
/* PReLU with a learned alpha that repeats every alpha_period elements.  int8:
 * x - zero point >= 0 requantizes with the positive multiplier, below with
 * the negative one after multiplying by the int8 alpha. */
typedef struct {
    int32_t input_offset, output_offset;
    int32_t positive_multiplier, positive_shift;
    int32_t negative_multiplier, negative_shift;
} k2m_prelu_s8_params;
void k2m_prelu_s8(const k2m_prelu_s8_params *p, const int8_t *input,
                  const int8_t *alpha, int32_t alpha_period, int8_t *output,
                  int32_t size);
void k2m_prelu_f32(const float *input, const float *alpha, int32_t alpha_period,
                   float *output, int32_t size);

/* ---- data movement (k2m_copy.c) --------------------------------------
 * Padding, cropping, nearest upsampling, Permute, RepeatVector and
 * Concatenate are strided copies of a box of up to 6 axes (outermost
 * first); an input stride of 0 repeats elements.  Strides count elements. */
#define K2M_COPY_DIMS 6
typedef struct {
    int32_t count[K2M_COPY_DIMS];
    int32_t in_stride[K2M_COPY_DIMS];
    int32_t out_stride[K2M_COPY_DIMS];
} k2m_copy_dims;
/* Requantization of a copied int8 value to another scale:
 * out = requantize(q + input_offset, multiplier, shift) + output_offset. */
typedef struct {
    int32_t input_offset, multiplier, shift, output_offset;
} k2m_requant_s8;
void k2m_copy_s8(const k2m_copy_dims *d, const k2m_requant_s8 *rq,
                 const int8_t *input, int8_t *output);  /* rq NULL: plain copy */
void k2m_copy_f32(const k2m_copy_dims *d, const float *input, float *output);
void k2m_fill_s8(int8_t *output, int32_t size, int8_t value);
void k2m_fill_f32(float *output, int32_t size, float value);
void k2m_fill_s16(int16_t *output, int32_t size, int16_t value);
/* Bilinear resize with per-row/column source indices (two each) and the
 * second source's weight (Q11 for int8, float for float), computed by the
 * exporter with TensorFlow's half-pixel centres.  int8 keeps its scale. */
typedef struct {
    int32_t in_h, in_w, channels, out_h, out_w;
} k2m_resize_dims;
void k2m_resize_bilinear_s8(const k2m_resize_dims *d, const int16_t *y_index,
                            const int16_t *y_frac, const int16_t *x_index,
                            const int16_t *x_frac, const int8_t *input,
                            int8_t *output);
void k2m_resize_bilinear_f32(const k2m_resize_dims *d, const int16_t *y_index,
                             const float *y_frac, const int16_t *x_index,
                             const float *x_frac, const float *input,
                             float *output);

/* ---- recurrent layers (k2m_recurrent.c) ------------------------------
 * SimpleRNN, LSTM and GRU over `steps` time steps of `features` values
 * with `units` hidden units, one sequence (Keras's batch dropped).  Weights
 * are Keras's with rows transposed to (out, in): kernel (gates * units,
 * features), recurrent (gates * units, units), gates in Keras's order:
 * LSTM i, f, c, o; GRU z, r, h (the candidate); SimpleRNN one.
 *
 * state holds h[units] (LSTM: then c[units]).  A kernel reads it at the
 * first step and leaves the last step's state there; the model zeroes it
 * before each call of a stateless layer and keeps it for a stateful one.
 * scratch is work space, contents ignored on entry and unspecified on
 * return: K2M_SIMPLE_RNN_SCRATCH / K2M_LSTM_SCRATCH / K2M_GRU_SCRATCH(units)
 * elements of the state's type.
 * Input, output, state and scratch must not overlap. */
#define K2M_RNN_BACKWARDS      1  /* step s reads input row steps-1-s (go_backwards) */
#define K2M_RNN_SEQUENCES      2  /* output every step (steps x units), else the last h */
#define K2M_RNN_REVERSE_OUTPUT 4  /* with SEQUENCES, step s writes row steps-1-s
                                     (a Bidirectional layer's backward half) */
#define K2M_GRU_RESET_AFTER    8  /* GRU: r multiplies (R_h h + b_rh), not h */
#define K2M_SIMPLE_RNN_SCRATCH(units) (units)
#define K2M_LSTM_SCRATCH(units)       (4 * (units))
#define K2M_GRU_SCRATCH(units)        (4 * (units))
typedef struct {
    int32_t steps, features, units, flags;
} k2m_rnn_dims;

/* float: the activations Keras's recurrent layers are used with. */
typedef enum {
    K2M_RNN_TANH, K2M_RNN_SIGMOID, K2M_RNN_HARD_SIGMOID, K2M_RNN_RELU,
    K2M_RNN_LINEAR
} k2m_rnn_act;
/* bias: gates * units values, NULL for none; a GRU with reset_after has
 * 2 * 3 * units: the input bias, then the recurrent bias.
 *   SimpleRNN  h = act(W x + R h + b)
 *   LSTM       i, f, o = rec_act(...), g = act(...);  c = f c + i g;
 *              h = o act(c)
 *   GRU        z, r = rec_act(W x + R h + b);  hh = act(W_h x + b_h +
 *              r (R_h h + b_rh)) with reset_after, act(W_h x + R_h (r h)
 *              + b_h) without;  h = z h + (1 - z) hh */
typedef struct {
    const float *kernel, *recurrent, *bias;
    k2m_rnn_act act, recurrent_act;
} k2m_rnn_f32_params;
void k2m_simple_rnn_f32(const k2m_rnn_dims *d, const k2m_rnn_f32_params *p,
                        const float *input, float *output, float *state,
                        float *scratch);
void k2m_lstm_f32(const k2m_rnn_dims *d, const k2m_rnn_f32_params *p,
                  const float *input, float *output, float *state,
                  float *scratch);
void k2m_gru_f32(const k2m_rnn_dims *d, const k2m_rnn_f32_params *p,
                 const float *input, float *output, float *state,
                 float *scratch);

/* int8: int8 input and output tensors, int16 state and gates (TFLite's
 * int8 LSTM keeps int16 gates too; docs/recurrent_int8.md gives the scales
 * and how the exporter calibrates them).  All int16 values are symmetric.
 * rq(v, s) below is k2m_requantize(v, s.multiplier, s.shift), sat16 a clamp
 * to [-32768, 32767].
 *
 * Gate pre-activations, per row r (unit u of gate g), per step:
 *   pre[r] = sat16(rq(bias[r] + sum_k kernel[r][k] x[k], kernel_scale[r])
 *                + rq(sum_k recurrent[r][k] h[k], recurrent_scale[r]))
 * with x the raw int8 input (bias has -zero_point * sum(kernel row) folded
 * in).  Exceptions: the GRU candidate rows, below.
 *
 * Activations are 513-entry int16 tables, interpolated (k2m_lut16): with
 * u = v + 32768, i = u >> 7, f = u & 127,
 *   lut16(v) = t[i] + floor(((t[i+1] - t[i]) * f + 64) / 128).
 * No int32 sum overflows: the exporter checks |bias| + 128 sum|kernel row|
 * and |recurrent_bias| + 32768 sum|recurrent row| < 2^31 for every row
 * (units <= 512), and keeps 0 <= one <= 32768. */
typedef struct {
    int32_t multiplier, shift;
} k2m_scale;
typedef struct {
    const int8_t *kernel;           /* (gates * units, features) */
    const int32_t *bias;            /* gates * units, NULL for none */
    const int32_t *kernel_multiplier, *kernel_shift;  /* per row */
    const int8_t *recurrent;        /* (gates * units, units) */
    const int32_t *recurrent_bias;  /* NULL, or gates * units (GRU reset_after):
                                       only the candidate rows are read, z and r
                                       have theirs folded into bias */
    const int32_t *recurrent_multiplier, *recurrent_shift;  /* per row */
} k2m_rnn_weights_s8;

/* h = lut16(pre, act_lut); the table maps straight to h's scale. */
typedef struct {
    k2m_rnn_weights_s8 w;
    const int16_t *act_lut;
    k2m_scale h_to_output;          /* y = clamp(rq(h) + output_offset, -128, 127) */
    int32_t output_offset;
} k2m_simple_rnn_s8_params;

/* i, f, g, o = lut16(pre, gate_lut[gate]);
 * c = sat16(rq(f c, forget) + rq(i g, input));
 * h = sat16(rq(o lut16(c, cell_lut), output_gate)); y as SimpleRNN. */
typedef struct {
    k2m_rnn_weights_s8 w;
    const int16_t *gate_lut[4];
    const int16_t *cell_lut;
    k2m_scale forget, input, output_gate;
    k2m_scale h_to_output;
    int32_t output_offset;
} k2m_lstm_s8_params;

/* z, r = lut16(pre, gate_lut[0 or 1]); then the candidate rows (unit u):
 *   reset_after:  a = sat16(rq(bias + W_h x, kernel_scale));
 *                 q = sat16(rq(recurrent_bias + R_h h, recurrent_scale));
 *                 pre = sat16(a + rq(r q, reset))
 *   otherwise:    rh[k] = sat16(rq(r[k] h[k], reset)) for every unit k, then
 *                 pre = sat16(rq(bias + W_h x, kernel_scale)
 *                           + rq(sum_k R_h[u][k] rh[k], recurrent_scale))
 *   hh = lut16(pre, gate_lut[2]);
 *   h = sat16(rq(z h, keep) + rq((one - z) hh, update)); y as SimpleRNN. */
typedef struct {
    k2m_rnn_weights_s8 w;
    const int16_t *gate_lut[3];
    k2m_scale reset, keep, update;
    int32_t one;                    /* 1.0 at z's scale */
    k2m_scale h_to_output;
    int32_t output_offset;
} k2m_gru_s8_params;

void k2m_simple_rnn_s8(const k2m_rnn_dims *d, const k2m_simple_rnn_s8_params *p,
                       const int8_t *input, int8_t *output, int16_t *state,
                       int16_t *scratch);
void k2m_lstm_s8(const k2m_rnn_dims *d, const k2m_lstm_s8_params *p,
                 const int8_t *input, int8_t *output, int16_t *state,
                 int16_t *scratch);
void k2m_gru_s8(const k2m_rnn_dims *d, const k2m_gru_s8_params *p,
                const int8_t *input, int8_t *output, int16_t *state,
                int16_t *scratch);

/* ---- normalization (k2m_norm.c int8, k2m_norm_f32.c float) ------------
 * LayerNormalization, GroupNormalization, RMSNormalization and
 * UnitNormalization as one kernel.  The tensor is viewed row-major as
 * (a, b, c, d) (k2m_norm_dims); the statistics are taken over b and d,
 * separately for each of the a * c groups of n = b * d elements:
 *   LayerNormalization over trailing axes of F values: (rows, 1, 1, F);
 *   over the first axis of (T, F): (1, T, F, 1);
 *   GroupNormalization, G groups of (H, W, C): (1, H * W, G, C / G).
 * Element (a, b, c, d) uses parameter j = b * param_stride[0] +
 * c * param_stride[1] + d * param_stride[2] (gamma[j], beta[j]).
 * Modes (Keras's float formulas, population variance):
 *   LAYER        (x - mean) * rsqrt(var + eps) * gamma + beta
 *   RMS          x * rsqrt(mean(x^2) + eps) * gamma + beta   (RMSNormalization)
 *   RMS_SCALING  x * rsqrt(var + eps) * gamma + beta  (Keras 3's
 *                LayerNormalization(rms_scaling=True): the variance, not
 *                the mean square, as its deprecation warning says)
 *   L2           x * min(rsqrt(sum(x^2)), 1 / eps) * gamma + beta
 *                (ops.normalize, order 2: UnitNormalization, eps 1e-12)
 * Each group is read twice (statistics, then output) and written once,
 * element by element, so output == input (in place) is allowed; otherwise
 * they must not overlap. */
typedef enum {
    K2M_NORM_LAYER, K2M_NORM_RMS, K2M_NORM_RMS_SCALING, K2M_NORM_L2
} k2m_norm_mode;
typedef struct {
    int32_t a, b, c, d;
} k2m_norm_dims;

/* float: two passes (mean, then the squared deviations) in float32, each
 * summed in blocks of 64 so long groups keep their precision.  gamma / beta
 * NULL mean 1 / 0; the output is clamped to [act_min, act_max]. */
typedef struct {
    k2m_norm_mode mode;
    float epsilon;
    const float *gamma, *beta;
    int32_t param_stride[3];
    float act_min, act_max;
} k2m_norm_f32_params;
void k2m_norm_f32(const k2m_norm_dims *d, const k2m_norm_f32_params *p,
                  const float *input, float *output);

/* int8 (docs/norm_int8.md; tests/norm_ref.py is the same arithmetic in
 * numpy).  Integers only, no libm.  Per group, with v = q + input_offset
 * (|v| <= 255) and n <= 65536 (so the sums below are exact):
 *   s1 = sum v (int32), s2 = sum v^2 (uint32: < 65025 * 65536 < 2^32)
 *   LAYER:       V = n s2 - s1^2, t = s1, m = n
 *   RMS:         V = n s2,        t = 0,  m = n
 *   RMS_SCALING: V = n s2 - s1^2, t = 0,  m = n
 *   L2:          V = s2,          t = 0,  m = 1
 * (V is int64, exact and >= 0: n s2 reaches 2^48), so that the normalized
 * value is (m v - t) / sqrt(V + E) with E epsilon in the same units
 * (eps n^2 / s_in^2, L2: (eps / s_in)^2).  The exporter
 * gives E with eps_bits = f fractional bits (f even, 0..62, chosen so that
 * V << f plus E stays below 2^63):
 *   W = (V << f) + eps, L2: max(V << f, eps);  W = 0 is taken as 1
 *   R, z = k2m_norm_rsqrt(W): 1 / sqrt(W) ~= R / 2^31 * 2^(z/2 - 31)
 *          (relative error < 3e-7), R in (2^29, 2^31), z the even count
 *          of leading zeros of W (a 48-entry table and two Newton steps;
 *          k2m_norm.c)
 *   k = 61 - z/2 - f/2 - gamma_shift - K2M_NORM_BETA_BITS
 * then per element, with j its parameter:
 *   c   = floor(R * gamma_multiplier[j] / 2^32)
 *   acc = floor((((int64)(m v - t)) * c + 2^(k-1)) / 2^k)  (k <= 0: a left
 *         shift by -k), saturated to [-2^30, 2^30 - 1]
 *   y   = clamp(floor((acc + beta[j] + 2^7) / 2^8) + output_offset,
 *               act_min, act_max)
 * gamma_multiplier[j] = round(gamma_j / s_out * 2^(31 - gamma_shift))
 * (signed, one shift for all j); beta[j] = round(beta_j / s_out * 2^8),
 * |beta[j]| <= 2^29.  The exporter refuses what these cannot represent. */
#define K2M_NORM_BETA_BITS 8
#define K2M_NORM_MAX_GROUP 65536
typedef struct {
    k2m_norm_mode mode;
    int32_t input_offset;           /* -input zero point */
    int32_t eps_bits;               /* f */
    uint64_t eps;                   /* E * 2^f, rounded */
    const int32_t *gamma_multiplier;
    int32_t gamma_shift;
    const int32_t *beta;            /* beta / s_out in 1/256 output steps */
    int32_t param_stride[3];
    int32_t output_offset, act_min, act_max;
} k2m_norm_s8_params;
void k2m_norm_s8(const k2m_norm_dims *d, const k2m_norm_s8_params *p,
                 const int8_t *input, int8_t *output);

/* ---- embedding (k2m_copy.c) -------------------------------------------
 * output row t = table row index[t]; an index outside [0, rows) is clamped
 * to the nearest valid row (never read out of bounds).  int8 tables are
 * quantized with the output's own scale, so rows copy unchanged. */
void k2m_embedding_s8(const int32_t *index, int32_t count, const int8_t *table,
                      int32_t rows, int32_t dim, int8_t *output);
void k2m_embedding_f32(const int32_t *index, int32_t count, const float *table,
                       int32_t rows, int32_t dim, float *output);

/* ---- quantize / dequantize at the model boundary (k2m_quantize.c) ----- */
/* Round half away from zero, as TFLite's reference quantize does. */
void k2m_quantize_f32_s8(const float *input, int8_t *output, int32_t size,
                         float scale, int32_t zero_point);
void k2m_dequantize_s8_f32(const int8_t *input, float *output, int32_t size,
                           float scale, int32_t zero_point);
/* Integer model inputs (Embedding indices) given as floats: rounded to the
 * nearest whole number, saturated to int32's range; NaN gives 0. */
void k2m_float_to_index(const float *input, int32_t *output, int32_t size);

#ifdef __cplusplus
}
#endif

#endif /* K2M_H */
