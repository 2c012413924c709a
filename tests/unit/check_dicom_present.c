/* check_dicom_present.c — the presentation pipeline (PS3.4 Annex N) on
 * synthetic images written byte by byte (dicom_test_writer.h), each output
 * compared with the standard's formulas computed here (PS3.3 C.11.1 Modality
 * LUT, C.11.2.1.2 window functions, C.11.2 VOI LUT, C.7.5.1.1.2 pixel
 * padding, C.7.6.3.1.2 MONOCHROME1). The library truncates to integers, so a
 * rendered value may sit up to one grey level below the exact one.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/dicom.h"
#include "dicom_test_writer.h"
#include "test_util.h"

static char g_err[CXR_ERRLEN];

struct spec {
    const char *pi; /* default MONOCHROME2 */
    uint16_t rows, cols, ba, bs, pr, spp;
    const uint8_t *px8;   /* ba 8 */
    const uint16_t *px16; /* ba 16 */
    size_t px_bytes;      /* 0 = rows*cols*spp*ba/8 */
    const char *slope, *intercept;
    const uint16_t *mlut; /* Modality LUT Sequence */
    uint16_t mlut_n, mlut_bits;
    const char *wc, *ww, *func; /* window */
    const uint16_t *vlut;       /* VOI LUT Sequence */
    uint16_t vlut_n, vlut_bits;
    bool pad, pad_limit;
    int32_t pad_value, pad_limit_value;
};

static void put_xs(struct tds *d, uint16_t e, const struct spec *s, int32_t v)
{
    if (s->pr)
        tds_ss(d, 0x0028, e, (int16_t)v);
    else
        tds_us(d, 0x0028, e, (uint16_t)v);
}

static void lut_item(struct tds *d, uint16_t n, uint16_t bits, const uint16_t *data, bool modality)
{
    uint16_t desc[3] = {n, 0, bits};
    tds_item_begin(d);
    tds_u16s(d, 0x0028, 0x3002, "US", desc, 3);
    if (modality)
        tds_str(d, 0x0028, 0x3004, "LO", "US");
    tds_u16s(d, 0x0028, 0x3006, "OW", data, n);
    tds_item_end(d);
}

/* Writes the spec as a Part 10 CR file and loads it from memory. */
static struct cxr_dicom_instance *build(const struct spec *s)
{
    struct tds d = {0};
    const uint16_t spp = s->spp ? s->spp : 1;
    tds_str(&d, 0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.1");
    tds_str(&d, 0x0008, 0x0018, "UI", "1.2.826.0.1.3680043.10.1234.9");
    tds_str(&d, 0x0008, 0x0060, "CS", "CR");
    tds_us(&d, 0x0028, 0x0002, spp);
    tds_str(&d, 0x0028, 0x0004, "CS", s->pi ? s->pi : "MONOCHROME2");
    if (spp == 3)
        tds_us(&d, 0x0028, 0x0006, 0);
    tds_us(&d, 0x0028, 0x0010, s->rows);
    tds_us(&d, 0x0028, 0x0011, s->cols);
    tds_us(&d, 0x0028, 0x0100, s->ba);
    tds_us(&d, 0x0028, 0x0101, s->bs);
    tds_us(&d, 0x0028, 0x0102, (uint16_t)(s->bs - 1));
    tds_us(&d, 0x0028, 0x0103, s->pr);
    if (s->pad)
        put_xs(&d, 0x0120, s, s->pad_value);
    if (s->pad_limit)
        put_xs(&d, 0x0121, s, s->pad_limit_value);
    if (s->wc) {
        tds_str(&d, 0x0028, 0x1050, "DS", s->wc);
        tds_str(&d, 0x0028, 0x1051, "DS", s->ww);
    }
    if (s->slope) {
        tds_str(&d, 0x0028, 0x1052, "DS", s->intercept);
        tds_str(&d, 0x0028, 0x1053, "DS", s->slope);
        tds_str(&d, 0x0028, 0x1054, "LO", "US");
    }
    if (s->func)
        tds_str(&d, 0x0028, 0x1056, "CS", s->func);
    if (s->mlut) {
        tds_seq_begin(&d, 0x0028, 0x3000);
        lut_item(&d, s->mlut_n, s->mlut_bits, s->mlut, true);
        tds_seq_end(&d);
    }
    if (s->vlut) {
        tds_seq_begin(&d, 0x0028, 0x3010);
        lut_item(&d, s->vlut_n, s->vlut_bits, s->vlut, false);
        tds_seq_end(&d);
    }
    size_t bytes = s->px_bytes ? s->px_bytes : (size_t)s->rows * s->cols * spp * (s->ba / 8u);
    if (s->ba == 8)
        tds_el(&d, 0x7FE0, 0x0010, "OB", s->px8, (uint32_t)bytes);
    else
        tds_u16s(&d, 0x7FE0, 0x0010, "OW", s->px16, bytes / 2);
    size_t n;
    uint8_t *f = tds_part10(&d, "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.1.2.1", &n);
    struct cxr_dicom_instance *inst = NULL;
    enum cxr_status st = cxr_dicom_instance_load_memory(f, n, "synthetic", &inst, g_err);
    ck_assert_msg(st == CXR_OK, "%s", g_err);
    free(f);
    free(d.p);
    return inst;
}

static void present_ok(const struct spec *s, struct cxr_dicom_image *img)
{
    struct cxr_dicom_instance *inst = build(s);
    enum cxr_status st = cxr_dicom_instance_present(inst, img, g_err);
    ck_assert_msg(st == CXR_OK, "%s", g_err);
    ck_assert_int_eq(img->width, s->cols);
    ck_assert_int_eq(img->height, s->rows);
    cxr_dicom_instance_free(inst);
}

/* PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.2 LINEAR_EXACT, C.11.2.1.3.1 SIGMOID;
 * output range 0..255. */
static double f_linear(double x, double c, double w)
{
    if (x <= c - 0.5 - (w - 1) / 2)
        return 0;
    if (x > c - 0.5 + (w - 1) / 2)
        return 255;
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255;
}
static double f_linear_exact(double x, double c, double w)
{
    if (x <= c - w / 2)
        return 0;
    if (x > c + w / 2)
        return 255;
    return ((x - c) / w + 0.5) * 255;
}
static double f_sigmoid(double x, double c, double w) { return 255 / (1 + exp(-4 * (x - c) / w)); }

/* |rendered - exact| < 1 (truncation) */
static void expect_close(const struct cxr_dicom_image *img, size_t i, double y, const char *what)
{
    ck_assert_msg(fabs((double)img->pixels[i] - y) < 1.0 + 1e-9,
                  "%s: pixel %zu is %u, expected %.3f", what, i, img->pixels[i], y);
}

static uint8_t g_ramp8[256];

/* ------------------------------------------------------------------ VOI */

START_TEST(test_present_window_functions)
{
    for (int i = 0; i < 256; i++)
        g_ramp8[i] = (uint8_t)i;
    const struct {
        const char *func, *wc, *ww, *voi;
        double (*f)(double, double, double);
    } rows[] = {
        {NULL, "100", "40", "window C=100 W=40 LINEAR", f_linear},
        {"LINEAR", "100", "40", "window C=100 W=40 LINEAR", f_linear},
        {"LINEAR_EXACT", "100", "40", "window C=100 W=40 LINEAR_EXACT", f_linear_exact},
        {"SIGMOID", "100", "40", "window C=100 W=40 SIGMOID", f_sigmoid},
        {"LINEAR", "128", "1", "window C=128 W=1 LINEAR", f_linear},
        {"LINEAR_EXACT", "60.5", "0.5", "window C=60.5 W=0.5 LINEAR_EXACT", f_linear_exact},
        {"SIGMOID", "200", "7.5", "window C=200 W=7.5 SIGMOID", f_sigmoid},
    };
    uint8_t first[2][256];
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        struct spec s = {.rows = 16,
                         .cols = 16,
                         .ba = 8,
                         .bs = 8,
                         .px8 = g_ramp8,
                         .wc = rows[r].wc,
                         .ww = rows[r].ww,
                         .func = rows[r].func};
        struct cxr_dicom_image img;
        present_ok(&s, &img);
        ck_assert_str_eq(img.voi_used, rows[r].voi);
        double c = atof(rows[r].wc), w = atof(rows[r].ww);
        for (size_t i = 0; i < 256; i++)
            expect_close(&img, i, rows[r].f((double)i, c, w), rows[r].voi);
        if (r == 1 || r == 2)
            memcpy(first[r - 1], img.pixels, 256);
        cxr_dicom_image_release(&img);
    }
    /* the two linear functions are told apart (they differ by ~3 levels here) */
    ck_assert(memcmp(first[0], first[1], 256) != 0);
}
END_TEST

/* Rescale Slope/Intercept (PS3.3 C.11.1.1.2) before the window. */
START_TEST(test_present_rescale)
{
    static uint16_t px[64 * 64];
    for (int i = 0; i < 64 * 64; i++)
        px[i] = (uint16_t)(i * 16);
    struct spec s = {.rows = 64,
                     .cols = 64,
                     .ba = 16,
                     .bs = 16,
                     .px16 = px,
                     .slope = "2",
                     .intercept = "-1000",
                     .wc = "30000",
                     .ww = "50000"};
    struct cxr_dicom_image img;
    present_ok(&s, &img);
    for (size_t i = 0; i < 64 * 64; i++)
        expect_close(&img, i, f_linear(2.0 * px[i] - 1000, 30000, 50000), "rescale");
    cxr_dicom_image_release(&img);
}
END_TEST

/* Modality LUT Sequence (PS3.3 C.11.1): a non-linear table, then the window. */
START_TEST(test_present_modality_lut_sequence)
{
    static uint16_t px[64 * 64], lut[4096];
    for (int i = 0; i < 4096; i++) {
        px[i] = (uint16_t)i;
        lut[i] = (uint16_t)(((uint32_t)i * (uint32_t)i) >> 8);
    }
    struct spec s = {.rows = 64,
                     .cols = 64,
                     .ba = 16,
                     .bs = 12,
                     .px16 = px,
                     .mlut = lut,
                     .mlut_n = 4096,
                     .mlut_bits = 16,
                     .wc = "32768",
                     .ww = "65536"};
    struct cxr_dicom_image img;
    present_ok(&s, &img);
    for (size_t i = 0; i < 4096; i++)
        expect_close(&img, i, f_linear(lut[px[i]], 32768, 65536), "modality LUT");
    cxr_dicom_image_release(&img);
}
END_TEST

/* VOI LUT Sequence (PS3.3 C.11.2): the table's output range spans the display. */
START_TEST(test_present_voi_lut_sequence)
{
    static uint16_t lut[256];
    for (int i = 0; i < 256; i++) {
        g_ramp8[i] = (uint8_t)i;
        lut[i] = (uint16_t)((i * i) / 16); /* 0..4064 in a 12-bit table */
    }
    struct spec s = {.rows = 16,
                     .cols = 16,
                     .ba = 8,
                     .bs = 8,
                     .px8 = g_ramp8,
                     .vlut = lut,
                     .vlut_n = 256,
                     .vlut_bits = 12};
    struct cxr_dicom_image img;
    present_ok(&s, &img);
    ck_assert_str_eq(img.voi_used, "VOI LUT 1 of 1");
    for (size_t i = 0; i < 256; i++)
        expect_close(&img, i, lut[i] * 255.0 / 4095.0, "VOI LUT");
    cxr_dicom_image_release(&img);

    /* a window present as well: the first window is the default */
    s.wc = "100";
    s.ww = "40";
    present_ok(&s, &img);
    ck_assert_str_eq(img.voi_used, "window C=100 W=40 LINEAR");
    expect_close(&img, 100, f_linear(100, 100, 40), "window over VOI LUT");
    cxr_dicom_image_release(&img);
}
END_TEST

/* No window, no VOI LUT: min/max of the modality values without the padding
 * (PS3.3 C.7.5.1.1.2); padding pixels come out black. */
START_TEST(test_present_minmax_excludes_padding)
{
    enum { R = 32, C = 32 };
    static uint16_t px[R * C];
    size_t interior = (R - 2) * (C - 2), k = 0;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            bool border = r == 0 || c == 0 || r == R - 1 || c == C - 1;
            px[r * C + c] = border ? (uint16_t)(60000 + (r + c) % 5000)
                                   : (uint16_t)(100 + (k++ * 1000) / (interior - 1));
        }
    struct spec s = {.rows = R,
                     .cols = C,
                     .ba = 16,
                     .bs = 16,
                     .px16 = px,
                     .pad = true,
                     .pad_value = 50000,
                     .pad_limit = true,
                     .pad_limit_value = 65535};
    struct cxr_dicom_image img;
    present_ok(&s, &img);
    ck_assert_str_eq(img.voi_used, "min/max 100..1100 (padding excluded)");
    for (size_t i = 0; i < R * C; i++) {
        if (px[i] >= 50000)
            ck_assert_msg(img.pixels[i] == 0, "padding pixel %zu is %u", i, img.pixels[i]);
        else
            expect_close(&img, i, (px[i] - 100) / 1000.0 * 255, "min/max");
    }
    cxr_dicom_image_release(&img);

    /* without padding attributes the border takes part: the body goes dark */
    s.pad = s.pad_limit = false;
    present_ok(&s, &img);
    ck_assert_ptr_nonnull(strstr(img.voi_used, "min/max 100.."));
    ck_assert_uint_lt(img.pixels[(R / 2) * C + C / 2], 10);
    cxr_dicom_image_release(&img);

    /* signed data, a single padding value (SS) */
    static uint16_t spx[R * C];
    k = 0;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            bool border = r == 0 || c == 0 || r == R - 1 || c == C - 1;
            int v = border ? -2000 : -1000 + (int)((k++ * 2000) / (interior - 1));
            spx[r * C + c] = (uint16_t)(int16_t)v;
        }
    struct spec t = {.rows = R,
                     .cols = C,
                     .ba = 16,
                     .bs = 16,
                     .pr = 1,
                     .px16 = spx,
                     .pad = true,
                     .pad_value = -2000};
    present_ok(&t, &img);
    ck_assert_str_eq(img.voi_used, "min/max -1000..1000 (padding excluded)");
    for (size_t i = 0; i < R * C; i++) {
        int v = (int16_t)spx[i];
        if (v == -2000)
            ck_assert_uint_eq(img.pixels[i], 0);
        else
            expect_close(&img, i, (v + 1000) / 2000.0 * 255, "signed min/max");
    }
    cxr_dicom_image_release(&img);
}
END_TEST

/* MONOCHROME1 (PS3.3 C.7.6.3.1.2): minimum is white. The output is always
 * bright bone, so a MONOCHROME1 image and its MONOCHROME2 twin invert. */
START_TEST(test_present_monochrome1_inverts)
{
    static uint16_t px[64 * 64];
    for (int i = 0; i < 64 * 64; i++)
        px[i] = (uint16_t)(i % 4096);
    struct spec s = {
        .rows = 64, .cols = 64, .ba = 16, .bs = 12, .px16 = px, .wc = "2000", .ww = "3000"};
    for (int with_window = 1; with_window >= 0; with_window--) {
        if (!with_window)
            s.wc = s.ww = NULL;
        struct cxr_dicom_image m1, m2;
        s.pi = "MONOCHROME2";
        present_ok(&s, &m2);
        s.pi = "MONOCHROME1";
        present_ok(&s, &m1);
        for (size_t i = 0; i < 64 * 64; i++) {
            double y = with_window ? f_linear(px[i], 2000, 3000) : px[i] / 4095.0 * 255;
            expect_close(&m2, i, y, "MONOCHROME2");
            expect_close(&m1, i, 255 - y, "MONOCHROME1");
        }
        ck_assert_uint_eq(m1.pixels[0], 255); /* stored 0 of MONOCHROME1: white */
        ck_assert_uint_eq(m2.pixels[0], 0);
        cxr_dicom_image_release(&m1);
        cxr_dicom_image_release(&m2);
    }
}
END_TEST

/* The same on a real MONOCHROME1 radiograph: its twin differs only in the
 * PhotometricInterpretation bytes. */
START_TEST(test_present_real_monochrome1_twin)
{
    size_t n = 0;
    uint8_t *bytes = cxr_test_read_file(cxr_test_data_path("wg04_RG3_JPLY.dcm"), &n);
    ck_assert_ptr_nonnull(bytes);
    uint8_t *pos = memmem(bytes, n, "MONOCHROME1", 11);
    ck_assert_ptr_nonnull(pos);
    struct cxr_dicom_instance *a = NULL, *b = NULL;
    ck_assert_msg(cxr_dicom_instance_load_memory(bytes, n, "mono1", &a, g_err) == CXR_OK, "%s",
                  g_err);
    pos[10] = '2';
    ck_assert_msg(cxr_dicom_instance_load_memory(bytes, n, "mono2", &b, g_err) == CXR_OK, "%s",
                  g_err);
    free(bytes);
    struct cxr_dicom_image ia, ib;
    ck_assert_msg(cxr_dicom_instance_present(a, &ia, g_err) == CXR_OK, "%s", g_err);
    ck_assert_msg(cxr_dicom_instance_present(b, &ib, g_err) == CXR_OK, "%s", g_err);
    ck_assert_str_eq(ia.voi_used, ib.voi_used);
    size_t npix = (size_t)ia.width * (size_t)ia.height, bad = 0, first_bad = 0;
    for (size_t i = 0; i < npix; i++) {
        int sum = ia.pixels[i] + ib.pixels[i];
        if (sum < 254 || sum > 256) {
            if (!bad++)
                first_bad = i;
        }
    }
    ck_assert_msg(bad == 0, "%zu pixels not inverted, first %zu: %u + %u", bad, first_bad,
                  ia.pixels[first_bad], ib.pixels[first_bad]);
    cxr_dicom_image_release(&ia);
    cxr_dicom_image_release(&ib);
    cxr_dicom_instance_free(a);
    cxr_dicom_instance_free(b);
}
END_TEST

/* Colour becomes grey by luma (ITU-R BT.601 weights), with no VOI. */
START_TEST(test_present_rgb_to_grey)
{
    static const uint8_t rgb[4 * 4 * 3] = {
        255, 0,  0,   0,  255, 0,   0,   0,  255, 255, 255, 255, 0,   0,  0,   10,
        200, 90, 30,  60, 90,  200, 100, 50, 128, 128, 128, 1,   2,   3,  250, 5,
        5,   5,  250, 5,  5,   5,   250, 77, 88,  99,  13,  240, 170, 60, 0,   60,
    };
    struct spec s = {.pi = "RGB", .spp = 3, .rows = 4, .cols = 4, .ba = 8, .bs = 8, .px8 = rgb};
    struct cxr_dicom_image img;
    present_ok(&s, &img);
    ck_assert_ptr_nonnull(strstr(img.voi_used, "grey"));
    for (size_t i = 0; i < 16; i++) {
        double y = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
        expect_close(&img, i, y, "luma");
    }
    cxr_dicom_image_release(&img);
}
END_TEST

/* ------------------------------------------------------------------ refusals */

START_TEST(test_present_refusals)
{
    static uint16_t px[64];
    struct cxr_dicom_image img;
    struct {
        struct spec s;
        enum cxr_status st;
        const char *text;
    } rows[] = {
        /* 60000 x 60000 claimed, 128 bytes present: refused before allocating */
        {{.rows = 60000, .cols = 60000, .ba = 16, .bs = 16, .px16 = px, .px_bytes = 128},
         CXR_ERR_LIMIT,
         "limit"},
        {{.rows = 64, .cols = 64, .ba = 16, .bs = 12, .px16 = px, .px_bytes = 128},
         CXR_ERR_DICOM_DECODE,
         "truncated"},
        {{.rows = 4, .cols = 4, .ba = 16, .bs = 17, .px16 = px},
         CXR_ERR_DICOM_DECODE,
         "BitsStored 17"},
        {{.pi = "PALETTE COLOR", .rows = 4, .cols = 4, .ba = 16, .bs = 16, .px16 = px},
         CXR_ERR_UNSUPPORTED,
         "PALETTE COLOR"},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        struct cxr_dicom_instance *inst = build(&rows[r].s);
        memset(&img, 0x5A, sizeof img);
        enum cxr_status st = cxr_dicom_instance_present(inst, &img, g_err);
        ck_assert_msg(st == rows[r].st, "row %zu: status %d (%s)", r, st, g_err);
        ck_assert_msg(strstr(g_err, rows[r].text), "row %zu: '%s' lacks '%s'", r, g_err,
                      rows[r].text);
        ck_assert_ptr_null(img.pixels);
        ck_assert_int_eq(img.width, 0);
        cxr_dicom_instance_free(inst);
    }
    cxr_dicom_image_release(NULL);
    cxr_dicom_instance_free(NULL);
}
END_TEST

/* The committed radiographs present (what a fresh clone can check). */
START_TEST(test_present_committed_files)
{
    const struct {
        const char *file;
        int w, h;
        const char *voi;
    } rows[] = {
        {"wg04_RG3_JPLY.dcm", 1760, 1760, "window C="},
        {"siim_cr_chest_jpeg_baseline.dcm", 1024, 1024, "min/max 1..246"},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        struct cxr_dicom_instance *inst = NULL;
        ck_assert_msg(
            cxr_dicom_instance_load_file(cxr_test_data_path(rows[r].file), &inst, g_err) == CXR_OK,
            "%s", g_err);
        struct cxr_dicom_image img;
        ck_assert_msg(cxr_dicom_instance_present(inst, &img, g_err) == CXR_OK, "%s", g_err);
        ck_assert_int_eq(img.width, rows[r].w);
        ck_assert_int_eq(img.height, rows[r].h);
        ck_assert_msg(strncmp(img.voi_used, rows[r].voi, strlen(rows[r].voi)) == 0, "%s: %s",
                      rows[r].file, img.voi_used);
        cxr_dicom_image_release(&img);
        cxr_dicom_instance_free(inst);
    }
}
END_TEST

static Suite *present_suite(void)
{
    Suite *s = suite_create("dicom_present");
    TCase *tc = tcase_create("voi");
    tcase_add_test(tc, test_present_window_functions);
    tcase_add_test(tc, test_present_rescale);
    tcase_add_test(tc, test_present_modality_lut_sequence);
    tcase_add_test(tc, test_present_voi_lut_sequence);
    tcase_add_test(tc, test_present_minmax_excludes_padding);
    suite_add_tcase(s, tc);
    tc = tcase_create("polarity");
    tcase_add_test(tc, test_present_monochrome1_inverts);
    tcase_add_test(tc, test_present_real_monochrome1_twin);
    tcase_add_test(tc, test_present_rgb_to_grey);
    suite_add_tcase(s, tc);
    tc = tcase_create("files");
    tcase_add_test(tc, test_present_refusals);
    tcase_add_test(tc, test_present_committed_files);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    cxr_dicom_global_init();
    return cxr_test_run(present_suite());
}
