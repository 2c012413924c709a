/* backend_cpu_train.c — the CPU backend's training plans (oneDNN 2.6, v2 C
 * API): planning helpers, the forward pass in training mode, and the plan
 * as a whole (see backend_cpu_train.h for the shape; the backward ops are in
 * backend_cpu_train_bwd.c, execution in backend_cpu_train_run.c).
 *
 * bf16: activations, conv weights and data gradients in bf16 where oneDNN
 * has a fast kernel (a conv with only a reference bf16 kernel, such as the
 * one-channel stem on some CPUs, runs in F32); batch-norm statistics,
 * weight gradients, the fc and the logits in F32; master weights F32.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cpu_train.h"
#include "cxr/log.h"

static void md4(dnnl_memory_desc_t *md, int64_t n, const struct cxr_nn_value *v,
                dnnl_data_type_t dt, dnnl_format_tag_t tag)
{
    dnnl_dims_t d = {n, v->c, v->h, v->w};
    dnnl_memory_desc_init_by_tag(md, 4, d, dt, tag);
}

/* ------------------------------------------------------------ forward ops */

static enum cxr_status conv_fwd_pd(struct tbuilder *B, const struct cxr_nn_op *op,
                                   dnnl_data_type_t dt, const_dnnl_primitive_attr_t attr,
                                   dnnl_primitive_desc_t *pd)
{
    const struct cxr_nn_value *x = &B->g->values[op->in[0]], *y = &B->g->values[op->out];
    dnnl_memory_desc_t smd, wmd, bmd, dmd;
    dnnl_dims_t wd = {y->c, x->c, op->kernel_h, op->kernel_w}, bd = {y->c};
    dnnl_dims_t strides = {op->stride, op->stride}, pad = {op->pad, op->pad};
    md4(&smd, B->p->batch, x, dt, dnnl_format_tag_any);
    md4(&dmd, B->p->batch, y, dt, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dt, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a);
    dnnl_convolution_desc_t cd;
    char *err = B->err;
    enum cxr_status st = CXR_OK;
    dnnl_alg_kind_t alg = cxr_nn_ct_conv_alg(B, op, dt);
    dnnl_status_t s;
    for (;;) {
        CXR_DNNL(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, alg, &smd, &wmd,
                                                    op->param[1] >= 0 ? &bmd : NULL, &dmd, strides,
                                                    pad, pad),
                 op->name);
        s = dnnl_primitive_desc_create(pd, &cd, attr, B->p->ctx->engine, NULL);
        if (s == dnnl_unimplemented && alg != dnnl_convolution_direct) {
            alg = dnnl_convolution_direct; /* no Winograd kernel for this shape */
            continue;
        }
        break;
    }
    CXR_DNNL(s, op->name);
fail:
    return st;
}

static enum cxr_status fwd_conv(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct top *to = &B->ops[oi];
    char *err = B->err;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, op->name, err)) != CXR_OK)
        return st;
    dnnl_data_type_t dt = B->p->ctx->bf16 ? dnnl_bf16 : dnnl_f32;
    if ((st = conv_fwd_pd(B, op, dt, attr, &pd)) != CXR_OK)
        goto fail;
    if (dt == dnnl_bf16 && cxr_nn_cpu_is_ref(pd)) {
        cxr_log(CXR_LOG_DEBUG, "nn", "cpu train: %s: no fast bf16 kernel (%s), using fp32",
                op->name, cxr_nn_cpu_impl(pd));
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        dt = dnnl_f32;
        if ((st = conv_fwd_pd(B, op, dt, attr, &pd)) != CXR_OK)
            goto fail;
    }
    cxr_log(CXR_LOG_DEBUG, "nn", "cpu train: batch %d %s fwd: %s", (int)B->p->batch, op->name,
            cxr_nn_cpu_impl(pd));
    CXR_DNNL(dnnl_primitive_create(&prim, pd), op->name);
    int32_t src, dst;
    dnnl_memory_t wmem = NULL, bmem = NULL;
    if ((st = cxr_nn_ct_value_as(B, op->in[0],
                                 dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), &src,
                                 op->name)) != CXR_OK ||
        (st = cxr_nn_ct_weights(B, op->param[0],
                                dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), &wmem,
                                op->name)) != CXR_OK)
        goto fail;
    if (op->param[1] >= 0 &&
        (st = cxr_nn_ct_weights(B, op->param[1],
                                dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1), &bmem,
                                op->name)) != CXR_OK)
        goto fail;
    if ((st = cxr_nn_ct_fresh(B, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &dst)) !=
        CXR_OK)
        goto fail;
    struct cpu_arg a[4] = {{DNNL_ARG_SRC, src, NULL},
                           {DNNL_ARG_WEIGHTS, -1, wmem},
                           {DNNL_ARG_DST, dst, NULL},
                           {DNNL_ARG_BIAS, -1, bmem}};
    st = cxr_nn_ct_step(B, prim, a, bmem ? 4 : 3, op->name);
    prim = NULL;
    if (st != CXR_OK)
        goto fail;
    to->fwd_pd = pd;
    pd = NULL;
    to->src = src;
    to->dst = dst;
    to->dt = dt;
    B->vs[op->out].mem = dst;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* The relu op that alone reads value v, or -1. */
static int32_t sole_relu_reader(struct tbuilder *B, int32_t v)
{
    const struct cxr_nn_graph *g = B->g;
    if (v == g->output || B->readers[v] != 1)
        return -1;
    for (int32_t i = 0; i < g->n_ops; i++)
        if (g->ops[i].n_in >= 1 && g->ops[i].in[0] == v)
            return g->ops[i].kind == CXR_NN_OP_RELU ? i : -1;
    return -1;
}

static unsigned bn_flags(bool relu, bool frozen)
{
    return dnnl_use_scale | dnnl_use_shift | (relu ? dnnl_fuse_norm_relu : 0u) |
           (frozen ? dnnl_use_global_stats : 0u);
}

static enum cxr_status fwd_bn(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct top *to = &B->ops[oi];
    struct cpu_train_plan *T = B->T;
    char *err = B->err;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    const struct cxr_nn_value *x = &B->g->values[op->in[0]];
    double count = (double)B->p->batch * x->h * x->w;
    if (!T->frozen && count < 2)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cpu: batch norm '%s' in training mode "
                          "needs at least 2 values per channel (batch %d x %dx%d)",
                          op->name, (int)B->p->batch, (int)x->h, (int)x->w);
    int32_t relu = sole_relu_reader(B, op->out);
    if ((st = cxr_nn_cpu_attr(&attr, false, false, op->name, err)) != CXR_OK)
        return st;
    int32_t src = B->vs[op->in[0]].mem, dst, mean = -1, var = -1, ws = -1;
    const dnnl_memory_desc_t *md = cxr_nn_cpu_md(B->p, src);
    dnnl_batch_normalization_desc_t bd;
    CXR_DNNL(dnnl_batch_normalization_forward_desc_init(
                 &bd, T->frozen ? dnnl_forward_inference : dnnl_forward_training, md, op->eps,
                 bn_flags(relu >= 0, T->frozen)),
             op->name);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &bd, attr, B->p->ctx->engine, NULL), op->name);
    cxr_log(CXR_LOG_DEBUG, "nn", "cpu train: batch %d %s fwd: %s", (int)B->p->batch, op->name,
            cxr_nn_cpu_impl(pd));
    CXR_DNNL(dnnl_primitive_create(&prim, pd), op->name);
    dnnl_memory_t scale = NULL, shift = NULL, rmean = NULL, rvar = NULL;
    dnnl_memory_desc_t cmd;
    dnnl_dims_t cd = {x->c};
    dnnl_memory_desc_init_by_tag(&cmd, 1, cd, dnnl_f32, dnnl_a);
    if ((st = cxr_nn_ct_weights(B, op->param[0], &cmd, &scale, op->name)) != CXR_OK ||
        (st = cxr_nn_ct_weights(B, op->param[1], &cmd, &shift, op->name)) != CXR_OK ||
        (st = cxr_nn_ct_fresh(B, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &dst)) !=
            CXR_OK)
        goto fail;
    if (T->frozen) {
        if ((st = cxr_nn_ct_weights(B, op->param[2], &cmd, &rmean, op->name)) != CXR_OK ||
            (st = cxr_nn_ct_weights(B, op->param[3], &cmd, &rvar, op->name)) != CXR_OK)
            goto fail;
    } else {
        if ((st = cxr_nn_ct_fresh(B, &cmd, &mean)) != CXR_OK ||
            (st = cxr_nn_ct_fresh(B, &cmd, &var)) != CXR_OK)
            goto fail;
        const dnnl_memory_desc_t *wmd =
            dnnl_primitive_desc_query_md(pd, dnnl_query_workspace_md, 0);
        if (relu >= 0 && wmd && dnnl_memory_desc_get_size(wmd) > 0 &&
            (st = cxr_nn_ct_fresh(B, wmd, &ws)) != CXR_OK)
            goto fail;
    }
    struct cpu_arg a[7] = {{DNNL_ARG_SRC, src, NULL},     {DNNL_ARG_DST, dst, NULL},
                           {DNNL_ARG_SCALE, -1, scale},   {DNNL_ARG_SHIFT, -1, shift},
                           {DNNL_ARG_MEAN, mean, rmean},  {DNNL_ARG_VARIANCE, var, rvar},
                           {DNNL_ARG_WORKSPACE, ws, NULL}};
    st = cxr_nn_ct_step(B, prim, a, ws >= 0 ? 7 : 6, op->name);
    prim = NULL;
    if (st != CXR_OK)
        goto fail;
    if (!T->frozen) {
        if (!cxr_nn_grow((void **)&T->bn, T->n_bn, &T->cap_bn, sizeof *T->bn)) {
            st = cxr_nn_ct_oom(err);
            goto fail;
        }
        T->bn[T->n_bn++] = (struct bn_stat){
            .mean = mean, .var = var, .rm = op->param[2], .rv = op->param[3], .count = count};
    }
    to->fwd_pd = pd;
    pd = NULL;
    to->src = src;
    to->dst = dst;
    to->ws = ws;
    to->mean = mean;
    to->var = var;
    to->dt = md->data_type;
    if (relu >= 0) {
        to->fused_relu = relu;
        B->ops[relu].absorbed_by = oi;
        B->vs[B->g->ops[relu].out].mem = dst;
    } else {
        B->vs[op->out].mem = dst;
    }
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* A relu's forward primitive descriptor on md (also the hint of its
 * backward when an add did the forward as a post-op). */
static enum cxr_status relu_fwd_pd(struct tbuilder *B, const char *where,
                                   const dnnl_memory_desc_t *md, dnnl_primitive_desc_t *pd)
{
    char *err = B->err;
    enum cxr_status st = CXR_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_eltwise_desc_t ed;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    CXR_DNNL(dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_training,
                                            dnnl_eltwise_relu_use_dst_for_bwd, md, 0.0f, 0.0f),
             where);
    CXR_DNNL(dnnl_primitive_desc_create(pd, &ed, attr, B->p->ctx->engine, NULL), where);
fail:
    dnnl_primitive_attr_destroy(attr);
    return st;
}

static enum cxr_status fwd_relu(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct top *to = &B->ops[oi];
    char *err = B->err;
    enum cxr_status st;
    dnnl_primitive_t prim = NULL;
    if (to->absorbed_by >= 0)
        return CXR_OK; /* done by the bn or add before it */
    int32_t src = B->vs[op->in[0]].mem, dst;
    const dnnl_memory_desc_t *md = cxr_nn_cpu_md(B->p, src);
    if ((st = relu_fwd_pd(B, op->name, md, &to->fwd_pd)) != CXR_OK)
        return st;
    CXR_DNNL(dnnl_primitive_create(&prim, to->fwd_pd), op->name);
    if ((st = cxr_nn_ct_fresh(B, md, &dst)) != CXR_OK)
        goto fail;
    struct cpu_arg a[2] = {{DNNL_ARG_SRC, src, NULL}, {DNNL_ARG_DST, dst, NULL}};
    st = cxr_nn_ct_step(B, prim, a, 2, op->name);
    prim = NULL;
    to->src = src;
    to->dst = dst;
    to->dt = md->data_type;
    B->vs[op->out].mem = dst;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    return st;
}

static enum cxr_status fwd_add(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct top *to = &B->ops[oi];
    char *err = B->err;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    int32_t relu = sole_relu_reader(B, op->out);
    if ((st = cxr_nn_cpu_attr(&attr, false, relu >= 0, op->name, err)) != CXR_OK)
        return st;
    int32_t a0 = B->vs[op->in[0]].mem, a1, dst;
    const dnnl_memory_desc_t *md = cxr_nn_cpu_md(B->p, a0);
    if ((st = cxr_nn_ct_value_as(B, op->in[1], md, &a1, op->name)) != CXR_OK)
        goto fail;
    dnnl_binary_desc_t bd;
    CXR_DNNL(dnnl_binary_desc_init(&bd, dnnl_binary_add, md, md, md), op->name);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &bd, attr, B->p->ctx->engine, NULL), op->name);
    CXR_DNNL(dnnl_primitive_create(&prim, pd), op->name);
    if ((st = cxr_nn_ct_fresh(B, md, &dst)) != CXR_OK)
        goto fail;
    struct cpu_arg a[3] = {
        {DNNL_ARG_SRC_0, a0, NULL}, {DNNL_ARG_SRC_1, a1, NULL}, {DNNL_ARG_DST, dst, NULL}};
    st = cxr_nn_ct_step(B, prim, a, 3, op->name);
    prim = NULL;
    if (st != CXR_OK)
        goto fail;
    to->dst = dst;
    to->dt = md->data_type;
    if (relu >= 0) {
        to->fused_relu = relu;
        B->ops[relu].absorbed_by = oi;
        B->vs[B->g->ops[relu].out].mem = dst;
        /* the relu's backward runs from this output; it needs a forward hint */
        if ((st = relu_fwd_pd(B, B->g->ops[relu].name, md, &B->ops[relu].fwd_pd)) != CXR_OK)
            goto fail;
        B->ops[relu].dst = dst;
        B->ops[relu].dt = md->data_type;
    } else {
        B->vs[op->out].mem = dst;
    }
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Max pool (with workspace) and global average pool. */
static enum cxr_status fwd_pool(struct tbuilder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct top *to = &B->ops[oi];
    char *err = B->err;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, op->name, err)) != CXR_OK)
        return st;
    int32_t src = B->vs[op->in[0]].mem, dst, ws = -1;
    const dnnl_memory_desc_t *smd = cxr_nn_cpu_md(B->p, src);
    dnnl_memory_desc_t dmd;
    md4(&dmd, B->p->batch, &B->g->values[op->out], smd->data_type, dnnl_format_tag_any);
    bool max = op->kind == CXR_NN_OP_MAXPOOL;
    dnnl_dims_t strides = {op->stride, op->stride}, kernel = {op->kernel_h, op->kernel_w};
    dnnl_dims_t dil = {0, 0}, pad = {op->pad, op->pad};
    dnnl_pooling_v2_desc_t desc;
    CXR_DNNL(
        dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_training,
                                          max ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding,
                                          smd, &dmd, strides, kernel, dil, pad, pad),
        op->name);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &desc, attr, B->p->ctx->engine, NULL), op->name);
    cxr_log(CXR_LOG_DEBUG, "nn", "cpu train: batch %d %s fwd: %s", (int)B->p->batch, op->name,
            cxr_nn_cpu_impl(pd));
    CXR_DNNL(dnnl_primitive_create(&prim, pd), op->name);
    if ((st = cxr_nn_ct_fresh(B, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &dst)) !=
        CXR_OK)
        goto fail;
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_workspace_md, 0);
    if (max && wmd && dnnl_memory_desc_get_size(wmd) > 0 &&
        (st = cxr_nn_ct_fresh(B, wmd, &ws)) != CXR_OK)
        goto fail;
    struct cpu_arg a[3] = {
        {DNNL_ARG_SRC, src, NULL}, {DNNL_ARG_DST, dst, NULL}, {DNNL_ARG_WORKSPACE, ws, NULL}};
    st = cxr_nn_ct_step(B, prim, a, ws >= 0 ? 3 : 2, op->name);
    prim = NULL;
    if (st != CXR_OK)
        goto fail;
    to->fwd_pd = pd;
    pd = NULL;
    to->src = src;
    to->dst = dst;
    to->ws = ws;
    to->dt = smd->data_type;
    B->vs[op->out].mem = dst;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* fc: inner product in F32, logits plain n x O into `out_mem`. */
static enum cxr_status fwd_fc(struct tbuilder *B, int32_t oi, int32_t out_mem)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct top *to = &B->ops[oi];
    char *err = B->err;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, op->name, err)) != CXR_OK)
        return st;
    const struct cxr_nn_value *x = &B->g->values[op->in[0]], *y = &B->g->values[op->out];
    dnnl_dims_t wd = {y->c, x->c, 1, 1}, bd = {y->c};
    dnnl_memory_desc_t smd, wmd, bmd;
    md4(&smd, B->p->batch, x, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a);
    dnnl_inner_product_desc_t ipd;
    CXR_DNNL(dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_training, &smd, &wmd, &bmd,
                                                  cxr_nn_cpu_md(B->p, out_mem)),
             op->name);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &ipd, attr, B->p->ctx->engine, NULL), op->name);
    CXR_DNNL(dnnl_primitive_create(&prim, pd), op->name);
    int32_t src;
    dnnl_memory_t wmem = NULL, bmem = NULL;
    if ((st = cxr_nn_ct_value_as(B, op->in[0],
                                 dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), &src,
                                 op->name)) != CXR_OK ||
        (st = cxr_nn_ct_weights(B, op->param[0],
                                dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), &wmem,
                                op->name)) != CXR_OK ||
        (st = cxr_nn_ct_weights(B, op->param[1], &bmd, &bmem, op->name)) != CXR_OK)
        goto fail;
    struct cpu_arg a[4] = {{DNNL_ARG_SRC, src, NULL},
                           {DNNL_ARG_WEIGHTS, -1, wmem},
                           {DNNL_ARG_BIAS, -1, bmem},
                           {DNNL_ARG_DST, out_mem, NULL}};
    st = cxr_nn_ct_step(B, prim, a, 4, op->name);
    prim = NULL;
    if (st != CXR_OK)
        goto fail;
    to->fwd_pd = pd;
    pd = NULL;
    to->src = src;
    to->dst = out_mem;
    to->dt = dnnl_f32;
    B->vs[op->out].mem = out_mem;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* ------------------------------------------------------------ the plan */

void cxr_nn_cpu_train_plan_free(struct cxr_nn_backend *b, void *plan)
{
    struct cpu_train_plan *T = plan;
    if (!T)
        return;
    struct cpu_plan *p = &T->p;
    for (int32_t i = 0; i < p->n_steps; i++)
        dnnl_primitive_destroy(p->steps[i].prim);
    for (int32_t i = 0; i < p->n_mems; i++)
        dnnl_memory_destroy(p->mems[i].m);
    for (int32_t i = 0; i < T->n_raw; i++)
        dnnl_memory_destroy(T->raw[i]);
    free(p->steps);
    free(p->mems);
    free(p->bufs);
    free(T->raw);
    free(T->bn);
    free(T->io);
    free(T);
}

static enum cxr_status graph_state(struct cpu_ctx *c, struct cxr_nn_graph *g, char *err)
{
    enum cxr_status st = CXR_OK;
    if (g->extra)
        return CXR_OK;
    struct cpu_graph *cg = calloc(1, sizeof *cg);
    if (!cg)
        return cxr_nn_ct_oom(err);
    CXR_DNNL(dnnl_stream_create(&cg->stream, c->engine, dnnl_stream_default_flags), "stream");
    g->extra = cg;
    return CXR_OK;
fail:
    free(cg);
    return st;
}

/* The io block: input copy, logits, dlogits, each 64-byte aligned. */
static size_t round64(size_t n) { return (n + 15) & ~(size_t)15; }

static enum cxr_status plan_forward(struct tbuilder *B, int32_t *out_mem)
{
    struct cxr_nn_graph *g = B->g;
    struct cpu_plan *p = B->p;
    char *err = B->err;
    enum cxr_status st = CXR_OK;
    const struct cxr_nn_value *in = &g->values[g->input], *y = &g->values[g->output];
    dnnl_memory_desc_t imd, omd;
    md4(&imd, p->batch, in, dnnl_f32, dnnl_nchw);
    dnnl_dims_t od = {p->batch, y->c};
    dnnl_memory_desc_init_by_tag(&omd, 2, od, dnnl_f32, dnnl_nc);
    int32_t ib = cxr_nn_cpu_new_buf(p, dnnl_memory_desc_get_size(&imd), BUF_INPUT);
    int32_t ob = cxr_nn_cpu_new_buf(p, dnnl_memory_desc_get_size(&omd), BUF_OUTPUT);
    if (ib < 0 || ob < 0)
        return cxr_nn_ct_oom(err);
    if ((st = cxr_nn_cpu_new_mem(p, &imd, ib, &B->vs[g->input].mem, err)) != CXR_OK ||
        (st = cxr_nn_cpu_new_mem(p, &omd, ob, out_mem, err)) != CXR_OK)
        return st;
    if (g->ops[g->n_ops - 1].kind != CXR_NN_OP_FC || g->ops[g->n_ops - 1].out != g->output)
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                          "cpu: training needs a graph that "
                          "ends in an fc op");
    for (int32_t i = 0; i < g->n_ops && st == CXR_OK; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (op->absorbed_by >= 0)
            return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                              "cpu: training needs an unfused "
                              "graph");
        switch (op->kind) {
        case CXR_NN_OP_CONV: st = fwd_conv(B, i); break;
        case CXR_NN_OP_BN: st = fwd_bn(B, i); break;
        case CXR_NN_OP_RELU: st = fwd_relu(B, i); break;
        case CXR_NN_OP_ADD: st = fwd_add(B, i); break;
        case CXR_NN_OP_MAXPOOL:
        case CXR_NN_OP_GAP: st = fwd_pool(B, i); break;
        case CXR_NN_OP_FC: st = fwd_fc(B, i, i == g->n_ops - 1 ? *out_mem : -1); break;
        default:
            st = cxr_seterr(err, CXR_ERR_UNSUPPORTED, "cpu: no training for %s op '%s'",
                            cxr_nn_op_kind_name(op->kind), op->name);
        }
    }
    return st;
}

enum cxr_status cxr_nn_cpu_train_plan(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                      const struct cxr_nn_train_plan_options *opt, void **plan,
                                      char *err)
{
    struct cpu_ctx *c = b->context;
    enum cxr_status st;
    *plan = NULL;
    if (!g || !opt || g->fused || opt->batch < 1 || g->n_ops < 1)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cpu: train_plan needs an unfused "
                          "graph and a batch >= 1");
    if ((st = graph_state(c, g, err)) != CXR_OK)
        return st;
    cxr_nn_cpu_apply_threads(c);
    struct cpu_train_plan *T = calloc(1, sizeof *T);
    struct tv *vs = calloc((size_t)g->n_values, sizeof *vs);
    struct top *ops = calloc((size_t)g->n_ops, sizeof *ops);
    bool *need = calloc((size_t)g->n_values, sizeof *need);
    int32_t *readers = calloc((size_t)g->n_values, sizeof *readers);
    if (!T || !vs || !ops || !need || !readers) {
        free(T);
        T = NULL;
        st = cxr_nn_ct_oom(err);
        goto done;
    }
    T->g = g;
    T->momentum = opt->bn_momentum;
    T->frozen = opt->bn_frozen;
    T->conv_algo = opt->conv_algo;
    struct cpu_plan *p = &T->p;
    p->ctx = c;
    p->cg = g->extra;
    p->batch = opt->batch;
    struct tbuilder B = {
        .T = T, .p = p, .g = g, .vs = vs, .ops = ops, .need = need, .readers = readers, .err = err};
    for (int32_t v = 0; v < g->n_values; v++)
        vs[v].mem = vs[v].diff = -1;
    for (int32_t i = 0; i < g->n_ops; i++) {
        ops[i] = (struct top){.src = -1,
                              .dst = -1,
                              .ws = -1,
                              .mean = -1,
                              .var = -1,
                              .fused_relu = -1,
                              .absorbed_by = -1,
                              .dt = dnnl_f32};
        for (int32_t k = 0; k < g->ops[i].n_in; k++)
            readers[g->ops[i].in[k]]++;
    }
    cxr_nn_graph_needs_grad(g, need);
    int32_t out_mem = -1;
    if ((st = plan_forward(&B, &out_mem)) != CXR_OK)
        goto done;
    T->n_fwd = p->n_steps;
    /* the batch statistics are read after the forward steps (running update) */
    for (int32_t i = 0; i < T->n_bn; i++) {
        p->bufs[p->mems[T->bn[i].mean].buf].last = T->n_fwd;
        p->bufs[p->mems[T->bn[i].var].buf].last = T->n_fwd;
    }
    /* backward: dlogits, then every op in reverse */
    if (need[g->output]) {
        const dnnl_memory_desc_t *omd = cxr_nn_cpu_md(p, out_mem);
        int32_t db = cxr_nn_cpu_new_buf(p, dnnl_memory_desc_get_size(omd), BUF_DLOGITS);
        if (db < 0) {
            st = cxr_nn_ct_oom(err);
            goto done;
        }
        if ((st = cxr_nn_cpu_new_mem(p, omd, db, &vs[g->output].diff, err)) != CXR_OK)
            goto done;
        for (int32_t i = g->n_ops - 1; i >= 0 && st == CXR_OK; i--)
            if (need[g->ops[i].out])
                st = cxr_nn_ct_backward_op(&B, i);
        if (st != CXR_OK)
            goto done;
    }
    /* the io block */
    const struct cxr_nn_value *in = &g->values[g->input];
    T->in_floats = (size_t)p->batch * (size_t)in->c * (size_t)in->h * (size_t)in->w;
    T->out_floats = (size_t)p->batch * (size_t)g->values[g->output].c;
    size_t total = round64(T->in_floats) + 2 * round64(T->out_floats);
    T->io = aligned_alloc(64, ((total * sizeof(float)) + 63) & ~(size_t)63);
    if (!T->io) {
        st = cxr_nn_ct_oom(err);
        goto done;
    }
    memset(T->io, 0, total * sizeof(float));
    for (int32_t i = 0; i < p->n_mems; i++) {
        const struct cpu_mem *m = &p->mems[i];
        if (m->buf < 0 || p->bufs[m->buf].place == BUF_ARENA)
            continue;
        float *h = p->bufs[m->buf].place == BUF_INPUT ? T->io
                   : p->bufs[m->buf].place == BUF_OUTPUT
                       ? T->io + round64(T->in_floats)
                       : T->io + round64(T->in_floats) + round64(T->out_floats);
        CXR_DNNL(dnnl_memory_set_data_handle(m->m, h), "training io");
    }
    cxr_nn_cpu_place_buffers(p);
    cxr_log(CXR_LOG_DEBUG, "nn",
            "cpu train: batch %d: %d forward + %d backward steps, arena %.1f MiB", (int)p->batch,
            (int)T->n_fwd, (int)(p->n_steps - T->n_fwd), (double)p->arena_need / 1048576.0);
done:
fail:
    if (ops)
        for (int32_t i = 0; i < g->n_ops; i++)
            if (ops[i].fwd_pd)
                dnnl_primitive_desc_destroy(ops[i].fwd_pd);
    free(vs);
    free(ops);
    free(need);
    free(readers);
    if (st != CXR_OK) {
        cxr_nn_cpu_train_plan_free(b, T);
        return st;
    }
    *plan = T;
    return CXR_OK;
}
