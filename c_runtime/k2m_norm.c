/* k2m runtime: normalization over groups (LayerNormalization,
 * GroupNormalization, RMSNormalization, UnitNormalization), int8.
 *
 * Integers only: exact int32/uint32 sums, the variance as an exact int64,
 * an integer inverse square root, then two 32x32 high-word products per
 * element (k2m.h gives the arithmetic, docs/norm_int8.md why it is built
 * this way; tests/norm_ref.py mirrors it in numpy and any change here must
 * be made there too).  Where __ARM_FEATURE_DSP is defined the sums take
 * SMLAD four elements per word, the rounded product SMMULR and the int8
 * saturation SSAT; all are exact, so both paths give the same bits.
 */
#include "k2m.h"
#include "k2m_math.h"

/* 2^30 / sqrt((i + 16.5) / 64): 1 / sqrt(x) at the middle of each of the
 * 48 intervals of width 1/64 that cover x in [1/4, 1), in Q30.  Within
 * 1.6% of 1 / sqrt(x) over each interval. */
static const uint32_t k2m_norm_rsqrt_table[48] = {
    2114695713u, 2053387115u, 1997119227u, 1945237133u, 1897199172u, 1852552937u,
    1810917218u, 1771968208u, 1735428857u, 1701060526u, 1668656406u, 1638036256u,
    1609042172u, 1581535151u, 1555392273u, 1530504391u, 1506774204u, 1484114654u,
    1462447584u, 1441702596u, 1421816090u, 1402730445u, 1384393311u, 1366757007u,
    1349778000u, 1333416450u, 1317635818u, 1302402522u, 1287685637u, 1273456629u,
    1259689126u, 1246358707u, 1233442724u, 1220920139u, 1208771378u, 1196978204u,
    1185523604u, 1174391680u, 1163567563u, 1153037323u, 1142787899u, 1132807028u,
    1123083182u, 1113605518u, 1104363818u, 1095348453u, 1086550331u, 1077960865u,
};

/* Leading zero bits of w > 0, rounded down to an even count (so that the
 * square root of the normalising power of two is a power of two). */
static int32_t k2m_norm_even_clz64(uint64_t w)
{
    int32_t z = 0;
    int32_t step;

    for (step = 32; step >= 2; step >>= 1) {
        if ((w >> (64 - step)) == 0u) {
            w <<= step;
            z += step;
        }
    }
    return z;
}

/* 1 / sqrt(w) for w >= 1 as R / 2^31 * 2^(z/2 - 31), returning R < 2^31
 * and setting *z.  With u = w << z in [2^62, 2^64) and m its top 32 bits,
 * x = m / 2^32 is in [1/4, 1): the table gives 1 / sqrt(x) to 1.6%, two
 * Newton steps r <- r (3 - x r^2) / 2 in Q30 take that to ~2.5e-7 (the
 * steps approach from below, so r never exceeds 2^31 by more than the
 * table's first guess could, and the clamp below only trims x = 1/4). */
static int32_t k2m_norm_rsqrt(uint64_t w, int32_t *z)
{
    const int32_t shift = k2m_norm_even_clz64(w);
    const uint32_t m = (uint32_t)((w << shift) >> 32);
    uint32_t r = k2m_norm_rsqrt_table[(m >> 26) - 16u];
    int32_t i;

    for (i = 0; i < 2; ++i) {
        const uint64_t r2 = ((uint64_t)r * r) >> 30;           /* r^2, Q30 */
        const uint64_t xr2 = ((uint64_t)m * r2) >> 32;         /* x r^2, Q30 */
        const uint64_t three_minus = (3ull << 30) - xr2;       /* x r^2 < 1.04 */
        r = (uint32_t)(((uint64_t)r * three_minus) >> 31);
    }
    *z = shift;
    return r > (uint32_t)INT32_MAX ? INT32_MAX : (int32_t)r;
}

/* floor(x / 2^n), 0 <= n <= 63, defined for negative x (as k2m_asr). */
static inline int64_t k2m_norm_asr64(int64_t x, int32_t n)
{
    return x >= 0 ? (x >> n) : ~((~x) >> n);
}

/* floor(a * b / 2^32): the high word of the 64-bit product (SMULL). */
static inline int32_t k2m_norm_mulhi(int32_t a, int32_t b)
{
    return (int32_t)(uint32_t)((uint64_t)((int64_t)a * b) >> 32);
}

/* floor((a * b + 2^31) / 2^32) (SMMULR).  |a * b| < 2^62 here, so the
 * result fits and the uint64 sum wraps only where the true one is negative. */
static inline int32_t k2m_norm_mulhi_round(int32_t a, int32_t b)
{
#if K2M_DSP
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(uint32_t)(((uint64_t)((int64_t)a * b) + 0x80000000u) >> 32);
#endif
}

static inline int32_t k2m_norm_sat8(int32_t v)
{
#if K2M_DSP
    return __ssat(v, 8);
#else
    return k2m_clamp_s32(v, -128, 127);
#endif
}

/* floor((p + 2^(k-1)) / 2^k) for k > 0, p * 2^-k for k <= 0, saturated
 * to [-2^30, 2^30 - 1].  |p| < 2^55, so k > 62 rounds to 0 like k = 62. */
static inline int32_t k2m_norm_round_shift(int64_t p, int32_t k)
{
    const int64_t top = ((int64_t)1 << 30) - 1;
    int64_t y;

    if (k > 0) {
        k = k > 62 ? 62 : k;
        y = k2m_norm_asr64(p + ((int64_t)1 << (k - 1)), k);
    } else {
        /* anything beyond 2^31 saturates whatever the shift */
        p = p > ((int64_t)1 << 31) ? ((int64_t)1 << 31)
          : (p < -((int64_t)1 << 31) ? -((int64_t)1 << 31) : p);
        y = p * ((int64_t)1 << (-k > 31 ? 31 : -k));
    }
    return (int32_t)(y > top ? top : (y < -top - 1 ? -top - 1 : y));
}

/* s1 = sum of v = q + offset, s2 = sum of v^2 over one group: `rows` runs
 * of `len` contiguous elements, `stride` apart.  Both are exact (k2m.h), so
 * the DSP loop sums q and q^2 and corrects for the offset afterwards. */
static void k2m_norm_sums(const int8_t *x, int32_t rows, int32_t len,
                          int32_t stride, int32_t offset, int32_t *s1,
                          uint32_t *s2)
{
    int32_t sum = 0;
    uint32_t squares = 0;
    int32_t r, i;

    for (r = 0; r < rows; ++r) {
        const int8_t *row = x + r * stride;
        i = 0;
#if K2M_DSP
        {
            int32_t sq = 0, sw = 0;
            for (; i + 4 <= len; i += 4) {
                const int32_t w = k2m_ld32(row + i);
                const int32_t even = __sxtb16(w);
                const int32_t odd = k2m_sxtb16_ror8(w);
                sw = __smlad(even, 0x00010001, sw);
                sw = __smlad(odd, 0x00010001, sw);
                sq = __smlad(even, even, sq);
                sq = __smlad(odd, odd, sq);
            }
            /* |sw| <= 128 n and sq <= 16384 n < 2^31: no overflow */
            sum += sw;
            squares += (uint32_t)sq;
        }
#endif
        for (; i < len; ++i) {
            sum += row[i];
            squares += (uint32_t)(row[i] * row[i]);
        }
    }
    {
        /* sum (q + o)^2 = sum q^2 + 2 o sum q + n o^2, modulo 2^32, which
         * is exact because the true value is below 2^32. */
        const uint32_t n = (uint32_t)rows * (uint32_t)len;
        *s2 = squares + 2u * (uint32_t)offset * (uint32_t)sum
            + n * (uint32_t)offset * (uint32_t)offset;
        *s1 = sum + (int32_t)n * offset;
    }
}

/* One group's constants for the output pass.  The numerator m v - t is
 * computed as scale * q + offset; k2m.h's acc = round(num * c / 2^k) takes
 * one of three forms, all giving its exact value:
 *   k >= 32:    acc = asr(mulhi(num, c) + 2^(k2-1), k2) with k2 = k - 32
 *               (k2 = 0: mulhi_round), since floor(floor(X / 2^32) / 2^k2)
 *               = floor(X / 2^k);
 *   0 < k < 32: num pre-multiplied by 2^(32-k) (scale and offset are) when
 *               that fits in 31 bits, then acc = mulhi_round(num, c);
 *   otherwise:  the 64-bit k2m_norm_round_shift ("general").
 * The first two never reach the 2^30 saturation (|acc| <= 2^29 + 1). */
typedef struct {
    int32_t rsq, k;
    int32_t scale, offset;
    int32_t general, k2;
} k2m_norm_group;

static void k2m_norm_group_init(const k2m_norm_s8_params *p, int32_t n,
                                int32_t s1, uint32_t s2, k2m_norm_group *g)
{
    const int32_t m = p->mode == K2M_NORM_L2 ? 1 : n;
    const int32_t t = p->mode == K2M_NORM_LAYER ? s1 : 0;
    int64_t var, bound;
    uint64_t w;
    int32_t z, pre = 0;

    if (p->mode == K2M_NORM_RMS || p->mode == K2M_NORM_L2) {
        var = (int64_t)m * s2;
    } else {
        var = (int64_t)n * s2 - (int64_t)s1 * s1;
    }
    w = (uint64_t)var << p->eps_bits;
    if (p->mode == K2M_NORM_L2) {
        w = w > p->eps ? w : p->eps;
    } else {
        w += p->eps;
    }
    g->rsq = k2m_norm_rsqrt(w == 0u ? 1u : w, &z);
    g->k = 61 - z / 2 - p->eps_bits / 2 - p->gamma_shift - K2M_NORM_BETA_BITS;
    g->k = g->k > 62 ? 62 : g->k;
    g->k2 = g->k > 32 ? g->k - 32 : 0;
    /* |scale * q| and |offset| are at most 128 m and 128 m + |t| */
    bound = 256 * (int64_t)m + (t < 0 ? -(int64_t)t : t);
    g->general = g->k <= 0;
    if (!g->general && g->k < 32) {
        pre = 32 - g->k;
        g->general = bound * ((int64_t)1 << pre) >= ((int64_t)1 << 31);
    }
    if (g->general) {
        pre = 0;
    }
    g->scale = m * (1 << pre);
    g->offset = (m * p->input_offset - t) * (1 << pre);
}

/* `len` outputs of one run: x, y the run, gm, beta its first parameter,
 * `step` the parameter stride along the run. */
static void k2m_norm_run(const k2m_norm_group *g, const k2m_norm_s8_params *p,
                         const int8_t *x, int8_t *y, int32_t len,
                         const int32_t *gm, const int32_t *beta, int32_t step)
{
    const int32_t out_add = (1 << (K2M_NORM_BETA_BITS - 1))
                          + p->output_offset * (1 << K2M_NORM_BETA_BITS);
    const int32_t lo = p->act_min, hi = p->act_max, rsq = g->rsq;
    const int32_t scale = g->scale, offset = g->offset;
    int32_t i;

    /* int8 saturation here (one SSAT on the M4); a narrower clamp, rare,
     * is a second pass over the run */
#define K2M_NORM_STORE(acc)                                                   \
    y[i] = (int8_t)k2m_norm_sat8(k2m_asr((acc) + beta[i * step] + out_add,   \
                                         K2M_NORM_BETA_BITS))
    if (g->general) {
        for (i = 0; i < len; ++i) {
            const int32_t num = scale * x[i] + offset;
            const int32_t c = k2m_norm_mulhi(rsq, gm[i * step]);
            K2M_NORM_STORE(k2m_norm_round_shift((int64_t)num * c, g->k));
        }
    } else if (g->k2 == 0) {
        for (i = 0; i < len; ++i) {
            const int32_t num = scale * x[i] + offset;
            K2M_NORM_STORE(k2m_norm_mulhi_round(num, k2m_norm_mulhi(rsq, gm[i * step])));
        }
    } else {
        const int32_t k2 = g->k2, half = 1 << (g->k2 - 1);
        for (i = 0; i < len; ++i) {
            const int32_t num = scale * x[i] + offset;
            K2M_NORM_STORE(k2m_asr(k2m_norm_mulhi(num, k2m_norm_mulhi(rsq, gm[i * step])) + half,
                                   k2));
        }
    }
#undef K2M_NORM_STORE
    if (lo > -128 || hi < 127) {
        for (i = 0; i < len; ++i) {
            y[i] = (int8_t)k2m_clamp_s32(y[i], lo, hi);
        }
    }
}

void k2m_norm_s8(const k2m_norm_dims *d, const k2m_norm_s8_params *p,
                 const int8_t *input, int8_t *output)
{
    const int32_t n = d->b * d->d;
    const int32_t stride = d->c * d->d;         /* between runs of one group */
    const int32_t *ps = p->param_stride;
    int32_t a, c, b;

    for (a = 0; a < d->a; ++a) {
        for (c = 0; c < d->c; ++c) {
            const int32_t base = a * d->b * stride + c * d->d;
            k2m_norm_group g;
            int32_t s1;
            uint32_t s2;

            k2m_norm_sums(input + base, d->b, d->d, stride, p->input_offset, &s1, &s2);
            k2m_norm_group_init(p, n, s1, s2, &g);
            for (b = 0; b < d->b; ++b) {
                const int32_t at = base + b * stride;
                const int32_t j = b * ps[0] + c * ps[1];
                k2m_norm_run(&g, p, input + at, output + at, d->d,
                             p->gamma_multiplier + j, p->beta + j, ps[2]);
            }
        }
    }
}
