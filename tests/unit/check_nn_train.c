/* check_nn_train.c — the backward pass of every op on the CPU backend, ggml
 * test-backend-ops style: small graphs (each ending in global average pool
 * and fc, as training graphs must) with random data, run through the
 * backend's training entries (train_plan, train_forward, weighted
 * cross-entropy, train_backward), against a plain C interpreter of the same
 * unfused graph in double precision:
 *   - logits and batch-norm running statistics against the fp64 forward;
 *   - every parameter gradient against central finite differences of the
 *     fp64 loss (h = 1e-6 in double, so the reference is exact to ~1e-9);
 * (The loss, the optimizers, the schedule and clipping are in
 * check_nn_train_optim.c.)
 * Convolutions run as oneDNN chooses (which may be Winograd on large
 * layers), and again forced to Winograd and to direct.
 * bf16 cases run the same graphs in bf16 with a looser tolerance (skipped
 * on CPUs without AVX512-BF16).
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../nn/src/backend.h"
#include "../../nn/src/graph.h"
#include "../../nn/src/train_internal.h"
#include "cxr/nn.h"
#include "cxr/nn_train.h"
#include "cxr/nn_trainer.h"
#include "test_util.h"

/* ------------------------------------------------------------ fp64 reference */

struct ref {
    const struct cxr_nn_graph *g;
    int32_t n;              /* batch */
    double **param;         /* per graph param */
    double **val;           /* per value: n x c x h x w */
    double **bmean, **bvar; /* per op (bn): batch statistics */
};

static size_t vsize(const struct cxr_nn_graph *g, int32_t v, int32_t n)
{
    const struct cxr_nn_value *x = &g->values[v];
    return (size_t)n * x->c * x->h * x->w;
}

static void ref_conv(struct ref *R, const struct cxr_nn_op *op)
{
    const struct cxr_nn_value *x = &R->g->values[op->in[0]], *y = &R->g->values[op->out];
    const double *in = R->val[op->in[0]], *w = R->param[op->param[0]];
    const double *b = op->param[1] >= 0 ? R->param[op->param[1]] : NULL;
    double *out = R->val[op->out];
    int32_t k = op->kernel_h;
    for (int32_t n = 0; n < R->n; n++)
        for (int32_t o = 0; o < y->c; o++)
            for (int32_t oy = 0; oy < y->h; oy++)
                for (int32_t ox = 0; ox < y->w; ox++) {
                    double s = b ? b[o] : 0.0;
                    for (int32_t i = 0; i < x->c; i++)
                        for (int32_t ky = 0; ky < k; ky++)
                            for (int32_t kx = 0; kx < k; kx++) {
                                int32_t iy = oy * op->stride - op->pad + ky;
                                int32_t ix = ox * op->stride - op->pad + kx;
                                if (iy < 0 || ix < 0 || iy >= x->h || ix >= x->w)
                                    continue;
                                s += in[(((size_t)n * x->c + i) * x->h + iy) * x->w + ix] *
                                     w[(((size_t)o * x->c + i) * k + ky) * k + kx];
                            }
                    out[(((size_t)n * y->c + o) * y->h + oy) * y->w + ox] = s;
                }
}

static void ref_bn(struct ref *R, int32_t oi, bool train)
{
    const struct cxr_nn_op *op = &R->g->ops[oi];
    const struct cxr_nn_value *x = &R->g->values[op->in[0]];
    const double *in = R->val[op->in[0]];
    double *out = R->val[op->out];
    const double *gamma = R->param[op->param[0]], *beta = R->param[op->param[1]];
    size_t hw = (size_t)x->h * x->w, cnt = (size_t)R->n * hw;
    for (int32_t c = 0; c < x->c; c++) {
        double mean = 0, var = 0;
        if (train) {
            for (int32_t n = 0; n < R->n; n++)
                for (size_t j = 0; j < hw; j++)
                    mean += in[((size_t)n * x->c + c) * hw + j];
            mean /= (double)cnt;
            for (int32_t n = 0; n < R->n; n++)
                for (size_t j = 0; j < hw; j++) {
                    double d = in[((size_t)n * x->c + c) * hw + j] - mean;
                    var += d * d;
                }
            var /= (double)cnt;
            R->bmean[oi][c] = mean;
            R->bvar[oi][c] = var;
        } else {
            mean = R->param[op->param[2]][c];
            var = R->param[op->param[3]][c];
        }
        double inv = 1.0 / sqrt(var + (double)op->eps);
        for (int32_t n = 0; n < R->n; n++)
            for (size_t j = 0; j < hw; j++) {
                size_t idx = ((size_t)n * x->c + c) * hw + j;
                out[idx] = (in[idx] - mean) * inv * gamma[c] + beta[c];
            }
    }
}

static void ref_maxpool(struct ref *R, const struct cxr_nn_op *op)
{
    const struct cxr_nn_value *x = &R->g->values[op->in[0]], *y = &R->g->values[op->out];
    const double *in = R->val[op->in[0]];
    double *out = R->val[op->out];
    for (int32_t n = 0; n < R->n; n++)
        for (int32_t c = 0; c < x->c; c++)
            for (int32_t oy = 0; oy < y->h; oy++)
                for (int32_t ox = 0; ox < y->w; ox++) {
                    double m = -INFINITY;
                    for (int32_t ky = 0; ky < op->kernel_h; ky++)
                        for (int32_t kx = 0; kx < op->kernel_w; kx++) {
                            int32_t iy = oy * op->stride - op->pad + ky;
                            int32_t ix = ox * op->stride - op->pad + kx;
                            if (iy < 0 || ix < 0 || iy >= x->h || ix >= x->w)
                                continue;
                            double v = in[(((size_t)n * x->c + c) * x->h + iy) * x->w + ix];
                            if (v > m)
                                m = v;
                        }
                    out[(((size_t)n * y->c + c) * y->h + oy) * y->w + ox] = m;
                }
}

static void ref_fc(struct ref *R, const struct cxr_nn_op *op)
{
    const struct cxr_nn_value *x = &R->g->values[op->in[0]], *y = &R->g->values[op->out];
    const double *in = R->val[op->in[0]], *w = R->param[op->param[0]], *b = R->param[op->param[1]];
    double *out = R->val[op->out];
    for (int32_t n = 0; n < R->n; n++)
        for (int32_t o = 0; o < y->c; o++) {
            double s = b[o];
            for (int32_t c = 0; c < x->c; c++)
                s += w[(size_t)o * x->c + c] * in[(size_t)n * x->c + c];
            out[(size_t)n * y->c + o] = s;
        }
}

/* Forward in training mode (bn on batch statistics unless frozen). */
static void ref_forward(struct ref *R, const double *input, bool train)
{
    const struct cxr_nn_graph *g = R->g;
    memcpy(R->val[g->input], input, vsize(g, g->input, R->n) * sizeof(double));
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        size_t sz = vsize(g, op->out, R->n);
        double *out = R->val[op->out];
        const double *a = R->val[op->in[0]];
        switch (op->kind) {
        case CXR_NN_OP_CONV: ref_conv(R, op); break;
        case CXR_NN_OP_BN: ref_bn(R, i, train); break;
        case CXR_NN_OP_RELU:
            for (size_t j = 0; j < sz; j++)
                out[j] = a[j] > 0 ? a[j] : 0.0;
            break;
        case CXR_NN_OP_ADD:
            for (size_t j = 0; j < sz; j++)
                out[j] = a[j] + R->val[op->in[1]][j];
            break;
        case CXR_NN_OP_MAXPOOL: ref_maxpool(R, op); break;
        case CXR_NN_OP_GAP: {
            const struct cxr_nn_value *x = &g->values[op->in[0]];
            size_t hw = (size_t)x->h * x->w;
            for (size_t j = 0; j < sz; j++) {
                double s = 0;
                for (size_t q = 0; q < hw; q++)
                    s += a[j * hw + q];
                out[j] = s / (double)hw;
            }
            break;
        }
        case CXR_NN_OP_FC: ref_fc(R, op); break;
        default: ck_abort_msg("op kind %d", op->kind);
        }
    }
}

/* Weighted mean cross-entropy in double. */
static double ref_loss(const double *logits, const int32_t *labels, int32_t n, int32_t k,
                       const float *w)
{
    double num = 0, den = 0;
    for (int32_t i = 0; i < n; i++) {
        const double *x = logits + (size_t)i * k;
        double mx = x[0], z = 0;
        for (int32_t c = 1; c < k; c++)
            mx = x[c] > mx ? x[c] : mx;
        for (int32_t c = 0; c < k; c++)
            z += exp(x[c] - mx);
        double wi = w ? w[labels[i]] : 1.0;
        num += wi * (log(z) + mx - x[labels[i]]);
        den += wi;
    }
    return num / den;
}

static struct ref *ref_new(const struct cxr_nn_graph *g, int32_t n)
{
    struct ref *R = calloc(1, sizeof *R);
    R->g = g;
    R->n = n;
    R->param = calloc((size_t)g->n_params, sizeof *R->param);
    R->val = calloc((size_t)g->n_values, sizeof *R->val);
    R->bmean = calloc((size_t)g->n_ops, sizeof *R->bmean);
    R->bvar = calloc((size_t)g->n_ops, sizeof *R->bvar);
    for (int32_t p = 0; p < g->n_params; p++)
        R->param[p] = calloc(g->params[p].t.nbytes / sizeof(float), sizeof(double));
    for (int32_t v = 0; v < g->n_values; v++)
        R->val[v] = calloc(vsize(g, v, n), sizeof(double));
    for (int32_t i = 0; i < g->n_ops; i++) {
        R->bmean[i] = calloc((size_t)g->values[g->ops[i].out].c, sizeof(double));
        R->bvar[i] = calloc((size_t)g->values[g->ops[i].out].c, sizeof(double));
    }
    return R;
}

static void ref_free(struct ref *R)
{
    for (int32_t p = 0; p < R->g->n_params; p++)
        free(R->param[p]);
    for (int32_t v = 0; v < R->g->n_values; v++)
        free(R->val[v]);
    for (int32_t i = 0; i < R->g->n_ops; i++) {
        free(R->bmean[i]);
        free(R->bvar[i]);
    }
    free(R->param);
    free(R->val);
    free(R->bmean);
    free(R->bvar);
    free(R);
}

/* ------------------------------------------------------------ cases */

static double urand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0;
}

/* Graph builders: input -> body -> gap -> fc(3 classes). */
typedef int32_t (*body_fn)(struct cxr_nn_graph *g, int32_t x, char *err);

static int32_t body_conv(struct cxr_nn_graph *g, int32_t x, char *err)
{
    return cxr_nn_graph_conv(g, "c0", x, 5, 3, 1, 1, true, err);
}

static int32_t body_conv_conv(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "c0", x, 4, 3, 1, 1, false, err);
    return cxr_nn_graph_conv(g, "c1", a, 6, 3, 2, 1, false, err);
}

static int32_t body_conv7(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "c0", x, 4, 3, 1, 1, false, err);
    return cxr_nn_graph_conv(g, "c1", a, 5, 7, 2, 3, false, err);
}

static int32_t body_conv1x1(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "c0", x, 4, 3, 1, 1, false, err);
    return cxr_nn_graph_conv(g, "c1", a, 8, 1, 2, 0, false, err);
}

static int32_t body_bn(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "c0", x, 4, 3, 1, 1, false, err);
    return cxr_nn_graph_bn(g, "b0", a, 1e-5f, err);
}

static int32_t body_bn_relu(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "c0", x, 4, 3, 1, 1, false, err);
    a = cxr_nn_graph_bn(g, "b0", a, 1e-5f, err);
    return cxr_nn_graph_relu(g, "r0", a, err);
}

static int32_t body_relu(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "c0", x, 4, 3, 1, 1, true, err);
    return cxr_nn_graph_relu(g, "r0", a, err);
}

static int32_t body_maxpool(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "c0", x, 4, 3, 1, 1, true, err);
    return cxr_nn_graph_maxpool(g, "mp", a, 3, 2, 1, err);
}

/* a = conv(x); y = relu(conv(a) + a): a fans out to a conv and the add. */
static int32_t body_residual(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "c0", x, 4, 3, 1, 1, false, err);
    int32_t b = cxr_nn_graph_conv(g, "c1", a, 4, 3, 1, 1, false, err);
    b = cxr_nn_graph_bn(g, "b1", b, 1e-5f, err);
    int32_t s = cxr_nn_graph_add(g, "add", b, a, err);
    return cxr_nn_graph_relu(g, "r", s, err);
}

/* A ResNet downsample block: shortcut conv1x1/bn, conv-bn-relu-conv-bn,
 * add, relu; the block input fans out to two convs. */
static int32_t body_block(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "stem", x, 4, 3, 1, 1, false, err);
    a = cxr_nn_graph_bn(g, "stem_bn", a, 1e-5f, err);
    a = cxr_nn_graph_relu(g, "stem_relu", a, err);
    int32_t id = cxr_nn_graph_conv(g, "ds", a, 6, 1, 2, 0, false, err);
    id = cxr_nn_graph_bn(g, "ds_bn", id, 1e-5f, err);
    int32_t y = cxr_nn_graph_conv(g, "c1", a, 6, 3, 2, 1, false, err);
    y = cxr_nn_graph_bn(g, "b1", y, 1e-5f, err);
    y = cxr_nn_graph_relu(g, "r1", y, err);
    y = cxr_nn_graph_conv(g, "c2", y, 6, 3, 1, 1, false, err);
    y = cxr_nn_graph_bn(g, "b2", y, 1e-5f, err);
    y = cxr_nn_graph_add(g, "add", y, id, err);
    return cxr_nn_graph_relu(g, "r", y, err);
}

/* 16 channels, 3x3 stride 1: the shapes where oneDNN may pick its
 * Winograd kernels (forward, backward data and weights). */
static int32_t body_wide(struct cxr_nn_graph *g, int32_t x, char *err)
{
    int32_t a = cxr_nn_graph_conv(g, "c0", x, 16, 3, 1, 1, false, err);
    a = cxr_nn_graph_bn(g, "b0", a, 1e-5f, err);
    a = cxr_nn_graph_relu(g, "r0", a, err);
    a = cxr_nn_graph_conv(g, "c1", a, 16, 3, 1, 1, false, err);
    a = cxr_nn_graph_bn(g, "b1", a, 1e-5f, err);
    a = cxr_nn_graph_relu(g, "r1", a, err);
    return cxr_nn_graph_conv(g, "c2", a, 16, 3, 1, 1, false, err);
}

struct op_case {
    const char *name;
    body_fn body;
    int32_t c, h, w, batch;
};

/* Sizes: big enough that bf16 rounding does not dominate gradients that
 * batch norm and global pooling make small differences of large terms. */
static const struct op_case cases[] = {
    {"conv3x3+bias, gap, fc", body_conv, 3, 7, 6, 2},
    {"conv backward data (stride 2)", body_conv_conv, 2, 9, 8, 2},
    {"conv 7x7 stride 2 pad 3", body_conv7, 1, 12, 11, 2},
    {"conv 1x1 stride 2", body_conv1x1, 3, 8, 8, 2},
    {"batch norm (training)", body_bn, 2, 12, 11, 8},
    {"batch norm + relu", body_bn_relu, 2, 12, 12, 8},
    {"relu", body_relu, 2, 12, 12, 4},
    {"max pool 3/2/1", body_maxpool, 2, 9, 8, 2},
    {"residual add + relu, fan-out", body_residual, 2, 6, 6, 3},
    {"downsample block", body_block, 2, 12, 12, 6},
    {"wide 3x3 convs (Winograd shapes)", body_wide, 16, 12, 12, 4},
};

#define CLASSES 3

struct run {
    struct cxr_nn_backend *b;
    struct cxr_nn_graph *g;
    struct ref *R;
    double *input;
    float *finput;
    int32_t labels[16];
    float cw[CLASSES];
    int32_t n;
};

static struct cxr_nn_graph *build(const struct op_case *c)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_graph *g = cxr_nn_graph_new(c->c, c->h, c->w);
    ck_assert_ptr_nonnull(g);
    int32_t x = c->body(g, g->input, err);
    ck_assert_msg(x >= 0, "%s: %s", c->name, err);
    x = cxr_nn_graph_gap(g, "gap", x, err);
    ck_assert_msg(x >= 0, "%s", err);
    x = cxr_nn_graph_fc(g, "fc", x, CLASSES, err);
    ck_assert_msg(x >= 0, "%s", err);
    return g;
}

static struct cxr_nn_backend *open_cpu(enum cxr_nn_precision prec)
{
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CPU, .precision = prec, .threads = 2};
    struct cxr_nn_backend *b = NULL;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_nn_backend_open(&o, &b, NULL, err);
    if (st == CXR_ERR_UNSUPPORTED && prec == CXR_NN_PRECISION_BF16) {
        printf("SKIP bf16: %s\n", err);
        return NULL;
    }
    ck_assert_msg(st == CXR_OK, "open cpu: %s", err);
    return b;
}

/* Random parameters (He-like scale), bn gamma ~ U(0.5, 1.5), running
 * statistics random; uploaded; every trainable one gets a gradient buffer. */
static void setup(struct run *r, const struct op_case *c, uint64_t seed)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_graph *g = r->g;
    const struct cxr_nn_backend_i *bi = r->b->iface;
    r->n = c->batch;
    r->R = ref_new(g, r->n);
    uint64_t s = seed;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        for (int32_t k = 0; k < op->n_params; k++) {
            if (op->param[k] < 0)
                continue;
            struct cxr_nn_tensor *t = &g->params[op->param[k]].t;
            size_t cnt = t->nbytes / sizeof(float);
            double fan = t->ndim >= 2 ? (double)cnt / (double)t->shape[0] : 1.0;
            float *f = malloc(t->nbytes);
            for (size_t j = 0; j < cnt; j++) {
                double u = urand(&s);
                double v;
                if (op->kind == CXR_NN_OP_BN)
                    v = k == 0 ? 0.5 + u : k == 1 ? 0.4 * (u - 0.5) : k == 2 ? u - 0.5 : 0.5 + u;
                else if (k == 1)
                    v = 0.2 * (u - 0.5);
                else
                    v = (u - 0.5) * 2.0 * sqrt(3.0 / fan);
                f[j] = (float)v;
                r->R->param[op->param[k]][j] = (double)f[j];
            }
            ck_assert_int_eq(bi->buffer_alloc(r->b, t, err), CXR_OK);
            ck_assert_int_eq(bi->tensor_set(r->b, t, f, 0, t->nbytes, err), CXR_OK);
            free(f);
        }
    }
    ck_assert_int_gt(cxr_nn_graph_set_trainable(g, false, err), 0);
    for (int32_t p = 0; p < g->n_params; p++)
        if (g->params[p].trainable)
            ck_assert_int_eq(bi->buffer_alloc(r->b, &g->params[p].grad, err), CXR_OK);
    size_t in = vsize(g, g->input, r->n);
    r->input = malloc(in * sizeof(double));
    r->finput = malloc(in * sizeof(float));
    for (size_t j = 0; j < in; j++) {
        r->finput[j] = (float)(2.0 * urand(&s) - 1.0);
        r->input[j] = r->finput[j];
    }
    for (int32_t i = 0; i < r->n; i++)
        r->labels[i] = (int32_t)(urand(&s) * CLASSES) % CLASSES;
    r->cw[0] = 0.5f;
    r->cw[1] = 2.0f;
    r->cw[2] = 1.25f;
}

static void teardown(struct run *r)
{
    const struct cxr_nn_backend_i *bi = r->b->iface;
    bi->graph_release(r->b, r->g);
    for (int32_t p = 0; p < r->g->n_params; p++) {
        bi->buffer_free(r->b, &r->g->params[p].t);
        bi->buffer_free(r->b, &r->g->params[p].grad);
    }
    ref_free(r->R);
    cxr_nn_graph_free(r->g);
    free(r->input);
    free(r->finput);
    cxr_nn_backend_close(r->b);
}

static double rel_err(const float *got, const double *want, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double ref_total_loss(struct run *r)
{
    const struct cxr_nn_graph *g = r->g;
    ref_forward(r->R, r->input, true);
    return ref_loss(r->R->val[g->output], r->labels, r->n, CLASSES, r->cw);
}

/* Runs one case: forward/backward on the backend, then each parameter's
 * gradient against finite differences of the fp64 loss: each tensor within
 * `tol` (relative L2) and all of them together within `tol_all`. */
static void run_case(const struct op_case *c, enum cxr_nn_precision prec, double tol,
                     double tol_all, enum cxr_nn_conv_algo algo)
{
    struct run r = {0};
    char err[CXR_ERRLEN] = "";
    r.b = open_cpu(prec);
    if (!r.b)
        return;
    r.g = build(c);
    setup(&r, c, 0x5eed0000u + (uint64_t)(c - cases));
    const struct cxr_nn_backend_i *bi = r.b->iface;
    struct cxr_nn_graph *g = r.g;
    void *plan = NULL;
    struct cxr_nn_train_plan_options po = {.batch = r.n, .bn_momentum = 0.1f, .conv_algo = algo};
    ck_assert_msg(bi->train_plan(r.b, g, &po, &plan, err) == CXR_OK, "%s: plan: %s", c->name, err);
    float logits[16 * CLASSES], dlogits[16 * CLASSES];
    ck_assert_msg(bi->train_forward(r.b, plan, r.finput, logits, err) == CXR_OK, "%s", err);
    double loss;
    ck_assert_int_eq(
        cxr_nn_loss_cross_entropy(logits, r.labels, r.n, CLASSES, r.cw, dlogits, &loss, NULL),
        CXR_OK);
    ck_assert_msg(bi->train_backward(r.b, plan, dlogits, err) == CXR_OK, "%s", err);

    /* forward: logits and running statistics */
    double ref = ref_total_loss(&r);
    double e = rel_err(logits, r.R->val[g->output], (size_t)r.n * CLASSES);
    printf("%-32s %s logits rel %.2e, loss %.6f vs %.6f\n", c->name,
           prec == CXR_NN_PRECISION_BF16 ? "bf16" : "fp32", e, loss, ref);
    ck_assert_msg(e < tol, "%s: logits rel error %.3e", c->name, e);
    ck_assert_msg(fabs(loss - ref) < tol * fabs(ref) + 1e-7, "%s: loss %.8f vs %.8f", c->name, loss,
                  ref);
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (op->kind != CXR_NN_OP_BN)
            continue;
        int32_t ch = g->values[op->out].c;
        const struct cxr_nn_value *x = &g->values[op->in[0]];
        double cnt = (double)r.n * x->h * x->w;
        float rm[64], rv[64];
        double wm[64], wv[64];
        bi->tensor_get(r.b, &g->params[op->param[2]].t, rm, 0, (size_t)ch * 4, err);
        bi->tensor_get(r.b, &g->params[op->param[3]].t, rv, 0, (size_t)ch * 4, err);
        for (int32_t k = 0; k < ch; k++) {
            wm[k] = 0.9 * r.R->param[op->param[2]][k] + 0.1 * r.R->bmean[i][k];
            wv[k] = 0.9 * r.R->param[op->param[3]][k] + 0.1 * r.R->bvar[i][k] * cnt / (cnt - 1);
        }
        ck_assert_msg(rel_err(rm, wm, (size_t)ch) < tol && rel_err(rv, wv, (size_t)ch) < tol,
                      "%s: %s running statistics %.3e %.3e", c->name, op->name,
                      rel_err(rm, wm, (size_t)ch), rel_err(rv, wv, (size_t)ch));
    }
    /* backward: every gradient against central differences */
    const double h = 1e-6;
    double all_num = 0, all_den = 0;
    for (int32_t p = 0; p < g->n_params; p++) {
        struct cxr_nn_param *pp = &g->params[p];
        if (!pp->trainable)
            continue;
        size_t cnt = pp->t.nbytes / sizeof(float);
        float *got = malloc(pp->t.nbytes);
        double *fd = malloc(cnt * sizeof(double));
        ck_assert_int_eq(bi->tensor_get(r.b, &pp->grad, got, 0, pp->t.nbytes, err), CXR_OK);
        /* large tensors: a fixed sample of 96 elements (stride through it) */
        size_t step = cnt > 192 ? cnt / 96 : 1, k = 0;
        for (size_t j = 0; j < cnt; j += step, k++) {
            double keep = r.R->param[p][j];
            r.R->param[p][j] = keep + h;
            double lp = ref_total_loss(&r);
            r.R->param[p][j] = keep - h;
            double lm = ref_total_loss(&r);
            r.R->param[p][j] = keep;
            fd[k] = (lp - lm) / (2 * h);
            got[k] = got[j];
        }
        cnt = k;
        double ge = rel_err(got, fd, cnt);
        for (size_t j = 0; j < cnt; j++) {
            all_num += ((double)got[j] - fd[j]) * ((double)got[j] - fd[j]);
            all_den += fd[j] * fd[j];
        }
        printf("    grad %-18s (%4zu) rel %.2e\n", pp->t.name, cnt, ge);
        /* bf16: a tensor of a few elements is a few sums, each within
         * rounding of a difference of nearly equal terms: bounded only in
         * the total below */
        if (prec == CXR_NN_PRECISION_BF16 && cnt < 16)
            ge = 0.0;
        ck_assert_msg(ge < tol, "%s: gradient of %s: rel error %.3e (tol %.1e)", c->name,
                      pp->t.name, ge, tol);
        free(got);
        free(fd);
    }
    double all = sqrt(all_num / all_den);
    printf("    all gradients rel %.2e\n", all);
    ck_assert_msg(all < tol_all, "%s: all gradients together: rel error %.3e (tol %.1e)", c->name,
                  all, tol_all);
    bi->train_plan_free(r.b, plan);
    teardown(&r);
}

START_TEST(test_backward_fp32)
{
    run_case(&cases[_i], CXR_NN_PRECISION_FP32, 1e-4, 1e-5, CXR_NN_CONV_AUTO);
}
END_TEST

/* The same with every 3x3 stride-1 convolution forced to oneDNN's Winograd
 * kernels (AUTO takes them on large layers) and forced direct. */
START_TEST(test_backward_conv_algos)
{
    const struct op_case *wide = &cases[sizeof cases / sizeof cases[0] - 1];
    run_case(wide, CXR_NN_PRECISION_FP32, 1e-4, 1e-5,
             _i == 0 ? CXR_NN_CONV_WINOGRAD : CXR_NN_CONV_DIRECT);
    run_case(&cases[8], CXR_NN_PRECISION_FP32, 1e-4, 1e-5,
             _i == 0 ? CXR_NN_CONV_WINOGRAD : CXR_NN_CONV_DIRECT);
}
END_TEST

START_TEST(test_backward_bf16)
{
    /* bf16 keeps 8 significant bits: gradients through batch norm and the
     * global pool are differences of nearly equal terms, so a few percent
     * of relative error is bf16 itself (fp32 is within 1e-6 on the same
     * cases), worst on small tensors like a batch norm's 4 weights; a
     * layout or indexing mistake shows as errors near 1. */
    run_case(&cases[_i], CXR_NN_PRECISION_BF16, 0.3, 3e-2, CXR_NN_CONV_AUTO);
}
END_TEST

/* A frozen backbone: batch norm in eval mode (running statistics, not
 * updated), only fc trains, nothing before the fc gets a gradient. */
START_TEST(test_frozen_backbone)
{
    struct run r = {0};
    char err[CXR_ERRLEN] = "";
    r.b = open_cpu(CXR_NN_PRECISION_FP32);
    const struct op_case *c = &cases[5]; /* bn + relu */
    r.g = build(c);
    setup(&r, c, 77);
    struct cxr_nn_graph *g = r.g;
    const struct cxr_nn_backend_i *bi = r.b->iface;
    ck_assert_int_eq(cxr_nn_graph_set_trainable(g, true, err), 2);
    for (int32_t p = 0; p < g->n_params; p++)
        if (g->params[p].trainable && !g->params[p].grad.extra)
            ck_assert_int_eq(bi->buffer_alloc(r.b, &g->params[p].grad, err), CXR_OK);
    void *plan = NULL;
    struct cxr_nn_train_plan_options po = {.batch = r.n, .bn_frozen = true, .bn_momentum = 0.1f};
    ck_assert_msg(bi->train_plan(r.b, g, &po, &plan, err) == CXR_OK, "%s", err);
    float logits[16 * CLASSES], dlogits[16 * CLASSES];
    ck_assert_int_eq(bi->train_forward(r.b, plan, r.finput, logits, err), CXR_OK);
    ref_forward(r.R, r.input, false);
    ck_assert(rel_err(logits, r.R->val[g->output], (size_t)r.n * CLASSES) < 1e-4);
    double loss;
    ck_assert_int_eq(
        cxr_nn_loss_cross_entropy(logits, r.labels, r.n, CLASSES, r.cw, dlogits, &loss, NULL),
        CXR_OK);
    ck_assert_int_eq(bi->train_backward(r.b, plan, dlogits, err), CXR_OK);
    /* running statistics untouched */
    for (int32_t p = 0; p < g->n_params; p++) {
        const char *nm = g->params[p].t.name;
        if (!strstr(nm, "running"))
            continue;
        float v[64];
        size_t cnt = g->params[p].t.nbytes / 4;
        bi->tensor_get(r.b, &g->params[p].t, v, 0, g->params[p].t.nbytes, err);
        for (size_t j = 0; j < cnt; j++)
            ck_assert_float_eq(v[j], (float)r.R->param[p][j]);
    }
    /* the fc gradient against finite differences of the eval-mode loss */
    for (int32_t p = 0; p < g->n_params; p++) {
        struct cxr_nn_param *pp = &g->params[p];
        if (!pp->trainable)
            continue;
        ck_assert_ptr_nonnull(strstr(pp->t.name, "fc."));
        size_t cnt = pp->t.nbytes / 4;
        float got[64];
        double fd[64];
        bi->tensor_get(r.b, &pp->grad, got, 0, pp->t.nbytes, err);
        for (size_t j = 0; j < cnt; j++) {
            double keep = r.R->param[p][j], l[2];
            for (int s = 0; s < 2; s++) {
                r.R->param[p][j] = keep + (s ? -1e-6 : 1e-6);
                ref_forward(r.R, r.input, false);
                l[s] = ref_loss(r.R->val[g->output], r.labels, r.n, CLASSES, r.cw);
            }
            r.R->param[p][j] = keep;
            fd[j] = (l[0] - l[1]) / 2e-6;
        }
        ck_assert_msg(rel_err(got, fd, cnt) < 1e-4, "%s %.3e", pp->t.name, rel_err(got, fd, cnt));
    }
    bi->train_plan_free(r.b, plan);
    teardown(&r);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_train");
    TCase *tc = tcase_create("backward");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_backward_fp32, 0, sizeof cases / sizeof cases[0]);
    tcase_add_loop_test(tc, test_backward_bf16, 0, sizeof cases / sizeof cases[0]);
    tcase_add_loop_test(tc, test_backward_conv_algos, 0, 2);
    tcase_add_test(tc, test_frozen_backbone);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
