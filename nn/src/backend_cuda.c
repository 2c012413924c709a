/* backend_cuda.c — the GPU backend on CUDA 13, cuDNN 9 and cuBLAS: the
 * backend object (device choice, precision, limits), error texts, parameter
 * storage with its converted copies, and the convolution algorithm cache.
 * Planning lives in backend_cuda_plan.c, execution in backend_cuda_run.c.
 *
 * The CUDA runtime is linked statically: it loads the driver (libcuda) at
 * the first call, so a process starts on a machine without a GPU driver and
 * cudaGetDeviceCount then says why there is no device — that text is what
 * backend=auto reports when it falls back to the CPU.
 *
 * Environment (read at open; documented in docs/gpu.md):
 *   CXR_CUDA_TF32=0          fp32 convolutions without TF32 tensor cores
 *   CXR_CUDA_WORKSPACE_MB=n  cuDNN workspace cap per convolution (default 256)
 *   CXR_CUDA_GRAPHS=0        run plans eagerly instead of as CUDA graphs
 *   CXR_CUDA_ARENA_LIMIT_MB=n  treat activation memory beyond n MiB per net as
 *                            out of memory (exercises the smaller-batch fallback)
 */
#include "backend_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/log.h"

/* ---------------------------------------------------------------- errors */

enum cxr_status cxr_nn_cuda_fail(char *err, cudaError_t e, const char *where, const char *call)
{
    size_t fn = strcspn(call, "(");
    enum cxr_status st = e == cudaErrorMemoryAllocation ? CXR_ERR_NOMEM : CXR_ERR_NN_BACKEND;
    return cxr_seterr(err, st, "cuda: %s: %.*s: %s: %s", where, (int)fn, call, cudaGetErrorName(e),
                      cudaGetErrorString(e));
}

enum cxr_status cxr_nn_cudnn_fail(char *err, cudnnStatus_t s, const char *where, const char *call)
{
    size_t fn = strcspn(call, "(");
    enum cxr_status st = s == CUDNN_STATUS_ALLOC_FAILED ? CXR_ERR_NOMEM : CXR_ERR_NN_BACKEND;
    char detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    return cxr_seterr(err, st, "cuDNN: %s: %.*s: %s%s%s", where, (int)fn, call,
                      cudnnGetErrorString(s), detail[0] ? ": " : "", detail);
}

enum cxr_status cxr_nn_cublas_fail(char *err, cublasStatus_t s, const char *where, const char *call)
{
    size_t fn = strcspn(call, "(");
    enum cxr_status st = s == CUBLAS_STATUS_ALLOC_FAILED ? CXR_ERR_NOMEM : CXR_ERR_NN_BACKEND;
    return cxr_seterr(err, st, "cuBLAS: %s: %.*s: %s: %s", where, (int)fn, call,
                      cublasGetStatusName(s), cublasGetStatusString(s));
}

/* ---------------------------------------------------------------- names */

const char *cxr_nn_cuda_dtype_name(enum ck_dtype t)
{
    return t == CK_F16 ? "fp16" : t == CK_BF16 ? "bf16" : "fp32";
}

void cxr_nn_backend_cuda_version(char *buf, size_t len)
{
    size_t v = cudnnGetVersion();
    int major = 0, minor = 0, patch = 0;
    cublasGetProperty(MAJOR_VERSION, &major);
    cublasGetProperty(MINOR_VERSION, &minor);
    cublasGetProperty(PATCH_LEVEL, &patch);
    snprintf(buf, len, "CUDA runtime %d.%d, cuDNN %zu.%zu.%zu, cuBLAS %d.%d.%d",
             CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, v / 10000, v % 10000 / 100, v % 100,
             major, minor, patch);
}

static const char *cuda_get_name(const struct cxr_nn_backend *b) { return "cuda"; }

/* ---------------------------------------------------------------- algorithm cache */

static bool key_eq(const struct cuda_algo_key *a, const struct cuda_algo_key *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

bool cxr_nn_cuda_algo_find(struct cuda_ctx *c, const struct cuda_algo_key *k, struct cuda_algo *out)
{
    bool found = false;
    pthread_mutex_lock(&c->lock);
    for (int32_t i = 0; i < c->n_algos && !found; i++)
        if (key_eq(&c->algos[i].key, k)) {
            *out = c->algos[i];
            found = true;
        }
    pthread_mutex_unlock(&c->lock);
    return found;
}

void cxr_nn_cuda_algo_put(struct cuda_ctx *c, const struct cuda_algo *a)
{
    pthread_mutex_lock(&c->lock);
    if (c->n_algos == c->cap_algos && c->cap_algos < 4096) {
        int32_t ncap = c->cap_algos ? c->cap_algos * 2 : 64;
        struct cuda_algo *na = realloc(c->algos, (size_t)ncap * sizeof *na);
        if (na) {
            c->algos = na;
            c->cap_algos = ncap;
        }
    }
    if (c->n_algos < c->cap_algos) /* a full cache just stops learning */
        c->algos[c->n_algos++] = *a;
    pthread_mutex_unlock(&c->lock);
}

/* ---------------------------------------------------------------- parameters */

static void cuda_buffer_free(struct cxr_nn_backend *b, struct cxr_nn_tensor *t)
{
    struct cuda_tensor *ct = t ? t->extra : NULL;
    if (!ct)
        return;
    for (int32_t i = 0; i < ct->n_cache; i++)
        cudaFree(ct->cache[i].dev);
    cudaFree(ct->dev);
    free(ct);
    t->extra = NULL;
}

static enum cxr_status cuda_buffer_alloc(struct cxr_nn_backend *b, struct cxr_nn_tensor *t,
                                         char *err)
{
    enum cxr_status st = CXR_OK;
    struct cuda_ctx *c = b->context;
    if (!t || t->extra || t->dtype != CXR_NN_DTYPE_F32 || t->nbytes == 0 ||
        t->nbytes > ((size_t)1 << 34))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cuda: cannot hold tensor '%s' (F32, 1 byte .. 16 GiB, once)",
                          t ? t->name : "(null)");
    struct cuda_tensor *ct = calloc(1, sizeof *ct);
    if (!ct)
        return cxr_seterr(err, CXR_ERR_NOMEM, "cuda: out of memory for tensor '%s'", t->name);
    CXR_CUDA(cudaSetDevice(c->device), t->name);
    CXR_CUDA(cudaMalloc((void **)&ct->dev, t->nbytes), t->name);
    CXR_CUDA(cudaMemset(ct->dev, 0, t->nbytes), t->name);
    ct->nbytes = t->nbytes;
    t->extra = ct;
    return CXR_OK;
fail:
    cudaFree(ct->dev);
    free(ct);
    return st;
}

/* Shape of a converted copy: element count for kind x the tensor's dims. */
static size_t wcache_count(const struct cxr_nn_tensor *t, enum cuda_wkind kind)
{
    switch (kind) {
    case CW_CONV:
        return (size_t)cuda_pad8((int32_t)t->shape[0]) * (size_t)t->shape[2] * (size_t)t->shape[3] *
               (size_t)cuda_pad8((int32_t)t->shape[1]);
    case CW_VEC: return (size_t)cuda_pad8((int32_t)t->shape[0]);
    case CW_FC: return (size_t)t->shape[0] * (size_t)cuda_pad8((int32_t)t->shape[1]);
    }
    return 0;
}

/* (Re)computes one converted copy from the F32 master on `stream`. */
static cudaError_t wcache_fill(const struct cxr_nn_tensor *t, const struct cuda_tensor *ct,
                               const struct cuda_wcache *w, cudaStream_t stream)
{
    switch (w->kind) {
    case CW_CONV: {
        int32_t o = (int32_t)t->shape[0], i = (int32_t)t->shape[1];
        return ck_conv_weight(w->dev, w->dtype, ct->dev, o, cuda_pad8(o), i, cuda_pad8(i),
                              (int32_t)t->shape[2], (int32_t)t->shape[3], stream);
    }
    case CW_VEC:
        return ck_vec(w->dev, w->dtype, ct->dev, (int32_t)t->shape[0],
                      cuda_pad8((int32_t)t->shape[0]), stream);
    case CW_FC:
        return ck_matrix(w->dev, w->dtype, ct->dev, (int32_t)t->shape[0], (int32_t)t->shape[1],
                         cuda_pad8((int32_t)t->shape[1]), stream);
    }
    return cudaErrorInvalidValue;
}

enum cxr_status cxr_nn_cuda_weights(struct cuda_ctx *c, struct cxr_nn_tensor *t,
                                    enum cuda_wkind kind, enum ck_dtype dtype, void **out,
                                    char *err)
{
    enum cxr_status st = CXR_OK;
    struct cuda_tensor *ct = t->extra;
    void *dev = NULL;
    *out = NULL;
    if (!ct)
        return cxr_seterr(err, CXR_ERR_INTERNAL, "cuda: parameter '%s' has no storage", t->name);
    int32_t want_dims = kind == CW_CONV ? 4 : kind == CW_FC ? 2 : 1;
    if (t->ndim != want_dims)
        return cxr_seterr(err, CXR_ERR_NN_SHAPE,
                          "cuda: parameter '%s' has %d dims, the "
                          "kernel expects %d",
                          t->name, (int)t->ndim, (int)want_dims);
    for (int32_t i = 0; i < ct->n_cache; i++)
        if (ct->cache[i].kind == kind && ct->cache[i].dtype == dtype) {
            *out = ct->cache[i].dev;
            return CXR_OK;
        }
    if (kind == CW_VEC && dtype == CK_F32 && t->shape[0] % 8 == 0) {
        *out = ct->dev; /* already in that form */
        return CXR_OK;
    }
    if (ct->n_cache == (int32_t)(sizeof ct->cache / sizeof ct->cache[0]))
        return cxr_seterr(err, CXR_ERR_LIMIT, "cuda: parameter '%s': too many forms", t->name);
    struct cuda_wcache w = {
        .kind = kind, .dtype = dtype, .bytes = wcache_count(t, kind) * ck_size(dtype)};
    CXR_CUDA(cudaMalloc(&dev, w.bytes), t->name);
    w.dev = dev;
    pthread_mutex_lock(&c->lock);
    cudaError_t conversion = wcache_fill(t, ct, &w, c->upload);
    if (conversion == cudaSuccess)
        conversion = cudaStreamSynchronize(c->upload);
    pthread_mutex_unlock(&c->lock);
    CXR_CUDA(conversion, t->name);
    ct->cache[ct->n_cache++] = w;
    *out = dev;
    return CXR_OK;
fail:
    cudaFree(dev);
    return st;
}

cudaError_t cxr_nn_cuda_refresh(struct cuda_ctx *c, struct cxr_nn_tensor *t)
{
    struct cuda_tensor *ct = t->extra;
    cudaError_t e = cudaSuccess;
    for (int32_t i = 0; ct && i < ct->n_cache && e == cudaSuccess; i++)
        e = wcache_fill(t, ct, &ct->cache[i], c->upload);
    return e;
}

/* Copies new data into the master copy and refreshes every converted
 * copy in place, so that plans holding them see the new values. */
static enum cxr_status cuda_tensor_set(struct cxr_nn_backend *b, struct cxr_nn_tensor *t,
                                       const void *data, size_t offset, size_t size, char *err)
{
    struct cuda_ctx *c = b->context;
    struct cuda_tensor *ct = t ? t->extra : NULL;
    enum cxr_status st = CXR_OK;
    if (!ct || (!data && size) || offset > ct->nbytes || size > ct->nbytes - offset)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "cuda: tensor_set out of range");
    CXR_CUDA(cudaSetDevice(c->device), t->name);
    pthread_mutex_lock(&c->lock);
    cudaError_t upload = cudaSuccess;
    if (size)
        upload = cudaMemcpyAsync((char *)ct->dev + offset, data, size, cudaMemcpyHostToDevice,
                                 c->upload);
    for (int32_t i = 0; i < ct->n_cache && upload == cudaSuccess; i++)
        upload = wcache_fill(t, ct, &ct->cache[i], c->upload);
    if (upload == cudaSuccess)
        upload = cudaStreamSynchronize(c->upload);
    pthread_mutex_unlock(&c->lock);
    CXR_CUDA(upload, t->name);
fail:
    return st;
}

static enum cxr_status cuda_tensor_get(struct cxr_nn_backend *b, const struct cxr_nn_tensor *t,
                                       void *data, size_t offset, size_t size, char *err)
{
    struct cuda_ctx *c = b->context;
    const struct cuda_tensor *ct = t ? t->extra : NULL;
    enum cxr_status st = CXR_OK;
    if (!ct || (!data && size) || offset > ct->nbytes || size > ct->nbytes - offset)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "cuda: tensor_get out of range");
    if (!size)
        return CXR_OK;
    CXR_CUDA(cudaSetDevice(c->device), t->name);
    pthread_mutex_lock(&c->lock);
    cudaError_t download = cudaMemcpyAsync(data, (const char *)ct->dev + offset, size,
                                           cudaMemcpyDeviceToHost, c->upload);
    if (download == cudaSuccess)
        download = cudaStreamSynchronize(c->upload);
    pthread_mutex_unlock(&c->lock);
    CXR_CUDA(download, t->name);
fail:
    return st;
}

static enum cxr_status cuda_synchronize(struct cxr_nn_backend *b, char *err)
{
    return CXR_OK; /* compute waits for its graph's stream before returning */
}

static void cuda_free(struct cxr_nn_backend *b)
{
    struct cuda_ctx *c = b->context;
    if (!c)
        return;
    if (c->upload)
        cudaStreamDestroy(c->upload);
    cudaFree(c->pre_dev);
    cudaFree(c->dsum);
    pthread_mutex_destroy(&c->lock);
    free(c->algos);
    free(c);
    b->context = NULL;
}

static const struct cxr_nn_backend_i cuda_iface = {
    .get_name = cuda_get_name,
    .free = cuda_free,
    .buffer_alloc = cuda_buffer_alloc,
    .buffer_free = cuda_buffer_free,
    .tensor_set = cuda_tensor_set,
    .tensor_get = cuda_tensor_get,
    .graph_plan = cxr_nn_cuda_graph_plan,
    .plan_free = cxr_nn_cuda_plan_free,
    .graph_release = cxr_nn_cuda_graph_release,
    .graph_compute = cxr_nn_cuda_graph_compute,
    .synchronize = cuda_synchronize,
    .train_plan = cxr_nn_cuda_train_plan,
    .train_plan_free = cxr_nn_cuda_train_plan_free,
    .train_forward = cxr_nn_cuda_train_forward,
    .train_backward = cxr_nn_cuda_train_backward,
    .tensor_sumsq = cxr_nn_cuda_tensor_sumsq,
    .optim_step = cxr_nn_cuda_optim_step,
    .preprocess_u8 = cxr_nn_cuda_preprocess_u8,
};

/* ---------------------------------------------------------------- open */

static long env_long(const char *name, long def, long lo, long hi)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return def;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) {
        cxr_log(CXR_LOG_WARN, "nn", "cuda: ignoring %s=%s (want %ld..%ld)", name, s, lo, hi);
        return def;
    }
    return v;
}

/* Whether a device and the libraries are usable: the device count, the
 * compute capability (tensor cores need 7.0+; this build's kernels target
 * what CMake chose, with PTX for newer GPUs), a cuDNN handle. Fills the
 * context's device fields; errors are one line with the library's text. */
static enum cxr_status probe(struct cuda_ctx *c, int32_t device, char *err)
{
    enum cxr_status st = CXR_OK;
    int count = 0;
    cudnnHandle_t h = NULL;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* not sticky, but leave nothing behind */
        return cxr_seterr(err, CXR_ERR_NN_NO_DEVICE,
                          "cuda: no CUDA device (cudaGetDeviceCount: %s: %s)", cudaGetErrorName(e),
                          cudaGetErrorString(e));
    }
    if (count < 1)
        return cxr_seterr(err, CXR_ERR_NN_NO_DEVICE,
                          "cuda: no CUDA device (cudaGetDeviceCount found none)");
    if (device >= count)
        return cxr_seterr(err, CXR_ERR_NN_NO_DEVICE,
                          "cuda: CUDA device %d asked for, this machine has %d (0..%d)",
                          (int)device, count, count - 1);
    CXR_CUDA(cudaSetDevice(device), "device");
    CXR_CUDA(cudaGetDeviceProperties(&c->prop, device), "device");
    if (c->prop.major < 7) {
        return cxr_seterr(err, CXR_ERR_NN_NO_DEVICE,
                          "cuda: %s has compute capability %d.%d; tensor cores need 7.0 or "
                          "newer",
                          c->prop.name, c->prop.major, c->prop.minor);
    }
    cudnnStatus_t s = cudnnCreate(&h);
    if (s != CUDNN_STATUS_SUCCESS)
        return cxr_seterr(err, CXR_ERR_NN_NO_DEVICE,
                          "cuda: cuDNN unusable on %s "
                          "(cudnnCreate: %s)",
                          c->prop.name, cudnnGetErrorString(s));
    cudnnDestroy(h);
    c->device = device;
    return CXR_OK;
fail:
    if (st != CXR_OK)
        st = CXR_ERR_NN_NO_DEVICE;
    return st;
}

enum cxr_status cxr_nn_backend_cuda_open(const struct cxr_nn_backend_options *opt,
                                         struct cxr_nn_backend **out, char *err)
{
    enum cxr_status st = CXR_OK;
    struct cxr_nn_backend *b = NULL;
    struct cuda_ctx *c = NULL;
    bool locked = false;
    *out = NULL;
    b = calloc(1, sizeof *b);
    c = calloc(1, sizeof *c);
    if (!b || !c) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "cuda: out of memory");
        goto fail;
    }
    if ((st = probe(c, opt->device, err)) != CXR_OK)
        goto fail;
    enum cxr_nn_precision prec = opt->precision;
    switch (prec) {
    case CXR_NN_PRECISION_AUTO:
        /* fp32 (TF32 tensor cores unless CXR_CUDA_TF32=0), as on the CPU:
         * the operating thresholds were calibrated in fp32 and a score
         * should not depend on which machine computed it more than the
         * parity tests allow. fp16/bf16 are explicit choices (docs/gpu.md). */
        prec = CXR_NN_PRECISION_FP32;
        break;
    case CXR_NN_PRECISION_FP32:
    case CXR_NN_PRECISION_FP16: break;
    case CXR_NN_PRECISION_BF16:
        if (c->prop.major < 8) {
            st = cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                            "cuda: bf16 needs compute capability 8.0 (Ampere) or newer; "
                            "%s is %d.%d: use fp16 or fp32",
                            c->prop.name, c->prop.major, c->prop.minor);
            goto fail;
        }
        break;
    default:
        st = cxr_seterr(err, CXR_ERR_UNSUPPORTED, "cuda: unknown precision %d", (int)prec);
        goto fail;
    }
    c->act = prec == CXR_NN_PRECISION_FP16   ? CK_F16
             : prec == CXR_NN_PRECISION_BF16 ? CK_BF16
                                             : CK_F32;
    c->tf32 = env_long("CXR_CUDA_TF32", 1, 0, 1) != 0 && c->prop.major >= 8;
    c->graphs = env_long("CXR_CUDA_GRAPHS", 1, 0, 1) != 0;
    c->workspace_cap = (size_t)env_long("CXR_CUDA_WORKSPACE_MB", 256, 0, 1 << 20) << 20;
    c->arena_limit = (size_t)env_long("CXR_CUDA_ARENA_LIMIT_MB", 0, 0, 1 << 20) << 20;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        st = cxr_seterr(err, CXR_ERR_INTERNAL, "cuda: cannot create a mutex");
        goto fail;
    }
    locked = true;
    CXR_CUDA(cudaStreamCreateWithFlags(&c->upload, cudaStreamNonBlocking), "upload stream");
    b->iface = &cuda_iface;
    b->kind = CXR_NN_BACKEND_CUDA;
    b->precision = prec;
    b->threads = 1;
    b->context = c;
    char ver[128];
    cxr_nn_backend_cuda_version(ver, sizeof ver);
    snprintf(b->description, sizeof b->description,
             "%.96s, GPU %d: %.64s (sm_%d%d, %.0f GiB), %s%s", ver, (int)c->device, c->prop.name,
             c->prop.major, c->prop.minor, (double)c->prop.totalGlobalMem / (1 << 30),
             cxr_nn_cuda_dtype_name(c->act),
             c->act == CK_F32 ? (c->tf32 ? " (TF32 tensor cores)" : " (no TF32)") : "");
    *out = b;
    return CXR_OK;
fail:
    if (c && c->upload)
        cudaStreamDestroy(c->upload);
    if (locked)
        pthread_mutex_destroy(&c->lock);
    free(c);
    free(b);
    return st;
}
