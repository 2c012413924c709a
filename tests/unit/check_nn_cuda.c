/* check_nn_cuda.c — the CUDA backend.
 *
 *  - selection (runs everywhere; on the build machines, which have the CUDA
 *    toolkit but no GPU, this is the no-device path for real): what the
 *    build says it has; AUTO falls back to the CPU with the CUDA runtime's
 *    reason; CUDA asked for without a device is CXR_ERR_NN_NO_DEVICE with
 *    the runtime's text and leaves *out NULL; a device that does not exist;
 *    CUDA_VISIBLE_DEVICES="" hides a real GPU (the same path on a GPU
 *    machine); CPU scoring and `cxr-triage version` work with the CUDA
 *    backend linked in.
 *  - gpu (tag "gpu", CTest's check_nn_cuda_gpu; without a CUDA device each
 *    test calls cxr_test_skip and CTest reports it skipped): every op against the CPU fp32 backend,
 *    fp32/TF32 (relative error <= 1e-3) and fp16/bf16 (<= 2e-2); whole
 *    resnet18 and resnet50 at 224x224; batch N == N x batch 1; replays of
 *    the captured CUDA graph equal the first (eager) run; parameters set
 *    after planning reach the plans; the out-of-memory fallback to smaller
 *    batches gives the same logits; the preprocessing kernel against the
 *    CPU reference (which is what a backend without one runs).
 * Run only the GPU cases with CK_INCLUDE_TAGS=gpu (bench/gpu.sh does).
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../nn/src/backend.h"
#include "../../nn/src/graph.h"
#include "cxr/nn.h"
#include "test_util.h"

#define TF32_TOL 1e-3
#define HALF_TOL 2e-2

/* ------------------------------------------------------------ helpers */

static bool cuda_built(void) { return strstr(cxr_nn_backends_built(), "cuda(") != NULL; }

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

static double tol_for(enum cxr_nn_precision p)
{
    return p == CXR_NN_PRECISION_FP32 ? TF32_TOL : HALF_TOL;
}

/* Opens the CUDA backend, or records a skip (cxr_test_skip) and returns NULL
 * when no device is usable (any other failure fails the test). */
static struct cxr_nn_backend *open_gpu(enum cxr_nn_precision prec)
{
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CUDA, .precision = prec};
    struct cxr_nn_backend *b = NULL;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_nn_backend_open(&o, &b, NULL, err);
    if (st == CXR_ERR_NN_NO_DEVICE) {
        cxr_test_skip("gpu: no CUDA device (%s)", err);
        return NULL;
    }
    ck_assert_msg(st == CXR_OK, "open cuda %s: %s", prec_name(prec), err);
    return b;
}

static struct cxr_nn_backend *open_cpu_fp32(void)
{
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CPU,
                                       .precision = CXR_NN_PRECISION_FP32};
    struct cxr_nn_backend *b = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_nn_backend_open(&o, &b, NULL, err) == CXR_OK, "open cpu: %s", err);
    return b;
}

static uint64_t rng_state;
static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static double nrand(void)
{
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

struct params {
    struct cxr_nn_tensor *t;
    int32_t n;
};

static const struct cxr_nn_tensor *params_find(void *ctx, const char *name)
{
    const struct params *ps = ctx;
    for (int32_t i = 0; i < ps->n; i++)
        if (strcmp(ps->t[i].name, name) == 0)
            return &ps->t[i];
    return NULL;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Random values for every parameter of g (He-scaled weights, batch-norm
 * statistics away from the identity). */
static void params_make(const struct cxr_nn_graph *g, struct params *ps)
{
    ps->n = g->n_params;
    ps->t = calloc((size_t)g->n_params, sizeof *ps->t);
    for (int32_t i = 0; i < g->n_params; i++) {
        struct cxr_nn_tensor *t = &ps->t[i];
        *t = g->params[i].t;
        size_t n = t->nbytes / sizeof(float);
        float *d = malloc(t->nbytes);
        double fan_in = t->ndim > 1 ? (double)n / (double)t->shape[0] : 1.0;
        bool bn = t->ndim == 1 && !ends_with(t->name, "fc.bias") && !strstr(t->name, "conv");
        for (size_t k = 0; k < n; k++) {
            if (ends_with(t->name, "running_var") || (bn && ends_with(t->name, ".weight")))
                d[k] = (float)(0.5 + 1.0 * urand());
            else if (t->ndim > 1)
                d[k] = (float)(nrand() * sqrt(2.0 / fan_in));
            else
                d[k] = (float)(0.2 * nrand());
        }
        t->data = d;
        t->extra = NULL;
    }
}

static void params_free(struct params *ps)
{
    for (int32_t i = 0; i < ps->n; i++)
        free(ps->t[i].data);
    free(ps->t);
}

/* ------------------------------------------------------------ selection */

START_TEST(test_built)
{
    const char *built = cxr_nn_backends_built();
    printf("built: %s\n", built);
    ck_assert_msg(strstr(built, "cpu(oneDNN") != NULL, "built: %s", built);
    if (!cuda_built()) {
        printf("SKIP cuda build facts: this build has no CUDA backend\n");
        return;
    }
    ck_assert_msg(strstr(built, "cuDNN 9.") && strstr(built, "cuBLAS ") &&
                      strstr(built, "CUDA runtime "),
                  "built: %s", built);
}
END_TEST

/* backend=cuda without a device: NO_DEVICE, the runtime's text, *out NULL;
 * AUTO: the CPU, with the same reason in the note. */
static void check_no_device(const char *how)
{
    struct cxr_nn_backend *b = (struct cxr_nn_backend *)&b;
    char err[CXR_ERRLEN] = "", note[CXR_ERRLEN] = "";
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CUDA};
    ck_assert_int_eq(cxr_nn_backend_open(&o, &b, NULL, err), CXR_ERR_NN_NO_DEVICE);
    ck_assert(b == NULL);
    printf("%s: backend=cuda: %s\n", how, err);
    ck_assert_msg(strstr(err, "CUDA") != NULL, "err: %s", err);
    if (cuda_built())
        ck_assert_msg(strstr(err, "cuda: no CUDA device (cudaGetDeviceCount: ") == err, "err: %s",
                      err);
    o.kind = CXR_NN_BACKEND_AUTO;
    ck_assert_msg(cxr_nn_backend_open(&o, &b, note, err) == CXR_OK, "auto: %s", err);
    ck_assert_str_eq(cxr_nn_backend_name(b), "cpu");
    printf("%s: backend=auto: %s\n", how, note);
    if (cuda_built()) {
        ck_assert_msg(strstr(note, "cpu: CUDA not usable (cuda: no CUDA device "
                                   "(cudaGetDeviceCount: ") == note,
                      "note: %s", note);
        ck_assert_msg(strchr(note, '\n') == NULL, "the reason is one line: %s", note);
    } else {
        ck_assert_msg(strstr(note, "no CUDA backend in this build") != NULL, "note: %s", note);
    }
    cxr_nn_backend_close(b);
}

START_TEST(test_no_device)
{
    struct cxr_nn_backend *b = NULL;
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CUDA};
    if (cxr_nn_backend_open(&o, &b, NULL, err) == CXR_OK) {
        printf("SKIP no-device path: a CUDA device is usable (%s); see test_hidden_device\n",
               cxr_nn_backend_describe(b));
        cxr_nn_backend_close(b);
        return;
    }
    check_no_device("this machine");
}
END_TEST

/* The same path on a machine that has a GPU: hidden from the runtime (each
 * test runs in its own process, before any CUDA call). */
START_TEST(test_hidden_device)
{
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
    check_no_device("CUDA_VISIBLE_DEVICES=\"\"");
}
END_TEST

START_TEST(test_bad_device)
{
    struct cxr_nn_backend *b = (struct cxr_nn_backend *)&b;
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CUDA, .device = 97};
    ck_assert_int_eq(cxr_nn_backend_open(&o, &b, NULL, err), CXR_ERR_NN_NO_DEVICE);
    ck_assert(b == NULL);
    ck_assert_msg(err[0] != '\0', "no reason given");
    o.device = -1;
    ck_assert_int_eq(cxr_nn_backend_open(&o, &b, NULL, err), CXR_ERR_INVALID_ARG);
}
END_TEST

/* CPU scoring in a process with the CUDA backend linked (and, here, tried
 * first by AUTO): a small ResNet runs and gives finite logits, twice the
 * same. */
START_TEST(test_cpu_scoring_with_cuda_linked)
{
    char err[CXR_ERRLEN] = "", note[CXR_ERRLEN] = "";
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.input_height = meta.input_width = 64;
    struct cxr_nn_model *m = NULL;
    ck_assert_msg(cxr_nn_model_init_width(&meta, 8, 3, &m, err) == CXR_OK, "%s", err);
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_AUTO};
    struct cxr_nn_backend *b = NULL;
    ck_assert_msg(cxr_nn_backend_open(&o, &b, note, err) == CXR_OK, "%s", err);
    struct cxr_nn_net *net = NULL;
    ck_assert_msg(cxr_nn_net_new(b, m, 2, &net, err) == CXR_OK, "%s", err);
    float *in = malloc(2 * 64 * 64 * sizeof *in), out[4], again[4];
    rng_state = 99;
    for (int i = 0; i < 2 * 64 * 64; i++)
        in[i] = (float)nrand();
    ck_assert_msg(cxr_nn_net_forward(net, in, 2, out) == CXR_OK, "%s", cxr_nn_net_last_error(net));
    ck_assert(cxr_nn_net_forward(net, in, 2, again) == CXR_OK);
    for (int i = 0; i < 4; i++)
        ck_assert(isfinite(out[i]));
    ck_assert(memcmp(out, again, sizeof out) == 0);
    printf("scored on %s (%s)\n", cxr_nn_backend_name(b), note);
    free(in);
    cxr_nn_net_free(net);
    cxr_nn_backend_close(b);
    cxr_nn_model_free(m);
}
END_TEST

START_TEST(test_cli_version)
{
    const char *bin = getenv("CXR_BIN");
    if (!bin || access(bin, X_OK) != 0) {
        printf("SKIP cli version: CXR_BIN (%s) not built\n", bin ? bin : "unset");
        return;
    }
    ck_assert_int_eq(cxr_test_sh("'%s' version > /dev/null 2>&1", bin), 0);
    if (cuda_built())
        ck_assert_int_eq(
            cxr_test_sh("'%s' version | grep -q '^backends: .*cuda(CUDA runtime'", bin), 0);
}
END_TEST

/* ------------------------------------------------------------ gpu: ops */

typedef int32_t (*graph_fn)(struct cxr_nn_graph *g, char *err);

static int32_t g_conv_bn(struct cxr_nn_graph *g, char *err)
{
    int32_t v = cxr_nn_graph_conv(g, "c", g->input, 6, 3, 2, 1, false, err);
    return cxr_nn_graph_bn(g, "b", v, 1e-5f, err);
}
static int32_t g_conv_bias_7x7(struct cxr_nn_graph *g, char *err)
{
    return cxr_nn_graph_conv(g, "c", g->input, 16, 7, 2, 3, true, err);
}
static int32_t g_conv_nobias(struct cxr_nn_graph *g, char *err)
{
    return cxr_nn_graph_conv(g, "c", g->input, 24, 3, 1, 1, false, err);
}
static int32_t g_conv1x1_s2_bn_relu(struct cxr_nn_graph *g, char *err)
{
    int32_t v = cxr_nn_graph_conv(g, "c", g->input, 32, 1, 2, 0, false, err);
    v = cxr_nn_graph_bn(g, "b", v, 1e-5f, err);
    return cxr_nn_graph_relu(g, "r", v, err);
}
static int32_t g_relu(struct cxr_nn_graph *g, char *err)
{
    return cxr_nn_graph_relu(g, "r", g->input, err);
}
static int32_t g_maxpool(struct cxr_nn_graph *g, char *err)
{
    return cxr_nn_graph_maxpool(g, "m", g->input, 3, 2, 1, err);
}
static int32_t g_add(struct cxr_nn_graph *g, char *err)
{
    int32_t r = cxr_nn_graph_relu(g, "r", g->input, err);
    return cxr_nn_graph_add(g, "a", g->input, r, err);
}
static int32_t g_add_relu(struct cxr_nn_graph *g, char *err)
{
    int32_t m = cxr_nn_graph_maxpool(g, "m", g->input, 3, 1, 1, err);
    int32_t a = cxr_nn_graph_add(g, "a", m, g->input, err);
    return cxr_nn_graph_relu(g, "r", a, err);
}
static int32_t g_residual(struct cxr_nn_graph *g, char *err)
{
    int32_t v = cxr_nn_graph_conv(g, "c", g->input, g->values[g->input].c, 3, 1, 1, false, err);
    v = cxr_nn_graph_bn(g, "b", v, 1e-5f, err);
    v = cxr_nn_graph_add(g, "a", v, g->input, err);
    return cxr_nn_graph_relu(g, "r", v, err);
}
static int32_t g_residual_down(struct cxr_nn_graph *g, char *err)
{
    int32_t s = cxr_nn_graph_conv(g, "d0", g->input, 24, 1, 2, 0, false, err);
    s = cxr_nn_graph_bn(g, "d1", s, 1e-5f, err);
    int32_t v = cxr_nn_graph_conv(g, "c1", g->input, 24, 3, 2, 1, false, err);
    v = cxr_nn_graph_bn(g, "b1", v, 1e-5f, err);
    v = cxr_nn_graph_relu(g, "r1", v, err);
    v = cxr_nn_graph_conv(g, "c2", v, 24, 3, 1, 1, false, err);
    v = cxr_nn_graph_bn(g, "b2", v, 1e-5f, err);
    v = cxr_nn_graph_add(g, "a", v, s, err);
    return cxr_nn_graph_relu(g, "r", v, err);
}
static int32_t g_gap(struct cxr_nn_graph *g, char *err)
{
    return cxr_nn_graph_gap(g, "p", g->input, err);
}
static int32_t g_fc(struct cxr_nn_graph *g, char *err)
{
    return cxr_nn_graph_fc(g, "fc", g->input, 5, err);
}
static int32_t g_gap_fc(struct cxr_nn_graph *g, char *err)
{
    int32_t v = cxr_nn_graph_gap(g, "p", g->input, err);
    return cxr_nn_graph_fc(g, "fc", v, 3, err);
}

struct op_case {
    const char *what;
    graph_fn build;
    int32_t c, h, w;
};

static const struct op_case op_cases[] = {
    {"conv+bn folded", g_conv_bn, 5, 9, 11},
    {"conv 7x7/2 with bias, 3 channels (padded to 8)", g_conv_bias_7x7, 3, 20, 17},
    {"conv 3x3 without bias", g_conv_nobias, 16, 12, 12},
    {"conv 1x1/2 + bn + relu", g_conv1x1_s2_bn_relu, 16, 14, 14},
    {"relu", g_relu, 8, 7, 5},
    {"maxpool 3/2 pad 1", g_maxpool, 16, 15, 12},
    {"add", g_add, 8, 6, 6},
    {"add + relu", g_add_relu, 4, 5, 7},
    {"conv+bn+add+relu (residual)", g_residual, 16, 8, 8},
    {"downsampling block", g_residual_down, 8, 10, 9},
    {"global average pool", g_gap, 32, 7, 6},
    {"fc", g_fc, 40, 1, 1},
    {"gap + fc", g_gap_fc, 64, 3, 3},
};

/* One graph with the same parameters on the CPU (fp32) and on the GPU;
 * batch `batch`; returns the relative error of the GPU result. */
static double op_parity(const struct op_case *oc, struct cxr_nn_backend *gpu, int32_t batch)
{
    char err[CXR_ERRLEN] = "";
    rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(oc - op_cases);
    struct cxr_nn_graph *g[2];
    for (int k = 0; k < 2; k++) {
        g[k] = cxr_nn_graph_new(oc->c, oc->h, oc->w);
        ck_assert(g[k] != NULL);
        ck_assert_msg(oc->build(g[k], err) >= 0, "%s: %s", oc->what, err);
    }
    struct params ps;
    params_make(g[0], &ps);
    size_t in_n = (size_t)batch * oc->c * oc->h * oc->w;
    float *in = malloc(in_n * sizeof *in);
    for (size_t i = 0; i < in_n; i++)
        in[i] = (float)nrand();
    const struct cxr_nn_value *yv = &g[0]->values[g[0]->output];
    size_t out_n = (size_t)batch * yv->c * yv->h * yv->w;
    struct cxr_nn_backend *cpu = open_cpu_fp32();
    struct cxr_nn_net *ncpu = NULL, *ngpu = NULL;
    ck_assert_msg(cxr_nn_net_new_graph(cpu, g[0], params_find, &ps, batch, &ncpu, err) == CXR_OK,
                  "cpu %s: %s", oc->what, err);
    ck_assert_msg(cxr_nn_net_new_graph(gpu, g[1], params_find, &ps, batch, &ngpu, err) == CXR_OK,
                  "gpu %s: %s", oc->what, err);
    params_free(&ps);
    float *want = malloc(out_n * sizeof *want), *got = malloc(out_n * sizeof *got);
    float *again = malloc(out_n * sizeof *again);
    ck_assert(cxr_nn_net_forward(ncpu, in, batch, want) == CXR_OK);
    ck_assert_msg(cxr_nn_net_forward(ngpu, in, batch, got) == CXR_OK, "%s: %s", oc->what,
                  cxr_nn_net_last_error(ngpu));
    /* the second run replays the captured CUDA graph: same bits */
    ck_assert(cxr_nn_net_forward(ngpu, in, batch, again) == CXR_OK);
    ck_assert_msg(memcmp(got, again, out_n * sizeof *got) == 0,
                  "%s: graph replay differs from the "
                  "eager run",
                  oc->what);
    double e = rel_error(got, want, out_n);
    free(want);
    free(got);
    free(again);
    free(in);
    cxr_nn_net_free(ncpu);
    cxr_nn_net_free(ngpu);
    cxr_nn_backend_close(cpu);
    return e;
}

static void op_case_run(int i, enum cxr_nn_precision prec)
{
    struct cxr_nn_backend *gpu = open_gpu(prec);
    if (!gpu)
        return;
    for (int32_t batch = 1; batch <= 3; batch += 2) {
        double e = op_parity(&op_cases[i], gpu, batch);
        printf("%s %s batch %d: relative error %.3e\n", op_cases[i].what, prec_name(prec),
               (int)batch, e);
        ck_assert_msg(e <= tol_for(prec), "%s %s batch %d: relative error %.3e > %.0e",
                      op_cases[i].what, prec_name(prec), (int)batch, e, tol_for(prec));
    }
    cxr_nn_backend_close(gpu);
}

START_TEST(test_op_fp32) { op_case_run(_i, CXR_NN_PRECISION_FP32); }
END_TEST

START_TEST(test_op_fp16) { op_case_run(_i, CXR_NN_PRECISION_FP16); }
END_TEST

START_TEST(test_op_bf16) { op_case_run(_i, CXR_NN_PRECISION_BF16); }
END_TEST

/* ------------------------------------------------------------ gpu: whole nets */

/* A full-width model with batch-norm statistics away from the identity. */
static struct cxr_nn_model *make_model(enum cxr_nn_arch arch, int32_t size, uint64_t seed)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, arch);
    meta.input_height = meta.input_width = size;
    struct cxr_nn_model *m = NULL;
    ck_assert_msg(cxr_nn_model_init(&meta, seed, &m, err) == CXR_OK, "%s", err);
    rng_state = seed * 0x2545F4914F6CDD1Dull + 1;
    for (uint32_t i = 0; i < cxr_nn_model_tensor_count(m); i++) {
        struct cxr_nn_tensor *t = cxr_nn_model_tensor_at(m, i);
        if (t->dtype != CXR_NN_DTYPE_F32 || t->ndim != 1 || strstr(t->name, "fc."))
            continue;
        float *d = t->data;
        for (int64_t k = 0; k < t->shape[0]; k++) {
            if (ends_with(t->name, "running_var") || ends_with(t->name, ".weight"))
                d[k] = (float)(0.6 + 0.8 * urand());
            else
                d[k] = (float)(0.1 * nrand());
        }
    }
    return m;
}

static void net_parity(enum cxr_nn_arch arch, enum cxr_nn_precision prec)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_backend *gpu = open_gpu(prec);
    if (!gpu)
        return;
    const int32_t size = 224, batch = 3;
    struct cxr_nn_model *m = make_model(arch, size, 11);
    struct cxr_nn_backend *cpu = open_cpu_fp32();
    struct cxr_nn_net *ncpu = NULL, *ngpu = NULL;
    ck_assert_msg(cxr_nn_net_new(cpu, m, batch, &ncpu, err) == CXR_OK, "%s", err);
    ck_assert_msg(cxr_nn_net_new(gpu, m, batch, &ngpu, err) == CXR_OK, "%s", err);
    cxr_nn_model_free(m);
    size_t per = (size_t)size * size;
    float *in = malloc((size_t)batch * per * sizeof *in);
    for (size_t i = 0; i < (size_t)batch * per; i++)
        in[i] = (float)nrand();
    float want[3 * 2], got[3 * 2], again[3 * 2], one[2];
    ck_assert(cxr_nn_net_forward(ncpu, in, batch, want) == CXR_OK);
    ck_assert_msg(cxr_nn_net_forward(ngpu, in, batch, got) == CXR_OK, "%s",
                  cxr_nn_net_last_error(ngpu));
    double e = rel_error(got, want, 6);
    printf("%s %s: relative error %.3e vs CPU fp32 (%s)\n", cxr_nn_arch_name(arch), prec_name(prec),
           e, cxr_nn_backend_describe(gpu));
    ck_assert_msg(e <= tol_for(prec), "%s %s: relative error %.3e > %.0e", cxr_nn_arch_name(arch),
                  prec_name(prec), e, tol_for(prec));
    ck_assert(cxr_nn_net_forward(ngpu, in, batch, again) == CXR_OK);
    ck_assert_msg(memcmp(got, again, sizeof got) == 0, "graph replay differs");
    for (int32_t i = 0; i < batch; i++) {
        ck_assert(cxr_nn_net_forward(ngpu, in + (size_t)i * per, 1, one) == CXR_OK);
        double d = rel_error(one, got + 2 * i, 2);
        ck_assert_msg(d <= tol_for(prec), "image %d: batch 1 differs from batched by %.3e", (int)i,
                      d);
    }
    free(in);
    cxr_nn_net_free(ncpu);
    cxr_nn_net_free(ngpu);
    cxr_nn_backend_close(cpu);
    cxr_nn_backend_close(gpu);
}

static const enum cxr_nn_precision precs[] = {CXR_NN_PRECISION_FP32, CXR_NN_PRECISION_FP16,
                                              CXR_NN_PRECISION_BF16};

START_TEST(test_resnet18) { net_parity(CXR_NN_ARCH_RESNET18, precs[_i]); }
END_TEST

START_TEST(test_resnet50) { net_parity(CXR_NN_ARCH_RESNET50, precs[_i]); }
END_TEST

/* Parameters set through the backend after planning reach the converted
 * copies the plans hold. */
START_TEST(test_tensor_set_after_plan)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_backend *gpu = open_gpu(CXR_NN_PRECISION_FP16);
    if (!gpu)
        return;
    const struct op_case *oc = &op_cases[8]; /* residual conv */
    double e0 = op_parity(oc, gpu, 2);
    ck_assert_msg(e0 <= HALF_TOL, "before: %.3e", e0);
    rng_state = 5;
    struct cxr_nn_graph *g = cxr_nn_graph_new(oc->c, oc->h, oc->w),
                        *g2 = cxr_nn_graph_new(oc->c, oc->h, oc->w);
    oc->build(g, err);
    oc->build(g2, err);
    struct params ps;
    params_make(g, &ps);
    struct cxr_nn_net *ngpu = NULL, *ncpu = NULL;
    struct cxr_nn_backend *cpu = open_cpu_fp32();
    ck_assert(cxr_nn_net_new_graph(gpu, g, params_find, &ps, 2, &ngpu, err) == CXR_OK);
    size_t in_n = 2 * (size_t)oc->c * oc->h * oc->w;
    float *in = malloc(in_n * sizeof *in), *got = malloc(in_n * sizeof *got),
          *want = malloc(in_n * sizeof *want);
    for (size_t i = 0; i < in_n; i++)
        in[i] = (float)nrand();
    ck_assert(cxr_nn_net_forward(ngpu, in, 2, got) == CXR_OK); /* plans and captures */
    ck_assert(cxr_nn_net_forward(ngpu, in, 2, got) == CXR_OK);
    /* new raw parameters: set them on the GPU's conv (the folded weights
     * are derived, so set the derived tensors from a CPU net's graph) */
    for (int32_t i = 0; i < ps.n; i++)
        for (size_t k = 0; k < ps.t[i].nbytes / sizeof(float); k++)
            ((float *)ps.t[i].data)[k] *= 0.5f;
    ck_assert(cxr_nn_net_new_graph(cpu, g2, params_find, &ps, 2, &ncpu, err) == CXR_OK);
    struct cxr_nn_graph *gg = cxr_nn_net_graph(ngpu), *gc = cxr_nn_net_graph(ncpu);
    for (int32_t i = 0; i < gg->n_params; i++) {
        struct cxr_nn_tensor *t = &gg->params[i].t;
        if (!t->extra)
            continue;
        float *buf = malloc(t->nbytes);
        ck_assert(cpu->iface->tensor_get(cpu, &gc->params[i].t, buf, 0, t->nbytes, err) == CXR_OK);
        ck_assert_msg(gpu->iface->tensor_set(gpu, t, buf, 0, t->nbytes, err) == CXR_OK, "%s", err);
        float back[2];
        ck_assert(gpu->iface->tensor_get(gpu, t, back, 0, sizeof back, err) == CXR_OK);
        ck_assert(memcmp(back, buf, sizeof back) == 0);
        free(buf);
    }
    ck_assert(cxr_nn_net_forward(ncpu, in, 2, want) == CXR_OK);
    ck_assert(cxr_nn_net_forward(ngpu, in, 2, got) == CXR_OK);
    double e = rel_error(got, want, in_n);
    ck_assert_msg(e <= HALF_TOL, "after tensor_set: relative error %.3e", e);
    params_free(&ps);
    free(in);
    free(got);
    free(want);
    cxr_nn_net_free(ngpu);
    cxr_nn_net_free(ncpu);
    cxr_nn_backend_close(cpu);
    cxr_nn_backend_close(gpu);
}
END_TEST

/* Out of GPU memory: with the arena capped (CXR_CUDA_ARENA_LIMIT_MB, read
 * at open), batch 8 of resnet18 runs as smaller batches and gives what
 * one image at a time gives. */
START_TEST(test_oom_fallback)
{
    char err[CXR_ERRLEN] = "";
    setenv("CXR_CUDA_ARENA_LIMIT_MB", "40", 1);
    setenv("CXR_CUDA_WORKSPACE_MB", "4", 1); /* the arena holds the workspace too */
    struct cxr_nn_backend *gpu = open_gpu(CXR_NN_PRECISION_FP32);
    if (!gpu)
        return;
    const int32_t size = 224, batch = 8;
    struct cxr_nn_model *m = make_model(CXR_NN_ARCH_RESNET18, size, 5);
    struct cxr_nn_net *net = NULL;
    ck_assert_msg(cxr_nn_net_new(gpu, m, batch, &net, err) == CXR_OK, "%s", err);
    cxr_nn_model_free(m);
    size_t per = (size_t)size * size;
    float *in = malloc((size_t)batch * per * sizeof *in), got[16], one[2];
    for (size_t i = 0; i < (size_t)batch * per; i++)
        in[i] = (float)nrand();
    ck_assert_msg(cxr_nn_net_forward(net, in, batch, got) == CXR_OK, "%s",
                  cxr_nn_net_last_error(net));
    for (int32_t i = 0; i < batch; i++) {
        ck_assert(cxr_nn_net_forward(net, in + (size_t)i * per, 1, one) == CXR_OK);
        ck_assert_msg(rel_error(one, got + 2 * i, 2) <= TF32_TOL, "image %d differs", (int)i);
    }
    free(in);
    cxr_nn_net_free(net);
    cxr_nn_backend_close(gpu);
}
END_TEST

/* ------------------------------------------------------------ preprocessing */

/* A test image with structure at every scale, a stride wider than the
 * width, and a mask hiding a corner. */
static uint8_t *test_image(int32_t w, int32_t h, int32_t stride, uint8_t **mask)
{
    uint8_t *px = malloc((size_t)stride * h);
    *mask = malloc((size_t)w * h);
    for (int32_t y = 0; y < h; y++)
        for (int32_t x = 0; x < stride; x++) {
            px[(size_t)y * stride + x] = (uint8_t)((x * 7 + y * 3 + (x * y) % 17) & 0xff);
            if (x < w)
                (*mask)[(size_t)y * w + x] = !(x < w / 5 && y < h / 6);
        }
    return px;
}

/* Without a device kernel the backend entry is the CPU reference itself. */
START_TEST(test_preprocess_cpu_fallback)
{
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    uint8_t *mask, *px = test_image(301, 257, 304, &mask);
    size_t n = (size_t)meta.input_height * meta.input_width;
    float *a = malloc(n * sizeof *a), *b2 = malloc(n * sizeof *b2);
    char err[CXR_ERRLEN] = "";
    ck_assert(cxr_nn_preprocess_u8(&meta, px, 301, 257, 304, mask, a) == CXR_OK);
    struct cxr_nn_backend *cpu = open_cpu_fp32();
    ck_assert_msg(cxr_nn_backend_preprocess_u8(cpu, &meta, px, 301, 257, 304, mask, b2, err) ==
                      CXR_OK,
                  "%s", err);
    ck_assert(memcmp(a, b2, n * sizeof *a) == 0);
    ck_assert(cxr_nn_backend_preprocess_u8(NULL, &meta, px, 301, 257, 304, mask, b2, err) ==
              CXR_OK);
    ck_assert(memcmp(a, b2, n * sizeof *a) == 0);
    ck_assert_int_eq(cxr_nn_backend_preprocess_u8(cpu, &meta, px, 301, 257, 300, mask, b2, err),
                     CXR_ERR_INVALID_ARG);
    cxr_nn_backend_close(cpu);
    free(a);
    free(b2);
    free(px);
    free(mask);
}
END_TEST

/* The GPU's preprocessing against the CPU reference: down- and upscaling,
 * stretch and letterbox, 1 and 3 channels, with and without a mask. */
START_TEST(test_preprocess_gpu)
{
    struct cxr_nn_backend *gpu = open_gpu(CXR_NN_PRECISION_FP32);
    if (!gpu)
        return;
    static const struct {
        int32_t w, h, stride, C;
        enum cxr_nn_resize_mode mode;
        bool mask;
    } cases[] = {
        {1024, 1237, 1030, 1, CXR_NN_RESIZE_STRETCH, false},
        {1024, 1237, 1030, 1, CXR_NN_RESIZE_LETTERBOX, true},
        {150, 90, 160, 3, CXR_NN_RESIZE_STRETCH, true}, /* upscaling */
        {2500, 2048, 2500, 3, CXR_NN_RESIZE_LETTERBOX, false},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct cxr_nn_model_meta meta;
        cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
        meta.channels = cases[k].C;
        meta.resize_mode = cases[k].mode;
        for (int c = 0; c < 3; c++) {
            meta.mean[c] = 0.4f + 0.05f * c;
            meta.std[c] = 0.2f + 0.02f * c;
        }
        uint8_t *mask, *px = test_image(cases[k].w, cases[k].h, cases[k].stride, &mask);
        size_t n = (size_t)meta.channels * meta.input_height * meta.input_width;
        float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
        char err[CXR_ERRLEN] = "";
        const uint8_t *m = cases[k].mask ? mask : NULL;
        ck_assert(cxr_nn_preprocess_u8(&meta, px, cases[k].w, cases[k].h, cases[k].stride, m,
                                       want) == CXR_OK);
        ck_assert_msg(cxr_nn_backend_preprocess_u8(gpu, &meta, px, cases[k].w, cases[k].h,
                                                   cases[k].stride, m, got, err) == CXR_OK,
                      "%s", err);
        double worst = 0;
        for (size_t i = 0; i < n; i++)
            worst = fmax(worst, fabs((double)got[i] - (double)want[i]));
        printf("preprocess case %zu: max |gpu - cpu| = %.3g\n", k, worst);
        ck_assert_msg(worst <= 1e-4, "case %zu: max difference %.3g", k, worst);
        free(want);
        free(got);
        free(px);
        free(mask);
    }
    cxr_nn_backend_close(gpu);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_cuda");
    TCase *tc = tcase_create("selection");
    tcase_add_test(tc, test_built);
    tcase_add_test(tc, test_no_device);
    tcase_add_test(tc, test_hidden_device);
    tcase_add_test(tc, test_bad_device);
    tcase_add_test(tc, test_cpu_scoring_with_cuda_linked);
    tcase_add_test(tc, test_cli_version);
    tcase_add_test(tc, test_preprocess_cpu_fallback);
    suite_add_tcase(s, tc);
    tc = tcase_create("gpu");
    tcase_set_tags(tc, "gpu");
    tcase_add_loop_test(tc, test_op_fp32, 0, sizeof op_cases / sizeof op_cases[0]);
    tcase_add_loop_test(tc, test_op_fp16, 0, sizeof op_cases / sizeof op_cases[0]);
    tcase_add_loop_test(tc, test_op_bf16, 0, sizeof op_cases / sizeof op_cases[0]);
    tcase_add_loop_test(tc, test_resnet18, 0, 3);
    tcase_add_loop_test(tc, test_resnet50, 0, 3);
    tcase_add_test(tc, test_tensor_set_after_plan);
    tcase_add_test(tc, test_oom_fallback);
    tcase_add_test(tc, test_preprocess_gpu);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
