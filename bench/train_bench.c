/* train_bench.c — times cxr_nn_trainer_step for bench/train_cpu.sh.
 *
 *   cxr_bench_train --arch resnet18 --batch 32 --precision fp32 --threads 2
 *                   [--size 224] [--channels 1] [--warmup 2] [--iters 10] [--phases]
 *                   [--direct-conv]
 *
 * A seeded, freshly initialised model (speed does not depend on the
 * weights), random inputs and labels, AdamW at a constant lr (the schedule
 * costs nothing), clipping on: a whole optimizer step (training-mode
 * forward, loss, backward, gradient norm, update) per iteration. --phases
 * also times forward+backward and the update separately. Prints one JSON
 * object on stdout: median and min step time, images/s from the median,
 * the planning time of the first step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../nn/src/train_internal.h"
#include "cxr/nn.h"
#include "cxr/nn_trainer.h"

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
    fprintf(stderr, "usage: cxr_bench_train --arch resnet18|resnet34|resnet50 --batch N "
                    "--precision fp32|bf16 --threads N [--size S] [--channels 1|3] "
                    "[--warmup N] [--iters N] [--phases] [--direct-conv]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *arch = "resnet18", *prec = "fp32";
    int batch = 32, threads = 0, size = 224, channels = 1, warmup = 2, iters = 10;
    int phases = 0, direct = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--phases")) {
            phases = 1;
            continue;
        }
        if (!strcmp(a, "--direct-conv")) {
            direct = 1;
            continue;
        }
        if (!v)
            return usage();
        if (!strcmp(a, "--arch"))
            arch = v;
        else if (!strcmp(a, "--precision"))
            prec = v;
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
    if (batch < 2 || iters < 1 || warmup < 0 || size < 32)
        return usage();
    char err[CXR_ERRLEN] = "", note[CXR_ERRLEN] = "";
    struct cxr_nn_model_meta meta;
    enum cxr_nn_arch ak;
    if (!cxr_nn_arch_parse(arch, &ak))
        return usage();
    cxr_nn_model_meta_defaults(&meta, ak);
    meta.input_height = meta.input_width = size;
    meta.channels = channels;
    struct cxr_nn_model *m = NULL;
    if (cxr_nn_model_init(&meta, 1, &m, err) != CXR_OK) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CPU, .threads = threads};
    o.precision = !strcmp(prec, "bf16") ? CXR_NN_PRECISION_BF16 : CXR_NN_PRECISION_FP32;
    struct cxr_nn_backend *b = NULL;
    if (cxr_nn_backend_open(&o, &b, note, err) != CXR_OK) {
        fprintf(stderr, "backend: %s\n", err);
        return 1;
    }
    struct cxr_nn_trainer_options to;
    cxr_nn_trainer_options_defaults(&to);
    to.schedule = CXR_NN_SCHEDULE_CONSTANT;
    to.lr = 1e-4;
    to.max_batch = batch;
    to.direct_conv = direct;
    struct cxr_nn_trainer *tr = NULL;
    if (cxr_nn_trainer_new(b, m, &to, &tr, err) != CXR_OK) {
        fprintf(stderr, "trainer: %s\n", err);
        return 1;
    }
    size_t per = (size_t)channels * size * size;
    float *x = malloc(per * batch * sizeof(float));
    int32_t *y = malloc(batch * sizeof(int32_t));
    double *t = malloc(iters * sizeof(double)), *tf = malloc(iters * sizeof(double));
    if (!x || !y || !t || !tf)
        return 1;
    unsigned s = 1;
    for (size_t i = 0; i < per * batch; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = (float)((s >> 9) & 0xffff) / 32768.0f - 1.0f;
    }
    for (int i = 0; i < batch; i++)
        y[i] = i % 2;
    double t0 = now_ms();
    struct cxr_nn_step_stats st;
    for (int i = 0; i < warmup + iters; i++) {
        double a = now_ms();
        if (phases) {
            if (cxr_nn_trainer_forward_backward(tr, x, y, batch, NULL, &st) != CXR_OK)
                goto fail;
            double mid = now_ms();
            if (cxr_nn_trainer_update(tr, &st) != CXR_OK)
                goto fail;
            if (i >= warmup)
                tf[i - warmup] = mid - a;
        } else if (cxr_nn_trainer_step(tr, x, y, batch, &st) != CXR_OK) {
            goto fail;
        }
        double e = now_ms();
        if (i == 0)
            fprintf(stderr, "first step (plans) %.0f ms\n", e - t0);
        if (i >= warmup)
            t[i - warmup] = e - a;
    }
    qsort(t, iters, sizeof *t, cmp_double);
    qsort(tf, iters, sizeof *tf, cmp_double);
    double med = t[iters / 2];
    printf("{\"arch\":\"%s\",\"batch\":%d,\"size\":%d,\"precision\":\"%s\",\"threads\":%d,"
           "\"step_ms_median\":%.2f,\"step_ms_min\":%.2f,\"step_ms_max\":%.2f,"
           "\"images_per_s\":%.2f",
           arch, batch, size, prec, (int)b->threads, med, t[0], t[iters - 1], batch * 1000.0 / med);
    if (phases)
        printf(",\"fwd_bwd_ms_median\":%.2f,\"update_ms_median\":%.2f", tf[iters / 2],
               med - tf[iters / 2]);
    printf(",\"conv\":\"%s\",\"backend\":\"%s\"}\n", direct ? "direct" : "auto",
           cxr_nn_backend_describe(b));
    cxr_nn_trainer_free(tr);
    cxr_nn_backend_close(b);
    cxr_nn_model_free(m);
    free(x);
    free(y);
    free(t);
    free(tf);
    return 0;
fail:
    fprintf(stderr, "step: %s\n", cxr_nn_trainer_last_error(tr));
    return 1;
}
