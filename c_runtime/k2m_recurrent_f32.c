/* k2m runtime: recurrent layers (Keras SimpleRNN, LSTM, GRU), float.
 *
 * Keras's cell arithmetic in float32, one time step at a time: every gate
 * pre-activation of a step is computed from the previous h into scratch
 * before the state is touched, because each row's recurrent dot product
 * reads all of the old h.  Separate from the int8 kernels (k2m_recurrent.c)
 * so that an int8 model links without libm.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <math.h>
#include <stddef.h>

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
        gates_f32(d, p, 0, units, input + k2m_rnn_input_row(d, s) * d->features,
                  state, scratch);
        rnn_act_f32(p->act, scratch, units);
        copy_f32(scratch, state, units);
        if (d->flags & K2M_RNN_SEQUENCES) {
            copy_f32(state, output + k2m_rnn_output_row(d, s) * units, units);
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
        gates_f32(d, p, 0, 4 * units, input + k2m_rnn_input_row(d, s) * d->features,
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
            copy_f32(h, output + k2m_rnn_output_row(d, s) * units, units);
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
        const float *x = input + k2m_rnn_input_row(d, s) * features;
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
            copy_f32(h, output + k2m_rnn_output_row(d, s) * units, units);
        }
    }
    if (!(d->flags & K2M_RNN_SEQUENCES)) {
        copy_f32(h, output, units);
    }
}
