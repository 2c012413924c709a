// cuda_kernels_common.cuh — what the kernel files share: element types and
// their float conversions, 16-byte vectors, the grid-stride loop and the
// per-type launch switch. Internal to cuda_kernels*.cu.
#ifndef CXR_NN_CUDA_KERNELS_COMMON_CUH
#define CXR_NN_CUDA_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_kernels.h"

namespace {

const int kThreads = 256;

inline unsigned blocks_for(size_t n)
{
    size_t b = (n + kThreads - 1) / kThreads;
    return (unsigned)(b > 0x7fffffffu ? 0x7fffffffu : (b ? b : 1));
}

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

// 16 bytes of T, for the elementwise kernels.
template <typename T> struct vec16 {
    static const int n = 16 / sizeof(T);
    T v[16 / sizeof(T)];
};

template <typename T> __device__ __forceinline__ vec16<T> load16(const void *p, size_t i)
{
    vec16<T> r;
    *reinterpret_cast<uint4 *>(r.v) = reinterpret_cast<const uint4 *>(p)[i];
    return r;
}

template <typename T> __device__ __forceinline__ void store16(void *p, size_t i, const vec16<T> &r)
{
    reinterpret_cast<uint4 *>(p)[i] = *reinterpret_cast<const uint4 *>(r.v);
}

// Grid-stride loop over [0, n).
#define GRID_LOOP(i, n)                                                              \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n);   \
         i += (size_t)blockDim.x * gridDim.x)

} // namespace

// Launches KERNEL<T> for the element type dt with the given grid.
#define DISPATCH(dt, KERNEL, grid, ...)                                                  \
    do {                                                                                 \
        switch (dt) {                                                                    \
        case CK_F32:                                                                     \
            KERNEL<float><<<(grid), kThreads, 0, stream>>>(__VA_ARGS__);                 \
            break;                                                                       \
        case CK_F16:                                                                     \
            KERNEL<__half><<<(grid), kThreads, 0, stream>>>(__VA_ARGS__);                \
            break;                                                                       \
        case CK_BF16:                                                                    \
            KERNEL<__nv_bfloat16><<<(grid), kThreads, 0, stream>>>(__VA_ARGS__);         \
            break;                                                                       \
        default:                                                                         \
            return cudaErrorInvalidValue;                                                \
        }                                                                                \
        return cudaGetLastError();                                                       \
    } while (0)

#endif
