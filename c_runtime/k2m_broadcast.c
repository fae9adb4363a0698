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

/* The hoisted requantizations of one call: input 1, input 2, output. */
typedef struct {
    const k2m_binary_s8_params *p;
    k2m_rq r1, r2, ro;
    int32_t is_max;
} bc_ctx;

static void bc_init(bc_ctx *c, const k2m_binary_s8_params *p, int32_t is_max)
{
    c->p = p;
    c->is_max = is_max;
    k2m_rq_init(&c->r1, p->input1_multiplier, p->input1_shift);
    k2m_rq_init(&c->r2, p->input2_multiplier, p->input2_shift);
    k2m_rq_init(&c->ro, p->output_multiplier, p->output_shift);
}

static inline int8_t bc_clamp(const bc_ctx *c, int32_t v)
{
    return (int8_t)k2m_clamp_s32(v, c->p->act_min, c->p->act_max);
}

/* ---- per-element arithmetic: each input "prepared" alone, then the two
 * prepared values combined into the output. ------------------------------ */

/* add/sub/avg (k2m_add_s8): each input at the common scale with
 * left_shift bits of headroom; the sum requantized. */
static inline int32_t bc_add_prep1(const bc_ctx *c, int32_t q)
{
    return k2m_rq_apply(&c->r1, (q + c->p->input1_offset) * (1 << c->p->left_shift));
}

static inline int32_t bc_add_prep2(const bc_ctx *c, int32_t q)
{
    return k2m_rq_apply(&c->r2, (q + c->p->input2_offset) * (1 << c->p->left_shift));
}

static inline int8_t bc_add_out(const bc_ctx *c, int32_t a, int32_t b)
{
    return bc_clamp(c, k2m_rq_apply_sat(&c->ro, a + b) + c->p->output_offset);
}

/* mul (k2m_mul_s8): the product of the offset inputs, requantized. */
static inline int32_t bc_off1(const bc_ctx *c, int32_t q)
{
    return q + c->p->input1_offset;
}

static inline int32_t bc_off2(const bc_ctx *c, int32_t q)
{
    return q + c->p->input2_offset;
}

static inline int8_t bc_mul_out(const bc_ctx *c, int32_t a, int32_t b)
{
    return bc_clamp(c, k2m_rq_apply_sat(&c->ro, a * b) + c->p->output_offset);
}

/* max/min (k2m_max_min_s8): both inputs at the output's scale, compared. */
static inline int32_t bc_mm_prep1(const bc_ctx *c, int32_t q)
{
    return k2m_rq_apply_sat(&c->r1, q + c->p->input1_offset);
}

static inline int32_t bc_mm_prep2(const bc_ctx *c, int32_t q)
{
    return k2m_rq_apply_sat(&c->r2, q + c->p->input2_offset);
}

static inline int8_t bc_mm_out(const bc_ctx *c, int32_t a, int32_t b)
{
    const int32_t v = c->is_max ? (a > b ? a : b) : (a < b ? a : b);
    return bc_clamp(c, v + c->p->output_offset);
}

/* div: the quotient n / d with left_shift fraction bits, requantized; a
 * zero divisor saturates (k2m.h). */
static inline int8_t bc_div_out(const bc_ctx *c, int32_t n, int32_t d)
{
    const k2m_binary_s8_params *p = c->p;
    if (d == 0) {
        return n > 0 ? (int8_t)p->act_max
                     : (n < 0 ? (int8_t)p->act_min : bc_clamp(c, p->output_offset));
    }
    return bc_clamp(c, k2m_rq_apply_sat(&c->ro, k2m_div_nearest(n * (1 << p->left_shift), d))
                       + p->output_offset);
}

/* ---- rows and the walk over the outer axes --------------------------- */

/* One row of n outputs; s1, s2 are the inputs' inner strides.  An input
 * with stride 0 is prepared once. */
#define BC_ROW(NAME, PREP1, PREP2, OUT)                                       \
static void NAME(const bc_ctx *c, const int8_t *x1, int32_t s1,               \
                 const int8_t *x2, int32_t s2, int8_t *y, int32_t n)          \
{                                                                             \
    int32_t i;                                                                \
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
    }                                                                         \
}

BC_ROW(bc_add_row, bc_add_prep1, bc_add_prep2, bc_add_out)
BC_ROW(bc_mul_row, bc_off1, bc_off2, bc_mul_out)
BC_ROW(bc_mm_row, bc_mm_prep1, bc_mm_prep2, bc_mm_out)
BC_ROW(bc_div_row, bc_off1, bc_off2, bc_div_out)
#undef BC_ROW

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
    bc_ctx c;
    bc_init(&c, p, 0);
    BC_WALK(d, bc_add_row, &c, input1, input2, output);
}

void k2m_broadcast_mul_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                          const int8_t *input1, const int8_t *input2, int8_t *output)
{
    bc_ctx c;
    bc_init(&c, p, 0);
    BC_WALK(d, bc_mul_row, &c, input1, input2, output);
}

void k2m_broadcast_max_min_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                              int32_t is_max, const int8_t *input1, const int8_t *input2,
                              int8_t *output)
{
    bc_ctx c;
    bc_init(&c, p, is_max);
    BC_WALK(d, bc_mm_row, &c, input1, input2, output);
}

void k2m_broadcast_div_s8(const k2m_broadcast_dims *d, const k2m_binary_s8_params *p,
                          const int8_t *input1, const int8_t *input2, int8_t *output)
{
    bc_ctx c;
    bc_init(&c, p, 0);
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
