/* train_input.c — image → tensor for training: the augmentation, then the
 * inference preprocessing itself; and an 8-bit resize built on that same
 * preprocessing so that no second copy of the resampling filter exists. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/nn_train.h"

#define MAX_SIDE 16384

/* cxr_nn_preprocess_u8 with one channel, mean 0 and std 1/255 computes the
 * resized grey values themselves (v/255 / (1/255) = v, to float rounding);
 * rounding them gives the 8-bit resize. */
enum cxr_status cxr_nn_resize_u8(const uint8_t *src, int32_t sw, int32_t sh, int32_t sstride,
                                 uint8_t *dst, int32_t dw, int32_t dh, int32_t dstride)
{
    if (!src || !dst || sw < 1 || sh < 1 || dw < 1 || dh < 1 || sw > MAX_SIDE || sh > MAX_SIDE ||
        dw > MAX_SIDE || dh > MAX_SIDE || sstride < sw || dstride < dw)
        return CXR_ERR_INVALID_ARG;
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.input_width = dw;
    meta.input_height = dh;
    meta.channels = 1;
    meta.mean[0] = 0.0f;
    meta.std[0] = 1.0f / 255.0f;
    meta.resize_mode = CXR_NN_RESIZE_STRETCH;
    float *tmp = malloc((size_t)dw * (size_t)dh * sizeof *tmp);
    if (!tmp)
        return CXR_ERR_NOMEM;
    enum cxr_status st = cxr_nn_preprocess_u8(&meta, src, sw, sh, sstride, NULL, tmp);
    if (st == CXR_OK)
        for (int32_t y = 0; y < dh; y++)
            for (int32_t x = 0; x < dw; x++) {
                float v = tmp[(size_t)y * (size_t)dw + (size_t)x];
                dst[(size_t)y * (size_t)dstride + (size_t)x] = v <= 0.0f     ? 0
                                                               : v >= 255.0f ? 255
                                                                             : (uint8_t)lrintf(v);
            }
    free(tmp);
    return st;
}

enum cxr_status cxr_nn_train_input(const struct cxr_nn_model_meta *meta,
                                   const struct cxr_nn_augment_params *p, const uint8_t *pixels,
                                   int32_t w, int32_t h, int32_t stride, uint8_t *scratch,
                                   float *out)
{
    if (!meta || !pixels || !out)
        return CXR_ERR_INVALID_ARG;
    if (!p)
        return cxr_nn_preprocess_u8(meta, pixels, w, h, stride, NULL, out);
    if (!scratch)
        return CXR_ERR_INVALID_ARG;
    enum cxr_status st = cxr_nn_augment_apply(p, pixels, w, h, stride, scratch, w, h, w);
    if (st != CXR_OK)
        return st;
    return cxr_nn_preprocess_u8(meta, scratch, w, h, w, NULL, out);
}
