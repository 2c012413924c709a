/* model_init.c — fresh models with torchvision's initialisation, bit-for-bit
 * reproducible from a 64-bit seed on any IEEE-754 machine.
 *
 * Generator: xoshiro256** (Blackman & Vigna), its 256-bit state filled by
 * four successive outputs of splitmix64 started at the seed. One stream is
 * consumed by the tensors in state_dict order (resnet.h).
 *   uniform u in [0,1):  (next() >> 11) * 2^-53
 *   normal:              Marsaglia's polar method on u1 = 2u-1, u2 = 2u-1
 *                        (rejecting s = u1^2+u2^2 outside (0,1)), which
 *                        yields two normals u1*f and u2*f with
 *                        f = sqrt(-2 ln s / s); both are used in turn. ln is
 *                        computed here with basic arithmetic only (no libm),
 *                        so the bytes do not depend on the C library.
 * Initialisation (torchvision.models.resnet):
 *   conv weight  N(0, std^2), std = sqrt(2 / fan_out), fan_out = out*kh*kw
 *                (kaiming_normal_, mode="fan_out", nonlinearity="relu")
 *   bn           weight 1, bias 0, running_mean 0, running_var 1, count 0
 *   fc           weight and bias U(-b, b), b = 1/sqrt(fan_in) (nn.Linear's
 *                default: kaiming_uniform_(a=sqrt(5)) and its bias rule)
 * Values are drawn in double and rounded once to float.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

struct rng {
    uint64_t s[4];
    bool have_spare;
    double spare;
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void rng_seed(struct rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    r->have_spare = false;
    r->spare = 0.0;
}

static double rng_uniform(struct rng *r) { return (double)(rng_next(r) >> 11) * 0x1p-53; }

/* ln(x) for finite x > 0 with + - * / only: x = m * 2^e with m in
 * [sqrt(1/2), sqrt(2)), ln m = 2 atanh(t), t = (m-1)/(m+1), |t| < 0.172;
 * the series to t^41 is below 1e-32 relative. Accurate to a few ulp. */
static double det_log(double x)
{
    int e = 0;
    while (x >= 2.0) {
        x *= 0.5;
        e++;
    }
    while (x < 1.0) {
        x *= 2.0;
        e--;
    }
    if (x > 1.4142135623730951) {
        x *= 0.5;
        e++;
    }
    double t = (x - 1.0) / (x + 1.0), t2 = t * t, term = t, sum = 0.0;
    for (int k = 1; k <= 41; k += 2) {
        sum += term / k;
        term *= t2;
    }
    return 2.0 * sum + e * 0.6931471805599453;
}

static double rng_normal(struct rng *r)
{
    if (r->have_spare) {
        r->have_spare = false;
        return r->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * rng_uniform(r) - 1.0;
        v = 2.0 * rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * det_log(s) / s); /* sqrt is exactly rounded (IEEE) */
    r->spare = v * f;
    r->have_spare = true;
    return u * f;
}

/* Fills the model's tensors from the generator (see the file comment). */
static void init_tensors(struct cxr_nn_model *m, uint64_t seed)
{
    struct rng r;
    rng_seed(&r, seed);
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        struct cxr_nn_tensor *t = &m->tensors[i];
        size_t n = (size_t)cxr_nn_tensor_numel(t);
        float *f = t->data;
        switch (m->kinds[i]) {
        case CXR_NN_PARAM_CONV_WEIGHT: {
            double std = sqrt(2.0 / (double)(t->shape[0] * t->shape[2] * t->shape[3]));
            for (size_t k = 0; k < n; k++)
                f[k] = (float)(rng_normal(&r) * std);
            break;
        }
        case CXR_NN_PARAM_BN_WEIGHT:
        case CXR_NN_PARAM_BN_VAR:
            for (size_t k = 0; k < n; k++)
                f[k] = 1.0f;
            break;
        case CXR_NN_PARAM_BN_BIAS:
        case CXR_NN_PARAM_BN_MEAN:
        case CXR_NN_PARAM_BN_COUNT: memset(t->data, 0, t->nbytes); break;
        case CXR_NN_PARAM_FC_WEIGHT:
        case CXR_NN_PARAM_FC_BIAS: {
            double bound = 1.0 / sqrt((double)m->spec.feature_dim);
            for (size_t k = 0; k < n; k++)
                f[k] = (float)((2.0 * rng_uniform(&r) - 1.0) * bound);
            break;
        }
        }
    }
}

enum cxr_status cxr_nn_model_init_width(const struct cxr_nn_model_meta *meta, int32_t base_width,
                                        uint64_t seed, struct cxr_nn_model **out, char *err)
{
    if (!out)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "init: no output pointer");
    *out = NULL;
    if (!meta)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "init: no metadata");
    struct cxr_nn_resnet_spec spec;
    if (cxr_nn_resnet_spec_make(meta->arch, meta->channels, base_width, meta->num_classes, &spec) !=
        CXR_OK)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "init: arch %d, %d channels, base width %d, %d classes: not a model "
                          "this build makes (resnet18/34/50, 1 or 3 channels, width 1..1024, "
                          "1..%d classes)",
                          (int)meta->arch, (int)meta->channels, (int)base_width,
                          (int)meta->num_classes, CXR_NN_MAX_CLASSES);
    char verr[CXR_ERRLEN];
    enum cxr_status st = cxr_nn_meta_validate(meta, &spec, verr);
    if (st != CXR_OK)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "init: %s", verr);
    struct cxr_nn_model *m = cxr_nn_model_alloc(&spec);
    if (!m)
        return cxr_seterr(err, CXR_ERR_NOMEM, "init: out of memory for the tensors");
    if (cxr_nn_meta_copy(&m->meta, meta) != CXR_OK) {
        cxr_nn_model_free(m);
        return cxr_seterr(err, CXR_ERR_NOMEM, "init: out of memory");
    }
    init_tensors(m, seed);
    *out = m;
    return CXR_OK;
}

enum cxr_status cxr_nn_model_init(const struct cxr_nn_model_meta *meta, uint64_t seed,
                                  struct cxr_nn_model **out, char *err)
{
    return cxr_nn_model_init_width(meta, 64, seed, out, err);
}
