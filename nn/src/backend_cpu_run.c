/* backend_cpu_run.c — the CPU backend's plans at run time: where the
 * activations sit in the graph's arena, binding memory to it, executing the
 * steps, and freeing plans and graph state. */
#include <stdlib.h>
#include <string.h>

#include "backend_cpu.h"

void cxr_nn_cpu_place_buffers(struct cpu_plan *p)
{
    size_t top = cxr_nn_arena_place(p->bufs, p->n_bufs, CPU_ALIGN, true);
    p->scratch_off = top;
    p->arena_need = top + cxr_nn_arena_round(p->scratch_size, CPU_ALIGN) + CPU_ALIGN;
}

void cxr_nn_cpu_plan_free(struct cxr_nn_backend *b, void *plan)
{
    struct cpu_plan *p = plan;
    if (!p)
        return;
    for (int32_t i = 0; i < p->n_steps; i++)
        dnnl_primitive_destroy(p->steps[i].prim);
    for (int32_t i = 0; i < p->n_mems; i++)
        dnnl_memory_destroy(p->mems[i].m);
    free(p->steps);
    free(p->mems);
    free(p->bufs);
    free(p);
}

void cxr_nn_cpu_graph_release(struct cxr_nn_backend *b, struct cxr_nn_graph *g)
{
    struct cpu_graph *cg = g ? g->extra : NULL;
    if (!cg)
        return;
    if (cg->stream)
        dnnl_stream_destroy(cg->stream);
    free(cg->arena);
    free(cg);
    g->extra = NULL;
}

/* Points every arena memory at its place in the (possibly moved) arena. */
static enum cxr_status bind_arena(struct cpu_plan *p, char *err)
{
    enum cxr_status st = CXR_OK;
    char *base = (char *)(((uintptr_t)p->cg->arena + CPU_ALIGN - 1) & ~(uintptr_t)(CPU_ALIGN - 1));
    for (int32_t i = 0; i < p->n_mems; i++) {
        const struct cpu_mem *m = &p->mems[i];
        if (m->buf >= 0 && p->bufs[m->buf].place != BUF_ARENA)
            continue;
        void *h = m->buf < 0 ? base + p->scratch_off : base + p->bufs[m->buf].off;
        CXR_DNNL(dnnl_memory_set_data_handle(m->m, h), "arena");
    }
    p->bound_generation = p->cg->generation;
fail:
    return st;
}

enum cxr_status cxr_nn_cpu_graph_compute(struct cxr_nn_backend *b, void *plan, const float *input,
                                         float *output, char *err)
{
    struct cpu_plan *p = plan;
    struct cpu_graph *cg = p ? p->cg : NULL;
    enum cxr_status st = CXR_OK;
    if (!p || !input || !output)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "cpu: compute without plan or buffers");
    cxr_nn_cpu_apply_threads(p->ctx);
    if (cg->size < p->arena_need) {
        free(cg->arena);
        cg->size = 0;
        cg->arena = malloc(p->arena_need);
        if (!cg->arena)
            return cxr_seterr(err, CXR_ERR_NOMEM,
                              "cpu: cannot allocate %zu bytes of "
                              "activations",
                              p->arena_need);
        cg->size = p->arena_need;
        cg->generation++;
    }
    if (p->bound_generation != cg->generation && (st = bind_arena(p, err)) != CXR_OK)
        return st;
    for (int32_t i = 0; i < p->n_mems; i++) {
        const struct cpu_mem *m = &p->mems[i];
        if (m->buf < 0 || p->bufs[m->buf].place == BUF_ARENA)
            continue;
        void *h = p->bufs[m->buf].place == BUF_INPUT ? (void *)(uintptr_t)input : (void *)output;
        CXR_DNNL(dnnl_memory_set_data_handle(m->m, h), "input/output");
    }
    for (int32_t i = 0; i < p->n_steps; i++) {
        const struct cpu_step *s = &p->steps[i];
        CXR_DNNL(dnnl_primitive_execute(s->prim, cg->stream, s->n_args, s->args), "forward");
    }
    CXR_DNNL(dnnl_stream_wait(cg->stream), "forward");
fail:
    return st;
}
