/* backend_cuda_plan.c — compiles a fused graph into a list of GPU steps for
 * one batch size (backend_cuda_run.c places the memory and runs them).
 *
 * Layout: every activation is NHWC with its channel count padded to a
 * multiple of 8 (zeros in the padding, zero weights and bias for padded
 * output channels), in the backend's activation type (fp16, bf16 or f32),
 * so that cuDNN picks tensor-core kernels for every convolution, the
 * 1-channel stem included. Convolutions: batch norm already folded into
 * weight and bias, then one cudnnConvolutionBiasActivationForward per conv
 * (bias, the residual add as its `z` input, ReLU); the algorithm is measured
 * once per shape (cudnnFindConvolutionForwardAlgorithm) under the workspace
 * cap and cached in the backend. Where cuDNN does not support the fused call
 * for a configuration (it says so on the first run), the conv runs alone
 * and ck_bias_act does the epilogue. Max pool, add, ReLU, global average
 * pool: our kernels; fc: cuBLAS (GemmEx, fp32 accumulation and output).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cxr/log.h"

struct builder {
    struct cuda_plan *p;
    struct cxr_nn_graph *g;
    int32_t *vbuf; /* value -> buffer */
    bool *vf32;    /* value is f32 [n][c] (an fc output) */
    char *err;
};

static enum cxr_status oom(char *err)
{
    return cxr_seterr(err, CXR_ERR_NOMEM, "cuda: out of host memory while planning");
}

static int32_t new_buf(struct cuda_plan *p, size_t size)
{
    if (!cxr_nn_grow((void **)&p->bufs, p->n_bufs, &p->cap_bufs, sizeof *p->bufs))
        return -1;
    p->bufs[p->n_bufs] = (struct cxr_nn_buf){.size = size, .first = -1, .last = -1};
    return p->n_bufs++;
}

static void touch(struct cuda_plan *p, int32_t buf, int32_t step)
{
    if (buf < 0)
        return;
    if (p->bufs[buf].first < 0)
        p->bufs[buf].first = step;
    if (step > p->bufs[buf].last)
        p->bufs[buf].last = step;
}

/* Appends a step; its x/z/y buffers become live at it. */
static struct cuda_step *add_step(struct cuda_plan *p, enum cstep_kind kind, int32_t op, int32_t x,
                                  int32_t z, int32_t y)
{
    if (!cxr_nn_grow((void **)&p->steps, p->n_steps, &p->cap_steps, sizeof *p->steps))
        return NULL;
    struct cuda_step *s = &p->steps[p->n_steps];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->op = op;
    s->x = x;
    s->z = z;
    s->y = y;
    touch(p, x, p->n_steps);
    touch(p, z, p->n_steps);
    touch(p, y, p->n_steps);
    p->n_steps++;
    return s;
}

static cudnnDataType_t dnn_type(enum ck_dtype t)
{
    return t == CK_F16 ? CUDNN_DATA_HALF : t == CK_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

/* An activation buffer for value v (NHWC, padded channels, act type). */
static int32_t value_buf(struct builder *B, int32_t v)
{
    const struct cxr_nn_value *val = &B->g->values[v];
    size_t bytes = (size_t)B->p->batch * (size_t)val->h * (size_t)val->w *
                   (size_t)cuda_pad8(val->c) * ck_size(B->p->ctx->act);
    return new_buf(B->p, bytes);
}

/* The fastest algorithm of direction `dir` (0 forward, 1 backward data,
 * 2 backward filter) for the conv's shape within the workspace cap: from
 * the backend's cache, else measured by cuDNN (on the graph's handle) and
 * cached. The conv descriptor's math type is left as the choice wants. */
enum cxr_status cxr_nn_cuda_conv_algo(struct cuda_ctx *c, cudnnHandle_t dnn, struct cuda_conv *cv,
                                      const struct cuda_conv_geo *geo, int32_t dir,
                                      struct cuda_algo *out, const char *where, char *err)
{
    enum cxr_status st = CXR_OK;
    struct cuda_algo_key key;
    memset(&key, 0, sizeof key); /* compared with memcmp */
    key.n = geo->n;
    key.c = geo->c;
    key.h = geo->h;
    key.w = geo->w;
    key.k = geo->oc;
    key.r = geo->k;
    key.s = geo->k;
    key.stride = geo->stride;
    key.pad = geo->pad;
    key.dtype = (int32_t)c->act | (c->tf32 ? 0x100 : 0);
    key.dir = dir;
    struct cuda_algo a;
    if (!cxr_nn_cuda_algo_find(c, &key, &a)) {
        int returned = 0, pick = -1;
        float ms = 0;
        if (dir == 0) {
            cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
            CXR_CUDNN(cudnnFindConvolutionForwardAlgorithm(dnn, cv->x, cv->w, cv->conv, cv->y,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                           &returned, perf),
                      where);
            for (int i = 0; i < returned && pick < 0; i++)
                if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= c->workspace_cap) {
                    pick = i;
                    a = (struct cuda_algo){.algo = (int32_t)perf[i].algo,
                                           .math = (int32_t)perf[i].mathType,
                                           .workspace = perf[i].memory};
                    ms = perf[i].time;
                }
        } else if (dir == 1) {
            cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
            CXR_CUDNN(cudnnFindConvolutionBackwardDataAlgorithm(
                          dnn, cv->w, cv->y, cv->conv, cv->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                          &returned, perf),
                      where);
            for (int i = 0; i < returned && pick < 0; i++)
                if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= c->workspace_cap) {
                    pick = i;
                    a = (struct cuda_algo){.algo = (int32_t)perf[i].algo,
                                           .math = (int32_t)perf[i].mathType,
                                           .workspace = perf[i].memory};
                    ms = perf[i].time;
                }
        } else {
            cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
            CXR_CUDNN(cudnnFindConvolutionBackwardFilterAlgorithm(
                          dnn, cv->x, cv->y, cv->conv, cv->w,
                          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, perf),
                      where);
            for (int i = 0; i < returned && pick < 0; i++)
                if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= c->workspace_cap) {
                    pick = i;
                    a = (struct cuda_algo){.algo = (int32_t)perf[i].algo,
                                           .math = (int32_t)perf[i].mathType,
                                           .workspace = perf[i].memory};
                    ms = perf[i].time;
                }
        }
        if (pick < 0)
            return cxr_seterr(err, CXR_ERR_NN_BACKEND,
                              "cuDNN: %s: no %s algorithm for "
                              "%dx%dx%dx%d (%s) within a %zu MiB workspace (raise "
                              "CXR_CUDA_WORKSPACE_MB)",
                              where,
                              dir == 0   ? "forward"
                              : dir == 1 ? "backward-data"
                                         : "backward-filter",
                              (int)geo->n, (int)geo->h, (int)geo->w, (int)geo->c,
                              cxr_nn_cuda_dtype_name(c->act), c->workspace_cap >> 20);
        a.key = key;
        cxr_nn_cuda_algo_put(c, &a);
        cxr_log(CXR_LOG_DEBUG, "nn",
                "cuda: %s batch %d dir %d: algo %d math %d, %.3f ms, %zu KiB "
                "workspace",
                where, (int)geo->n, (int)dir, a.algo, a.math, (double)ms, a.workspace >> 10);
    }
    *out = a;
fail:
    return st;
}

/* Descriptors of a conv (x, w, conv, y, bias, activation) for `geo`. */
enum cxr_status cxr_nn_cuda_conv_setup(struct cuda_ctx *c, struct cuda_conv *cv,
                                       const struct cuda_conv_geo *geo, bool relu,
                                       const char *where, char *err)
{
    enum cxr_status st = CXR_OK;
    cudnnDataType_t dt = dnn_type(c->act);
    CXR_CUDNN(cudnnCreateTensorDescriptor(&cv->x), where);
    CXR_CUDNN(cudnnCreateTensorDescriptor(&cv->y), where);
    CXR_CUDNN(cudnnCreateTensorDescriptor(&cv->bias), where);
    CXR_CUDNN(cudnnCreateFilterDescriptor(&cv->w), where);
    CXR_CUDNN(cudnnCreateConvolutionDescriptor(&cv->conv), where);
    CXR_CUDNN(cudnnCreateActivationDescriptor(&cv->act), where);
    CXR_CUDNN(
        cudnnSetTensor4dDescriptor(cv->x, CUDNN_TENSOR_NHWC, dt, geo->n, geo->c, geo->h, geo->w),
        where);
    CXR_CUDNN(
        cudnnSetFilter4dDescriptor(cv->w, dt, CUDNN_TENSOR_NHWC, geo->oc, geo->c, geo->k, geo->k),
        where);
    CXR_CUDNN(cudnnSetConvolution2dDescriptor(cv->conv, geo->pad, geo->pad, geo->stride,
                                              geo->stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                              CUDNN_DATA_FLOAT),
              where);
    CXR_CUDNN(cudnnSetConvolutionMathType(cv->conv, cxr_nn_cuda_math(c)), where);
    int on = 0, oc = 0, oh = 0, ow = 0;
    CXR_CUDNN(cudnnGetConvolution2dForwardOutputDim(cv->conv, cv->x, cv->w, &on, &oc, &oh, &ow),
              where);
    if (on != geo->n || oc != geo->oc || oh != geo->oh || ow != geo->ow)
        return cxr_seterr(err, CXR_ERR_INTERNAL,
                          "cuda: %s: cuDNN computes %dx%dx%dx%d, "
                          "the graph %dx%dx%dx%d",
                          where, on, oc, oh, ow, (int)geo->n, (int)geo->oc, (int)geo->oh,
                          (int)geo->ow);
    CXR_CUDNN(
        cudnnSetTensor4dDescriptor(cv->y, CUDNN_TENSOR_NHWC, dt, geo->n, geo->oc, geo->oh, geo->ow),
        where);
    CXR_CUDNN(cudnnSetTensor4dDescriptor(cv->bias, CUDNN_TENSOR_NHWC, dt, 1, geo->oc, 1, 1), where);
    CXR_CUDNN(cudnnSetActivationDescriptor(cv->act,
                                           relu ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY,
                                           CUDNN_NOT_PROPAGATE_NAN, 0.0),
              where);
fail:
    return st;
}

cudnnMathType_t cxr_nn_cuda_math(const struct cuda_ctx *c)
{
    return c->act != CK_F32 ? CUDNN_TENSOR_OP_MATH : c->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
}

static enum cxr_status plan_conv(struct builder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct cuda_plan *p = B->p;
    char *err = B->err;
    enum cxr_status st;
    const struct cxr_nn_value *x = &B->g->values[op->in[0]], *y = &B->g->values[op->out];
    if (op->kernel_h != op->kernel_w)
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED, "cuda: %s: non-square kernel", op->name);
    int32_t yb = value_buf(B, op->out);
    if (yb < 0)
        return oom(err);
    int32_t zb = op->sum_in >= 0 ? B->vbuf[op->sum_in] : -1;
    struct cuda_step *s = add_step(p, CS_CONV, oi, B->vbuf[op->in[0]], zb, yb);
    if (!s)
        return oom(err);
    s->n = p->batch;
    s->c = cuda_pad8(x->c);
    s->h = x->h;
    s->w = x->w;
    s->oc = cuda_pad8(y->c);
    s->oh = y->h;
    s->ow = y->w;
    s->kernel = op->kernel_h;
    s->stride = op->stride;
    s->pad = op->pad;
    s->relu = op->relu;
    struct cuda_conv_geo geo = {.n = s->n,
                                .c = s->c,
                                .h = s->h,
                                .w = s->w,
                                .oc = s->oc,
                                .oh = s->oh,
                                .ow = s->ow,
                                .k = s->kernel,
                                .stride = s->stride,
                                .pad = s->pad};
    struct cuda_algo a;
    if ((st = cxr_nn_cuda_conv_setup(p->ctx, &s->cv, &geo, s->relu, op->name, err)) != CXR_OK ||
        (st = cxr_nn_cuda_conv_algo(p->ctx, p->cg->dnn, &s->cv, &geo, 0, &a, op->name, err)) !=
            CXR_OK)
        return st;
    CXR_CUDNN(cudnnSetConvolutionMathType(s->cv.conv, (cudnnMathType_t)a.math), op->name);
    s->cv.algo = (cudnnConvolutionFwdAlgo_t)a.algo;
    s->cv.workspace = a.workspace;
    if (a.workspace > p->workspace)
        p->workspace = a.workspace;
    struct cxr_nn_tensor *wt = &B->g->params[op->param[0]].t;
    if ((st = cxr_nn_cuda_weights(p->ctx, wt, CW_CONV, p->ctx->act, &s->cv.wdev, err)) != CXR_OK)
        return st;
    if (op->param[1] >= 0) {
        struct cxr_nn_tensor *bt = &B->g->params[op->param[1]].t;
        if ((st = cxr_nn_cuda_weights(p->ctx, bt, CW_VEC, p->ctx->act, &s->cv.bdev, err)) != CXR_OK)
            return st;
    } else {
        /* no bias: the fused call still wants one; a zero vector of the plan */
        size_t bytes = (size_t)s->oc * ck_size(p->ctx->act);
        void *z = NULL;
        if (!cxr_nn_grow((void **)&p->zeros, p->n_zeros, &p->cap_zeros, sizeof *p->zeros))
            return oom(err);
        CXR_CUDA(cudaMalloc(&z, bytes), op->name);
        p->zeros[p->n_zeros++] = z;
        CXR_CUDA(cudaMemset(z, 0, bytes), op->name);
        s->cv.bdev = z;
    }
    B->vbuf[op->out] = yb;
    return CXR_OK;
fail:
    return st;
}

static enum cxr_status plan_simple(struct builder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct cuda_plan *p = B->p;
    char *err = B->err;
    const struct cxr_nn_value *x = &B->g->values[op->in[0]], *y = &B->g->values[op->out];
    int32_t yb = value_buf(B, op->out);
    if (yb < 0)
        return oom(err);
    enum cstep_kind kind = op->kind == CXR_NN_OP_MAXPOOL ? CS_MAXPOOL
                           : op->kind == CXR_NN_OP_ADD   ? CS_ADD
                           : op->kind == CXR_NN_OP_RELU  ? CS_RELU
                                                         : CS_GAP;
    int32_t zb = op->kind == CXR_NN_OP_ADD ? B->vbuf[op->in[1]] : -1;
    struct cuda_step *s = add_step(p, kind, oi, B->vbuf[op->in[0]], zb, yb);
    if (!s)
        return oom(err);
    s->n = p->batch;
    s->c = cuda_pad8(x->c);
    s->h = x->h;
    s->w = x->w;
    s->oc = cuda_pad8(y->c);
    s->oh = y->h;
    s->ow = y->w;
    s->kernel = op->kernel_h;
    s->stride = op->stride;
    s->pad = op->pad;
    s->relu = op->relu;
    B->vbuf[op->out] = yb;
    return CXR_OK;
}

/* fc on a C x 1 x 1 value: logits f32 [n][O] = x [n][Cp] . W[O][Cp]^T + b. */
static enum cxr_status plan_fc(struct builder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct cuda_plan *p = B->p;
    char *err = B->err;
    enum cxr_status st;
    const struct cxr_nn_value *x = &B->g->values[op->in[0]], *y = &B->g->values[op->out];
    int32_t yb = new_buf(p, (size_t)p->batch * (size_t)y->c * sizeof(float));
    if (yb < 0)
        return oom(err);
    struct cuda_step *s = add_step(p, CS_FC, oi, B->vbuf[op->in[0]], -1, yb);
    if (!s)
        return oom(err);
    s->n = p->batch;
    s->c = cuda_pad8(x->c);
    s->h = s->w = 1;
    s->oc = y->c;
    s->real_c = y->c;
    s->oh = s->ow = 1;
    struct cxr_nn_tensor *wt = &B->g->params[op->param[0]].t, *bt = &B->g->params[op->param[1]].t;
    if ((st = cxr_nn_cuda_weights(p->ctx, wt, CW_FC, p->ctx->act, &s->fc_w, err)) != CXR_OK)
        return st;
    const struct cuda_tensor *cb = bt->extra;
    if (!cb)
        return cxr_seterr(err, CXR_ERR_INTERNAL, "cuda: '%s' has no storage", bt->name);
    s->fc_b = cb->dev; /* f32 [O], the master copy itself */
    B->vbuf[op->out] = yb;
    B->vf32[op->out] = true;
    return CXR_OK;
}

/* Creates the graph's stream, library handles and cuBLAS workspace once. */
enum cxr_status cxr_nn_cuda_graph_state(struct cuda_ctx *c, struct cxr_nn_graph *g, char *err)
{
    enum cxr_status st = CXR_OK;
    if (g->extra)
        return CXR_OK;
    struct cuda_graph *cg = calloc(1, sizeof *cg);
    if (!cg)
        return oom(err);
    CXR_CUDA(cudaSetDevice(c->device), "graph");
    CXR_CUDA(cudaStreamCreateWithFlags(&cg->stream, cudaStreamNonBlocking), "graph stream");
    CXR_CUDNN(cudnnCreate(&cg->dnn), "graph");
    CXR_CUDNN(cudnnSetStream(cg->dnn, cg->stream), "graph");
    CXR_CUBLAS(cublasCreate(&cg->blas), "graph");
    CXR_CUBLAS(cublasSetStream(cg->blas, cg->stream), "graph");
    CXR_CUDA(cudaMalloc(&cg->blas_ws, CUDA_BLAS_WORKSPACE), "cuBLAS workspace");
    CXR_CUBLAS(cublasSetWorkspace(cg->blas, cg->blas_ws, CUDA_BLAS_WORKSPACE), "graph");
    g->extra = cg;
    return CXR_OK;
fail:
    g->extra = cg;
    cxr_nn_cuda_graph_release(NULL, g);
    return st;
}

/* Builds the steps of a plan for `batch` (no memory is allocated for
 * activations here: run.c does that at the first compute). */
enum cxr_status cxr_nn_cuda_plan_build(struct cuda_ctx *c, struct cxr_nn_graph *g, int32_t batch,
                                       struct cuda_plan **out, char *err)
{
    enum cxr_status st;
    *out = NULL;
    if ((st = cxr_nn_cuda_graph_state(c, g, err)) != CXR_OK)
        return st;
    struct cuda_plan *p = calloc(1, sizeof *p);
    int32_t *vbuf = calloc((size_t)g->n_values, sizeof *vbuf);
    bool *vf32 = calloc((size_t)g->n_values, sizeof *vf32);
    if (!p || !vbuf || !vf32) {
        free(p);
        free(vbuf);
        free(vf32);
        return oom(err);
    }
    p->ctx = c;
    p->cg = g->extra;
    p->g = g;
    p->batch = batch;
    p->in_buf = p->out_buf = -1;
    struct builder B = {.p = p, .g = g, .vbuf = vbuf, .vf32 = vf32, .err = err};
    for (int32_t v = 0; v < g->n_values; v++)
        vbuf[v] = -1;
    const struct cxr_nn_value *in = &g->values[g->input];
    p->in_bytes = (size_t)batch * (size_t)in->c * (size_t)in->h * (size_t)in->w * sizeof(float);
    p->in_buf = new_buf(p, p->in_bytes);
    int32_t ib = value_buf(&B, g->input);
    struct cuda_step *s =
        p->in_buf >= 0 && ib >= 0 ? add_step(p, CS_INPUT, -1, p->in_buf, -1, ib) : NULL;
    if (!s) {
        st = oom(err);
        goto fail;
    }
    s->n = batch;
    s->real_c = in->c;
    s->c = cuda_pad8(in->c);
    s->h = in->h;
    s->w = in->w;
    vbuf[g->input] = ib;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (op->absorbed_by >= 0)
            continue;
        for (int32_t k = 0; k < op->n_in; k++) {
            if (vbuf[op->in[k]] < 0) {
                st = cxr_seterr(err, CXR_ERR_INTERNAL,
                                "cuda: '%s' reads a value not "
                                "computed yet",
                                op->name);
                goto fail;
            }
            if (vf32[op->in[k]] && op->kind != CXR_NN_OP_FC) {
                st = cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                                "cuda: '%s' reads an fc output; "
                                "only the graph's result may come from an fc",
                                op->name);
                goto fail;
            }
        }
        switch (op->kind) {
        case CXR_NN_OP_CONV: st = plan_conv(&B, i); break;
        case CXR_NN_OP_MAXPOOL:
        case CXR_NN_OP_ADD:
        case CXR_NN_OP_RELU:
        case CXR_NN_OP_GAP: st = plan_simple(&B, i); break;
        case CXR_NN_OP_FC:
            if (vf32[op->in[0]] || g->values[op->in[0]].h != 1 || g->values[op->in[0]].w != 1)
                st = cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                                "cuda: fc '%s' needs a C x 1 x 1 "
                                "activation",
                                op->name);
            else
                st = plan_fc(&B, i);
            break;
        default:
            st = cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                            "cuda: %s op '%s' is not supported "
                            "for inference (batch norm must follow a convolution)",
                            cxr_nn_op_kind_name(op->kind), op->name);
        }
        if (st != CXR_OK)
            goto fail;
    }
    /* the caller's output: NCHW f32 */
    const struct cxr_nn_value *y = &g->values[g->output];
    p->out_bytes = (size_t)batch * (size_t)y->c * (size_t)y->h * (size_t)y->w * sizeof(float);
    if (vf32[g->output]) {
        p->out_buf = vbuf[g->output]; /* the fc wrote [n][O] f32: copy it out as is */
    } else {
        p->out_buf = new_buf(p, p->out_bytes);
        s = p->out_buf >= 0 ? add_step(p, CS_OUTPUT, -1, vbuf[g->output], -1, p->out_buf) : NULL;
        if (!s) {
            st = oom(err);
            goto fail;
        }
        s->n = batch;
        s->real_c = y->c;
        s->c = cuda_pad8(y->c);
        s->h = y->h;
        s->w = y->w;
    }
    cxr_nn_cuda_place_buffers(p);
    free(vbuf);
    free(vf32);
    *out = p;
    return CXR_OK;
fail:
    free(vbuf);
    free(vf32);
    cxr_nn_cuda_plan_free(NULL, p);
    return st;
}

enum cxr_status cxr_nn_cuda_graph_plan(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                       int32_t batch, void **plan, char *err)
{
    struct cuda_ctx *c = b->context;
    *plan = NULL;
    if (!g || !g->fused || batch < 1 || g->n_ops < 1)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cuda: plan needs a fused graph and a "
                          "batch >= 1");
    struct cuda_plan *p = NULL;
    enum cxr_status st = CXR_OK;
    CXR_CUDA(cudaSetDevice(c->device), "plan");
    st = cxr_nn_cuda_plan_build(c, g, batch, &p, err);
    if (st == CXR_ERR_NOMEM && batch > 1) {
        /* measuring algorithms needs memory too: plan the batch as halves */
        cxr_log(CXR_LOG_WARN, "nn",
                "cuda: out of memory planning batch %d (%s); running it as "
                "batches of %d and %d",
                (int)batch, err ? err : "", (int)(batch / 2), (int)(batch - batch / 2));
        st = cxr_nn_cuda_plan_split(c, g, batch, &p, err);
    }
    if (st == CXR_OK)
        *plan = p;
fail:
    return st;
}
