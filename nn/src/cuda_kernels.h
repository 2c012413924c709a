/* cuda_kernels.h (internal to the CUDA backend) — the small CUDA kernels
 * cuDNN and cuBLAS do not cover, as C-callable launchers (cuda_kernels.cu).
 *
 * Layouts: activations are NHWC with the channel count padded to a multiple
 * of 8 ("cp"; padded channels hold zeros), in the plan's activation type;
 * buffers are 256-byte aligned, so the elementwise kernels move 16 bytes
 * per thread. Every launcher enqueues on `stream`, returns at once and
 * reports launch errors (cudaGetLastError) as its result; none
 * synchronizes. Sizes are checked by the callers.
 */
#ifndef CXR_NN_CUDA_KERNELS_H
#define CXR_NN_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

enum ck_dtype { CK_F32 = 0, CK_F16 = 1, CK_BF16 = 2 };

static inline size_t ck_size(enum ck_dtype t) { return t == CK_F32 ? 4 : 2; }

/* ---- layout and type conversion */

/* src NCHW f32 (c channels) -> dst NHWC (cp channels, zeros beyond c). */
cudaError_t ck_nchw_to_nhwc(void *dst, enum ck_dtype dt, const float *src, int32_t n, int32_t c,
                            int32_t cp, int32_t hw, cudaStream_t stream);
/* src NHWC (cp channels) -> dst NCHW f32 (the first c channels). */
cudaError_t ck_nhwc_to_nchw(float *dst, const void *src, enum ck_dtype dt, int32_t n, int32_t c,
                            int32_t cp, int32_t hw, cudaStream_t stream);
/* Conv weight OIHW f32 [o][i][kh][kw] -> [op][kh][kw][ip] (zero padded). */
cudaError_t ck_conv_weight(void *dst, enum ck_dtype dt, const float *src, int32_t o, int32_t op,
                           int32_t i, int32_t ip, int32_t kh, int32_t kw, cudaStream_t stream);
/* Vector f32 [n] -> [np] (zero padded) of type dt. */
cudaError_t ck_vec(void *dst, enum ck_dtype dt, const float *src, int32_t n, int32_t np,
                   cudaStream_t stream);
/* Matrix f32 [rows][cols] -> [rows][cp] of type dt (zero padded columns). */
cudaError_t ck_matrix(void *dst, enum ck_dtype dt, const float *src, int32_t rows, int32_t cols,
                      int32_t cp, cudaStream_t stream);
/* Any type -> f32, element by element (count elements). */
cudaError_t ck_to_f32(float *dst, const void *src, enum ck_dtype dt, size_t count,
                      cudaStream_t stream);

/* ---- inference ops (NHWC, cp channels, dt) */

/* Max pool, kernel k, stride s, padding p (padding never wins). */
cudaError_t ck_maxpool(void *y, const void *x, enum ck_dtype dt, int32_t n, int32_t h, int32_t w,
                       int32_t cp, int32_t oh, int32_t ow, int32_t k, int32_t s, int32_t p,
                       cudaStream_t stream);
/* y = a + b, then max(., 0) when relu; count elements (a multiple of 8). */
cudaError_t ck_add(void *y, const void *a, const void *b, enum ck_dtype dt, size_t count, int relu,
                   cudaStream_t stream);
/* y = max(x, 0). */
cudaError_t ck_relu(void *y, const void *x, enum ck_dtype dt, size_t count, cudaStream_t stream);
/* Conv epilogue when cuDNN's fused call is not available for a
 * configuration: y = act(y + bias[ch] + z) in place, z may be NULL;
 * rows = n*h*w, cp channels, bias of type dt. */
cudaError_t ck_bias_act(void *y, const void *bias, const void *z, enum ck_dtype dt, size_t rows,
                        int32_t cp, int relu, cudaStream_t stream);
/* Global average pool: y[n][cp] = mean over hw of x[n][hw][cp]. */
cudaError_t ck_gap(void *y, const void *x, enum ck_dtype dt, int32_t n, int32_t hw, int32_t cp,
                   cudaStream_t stream);
/* y[r][j] = bias[j] (f32), to be followed by a GEMM with beta = 1. */
cudaError_t ck_bias_rows(float *y, const float *bias, int32_t rows, int32_t cols,
                         cudaStream_t stream);
/* Softmax of each row of k logits (f32), max-subtracted, in float. */
cudaError_t ck_softmax_rows(float *probs, const float *logits, int32_t rows, int32_t k,
                            cudaStream_t stream);

/* ---- preprocessing of an 8-bit presentation image (see preprocess.c for
 * the reference: antialiased triangle filter as PIL / torch antialias,
 * vertical pass then horizontal, letterbox border black, then
 * (v/255 - mean)/std per channel). tmp holds oh x width floats; out is
 * C x H x W f32 on the device. */
struct ck_preprocess {
    int32_t width, height, stride; /* source */
    int32_t H, W, C;               /* model input */
    int32_t oh, ow, top, left;     /* resized area inside H x W */
    float mean[3], std[3];
};
cudaError_t ck_preprocess_u8(float *out, float *tmp, const uint8_t *px, const uint8_t *mask,
                             const struct ck_preprocess *pp, cudaStream_t stream);

/* ---- training (cuda_kernels_train.cu). NHWC activations of c real and cp
 * padded channels; per-channel vectors f32; `acc` nonzero adds into the
 * destination instead of overwriting it (a value read by several ops). */

/* dx (+)= dy where y > 0 (ReLU backward from its output y). */
cudaError_t ck_relu_back(void *dx, const void *dy, const void *y, enum ck_dtype dt, size_t count,
                         int acc, cudaStream_t stream);
/* Max pool backward: each input element gets the dy of the windows whose
 * first maximum it is (gathered, deterministic). */
cudaError_t ck_maxpool_back(void *dx, const void *dy, const void *x, enum ck_dtype dt, int32_t n,
                            int32_t h, int32_t w, int32_t cp, int32_t oh, int32_t ow, int32_t k,
                            int32_t s, int32_t p, int acc, cudaStream_t stream);
/* GAP backward: dx[n][hw][c] (+)= dy[n][c] / hw. */
cudaError_t ck_gap_back(void *dx, const void *dy, enum ck_dtype dt, int32_t n, int32_t hw,
                        int32_t cp, int acc, cudaStream_t stream);
/* y (+)= x, count elements (a multiple of 8). */
cudaError_t ck_copy_acc(void *y, const void *x, enum ck_dtype dt, size_t count, int acc,
                        cudaStream_t stream);
/* f32 -> dt, (+)=, count elements. */
cudaError_t ck_from_f32(void *y, const float *x, enum ck_dtype dt, size_t count, int acc,
                        cudaStream_t stream);

/* Batch-norm scratch per bn op, f32: mean, var (biased), invstd, a, b
 * (5 x cp) then 2 x cp doubles of accumulators. */
#define CK_BN_SCRATCH(cp) ((size_t)(cp) * (5 * sizeof(float) + 2 * sizeof(double)))
/* Training forward statistics of x (rows x cp): mean, biased var, invstd =
 * 1/sqrt(var + eps), then a = gamma * invstd, b = beta - mean * a (zero for
 * padded channels). With `frozen`, mean/var come from run_mean/run_var. */
cudaError_t ck_bn_stats(void *scratch, const void *x, enum ck_dtype dt, size_t rows, int32_t c,
                        int32_t cp, float eps, const float *gamma, const float *beta,
                        const float *run_mean, const float *run_var, int frozen,
                        cudaStream_t stream);
/* y = x * a[ch] + b[ch] (the normalisation with the scratch's a and b). */
cudaError_t ck_bn_apply(void *y, const void *x, enum ck_dtype dt, const void *scratch, size_t rows,
                        int32_t cp, cudaStream_t stream);
/* running = (1 - m) running + m batch (variance made unbiased: x rows/(rows-1)). */
cudaError_t ck_bn_running(float *run_mean, float *run_var, const void *scratch, float momentum,
                          size_t rows, int32_t c, int32_t cp, cudaStream_t stream);
/* Batch-norm backward: dgamma = sum dy*xhat, dbeta = sum dy (each times
 * gscale, written to dgamma/dbeta when not NULL), dx (+)= as PyTorch's
 * (batch statistics) or dy * gamma * invstd (frozen); dx may be NULL. */
cudaError_t ck_bn_back(void *dx, float *dgamma, float *dbeta, const void *dy, const void *x,
                       enum ck_dtype dt, void *scratch, const float *gamma, size_t rows, int32_t c,
                       int32_t cp, int frozen, float gscale, int acc, cudaStream_t stream);
/* out[j] = scale * sum over rows of x[r][j], j < c (x has cp columns);
 * tmp: c doubles of device scratch. */
cudaError_t ck_colsum(float *out, double *tmp, const void *x, enum ck_dtype dt, size_t rows,
                      int32_t c, int32_t cp, float scale, cudaStream_t stream);
/* Conv weight gradient [op][kh][kw][ip] (dt) -> OIHW f32, times scale. */
cudaError_t ck_conv_grad(float *dst, const void *src, enum ck_dtype dt, int32_t o, int32_t i,
                         int32_t ip, int32_t kh, int32_t kw, float scale, cudaStream_t stream);
/* *flag = 1 when any of count f32 is not finite (flag not cleared here). */
cudaError_t ck_nonfinite(int32_t *flag, const float *x, size_t count, cudaStream_t stream);
/* x *= s, count f32. */
cudaError_t ck_scale(float *x, float s, size_t count, cudaStream_t stream);
/* *out += sum of x^2 (double accumulation). */
cudaError_t ck_sumsq(double *out, const float *x, size_t count, cudaStream_t stream);

/* One optimizer update, elementwise, as optim.c's cxr_nn_optim_apply. */
struct ck_optim_args {
    int adamw;
    float scale;                                                   /* gradient scale (clipping) */
    float decay, b1, b2, one_b1, one_b2, step_size, bc2_sqrt, eps; /* AdamW */
    float lr, wd, mom;                                             /* SGD */
    int first, nesterov;                                           /* SGD */
};
cudaError_t ck_optim(float *p, const float *grad, float *s0, float *s1, size_t count,
                     const struct ck_optim_args *h, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
