/* k2m runtime: TFLite's integer requantization arithmetic, bit for bit.
 *
 * These are the gemmlowp / TFLite reference helpers the int8 kernels share.
 * They are static inline so each kernel file stays self-contained and the
 * compiler can fold them into the inner loops.  tests/kernel_ref.py mirrors
 * them in numpy; any change here must be made there too.
 */
#ifndef K2M_MATH_H
#define K2M_MATH_H

#include <stdint.h>

#include "k2m.h"

/* gemmlowp SaturatingRoundingDoublingHighMul: (a * b * 2) >> 32, rounded to
 * nearest with ties away from zero.  The only product that does not fit is
 * INT32_MIN * INT32_MIN, which saturates. */
static inline int32_t k2m_sat_rdhm(int32_t a, int32_t b)
{
    int64_t ab;
    int32_t nudge;

    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    /* Division, not a shift: C's truncation toward zero is what gemmlowp
     * relies on for the negative half of the rounding. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties
 * away from zero; 0 <= exponent <= 31. */
static inline int32_t k2m_rdbp(int32_t x, int32_t exponent)
{
    /* Unsigned so that exponent == 31 does not overflow a signed shift. */
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    /* Right shift of a negative value is implementation-defined in C99; gcc
     * and arm-none-eabi-gcc (every target we support) shift arithmetically,
     * which is the floor the rounding correction below assumes. */
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* Requantized values are saturated to [-2^30, 2^30 - 1] so that adding an
 * output offset (|offset| <= 2^15) can never overflow int32, which
 * sanitized fuzzing found possible with a left shift and a multiplier near
 * 2^31.  Every clamp a kernel applies afterwards (int8 or int16 range) lies
 * far inside, so no output changes. */
static inline int32_t k2m_sat30(int32_t x)
{
    const int32_t top = (int32_t)((1u << 30) - 1u);
    return x > top ? top : (x < -top - 1 ? -top - 1 : x);
}

/* TFLite MultiplyByQuantizedMultiplier: acc * multiplier * 2^shift with the
 * multiplier a Q31 value in [2^30, 2^31) and shift > 0 meaning left, then
 * k2m_sat30. */
static inline int32_t k2m_requantize(int32_t acc, int32_t multiplier,
                                     int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    /* TFLite writes acc * (1 << left), undefined if it overflows; going
     * through uint32 makes that case wrap (gcc converts modulo 2^32) rather
     * than license the optimiser to assume it away.  Real layers never get
     * there: a left shift means a multiplier > 1, i.e. small accumulators. */
    const int32_t scaled = (int32_t)((uint32_t)acc << left);
    return k2m_sat30(k2m_rdbp(k2m_sat_rdhm(scaled, multiplier), right));
}

static inline int32_t k2m_clamp_s32(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* floor(x / 2^n), 0 <= n <= 31, for negative x too.  C99 leaves >> of a
 * negative value implementation-defined; ~x is non-negative when x is
 * negative, and ~((~x) >> n) == floor(x / 2^n) by two's complement, so
 * this is defined everywhere and gcc still emits a single ASR. */
static inline int32_t k2m_asr(int32_t x, int32_t n)
{
    return x >= 0 ? (x >> n) : ~((~x) >> n);
}

/* Stores an already clamped value as element `index` of an int8 or int16
 * buffer: lets one static loop serve an _s8 and an _s16 public kernel,
 * branching once per output element rather than per MAC. */
static inline void k2m_store_s8_s16(void *output, int32_t index, int32_t v,
                                    int out_is_16bit)
{
    if (out_is_16bit) {
        ((int16_t *)output)[index] = (int16_t)v;
    } else {
        ((int8_t *)output)[index] = (int8_t)v;
    }
}

/* Taps k in [*k_begin, *k_end) of a dilated window starting at `start`
 * land inside [0, size): computed once per output row/column so the inner
 * loops never test bounds. */
static inline void k2m_tap_range(int32_t start, int32_t size, int32_t k,
                                 int32_t dil, int32_t *k_begin,
                                 int32_t *k_end)
{
    int32_t b = 0;
    int32_t e = k;

    if (start < 0) {
        b = (-start + dil - 1) / dil;
    }
    if (start >= size) {
        e = 0;
    } else {
        const int32_t fit = (size - start + dil - 1) / dil;
        if (fit < e) {
            e = fit;
        }
    }
    if (b > e) {
        b = e;
    }
    *k_begin = b;
    *k_end = e;
}


/* ---- requantization with per-channel constants hoisted ----------------
 * k2m_requantize, bit for bit, for kernels that apply one channel's
 * multiplier/shift to several accumulators: the shift split, the rounding
 * mask and its threshold are computed once (k2m_rq_init), and
 * SaturatingRoundingDoublingHighMul uses the identity
 *   trunc((ab + nudge) / 2^31) == floor((ab + 2^30) / 2^31)
 * (ab >= 0: nudge is 2^30 and both sides are a floor of a non-negative
 * value; ab < 0: ab + nudge < 0, and trunc(t / 2^31) of a negative t is
 * floor((t + 2^31 - 1) / 2^31) = floor((ab + 2^30) / 2^31)), so it is one
 * 64-bit multiply-add and a shift, no division.  The only input where the
 * identity's result overflows int32 is a == b == INT32_MIN, which
 * k2m_requantize saturates; a channel whose multiplier is INT32_MIN
 * (never produced by the exporter: multipliers are in [2^30, 2^31)) takes
 * k2m_requantize itself.  tests/test_kernels.py checks k2m_rq_apply
 * against kernel_ref.requantize. */
typedef struct {
    int32_t multiplier, shift;
    int32_t left, right;   /* shift split into a left and a right part */
    int32_t mask, half;    /* k2m_rdbp's mask and mask >> 1 for `right` */
} k2m_rq;

static inline void k2m_rq_init(k2m_rq *r, int32_t multiplier, int32_t shift)
{
    r->multiplier = multiplier;
    r->shift = shift;
    r->left = shift > 0 ? shift : 0;
    r->right = shift > 0 ? 0 : -shift;
    r->mask = (int32_t)(((uint32_t)1 << r->right) - 1u);
    r->half = r->mask >> 1;
}

static inline int32_t k2m_rq_apply(const k2m_rq *r, int32_t acc)
{
    const int32_t scaled = (int32_t)((uint32_t)acc << r->left);
    int64_t y;
    int32_t x;

    if (r->multiplier == INT32_MIN) {
        return k2m_requantize(acc, r->multiplier, r->shift);
    }
    y = (int64_t)scaled * (int64_t)r->multiplier + ((int64_t)1 << 30);
    /* Bits 31..62 of y: a logical shift of the two's-complement pattern
     * gives the same low 32 bits as the arithmetic floor, and the result
     * fits in int32 here (|scaled * multiplier| < 2^62). */
    x = (int32_t)(uint32_t)((uint64_t)y >> 31);
    /* k2m_rdbp(x, right) with the constants precomputed. */
    return k2m_sat30(k2m_asr(x, r->right)
        + ((x & r->mask) > r->half + (int32_t)((uint32_t)x >> 31) ? 1 : 0));
}

/* ---- Cortex-M4 DSP helpers --------------------------------------------
 * K2M_DSP is 1 where the int8 conv / fully connected kernels use the
 * SMLAD/SXTB16 loops (the target has the DSP extension and K2M_PORTABLE
 * is not defined), 0 where they run the portable reference loops. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(K2M_PORTABLE)
#define K2M_DSP 1
#else
#define K2M_DSP 0
#endif

#if K2M_DSP
#include <arm_acle.h>
#include <string.h>

/* 32-bit load/store at any alignment: memcpy keeps it clean C (no
 * aliasing or alignment UB); gcc emits a single LDR/STR (the M4 allows
 * unaligned LDR/STR). */
static inline int32_t k2m_ld32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void k2m_st32(void *p, int32_t v)
{
    memcpy(p, &v, 4);
}

/* Bytes 1 and 3 of x sign-extended to two int16 lanes: SXTB16 with the
 * ROR #8 folded in (gcc's __sxtb16(__ror(x, 8)) keeps a separate ROR). */
static inline int32_t k2m_sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* a + bytes 1 and 3 of x sign-extended, per int16 lane. */
static inline int32_t k2m_sxtab16_ror8(int32_t a, int32_t x)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}

/* (lo16(a), lo16(b)) and (hi16(a), hi16(b)) as int16 pairs (PKHBT /
 * PKHTB): the lanes of two SXTB16 results regrouped by lane. */
static inline int32_t k2m_pack_lo(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline int32_t k2m_pack_hi(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/* Both int16 lanes of v clamped to [lo, hi], given as pairs lo2 = (lo, lo)
 * and hi2 = (hi, hi): SSUB16 sets a lane's GE bits where it is >= the
 * bound, SEL picks per lane. */
static inline int32_t k2m_clamp2_s16(int32_t v, int32_t lo2, int32_t hi2)
{
    int32_t t;
    __asm__("ssub16 %1, %0, %2\n\t"
            "sel    %0, %0, %2\n\t"
            "ssub16 %1, %3, %0\n\t"
            "sel    %0, %0, %3"
            : "+r"(v), "=&r"(t) : "r"(lo2), "r"(hi2) : "cc");
    return v;
}

#endif /* K2M_DSP */

/* Input row read and output row written at step s (go_backwards, and the
 * backward half of a Bidirectional layer). */
static inline int32_t k2m_rnn_input_row(const k2m_rnn_dims *d, int32_t s)
{
    return (d->flags & K2M_RNN_BACKWARDS) ? d->steps - 1 - s : s;
}

static inline int32_t k2m_rnn_output_row(const k2m_rnn_dims *d, int32_t s)
{
    return (d->flags & K2M_RNN_REVERSE_OUTPUT) ? d->steps - 1 - s : s;
}

/* ---- requantization that saturates instead of wrapping ----------------
 * k2m_rq_apply shifts acc left before the multiply, as TFLite does, and an
 * accumulator too large for that shift wraps.  With the exporter's
 * multipliers (in [2^30, 2^31)) such an accumulator's exact result is at
 * least 2^30 in size, which k2m_sat30 would clamp anyway: so return that
 * bound.  Used by the kernels whose accumulators the exporter cannot bound
 * from the calibration (broadcast binary ops, reduce, matmul). */
static inline int32_t k2m_rq_apply_sat(const k2m_rq *r, int32_t acc)
{
    if (r->left > 0) {
        const int32_t lim = INT32_MAX >> r->left;
        if (acc > lim) {
            return (int32_t)((1u << 30) - 1u);
        }
        if (acc < -lim - 1) {
            return -(int32_t)(1u << 30);
        }
    }
    return k2m_rq_apply(r, acc);
}

/* ---- requantization of small accumulators, with the output offset -----
 * k2m_requantize(acc, m, shift) + offset, bit for bit, in five
 * instructions (SMMULR and a rounding shift) where every accumulator of a
 * call is known to be small.  With left = max(shift, 0), e = max(-shift,
 * 0), s = acc << left:
 *   SaturatingRoundingDoublingHighMul(s, m) = floor((s m + 2^30) / 2^31)
 *     = floor((2s m + 2^31) / 2^32) = SMMULR(2s, m)   when 2s fits in int32
 *   (the saturating corner needs s == INT32_MIN, excluded by the bound);
 *   RoundingDivideByPOT(x, e) = RoundingDivideByPOT(2x, e + 1)
 *     = floor((2x + 2^e - [x < 0]) / 2^(e+1))   (ties away from zero),
 * and the offset adds exactly inside the floor as offset * 2^(e+1).  So
 * with ls = left + 1, rs = e + 1 and ho = 2^e + offset * 2^rs:
 *   x = SMMULR(acc << ls, m);  y = (ho + 2x + (x >> 31)) >> rs.
 * k2m_rqs_init says whether the form is exact for every |acc| <= acc_max:
 * |acc_max << ls| < 2^30 and |ho| < 2^30 keep every step inside int32
 * (|2x| <= 2^30) and |y| < 2^30, so k2m_requantize's k2m_sat30 never acts;
 * a multiplier of 0 (a scale that underflowed: the output is the offset)
 * is exact for any accumulator, SMMULR by 0 being 0 whatever acc << ls
 * wrapped to, as the reference's product is.  Off the DSP, SMMULR is the
 * same floor((a b + 2^31) / 2^32) in 64 bits. */
static inline int32_t k2m_smmulr(int32_t a, int32_t b)
{
#if K2M_DSP
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    const int64_t p = (int64_t)a * (int64_t)b + ((int64_t)1 << 31);
    return (int32_t)(uint32_t)((uint64_t)p >> 32);  /* bits 32..63 */
#endif
}

typedef struct {
    int32_t mult, ls, rs, ho;
} k2m_rqs;

static inline int k2m_rqs_init(k2m_rqs *r, int32_t multiplier, int32_t shift,
                               int32_t offset, int64_t acc_max)
{
    const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int64_t ho = ((int64_t)1 << (right > 40 ? 40 : right))
                     + (int64_t)offset * ((int64_t)1 << (right > 40 ? 41 : right + 1));
    r->mult = multiplier;
    r->ls = left + 1;
    r->rs = right + 1;
    r->ho = (int32_t)ho;
    return multiplier != INT32_MIN && right <= 29 && left <= 29
        && (multiplier == 0 || acc_max < ((int64_t)1 << (29 - left)))
        && ho < ((int64_t)1 << 30) && ho > -((int64_t)1 << 30);
}

static inline int32_t k2m_rqs_apply(const k2m_rqs *r, int32_t acc)
{
    const int32_t x = k2m_smmulr((int32_t)((uint32_t)acc << r->ls), r->mult);
    return k2m_asr((int32_t)((uint32_t)r->ho + ((uint32_t)x << 1)) + k2m_asr(x, 31), r->rs);
}

/* Largest |accumulator| of a dot product of k int8 inputs (offset added)
 * with k int8 weights, plus |bias|. */
static inline int64_t k2m_acc_bound(int32_t bias, int32_t k, int32_t input_offset)
{
    const int64_t x_max = 128 + (int64_t)(input_offset < 0 ? -input_offset : input_offset);
    return (bias < 0 ? -(int64_t)bias : (int64_t)bias) + (int64_t)k * x_max * 128;
}

/* num / den rounded to nearest, ties away from zero; den != 0 and
 * |num| <= 2^30 (the int8 division of k2m_broadcast_div_s8). */
static inline int32_t k2m_div_nearest(int32_t num, int32_t den)
{
    const uint32_t a = num < 0 ? 0u - (uint32_t)num : (uint32_t)num;
    const uint32_t b = den < 0 ? 0u - (uint32_t)den : (uint32_t)den;
    const int32_t q = (int32_t)((a + (b >> 1)) / b);
    return (num < 0) != (den < 0) ? -q : q;
}

#endif /* K2M_MATH_H */
