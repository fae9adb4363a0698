/* k2m runtime: 3-D convolution and pooling, int8 and float (portable loops).
 *
 * Layout NDHWC without the batch; conv weights (out, kd, kh, kw, in).
 * Padding is explicit per axis; conv taps outside the input are zero,
 * pool taps outside it are excluded, as in 2-D.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <float.h>

/* Taps of one axis that land inside the input, as [begin, end). */
static void tap_range(int32_t start, int32_t size, int32_t k, int32_t dil,
                      int32_t *begin, int32_t *end)
{
    int32_t b = 0, e = k;
    while (b < k && start + b * dil < 0) {
        ++b;
    }
    while (e > b && start + (e - 1) * dil >= size) {
        --e;
    }
    *begin = b;
    *end = e;
}

typedef struct {
    int32_t kz0, kz1, ky0, ky1, kx0, kx1, z0, y0, x0;
} window3d_taps;

static void window3d(const k2m_window3d *g, int32_t oz, int32_t oy, int32_t ox,
                     window3d_taps *t)
{
    t->z0 = oz * g->stride[0] - g->pad[0];
    t->y0 = oy * g->stride[1] - g->pad[1];
    t->x0 = ox * g->stride[2] - g->pad[2];
    tap_range(t->z0, g->in[0], g->k[0], g->dil[0], &t->kz0, &t->kz1);
    tap_range(t->y0, g->in[1], g->k[1], g->dil[1], &t->ky0, &t->ky1);
    tap_range(t->x0, g->in[2], g->k[2], g->dil[2], &t->kx0, &t->kx1);
}

/* Index of input element (z, y, x, c). */
#define IN3(g, z, y, x) ((((z) * (g)->in[1] + (y)) * (g)->in[2] + (x)) * (g)->in_c)

void k2m_conv3d_s8(const k2m_window3d *g, const k2m_quant_s8 *q,
                   const int8_t *input, const int8_t *weights,
                   const int32_t *bias, int8_t *output)
{
    const int32_t kvol = g->k[0] * g->k[1] * g->k[2] * g->in_c;
    int32_t oz, oy, ox, oc, kz, ky, kx, ic;

    for (oz = 0; oz < g->out[0]; ++oz)
    for (oy = 0; oy < g->out[1]; ++oy)
    for (ox = 0; ox < g->out[2]; ++ox) {
        window3d_taps t;
        window3d(g, oz, oy, ox, &t);
        for (oc = 0; oc < g->out_c; ++oc) {
            const int8_t *w = weights + oc * kvol;
            int32_t acc = bias ? bias[oc] : 0;
            for (kz = t.kz0; kz < t.kz1; ++kz)
            for (ky = t.ky0; ky < t.ky1; ++ky)
            for (kx = t.kx0; kx < t.kx1; ++kx) {
                const int8_t *in = input + IN3(g, t.z0 + kz * g->dil[0],
                                               t.y0 + ky * g->dil[1], t.x0 + kx * g->dil[2]);
                const int8_t *wk = w + ((kz * g->k[1] + ky) * g->k[2] + kx) * g->in_c;
                for (ic = 0; ic < g->in_c; ++ic) {
                    acc += (in[ic] + q->input_offset) * wk[ic];
                }
            }
            acc = k2m_requantize(acc, q->multiplier[oc], q->shift[oc]) + q->output_offset;
            *output++ = (int8_t)k2m_clamp_s32(acc, q->act_min, q->act_max);
        }
    }
}

void k2m_conv3d_f32(const k2m_window3d *g, float act_min, float act_max,
                    const float *input, const float *weights, const float *bias,
                    float *output)
{
    const int32_t kvol = g->k[0] * g->k[1] * g->k[2] * g->in_c;
    int32_t oz, oy, ox, oc, kz, ky, kx, ic;

    for (oz = 0; oz < g->out[0]; ++oz)
    for (oy = 0; oy < g->out[1]; ++oy)
    for (ox = 0; ox < g->out[2]; ++ox) {
        window3d_taps t;
        window3d(g, oz, oy, ox, &t);
        for (oc = 0; oc < g->out_c; ++oc) {
            const float *w = weights + oc * kvol;
            float acc = bias ? bias[oc] : 0.0f;
            for (kz = t.kz0; kz < t.kz1; ++kz)
            for (ky = t.ky0; ky < t.ky1; ++ky)
            for (kx = t.kx0; kx < t.kx1; ++kx) {
                const float *in = input + IN3(g, t.z0 + kz * g->dil[0],
                                              t.y0 + ky * g->dil[1], t.x0 + kx * g->dil[2]);
                const float *wk = w + ((kz * g->k[1] + ky) * g->k[2] + kx) * g->in_c;
                for (ic = 0; ic < g->in_c; ++ic) {
                    acc += in[ic] * wk[ic];
                }
            }
            acc = acc < act_min ? act_min : acc;
            *output++ = acc > act_max ? act_max : acc;
        }
    }
}

/* Max (is_max) or average pooling in 3-D; int8 in/out share scale. */
#define POOL3D_BODY(T, INIT, ACC, FINISH)                                     \
    int32_t oz, oy, ox, c, kz, ky, kx;                                        \
    for (oz = 0; oz < g->out[0]; ++oz)                                        \
    for (oy = 0; oy < g->out[1]; ++oy)                                        \
    for (ox = 0; ox < g->out[2]; ++ox) {                                      \
        window3d_taps t;                                                      \
        int32_t count;                                                        \
        window3d(g, oz, oy, ox, &t);                                          \
        count = (t.kz1 - t.kz0) * (t.ky1 - t.ky0) * (t.kx1 - t.kx0);          \
        for (c = 0; c < g->in_c; ++c) {                                       \
            T r = INIT;                                                       \
            for (kz = t.kz0; kz < t.kz1; ++kz)                                \
            for (ky = t.ky0; ky < t.ky1; ++ky)                                \
            for (kx = t.kx0; kx < t.kx1; ++kx) {                              \
                const T v = input[IN3(g, t.z0 + kz * g->dil[0], t.y0 + ky * g->dil[1], \
                                      t.x0 + kx * g->dil[2]) + c];            \
                ACC;                                                          \
            }                                                                 \
            FINISH;                                                           \
        }                                                                     \
    }

static int32_t div_round(int32_t sum, int32_t count)
{
    if (count <= 0) {
        return 0;
    }
    return sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
}

void k2m_max_pool3d_s8(const k2m_window3d *g, int32_t act_min, int32_t act_max,
                       const int8_t *input, int8_t *output)
{
    POOL3D_BODY(int32_t, INT8_MIN, r = v > r ? v : r,
                (void)count; *output++ = (int8_t)k2m_clamp_s32(r, act_min, act_max))
}

void k2m_avg_pool3d_s8(const k2m_window3d *g, int32_t act_min, int32_t act_max,
                       const int8_t *input, int8_t *output)
{
    POOL3D_BODY(int32_t, 0, r += v,
                *output++ = (int8_t)k2m_clamp_s32(div_round(r, count), act_min, act_max))
}

void k2m_max_pool3d_f32(const k2m_window3d *g, float act_min, float act_max,
                        const float *input, float *output)
{
    POOL3D_BODY(float, -FLT_MAX, r = v > r ? v : r,
                (void)count; r = r < act_min ? act_min : r; *output++ = r > act_max ? act_max : r)
}

void k2m_avg_pool3d_f32(const k2m_window3d *g, float act_min, float act_max,
                        const float *input, float *output)
{
    POOL3D_BODY(float, 0.0f, r += v,
                r = count > 0 ? r / (float)count : 0.0f;
                r = r < act_min ? act_min : r; *output++ = r > act_max ? act_max : r)
}
