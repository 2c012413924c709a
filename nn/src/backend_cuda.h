/* backend_cuda.h (internal to the CUDA backend) — what backend_cuda.c (the
 * backend, device, parameter storage), backend_cuda_plan.c (compiling a
 * graph for a batch size), backend_cuda_run.c (memory, execution, CUDA
 * graphs, out-of-memory fallback) and backend_cuda_train.c share. Only
 * these files include the CUDA, cuDNN and cuBLAS headers; the kernels in
 * cuda_kernels.cu are reached through cuda_kernels.h.
 *
 * cuDNN API: the "legacy" descriptor API of cuDNN 9 (cudnn_cnn.h /
 * cudnn_ops.h: cudnnConvolutionBiasActivationForward, cudnnFind*,
 * cudnnConvolutionBackward*). It is plain C, present in every cuDNN 9.x
 * (marked deprecated for a future major version, warnings off unless
 * CUDNN_WARN_DEPRECATED), and in cuDNN 9 it runs on the same engines as the
 * graph API. The graph API's C surface (cudnnBackend*) would let cuDNN fuse
 * more (e.g. the pooling into the conv) at the cost of ~10x the code; see
 * docs/gpu.md.
 */
#ifndef CXR_NN_BACKEND_CUDA_H
#define CXR_NN_BACKEND_CUDA_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "arena.h"
#include "backend.h"
#include "cuda_kernels.h"

/* ---- errors: one macro per vendor. Each turns a failure into a
 * cxr_status with the library's own text ("cuda: <where>: cudaMalloc:
 * cudaErrorMemoryAllocation: out of memory"), sets the local `st` and jumps
 * to the function's `fail` label. Out-of-memory becomes CXR_ERR_NOMEM (the
 * caller may retry with a smaller batch), everything else
 * CXR_ERR_NN_BACKEND. */
enum cxr_status cxr_nn_cuda_fail(char *err, cudaError_t e, const char *where, const char *call);
enum cxr_status cxr_nn_cudnn_fail(char *err, cudnnStatus_t s, const char *where, const char *call);
enum cxr_status cxr_nn_cublas_fail(char *err, cublasStatus_t s, const char *where,
                                   const char *call);

#define CXR_CUDA(call, where)                                    \
    do {                                                         \
        cudaError_t cuda_e_ = (call);                            \
        if (cuda_e_ != cudaSuccess) {                            \
            st = cxr_nn_cuda_fail(err, cuda_e_, (where), #call); \
            goto fail;                                           \
        }                                                        \
    } while (0)

#define CXR_CUDNN(call, where)                                     \
    do {                                                           \
        cudnnStatus_t cudnn_s_ = (call);                           \
        if (cudnn_s_ != CUDNN_STATUS_SUCCESS) {                    \
            st = cxr_nn_cudnn_fail(err, cudnn_s_, (where), #call); \
            goto fail;                                             \
        }                                                          \
    } while (0)

#define CXR_CUBLAS(call, where)                                      \
    do {                                                             \
        cublasStatus_t cublas_s_ = (call);                           \
        if (cublas_s_ != CUBLAS_STATUS_SUCCESS) {                    \
            st = cxr_nn_cublas_fail(err, cublas_s_, (where), #call); \
            goto fail;                                               \
        }                                                            \
    } while (0)

/* ---- the backend */

/* A cached algorithm choice for one convolution shape (see plan). */
struct cuda_algo_key {
    int32_t n, c, h, w, k, r, s, stride, pad;
    int32_t dtype; /* enum ck_dtype */
    int32_t dir;   /* 0 forward, 1 backward data, 2 backward filter */
};

struct cuda_algo {
    struct cuda_algo_key key;
    int32_t algo; /* cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t */
    int32_t math; /* cudnnMathType_t */
    size_t workspace;
};

/* The backend's context (cxr_nn_backend.context). */
struct cuda_ctx {
    int32_t device;
    struct cudaDeviceProp prop;
    enum ck_dtype act;    /* activation/weight type of the convolutions */
    bool tf32;            /* fp32 convolutions may use TF32 tensor cores */
    bool graphs;          /* capture plans into CUDA graphs */
    size_t workspace_cap; /* bytes of cuDNN workspace one conv may use */
    size_t arena_limit;   /* 0, or a cap on a graph's arena (tests the OOM path) */
    cudaStream_t upload;  /* weight uploads and conversions */
    pthread_mutex_t lock; /* guards the algorithm cache and `upload` */
    struct cuda_algo *algos;
    int32_t n_algos, cap_algos;
    void *pre_dev; /* preprocessing scratch (under `lock`) */
    size_t pre_size;
    double *dsum; /* tensor_sumsq accumulator (under `lock`) */
};

/* cxr_nn_preprocess_u8 on the device (backend_cuda_pre.c). */
enum cxr_status cxr_nn_cuda_preprocess_u8(struct cxr_nn_backend *b,
                                          const struct cxr_nn_model_meta *meta,
                                          const uint8_t *pixels, int32_t width, int32_t height,
                                          int32_t stride, const uint8_t *mask, float *out,
                                          char *err);

/* A parameter converted for a kernel: layout kind + type, on the device. */
enum cuda_wkind {
    CW_CONV = 0, /* [Op][kh][kw][Cp] (cuDNN NHWC filter), zero padded */
    CW_VEC = 1,  /* [Op] (bias), zero padded */
    CW_FC = 2    /* [O][Cp] row-major (cuBLAS), zero padded columns */
};

struct cuda_wcache {
    enum cuda_wkind kind;
    enum ck_dtype dtype;
    void *dev;
    size_t bytes;
};

/* cxr_nn_tensor.extra of a parameter held by the CUDA backend: the F32
 * master copy (PyTorch layout) and the converted copies plans use. */
struct cuda_tensor {
    float *dev;
    size_t nbytes;
    struct cuda_wcache cache[4];
    int32_t n_cache;
};

/* Pads a channel count to the multiple of 8 the tensor cores want. */
static inline int32_t cuda_pad8(int32_t c) { return (c + 7) & ~7; }

/* The parameter's data as `kind` x `dtype` on the device, converting once
 * (then cached with the parameter and refreshed by tensor_set). */
enum cxr_status cxr_nn_cuda_weights(struct cuda_ctx *c, struct cxr_nn_tensor *t,
                                    enum cuda_wkind kind, enum ck_dtype dtype, void **out,
                                    char *err);

/* The algorithm cache (thread-safe). find returns false when absent. */
bool cxr_nn_cuda_algo_find(struct cuda_ctx *c, const struct cuda_algo_key *k,
                           struct cuda_algo *out);
void cxr_nn_cuda_algo_put(struct cuda_ctx *c, const struct cuda_algo *a);

/* "fp16" ... */
const char *cxr_nn_cuda_dtype_name(enum ck_dtype t);

/* ---- per-graph state (graph->extra): one stream and library handles per
 * graph, so that nets on different threads never share a stream; the
 * activation arena all plans of the graph share; pinned staging buffers. */
#define CUDA_BLAS_WORKSPACE ((size_t)4 << 20)

struct cuda_graph {
    cudaStream_t stream;
    cudnnHandle_t dnn;
    cublasHandle_t blas;
    void *blas_ws; /* fixed cuBLAS workspace (needed for graph capture) */
    void *arena;
    size_t size;
    uint64_t generation;    /* bumps when the arena or staging moves */
    void *pin_in, *pin_out; /* pinned host staging */
    size_t pin_in_size, pin_out_size;
};

enum cxr_status cxr_nn_cuda_graph_state(struct cuda_ctx *c, struct cxr_nn_graph *g, char *err);

/* ---- plans */

enum cstep_kind {
    CS_INPUT = 0, /* NCHW f32 (device staging) -> NHWC act */
    CS_CONV,
    CS_MAXPOOL,
    CS_ADD,
    CS_RELU,
    CS_GAP,
    CS_FC,
    CS_OUTPUT /* NHWC act -> NCHW f32 (device staging) */
};

/* One activation buffer in the arena: placed by live range. */
/* A plan's buffers are struct cxr_nn_buf (arena.h), all in the arena (place 0). */

struct cuda_conv {
    cudnnTensorDescriptor_t x, y, bias;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnActivationDescriptor_t act;
    cudnnConvolutionFwdAlgo_t algo;
    size_t workspace;
    bool fused;        /* cudnnConvolutionBiasActivationForward works */
    bool tried;        /* the fused call was tried once */
    void *wdev, *bdev; /* converted weights, bias (act type, padded) */
};

struct cuda_step {
    enum cstep_kind kind;
    int32_t op;         /* graph op index (-1 for input/output) */
    int32_t x, z, y;    /* buffers: input, residual (-1), output */
    int32_t n, c, h, w; /* input geometry (c padded) */
    int32_t oc, oh, ow; /* output geometry (oc padded, except fc: real) */
    int32_t real_c;     /* unpadded channels (input/output conversion, fc) */
    int32_t kernel, stride, pad;
    bool relu;
    struct cuda_conv cv;
    void *fc_w, *fc_b; /* fc: [O][Cp] act, bias [O] f32 */
};

struct cuda_plan {
    struct cuda_ctx *ctx;
    struct cuda_graph *cg;
    struct cxr_nn_graph *g;
    int32_t batch;
    struct cuda_step *steps;
    int32_t n_steps, cap_steps;
    struct cxr_nn_buf *bufs;
    int32_t n_bufs, cap_bufs;
    int32_t in_buf, out_buf;    /* f32 staging buffers on the device */
    size_t in_bytes, out_bytes; /* host-side sizes (NCHW f32) */
    size_t workspace, ws_off, arena_need;
    uint64_t bound_generation;
    int32_t runs; /* completed computes (the first runs eagerly) */
    cudaGraphExec_t exec;
    bool no_graph; /* capture failed or disabled: run eagerly */
    void **zeros;  /* zero bias vectors of convs without bias */
    int32_t n_zeros, cap_zeros;
    /* out-of-memory fallback: the batch runs as two halves */
    struct cuda_plan *lo, *hi;
};

/* Builds the steps of a plan for one batch size (backend_cuda_plan.c). */
enum cxr_status cxr_nn_cuda_plan_build(struct cuda_ctx *c, struct cxr_nn_graph *g, int32_t batch,
                                       struct cuda_plan **out, char *err);
/* A plan that runs `batch` as two plans of batch/2 and batch - batch/2
 * (each split further when it too runs out of memory). */
enum cxr_status cxr_nn_cuda_plan_split(struct cuda_ctx *c, struct cxr_nn_graph *g, int32_t batch,
                                       struct cuda_plan **out, char *err);

enum cxr_status cxr_nn_cuda_graph_plan(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                       int32_t batch, void **plan, char *err);
void cxr_nn_cuda_plan_free(struct cxr_nn_backend *b, void *plan);
void cxr_nn_cuda_graph_release(struct cxr_nn_backend *b, struct cxr_nn_graph *g);
enum cxr_status cxr_nn_cuda_graph_compute(struct cxr_nn_backend *b, void *plan, const float *input,
                                          float *output, char *err);

/* Alignment of buffers in the CUDA arena (cxr_nn_arena_place). */
#define CXR_NN_CUDA_ARENA_ALIGN 256
/* Grows the graph's arena to `need` bytes (plans keep offsets into it;
 * growing bumps cg->generation). CXR_ERR_NOMEM when it does not fit. */
enum cxr_status cxr_nn_cuda_ensure_arena(struct cuda_ctx *c, struct cuda_graph *cg, size_t need,
                                         char *err);
/* Host <-> device copies on the graph's stream through pinned staging
 * (straight when the host buffer is pinned); download waits for the stream. */
enum cxr_status cxr_nn_cuda_upload(struct cuda_graph *cg, void *dev, const void *host, size_t bytes,
                                   char *err);
enum cxr_status cxr_nn_cuda_download(struct cuda_graph *cg, void *host, const void *dev,
                                     size_t bytes, char *err);

/* Places the plan's buffers in the arena (overlapping live ranges never
 * share bytes) and sets arena_need. */
void cxr_nn_cuda_place_buffers(struct cuda_plan *p);

/* Device pointer of buffer i of p in the current arena. */
static inline void *cuda_buf_ptr(const struct cuda_plan *p, int32_t i)
{
    return (char *)p->cg->arena + p->bufs[i].off;
}

/* Runs the plan's device steps on the graph's stream (no host copies);
 * used eagerly and inside graph capture. */
enum cxr_status cxr_nn_cuda_run_steps(struct cuda_plan *p, bool capturing, char *err);

/* Internal hooks for the benchmark (bench/gpu_bench.c) and tests: runs the
 * plan `iters` times from the device input already in place (no host
 * copies) and returns the mean device time per run in ms (CUDA events). */
enum cxr_status cxr_nn_cuda_plan_time_device(void *plan, int32_t iters, double *ms, char *err);

/* ---- convolutions (backend_cuda_plan.c), shared by inference and training */

struct cuda_conv_geo {
    int32_t n, c, h, w; /* input, c padded */
    int32_t oc, oh, ow; /* output, oc padded */
    int32_t k, stride, pad;
};

/* The math mode the backend's precision allows (tensor ops; TF32 or FMA for fp32). */
cudnnMathType_t cxr_nn_cuda_math(const struct cuda_ctx *c);
enum cxr_status cxr_nn_cuda_conv_setup(struct cuda_ctx *c, struct cuda_conv *cv,
                                       const struct cuda_conv_geo *geo, bool relu,
                                       const char *where, char *err);
enum cxr_status cxr_nn_cuda_conv_algo(struct cuda_ctx *c, cudnnHandle_t dnn, struct cuda_conv *cv,
                                      const struct cuda_conv_geo *geo, int32_t dir,
                                      struct cuda_algo *out, const char *where, char *err);

/* ---- training (backend_cuda_train.c plans, backend_cuda_train_run.c runs)
 * An unfused graph; one step per op forward, one per op backward. */

struct tstep {
    int32_t op;
    enum cxr_nn_op_kind kind;
    int32_t n, c, cp, h, w;  /* input (real and padded channels) */
    int32_t oc, ocp, oh, ow; /* output */
    int32_t k, s, pad;
    int32_t x, x2, y;            /* activation buffers (x2: add's second input) */
    int32_t dx, dx2, dy;         /* gradient buffers, -1 when not needed */
    bool acc_dx, acc_dx2;        /* add into dx (another consumer wrote it first) */
    bool backward;               /* the op's backward runs (its output needs a gradient) */
    int32_t pw, pb, pmean, pvar; /* parameter indices, -1 */
    /* conv */
    struct cuda_conv cv;
    cudnnConvolutionBwdDataAlgo_t bd_algo;
    cudnnConvolutionBwdFilterAlgo_t bf_algo;
    int32_t fwd_math, bd_math, bf_math;
    size_t bd_ws, bf_ws;
    int32_t dw; /* act-type weight gradient scratch */
    /* bn */
    int32_t stats; /* CK_BN_SCRATCH, kept from forward to backward */
    float eps;
    /* fc */
    void *fc_w32;      /* [O][Cp] f32 (backward data) */
    int32_t x32, dx32; /* f32 copies of the fc input and its gradient */
    int32_t dtmp;      /* double scratch for column sums */
};

struct cuda_tplan {
    struct cuda_ctx *ctx;
    struct cuda_graph *cg;
    struct cxr_nn_graph *g;
    int32_t batch;
    bool bn_frozen;
    float bn_momentum;
    struct tstep *steps;
    int32_t n_steps;
    struct cxr_nn_buf *bufs;
    int32_t n_bufs, cap_bufs;
    int32_t in_buf, in_act, logits_buf, dlogits_buf, flag_buf;
    size_t in_bytes, logits_bytes;
    int32_t classes;
    size_t workspace, ws_off, arena_need;
    float loss_scale;   /* fp16: dynamic loss scale; else 1 */
    int32_t good_steps; /* steps since the scale last changed */
    bool forwarded;     /* a forward ran: backward may follow */
};

enum cxr_status cxr_nn_cuda_train_plan(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                       const struct cxr_nn_train_plan_options *opt, void **plan,
                                       char *err);
void cxr_nn_cuda_train_plan_free(struct cxr_nn_backend *b, void *plan);
enum cxr_status cxr_nn_cuda_train_forward(struct cxr_nn_backend *b, void *plan, const float *input,
                                          float *logits, char *err);
enum cxr_status cxr_nn_cuda_train_backward(struct cxr_nn_backend *b, void *plan,
                                           const float *dlogits, char *err);
enum cxr_status cxr_nn_cuda_tensor_sumsq(struct cxr_nn_backend *b, const struct cxr_nn_tensor *t,
                                         double *out, char *err);
enum cxr_status cxr_nn_cuda_optim_step(struct cxr_nn_backend *b, struct cxr_nn_tensor *param,
                                       const struct cxr_nn_tensor *grad,
                                       struct cxr_nn_tensor *state0, struct cxr_nn_tensor *state1,
                                       const struct cxr_nn_optim_step *h, char *err);
/* Refreshes a parameter's converted copies from its master (after an
 * update on the device); caller holds c->lock, work on c->upload. */
cudaError_t cxr_nn_cuda_refresh(struct cuda_ctx *c, struct cxr_nn_tensor *t);
/* Frees a conv step's cuDNN descriptors. */
void cxr_nn_cuda_conv_free(struct cuda_conv *cv);

#endif
