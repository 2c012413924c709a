/* backend_cuda_run.c — the CUDA backend's plans at run time: the activation
 * arena, pinned staging, the steps on the graph's stream, CUDA graphs, the
 * out-of-memory fallback, and freeing plans and graph state.
 *
 * One compute: input host -> device (straight from the caller's buffer
 * when it is pinned, else through a pinned staging buffer), the steps,
 * output device -> host, then a wait on the graph's stream (compute is
 * synchronous, so several threads may each drive their own net). The first
 * compute of a plan runs its steps one by one (that run also finds out
 * whether cuDNN supports each fused conv); later computes replay them as a
 * CUDA graph captured once (one launch instead of ~60-180: what batch-1
 * latency needs), recaptured when the arena moved.
 *
 * Out of memory: when the arena for a batch cannot be allocated (or cuDNN
 * cannot plan it), the plan becomes two plans of half the batch each, run
 * one after the other into the same caller buffers; halves split again
 * while they still do not fit. A warning says so once per plan.
 */
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cxr/log.h"

void cxr_nn_cuda_place_buffers(struct cuda_plan *p)
{
    p->ws_off = cxr_nn_arena_place(p->bufs, p->n_bufs, CXR_NN_CUDA_ARENA_ALIGN, false);
    p->arena_need = p->ws_off + cxr_nn_arena_round(p->workspace, CXR_NN_CUDA_ARENA_ALIGN);
}

void cxr_nn_cuda_conv_free(struct cuda_conv *cv)
{
    if (cv->x)
        cudnnDestroyTensorDescriptor(cv->x);
    if (cv->y)
        cudnnDestroyTensorDescriptor(cv->y);
    if (cv->bias)
        cudnnDestroyTensorDescriptor(cv->bias);
    if (cv->w)
        cudnnDestroyFilterDescriptor(cv->w);
    if (cv->conv)
        cudnnDestroyConvolutionDescriptor(cv->conv);
    if (cv->act)
        cudnnDestroyActivationDescriptor(cv->act);
}

void cxr_nn_cuda_plan_free(struct cxr_nn_backend *b, void *plan)
{
    struct cuda_plan *p = plan;
    if (!p)
        return;
    cxr_nn_cuda_plan_free(b, p->lo);
    cxr_nn_cuda_plan_free(b, p->hi);
    if (p->exec)
        cudaGraphExecDestroy(p->exec);
    for (int32_t i = 0; i < p->n_steps; i++)
        if (p->steps[i].kind == CS_CONV)
            cxr_nn_cuda_conv_free(&p->steps[i].cv);
    for (int32_t i = 0; i < p->n_zeros; i++)
        cudaFree(p->zeros[i]);
    free(p->zeros);
    free(p->steps);
    free(p->bufs);
    free(p);
}

void cxr_nn_cuda_graph_release(struct cxr_nn_backend *b, struct cxr_nn_graph *g)
{
    struct cuda_graph *cg = g ? g->extra : NULL;
    if (!cg)
        return;
    if (cg->stream)
        cudaStreamSynchronize(cg->stream);
    if (cg->dnn)
        cudnnDestroy(cg->dnn);
    if (cg->blas)
        cublasDestroy(cg->blas);
    if (cg->stream)
        cudaStreamDestroy(cg->stream);
    cudaFree(cg->blas_ws);
    cudaFree(cg->arena);
    cudaFreeHost(cg->pin_in);
    cudaFreeHost(cg->pin_out);
    free(cg);
    g->extra = NULL;
}

enum cxr_status cxr_nn_cuda_plan_split(struct cuda_ctx *c, struct cxr_nn_graph *g, int32_t batch,
                                       struct cuda_plan **out, char *err)
{
    enum cxr_status st = CXR_OK;
    *out = NULL;
    struct cuda_plan *p = calloc(1, sizeof *p);
    if (!p)
        return cxr_seterr(err, CXR_ERR_NOMEM, "cuda: out of host memory");
    p->ctx = c;
    p->cg = g->extra;
    p->g = g;
    p->batch = batch;
    int32_t half[2] = {batch / 2, batch - batch / 2};
    struct cuda_plan **dst[2] = {&p->lo, &p->hi};
    for (int k = 0; k < 2; k++) {
        st = cxr_nn_cuda_plan_build(c, g, half[k], dst[k], err);
        if (st == CXR_ERR_NOMEM && half[k] > 1)
            st = cxr_nn_cuda_plan_split(c, g, half[k], dst[k], err);
        if (st != CXR_OK)
            break;
    }
    if (st != CXR_OK) {
        cxr_nn_cuda_plan_free(NULL, p);
        return st;
    }
    p->in_bytes = p->lo->in_bytes + p->hi->in_bytes;
    p->out_bytes = p->lo->out_bytes + p->hi->out_bytes;
    *out = p;
    return CXR_OK;
}

/* Turns p into a split plan (its own steps stay, unused). */
static enum cxr_status split_in_place(struct cuda_plan *p, char *err)
{
    struct cuda_plan *s = NULL;
    enum cxr_status st = cxr_nn_cuda_plan_split(p->ctx, p->g, p->batch, &s, err);
    if (st != CXR_OK)
        return st;
    p->lo = s->lo;
    p->hi = s->hi;
    s->lo = s->hi = NULL;
    cxr_nn_cuda_plan_free(NULL, s);
    return CXR_OK;
}

enum cxr_status cxr_nn_cuda_ensure_arena(struct cuda_ctx *c, struct cuda_graph *cg, size_t need,
                                         char *err)
{
    enum cxr_status st = CXR_OK;
    if (cg->size >= need)
        return CXR_OK;
    CXR_CUDA(cudaStreamSynchronize(cg->stream), "arena");
    cudaFree(cg->arena);
    cg->arena = NULL;
    cg->size = 0;
    cg->generation++;
    if (c->arena_limit && need > c->arena_limit)
        return cxr_seterr(err, CXR_ERR_NOMEM,
                          "cuda: arena: %zu MiB needed, "
                          "CXR_CUDA_ARENA_LIMIT_MB allows %zu",
                          need >> 20, c->arena_limit >> 20);
    CXR_CUDA(cudaMalloc(&cg->arena, need), "arena");
    cg->size = need;
fail:
    if (st != CXR_OK)
        cudaGetLastError();
    return st;
}

static enum cxr_status ensure_arena(struct cuda_plan *p, char *err)
{
    return cxr_nn_cuda_ensure_arena(p->ctx, p->cg, p->arena_need, err);
}

/* Pinned staging of at least `need` bytes; false when pinning failed (the
 * copies then go through pageable memory, slower but correct). */
static bool ensure_pinned(void **buf, size_t *size, size_t need)
{
    if (*size >= need)
        return true;
    cudaFreeHost(*buf);
    *buf = NULL;
    *size = 0;
    if (cudaHostAlloc(buf, need, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        *buf = NULL;
        return false;
    }
    *size = need;
    return true;
}

static bool is_pinned(const void *ptr)
{
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, ptr) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return a.type == cudaMemoryTypeHost;
}

enum cxr_status cxr_nn_cuda_upload(struct cuda_graph *cg, void *dev, const void *host, size_t bytes,
                                   char *err)
{
    enum cxr_status st = CXR_OK;
    const void *src = host;
    if (!is_pinned(host) && ensure_pinned(&cg->pin_in, &cg->pin_in_size, bytes)) {
        memcpy(cg->pin_in, host, bytes);
        src = cg->pin_in;
    }
    CXR_CUDA(cudaMemcpyAsync(dev, src, bytes, cudaMemcpyHostToDevice, cg->stream), "input");
fail:
    return st;
}

enum cxr_status cxr_nn_cuda_download(struct cuda_graph *cg, void *host, const void *dev,
                                     size_t bytes, char *err)
{
    enum cxr_status st = CXR_OK;
    bool staged = !is_pinned(host) && ensure_pinned(&cg->pin_out, &cg->pin_out_size, bytes);
    CXR_CUDA(cudaMemcpyAsync(staged ? cg->pin_out : host, dev, bytes, cudaMemcpyDeviceToHost,
                             cg->stream),
             "output");
    CXR_CUDA(cudaStreamSynchronize(cg->stream), "output");
    if (staged)
        memcpy(host, cg->pin_out, bytes);
fail:
    return st;
}

static cudaDataType_t blas_type(enum ck_dtype t)
{
    return t == CK_F16 ? CUDA_R_16F : t == CK_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* One conv step: the fused cuDNN call, or conv + our epilogue where cuDNN
 * does not support the fused call for this configuration. */
static enum cxr_status run_conv(struct cuda_plan *p, struct cuda_step *s, bool capturing, char *err)
{
    enum cxr_status st = CXR_OK;
    struct cuda_graph *cg = p->cg;
    const char *where = p->g->ops[s->op].name;
    void *x = cuda_buf_ptr(p, s->x), *y = cuda_buf_ptr(p, s->y);
    void *z = s->z >= 0 ? cuda_buf_ptr(p, s->z) : NULL;
    void *ws = s->cv.workspace ? (char *)cg->arena + p->ws_off : NULL;
    const float one = 1.0f, zero = 0.0f, alpha2 = z ? 1.0f : 0.0f;
    if (!s->cv.tried || s->cv.fused) {
        cudnnStatus_t r = cudnnConvolutionBiasActivationForward(
            cg->dnn, &one, s->cv.x, x, s->cv.w, s->cv.wdev, s->cv.conv, s->cv.algo, ws,
            s->cv.workspace, &alpha2, s->cv.y, z ? z : y, s->cv.bias, s->cv.bdev, s->cv.act,
            s->cv.y, y);
        if (!s->cv.tried && !capturing) {
            s->cv.tried = true;
            s->cv.fused = r == CUDNN_STATUS_SUCCESS;
            if (r == CUDNN_STATUS_NOT_SUPPORTED || r == CUDNN_STATUS_BAD_PARAM) {
                cxr_log(CXR_LOG_DEBUG, "nn",
                        "cuda: %s: fused conv+bias+act not supported (%s); "
                        "conv then epilogue",
                        where, cudnnGetErrorString(r));
                char clear[256];
                cudnnGetLastErrorString(clear, sizeof clear);
            } else {
                CXR_CUDNN(r, where);
            }
        } else {
            CXR_CUDNN(r, where);
        }
        if (s->cv.fused)
            return CXR_OK;
    }
    CXR_CUDNN(cudnnConvolutionForward(cg->dnn, &one, s->cv.x, x, s->cv.w, s->cv.wdev, s->cv.conv,
                                      s->cv.algo, ws, s->cv.workspace, &zero, s->cv.y, y),
              where);
    CXR_CUDA(ck_bias_act(y, s->cv.bdev, z, p->ctx->act, (size_t)s->n * s->oh * s->ow, s->oc,
                         s->relu, cg->stream),
             where);
fail:
    return st;
}

enum cxr_status cxr_nn_cuda_run_steps(struct cuda_plan *p, bool capturing, char *err)
{
    enum cxr_status st = CXR_OK;
    struct cuda_graph *cg = p->cg;
    const enum ck_dtype dt = p->ctx->act;
    cudaStream_t stream = cg->stream;
    for (int32_t i = 0; i < p->n_steps; i++) {
        struct cuda_step *s = &p->steps[i];
        const char *where = s->op >= 0            ? p->g->ops[s->op].name
                            : s->kind == CS_INPUT ? "input"
                                                  : "output";
        void *x = cuda_buf_ptr(p, s->x), *y = cuda_buf_ptr(p, s->y);
        size_t count = (size_t)s->n * s->oh * s->ow * s->oc;
        switch (s->kind) {
        case CS_INPUT:
            CXR_CUDA(ck_nchw_to_nhwc(y, dt, x, s->n, s->real_c, s->c, s->h * s->w, stream), where);
            break;
        case CS_OUTPUT:
            CXR_CUDA(ck_nhwc_to_nchw(y, x, dt, s->n, s->real_c, s->c, s->h * s->w, stream), where);
            break;
        case CS_CONV:
            if ((st = run_conv(p, s, capturing, err)) != CXR_OK)
                goto fail;
            break;
        case CS_MAXPOOL:
            CXR_CUDA(ck_maxpool(y, x, dt, s->n, s->h, s->w, s->c, s->oh, s->ow, s->kernel,
                                s->stride, s->pad, stream),
                     where);
            break;
        case CS_ADD:
            CXR_CUDA(ck_add(y, x, cuda_buf_ptr(p, s->z), dt, count, s->relu, stream), where);
            break;
        case CS_RELU: CXR_CUDA(ck_relu(y, x, dt, count, stream), where); break;
        case CS_GAP: CXR_CUDA(ck_gap(y, x, dt, s->n, s->h * s->w, s->c, stream), where); break;
        case CS_FC: {
            const float one = 1.0f;
            CXR_CUDA(ck_bias_rows(y, s->fc_b, s->n, s->oc, stream), where);
            CXR_CUBLAS(cublasGemmEx(cg->blas, CUBLAS_OP_T, CUBLAS_OP_N, s->oc, s->n, s->c, &one,
                                    s->fc_w, blas_type(dt), s->c, x, blas_type(dt), s->c, &one, y,
                                    CUDA_R_32F, s->oc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                       where);
            break;
        }
        }
    }
fail:
    return st;
}

/* Captures the plan's steps into a CUDA graph; on any failure the plan
 * runs eagerly from then on (logged once, not an error). */
static void capture(struct cuda_plan *p)
{
    char err[CXR_ERRLEN] = "";
    cudaGraph_t graph = NULL;
    struct cuda_graph *cg = p->cg;
    if (p->exec) {
        cudaGraphExecDestroy(p->exec);
        p->exec = NULL;
    }
    cudaError_t e = cudaStreamBeginCapture(cg->stream, cudaStreamCaptureModeThreadLocal);
    enum cxr_status st =
        e == cudaSuccess ? cxr_nn_cuda_run_steps(p, true, err) : CXR_ERR_NN_BACKEND;
    if (e == cudaSuccess) {
        cudaError_t e2 = cudaStreamEndCapture(cg->stream, &graph);
        if (e2 != cudaSuccess)
            e = e2;
    }
    if (e == cudaSuccess && st == CXR_OK && graph)
        e = cudaGraphInstantiate(&p->exec, graph, 0);
    if (graph)
        cudaGraphDestroy(graph);
    if (e != cudaSuccess || st != CXR_OK || !p->exec) {
        cxr_log(CXR_LOG_INFO, "nn", "cuda: batch %d runs without a CUDA graph (%s)", (int)p->batch,
                e != cudaSuccess ? cudaGetErrorString(e) : err);
        cudaGetLastError();
        if (p->exec)
            cudaGraphExecDestroy(p->exec);
        p->exec = NULL;
        p->no_graph = true;
        return;
    }
    p->bound_generation = cg->generation;
}

/* The device part of one compute: graph replay or eager steps. */
static enum cxr_status run_device(struct cuda_plan *p, char *err)
{
    enum cxr_status st = CXR_OK;
    bool use_graph = p->ctx->graphs && !p->no_graph && p->runs > 0;
    if (use_graph && (!p->exec || p->bound_generation != p->cg->generation))
        capture(p);
    if (use_graph && p->exec) {
        CXR_CUDA(cudaGraphLaunch(p->exec, p->cg->stream), "graph launch");
        return CXR_OK;
    }
    return cxr_nn_cuda_run_steps(p, false, err);
fail:
    return st;
}

static enum cxr_status compute(struct cuda_plan *p, const float *input, float *output, char *err)
{
    enum cxr_status st = CXR_OK;
    if (p->lo) {
        if ((st = compute(p->lo, input, output, err)) != CXR_OK)
            return st;
        return compute(p->hi, input + p->lo->in_bytes / sizeof(float),
                       output + p->lo->out_bytes / sizeof(float), err);
    }
    struct cuda_graph *cg = p->cg;
    st = ensure_arena(p, err);
    if (st == CXR_ERR_NOMEM && p->batch > 1) {
        cxr_log(CXR_LOG_WARN, "nn",
                "cuda: out of GPU memory for batch %d (%zu MiB of "
                "activations and workspace); running it as batches of %d and %d",
                (int)p->batch, p->arena_need >> 20, (int)(p->batch / 2),
                (int)(p->batch - p->batch / 2));
        if ((st = split_in_place(p, err)) != CXR_OK)
            return st;
        return compute(p, input, output, err);
    }
    if (st != CXR_OK)
        return st;
    void *dev_in = cuda_buf_ptr(p, p->in_buf), *dev_out = cuda_buf_ptr(p, p->out_buf);
    if ((st = cxr_nn_cuda_upload(cg, dev_in, input, p->in_bytes, err)) != CXR_OK ||
        (st = run_device(p, err)) != CXR_OK ||
        (st = cxr_nn_cuda_download(cg, output, dev_out, p->out_bytes, err)) != CXR_OK)
        goto fail;
    p->runs++;
    return CXR_OK;
fail:
    cudaStreamSynchronize(cg->stream);
    cudaGetLastError();
    return st;
}

enum cxr_status cxr_nn_cuda_graph_compute(struct cxr_nn_backend *b, void *plan, const float *input,
                                          float *output, char *err)
{
    struct cuda_plan *p = plan;
    enum cxr_status st = CXR_OK;
    if (!p || !input || !output)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "cuda: compute without plan or buffers");
    CXR_CUDA(cudaSetDevice(p->ctx->device), "device");
    return compute(p, input, output, err);
fail:
    return st;
}

/* Device-only timing of a plan that has run once (arena in place). */
static enum cxr_status time_runs(struct cuda_plan *p, int32_t iters, char *err)
{
    enum cxr_status st = CXR_OK;
    if (p->lo) {
        for (int32_t i = 0; i < iters; i++)
            if ((st = time_runs(p->lo, 1, err)) != CXR_OK ||
                (st = time_runs(p->hi, 1, err)) != CXR_OK)
                return st;
        return CXR_OK;
    }
    if ((st = ensure_arena(p, err)) != CXR_OK)
        return st;
    for (int32_t i = 0; i < iters; i++)
        if ((st = run_device(p, err)) != CXR_OK)
            return st;
    return CXR_OK;
}

enum cxr_status cxr_nn_cuda_plan_time_device(void *plan, int32_t iters, double *ms, char *err)
{
    struct cuda_plan *p = plan;
    enum cxr_status st = CXR_OK;
    cudaEvent_t e0 = NULL, e1 = NULL;
    *ms = 0;
    if (!p || iters < 1 || p->runs + (p->lo ? 1 : 0) < 1)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "cuda: time a plan after one compute");
    cudaStream_t stream = p->cg->stream;
    CXR_CUDA(cudaEventCreate(&e0), "timing");
    CXR_CUDA(cudaEventCreate(&e1), "timing");
    CXR_CUDA(cudaEventRecord(e0, stream), "timing");
    if ((st = time_runs(p, iters, err)) != CXR_OK)
        goto fail;
    CXR_CUDA(cudaEventRecord(e1, stream), "timing");
    CXR_CUDA(cudaEventSynchronize(e1), "timing");
    float total = 0;
    CXR_CUDA(cudaEventElapsedTime(&total, e0, e1), "timing");
    *ms = (double)total / iters;
fail:
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    return st;
}
