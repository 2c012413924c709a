/* gpu_bench.c — times the CUDA backend for bench/gpu.sh.
 *
 *   cxr_bench_gpu infer --arch resnet50 --precision fp16 --batch 1
 *                 [--size 224] [--channels 3] [--warmup 50] [--iters 1000]
 *   cxr_bench_gpu train --arch resnet50 --precision fp16 --batch 128
 *                 [--size 224] [--channels 3] [--warmup 3] [--iters 20]
 *
 * infer: a seeded fresh model (speed does not depend on the weights), the
 * input in pinned host memory. "e2e" times cxr_nn_net_forward per call on
 * the wall clock (host input -> host logits, copies included): median and
 * p99. "device" times the same plan's device work alone (the captured CUDA
 * graph replayed back to back, CUDA events), i.e. with the input already on
 * the GPU, as PyTorch benchmarks usually run.
 * train: cxr_nn_trainer_step (training-mode forward, loss, backward,
 * clipping, AdamW) per iteration; images/s from the median step.
 * parity: a model file and a folder of class folders of JPEGs (the test
 * split): every image decoded to grey (libjpeg), preprocessed on the CPU
 * (the reference), scored by the CPU fp32 backend and by the GPU in
 * --precision; passes when max |p_gpu - p_cpu| <= 0.01 and the decisions at
 * the model's operating threshold agree except within 0.01 of it (exit 1
 * otherwise).
 *   cxr_bench_gpu parity --model FILE --dir DIR --precision fp16 [--batch 32]
 * One JSON object per run on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dirent.h>
#include <jpeglib.h>
#include <math.h>

#include <cuda_runtime_api.h>

#include "../nn/src/backend.h"
#include "../nn/src/backend_cuda.h"
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
    fprintf(stderr,
            "usage: cxr_bench_gpu infer|train --arch resnet18|resnet34|resnet50 "
            "--precision fp32|fp16|bf16 --batch N [--size S] [--channels 1|3] "
            "[--warmup N] [--iters N]\n"
            "       cxr_bench_gpu parity --model FILE --dir DIR --precision P [--batch N]\n");
    return 2;
}

/* A JPEG file as 8-bit grey (libjpeg's conversion); NULL on any error. */
static uint8_t *read_jpeg_grey(const char *path, int32_t *w, int32_t *h)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    struct jpeg_decompress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr); /* exits on corrupt data: test files only */
    jpeg_create_decompress(&ci);
    jpeg_stdio_src(&ci, fp);
    jpeg_read_header(&ci, TRUE);
    ci.out_color_space = JCS_GRAYSCALE;
    jpeg_start_decompress(&ci);
    *w = (int32_t)ci.output_width;
    *h = (int32_t)ci.output_height;
    uint8_t *img = malloc((size_t)*w * (size_t)*h);
    while (img && ci.output_scanline < ci.output_height) {
        JSAMPROW row = img + (size_t)ci.output_scanline * (size_t)*w;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    fclose(fp);
    return img;
}

/* Scores every image under dir/<class name>/ on the CPU (fp32) and the GPU. */
static int parity(const char *model_path, const char *dir, const char *prec, int batch)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = NULL;
    if (cxr_nn_model_load(model_path, &m, err) != CXR_OK) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    const struct cxr_nn_model_meta *meta = cxr_nn_model_meta(m);
    size_t per = (size_t)meta->channels * meta->input_height * meta->input_width;
    int32_t k = meta->num_classes, pos = meta->positive_class, cap = 4096, n = 0;
    float *in = malloc((size_t)cap * per * sizeof(float));
    if (!in)
        return 1;
    for (int32_t c = 0; c < k; c++) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", dir, meta->class_names[c]);
        DIR *d = opendir(sub);
        struct dirent *e;
        while (d && (e = readdir(d)) && n < cap) {
            if (e->d_name[0] == '.')
                continue;
            char path[8192];
            int32_t w = 0, h = 0;
            snprintf(path, sizeof path, "%s/%s", sub, e->d_name);
            uint8_t *px = read_jpeg_grey(path, &w, &h);
            if (!px ||
                cxr_nn_preprocess_u8(meta, px, w, h, w, NULL, in + (size_t)n * per) != CXR_OK) {
                fprintf(stderr, "cannot read %s\n", path);
                return 1;
            }
            free(px);
            n++;
        }
        if (d)
            closedir(d);
    }
    if (n == 0) {
        fprintf(stderr, "no images under %s/{%s,...}\n", dir, meta->class_names[0]);
        return 1;
    }
    struct cxr_nn_backend_options oc = {.kind = CXR_NN_BACKEND_CPU,
                                        .precision = CXR_NN_PRECISION_FP32};
    struct cxr_nn_backend_options og = {.kind = CXR_NN_BACKEND_CUDA};
    og.precision = !strcmp(prec, "bf16")   ? CXR_NN_PRECISION_BF16
                   : !strcmp(prec, "fp16") ? CXR_NN_PRECISION_FP16
                                           : CXR_NN_PRECISION_FP32;
    struct cxr_nn_backend *bc = NULL, *bg = NULL;
    struct cxr_nn_net *nc = NULL, *ng = NULL;
    if (cxr_nn_backend_open(&oc, &bc, NULL, err) != CXR_OK ||
        cxr_nn_backend_open(&og, &bg, NULL, err) != CXR_OK ||
        cxr_nn_net_new(bc, m, batch, &nc, err) != CXR_OK ||
        cxr_nn_net_new(bg, m, batch, &ng, err) != CXR_OK) {
        fprintf(stderr, "backend/net: %s\n", err);
        return 1;
    }
    double worst = 0, thr = meta->operating_threshold;
    int32_t flips = 0, flips_outside = 0;
    float lc[CXR_NN_MAX_CLASSES * 64], lg[CXR_NN_MAX_CLASSES * 64];
    for (int32_t i = 0; i < n; i += batch) {
        int32_t b = n - i < batch ? n - i : batch;
        if (cxr_nn_net_forward(nc, in + (size_t)i * per, b, lc) != CXR_OK ||
            cxr_nn_net_forward(ng, in + (size_t)i * per, b, lg) != CXR_OK) {
            fprintf(stderr, "forward: %s %s\n", cxr_nn_net_last_error(nc),
                    cxr_nn_net_last_error(ng));
            return 1;
        }
        for (int32_t j = 0; j < b; j++) {
            float pc[CXR_NN_MAX_CLASSES], pg[CXR_NN_MAX_CLASSES];
            cxr_nn_softmax(lc + (size_t)j * k, k, pc);
            cxr_nn_softmax(lg + (size_t)j * k, k, pg);
            double d = fabs((double)pg[pos] - (double)pc[pos]);
            worst = d > worst ? d : worst;
            if ((pc[pos] >= thr) != (pg[pos] >= thr)) {
                flips++;
                if (fabs(pc[pos] - thr) > 0.01 && fabs(pg[pos] - thr) > 0.01)
                    flips_outside++;
            }
        }
    }
    bool ok = worst <= 0.01 && flips_outside == 0;
    printf("{\"impl\":\"cxr\",\"mode\":\"parity\",\"precision\":\"%s\",\"images\":%d,"
           "\"max_abs_diff\":%.6f,\"decision_flips\":%d,\"flips_outside_0.01\":%d,"
           "\"threshold\":%.4f,\"pass\":%s,\"backend\":\"%s\"}\n",
           prec, (int)n, worst, (int)flips, (int)flips_outside, thr, ok ? "true" : "false",
           cxr_nn_backend_describe(bg));
    cxr_nn_net_free(nc);
    cxr_nn_net_free(ng);
    cxr_nn_backend_close(bc);
    cxr_nn_backend_close(bg);
    cxr_nn_model_free(m);
    free(in);
    return ok ? 0 : 1;
}

static double pct(const double *sorted, int n, double q)
{
    int i = (int)(q * (n - 1) + 0.5);
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *mode = argv[1], *arch = "resnet50", *prec = "fp16", *model = NULL, *dir = NULL;
    bool train = !strcmp(mode, "train"), check = !strcmp(mode, "parity");
    if (!train && !check && strcmp(mode, "infer"))
        return usage();
    int batch = 1, size = 224, channels = 3, warmup = train ? 3 : 50, iters = train ? 20 : 1000;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage();
        if (!strcmp(a, "--arch"))
            arch = v;
        else if (!strcmp(a, "--precision"))
            prec = v;
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--size"))
            size = atoi(v);
        else if (!strcmp(a, "--channels"))
            channels = atoi(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atoi(v);
        else if (!strcmp(a, "--iters"))
            iters = atoi(v);
        else if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--dir"))
            dir = v;
        else
            return usage();
        i++;
    }
    if (check)
        return model && dir && batch >= 1 && batch <= 64 ? parity(model, dir, prec, batch)
                                                         : usage();
    if (batch < 1 || iters < 1 || warmup < 0 || size < 32 || (train && batch < 2))
        return usage();
    char err[CXR_ERRLEN] = "", note[CXR_ERRLEN] = "";
    struct cxr_nn_model_meta meta;
    enum cxr_nn_arch ak;
    if (!cxr_nn_arch_parse(arch, &ak))
        return usage();
    cxr_nn_model_meta_defaults(&meta, ak);
    meta.input_height = meta.input_width = size;
    meta.channels = channels;
    for (int c = 0; c < 3; c++) {
        meta.mean[c] = 0.5f;
        meta.std[c] = 0.25f;
    }
    struct cxr_nn_model *m = NULL;
    if (cxr_nn_model_init(&meta, 1, &m, err) != CXR_OK) {
        fprintf(stderr, "model: %s\n", err);
        return 1;
    }
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CUDA};
    o.precision = !strcmp(prec, "bf16")   ? CXR_NN_PRECISION_BF16
                  : !strcmp(prec, "fp16") ? CXR_NN_PRECISION_FP16
                                          : CXR_NN_PRECISION_FP32;
    struct cxr_nn_backend *b = NULL;
    if (cxr_nn_backend_open(&o, &b, note, err) != CXR_OK) {
        fprintf(stderr, "backend: %s\n", err);
        cxr_nn_model_free(m);
        return 1;
    }
    size_t per = (size_t)channels * size * size;
    float *x = NULL, *out = NULL;
    if (cudaHostAlloc((void **)&x, per * batch * sizeof(float), cudaHostAllocDefault) !=
            cudaSuccess ||
        cudaHostAlloc((void **)&out, (size_t)batch * 16 * sizeof(float), cudaHostAllocDefault) !=
            cudaSuccess) {
        fprintf(stderr, "cannot pin %zu MiB of host memory\n", per * batch * sizeof(float) >> 20);
        return 1;
    }
    unsigned s = 1;
    for (size_t i = 0; i < per * batch; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = (float)((s >> 9) & 0xffff) / 32768.0f - 1.0f;
    }
    double *t = malloc((size_t)iters * sizeof *t);
    if (!t)
        return 1;
    int rc = 1;
    if (!train) {
        struct cxr_nn_net *net = NULL;
        void *plan = NULL;
        double dev_ms = 0;
        if (cxr_nn_net_new(b, m, batch, &net, err) != CXR_OK) {
            fprintf(stderr, "net: %s\n", err);
            return 1;
        }
        for (int i = 0; i < warmup + iters; i++) {
            double a = now_ms();
            if (cxr_nn_net_forward(net, x, batch, out) != CXR_OK) {
                fprintf(stderr, "forward: %s\n", cxr_nn_net_last_error(net));
                return 1;
            }
            if (i >= warmup)
                t[i - warmup] = now_ms() - a;
        }
        /* the device part alone: a plan of the net's graph, run once, then timed */
        struct cxr_nn_graph *g = cxr_nn_net_graph(net);
        if (b->iface->graph_plan(b, g, batch, &plan, err) != CXR_OK ||
            b->iface->graph_compute(b, plan, x, out, err) != CXR_OK ||
            b->iface->graph_compute(b, plan, x, out, err) != CXR_OK ||
            cxr_nn_cuda_plan_time_device(plan, iters < 200 ? iters : 200, &dev_ms, err) != CXR_OK) {
            fprintf(stderr, "device timing: %s\n", err);
            return 1;
        }
        qsort(t, (size_t)iters, sizeof *t, cmp_double);
        double med = pct(t, iters, 0.5);
        printf("{\"impl\":\"cxr\",\"mode\":\"infer\",\"arch\":\"%s\",\"precision\":\"%s\","
               "\"batch\":%d,\"size\":%d,\"channels\":%d,\"e2e_ms_median\":%.4f,"
               "\"e2e_ms_p99\":%.4f,\"device_ms\":%.4f,\"images_per_s_e2e\":%.1f,"
               "\"images_per_s_device\":%.1f,\"iters\":%d,\"backend\":\"%s\"}\n",
               arch, prec, batch, size, channels, med, pct(t, iters, 0.99), dev_ms,
               batch * 1000.0 / med, batch * 1000.0 / dev_ms, iters, cxr_nn_backend_describe(b));
        b->iface->plan_free(b, plan);
        cxr_nn_net_free(net);
        rc = 0;
    } else {
        struct cxr_nn_trainer_options to;
        cxr_nn_trainer_options_defaults(&to);
        to.schedule = CXR_NN_SCHEDULE_CONSTANT;
        to.lr = 1e-4;
        to.max_batch = batch;
        struct cxr_nn_trainer *tr = NULL;
        if (cxr_nn_trainer_new(b, m, &to, &tr, err) != CXR_OK) {
            fprintf(stderr, "trainer: %s\n", err);
            return 1;
        }
        int32_t *y = malloc((size_t)batch * sizeof *y);
        for (int i = 0; i < batch; i++)
            y[i] = i % 2;
        struct cxr_nn_step_stats st;
        double t0 = now_ms();
        for (int i = 0; i < warmup + iters; i++) {
            double a = now_ms();
            if (cxr_nn_trainer_step(tr, x, y, batch, &st) != CXR_OK) {
                fprintf(stderr, "step: %s\n", cxr_nn_trainer_last_error(tr));
                return 1;
            }
            double e = now_ms();
            if (i == 0)
                fprintf(stderr, "first step (plans, algorithm search) %.0f ms\n", e - t0);
            if (i >= warmup)
                t[i - warmup] = e - a;
        }
        qsort(t, (size_t)iters, sizeof *t, cmp_double);
        double med = pct(t, iters, 0.5);
        printf("{\"impl\":\"cxr\",\"mode\":\"train\",\"arch\":\"%s\",\"precision\":\"%s\","
               "\"batch\":%d,\"size\":%d,\"channels\":%d,\"step_ms_median\":%.3f,"
               "\"step_ms_min\":%.3f,\"images_per_s\":%.1f,\"loss\":%.4f,\"iters\":%d,"
               "\"backend\":\"%s\"}\n",
               arch, prec, batch, size, channels, med, t[0], batch * 1000.0 / med, st.loss, iters,
               cxr_nn_backend_describe(b));
        free(y);
        cxr_nn_trainer_free(tr);
        rc = 0;
    }
    free(t);
    cudaFreeHost(x);
    cudaFreeHost(out);
    cxr_nn_backend_close(b);
    cxr_nn_model_free(m);
    return rc;
}
