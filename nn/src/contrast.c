/* contrast.c — contrast normalisation of the 8-bit presentation image before
 * the resize (metadata "contrast"). See cxr_nn_equalize_u8 in cxr/nn.h.
 *
 * Why: exposure, detector and the site's own processing change a radiograph's
 * grey-level distribution; equalising it gives the network the same spread of
 * grey levels from every source. Black borders (collimation, padding, the
 * letterbox) are the darkest value present and stay black. */
#include <math.h>
#include <string.h>

#include "model_internal.h"

enum cxr_status cxr_nn_equalize_u8(const uint8_t *pixels, int32_t width, int32_t height,
                                   int32_t stride, const uint8_t *mask, uint8_t *out)
{
    if (!pixels || !out || width < 1 || height < 1 || stride < width)
        return CXR_ERR_INVALID_ARG;
    uint64_t hist[256] = {0};
    for (int32_t y = 0; y < height; y++) {
        const uint8_t *row = pixels + (size_t)y * (size_t)stride;
        const uint8_t *mrow = mask ? mask + (size_t)y * (size_t)width : NULL;
        for (int32_t x = 0; x < width; x++)
            if (!mrow || mrow[x])
                hist[row[x]]++;
    }
    uint64_t cdf[256], run = 0, n, m = 0;
    for (int v = 0; v < 256; v++) {
        run += hist[v];
        cdf[v] = run;
        if (!m && hist[v])
            m = run;
    }
    n = run;
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) {
        if (n == m) /* constant (or empty) image: unchanged */
            lut[v] = (uint8_t)v;
        else {
            double t = cdf[v] < m ? 0.0 : 255.0 * (double)(cdf[v] - m) / (double)(n - m);
            lut[v] = (uint8_t)lround(t);
        }
    }
    for (int32_t y = 0; y < height; y++) {
        const uint8_t *row = pixels + (size_t)y * (size_t)stride;
        const uint8_t *mrow = mask ? mask + (size_t)y * (size_t)width : NULL;
        uint8_t *dst = out + (size_t)y * (size_t)width;
        for (int32_t x = 0; x < width; x++)
            dst[x] = (!mrow || mrow[x]) ? lut[row[x]] : 0;
    }
    return CXR_OK;
}
