/* backend_cpu_train_util.c — helpers of the CPU backend's training
 * planner (backend_cpu_train.h): fresh and raw memories, reorders, values in
 * a wanted layout, parameter weights in a kernel's layout, the convolution
 * algorithm. Buffers, memories, steps and attributes are the inference
 * planner's (backend_cpu_plan.c, declared in backend_cpu.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cpu_train.h"

enum cxr_status cxr_nn_ct_oom(char *err)
{
    return cxr_seterr(err, CXR_ERR_NOMEM, "cpu: out of memory while planning training");
}

enum cxr_status cxr_nn_ct_fresh(struct tbuilder *B, const dnnl_memory_desc_t *md, int32_t *out)
{
    int32_t b = cxr_nn_cpu_new_buf(B->p, dnnl_memory_desc_get_size(md), BUF_ARENA);
    if (b < 0)
        return cxr_nn_ct_oom(B->err);
    return cxr_nn_cpu_new_mem(B->p, md, b, out, B->err);
}

enum cxr_status cxr_nn_ct_raw(struct tbuilder *B, const dnnl_memory_desc_t *md, void *handle,
                              dnnl_memory_t *out, const char *where)
{
    struct cpu_train_plan *T = B->T;
    char *err = B->err;
    enum cxr_status st = CXR_OK;
    *out = NULL;
    if (!cxr_nn_grow((void **)&T->raw, T->n_raw, &T->cap_raw, sizeof *T->raw))
        return cxr_nn_ct_oom(err);
    CXR_DNNL(dnnl_memory_create(out, md, B->p->ctx->engine, handle), where);
    T->raw[T->n_raw++] = *out;
fail:
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
    if ((st = cxr_nn_cpu_attr(&attr, false, false, where, err)) != CXR_OK)
        return st;
    if (dst >= 0)
        dmd = cxr_nn_cpu_md(p, dst);
    else
        CXR_DNNL(dnnl_memory_get_memory_desc(raw, &dmd), where);
    CXR_DNNL(dnnl_reorder_primitive_desc_create(&pd, cxr_nn_cpu_md(p, src), p->ctx->engine, dmd,
                                                p->ctx->engine, attr),
             where);
    CXR_DNNL(dnnl_primitive_create(&prim, pd), where);
    struct cpu_arg a[2] = {{DNNL_ARG_FROM, src, NULL}, {DNNL_ARG_TO, dst, raw}};
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
