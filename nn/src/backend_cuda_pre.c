/* backend_cuda_pre.c — the preprocessing of an 8-bit presentation image on
 * the GPU (the backend's optional preprocess_u8 entry): the same geometry
 * and arithmetic as preprocess.c (the reference), computed by
 * ck_preprocess_u8. The image, its mask and the intermediate rows live in
 * one scratch buffer of the backend (grown as needed, under its lock); work
 * runs on the backend's upload stream. */
#include <math.h>
#include <string.h>

#include "backend_cuda.h"

#define PRE_ALIGN 256

static size_t align_up(size_t v) { return (v + PRE_ALIGN - 1) & ~(size_t)(PRE_ALIGN - 1); }

enum cxr_status cxr_nn_cuda_preprocess_u8(struct cxr_nn_backend *b,
                                          const struct cxr_nn_model_meta *meta,
                                          const uint8_t *pixels, int32_t width, int32_t height,
                                          int32_t stride, const uint8_t *mask, float *out,
                                          char *err)
{
    struct cuda_ctx *c = b->context;
    enum cxr_status st = CXR_OK;
    if (!meta || !pixels || !out || width < 1 || height < 1 || stride < width || width > 65536 ||
        height > 65536)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "preprocess: bad image arguments");
    const int32_t H = meta->input_height, W = meta->input_width, C = meta->channels;
    if (H < 1 || H > 4096 || W < 1 || W > 4096 || (C != 1 && C != 3))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "preprocess: model input %dx%dx%d", (int)C,
                          (int)H, (int)W);
    struct ck_preprocess pp = {.width = width,
                               .height = height,
                               .stride = stride,
                               .H = H,
                               .W = W,
                               .C = C,
                               .oh = H,
                               .ow = W};
    for (int32_t k = 0; k < C; k++) {
        if (!(meta->std[k] > 0.0f) || !isfinite(meta->std[k]) || !isfinite(meta->mean[k]))
            return cxr_seterr(err, CXR_ERR_INVALID_ARG, "preprocess: bad mean/std");
        pp.mean[k] = meta->mean[k];
        pp.std[k] = meta->std[k];
    }
    if (meta->resize_mode == CXR_NN_RESIZE_LETTERBOX) { /* as preprocess.c */
        double sy = (double)H / height, sx = (double)W / width, s = sy < sx ? sy : sx;
        double fh = floor(height * s + 0.5), fw = floor(width * s + 0.5);
        pp.oh = fh < 1 ? 1 : fh > H ? H : (int32_t)fh;
        pp.ow = fw < 1 ? 1 : fw > W ? W : (int32_t)fw;
        pp.top = (H - pp.oh) / 2;
        pp.left = (W - pp.ow) / 2;
    } else if (meta->resize_mode != CXR_NN_RESIZE_STRETCH) {
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "preprocess: unknown resize mode");
    }
    size_t px_bytes = (size_t)(height - 1) * (size_t)stride + (size_t)width;
    size_t mask_bytes = mask ? (size_t)width * (size_t)height : 0;
    size_t tmp_bytes = (size_t)pp.oh * (size_t)width * sizeof(float);
    size_t out_bytes = (size_t)C * (size_t)H * (size_t)W * sizeof(float);
    size_t need = align_up(px_bytes) + align_up(mask_bytes) + align_up(tmp_bytes) + out_bytes;
    pthread_mutex_lock(&c->lock);
    CXR_CUDA(cudaSetDevice(c->device), "preprocess");
    if (c->pre_size < need) {
        cudaFree(c->pre_dev);
        c->pre_dev = NULL;
        c->pre_size = 0;
        CXR_CUDA(cudaMalloc(&c->pre_dev, need), "preprocess");
        c->pre_size = need;
    }
    uint8_t *d_px = c->pre_dev;
    uint8_t *d_mask = mask ? d_px + align_up(px_bytes) : NULL;
    float *d_tmp = (float *)(d_px + align_up(px_bytes) + align_up(mask_bytes));
    float *d_out = (float *)((char *)d_tmp + align_up(tmp_bytes));
    CXR_CUDA(cudaMemcpyAsync(d_px, pixels, px_bytes, cudaMemcpyHostToDevice, c->upload),
             "preprocess");
    if (mask)
        CXR_CUDA(cudaMemcpyAsync(d_mask, mask, mask_bytes, cudaMemcpyHostToDevice, c->upload),
                 "preprocess");
    CXR_CUDA(ck_preprocess_u8(d_out, d_tmp, d_px, d_mask, &pp, c->upload), "preprocess");
    CXR_CUDA(cudaMemcpyAsync(out, d_out, out_bytes, cudaMemcpyDeviceToHost, c->upload),
             "preprocess");
    CXR_CUDA(cudaStreamSynchronize(c->upload), "preprocess");
fail:
    if (st != CXR_OK)
        cudaStreamSynchronize(c->upload);
    pthread_mutex_unlock(&c->lock);
    return st;
}
