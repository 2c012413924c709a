/* backend_cuda_train_run.c — a training step on the GPU: the training
 * forward (batch norm with batch statistics, running statistics updated in
 * the parameters' storage), the backward pass into the F32 gradient
 * tensors, the gradients' sum of squares and the optimizer update (see
 * backend.h "training" for the contract, optim.c for the arithmetic).
 *
 * Mixed precision: with fp16 activations the backward pass runs on
 * dLoss/dlogits multiplied by a loss scale S (dynamic, as PyTorch's
 * GradScaler: start 2^16, halve on overflow, double after 2000 clean
 * steps); parameter gradients come out divided by S. When a gradient
 * overflows, the scale is halved and the backward pass is run again on the
 * same forward activations, so the trainer always receives unscaled, finite
 * gradients unless the step really diverges (then it sees the non-finite
 * values and says so). bf16 has fp32's range and needs no scaling.
 */
#include <math.h>
#include <string.h>

#include "backend_cuda.h"
#include "cxr/log.h"

#define SCALE_GROWTH_INTERVAL 2000

static void *bp(const struct cuda_tplan *p, int32_t buf)
{
    return buf >= 0 ? (char *)p->cg->arena + p->bufs[buf].off : NULL;
}

static float *master(struct cxr_nn_graph *g, int32_t param)
{
    const struct cuda_tensor *ct = param >= 0 ? g->params[param].t.extra : NULL;
    return ct ? ct->dev : NULL;
}

static float *grad_master(struct cxr_nn_graph *g, int32_t param)
{
    if (param < 0 || !g->params[param].trainable)
        return NULL;
    const struct cuda_tensor *ct = g->params[param].grad.extra;
    return ct ? ct->dev : NULL;
}

static cudaDataType_t blas_type(enum ck_dtype t)
{
    return t == CK_F16 ? CUDA_R_16F : t == CK_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static enum cxr_status forward_step(struct cuda_tplan *p, struct tstep *s, char *err)
{
    enum cxr_status st = CXR_OK;
    struct cuda_graph *cg = p->cg;
    struct cxr_nn_graph *g = p->g;
    const enum ck_dtype dt = p->ctx->act;
    cudaStream_t stream = cg->stream;
    const char *where = g->ops[s->op].name;
    void *x = bp(p, s->x), *y = bp(p, s->y);
    size_t rows_in = (size_t)s->n * s->h * s->w, rows_out = (size_t)s->n * s->oh * s->ow;
    const float one = 1.0f, zero = 0.0f;
    switch (s->kind) {
    case CXR_NN_OP_CONV:
        CXR_CUDNN(cudnnSetConvolutionMathType(s->cv.conv, (cudnnMathType_t)s->fwd_math), where);
        CXR_CUDNN(cudnnConvolutionForward(cg->dnn, &one, s->cv.x, x, s->cv.w, s->cv.wdev,
                                          s->cv.conv, s->cv.algo, (char *)cg->arena + p->ws_off,
                                          s->cv.workspace, &zero, s->cv.y, y),
                  where);
        if (s->cv.bdev)
            CXR_CUDA(ck_bias_act(y, s->cv.bdev, NULL, dt, rows_out, s->ocp, 0, stream), where);
        break;
    case CXR_NN_OP_BN: {
        void *stats = bp(p, s->stats);
        CXR_CUDA(ck_bn_stats(stats, x, dt, rows_in, s->c, s->cp, s->eps, master(g, s->pw),
                             master(g, s->pb), master(g, s->pmean), master(g, s->pvar),
                             p->bn_frozen, stream),
                 where);
        CXR_CUDA(ck_bn_apply(y, x, dt, stats, rows_in, s->cp, stream), where);
        if (!p->bn_frozen)
            CXR_CUDA(ck_bn_running(master(g, s->pmean), master(g, s->pvar), stats, p->bn_momentum,
                                   rows_in, s->c, s->cp, stream),
                     where);
        break;
    }
    case CXR_NN_OP_RELU: CXR_CUDA(ck_relu(y, x, dt, rows_out * s->ocp, stream), where); break;
    case CXR_NN_OP_MAXPOOL:
        CXR_CUDA(
            ck_maxpool(y, x, dt, s->n, s->h, s->w, s->cp, s->oh, s->ow, s->k, s->s, s->pad, stream),
            where);
        break;
    case CXR_NN_OP_ADD:
        CXR_CUDA(ck_add(y, x, bp(p, s->x2), dt, rows_out * s->ocp, 0, stream), where);
        break;
    case CXR_NN_OP_GAP: CXR_CUDA(ck_gap(y, x, dt, s->n, s->h * s->w, s->cp, stream), where); break;
    case CXR_NN_OP_FC:
        CXR_CUDA(ck_to_f32(bp(p, s->x32), x, dt, (size_t)s->n * s->cp, stream), where);
        CXR_CUDA(ck_bias_rows(y, master(g, s->pb), s->n, s->oc, stream), where);
        CXR_CUBLAS(cublasGemmEx(cg->blas, CUBLAS_OP_T, CUBLAS_OP_N, s->oc, s->n, s->cp, &one,
                                s->cv.wdev, blas_type(dt), s->cp, x, blas_type(dt), s->cp, &one, y,
                                CUDA_R_32F, s->oc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   where);
        break;
    default:
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED, "cuda: %s op '%s' cannot train",
                          cxr_nn_op_kind_name(s->kind), where);
    }
fail:
    return st;
}

/* Backward of one op with dLoss/dy scaled by `scale` (the loss scale);
 * parameter gradients are written unscaled (times 1/scale). */
static enum cxr_status backward_step(struct cuda_tplan *p, struct tstep *s, float scale, char *err)
{
    enum cxr_status st = CXR_OK;
    struct cuda_graph *cg = p->cg;
    struct cxr_nn_graph *g = p->g;
    const enum ck_dtype dt = p->ctx->act;
    cudaStream_t stream = cg->stream;
    const char *where = g->ops[s->op].name;
    void *x = bp(p, s->x), *y = bp(p, s->y), *dy = bp(p, s->dy);
    void *dx = bp(p, s->dx), *ws = (char *)cg->arena + p->ws_off;
    size_t rows_in = (size_t)s->n * s->h * s->w, rows_out = (size_t)s->n * s->oh * s->ow;
    const float one = 1.0f, zero = 0.0f, unscale = 1.0f / scale;
    switch (s->kind) {
    case CXR_NN_OP_CONV: {
        float *gw = grad_master(g, s->pw), *gb = grad_master(g, s->pb);
        if (gw) {
            CXR_CUDNN(cudnnSetConvolutionMathType(s->cv.conv, (cudnnMathType_t)s->bf_math), where);
            CXR_CUDNN(cudnnConvolutionBackwardFilter(cg->dnn, &one, s->cv.x, x, s->cv.y, dy,
                                                     s->cv.conv, s->bf_algo, ws, s->bf_ws, &zero,
                                                     s->cv.w, bp(p, s->dw)),
                      where);
            CXR_CUDA(
                ck_conv_grad(gw, bp(p, s->dw), dt, s->oc, s->c, s->cp, s->k, s->k, unscale, stream),
                where);
        }
        if (gb)
            CXR_CUDA(
                ck_colsum(gb, bp(p, s->dtmp), dy, dt, rows_out, s->oc, s->ocp, unscale, stream),
                where);
        if (dx) {
            const float beta = s->acc_dx ? 1.0f : 0.0f;
            CXR_CUDNN(cudnnSetConvolutionMathType(s->cv.conv, (cudnnMathType_t)s->bd_math), where);
            CXR_CUDNN(cudnnConvolutionBackwardData(cg->dnn, &one, s->cv.w, s->cv.wdev, s->cv.y, dy,
                                                   s->cv.conv, s->bd_algo, ws, s->bd_ws, &beta,
                                                   s->cv.x, dx),
                      where);
        }
        break;
    }
    case CXR_NN_OP_BN:
        CXR_CUDA(ck_bn_back(dx, grad_master(g, s->pw), grad_master(g, s->pb), dy, x, dt,
                            bp(p, s->stats), master(g, s->pw), rows_in, s->c, s->cp, p->bn_frozen,
                            unscale, s->acc_dx, stream),
                 where);
        break;
    case CXR_NN_OP_RELU:
        if (dx)
            CXR_CUDA(ck_relu_back(dx, dy, y, dt, rows_out * s->ocp, s->acc_dx, stream), where);
        break;
    case CXR_NN_OP_MAXPOOL:
        if (dx)
            CXR_CUDA(ck_maxpool_back(dx, dy, x, dt, s->n, s->h, s->w, s->cp, s->oh, s->ow, s->k,
                                     s->s, s->pad, s->acc_dx, stream),
                     where);
        break;
    case CXR_NN_OP_ADD:
        if (dx)
            CXR_CUDA(ck_copy_acc(dx, dy, dt, rows_out * s->ocp, s->acc_dx, stream), where);
        if (s->dx2 >= 0)
            CXR_CUDA(ck_copy_acc(bp(p, s->dx2), dy, dt, rows_out * s->ocp, s->acc_dx2, stream),
                     where);
        break;
    case CXR_NN_OP_GAP:
        if (dx)
            CXR_CUDA(ck_gap_back(dx, dy, dt, s->n, s->h * s->w, s->cp, s->acc_dx, stream), where);
        break;
    case CXR_NN_OP_FC: {
        /* dy: f32 [n][O] (the scaled dlogits). G^T (C x O) = X^T dY, dX = dY W. */
        float *gw = grad_master(g, s->pw), *gb = grad_master(g, s->pb);
        if (gw)
            CXR_CUBLAS(cublasSgemm(cg->blas, CUBLAS_OP_N, CUBLAS_OP_T, s->c, s->oc, s->n, &unscale,
                                   bp(p, s->x32), s->cp, dy, s->oc, &zero, gw, s->c),
                       where);
        if (gb)
            CXR_CUDA(ck_colsum(gb, bp(p, s->dtmp), dy, CK_F32, (size_t)s->n, s->oc, s->oc, unscale,
                               stream),
                     where);
        if (dx) {
            float *dx32 = bp(p, s->dx32);
            CXR_CUBLAS(cublasSgemm(cg->blas, CUBLAS_OP_N, CUBLAS_OP_N, s->cp, s->n, s->oc, &one,
                                   s->fc_w32, s->cp, dy, s->oc, &zero, dx32, s->cp),
                       where);
            CXR_CUDA(ck_from_f32(dx, dx32, dt, (size_t)s->n * s->cp, s->acc_dx, stream), where);
        }
        break;
    }
    default: return cxr_seterr(err, CXR_ERR_UNSUPPORTED, "cuda: no backward for '%s'", where);
    }
fail:
    return st;
}

enum cxr_status cxr_nn_cuda_train_forward(struct cxr_nn_backend *b, void *plan, const float *input,
                                          float *logits, char *err)
{
    struct cuda_tplan *p = plan;
    enum cxr_status st = CXR_OK;
    if (!p || !input || !logits)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cuda: train_forward without plan or "
                          "buffers");
    struct cuda_graph *cg = p->cg;
    p->forwarded = false;
    CXR_CUDA(cudaSetDevice(p->ctx->device), "train");
    if ((st = cxr_nn_cuda_ensure_arena(p->ctx, cg, p->arena_need, err)) != CXR_OK) {
        if (st == CXR_ERR_NOMEM)
            cxr_seterr(err, st,
                       "cuda: training batch %d needs %zu MiB of GPU memory for "
                       "activations and gradients: use a smaller batch",
                       (int)p->batch, p->arena_need >> 20);
        return st;
    }
    const struct cxr_nn_value *in = &p->g->values[p->g->input];
    if ((st = cxr_nn_cuda_upload(cg, bp(p, p->in_buf), input, p->in_bytes, err)) != CXR_OK)
        goto fail;
    CXR_CUDA(ck_nchw_to_nhwc(bp(p, p->in_act), p->ctx->act, bp(p, p->in_buf), p->batch, in->c,
                             cuda_pad8(in->c), in->h * in->w, cg->stream),
             "input");
    for (int32_t i = 0; i < p->n_steps; i++)
        if ((st = forward_step(p, &p->steps[i], err)) != CXR_OK)
            goto fail;
    if ((st = cxr_nn_cuda_download(cg, logits, bp(p, p->logits_buf), p->logits_bytes, err)) !=
        CXR_OK)
        goto fail;
    p->forwarded = true;
    return CXR_OK;
fail:
    cudaStreamSynchronize(cg->stream);
    cudaGetLastError();
    return st;
}

/* Whether any trainable parameter's gradient has a non-finite value. */
static enum cxr_status grads_overflow(struct cuda_tplan *p, bool *overflow, char *err)
{
    enum cxr_status st = CXR_OK;
    struct cuda_graph *cg = p->cg;
    int32_t *flag = bp(p, p->flag_buf), host = 0;
    CXR_CUDA(cudaMemsetAsync(flag, 0, sizeof *flag, cg->stream), "overflow check");
    for (int32_t i = 0; i < p->g->n_params; i++) {
        const struct cxr_nn_param *prm = &p->g->params[i];
        const struct cuda_tensor *ct = prm->trainable ? prm->grad.extra : NULL;
        if (ct)
            CXR_CUDA(ck_nonfinite(flag, ct->dev, ct->nbytes / sizeof(float), cg->stream),
                     "overflow check");
    }
    CXR_CUDA(cudaMemcpyAsync(&host, flag, sizeof host, cudaMemcpyDeviceToHost, cg->stream),
             "overflow check");
    CXR_CUDA(cudaStreamSynchronize(cg->stream), "overflow check");
    *overflow = host != 0;
fail:
    return st;
}

enum cxr_status cxr_nn_cuda_train_backward(struct cxr_nn_backend *b, void *plan,
                                           const float *dlogits, char *err)
{
    struct cuda_tplan *p = plan;
    enum cxr_status st = CXR_OK;
    if (!p || !dlogits)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cuda: train_backward without plan or "
                          "gradient");
    if (!p->forwarded)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cuda: train_backward without a "
                          "train_forward of this plan");
    struct cuda_graph *cg = p->cg;
    CXR_CUDA(cudaSetDevice(p->ctx->device), "train");
    /* gradients of trainable parameters that no op reaches stay zero */
    for (int32_t i = 0; i < p->g->n_params; i++) {
        const struct cxr_nn_param *prm = &p->g->params[i];
        const struct cuda_tensor *ct = prm->trainable ? prm->grad.extra : NULL;
        if (prm->trainable && !ct)
            return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                              "cuda: '%s' trains but its "
                              "gradient has no storage",
                              prm->t.name);
        if (ct)
            CXR_CUDA(cudaMemsetAsync(ct->dev, 0, ct->nbytes, cg->stream), "gradients");
    }
    for (int attempt = 0;; attempt++) {
        float scale = p->loss_scale;
        if ((st = cxr_nn_cuda_upload(cg, bp(p, p->dlogits_buf), dlogits, p->logits_bytes, err)) !=
            CXR_OK)
            goto fail;
        if (scale != 1.0f)
            CXR_CUDA(
                ck_scale(bp(p, p->dlogits_buf), scale, p->logits_bytes / sizeof(float), cg->stream),
                "loss scale");
        for (int32_t i = p->n_steps - 1; i >= 0; i--)
            if (p->steps[i].backward && (st = backward_step(p, &p->steps[i], scale, err)) != CXR_OK)
                goto fail;
        if (p->ctx->act != CK_F16) {
            CXR_CUDA(cudaStreamSynchronize(cg->stream), "backward");
            break;
        }
        bool overflow = false;
        if ((st = grads_overflow(p, &overflow, err)) != CXR_OK)
            goto fail;
        if (!overflow) {
            if (++p->good_steps >= SCALE_GROWTH_INTERVAL && p->loss_scale < 16777216.0f) {
                p->loss_scale *= 2.0f;
                p->good_steps = 0;
            }
            break;
        }
        p->good_steps = 0;
        if (p->loss_scale <= 1.0f) { /* not an fp16 overflow: the step diverged */
            cxr_log(CXR_LOG_WARN, "nn", "cuda: gradients not finite even without loss scaling");
            break;
        }
        p->loss_scale = fmaxf(p->loss_scale * 0.5f, 1.0f);
        cxr_log(CXR_LOG_DEBUG, "nn", "cuda: fp16 gradient overflow; loss scale now %g (try %d)",
                (double)p->loss_scale, attempt + 2);
    }
    return CXR_OK;
fail:
    cudaStreamSynchronize(cg->stream);
    cudaGetLastError();
    return st;
}

enum cxr_status cxr_nn_cuda_tensor_sumsq(struct cxr_nn_backend *b, const struct cxr_nn_tensor *t,
                                         double *out, char *err)
{
    struct cuda_ctx *c = b->context;
    const struct cuda_tensor *ct = t ? t->extra : NULL;
    enum cxr_status st = CXR_OK;
    if (!ct || !out)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cuda: tensor_sumsq of a tensor "
                          "without storage");
    *out = 0;
    pthread_mutex_lock(&c->lock);
    CXR_CUDA(cudaSetDevice(c->device), t->name);
    if (!c->dsum)
        CXR_CUDA(cudaMalloc((void **)&c->dsum, sizeof *c->dsum), t->name);
    CXR_CUDA(cudaMemsetAsync(c->dsum, 0, sizeof *c->dsum, c->upload), t->name);
    CXR_CUDA(ck_sumsq(c->dsum, ct->dev, ct->nbytes / sizeof(float), c->upload), t->name);
    CXR_CUDA(cudaMemcpyAsync(out, c->dsum, sizeof *out, cudaMemcpyDeviceToHost, c->upload),
             t->name);
    CXR_CUDA(cudaStreamSynchronize(c->upload), t->name);
fail:
    pthread_mutex_unlock(&c->lock);
    return st;
}

enum cxr_status cxr_nn_cuda_optim_step(struct cxr_nn_backend *b, struct cxr_nn_tensor *param,
                                       const struct cxr_nn_tensor *grad,
                                       struct cxr_nn_tensor *state0, struct cxr_nn_tensor *state1,
                                       const struct cxr_nn_optim_step *h, char *err)
{
    struct cuda_ctx *c = b->context;
    enum cxr_status st = CXR_OK;
    struct cuda_tensor *p = param ? param->extra : NULL, *s0 = state0 ? state0->extra : NULL;
    struct cuda_tensor *s1 = state1 ? state1->extra : NULL;
    const struct cuda_tensor *gt = grad ? grad->extra : NULL;
    bool adam = h && h->kind == CXR_NN_OPTIM_ADAMW;
    if (!p || !gt || !h || gt->nbytes != p->nbytes || (adam && (!s0 || !s1)) ||
        (s0 && s0->nbytes != p->nbytes) || (s1 && s1->nbytes != p->nbytes))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cuda: optim_step: tensors missing or "
                          "of different sizes");
    if (!adam && h->momentum != 0.0 && !s0)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cuda: SGD with momentum needs a "
                          "state tensor");
    /* the same float arithmetic as cxr_nn_optim_apply (optim.c) */
    struct ck_optim_args a = {.adamw = adam, .scale = (float)h->grad_scale};
    if (adam) {
        double bc1 = 1.0 - pow(h->beta1, (double)h->step),
               bc2 = 1.0 - pow(h->beta2, (double)h->step);
        a.decay = (float)(1.0 - h->lr * h->weight_decay);
        a.b1 = (float)h->beta1;
        a.b2 = (float)h->beta2;
        a.one_b1 = (float)(1.0 - h->beta1);
        a.one_b2 = (float)(1.0 - h->beta2);
        a.step_size = (float)(h->lr / bc1);
        a.bc2_sqrt = (float)sqrt(bc2);
        a.eps = (float)h->eps;
    } else {
        a.lr = (float)h->lr;
        a.wd = (float)h->weight_decay;
        a.mom = (float)h->momentum;
        a.first = h->step <= 1;
        a.nesterov = h->nesterov;
    }
    pthread_mutex_lock(&c->lock);
    CXR_CUDA(cudaSetDevice(c->device), param->name);
    CXR_CUDA(ck_optim(p->dev, gt->dev, s0 ? s0->dev : NULL, s1 ? s1->dev : NULL,
                      p->nbytes / sizeof(float), &a, c->upload),
             param->name);
    CXR_CUDA(cxr_nn_cuda_refresh(c, param), param->name);
    CXR_CUDA(cudaStreamSynchronize(c->upload), param->name);
fail:
    pthread_mutex_unlock(&c->lock);
    return st;
}
