/* backend_cpu_train_util.c — helpers of the CPU backend's training
 * planner (backend_cpu_train.h): buffers and memories in the plan, steps
 * with their scratchpad, attributes, reorders, values in a wanted layout,
 * parameter weights in a kernel's layout, the convolution algorithm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cpu_train.h"

bool cxr_nn_ct_grow(void **arr, int32_t n, int32_t *cap, size_t size)
{
    if (n < *cap)
        return true;
    int32_t ncap = *cap ? *cap * 2 : 64;
    void *q = realloc(*arr, (size_t)ncap * size);
    if (!q)
        return false;
    *arr = q;
    *cap = ncap;
    return true;
}

enum cxr_status cxr_nn_ct_oom(char *err)
{
    return cxr_seterr(err, CXR_ERR_NOMEM, "cpu: out of memory while planning training");
}

const char *cxr_nn_ct_impl(const_dnnl_primitive_desc_t pd)
{
    const char *s = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success || !s)
        return "?";
    return s;
}

bool cxr_nn_ct_is_ref(const_dnnl_primitive_desc_t pd)
{
    return strncmp(cxr_nn_ct_impl(pd), "ref", 3) == 0;
}

const dnnl_memory_desc_t *cxr_nn_ct_md(const struct cpu_plan *p, int32_t mem)
{
    const dnnl_memory_desc_t *md = NULL;
    dnnl_memory_get_memory_desc(p->mems[mem].m, &md);
    return md;
}

int32_t cxr_nn_ct_new_buf(struct cpu_plan *p, size_t size, enum buf_place place)
{
    if (!cxr_nn_ct_grow((void **)&p->bufs, p->n_bufs, &p->cap_bufs, sizeof *p->bufs))
        return -1;
    p->bufs[p->n_bufs] = (struct cpu_buf){.size = size, .first = -1, .last = -1, .place = place};
    return p->n_bufs++;
}

enum cxr_status cxr_nn_ct_new_mem(struct cpu_plan *p, const dnnl_memory_desc_t *md, int32_t buf,
                                  int32_t *out, char *err)
{
    enum cxr_status st = CXR_OK;
    *out = -1;
    if (!cxr_nn_ct_grow((void **)&p->mems, p->n_mems, &p->cap_mems, sizeof *p->mems))
        return cxr_nn_ct_oom(err);
    dnnl_memory_t m = NULL;
    CXR_DNNL(dnnl_memory_create(&m, md, p->ctx->engine, DNNL_MEMORY_NONE), "training memory");
    p->mems[p->n_mems] = (struct cpu_mem){.m = m, .buf = buf};
    if (buf >= 0 && p->bufs[buf].size < dnnl_memory_desc_get_size(md))
        p->bufs[buf].size = dnnl_memory_desc_get_size(md);
    *out = p->n_mems++;
fail:
    return st;
}

enum cxr_status cxr_nn_ct_fresh(struct tbuilder *B, const dnnl_memory_desc_t *md, int32_t *out)
{
    int32_t b = cxr_nn_ct_new_buf(B->p, dnnl_memory_desc_get_size(md), BUF_ARENA);
    if (b < 0)
        return cxr_nn_ct_oom(B->err);
    return cxr_nn_ct_new_mem(B->p, md, b, out, B->err);
}

enum cxr_status cxr_nn_ct_raw(struct tbuilder *B, const dnnl_memory_desc_t *md, void *handle,
                              dnnl_memory_t *out, const char *where)
{
    struct cpu_train_plan *T = B->T;
    char *err = B->err;
    enum cxr_status st = CXR_OK;
    *out = NULL;
    if (!cxr_nn_ct_grow((void **)&T->raw, T->n_raw, &T->cap_raw, sizeof *T->raw))
        return cxr_nn_ct_oom(err);
    CXR_DNNL(dnnl_memory_create(out, md, B->p->ctx->engine, handle), where);
    T->raw[T->n_raw++] = *out;
fail:
    return st;
}

enum cxr_status cxr_nn_ct_step(struct tbuilder *B, dnnl_primitive_t prim, const struct targ *args,
                               int32_t n, const char *where)
{
    struct cpu_plan *p = B->p;
    char *err = B->err;
    enum cxr_status st = CXR_OK;
    const_dnnl_primitive_desc_t pd = NULL;
    if (n + 1 > CPU_MAX_ARGS ||
        !cxr_nn_ct_grow((void **)&p->steps, p->n_steps, &p->cap_steps, sizeof *p->steps)) {
        dnnl_primitive_destroy(prim);
        return cxr_nn_ct_oom(err);
    }
    struct cpu_step *s = &p->steps[p->n_steps];
    memset(s, 0, sizeof *s);
    s->prim = prim;
    int32_t idx = p->n_steps++;
    for (int32_t i = 0; i < n; i++) {
        dnnl_memory_t m = args[i].raw;
        if (args[i].mem >= 0) {
            struct cpu_mem *cm = &p->mems[args[i].mem];
            m = cm->m;
            struct cpu_buf *b = &p->bufs[cm->buf];
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
        if (!cxr_nn_ct_grow((void **)&p->mems, p->n_mems, &p->cap_mems, sizeof *p->mems))
            return cxr_nn_ct_oom(err);
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

enum cxr_status cxr_nn_ct_attr(dnnl_primitive_attr_t *attr, bool relu, const char *where, char *err)
{
    enum cxr_status st = CXR_OK;
    dnnl_post_ops_t po = NULL;
    *attr = NULL;
    CXR_DNNL(dnnl_primitive_attr_create(attr), where);
    CXR_DNNL(dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user), where);
    if (relu) {
        CXR_DNNL(dnnl_post_ops_create(&po), where);
        CXR_DNNL(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f), where);
        CXR_DNNL(dnnl_primitive_attr_set_post_ops(*attr, po), where);
        dnnl_post_ops_destroy(po);
    }
    return CXR_OK;
fail:
    if (po)
        dnnl_post_ops_destroy(po);
    if (*attr)
        dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
    return st;
}

enum cxr_status cxr_nn_ct_reorder(struct tbuilder *B, int32_t src, int32_t dst, dnnl_memory_t raw,
                                  const char *where)
{
    struct cpu_plan *p = B->p;
    char *err = B->err;
    enum cxr_status st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    const dnnl_memory_desc_t *dmd = NULL;
    if ((st = cxr_nn_ct_attr(&attr, false, where, err)) != CXR_OK)
        return st;
    if (dst >= 0)
        dmd = cxr_nn_ct_md(p, dst);
    else
        CXR_DNNL(dnnl_memory_get_memory_desc(raw, &dmd), where);
    CXR_DNNL(dnnl_reorder_primitive_desc_create(&pd, cxr_nn_ct_md(p, src), p->ctx->engine, dmd,
                                                p->ctx->engine, attr),
             where);
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    struct targ a[2] = {{DNNL_ARG_FROM, src, NULL}, {DNNL_ARG_TO, dst, raw}};
    st = cxr_nn_ct_step(B, prim, a, 2, where);
    prim = NULL;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

enum cxr_status cxr_nn_ct_value_as(struct tbuilder *B, int32_t v, const dnnl_memory_desc_t *md,
                                   int32_t *out, const char *where)
{
    struct tv *s = &B->vs[v];
    if (s->mem < 0)
        return cxr_seterr(B->err, CXR_ERR_INTERNAL,
                          "cpu: %s reads a value that was "
                          "not materialised",
                          where);
    if (dnnl_memory_desc_equal(cxr_nn_ct_md(B->p, s->mem), md)) {
        *out = s->mem;
        return CXR_OK;
    }
    for (int32_t i = 0; i < s->n_conv; i++)
        if (dnnl_memory_desc_equal(cxr_nn_ct_md(B->p, s->conv[i]), md)) {
            *out = s->conv[i];
            return CXR_OK;
        }
    int32_t m;
    enum cxr_status st = cxr_nn_ct_fresh(B, md, &m);
    if (st == CXR_OK)
        st = cxr_nn_ct_reorder(B, s->mem, m, NULL, where);
    if (st != CXR_OK)
        return st;
    if (s->n_conv < TV_MAX_CONV)
        s->conv[s->n_conv++] = m;
    *out = m;
    return CXR_OK;
}

void cxr_nn_ct_plain_md(const struct cxr_nn_tensor *t, dnnl_memory_desc_t *md)
{
    if (t->ndim == 1) {
        dnnl_dims_t d = {t->shape[0]};
        dnnl_memory_desc_init_by_tag(md, 1, d, dnnl_f32, dnnl_a);
    } else {
        dnnl_dims_t d = {t->shape[0], t->shape[1], t->ndim == 4 ? t->shape[2] : 1,
                         t->ndim == 4 ? t->shape[3] : 1};
        dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, dnnl_oihw);
    }
}

enum cxr_status cxr_nn_ct_weights(struct tbuilder *B, int32_t param, const dnnl_memory_desc_t *want,
                                  dnnl_memory_t *out, const char *where)
{
    struct cxr_nn_tensor *t = &B->g->params[param].t;
    dnnl_memory_desc_t plain;
    cxr_nn_ct_plain_md(t, &plain);
    (void)where;
    return cxr_nn_cpu_weights(B->p->ctx, t, &plain, want, B->p->cg->stream, out, B->err);
}

dnnl_alg_kind_t cxr_nn_ct_conv_alg(const struct tbuilder *B, const struct cxr_nn_op *op,
                                   dnnl_data_type_t dt)
{
    switch (B->T->conv_algo) {
    case CXR_NN_CONV_DIRECT: return dnnl_convolution_direct;
    case CXR_NN_CONV_WINOGRAD:
        return op->kernel_h == 3 && op->stride == 1 && dt == dnnl_f32 ? dnnl_convolution_winograd
                                                                      : dnnl_convolution_direct;
    default: return dnnl_convolution_auto;
    }
}
