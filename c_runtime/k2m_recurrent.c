/* k2m runtime: recurrent layers (Keras SimpleRNN, LSTM, GRU), float and
 * int8.
 *
 * One time step at a time: every gate pre-activation of a step is computed
 * from the previous h into scratch before the state is touched, because
 * each row's recurrent dot product reads all of the old h.  The float
 * kernels follow Keras's cell arithmetic; the int8 ones keep the state and
 * the gates in int16 and take every nonlinearity from an interpolated
 * 513-entry table, so the target never evaluates a transcendental there.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <math.h>
#include <stddef.h>

/* Input row read and output row written at step s (go_backwards, and the
 * backward half of a Bidirectional layer). */
static inline int32_t input_row(const k2m_rnn_dims *d, int32_t s)
{
    return (d->flags & K2M_RNN_BACKWARDS) ? d->steps - 1 - s : s;
}

static inline int32_t output_row(const k2m_rnn_dims *d, int32_t s)
{
    return (d->flags & K2M_RNN_REVERSE_OUTPUT) ? d->steps - 1 - s : s;
}

/* ---- float ------------------------------------------------------------ */

/* In place over a whole gate: one switch per gate, not per element. */
static void rnn_act_f32(k2m_rnn_act act, float *v, int32_t n)
{
    int32_t i;

    switch (act) {
    case K2M_RNN_TANH:
        for (i = 0; i < n; ++i) {
            v[i] = tanhf(v[i]);
        }
        break;
    case K2M_RNN_SIGMOID:
        /* expf(-x) overflows to +inf for x < -88: 1 / inf is the right 0. */
        for (i = 0; i < n; ++i) {
            v[i] = 1.0f / (1.0f + expf(-v[i]));
        }
        break;
    case K2M_RNN_HARD_SIGMOID:
        /* Keras 3's relu6(x + 3) / 6: divided, as Keras does, because
         * multiplying by a rounded 1/6 can differ in the last bit. */
        for (i = 0; i < n; ++i) {
            float y = v[i] + 3.0f;
            y = y < 0.0f ? 0.0f : y;
            y = y > 6.0f ? 6.0f : y;
            v[i] = y / 6.0f;
        }
        break;
    case K2M_RNN_RELU:
        for (i = 0; i < n; ++i) {
            v[i] = v[i] > 0.0f ? v[i] : 0.0f;
        }
        break;
    case K2M_RNN_LINEAR:
        break;
    }
}

static inline float dot_f32(const float *w, const float *x, int32_t n,
                            float acc)
{
    int32_t k;
    for (k = 0; k < n; ++k) {
        acc += w[k] * x[k];
    }
    return acc;
}

/* pre[r] = bias[r] + kernel[r] . x + recurrent[r] . h for rows
 * [first, first + rows), into pre[0 .. rows). */
static void gates_f32(const k2m_rnn_dims *d, const k2m_rnn_f32_params *p,
                      int32_t first, int32_t rows, const float *x,
                      const float *h, float *pre)
{
    const float *wk = p->kernel + first * d->features;
    const float *wr = p->recurrent + first * d->units;
    int32_t r;

    for (r = 0; r < rows; ++r) {
        const float b = p->bias != NULL ? p->bias[first + r] : 0.0f;
        pre[r] = dot_f32(wr, h, d->units, dot_f32(wk, x, d->features, b));
        wk += d->features;
        wr += d->units;
    }
}

static void copy_f32(const float *from, float *to, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        to[i] = from[i];
    }
}

void k2m_simple_rnn_f32(const k2m_rnn_dims *d, const k2m_rnn_f32_params *p,
                        const float *input, float *output, float *state,
                        float *scratch)
{
    const int32_t units = d->units;
    int32_t s;

    for (s = 0; s < d->steps; ++s) {
        gates_f32(d, p, 0, units, input + input_row(d, s) * d->features,
                  state, scratch);
        rnn_act_f32(p->act, scratch, units);
        copy_f32(scratch, state, units);
        if (d->flags & K2M_RNN_SEQUENCES) {
            copy_f32(state, output + output_row(d, s) * units, units);
        }
    }
    if (!(d->flags & K2M_RNN_SEQUENCES)) {
        copy_f32(state, output, units);
    }
}

void k2m_lstm_f32(const k2m_rnn_dims *d, const k2m_rnn_f32_params *p,
                  const float *input, float *output, float *state,
                  float *scratch)
{
    const int32_t units = d->units;
    float *h = state, *c = state + units;
    float *i_gate = scratch, *f_gate = scratch + units;
    float *g_gate = scratch + 2 * units, *o_gate = scratch + 3 * units;
    int32_t s, u;

    for (s = 0; s < d->steps; ++s) {
        gates_f32(d, p, 0, 4 * units, input + input_row(d, s) * d->features,
                  h, scratch);
        rnn_act_f32(p->recurrent_act, i_gate, 2 * units);  /* i and f */
        rnn_act_f32(p->act, g_gate, units);
        rnn_act_f32(p->recurrent_act, o_gate, units);
        /* g is consumed by c's update, so its slot takes act(c). */
        for (u = 0; u < units; ++u) {
            c[u] = f_gate[u] * c[u] + i_gate[u] * g_gate[u];
            g_gate[u] = c[u];
        }
        rnn_act_f32(p->act, g_gate, units);
        for (u = 0; u < units; ++u) {
            h[u] = o_gate[u] * g_gate[u];
        }
        if (d->flags & K2M_RNN_SEQUENCES) {
            copy_f32(h, output + output_row(d, s) * units, units);
        }
    }
    if (!(d->flags & K2M_RNN_SEQUENCES)) {
        copy_f32(h, output, units);
    }
}

void k2m_gru_f32(const k2m_rnn_dims *d, const k2m_rnn_f32_params *p,
                 const float *input, float *output, float *state,
                 float *scratch)
{
    const int32_t units = d->units, features = d->features;
    const int32_t reset_after = (d->flags & K2M_GRU_RESET_AFTER) != 0;
    /* reset_after keeps Keras's two biases: input, then recurrent. */
    const float *rec_bias = (reset_after && p->bias != NULL)
        ? p->bias + 3 * units : NULL;
    float *h = state;
    float *z = scratch, *r = scratch + units;
    float *hh = scratch + 2 * units, *rh = scratch + 3 * units;
    int32_t s, u;

    for (s = 0; s < d->steps; ++s) {
        const float *x = input + input_row(d, s) * features;
        const float *wk = p->kernel + 2 * units * features;
        const float *wr = p->recurrent + 2 * units * units;

        gates_f32(d, p, 0, 2 * units, x, h, scratch);
        if (rec_bias != NULL) {
            for (u = 0; u < 2 * units; ++u) {
                scratch[u] += rec_bias[u];
            }
        }
        rnn_act_f32(p->recurrent_act, scratch, 2 * units);  /* z and r */
        if (reset_after) {
            for (u = 0; u < units; ++u) {
                const float b = p->bias != NULL ? p->bias[2 * units + u] : 0.0f;
                const float rb = rec_bias != NULL ? rec_bias[2 * units + u] : 0.0f;
                hh[u] = dot_f32(wk, x, features, b)
                        + r[u] * dot_f32(wr, h, units, rb);
                wk += features;
                wr += units;
            }
        } else {
            /* Every candidate row reads all of r * h. */
            for (u = 0; u < units; ++u) {
                rh[u] = r[u] * h[u];
            }
            for (u = 0; u < units; ++u) {
                const float b = p->bias != NULL ? p->bias[2 * units + u] : 0.0f;
                hh[u] = dot_f32(wr, rh, units, dot_f32(wk, x, features, b));
                wk += features;
                wr += units;
            }
        }
        rnn_act_f32(p->act, hh, units);
        for (u = 0; u < units; ++u) {
            h[u] = z[u] * h[u] + (1.0f - z[u]) * hh[u];
        }
        if (d->flags & K2M_RNN_SEQUENCES) {
            copy_f32(h, output + output_row(d, s) * units, units);
        }
    }
    if (!(d->flags & K2M_RNN_SEQUENCES)) {
        copy_f32(h, output, units);
    }
}

/* ---- int8 --------------------------------------------------------------- */

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

static inline int32_t rq(int32_t v, const k2m_scale *s)
{
    return k2m_requantize(v, s->multiplier, s->shift);
}

static inline int32_t dot_s8(const int8_t *w, const int8_t *x, int32_t n,
                             int32_t acc)
{
    int32_t k;
    for (k = 0; k < n; ++k) {
        acc += (int32_t)w[k] * (int32_t)x[k];
    }
    return acc;
}

/* units <= 512 (the exporter's limit) keeps this inside int32:
 * 512 * 127 * 32768 < 2^31. */
static inline int32_t dot_s16(const int8_t *w, const int16_t *h, int32_t n,
                              int32_t acc)
{
    int32_t k;
    for (k = 0; k < n; ++k) {
        acc += (int32_t)w[k] * (int32_t)h[k];
    }
    return acc;
}

/* Row r's input term rq(bias[r] + kernel[r] . x, kernel_scale[r]). */
static inline int32_t input_term_s8(const k2m_rnn_weights_s8 *w, int32_t r,
                                    int32_t features, const int8_t *x)
{
    const int32_t b = w->bias != NULL ? w->bias[r] : 0;
    return k2m_requantize(dot_s8(w->kernel + r * features, x, features, b),
                          w->kernel_multiplier[r], w->kernel_shift[r]);
}

/* Row r's recurrent term rq(acc + recurrent[r] . h, recurrent_scale[r]). */
static inline int32_t recurrent_term_s8(const k2m_rnn_weights_s8 *w,
                                        int32_t r, int32_t units,
                                        const int16_t *h, int32_t acc)
{
    return k2m_requantize(dot_s16(w->recurrent + r * units, h, units, acc),
                          w->recurrent_multiplier[r], w->recurrent_shift[r]);
}

/* out[j] = lut16(pre of row first + j, lut) for j in [0, rows). */
static void gates_s8(const k2m_rnn_weights_s8 *w, int32_t first, int32_t rows,
                     int32_t features, int32_t units, const int8_t *x,
                     const int16_t *h, const int16_t *lut, int16_t *out)
{
    int32_t j;

    for (j = 0; j < rows; ++j) {
        const int32_t r = first + j;
        const int32_t pre = k2m_sat16(input_term_s8(w, r, features, x)
                                      + recurrent_term_s8(w, r, units, h, 0));
        out[j] = (int16_t)k2m_lut16(pre, lut);
    }
}

/* y = clamp(rq(h, h_to_output) + output_offset) for one row of h. */
static void store_h_s8(const int16_t *h, int32_t units, const k2m_scale *sc,
                       int32_t output_offset, int8_t *y)
{
    int32_t u;
    for (u = 0; u < units; ++u) {
        y[u] = (int8_t)k2m_clamp_s32(rq(h[u], sc) + output_offset, -128, 127);
    }
}

void k2m_simple_rnn_s8(const k2m_rnn_dims *d, const k2m_simple_rnn_s8_params *p,
                       const int8_t *input, int8_t *output, int16_t *state,
                       int16_t *scratch)
{
    const int32_t units = d->units;
    int32_t s, u;

    for (s = 0; s < d->steps; ++s) {
        gates_s8(&p->w, 0, units, d->features, units,
                 input + input_row(d, s) * d->features, state, p->act_lut,
                 scratch);
        for (u = 0; u < units; ++u) {
            state[u] = scratch[u];
        }
        if (d->flags & K2M_RNN_SEQUENCES) {
            store_h_s8(state, units, &p->h_to_output, p->output_offset,
                       output + output_row(d, s) * units);
        }
    }
    if (!(d->flags & K2M_RNN_SEQUENCES)) {
        store_h_s8(state, units, &p->h_to_output, p->output_offset, output);
    }
}

void k2m_lstm_s8(const k2m_rnn_dims *d, const k2m_lstm_s8_params *p,
                 const int8_t *input, int8_t *output, int16_t *state,
                 int16_t *scratch)
{
    const int32_t units = d->units;
    int16_t *h = state, *c = state + units;
    const int16_t *i_gate = scratch, *f_gate = scratch + units;
    const int16_t *g_gate = scratch + 2 * units, *o_gate = scratch + 3 * units;
    int32_t s, g, u;

    for (s = 0; s < d->steps; ++s) {
        const int8_t *x = input + input_row(d, s) * d->features;
        for (g = 0; g < 4; ++g) {
            gates_s8(&p->w, g * units, units, d->features, units, x, h,
                     p->gate_lut[g], scratch + g * units);
        }
        /* Products of two int16 values fit in int32 (|.| <= 2^30). */
        for (u = 0; u < units; ++u) {
            const int32_t cu = k2m_sat16(
                rq((int32_t)f_gate[u] * c[u], &p->forget)
                + rq((int32_t)i_gate[u] * g_gate[u], &p->input));
            c[u] = (int16_t)cu;
            h[u] = (int16_t)k2m_sat16(
                rq((int32_t)o_gate[u] * k2m_lut16(cu, p->cell_lut),
                   &p->output_gate));
        }
        if (d->flags & K2M_RNN_SEQUENCES) {
            store_h_s8(h, units, &p->h_to_output, p->output_offset,
                       output + output_row(d, s) * units);
        }
    }
    if (!(d->flags & K2M_RNN_SEQUENCES)) {
        store_h_s8(h, units, &p->h_to_output, p->output_offset, output);
    }
}

void k2m_gru_s8(const k2m_rnn_dims *d, const k2m_gru_s8_params *p,
                const int8_t *input, int8_t *output, int16_t *state,
                int16_t *scratch)
{
    const k2m_rnn_weights_s8 *w = &p->w;
    const int32_t units = d->units, features = d->features;
    const int32_t reset_after = (d->flags & K2M_GRU_RESET_AFTER) != 0;
    int16_t *h = state;
    int16_t *z = scratch, *r = scratch + units;
    int16_t *hh = scratch + 2 * units, *rh = scratch + 3 * units;
    int32_t s, u;

    for (s = 0; s < d->steps; ++s) {
        const int8_t *x = input + input_row(d, s) * features;

        gates_s8(w, 0, units, features, units, x, h, p->gate_lut[0], z);
        gates_s8(w, units, units, features, units, x, h, p->gate_lut[1], r);
        if (reset_after) {
            for (u = 0; u < units; ++u) {
                const int32_t row = 2 * units + u;
                const int32_t rb = w->recurrent_bias != NULL
                    ? w->recurrent_bias[row] : 0;
                const int32_t a = k2m_sat16(input_term_s8(w, row, features, x));
                const int32_t q = k2m_sat16(
                    recurrent_term_s8(w, row, units, h, rb));
                hh[u] = (int16_t)k2m_lut16(
                    k2m_sat16(a + rq((int32_t)r[u] * q, &p->reset)),
                    p->gate_lut[2]);
            }
        } else {
            /* Every candidate row reads all of r * h. */
            for (u = 0; u < units; ++u) {
                rh[u] = (int16_t)k2m_sat16(rq((int32_t)r[u] * h[u], &p->reset));
            }
            for (u = 0; u < units; ++u) {
                const int32_t row = 2 * units + u;
                hh[u] = (int16_t)k2m_lut16(
                    k2m_sat16(input_term_s8(w, row, features, x)
                              + recurrent_term_s8(w, row, units, rh, 0)),
                    p->gate_lut[2]);
            }
        }
        /* one - z spans up to 2^16 and hh at most 2^15: the product still
         * fits in int32. */
        for (u = 0; u < units; ++u) {
            h[u] = (int16_t)k2m_sat16(
                rq((int32_t)z[u] * h[u], &p->keep)
                + rq((p->one - z[u]) * (int32_t)hh[u], &p->update));
        }
        if (d->flags & K2M_RNN_SEQUENCES) {
            store_h_s8(h, units, &p->h_to_output, p->output_offset,
                       output + output_row(d, s) * units);
        }
    }
    if (!(d->flags & K2M_RNN_SEQUENCES)) {
        store_h_s8(h, units, &p->h_to_output, p->output_offset, output);
    }
}
