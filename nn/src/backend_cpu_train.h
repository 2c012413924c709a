/* backend_cpu_train.h (internal to the CPU backend) — what the training
 * planner (backend_cpu_train.c: the forward pass in training mode,
 * backend_cpu_train_bwd.c: the backward pass) and the training run time
 * (backend_cpu_train_run.c) share.
 *
 * A training plan is an inference-style cpu_plan (steps, buffers, memories
 * placed in the graph's arena by live range) whose steps [0, n_fwd) are the
 * forward pass and [n_fwd, n_steps) the backward pass, so activations the
 * backward pass reads stay alive and gradients reuse dead activation memory.
 * Layouts are oneDNN's choice (format_tag_any, backward primitives hinted by
 * their forward); a consumer wanting another layout gets a reorder.
 * Fusions: batch norm + the ReLU that alone reads it (dnnl_fuse_norm_relu,
 * the ReLU mask in a workspace), residual add + ReLU (post-op; ReLU backward
 * from its output). Parameter gradients go straight into the grad tensors'
 * F32 storage (through a reorder when the kernel wants another layout).
 */
#ifndef CXR_NN_BACKEND_CPU_TRAIN_H
#define CXR_NN_BACKEND_CPU_TRAIN_H

#include "backend_cpu.h"

#define TV_MAX_CONV 4

/* Planning state of one value. */
struct tv {
    int32_t mem;               /* forward memory (-1: not materialised) */
    int32_t conv[TV_MAX_CONV]; /* converted copies of it */
    int32_t n_conv;
    int32_t diff; /* gradient memory (-1: none yet) */
};

/* Planning state of one op. */
struct top {
    dnnl_primitive_desc_t fwd_pd; /* hint for the backward primitives */
    int32_t src;                  /* memory the forward read (input 0, as converted) */
    int32_t dst;                  /* memory it wrote */
    int32_t ws;                   /* workspace (max pool, bn + relu in training), -1 */
    int32_t mean, var;            /* bn: batch statistics (training) or -1 */
    int32_t fused_relu;           /* bn/add: the relu op it does too, -1 */
    int32_t absorbed_by;          /* relu: the bn/add op doing its forward, -1 */
    dnnl_data_type_t dt;          /* data type of the forward's activations */
};

/* A batch norm whose running statistics the forward pass updates. */
struct bn_stat {
    int32_t mean, var; /* the batch statistics memories */
    int32_t rm, rv;    /* graph parameter indices of running_mean/var */
    double count;      /* values per channel: batch * H * W */
};

struct cpu_train_plan {
    struct cpu_plan p; /* steps, buffers, memories */
    int32_t n_fwd;
    struct cxr_nn_graph *g;
    struct bn_stat *bn;
    int32_t n_bn, cap_bn;
    dnnl_memory_t *raw; /* memories on parameter/grad storage, owned */
    int32_t n_raw, cap_raw;
    float momentum;
    bool frozen;
    enum cxr_nn_conv_algo conv_algo;
    float *io; /* input copy, logits, dlogits (64-byte aligned) */
    size_t in_floats, out_floats;
};

/* The planner's working state. */
struct tbuilder {
    struct cpu_train_plan *T;
    struct cpu_plan *p;
    struct cxr_nn_graph *g;
    struct tv *vs;
    struct top *ops;
    bool *need;       /* per value: its gradient is needed */
    int32_t *readers; /* per value: live ops reading it */
    char *err;
};

/* Helpers (backend_cpu_train_util.c; growing arrays, steps and attributes
 * are the inference planner's: cxr_nn_cpu_grow, cxr_nn_cpu_step,
 * cxr_nn_cpu_attr in backend_cpu.h). */
enum cxr_status cxr_nn_ct_oom(char *err);
enum cxr_status cxr_nn_ct_fresh(struct tbuilder *B, const dnnl_memory_desc_t *md, int32_t *out);
static inline enum cxr_status cxr_nn_ct_step(struct tbuilder *B, dnnl_primitive_t prim,
                                             const struct cpu_arg *args, int32_t n,
                                             const char *where)
{
    return cxr_nn_cpu_step(B->p, prim, args, n, where, B->err);
}
enum cxr_status cxr_nn_ct_reorder(struct tbuilder *B, int32_t src, int32_t dst, dnnl_memory_t raw,
                                  const char *where);
enum cxr_status cxr_nn_ct_value_as(struct tbuilder *B, int32_t v, const dnnl_memory_desc_t *md,
                                   int32_t *out, const char *where);
enum cxr_status cxr_nn_ct_raw(struct tbuilder *B, const dnnl_memory_desc_t *md, void *handle,
                              dnnl_memory_t *out, const char *where);
/* Weights of parameter `param` (plain dims, F32) in the layout `want`. */
enum cxr_status cxr_nn_ct_weights(struct tbuilder *B, int32_t param, const dnnl_memory_desc_t *want,
                                  dnnl_memory_t *out, const char *where);
/* The plain F32 layout of a parameter: oihw (fc: [O, C, 1, 1]) or a. */
void cxr_nn_ct_plain_md(const struct cxr_nn_tensor *t, dnnl_memory_desc_t *md);

/* The convolution algorithm to try first for op (the plan's conv_algo; a
 * caller falls back to direct when oneDNN has no such kernel). */
dnnl_alg_kind_t cxr_nn_ct_conv_alg(const struct tbuilder *B, const struct cxr_nn_op *op,
                                   dnnl_data_type_t dt);

/* The backward pass of op i (backend_cpu_train_bwd.c). */
enum cxr_status cxr_nn_ct_backward_op(struct tbuilder *B, int32_t i);

#endif
