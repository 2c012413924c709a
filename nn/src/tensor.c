/* tensor.c — dtypes, tensor sizes, architecture names, half-precision
 * conversions and the error-buffer helper shared by the model code. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"

size_t cxr_nn_dtype_size(enum cxr_nn_dtype t)
{
    switch (t) {
    case CXR_NN_DTYPE_F32: return 4;
    case CXR_NN_DTYPE_F16: return 2;
    case CXR_NN_DTYPE_BF16: return 2;
    case CXR_NN_DTYPE_F64: return 8;
    case CXR_NN_DTYPE_I64: return 8;
    case CXR_NN_DTYPE_U8: return 1;
    }
    return 0;
}

const char *cxr_nn_dtype_name(enum cxr_nn_dtype t)
{
    switch (t) {
    case CXR_NN_DTYPE_F32: return "F32";
    case CXR_NN_DTYPE_F16: return "F16";
    case CXR_NN_DTYPE_BF16: return "BF16";
    case CXR_NN_DTYPE_F64: return "F64";
    case CXR_NN_DTYPE_I64: return "I64";
    case CXR_NN_DTYPE_U8: return "U8";
    }
    return "?";
}

/* Product of the dims (1 for a scalar); -1 when a dim is negative, ndim is
 * out of range or the product overflows int64. */
int64_t cxr_nn_tensor_numel(const struct cxr_nn_tensor *t)
{
    if (!t || t->ndim < 0 || t->ndim > CXR_NN_MAX_DIMS)
        return -1;
    int64_t n = 1;
    for (int32_t i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0)
            return -1;
        if (t->shape[i] != 0 && n > INT64_MAX / t->shape[i])
            return -1;
        n *= t->shape[i];
    }
    return n;
}

static const char *const arch_names[] = {"resnet18", "resnet34", "resnet50"};

const char *cxr_nn_arch_name(enum cxr_nn_arch a)
{
    if ((unsigned)a < sizeof arch_names / sizeof arch_names[0])
        return arch_names[a];
    return "unknown";
}

bool cxr_nn_arch_parse(const char *name, enum cxr_nn_arch *out)
{
    if (!name)
        return false;
    for (unsigned i = 0; i < sizeof arch_names / sizeof arch_names[0]; i++) {
        if (strcmp(name, arch_names[i]) == 0) {
            if (out)
                *out = (enum cxr_nn_arch)i;
            return true;
        }
    }
    return false;
}

/* ---- IEEE half and bfloat16 */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float cxr_nn_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t cxr_nn_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
        return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN, sign kept */
    u += 0x7fffu + ((u >> 16) & 1u);            /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float cxr_nn_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in float */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t cxr_nn_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u));
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        /* result is subnormal (or zero) in half: value / 2^-24, rounded
         * to nearest even; exact in float arithmetic. */
        float v = bits_f32(a) * 0x1p24f;
        float r = nearbyintf(v); /* default rounding mode: nearest even */
        return (uint16_t)(sign | (uint16_t)r);
    }
    /* normal: rebias exponent, round 23 -> 10 mantissa bits to nearest even */
    uint32_t v = a - (112u << 23);
    v += 0xfffu + ((v >> 13) & 1u);
    return (uint16_t)(sign | (v >> 13));
}
