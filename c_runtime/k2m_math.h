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

/* TFLite MultiplyByQuantizedMultiplier: acc * multiplier * 2^shift with the
 * multiplier a Q31 value in [2^30, 2^31) and shift > 0 meaning left. */
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
    return k2m_rdbp(k2m_sat_rdhm(scaled, multiplier), right);
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

#endif /* K2M_MATH_H */
