/* imageio.c — PNG and JPEG to 8-bit grey (libpng, libjpeg-turbo) for the
 * training loader, and PNG encoding for the report's thumbnails.
 *
 * RGB becomes grey through the ITU-R 601 luma with PIL's integer weights, so
 * a JPEG gives the same grey values here as PIL's Image.convert("L") on the
 * same libjpeg decode (the Kermany files are RGB with equal channels). */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h> /* after stdio.h: it needs FILE and size_t */
#include <png.h>

#include "cxr/dataset.h"

#define MAX_SIDE   16384
#define MAX_PIXELS CXR_TRAIN_IMAGE_MAX_PIXELS

/* The header's size against the limits, before anything is decoded: a
 * small file may declare a huge image of zeros (a decompression bomb). */
static enum cxr_status check_size(const char *kind, uint64_t w, uint64_t h, char *err)
{
    if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE)
        return cxr_seterr(err, CXR_ERR_NN_IMAGE, "%s: %llux%llu pixels (sides 1..%d)", kind,
                          (unsigned long long)w, (unsigned long long)h, MAX_SIDE);
    if (w * h > MAX_PIXELS)
        return cxr_seterr(err, CXR_ERR_LIMIT,
                          "%s: %llux%llu is %llu pixels, more than the %llu an image may have: "
                          "refused before decoding (a decompression bomb?)",
                          kind, (unsigned long long)w, (unsigned long long)h,
                          (unsigned long long)(w * h), (unsigned long long)MAX_PIXELS);
    return CXR_OK;
}

static inline uint8_t luma(const uint8_t *rgb)
{
    return (uint8_t)(((uint32_t)rgb[0] * 19595u + (uint32_t)rgb[1] * 38470u +
                      (uint32_t)rgb[2] * 7471u + 0x8000u) >>
                     16);
}

/* ------------------------------------------------------------------ JPEG */

struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char text[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr cinfo)
{
    struct jpeg_err *e = (struct jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->text);
    longjmp(e->jump, 1);
}

/* Warnings (level -1) mean corrupt data ("Premature end of JPEG file"):
 * the decoder would go on and fill with grey, so treat them as errors. */
static void jpeg_message(j_common_ptr cinfo, int level)
{
    if (level < 0)
        jpeg_fail(cinfo);
}

static enum cxr_status decode_jpeg(const void *buf, size_t len, uint8_t **pixels, int32_t *width,
                                   int32_t *height, char *err)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_err jerr;
    uint8_t *volatile img = NULL;
    uint8_t *volatile row = NULL;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&jerr.mgr);
    jerr.mgr.error_exit = jpeg_fail;
    jerr.mgr.emit_message = jpeg_message;
    jerr.text[0] = '\0';
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(img);
        free(row);
        return cxr_seterr(err, CXR_ERR_NN_IMAGE, "JPEG: %s", jerr.text);
    }
    jpeg_create_decompress(&cinfo);
    if (len > (size_t)ULONG_MAX)
        jpeg_fail((j_common_ptr)&cinfo);
    jpeg_mem_src(&cinfo, (const unsigned char *)buf, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    enum cxr_status sst = check_size("JPEG", cinfo.image_width, cinfo.image_height, err);
    if (sst != CXR_OK) {
        jpeg_destroy_decompress(&cinfo);
        return sst;
    }
    int comps = cinfo.num_components;
    if (cinfo.jpeg_color_space == JCS_GRAYSCALE) {
        cinfo.out_color_space = JCS_GRAYSCALE;
    } else if (cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB) {
        cinfo.out_color_space = JCS_RGB;
    } else {
        jpeg_destroy_decompress(&cinfo);
        return cxr_seterr(err, CXR_ERR_NN_IMAGE,
                          "JPEG: colour space %d with %d components unsupported",
                          (int)cinfo.jpeg_color_space, comps);
    }
    jpeg_start_decompress(&cinfo);
    const size_t w = cinfo.output_width, h = cinfo.output_height;
    const int oc = cinfo.output_components;
    img = malloc(w * h);
    row = malloc(w * (size_t)oc);
    if (!img || !row) {
        jpeg_destroy_decompress(&cinfo);
        free(img);
        free(row);
        return cxr_seterr(err, CXR_ERR_NOMEM, "JPEG: out of memory for %zux%zu", w, h);
    }
    uint8_t *const out = img, *const line = row; /* plain copies for the loop */
    while (cinfo.output_scanline < h) {
        size_t y = cinfo.output_scanline;
        JSAMPROW rows[1] = {line};
        if (jpeg_read_scanlines(&cinfo, rows, 1) != 1)
            jpeg_fail((j_common_ptr)&cinfo);
        uint8_t *dst = out + y * w;
        if (oc == 1) {
            memcpy(dst, line, w);
        } else {
            for (size_t x = 0; x < w; x++)
                dst[x] = luma(line + 3 * x);
        }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    *pixels = img;
    *width = (int32_t)w;
    *height = (int32_t)h;
    return CXR_OK;
}

/* ------------------------------------------------------------------ PNG */

struct png_src {
    const uint8_t *buf;
    size_t len, pos;
    char text[256];
};

static void png_read_mem(png_structp png, png_bytep out, size_t n)
{
    struct png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos)
        png_error(png, "truncated file");
    memcpy(out, s->buf + s->pos, n);
    s->pos += n;
}

static void png_fail(png_structp png, png_const_charp msg)
{
    struct png_src *s = png_get_error_ptr(png);
    snprintf(s->text, sizeof s->text, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* benign (e.g. an unknown chunk); real damage is an error */
}

static enum cxr_status decode_png(const void *buf, size_t len, uint8_t **pixels, int32_t *width,
                                  int32_t *height, char *err)
{
    struct png_src src = {.buf = buf, .len = len, .pos = 0, .text = ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile img = NULL;
    uint8_t *volatile rgb = NULL;
    png_bytep *volatile rows = NULL;
    enum cxr_status volatile failed = CXR_ERR_NN_IMAGE;
    if (!png || !info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return cxr_seterr(err, CXR_ERR_NOMEM, "PNG: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(img);
        free(rgb);
        free(rows);
        return cxr_seterr(err, failed, "PNG: %s", src.text[0] ? src.text : "corrupt");
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_set_user_limits(png, MAX_SIDE, MAX_SIDE);
    png_set_chunk_malloc_max(png, 8u << 20); /* text and ICC chunks, inflated */
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((uint64_t)w * h > MAX_PIXELS) {
        failed = CXR_ERR_LIMIT;
        snprintf(src.text, sizeof src.text,
                 "%lux%lu is %llu pixels, more than the %llu an image may have: refused before "
                 "decoding (a decompression bomb?)",
                 (unsigned long)w, (unsigned long)h, (unsigned long long)w * h,
                 (unsigned long long)MAX_PIXELS);
        png_longjmp(png, 1);
    }
    int ct = png_get_color_type(png, info);
    png_set_expand(png);   /* palette → RGB, grey < 8 bits → 8, tRNS → alpha */
    png_set_scale_16(png); /* 16 → 8 bits, rounded */
    png_set_strip_alpha(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    if (channels != 1 && channels != 3)
        png_error(png, "unexpected channel count after expansion");
    (void)ct;
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)w * (size_t)channels)
        png_error(png, "unexpected row size");
    img = malloc((size_t)w * h);
    if (!img)
        png_error(png, "out of memory");
    if (passes == 1) {
        /* row by row: colour needs one row of RGB, not a whole image of it */
        rgb = channels == 3 ? malloc(rowbytes) : NULL;
        if (channels == 3 && !rgb)
            png_error(png, "out of memory");
        for (png_uint_32 y = 0; y < h; y++) {
            uint8_t *dst = img + (size_t)y * w;
            png_read_row(png, channels == 3 ? rgb : dst, NULL);
            if (channels == 3)
                for (size_t x = 0; x < w; x++)
                    dst[x] = luma(rgb + 3 * x);
        }
    } else {
        rgb = channels == 3 ? malloc(rowbytes * h) : NULL;
        rows = malloc(h * sizeof *rows);
        if (!rows || (channels == 3 && !rgb))
            png_error(png, "out of memory");
        for (png_uint_32 y = 0; y < h; y++)
            rows[y] = channels == 3 ? rgb + (size_t)y * rowbytes : img + (size_t)y * w;
        png_read_image(png, rows);
        if (channels == 3)
            for (size_t i = 0; i < (size_t)w * h; i++)
                img[i] = luma(rgb + 3 * i);
    }
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rgb);
    free(rows);
    *pixels = img;
    *width = (int32_t)w;
    *height = (int32_t)h;
    return CXR_OK;
}

enum cxr_status cxr_train_image_decode(const void *buf, size_t len, uint8_t **pixels,
                                       int32_t *width, int32_t *height, char *err)
{
    *pixels = NULL;
    *width = *height = 0;
    const uint8_t *b = buf;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && memcmp(b, png_sig, 8) == 0)
        return decode_png(buf, len, pixels, width, height, err);
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return decode_jpeg(buf, len, pixels, width, height, err);
    return cxr_seterr(err, CXR_ERR_NN_IMAGE, "neither a PNG nor a JPEG file");
}

enum cxr_status cxr_train_image_encode_png(const uint8_t *pixels, int32_t width, int32_t height,
                                           int32_t stride, void **out, size_t *len, char *err)
{
    *out = NULL;
    *len = 0;
    if (!pixels || width < 1 || height < 1 || width > MAX_SIDE || height > MAX_SIDE ||
        stride < width)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "PNG: bad image %dx%d stride %d", (int)width,
                          (int)height, (int)stride);
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)width;
    image.height = (png_uint_32)height;
    image.format = PNG_FORMAT_GRAY;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&image, NULL, &size, 0, pixels, stride, NULL) || size == 0) {
        png_image_free(&image);
        return cxr_seterr(err, CXR_ERR_INTERNAL, "PNG: %s", image.message);
    }
    void *mem = malloc(size);
    if (!mem)
        return cxr_seterr(err, CXR_ERR_NOMEM, "PNG: out of memory");
    if (!png_image_write_to_memory(&image, mem, &size, 0, pixels, stride, NULL)) {
        free(mem);
        png_image_free(&image);
        return cxr_seterr(err, CXR_ERR_INTERNAL, "PNG: %s", image.message);
    }
    *out = mem;
    *len = size;
    return CXR_OK;
}
