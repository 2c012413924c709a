// cuda_kernels_train.cu — the CUDA backend's kernels for training: ReLU,
// max pool and global-average-pool backward, batch norm in training mode
// (statistics, normalisation, running update, backward), gradient layout
// conversion, reductions and the optimizer update (see cuda_kernels.h).
// Reductions accumulate per block in float and across blocks in double
// (atomicAdd on doubles), so that sums over millions of rows keep their
// precision.
#include "cuda_kernels_common.cuh"

namespace
{

// ---------------------------------------------------------------- elementwise

template <typename T>
__global__ void k_relu_back(void *dx_, const void *dy_, const void *y_, size_t count, int acc)
{
    T *dx = static_cast<T *>(dx_);
    const T *dy = static_cast<const T *>(dy_), *y = static_cast<const T *>(y_);
    GRID_LOOP(i, count)
    {
        float g = to_f(y[i]) > 0.0f ? to_f(dy[i]) : 0.0f;
        dx[i] = from_f<T>(acc ? to_f(dx[i]) + g : g);
    }
}

template <typename T> __global__ void k_copy_acc(void *y_, const void *x_, size_t count, int acc)
{
    T *y = static_cast<T *>(y_);
    const T *x = static_cast<const T *>(x_);
    GRID_LOOP(i, count) y[i] = acc ? from_f<T>(to_f(y[i]) + to_f(x[i])) : x[i];
}

template <typename T> __global__ void k_from_f32(void *y_, const float *x, size_t count, int acc)
{
    T *y = static_cast<T *>(y_);
    GRID_LOOP(i, count) y[i] = from_f<T>(acc ? to_f(y[i]) + x[i] : x[i]);
}

// Gather: input element (img, iy, ix, c) receives dy of every window that
// covers it and whose first maximum (row-major window order, as the
// forward's strict '>' keeps) is this element.
template <typename T>
__global__ void k_maxpool_back(void *dx_, const void *dy_, const void *x_, int32_t n, int32_t h,
                               int32_t w, int32_t cp, int32_t oh, int32_t ow, int32_t k, int32_t s,
                               int32_t p, int acc)
{
    T *dx = static_cast<T *>(dx_);
    const T *dy = static_cast<const T *>(dy_), *x = static_cast<const T *>(x_);
    size_t total = (size_t)n * h * w * cp;
    GRID_LOOP(i, total)
    {
        int32_t c = (int32_t)(i % cp);
        size_t r = i / cp;
        int32_t ix = (int32_t)(r % w);
        r /= w;
        int32_t iy = (int32_t)(r % h);
        size_t img = r / h;
        const T *xi = x + img * h * w * cp + c;
        float g = 0.0f;
        // output rows/cols whose window contains iy/ix
        int32_t oy0 = (iy + p - k + s) / s, oy1 = (iy + p) / s;
        int32_t ox0 = (ix + p - k + s) / s, ox1 = (ix + p) / s;
        if (iy + p - k + 1 < 0)
            oy0 = 0;
        if (ix + p - k + 1 < 0)
            ox0 = 0;
        for (int32_t oy = oy0 < 0 ? 0 : oy0; oy <= oy1 && oy < oh; oy++)
            for (int32_t ox = ox0 < 0 ? 0 : ox0; ox <= ox1 && ox < ow; ox++) {
                int32_t by = oy * s - p, bx = ox * s - p;
                if (iy < by || iy >= by + k || ix < bx || ix >= bx + k)
                    continue;
                float best = -INFINITY;
                int32_t at = -1;
                for (int32_t ky = 0; ky < k; ky++) {
                    int32_t sy = by + ky;
                    if (sy < 0 || sy >= h)
                        continue;
                    for (int32_t kx = 0; kx < k; kx++) {
                        int32_t sx = bx + kx;
                        if (sx < 0 || sx >= w)
                            continue;
                        float v = to_f(xi[((size_t)sy * w + sx) * cp]);
                        if (v > best || at < 0) {
                            best = v;
                            at = sy * w + sx;
                        }
                    }
                }
                if (at == iy * w + ix)
                    g += to_f(dy[((img * oh + oy) * ow + ox) * cp + c]);
            }
        dx[i] = from_f<T>(acc ? to_f(dx[i]) + g : g);
    }
}

template <typename T>
__global__ void k_gap_back(void *dx_, const void *dy_, int32_t n, int32_t hw, int32_t cp, int acc)
{
    T *dx = static_cast<T *>(dx_);
    const T *dy = static_cast<const T *>(dy_);
    size_t total = (size_t)n * hw * cp;
    GRID_LOOP(i, total)
    {
        int32_t c = (int32_t)(i % cp);
        size_t img = i / cp / hw;
        float g = to_f(dy[img * cp + c]) / (float)hw;
        dx[i] = from_f<T>(acc ? to_f(dx[i]) + g : g);
    }
}

// ---------------------------------------------------------------- reductions

// Per-channel sums over rows: block (32 channels x 8 row lanes); the grid's
// y dimension splits the rows. mode 0: sum x; 1: sum (x - mean)^2;
// 2: sum dy and sum dy * xhat (two accumulators).
const int kRowLanes = 8;

template <typename T>
__global__ void k_chan_sums(double *acc0, double *acc1, const void *x_, const void *dy_,
                            const float *mean, const float *invstd, size_t rows, int32_t c,
                            int32_t cp, int mode)
{
    const T *x = static_cast<const T *>(x_), *dy = static_cast<const T *>(dy_);
    __shared__ float s0[kRowLanes][32], s1[kRowLanes][32];
    int32_t ch = blockIdx.x * 32 + threadIdx.x;
    float a0 = 0.0f, a1 = 0.0f;
    if (ch < c) {
        float m = mode ? mean[ch] : 0.0f, is = mode == 2 ? invstd[ch] : 0.0f;
        for (size_t r = (size_t)blockIdx.y * kRowLanes + threadIdx.y; r < rows;
             r += (size_t)gridDim.y * kRowLanes) {
            float v = to_f(x[r * cp + ch]);
            if (mode == 0) {
                a0 += v;
            } else if (mode == 1) {
                a0 += (v - m) * (v - m);
            } else {
                float g = to_f(dy[r * cp + ch]);
                a0 += g;
                a1 += g * (v - m) * is;
            }
        }
    }
    s0[threadIdx.y][threadIdx.x] = a0;
    s1[threadIdx.y][threadIdx.x] = a1;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        double t0 = 0.0, t1 = 0.0;
        for (int j = 0; j < kRowLanes; j++) {
            t0 += s0[j][threadIdx.x];
            t1 += s1[j][threadIdx.x];
        }
        atomicAdd(&acc0[ch], t0);
        if (mode == 2)
            atomicAdd(&acc1[ch], t1);
    }
}

// scratch layout: mean, var, invstd, a, b (f32 x cp), then sum0, sum1 (double x cp)
struct bn_view {
    float *mean, *var, *invstd, *a, *b;
    double *sum0, *sum1;
};

__host__ __device__ inline bn_view bn_scratch(void *scratch, int32_t cp)
{
    bn_view v;
    float *f = static_cast<float *>(scratch);
    v.mean = f;
    v.var = f + cp;
    v.invstd = f + 2 * cp;
    v.a = f + 3 * cp;
    v.b = f + 4 * cp;
    v.sum0 = reinterpret_cast<double *>(f + 5 * cp);
    v.sum1 = v.sum0 + cp;
    return v;
}

__global__ void k_bn_mean(bn_view v, size_t rows, int32_t c)
{
    GRID_LOOP(ch, c) v.mean[ch] = (float)(v.sum0[ch] / (double)rows);
}

__global__ void k_bn_finish(bn_view v, size_t rows, int32_t c, int32_t cp, float eps,
                            const float *gamma, const float *beta, const float *run_mean,
                            const float *run_var, int frozen)
{
    GRID_LOOP(ch, cp)
    {
        if ((int32_t)ch >= c) {
            v.mean[ch] = v.var[ch] = v.invstd[ch] = v.a[ch] = v.b[ch] = 0.0f;
            continue;
        }
        float mean, var;
        if (frozen) {
            mean = run_mean[ch];
            var = run_var[ch];
        } else {
            mean = v.mean[ch];
            var = (float)(v.sum0[ch] / (double)rows);
        }
        float is = rsqrtf(var + eps);
        v.mean[ch] = mean;
        v.var[ch] = var;
        v.invstd[ch] = is;
        v.a[ch] = gamma[ch] * is;
        v.b[ch] = beta[ch] - mean * gamma[ch] * is;
    }
}

template <typename T>
__global__ void k_bn_apply(void *y_, const void *x_, bn_view v, size_t vecs, int32_t cp)
{
    const int V = vec16<T>::n;
    int32_t groups = cp / V;
    GRID_LOOP(i, vecs)
    {
        int32_t c0 = (int32_t)(i % groups) * V;
        vec16<T> in = load16<T>(x_, i), o;
        for (int j = 0; j < V; j++)
            o.v[j] = from_f<T>(to_f(in.v[j]) * v.a[c0 + j] + v.b[c0 + j]);
        store16<T>(y_, i, o);
    }
}

__global__ void k_bn_running(float *run_mean, float *run_var, bn_view v, float m, size_t rows,
                             int32_t c)
{
    double unbias = rows > 1 ? (double)rows / (double)(rows - 1) : 1.0;
    GRID_LOOP(ch, c)
    {
        run_mean[ch] = (1.0f - m) * run_mean[ch] + m * v.mean[ch];
        run_var[ch] = (1.0f - m) * run_var[ch] + m * (float)((double)v.var[ch] * unbias);
    }
}

// sum0 = sum dy, sum1 = sum dy * xhat (per channel) -> dgamma/dbeta and
// the coefficients of dx = a * (dy - (sum0 + xhat * sum1) / rows).
__global__ void k_bn_back_finish(bn_view v, float *dgamma, float *dbeta, const float *gamma,
                                 int32_t c, float gscale)
{
    GRID_LOOP(ch, c)
    {
        if (dgamma)
            dgamma[ch] = (float)v.sum1[ch] * gscale;
        if (dbeta)
            dbeta[ch] = (float)v.sum0[ch] * gscale;
        v.a[ch] = gamma[ch] * v.invstd[ch];
    }
}

template <typename T>
__global__ void k_bn_back_dx(void *dx_, const void *dy_, const void *x_, bn_view v, size_t rows,
                             int32_t c, int32_t cp, int frozen, int acc)
{
    T *dx = static_cast<T *>(dx_);
    const T *dy = static_cast<const T *>(dy_), *x = static_cast<const T *>(x_);
    size_t total = rows * cp;
    double inv_rows = 1.0 / (double)rows;
    GRID_LOOP(i, total)
    {
        int32_t ch = (int32_t)(i % cp);
        float g = 0.0f;
        if (ch < c) {
            float d = to_f(dy[i]);
            if (frozen) {
                g = d * v.a[ch];
            } else {
                float xhat = (to_f(x[i]) - v.mean[ch]) * v.invstd[ch];
                float mdy = (float)(v.sum0[ch] * inv_rows), mdyx = (float)(v.sum1[ch] * inv_rows);
                g = v.a[ch] * (d - mdy - xhat * mdyx);
            }
        }
        dx[i] = from_f<T>(acc ? to_f(dx[i]) + g : g);
    }
}

template <typename T>
__global__ void k_conv_grad(float *dst, const void *src_, int32_t o, int32_t ci, int32_t ip,
                            int32_t kh, int32_t kw, float scale)
{
    const T *src = static_cast<const T *>(src_);
    size_t total = (size_t)o * ci * kh * kw;
    GRID_LOOP(idx, total)
    {
        int32_t x = (int32_t)(idx % kw);
        size_t r = idx / kw;
        int32_t y = (int32_t)(r % kh);
        r /= kh;
        int32_t i = (int32_t)(r % ci);
        int32_t k = (int32_t)(r / ci);
        dst[idx] = to_f(src[(((size_t)k * kh + y) * kw + x) * ip + i]) * scale;
    }
}

__global__ void k_nonfinite(int32_t *flag, const float *x, size_t count)
{
    GRID_LOOP(i, count)
    {
        if (!isfinite(x[i]))
            *flag = 1;
    }
}

__global__ void k_scale(float *x, float s, size_t count) { GRID_LOOP(i, count) x[i] *= s; }

__global__ void k_sumsq(double *out, const float *x, size_t count)
{
    __shared__ double part[256];
    double a = 0.0;
    GRID_LOOP(i, count) a += (double)x[i] * (double)x[i];
    part[threadIdx.x] = a;
    __syncthreads();
    for (int st = blockDim.x / 2; st > 0; st >>= 1) {
        if ((int)threadIdx.x < st)
            part[threadIdx.x] += part[threadIdx.x + st];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        atomicAdd(out, part[0]);
}

__global__ void k_optim(float *p, const float *grad, float *s0, float *s1, size_t count,
                        ck_optim_args h)
{
    GRID_LOOP(i, count)
    {
        float g = grad[i] * h.scale;
        if (h.adamw) {
            float w = p[i] * h.decay;
            float m = s0[i] * h.b1 + h.one_b1 * g;
            float v = s1[i] * h.b2 + h.one_b2 * g * g;
            s0[i] = m;
            s1[i] = v;
            p[i] = w - h.step_size * (m / (sqrtf(v) / h.bc2_sqrt + h.eps));
        } else {
            float d = g + h.wd * p[i];
            if (h.mom != 0.0f) {
                float b = h.first ? d : h.mom * s0[i] + d;
                s0[i] = b;
                d = h.nesterov ? d + h.mom * b : b;
            }
            p[i] -= h.lr * d;
        }
    }
}

// Grid for the per-channel reductions: enough row blocks to fill the GPU.
dim3 chan_grid(size_t rows, int32_t c)
{
    unsigned cx = (unsigned)((c + 31) / 32);
    size_t want = 2048 / (cx ? cx : 1) + 1;
    size_t by = (rows + kRowLanes * 64 - 1) / (kRowLanes * 64); // >= 64 rows per lane
    if (by > want)
        by = want;
    if (by < 1)
        by = 1;
    if (by > 65535)
        by = 65535;
    return dim3(cx, (unsigned)by);
}

#define CHAN_SUMS(dt, ...)                                                                   \
    do {                                                                                     \
        dim3 grid_ = chan_grid(rows, c), block_(32, kRowLanes);                              \
        switch (dt) {                                                                        \
        case CK_F32: k_chan_sums<float><<<grid_, block_, 0, stream>>>(__VA_ARGS__); break;   \
        case CK_F16: k_chan_sums<__half><<<grid_, block_, 0, stream>>>(__VA_ARGS__); break;  \
        case CK_BF16: k_chan_sums<__nv_bfloat16><<<grid_, block_, 0, stream>>>(__VA_ARGS__); \
            break;                                                                           \
        default: return cudaErrorInvalidValue;                                               \
        }                                                                                    \
        cudaError_t e_ = cudaGetLastError();                                                 \
        if (e_ != cudaSuccess)                                                               \
            return e_;                                                                       \
    } while (0)

} // namespace

extern "C" cudaError_t ck_relu_back(void *dx, const void *dy, const void *y, enum ck_dtype dt,
                                    size_t count, int acc, cudaStream_t stream)
{
    DISPATCH(dt, k_relu_back, blocks_for(count), dx, dy, y, count, acc);
}

extern "C" cudaError_t ck_copy_acc(void *y, const void *x, enum ck_dtype dt, size_t count, int acc,
                                   cudaStream_t stream)
{
    DISPATCH(dt, k_copy_acc, blocks_for(count), y, x, count, acc);
}

extern "C" cudaError_t ck_from_f32(void *y, const float *x, enum ck_dtype dt, size_t count, int acc,
                                   cudaStream_t stream)
{
    DISPATCH(dt, k_from_f32, blocks_for(count), y, x, count, acc);
}

extern "C" cudaError_t ck_maxpool_back(void *dx, const void *dy, const void *x, enum ck_dtype dt,
                                       int32_t n, int32_t h, int32_t w, int32_t cp, int32_t oh,
                                       int32_t ow, int32_t k, int32_t s, int32_t p, int acc,
                                       cudaStream_t stream)
{
    DISPATCH(dt, k_maxpool_back, blocks_for((size_t)n * h * w * cp), dx, dy, x, n, h, w, cp, oh, ow,
             k, s, p, acc);
}

extern "C" cudaError_t ck_gap_back(void *dx, const void *dy, enum ck_dtype dt, int32_t n,
                                   int32_t hw, int32_t cp, int acc, cudaStream_t stream)
{
    DISPATCH(dt, k_gap_back, blocks_for((size_t)n * hw * cp), dx, dy, n, hw, cp, acc);
}

extern "C" cudaError_t ck_bn_stats(void *scratch, const void *x, enum ck_dtype dt, size_t rows,
                                   int32_t c, int32_t cp, float eps, const float *gamma,
                                   const float *beta, const float *run_mean, const float *run_var,
                                   int frozen, cudaStream_t stream)
{
    bn_view v = bn_scratch(scratch, cp);
    if (!frozen) {
        cudaError_t e = cudaMemsetAsync(v.sum0, 0, 2 * (size_t)cp * sizeof(double), stream);
        if (e != cudaSuccess)
            return e;
        CHAN_SUMS(dt, v.sum0, v.sum1, x, x, v.mean, v.invstd, rows, c, cp, 0);
        k_bn_mean<<<blocks_for((size_t)c), kThreads, 0, stream>>>(v, rows, c);
        e = cudaMemsetAsync(v.sum0, 0, (size_t)cp * sizeof(double), stream);
        if (e != cudaSuccess)
            return e;
        CHAN_SUMS(dt, v.sum0, v.sum1, x, x, v.mean, v.invstd, rows, c, cp, 1);
    }
    k_bn_finish<<<blocks_for((size_t)cp), kThreads, 0, stream>>>(v, rows, c, cp, eps, gamma, beta,
                                                                 run_mean, run_var, frozen);
    return cudaGetLastError();
}

extern "C" cudaError_t ck_bn_apply(void *y, const void *x, enum ck_dtype dt, const void *scratch,
                                   size_t rows, int32_t cp, cudaStream_t stream)
{
    bn_view v = bn_scratch(const_cast<void *>(scratch), cp);
    size_t vecs = rows * (size_t)cp * ck_size(dt) / 16;
    DISPATCH(dt, k_bn_apply, blocks_for(vecs), y, x, v, vecs, cp);
}

extern "C" cudaError_t ck_bn_running(float *run_mean, float *run_var, const void *scratch,
                                     float momentum, size_t rows, int32_t c, int32_t cp,
                                     cudaStream_t stream)
{
    bn_view v = bn_scratch(const_cast<void *>(scratch), cp);
    k_bn_running<<<blocks_for((size_t)c), kThreads, 0, stream>>>(run_mean, run_var, v, momentum,
                                                                 rows, c);
    return cudaGetLastError();
}

extern "C" cudaError_t ck_bn_back(void *dx, float *dgamma, float *dbeta, const void *dy,
                                  const void *x, enum ck_dtype dt, void *scratch,
                                  const float *gamma, size_t rows, int32_t c, int32_t cp,
                                  int frozen, float gscale, int acc, cudaStream_t stream)
{
    bn_view v = bn_scratch(scratch, cp);
    cudaError_t e = cudaMemsetAsync(v.sum0, 0, 2 * (size_t)cp * sizeof(double), stream);
    if (e != cudaSuccess)
        return e;
    CHAN_SUMS(dt, v.sum0, v.sum1, x, dy, v.mean, v.invstd, rows, c, cp, 2);
    k_bn_back_finish<<<blocks_for((size_t)c), kThreads, 0, stream>>>(v, dgamma, dbeta, gamma, c,
                                                                     gscale);
    e = cudaGetLastError();
    if (e != cudaSuccess || !dx)
        return e;
    DISPATCH(dt, k_bn_back_dx, blocks_for(rows * cp), dx, dy, x, v, rows, c, cp, frozen, acc);
}

__global__ void k_colsum_finish(float *out, const double *sum, int32_t c, float scale)
{
    GRID_LOOP(j, c) out[j] = (float)sum[j] * scale;
}

extern "C" cudaError_t ck_colsum(float *out, double *tmp, const void *x, enum ck_dtype dt,
                                 size_t rows, int32_t c, int32_t cp, float scale,
                                 cudaStream_t stream)
{
    cudaError_t e = cudaMemsetAsync(tmp, 0, (size_t)c * sizeof(double), stream);
    if (e != cudaSuccess)
        return e;
    CHAN_SUMS(dt, tmp, tmp, x, x, nullptr, nullptr, rows, c, cp, 0);
    k_colsum_finish<<<blocks_for((size_t)c), kThreads, 0, stream>>>(out, tmp, c, scale);
    return cudaGetLastError();
}

extern "C" cudaError_t ck_conv_grad(float *dst, const void *src, enum ck_dtype dt, int32_t o,
                                    int32_t i, int32_t ip, int32_t kh, int32_t kw, float scale,
                                    cudaStream_t stream)
{
    DISPATCH(dt, k_conv_grad, blocks_for((size_t)o * i * kh * kw), dst, src, o, i, ip, kh, kw,
             scale);
}

extern "C" cudaError_t ck_nonfinite(int32_t *flag, const float *x, size_t count,
                                    cudaStream_t stream)
{
    k_nonfinite<<<blocks_for(count), kThreads, 0, stream>>>(flag, x, count);
    return cudaGetLastError();
}

extern "C" cudaError_t ck_scale(float *x, float s, size_t count, cudaStream_t stream)
{
    k_scale<<<blocks_for(count), kThreads, 0, stream>>>(x, s, count);
    return cudaGetLastError();
}

extern "C" cudaError_t ck_sumsq(double *out, const float *x, size_t count, cudaStream_t stream)
{
    unsigned g = blocks_for(count);
    unsigned nb = g > 1024 ? 1024 : g;
    k_sumsq<<<nb, kThreads, 0, stream>>>(out, x, count);
    return cudaGetLastError();
}

extern "C" cudaError_t ck_optim(float *p, const float *grad, float *s0, float *s1, size_t count,
                                const struct ck_optim_args *h, cudaStream_t stream)
{
    k_optim<<<blocks_for(count), kThreads, 0, stream>>>(p, grad, s0, s1, count, *h);
    return cudaGetLastError();
}
