/* k2m runtime: binary ops with numpy broadcasting (add, sub, mul, div,
 * max, min, avg), int8 and float.
 *
 * The exporter describes the output as a box of up to 6 axes with a stride
 * per input and axis (0 = broadcast, k2m.h); the kernels walk the outer
 * axes and run one row function per innermost row.  An input whose inner
 * stride is 0 is one value for the whole row, so its part of the
 * arithmetic (offset, requantization) is done once per row: (H, W, C) *
 * (H, W, 1) costs one requantization per element instead of two.
 *
 * The int8 arithmetic per element is that of k2m_elementwise.c's
 * same-shape kernels (TFLite's ADD and MUL), with k2m_rq_apply (bit for bit
 * k2m_requantize, constants hoisted per call) and, where a requantization
 * shifts left, k2m_rq_apply_sat.
 */
#include "k2m.h"
#include "k2m_math.h"

/* One call's constants.  Rows take it as `const bc_ctx *restrict`: the
 * int8 output stores could otherwise alias it, and gcc would reload every
 * field after every store. */
typedef struct {
    int32_t o1, o2, zo, lo, hi, ls, is_max;
    k2m_rq r1, r2, ro;   /* input 1, input 2 and output requantization */
    k2m_rqs fo;          /* the output's, small-accumulator form */
    int32_t fast;        /* fo exact for every accumulator of this call */
} bc_ctx;

/* |rq(v, multiplier, shift)| for |v| <= v_max, or 2^31 if shift > 0. */
static uint32_t bc_rq_bound(uint32_t v_max, int32_t shift)
{
    return shift > 0 ? 0x80000000u : (v_max >> (-shift > 31 ? 31 : -shift)) + 1u;
}

/* acc_max: the largest |accumulator| the output requantization sees. */
static void bc_init(bc_ctx *c, const k2m_binary_s8_params *p, int32_t is_max,
                    uint32_t acc_max)
{
    c->o1 = p->input1_offset;
    c->o2 = p->input2_offset;
    c->zo = p->output_offset;
    c->lo = p->act_min;
    c->hi = p->act_max;
    c->ls = p->left_shift;
    c->is_max = is_max;
    k2m_rq_init(&c->r1, p->input1_multiplier, p->input1_shift);
    k2m_rq_init(&c->r2, p->input2_multiplier, p->input2_shift);
    k2m_rq_init(&c->ro, p->output_multiplier, p->output_shift);
    c->fast = k2m_rqs_init(&c->fo, p->output_multiplier, p->output_shift, p->output_offset,
                           acc_max < 0x40000000u ? acc_max : 0x40000000u)
              && acc_max < 0x40000000u;
}

static inline int8_t bc_clamp(const bc_ctx *restrict c, int32_t v)
{
    return (int8_t)k2m_clamp_s32(v, c->lo, c->hi);
}

/* ---- per-element arithmetic: each input "prepared" alone, then the two
 * prepared values combined into the output (_fast: with c->fo). --------- */

/* add/sub/avg (k2m_add_s8): each input at the common scale with
 * left_shift bits of headroom; the sum requantized. */
static inline int32_t bc_add_prep1(const bc_ctx *restrict c, int32_t q)
{
    return k2m_rq_apply(&c->r1, (q + c->o1) * (1 << c->ls));
}

static inline int32_t bc_add_prep2(const bc_ctx *restrict c, int32_t q)
{
    return k2m_rq_apply(&c->r2, (q + c->o2) * (1 << c->ls));
}

static inline int8_t bc_sum_out(const bc_ctx *restrict c, int32_t a, int32_t b)
{
    return bc_clamp(c, k2m_rq_apply_sat(&c->ro, a + b) + c->zo);
}

static inline int8_t bc_sum_out_fast(const bc_ctx *restrict c, int32_t a, int32_t b)
{
    return bc_clamp(c, k2m_rqs_apply(&c->fo, a + b));
}

/* mul (k2m_mul_s8): the product of the offset inputs, requantized. */
static inline int32_t bc_off1(const bc_ctx *restrict c, int32_t q)
{
    return q + c->o1;
}

static inline int32_t bc_off2(const bc_ctx *restrict c, int32_t q)
{
    return q + c->o2;
}

static inline int8_t bc_mul_out(const bc_ctx *restrict c, int32_t a, int32_t b)
{
    return bc_clamp(c, k2m_rq_apply_sat(&c->ro, a * b) + c->zo);
}

static inline int8_t bc_mul_out_fast(const bc_ctx *restrict c, int32_t a, int32_t b)
{
    return bc_clamp(c, k2m_rqs_apply(&c->fo, a * b));
}

/* max/min (k2m_max_min_s8): both inputs at the output's scale, compared. */
static inline int32_t bc_mm_prep1(const bc_ctx *restrict c, int32_t q)
{
    return k2m_rq_apply_sat(&c->r1, q + c->o1);
}

static inline int32_t bc_mm_prep2(const bc_ctx *restrict c, int32_t q)
{
    return k2m_rq_apply_sat(&c->r2, q + c->o2);
}

static inline int8_t bc_mm_out(const bc_ctx *restrict c, int32_t a, int32_t b)
{
    return bc_clamp(c, (c->is_max ? (a > b ? a : b) : (a < b ? a : b)) + c->zo);
}

/* div: the quotient n / d with left_shift fraction bits, requantized; a
 * zero divisor saturates (k2m.h). */
static inline int8_t bc_div_out(const bc_ctx *restrict c, int32_t n, int32_t d)
{
    if (d == 0) {
        return n > 0 ? (int8_t)c->hi : (n < 0 ? (int8_t)c->lo : bc_clamp(c, c->zo));
    }
    return bc_clamp(c, k2m_rq_apply_sat(&c->ro, k2m_div_nearest(n * (1 << c->ls), d)) + c->zo);
}

/* ---- rows and the walk over the outer axes --------------------------- */

/* The n outputs of one row; s1, s2 are the inputs' inner strides, and an
 * input with stride 0 is prepared once. */
#define BC_LOOPS(PREP1, PREP2, OUT)                                           \
    if (s2 == 0) {                                                            \
        const int32_t b = PREP2(c, x2[0]);                                    \
        for (i = 0; i < n; ++i) {                                             \
            y[i] = OUT(c, PREP1(c, x1[i * s1]), b);                           \
        }                                                                     \
    } else if (s1 == 0) {                                                     \
        const int32_t a = PREP1(c, x1[0]);                                    \
        for (i = 0; i < n; ++i) {                                             \
            y[i] = OUT(c, a, PREP2(c, x2[i * s2]));                           \
        }                                                                     \
    } else {                                                                  \
        for (i = 0; i < n; ++i) {                                             \
            y[i] = OUT(c, PREP1(c, x1[i * s1]), PREP2(c, x2[i * s2]));        \
        }                                                                     \
    }

#define BC_ROW(NAME, PREP1, PREP2, OUT, OUT_FAST)                             \
static void NAME(const bc_ctx *restrict c, const int8_t *x1, int32_t s1,      \
                 const int8_t *x2, int32_t s2, int8_t *y, int32_t n)          \
{                                                                             \
    int32_t i;                                                                \
    if (c->fast) {                                                            \
        BC_LOOPS(PREP1, PREP2, OUT_FAST)                                      \
    } else {                                                                  \
        BC_LOOPS(PREP1, PREP2, OUT)                                           \
    }                                                                         \
}

BC_ROW(bc_add_row, bc_add_prep1, bc_add_prep2, bc_sum_out, bc_sum_out_fast)
BC_ROW(bc_mm_row, bc_mm_prep1, bc_mm_prep2, bc_mm_out, bc_mm_out)
BC_ROW(bc_div_row, bc_off1, bc_off2, bc_div_out, bc_div_out)
BC_ROW(bc_mul_any_row, bc_off1, bc_off2, bc_mul_out, bc_mul_out_fast)
#undef BC_ROW
#undef BC_LOOPS

#if K2M_DSP
/* Products of the bottom and of the top int16 lanes (gcc's arm_acle.h has
 * no __smulbb / __smultt). */
static inline int32_t bc_smulbb(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("smulbb %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline int32_t bc_smultt(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("smultt %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* The squeeze-and-excitation row: both inputs contiguous, products in the
 * small form.  Four elements per step: two word loads, the offsets added
 * per int16 lane by SXTAB16 (|q + offset| <= 256 fits), four SMULxy; with
 * no fused clamp one SSAT clamps. */
#define BC_MUL_DSP_LOOP(CLAMP)                                                \
    for (i = 0; i + 4 <= n; i += 4) {                                         \
        const int32_t a4 = k2m_ld32(x1 + i), b4 = k2m_ld32(x2 + i);           \
        const int32_t a02 = __sxtab16(off1, a4), a13 = k2m_sxtab16_ror8(off1, a4); \
        const int32_t b02 = __sxtab16(off2, b4), b13 = k2m_sxtab16_ror8(off2, b4); \
        y[i] = (int8_t)CLAMP(k2m_rqs_apply(&r, bc_smulbb(a02, b02)));         \
        y[i + 1] = (int8_t)CLAMP(k2m_rqs_apply(&r, bc_smulbb(a13, b13)));     \
        y[i + 2] = (int8_t)CLAMP(k2m_rqs_apply(&r, bc_smultt(a02, b02)));     \
        y[i + 3] = (int8_t)CLAMP(k2m_rqs_apply(&r, bc_smultt(a13, b13)));     \
    }
#define BC_SSAT8(v) __ssat((v), 8)
#define BC_CLAMP(v) k2m_clamp_s32((v), lo, hi)

static void bc_mul_dsp(const bc_ctx *restrict c, const int8_t *x1, const int8_t *x2,
                       int8_t *y, int32_t n)
{
    const int32_t off1 = (int32_t)(((uint32_t)c->o1 & 0xFFFFu) | ((uint32_t)c->o1 << 16));
    const int32_t off2 = (int32_t)(((uint32_t)c->o2 & 0xFFFFu) | ((uint32_t)c->o2 << 16));
    const int32_t lo = c->lo, hi = c->hi;
    const k2m_rqs r = c->fo;
    int32_t i;

    if (lo == -128 && hi == 127) {
        BC_MUL_DSP_LOOP(BC_SSAT8)
    } else {
        BC_MUL_DSP_LOOP(BC_CLAMP)
    }
    for (; i < n; ++i) {
        y[i] = bc_mul_out_fast(c, x1[i] + c->o1, x2[i] + c->o2);
    }
}
#undef BC_MUL_DSP_LOOP
#undef BC_SSAT8
#undef BC_CLAMP
#endif /* K2M_DSP */

static void bc_mul_row(const bc_ctx *restrict c, const int8_t *x1, int32_t s1,
                       const int8_t *x2, int32_t s2, int8_t *y, int32_t n)
{
#if K2M_DSP
    if (c->fast && s1 == 1 && s2 == 1) {
        bc_mul_dsp(c, x1, x2, y, n);
        return;
    }
#endif
    bc_mul_any_row(c, x1, s1, x2, s2, y, n);
}

/* Runs ROW(ctx, x1, s1, x2, s2, y, n) for every innermost row, outputs in
 * order. */
#define BC_WALK(d, ROW, ctx, in1, in2, out)                                   \
    do {                                                                      \
        const int32_t *n_ = (d)->count, *t1 = (d)->stride1, *t2 = (d)->stride2; \
        int32_t i0, i1, i2, i3, i4;                                           \
        for (i0 = 0; i0 < n_[0]; ++i0)                                        \
        for (i1 = 0; i1 < n_[1]; ++i1)                                        \
        for (i2 = 0; i2 < n_[2]; ++i2)                                        \
        for (i3 = 0; i3 < n_[3]; ++i3)                                        \
        for (i4 = 0; i4 < n_[4]; ++i4) {                                      \
            const int32_t o1 = i0 * t1[0] + i1 * t1[1] + i2 * t1[2]          \
                + i3 * t1[3] + i4 * t1[4];                                    \
            const int32_t o2 = i0 * t2[0] + i1 * t2[1] + i2 * t2[2]          \
                + i3 * t2[3] + i4 * t2[4];                                    \
            ROW(ctx, (in1) + o1, t1[5], (in2) + o2, t2[5], (out), n_[5]);    \
            (out) += n_[5];                                                   \
        }                                                                     \
    } while (0)

void k2m_broadcast_add_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                          const int8_t *input1, const int8_t *input2, int8_t *output)
{
    const int ls_ok = p->left_shift >= 0 && p->left_shift <= 22;  /* 20 from the exporter */
    const uint32_t v_max = ls_ok ? 256u << p->left_shift : 0u;
    bc_ctx c;
    bc_init(&c, p, 0, ls_ok ? bc_rq_bound(v_max, p->input1_shift)
                              + bc_rq_bound(v_max, p->input2_shift) : 0x80000000u);
    BC_WALK(d, bc_add_row, &c, input1, input2, output);
}

void k2m_broadcast_mul_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                          const int8_t *input1, const int8_t *input2, int8_t *output)
{
    bc_ctx c;
    bc_init(&c, p, 0, 256u * 256u);  /* |q + offset| <= 256 */
    BC_WALK(d, bc_mul_row, &c, input1, input2, output);
}

void k2m_broadcast_max_min_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                              int32_t is_max, const int8_t *input1, const int8_t *input2,
                              int8_t *output)
{
    bc_ctx c;
    bc_init(&c, p, is_max, 0x80000000u);  /* no small form: the comparison comes first */
    BC_WALK(d, bc_mm_row, &c, input1, input2, output);
}

void k2m_broadcast_div_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                          const int8_t *input1, const int8_t *input2, int8_t *output)
{
    bc_ctx c;
    bc_init(&c, p, 0, 0x80000000u);
    BC_WALK(d, bc_div_row, &c, input1, input2, output);
}

/* ---- float ------------------------------------------------------------ */

typedef struct {
    k2m_binary_op op;
    float act_min, act_max;
} bc_f32_ctx;

static float bc_f32(k2m_binary_op op, float a, float b)
{
    switch (op) {
    case K2M_BINARY_ADD: return a + b;
    case K2M_BINARY_SUB: return a - b;
    case K2M_BINARY_MUL: return a * b;
    case K2M_BINARY_DIV: return a / b;
    case K2M_BINARY_MAX: return a > b ? a : b;
    case K2M_BINARY_MIN: return a < b ? a : b;
    default: return (a + b) * 0.5f;  /* K2M_BINARY_AVG */
    }
}

static void bc_f32_row(const bc_f32_ctx *c, const float *x1, int32_t s1,
                       const float *x2, int32_t s2, float *y, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        float v = bc_f32(c->op, x1[i * s1], x2[i * s2]);
        v = v < c->act_min ? c->act_min : v;
        y[i] = v > c->act_max ? c->act_max : v;
    }
}

void k2m_broadcast_f32(k2m_binary_op op, const k2m_broadcast_dims *d,
                       const float *input1, const float *input2, float *output,
                       float act_min, float act_max)
{
    bc_f32_ctx c;
    c.op = op;
    c.act_min = act_min;
    c.act_max = act_max;
    BC_WALK(d, bc_f32_row, &c, input1, input2, output);
}
