/* backend_cpu_train_bwd.c — the backward pass of each op for the CPU
 * backend's training plans (oneDNN 2.6 backward primitives, hinted by the
 * forward ones): conv backward data and weights, batch norm backward (scale
 * and shift gradients; the fused ReLU through its workspace), ReLU from its
 * output, max pool from its workspace, average pool, the residual add (the
 * gradient passes to both inputs unchanged) and the fc (inner product
 * backward data and weights).
 *
 * Gradients of values: a value read by several ops gets the sum of what
 * each consumer sends back ("contribute": the first contribution is taken
 * as it is, later ones are added into a fresh buffer, never in place, so a
 * gradient shared by the two inputs of an add is never overwritten).
 * Gradients of parameters: written into the grad tensor's F32 storage,
 * directly when the kernel's layout is the plain one, else through a
 * reorder.
 */
#include <stdio.h>
#include <string.h>

#include "backend_cpu_train.h"
#include "cxr/log.h"

/* Adds memory m to the gradient of value v. */
static enum cxr_status contribute(struct tbuilder *B, int32_t v, int32_t m, const char *where)
{
    struct tv *s = &B->vs[v];
    char *err = B->err;
    enum cxr_status st;
    if (!B->need[v])
        return CXR_OK;
    if (s->diff < 0) {
        s->diff = m;
        return CXR_OK;
    }
    const dnnl_memory_desc_t *md = cxr_nn_cpu_md(B->p, s->diff);
    int32_t other = m, sum;
    if (!dnnl_memory_desc_equal(cxr_nn_cpu_md(B->p, m), md)) {
        if ((st = cxr_nn_ct_fresh(B, md, &other)) != CXR_OK ||
            (st = cxr_nn_ct_reorder(B, m, other, NULL, where)) != CXR_OK)
            return st;
    }
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    dnnl_binary_desc_t bd;
    CXR_DNNL(dnnl_binary_desc_init(&bd, dnnl_binary_add, md, md, md), where);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &bd, attr, B->p->ctx->engine, NULL), where);
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    if ((st = cxr_nn_ct_fresh(B, md, &sum)) != CXR_OK)
        goto fail;
    struct cpu_arg a[3] = {
        {DNNL_ARG_SRC_0, s->diff, NULL}, {DNNL_ARG_SRC_1, other, NULL}, {DNNL_ARG_DST, sum, NULL}};
    st = cxr_nn_ct_step(B, prim, a, 3, where);
    prim = NULL;
    if (st == CXR_OK)
        s->diff = sum;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* The gradient of value v as layout md (a reorder when it differs). */
static enum cxr_status diff_as(struct tbuilder *B, int32_t v, const dnnl_memory_desc_t *md,
                               int32_t *out, const char *where)
{
    int32_t d = B->vs[v].diff;
    if (d < 0)
        return cxr_seterr(B->err, CXR_ERR_INTERNAL, "cpu: %s: no gradient arrived", where);
    if (dnnl_memory_desc_equal(cxr_nn_cpu_md(B->p, d), md)) {
        *out = d;
        return CXR_OK;
    }
    enum cxr_status st = cxr_nn_ct_fresh(B, md, out);
    if (st == CXR_OK)
        st = cxr_nn_ct_reorder(B, d, *out, NULL, where);
    return st;
}

/* Where a kernel writes a parameter's gradient in layout `md`: the grad
 * tensor's storage itself (*mem = -1, *raw set) when md is its plain F32
 * layout, else an arena memory (*mem) that finish_grad reorders into it. */
static enum cxr_status grad_target(struct tbuilder *B, int32_t param, const dnnl_memory_desc_t *md,
                                   int32_t *mem, dnnl_memory_t *raw, dnnl_memory_t *plain_raw,
                                   const char *where)
{
    struct cxr_nn_param *pp = &B->g->params[param];
    struct cpu_tensor *ct = pp->grad.extra;
    *mem = -1;
    *raw = *plain_raw = NULL;
    if (!pp->trainable || !ct)
        return cxr_seterr(B->err, CXR_ERR_INTERNAL, "cpu: '%s' has no gradient storage",
                          pp->t.name);
    dnnl_memory_desc_t plain;
    cxr_nn_ct_plain_md(&pp->t, &plain);
    enum cxr_status st = cxr_nn_ct_raw(B, &plain, ct->data, plain_raw, where);
    if (st != CXR_OK)
        return st;
    if (dnnl_memory_desc_equal(&plain, md)) {
        *raw = *plain_raw;
        return CXR_OK;
    }
    return cxr_nn_ct_fresh(B, md, mem);
}

static enum cxr_status finish_grad(struct tbuilder *B, int32_t mem, dnnl_memory_t plain_raw,
                                   const char *where)
{
    return mem < 0 ? CXR_OK : cxr_nn_ct_reorder(B, mem, -1, plain_raw, where);
}

/* The data type a backward primitive should try first: the forward's. */
static dnnl_data_type_t bwd_dt(const struct top *to) { return to->dt; }

/* The primitive descriptor of one convolution's backward pass: for the
 * weights (and bias) when `weights`, else for the data. oneDNN's fallbacks
 * are taken here, once for both: the direct algorithm when the preferred one
 * is unimplemented for this shape, and f32 activations when bf16 has only
 * the reference implementation. `*dt` is the activation type to try first
 * and, on return, the one chosen. Weights gradients are always f32. On
 * failure *pd is NULL and B->err says why. */
static enum cxr_status conv_bwd_pd(struct tbuilder *B, int32_t oi, bool weights,
                                   dnnl_data_type_t *dt, const_dnnl_primitive_attr_t attr,
                                   dnnl_primitive_desc_t *pd)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    const struct top *to = &B->ops[oi];
    const struct cxr_nn_value *x = &B->g->values[op->in[0]], *y = &B->g->values[op->out];
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st = CXR_OK;
    int64_t n = B->p->batch;
    dnnl_dims_t sd = {n, x->c, x->h, x->w}, dd = {n, y->c, y->h, y->w};
    dnnl_dims_t wd = {y->c, x->c, op->kernel_h, op->kernel_w}, bd = {y->c};
    dnnl_dims_t strides = {op->stride, op->stride}, pad = {op->pad, op->pad};
    dnnl_memory_desc_t smd, wmd, bmd, dmd;
    *pd = NULL;
    for (;;) {
        dnnl_memory_desc_init_by_tag(&smd, 4, sd, *dt, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&dmd, 4, dd, *dt, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&wmd, 4, wd, weights ? dnnl_f32 : *dt, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a);
        dnnl_convolution_desc_t cd;
        dnnl_alg_kind_t alg = cxr_nn_ct_conv_alg(B, op, *dt);
        dnnl_status_t s;
        for (;;) {
            if (weights)
                CXR_DNNL(dnnl_convolution_backward_weights_desc_init(
                             &cd, alg, &smd, &wmd, op->param[1] >= 0 ? &bmd : NULL, &dmd, strides,
                             pad, pad),
                         where);
            else
                CXR_DNNL(dnnl_convolution_backward_data_desc_init(&cd, alg, &smd, &wmd, &dmd,
                                                                  strides, pad, pad),
                         where);
            s = dnnl_primitive_desc_create(pd, &cd, attr, B->p->ctx->engine, to->fwd_pd);
            if (s == dnnl_unimplemented && alg != dnnl_convolution_direct) {
                alg = dnnl_convolution_direct;
                continue;
            }
            break;
        }
        CXR_DNNL(s, where);
        if (*dt == dnnl_bf16 && cxr_nn_cpu_is_ref(*pd)) {
            dnnl_primitive_desc_destroy(*pd);
            *pd = NULL;
            *dt = dnnl_f32;
            continue;
        }
        return CXR_OK;
    }
fail:
    *pd = NULL;
    return st;
}

static enum cxr_status bwd_conv(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    const struct top *to = &B->ops[oi];
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st = CXR_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    bool train_w = B->g->params[op->param[0]].trainable;
    bool train_b = op->param[1] >= 0 && B->g->params[op->param[1]].trainable;
    dnnl_data_type_t dt = bwd_dt(to);
    int64_t n = B->p->batch;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    if (train_w || train_b) {
        dnnl_data_type_t wdt = dt;
        if ((st = conv_bwd_pd(B, oi, true, &wdt, attr, &pd)) != CXR_OK)
            goto fail;
        cxr_log(CXR_LOG_DEBUG, "nn", "cpu train: batch %d %s bwd_w: %s", (int)n, where,
                cxr_nn_cpu_impl(pd));
        CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
        int32_t src, ddst, gw, gb = -1;
        dnnl_memory_t rw, pw, rb = NULL, pb = NULL;
        if ((st = cxr_nn_ct_value_as(B, op->in[0],
                                     dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), &src,
                                     where)) != CXR_OK ||
            (st = diff_as(B, op->out, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0),
                          &ddst, where)) != CXR_OK ||
            (st = grad_target(B, op->param[0],
                              dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0), &gw,
                              &rw, &pw, where)) != CXR_OK)
            goto fail;
        if (op->param[1] >= 0 &&
            (st = grad_target(B, op->param[1],
                              dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 1), &gb,
                              &rb, &pb, where)) != CXR_OK)
            goto fail;
        struct cpu_arg a[4] = {{DNNL_ARG_SRC, src, NULL},
                               {DNNL_ARG_DIFF_DST, ddst, NULL},
                               {DNNL_ARG_DIFF_WEIGHTS, gw, rw},
                               {DNNL_ARG_DIFF_BIAS, gb, rb}};
        st = cxr_nn_ct_step(B, prim, a, op->param[1] >= 0 ? 4 : 3, where);
        prim = NULL;
        if (st != CXR_OK || (st = finish_grad(B, gw, pw, where)) != CXR_OK ||
            (op->param[1] >= 0 && (st = finish_grad(B, gb, pb, where)) != CXR_OK))
            goto fail;
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
    }
    if (B->need[op->in[0]]) {
        if ((st = conv_bwd_pd(B, oi, false, &dt, attr, &pd)) != CXR_OK)
            goto fail;
        cxr_log(CXR_LOG_DEBUG, "nn", "cpu train: batch %d %s bwd_d: %s", (int)n, where,
                cxr_nn_cpu_impl(pd));
        CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
        int32_t ddst, dsrc;
        dnnl_memory_t wmem = NULL;
        if ((st = diff_as(B, op->out, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0),
                          &ddst, where)) != CXR_OK ||
            (st = cxr_nn_ct_weights(B, op->param[0],
                                    dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                                    &wmem, where)) != CXR_OK ||
            (st = cxr_nn_ct_fresh(B, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_src_md, 0),
                                  &dsrc)) != CXR_OK)
            goto fail;
        struct cpu_arg a[3] = {{DNNL_ARG_DIFF_DST, ddst, NULL},
                               {DNNL_ARG_WEIGHTS, -1, wmem},
                               {DNNL_ARG_DIFF_SRC, dsrc, NULL}};
        st = cxr_nn_ct_step(B, prim, a, 3, where);
        prim = NULL;
        if (st == CXR_OK)
            st = contribute(B, op->in[0], dsrc, where);
    }
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

static enum cxr_status bwd_bn(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    const struct top *to = &B->ops[oi];
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st = CXR_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if (B->T->frozen)
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                          "cpu: backward through the frozen "
                          "batch norm '%s' (only the layers after the backbone can train "
                          "while it is frozen)",
                          where);
    bool relu = to->fused_relu >= 0;
    int32_t gout = relu ? B->g->ops[to->fused_relu].out : op->out;
    bool train = B->g->params[op->param[0]].trainable || B->g->params[op->param[1]].trainable;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    const dnnl_memory_desc_t *md = cxr_nn_cpu_md(B->p, to->src);
    unsigned flags = dnnl_use_scale | dnnl_use_shift | (relu ? dnnl_fuse_norm_relu : 0u);
    dnnl_batch_normalization_desc_t bd;
    CXR_DNNL(dnnl_batch_normalization_backward_desc_init(
                 &bd, train ? dnnl_backward : dnnl_backward_data, md, md, op->eps, flags),
             where);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &bd, attr, B->p->ctx->engine, to->fwd_pd), where);
    cxr_log(CXR_LOG_DEBUG, "nn", "cpu train: batch %d %s bwd: %s", (int)B->p->batch, where,
            cxr_nn_cpu_impl(pd));
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    int32_t ddst, dsrc, gs = -1, gh = -1;
    dnnl_memory_t scale = NULL, shift = NULL, rs = NULL, ps = NULL, rh = NULL, ph = NULL;
    dnnl_memory_desc_t cmd;
    dnnl_dims_t cd = {B->g->values[op->out].c};
    dnnl_memory_desc_init_by_tag(&cmd, 1, cd, dnnl_f32, dnnl_a);
    if ((st = diff_as(B, gout, md, &ddst, where)) != CXR_OK ||
        (st = cxr_nn_ct_weights(B, op->param[0], &cmd, &scale, where)) != CXR_OK ||
        (st = cxr_nn_ct_weights(B, op->param[1], &cmd, &shift, where)) != CXR_OK ||
        (st = cxr_nn_ct_fresh(B, md, &dsrc)) != CXR_OK)
        goto fail;
    if (train && ((st = grad_target(B, op->param[0], &cmd, &gs, &rs, &ps, where)) != CXR_OK ||
                  (st = grad_target(B, op->param[1], &cmd, &gh, &rh, &ph, where)) != CXR_OK))
        goto fail;
    struct cpu_arg a[10] = {{DNNL_ARG_SRC, to->src, NULL},      {DNNL_ARG_MEAN, to->mean, NULL},
                            {DNNL_ARG_VARIANCE, to->var, NULL}, {DNNL_ARG_DIFF_DST, ddst, NULL},
                            {DNNL_ARG_SCALE, -1, scale},        {DNNL_ARG_SHIFT, -1, shift},
                            {DNNL_ARG_DIFF_SRC, dsrc, NULL}};
    int32_t na = 7;
    if (relu)
        a[na++] = (struct cpu_arg){DNNL_ARG_WORKSPACE, to->ws, NULL};
    if (train) {
        a[na++] = (struct cpu_arg){DNNL_ARG_DIFF_SCALE, gs, rs};
        a[na++] = (struct cpu_arg){DNNL_ARG_DIFF_SHIFT, gh, rh};
    }
    st = cxr_nn_ct_step(B, prim, a, na, where);
    prim = NULL;
    if (st == CXR_OK && train &&
        ((st = finish_grad(B, gs, ps, where)) != CXR_OK ||
         (st = finish_grad(B, gh, ph, where)) != CXR_OK))
        goto fail;
    if (st == CXR_OK)
        st = contribute(B, op->in[0], dsrc, where);
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* ReLU backward from its output (standalone, or after an add that did the
 * forward as a post-op). A ReLU fused into a batch norm has no step: the
 * batch norm's backward reads its gradient. */
static enum cxr_status bwd_relu(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    const struct top *to = &B->ops[oi];
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st = CXR_OK;
    if (to->absorbed_by >= 0 && B->g->ops[to->absorbed_by].kind == CXR_NN_OP_BN)
        return CXR_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    const dnnl_memory_desc_t *md = cxr_nn_cpu_md(B->p, to->dst);
    dnnl_eltwise_desc_t ed;
    CXR_DNNL(
        dnnl_eltwise_backward_desc_init(&ed, dnnl_eltwise_relu_use_dst_for_bwd, md, md, 0.0f, 0.0f),
        where);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &ed, attr, B->p->ctx->engine, to->fwd_pd), where);
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    int32_t ddst, dsrc;
    if ((st = diff_as(B, op->out, md, &ddst, where)) != CXR_OK ||
        (st = cxr_nn_ct_fresh(B, md, &dsrc)) != CXR_OK)
        goto fail;
    struct cpu_arg a[3] = {{DNNL_ARG_DST, to->dst, NULL},
                           {DNNL_ARG_DIFF_DST, ddst, NULL},
                           {DNNL_ARG_DIFF_SRC, dsrc, NULL}};
    st = cxr_nn_ct_step(B, prim, a, 3, where);
    prim = NULL;
    if (st == CXR_OK)
        st = contribute(B, op->in[0], dsrc, where);
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* The sum's gradient goes to both inputs unchanged (shared, never written). */
static enum cxr_status bwd_add(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    int32_t d = B->vs[op->out].diff;
    if (d < 0)
        return cxr_seterr(B->err, CXR_ERR_INTERNAL, "cpu: %s: no gradient arrived", op->name);
    enum cxr_status st = contribute(B, op->in[0], d, op->name);
    if (st == CXR_OK)
        st = contribute(B, op->in[1], d, op->name);
    return st;
}

static enum cxr_status bwd_pool(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    const struct top *to = &B->ops[oi];
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st = CXR_OK;
    if (!B->need[op->in[0]])
        return CXR_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    bool max = op->kind == CXR_NN_OP_MAXPOOL;
    dnnl_dims_t strides = {op->stride, op->stride}, kernel = {op->kernel_h, op->kernel_w};
    dnnl_dims_t dil = {0, 0}, pad = {op->pad, op->pad};
    const dnnl_memory_desc_t *smd = cxr_nn_cpu_md(B->p, to->src),
                             *dmd = cxr_nn_cpu_md(B->p, to->dst);
    dnnl_pooling_v2_desc_t desc;
    CXR_DNNL(dnnl_pooling_v2_backward_desc_init(
                 &desc, max ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding, smd, dmd,
                 strides, kernel, dil, pad, pad),
             where);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &desc, attr, B->p->ctx->engine, to->fwd_pd), where);
    cxr_log(CXR_LOG_DEBUG, "nn", "cpu train: batch %d %s bwd: %s", (int)B->p->batch, where,
            cxr_nn_cpu_impl(pd));
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    int32_t ddst, dsrc;
    if ((st = diff_as(B, op->out, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0),
                      &ddst, where)) != CXR_OK ||
        (st = cxr_nn_ct_fresh(B, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_src_md, 0),
                              &dsrc)) != CXR_OK)
        goto fail;
    struct cpu_arg a[3] = {{DNNL_ARG_DIFF_DST, ddst, NULL},
                           {DNNL_ARG_DIFF_SRC, dsrc, NULL},
                           {DNNL_ARG_WORKSPACE, to->ws, NULL}};
    st = cxr_nn_ct_step(B, prim, a, to->ws >= 0 ? 3 : 2, where);
    prim = NULL;
    if (st == CXR_OK)
        st = contribute(B, op->in[0], dsrc, where);
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

static enum cxr_status bwd_fc(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    const struct top *to = &B->ops[oi];
    const struct cxr_nn_value *x = &B->g->values[op->in[0]], *y = &B->g->values[op->out];
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st = CXR_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    int64_t n = B->p->batch;
    dnnl_dims_t sd = {n, x->c, 1, 1}, wd = {y->c, x->c, 1, 1}, bd = {y->c};
    dnnl_memory_desc_t smd, wmd, bmd;
    int32_t ddst = B->vs[op->out].diff;
    if (ddst < 0) {
        st = cxr_seterr(err, CXR_ERR_INTERNAL, "cpu: %s: no gradient arrived", where);
        goto fail;
    }
    const dnnl_memory_desc_t *dmd = cxr_nn_cpu_md(B->p, ddst);
    bool train_w = B->g->params[op->param[0]].trainable,
         train_b = B->g->params[op->param[1]].trainable;
    if (train_w || train_b) {
        dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a);
        dnnl_inner_product_desc_t ipd;
        CXR_DNNL(dnnl_inner_product_backward_weights_desc_init(&ipd, &smd, &wmd, &bmd, dmd), where);
        CXR_DNNL(dnnl_primitive_desc_create(&pd, &ipd, attr, B->p->ctx->engine, to->fwd_pd), where);
        CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
        int32_t src, gw, gb;
        dnnl_memory_t rw, pw, rb, pb;
        if ((st = cxr_nn_ct_value_as(B, op->in[0],
                                     dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), &src,
                                     where)) != CXR_OK ||
            (st = grad_target(B, op->param[0],
                              dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0), &gw,
                              &rw, &pw, where)) != CXR_OK ||
            (st = grad_target(B, op->param[1],
                              dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 1), &gb,
                              &rb, &pb, where)) != CXR_OK)
            goto fail;
        struct cpu_arg a[4] = {{DNNL_ARG_SRC, src, NULL},
                               {DNNL_ARG_DIFF_DST, ddst, NULL},
                               {DNNL_ARG_DIFF_WEIGHTS, gw, rw},
                               {DNNL_ARG_DIFF_BIAS, gb, rb}};
        st = cxr_nn_ct_step(B, prim, a, 4, where);
        prim = NULL;
        if (st != CXR_OK || (st = finish_grad(B, gw, pw, where)) != CXR_OK ||
            (st = finish_grad(B, gb, pb, where)) != CXR_OK)
            goto fail;
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
    }
    if (B->need[op->in[0]]) {
        dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any);
        dnnl_inner_product_desc_t ipd;
        CXR_DNNL(dnnl_inner_product_backward_data_desc_init(&ipd, &smd, &wmd, dmd), where);
        CXR_DNNL(dnnl_primitive_desc_create(&pd, &ipd, attr, B->p->ctx->engine, to->fwd_pd), where);
        CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
        int32_t dsrc;
        dnnl_memory_t wmem = NULL;
        if ((st = cxr_nn_ct_weights(B, op->param[0],
                                    dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                                    &wmem, where)) != CXR_OK ||
            (st = cxr_nn_ct_fresh(B, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_src_md, 0),
                                  &dsrc)) != CXR_OK)
            goto fail;
        struct cpu_arg a[3] = {{DNNL_ARG_DIFF_DST, ddst, NULL},
                               {DNNL_ARG_WEIGHTS, -1, wmem},
                               {DNNL_ARG_DIFF_SRC, dsrc, NULL}};
        st = cxr_nn_ct_step(B, prim, a, 3, where);
        prim = NULL;
        if (st == CXR_OK)
            st = contribute(B, op->in[0], dsrc, where);
    }
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

enum cxr_status cxr_nn_ct_backward_op(struct tbuilder *B, int32_t i)
{
    switch (B->g->ops[i].kind) {
    case CXR_NN_OP_CONV: return bwd_conv(B, i);
    case CXR_NN_OP_BN: return bwd_bn(B, i);
    case CXR_NN_OP_RELU: return bwd_relu(B, i);
    case CXR_NN_OP_ADD: return bwd_add(B, i);
    case CXR_NN_OP_MAXPOOL:
    case CXR_NN_OP_GAP: return bwd_pool(B, i);
    case CXR_NN_OP_FC: return bwd_fc(B, i);
    default:
        return cxr_seterr(B->err, CXR_ERR_UNSUPPORTED, "cpu: no backward for %s op '%s'",
                          cxr_nn_op_kind_name(B->g->ops[i].kind), B->g->ops[i].name);
    }
}
