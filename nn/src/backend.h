/* backend.h (internal to nn) — the compute backend interface.
 *
 * Shaped like ggml's backend: a table of function pointers that a backend
 * fills (backend_cpu.c: oneDNN; later backend_cuda.c: cuDNN), plus a small
 * common struct. Core code (graph.c, net.c) calls only through the table and
 * never looks at backend state: a backend keeps its per-tensor state in
 * `cxr_nn_tensor.extra`, its per-graph state (memory shared by the plans of
 * one graph) in `cxr_nn_graph.extra`, and its per-batch-size compiled form in
 * an opaque plan.
 *
 * The life of a net on a backend:
 *   graph built and fused (graph.h) -> bound to host data
 *   for each parameter read by a live op: buffer_alloc, tensor_set
 *   graph unbound (host copies dropped)
 *   graph_plan(batch) per batch size, cached by the caller; graph_compute
 *   plan_free for each plan, graph_release, buffer_free for each parameter
 *
 * Training (later) adds ops and entries (backward plans, parameter update);
 * the table grows at its end, existing entries keep their meaning.
 *
 * Errors: every entry that can fail returns enum cxr_status and writes the
 * vendor's text to `err` (CXR_NN_ERRLEN bytes, may be NULL). No entry
 * aborts or exits. Threads: a backend may be shared by several nets; one
 * graph/plan is used by one thread at a time.
 */
#ifndef CXR_NN_BACKEND_H
#define CXR_NN_BACKEND_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/nn.h"
#include "graph.h"

struct cxr_nn_backend;

struct cxr_nn_backend_i {
    /* "cpu", "cuda". */
    const char *(*get_name)(const struct cxr_nn_backend *b);
    /* Frees the backend's context (not the struct: cxr_nn_backend_close does). */
    void (*free)(struct cxr_nn_backend *b);

    /* Backend storage for a parameter tensor described by t (F32, shape):
     * sets t->extra. buffer_free releases it and clears t->extra (NULL: no-op). */
    enum cxr_status (*buffer_alloc)(struct cxr_nn_backend *b, struct cxr_nn_tensor *t, char *err);
    void (*buffer_free)(struct cxr_nn_backend *b, struct cxr_nn_tensor *t);
    /* Copies `size` bytes at byte `offset` of the tensor's host layout
     * (row-major F32, PyTorch order) in or out of its backend storage.
     * Plans made before a tensor_set see the new values (a backend that
     * keeps converted copies refreshes them). */
    enum cxr_status (*tensor_set)(struct cxr_nn_backend *b, struct cxr_nn_tensor *t,
                                  const void *data, size_t offset, size_t size, char *err);
    enum cxr_status (*tensor_get)(struct cxr_nn_backend *b, const struct cxr_nn_tensor *t,
                                  void *data, size_t offset, size_t size, char *err);

    /* Compiles a fused graph for one batch size: picks kernels and layouts,
     * converts weights to them once (kept with the parameter), sizes the
     * activation memory (kept in g->extra, shared by all plans of g).
     * The graph's parameters must have backend storage. *plan is opaque. */
    enum cxr_status (*graph_plan)(struct cxr_nn_backend *b, struct cxr_nn_graph *g, int32_t batch,
                                  void **plan, char *err);
    void (*plan_free)(struct cxr_nn_backend *b, void *plan);
    /* Frees g->extra (after every plan of g was freed); NULL extra: no-op. */
    void (*graph_release)(struct cxr_nn_backend *b, struct cxr_nn_graph *g);
    /* Runs a plan: `input` is batch x C x H x W F32 (NCHW) for the graph's
     * input value, `output` receives batch x C x H x W F32 (NCHW) of the
     * graph's output value. May return before the work is done on an
     * asynchronous device; synchronize waits. */
    enum cxr_status (*graph_compute)(struct cxr_nn_backend *b, void *plan, const float *input,
                                     float *output, char *err);
    enum cxr_status (*synchronize)(struct cxr_nn_backend *b, char *err);
};

struct cxr_nn_backend {
    const struct cxr_nn_backend_i *iface;
    enum cxr_nn_backend_kind kind;
    enum cxr_nn_precision precision;  /* resolved, never AUTO */
    int32_t threads;                  /* CPU threads actually used */
    char description[256];
    void *context;                    /* the backend's own state */
};

/* Opens the oneDNN CPU backend (backend_cpu.c). */
enum cxr_status cxr_nn_backend_cpu_open(const struct cxr_nn_backend_options *opt,
                                        struct cxr_nn_backend **out, char *err);
/* "oneDNN 2.6.3 (OpenMP)" into buf. */
void cxr_nn_backend_cpu_version(char *buf, size_t len);

/* A net over any fused-or-not graph (net.c; cxr_nn_net_new uses it for a
 * ResNet, the backend parity tests for single ops). Takes ownership of `g`
 * (freed on failure too): fuses it for inference, binds it through `lookup`
 * (which must stay valid only during this call), uploads the parameters,
 * drops the host copies and plans batch 1. forward() then reads batch x
 * C x H x W of the graph's input and writes batch x C x H x W of its output. */
enum cxr_status cxr_nn_net_new_graph(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                     cxr_nn_param_lookup_fn lookup, void *ctx, int32_t max_batch,
                                     struct cxr_nn_net **out, char *err);

/* The net's fused graph (its parameters carry the backend storage), for
 * code that updates parameters in place (tensor_set) — the trainer, tests. */
struct cxr_nn_graph *cxr_nn_net_graph(struct cxr_nn_net *net);
struct cxr_nn_backend *cxr_nn_net_backend(struct cxr_nn_net *net);

/* printf into err (CXR_NN_ERRLEN bytes, may be NULL); returns st. */
enum cxr_status cxr_nn_backend_err(char *err, enum cxr_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
