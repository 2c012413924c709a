/* preprocess.c — 8-bit greyscale image -> normalised model input.
 *
 * Resize: the antialiased bilinear resize of PyTorch's
 *   torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear",
 *                                   antialias=True, align_corners=False)
 * (the PIL convention), one axis at a time. For an axis of `in` pixels to
 * `out` pixels, scale = in/out, support = max(scale, 1), and output pixel i
 * takes input pixels j in [max(trunc(c - support + 0.5), 0),
 * min(trunc(c + support + 0.5), in)) with c = scale*(i + 0.5) and weight
 * tri((j - c + 0.5) / max(scale, 1)), tri(x) = max(0, 1 - |x|), normalised
 * to sum 1. Downscaling thus averages over a triangle widened by the scale
 * factor; upscaling is plain bilinear with edge pixels clamped.
 * The passes run vertical first (the inner loop then runs along rows and
 * vectorises); torch runs horizontal first: the results agree to float
 * rounding.
 *
 * Letterbox: s = min(H/h, W/w) (in double), the image is resized to
 * h' = clamp(floor(h*s + 0.5), 1, H) rows and w' = clamp(floor(w*s + 0.5), 1, W)
 * columns, placed at top = (H - h')/2, left = (W - w')/2 (integer division),
 * and the rest is black (pixel value 0) before normalisation.
 *
 * Contrast: with meta->contrast == equalize the image is first equalised
 * (cxr_nn_equalize_u8, contrast.c; masked pixels become 0) and the resize
 * reads the equalised copy.
 *
 * Normalisation: out[c] = (v/255 - mean[c]) / std[c], the grey value v
 * replicated into every channel. Mask: pixels whose mask byte is 0 count as
 * black (0) in the resize.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Per output pixel: first input index, tap count, and weights (max_taps apart). */
struct axis {
    int32_t *first;
    int32_t *count;
    float *w;
    int32_t max_taps;
};

static void axis_free(struct axis *a)
{
    free(a->first);
    free(a->count);
    free(a->w);
    a->first = a->count = NULL;
    a->w = NULL;
}

static double tri(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static bool axis_make(int32_t in, int32_t out, struct axis *a)
{
    double scale = (double)in / (double)out;
    double support = scale >= 1.0 ? scale : 1.0;
    double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    a->max_taps = (int32_t)ceil(support) * 2 + 1;
    a->first = malloc((size_t)out * sizeof *a->first);
    a->count = malloc((size_t)out * sizeof *a->count);
    a->w = malloc((size_t)out * (size_t)a->max_taps * sizeof *a->w);
    double *tmp = malloc((size_t)a->max_taps * sizeof *tmp);
    if (!a->first || !a->count || !a->w || !tmp) {
        free(tmp);
        axis_free(a);
        return false;
    }
    for (int32_t i = 0; i < out; i++) {
        double center = scale * (i + 0.5);
        int64_t lo = (int64_t)(center - support + 0.5); /* truncation, as torch */
        int64_t hi = (int64_t)(center + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > in)
            hi = in;
        int32_t n = (int32_t)(hi - lo);
        if (n > a->max_taps)
            n = a->max_taps;
        double total = 0.0;
        for (int32_t j = 0; j < n; j++) {
            tmp[j] = tri(((double)(j + lo) - center + 0.5) * invscale);
            total += tmp[j];
        }
        float *w = a->w + (size_t)i * (size_t)a->max_taps;
        for (int32_t j = 0; j < n; j++)
            w[j] = (float)(total != 0.0 ? tmp[j] / total : tmp[j]);
        a->first[i] = (int32_t)lo;
        a->count[i] = n;
    }
    free(tmp);
    return true;
}

/* rows x width floats: each output row the weighted sum of input rows. */
static void vertical_pass(const uint8_t *px, int32_t width, int32_t stride, const uint8_t *mask,
                          const struct axis *ay, int32_t rows, float *tmp)
{
    for (int32_t r = 0; r < rows; r++) {
        float *acc = tmp + (size_t)r * (size_t)width;
        memset(acc, 0, (size_t)width * sizeof *acc);
        const float *w = ay->w + (size_t)r * (size_t)ay->max_taps;
        for (int32_t k = 0; k < ay->count[r]; k++) {
            const float wk = w[k];
            if (wk == 0.0f)
                continue;
            size_t y = (size_t)(ay->first[r] + k);
            const uint8_t *src = px + y * (size_t)stride;
            if (mask) {
                const uint8_t *mk = mask + y * (size_t)width;
                for (int32_t x = 0; x < width; x++) /* branch-free: vectorises */
                    acc[x] += wk * (float)(src[x] & (uint8_t) - (uint8_t)(mk[x] != 0));
            } else {
                for (int32_t x = 0; x < width; x++)
                    acc[x] += wk * (float)src[x];
            }
        }
    }
}

enum cxr_status cxr_nn_preprocess_u8(const struct cxr_nn_model_meta *meta, const uint8_t *pixels,
                                     int32_t width, int32_t height, int32_t stride,
                                     const uint8_t *mask, float *out)
{
    if (!meta || !pixels || !out || width < 1 || height < 1 || stride < width)
        return CXR_ERR_INVALID_ARG;
    const int32_t H = meta->input_height, W = meta->input_width, C = meta->channels;
    if (H < 1 || H > 4096 || W < 1 || W > 4096 || (C != 1 && C != 3))
        return CXR_ERR_INVALID_ARG;
    for (int32_t c = 0; c < C; c++)
        if (!(meta->std[c] > 0.0f) || !isfinite(meta->std[c]) || !isfinite(meta->mean[c]))
            return CXR_ERR_INVALID_ARG;

    int32_t oh = H, ow = W, top = 0, left = 0;
    if (meta->resize_mode == CXR_NN_RESIZE_LETTERBOX) {
        double sy = (double)H / height, sx = (double)W / width, s = sy < sx ? sy : sx;
        double fh = floor(height * s + 0.5), fw = floor(width * s + 0.5);
        oh = fh < 1 ? 1 : fh > H ? H : (int32_t)fh;
        ow = fw < 1 ? 1 : fw > W ? W : (int32_t)fw;
        top = (H - oh) / 2;
        left = (W - ow) / 2;
    } else if (meta->resize_mode != CXR_NN_RESIZE_STRETCH) {
        return CXR_ERR_INVALID_ARG;
    }

    struct axis ay = {0}, ax = {0};
    float *tmp = NULL;
    uint8_t *equalised = NULL;
    enum cxr_status st = CXR_ERR_NOMEM;
    if (meta->contrast == CXR_NN_CONTRAST_EQUALIZE) {
        if (!(equalised = malloc((size_t)width * (size_t)height)))
            goto done;
        st = cxr_nn_equalize_u8(pixels, width, height, stride, mask, equalised);
        if (st != CXR_OK)
            goto done;
        st = CXR_ERR_NOMEM;
        pixels = equalised;
        stride = width;
        mask = NULL; /* masked pixels are 0 in the equalised copy */
    } else if (meta->contrast != CXR_NN_CONTRAST_NONE) {
        return CXR_ERR_INVALID_ARG;
    }
    if (!axis_make(height, oh, &ay) || !axis_make(width, ow, &ax))
        goto done;
    if (!(tmp = malloc((size_t)oh * (size_t)width * sizeof *tmp)))
        goto done;
    vertical_pass(pixels, width, stride, mask, &ay, oh, tmp);

    /* channel 0 in the 0..255 domain, with the black border */
    const size_t plane = (size_t)H * (size_t)W;
    if (oh != H || ow != W)
        memset(out, 0, plane * sizeof *out);
    for (int32_t r = 0; r < oh; r++) {
        const float *row = tmp + (size_t)r * (size_t)width;
        float *dst = out + (size_t)(top + r) * (size_t)W + (size_t)left;
        for (int32_t c = 0; c < ow; c++) {
            const float *w = ax.w + (size_t)c * (size_t)ax.max_taps;
            const float *s = row + ax.first[c];
            float v = 0.0f;
            for (int32_t k = 0; k < ax.count[c]; k++)
                v += w[k] * s[k];
            dst[c] = v;
        }
    }
    /* normalise: v/255 is folded into the scale; later channels first so
     * that channel 0 is read before it is overwritten */
    for (int32_t c = C - 1; c >= 0; c--) {
        const float a = 1.0f / (255.0f * meta->std[c]);
        const float b = -meta->mean[c] / meta->std[c];
        float *dst = out + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++)
            dst[i] = out[i] * a + b;
    }
    st = CXR_OK;
done:
    free(equalised);
    free(tmp);
    axis_free(&ay);
    axis_free(&ax);
    return st;
}
