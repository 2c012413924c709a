/* check_nn_cuda_train.c — training on the CUDA backend against the CPU
 * backend's training entries (backend.h "training"), all tagged "gpu" (CTest:
 * check_nn_cuda_train_gpu): without a device (the build machines), or when
 * the CPU backend of this build cannot train, each test records a skip
 * (cxr_test_skip) and CTest reports the suite skipped, not passed.
 *
 *  - backward ops: small graphs that exercise each op's backward (conv with
 *    and without bias and stride, batch norm in training mode, ReLU, max
 *    pool, the residual add, a value read by two ops, global average pool,
 *    fc) and small resnet18/resnet50: logits, running statistics after the
 *    training forward, and every parameter gradient, GPU vs CPU, in fp32
 *    (TF32 off: CXR_CUDA_TF32=0), fp16 (loss-scaled) and bf16;
 *  - optimizer: AdamW and SGD (momentum, Nesterov) updates equal optim.c's;
 *  - tensor_sumsq against a double sum on the host;
 *  - one whole training step (forward, cross-entropy, backward, clipping
 *    factor, SGD update) gives the CPU's parameter update.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../nn/src/backend.h"
#include "../../nn/src/graph.h"
#include "cxr/nn.h"
#include "test_util.h"

#define BATCH 4

static uint64_t rng_state;
static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static double rel_error(const float *got, const float *want, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)want[i];
        num += d * d;
        den += (double)want[i] * (double)want[i];
    }
    if (!isfinite(num))
        return INFINITY;
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static const char *prec_name(enum cxr_nn_precision p)
{
    return p == CXR_NN_PRECISION_FP16 ? "fp16" : p == CXR_NN_PRECISION_BF16 ? "bf16" : "fp32";
}

/* Gradients pass through several roundings in fp16/bf16: 5e-2 for them
 * (a wrong backward is off by O(1)); fp32 runs without TF32. */
static double tol_for(enum cxr_nn_precision p) { return p == CXR_NN_PRECISION_FP32 ? 1e-3 : 5e-2; }

/* The noise floor. Whole networks with batch norm in training mode on a
 * batch of 4 amplify rounding differences: measured on an H200 and on the
 * CPU alone, two CORRECT CPU computations of the resnet50 (width 8) case,
 * direct against Winograd convolutions, differ by 1.2e-2 at conv1.weight,
 * and CPU bf16 against CPU fp32 by 0.42 on resnet18 - the same figures the
 * GPU gave. So each comparison GPU-vs-CPU-fp32 is also made for a second
 * CPU reference (fp32: Winograd instead of direct; fp16/bf16: the CPU's
 * bf16, fp16 having the finer mantissa) and the GPU may differ from the
 * CPU by max(tol, FLOOR_FACTOR x that reference's difference). A wrong
 * backward op still fails: its error does not follow the floor (the
 * single-op cases have floors near 0, so the fixed tolerance rules them). */
#define FLOOR_FACTOR 3.0

static double allowed(double tol, double floor_err)
{
    return isfinite(floor_err) ? fmax(tol, FLOOR_FACTOR * floor_err) : tol;
}

static struct cxr_nn_backend *open_gpu(enum cxr_nn_precision prec)
{
    setenv("CXR_CUDA_TF32", "0", 1);
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CUDA, .precision = prec};
    struct cxr_nn_backend *b = NULL;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_nn_backend_open(&o, &b, NULL, err);
    if (st == CXR_ERR_NN_NO_DEVICE) {
        cxr_test_skip("gpu: no CUDA device (%s)", err);
        return NULL;
    }
    ck_assert_msg(st == CXR_OK, "open cuda %s: %s", prec_name(prec), err);
    ck_assert_msg(b->iface->train_plan && b->iface->optim_step, "cuda backend cannot train");
    return b;
}

/* The CPU reference, or NULL (with a recorded skip) when it cannot train. */
/* The second CPU reference for prec (see FLOOR_FACTOR), or NULL with a
 * note when this CPU cannot run it (no bf16): the fixed tolerance alone. */
static struct cxr_nn_backend *open_cpu_floor(enum cxr_nn_precision prec)
{
    struct cxr_nn_backend_options o = {
        .kind = CXR_NN_BACKEND_CPU,
        .precision = prec == CXR_NN_PRECISION_FP32 ? CXR_NN_PRECISION_FP32 : CXR_NN_PRECISION_BF16};
    struct cxr_nn_backend *b = NULL;
    char err[CXR_ERRLEN] = "";
    if (cxr_nn_backend_open(&o, &b, NULL, err) != CXR_OK || !b->iface->train_plan) {
        printf("note: no CPU %s reference for the noise floor (%s): fixed tolerance only\n",
               prec_name(o.precision), err);
        if (b)
            cxr_nn_backend_close(b);
        return NULL;
    }
    return b;
}

static struct cxr_nn_backend *open_cpu(void)
{
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CPU,
                                       .precision = CXR_NN_PRECISION_FP32};
    struct cxr_nn_backend *b = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_nn_backend_open(&o, &b, NULL, err) == CXR_OK, "open cpu: %s", err);
    if (!b->iface->train_plan || !b->iface->optim_step || !b->iface->tensor_sumsq) {
        cxr_test_skip("gpu training parity: the CPU backend of this build has no training entries");
        cxr_nn_backend_close(b);
        return NULL;
    }
    return b;
}

/* ------------------------------------------------------------ graphs */

typedef int32_t (*graph_fn)(struct cxr_nn_graph *g, char *err);

static int32_t head(struct cxr_nn_graph *g, int32_t v, char *err)
{
    v = cxr_nn_graph_gap(g, "pool", v, err);
    return cxr_nn_graph_fc(g, "fc", v, 3, err);
}
static int32_t g_conv_bn_relu(struct cxr_nn_graph *g, char *err)
{
    int32_t v = cxr_nn_graph_conv(g, "c", g->input, 16, 3, 1, 1, false, err);
    v = cxr_nn_graph_bn(g, "b", v, 1e-5f, err);
    v = cxr_nn_graph_relu(g, "r", v, err);
    return head(g, v, err);
}
static int32_t g_stem(struct cxr_nn_graph *g, char *err)
{
    int32_t v = cxr_nn_graph_conv(g, "c", g->input, 8, 7, 2, 3, true, err);
    v = cxr_nn_graph_maxpool(g, "m", v, 3, 2, 1, err);
    return head(g, v, err);
}
/* conv -> bn -> relu feeds both a block and its identity: grads add up */
static int32_t g_block(struct cxr_nn_graph *g, char *err)
{
    int32_t x = cxr_nn_graph_conv(g, "c0", g->input, 16, 3, 1, 1, false, err);
    x = cxr_nn_graph_bn(g, "b0", x, 1e-5f, err);
    x = cxr_nn_graph_relu(g, "r0", x, err);
    int32_t v = cxr_nn_graph_conv(g, "c1", x, 16, 3, 1, 1, false, err);
    v = cxr_nn_graph_bn(g, "b1", v, 1e-5f, err);
    v = cxr_nn_graph_relu(g, "r1", v, err);
    v = cxr_nn_graph_conv(g, "c2", v, 16, 3, 1, 1, false, err);
    v = cxr_nn_graph_bn(g, "b2", v, 1e-5f, err);
    v = cxr_nn_graph_add(g, "a", v, x, err);
    v = cxr_nn_graph_relu(g, "r", v, err);
    return head(g, v, err);
}
static int32_t g_down(struct cxr_nn_graph *g, char *err)
{
    int32_t x = cxr_nn_graph_conv(g, "c0", g->input, 8, 3, 1, 1, false, err);
    int32_t s = cxr_nn_graph_conv(g, "d0", x, 24, 1, 2, 0, false, err);
    s = cxr_nn_graph_bn(g, "d1", s, 1e-5f, err);
    int32_t v = cxr_nn_graph_conv(g, "c1", x, 24, 3, 2, 1, false, err);
    v = cxr_nn_graph_bn(g, "b1", v, 1e-5f, err);
    v = cxr_nn_graph_relu(g, "r1", v, err);
    v = cxr_nn_graph_add(g, "a", v, s, err);
    v = cxr_nn_graph_relu(g, "r", v, err);
    return head(g, v, err);
}

struct tcase {
    const char *what;
    graph_fn build; /* NULL: a ResNet */
    enum cxr_nn_arch arch;
    int32_t c, h, w;
};

static const struct tcase cases[] = {
    {"conv+bn+relu", g_conv_bn_relu, 0, 3, 10, 9},
    {"conv 7x7/2 with bias + maxpool", g_stem, 0, 1, 23, 19},
    {"residual block (two readers)", g_block, 0, 4, 8, 8},
    {"downsampling block", g_down, 0, 5, 11, 10},
    {"resnet18 width 8", NULL, CXR_NN_ARCH_RESNET18, 1, 64, 64},
    {"resnet50 width 8", NULL, CXR_NN_ARCH_RESNET50, 1, 64, 64},
};

static struct cxr_nn_graph *build(const struct tcase *tc)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_graph *g = NULL;
    if (tc->build) {
        g = cxr_nn_graph_new(tc->c, tc->h, tc->w);
        ck_assert(g != NULL);
        ck_assert_msg(tc->build(g, err) >= 0, "%s: %s", tc->what, err);
        return g;
    }
    struct cxr_nn_resnet_spec spec;
    ck_assert(cxr_nn_resnet_spec_make(tc->arch, tc->c, 8, 3, &spec) == CXR_OK);
    /* CXR_TEST_NET_INPUT=S: the whole-network cases at S x S instead (diagnosis:
     * more rows per batch-norm channel in the deep layers) */
    int32_t side = getenv("CXR_TEST_NET_INPUT") ? atoi(getenv("CXR_TEST_NET_INPUT")) : 0;
    int32_t h = side >= 32 ? side : tc->h, w = side >= 32 ? side : tc->w;
    ck_assert_msg(cxr_nn_graph_build_resnet(&spec, h, w, &g, err) == CXR_OK, "%s", err);
    return g;
}

/* One backend's side: its graph with parameters and gradients in storage. */
struct side {
    struct cxr_nn_backend *b;
    struct cxr_nn_graph *g;
    void *plan;
};

/* Random parameter values for g (shared by both sides). */
static float **make_values(const struct cxr_nn_graph *g, uint64_t seed)
{
    float **v = calloc((size_t)g->n_params, sizeof *v);
    rng_state = seed;
    for (int32_t i = 0; i < g->n_params; i++) {
        const struct cxr_nn_tensor *t = &g->params[i].t;
        size_t n = t->nbytes / sizeof(float);
        double fan = t->ndim >= 2 ? (double)n / (double)t->shape[0] : 1.0;
        const char *nm = t->name;
        size_t l = strlen(nm);
        bool var = l > 11 && !strcmp(nm + l - 11, "running_var");
        bool mean = l > 12 && !strcmp(nm + l - 12, "running_mean");
        bool gamma = t->ndim == 1 && l > 7 && !strcmp(nm + l - 7, ".weight");
        v[i] = malloc(t->nbytes);
        for (size_t k = 0; k < n; k++) {
            double u = urand(), x;
            if (var || gamma)
                x = 0.5 + u; /* variances and bn scales: positive */
            else if (mean)
                x = u - 0.5;
            else if (t->ndim >= 2)
                x = (u - 0.5) * 2.0 * sqrt(3.0 / fan); /* conv and fc weights */
            else
                x = 0.2 * (u - 0.5); /* biases */
            v[i][k] = (float)x;
        }
    }
    return v;
}

static void side_setup_algo(struct side *sd, struct cxr_nn_backend *b, const struct tcase *tc,
                            float **values, enum cxr_nn_conv_algo algo)
{
    char err[CXR_ERRLEN] = "";
    const struct cxr_nn_backend_i *bi = b->iface;
    sd->b = b;
    sd->g = build(tc);
    sd->plan = NULL;
    for (int32_t i = 0; i < sd->g->n_params; i++) {
        struct cxr_nn_tensor *t = &sd->g->params[i].t;
        ck_assert_msg(bi->buffer_alloc(b, t, err) == CXR_OK, "%s", err);
        ck_assert_msg(bi->tensor_set(b, t, values[i], 0, t->nbytes, err) == CXR_OK, "%s", err);
    }
    ck_assert_int_gt(cxr_nn_graph_set_trainable(sd->g, false, err), 0);
    for (int32_t i = 0; i < sd->g->n_params; i++)
        if (sd->g->params[i].trainable)
            ck_assert_msg(bi->buffer_alloc(b, &sd->g->params[i].grad, err) == CXR_OK, "%s", err);
    struct cxr_nn_train_plan_options po = {.batch = BATCH, .bn_momentum = 0.1f, .conv_algo = algo};
    ck_assert_msg(bi->train_plan(b, sd->g, &po, &sd->plan, err) == CXR_OK, "%s plan: %s",
                  cxr_nn_backend_name(b), err);
}

static void side_setup(struct side *sd, struct cxr_nn_backend *b, const struct tcase *tc,
                       float **values)
{
    side_setup_algo(sd, b, tc, values, CXR_NN_CONV_AUTO);
}

/* The floor reference's side: Winograd for fp32, else as it comes. */
static void side_setup_floor(struct side *sd, struct cxr_nn_backend *b, const struct tcase *tc,
                             float **values, enum cxr_nn_precision prec)
{
    side_setup_algo(sd, b, tc, values,
                    prec == CXR_NN_PRECISION_FP32 ? CXR_NN_CONV_WINOGRAD : CXR_NN_CONV_AUTO);
}

static void side_free(struct side *sd)
{
    const struct cxr_nn_backend_i *bi = sd->b->iface;
    bi->train_plan_free(sd->b, sd->plan);
    bi->graph_release(sd->b, sd->g);
    for (int32_t i = 0; i < sd->g->n_params; i++) {
        bi->buffer_free(sd->b, &sd->g->params[i].t);
        bi->buffer_free(sd->b, &sd->g->params[i].grad);
    }
    cxr_nn_graph_free(sd->g);
}

/* Tensor t of side sd, read back to the host (caller frees). */
static float *get(struct side *sd, const struct cxr_nn_tensor *t)
{
    char err[CXR_ERRLEN] = "";
    float *d = malloc(t->nbytes);
    ck_assert_msg(sd->b->iface->tensor_get(sd->b, t, d, 0, t->nbytes, err) == CXR_OK, "%s: %s",
                  t->name, err);
    return d;
}

static size_t input_count(const struct cxr_nn_graph *g)
{
    const struct cxr_nn_value *v = &g->values[g->input];
    return (size_t)BATCH * v->c * v->h * v->w;
}

/* ------------------------------------------------------------ backward parity */

static void backward_case(const struct tcase *tc, enum cxr_nn_precision prec)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_backend *gpu = open_gpu(prec);
    if (!gpu)
        return;
    struct cxr_nn_backend *cpu = open_cpu();
    if (!cpu) {
        cxr_nn_backend_close(gpu);
        return;
    }
    struct cxr_nn_backend *fcpu = open_cpu_floor(prec); /* may be NULL */
    struct cxr_nn_graph *shape = build(tc);
    float **values = make_values(shape, 0x5EED0000u + (uint64_t)(tc - cases));
    struct side sc, sg, sf;
    side_setup(&sc, cpu, tc, values);
    side_setup(&sg, gpu, tc, values);
    if (fcpu)
        side_setup_floor(&sf, fcpu, tc, values, prec);
    size_t in_n = input_count(shape);
    float *in = malloc(in_n * sizeof *in);
    for (size_t i = 0; i < in_n; i++)
        in[i] = (float)(2.0 * urand() - 1.0);
    float lc[BATCH * 3], lg[BATCH * 3], lf[BATCH * 3], dl[BATCH * 3];
    ck_assert_msg(cpu->iface->train_forward(cpu, sc.plan, in, lc, err) == CXR_OK, "%s", err);
    ck_assert_msg(gpu->iface->train_forward(gpu, sg.plan, in, lg, err) == CXR_OK, "%s", err);
    double tol = tol_for(prec), e = rel_error(lg, lc, BATCH * 3), fe = NAN;
    if (fcpu) {
        ck_assert_msg(fcpu->iface->train_forward(fcpu, sf.plan, in, lf, err) == CXR_OK, "%s", err);
        fe = rel_error(lf, lc, BATCH * 3);
    }
    ck_assert_msg(e <= allowed(tol, fe), "%s %s: logits differ by %.3e (CPU reference floor %.3e)",
                  tc->what, prec_name(prec), e, fe);
    for (int i = 0; i < BATCH * 3; i++)
        dl[i] = (float)((urand() - 0.5) * 0.5);
    ck_assert_msg(cpu->iface->train_backward(cpu, sc.plan, dl, err) == CXR_OK, "%s", err);
    ck_assert_msg(gpu->iface->train_backward(gpu, sg.plan, dl, err) == CXR_OK, "%s", err);
    if (fcpu)
        ck_assert_msg(fcpu->iface->train_backward(fcpu, sf.plan, dl, err) == CXR_OK, "%s", err);
    /* every parameter is compared before the verdict, and each one out of
     * tolerance is printed (CXR_TEST_VERBOSE: all of them): the list locates
     * a faulty backward op (errors flow towards conv1, so the deepest failing
     * layer is the lead) */
    double worst = 0, worst_ratio = 0;
    int bad = 0;
    char first[200] = "";
    for (int32_t i = 0; i < shape->n_params; i++) {
        struct cxr_nn_param *pc = &sc.g->params[i], *pg = &sg.g->params[i];
        size_t n = pc->t.nbytes / sizeof(float);
        const struct cxr_nn_tensor *tc_t = pc->trainable ? &pc->grad : &pc->t;
        const struct cxr_nn_tensor *tg_t = pg->trainable ? &pg->grad : &pg->t;
        float *a = get(&sc, tc_t), *b = get(&sg, tg_t);
        double d = rel_error(b, a, n); /* gradients; running statistics for the others */
        double fd = NAN;
        if (fcpu) {
            struct cxr_nn_param *pf = &sf.g->params[i];
            float *f = get(&sf, pf->trainable ? &pf->grad : &pf->t);
            fd = rel_error(f, a, n);
            free(f);
        }
        double lim = allowed(tol, fd);
        worst = fmax(worst, d);
        worst_ratio = fmax(worst_ratio, d / lim);
        bool ok = d <= lim;
        if (!ok || getenv("CXR_TEST_VERBOSE")) {
            printf("  %s %s: %s%s differs by %.3e (floor %.3e, allowed %.3e)%s\n", tc->what,
                   prec_name(prec), pc->t.name, pc->trainable ? " gradient" : "", d, fd, lim,
                   ok ? "" : " FAIL");
            fflush(stdout); /* a failed check ends the forked test without flushing */
            if (!ok && !bad++)
                snprintf(first, sizeof first, "%s%s differs by %.3e (allowed %.3e)", pc->t.name,
                         pc->trainable ? " gradient" : "", d, lim);
        }
        free(a);
        free(b);
    }
    ck_assert_msg(bad == 0, "%s %s: %d of %d tensors out of tolerance, first %s", tc->what,
                  prec_name(prec), bad, (int)shape->n_params, first);
    printf("%s %s: logits %.2e (floor %.2e), worst gradient/statistic %.2e, worst error/allowed "
           "%.2f\n",
           tc->what, prec_name(prec), e, fe, worst, worst_ratio);
    for (int32_t i = 0; i < shape->n_params; i++)
        free(values[i]);
    free(values);
    free(in);
    side_free(&sc);
    side_free(&sg);
    if (fcpu) {
        side_free(&sf);
        cxr_nn_backend_close(fcpu);
    }
    cxr_nn_graph_free(shape);
    cxr_nn_backend_close(cpu);
    cxr_nn_backend_close(gpu);
}

START_TEST(test_backward_fp32) { backward_case(&cases[_i], CXR_NN_PRECISION_FP32); }
END_TEST

START_TEST(test_backward_fp16) { backward_case(&cases[_i], CXR_NN_PRECISION_FP16); }
END_TEST

START_TEST(test_backward_bf16) { backward_case(&cases[_i], CXR_NN_PRECISION_BF16); }
END_TEST

/* ------------------------------------------------------------ optimizer, sumsq */

static struct cxr_nn_tensor vec_tensor(const char *name, int64_t n)
{
    struct cxr_nn_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", name);
    t.dtype = CXR_NN_DTYPE_F32;
    t.ndim = 1;
    t.shape[0] = n;
    t.nbytes = (size_t)n * sizeof(float);
    return t;
}

START_TEST(test_optim_and_sumsq)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_backend *gpu = open_gpu(CXR_NN_PRECISION_FP32);
    if (!gpu)
        return;
    struct cxr_nn_backend *cpu = open_cpu();
    if (!cpu) {
        cxr_nn_backend_close(gpu);
        return;
    }
    const int64_t n = 1003;
    float *vals[4];
    rng_state = 77;
    for (int k = 0; k < 4; k++) {
        vals[k] = malloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++)
            vals[k][i] = (float)(k == 3 ? urand() * 0.01 : urand() - 0.5);
    }
    /* tensor_sumsq: a double sum on the host */
    double want = 0, got = 0;
    for (int64_t i = 0; i < n; i++)
        want += (double)vals[1][i] * vals[1][i];
    struct cxr_nn_tensor ts = vec_tensor("g", n);
    ck_assert(gpu->iface->buffer_alloc(gpu, &ts, err) == CXR_OK);
    ck_assert(gpu->iface->tensor_set(gpu, &ts, vals[1], 0, ts.nbytes, err) == CXR_OK);
    ck_assert_msg(gpu->iface->tensor_sumsq(gpu, &ts, &got, err) == CXR_OK, "%s", err);
    ck_assert_msg(fabs(got - want) <= 1e-9 * want, "sumsq %.17g, want %.17g", got, want);
    gpu->iface->buffer_free(gpu, &ts);
    static const struct cxr_nn_optim_step hs[] = {
        {.kind = CXR_NN_OPTIM_ADAMW,
         .lr = 3e-3,
         .weight_decay = 1e-2,
         .beta1 = 0.9,
         .beta2 = 0.999,
         .eps = 1e-8,
         .grad_scale = 0.7},
        {.kind = CXR_NN_OPTIM_SGD,
         .lr = 0.1,
         .weight_decay = 1e-4,
         .momentum = 0.9,
         .nesterov = true,
         .grad_scale = 1.0},
        {.kind = CXR_NN_OPTIM_SGD, .lr = 0.05, .momentum = 0.0, .grad_scale = 1.0},
    };
    for (size_t h = 0; h < sizeof hs / sizeof hs[0]; h++) {
        struct cxr_nn_backend *bs[2] = {cpu, gpu};
        float *res[2][3];
        for (int s = 0; s < 2; s++) {
            struct cxr_nn_backend *b = bs[s];
            struct cxr_nn_tensor t[4] = {vec_tensor("p", n), vec_tensor("g", n),
                                         vec_tensor("s0", n), vec_tensor("s1", n)};
            for (int k = 0; k < 4; k++) {
                ck_assert(b->iface->buffer_alloc(b, &t[k], err) == CXR_OK);
                ck_assert(b->iface->tensor_set(b, &t[k], vals[k], 0, t[k].nbytes, err) == CXR_OK);
            }
            for (int64_t step = 1; step <= 2; step++) {
                struct cxr_nn_optim_step st = hs[h];
                st.step = step;
                ck_assert_msg(b->iface->optim_step(b, &t[0], &t[1], &t[2], &t[3], &st, err) ==
                                  CXR_OK,
                              "%s: %s", cxr_nn_backend_name(b), err);
            }
            for (int k = 0; k < 3; k++) {
                res[s][k] = malloc(t[0].nbytes);
                ck_assert(b->iface->tensor_get(b, k == 0 ? &t[0] : &t[k + 1], res[s][k], 0,
                                               t[0].nbytes, err) == CXR_OK);
            }
            for (int k = 0; k < 4; k++)
                b->iface->buffer_free(b, &t[k]);
        }
        for (int k = 0; k < 3; k++) {
            double d = rel_error(res[1][k], res[0][k], (size_t)n);
            ck_assert_msg(d <= 1e-6, "optimizer %zu: %s differs by %.3e", h,
                          k == 0   ? "parameter"
                          : k == 1 ? "state0"
                                   : "state1",
                          d);
            free(res[0][k]);
            free(res[1][k]);
        }
    }
    for (int k = 0; k < 4; k++)
        free(vals[k]);
    cxr_nn_backend_close(cpu);
    cxr_nn_backend_close(gpu);
}
END_TEST

/* ------------------------------------------------------------ one training step */

/* Mean cross-entropy of rows of 3 logits: dLoss/dlogits. */
static void cross_entropy(const float *logits, const int32_t *labels, float *dlogits)
{
    for (int r = 0; r < BATCH; r++) {
        const float *l = logits + 3 * r;
        double m = fmax(l[0], fmax(l[1], l[2])), s = 0, p[3];
        for (int j = 0; j < 3; j++)
            s += (p[j] = exp((double)l[j] - m));
        for (int j = 0; j < 3; j++)
            dlogits[3 * r + j] = (float)((p[j] / s - (j == labels[r])) / BATCH);
    }
}

static void step_case(enum cxr_nn_precision prec)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_backend *gpu = open_gpu(prec);
    if (!gpu)
        return;
    struct cxr_nn_backend *cpu = open_cpu();
    if (!cpu) {
        cxr_nn_backend_close(gpu);
        return;
    }
    struct cxr_nn_backend *fcpu = open_cpu_floor(prec); /* may be NULL */
    const struct tcase *tc = &cases[4];                 /* resnet18 width 8 */
    struct cxr_nn_graph *shape = build(tc);
    float **values = make_values(shape, 4242);
    struct side sd[3]; /* CPU fp32, GPU, the CPU floor reference */
    int nsides = fcpu ? 3 : 2;
    side_setup(&sd[0], cpu, tc, values);
    side_setup(&sd[1], gpu, tc, values);
    if (fcpu)
        side_setup_floor(&sd[2], fcpu, tc, values, prec);
    size_t in_n = input_count(shape);
    float *in = malloc(in_n * sizeof *in);
    for (size_t i = 0; i < in_n; i++)
        in[i] = (float)(2.0 * urand() - 1.0);
    const int32_t labels[BATCH] = {0, 2, 1, 2};
    for (int s = 0; s < nsides; s++) {
        struct cxr_nn_backend *b = sd[s].b;
        float logits[BATCH * 3], dl[BATCH * 3];
        ck_assert_msg(b->iface->train_forward(b, sd[s].plan, in, logits, err) == CXR_OK, "%s", err);
        cross_entropy(logits, labels, dl);
        ck_assert_msg(b->iface->train_backward(b, sd[s].plan, dl, err) == CXR_OK, "%s", err);
        double ss = 0;
        for (int32_t i = 0; i < sd[s].g->n_params; i++) {
            double v = 0;
            if (!sd[s].g->params[i].trainable)
                continue;
            ck_assert(b->iface->tensor_sumsq(b, &sd[s].g->params[i].grad, &v, err) == CXR_OK);
            ss += v;
        }
        ck_assert_msg(isfinite(ss), "%s %s: the gradients are not finite", cxr_nn_backend_name(b),
                      prec_name(prec));
        double clip = 1.0 / (sqrt(ss) + 1e-6); /* clip_grad_norm_(1.0) */
        struct cxr_nn_optim_step h = {.kind = CXR_NN_OPTIM_SGD,
                                      .step = 1,
                                      .lr = 0.1,
                                      .weight_decay = 1e-4,
                                      .grad_scale = clip < 1 ? clip : 1};
        for (int32_t i = 0; i < sd[s].g->n_params; i++) {
            if (!sd[s].g->params[i].trainable)
                continue;
            /* plain SGD still takes a (momentum) state tensor: zeros */
            int64_t n = (int64_t)(sd[s].g->params[i].t.nbytes / sizeof(float));
            struct cxr_nn_tensor m = vec_tensor("momentum", n);
            float *zero = calloc((size_t)n, sizeof *zero);
            ck_assert(b->iface->buffer_alloc(b, &m, err) == CXR_OK);
            ck_assert(b->iface->tensor_set(b, &m, zero, 0, m.nbytes, err) == CXR_OK);
            ck_assert_msg(b->iface->optim_step(b, &sd[s].g->params[i].t, &sd[s].g->params[i].grad,
                                               &m, NULL, &h, err) == CXR_OK,
                          "%s: %s", cxr_nn_backend_name(b), err);
            b->iface->buffer_free(b, &m);
            free(zero);
        }
    }
    /* compare the updates (new - old) of every parameter, and the running
     * statistics, against CPU fp32, allowing FLOOR_FACTOR x the floor */
    double worst = 0, worst_ratio = 0;
    for (int32_t i = 0; i < shape->n_params; i++) {
        const struct cxr_nn_tensor *t = &sd[0].g->params[i].t;
        size_t n = t->nbytes / sizeof(float);
        float *v[3] = {NULL, NULL, NULL};
        for (int s = 0; s < nsides; s++) {
            v[s] = get(&sd[s], &sd[s].g->params[i].t);
            if (sd[0].g->params[i].trainable)
                for (size_t k = 0; k < n; k++)
                    v[s][k] -= values[i][k];
        }
        double d = rel_error(v[1], v[0], n), fd = fcpu ? rel_error(v[2], v[0], n) : NAN;
        double lim = allowed(tol_for(prec), fd);
        worst = fmax(worst, d);
        worst_ratio = fmax(worst_ratio, d / lim);
        ck_assert_msg(d <= lim, "step %s: %s %s differs by %.3e (floor %.3e, allowed %.3e)",
                      prec_name(prec), t->name, sd[0].g->params[i].trainable ? "update" : "value",
                      d, fd, lim);
        for (int s = 0; s < nsides; s++)
            free(v[s]);
    }
    printf("training step %s: worst parameter update difference %.2e, worst error/allowed %.2f\n",
           prec_name(prec), worst, worst_ratio);
    for (int32_t i = 0; i < shape->n_params; i++)
        free(values[i]);
    free(values);
    free(in);
    for (int s = 0; s < nsides; s++)
        side_free(&sd[s]);
    cxr_nn_graph_free(shape);
    if (fcpu)
        cxr_nn_backend_close(fcpu);
    cxr_nn_backend_close(cpu);
    cxr_nn_backend_close(gpu);
}

START_TEST(test_step)
{
    static const enum cxr_nn_precision precs[] = {CXR_NN_PRECISION_FP32, CXR_NN_PRECISION_FP16,
                                                  CXR_NN_PRECISION_BF16};
    step_case(precs[_i]);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_cuda_train");
    TCase *tc = tcase_create("gpu_train");
    tcase_set_tags(tc, "gpu");
    const int n = (int)(sizeof cases / sizeof cases[0]);
    tcase_add_loop_test(tc, test_backward_fp32, 0, n);
    tcase_add_loop_test(tc, test_backward_fp16, 0, n);
    tcase_add_loop_test(tc, test_backward_bf16, 0, n);
    tcase_add_test(tc, test_optim_and_sumsq);
    tcase_add_loop_test(tc, test_step, 0, 3);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
