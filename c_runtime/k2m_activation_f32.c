/* k2m runtime: activations, softmax and PReLU, float.
 *
 * Keras 3's definitions in float32 (libm's expf, tanhf, log1pf, erff);
 * separate from the int8 tables of k2m_activation.c so that an int8 model
 * links without libm.
 */
#include "k2m.h"
#include "k2m_math.h"

#include <math.h>

void k2m_softmax_f32(const float *input, float *output, int32_t rows,
                     int32_t cols)
{
    int32_t r, i;

    if (cols <= 0) {
        return;
    }
    for (r = 0; r < rows; ++r) {
        float max = input[0];
        float sum = 0.0f;

        for (i = 1; i < cols; ++i) {
            max = input[i] > max ? input[i] : max;
        }
        /* Subtracting the max keeps expf <= 1: no overflow, and the sum is
         * at least 1 so the division is safe. */
        for (i = 0; i < cols; ++i) {
            output[i] = expf(input[i] - max);
            sum += output[i];
        }
        for (i = 0; i < cols; ++i) {
            output[i] /= sum;
        }
        input += cols;
        output += cols;
    }
}

void k2m_relu_f32(const float *input, float *output, int32_t size,
                  float act_min, float act_max)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        float v = input[i];
        v = v < act_min ? act_min : v;
        v = v > act_max ? act_max : v;
        output[i] = v;
    }
}

void k2m_sigmoid_f32(const float *input, float *output, int32_t size)
{
    int32_t i;
    /* expf(-x) overflows to +inf for x < -88: 1 / inf is the right 0. */
    for (i = 0; i < size; ++i) {
        output[i] = 1.0f / (1.0f + expf(-input[i]));
    }
}

void k2m_tanh_f32(const float *input, float *output, int32_t size)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        output[i] = tanhf(input[i]);
    }
}

static void k2m_math_f32(k2m_act_fn fn, const float *input, float *output,
                         int32_t size, float alpha, float threshold);

/* The other Keras activations in float.  One switch per call, one tight
 * loop per function; alpha is the function's parameter where it has one
 * (LeakyReLU's negative slope, ELU's alpha) and threshold the ReLU
 * threshold. */
void k2m_activation_f32(k2m_act_fn fn, const float *input, float *output,
                        int32_t size, float alpha, float threshold)
{
    int32_t i;

    switch (fn) {
    case K2M_ACT_LEAKY_RELU:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = x >= threshold ? x : alpha * (x - threshold);
        }
        break;
    case K2M_ACT_ELU:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = x > 0.0f ? x : alpha * (expf(x) - 1.0f);
        }
        break;
    case K2M_ACT_SELU:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = 1.05070098f * (x > 0.0f ? x : 1.67326324f * (expf(x) - 1.0f));
        }
        break;
    case K2M_ACT_HARD_SIGMOID:
        for (i = 0; i < size; ++i) {
            float y = (input[i] + 3.0f) / 6.0f;
            y = y < 0.0f ? 0.0f : y;
            output[i] = y > 1.0f ? 1.0f : y;
        }
        break;
    case K2M_ACT_HARD_SWISH:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            float y = (x + 3.0f) / 6.0f;
            y = y < 0.0f ? 0.0f : y;
            output[i] = x * (y > 1.0f ? 1.0f : y);
        }
        break;
    case K2M_ACT_SWISH:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = x / (1.0f + expf(-x));
        }
        break;
    case K2M_ACT_GELU:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = 0.5f * x * (1.0f + erff(x * 0.707106781f));
        }
        break;
    case K2M_ACT_GELU_TANH:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = 0.5f * x * (1.0f + tanhf(0.797884561f * (x + 0.044715f * x * x * x)));
        }
        break;
    case K2M_ACT_SOFTPLUS:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            /* log1p(exp(x)) without overflow for large x */
            output[i] = x > 15.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
        }
        break;
    case K2M_ACT_SOFTSIGN:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            output[i] = x / (1.0f + fabsf(x));
        }
        break;
    case K2M_ACT_EXPONENTIAL:
        for (i = 0; i < size; ++i) {
            output[i] = expf(input[i]);
        }
        break;
    case K2M_ACT_MISH:
        for (i = 0; i < size; ++i) {
            const float x = input[i];
            const float sp = x > 15.0f ? x : log1pf(expf(x));
            output[i] = x * tanhf(sp);
        }
        break;
    default:
        k2m_math_f32(fn, input, output, size, alpha, threshold);
        break;
    }
}

/* The elementwise functions of keras.ops nodes (square, sqrt, log...),
 * each as libm computes it in float32. */
static void k2m_math_f32(k2m_act_fn fn, const float *input, float *output,
                         int32_t size, float alpha, float threshold)
{
    int32_t i;

    for (i = 0; i < size; ++i) {
        const float x = input[i];
        float y;
        switch (fn) {
        case K2M_ACT_AFFINE: y = alpha * x + threshold; break;
        case K2M_ACT_SQUARE: y = x * x; break;
        case K2M_ACT_SQRT: y = sqrtf(x); break;
        case K2M_ACT_RSQRT: y = 1.0f / sqrtf(x); break;
        case K2M_ACT_ABS: y = fabsf(x); break;
        case K2M_ACT_LOG: y = logf(x); break;
        case K2M_ACT_LOG1P: y = log1pf(x); break;
        case K2M_ACT_EXPM1: y = expm1f(x); break;
        case K2M_ACT_RECIPROCAL: y = 1.0f / x; break;
        case K2M_ACT_RDIV: y = alpha / x; break;
        case K2M_ACT_POW: y = powf(x, alpha); break;
        case K2M_ACT_RPOW: y = powf(alpha, x); break;
        case K2M_ACT_SIGN: y = x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x); break;
        case K2M_ACT_ERF: y = erff(x); break;
        case K2M_ACT_SIN: y = sinf(x); break;
        case K2M_ACT_COS: y = cosf(x); break;
        case K2M_ACT_FLOOR: y = floorf(x); break;
        case K2M_ACT_CEIL: y = ceilf(x); break;
        default: y = x; break;
        }
        output[i] = y;
    }
}

void k2m_prelu_f32(const float *input, const float *alpha, int32_t alpha_period,
                   float *output, int32_t size)
{
    int32_t i, a = 0;

    for (i = 0; i < size; ++i) {
        const float x = input[i];
        output[i] = x >= 0.0f ? x : alpha[a] * x;
        if (++a == alpha_period) {
            a = 0;
        }
    }
}
