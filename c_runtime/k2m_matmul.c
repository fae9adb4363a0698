/* k2m runtime: batched matrix product of two tensors (attention's Q K^T
 * and P V, ops.matmul), int8 -> int8, int8 -> int16 and float.
 *
 * Both operands have k contiguous (k2m.h), so every output is the dot
 * product of two contiguous rows, the shape SMLAD wants.  Unlike a dense
 * layer's weights, b is an activation with a zero point of its own (a
 * softmax output's is -128), so both offsets are exact parts of the
 * arithmetic.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <stddef.h>

/* Walks the batches: BODY sees a_, b_ (the batch's first rows, type T) and
 * oc_ (the index of its first output). */
#define MM_BATCHES(T, d, a, b, BODY)                                          \
    do {                                                                      \
        int32_t i0, i1, i2;                                                   \
        for (i0 = 0; i0 < (d)->batch_count[0]; ++i0)                          \
        for (i1 = 0; i1 < (d)->batch_count[1]; ++i1)                          \
        for (i2 = 0; i2 < (d)->batch_count[2]; ++i2) {                        \
            const T *a_ = (a) + i0 * (d)->a_batch[0] + i1 * (d)->a_batch[1]   \
                + i2 * (d)->a_batch[2];                                       \
            const T *b_ = (b) + i0 * (d)->b_batch[0] + i1 * (d)->b_batch[1]   \
                + i2 * (d)->b_batch[2];                                       \
            const int32_t oc_ = i0 * (d)->c_batch[0] + i1 * (d)->c_batch[1]   \
                + i2 * (d)->c_batch[2];                                       \
            BODY;                                                             \
        }                                                                     \
    } while (0)

/* One call's constants (taken as `restrict`: the output stores could
 * otherwise alias them).  The requantization takes k2m_rqs's small form
 * when k * 256^2 allows it (k <= 8191 at right shifts), else
 * k2m_rq_apply_sat: the same integers either way. */
typedef struct {
    int32_t a_offset, b_offset, output_offset, act_min, act_max, out16;
    k2m_rq r;
    k2m_rqs small;
    int32_t fast;
} mm_ctx;

static void mm_init(mm_ctx *c, const k2m_matmul_s8_params *p, int32_t k, int out16)
{
    c->a_offset = p->a_offset;
    c->b_offset = p->b_offset;
    c->output_offset = p->output_offset;
    c->act_min = p->act_min;
    c->act_max = p->act_max;
    c->out16 = out16;
    k2m_rq_init(&c->r, p->multiplier, p->shift);
    c->fast = k2m_rqs_init(&c->small, p->multiplier, p->shift, p->output_offset,
                           (uint32_t)(k <= 16383 ? k : 16383) << 16) && k <= 16383;
}

/* The general requantization, out of line: the small form is the common
 * case, and this way mm_store stays small enough to inline. */
static int32_t mm_requantize_general(const mm_ctx *c, int32_t acc)
{
    return k2m_rq_apply_sat(&c->r, acc) + c->output_offset;
}

/* Requantizes, clamps and stores output `index`. */
static inline void mm_store(const mm_ctx *restrict c, void *out, int32_t index, int32_t acc)
{
    const int32_t v = c->fast ? k2m_rqs_apply(&c->small, acc) : mm_requantize_general(c, acc);
    k2m_store_s8_s16(out, index, k2m_clamp_s32(v, c->act_min, c->act_max), c->out16);
}

#if !K2M_DSP
/* The portable reference: one output at a time. */
static void mm_rows(const k2m_matmul_dims *d, const mm_ctx *restrict c, const int8_t *a,
                    const int8_t *b, void *out, int32_t oc)
{
    int32_t i, j, t;

    for (i = 0; i < d->m; ++i) {
        const int8_t *ar = a + i * d->a_row;
        for (j = 0; j < d->n; ++j) {
            const int8_t *br = b + j * d->b_row;
            int32_t acc = 0;
            for (t = 0; t < d->k; ++t) {
                acc += ((int32_t)ar[t] + c->a_offset) * ((int32_t)br[t] + c->b_offset);
            }
            mm_store(c, out, oc + i * d->c_row + j, acc);
        }
    }
}
#endif /* !K2M_DSP */

#if K2M_DSP
/* ---- Cortex-M4 DSP path (SMLAD) ----------------------------------------
 * acc[i][j] = sum_t (a_t + a_offset) (b_jt + b_offset)
 *           = sum_t (a_t + a_offset) b_jt + b_offset * sum_t (a_t + a_offset):
 * the second sum once per a row, the first four b rows at a time, each a
 * word of the a row unpacked once with its offset (SXTAB16, |q + offset| <=
 * 255 fits an int16 lane) and shared by four pairs of SMLADs, as in
 * k2m_fully_connected.c (whose register plan this follows: rows 1 and 3
 * read at [row 0 + b_row] and [row 2 + b_row]).  Exact int32 integers as
 * in the portable loop, only added in another order. */
#define MM_ROW(acc, load)                             \
    load                                              \
    "sxtb16  %[t1], %[t0]\n\t"                        \
    "smlad   %[" acc "], %[t1], %[x02], %[" acc "]\n\t" \
    "sxtb16  %[t0], %[t0], ror #8\n\t"                \
    "smlad   %[" acc "], %[t0], %[x13], %[" acc "]\n\t"

/* acc[0..3] += sum_t (a_t + offset) b_jt for the rows w, w + stride,
 * w + 2 stride, w + 3 stride, over k4 = k rounded down to 4 (the rest in
 * mm_tail). */
/* Not inlined: the asm needs 14 free registers, which the caller's loop
 * would not leave it. */
__attribute__((noinline))
static void mm_dot4(const int8_t *x, const int8_t *w, int32_t k4, int32_t stride,
                    int32_t off2, int32_t acc[4])
{
    const int8_t *w0 = w, *w2 = w + 2 * stride;
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];

#if defined(__OPTIMIZE__)
    const int8_t *const x_end = x + k4;
    while (x != x_end) {
        int32_t x02, x13, t0, t1;
        __asm__(
            "ldr     %[x13], [%[x]], #4\n\t"
            "sxtab16 %[x02], %[off], %[x13]\n\t"
            "sxtab16 %[x13], %[off], %[x13], ror #8\n\t"
            MM_ROW("a1", "ldr     %[t0], [%[w0], %[n]]\n\t")
            MM_ROW("a0", "ldr     %[t0], [%[w0]], #4\n\t")
            MM_ROW("a3", "ldr     %[t0], [%[w2], %[n]]\n\t")
            MM_ROW("a2", "ldr     %[t0], [%[w2]], #4\n\t")
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3),
              [x] "+r"(x), [w0] "+r"(w0), [w2] "+r"(w2),
              [x02] "=&r"(x02), [x13] "=&r"(x13), [t0] "=&r"(t0), [t1] "=&r"(t1)
            : [n] "r"(stride), [off] "r"(off2)
            : "memory");
    }
#else
    /* -O0 cannot give the asm its 14 registers: the same sums in C. */
    const int8_t *const x_end = x + k4;
    while (x != x_end) {
        const int32_t x4 = k2m_ld32(x);
        const int32_t x02 = __sxtab16(off2, x4), x13 = k2m_sxtab16_ror8(off2, x4);
        const int32_t r0 = k2m_ld32(w0), r1 = k2m_ld32(w0 + stride);
        const int32_t r2 = k2m_ld32(w2), r3 = k2m_ld32(w2 + stride);
        a0 = __smlad(k2m_sxtb16_ror8(r0), x13, __smlad(__sxtb16(r0), x02, a0));
        a1 = __smlad(k2m_sxtb16_ror8(r1), x13, __smlad(__sxtb16(r1), x02, a1));
        a2 = __smlad(k2m_sxtb16_ror8(r2), x13, __smlad(__sxtb16(r2), x02, a2));
        a3 = __smlad(k2m_sxtb16_ror8(r3), x13, __smlad(__sxtb16(r3), x02, a3));
        x += 4;
        w0 += 4;
        w2 += 4;
    }
#endif
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#undef MM_ROW

/* acc += sum_t (a_t + offset) b_t over one b row, k4 words by SMLAD. */
static int32_t mm_dot1(const int8_t *x, const int8_t *w, int32_t k4, int32_t off2,
                       int32_t acc)
{
    int32_t t;
    for (t = 0; t < k4; t += 4) {
        const int32_t x4 = k2m_ld32(x + t), w4 = k2m_ld32(w + t);
        acc = __smlad(__sxtb16(w4), __sxtab16(off2, x4), acc);
        acc = __smlad(k2m_sxtb16_ror8(w4), k2m_sxtab16_ror8(off2, x4), acc);
    }
    return acc;
}

/* The k - k4 leftover products of one b row. */
static int32_t mm_tail(const int8_t *x, const int8_t *w, int32_t k4, int32_t k,
                       int32_t a_offset, int32_t acc)
{
    int32_t t;
    for (t = k4; t < k; ++t) {
        acc += ((int32_t)x[t] + a_offset) * (int32_t)w[t];
    }
    return acc;
}

/* sum_t (a_t + a_offset) over a row: two SMLADs against (1, 1) per word. */
static int32_t mm_row_sum(const int8_t *x, int32_t k4, int32_t k, int32_t off2,
                          int32_t a_offset)
{
    const int32_t ones = 0x00010001;
    int32_t sum = 0, t;
    for (t = 0; t < k4; t += 4) {
        const int32_t x4 = k2m_ld32(x + t);
        sum = __smlad(__sxtab16(off2, x4), ones, __smlad(k2m_sxtab16_ror8(off2, x4), ones, sum));
    }
    for (; t < k; ++t) {
        sum += (int32_t)x[t] + a_offset;
    }
    return sum;
}

/* mm_store of four neighbouring outputs, the constants loaded once; with
 * no fused clamp (act range = the type's) one SSAT does the clamp. */
#define MM_STORE4(T, CLAMP)                                                   \
    do {                                                                      \
        T *y = (T *)out + index;                                              \
        for (u = 0; u < 4; ++u) {                                             \
            y[u] = (T)CLAMP(k2m_rqs_apply(&r, acc[u]));                       \
        }                                                                     \
    } while (0)
#define MM_SSAT8(v) __ssat((v), 8)
#define MM_SSAT16(v) __ssat((v), 16)
#define MM_CLAMP(v) k2m_clamp_s32((v), lo, hi)

static void mm_store4(const mm_ctx *restrict c, void *out, int32_t index, const int32_t acc[4])
{
    const int32_t lo = c->act_min, hi = c->act_max;
    int32_t u;

    if (!c->fast) {
        for (u = 0; u < 4; ++u) {
            mm_store(c, out, index + u, acc[u]);
        }
    } else {
        const k2m_rqs r = c->small;
        if (c->out16) {
            if (lo == -32768 && hi == 32767) {
                MM_STORE4(int16_t, MM_SSAT16);
            } else {
                MM_STORE4(int16_t, MM_CLAMP);
            }
        } else if (lo == -128 && hi == 127) {
            MM_STORE4(int8_t, MM_SSAT8);
        } else {
            MM_STORE4(int8_t, MM_CLAMP);
        }
    }
}
#undef MM_STORE4
#undef MM_SSAT8
#undef MM_SSAT16
#undef MM_CLAMP

static void mm_rows(const k2m_matmul_dims *d, const mm_ctx *restrict c, const int8_t *a,
                    const int8_t *b, void *out, int32_t oc)
{
    const int32_t k = d->k, k4 = k & ~3, n4 = d->n & ~3, b_row = d->b_row;
    const int32_t a_offset = c->a_offset;
    const int32_t off2 = (int32_t)(((uint32_t)a_offset & 0xFFFFu) | ((uint32_t)a_offset << 16));
    int32_t i, j;

    for (i = 0; i < d->m; ++i) {
        const int8_t *ar = a + i * d->a_row;
        const int32_t base = c->b_offset * mm_row_sum(ar, k4, k, off2, a_offset);
        const int32_t o = oc + i * d->c_row;
        for (j = 0; j < n4; j += 4) {
            const int8_t *br = b + j * b_row;
            int32_t acc[4];
            acc[0] = acc[1] = acc[2] = acc[3] = base;
            mm_dot4(ar, br, k4, b_row, off2, acc);
            if (k4 != k) {
                acc[0] = mm_tail(ar, br, k4, k, a_offset, acc[0]);
                acc[1] = mm_tail(ar, br + b_row, k4, k, a_offset, acc[1]);
                acc[2] = mm_tail(ar, br + 2 * b_row, k4, k, a_offset, acc[2]);
                acc[3] = mm_tail(ar, br + 3 * b_row, k4, k, a_offset, acc[3]);
            }
            mm_store4(c, out, o + j, acc);
        }
        for (; j < d->n; ++j) {
            const int8_t *br = b + j * b_row;
            mm_store(c, out, o + j,
                     mm_tail(ar, br, k4, k, a_offset, mm_dot1(ar, br, k4, off2, base)));
        }
    }
}
#endif /* K2M_DSP */

static void matmul_s8_any(const k2m_matmul_dims *d, const k2m_matmul_s8_params *p,
                          const int8_t *a, const int8_t *b, void *c, int out16)
{
    mm_ctx ctx;
    mm_init(&ctx, p, d->k, out16);
    MM_BATCHES(int8_t, d, a, b, mm_rows(d, &ctx, a_, b_, c, oc_));
}

void k2m_matmul_s8(const k2m_matmul_dims *d, const k2m_matmul_s8_params *p,
                   const int8_t *a, const int8_t *b, int8_t *c)
{
    matmul_s8_any(d, p, a, b, c, 0);
}

void k2m_matmul_s8_s16(const k2m_matmul_dims *d, const k2m_matmul_s8_params *p,
                       const int8_t *a, const int8_t *b, int16_t *c)
{
    matmul_s8_any(d, p, a, b, c, 1);
}

void k2m_matmul_f32(const k2m_matmul_dims *d, float act_min, float act_max,
                    const float *a, const float *b, float *c)
{
    int32_t i, j, t;

    MM_BATCHES(float, d, a, b, {
        for (i = 0; i < d->m; ++i) {
            const float *ar = a_ + i * d->a_row;
            for (j = 0; j < d->n; ++j) {
                const float *br = b_ + j * d->b_row;
                float acc = 0.0f;
                for (t = 0; t < d->k; ++t) {
                    acc += ar[t] * br[t];
                }
                acc = acc < act_min ? act_min : acc;
                c[oc_ + i * d->c_row + j] = acc > act_max ? act_max : acc;
            }
        }
    });
}
