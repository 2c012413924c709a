/* backend_cuda_train.c — compiles an UNFUSED graph into a training step
 * on the GPU for one batch size: one forward step per op (batch norm in
 * training mode) and one backward step per op whose output needs a
 * gradient (backend.h "training"; backend_cuda_train_run.c runs them).
 *
 * Memory: activations, gradients and scratch are buffers with live ranges
 * on one timeline (forward op i at time i, its backward at 2L-1-i), placed
 * in the graph's arena so that a gradient reuses the bytes of activations
 * whose backward use is over. Activations are NHWC, channels padded to 8,
 * in the backend's type (fp16/bf16 for mixed precision); parameters, their
 * gradients and the optimizer state stay F32 (the master copies).
 * Convolutions: cuDNN forward, backward-data and backward-filter, each
 * algorithm measured once per shape and cached.
 */
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cxr/log.h"

struct tbuilder {
    struct cuda_tplan *p;
    struct cxr_nn_graph *g;
    int32_t *vbuf; /* value -> activation buffer */
    int32_t *gbuf; /* value -> gradient buffer */
    bool *need;    /* value needs a gradient */
    int32_t L;     /* ops */
    char *err;
};

static enum cxr_status toom(char *err)
{
    return cxr_seterr(err, CXR_ERR_NOMEM,
                      "cuda: out of host memory while planning "
                      "training");
}

static int32_t tbuf(struct cuda_tplan *p, size_t size)
{
    if (p->n_bufs == p->cap_bufs) {
        int32_t ncap = p->cap_bufs ? p->cap_bufs * 2 : 128;
        struct cxr_nn_buf *nb = realloc(p->bufs, (size_t)ncap * sizeof *nb);
        if (!nb)
            return -1;
        p->bufs = nb;
        p->cap_bufs = ncap;
    }
    p->bufs[p->n_bufs] = (struct cxr_nn_buf){.size = size ? size : 16, .first = -1, .last = -1};
    return p->n_bufs++;
}

static void ttouch(struct cuda_tplan *p, int32_t buf, int32_t t)
{
    if (buf < 0)
        return;
    struct cxr_nn_buf *b = &p->bufs[buf];
    if (b->first < 0 || t < b->first)
        b->first = t;
    if (t > b->last)
        b->last = t;
}

static int32_t t_fwd(const struct tbuilder *B, int32_t i)
{
    (void)B;
    return i + 1; /* time 0 is the input conversion */
}

static int32_t t_bwd(const struct tbuilder *B, int32_t i) { return 2 * B->L + 1 - i; }

/* An activation buffer for value v: NHWC padded, the backend's type. */
static int32_t act_buf(struct tbuilder *B, int32_t v)
{
    const struct cxr_nn_value *val = &B->g->values[v];
    return tbuf(B->p, (size_t)B->p->batch * (size_t)val->h * (size_t)val->w *
                          (size_t)cuda_pad8(val->c) * ck_size(B->p->ctx->act));
}

static struct cuda_tensor *param_storage(struct cxr_nn_graph *g, int32_t p)
{
    return p >= 0 ? g->params[p].t.extra : NULL;
}

static bool trainable(const struct cxr_nn_graph *g, int32_t p)
{
    return p >= 0 && g->params[p].trainable;
}

/* Forward planning of op i. */
static enum cxr_status plan_forward(struct tbuilder *B, int32_t i)
{
    struct cuda_tplan *p = B->p;
    struct cxr_nn_graph *g = B->g;
    const struct cxr_nn_op *op = &g->ops[i];
    struct tstep *s = &p->steps[i];
    char *err = B->err;
    enum cxr_status st = CXR_OK;
    const struct cxr_nn_value *x = &g->values[op->in[0]], *y = &g->values[op->out];
    s->op = i;
    s->kind = op->kind;
    s->n = p->batch;
    s->c = x->c;
    s->cp = cuda_pad8(x->c);
    s->h = x->h;
    s->w = x->w;
    s->oc = y->c;
    s->ocp = cuda_pad8(y->c);
    s->oh = y->h;
    s->ow = y->w;
    s->k = op->kernel_h;
    s->s = op->stride;
    s->pad = op->pad;
    s->eps = op->eps;
    s->x = B->vbuf[op->in[0]];
    s->x2 = op->n_in > 1 ? B->vbuf[op->in[1]] : -1;
    s->pw = op->n_params > 0 ? op->param[0] : -1;
    s->pb = op->n_params > 1 ? op->param[1] : -1;
    s->pmean = op->kind == CXR_NN_OP_BN ? op->param[2] : -1;
    s->pvar = op->kind == CXR_NN_OP_BN ? op->param[3] : -1;
    s->dx = s->dx2 = s->dy = s->dw = s->stats = s->x32 = s->dx32 = s->dtmp = -1;
    for (int32_t k = 0; k < op->n_params; k++)
        if (op->param[k] >= 0 && !param_storage(g, op->param[k]))
            return cxr_seterr(err, CXR_ERR_INTERNAL, "cuda: '%s' has no storage",
                              g->params[op->param[k]].t.name);
    if (op->kind == CXR_NN_OP_FC) {
        if (op->out != g->output)
            return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                              "cuda: fc '%s' must give the "
                              "graph's result (the logits)",
                              op->name);
        if (x->h != 1 || x->w != 1)
            return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                              "cuda: fc '%s' needs a C x 1 x 1 "
                              "input",
                              op->name);
        s->y = tbuf(p, (size_t)p->batch * (size_t)y->c * sizeof(float));
        s->x32 = tbuf(p, (size_t)p->batch * (size_t)s->cp * sizeof(float));
        if (s->y < 0 || s->x32 < 0)
            return toom(err);
        ttouch(p, s->x32, t_fwd(B, i));
        void *w = NULL;
        if ((st = cxr_nn_cuda_weights(p->ctx, &g->params[s->pw].t, CW_FC, p->ctx->act, &w, err)) !=
                CXR_OK ||
            (st = cxr_nn_cuda_weights(p->ctx, &g->params[s->pw].t, CW_FC, CK_F32, &s->fc_w32,
                                      err)) != CXR_OK)
            return st;
        s->cv.wdev = w;
    } else {
        if ((s->y = act_buf(B, op->out)) < 0)
            return toom(err);
    }
    ttouch(p, s->x, t_fwd(B, i));
    ttouch(p, s->x2, t_fwd(B, i));
    ttouch(p, s->y, t_fwd(B, i));
    if (op->kind == CXR_NN_OP_BN) {
        if ((s->stats = tbuf(p, CK_BN_SCRATCH(s->cp))) < 0)
            return toom(err);
        ttouch(p, s->stats, t_fwd(B, i));
    }
    if (op->kind == CXR_NN_OP_CONV) {
        if (op->kernel_h != op->kernel_w)
            return cxr_seterr(err, CXR_ERR_UNSUPPORTED, "cuda: %s: non-square kernel", op->name);
        struct cuda_conv_geo geo = {.n = s->n,
                                    .c = s->cp,
                                    .h = s->h,
                                    .w = s->w,
                                    .oc = s->ocp,
                                    .oh = s->oh,
                                    .ow = s->ow,
                                    .k = s->k,
                                    .stride = s->s,
                                    .pad = s->pad};
        struct cuda_algo a;
        if ((st = cxr_nn_cuda_conv_setup(p->ctx, &s->cv, &geo, false, op->name, err)) != CXR_OK ||
            (st = cxr_nn_cuda_conv_algo(p->ctx, p->cg->dnn, &s->cv, &geo, 0, &a, op->name, err)) !=
                CXR_OK)
            return st;
        s->cv.algo = (cudnnConvolutionFwdAlgo_t)a.algo;
        s->fwd_math = a.math;
        s->cv.workspace = a.workspace;
        if (a.workspace > p->workspace)
            p->workspace = a.workspace;
        if ((st = cxr_nn_cuda_weights(p->ctx, &g->params[s->pw].t, CW_CONV, p->ctx->act,
                                      &s->cv.wdev, err)) != CXR_OK)
            return st;
        if (s->pb >= 0 && (st = cxr_nn_cuda_weights(p->ctx, &g->params[s->pb].t, CW_VEC,
                                                    p->ctx->act, &s->cv.bdev, err)) != CXR_OK)
            return st;
    }
    B->vbuf[op->out] = s->y;
    return CXR_OK;
}

/* The gradient buffer of value v for a writer at time t: made by the first
 * writer (backward runs in reverse, so that is the last consumer), which
 * overwrites; later writers accumulate. */
static int32_t grad_for(struct tbuilder *B, int32_t v, int32_t t, bool *acc)
{
    *acc = B->gbuf[v] >= 0;
    if (B->gbuf[v] < 0) {
        const struct cxr_nn_value *val = &B->g->values[v];
        B->gbuf[v] = tbuf(B->p, (size_t)B->p->batch * (size_t)val->h * (size_t)val->w *
                                    (size_t)cuda_pad8(val->c) * ck_size(B->p->ctx->act));
    }
    ttouch(B->p, B->gbuf[v], t);
    return B->gbuf[v];
}

/* Backward planning of op i (called in reverse op order). */
static enum cxr_status plan_backward(struct tbuilder *B, int32_t i)
{
    struct cuda_tplan *p = B->p;
    struct cxr_nn_graph *g = B->g;
    const struct cxr_nn_op *op = &g->ops[i];
    struct tstep *s = &p->steps[i];
    char *err = B->err;
    enum cxr_status st = CXR_OK;
    int32_t t = t_bwd(B, i);
    s->backward = B->need[op->out];
    if (!s->backward)
        return CXR_OK;
    s->dy = B->gbuf[op->out];
    if (s->dy < 0)
        return cxr_seterr(err, CXR_ERR_INTERNAL,
                          "cuda: '%s': no gradient reaches its "
                          "output",
                          op->name);
    ttouch(p, s->dy, t);
    bool need_x = B->need[op->in[0]];
    if (need_x)
        s->dx = grad_for(B, op->in[0], t, &s->acc_dx);
    if (op->n_in > 1 && B->need[op->in[1]])
        s->dx2 = grad_for(B, op->in[1], t, &s->acc_dx2);
    switch (op->kind) {
    case CXR_NN_OP_CONV: {
        struct cuda_conv_geo geo = {.n = s->n,
                                    .c = s->cp,
                                    .h = s->h,
                                    .w = s->w,
                                    .oc = s->ocp,
                                    .oh = s->oh,
                                    .ow = s->ow,
                                    .k = s->k,
                                    .stride = s->s,
                                    .pad = s->pad};
        struct cuda_algo a;
        if (trainable(g, s->pw)) {
            ttouch(p, s->x, t);
            size_t wbytes = (size_t)s->ocp * s->k * s->k * s->cp * ck_size(p->ctx->act);
            if ((s->dw = tbuf(p, wbytes)) < 0)
                return toom(err);
            ttouch(p, s->dw, t);
            if ((st = cxr_nn_cuda_conv_algo(p->ctx, p->cg->dnn, &s->cv, &geo, 2, &a, op->name,
                                            err)) != CXR_OK)
                return st;
            s->bf_algo = (cudnnConvolutionBwdFilterAlgo_t)a.algo;
            s->bf_math = a.math;
            s->bf_ws = a.workspace;
            if (a.workspace > p->workspace)
                p->workspace = a.workspace;
        }
        if (need_x) {
            if ((st = cxr_nn_cuda_conv_algo(p->ctx, p->cg->dnn, &s->cv, &geo, 1, &a, op->name,
                                            err)) != CXR_OK)
                return st;
            s->bd_algo = (cudnnConvolutionBwdDataAlgo_t)a.algo;
            s->bd_math = a.math;
            s->bd_ws = a.workspace;
            if (a.workspace > p->workspace)
                p->workspace = a.workspace;
        }
        if (trainable(g, s->pb)) {
            if ((s->dtmp = tbuf(p, (size_t)s->ocp * sizeof(double))) < 0)
                return toom(err);
            ttouch(p, s->dtmp, t);
        }
        break;
    }
    case CXR_NN_OP_BN:
        ttouch(p, s->x, t);
        ttouch(p, s->stats, t);
        break;
    case CXR_NN_OP_RELU: ttouch(p, s->y, t); break;
    case CXR_NN_OP_MAXPOOL: ttouch(p, s->x, t); break;
    case CXR_NN_OP_FC:
        ttouch(p, s->x32, t);
        if (need_x && (s->dx32 = tbuf(p, (size_t)p->batch * (size_t)s->cp * sizeof(float))) < 0)
            return toom(err);
        if ((s->dtmp = tbuf(p, (size_t)s->oc * sizeof(double))) < 0)
            return toom(err);
        ttouch(p, s->dx32, t);
        ttouch(p, s->dtmp, t);
        break;
    case CXR_NN_OP_ADD:
    case CXR_NN_OP_GAP: break;
    default:
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED, "cuda: no backward for %s op '%s'",
                          cxr_nn_op_kind_name(op->kind), op->name);
    }
    return CXR_OK;
}

void cxr_nn_cuda_train_plan_free(struct cxr_nn_backend *b, void *plan)
{
    struct cuda_tplan *p = plan;
    if (!p)
        return;
    for (int32_t i = 0; p->steps && i < p->n_steps; i++)
        if (p->steps[i].kind == CXR_NN_OP_CONV)
            cxr_nn_cuda_conv_free(&p->steps[i].cv);
    free(p->steps);
    free(p->bufs);
    free(p);
}

enum cxr_status cxr_nn_cuda_train_plan(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                       const struct cxr_nn_train_plan_options *opt, void **plan,
                                       char *err)
{
    struct cuda_ctx *c = b->context;
    enum cxr_status st = CXR_OK;
    *plan = NULL;
    if (!g || g->fused || !opt || opt->batch < 1 || g->n_ops < 1)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cuda: train_plan needs an unfused "
                          "graph and a batch >= 1");
    if (g->output < 0 || g->values[g->output].producer < 0 ||
        g->ops[g->values[g->output].producer].kind != CXR_NN_OP_FC)
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                          "cuda: training needs a graph that "
                          "ends in an fc (the logits)");
    cudaError_t e = cudaSetDevice(c->device);
    if (e != cudaSuccess)
        return cxr_nn_cuda_fail(err, e, "train plan", "cudaSetDevice");
    if ((st = cxr_nn_cuda_graph_state(c, g, err)) != CXR_OK)
        return st;
    struct cuda_tplan *p = calloc(1, sizeof *p);
    struct tbuilder B = {.p = p, .g = g, .L = g->n_ops, .err = err};
    B.vbuf = malloc((size_t)g->n_values * sizeof *B.vbuf);
    B.gbuf = malloc((size_t)g->n_values * sizeof *B.gbuf);
    B.need = calloc((size_t)g->n_values, sizeof *B.need);
    if (p)
        p->steps = calloc((size_t)g->n_ops, sizeof *p->steps);
    if (!p || !B.vbuf || !B.gbuf || !B.need || !p->steps) {
        st = toom(err);
        goto fail;
    }
    p->ctx = c;
    p->cg = g->extra;
    p->g = g;
    p->batch = opt->batch;
    p->bn_frozen = opt->bn_frozen;
    p->bn_momentum = opt->bn_momentum;
    p->n_steps = g->n_ops;
    p->loss_scale = c->act == CK_F16 ? 65536.0f : 1.0f;
    for (int32_t v = 0; v < g->n_values; v++)
        B.vbuf[v] = B.gbuf[v] = -1;
    cxr_nn_graph_needs_grad(g, B.need);
    const struct cxr_nn_value *in = &g->values[g->input];
    p->in_bytes = (size_t)p->batch * (size_t)in->c * (size_t)in->h * (size_t)in->w * sizeof(float);
    p->in_buf = tbuf(p, p->in_bytes);
    B.vbuf[g->input] = p->in_act = act_buf(&B, g->input);
    if (p->in_buf < 0 || B.vbuf[g->input] < 0) {
        st = toom(err);
        goto fail;
    }
    ttouch(p, p->in_buf, 0);
    ttouch(p, B.vbuf[g->input], 0);
    for (int32_t i = 0; i < g->n_ops; i++) {
        if (g->ops[i].absorbed_by >= 0) {
            st = cxr_seterr(err, CXR_ERR_INVALID_ARG, "cuda: train_plan on a fused graph");
            goto fail;
        }
        for (int32_t k = 0; k < g->ops[i].n_in; k++)
            if (B.vbuf[g->ops[i].in[k]] < 0) {
                st = cxr_seterr(err, CXR_ERR_INTERNAL,
                                "cuda: '%s' reads a value not "
                                "computed yet",
                                g->ops[i].name);
                goto fail;
            }
        if ((st = plan_forward(&B, i)) != CXR_OK)
            goto fail;
    }
    p->classes = g->values[g->output].c;
    p->logits_buf = B.vbuf[g->output];
    p->logits_bytes = (size_t)p->batch * (size_t)p->classes * sizeof(float);
    p->dlogits_buf = tbuf(p, p->logits_bytes);
    p->flag_buf = tbuf(p, sizeof(int32_t));
    if (p->dlogits_buf < 0 || p->flag_buf < 0) {
        st = toom(err);
        goto fail;
    }
    ttouch(p, p->logits_buf, t_fwd(&B, g->n_ops - 1) + 1); /* read back after the forward */
    ttouch(p, p->flag_buf, 0);
    ttouch(p, p->flag_buf, t_bwd(&B, 0) + 1);
    B.gbuf[g->output] = p->dlogits_buf;
    ttouch(p, p->dlogits_buf, t_bwd(&B, g->n_ops - 1) - 1);
    for (int32_t i = g->n_ops - 1; i >= 0; i--)
        if ((st = plan_backward(&B, i)) != CXR_OK)
            goto fail;
    p->ws_off = cxr_nn_arena_place(p->bufs, p->n_bufs, CXR_NN_CUDA_ARENA_ALIGN, false);
    p->arena_need = p->ws_off + cxr_nn_arena_round(p->workspace, CXR_NN_CUDA_ARENA_ALIGN);
    cxr_log(CXR_LOG_DEBUG, "nn", "cuda: training plan batch %d: %d buffers, %zu MiB arena",
            (int)p->batch, (int)p->n_bufs, p->arena_need >> 20);
    free(B.vbuf);
    free(B.gbuf);
    free(B.need);
    *plan = p;
    return CXR_OK;
fail:
    free(B.vbuf);
    free(B.gbuf);
    free(B.need);
    cxr_nn_cuda_train_plan_free(b, p);
    return st;
}
