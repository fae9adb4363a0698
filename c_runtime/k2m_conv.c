/* k2m runtime: 2-D convolution (Keras Conv1D/Conv2D): int8 -> int8,
 * int8 -> int16 and float.
 *
 * Cross-correlation as Keras computes it (no kernel flip), NHWC input,
 * OHWI weights.  Taps that fall in the padding are skipped rather than
 * multiplied by a materialised zero: for int8 that zero is the real value 0,
 * i.e. (q + input_offset) == 0, so skipping is exact.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <stddef.h>

#if !K2M_DSP
/* The int8-input loop behind k2m_conv2d_s8 and k2m_conv2d_s8_s16: they
 * differ only in the width of the stored output element, so that is the
 * one branch (per output element, outside the MAC loops). */
static void conv2d_s8_core(const k2m_window *g, const k2m_quant_s8 *q,
                           const int8_t *input, const int8_t *weights,
                           const int32_t *bias, void *output,
                           int out_is_16bit, int32_t *sums)
{
    const int32_t in_w = g->in_w, in_c = g->in_c;
    const int32_t k_h = g->k_h, k_w = g->k_w;
    const int32_t dil_h = g->dil_h, dil_w = g->dil_w;
    const int32_t out_c = g->out_c;
    const int32_t input_offset = q->input_offset;
    /* Stride between consecutive taps, in input elements. */
    const int32_t tap_step_y = dil_h * in_w * in_c;
    const int32_t tap_step_x = dil_w * in_c;
    const int32_t w_row = k_w * in_c;
    const int32_t w_filter = k_h * w_row;
    int32_t n = 0;  /* index of the next output element */
    int32_t oy, ox, oc;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        int32_t ky0, ky1;
        k2m_tap_range(y0, g->in_h, k_h, dil_h, &ky0, &ky1);

        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            int32_t kx0, kx1;
            /* First valid tap of this window; the loops below only walk
             * pointers from here. */
            const int8_t *in_base;
            k2m_tap_range(x0, in_w, k_w, dil_w, &kx0, &kx1);
            /* An empty window (all taps in the padding) leaves in_base
             * unused; it must still not point outside the array. */
            in_base = (ky0 < ky1 && kx0 < kx1)
                ? input + ((y0 + ky0 * dil_h) * in_w + (x0 + kx0 * dil_w)) * in_c
                : input;

            for (oc = 0; oc < out_c; ++oc) {
                const int8_t *w_base = weights + oc * w_filter + ky0 * w_row + kx0 * in_c;
                int32_t acc = bias != NULL ? bias[oc] : 0;
                int32_t ky, kx, ic;

                for (ky = ky0; ky < ky1; ++ky) {
                    const int8_t *in_px = in_base + (ky - ky0) * tap_step_y;
                    const int8_t *w_px = w_base + (ky - ky0) * w_row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        for (ic = 0; ic < in_c; ++ic) {
                            acc += ((int32_t)in_px[ic] + input_offset) * (int32_t)w_px[ic];
                        }
                        in_px += tap_step_x;
                        w_px += in_c;
                    }
                }
                acc = k2m_requantize(acc, q->multiplier[oc], q->shift[oc]);
                acc += q->output_offset;
                acc = k2m_clamp_s32(acc, q->act_min, q->act_max);
                if (sums != NULL) {
                    sums[oc] += acc;  /* pooled: the map is not stored */
                } else {
                    k2m_store_s8_s16(output, n++, acc, out_is_16bit);
                }
            }
        }
    }
}

#endif /* !K2M_DSP: the portable reference loop */

#if K2M_DSP
/* ---- Cortex-M4 DSP path (SMLAD) ----------------------------------------
 * CMSIS-NN's scheme: the windows of two output pixels are unrolled
 * ("im2col") into int16 columns in the caller's scratch buffer, with the
 * input offset added and real zeros for the padding, then 2 output channels
 * x 2 pixels are accumulated together, each pair of loaded weights and
 * column values feeding two SMLADs.  The accumulation is exact int32 as in
 * the portable loop; only the order of the additions differs.
 *
 * Column layout (K = k_h * k_w * in_c, K4 = K rounded down to a multiple
 * of 4, r = K - K4; 2 K int16 in all, the scratch size of k2m.h): for each
 * group of 4 column elements x0..x3, pixel A's group then pixel B's, each
 * stored as x0, x2, x1, x3 - the order SXTB16 / SXTB16 ROR #8 unpack 4
 * weight bytes in, so no repacking is needed in the MAC loop; then the r
 * leftover elements of A, then those of B, in natural order. */

/* ---- requantization, fast form --------------------------------------
 * k2m_rqs (k2m_math.h): five instructions an output, left-shifted and
 * dead (multiplier 0) channels included, when the layer's accumulators are
 * small enough for every channel (conv_fast_rq_ok, checked once per call
 * from the bias, K and the input offset); otherwise k2m_rq_apply. */
static int conv_fast_rq_ok(const k2m_quant_s8 *q, const int32_t *bias,
                           int32_t out_c, int32_t k)
{
    int32_t c;

    if (k > (1 << 20)) {
        return 0;
    }
    for (c = 0; c < out_c; ++c) {
        k2m_rqs r;
        if (!k2m_rqs_init(&r, q->multiplier[c], q->shift[c], q->output_offset,
                          k2m_acc_bound(bias != NULL ? bias[c] : 0, k, q->input_offset))) {
            return 0;
        }
    }
    return 1;
}

/* ---- im2col ------------------------------------------------------------
 * The window of one pixel is a sequence of K values; it is written as a
 * stream into the column layout above: whole groups of 4 from 4 input
 * bytes at a time (one LDR, two SXTAB16 adding the offset per int16 lane:
 * |q + offset| <= 255 fits), single elements only where a kernel row or
 * tap does not start on a group boundary or for the leftovers. */
typedef struct {
    int16_t *grp;   /* this pixel's half of the current group */
    int16_t *tail;  /* this pixel's leftovers */
    int32_t pos;    /* element index within the current group */
    int32_t j;      /* element index in the window */
    int32_t k4;
    int32_t off2;   /* input offset in both int16 lanes */
    int32_t input_offset;
} col_stream;

static inline void col_put(col_stream *s, int32_t v)
{
    if (s->j < s->k4) {
        /* x0, x2, x1, x3 */
        s->grp[((s->pos & 1) << 1) | (s->pos >> 1)] = (int16_t)v;
        if (++s->pos == 4) {
            s->pos = 0;
            s->grp += 8;
        }
    } else {
        s->tail[s->j - s->k4] = (int16_t)v;
    }
    ++s->j;
}

/* n input values from src, or n zeros when src is NULL. */
static inline void col_seg(col_stream *s, const int8_t *src, int32_t n)
{
    while (n > 0 && s->pos != 0) {
        col_put(s, src != NULL ? (int32_t)*src++ + s->input_offset : 0);
        --n;
    }
    if (n >= 4 && s->j + 4 <= s->k4) {
        int32_t words = n >> 2;
        const int32_t room = (s->k4 - s->j) >> 2;
        int16_t *d = s->grp;
        words = words < room ? words : room;
        s->j += words << 2;
        n -= words << 2;
        if (src != NULL) {
            const int32_t off2 = s->off2;
            for (; words > 0; --words) {
                const int32_t v = k2m_ld32(src);
                k2m_st32(d, __sxtab16(off2, v));
                k2m_st32(d + 2, k2m_sxtab16_ror8(off2, v));
                src += 4;
                d += 8;
            }
        } else {
            for (; words > 0; --words) {
                k2m_st32(d, 0);
                k2m_st32(d + 2, 0);
                d += 8;
            }
        }
        s->grp = d;
    }
    for (; n > 0; --n) {
        col_put(s, src != NULL ? (int32_t)*src++ + s->input_offset : 0);
    }
}

/* Widens n4 groups of 4 input bytes (offset added) into the column. */
static inline int16_t *col_words(int16_t *d, const int8_t *src, int32_t n4,
                                 int32_t off2)
{
    for (; n4 > 0; --n4) {
        const int32_t v = k2m_ld32(src);
        k2m_st32(d, __sxtab16(off2, v));
        k2m_st32(d + 2, k2m_sxtab16_ror8(off2, v));
        src += 4;
        d += 8;
    }
    return d;
}

/* Kernel rows that are only partly inside the input (dil_w == 1) are
 * first copied into a small buffer with the padding taps set to
 * -input_offset (so that q + input_offset is the padding's real 0), then
 * widened like whole rows. */
#define K2M_CONV_ROW_BUF 64
#define K2M_CONV_WIN_BUF 64  /* whole windows gathered up to this K */

/* im2col of output pixel (oy, ox) into half `sel` of `col` for layers
 * whose kernel rows do not fill whole groups (a first layer's k_w * 3
 * channels; conv_gather_ok): the window's bytes gathered in order, padding
 * as -input_offset, then widened a word at a time. */
static int conv_gather_ok(const k2m_window *g, int32_t input_offset)
{
    return ((g->k_w * g->in_c) & 3) != 0 && g->dil_w == 1
        && g->k_h * g->k_w * g->in_c <= K2M_CONV_WIN_BUF
        && input_offset >= -127 && input_offset <= 128;
}

static void im2col_gather(const k2m_window *g, const int8_t *input,
                          int32_t input_offset, int32_t oy, int32_t ox,
                          int32_t sel, int16_t *col)
{
    const int32_t in_h = g->in_h, in_w = g->in_w, in_c = g->in_c, k_w = g->k_w;
    const int32_t y0 = oy * g->stride_h - g->pad_top;
    const int32_t x0 = ox * g->stride_w - g->pad_left;
    const int32_t row_len = k_w * in_c, k = g->k_h * row_len, k4 = k & ~3, r = k - k4;
    const int32_t pad4 = (int32_t)(((uint32_t)-input_offset & 0xFFu) * 0x01010101u);
    const int row_whole = x0 >= 0 && x0 + k_w <= in_w;
    int8_t win[K2M_CONV_WIN_BUF];
    int8_t *wp = win;
    int16_t *tail = col + (k4 << 1) + sel * r;
    int32_t kx0 = 0, kx1 = k_w, ky, i;

    if (!row_whole) {
        k2m_tap_range(x0, in_w, k_w, 1, &kx0, &kx1);
    }
    for (ky = 0; ky < g->k_h; ++ky, wp += row_len) {
        const int32_t y = y0 + ky * g->dil_h;
        const int8_t *src = input + (y * in_w + x0) * in_c;
        if (y >= 0 && y < in_h && row_whole) {
            /* whole words, then the 1-3 last bytes; the empty asm keeps
             * gcc from making the copy a memcpy call, dearer than these
             * few bytes */
            for (i = 0; i + 4 <= row_len; i += 4) {
                k2m_st32(wp + i, k2m_ld32(src + i));
                __asm__ volatile("" ::: "memory");
            }
            if (row_len & 2) {
                wp[i] = src[i];
                wp[i + 1] = src[i + 1];
                i += 2;
            }
            if (row_len & 1) {
                wp[i] = src[i];
            }
        } else if (y >= 0 && y < in_h) {
            /* one loop, not a fill and a copy (which gcc would make
             * memset and memcpy calls) */
            const int32_t from = kx0 * in_c, to = kx1 * in_c;
            for (i = 0; i < row_len; ++i) {
                wp[i] = i >= from && i < to ? src[i] : (int8_t)pad4;
            }
        } else {
            for (i = 0; i + 4 <= row_len; i += 4) {
                k2m_st32(wp + i, pad4);
            }
            for (; i < row_len; ++i) {
                wp[i] = (int8_t)pad4;
            }
        }
    }
    col_words(col + (sel << 2), win, k4 >> 2,
              (int32_t)(((uint32_t)input_offset & 0xFFFFu) | ((uint32_t)input_offset << 16)));
    for (i = 0; i < r; ++i) {
        tail[i] = (int16_t)(win[k4 + i] + input_offset);
    }
}

/* im2col of output pixel (oy, ox) into half `sel` of `col`. */
static void im2col_s8(const k2m_window *g, const int8_t *input,
                      int32_t input_offset, int32_t oy, int32_t ox,
                      int32_t sel, int16_t *col)
{
    const int32_t in_h = g->in_h, in_w = g->in_w, in_c = g->in_c;
    const int32_t k_h = g->k_h, k_w = g->k_w;
    const int32_t y0 = oy * g->stride_h - g->pad_top;
    const int32_t x0 = ox * g->stride_w - g->pad_left;
    const int32_t row_len = k_w * in_c;
    const int32_t k = k_h * row_len;
    const int32_t k4 = k & ~3, r = k - k4;
    const int32_t off2 = (int32_t)(((uint32_t)input_offset & 0xFFFFu)
                                   | ((uint32_t)input_offset << 16));
    /* The whole kernel row lies inside the input and is contiguous. */
    const int row_whole = g->dil_w == 1 && x0 >= 0 && x0 + k_w <= in_w;
    /* Partly inside: through the padded row buffer. */
    const int use_buf = !row_whole && g->dil_w == 1
        && row_len <= K2M_CONV_ROW_BUF
        && input_offset >= -127 && input_offset <= 128;
    int8_t buf[K2M_CONV_ROW_BUF];
    int32_t kx0 = 0, kx1 = 0, ky, kx, i;
    col_stream s;

    if (use_buf) {
        k2m_tap_range(x0, in_w, k_w, 1, &kx0, &kx1);
        for (i = 0; i < row_len; ++i) {
            buf[i] = (int8_t)-input_offset;
        }
    }
    if ((row_len & 3) == 0 && (row_whole || use_buf)) {
        /* Every row is whole groups. */
        int16_t *d = col + (sel << 2);
        for (ky = 0; ky < k_h; ++ky) {
            const int32_t y = y0 + ky * g->dil_h;
            if (y < 0 || y >= in_h) {
                for (i = row_len >> 2; i > 0; --i) {
                    k2m_st32(d, 0);
                    k2m_st32(d + 2, 0);
                    d += 8;
                }
            } else if (row_whole) {
                d = col_words(d, input + (y * in_w + x0) * in_c,
                              row_len >> 2, off2);
            } else {
                const int8_t *src = input + (y * in_w + x0 + kx0) * in_c;
                for (i = kx0 * in_c; i < kx1 * in_c; ++i) {
                    buf[i] = *src++;
                }
                d = col_words(d, buf, row_len >> 2, off2);
            }
        }
        return;
    }

    s.grp = col + (sel << 2);
    s.tail = col + (k4 << 1) + sel * r;
    s.pos = 0;
    s.j = 0;
    s.k4 = k4;
    s.off2 = off2;
    s.input_offset = input_offset;

    for (ky = 0; ky < k_h; ++ky) {
        const int32_t y = y0 + ky * g->dil_h;
        if (y < 0 || y >= in_h) {
            col_seg(&s, NULL, row_len);
        } else if (row_whole) {
            col_seg(&s, input + (y * in_w + x0) * in_c, row_len);
        } else if (use_buf) {
            const int8_t *src = input + (y * in_w + x0 + kx0) * in_c;
            for (i = kx0 * in_c; i < kx1 * in_c; ++i) {
                buf[i] = *src++;
            }
            col_seg(&s, buf, row_len);
        } else {
            for (kx = 0; kx < k_w; ++kx) {
                const int32_t x = x0 + kx * g->dil_w;
                col_seg(&s, x >= 0 && x < in_w
                            ? input + (y * in_w + x) * in_c : NULL, in_c);
            }
        }
    }
}

/* ---- MAC loops ---------------------------------------------------------- */
#if defined(__OPTIMIZE__)
/* One group = 16 MACs in 18 instructions: four LDR of the column words
 * (pixel A's x0x2, x1x3, then B's) and one of channel A's 4 weights back to
 * back (pipelined: 6 cycles, where LDM and LDR take 7), per channel two
 * SXTB16 and 4 SMLAD.  14 registers; the loop counter lives in LR
 * (clobbered). */
#define K2M_GROUP_ASM                                                       \
    "ldr    %[x1], [%[c], #4]\n\t"                                          \
    "ldr    %[x2], [%[c], #8]\n\t"                                          \
    "ldr    %[x3], [%[c], #12]\n\t"                                         \
    "ldr    %[x0], [%[c]], #16\n\t"                                         \
    "ldr    %[w], [%[wa]], #4\n\t"                                          \
    "sxtb16 %[wl], %[w]\n\t"                                                \
    "sxtb16 %[w], %[w], ror #8\n\t"                                         \
    "smlad  %[a0], %[wl], %[x0], %[a0]\n\t"                                 \
    "smlad  %[a0], %[w], %[x1], %[a0]\n\t"                                  \
    "smlad  %[a1], %[wl], %[x2], %[a1]\n\t"                                 \
    "smlad  %[a1], %[w], %[x3], %[a1]\n\t"                                  \
    "ldr    %[w], [%[wb]], #4\n\t"                                          \
    "sxtb16 %[wl], %[w]\n\t"                                                \
    "sxtb16 %[w], %[w], ror #8\n\t"                                         \
    "smlad  %[b0], %[wl], %[x0], %[b0]\n\t"                                 \
    "smlad  %[b0], %[w], %[x1], %[b0]\n\t"                                  \
    "smlad  %[b1], %[wl], %[x2], %[b1]\n\t"                                 \
    "smlad  %[b1], %[w], %[x3], %[b1]\n\t"
#define K2M_GROUP_OPS                                                       \
    : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1),           \
      [wa] "+r"(wa), [wb] "+r"(wb), [c] "+r"(c), [w] "=&r"(w),              \
      [wl] "+r"(wl), [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2),        \
      [x3] "=&r"(x3)
#endif

/* 2 channels (weights wa, wb) x 2 pixels (the whole column pair):
 * acc[0] = (wa, A), acc[1] = (wa, B), acc[2] = (wb, A), acc[3] = (wb, B). */
static __attribute__((noinline))
void mac_2x2(const int16_t *col, const int8_t *wa, const int8_t *wb,
             int32_t k, int32_t *acc)
{
    const int32_t k4 = k & ~3, r = k - k4;
    const int16_t *c = col;
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    int32_t n = k4 >> 2;  /* groups of 4 column elements */
    int32_t t;

#if defined(__OPTIMIZE__)
    {
        int32_t x0, x1, x2, x3, w, wl = n;
        if (n > 0) {
            __asm__ volatile(
                "adds   lr, %[wl], #1\n\t"
                "lsrs   lr, lr, #1\n\t"   /* (n + 1) / 2 iterations */
                "bcc    2f\n"             /* n odd: enter at the second group */
                "1:\n\t"
                K2M_GROUP_ASM
                "2:\n\t"
                K2M_GROUP_ASM
                "subs   lr, lr, #1\n\t"
                "bne    1b\n\t"
                K2M_GROUP_OPS
                : : "cc", "memory", "lr");
        }
    }
#else
    /* Unoptimised builds (-O0 keeps a frame pointer and cannot give the
     * assembly its registers): the same arithmetic with intrinsics. */
    for (; n > 0; --n) {
        const int32_t wa4 = k2m_ld32(wa), wb4 = k2m_ld32(wb);
        const int32_t wa02 = __sxtb16(wa4), wa13 = k2m_sxtb16_ror8(wa4);
        const int32_t wb02 = __sxtb16(wb4), wb13 = k2m_sxtb16_ror8(wb4);
        const int32_t ca02 = k2m_ld32(c), ca13 = k2m_ld32(c + 2);
        const int32_t cb02 = k2m_ld32(c + 4), cb13 = k2m_ld32(c + 6);
        a0 = __smlad(wa13, ca13, __smlad(wa02, ca02, a0));
        a1 = __smlad(wa13, cb13, __smlad(wa02, cb02, a1));
        b0 = __smlad(wb13, ca13, __smlad(wb02, ca02, b0));
        b1 = __smlad(wb13, cb13, __smlad(wb02, cb02, b1));
        wa += 4;
        wb += 4;
        c += 8;
    }
#endif
    for (t = 0; t < r; ++t) {
        const int32_t xa = c[t], xb = c[r + t];
        a0 += (int32_t)wa[t] * xa;
        a1 += (int32_t)wa[t] * xb;
        b0 += (int32_t)wb[t] * xa;
        b1 += (int32_t)wb[t] * xb;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

/* 1 channel x 1 pixel (`sel`) of the column pair: the odd leftovers. */
static int32_t mac_1x1(const int16_t *col, int32_t sel, const int8_t *w,
                       int32_t k, int32_t acc)
{
    const int32_t k4 = k & ~3, r = k - k4;
    const int16_t *c = col + (sel << 2);
    int32_t i, t;

    for (i = 0; i < k4; i += 4) {
        const int32_t w4 = k2m_ld32(w + i);
        acc = __smlad(__sxtb16(w4), k2m_ld32(c), acc);
        acc = __smlad(k2m_sxtb16_ror8(w4), k2m_ld32(c + 2), acc);
        c += 8;
    }
    c = col + (k4 << 1) + sel * r;
    for (t = 0; t < r; ++t) {
        acc += (int32_t)w[k4 + t] * c[t];
    }
    return acc;
}

/* Requantized, offset and clamped output of channel c (slow or fast). */
static int32_t conv_out_one(const k2m_quant_s8 *q, int fast, int32_t c,
                            int32_t acc)
{
    int32_t v;
    if (fast) {
        k2m_rqs rc;
        (void)k2m_rqs_init(&rc, q->multiplier[c], q->shift[c], q->output_offset, 0);
        v = k2m_rqs_apply(&rc, acc);
    } else {
        k2m_rq rc;
        k2m_rq_init(&rc, q->multiplier[c], q->shift[c]);
        v = k2m_rq_apply(&rc, acc) + q->output_offset;
    }
    return k2m_clamp_s32(v, q->act_min, q->act_max);
}

/* ---- the fast block loop -------------------------------------------------
 * All channel pairs of one pixel pair, for layers that pass
 * conv_fast_rq_ok: the MAC loop (two groups per iteration, an odd group
 * count entering at the second), then per channel the five-instruction
 * requantization, the clamp of two outputs at once as int16 lanes (SSAT
 * to 16 bits, PKHBT, SSUB16 / SEL against lo and hi in both lanes; SSAT
 * alone for the whole int8 range), and the stores (int16: the packed word
 * as it is). */
typedef struct {
    const int8_t *weights;
    const int32_t *bias, *mult, *shift;
    int32_t k, out_c, out_off, lo2, hi2, sat, out16;
} conv_ctx;

static __attribute__((noinline))
void conv_pairs_fast(const conv_ctx *x, const int16_t *col, void *out0, void *out1)
{
    const int32_t k = x->k, n = k >> 2, r = k & 3;
    const int32_t lo2 = x->lo2, hi2 = x->hi2, sat = x->sat, out16 = x->out16;
    /* ho = 2^e + out_off * 2^(e+1) = (1 + 2 out_off) << e */
    const uint32_t ho1 = 1u + ((uint32_t)x->out_off << 1);
    const int32_t *bp = x->bias, *mp = x->mult, *sp = x->shift;
    const int32_t *const m_end = mp + (x->out_c & ~1);
    const int8_t *wa = x->weights;
    int8_t *o0 = (int8_t *)out0, *o1 = (int8_t *)out1;

    do {
        const int8_t *wb = wa + k;
        const int16_t *c = col;
        int32_t a0, a1, b0, b1, t;
        if (bp != NULL) {
            a0 = a1 = bp[0];
            b0 = b1 = bp[1];
            bp += 2;
        } else {
            a0 = a1 = b0 = b1 = 0;
        }
#if defined(__OPTIMIZE__)
        if (n > 0) {
            int32_t x0, x1, x2, x3, w, wl = n;
            __asm__ volatile(
                /* four groups an iteration, (n + 3) / 4 iterations; the
                 * first enters (TBB) where n % 4 groups are left */
                "adds   lr, %[wl], #3\n\t"
                "lsrs   lr, lr, #2\n\t"
                "and    %[wl], %[wl], #3\n\t"
                "tbb    [pc, %[wl]]\n"
                "0:\n\t"
                ".byte  (4f - 0b) / 2, (1f - 0b) / 2, (2f - 0b) / 2, (3f - 0b) / 2\n"
                "4:\n\t"
                K2M_GROUP_ASM
                "3:\n\t"
                K2M_GROUP_ASM
                "2:\n\t"
                K2M_GROUP_ASM
                "1:\n\t"
                K2M_GROUP_ASM
                "subs   lr, lr, #1\n\t"
                "bne    4b\n\t"
                K2M_GROUP_OPS
                : : "cc", "memory", "lr");
        }
#else
        {
            int32_t i;
            for (i = 0; i < n; ++i) {
                const int32_t wa4 = k2m_ld32(wa), wb4 = k2m_ld32(wb);
                const int32_t wa02 = __sxtb16(wa4), wa13 = k2m_sxtb16_ror8(wa4);
                const int32_t wb02 = __sxtb16(wb4), wb13 = k2m_sxtb16_ror8(wb4);
                const int32_t ca02 = k2m_ld32(c), ca13 = k2m_ld32(c + 2);
                const int32_t cb02 = k2m_ld32(c + 4), cb13 = k2m_ld32(c + 6);
                a0 = __smlad(wa13, ca13, __smlad(wa02, ca02, a0));
                a1 = __smlad(wa13, cb13, __smlad(wa02, cb02, a1));
                b0 = __smlad(wb13, ca13, __smlad(wb02, ca02, b0));
                b1 = __smlad(wb13, cb13, __smlad(wb02, cb02, b1));
                wa += 4;
                wb += 4;
                c += 8;
            }
        }
#endif
        for (t = 0; t < r; ++t) {
            const int32_t xa = c[t], xb = c[r + t];
            a0 += (int32_t)wa[t] * xa;
            a1 += (int32_t)wa[t] * xb;
            b0 += (int32_t)wb[t] * xa;
            b1 += (int32_t)wb[t] * xb;
        }
        wa = wb + r;
        {
            /* Channel constants (k2m_rqs_init without its checks, done by
             * conv_fast_rq_ok): ls = max(shift, 0) + 1, rs = e + 1 with
             * e = max(-shift, 0), ho = (1 + 2 out_off) << e. */
            const int32_t sa = sp[0], sb = sp[1];
            const int32_t ea = -sa & ~k2m_asr(-sa, 31), eb = -sb & ~k2m_asr(-sb, 31);
            k2m_rqs ra, rb;
            ra.mult = mp[0];
            ra.ls = (sa & ~k2m_asr(sa, 31)) + 1;
            ra.rs = ea + 1;
            ra.ho = (int32_t)(ho1 << ea);
            rb.mult = mp[1];
            rb.ls = (sb & ~k2m_asr(sb, 31)) + 1;
            rb.rs = eb + 1;
            rb.ho = (int32_t)(ho1 << eb);
            a0 = k2m_rqs_apply(&ra, a0);
            a1 = k2m_rqs_apply(&ra, a1);
            b0 = k2m_rqs_apply(&rb, b0);
            b1 = k2m_rqs_apply(&rb, b1);
        }
        if (!out16 && sat) {
            /* the whole int8 range: SSAT alone */
            o0[0] = (int8_t)__ssat(a0, 8);
            o0[1] = (int8_t)__ssat(b0, 8);
            o1[0] = (int8_t)__ssat(a1, 8);
            o1[1] = (int8_t)__ssat(b1, 8);
            o0 += 2;
            o1 += 2;
            sp += 2;
            mp += 2;
            continue;
        }
        /* (channel A, channel B) of pixel A in a0, of pixel B in a1 */
        a0 = k2m_clamp2_s16(k2m_pack_lo(__ssat(a0, 16), __ssat(b0, 16)), lo2, hi2);
        a1 = k2m_clamp2_s16(k2m_pack_lo(__ssat(a1, 16), __ssat(b1, 16)), lo2, hi2);
        if (out16) {
            k2m_st32(o0, a0);
            k2m_st32(o1, a1);
            o0 += 4;
            o1 += 4;
        } else {
            /* bytes 0 and 2 of each word, as one halfword */
            a0 = (int32_t)__uxtb16((uint32_t)a0);
            a1 = (int32_t)__uxtb16((uint32_t)a1);
            a0 |= a0 >> 8;
            a1 |= a1 >> 8;
            memcpy(o0, &a0, 2);
            memcpy(o1, &a1, 2);
            o0 += 2;
            o1 += 2;
        }
        sp += 2;
        mp += 2;
    } while (mp != m_end);
}

/* sums[c] += the int8 outputs of `pixels` pixels (out_c channels each). */
static void conv_pool_add(int32_t *sums, const int8_t *px, int32_t out_c, int32_t pixels)
{
    int32_t c;
    for (c = 0; c < out_c; ++c) {
        sums[c] += px[c] + (pixels > 1 ? px[out_c + c] : 0);
    }
}

/* The three public int8 kernels' loop (out_is_16bit, sums: see them). */
static __attribute__((noinline))
void conv2d_s8_dsp(const k2m_window *g, const k2m_quant_s8 *q,
                   const int8_t *input, const int8_t *weights,
                   const int32_t *bias, void *output,
                   int out_is_16bit, int16_t *col, int32_t *sums)
{
    const int32_t out_c = g->out_c, out_w = g->out_w;
    const int32_t k = g->k_h * g->k_w * g->in_c;
    const int32_t n_px = g->out_h * out_w;
    const int32_t lo = q->act_min, hi = q->act_max;
    const int fast = conv_fast_rq_ok(q, bias, out_c, k);
    void (*const im2col)(const k2m_window *, const int8_t *, int32_t, int32_t, int32_t,
                         int32_t, int16_t *) =
        conv_gather_ok(g, q->input_offset) ? im2col_gather : im2col_s8;
    /* pointwise, no stride or padding, whole groups: a pixel's column is
     * its channels widened, no window to work out */
    const int pointwise = g->k_h == 1 && g->k_w == 1 && g->stride_h == 1 && g->stride_w == 1
        && g->pad_top == 0 && g->pad_left == 0 && (g->in_c & 3) == 0;
    const int32_t off2 = (int32_t)(((uint32_t)q->input_offset & 0xFFFFu)
                                   | ((uint32_t)q->input_offset << 16));
    conv_ctx ctx;
    int32_t p, oc, oy = 0, ox = 0;

    ctx.weights = weights;
    ctx.bias = bias;
    ctx.mult = q->multiplier;
    ctx.shift = q->shift;
    ctx.k = k;
    ctx.out_c = out_c;
    ctx.out_off = q->output_offset;
    ctx.lo2 = (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)lo << 16));
    ctx.hi2 = (int32_t)(((uint32_t)hi & 0xFFFFu) | ((uint32_t)hi << 16));
    ctx.sat = lo == -128 && hi == 127;
    ctx.out16 = out_is_16bit;

    for (p = 0; p < n_px; p += 2) {
        /* pooled (sums): each pixel pair into `output`, then summed */
        const int32_t n0 = sums != NULL ? 0 : p * out_c, n1 = n0 + out_c;
        if (pointwise) {
            col_words(col, input + p * g->in_c, k >> 2, off2);
        } else {
            im2col(g, input, q->input_offset, oy, ox, 0, col);
        }
        if (++ox == out_w) {
            ox = 0;
            ++oy;
        }
        if (p + 1 < n_px) {
            if (pointwise) {
                col_words(col + 4, input + (p + 1) * g->in_c, k >> 2, off2);
            } else {
                im2col(g, input, q->input_offset, oy, ox, 1, col);
            }
            if (++ox == out_w) {
                ox = 0;
                ++oy;
            }
            if (fast && out_c >= 2) {
                conv_pairs_fast(&ctx, col, (int8_t *)output + (n0 << out_is_16bit),
                                (int8_t *)output + (n1 << out_is_16bit));
                oc = out_c & ~1;
            } else {
                oc = 0;
            }
            /* Layers outside the fast form's bounds. */
            for (; oc + 1 < out_c; oc += 2) {
                const int8_t *wa = weights + oc * k;
                int32_t acc[4];
                acc[0] = acc[1] = bias != NULL ? bias[oc] : 0;
                acc[2] = acc[3] = bias != NULL ? bias[oc + 1] : 0;
                mac_2x2(col, wa, wa + k, k, acc);
                k2m_store_s8_s16(output, n0 + oc,
                                 conv_out_one(q, 0, oc, acc[0]), out_is_16bit);
                k2m_store_s8_s16(output, n1 + oc,
                                 conv_out_one(q, 0, oc, acc[1]), out_is_16bit);
                k2m_store_s8_s16(output, n0 + oc + 1,
                                 conv_out_one(q, 0, oc + 1, acc[2]), out_is_16bit);
                k2m_store_s8_s16(output, n1 + oc + 1,
                                 conv_out_one(q, 0, oc + 1, acc[3]), out_is_16bit);
            }
            if (oc < out_c) {
                /* Odd channel count: the last channel, both pixels. */
                const int32_t b = bias != NULL ? bias[oc] : 0;
                const int8_t *w = weights + oc * k;
                k2m_store_s8_s16(output, n0 + oc, conv_out_one(
                    q, fast, oc, mac_1x1(col, 0, w, k, b)), out_is_16bit);
                k2m_store_s8_s16(output, n1 + oc, conv_out_one(
                    q, fast, oc, mac_1x1(col, 1, w, k, b)), out_is_16bit);
            }
        } else {
            /* Odd pixel count: the last pixel, every channel. */
            for (oc = 0; oc < out_c; ++oc) {
                const int32_t b = bias != NULL ? bias[oc] : 0;
                k2m_store_s8_s16(output, n0 + oc, conv_out_one(
                    q, fast, oc, mac_1x1(col, 0, weights + oc * k, k, b)),
                    out_is_16bit);
            }
        }
        if (sums != NULL) {
            conv_pool_add(sums, (const int8_t *)output, out_c, p + 1 < n_px ? 2 : 1);
        }
    }
}
#endif /* K2M_DSP */

void k2m_conv2d_s8(const k2m_window *g, const k2m_quant_s8 *q,
                   const int8_t *input, const int8_t *weights,
                   const int32_t *bias, int8_t *output, int16_t *scratch)
{
#if K2M_DSP
    conv2d_s8_dsp(g, q, input, weights, bias, output, 0, scratch, NULL);
#else
    (void)scratch;
    conv2d_s8_core(g, q, input, weights, bias, output, 0, NULL);
#endif
}

void k2m_conv2d_s8_s16(const k2m_window *g, const k2m_quant_s8 *q,
                       const int8_t *input, const int8_t *weights,
                       const int32_t *bias, int16_t *output,
                       int16_t *scratch)
{
#if K2M_DSP
    conv2d_s8_dsp(g, q, input, weights, bias, output, 1, scratch, NULL);
#else
    (void)scratch;
    conv2d_s8_core(g, q, input, weights, bias, output, 1, NULL);
#endif
}

void k2m_conv2d_pool_s8(const k2m_window *g, const k2m_quant_s8 *q,
                        const int8_t *input, const int8_t *weights,
                        const int32_t *bias, const k2m_global_pool_s8 *pool,
                        int8_t *output, int16_t *scratch)
{
    const int32_t out_c = g->out_c, n = g->out_h * g->out_w;
    /* after the im2col columns: the pixel pair's outputs, then the sums */
    int8_t *pair = (int8_t *)scratch + 4 * g->k_h * g->k_w * g->in_c;
    int32_t *sums = (int32_t *)(void *)(pair + ((2 * out_c + 3) & ~3));
    int32_t c;

    for (c = 0; c < out_c; ++c) {
        sums[c] = 0;
    }
#if K2M_DSP
    conv2d_s8_dsp(g, q, input, weights, bias, pair, 0, scratch, sums);
#else
    (void)pair;
    conv2d_s8_core(g, q, input, weights, bias, NULL, 0, sums);
#endif
    for (c = 0; c < out_c; ++c) {
        const k2m_quant_s8 *m = pool->mean;
        const int32_t v = m != NULL
            ? k2m_requantize(sums[c] + n * m->input_offset, m->multiplier[0], m->shift[0])
                  + m->output_offset
            : k2m_div_nearest(sums[c], n);
        output[c] = (int8_t)(m != NULL ? k2m_clamp_s32(v, m->act_min, m->act_max)
                                       : k2m_clamp_s32(v, pool->act_min, pool->act_max));
    }
}

void k2m_conv2d_f32(const k2m_window *g, float act_min, float act_max,
                    const float *input, const float *weights,
                    const float *bias, float *output)
{
    const int32_t in_w = g->in_w, in_c = g->in_c;
    const int32_t k_h = g->k_h, k_w = g->k_w;
    const int32_t dil_h = g->dil_h, dil_w = g->dil_w;
    const int32_t out_c = g->out_c;
    const int32_t tap_step_y = dil_h * in_w * in_c;
    const int32_t tap_step_x = dil_w * in_c;
    const int32_t w_row = k_w * in_c;
    const int32_t w_filter = k_h * w_row;
    int32_t oy, ox, oc;

    for (oy = 0; oy < g->out_h; ++oy) {
        const int32_t y0 = oy * g->stride_h - g->pad_top;
        int32_t ky0, ky1;
        k2m_tap_range(y0, g->in_h, k_h, dil_h, &ky0, &ky1);

        for (ox = 0; ox < g->out_w; ++ox) {
            const int32_t x0 = ox * g->stride_w - g->pad_left;
            int32_t kx0, kx1;
            const float *in_base;
            k2m_tap_range(x0, in_w, k_w, dil_w, &kx0, &kx1);
            /* An empty window (all taps in the padding) leaves in_base
             * unused; it must still not point outside the array. */
            in_base = (ky0 < ky1 && kx0 < kx1)
                ? input + ((y0 + ky0 * dil_h) * in_w + (x0 + kx0 * dil_w)) * in_c
                : input;

            for (oc = 0; oc < out_c; ++oc) {
                const float *w_base = weights + oc * w_filter + ky0 * w_row + kx0 * in_c;
                float acc = bias != NULL ? bias[oc] : 0.0f;
                int32_t ky, kx, ic;

                for (ky = ky0; ky < ky1; ++ky) {
                    const float *in_px = in_base + (ky - ky0) * tap_step_y;
                    const float *w_px = w_base + (ky - ky0) * w_row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        for (ic = 0; ic < in_c; ++ic) {
                            acc += in_px[ic] * w_px[ic];
                        }
                        in_px += tap_step_x;
                        w_px += in_c;
                    }
                }
                /* Comparisons rather than fminf/fmaxf keep -lm out. */
                acc = acc < act_min ? act_min : acc;
                acc = acc > act_max ? act_max : acc;
                *output++ = acc;
            }
        }
    }
}
