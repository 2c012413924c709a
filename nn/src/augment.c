/* augment.c — seeded data augmentation on 8-bit greyscale images: one affine
 * warp (rotation, zoom, translation, optional mirror) with bilinear sampling,
 * then brightness/contrast jitter. The result goes through the same
 * cxr_nn_preprocess_u8 as inference, so training sees the inference pixels
 * plus only the deliberate jitter. */
#include <math.h>
#include <string.h>

#include "cxr/nn_train.h"

void cxr_nn_augment_options_defaults(struct cxr_nn_augment_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_rotate_deg = 10.0;
    o->scale_min = 0.9;
    o->scale_max = 1.1;
    o->max_translate = 0.06;
    o->max_brightness = 0.2;
    o->max_contrast = 0.2;
    o->hflip = false;
    o->fill = 0;
}

void cxr_nn_augment_options_none(struct cxr_nn_augment_options *o)
{
    memset(o, 0, sizeof *o);
    o->scale_min = o->scale_max = 1.0;
}

void cxr_nn_augment_params_identity(struct cxr_nn_augment_params *p)
{
    memset(p, 0, sizeof *p);
    p->scale = 1.0;
    p->brightness = 1.0;
    p->contrast = 1.0;
}

void cxr_nn_augment_draw(const struct cxr_nn_augment_options *o, uint64_t seed,
                         struct cxr_nn_augment_params *p)
{
    struct cxr_nn_rng r;
    cxr_nn_rng_seed(&r, seed);
    memset(p, 0, sizeof *p);
    /* Always draw every value in this order, so that switching one kind of
     * jitter off leaves the others' values unchanged for a seed. */
    double u_angle = cxr_nn_rng_uniform(&r);
    double u_scale = cxr_nn_rng_uniform(&r);
    double u_tx = cxr_nn_rng_uniform(&r);
    double u_ty = cxr_nn_rng_uniform(&r);
    double u_flip = cxr_nn_rng_uniform(&r);
    double u_bright = cxr_nn_rng_uniform(&r);
    double u_contrast = cxr_nn_rng_uniform(&r);

    p->angle_deg = o->max_rotate_deg * (2.0 * u_angle - 1.0);
    p->scale = o->scale_min + (o->scale_max - o->scale_min) * u_scale;
    p->translate_x = o->max_translate * (2.0 * u_tx - 1.0);
    p->translate_y = o->max_translate * (2.0 * u_ty - 1.0);
    p->flip = o->hflip && u_flip < 0.5;
    p->brightness = 1.0 + o->max_brightness * (2.0 * u_bright - 1.0);
    p->contrast = 1.0 + o->max_contrast * (2.0 * u_contrast - 1.0);
    p->fill = o->fill;
}

static inline uint8_t clamp_u8(double v)
{
    if (!(v > 0.0))
        return 0;
    if (v >= 255.0)
        return 255;
    return (uint8_t)lrint(v);
}

/* Bilinear sample at continuous pixel-index coordinates (fx, fy) (pixel i's
 * centre is at i). Inside the image's extent the neighbours are clamped to
 * the border; outside it the fill value is returned. */
static inline double sample(const uint8_t *src, int32_t sw, int32_t sh, int32_t stride, double fx,
                            double fy, double fill)
{
    if (!(fx >= -0.5 && fx <= sw - 0.5 && fy >= -0.5 && fy <= sh - 0.5))
        return fill;
    double flx = floor(fx), fly = floor(fy);
    double ax = fx - flx, ay = fy - fly;
    int32_t x0 = (int32_t)flx, y0 = (int32_t)fly;
    int32_t x1 = x0 + 1, y1 = y0 + 1;
    if (x0 < 0)
        x0 = 0;
    if (y0 < 0)
        y0 = 0;
    if (x1 > sw - 1)
        x1 = sw - 1;
    if (y1 > sh - 1)
        y1 = sh - 1;
    const uint8_t *r0 = src + (size_t)y0 * (size_t)stride;
    const uint8_t *r1 = src + (size_t)y1 * (size_t)stride;
    double top = r0[x0] + ax * (r0[x1] - r0[x0]);
    double bot = r1[x0] + ax * (r1[x1] - r1[x0]);
    return top + ay * (bot - top);
}

enum cxr_status cxr_nn_augment_apply(const struct cxr_nn_augment_params *p, const uint8_t *src,
                                     int32_t sw, int32_t sh, int32_t sstride, uint8_t *dst,
                                     int32_t dw, int32_t dh, int32_t dstride)
{
    if (!p || !src || !dst || sw < 1 || sh < 1 || dw < 1 || dh < 1 || sstride < sw || dstride < dw)
        return CXR_ERR_INVALID_ARG;
    if (!isfinite(p->angle_deg) || !isfinite(p->scale) || !(p->scale > 0.0) ||
        !isfinite(p->translate_x) || !isfinite(p->translate_y) || !isfinite(p->brightness) ||
        !isfinite(p->contrast))
        return CXR_ERR_INVALID_ARG;

    /* Output pixel centre p_o (x + 0.5, y + 0.5) → the input's frame
     * S p_o (S stretches dw x dh onto sw x sh) → inverse of
     * x' = c + t + s R(θ) F (x - c), with R(θ) a counter-clockwise rotation on
     * screen (y down) and F the optional mirror:
     *     q = c + F R(-θ) (S p_o - c - t) / s  =  L p_o + b.
     * For identity parameters L = I and b = 0 exactly, so every output
     * centre lands on an input centre and the copy is exact. */
    double th = p->angle_deg * (M_PI / 180.0);
    double cs = cos(th), sn = sin(th);
    if (p->angle_deg == 0.0) {
        cs = 1.0;
        sn = 0.0;
    }
    double sx = (double)sw / dw, sy = (double)sh / dh;
    double cx = 0.5 * sw, cy = 0.5 * sh;
    double tx = p->translate_x * sw, ty = p->translate_y * sh;
    double f = p->flip ? -1.0 : 1.0;
    /* R(-θ) = [[cs, -sn], [sn, cs]] in (x right, y down) coordinates. */
    double l11 = f * cs * sx / p->scale, l12 = -f * sn * sy / p->scale;
    double l21 = sn * sx / p->scale, l22 = cs * sy / p->scale;
    double ux = cx + tx, uy = cy + ty;
    double b1 = cx - f * (cs * ux - sn * uy) / p->scale;
    double b2 = cy - (sn * ux + cs * uy) / p->scale;
    double fill = p->fill;

    double sum = 0.0;
    for (int32_t y = 0; y < dh; y++) {
        uint8_t *row = dst + (size_t)y * (size_t)dstride;
        double py = y + 0.5;
        for (int32_t x = 0; x < dw; x++) {
            double px = x + 0.5;
            double qx = l11 * px + l12 * py + b1;
            double qy = l21 * px + l22 * py + b2;
            uint8_t v = clamp_u8(sample(src, sw, sh, sstride, qx - 0.5, qy - 0.5, fill));
            row[x] = v;
            sum += v;
        }
    }

    if (p->brightness == 1.0 && p->contrast == 1.0)
        return CXR_OK;
    double mean = sum / ((double)dw * (double)dh);
    for (int32_t y = 0; y < dh; y++) {
        uint8_t *row = dst + (size_t)y * (size_t)dstride;
        for (int32_t x = 0; x < dw; x++)
            row[x] = clamp_u8(((row[x] - mean) * p->contrast + mean) * p->brightness);
    }
    return CXR_OK;
}
