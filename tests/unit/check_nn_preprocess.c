/* check_nn_preprocess.c — cxr_nn_preprocess_u8 against PyTorch.
 *
 * The committed cases (tests/data/nn/pre_*.bin) were computed by
 * tests/oracle/make_preprocess_fixtures.py with torch's
 * interpolate(bilinear, antialias=True) in float64; when Debian's python has
 * torch, a realistic size (1500x1200 -> 224) is computed at test time too.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/nn.h"
#include "test_util.h"

#define TOL 1e-4f

struct pcase {
    int32_t w, h, has_mask, out_h, out_w, channels, mode;
    float mean[3], std[3];
    uint8_t *src, *mask;
    float *out; /* expected, NULL for an input-only case */
    void *buf;
};

static bool case_parse(void *buf, size_t len, struct pcase *c)
{
    const uint8_t *b = buf;
    memset(c, 0, sizeof *c);
    c->buf = buf;
    if (len < 60 || memcmp(b, "CXRPP001", 8) != 0)
        return false;
    int32_t v[7];
    memcpy(v, b + 8, sizeof v);
    c->w = v[0], c->h = v[1], c->has_mask = v[2], c->out_h = v[3], c->out_w = v[4];
    c->channels = v[5], c->mode = v[6];
    memcpy(c->mean, b + 36, 12);
    memcpy(c->std, b + 48, 12);
    size_t px = (size_t)c->w * (size_t)c->h, off = 60;
    size_t outn = (size_t)c->channels * (size_t)c->out_h * (size_t)c->out_w;
    if (len != off + px * (c->has_mask ? 2 : 1) + outn * 4)
        return false;
    c->src = (uint8_t *)b + off;
    off += px;
    if (c->has_mask) {
        c->mask = (uint8_t *)b + off;
        off += px;
    }
    c->out = (float *)(void *)(b + off); /* 60 + px*k is not always 4-aligned: copied below */
    float *aligned = malloc(outn * 4);
    ck_assert_ptr_nonnull(aligned);
    memcpy(aligned, b + off, outn * 4);
    c->out = aligned;
    return true;
}

static void case_free(struct pcase *c)
{
    free(c->out);
    free(c->buf);
}

static void meta_for(const struct pcase *c, struct cxr_nn_model_meta *m)
{
    cxr_nn_model_meta_defaults(m, CXR_NN_ARCH_RESNET18);
    m->input_height = c->out_h;
    m->input_width = c->out_w;
    m->channels = c->channels;
    for (int i = 0; i < 3; i++) {
        m->mean[i] = c->mean[i];
        m->std[i] = c->std[i];
    }
    m->resize_mode = c->mode ? CXR_NN_RESIZE_LETTERBOX : CXR_NN_RESIZE_STRETCH;
}

static float max_abs_diff(const float *a, const float *b, size_t n, size_t *where)
{
    float worst = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= worst)) { /* NaN counts as worst */
            worst = isnan(d) ? INFINITY : d;
            *where = i;
        }
    }
    return worst;
}

static const char *const cases[] = {
    "pre_down",           "pre_up",   "pre_mixed",  "pre_letterbox_wide",
    "pre_letterbox_tall", "pre_mask", "pre_extreme"};

/* Each committed PyTorch case within 1e-4 absolute, with a padded stride too. */
START_TEST(test_matches_torch_fixture)
{
    char name[64];
    snprintf(name, sizeof name, "nn/%s.bin", cases[_i]);
    size_t len;
    void *buf = cxr_test_read_file(cxr_test_data_path(name), &len);
    ck_assert_msg(buf != NULL, "missing fixture %s", name);
    struct pcase c;
    ck_assert_msg(case_parse(buf, len, &c), "%s: bad fixture", name);
    struct cxr_nn_model_meta meta;
    meta_for(&c, &meta);
    size_t n = (size_t)c.channels * (size_t)c.out_h * (size_t)c.out_w;
    float *got = malloc(n * sizeof *got);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, c.src, c.w, c.h, c.w, c.mask, got), CXR_OK);
    size_t at = 0;
    float d = max_abs_diff(got, c.out, n, &at);
    ck_assert_msg(d <= TOL, "%s: max |diff| %g at %zu (got %g, torch %g)", name, (double)d, at,
                  (double)got[at], (double)c.out[at]);

    /* the same image inside wider rows (stride > width) gives the same bytes */
    int32_t stride = c.w + 13;
    uint8_t *padded = malloc((size_t)stride * (size_t)c.h);
    ck_assert_ptr_nonnull(padded);
    memset(padded, 0xAB, (size_t)stride * (size_t)c.h);
    for (int32_t y = 0; y < c.h; y++)
        memcpy(padded + (size_t)y * (size_t)stride, c.src + (size_t)y * (size_t)c.w, (size_t)c.w);
    float *got2 = malloc(n * sizeof *got2);
    ck_assert_ptr_nonnull(got2);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, padded, c.w, c.h, stride, c.mask, got2), CXR_OK);
    ck_assert_msg(memcmp(got, got2, n * sizeof *got) == 0, "%s: stride changed the result", name);
    free(got2);
    free(padded);
    free(got);
    case_free(&c);
}
END_TEST

/* A uniform image stays uniform (weights sum to 1), through every mode. */
START_TEST(test_uniform_image)
{
    const int32_t w = 313, h = 271;
    uint8_t *px = malloc((size_t)w * h);
    ck_assert_ptr_nonnull(px);
    memset(px, 200, (size_t)w * h);
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.input_height = 37;
    meta.input_width = 53;
    float out[37 * 53];
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, w, h, w, NULL, out), CXR_OK);
    float want = (200.0f / 255.0f - 0.5f) / 0.25f;
    for (int i = 0; i < 37 * 53; i++)
        ck_assert_float_eq_tol(out[i], want, 1e-5f);
    free(px);
}
END_TEST

/* An all-ones mask changes nothing; an all-zero mask gives black. */
START_TEST(test_mask_extremes)
{
    const int32_t w = 90, h = 70;
    uint8_t px[90 * 70], ones[90 * 70], zeros[90 * 70];
    for (int i = 0; i < w * h; i++)
        px[i] = (uint8_t)(i * 37 + (i / w) * 11);
    memset(ones, 1, sizeof ones);
    memset(zeros, 0, sizeof zeros);
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.input_height = meta.input_width = 24;
    meta.channels = 3;
    float a[3 * 24 * 24], b[3 * 24 * 24], z[3 * 24 * 24];
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, w, h, w, NULL, a), CXR_OK);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, w, h, w, ones, b), CXR_OK);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, w, h, w, zeros, z), CXR_OK);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
    for (int i = 0; i < 3 * 24 * 24; i++)
        ck_assert_float_eq_tol(z[i], -0.5f / 0.25f, 1e-6f);
    /* grey is replicated: with equal mean/std the three planes are equal */
    ck_assert_int_eq(memcmp(a, a + 24 * 24, 24 * 24 * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(a, a + 2 * 24 * 24, 24 * 24 * sizeof(float)), 0);
}
END_TEST

START_TEST(test_invalid_arguments)
{
    uint8_t px[16] = {0};
    float out[4 * 4 * 3];
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.input_height = meta.input_width = 4;
    ck_assert_int_eq(cxr_nn_preprocess_u8(NULL, px, 4, 4, 4, NULL, out), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, NULL, 4, 4, 4, NULL, out), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, 4, 4, 4, NULL, NULL), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, 0, 4, 4, NULL, out), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, 4, -1, 4, NULL, out), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, 4, 4, 3, NULL, out), CXR_ERR_INVALID_ARG);
    meta.channels = 2;
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, 4, 4, 4, NULL, out), CXR_ERR_INVALID_ARG);
    meta.channels = 1;
    meta.std[0] = 0.0f;
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, 4, 4, 4, NULL, out), CXR_ERR_INVALID_ARG);
    meta.std[0] = 0.25f;
    meta.input_width = 0;
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, 4, 4, 4, NULL, out), CXR_ERR_INVALID_ARG);
    meta.input_width = 4;
    meta.resize_mode = (enum cxr_nn_resize_mode)7;
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, px, 4, 4, 4, NULL, out), CXR_ERR_INVALID_ARG);
}
END_TEST

/* Writes an input-only case, asks torch for the answer, compares. */
static void torch_live_case(int32_t w, int32_t h, int32_t oh, int32_t ow, int32_t channels,
                            int32_t mode, bool with_mask)
{
    char *dir = cxr_test_tmpdir();
    ck_assert_ptr_nonnull(dir);
    size_t px = (size_t)w * (size_t)h;
    size_t hdr = 60, len = hdr + px * (with_mask ? 2 : 1);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, "CXRPP001", 8);
    int32_t v[7] = {w, h, with_mask, oh, ow, channels, mode};
    memcpy(buf + 8, v, sizeof v);
    float ms[6] = {0.485f, 0.456f, 0.406f, 0.229f, 0.224f, 0.225f};
    if (channels == 1) {
        ms[0] = 0.5f;
        ms[3] = 0.25f;
    }
    memcpy(buf + 36, ms, sizeof ms);
    uint8_t *src = buf + hdr, *mask = with_mask ? buf + hdr + px : NULL;
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < px; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        size_t x = i % (size_t)w, y = i / (size_t)w;
        /* an anatomy-like smooth field plus noise */
        double smooth = 127.5 + 100.0 * sin((double)x / 97.0) * cos((double)y / 131.0);
        int val = (int)smooth + (int)((s >> 59) & 31) - 16;
        src[i] = (uint8_t)(val < 0 ? 0 : val > 255 ? 255 : val);
        if (mask)
            mask[i] = (x > 40 && y > 25 && x < (size_t)w - 60) ? 1 : 0;
    }
    char in[4096], outp[4096];
    snprintf(in, sizeof in, "%s/case.bin", dir);
    snprintf(outp, sizeof outp, "%s/ref.f32", dir);
    ck_assert(cxr_test_write_file(in, buf, len));
    int rc = cxr_test_sh("'%s' '%s/tests/oracle/make_preprocess_fixtures.py' --compute '%s' '%s'",
                         cxr_test_python(), cxr_test_source_dir(), in, outp);
    ck_assert_int_eq(rc, 0);
    size_t rlen;
    float *ref = cxr_test_read_file(outp, &rlen);
    size_t n = (size_t)channels * (size_t)oh * (size_t)ow;
    ck_assert_ptr_nonnull(ref);
    ck_assert_uint_eq(rlen, n * 4);
    struct cxr_nn_model_meta meta;
    struct pcase c = {.out_h = oh, .out_w = ow, .channels = channels, .mode = mode};
    memcpy(c.mean, ms, 12);
    memcpy(c.std, ms + 3, 12);
    meta_for(&c, &meta);
    float *got = malloc(n * sizeof *got);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(cxr_nn_preprocess_u8(&meta, src, w, h, w, mask, got), CXR_OK);
    size_t at = 0;
    float d = max_abs_diff(got, ref, n, &at);
    printf("torch live %dx%d -> %dx%d (%s%s): max |diff| %.3g\n", (int)w, (int)h, (int)ow, (int)oh,
           mode ? "letterbox" : "stretch", mask ? ", mask" : "", (double)d);
    ck_assert_msg(d <= TOL, "max |diff| %g at %zu (got %g, torch %g)", (double)d, at,
                  (double)got[at], (double)ref[at]);
    free(got);
    free(ref);
    free(buf);
    cxr_test_rmtree(dir);
    free(dir);
}

static bool have_torch(void)
{
    if (cxr_test_sh("'%s' -c 'import torch' >/dev/null 2>&1", cxr_test_python()) == 0)
        return true;
    printf("SKIP live torch comparison: %s has no torch (Debian python3-torch)\n",
           cxr_test_python());
    return false;
}

START_TEST(test_matches_torch_live)
{
    if (!have_torch())
        return;
    torch_live_case(1500, 1200, 224, 224, 1, 0, false);
    torch_live_case(1200, 1500, 224, 224, 3, 1, true);
}
END_TEST

/* ---- contrast: histogram equalisation ------------------------------------ */

/* A hand-worked case of the OpenCV formula: values 0 x2, 10 x3, 20 x1,
 * 255 x2 -> cdf 2,5,6,8; m = 2, n = 8: 0 -> 0, 10 -> round(255*3/6) = 128,
 * 20 -> round(255*4/6) = 170, 255 -> 255. */
START_TEST(test_equalize_hand_case)
{
    const uint8_t px[8] = {0, 0, 10, 10, 10, 20, 255, 255};
    const uint8_t want[8] = {0, 0, 128, 128, 128, 170, 255, 255};
    uint8_t out[8];
    ck_assert(cxr_nn_equalize_u8(px, 4, 2, 4, NULL, out) == CXR_OK);
    for (int i = 0; i < 8; i++)
        ck_assert_msg(out[i] == want[i], "pixel %d: %d, want %d", i, out[i], want[i]);
    /* a constant image is copied unchanged */
    const uint8_t flat[4] = {77, 77, 77, 77};
    ck_assert(cxr_nn_equalize_u8(flat, 2, 2, 2, NULL, out) == CXR_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(out[i], 77);
    /* masked pixels are left out of the histogram and become 0: masking the
     * two 255s leaves 20 as the brightest value -> 255 */
    const uint8_t mask[8] = {1, 1, 1, 1, 1, 1, 0, 0};
    ck_assert(cxr_nn_equalize_u8(px, 4, 2, 4, mask, out) == CXR_OK);
    ck_assert_int_eq(out[5], 255);
    ck_assert_int_eq(out[6], 0);
    ck_assert_int_eq(out[2], 191); /* round(255*3/4) */
    ck_assert(cxr_nn_equalize_u8(NULL, 4, 2, 4, NULL, out) == CXR_ERR_INVALID_ARG);
    ck_assert(cxr_nn_equalize_u8(px, 4, 2, 3, NULL, out) == CXR_ERR_INVALID_ARG);
}
END_TEST

/* Against numpy's rendering of the same formula on a seeded 173x131 image
 * with a row stride of 180 and a mask (skipped without numpy). */
START_TEST(test_equalize_matches_numpy)
{
    if (cxr_test_sh("'%s' -c 'import numpy' >/dev/null 2>&1", cxr_test_python()) != 0) {
        printf("SKIP equalize vs numpy: %s has no numpy\n", cxr_test_python());
        return;
    }
    enum { W = 173, H = 131, S = 180 };
    static uint8_t px[S * H], mask[W * H], out[W * H];
    uint32_t x = 12345;
    for (int i = 0; i < S * H; i++) {
        x = x * 1103515245u + 12345u;
        px[i] = (uint8_t)(((x >> 16) % 200) + ((i / S) % 7) * 5); /* skewed, not uniform */
    }
    for (int i = 0; i < W * H; i++)
        mask[i] = (i % 11) != 0;
    ck_assert(cxr_nn_equalize_u8(px, W, H, S, mask, out) == CXR_OK);
    char *dir = cxr_test_tmpdir();
    char in[4096], mk[4096], ref[4096];
    snprintf(in, sizeof in, "%s/px.bin", dir);
    snprintf(mk, sizeof mk, "%s/mask.bin", dir);
    snprintf(ref, sizeof ref, "%s/ref.bin", dir);
    ck_assert(cxr_test_write_file(in, px, sizeof px));
    ck_assert(cxr_test_write_file(mk, mask, sizeof mask));
    ck_assert_int_eq(
        cxr_test_sh("'%s' -c \""
                    "import numpy as np\n"
                    "px=np.fromfile('%s',np.uint8).reshape(%d,%d)[:, :%d]\n"
                    "m=np.fromfile('%s',np.uint8).reshape(%d,%d)!=0\n"
                    "h=np.bincount(px[m],minlength=256); c=np.cumsum(h); n=c[-1]; lo=c[h>0][0]\n"
                    "lut=np.rint(255.0*np.clip(c-lo,0,None)/(n-lo)+1e-9).astype(np.uint8)\n"
                    "o=np.where(m,lut[px],0).astype(np.uint8); o.tofile('%s')\"",
                    cxr_test_python(), in, H, S, W, mk, H, W, ref),
        0);
    size_t len;
    uint8_t *want = cxr_test_read_file(ref, &len);
    ck_assert_ptr_nonnull(want);
    ck_assert_uint_eq(len, sizeof out);
    for (int i = 0; i < W * H; i++)
        ck_assert_msg(out[i] == want[i], "pixel %d: %d, numpy %d", i, out[i], want[i]);
    free(want);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* contrast=equalize in the model's metadata = equalise, then the usual
 * preprocessing: the two paths give the same tensor. */
START_TEST(test_preprocess_with_equalize)
{
    enum { W = 97, H = 61 };
    static uint8_t px[W * H], eq[W * H];
    for (int i = 0; i < W * H; i++)
        px[i] = (uint8_t)(40 + (i * 7) % 90);
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.input_height = 32;
    meta.input_width = 40;
    static float a[32 * 40], b[32 * 40], c[32 * 40];
    ck_assert(cxr_nn_equalize_u8(px, W, H, W, NULL, eq) == CXR_OK);
    ck_assert(cxr_nn_preprocess_u8(&meta, eq, W, H, W, NULL, a) == CXR_OK);
    ck_assert(cxr_nn_preprocess_u8(&meta, px, W, H, W, NULL, c) == CXR_OK);
    meta.contrast = CXR_NN_CONTRAST_EQUALIZE;
    ck_assert(cxr_nn_preprocess_u8(&meta, px, W, H, W, NULL, b) == CXR_OK);
    double diff = 0;
    for (int i = 0; i < 32 * 40; i++) {
        ck_assert_msg(a[i] == b[i], "element %d: %g vs %g", i, a[i], b[i]);
        diff += fabs(b[i] - c[i]);
    }
    ck_assert_msg(diff > 1.0, "equalisation changed nothing"); /* the setting has an effect */
    meta.contrast = (enum cxr_nn_contrast)7;
    ck_assert(cxr_nn_preprocess_u8(&meta, px, W, H, W, NULL, b) == CXR_ERR_INVALID_ARG);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_preprocess");
    TCase *tc = tcase_create("torch");
    tcase_add_loop_test(tc, test_matches_torch_fixture, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, test_matches_torch_live);
    suite_add_tcase(s, tc);
    tc = tcase_create("properties");
    tcase_add_test(tc, test_uniform_image);
    tcase_add_test(tc, test_mask_extremes);
    tcase_add_test(tc, test_invalid_arguments);
    suite_add_tcase(s, tc);
    tc = tcase_create("contrast");
    tcase_add_test(tc, test_equalize_hand_case);
    tcase_add_test(tc, test_equalize_matches_numpy);
    tcase_add_test(tc, test_preprocess_with_equalize);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
