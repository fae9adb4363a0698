/* Test driver for tests/test_fuzz_kernels.py: runs the int8 kernels of
 * c_runtime/ on cases read from stdin, built with
 * -fsanitize=address,undefined, so any out-of-bounds access or undefined
 * behaviour aborts the process with a sanitizer report on stderr.
 *
 * Test code, not runtime code: uses stdio and malloc.  Every buffer (inputs,
 * weights, bias, multipliers, shifts, tables, output, scratch) is a malloc of
 * exactly the size the kernel's contract allows, so a read or write one
 * element past any of them is an ASan report.
 *
 * Protocol, all integers int32 little-endian (the host's order), repeated
 * until kernel id 0 or end of input:
 *   kernel id
 *   n_params, then n_params int32 parameters
 *   n_arrays, then per array: nbytes (-1 for a NULL pointer) and the bytes
 *   out_bytes (size of the output buffer)
 * Reply per case: out_bytes, then the output buffer's bytes; stdout is
 * flushed after every case so the caller can stream cases one at a time.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k2m.h"

enum {
    K_END = 0,
    K_CONV2D_S8 = 1,
    K_CONV2D_S8_S16 = 2,
    K_DEPTHWISE_S8 = 3,
    K_FC_S8 = 4,
    K_FC_S8_S16 = 5,
    K_MAX_POOL_S8 = 6,
    K_AVG_POOL_S8 = 7,
    K_MEAN_S8 = 8,
    K_ADD_S8 = 9,
    K_LUT_S8 = 10,
    K_LUT_S16_S8 = 11,
    K_SOFTMAX_S8 = 12,
    K_SOFTMAX_S16_S8 = 13,
    K_QUANTIZE = 14,
    K_DEQUANTIZE = 15
};

#define MAX_PARAMS 64
#define MAX_ARRAYS 8

static void die(const char *msg)
{
    fprintf(stderr, "fuzz_harness: %s\n", msg);
    exit(2);
}

static int read_i32(int32_t *v)
{
    return fread(v, 4, 1, stdin) == 1;
}

static int32_t need_i32(void)
{
    int32_t v;
    if (!read_i32(&v)) {
        die("truncated case");
    }
    return v;
}

typedef struct {
    void *ptr;      /* NULL for a NULL array */
    int32_t bytes;  /* -1 for NULL */
} array_t;

static void window_from(const int32_t *p, k2m_window *g)
{
    g->in_h = p[0];
    g->in_w = p[1];
    g->in_c = p[2];
    g->out_h = p[3];
    g->out_w = p[4];
    g->out_c = p[5];
    g->k_h = p[6];
    g->k_w = p[7];
    g->stride_h = p[8];
    g->stride_w = p[9];
    g->dil_h = p[10];
    g->dil_w = p[11];
    g->pad_top = p[12];
    g->pad_left = p[13];
}

static void quant_from(const int32_t *p, const array_t *mult,
                       const array_t *shift, k2m_quant_s8 *q)
{
    q->input_offset = p[0];
    q->output_offset = p[1];
    q->act_min = p[2];
    q->act_max = p[3];
    q->multiplier = (const int32_t *)mult->ptr;
    q->shift = (const int32_t *)shift->ptr;
}

static float float_bits(int32_t bits)
{
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void need(int cond, const char *msg)
{
    if (!cond) {
        die(msg);
    }
}

/* Runs one case; `output` is the exact-size output buffer.  Returns the
 * buffer whose bytes are the result (the output, or an input updated in
 * place). */
static const void *run(int32_t id, const int32_t *p, int32_t np_,
                       array_t *a, int32_t na, void *output,
                       int32_t out_bytes)
{
    k2m_window g;
    k2m_quant_s8 q;
    k2m_fc_dims d;

    switch (id) {
    case K_CONV2D_S8:
    case K_CONV2D_S8_S16: {
        int16_t *scratch;
        need(np_ == 18 && na == 5, "conv: bad arity");
        window_from(p, &g);
        quant_from(p + 14, &a[3], &a[4], &q);
        /* exactly the documented size (k2m.h), as the exporter plans it */
        scratch = (int16_t *)malloc((size_t)K2M_CONV_S8_SCRATCH_BYTES(&g));
        need(scratch != NULL, "out of memory");
        if (id == K_CONV2D_S8) {
            k2m_conv2d_s8(&g, &q, a[0].ptr, a[1].ptr, a[2].ptr, output, scratch);
        } else {
            k2m_conv2d_s8_s16(&g, &q, a[0].ptr, a[1].ptr, a[2].ptr, output, scratch);
        }
        free(scratch);
        return output;
    }
    case K_DEPTHWISE_S8: {
        int16_t *scratch;
        need(np_ == 18 && na == 5, "depthwise: bad arity");
        window_from(p, &g);
        quant_from(p + 14, &a[3], &a[4], &q);
        /* exactly the documented size (k2m.h), as the exporter plans it */
        scratch = (int16_t *)malloc((size_t)K2M_DEPTHWISE_S8_SCRATCH_BYTES(&g));
        need(scratch != NULL, "out of memory");
        k2m_depthwise_conv2d_s8(&g, &q, a[0].ptr, a[1].ptr, a[2].ptr, output, scratch);
        free(scratch);
        return output;
    }
    case K_FC_S8:
    case K_FC_S8_S16:
        need(np_ == 7 && na == 5, "fc: bad arity");
        d.batches = p[0];
        d.in_features = p[1];
        d.out_features = p[2];
        quant_from(p + 3, &a[3], &a[4], &q);
        if (id == K_FC_S8) {
            k2m_fully_connected_s8(&d, &q, a[0].ptr, a[1].ptr, a[2].ptr, output);
        } else {
            k2m_fully_connected_s8_s16(&d, &q, a[0].ptr, a[1].ptr, a[2].ptr, output);
        }
        return output;
    case K_MAX_POOL_S8:
    case K_AVG_POOL_S8:
        need(np_ == 16 && na == 1, "pool: bad arity");
        window_from(p, &g);
        if (id == K_MAX_POOL_S8) {
            k2m_max_pool_s8(&g, p[14], p[15], a[0].ptr, output);
        } else {
            k2m_avg_pool_s8(&g, p[14], p[15], a[0].ptr, output);
        }
        return output;
    case K_MEAN_S8:
        need(np_ == 6 && na == 3, "mean: bad arity");
        quant_from(p + 2, &a[1], &a[2], &q);
        k2m_mean_s8(p[0], p[1], &q, a[0].ptr, output);
        return output;
    case K_ADD_S8: {
        k2m_add_s8_params ap;
        int32_t in_place;
        need(np_ == 13 && na == 2, "add: bad arity");
        ap.input1_offset = p[0];
        ap.input1_multiplier = p[1];
        ap.input1_shift = p[2];
        ap.input2_offset = p[3];
        ap.input2_multiplier = p[4];
        ap.input2_shift = p[5];
        ap.left_shift = p[6];
        ap.output_offset = p[7];
        ap.output_multiplier = p[8];
        ap.output_shift = p[9];
        ap.act_min = p[10];
        ap.act_max = p[11];
        in_place = p[12];
        need(a[0].bytes == a[1].bytes, "add: size mismatch");
        if (in_place) {
            need(out_bytes == a[0].bytes, "add: in place needs out_bytes == size");
            k2m_add_s8(&ap, a[0].ptr, a[1].ptr, a[0].ptr, a[0].bytes);
            return a[0].ptr;
        }
        k2m_add_s8(&ap, a[0].ptr, a[1].ptr, output, a[0].bytes);
        return output;
    }
    case K_LUT_S8:
        need(np_ == 1 && na == 2 && a[1].bytes == 256, "lut_s8: bad arity");
        if (p[0]) {
            need(out_bytes == a[0].bytes, "lut_s8: in place needs out_bytes == size");
            k2m_lut_s8(a[0].ptr, a[0].ptr, a[0].bytes, a[1].ptr);
            return a[0].ptr;
        }
        k2m_lut_s8(a[0].ptr, output, a[0].bytes, a[1].ptr);
        return output;
    case K_LUT_S16_S8:
        need(np_ == 0 && na == 2 && a[1].bytes == 257 * 4, "lut_s16_s8: bad arity");
        k2m_lut_s16_s8(a[0].ptr, output, a[0].bytes / 2, a[1].ptr);
        return output;
    case K_SOFTMAX_S8:
        need(np_ == 2 && na == 2 && a[1].bytes == 256 * 4, "softmax_s8: bad arity");
        k2m_softmax_s8(a[0].ptr, output, p[0], p[1], a[1].ptr);
        return output;
    case K_SOFTMAX_S16_S8:
        need(np_ == 2 && na == 3 && a[1].bytes == 512 && a[2].bytes == 512,
             "softmax_s16_s8: bad arity");
        k2m_softmax_s16_s8(a[0].ptr, output, p[0], p[1], a[1].ptr, a[2].ptr);
        return output;
    case K_QUANTIZE:
        need(np_ == 2 && na == 1, "quantize: bad arity");
        k2m_quantize_f32_s8(a[0].ptr, output, a[0].bytes / 4, float_bits(p[1]), p[0]);
        return output;
    case K_DEQUANTIZE:
        need(np_ == 2 && na == 1, "dequantize: bad arity");
        k2m_dequantize_s8_f32(a[0].ptr, output, a[0].bytes, float_bits(p[1]), p[0]);
        return output;
    default:
        die("unknown kernel id");
    }
    return NULL;
}

int main(void)
{
    int32_t id;

    while (read_i32(&id) && id != K_END) {
        int32_t params[MAX_PARAMS];
        array_t arrays[MAX_ARRAYS];
        int32_t np_, na, i, out_bytes;
        void *output;
        const void *result;

        np_ = need_i32();
        need(np_ >= 0 && np_ <= MAX_PARAMS, "too many parameters");
        for (i = 0; i < np_; ++i) {
            params[i] = need_i32();
        }
        na = need_i32();
        need(na >= 0 && na <= MAX_ARRAYS, "too many arrays");
        for (i = 0; i < na; ++i) {
            int32_t n = need_i32();
            arrays[i].bytes = n;
            arrays[i].ptr = NULL;
            if (n >= 0) {
                /* malloc(0) may be NULL; a zero-length array is still a
                 * (unreadable) non-NULL pointer */
                arrays[i].ptr = malloc(n > 0 ? (size_t)n : 1);
                need(arrays[i].ptr != NULL, "out of memory");
                if (n > 0 && fread(arrays[i].ptr, 1, (size_t)n, stdin) != (size_t)n) {
                    die("truncated array");
                }
            }
        }
        out_bytes = need_i32();
        need(out_bytes > 0, "empty output");
        output = malloc((size_t)out_bytes);
        need(output != NULL, "out of memory");
        memset(output, 0x5A, (size_t)out_bytes);

        result = run(id, params, np_, arrays, na, output, out_bytes);

        if (fwrite(&out_bytes, 4, 1, stdout) != 1
            || fwrite(result, 1, (size_t)out_bytes, stdout) != (size_t)out_bytes
            || fflush(stdout) != 0) {
            die("cannot write the result");
        }
        free(output);
        for (i = 0; i < na; ++i) {
            free(arrays[i].ptr);
        }
    }
    return 0;
}
