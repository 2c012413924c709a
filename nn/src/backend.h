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
 * Training adds the entries at the end of the table (see "training" below);
 * existing entries keep their meaning.
 *
 * Errors: every entry that can fail returns enum cxr_status and writes the
 * vendor's text to `err` (CXR_ERRLEN bytes, may be NULL). No entry
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

/* Convolution algorithms a training plan may use. */
enum cxr_nn_conv_algo {
    CXR_NN_CONV_AUTO = 0,    /* the backend's choice (CPU: oneDNN's convolution_auto, which
                              * takes Winograd F(4x4,3x3) for 3x3 stride-1 layers when faster) */
    CXR_NN_CONV_DIRECT = 1,  /* direct convolution only (as PyTorch's oneDNN calls) */
    CXR_NN_CONV_WINOGRAD = 2 /* Winograd wherever the kernel exists, direct elsewhere (tests) */
};

/* How train_plan compiles a graph (training entries below). */
struct cxr_nn_train_plan_options {
    int32_t batch;     /* images per step, >= 1 (batch norm in training mode needs >= 2
                        * values per channel: batch * H * W >= 2 at every bn) */
    bool bn_frozen;    /* batch norm in eval mode: running statistics, not updated */
    float bn_momentum; /* running-statistics momentum, PyTorch's 0.1 */
    enum cxr_nn_conv_algo conv_algo; /* a hint; a backend may ignore it */
};

enum cxr_nn_optim_kind {
    CXR_NN_OPTIM_ADAMW = 0, /* torch.optim.AdamW (decoupled weight decay) */
    CXR_NN_OPTIM_SGD = 1    /* torch.optim.SGD with momentum (coupled weight decay) */
};

/* One optimizer update's hyper-parameters for one parameter tensor (the
 * trainer resolves the schedule, the parameter group's weight decay and the
 * clipping factor). The update, elementwise with g = grad * grad_scale:
 *   AdamW (PyTorch 1.13 _single_tensor_adamw, amsgrad off):
 *     p *= 1 - lr * weight_decay
 *     m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *     p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 *   SGD (dampening 0):
 *     d = g + weight_decay p
 *     b = step == 1 ? d : momentum b + d      (momentum 0: no buffer, b = d)
 *     p -= lr * (nesterov ? d + momentum b : b) */
struct cxr_nn_optim_step {
    enum cxr_nn_optim_kind kind;
    int64_t step; /* 1 on the first update of this parameter */
    double lr;
    double weight_decay;
    double beta1, beta2, eps; /* AdamW */
    double momentum;          /* SGD */
    bool nesterov;            /* SGD */
    double grad_scale;        /* clipping factor, 1 when not clipped */
};

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

    /* ---------------------------------------------------------------- training
     * (nn/src/train.c drives these; a backend that cannot train leaves them
     * NULL and cxr_nn_trainer_new says so). The life of a training graph:
     *   graph built UNFUSED (cxr_nn_graph_build_resnet), never fused
     *   every parameter: buffer_alloc + tensor_set (running stats included)
     *   cxr_nn_graph_set_trainable marks the trainable ones; each trainable
     *     parameter p gets g->params[p].grad (same shape, F32) with its own
     *     buffer_alloc, and the optimizer state tensors (buffer_alloc, zeroed)
     *   train_plan(batch) per batch size (shares g->extra with graph_plan)
     *   per step: train_forward -> loss on the host from the logits ->
     *     train_backward(dlogits) -> tensor_sumsq of each grad (clipping) ->
     *     optim_step per trainable parameter
     *   train_plan_free, graph_release, buffer_free for every tensor
     *
     * Semantics (PyTorch's, which the oracle test checks):
     *  - train_forward: conv/fc/relu/maxpool/add/gap as in inference; batch
     *    norm in training mode (opt->bn_frozen false): normalises with the
     *    batch's statistics (biased variance) and then updates the running
     *    statistics IN THE PARAMETERS' STORAGE: running = (1 - m) running +
     *    m batch_stat with m = opt->bn_momentum and the UNBIASED variance
     *    (x N*H*W / (N*H*W - 1)). With bn_frozen, batch norm uses the running
     *    statistics and leaves them alone (PyTorch's eval()). `input` and
     *    `logits` as graph_compute (plain NCHW F32; logits batch x classes).
     *    Keeps what the backward pass needs (activations, workspaces).
     *  - train_backward: `dlogits` (batch x classes F32) is dLoss/dlogits of
     *    the last train_forward of this plan; OVERWRITES the grad tensor of
     *    every trainable parameter with dLoss/dparam (F32, host layout), and
     *    computes data gradients only where a trainable parameter needs them
     *    (nothing before the fc when only the fc trains). A value read by
     *    several ops gets the sum of its consumers' gradients.
     *  - Precision: a bf16 backend may run activations, weights and data
     *    gradients in bf16 but keeps the parameters (master weights), their
     *    gradients and the optimizer state in F32.
     * Threads: as graph_compute (one thread per graph at a time). */
    enum cxr_status (*train_plan)(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                  const struct cxr_nn_train_plan_options *opt, void **plan,
                                  char *err);
    void (*train_plan_free)(struct cxr_nn_backend *b, void *plan);
    enum cxr_status (*train_forward)(struct cxr_nn_backend *b, void *plan, const float *input,
                                     float *logits, char *err);
    enum cxr_status (*train_backward)(struct cxr_nn_backend *b, void *plan, const float *dlogits,
                                      char *err);
    /* Sum of squares of a tensor's elements (a gradient), in double: the
     * trainer adds them up for global gradient-norm clipping. */
    enum cxr_status (*tensor_sumsq)(struct cxr_nn_backend *b, const struct cxr_nn_tensor *t,
                                    double *out, char *err);
    /* One optimizer update of `param` from `grad` (both F32, same shape) and
     * the optimizer state `state0`/`state1` (same shape; AdamW: exp_avg,
     * exp_avg_sq; SGD: momentum buffer, state1 unused and may be NULL),
     * exactly cxr_nn_optim_apply() (optim.c) elementwise; plans see the
     * new values afterwards (as after tensor_set). */
    enum cxr_status (*optim_step)(struct cxr_nn_backend *b, struct cxr_nn_tensor *param,
                                  const struct cxr_nn_tensor *grad, struct cxr_nn_tensor *state0,
                                  struct cxr_nn_tensor *state1, const struct cxr_nn_optim_step *h,
                                  char *err);

    /* ---------------------------------------------------------------- optional
     * cxr_nn_preprocess_u8 on the device (same arguments and result, host
     * memory in and out, plus err); NULL where the backend has none, and
     * cxr_nn_backend_preprocess_u8 then runs the CPU reference. */
    enum cxr_status (*preprocess_u8)(struct cxr_nn_backend *b, const struct cxr_nn_model_meta *meta,
                                     const uint8_t *pixels, int32_t width, int32_t height,
                                     int32_t stride, const uint8_t *mask, float *out, char *err);
};

struct cxr_nn_backend {
    const struct cxr_nn_backend_i *iface;
    enum cxr_nn_backend_kind kind;
    enum cxr_nn_precision precision; /* resolved, never AUTO */
    int32_t threads;                 /* CPU threads actually used */
    char description[256];
    void *context; /* the backend's own state */
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

#endif
