/* k2m runtime: recurrent layers (Keras SimpleRNN, LSTM, GRU), float and
 * int8.
 *
 * One time step at a time: every gate pre-activation of a step is computed
 * from the previous h into scratch before the state is touched, because
 * each row's recurrent dot product reads all of the old h.  The float
 * kernels follow Keras's cell arithmetic; the int8 ones keep the state and
 * the gates in int16 and take every nonlinearity from an interpolated
 * 513-entry table, so the target never evaluates a transcendental there.
 * This file holds the int8 kernels, which need no libm; the float ones are
 * in k2m_recurrent_f32.c.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <stddef.h>

/* gcc/clang hints, layout only (every path is exact): the MAC loops stay
 * one function (their asm takes 14 registers, nothing else can live
 * across it), the per-row code around them is inlined into each cell's
 * step loop (as -O3 does; -O2's choice cost ~15% more instructions, and
 * doubles the code; -Os keeps its own choice). */
#if defined(__GNUC__)
#define RNN_LIKELY(c) __builtin_expect(!!(c), 1)
#if defined(__OPTIMIZE_SIZE__)
#define RNN_INLINE static inline
#else
#define RNN_INLINE static inline __attribute__((always_inline))
#endif
#define RNN_NOINLINE static __attribute__((noinline))
#else
#define RNN_LIKELY(c) (c)
#define RNN_INLINE static inline
#define RNN_NOINLINE static
#endif

/* ---- int8 ---------------------------------------------------------------
 * The work of one time step, both paths.  Every gate row r needs two dot
 * products, kernel[r] . x (int8 x int8, `features` long) and
 * recurrent[r] . h (int8 x int16, `units` long), then two requantizations,
 * a saturation and a table.  Rows are taken four at a time (rnn_block), so
 * that every load of x or h (on the DSP path, with its unpacking) serves four
 * rows: consecutive rows for SimpleRNN and GRU, and for LSTM the gates i, f,
 * g, o of one unit, whose c and h are then updated at once, the gates never
 * going through memory.
 *
 * The dot products read a copy of the old h in scratch ("hp"), so each new
 * h[u] goes straight into the state, with no copy back per step.  Scratch
 * holds: SimpleRNN hp[units]; LSTM hp[units]; GRU z[units], r[units],
 * hp[units] (for the candidate rows of a reset_before GRU, hp becomes
 * r * h).  LSTM and GRU have room to start hp on a 4-byte boundary (the
 * DSP loop reads it with LDRD; SimpleRNN falls back to a C loop when its
 * scratch is not aligned).  The DSP path keeps hp's groups of 4 as h0, h2,
 * h1, h3 (rnn_hp_fill).
 *
 * Per row the two requantizations take a short exact form when the call's
 * scales and sums allow it (rq_fast, checked once per call); the products
 * of the cell updates likewise (rq_prod), the tables are read as one word
 * and interpolated with one SMLAD (rnn_lut16).
 *
 * Everything is exact int32 arithmetic, so the order of the additions does
 * not matter: both paths give k2m.h's results bit for bit (tests/rnn_ref.py,
 * tests/test_recurrent_kernels.py on the host, tests/test_dsp.py DSP against
 * portable on the emulated M4). */

static inline int32_t k2m_sat16(int32_t v)
{
    return k2m_clamp_s32(v, -32768, 32767);
}

/* t(v) of a 513-entry table: 512 steps of 128 inputs cover int16.  The
 * slope term may be negative (falling tables), hence the floor of k2m_asr;
 * the result lies between t[i] and t[i + 1], so it needs no clamp. */
static inline int32_t k2m_lut16(int32_t v, const int16_t *t)
{
    const int32_t u = v + 32768;  /* 0..65535 for an int16 v */
    const int32_t i = u >> 7;     /* 0..511: t[i + 1] exists */
    const int32_t lo = t[i];
    return lo + k2m_asr((t[i + 1] - lo) * (u & 127) + 64, 7);
}

#if K2M_DSP
/* floor((a * b + 2^31) / 2^32): one SMMULR. */
static inline int32_t rnn_smmulr(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* k2m_lut16 bit for bit, with tm = t + 256 (the table's middle, set up
 * once per call): i - 256 = v >> 7 and f = v & 127 need no offset, t[i]
 * and t[i + 1] come in one (unaligned) load, and since 128 t[i] is a
 * multiple of 128,
 *   t[i] + floor(((t[i+1] - t[i]) f + 64) / 128)
 *     = floor((t[i] (128 - f) + t[i+1] f + 64) / 128),
 * one SMLAD (|sum| <= 2^22).  7 instructions instead of 11. */
static inline int32_t rnn_lut16(int32_t v, const int16_t *tm)
{
    const int32_t f = v & 127;
    return k2m_asr(__smlad(k2m_ld32(tm + k2m_asr(v, 7)), (f << 16) | (128 - f),
                           64), 7);
}

static inline int32_t rnn_sat16(int32_t v)
{
    return __ssat(v, 16);
}
#else
/* The same in C: gcc makes SMULL and an add of the rounding constant. */
static inline int32_t rnn_smmulr(int32_t a, int32_t b)
{
    const int64_t p = (int64_t)a * (int64_t)b + ((int64_t)1 << 31);
    /* bits 32..63: the logical shift keeps the two's-complement pattern */
    return (int32_t)(uint32_t)((uint64_t)p >> 32);
}

/* tm = t + 256, as on the DSP path */
static inline int32_t rnn_lut16(int32_t v, const int16_t *tm)
{
    return k2m_lut16(v, tm - 256);
}

static inline int32_t rnn_sat16(int32_t v)
{
    return k2m_sat16(v);
}
#endif /* K2M_DSP */

/* ---- requantization of the gate rows -----------------------------------
 * Every row has its own kernel and recurrent scale, so no constant can be
 * hoisted out of a step.  k2m_requantize(acc, m, shift) is computed in the
 * "fast form" of k2m_conv.c (there with its derivation): with
 * left = max(shift, 0), e = max(-shift, 0),
 *   x = SMMULR(acc << (left + 1), m)   (SaturatingRoundingDoublingHighMul)
 *   y = RoundingDivideByPOT(x, e)
 *     = x                                          if e = 0,
 *     = floor((x + (x >> 31) + 2^(e-1)) / 2^e)     if e >= 1 (ties away
 *     = (((x + (x >> 31)) >> (e - 1)) + 1) >> 1      from zero; the same
 *                                                    floor in two steps)
 * 5 instructions for a left shift (the kernel term, often), 9 for a right
 * one (the recurrent term), against ~20 for the general form (64-bit
 * product, rounding mask and threshold per row) and ~35 for
 * k2m_requantize.  It is exact whenever |acc << left| < 2^29 and e <= 29:
 * then nothing overflows (|x| <= 2^29), and k2m_requantize's saturations
 * (INT32_MIN * INT32_MIN, sat30) cannot trigger.  rnn_rows_fast checks
 * that for every row once per call, from bounds on the sums: |bias| +
 * 128 * 128 * features for the kernel term, |recurrent_bias| + 128 *
 * 32768 * units for the recurrent one (below 2^29 up to 127 units) or,
 * where that fails, |recurrent_bias| + 32768 * sum |recurrent row|.
 * Otherwise the call takes the general form. */

static inline int32_t rq_fast(int32_t acc, int32_t m, int32_t shift)
{
    if (shift >= 0) {
        return rnn_smmulr((int32_t)((uint32_t)acc << (shift + 1)), m);
    } else {
        const int32_t x = rnn_smmulr((int32_t)((uint32_t)acc << 1), m);
        return k2m_asr(k2m_asr(x + k2m_asr(x, 31), -shift - 1) + 1, 1);
    }
}

/* The same, laid out for a right shift (recurrent terms: h's scale over
 * the pre-activation's is small). */
static inline int32_t rq_fast_r(int32_t acc, int32_t m, int32_t shift)
{
    if (RNN_LIKELY(shift < 0)) {
        const int32_t x = rnn_smmulr((int32_t)((uint32_t)acc << 1), m);
        return k2m_asr(k2m_asr(x + k2m_asr(x, 31), -shift - 1) + 1, 1);
    }
    return rnn_smmulr((int32_t)((uint32_t)acc << (shift + 1)), m);
}

static inline int32_t rq_general(int32_t acc, int32_t m, int32_t shift)
{
    k2m_rq r;
    k2m_rq_init(&r, m, shift);
    return k2m_rq_apply(&r, acc);
}

static int rq_fast_ok(int64_t bound, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    if (shift < -29 || left > 29 || bound >= ((int64_t)1 << 29)) {
        return 0;
    }
    return (bound << left) < ((int64_t)1 << 29);
}

static int64_t abs64(int32_t v)
{
    return v < 0 ? -(int64_t)v : (int64_t)v;
}

/* sum |w[k]|, k < n */
static int64_t sum_abs_s8(const int8_t *w, int32_t n)
{
    int64_t s = 0;
    int32_t k = 0;
#if K2M_DSP
    /* USADA8 sums |a - b| of unsigned bytes: w ^ 0x80 is w + 128, so
     * against 0x80 it is |w|.  3 instructions per 4 weights. */
    uint32_t part = 0;
    for (; k + 4 <= n; k += 4) {
        part = __usada8((uint32_t)k2m_ld32(w + k) ^ 0x80808080u, 0x80808080u,
                        part);
        if ((k & 0xFFFF) == 0xFFFC) {  /* every 2^16 bytes: part < 2^23 */
            s += part;
            part = 0;
        }
    }
    s += part;
#endif
    for (; k < n; ++k) {
        s += abs64(w[k]);
    }
    return s;
}

/* Whether rows [first, first + rows) may take rq_fast (see above).
 * rec_bias: the recurrent sums start there (GRU reset_after candidates). */
static int rnn_rows_fast(const k2m_rnn_weights_s8 *w, int32_t first,
                         int32_t rows, int32_t features, int32_t units,
                         const int32_t *rec_bias)
{
    int32_t r;

    for (r = first; r < first + rows; ++r) {
        const int64_t b = w->bias != NULL ? abs64(w->bias[r]) : 0;
        const int64_t rb = rec_bias != NULL ? abs64(rec_bias[r]) : 0;
        const int32_t rs = w->recurrent_shift[r];
        if (!rq_fast_ok(b + (int64_t)16384 * features, w->kernel_shift[r])) {
            return 0;
        }
        if (!rq_fast_ok(rb + ((int64_t)units << 22), rs)
            && !rq_fast_ok(rb + 32768 * sum_abs_s8(w->recurrent + r * units,
                                                   units), rs)) {
            return 0;
        }
    }
    return 1;
}

/* ---- four rows' dot products ---------------------------------------------
 * One block of rows (rnn_block) needs, for its rows a, a + n, b, b + n,
 * four int8 x int8 sums over x and four int8 x int16 sums over hp.  The
 * row pointers, strides and lengths go in an rnn_mac, so that the DSP path
 * can run both MAC loops in one asm statement with no register spilled
 * around them; the sums come back in sum[]: x rows 0..3, then hp rows 0..3.
 * units <= 512 (the exporter's limit) keeps the int16 sums inside int32,
 * and the exporter checks |bias| + 32768 sum |row| < 2^31. */
typedef struct {
    const int8_t *x, *x_end;   /* x, x + (features & ~3) */
    const int8_t *wk0, *wk2;   /* kernel rows a and b (advanced by the loop) */
    int32_t nk;                /* kernel row a + 1 is wk0 + nk, b + 1 wk2 + nk */
    const int16_t *h, *h_end8; /* hp, hp + (units & ~7) */
    const int8_t *wr0, *wr2;   /* recurrent rows a and b */
    int32_t nr;
    int32_t sum[8];
    const int16_t *h_end;      /* hp + (units & ~3) */
    int32_t x_back;            /* DSP: the last features % 4 elements as
                                  one word ending at the row's end, read
                                  from x_back bytes back (features >= 4) */
    int32_t x_tail, h_tail;    /* elements left to the scalar loops */
    int32_t h_aligned;         /* hp 4-byte aligned (the DSP path's LDRD) */
} rnn_mac;

#if !K2M_DSP
/* Portable: each load of x[k] or hp[k] serves four multiply-adds (gcc
 * makes it 4 LDRSB + 4 SMLABB on an M4; unrolling it by hand was slower). */
RNN_NOINLINE void rnn_macs(rnn_mac *m)
{
    const int32_t nx = (int32_t)(m->x_end - m->x) + m->x_tail;
    const int32_t nh = (int32_t)(m->h_end - m->h) + m->h_tail;
    const int8_t *w0 = m->wk0, *w1 = m->wk0 + m->nk;
    const int8_t *w2 = m->wk2, *w3 = m->wk2 + m->nk;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, k;

    for (k = 0; k < nx; ++k) {
        const int32_t v = m->x[k];
        a0 += (int32_t)w0[k] * v;
        a1 += (int32_t)w1[k] * v;
        a2 += (int32_t)w2[k] * v;
        a3 += (int32_t)w3[k] * v;
    }
    m->sum[0] = a0;
    m->sum[1] = a1;
    m->sum[2] = a2;
    m->sum[3] = a3;
    w0 = m->wr0;
    w1 = m->wr0 + m->nr;
    w2 = m->wr2;
    w3 = m->wr2 + m->nr;
    a0 = a1 = a2 = a3 = 0;
    for (k = 0; k < nh; ++k) {
        const int32_t v = m->h[k];
        a0 += (int32_t)w0[k] * v;
        a1 += (int32_t)w1[k] * v;
        a2 += (int32_t)w2[k] * v;
        a3 += (int32_t)w3[k] * v;
    }
    m->sum[4] = a0;
    m->sum[5] = a1;
    m->sum[6] = a2;
    m->sum[7] = a3;
}

/* hp is h itself in the portable order. */
static void rnn_hp_fill(const int16_t *h, int16_t *hp, int32_t n)
{
    int32_t k;
    for (k = 0; k < n; ++k) {
        hp[k] = h[k];
    }
}

static inline int32_t rnn_hp_pos(int32_t k, int32_t n4)
{
    (void)n4;
    return k;
}
#endif /* !K2M_DSP: the portable reference loops */

#if K2M_DSP
/* ---- Cortex-M4 DSP path (SMLAD) ------------------------------------------
 * 4 weight bytes w0..w3 of a row unpack (SXTB16, SXTB16 ROR #8) to the
 * int16 pairs (w0, w2) and (w1, w3).  x is unpacked the same way, once for
 * the four rows; h is stored that way in hp (groups of 4 as h0, h2, h1, h3,
 * rnn_hp_fill, once per step), so that two plain word loads give its pairs.
 * Each pair of pairs is 2 MACs in one SMLAD: per 16 MACs 4 weight loads,
 * 8 SXTB16, 8 SMLAD, plus 2 loads of hp (or 1 load and 2 SXTB16 of x) and
 * the loop test.  As in k2m_fully_connected.c, rows 1 and 3 are read at
 * [row 0 + n] and [row 2 + n] (register offset, before the post-indexed
 * loads of rows 0 and 2).  Rows start at any byte: LDR (not LDRD/LDM)
 * allows that.  Both loops are one asm statement on 14 registers (the 13
 * of the loop and the rnn_mac pointer), which leaves gcc nothing to spill
 * around them: that and the call took ~130 instructions a block otherwise. */
#define RNN_ROW(acc, load)                                 \
    load                                                   \
    "sxtb16  %[t1], %[t0]\n\t"                             \
    "smlad   %[" acc "], %[t1], %[v02], %[" acc "]\n\t"    \
    "sxtb16  %[t0], %[t0], ror #8\n\t"                     \
    "smlad   %[" acc "], %[t0], %[v13], %[" acc "]\n\t"

#define RNN_ROWS4                                          \
    RNN_ROW("a1", "ldr     %[t0], [%[w0], %[n]]\n\t")      \
    RNN_ROW("a0", "ldr     %[t0], [%[w0]], #4\n\t")        \
    RNN_ROW("a3", "ldr     %[t0], [%[w2], %[n]]\n\t")      \
    RNN_ROW("a2", "ldr     %[t0], [%[w2]], #4\n\t")

/* Unoptimised builds keep variables in memory and cannot give the asm its
 * registers: the same exact sums through intrinsics. */
static inline void rows4_step_c(const int8_t *w0, const int8_t *w2,
                                int32_t n, int32_t v02, int32_t v13,
                                int32_t *a)
{
    const int32_t r0 = k2m_ld32(w0), r1 = k2m_ld32(w0 + n);
    const int32_t r2 = k2m_ld32(w2), r3 = k2m_ld32(w2 + n);
    a[0] = __smlad(k2m_sxtb16_ror8(r0), v13, __smlad(__sxtb16(r0), v02, a[0]));
    a[1] = __smlad(k2m_sxtb16_ror8(r1), v13, __smlad(__sxtb16(r1), v02, a[1]));
    a[2] = __smlad(k2m_sxtb16_ror8(r2), v13, __smlad(__sxtb16(r2), v02, a[2]));
    a[3] = __smlad(k2m_sxtb16_ror8(r3), v13, __smlad(__sxtb16(r3), v02, a[3]));
}

/* The last features % 4 = 4 - s elements of x and of the four rows, as
 * the words ending at the rows' ends (features >= 4, so they lie inside
 * the row; their first s bytes were counted already): a logical shift
 * right by 8 s leaves the new bytes and zeros, which add nothing.  ~30
 * instructions for the four rows instead of ~11 per element and loop
 * set-up. */
#define RNN_ROWM(acc, load)                                \
    load                                                   \
    "lsr     %[t0], %[t0], %[ve]\n\t"                      \
    "sxtb16  %[t1], %[t0]\n\t"                             \
    "smlad   %[" acc "], %[t1], %[v02], %[" acc "]\n\t"    \
    "sxtb16  %[t0], %[t0], ror #8\n\t"                     \
    "smlad   %[" acc "], %[t0], %[v13], %[" acc "]\n\t"

#define RNN_H4                                             \
    "ldrd    %[v02], %[v13], [%[v]], #8\n\t"               \
    RNN_ROWS4

RNN_NOINLINE void rnn_macs(rnn_mac *m)
{
    int32_t k;
#if defined(__OPTIMIZE__)
    int32_t a0, a1, a2, a3, v02, v13, t0, t1, n;
    const void *v, *ve;
    const int8_t *w0, *w2;
    if (!m->h_aligned) {
        goto c_loops;  /* LDRD needs a 4-byte aligned hp */
    }
    __asm__ volatile(
        /* x: four rows over features & ~3, then the masked last word */
        "ldrd    %[v], %[ve], [%[m], %[o_x]]\n\t"
        "ldrd    %[w0], %[w2], [%[m], %[o_wk]]\n\t"
        "ldr     %[n], [%[m], %[o_nk]]\n\t"
        "movs    %[a0], #0\n\t"
        "movs    %[a1], #0\n\t"
        "movs    %[a2], #0\n\t"
        "movs    %[a3], #0\n\t"
        "cmp     %[v], %[ve]\n\t"
        "beq     2f\n"
        "1:\n\t"
        "ldr     %[v13], [%[v]], #4\n\t"
        "sxtb16  %[v02], %[v13]\n\t"
        "sxtb16  %[v13], %[v13], ror #8\n\t"
        RNN_ROWS4
        "cmp     %[v], %[ve]\n\t"
        "bne     1b\n"
        "2:\n\t"
        "ldr     %[ve], [%[m], %[o_xb]]\n\t"
        "cmp     %[ve], #0\n\t"
        "beq     3f\n\t"
        "sub     %[v], %[v], %[ve]\n\t"
        "sub     %[w0], %[w0], %[ve]\n\t"
        "sub     %[w2], %[w2], %[ve]\n\t"
        "lsl     %[ve], %[ve], #3\n\t"
        "ldr     %[v13], [%[v]]\n\t"
        "lsr     %[v13], %[v13], %[ve]\n\t"
        "sxtb16  %[v02], %[v13]\n\t"
        "sxtb16  %[v13], %[v13], ror #8\n\t"
        RNN_ROWM("a1", "ldr     %[t0], [%[w0], %[n]]\n\t")
        RNN_ROWM("a0", "ldr     %[t0], [%[w0]]\n\t")
        RNN_ROWM("a3", "ldr     %[t0], [%[w2], %[n]]\n\t")
        RNN_ROWM("a2", "ldr     %[t0], [%[w2]]\n\t")
        "3:\n\t"
        "strd    %[w0], %[w2], [%[m], %[o_wk]]\n\t"
        "strd    %[a0], %[a1], [%[m], %[o_s0]]\n\t"
        "strd    %[a2], %[a3], [%[m], %[o_s2]]\n\t"
        /* hp: eight elements per iteration, then four */
        "ldrd    %[v], %[ve], [%[m], %[o_h]]\n\t"
        "ldrd    %[w0], %[w2], [%[m], %[o_wr]]\n\t"
        "ldr     %[n], [%[m], %[o_nr]]\n\t"
        "movs    %[a0], #0\n\t"
        "movs    %[a1], #0\n\t"
        "movs    %[a2], #0\n\t"
        "movs    %[a3], #0\n\t"
        "cmp     %[v], %[ve]\n\t"
        "beq     5f\n"
        "4:\n\t"
        RNN_H4
        RNN_H4
        "cmp     %[v], %[ve]\n\t"
        "bne     4b\n"
        "5:\n\t"
        "ldr     %[ve], [%[m], %[o_he]]\n\t"
        "cmp     %[v], %[ve]\n\t"
        "beq     6f\n\t"
        RNN_H4
        "6:\n\t"
        "strd    %[w0], %[w2], [%[m], %[o_wr]]\n\t"
        "strd    %[a0], %[a1], [%[m], %[o_s4]]\n\t"
        "strd    %[a2], %[a3], [%[m], %[o_s6]]\n\t"
        : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3),
          [v] "=&r"(v), [ve] "=&r"(ve), [w0] "=&r"(w0), [w2] "=&r"(w2),
          [n] "=&r"(n), [v02] "=&r"(v02), [v13] "=&r"(v13),
          [t0] "=&r"(t0), [t1] "=&r"(t1)
        : [m] "r"(m),
          [o_x] "I"(offsetof(rnn_mac, x)), [o_wk] "I"(offsetof(rnn_mac, wk0)),
          [o_nk] "I"(offsetof(rnn_mac, nk)), [o_h] "I"(offsetof(rnn_mac, h)),
          [o_wr] "I"(offsetof(rnn_mac, wr0)), [o_nr] "I"(offsetof(rnn_mac, nr)),
          [o_he] "I"(offsetof(rnn_mac, h_end)),
          [o_xb] "I"(offsetof(rnn_mac, x_back)),
          [o_s0] "I"(offsetof(rnn_mac, sum)),
          [o_s2] "I"(offsetof(rnn_mac, sum) + 8),
          [o_s4] "I"(offsetof(rnn_mac, sum) + 16),
          [o_s6] "I"(offsetof(rnn_mac, sum) + 24)
        : "memory", "cc");
    goto tails;
c_loops:
#endif
    {
        const int8_t *x = m->x;
        const int16_t *h = m->h;
        int32_t a[4] = {0, 0, 0, 0};
        while (x != m->x_end) {
            const int32_t x4 = k2m_ld32(x);
            rows4_step_c(m->wk0, m->wk2, m->nk, __sxtb16(x4),
                         k2m_sxtb16_ror8(x4), a);
            x += 4;
            m->wk0 += 4;
            m->wk2 += 4;
        }
        if (m->x_back != 0) {
            const int32_t sh = 8 * m->x_back;
            const int8_t *w0 = m->wk0 - m->x_back, *w2 = m->wk2 - m->x_back;
            const int32_t n = m->nk;
            const uint32_t x4 = (uint32_t)k2m_ld32(x - m->x_back) >> sh;
            const int32_t r0 = (int32_t)((uint32_t)k2m_ld32(w0) >> sh);
            const int32_t r1 = (int32_t)((uint32_t)k2m_ld32(w0 + n) >> sh);
            const int32_t r2 = (int32_t)((uint32_t)k2m_ld32(w2) >> sh);
            const int32_t r3 = (int32_t)((uint32_t)k2m_ld32(w2 + n) >> sh);
            const int32_t x02 = __sxtb16((int32_t)x4);
            const int32_t x13 = k2m_sxtb16_ror8((int32_t)x4);
            a[0] = __smlad(k2m_sxtb16_ror8(r0), x13, __smlad(__sxtb16(r0), x02, a[0]));
            a[1] = __smlad(k2m_sxtb16_ror8(r1), x13, __smlad(__sxtb16(r1), x02, a[1]));
            a[2] = __smlad(k2m_sxtb16_ror8(r2), x13, __smlad(__sxtb16(r2), x02, a[2]));
            a[3] = __smlad(k2m_sxtb16_ror8(r3), x13, __smlad(__sxtb16(r3), x02, a[3]));
        }
        for (k = 0; k < 4; ++k) {
            m->sum[k] = a[k];
            a[k] = 0;
        }
        while (h != m->h_end) {
            rows4_step_c(m->wr0, m->wr2, m->nr, k2m_ld32(h), k2m_ld32(h + 2), a);
            h += 4;
            m->wr0 += 4;
            m->wr2 += 4;
        }
        for (k = 0; k < 4; ++k) {
            m->sum[4 + k] = a[k];
        }
    }
#if defined(__OPTIMIZE__)
tails:
#endif
    /* the last features % 4 and units % 4 elements (hp keeps those in
     * natural order); the row pointers are where the loops stopped */
    if (m->x_tail != 0) {
        const int8_t *const w0 = m->wk0, *const w2 = m->wk2;
        const int32_t n = m->nk;
        int32_t a0 = m->sum[0], a1 = m->sum[1], a2 = m->sum[2], a3 = m->sum[3];
        for (k = 0; k < m->x_tail; ++k) {
            const int32_t v = m->x_end[k];
            a0 += (int32_t)w0[k] * v;
            a1 += (int32_t)w0[n + k] * v;
            a2 += (int32_t)w2[k] * v;
            a3 += (int32_t)w2[n + k] * v;
        }
        m->sum[0] = a0;
        m->sum[1] = a1;
        m->sum[2] = a2;
        m->sum[3] = a3;
    }
    if (m->h_tail != 0) {
        const int8_t *const w0 = m->wr0, *const w2 = m->wr2;
        const int32_t n = m->nr;
        int32_t a0 = m->sum[4], a1 = m->sum[5], a2 = m->sum[6], a3 = m->sum[7];
        for (k = 0; k < m->h_tail; ++k) {
            const int32_t v = m->h_end[k];
            a0 += (int32_t)w0[k] * v;
            a1 += (int32_t)w0[n + k] * v;
            a2 += (int32_t)w2[k] * v;
            a3 += (int32_t)w2[n + k] * v;
        }
        m->sum[4] = a0;
        m->sum[5] = a1;
        m->sum[6] = a2;
        m->sum[7] = a3;
    }
}
#undef RNN_ROW
#undef RNN_ROWS4
#undef RNN_ROWM
#undef RNN_H4

/* hp = h with every group of 4 as h0, h2, h1, h3 (a PKHBT and a PKHTB per
 * group), the last n % 4 in natural order.  Once per step. */
static void rnn_hp_fill(const int16_t *h, int16_t *hp, int32_t n)
{
    int32_t k;
    for (k = 0; k + 4 <= n; k += 4) {
        const uint32_t a = (uint32_t)k2m_ld32(h + k);      /* h0, h1 */
        const uint32_t b = (uint32_t)k2m_ld32(h + k + 2);  /* h2, h3 */
        k2m_st32(hp + k, (int32_t)((a & 0xFFFFu) | (b << 16)));
        k2m_st32(hp + k + 2, (int32_t)((a >> 16) | (b & 0xFFFF0000u)));
    }
    for (; k < n; ++k) {
        hp[k] = h[k];
    }
}

/* Where element k of h goes in hp (n4 = n rounded down to a multiple of 4). */
static inline int32_t rnn_hp_pos(int32_t k, int32_t n4)
{
    return k < n4 ? ((k & ~3) | ((k & 1) << 1) | ((k >> 1) & 1)) : k;
}
#endif /* K2M_DSP */

/* ---- one block of rows -------------------------------------------------- */

typedef struct {
    const k2m_rnn_weights_s8 *w;
    int32_t features, units;
    int fast;          /* rq_fast for every row (rnn_rows_fast) */
    int32_t row[4];    /* the rows of this block's four slots (rnn_block) */
    rnn_mac mac;       /* x and hp set per step; sum[] the slots' sums */
} rnn_step;

/* rows: the number of gate rows; GRU reset_after: rec_bias for the
 * candidate rows (the last third). */
static void rnn_step_init(rnn_step *st, const k2m_rnn_weights_s8 *w,
                          int32_t features, int32_t units, int32_t rows,
                          const int32_t *rec_bias, const int16_t *hp)
{
    const int32_t plain = rec_bias != NULL ? rows - units : rows;
    st->fast = rnn_rows_fast(w, 0, plain, features, units, NULL)
               && rnn_rows_fast(w, plain, rows - plain, features, units,
                                rec_bias);
    st->w = w;
    st->features = features;
    st->units = units;
    st->mac.h = hp;
    st->mac.h_aligned = ((uintptr_t)hp & 3u) == 0;
    st->mac.h_end8 = hp + (units & ~7);
    st->mac.h_end = hp + (units & ~3);
    st->mac.h_tail = units & 3;
    st->mac.x_back = 0;
    st->mac.x_tail = features & 3;
#if K2M_DSP
    if (features >= 4 && (features & 3) != 0) {
        st->mac.x_back = 4 - (features & 3);
        st->mac.x_tail = 0;
    }
#endif
}

static void rnn_step_x(rnn_step *st, const int8_t *x)
{
    st->mac.x = x;
    st->mac.x_end = x + (st->features & ~3);
}

/* The dot products of the rows first + j * rstride, j < count (1..4).
 * The MAC loops take four slots, rows a, a + n, b, b + n: a short block
 * points the spare ones at real rows (count 3: rows 1, 0, 2, 1; count 2:
 * 1, 0, 1, 0; count 1: 0, 0, 0, 0), so it never reads past the weights.
 * Returns the slot mask for rnn_slot: row j is in slot j ^ (swap & j < 2). */
RNN_INLINE int32_t rnn_block(rnn_step *st, int32_t first, int32_t rstride,
                             int32_t count)
{
    const k2m_rnn_weights_s8 *w = st->w;
    const int32_t f = st->features, u = st->units;
    rnn_mac *m = &st->mac;
    int32_t a = 0, b = 2, dn = rstride;

    if (count != 4) {
        a = count == 1 ? 0 : 1;
        b = count - 1;
        dn = count == 1 ? 0 : -rstride;
    }
    a = first + a * rstride;
    b = first + b * rstride;
    st->row[0] = a;
    st->row[1] = a + dn;
    st->row[2] = b;
    st->row[3] = b + dn;
    m->wk0 = w->kernel + a * f;
    m->wk2 = w->kernel + b * f;
    m->nk = dn * f;
    m->wr0 = w->recurrent + a * u;
    m->wr2 = w->recurrent + b * u;
    m->nr = dn * u;
    rnn_macs(m);
    return dn < 0;
}

static inline int32_t rnn_slot(int32_t swap, int32_t j)
{
    return j ^ (swap & (j < 2));
}

/* Slot s's kernel term rq(bias + kernel . x) and recurrent term
 * rq(rec_bias + recurrent . hp) (rec_bias: GRU reset_after's candidates,
 * else NULL). */
RNN_INLINE int32_t slot_kterm(const rnn_step *st, int fast, int32_t s)
{
    const k2m_rnn_weights_s8 *w = st->w;
    const int32_t r = st->row[s];
    const int32_t acc = st->mac.sum[s] + (w->bias != NULL ? w->bias[r] : 0);
    return fast ? rq_fast(acc, w->kernel_multiplier[r], w->kernel_shift[r])
                : rq_general(acc, w->kernel_multiplier[r], w->kernel_shift[r]);
}

RNN_INLINE int32_t slot_rterm(const rnn_step *st, int fast, int32_t s,
                              const int32_t *rec_bias)
{
    const k2m_rnn_weights_s8 *w = st->w;
    const int32_t r = st->row[s];
    const int32_t acc = st->mac.sum[4 + s] + (rec_bias != NULL ? rec_bias[r] : 0);
    return fast ? rq_fast(acc, w->recurrent_multiplier[r], w->recurrent_shift[r])
                : rq_general(acc, w->recurrent_multiplier[r],
                             w->recurrent_shift[r]);
}

/* The general form of rnn_pre4 and rnn_terms4 below, out of line: calls
 * whose scales or sums rule out rq_fast are rare, and inlined they would
 * double the code. */
RNN_NOINLINE void rnn_pre4_general(const rnn_step *st, int32_t pre[4])
{
    int32_t s;
    for (s = 0; s < 4; ++s) {
        pre[s] = rnn_sat16(slot_kterm(st, 0, s) + slot_rterm(st, 0, s, NULL));
    }
}

RNN_NOINLINE void rnn_terms4_general(const rnn_step *st,
                                     const int32_t *rec_bias, int32_t a[4],
                                     int32_t q[4])
{
    int32_t s;
    for (s = 0; s < 4; ++s) {
        a[s] = rnn_sat16(slot_kterm(st, 0, s));
        q[s] = rnn_sat16(slot_rterm(st, 0, s, rec_bias));
    }
}

/* pre[s] = sat16(kernel term + recurrent term) of the four slots: written
 * out, the parameter pointers in locals, one test of st->fast per block
 * (a row loop cost ~8 instructions a row in counters, reloads and
 * stores). */
#define RNN_PRE(s)                                                        \
    do {                                                                  \
        const int32_t r = st->row[s];                                     \
        pre[s] = rnn_sat16(                                               \
            rq_fast(st->mac.sum[s] + (bias != NULL ? bias[r] : 0), km[r], \
                    ks[r])                                                \
            + rq_fast_r(st->mac.sum[4 + s], rm[r], rs[r]));               \
    } while (0)
RNN_INLINE void rnn_pre4(const rnn_step *st, int32_t pre[4])
{
    if (st->fast) {
        const k2m_rnn_weights_s8 *w = st->w;
        const int32_t *const bias = w->bias;
        const int32_t *const km = w->kernel_multiplier;
        const int32_t *const ks = w->kernel_shift;
        const int32_t *const rm = w->recurrent_multiplier;
        const int32_t *const rs = w->recurrent_shift;
        RNN_PRE(0);
        RNN_PRE(1);
        RNN_PRE(2);
        RNN_PRE(3);
    } else {
        rnn_pre4_general(st, pre);
    }
}
#undef RNN_PRE

/* a[s] = sat16(kernel term), q[s] = sat16(recurrent term, rec_bias
 * included) of the four slots: a GRU reset_after's candidate rows. */
#define RNN_TERMS(s)                                                      \
    do {                                                                  \
        const int32_t r = st->row[s];                                     \
        a[s] = rnn_sat16(rq_fast(st->mac.sum[s]                           \
                                 + (bias != NULL ? bias[r] : 0),          \
                                 km[r], ks[r]));                          \
        q[s] = rnn_sat16(rq_fast_r(st->mac.sum[4 + s]                     \
                                 + (rec_bias != NULL ? rec_bias[r] : 0),  \
                                 rm[r], rs[r]));                          \
    } while (0)
RNN_INLINE void rnn_terms4(const rnn_step *st, const int32_t *rec_bias,
                           int32_t a[4], int32_t q[4])
{
    if (st->fast) {
        const k2m_rnn_weights_s8 *w = st->w;
        const int32_t *const bias = w->bias;
        const int32_t *const km = w->kernel_multiplier;
        const int32_t *const ks = w->kernel_shift;
        const int32_t *const rm = w->recurrent_multiplier;
        const int32_t *const rs = w->recurrent_shift;
        RNN_TERMS(0);
        RNN_TERMS(1);
        RNN_TERMS(2);
        RNN_TERMS(3);
    } else {
        rnn_terms4_general(st, rec_bias, a, q);
    }
}
#undef RNN_TERMS

/* out[j] = lut16(pre(first + j), lut of that row) for j < rows; rows below
 * split take lut_a, the others lut_b (tables' middles, rnn_lut16). */
RNN_NOINLINE void gate_rows(rnn_step *st, int32_t first, int32_t rows,
                          int32_t split, const int16_t *lut_a,
                          const int16_t *lut_b, int16_t *out)
{
    int32_t j, k;

    for (j = 0; j < rows; j += 4) {
        const int32_t count = rows - j < 4 ? rows - j : 4;
        const int32_t swap = rnn_block(st, first + j, 1, count);
        const int32_t r0 = first + j;
        int32_t pre[4];
        rnn_pre4(st, pre);
        if (count == 4 && (r0 + 3 < split || r0 >= split)) {
            /* the usual block: four rows, one table */
            const int16_t *const lut = r0 < split ? lut_a : lut_b;
            out[j] = (int16_t)rnn_lut16(pre[0], lut);
            out[j + 1] = (int16_t)rnn_lut16(pre[1], lut);
            out[j + 2] = (int16_t)rnn_lut16(pre[2], lut);
            out[j + 3] = (int16_t)rnn_lut16(pre[3], lut);
        } else {
            for (k = 0; k < count; ++k) {
                out[j + k] = (int16_t)rnn_lut16(pre[rnn_slot(swap, k)],
                                                r0 + k < split ? lut_a : lut_b);
            }
        }
    }
}

/* ---- int16 products and the output --------------------------------------
 * rq of a product p of two int16 values (or (one - z) * hh, |p| <= 2^31)
 * with a per-call scale (forget, input, output_gate, reset, keep, update):
 * for p in [-2^30, 2^30) and shift in [-30, -1] the fast form above is
 * exact (2p fits, |x| <= 2^30, x + 2^(e-1) < 2^31, |y| < 2^30) for any
 * multiplier: 5 instructions and a range test.  Other values (only
 * (-32768)^2 = 2^30 among int16 products) and other shifts take
 * k2m_rq_apply. */
typedef struct {
    int32_t mult, e, c;  /* shift = -e, c = 2^(e - 1) */
    uint32_t lim;        /* 2^31 when the shift allows the fast form, else 0 */
    k2m_rq gen;
} rnn_prod;

static void rnn_prod_init(rnn_prod *r, const k2m_scale *s)
{
    k2m_rq_init(&r->gen, s->multiplier, s->shift);
    r->mult = s->multiplier;
    r->lim = (s->shift <= -1 && s->shift >= -30) ? 0x80000000u : 0u;
    r->e = r->lim != 0u ? -s->shift : 1;
    r->c = (int32_t)((uint32_t)1 << (r->e - 1));
}

static inline int32_t rq_prod(const rnn_prod *r, int32_t p)
{
    if (RNN_LIKELY((uint32_t)p + 0x40000000u < r->lim)) {  /* |p| < 2^30 */
        const int32_t x = rnn_smmulr((int32_t)((uint32_t)p << 1), r->mult);
        return k2m_asr(x + r->c + k2m_asr(x, 31), r->e);
    }
    return k2m_rq_apply(&r->gen, p);
}

/* y = clamp(rq(h, h_to_output) + output_offset, -128, 127).  |h| <= 2^15,
 * so the fast form with the offset folded in (k2m_conv.c) is exact when
 * left <= 13 and the folded offset stays below 2^30; else k2m_rq_apply. */
typedef struct {
    int fast;
    int32_t mult, ls, rs, ho, offset;
    k2m_rq rq;
} rnn_out;

static void rnn_out_init(rnn_out *o, const k2m_scale *s, int32_t offset)
{
    const int32_t left = s->shift > 0 ? s->shift : 0;
    const int32_t e = left - s->shift;
    k2m_rq_init(&o->rq, s->multiplier, s->shift);
    o->offset = offset;
    o->mult = s->multiplier;
    o->fast = left <= 13 && e <= 28;
    if (o->fast) {
        const int64_t ho = ((int64_t)1 << e) + (int64_t)offset * ((int64_t)2 << e);
        o->fast = ho < ((int64_t)1 << 30) && ho > -((int64_t)1 << 30);
        o->ls = left + 1;
        o->rs = e + 1;
        o->ho = (int32_t)ho;
    }
}

static void store_h_s8(const int16_t *h, int32_t units, const rnn_out *o,
                       int8_t *y)
{
    int32_t u;
    if (o->fast) {
        for (u = 0; u < units; ++u) {
            const int32_t x = rnn_smmulr((int32_t)((uint32_t)h[u] << o->ls),
                                         o->mult);
            const int32_t t = (int32_t)((uint32_t)o->ho + ((uint32_t)x << 1))
                              + k2m_asr(x, 31);
            y[u] = (int8_t)k2m_clamp_s32(k2m_asr(t, o->rs), -128, 127);
        }
    } else {
        for (u = 0; u < units; ++u) {
            y[u] = (int8_t)k2m_clamp_s32(k2m_rq_apply(&o->rq, h[u]) + o->offset,
                                         -128, 127);
        }
    }
}

/* Step s's output row (SEQUENCES), or the last step's h. */
static void rnn_steps_out(const k2m_rnn_dims *d, const int16_t *h,
                          const rnn_out *o, int8_t *output, int32_t s)
{
    if (d->flags & K2M_RNN_SEQUENCES) {
        store_h_s8(h, d->units, o, output + k2m_rnn_output_row(d, s) * d->units);
    } else if (s == d->steps - 1) {
        store_h_s8(h, d->units, o, output);
    }
}

/* ---- the cells ---------------------------------------------------------- */

void k2m_simple_rnn_s8(const k2m_rnn_dims *d, const k2m_simple_rnn_s8_params *p,
                       const int8_t *input, int8_t *output, int16_t *state,
                       int16_t *scratch)
{
    const int32_t units = d->units;
    rnn_step st;
    rnn_out o;
    int32_t s;

    rnn_step_init(&st, &p->w, d->features, units, units, NULL, scratch);
    rnn_out_init(&o, &p->h_to_output, p->output_offset);
    for (s = 0; s < d->steps; ++s) {
        rnn_step_x(&st, input + k2m_rnn_input_row(d, s) * d->features);
        rnn_hp_fill(state, scratch, units);
        gate_rows(&st, 0, units, units, p->act_lut + 256, p->act_lut + 256,
                  state);
        rnn_steps_out(d, state, &o, output, s);
    }
    if (d->steps <= 0 && !(d->flags & K2M_RNN_SEQUENCES)) {
        store_h_s8(state, units, &o, output);
    }
}

void k2m_lstm_s8(const k2m_rnn_dims *d, const k2m_lstm_s8_params *p,
                 const int8_t *input, int8_t *output, int16_t *state,
                 int16_t *scratch)
{
    const int32_t units = d->units;
    int16_t *h = state, *c = state + units, *h_copy;
    rnn_step st;
    rnn_out o;
    rnn_prod forget, in, og;
    const int16_t *lut[5];  /* the tables' middles: i, f, g, o, cell */
    int32_t s, u;

    for (s = 0; s < 4; ++s) {
        lut[s] = p->gate_lut[s] + 256;
    }
    lut[4] = p->cell_lut + 256;
    /* hp at a 4-byte boundary (scratch has room: 4 units) */
    h_copy = scratch + (((uintptr_t)scratch & 2u) != 0 ? 1 : 0);
    rnn_step_init(&st, &p->w, d->features, units, 4 * units, NULL, h_copy);
    rnn_out_init(&o, &p->h_to_output, p->output_offset);
    rnn_prod_init(&forget, &p->forget);
    rnn_prod_init(&in, &p->input);
    rnn_prod_init(&og, &p->output_gate);
    for (s = 0; s < d->steps; ++s) {
        rnn_step_x(&st, input + k2m_rnn_input_row(d, s) * d->features);
        rnn_hp_fill(h, h_copy, units);
        /* rows u, u + units, u + 2 units, u + 3 units: unit u's i, f, g, o */
        for (u = 0; u < units; ++u) {
            int32_t gate[4], g, cu;
            rnn_block(&st, u, units, 4);
            rnn_pre4(&st, gate);
            for (g = 0; g < 4; ++g) {
                gate[g] = rnn_lut16(gate[g], lut[g]);
            }
            /* Products of two int16 values fit in int32 (|.| <= 2^30). */
            cu = rnn_sat16(rq_prod(&forget, gate[1] * c[u])
                           + rq_prod(&in, gate[0] * gate[2]));
            c[u] = (int16_t)cu;
            h[u] = (int16_t)rnn_sat16(
                rq_prod(&og, gate[3] * rnn_lut16(cu, lut[4])));
        }
        rnn_steps_out(d, h, &o, output, s);
    }
    if (d->steps <= 0 && !(d->flags & K2M_RNN_SEQUENCES)) {
        store_h_s8(h, units, &o, output);
    }
}

void k2m_gru_s8(const k2m_rnn_dims *d, const k2m_gru_s8_params *p,
                const int8_t *input, int8_t *output, int16_t *state,
                int16_t *scratch)
{
    const k2m_rnn_weights_s8 *w = &p->w;
    const int32_t units = d->units, cand = 2 * units;
    const int32_t reset_after = (d->flags & K2M_GRU_RESET_AFTER) != 0;
    const int32_t *rec_bias = reset_after ? w->recurrent_bias : NULL;
    const int16_t *const lut_h = p->gate_lut[2] + 256;  /* middle */
    const int32_t one = p->one;
    int16_t *h = state;
    /* hp at a 4-byte boundary (scratch has room: 3 units + 1 <= 4 units) */
    int16_t *z = scratch, *r = scratch + units;
    int16_t *hp = scratch + 2 * units + (((uintptr_t)scratch & 2u) != 0 ? 1 : 0);
    rnn_step st;
    rnn_out o;
    rnn_prod reset, keep, update;
    int32_t s, u, j;

    rnn_step_init(&st, w, d->features, units, 3 * units, rec_bias, hp);
    rnn_out_init(&o, &p->h_to_output, p->output_offset);
    rnn_prod_init(&reset, &p->reset);
    rnn_prod_init(&keep, &p->keep);
    rnn_prod_init(&update, &p->update);
    for (s = 0; s < d->steps; ++s) {
        rnn_step_x(&st, input + k2m_rnn_input_row(d, s) * d->features);
        rnn_hp_fill(h, hp, units);
        /* z and r: rows 0 .. 2 units, into z[] and r[] (contiguous) */
        gate_rows(&st, 0, 2 * units, units, p->gate_lut[0] + 256,
                  p->gate_lut[1] + 256, z);
        if (!reset_after) {
            /* Every candidate row reads all of r * h: it replaces h in hp. */
            const int32_t n4 = units & ~3;
            for (u = 0; u < units; ++u) {
                hp[rnn_hp_pos(u, n4)] = (int16_t)rnn_sat16(
                    rq_prod(&reset, (int32_t)r[u] * h[u]));
            }
        }
        /* The candidate rows, and h as soon as its hh is known (the
         * candidate sums read hp, not h). */
        for (j = 0; j < units; j += 4) {
            const int32_t count = units - j < 4 ? units - j : 4;
            const int32_t swap = rnn_block(&st, cand + j, 1, count);
            int32_t pre[4], a[4], q[4], k;
            if (reset_after) {
                /* a = sat16(kernel term), q = sat16(recurrent term) */
                rnn_terms4(&st, rec_bias, a, q);
                for (k = 0; k < count; ++k) {
                    const int32_t sl = rnn_slot(swap, k);
                    pre[k] = rnn_sat16(
                        a[sl] + rq_prod(&reset, (int32_t)r[j + k] * q[sl]));
                }
            } else {
                rnn_pre4(&st, a);
                for (k = 0; k < count; ++k) {
                    pre[k] = a[rnn_slot(swap, k)];
                }
            }
            for (k = 0; k < count; ++k) {
                /* one - z spans up to 2^16 and hh at most 2^15: the
                 * product still fits in int32. */
                const int32_t hh = rnn_lut16(pre[k], lut_h);
                const int32_t zu = z[j + k];
                h[j + k] = (int16_t)rnn_sat16(
                    rq_prod(&keep, zu * h[j + k])
                    + rq_prod(&update, (one - zu) * hh));
            }
        }
        rnn_steps_out(d, h, &o, output, s);
    }
    if (d->steps <= 0 && !(d->flags & K2M_RNN_SEQUENCES)) {
        store_h_s8(h, units, &o, output);
    }
}
