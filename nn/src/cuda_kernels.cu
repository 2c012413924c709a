// cuda_kernels.cu — the CUDA backend's own kernels for inference: layout and
// type conversion, max pool, add, ReLU, the conv epilogue fallback, global
// average pool, softmax and the preprocessing of an 8-bit image (see
// cuda_kernels.h for the contracts). Plain CUDA C style: templates only to
// instantiate one kernel per element type.

#include "cuda_kernels_common.cuh"

namespace
{

// ---------------------------------------------------------------- conversion

template <typename T>
__global__ void k_nchw_to_nhwc(void *dst_, const float *src, int32_t n, int32_t c, int32_t cp,
                               int32_t hw)
{
    T *dst = static_cast<T *>(dst_);
    size_t total = (size_t)n * hw * cp;
    GRID_LOOP(i, total)
    {
        int32_t ch = (int32_t)(i % cp);
        size_t pix = i / cp;
        size_t img = pix / hw, at = pix % hw;
        float v = ch < c ? src[(img * c + ch) * hw + at] : 0.0f;
        dst[i] = from_f<T>(v);
    }
}

template <typename T>
__global__ void k_nhwc_to_nchw(float *dst, const void *src_, int32_t n, int32_t c, int32_t cp,
                               int32_t hw)
{
    const T *src = static_cast<const T *>(src_);
    size_t total = (size_t)n * c * hw;
    GRID_LOOP(i, total)
    {
        size_t at = i % hw, rest = i / hw;
        int32_t ch = (int32_t)(rest % c);
        size_t img = rest / c;
        dst[i] = to_f(src[(img * hw + at) * cp + ch]);
    }
}

template <typename T>
__global__ void k_conv_weight(void *dst_, const float *src, int32_t o, int32_t op, int32_t ci,
                              int32_t ip, int32_t kh, int32_t kw)
{
    T *dst = static_cast<T *>(dst_);
    size_t total = (size_t)op * kh * kw * ip;
    GRID_LOOP(idx, total)
    {
        int32_t i = (int32_t)(idx % ip);
        size_t r = idx / ip;
        int32_t x = (int32_t)(r % kw);
        r /= kw;
        int32_t y = (int32_t)(r % kh);
        int32_t k = (int32_t)(r / kh);
        float v = (k < o && i < ci) ? src[(((size_t)k * ci + i) * kh + y) * kw + x] : 0.0f;
        dst[idx] = from_f<T>(v);
    }
}

template <typename T>
__global__ void k_matrix(void *dst_, const float *src, int32_t rows, int32_t cols, int32_t cp)
{
    T *dst = static_cast<T *>(dst_);
    size_t total = (size_t)rows * cp;
    GRID_LOOP(i, total)
    {
        int32_t c = (int32_t)(i % cp);
        size_t r = i / cp;
        dst[i] = from_f<T>(c < cols ? src[r * cols + c] : 0.0f);
    }
}

template <typename T> __global__ void k_to_f32(float *dst, const void *src_, size_t count)
{
    const T *src = static_cast<const T *>(src_);
    GRID_LOOP(i, count) dst[i] = to_f(src[i]);
}

// ---------------------------------------------------------------- inference ops

// One thread per 16-byte channel group of one output pixel.
template <typename T>
__global__ void k_maxpool(void *y_, const void *x_, int32_t n, int32_t h, int32_t w, int32_t cp,
                          int32_t oh, int32_t ow, int32_t k, int32_t s, int32_t p)
{
    T *y = static_cast<T *>(y_);
    const T *x = static_cast<const T *>(x_);
    const int V = vec16<T>::n;
    int32_t groups = cp / V;
    size_t total = (size_t)n * oh * ow * groups;
    GRID_LOOP(i, total)
    {
        int32_t g = (int32_t)(i % groups);
        size_t r = i / groups;
        int32_t ox = (int32_t)(r % ow);
        r /= ow;
        int32_t oy = (int32_t)(r % oh);
        size_t img = r / oh;
        float best[vec16<T>::n];
        for (int j = 0; j < V; j++)
            best[j] = -INFINITY;
        for (int32_t ky = 0; ky < k; ky++) {
            int32_t sy = oy * s - p + ky;
            if (sy < 0 || sy >= h)
                continue;
            for (int32_t kx = 0; kx < k; kx++) {
                int32_t sx = ox * s - p + kx;
                if (sx < 0 || sx >= w)
                    continue;
                size_t at = ((img * h + sy) * w + sx) * groups + g;
                vec16<T> v = load16<T>(x, at);
                for (int j = 0; j < V; j++)
                    best[j] = fmaxf(best[j], to_f(v.v[j]));
            }
        }
        vec16<T> o;
        for (int j = 0; j < V; j++)
            o.v[j] = from_f<T>(best[j]);
        store16<T>(y, i, o);
    }
}

template <typename T>
__global__ void k_add(void *y_, const void *a_, const void *b_, size_t vecs, int relu)
{
    T *y = static_cast<T *>(y_);
    const T *a = static_cast<const T *>(a_);
    const T *b = static_cast<const T *>(b_);
    const int V = vec16<T>::n;
    GRID_LOOP(i, vecs)
    {
        vec16<T> va = load16<T>(a, i), vb = load16<T>(b, i), o;
        for (int j = 0; j < V; j++) {
            float v = to_f(va.v[j]) + to_f(vb.v[j]);
            o.v[j] = from_f<T>(relu && v < 0.0f ? 0.0f : v);
        }
        store16<T>(y, i, o);
    }
}

template <typename T> __global__ void k_relu(void *y_, const void *x_, size_t vecs)
{
    T *y = static_cast<T *>(y_);
    const T *x = static_cast<const T *>(x_);
    const int V = vec16<T>::n;
    GRID_LOOP(i, vecs)
    {
        vec16<T> v = load16<T>(x, i), o;
        for (int j = 0; j < V; j++) {
            float f = to_f(v.v[j]);
            o.v[j] = from_f<T>(f > 0.0f ? f : 0.0f);
        }
        store16<T>(y, i, o);
    }
}

template <typename T>
__global__ void k_bias_act(void *y_, const void *bias_, const void *z_, size_t vecs, int32_t cp,
                           int relu)
{
    T *y = static_cast<T *>(y_);
    const T *bias = static_cast<const T *>(bias_);
    const T *z = static_cast<const T *>(z_);
    const int V = vec16<T>::n;
    int32_t groups = cp / V;
    GRID_LOOP(i, vecs)
    {
        int32_t c0 = (int32_t)(i % groups) * V;
        vec16<T> v = load16<T>(y, i), o;
        vec16<T> vz;
        if (z)
            vz = load16<T>(z, i);
        for (int j = 0; j < V; j++) {
            float f = to_f(v.v[j]) + to_f(bias[c0 + j]);
            if (z)
                f += to_f(vz.v[j]);
            o.v[j] = from_f<T>(relu && f < 0.0f ? 0.0f : f);
        }
        store16<T>(y, i, o);
    }
}

// One thread per (image, channel): threads of a block run along channels,
// so each step of the loop reads consecutive addresses.
template <typename T>
__global__ void k_gap(void *y_, const void *x_, int32_t n, int32_t hw, int32_t cp)
{
    T *y = static_cast<T *>(y_);
    const T *x = static_cast<const T *>(x_);
    size_t total = (size_t)n * cp;
    GRID_LOOP(i, total)
    {
        int32_t c = (int32_t)(i % cp);
        size_t img = i / cp;
        const T *p = x + img * hw * cp + c;
        float acc = 0.0f;
        for (int32_t k = 0; k < hw; k++)
            acc += to_f(p[(size_t)k * cp]);
        y[i] = from_f<T>(acc / (float)hw);
    }
}

__global__ void k_bias_rows(float *y, const float *bias, int32_t rows, int32_t cols)
{
    GRID_LOOP(i, (size_t)rows * cols) y[i] = bias[i % cols];
}

__global__ void k_softmax_rows(float *probs, const float *logits, int32_t rows, int32_t k)
{
    GRID_LOOP(r, rows)
    {
        const float *l = logits + r * k;
        float *p = probs + r * k;
        float m = -INFINITY;
        for (int32_t j = 0; j < k; j++)
            m = fmaxf(m, l[j]);
        float sum = 0.0f;
        for (int32_t j = 0; j < k; j++)
            sum += __expf(l[j] - m);
        for (int32_t j = 0; j < k; j++)
            p[j] = __expf(l[j] - m) / sum;
    }
}

// ---------------------------------------------------------------- preprocessing

// The taps of output index i on an axis of `in` pixels resized to `out`
// (preprocess.c's axis_make, computed in double as there).
struct taps {
    int32_t lo, n;
    double center, invscale;
};

__device__ taps axis_taps(int32_t in, int32_t out, int32_t i)
{
    double scale = (double)in / (double)out;
    double support = scale >= 1.0 ? scale : 1.0;
    taps t;
    t.invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    t.center = scale * (i + 0.5);
    long long lo = (long long)(t.center - support + 0.5);
    long long hi = (long long)(t.center + support + 0.5);
    if (lo < 0)
        lo = 0;
    if (hi > in)
        hi = in;
    int32_t max_taps = (int32_t)ceil(support) * 2 + 1;
    t.lo = (int32_t)lo;
    t.n = (int32_t)(hi - lo) < max_taps ? (int32_t)(hi - lo) : max_taps;
    return t;
}

__device__ __forceinline__ double tri(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

__device__ float tap_weight(const taps &t, int32_t j, double total)
{
    double wj = tri(((double)(j + t.lo) - t.center + 0.5) * t.invscale);
    return (float)(total != 0.0 ? wj / total : wj);
}

__device__ double tap_total(const taps &t)
{
    double total = 0.0;
    for (int32_t j = 0; j < t.n; j++)
        total += tri(((double)(j + t.lo) - t.center + 0.5) * t.invscale);
    return total;
}

// tmp[r][x] = sum_k w_k * px[lo + k][x]  (masked pixels count as 0)
__global__ void k_resize_vertical(float *tmp, const uint8_t *px, const uint8_t *mask,
                                  ck_preprocess pp)
{
    GRID_LOOP(i, (size_t)pp.oh * pp.width)
    {
        int32_t x = (int32_t)(i % pp.width), r = (int32_t)(i / pp.width);
        taps t = axis_taps(pp.height, pp.oh, r);
        double total = tap_total(t);
        float acc = 0.0f;
        for (int32_t k = 0; k < t.n; k++) {
            float wk = tap_weight(t, k, total);
            size_t y = (size_t)(t.lo + k);
            uint8_t v = px[y * pp.stride + x];
            if (mask && !mask[y * pp.width + x])
                v = 0;
            acc += wk * (float)v;
        }
        tmp[i] = acc;
    }
}

// out[c][top + r][left + x] = normalise(sum_k w_k * tmp[r][lo + k]); border black.
__global__ void k_resize_horizontal(float *out, const float *tmp, ck_preprocess pp)
{
    size_t plane = (size_t)pp.H * pp.W;
    GRID_LOOP(i, plane)
    {
        int32_t X = (int32_t)(i % pp.W), Y = (int32_t)(i / pp.W);
        int32_t r = Y - pp.top, x = X - pp.left;
        float v = 0.0f;
        if (r >= 0 && r < pp.oh && x >= 0 && x < pp.ow) {
            taps t = axis_taps(pp.width, pp.ow, x);
            double total = tap_total(t);
            const float *row = tmp + (size_t)r * pp.width + t.lo;
            for (int32_t k = 0; k < t.n; k++)
                v += tap_weight(t, k, total) * row[k];
        }
        for (int32_t c = 0; c < pp.C; c++) {
            float a = 1.0f / (255.0f * pp.std[c]), b = -pp.mean[c] / pp.std[c];
            out[(size_t)c * plane + i] = v * a + b;
        }
    }
}

} // namespace

// ---------------------------------------------------------------- launchers

extern "C" cudaError_t ck_nchw_to_nhwc(void *dst, enum ck_dtype dt, const float *src, int32_t n,
                                       int32_t c, int32_t cp, int32_t hw, cudaStream_t stream)
{
    DISPATCH(dt, k_nchw_to_nhwc, blocks_for((size_t)n * hw * cp), dst, src, n, c, cp, hw);
}

extern "C" cudaError_t ck_nhwc_to_nchw(float *dst, const void *src, enum ck_dtype dt, int32_t n,
                                       int32_t c, int32_t cp, int32_t hw, cudaStream_t stream)
{
    DISPATCH(dt, k_nhwc_to_nchw, blocks_for((size_t)n * c * hw), dst, src, n, c, cp, hw);
}

extern "C" cudaError_t ck_conv_weight(void *dst, enum ck_dtype dt, const float *src, int32_t o,
                                      int32_t op, int32_t i, int32_t ip, int32_t kh, int32_t kw,
                                      cudaStream_t stream)
{
    DISPATCH(dt, k_conv_weight, blocks_for((size_t)op * kh * kw * ip), dst, src, o, op, i, ip, kh,
             kw);
}

extern "C" cudaError_t ck_matrix(void *dst, enum ck_dtype dt, const float *src, int32_t rows,
                                 int32_t cols, int32_t cp, cudaStream_t stream)
{
    DISPATCH(dt, k_matrix, blocks_for((size_t)rows * cp), dst, src, rows, cols, cp);
}

extern "C" cudaError_t ck_vec(void *dst, enum ck_dtype dt, const float *src, int32_t n, int32_t np,
                              cudaStream_t stream)
{
    return ck_matrix(dst, dt, src, 1, n, np, stream);
}

extern "C" cudaError_t ck_to_f32(float *dst, const void *src, enum ck_dtype dt, size_t count,
                                 cudaStream_t stream)
{
    DISPATCH(dt, k_to_f32, blocks_for(count), dst, src, count);
}

extern "C" cudaError_t ck_maxpool(void *y, const void *x, enum ck_dtype dt, int32_t n, int32_t h,
                                  int32_t w, int32_t cp, int32_t oh, int32_t ow, int32_t k,
                                  int32_t s, int32_t p, cudaStream_t stream)
{
    size_t groups = (size_t)cp * ck_size(dt) / 16;
    DISPATCH(dt, k_maxpool, blocks_for((size_t)n * oh * ow * groups), y, x, n, h, w, cp, oh, ow, k,
             s, p);
}

extern "C" cudaError_t ck_add(void *y, const void *a, const void *b, enum ck_dtype dt, size_t count,
                              int relu, cudaStream_t stream)
{
    size_t vecs = count * ck_size(dt) / 16;
    DISPATCH(dt, k_add, blocks_for(vecs), y, a, b, vecs, relu);
}

extern "C" cudaError_t ck_relu(void *y, const void *x, enum ck_dtype dt, size_t count,
                               cudaStream_t stream)
{
    size_t vecs = count * ck_size(dt) / 16;
    DISPATCH(dt, k_relu, blocks_for(vecs), y, x, vecs);
}

extern "C" cudaError_t ck_bias_act(void *y, const void *bias, const void *z, enum ck_dtype dt,
                                   size_t rows, int32_t cp, int relu, cudaStream_t stream)
{
    size_t vecs = rows * (size_t)cp * ck_size(dt) / 16;
    DISPATCH(dt, k_bias_act, blocks_for(vecs), y, bias, z, vecs, cp, relu);
}

extern "C" cudaError_t ck_gap(void *y, const void *x, enum ck_dtype dt, int32_t n, int32_t hw,
                              int32_t cp, cudaStream_t stream)
{
    DISPATCH(dt, k_gap, blocks_for((size_t)n * cp), y, x, n, hw, cp);
}

extern "C" cudaError_t ck_bias_rows(float *y, const float *bias, int32_t rows, int32_t cols,
                                    cudaStream_t stream)
{
    k_bias_rows<<<blocks_for((size_t)rows * cols), kThreads, 0, stream>>>(y, bias, rows, cols);
    return cudaGetLastError();
}

extern "C" cudaError_t ck_softmax_rows(float *probs, const float *logits, int32_t rows, int32_t k,
                                       cudaStream_t stream)
{
    k_softmax_rows<<<blocks_for((size_t)rows), kThreads, 0, stream>>>(probs, logits, rows, k);
    return cudaGetLastError();
}

extern "C" cudaError_t ck_preprocess_u8(float *out, float *tmp, const uint8_t *px,
                                        const uint8_t *mask, const struct ck_preprocess *pp,
                                        cudaStream_t stream)
{
    k_resize_vertical<<<blocks_for((size_t)pp->oh * pp->width), kThreads, 0, stream>>>(tmp, px,
                                                                                       mask, *pp);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return e;
    k_resize_horizontal<<<blocks_for((size_t)pp->H * pp->W), kThreads, 0, stream>>>(out, tmp, *pp);
    return cudaGetLastError();
}
