/* backend_cpu.h (internal to the CPU backend) — what backend_cpu.c (the
 * backend, parameter storage, threads), backend_cpu_plan.c (compiling a
 * graph for a batch size) and backend_cpu_run.c (arena, execution) share.
 * Only these files include oneDNN.
 */
#ifndef CXR_NN_BACKEND_CPU_H
#define CXR_NN_BACKEND_CPU_H

#include <stdbool.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "arena.h"
#include "backend.h"

/* The backend's context (cxr_nn_backend.context). */
struct cpu_ctx {
    dnnl_engine_t engine;
    dnnl_cpu_isa_t isa;
    bool bf16; /* activations and weights in bf16 where a fast kernel exists */
    int32_t threads;
    void (*omp_set_num_threads)(int); /* NULL when the runtime is not OpenMP */
};

/* A weight converted to a primitive's preferred layout/type, kept with the
 * parameter so that plans for other batch sizes reuse it. */
struct cpu_wcache {
    dnnl_memory_desc_t md;    /* the layout a primitive wants */
    dnnl_memory_desc_t plain; /* the layout it was converted from */
    dnnl_memory_t mem;
    bool alias; /* mem is the plain data itself (no copy) */
};

/* cxr_nn_tensor.extra of a parameter held by the CPU backend. */
struct cpu_tensor {
    float *data; /* row-major F32, PyTorch order, 64-byte aligned */
    size_t nbytes;
    struct cpu_wcache *cache;
    int32_t n_cache, cap_cache;
};

/* Turns a failed oneDNN call into CXR_ERR_NN_BACKEND with oneDNN's text:
 * "oneDNN: <where>: <function>: <status>". */
enum cxr_status cxr_nn_cpu_fail(char *err, dnnl_status_t s, const char *where, const char *call);

/* Every oneDNN call goes through this: on failure it sets `st` (a local
 * enum cxr_status) and jumps to the function's `fail` label. */
#define CXR_DNNL(call, where)                                   \
    do {                                                        \
        dnnl_status_t dnnl_s_ = (call);                         \
        if (dnnl_s_ != dnnl_success) {                          \
            st = cxr_nn_cpu_fail(err, dnnl_s_, (where), #call); \
            goto fail;                                          \
        }                                                       \
    } while (0)

/* Applies the backend's thread count to the calling thread (OpenMP's
 * per-thread setting); a no-op for other runtimes. */
void cxr_nn_cpu_apply_threads(const struct cpu_ctx *c);

/* The parameter's data as memory of layout `want`, converting (once, then
 * cached) from its plain layout `plain` (same dims, F32). The memory is
 * owned by the parameter's storage and stays valid (and current: tensor_set
 * converts again into it) until buffer_free, so plans may keep it. */
enum cxr_status cxr_nn_cpu_weights(struct cpu_ctx *c, struct cxr_nn_tensor *t,
                                   const dnnl_memory_desc_t *plain, const dnnl_memory_desc_t *want,
                                   dnnl_stream_t stream, dnnl_memory_t *out, char *err);

/* ---- plans (backend_cpu_plan.c builds them, backend_cpu_run.c runs them) */

#define CPU_MAX_ARGS 12 /* batch norm backward takes 9 + scratchpad */
#define CPU_ALIGN    64

enum buf_place {
    BUF_ARENA = 0,
    BUF_INPUT = 1,
    BUF_OUTPUT = 2,
    BUF_DLOGITS = 3 /* training: the caller's dLoss/dlogits */
};

/* A plan's buffers are struct cxr_nn_buf (arena.h), `place` an enum buf_place. */

struct cpu_mem {
    dnnl_memory_t m;
    int32_t buf; /* -1: scratchpad */
};

struct cpu_step {
    dnnl_primitive_t prim;
    int32_t n_args;
    dnnl_exec_arg_t args[CPU_MAX_ARGS];
};

/* Per-graph state: the activation arena and the stream. */
struct cpu_graph {
    void *arena;
    size_t size;
    uint64_t generation; /* bumps when the arena moves */
    dnnl_stream_t stream;
};

struct cpu_plan {
    struct cpu_ctx *ctx;
    struct cpu_graph *cg;
    int32_t batch;
    struct cpu_step *steps;
    int32_t n_steps, cap_steps;
    struct cxr_nn_buf *bufs;
    int32_t n_bufs, cap_bufs;
    struct cpu_mem *mems;
    int32_t n_mems, cap_mems;
    size_t scratch_size, scratch_off, arena_need;
    uint64_t bound_generation;
};

/* Plan building, shared by inference (backend_cpu_plan.c) and training
 * (backend_cpu_train*.c). */

/* A new arena (or other) buffer of `size` bytes; -1 when out of memory. */
int32_t cxr_nn_cpu_new_buf(struct cpu_plan *p, size_t size, enum buf_place place);

/* A memory object of `md` on buffer `buf` (-1: none; the handle is bound at
 * compute), growing the buffer to fit; *out is its index. */
enum cxr_status cxr_nn_cpu_new_mem(struct cpu_plan *p, const dnnl_memory_desc_t *md, int32_t buf,
                                   int32_t *out, char *err);

/* The memory descriptor of plan memory `mem`. */
const dnnl_memory_desc_t *cxr_nn_cpu_md(const struct cpu_plan *p, int32_t mem);

/* oneDNN's name of the implementation behind `pd` ("?" when unknown), and
 * whether it is the slow reference one. */
const char *cxr_nn_cpu_impl(const_dnnl_primitive_desc_t pd);
bool cxr_nn_cpu_is_ref(const_dnnl_primitive_desc_t pd);

/* One argument of a step: an activation memory index (mem >= 0) or, with
 * mem == -1, a raw memory. */
struct cpu_arg {
    int kind;
    int32_t mem;
    dnnl_memory_t raw;
};

/* Appends a step running `prim` (taken over, destroyed on failure) with its
 * arguments and its scratchpad; extends the live range of every arena
 * buffer it touches. */
enum cxr_status cxr_nn_cpu_step(struct cpu_plan *p, dnnl_primitive_t prim,
                                const struct cpu_arg *args, int32_t n, const char *where,
                                char *err);

/* A primitive attribute with a user scratchpad and the post-ops asked for
 * (sum, then ReLU). On failure *attr is NULL. */
enum cxr_status cxr_nn_cpu_attr(dnnl_primitive_attr_t *attr, bool sum, bool relu, const char *where,
                                char *err);

/* Gives every arena buffer of p an offset (buffers whose live ranges
 * overlap never share bytes) and sets p->arena_need. */
void cxr_nn_cpu_place_buffers(struct cpu_plan *p);

/* The graph entries of the function table. */
enum cxr_status cxr_nn_cpu_graph_plan(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                      int32_t batch, void **plan, char *err);
void cxr_nn_cpu_plan_free(struct cxr_nn_backend *b, void *plan);
void cxr_nn_cpu_graph_release(struct cxr_nn_backend *b, struct cxr_nn_graph *g);
enum cxr_status cxr_nn_cpu_graph_compute(struct cxr_nn_backend *b, void *plan, const float *input,
                                         float *output, char *err);

/* The training entries (backend_cpu_train*.c; contracts in backend.h). */
enum cxr_status cxr_nn_cpu_train_plan(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                      const struct cxr_nn_train_plan_options *opt, void **plan,
                                      char *err);
void cxr_nn_cpu_train_plan_free(struct cxr_nn_backend *b, void *plan);
enum cxr_status cxr_nn_cpu_train_forward(struct cxr_nn_backend *b, void *plan, const float *input,
                                         float *logits, char *err);
enum cxr_status cxr_nn_cpu_train_backward(struct cxr_nn_backend *b, void *plan,
                                          const float *dlogits, char *err);
enum cxr_status cxr_nn_cpu_tensor_sumsq(struct cxr_nn_backend *b, const struct cxr_nn_tensor *t,
                                        double *out, char *err);
enum cxr_status cxr_nn_cpu_optim_step(struct cxr_nn_backend *b, struct cxr_nn_tensor *param,
                                      const struct cxr_nn_tensor *grad,
                                      struct cxr_nn_tensor *state0, struct cxr_nn_tensor *state1,
                                      const struct cxr_nn_optim_step *h, char *err);

#endif
