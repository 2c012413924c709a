/* graph.h (internal to nn) — the op graph of a network, independent of any
 * backend.
 *
 * A graph is an explicit list of ops in execution order. Each op reads values
 * (activations, per sample C x H x W; the batch is chosen when a backend
 * plans the graph), writes one value, and uses parameters by name
 * ("layer1.0.conv1.weight"). The graph built from a ResNet is the faithful,
 * unfused one (conv, batch norm, ReLU, max pool, add, global average pool,
 * fc) so that training can later add a backward op per op. For inference,
 * cxr_nn_graph_fuse_inference() folds each batch norm into the convolution
 * before it (a new derived weight and bias) and fuses the ReLU and the
 * residual add that follow; absorbed ops are kept but marked. Backends read
 * the op list, never the model. Backend state hangs off graph->extra and
 * each parameter tensor's extra.
 *
 * Threads: a graph belongs to one net and is used by one thread at a time.
 */
#ifndef CXR_NN_GRAPH_H
#define CXR_NN_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "cxr/mem.h"
#include "cxr/nn.h"
#include "resnet.h"

#define CXR_NN_OP_MAX_IN     2
#define CXR_NN_OP_MAX_PARAMS 4
#define CXR_NN_GRAPH_MAX_OPS 4096

enum cxr_nn_op_kind {
    CXR_NN_OP_CONV = 0,    /* in[0] -> conv; params weight [O,I,kh,kw], optional bias [O] */
    CXR_NN_OP_BN = 1,      /* batch norm; params weight, bias, running_mean, running_var */
    CXR_NN_OP_RELU = 2,    /* max(x, 0) */
    CXR_NN_OP_MAXPOOL = 3, /* kernel, stride, pad (padding never wins the max) */
    CXR_NN_OP_ADD = 4,     /* in[0] + in[1], same shape */
    CXR_NN_OP_GAP = 5,     /* global average pool: C x H x W -> C x 1 x 1 */
    CXR_NN_OP_FC = 6,      /* in[0] is C x 1 x 1; params weight [O,C], bias [O] -> O x 1 x 1 */
    CXR_NN_OP_KIND_COUNT
};

/* "conv", "bn", ... */
const char *cxr_nn_op_kind_name(enum cxr_nn_op_kind k);

/* An activation, per sample. `producer` is an op index, -1 for the input. */
struct cxr_nn_value {
    int32_t c, h, w;
    int32_t producer;
};

struct cxr_nn_op {
    enum cxr_nn_op_kind kind;
    char name[CXR_NN_NAME_LEN]; /* "layer1.0.conv1"; parameters are "<name>.weight" ... */
    int32_t n_in;
    int32_t in[CXR_NN_OP_MAX_IN]; /* value indices */
    int32_t out;                  /* value index */
    int32_t n_params;
    int32_t param[CXR_NN_OP_MAX_PARAMS];     /* indices into graph->params; bias may be -1 */
    int32_t kernel_h, kernel_w, stride, pad; /* conv, maxpool */
    float eps;                               /* bn */

    /* Inference fusion (set by cxr_nn_graph_fuse_inference). */
    int32_t absorbed_by; /* -1, or the op that does this op's work */
    int32_t folded_bn;   /* conv: the bn op folded into weight/bias, -1 */
    int32_t sum_in;      /* conv: value added to the result before relu, -1 */
    bool relu;           /* conv/add: ReLU applied last */
};

/* A parameter: a named F32 tensor. `t.data` is set only while the graph is
 * bound (cxr_nn_graph_bind); `t.extra` belongs to the backend that holds
 * the parameter's storage. A derived parameter (folded conv+bn) has
 * `derived_from` = the conv op index. */
struct cxr_nn_param {
    struct cxr_nn_tensor t;
    int32_t derived_from;         /* -1 for a model parameter */
    int32_t src_weight, src_bias; /* derived: the conv's own weight/bias params (bias -1) */
    bool owned;                   /* t.data was allocated by the graph */
    bool used;                    /* read by an op that is not absorbed */
    /* Training (unfused graphs only; see backend.h "training"): a trainable
     * parameter's gradient, same name + ".grad", shape and F32 dtype; its
     * `extra` is backend storage the trainer allocates. Running statistics
     * are never trainable (the training forward updates them). */
    bool trainable;
    struct cxr_nn_tensor grad;
};

struct cxr_nn_graph {
    struct cxr_nn_op *ops;
    int32_t n_ops, cap_ops;
    struct cxr_nn_value *values;
    int32_t n_values, cap_values;
    struct cxr_nn_param *params;
    int32_t n_params, cap_params;
    int32_t input;  /* value index of the input (0) */
    int32_t output; /* value index of the result */
    bool fused;
    void *extra; /* backend state (plans' shared memory) */
};

/* A new graph whose input value is C x H x W. NULL when out of memory or a
 * dimension is < 1. Free with cxr_nn_graph_free (after the backend released
 * its state: see backend.h). */
struct cxr_nn_graph *cxr_nn_graph_new(int32_t c, int32_t h, int32_t w);
void cxr_nn_graph_free(struct cxr_nn_graph *g);

/* Builders: each appends one op reading value `x` and returns its output
 * value index, or -1 (out of memory, bad shape, too many ops; `err` says
 * which). Parameter names are "<name>.weight", "<name>.bias", ... */
int32_t cxr_nn_graph_conv(struct cxr_nn_graph *g, const char *name, int32_t x, int32_t out_ch,
                          int32_t kernel, int32_t stride, int32_t pad, bool bias, char *err);
int32_t cxr_nn_graph_bn(struct cxr_nn_graph *g, const char *name, int32_t x, float eps, char *err);
int32_t cxr_nn_graph_relu(struct cxr_nn_graph *g, const char *name, int32_t x, char *err);
int32_t cxr_nn_graph_maxpool(struct cxr_nn_graph *g, const char *name, int32_t x, int32_t kernel,
                             int32_t stride, int32_t pad, char *err);
int32_t cxr_nn_graph_add(struct cxr_nn_graph *g, const char *name, int32_t a, int32_t b, char *err);
int32_t cxr_nn_graph_gap(struct cxr_nn_graph *g, const char *name, int32_t x, char *err);
int32_t cxr_nn_graph_fc(struct cxr_nn_graph *g, const char *name, int32_t x, int32_t out_features,
                        char *err);

/* The unfused torchvision ResNet for `spec` on an input of C x H x W (C =
 * spec->in_channels), output value = fc logits (classes x 1 x 1). The
 * spatial size must leave at least 1 x 1 after the five stride-2 stages. */
enum cxr_status cxr_nn_graph_build_resnet(const struct cxr_nn_resnet_spec *spec, int32_t h,
                                          int32_t w, struct cxr_nn_graph **out, char *err);

/* Inference fusion: conv -> bn folded (derived parameters "<conv>.weight+bn"
 * and "<conv>.bias+bn" replace the conv's), then a single-consumer ReLU, or an
 * add of another value followed by a ReLU, fused into that conv; add ->
 * relu fused into the add. Marks `used` on the parameters still read. */
enum cxr_status cxr_nn_graph_fuse_inference(struct cxr_nn_graph *g, char *err);

/* Looks a parameter up by name: a tensor whose F32 data the caller keeps
 * alive until cxr_nn_graph_unbind. NULL when absent. */
typedef const struct cxr_nn_tensor *(*cxr_nn_param_lookup_fn)(void *ctx, const char *name);

/* Gives every used parameter host data: model parameters point at the
 * looked-up data (checked: F32, same shape), derived ones are computed
 * (batch norm folded in double precision). Errors name the parameter. */
enum cxr_status cxr_nn_graph_bind(struct cxr_nn_graph *g, cxr_nn_param_lookup_fn lookup, void *ctx,
                                  char *err);
/* Drops host data (frees derived data, forgets borrowed pointers). */
void cxr_nn_graph_unbind(struct cxr_nn_graph *g);

/* Number of ops that still run (not absorbed). */
int32_t cxr_nn_graph_live_ops(const struct cxr_nn_graph *g);

/* ---- training */

/* Marks the trainable parameters of an UNFUSED graph and describes each
 * one's gradient tensor (name "<param>.grad", same shape, F32, no data or
 * storage yet): conv weight/bias, bn weight/bias and fc weight/bias; with
 * `fc_only` (a frozen backbone) just the parameters of the last fc op.
 * bn running_mean/running_var never train. Returns the number of trainable
 * parameters, or -1 for a fused graph (err says so). */
int32_t cxr_nn_graph_set_trainable(struct cxr_nn_graph *g, bool fc_only, char *err);

/* Whether a parameter is a "no weight decay" one: a batch-norm weight or
 * bias or any bias (the usual AdamW parameter grouping; the trainer applies
 * weight decay only to conv and fc weights). */
bool cxr_nn_graph_param_is_no_decay(const struct cxr_nn_graph *g, int32_t param);

/* For each value, whether the loss's gradient with respect to it is needed
 * by a trainable parameter (a value on a path from a trainable op's input
 * to the output). `out` has g->n_values entries. */
void cxr_nn_graph_needs_grad(const struct cxr_nn_graph *g, bool *out);

/* Makes room for element n of an array whose capacity is an int32_t
 * (graphs and plans count in int32_t): cxr_grow capped at INT32_MAX. */
static inline bool cxr_nn_grow(void **arr, int32_t n, int32_t *cap, size_t size)
{
    size_t c = (size_t)*cap;
    if (n < 0 || !cxr_grow(arr, &c, (size_t)n, size, INT32_MAX))
        return false;
    *cap = (int32_t)c;
    return true;
}

#endif
