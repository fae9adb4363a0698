/* k2m runtime: two int8 convolutions and a residual add, streamed row by
 * row (a ResNet basic block: x + conv_b(conv_a(x)); k2m.h).
 *
 * Neither conv's whole output map is stored: conv_a's rows go to a window
 * of conv_b's k_h rows, conv_b writes one output row at a time, and the
 * add writes that row over the block input's row, which no later conv_a
 * row reads (the exporter's planner proves it for the geometry).  Each row
 * is the conv kernel on a window cut to the rows it reads, with the
 * padding they leave, and k2m_add_s8: the same integer arithmetic on the
 * same values as the three layers unfused, so the result is bit-identical.
 */
#include "k2m.h"

#include <string.h>

/* The input rows [*lo, *hi] output row `r` of `g` reads (vertical
 * dilation 1); returns the pad_top of a one-row window over them. */
static int32_t row_span(const k2m_window *g, int32_t r, int32_t *lo, int32_t *hi)
{
    const int32_t first = r * g->stride_h - g->pad_top;
    *lo = first < 0 ? 0 : first;
    *hi = first + g->k_h - 1 < g->in_h - 1 ? first + g->k_h - 1 : g->in_h - 1;
    return *lo - first;
}

/* One output row of `g`, from the rows [lo, hi] at `rows`. */
static void conv_row(const k2m_window *g, const k2m_quant_s8 *q, int32_t r,
                     const int8_t *rows, const int8_t *weights, const int32_t *bias,
                     int8_t *out, int16_t *col)
{
    k2m_window w = *g;
    int32_t lo, hi;
    w.pad_top = row_span(g, r, &lo, &hi);
    w.in_h = hi - lo + 1;
    w.out_h = 1;
    k2m_conv2d_s8(&w, q, rows, weights, bias, out, col);
}

void k2m_conv_pair_add_s8(const k2m_conv_pair_add_s8_params *p, int8_t *x, int8_t *scratch)
{
    const k2m_window *ga = p->a, *gb = p->b;
    const int32_t row_x = ga->in_w * ga->in_c;
    const int32_t row_a = ga->out_w * ga->out_c;
    int8_t *window = scratch;   /* conv_a's rows [have, have + n) */
    int8_t *row_b = window + K2M_ALIGN4(gb->k_h * row_a);
    int16_t *col = (int16_t *)(void *)(row_b + K2M_ALIGN4(row_x));
    int32_t have = 0, n = 0, r;

    for (r = 0; r < gb->out_h; ++r) {
        int32_t lo, hi;
        (void)row_span(gb, r, &lo, &hi);
        if (lo > have) {   /* rows below lo are read by no later output row */
            const int32_t drop = lo - have < n ? lo - have : n;
            memmove(window, window + drop * row_a, (size_t)((n - drop) * row_a));
            n -= drop;
            have = lo;
        }
        for (; have + n <= hi; ++n) {
            int32_t x_lo, x_hi;
            (void)row_span(ga, have + n, &x_lo, &x_hi);
            conv_row(ga, p->qa, have + n, x + x_lo * row_x, p->weights_a, p->bias_a,
                     window + n * row_a, col);
        }
        conv_row(gb, p->qb, r, window + (lo - have) * row_a, p->weights_b, p->bias_b,
                 row_b, col);
        k2m_add_s8(p->add, x + r * row_x, row_b, x + r * row_x, row_x);
    }
}

