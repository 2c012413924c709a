/* backend_cpu_run.c — the CPU backend's plans at run time: where the
 * activations sit in the graph's arena, binding memory to it, executing the
 * steps, and freeing plans and graph state. */
#include <stdlib.h>
#include <string.h>

#include "backend_cpu.h"

/* Places arena buffers: largest first, each at the lowest offset that does
 * not overlap a placed buffer whose live range intersects its own. */
void cxr_nn_cpu_place_buffers(struct cpu_plan *p)
{
    int32_t n = p->n_bufs;
    int32_t *order = malloc((size_t)n * sizeof *order);
    bool *placed = calloc((size_t)n, sizeof *placed);
    size_t top = 0;
    if (!order || !placed) { /* no memory to be clever: lay them end to end */
        for (int32_t i = 0; i < n; i++) {
            p->bufs[i].off = top;
            top += (p->bufs[i].size + CPU_ALIGN - 1) & ~(size_t)(CPU_ALIGN - 1);
        }
        goto done;
    }
    for (int32_t i = 0; i < n; i++)
        order[i] = i;
    for (int32_t i = 1; i < n; i++) { /* insertion sort by size, descending */
        int32_t k = order[i], j = i - 1;
        while (j >= 0 && p->bufs[order[j]].size < p->bufs[k].size) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = k;
    }
    for (int32_t oi = 0; oi < n; oi++) {
        struct cpu_buf *b = &p->bufs[order[oi]];
        if (b->place != BUF_ARENA || b->first < 0)
            continue;
        size_t size = (b->size + CPU_ALIGN - 1) & ~(size_t)(CPU_ALIGN - 1), off = 0;
        for (bool moved = true; moved;) {
            moved = false;
            for (int32_t j = 0; j < n; j++) {
                const struct cpu_buf *o = &p->bufs[j];
                if (!placed[j] || o->last < b->first || o->first > b->last)
                    continue;
                size_t osz = (o->size + CPU_ALIGN - 1) & ~(size_t)(CPU_ALIGN - 1);
                if (off < o->off + osz && o->off < off + size) {
                    off = o->off + osz;
                    moved = true;
                }
            }
        }
        b->off = off;
        placed[order[oi]] = true;
        if (off + size > top)
            top = off + size;
    }
done:
    free(order);
    free(placed);
    p->scratch_off = top;
    p->arena_need =
        top + ((p->scratch_size + CPU_ALIGN - 1) & ~(size_t)(CPU_ALIGN - 1)) + CPU_ALIGN;
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
