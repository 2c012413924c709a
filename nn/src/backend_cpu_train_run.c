/* backend_cpu_train_run.c — the CPU backend's training at run time: the
 * forward and backward halves of a training plan in the graph's arena, the
 * batch-norm running-statistics update, gradient sums of squares and the
 * optimizer update on the parameters' F32 storage (optim.c's arithmetic). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cpu_train.h"
#include "train_internal.h"

/* Grows the graph's arena to the plan's need and points the plan's arena
 * memories at it (again after another plan moved it). */
static enum cxr_status bind(struct cpu_train_plan *T, char *err)
{
    struct cpu_plan *p = &T->p;
    struct cpu_graph *cg = p->cg;
    enum cxr_status st = CXR_OK;
    if (cg->size < p->arena_need) {
        free(cg->arena);
        cg->size = 0;
        cg->arena = malloc(p->arena_need);
        if (!cg->arena)
            return cxr_seterr(err, CXR_ERR_NOMEM,
                              "cpu: cannot allocate %zu MiB for "
                              "training activations (use a smaller batch or input)",
                              p->arena_need >> 20);
        cg->size = p->arena_need;
        cg->generation++;
    }
    if (p->bound_generation == cg->generation && p->bound_generation != 0)
        return CXR_OK;
    char *base = (char *)(((uintptr_t)cg->arena + CPU_ALIGN - 1) & ~(uintptr_t)(CPU_ALIGN - 1));
    for (int32_t i = 0; i < p->n_mems; i++) {
        const struct cpu_mem *m = &p->mems[i];
        if (m->buf >= 0 && p->bufs[m->buf].place != BUF_ARENA)
            continue;
        void *h = m->buf < 0 ? base + p->scratch_off : base + p->bufs[m->buf].off;
        CXR_DNNL(dnnl_memory_set_data_handle(m->m, h), "training arena");
    }
    p->bound_generation = cg->generation;
fail:
    return st;
}

static enum cxr_status run(struct cpu_train_plan *T, int32_t from, int32_t to, const char *what,
                           char *err)
{
    struct cpu_plan *p = &T->p;
    enum cxr_status st = CXR_OK;
    for (int32_t i = from; i < to; i++) {
        const struct cpu_step *s = &p->steps[i];
        CXR_DNNL(dnnl_primitive_execute(s->prim, p->cg->stream, s->n_args, s->args), what);
    }
    CXR_DNNL(dnnl_stream_wait(p->cg->stream), what);
fail:
    return st;
}

/* running = (1 - m) running + m batch, variance unbiased (PyTorch). */
static enum cxr_status update_running(struct cpu_train_plan *T, char *err)
{
    struct cpu_plan *p = &T->p;
    enum cxr_status st = CXR_OK;
    const double m = T->momentum;
    for (int32_t i = 0; i < T->n_bn; i++) {
        const struct bn_stat *b = &T->bn[i];
        void *hm = NULL, *hv = NULL;
        CXR_DNNL(dnnl_memory_get_data_handle(p->mems[b->mean].m, &hm), "running statistics");
        CXR_DNNL(dnnl_memory_get_data_handle(p->mems[b->var].m, &hv), "running statistics");
        struct cpu_tensor *rm = T->g->params[b->rm].t.extra, *rv = T->g->params[b->rv].t.extra;
        if (!rm || !rv)
            return cxr_seterr(err, CXR_ERR_INTERNAL,
                              "cpu: running statistics of '%s' "
                              "have no storage",
                              T->g->params[b->rm].t.name);
        const float *bm = hm, *bv = hv;
        size_t c = rm->nbytes / sizeof(float);
        double unbias = b->count / (b->count - 1.0);
        for (size_t k = 0; k < c; k++) {
            rm->data[k] = (float)((1.0 - m) * rm->data[k] + m * bm[k]);
            rv->data[k] = (float)((1.0 - m) * rv->data[k] + m * bv[k] * unbias);
        }
    }
fail:
    return st;
}

enum cxr_status cxr_nn_cpu_train_forward(struct cxr_nn_backend *b, void *plan, const float *input,
                                         float *logits, char *err)
{
    struct cpu_train_plan *T = plan;
    enum cxr_status st;
    if (!T || !input || !logits)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cpu: train_forward without plan or "
                          "buffers");
    cxr_nn_cpu_apply_threads(T->p.ctx);
    if ((st = bind(T, err)) != CXR_OK)
        return st;
    memcpy(T->io, input, T->in_floats * sizeof(float));
    if ((st = run(T, 0, T->n_fwd, "training forward", err)) != CXR_OK)
        return st;
    if (!T->frozen && (st = update_running(T, err)) != CXR_OK)
        return st;
    memcpy(logits, T->io + ((T->in_floats + 15) & ~(size_t)15), T->out_floats * sizeof(float));
    return CXR_OK;
}

enum cxr_status cxr_nn_cpu_train_backward(struct cxr_nn_backend *b, void *plan,
                                          const float *dlogits, char *err)
{
    struct cpu_train_plan *T = plan;
    enum cxr_status st;
    if (!T || !dlogits)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cpu: train_backward without plan or "
                          "gradient");
    cxr_nn_cpu_apply_threads(T->p.ctx);
    if ((st = bind(T, err)) != CXR_OK)
        return st;
    size_t off = ((T->in_floats + 15) & ~(size_t)15) + ((T->out_floats + 15) & ~(size_t)15);
    memcpy(T->io + off, dlogits, T->out_floats * sizeof(float));
    return run(T, T->n_fwd, T->p.n_steps, "training backward", err);
}

enum cxr_status cxr_nn_cpu_tensor_sumsq(struct cxr_nn_backend *b, const struct cxr_nn_tensor *t,
                                        double *out, char *err)
{
    const struct cpu_tensor *ct = t ? t->extra : NULL;
    if (!ct || !out)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "cpu: tensor_sumsq without storage");
    size_t n = ct->nbytes / sizeof(float);
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)ct->data[i] * ct->data[i];
        s1 += (double)ct->data[i + 1] * ct->data[i + 1];
        s2 += (double)ct->data[i + 2] * ct->data[i + 2];
        s3 += (double)ct->data[i + 3] * ct->data[i + 3];
    }
    for (; i < n; i++)
        s0 += (double)ct->data[i] * ct->data[i];
    *out = (s0 + s1) + (s2 + s3);
    return CXR_OK;
}

enum cxr_status cxr_nn_cpu_optim_step(struct cxr_nn_backend *b, struct cxr_nn_tensor *param,
                                      const struct cxr_nn_tensor *grad,
                                      struct cxr_nn_tensor *state0, struct cxr_nn_tensor *state1,
                                      const struct cxr_nn_optim_step *h, char *err)
{
    struct cpu_tensor *p = param ? param->extra : NULL, *s0 = state0 ? state0->extra : NULL;
    const struct cpu_tensor *g = grad ? grad->extra : NULL;
    struct cpu_tensor *s1 = state1 ? state1->extra : NULL;
    if (!p || !g || !s0 || !h || (h->kind == CXR_NN_OPTIM_ADAMW && !s1) || g->nbytes != p->nbytes ||
        s0->nbytes != p->nbytes || (s1 && s1->nbytes != p->nbytes))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cpu: optim_step on '%s': missing or "
                          "mismatched tensors",
                          param ? param->name : "(null)");
    cxr_nn_optim_apply(h, p->data, g->data, s0->data, s1 ? s1->data : NULL,
                       p->nbytes / sizeof(float));
    /* refresh the converted copies plans read (bf16, blocked layouts) */
    return b->iface->tensor_set(b, param, p->data, 0, p->nbytes, err);
}
