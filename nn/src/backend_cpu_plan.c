/* backend_cpu_plan.c — compiles a fused graph into oneDNN primitives for one
 * batch size (backend_cpu_run.c places its memory and runs it).
 *
 * Layouts are oneDNN's choice (format_tag_any): each value has one
 * canonical memory written by its producer; a consumer that wants another
 * layout or data type gets a reorder step (cached per value and layout).
 * Conv: batch norm already folded (bias), ReLU as an eltwise post-op, the
 * residual add as a sum post-op into a destination that holds the residual
 * (in place when the residual is dead afterwards and has the same layout).
 * bf16: activations and conv/pool weights in bf16, except the outputs of
 * the convs that take a residual (the block outputs: fp32, so the sum
 * accumulates in fp32), fc in fp32, logits fp32; a bf16 conv that only has a reference kernel (e.g.
 * the 1-channel stem on some CPUs) runs in fp32 instead. Activations live in one arena per graph
 * (graph->extra), shared by all batch sizes; offsets come from the live ranges of the plan's
 * buffers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cpu.h"
#include "cxr/log.h"

/* Planning state of one value. */
#define MAX_CONV 4
struct vstate {
    int32_t mem;            /* canonical memory (-1: not produced yet) */
    int32_t conv[MAX_CONV]; /* converted copies */
    int32_t n_conv;
    int32_t last_reader; /* last live op reading it */
};

struct builder {
    struct cpu_plan *p;
    struct cxr_nn_graph *g;
    struct vstate *vs;
    char *err;
};

static enum cxr_status oom(char *err)
{
    return cxr_seterr(err, CXR_ERR_NOMEM, "cpu: out of memory while planning");
}

int32_t cxr_nn_cpu_new_buf(struct cpu_plan *p, size_t size, enum buf_place place)
{
    if (!cxr_nn_grow((void **)&p->bufs, p->n_bufs, &p->cap_bufs, sizeof *p->bufs))
        return -1;
    p->bufs[p->n_bufs] = (struct cxr_nn_buf){.size = size, .first = -1, .last = -1, .place = place};
    return p->n_bufs++;
}

enum cxr_status cxr_nn_cpu_new_mem(struct cpu_plan *p, const dnnl_memory_desc_t *md, int32_t buf,
                                   int32_t *out, char *err)
{
    enum cxr_status st = CXR_OK;
    *out = -1;
    if (!cxr_nn_grow((void **)&p->mems, p->n_mems, &p->cap_mems, sizeof *p->mems))
        return oom(err);
    dnnl_memory_t m = NULL;
    CXR_DNNL(dnnl_memory_create(&m, md, p->ctx->engine, DNNL_MEMORY_NONE), "plan memory");
    p->mems[p->n_mems] = (struct cpu_mem){.m = m, .buf = buf};
    if (buf >= 0 && p->bufs[buf].size < dnnl_memory_desc_get_size(md))
        p->bufs[buf].size = dnnl_memory_desc_get_size(md);
    *out = p->n_mems++;
fail:
    return st;
}

/* A memory of `md` on a fresh arena buffer. */
static enum cxr_status fresh_mem(struct cpu_plan *p, const dnnl_memory_desc_t *md, int32_t *out,
                                 char *err)
{
    int32_t b = cxr_nn_cpu_new_buf(p, dnnl_memory_desc_get_size(md), BUF_ARENA);
    if (b < 0)
        return oom(err);
    return cxr_nn_cpu_new_mem(p, md, b, out, err);
}

const dnnl_memory_desc_t *cxr_nn_cpu_md(const struct cpu_plan *p, int32_t mem)
{
    const dnnl_memory_desc_t *md = NULL;
    dnnl_memory_get_memory_desc(p->mems[mem].m, &md);
    return md;
}

enum cxr_status cxr_nn_cpu_step(struct cpu_plan *p, dnnl_primitive_t prim,
                                const struct cpu_arg *args, int32_t n, const char *where, char *err)
{
    enum cxr_status st = CXR_OK;
    const_dnnl_primitive_desc_t pd = NULL;
    if (n + 1 > CPU_MAX_ARGS ||
        !cxr_nn_grow((void **)&p->steps, p->n_steps, &p->cap_steps, sizeof *p->steps)) {
        dnnl_primitive_destroy(prim);
        return oom(err);
    }
    struct cpu_step *s = &p->steps[p->n_steps];
    memset(s, 0, sizeof *s);
    s->prim = prim;
    p->n_steps++;
    int32_t idx = p->n_steps - 1;
    for (int32_t i = 0; i < n; i++) {
        dnnl_memory_t m = args[i].raw;
        if (args[i].mem >= 0) {
            struct cpu_mem *cm = &p->mems[args[i].mem];
            m = cm->m;
            struct cxr_nn_buf *b = &p->bufs[cm->buf];
            if (b->first < 0)
                b->first = idx;
            b->last = idx;
        }
        s->args[s->n_args++] = (dnnl_exec_arg_t){args[i].kind, m};
    }
    CXR_DNNL(dnnl_primitive_get_primitive_desc(prim, &pd), where);
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t ssz = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (ssz > 0) {
        if (!cxr_nn_grow((void **)&p->mems, p->n_mems, &p->cap_mems, sizeof *p->mems))
            return oom(err);
        dnnl_memory_t m = NULL;
        CXR_DNNL(dnnl_memory_create(&m, smd, p->ctx->engine, DNNL_MEMORY_NONE), where);
        p->mems[p->n_mems++] = (struct cpu_mem){.m = m, .buf = -1};
        s->args[s->n_args++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m};
        if (ssz > p->scratch_size)
            p->scratch_size = ssz;
    }
fail:
    return st;
}

enum cxr_status cxr_nn_cpu_attr(dnnl_primitive_attr_t *attr, bool sum, bool relu, const char *where,
                                char *err)
{
    enum cxr_status st = CXR_OK;
    dnnl_post_ops_t po = NULL;
    *attr = NULL;
    CXR_DNNL(dnnl_primitive_attr_create(attr), where);
    CXR_DNNL(dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user), where);
    if (sum || relu) {
        CXR_DNNL(dnnl_post_ops_create(&po), where);
        if (sum)
            CXR_DNNL(dnnl_post_ops_append_sum(po, 1.0f), where);
        if (relu)
            CXR_DNNL(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f), where);
        CXR_DNNL(dnnl_primitive_attr_set_post_ops(*attr, po), where);
    }
    if (po)
        dnnl_post_ops_destroy(po);
    return CXR_OK;
fail:
    if (po)
        dnnl_post_ops_destroy(po);
    if (*attr)
        dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
    return st;
}

/* Reorder src memory -> dst memory (layout and/or type), as a step. */
static enum cxr_status add_reorder(struct cpu_plan *p, int32_t src, int32_t dst, const char *where,
                                   char *err)
{
    enum cxr_status st = CXR_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    CXR_DNNL(dnnl_reorder_primitive_desc_create(&pd, cxr_nn_cpu_md(p, src), p->ctx->engine,
                                                cxr_nn_cpu_md(p, dst), p->ctx->engine, attr),
             where);
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    struct cpu_arg a[2] = {{DNNL_ARG_FROM, src, NULL}, {DNNL_ARG_TO, dst, NULL}};
    st = cxr_nn_cpu_step(p, prim, a, 2, where, err);
    prim = NULL;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Value v as memory of layout `md`: its canonical memory when equal, else a
 * converted copy (made once per plan and layout). */
static enum cxr_status value_as(struct builder *B, int32_t v, const dnnl_memory_desc_t *md,
                                int32_t *out, const char *where)
{
    struct vstate *s = &B->vs[v];
    char *err = B->err;
    if (dnnl_memory_desc_equal(cxr_nn_cpu_md(B->p, s->mem), md)) {
        *out = s->mem;
        return CXR_OK;
    }
    for (int32_t i = 0; i < s->n_conv; i++)
        if (dnnl_memory_desc_equal(cxr_nn_cpu_md(B->p, s->conv[i]), md)) {
            *out = s->conv[i];
            return CXR_OK;
        }
    int32_t m;
    enum cxr_status st = fresh_mem(B->p, md, &m, err);
    if (st == CXR_OK)
        st = add_reorder(B->p, s->mem, m, where, err);
    if (st != CXR_OK)
        return st;
    if (s->n_conv < MAX_CONV)
        s->conv[s->n_conv++] = m;
    *out = m;
    return CXR_OK;
}

static void init_md(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims, dnnl_data_type_t dt,
                    dnnl_format_tag_t tag)
{
    dnnl_memory_desc_init_by_tag(md, ndims, dims, dt, tag);
}

const char *cxr_nn_cpu_impl(const_dnnl_primitive_desc_t pd)
{
    const char *s = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success || !s)
        return "?";
    return s;
}

bool cxr_nn_cpu_is_ref(const_dnnl_primitive_desc_t pd)
{
    return strncmp(cxr_nn_cpu_impl(pd), "ref", 3) == 0;
}

/* A conv primitive descriptor for op with activations of type dt;
 * `dst_fixed` (may be NULL) pins the destination layout. */
static dnnl_status_t conv_pd(struct builder *B, const struct cxr_nn_op *op, dnnl_data_type_t dt,
                             dnnl_data_type_t ddt, const dnnl_memory_desc_t *dst_fixed,
                             const_dnnl_primitive_attr_t attr, dnnl_primitive_desc_t *pd)
{
    const struct cxr_nn_value *x = &B->g->values[op->in[0]], *y = &B->g->values[op->out];
    int64_t n = B->p->batch;
    dnnl_dims_t sd = {n, x->c, x->h, x->w}, dd = {n, y->c, y->h, y->w};
    dnnl_dims_t wd = {y->c, x->c, op->kernel_h, op->kernel_w}, bd = {y->c};
    dnnl_dims_t strides = {op->stride, op->stride}, pad = {op->pad, op->pad};
    dnnl_memory_desc_t smd, wmd, bmd, dmd;
    init_md(&smd, 4, sd, dt, dnnl_format_tag_any);
    init_md(&wmd, 4, wd, dt, dnnl_format_tag_any);
    init_md(&bmd, 1, bd, dnnl_f32, dnnl_a);
    if (dst_fixed)
        dmd = *dst_fixed;
    else
        init_md(&dmd, 4, dd, ddt, dnnl_format_tag_any);
    dnnl_convolution_desc_t cd;
    dnnl_status_t s = dnnl_convolution_forward_desc_init(
        &cd, dnnl_forward_inference, dnnl_convolution_direct, &smd, &wmd,
        op->param[1] >= 0 ? &bmd : NULL, &dmd, strides, pad, pad);
    if (s != dnnl_success)
        return s;
    return dnnl_primitive_desc_create(pd, &cd, attr, B->p->ctx->engine, NULL);
}

static enum cxr_status plan_conv(struct builder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct cpu_plan *p = B->p;
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    bool sum = op->sum_in >= 0;
    if ((st = cxr_nn_cpu_attr(&attr, sum, op->relu, where, err)) != CXR_OK)
        return st;
    dnnl_data_type_t dt = p->ctx->bf16 ? dnnl_bf16 : dnnl_f32;
    /* The residual stream (block outputs) stays fp32 in bf16 mode: the sum
     * accumulates in fp32 and the error does not compound across blocks. */
    dnnl_data_type_t ddt = sum ? dnnl_f32 : dt;
    int32_t res = sum ? B->vs[op->sum_in].mem : -1;
    /* With a residual, first try writing in the residual's own layout (no
     * copy); a bf16 conv with only a reference kernel is redone in fp32. */
    dnnl_status_t s;
    for (;;) {
        s = dnnl_unimplemented;
        if (sum && cxr_nn_cpu_md(p, res)->data_type == ddt) {
            s = conv_pd(B, op, dt, ddt, cxr_nn_cpu_md(p, res), attr, &pd);
            if (s == dnnl_success && cxr_nn_cpu_is_ref(pd)) {
                dnnl_primitive_desc_destroy(pd);
                pd = NULL;
                s = dnnl_unimplemented;
            }
        }
        if (s != dnnl_success)
            s = conv_pd(B, op, dt, dt == dnnl_f32 ? dnnl_f32 : ddt, NULL, attr, &pd);
        if (s == dnnl_success && dt == dnnl_bf16 && cxr_nn_cpu_is_ref(pd)) {
            cxr_log(CXR_LOG_DEBUG, "nn", "cpu: %s: no fast bf16 kernel (%s), using fp32", where,
                    cxr_nn_cpu_impl(pd));
            dnnl_primitive_desc_destroy(pd);
            pd = NULL;
            dt = dnnl_f32;
            continue;
        }
        break;
    }
    CXR_DNNL(s, where);
    cxr_log(CXR_LOG_DEBUG, "nn", "cpu: batch %d %s: %s", (int)p->batch, where, cxr_nn_cpu_impl(pd));
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);

    int32_t src, dst;
    dnnl_memory_t wmem = NULL, bmem = NULL;
    const dnnl_memory_desc_t *want_src = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *want_w = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *want_b = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
    const dnnl_memory_desc_t *want_dst = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    if ((st = value_as(B, op->in[0], want_src, &src, where)) != CXR_OK)
        goto fail;
    struct cxr_nn_tensor *wt = &B->g->params[op->param[0]].t;
    dnnl_dims_t wd = {wt->shape[0], wt->shape[1], wt->shape[2], wt->shape[3]};
    dnnl_memory_desc_t plain;
    init_md(&plain, 4, wd, dnnl_f32, dnnl_oihw);
    if ((st = cxr_nn_cpu_weights(p->ctx, wt, &plain, want_w, p->cg->stream, &wmem, err)) != CXR_OK)
        goto fail;
    if (op->param[1] >= 0) {
        struct cxr_nn_tensor *bt = &B->g->params[op->param[1]].t;
        dnnl_dims_t bd = {bt->shape[0]};
        init_md(&plain, 1, bd, dnnl_f32, dnnl_a);
        if ((st = cxr_nn_cpu_weights(p->ctx, bt, &plain, want_b, p->cg->stream, &bmem, err)) !=
            CXR_OK)
            goto fail;
    }
    if (sum) {
        int32_t rbuf = p->mems[res].buf;
        if (dnnl_memory_desc_equal(cxr_nn_cpu_md(p, res), want_dst) &&
            B->vs[op->sum_in].last_reader == oi && p->bufs[rbuf].place == BUF_ARENA) {
            st = cxr_nn_cpu_new_mem(p, want_dst, rbuf, &dst, err); /* accumulate in place */
        } else {
            st = fresh_mem(p, want_dst, &dst, err);
            if (st == CXR_OK)
                st = add_reorder(p, res, dst, where, err); /* copy the residual in */
        }
    } else {
        st = fresh_mem(p, want_dst, &dst, err);
    }
    if (st != CXR_OK)
        goto fail;
    struct cpu_arg a[4] = {{DNNL_ARG_SRC, src, NULL},
                           {DNNL_ARG_WEIGHTS, -1, wmem},
                           {DNNL_ARG_DST, dst, NULL},
                           {DNNL_ARG_BIAS, -1, bmem}};
    st = cxr_nn_cpu_step(p, prim, a, bmem ? 4 : 3, where, err);
    prim = NULL;
    B->vs[op->out].mem = dst;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Max pool and global average pool: pooling over the canonical layout. */
static enum cxr_status plan_pool(struct builder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct cpu_plan *p = B->p;
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    int32_t src = B->vs[op->in[0]].mem, dst;
    const dnnl_memory_desc_t *smd = cxr_nn_cpu_md(p, src);
    const struct cxr_nn_value *y = &B->g->values[op->out];
    dnnl_dims_t dd = {p->batch, y->c, y->h, y->w};
    dnnl_memory_desc_t dmd;
    init_md(&dmd, 4, dd, smd->data_type, dnnl_format_tag_any);
    bool max = op->kind == CXR_NN_OP_MAXPOOL;
    dnnl_dims_t strides = {op->stride, op->stride}, kernel = {op->kernel_h, op->kernel_w};
    dnnl_dims_t dil = {0, 0}, pad = {op->pad, op->pad};
    dnnl_pooling_v2_desc_t desc;
    CXR_DNNL(
        dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_inference,
                                          max ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding,
                                          smd, &dmd, strides, kernel, dil, pad, pad),
        where);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &desc, attr, p->ctx->engine, NULL), where);
    cxr_log(CXR_LOG_DEBUG, "nn", "cpu: batch %d %s: %s", (int)p->batch, where, cxr_nn_cpu_impl(pd));
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    if ((st = fresh_mem(p, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &dst, err)) !=
        CXR_OK)
        goto fail;
    struct cpu_arg a[2] = {{DNNL_ARG_SRC, src, NULL}, {DNNL_ARG_DST, dst, NULL}};
    st = cxr_nn_cpu_step(p, prim, a, 2, where, err);
    prim = NULL;
    B->vs[op->out].mem = dst;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Standalone ReLU (eltwise) and add (binary, optional fused ReLU). */
static enum cxr_status plan_elementwise(struct builder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct cpu_plan *p = B->p;
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    bool add = op->kind == CXR_NN_OP_ADD;
    if ((st = cxr_nn_cpu_attr(&attr, false, add && op->relu, where, err)) != CXR_OK)
        return st;
    int32_t a0 = B->vs[op->in[0]].mem, a1 = -1, dst;
    const dnnl_memory_desc_t *md = cxr_nn_cpu_md(p, a0);
    if (add) {
        if ((st = value_as(B, op->in[1], md, &a1, where)) != CXR_OK)
            goto fail;
        dnnl_binary_desc_t bd;
        CXR_DNNL(dnnl_binary_desc_init(&bd, dnnl_binary_add, md, md, md), where);
        CXR_DNNL(dnnl_primitive_desc_create(&pd, &bd, attr, p->ctx->engine, NULL), where);
    } else {
        dnnl_eltwise_desc_t ed;
        CXR_DNNL(dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, dnnl_eltwise_relu, md,
                                                0.0f, 0.0f),
                 where);
        CXR_DNNL(dnnl_primitive_desc_create(&pd, &ed, attr, p->ctx->engine, NULL), where);
    }
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    if ((st = fresh_mem(p, md, &dst, err)) != CXR_OK)
        goto fail;
    struct cpu_arg a[3] = {{add ? DNNL_ARG_SRC_0 : DNNL_ARG_SRC, a0, NULL},
                           {DNNL_ARG_DST, dst, NULL},
                           {DNNL_ARG_SRC_1, a1, NULL}};
    st = cxr_nn_cpu_step(p, prim, a, add ? 3 : 2, where, err);
    prim = NULL;
    B->vs[op->out].mem = dst;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* fc: inner product in fp32 on the C x 1 x 1 input; output plain n x O. */
static enum cxr_status plan_fc(struct builder *B, int32_t oi)
{
    const struct cxr_nn_op *op = &B->g->ops[oi];
    struct cpu_plan *p = B->p;
    char *err = B->err;
    const char *where = op->name;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    const struct cxr_nn_value *x = &B->g->values[op->in[0]], *y = &B->g->values[op->out];
    dnnl_dims_t sd = {p->batch, x->c, 1, 1}, wd = {y->c, x->c, 1, 1}, bd = {y->c};
    dnnl_dims_t dd = {p->batch, y->c};
    dnnl_memory_desc_t smd, wmd, bmd, dmd, plain;
    init_md(&smd, 4, sd, dnnl_f32, dnnl_format_tag_any);
    init_md(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any);
    init_md(&bmd, 1, bd, dnnl_f32, dnnl_a);
    init_md(&dmd, 2, dd, dnnl_f32, dnnl_nc);
    dnnl_inner_product_desc_t ipd;
    CXR_DNNL(
        dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, &smd, &wmd, &bmd, &dmd),
        where);
    CXR_DNNL(dnnl_primitive_desc_create(&pd, &ipd, attr, p->ctx->engine, NULL), where);
    cxr_log(CXR_LOG_DEBUG, "nn", "cpu: batch %d %s: %s", (int)p->batch, where, cxr_nn_cpu_impl(pd));
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    int32_t src, dst;
    dnnl_memory_t wmem = NULL, bmem = NULL;
    if ((st = value_as(B, op->in[0], dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), &src,
                       where)) != CXR_OK)
        goto fail;
    init_md(&plain, 4, wd, dnnl_f32, dnnl_oihw); /* [O, C] row-major is O x C x 1 x 1 */
    if ((st = cxr_nn_cpu_weights(p->ctx, &B->g->params[op->param[0]].t, &plain,
                                 dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                                 p->cg->stream, &wmem, err)) != CXR_OK)
        goto fail;
    if ((st = cxr_nn_cpu_weights(p->ctx, &B->g->params[op->param[1]].t, &bmd,
                                 dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1),
                                 p->cg->stream, &bmem, err)) != CXR_OK)
        goto fail;
    if ((st = fresh_mem(p, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &dst, err)) !=
        CXR_OK)
        goto fail;
    struct cpu_arg a[4] = {{DNNL_ARG_SRC, src, NULL},
                           {DNNL_ARG_WEIGHTS, -1, wmem},
                           {DNNL_ARG_BIAS, -1, bmem},
                           {DNNL_ARG_DST, dst, NULL}};
    st = cxr_nn_cpu_step(p, prim, a, 4, where, err);
    prim = NULL;
    B->vs[op->out].mem = dst;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* True when md is dense row-major F32 (what callers pass and receive). */
static bool md_is_plain_f32(const dnnl_memory_desc_t *md)
{
    static const dnnl_format_tag_t tags[] = {dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd};
    if (md->ndims < 1 || md->ndims > 4)
        return false;
    dnnl_memory_desc_t plain;
    if (dnnl_memory_desc_init_by_tag(&plain, md->ndims, md->dims, dnnl_f32, tags[md->ndims - 1]) !=
        dnnl_success)
        return false;
    return dnnl_memory_desc_equal(md, &plain) != 0;
}

static enum cxr_status graph_state(struct cpu_ctx *c, struct cxr_nn_graph *g, char *err)
{
    enum cxr_status st = CXR_OK;
    if (g->extra)
        return CXR_OK;
    struct cpu_graph *cg = calloc(1, sizeof *cg);
    if (!cg)
        return oom(err);
    CXR_DNNL(dnnl_stream_create(&cg->stream, c->engine, dnnl_stream_default_flags), "stream");
    g->extra = cg;
    return CXR_OK;
fail:
    free(cg);
    return st;
}

enum cxr_status cxr_nn_cpu_graph_plan(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                      int32_t batch, void **plan, char *err)
{
    struct cpu_ctx *c = b->context;
    enum cxr_status st;
    *plan = NULL;
    if (!g || !g->fused || batch < 1 || g->n_ops < 1)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cpu: plan needs a fused graph and a "
                          "batch >= 1");
    if ((st = graph_state(c, g, err)) != CXR_OK)
        return st;
    cxr_nn_cpu_apply_threads(c);
    struct cpu_plan *p = calloc(1, sizeof *p);
    struct vstate *vs = calloc((size_t)g->n_values, sizeof *vs);
    if (!p || !vs) {
        free(p);
        free(vs);
        return oom(err);
    }
    p->ctx = c;
    p->cg = g->extra;
    p->batch = batch;
    struct builder B = {.p = p, .g = g, .vs = vs, .err = err};
    for (int32_t v = 0; v < g->n_values; v++)
        vs[v].mem = vs[v].last_reader = -1;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (op->absorbed_by >= 0)
            continue;
        for (int32_t k = 0; k < op->n_in; k++)
            vs[op->in[k]].last_reader = i;
        if (op->sum_in >= 0)
            vs[op->sum_in].last_reader = i;
    }
    /* the caller's input: plain NCHW F32 */
    const struct cxr_nn_value *in = &g->values[g->input];
    dnnl_dims_t id = {batch, in->c, in->h, in->w};
    dnnl_memory_desc_t imd;
    init_md(&imd, 4, id, dnnl_f32, dnnl_nchw);
    int32_t ib = cxr_nn_cpu_new_buf(p, dnnl_memory_desc_get_size(&imd), BUF_INPUT);
    if (ib < 0) {
        st = oom(err);
        goto fail;
    }
    if ((st = cxr_nn_cpu_new_mem(p, &imd, ib, &vs[g->input].mem, err)) != CXR_OK)
        goto fail;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (op->absorbed_by >= 0)
            continue;
        for (int32_t k = 0; k < op->n_in; k++)
            if (vs[op->in[k]].mem < 0) {
                st = cxr_seterr(err, CXR_ERR_INTERNAL,
                                "cpu: '%s' reads a value not "
                                "computed yet",
                                op->name);
                goto fail;
            }
        switch (op->kind) {
        case CXR_NN_OP_CONV: st = plan_conv(&B, i); break;
        case CXR_NN_OP_MAXPOOL:
        case CXR_NN_OP_GAP: st = plan_pool(&B, i); break;
        case CXR_NN_OP_RELU:
        case CXR_NN_OP_ADD: st = plan_elementwise(&B, i); break;
        case CXR_NN_OP_FC: st = plan_fc(&B, i); break;
        default:
            st = cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                            "cpu: %s op '%s' is not supported "
                            "for inference (batch norm must follow a convolution)",
                            cxr_nn_op_kind_name(op->kind), op->name);
        }
        if (st != CXR_OK)
            goto fail;
    }
    /* the caller's output: write it directly when the layout is already plain F32 */
    int32_t om = vs[g->output].mem;
    struct cxr_nn_buf *ob = &p->bufs[p->mems[om].buf];
    if (md_is_plain_f32(cxr_nn_cpu_md(p, om)) && ob->place == BUF_ARENA) {
        ob->place = BUF_OUTPUT;
    } else {
        const struct cxr_nn_value *y = &g->values[g->output];
        dnnl_dims_t od = {batch, y->c, y->h, y->w};
        dnnl_memory_desc_t omd;
        init_md(&omd, 4, od, dnnl_f32, dnnl_nchw);
        int32_t obi = cxr_nn_cpu_new_buf(p, dnnl_memory_desc_get_size(&omd), BUF_OUTPUT), m;
        if (obi < 0) {
            st = oom(err);
            goto fail;
        }
        if ((st = cxr_nn_cpu_new_mem(p, &omd, obi, &m, err)) != CXR_OK ||
            (st = add_reorder(p, om, m, "output", err)) != CXR_OK)
            goto fail;
    }
    cxr_nn_cpu_place_buffers(p);
    free(vs);
    *plan = p;
    return CXR_OK;
fail:
    free(vs);
    cxr_nn_cpu_plan_free(b, p);
    return st;
}
