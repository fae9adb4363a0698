/* main.c: run an exported model on a Cortex-M4 and print its outputs.
 *
 * Built by the Makefile with
 *     -DMODEL_PREFIX=<prefix> -DMODEL_HEADER="<prefix>.h"   (the exported model)
 *     -DK2M_VECTORS="path/vectors.h"                         (optional test inputs)
 *
 * Without vectors: one deterministic synthetic input through <prefix>_predict()
 * (float in, float out); each output is printed as a decimal and as its bits.
 *
 * With vectors (a header defining K2M_NUM_VECTORS and
 *     static const <prefix>_input_t k2m_vectors[K2M_NUM_VECTORS][<prefix>_INPUT_SIZE];):
 * each vector through <prefix>_invoke() (raw in, raw out), one line per vector:
 *     k2m-out <i>: <raw outputs>
 * int8 outputs as decimal integers, float outputs as the 8 hex digits of each
 * float's bit pattern (so the host can compare bit for bit), then
 *     k2m-done <n>
 * and exit status 0.  No heap, no stdio: text goes out through board_write().
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include MODEL_HEADER

#define K2M_CAT_(a, b) a##b
#define K2M_CAT(a, b) K2M_CAT_(a, b)
#define K2M_STR_(a) #a
#define K2M_STR(a) K2M_STR_(a)
/* MODEL(_invoke) -> <prefix>_invoke, MODEL(_INPUT_SIZE) -> <prefix>_INPUT_SIZE, ... */
#define MODEL(name) K2M_CAT(MODEL_PREFIX, name)

typedef MODEL(_input_t) model_input_t;
typedef MODEL(_output_t) model_output_t;

#ifdef K2M_VECTORS
#include K2M_VECTORS
#endif

/* ---- text output: a small buffer, flushed with board_write() when full and
 * at the end of each line (so lines of any length need no big buffer) ---- */
static char line[128];
static unsigned line_len;

static void put_char(char c)
{
    if (line_len == sizeof line) {
        board_write(line, line_len);
        line_len = 0;
    }
    line[line_len++] = c;
}

static void put_str(const char *s)
{
    while (*s != '\0') {
        put_char(*s++);
    }
}

static void put_uint(uint32_t v)
{
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        put_char(digits[--n]);
    }
}

static void put_int(int32_t v)
{
    if (v < 0) {
        put_char('-');
        put_uint(0u - (uint32_t)v);
    } else {
        put_uint((uint32_t)v);
    }
}

static void put_hex32(uint32_t v)
{
    static const char hex[] = "0123456789abcdef";
    int shift;
    for (shift = 28; shift >= 0; shift -= 4) {
        put_char(hex[(v >> shift) & 0xFu]);
    }
}

static uint32_t float_bits(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static void end_line(void)
{
    put_char('\n');
    board_write(line, line_len);
    line_len = 0;
}

#ifndef K2M_VECTORS
/* A float as a decimal with 6 digits after the point (no printf, no libm). */
static void put_float(float f)
{
    uint32_t whole, frac;
    if (f != f) {
        put_str("nan");
        return;
    }
    if (f < 0.0f) {
        put_char('-');
        f = -f;
    }
    if (f >= 4.0e9f) {
        put_str("inf-or-huge");
        return;
    }
    whole = (uint32_t)f;
    frac = (uint32_t)((f - (float)whole) * 1.0e6f + 0.5f);
    if (frac >= 1000000u) {
        whole += 1u;
        frac -= 1000000u;
    }
    put_uint(whole);
    put_str(".");
    {
        uint32_t div;
        for (div = 100000u; div > 0u; div /= 10u) {
            put_char((char)('0' + (frac / div) % 10u));
        }
    }
}

#else
/* One raw output: int8 as a decimal integer, float as its 8-hex-digit bits. */
static void put_raw(const model_output_t *y)
{
    if (sizeof(model_output_t) == 1) {
        int8_t v;
        memcpy(&v, y, 1);
        put_int(v);
    } else {
        float v;
        memcpy(&v, y, sizeof v);
        put_hex32(float_bits(v));
    }
}

static model_output_t raw_out[MODEL(_OUTPUT_SIZE)];
#endif

int main(void)
{
    int i;

    put_str("k2m-model " K2M_STR(MODEL_PREFIX) " ");
    put_str(sizeof(model_output_t) == 1 ? "int8" : "float32");
    put_str(" input ");
    put_uint(MODEL(_INPUT_SIZE));
    put_str(" output ");
    put_uint(MODEL(_OUTPUT_SIZE));
    put_str(" arena ");
    put_uint(MODEL(_ARENA_BYTES));
    put_str(" bytes");
    end_line();

#ifdef K2M_VECTORS
    {
        int v;
        for (v = 0; v < K2M_NUM_VECTORS; ++v) {
            int rc = MODEL(_invoke)(k2m_vectors[v], raw_out);
            if (rc != 0) {
                put_str("k2m-error " K2M_STR(MODEL_PREFIX) "_invoke returned ");
                put_int(rc);
                put_str(" on vector ");
                put_int(v);
                end_line();
                return 1;
            }
            put_str("k2m-out ");
            put_int(v);
            put_str(":");
            for (i = 0; i < MODEL(_OUTPUT_SIZE); ++i) {
                put_str(" ");
                put_raw(&raw_out[i]);
            }
            end_line();
        }
        put_str("k2m-done ");
        put_int(K2M_NUM_VECTORS);
        end_line();
    }
#else
    {
        /* A deterministic input in [0, 1): the same on every run and board. */
        static float input[MODEL(_INPUT_SIZE)];
        static float output[MODEL(_OUTPUT_SIZE)];
        int rc, best = 0;
        for (i = 0; i < MODEL(_INPUT_SIZE); ++i) {
            input[i] = (float)((i * 37) % 101) / 101.0f;
        }
        rc = MODEL(_predict)(input, output);
        if (rc != 0) {
            put_str("k2m-error " K2M_STR(MODEL_PREFIX) "_predict returned ");
            put_int(rc);
            end_line();
            return 1;
        }
        for (i = 0; i < MODEL(_OUTPUT_SIZE); ++i) {
            put_str("k2m-predict ");
            put_int(i);
            put_str(": ");
            put_float(output[i]);
            put_str(" (0x");
            put_hex32(float_bits(output[i]));
            put_str(")");
            end_line();
            if (output[i] > output[best]) {
                best = i;
            }
        }
        put_str("k2m-done 1 synthetic input, argmax ");
        put_int(best);
        end_line();
    }
#endif
    return 0;
}
