/* check_nn_train_data.c — the data side of training in nn: the seeded
 * generator, augmentation (identity exactness, known geometry, determinism)
 * and the metrics (AUC/ROC against a brute-force pair count and hand-worked
 * cases, thresholds against exhaustive search, bootstrap against a naive
 * re-implementation drawing the same indices, calibration). */
#include <check.h>
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/nn_train.h"
#include "test_util.h"

/* ------------------------------------------------------------------ rng */

START_TEST(rng_is_deterministic_and_uniform)
{
    struct cxr_nn_rng a, b;
    cxr_nn_rng_seed(&a, 42);
    cxr_nn_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(cxr_nn_rng_next(&a), cxr_nn_rng_next(&b));
    cxr_nn_rng_seed(&b, 43);
    ck_assert_uint_ne(cxr_nn_rng_next(&a), cxr_nn_rng_next(&b));

    /* below(n) stays in range and is roughly uniform (chi-square, 9 dof;
     * 40 is far beyond the 0.9999 quantile 33.7). */
    int counts[10] = {0};
    cxr_nn_rng_seed(&a, 7);
    for (int i = 0; i < 100000; i++) {
        uint64_t v = cxr_nn_rng_below(&a, 10);
        ck_assert_uint_lt(v, 10);
        counts[v]++;
    }
    double chi = 0;
    for (int k = 0; k < 10; k++)
        chi += (counts[k] - 10000.0) * (counts[k] - 10000.0) / 10000.0;
    ck_assert_double_lt(chi, 40.0);

    double sum = 0, sum2 = 0;
    for (int i = 0; i < 100000; i++) {
        double u = cxr_nn_rng_uniform(&a);
        ck_assert(u >= 0.0 && u < 1.0);
        double z = cxr_nn_rng_normal(&a);
        sum += z;
        sum2 += z * z;
    }
    ck_assert_double_lt(fabs(sum / 100000), 0.02);
    ck_assert_double_lt(fabs(sum2 / 100000 - 1.0), 0.03);

    int32_t idx[100];
    for (int i = 0; i < 100; i++)
        idx[i] = i;
    cxr_nn_rng_shuffle(&a, idx, 100);
    int seen[100] = {0}, moved = 0;
    for (int i = 0; i < 100; i++) {
        ck_assert(idx[i] >= 0 && idx[i] < 100);
        seen[idx[i]]++;
        moved += idx[i] != i;
    }
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(seen[i], 1);
    ck_assert_int_gt(moved, 50);

    ck_assert_uint_eq(cxr_nn_seed_mix(1, 2, 3), cxr_nn_seed_mix(1, 2, 3));
    ck_assert_uint_ne(cxr_nn_seed_mix(1, 2, 3), cxr_nn_seed_mix(1, 3, 2));
    ck_assert_uint_ne(cxr_nn_seed_mix(1, 2, 3), cxr_nn_seed_mix(2, 2, 3));
}
END_TEST

/* ------------------------------------------------------------------ augmentation */

static void random_image(uint8_t *img, int w, int h, int stride, uint64_t seed)
{
    struct cxr_nn_rng r;
    cxr_nn_rng_seed(&r, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < stride; x++)
            img[y * stride + x] = (uint8_t)cxr_nn_rng_below(&r, 256);
}

START_TEST(augment_identity_is_exact)
{
    const int w = 37, h = 23, stride = 41;
    uint8_t src[23 * 41], dst[23 * 40];
    random_image(src, w, h, stride, 3);
    struct cxr_nn_augment_params p;
    cxr_nn_augment_params_identity(&p);
    memset(dst, 0xAB, sizeof dst);
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, w, h, stride, dst, w, h, 40), CXR_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            ck_assert_uint_eq(dst[y * 40 + x], src[y * stride + x]);

    /* Parameters drawn from "no augmentation" options are the identity too. */
    struct cxr_nn_augment_options none;
    cxr_nn_augment_options_none(&none);
    cxr_nn_augment_draw(&none, 99, &p);
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, w, h, stride, dst, w, h, 40), CXR_OK);
    for (int y = 0; y < h; y++)
        ck_assert_int_eq(memcmp(dst + y * 40, src + y * stride, (size_t)w), 0);

    /* The mirror alone is an exact left-right flip. */
    cxr_nn_augment_params_identity(&p);
    p.flip = true;
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, w, h, stride, dst, w, h, 40), CXR_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            ck_assert_uint_eq(dst[y * 40 + x], src[y * stride + (w - 1 - x)]);
}
END_TEST

/* A single bright pixel right of the centre of a 9x9 image; rotating by
 * +90° (counter-clockwise on screen, y down) must move it above the centre,
 * -90° below it, 180° to the left — whole pixels, so exactly. */
START_TEST(augment_rotation_moves_pixel_where_expected)
{
    uint8_t src[81] = {0}, dst[81];
    src[4 * 9 + 6] = 200; /* (x 6, y 4); centre pixel is (4, 4) */
    struct {
        double angle;
        int x, y;
    } cases[] = {{90, 4, 2}, {-90, 4, 6}, {180, 2, 4}, {0, 6, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct cxr_nn_augment_params p;
        cxr_nn_augment_params_identity(&p);
        p.angle_deg = cases[c].angle;
        ck_assert_int_eq(cxr_nn_augment_apply(&p, src, 9, 9, 9, dst, 9, 9, 9), CXR_OK);
        for (int y = 0; y < 9; y++)
            for (int x = 0; x < 9; x++) {
                int want = (x == cases[c].x && y == cases[c].y) ? 200 : 0;
                ck_assert_msg(abs(dst[y * 9 + x] - want) <= 1, "angle %g: (%d,%d) = %d, want %d",
                              cases[c].angle, x, y, dst[y * 9 + x], want);
            }
    }
}
END_TEST

/* Intensity-weighted centroid of an image. */
static void centroid(const uint8_t *img, int w, int h, double *cx, double *cy)
{
    double s = 0, sx = 0, sy = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            s += img[y * w + x];
            sx += img[y * w + x] * (x + 0.5);
            sy += img[y * w + x] * (y + 0.5);
        }
    *cx = sx / s;
    *cy = sy / s;
}

/* A smooth blob 20 px right of the centre of a 96x96 image: rotation by 30°,
 * zoom 1.1 and a shift of (+0.05, -0.1) of the size must put its centroid at
 * c + t + 1.1 * 20 * (cos 30°, -sin 30°). */
START_TEST(augment_affine_moves_blob_centroid)
{
    enum { W = 96 };
    static uint8_t src[W * W], dst[W * W];
    double bx = 48 + 20, by = 48;
    for (int y = 0; y < W; y++)
        for (int x = 0; x < W; x++) {
            double dx = x + 0.5 - bx, dy = y + 0.5 - by;
            src[y * W + x] = (uint8_t)lrint(250.0 * exp(-(dx * dx + dy * dy) / (2 * 3.0 * 3.0)));
        }
    struct cxr_nn_augment_params p;
    cxr_nn_augment_params_identity(&p);
    p.angle_deg = 30;
    p.scale = 1.1;
    p.translate_x = 0.05;
    p.translate_y = -0.1;
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, W, W, W, dst, W, W, W), CXR_OK);
    double cx, cy;
    centroid(dst, W, W, &cx, &cy);
    double ex = 48 + 0.05 * W + 1.1 * 20 * cos(M_PI / 6);
    double ey = 48 - 0.1 * W - 1.1 * 20 * sin(M_PI / 6);
    ck_assert_msg(fabs(cx - ex) < 0.25 && fabs(cy - ey) < 0.25, "centroid (%g,%g), want (%g,%g)",
                  cx, cy, ex, ey);

    /* Mirror then rotate: the blob goes left first (x → 48-20), then turns
     * counter-clockwise: to c + 20 * (-cos 30°, +sin 30°). */
    cxr_nn_augment_params_identity(&p);
    p.angle_deg = 30;
    p.flip = true;
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, W, W, W, dst, W, W, W), CXR_OK);
    centroid(dst, W, W, &cx, &cy);
    ex = 48 - 20 * cos(M_PI / 6);
    ey = 48 + 20 * sin(M_PI / 6);
    ck_assert_msg(fabs(cx - ex) < 0.25 && fabs(cy - ey) < 0.25, "flip: (%g,%g), want (%g,%g)", cx,
                  cy, ex, ey);
}
END_TEST

START_TEST(augment_intensity_jitter)
{
    uint8_t src[4] = {50, 150, 50, 150}, dst[4];
    struct cxr_nn_augment_params p;
    cxr_nn_augment_params_identity(&p);
    p.contrast = 0.5; /* about the mean 100 */
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, 2, 2, 2, dst, 2, 2, 2), CXR_OK);
    ck_assert_uint_eq(dst[0], 75);
    ck_assert_uint_eq(dst[1], 125);
    p.contrast = 1.0;
    p.brightness = 1.2;
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, 2, 2, 2, dst, 2, 2, 2), CXR_OK);
    ck_assert_uint_eq(dst[0], 60);
    ck_assert_uint_eq(dst[1], 180);
    p.brightness = 2.0; /* 300 saturates */
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, 2, 2, 2, dst, 2, 2, 2), CXR_OK);
    ck_assert_uint_eq(dst[1], 255);
    /* Pixels mapped from outside the image take the fill value. */
    cxr_nn_augment_params_identity(&p);
    p.translate_x = 0.5;
    p.fill = 7;
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, 2, 2, 2, dst, 2, 2, 2), CXR_OK);
    ck_assert_uint_eq(dst[0], 7);
    ck_assert_uint_eq(dst[1], 50);
    /* Bad arguments are refused, not crashed on. */
    p.scale = 0;
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, 2, 2, 2, dst, 2, 2, 2), CXR_ERR_INVALID_ARG);
    cxr_nn_augment_params_identity(&p);
    ck_assert_int_eq(cxr_nn_augment_apply(&p, src, 2, 2, 1, dst, 2, 2, 2), CXR_ERR_INVALID_ARG);
}
END_TEST

START_TEST(augment_draw_is_seeded_and_in_range)
{
    struct cxr_nn_augment_options o;
    cxr_nn_augment_options_defaults(&o);
    ck_assert(!o.hflip);
    struct cxr_nn_augment_params a, b;
    int differ = 0;
    double amin = 1e9, amax = -1e9;
    for (uint64_t s = 0; s < 2000; s++) {
        cxr_nn_augment_draw(&o, s, &a);
        cxr_nn_augment_draw(&o, s, &b);
        ck_assert(a.angle_deg == b.angle_deg && a.scale == b.scale &&
                  a.translate_x == b.translate_x && a.translate_y == b.translate_y &&
                  a.brightness == b.brightness && a.contrast == b.contrast && a.flip == b.flip);
        ck_assert(fabs(a.angle_deg) <= 10.0);
        ck_assert(a.scale >= 0.9 && a.scale <= 1.1);
        ck_assert(fabs(a.translate_x) <= 0.06 && fabs(a.translate_y) <= 0.06);
        ck_assert(a.brightness >= 0.8 && a.brightness <= 1.2);
        ck_assert(a.contrast >= 0.8 && a.contrast <= 1.2);
        ck_assert(!a.flip);
        amin = fmin(amin, a.angle_deg);
        amax = fmax(amax, a.angle_deg);
        cxr_nn_augment_draw(&o, s + 1, &b);
        differ += a.angle_deg != b.angle_deg;
    }
    ck_assert_int_eq(differ, 2000);
    ck_assert(amin < -9.0 && amax > 9.0); /* the range is used */

    /* Same seed, same image bytes. */
    enum { W = 50 };
    static uint8_t src[W * W], d1[W * W], d2[W * W];
    random_image(src, W, W, W, 5);
    cxr_nn_augment_draw(&o, cxr_nn_seed_mix(1, 3, 17), &a);
    cxr_nn_augment_draw(&o, cxr_nn_seed_mix(1, 3, 17), &b);
    ck_assert_int_eq(cxr_nn_augment_apply(&a, src, W, W, W, d1, W, W, W), CXR_OK);
    ck_assert_int_eq(cxr_nn_augment_apply(&b, src, W, W, W, d2, W, W, W), CXR_OK);
    ck_assert_int_eq(memcmp(d1, d2, sizeof d1), 0);
    cxr_nn_augment_draw(&o, cxr_nn_seed_mix(1, 4, 17), &b);
    ck_assert_int_eq(cxr_nn_augment_apply(&b, src, W, W, W, d2, W, W, W), CXR_OK);
    ck_assert_int_ne(memcmp(d1, d2, sizeof d1), 0);

    o.hflip = true;
    int flips = 0;
    for (uint64_t s = 0; s < 1000; s++) {
        cxr_nn_augment_draw(&o, s, &a);
        flips += a.flip;
    }
    ck_assert(flips > 400 && flips < 600);
}
END_TEST

/* ------------------------------------------------------------------ resize, tensors */

/* 4 → 2 pixels: scale 2, support 2; output 0 is centred at 1.0 and takes
 * inputs 0..2 with triangle weights .75 .75 .25 (normalised by 1.75),
 * output 1 (centre 3.0) inputs 1..3 with .25 .75 .75:
 * [0 70 140 210] → [(52.5 + 35)/1.75, (17.5 + 105 + 157.5)/1.75] = [50, 160]. */
START_TEST(resize_u8_hand_example_and_identity)
{
    uint8_t src[4] = {0, 70, 140, 210}, dst[2];
    ck_assert_int_eq(cxr_nn_resize_u8(src, 4, 1, 4, dst, 2, 1, 2), CXR_OK);
    ck_assert_uint_eq(dst[0], 50);
    ck_assert_uint_eq(dst[1], 160);
    /* the same along the other axis */
    ck_assert_int_eq(cxr_nn_resize_u8(src, 1, 4, 1, dst, 1, 2, 1), CXR_OK);
    ck_assert(dst[0] == 50 && dst[1] == 160);

    enum { W = 33, H = 17 };
    static uint8_t img[H * 40], out[H * W];
    random_image(img, W, H, 40, 8);
    ck_assert_int_eq(cxr_nn_resize_u8(img, W, H, 40, out, W, H, W), CXR_OK);
    for (int y = 0; y < H; y++)
        ck_assert_int_eq(memcmp(out + y * W, img + y * 40, W), 0);
    memset(img, 77, sizeof img);
    ck_assert_int_eq(cxr_nn_resize_u8(img, W, H, 40, out, 7, 5, 7), CXR_OK);
    for (int i = 0; i < 35; i++)
        ck_assert_uint_eq(out[i], 77);
    ck_assert_int_eq(cxr_nn_resize_u8(img, W, H, 10, out, 7, 5, 7), CXR_ERR_INVALID_ARG);
}
END_TEST

/* Against PIL's antialiased bilinear reduction (Debian's Python), within
 * one grey level (PIL works in fixed point). */
START_TEST(resize_u8_matches_pil)
{
    char *dir = cxr_test_tmpdir();
    enum { W = 150, H = 110, OW = 61, OH = 37 };
    static uint8_t img[H * W], out[OH * OW];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            img[y * W + x] = (uint8_t)(127 + 120 * sin(x * 0.21) * cos(y * 0.13 + x * 0.05));
    char in[4096], ref[4096];
    snprintf(in, sizeof in, "%s/in.raw", dir);
    snprintf(ref, sizeof ref, "%s/ref.raw", dir);
    ck_assert(cxr_test_write_file(in, img, sizeof img));
    int rc = cxr_test_sh("%s -c \"from PIL import Image; im=Image.frombytes('L',(%d,%d),"
                         "open('%s','rb').read()); open('%s','wb').write(im.resize((%d,%d),"
                         "Image.BILINEAR).tobytes())\" 2>/dev/null",
                         cxr_test_python(), W, H, in, ref, OW, OH);
    if (rc != 0) {
        printf("SKIP resize against PIL: %s has no PIL\n", cxr_test_python());
    } else {
        size_t len;
        uint8_t *want = cxr_test_read_file(ref, &len);
        ck_assert(want && len == sizeof out);
        ck_assert_int_eq(cxr_nn_resize_u8(img, W, H, W, out, OW, OH, OW), CXR_OK);
        int worst = 0;
        for (size_t i = 0; i < len; i++)
            worst = abs(out[i] - want[i]) > worst ? abs(out[i] - want[i]) : worst;
        ck_assert_msg(worst <= 1, "max difference to PIL %d", worst);
        free(want);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(train_input_is_the_inference_preprocessing)
{
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.input_width = 32;
    meta.input_height = 24;
    enum { W = 70, H = 50 };
    static uint8_t img[W * H], scratch[W * H];
    static float a[32 * 24], b[32 * 24];
    random_image(img, W, H, W, 12);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, img, W, H, W, NULL, a), CXR_OK);
    ck_assert_int_eq(cxr_nn_train_input(&meta, NULL, img, W, H, W, NULL, b), CXR_OK);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
    struct cxr_nn_augment_params p;
    cxr_nn_augment_params_identity(&p);
    ck_assert_int_eq(cxr_nn_train_input(&meta, &p, img, W, H, W, scratch, b), CXR_OK);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
    /* a real augmentation changes the tensor */
    p.angle_deg = 7;
    ck_assert_int_eq(cxr_nn_train_input(&meta, &p, img, W, H, W, scratch, b), CXR_OK);
    ck_assert_int_ne(memcmp(a, b, sizeof a), 0);
    ck_assert_int_eq(cxr_nn_train_input(&meta, &p, img, W, H, W, NULL, b), CXR_ERR_INVALID_ARG);
}
END_TEST

/* ------------------------------------------------------------------ metrics */

/* The reference: count pairs. */
static double auc_pairs(const double *s, const uint8_t *l, size_t n)
{
    double wins = 0;
    long long pairs = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (l[i] && !l[j]) {
                pairs++;
                wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
            }
    return pairs ? wins / (double)pairs : NAN;
}

/* Scores with many ties (quantised) whose level depends on the label. */
static void random_cases(double *s, uint8_t *l, size_t n, uint64_t seed, int levels)
{
    struct cxr_nn_rng r;
    cxr_nn_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        l[i] = cxr_nn_rng_uniform(&r) < 0.3;
        double v = cxr_nn_rng_normal(&r) + (l[i] ? 1.2 : 0.0);
        s[i] = 1.0 / (1.0 + exp(-v));
        if (levels)
            s[i] = round(s[i] * levels) / levels;
    }
}

START_TEST(auc_matches_pair_count)
{
    enum { N = 700 };
    static double s[N];
    static uint8_t l[N];
    int levels[] = {0, 10, 3};
    for (int k = 0; k < 3; k++) {
        random_cases(s, l, N, 11 + (uint64_t)k, levels[k]);
        double ref = auc_pairs(s, l, N);
        ck_assert_double_eq_tol(cxr_nn_auc(s, l, N), ref, 1e-12);
        struct cxr_nn_roc roc;
        ck_assert_int_eq(cxr_nn_roc_compute(s, l, N, &roc, NULL), CXR_OK);
        ck_assert_double_eq_tol(roc.auc, ref, 1e-12);
        ck_assert_double_eq(roc.fpr[0], 0);
        ck_assert_double_eq(roc.tpr[0], 0);
        ck_assert_double_eq(roc.fpr[roc.count - 1], 1);
        ck_assert_double_eq(roc.tpr[roc.count - 1], 1);
        for (size_t i = 1; i < roc.count; i++) {
            ck_assert(roc.fpr[i] >= roc.fpr[i - 1] && roc.tpr[i] >= roc.tpr[i - 1]);
            ck_assert(roc.threshold[i] < roc.threshold[i - 1]);
        }
        cxr_nn_roc_release(&roc);
    }
    /* A perfect ranking, an inverted one, all tied. */
    double s2[4] = {0.1, 0.2, 0.8, 0.9};
    uint8_t l2[4] = {0, 0, 1, 1}, l3[4] = {1, 1, 0, 0};
    double s4[4] = {0.5, 0.5, 0.5, 0.5};
    ck_assert_double_eq(cxr_nn_auc(s2, l2, 4), 1.0);
    ck_assert_double_eq(cxr_nn_auc(s2, l3, 4), 0.0);
    ck_assert_double_eq(cxr_nn_auc(s4, l2, 4), 0.5);
    ck_assert(isnan(cxr_nn_auc(s2, l2, 2))); /* one class only */
    struct cxr_nn_roc roc;
    ck_assert_int_eq(cxr_nn_roc_compute(s2, l2, 2, &roc, NULL), CXR_ERR_INVALID_ARG);
    ck_assert_ptr_null(roc.fpr);
}
END_TEST

/* scikit-learn's documented roc_curve example, worked by hand:
 * y = [0 0 1 1], s = [.1 .4 .35 .8] → fpr [0 0 .5 .5 1], tpr [0 .5 .5 1 1],
 * thresholds [inf .8 .4 .35 .1], AUC 0.75. */
START_TEST(roc_hand_example)
{
    double s[4] = {0.1, 0.4, 0.35, 0.8};
    uint8_t l[4] = {0, 0, 1, 1};
    double fpr[] = {0, 0, 0.5, 0.5, 1}, tpr[] = {0, 0.5, 0.5, 1, 1},
           thr[] = {INFINITY, 0.8, 0.4, 0.35, 0.1};
    struct cxr_nn_roc roc;
    ck_assert_int_eq(cxr_nn_roc_compute(s, l, 4, &roc, NULL), CXR_OK);
    ck_assert_uint_eq(roc.count, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_double_eq(roc.fpr[i], fpr[i]);
        ck_assert_double_eq(roc.tpr[i], tpr[i]);
        ck_assert_double_eq(roc.threshold[i], thr[i]);
    }
    ck_assert_double_eq_tol(roc.auc, 0.75, 1e-15);
    ck_assert_double_eq_tol(cxr_nn_auc(s, l, 4), 0.75, 1e-15);
    cxr_nn_roc_release(&roc);

    /* Confusion and rates at 0.4: predicted positive .4 (neg) and .8 (pos). */
    struct cxr_nn_confusion c;
    cxr_nn_confusion_at(s, l, 4, 0.4, &c);
    ck_assert(c.tp == 1 && c.fp == 1 && c.tn == 1 && c.fn == 1);
    struct cxr_nn_rates r;
    cxr_nn_rates_of(&c, &r);
    ck_assert_double_eq(r.sensitivity, 0.5);
    ck_assert_double_eq(r.specificity, 0.5);
    ck_assert_double_eq(r.accuracy, 0.5);
    /* A hand matrix: tp 40 fn 10 tn 30 fp 20. */
    struct cxr_nn_confusion h = {.tp = 40, .fn = 10, .tn = 30, .fp = 20};
    cxr_nn_rates_of(&h, &r);
    ck_assert_double_eq_tol(r.sensitivity, 0.8, 1e-15);
    ck_assert_double_eq_tol(r.specificity, 0.6, 1e-15);
    ck_assert_double_eq_tol(r.accuracy, 0.7, 1e-15);
    ck_assert_double_eq_tol(r.ppv, 40.0 / 60.0, 1e-15);
    ck_assert_double_eq_tol(r.npv, 0.75, 1e-15);
    struct cxr_nn_confusion z = {.tn = 5};
    cxr_nn_rates_of(&z, &r);
    ck_assert(isnan(r.sensitivity) && isnan(r.ppv));
    ck_assert_double_eq(r.specificity, 1.0);
}
END_TEST

/* Exhaustive searches over every candidate threshold. */
static double brute_sens_threshold(const double *s, const uint8_t *l, size_t n, double target)
{
    double best = -INFINITY;
    for (size_t k = 0; k < n; k++) {
        struct cxr_nn_confusion c;
        cxr_nn_confusion_at(s, l, n, s[k], &c);
        if ((double)c.tp / (double)(c.tp + c.fn) >= target - 1e-12 && s[k] > best)
            best = s[k];
    }
    return best;
}

static double brute_spec_threshold(const double *s, const uint8_t *l, size_t n, double target)
{
    double best = INFINITY, mx = -INFINITY;
    for (size_t k = 0; k <= n; k++) {
        double t;
        if (k == n) {
            for (size_t i = 0; i < n; i++)
                mx = fmax(mx, s[i]);
            t = nextafter(mx, INFINITY);
        } else {
            t = s[k];
        }
        struct cxr_nn_confusion c;
        cxr_nn_confusion_at(s, l, n, t, &c);
        if ((double)c.tn / (double)(c.tn + c.fp) >= target - 1e-12 && t < best)
            best = t;
    }
    return best;
}

START_TEST(thresholds_match_exhaustive_search)
{
    enum { N = 400 };
    static double s[N];
    static uint8_t l[N];
    double targets[] = {0.5, 0.9, 0.95, 0.99, 1.0};
    for (int k = 0; k < 3; k++) {
        random_cases(s, l, N, 100 + (uint64_t)k, k == 2 ? 20 : 0);
        for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
            double a = cxr_nn_threshold_for_sensitivity(s, l, N, targets[t]);
            ck_assert_double_eq(a, brute_sens_threshold(s, l, N, targets[t]));
            struct cxr_nn_confusion c;
            cxr_nn_confusion_at(s, l, N, a, &c);
            ck_assert((double)c.tp / (double)(c.tp + c.fn) >= targets[t] - 1e-12);
            double b = cxr_nn_threshold_for_specificity(s, l, N, targets[t]);
            ck_assert_double_eq(b, brute_spec_threshold(s, l, N, targets[t]));
        }
    }
    /* Hand: 20 positives scoring 0.05, 0.10, ... 1.00: sensitivity 0.95 needs
     * 19 of them, so the threshold is the second lowest positive, 0.10. */
    double s2[25];
    uint8_t l2[25];
    for (int i = 0; i < 20; i++) {
        s2[i] = 0.05 * (i + 1);
        l2[i] = 1;
    }
    const double negs[5] = {0.01, 0.02, 0.03, 0.04, 0.05};
    for (int i = 20; i < 25; i++) {
        s2[i] = negs[i - 20];
        l2[i] = 0;
    }
    ck_assert_double_eq(cxr_nn_threshold_for_sensitivity(s2, l2, 25, 0.95), s2[1]);
    /* Specificity 0.8 = 4 of 5 negatives below: the smallest such threshold
     * is the fifth negative's score 0.05 (tied with the first positive). */
    ck_assert_double_eq(cxr_nn_threshold_for_specificity(s2, l2, 25, 0.8), s2[24]);
    /* Specificity 1.0: above every negative: the next score up, 0.10. */
    ck_assert_double_eq(cxr_nn_threshold_for_specificity(s2, l2, 25, 1.0), s2[1]);
}
END_TEST

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, size_t m, double q)
{
    qsort(v, m, sizeof *v, cmp_d);
    double pos = q * (double)(m - 1);
    size_t lo = (size_t)pos, hi = lo + 1 < m ? lo + 1 : lo;
    return v[lo] + (pos - (double)lo) * (v[hi] - v[lo]);
}

/* The bootstrap against a naive re-implementation: draw the same indices
 * with the same generator, build each resample explicitly, count pairs. */
START_TEST(bootstrap_matches_naive_resampling)
{
    enum { N = 120, B = 300 };
    static double s[N], rs[N];
    static uint8_t l[N], rl[N];
    random_cases(s, l, N, 5, 12);
    const double thr = 0.5;
    struct cxr_nn_eval e;
    ck_assert_int_eq(cxr_nn_evaluate(s, l, N, thr, B, 77, &e, NULL), CXR_OK);

    static double auc[B], sens[B], spec[B], acc[B];
    size_t ma = 0, ms = 0, mp = 0;
    struct cxr_nn_rng r;
    cxr_nn_rng_seed(&r, 77);
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < N; i++) {
            size_t k = (size_t)cxr_nn_rng_below(&r, N);
            rs[i] = s[k];
            rl[i] = l[k];
        }
        double a = auc_pairs(rs, rl, N);
        if (!isnan(a))
            auc[ma++] = a;
        struct cxr_nn_confusion c;
        cxr_nn_confusion_at(rs, rl, N, thr, &c);
        if (c.tp + c.fn)
            sens[ms++] = (double)c.tp / (double)(c.tp + c.fn);
        if (c.tn + c.fp)
            spec[mp++] = (double)c.tn / (double)(c.tn + c.fp);
        acc[b] = (double)(c.tp + c.tn) / N;
    }
    ck_assert_int_eq(e.resamples_used, (int)ma);
    ck_assert_double_eq_tol(e.auc.lo, pct(auc, ma, 0.025), 1e-12);
    ck_assert_double_eq_tol(e.auc.hi, pct(auc, ma, 0.975), 1e-12);
    ck_assert_double_eq_tol(e.sensitivity.lo, pct(sens, ms, 0.025), 1e-12);
    ck_assert_double_eq_tol(e.sensitivity.hi, pct(sens, ms, 0.975), 1e-12);
    ck_assert_double_eq_tol(e.specificity.lo, pct(spec, mp, 0.025), 1e-12);
    ck_assert_double_eq_tol(e.specificity.hi, pct(spec, mp, 0.975), 1e-12);
    ck_assert_double_eq_tol(e.accuracy.lo, pct(acc, B, 0.025), 1e-12);
    ck_assert_double_eq_tol(e.accuracy.hi, pct(acc, B, 0.975), 1e-12);
    ck_assert_double_eq_tol(e.auc.value, auc_pairs(s, l, N), 1e-12);
    ck_assert(e.auc.lo < e.auc.value && e.auc.value < e.auc.hi);

    /* Deterministic for a seed, different for another. */
    struct cxr_nn_eval e2;
    ck_assert_int_eq(cxr_nn_evaluate(s, l, N, thr, B, 77, &e2, NULL), CXR_OK);
    ck_assert_int_eq(memcmp(&e, &e2, sizeof e), 0);
    ck_assert_int_eq(cxr_nn_evaluate(s, l, N, thr, B, 78, &e2, NULL), CXR_OK);
    ck_assert(e.auc.lo != e2.auc.lo || e.auc.hi != e2.auc.hi);
    /* No resampling: values only. */
    ck_assert_int_eq(cxr_nn_evaluate(s, l, N, thr, 0, 1, &e2, NULL), CXR_OK);
    ck_assert(isnan(e2.auc.lo) && e2.auc.value == e.auc.value);
    char err[CXR_ERRLEN] = "";
    ck_assert_int_eq(cxr_nn_evaluate(s, l, N, thr, 5, 1, &e2, err), CXR_ERR_INVALID_ARG);
    ck_assert_str_ne(err, "");
}
END_TEST

/* Reliability by hand: 0.05 and 0.15 are normals, 0.85 and 0.95 positives,
 * 0.55 and 0.58 one of each; ten bins. ECE = (0.05 + 0.15 + 0.15 + 0.05 +
 * 2 |0.565 - 0.5|) / 6. A 1.0 lands in the last bin, not past it. */
START_TEST(reliability_hand_example)
{
    const double sc[] = {0.05, 0.15, 0.55, 0.58, 0.85, 0.95, 1.0};
    const uint8_t lab[] = {0, 0, 1, 0, 1, 1, 1};
    struct cxr_nn_reliability r;
    char err[CXR_ERRLEN];
    ck_assert_int_eq(cxr_nn_reliability_compute(sc, lab, 6, 10, &r, err), CXR_OK);
    ck_assert_int_eq(r.nbins, 10);
    ck_assert_int_eq(r.count[0], 1);
    ck_assert_int_eq(r.count[1], 1);
    ck_assert_int_eq(r.count[5], 2);
    ck_assert_int_eq(r.count[8], 1);
    ck_assert_int_eq(r.count[9], 1);
    ck_assert_int_eq(r.count[3], 0);
    ck_assert(isnan(r.mean_score[3]) && isnan(r.observed[3]));
    ck_assert_double_eq_tol(r.mean_score[5], 0.565, 1e-12);
    ck_assert_double_eq_tol(r.observed[5], 0.5, 1e-12);
    ck_assert_double_eq_tol(r.ece, (0.05 + 0.15 + 0.15 + 0.05 + 2 * 0.065) / 6.0, 1e-12);
    ck_assert_int_eq(cxr_nn_reliability_compute(sc, lab, 7, 10, &r, err), CXR_OK);
    ck_assert_int_eq(r.count[9], 2);
    ck_assert_double_eq_tol(r.observed[9], 1.0, 1e-12);
    /* refused: no case, a bad bin count, a score that is not a probability */
    ck_assert_int_eq(cxr_nn_reliability_compute(sc, lab, 0, 10, &r, err), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_reliability_compute(sc, lab, 6, 0, &r, err), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_reliability_compute(sc, lab, 6, 21, &r, err), CXR_ERR_INVALID_ARG);
    const double bad[] = {0.5, NAN};
    ck_assert_int_eq(cxr_nn_reliability_compute(bad, lab, 2, 10, &r, err), CXR_ERR_INVALID_ARG);
    const double over[] = {1.5};
    ck_assert_int_eq(cxr_nn_reliability_compute(over, lab, 1, 10, &r, err), CXR_ERR_INVALID_ARG);
}
END_TEST

START_TEST(calibration_picks_documented_thresholds)
{
    enum { N = 600 };
    static double s[N];
    static uint8_t l[N];
    random_cases(s, l, N, 21, 0);
    struct cxr_nn_calibration_options o;
    cxr_nn_calibration_options_defaults(&o);
    ck_assert_double_eq(o.target_sensitivity, 0.95);
    ck_assert_int_ge(o.resamples, 1000);
    o.resamples = 1000;
    struct cxr_nn_calibration cal;
    char err[CXR_ERRLEN];
    ck_assert_int_eq(cxr_nn_calibrate(s, l, N, &o, &cal, err), CXR_OK);
    ck_assert_double_eq(cal.operating_threshold, brute_sens_threshold(s, l, N, 0.95));
    double spec_thr = brute_spec_threshold(s, l, N, 0.95);
    ck_assert_double_eq(cal.urgent_threshold, fmax(spec_thr, cal.operating_threshold));
    ck_assert(cal.operating.sensitivity.value >= 0.95);
    ck_assert(cal.urgent.specificity.value >= 0.95);
    ck_assert(cal.operating.sensitivity.lo <= cal.operating.sensitivity.value);

    char *json = cxr_nn_calibration_to_json(&cal, "validation");
    ck_assert_ptr_nonnull(json);
    json_object *o_json = json_tokener_parse(json);
    ck_assert_ptr_nonnull(o_json);
    json_object *op, *thr, *auc, *val;
    ck_assert(json_object_object_get_ex(o_json, "operating", &op));
    ck_assert(json_object_object_get_ex(op, "threshold", &thr));
    ck_assert_double_eq_tol(json_object_get_double(thr), cal.operating_threshold, 1e-5);
    ck_assert(json_object_object_get_ex(o_json, "auc", &auc));
    ck_assert(json_object_object_get_ex(auc, "value", &val));
    ck_assert_double_eq_tol(json_object_get_double(val), auc_pairs(s, l, N), 1e-5);
    json_object_put(o_json);
    free(json);

    /* One class only: refused with a reason. */
    for (int i = 0; i < N; i++)
        l[i] = 1;
    ck_assert_int_eq(cxr_nn_calibrate(s, l, N, &o, &cal, err), CXR_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(err, "both classes"));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_train_data");
    TCase *t = tcase_create("rng");
    tcase_add_test(t, rng_is_deterministic_and_uniform);
    suite_add_tcase(s, t);
    t = tcase_create("augment");
    tcase_add_test(t, augment_identity_is_exact);
    tcase_add_test(t, augment_rotation_moves_pixel_where_expected);
    tcase_add_test(t, augment_affine_moves_blob_centroid);
    tcase_add_test(t, augment_intensity_jitter);
    tcase_add_test(t, augment_draw_is_seeded_and_in_range);
    suite_add_tcase(s, t);
    t = tcase_create("resize");
    tcase_add_test(t, resize_u8_hand_example_and_identity);
    tcase_add_test(t, resize_u8_matches_pil);
    tcase_add_test(t, train_input_is_the_inference_preprocessing);
    suite_add_tcase(s, t);
    t = tcase_create("metrics");
    tcase_add_test(t, auc_matches_pair_count);
    tcase_add_test(t, roc_hand_example);
    tcase_add_test(t, thresholds_match_exhaustive_search);
    tcase_add_test(t, bootstrap_matches_naive_resampling);
    tcase_add_test(t, reliability_hand_example);
    tcase_add_test(t, calibration_picks_documented_thresholds);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
