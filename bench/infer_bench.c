/* infer_bench.c — times cxr_nn_net_forward for bench/infer_cpu.sh.
 *
 *   cxr_bench_infer --arch resnet50 --batch 8 --precision bf16 --threads 2
 *                   [--size 224] [--channels 1] [--warmup 5] [--iters 20] [--model FILE]
 *
 * Without --model it times a seeded, freshly initialised model (timing does
 * not depend on the weights). Prints one JSON object on stdout with the
 * median and the spread of the per-batch times.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cxr/nn.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int usage(void)
{
    fprintf(stderr, "usage: cxr_bench_infer --arch resnet18|resnet34|resnet50 --batch N "
                    "--precision fp32|bf16|auto --threads N [--size S] [--channels 1|3] "
                    "[--warmup N] [--iters N] [--model FILE]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *arch = "resnet50", *prec = "fp32", *model_path = NULL;
    int batch = 1, threads = 0, size = 224, channels = 1, warmup = 5, iters = 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage();
        if (!strcmp(a, "--arch"))
            arch = v;
        else if (!strcmp(a, "--precision"))
            prec = v;
        else if (!strcmp(a, "--model"))
            model_path = v;
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--size"))
            size = atoi(v);
        else if (!strcmp(a, "--channels"))
            channels = atoi(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atoi(v);
        else if (!strcmp(a, "--iters"))
            iters = atoi(v);
        else
            return usage();
        i++;
    }
    if (batch < 1 || iters < 1 || warmup < 0 || size < 32)
        return usage();
    char err[CXR_ERRLEN] = "", note[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = NULL;
    enum cxr_status st;
    if (model_path) {
        st = cxr_nn_model_load(model_path, &m, err);
    } else {
        struct cxr_nn_model_meta meta;
        enum cxr_nn_arch ak;
        if (!cxr_nn_arch_parse(arch, &ak))
            return usage();
        cxr_nn_model_meta_defaults(&meta, ak);
        meta.input_height = meta.input_width = size;
        meta.channels = channels;
        st = cxr_nn_model_init(&meta, 1, &m, err);
    }
    if (st != CXR_OK) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CPU, .threads = threads};
    o.precision = !strcmp(prec, "bf16")   ? CXR_NN_PRECISION_BF16
                  : !strcmp(prec, "auto") ? CXR_NN_PRECISION_AUTO
                                          : CXR_NN_PRECISION_FP32;
    struct cxr_nn_backend *b = NULL;
    struct cxr_nn_net *net = NULL;
    if (cxr_nn_backend_open(&o, &b, note, err) != CXR_OK ||
        cxr_nn_net_new(b, m, batch, &net, err) != CXR_OK) {
        fprintf(stderr, "backend/net: %s\n", err);
        cxr_nn_backend_close(b);
        cxr_nn_model_free(m);
        return 1;
    }
    const struct cxr_nn_model_meta *meta = cxr_nn_model_meta(m);
    size_t in_n = (size_t)batch * meta->channels * meta->input_height * meta->input_width;
    int classes = meta->num_classes;
    float *in = malloc(in_n * sizeof *in), *out = malloc((size_t)batch * classes * sizeof *out);
    double *t = malloc((size_t)iters * sizeof *t);
    if (!in || !out || !t)
        return 1;
    srand(1);
    for (size_t i = 0; i < in_n; i++)
        in[i] = (float)rand() / RAND_MAX * 4.0f - 2.0f;
    for (int i = 0; i < warmup + iters; i++) {
        double t0 = now_ms();
        if (cxr_nn_net_forward(net, in, batch, out) != CXR_OK) {
            fprintf(stderr, "forward: %s\n", cxr_nn_net_last_error(net));
            return 1;
        }
        if (i >= warmup)
            t[i - warmup] = now_ms() - t0;
    }
    qsort(t, (size_t)iters, sizeof *t, cmp_double);
    double med = iters % 2 ? t[iters / 2] : 0.5 * (t[iters / 2 - 1] + t[iters / 2]);
    printf(
        "{\"impl\":\"cxr\",\"arch\":\"%s\",\"batch\":%d,\"precision\":\"%s\",\"threads\":%d,"
        "\"size\":%d,\"ms_per_batch\":%.3f,\"ms_per_image\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f,"
        "\"iters\":%d,\"backend\":\"%s\"}\n",
        cxr_nn_arch_name(meta->arch), batch, prec, threads, size, med, med / batch, t[0],
        t[iters - 1], iters, cxr_nn_backend_describe(b));
    free(in);
    free(out);
    free(t);
    cxr_nn_net_free(net);
    cxr_nn_backend_close(b);
    cxr_nn_model_free(m);
    return 0;
}
