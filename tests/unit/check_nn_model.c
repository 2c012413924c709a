/* check_nn_model.c — ResNet structure, model init, safetensors save/load,
 * metadata and a PyTorch-written file. The refusal of corrupt files is in
 * check_nn_modelfile.c.
 *
 * Oracles: parameter counts and state_dict order from torchvision; the
 * torch-written model and its probe values/sha256
 * (tests/data/nn/torch_resnet18_w4.*); torch's float16/bfloat16 roundings
 * (half_values.bin); an independent Python replay of the init generator
 * (init_seed42_w4.json). All written by tests/oracle/make_preprocess_fixtures.py.
 */
#include <check.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../nn/src/resnet.h" /* the internal structure contract */
#include "cxr/nn.h"
#include "test_util.h"

static struct cxr_nn_model *small_model(enum cxr_nn_arch arch, int32_t channels, int32_t classes,
                                        int32_t width, uint64_t seed)
{
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, arch);
    meta.channels = channels;
    meta.num_classes = classes;
    for (int k = 0; k < classes; k++)
        snprintf(meta.class_names[k], sizeof meta.class_names[k], "C%d", k);
    meta.positive_class = classes > 1 ? 1 : 0;
    struct cxr_nn_model *m = NULL;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_nn_model_init_width(&meta, width, seed, &m, err);
    ck_assert_msg(st == CXR_OK, "init: %s", err);
    return m;
}

static char *save_tmp(const struct cxr_nn_model *m, const char *dir, const char *name,
                      enum cxr_nn_dtype dt)
{
    static char path[4096];
    char err[CXR_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/%s", dir, name);
    enum cxr_status st = cxr_nn_model_save(m, path, dt, err);
    ck_assert_msg(st == CXR_OK, "save: %s", err);
    return path;
}

static struct cxr_nn_model *load_ok(const char *path)
{
    struct cxr_nn_model *m = NULL;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_nn_model_load(path, &m, err);
    ck_assert_msg(st == CXR_OK, "load %s: %s (%s)", path, cxr_status_name(st), err);
    return m;
}

static struct json_object *read_json(const char *name)
{
    struct json_object *o = json_object_from_file(cxr_test_data_path(name));
    ck_assert_msg(o != NULL, "cannot read %s", name);
    return o;
}

/* ------------------------------------------------------------------ basics */

START_TEST(test_dtype_and_arch_names)
{
    ck_assert_uint_eq(cxr_nn_dtype_size(CXR_NN_DTYPE_F32), 4);
    ck_assert_uint_eq(cxr_nn_dtype_size(CXR_NN_DTYPE_F16), 2);
    ck_assert_uint_eq(cxr_nn_dtype_size(CXR_NN_DTYPE_BF16), 2);
    ck_assert_uint_eq(cxr_nn_dtype_size(CXR_NN_DTYPE_F64), 8);
    ck_assert_uint_eq(cxr_nn_dtype_size(CXR_NN_DTYPE_I64), 8);
    ck_assert_uint_eq(cxr_nn_dtype_size(CXR_NN_DTYPE_U8), 1);
    ck_assert_uint_eq(cxr_nn_dtype_size((enum cxr_nn_dtype)99), 0);
    ck_assert_str_eq(cxr_nn_dtype_name(CXR_NN_DTYPE_BF16), "BF16");
    ck_assert_str_eq(cxr_nn_dtype_name(CXR_NN_DTYPE_I64), "I64");
    enum cxr_nn_arch a;
    ck_assert(cxr_nn_arch_parse("resnet50", &a) && a == CXR_NN_ARCH_RESNET50);
    ck_assert(cxr_nn_arch_parse("resnet34", &a) && a == CXR_NN_ARCH_RESNET34);
    ck_assert(!cxr_nn_arch_parse("resnet101", &a));
    ck_assert(!cxr_nn_arch_parse("", &a));
    ck_assert(!cxr_nn_arch_parse(NULL, &a));
    ck_assert_str_eq(cxr_nn_arch_name(CXR_NN_ARCH_RESNET18), "resnet18");
    struct cxr_nn_tensor t = {.ndim = 3, .shape = {2, 3, 4}};
    ck_assert_int_eq(cxr_nn_tensor_numel(&t), 24);
    t.ndim = 0;
    ck_assert_int_eq(cxr_nn_tensor_numel(&t), 1);
    t.ndim = 2;
    t.shape[1] = -1;
    ck_assert_int_eq(cxr_nn_tensor_numel(&t), -1);
}
END_TEST

struct count_ctx {
    int64_t params, entries;
};

static void count_fn(void *vctx, const char *name, enum cxr_nn_param_kind kind, int32_t ndim,
                     const int64_t *shape)
{
    struct count_ctx *c = vctx;
    c->entries++;
    if (kind == CXR_NN_PARAM_BN_MEAN || kind == CXR_NN_PARAM_BN_VAR ||
        kind == CXR_NN_PARAM_BN_COUNT)
        return;
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++)
        n *= shape[i];
    c->params += n;
}

/* sum(p.numel() for p in torchvision.models.<arch>(num_classes=k).parameters())
 * and len(state_dict()), conv1 replaced by a 1-channel conv where ch == 1. */
static const struct {
    enum cxr_nn_arch arch;
    int32_t ch, classes;
    int64_t params, entries;
} torchvision_counts[] = {
    {CXR_NN_ARCH_RESNET18, 1, 2, 11171266, 122},  {CXR_NN_ARCH_RESNET18, 3, 16, 11184720, 122},
    {CXR_NN_ARCH_RESNET18, 3, 2, 11177538, 122},  {CXR_NN_ARCH_RESNET34, 1, 2, 21279426, 218},
    {CXR_NN_ARCH_RESNET34, 3, 16, 21292880, 218}, {CXR_NN_ARCH_RESNET50, 1, 2, 23505858, 320},
    {CXR_NN_ARCH_RESNET50, 3, 16, 23540816, 320}, {CXR_NN_ARCH_RESNET50, 3, 2, 23512130, 320},
};

/* `model init` marks its weights UNTRAINED; the doors warn on that mark. */
START_TEST(test_meta_untrained_mark)
{
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.description = NULL;
    ck_assert(!cxr_nn_model_meta_untrained(&meta));
    char trained[] = "trained by cxr-triage train on 3912 images";
    meta.description = trained;
    ck_assert(!cxr_nn_model_meta_untrained(&meta));
    char untrained[] = "UNTRAINED: He-initialised random weights, for testing only";
    meta.description = untrained;
    ck_assert(cxr_nn_model_meta_untrained(&meta));
}
END_TEST

START_TEST(test_spec_counts_match_torchvision)
{
    struct cxr_nn_resnet_spec spec;
    const __typeof__(torchvision_counts[0]) *tc = &torchvision_counts[_i];
    ck_assert_int_eq(cxr_nn_resnet_spec_make(tc->arch, tc->ch, 64, tc->classes, &spec), CXR_OK);
    struct count_ctx c = {0};
    cxr_nn_resnet_spec_params(&spec, count_fn, &c);
    ck_assert_int_eq(c.params, tc->params);
    ck_assert_int_eq(c.entries, tc->entries);
}
END_TEST

/* The headline ImageNet figures (3 channels, 1000 classes): the spec caps
 * classes at 16, the fc layer adds (1000-16) x (features+1) more. */
START_TEST(test_spec_imagenet_counts)
{
    static const struct {
        enum cxr_nn_arch arch;
        int64_t params;
    } want[] = {{CXR_NN_ARCH_RESNET18, 11689512},
                {CXR_NN_ARCH_RESNET34, 21797672},
                {CXR_NN_ARCH_RESNET50, 25557032}};
    for (size_t i = 0; i < 3; i++) {
        struct cxr_nn_resnet_spec spec;
        ck_assert_int_eq(cxr_nn_resnet_spec_make(want[i].arch, 3, 64, 16, &spec), CXR_OK);
        struct count_ctx c = {0};
        cxr_nn_resnet_spec_params(&spec, count_fn, &c);
        ck_assert_int_eq(c.params + (1000 - 16) * (int64_t)(spec.feature_dim + 1), want[i].params);
    }
    struct cxr_nn_resnet_spec spec;
    ck_assert_int_eq(cxr_nn_resnet_spec_make(CXR_NN_ARCH_RESNET18, 2, 64, 2, &spec),
                     CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_resnet_spec_make(CXR_NN_ARCH_RESNET18, 1, 0, 2, &spec),
                     CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_resnet_spec_make(CXR_NN_ARCH_RESNET18, 1, 64, 17, &spec),
                     CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_resnet_spec_make((enum cxr_nn_arch)3, 1, 64, 2, &spec),
                     CXR_ERR_INVALID_ARG);
}
END_TEST

/* Block structure of resnet50 as torchvision v1.5: stride on the first block
 * of layers 2-4, downsample on every first block, 2048 features. */
START_TEST(test_spec_blocks)
{
    struct cxr_nn_resnet_spec s;
    ck_assert_int_eq(cxr_nn_resnet_spec_make(CXR_NN_ARCH_RESNET50, 3, 64, 2, &s), CXR_OK);
    ck_assert_int_eq(s.n_blocks, 16);
    ck_assert_int_eq(s.feature_dim, 2048);
    ck_assert(s.blocks[0].downsample && s.blocks[0].stride == 1 && s.blocks[0].out_ch == 256);
    ck_assert(!s.blocks[1].downsample);
    ck_assert(s.blocks[3].layer == 2 && s.blocks[3].stride == 2 && s.blocks[3].downsample);
    ck_assert_int_eq(s.blocks[3].in_ch, 256);
    ck_assert_int_eq(s.blocks[3].mid_ch, 128);
    ck_assert_int_eq(cxr_nn_resnet_spec_make(CXR_NN_ARCH_RESNET18, 1, 64, 2, &s), CXR_OK);
    ck_assert(!s.blocks[0].downsample && s.blocks[2].downsample && s.blocks[2].stride == 2);
    ck_assert_int_eq(s.feature_dim, 512);
}
END_TEST

/* ------------------------------------------------------------------ init */

static void sha_of_saved(const struct cxr_nn_model *m, const char *dir, char out[65])
{
    save_tmp(m, dir, "s.safetensors", CXR_NN_DTYPE_F32);
    snprintf(out, 65, "%s", cxr_nn_model_sha256(m));
    ck_assert_uint_eq(strlen(out), 64);
}

START_TEST(test_init_deterministic)
{
    char *dir = cxr_test_tmpdir();
    char a[65], b[65], c[65];
    struct cxr_nn_model *m1 = small_model(CXR_NN_ARCH_RESNET18, 1, 2, 8, 7);
    struct cxr_nn_model *m2 = small_model(CXR_NN_ARCH_RESNET18, 1, 2, 8, 7);
    struct cxr_nn_model *m3 = small_model(CXR_NN_ARCH_RESNET18, 1, 2, 8, 8);
    ck_assert_str_eq(cxr_nn_model_sha256(m1), ""); /* not saved yet */
    sha_of_saved(m1, dir, a);
    sha_of_saved(m2, dir, b);
    sha_of_saved(m3, dir, c);
    ck_assert_str_eq(a, b);
    ck_assert_str_ne(a, c);
    cxr_nn_model_free(m1);
    cxr_nn_model_free(m2);
    cxr_nn_model_free(m3);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* The generator as documented, replayed independently in Python. */
START_TEST(test_init_matches_documented_generator)
{
    struct json_object *ref = read_json("nn/init_seed42_w4.json"), *vals;
    struct cxr_nn_model *m = small_model(CXR_NN_ARCH_RESNET18, 1, 2, 4, 42);
    ck_assert(json_object_object_get_ex(ref, "values", &vals));
    int checked = 0;
    json_object_object_foreach(vals, name, arr)
    {
        struct cxr_nn_tensor *t = cxr_nn_model_tensor_find(m, name);
        ck_assert_msg(t != NULL, "no tensor %s", name);
        const float *f = t->data;
        size_t n = json_object_array_length(arr);
        ck_assert_uint_le(n, (size_t)cxr_nn_tensor_numel(t));
        for (size_t i = 0; i < n; i++) {
            float want = (float)json_object_get_double(json_object_array_get_idx(arr, i));
            ck_assert_msg(f[i] == want, "%s[%zu] = %.9g, generator gives %.9g", name, i,
                          (double)f[i], (double)want);
            checked++;
        }
    }
    ck_assert_int_gt(checked, 300);
    cxr_nn_model_free(m);
    json_object_put(ref);
}
END_TEST

static void moments(const float *f, size_t n, double *mean, double *sd, double *within1)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += f[i];
        s2 += (double)f[i] * f[i];
    }
    *mean = s / n;
    *sd = sqrt(s2 / n - *mean * *mean);
    size_t in = 0;
    for (size_t i = 0; i < n; i++)
        in += fabs(f[i] - *mean) <= *sd;
    *within1 = (double)in / n;
}

/* torchvision's init at full width: Kaiming normal (fan_out) convs, BN
 * 1/0/0/1, fc uniform within 1/sqrt(512). */
START_TEST(test_init_distribution)
{
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    struct cxr_nn_model *m = NULL;
    char err[CXR_ERRLEN];
    ck_assert_int_eq(cxr_nn_model_init(&meta, 1, &m, err), CXR_OK);
    ck_assert_int_eq(cxr_nn_model_param_count(m), 11171266);
    const struct cxr_nn_tensor *t = cxr_nn_model_tensor_find(m, "layer4.0.conv2.weight");
    ck_assert_int_eq(cxr_nn_tensor_numel(t), 512 * 512 * 9);
    double mean, sd, w1;
    moments(t->data, 512 * 512 * 9, &mean, &sd, &w1);
    double want = sqrt(2.0 / (512 * 9));
    ck_assert_msg(fabs(sd / want - 1) < 0.005, "std %g want %g", sd, want);
    ck_assert_msg(fabs(mean) < 4 * want / sqrt(512 * 512 * 9.0), "mean %g", mean);
    ck_assert_msg(fabs(w1 - 0.6827) < 0.003, "normal: %g within 1 sd", w1);
    t = cxr_nn_model_tensor_find(m, "conv1.weight");
    moments(t->data, 64 * 49, &mean, &sd, &w1);
    want = sqrt(2.0 / (64 * 49));
    ck_assert_msg(fabs(sd / want - 1) < 0.05, "conv1 std %g want %g", sd, want);
    t = cxr_nn_model_tensor_find(m, "fc.weight");
    const float *f = t->data;
    double bound = 1 / sqrt(512.0), lo = 0, hi = 0;
    for (int i = 0; i < 1024; i++) {
        ck_assert(fabs(f[i]) <= bound);
        lo = f[i] < lo ? f[i] : lo;
        hi = f[i] > hi ? f[i] : hi;
    }
    ck_assert(lo < -0.95 * bound && hi > 0.95 * bound);
    const char *ones[] = {"bn1.weight", "layer3.1.bn2.running_var"};
    const char *zeros[] = {"bn1.bias", "layer3.1.bn2.running_mean"};
    for (int k = 0; k < 2; k++) {
        const float *o = cxr_nn_model_tensor_find(m, ones[k])->data;
        const float *z = cxr_nn_model_tensor_find(m, zeros[k])->data;
        for (int i = 0; i < 64; i++)
            ck_assert(o[i] == 1.0f && z[i] == 0.0f);
    }
    struct cxr_nn_tensor *nb = cxr_nn_model_tensor_find(m, "bn1.num_batches_tracked");
    ck_assert(nb && nb->dtype == CXR_NN_DTYPE_I64 && nb->ndim == 0 && *(int64_t *)nb->data == 0);
    cxr_nn_model_free(m);
}
END_TEST

START_TEST(test_init_refuses_bad_meta)
{
    struct cxr_nn_model_meta meta;
    struct cxr_nn_model *m = (struct cxr_nn_model *)&meta;
    char err[CXR_ERRLEN] = "";
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.operating_threshold = 1.5;
    ck_assert_int_eq(cxr_nn_model_init_width(&meta, 4, 1, &m, err), CXR_ERR_INVALID_ARG);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(err, "operating_threshold"));
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.channels = 2;
    ck_assert_int_eq(cxr_nn_model_init_width(&meta, 4, 1, &m, err), CXR_ERR_INVALID_ARG);
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    snprintf(meta.class_names[0], sizeof meta.class_names[0], "NORMAL,CLEAR");
    ck_assert_int_eq(cxr_nn_model_init_width(&meta, 4, 1, &m, err), CXR_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(err, "comma"));
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.metrics_json = "{not json";
    ck_assert_int_eq(cxr_nn_model_init_width(&meta, 4, 1, &m, err), CXR_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(err, "metrics"));
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    ck_assert_int_eq(cxr_nn_model_init_width(&meta, 0, 1, &m, err), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_model_init_width(NULL, 4, 1, &m, err), CXR_ERR_INVALID_ARG);
    ck_assert_ptr_null(m);
}
END_TEST

/* ------------------------------------------------------------------ save/load */

static void expect_meta_equal(const struct cxr_nn_model_meta *a, const struct cxr_nn_model_meta *b)
{
    ck_assert_int_eq(a->arch, b->arch);
    ck_assert_int_eq(a->input_height, b->input_height);
    ck_assert_int_eq(a->input_width, b->input_width);
    ck_assert_int_eq(a->channels, b->channels);
    ck_assert_int_eq(memcmp(a->mean, b->mean, sizeof a->mean[0] * (size_t)a->channels), 0);
    ck_assert_int_eq(memcmp(a->std, b->std, sizeof a->std[0] * (size_t)a->channels), 0);
    ck_assert_int_eq(a->num_classes, b->num_classes);
    for (int k = 0; k < a->num_classes; k++)
        ck_assert_str_eq(a->class_names[k], b->class_names[k]);
    ck_assert_int_eq(a->positive_class, b->positive_class);
    ck_assert(a->operating_threshold == b->operating_threshold);
    ck_assert(a->urgent_threshold == b->urgent_threshold);
    ck_assert_int_eq(a->resize_mode, b->resize_mode);
    ck_assert_int_eq(a->preprocessing_version, b->preprocessing_version);
    ck_assert(a->age_min_years == b->age_min_years ||
              (isnan(a->age_min_years) && isnan(b->age_min_years)));
    ck_assert(a->age_max_years == b->age_max_years ||
              (isnan(a->age_max_years) && isnan(b->age_max_years)));
    ck_assert_str_eq(a->name, b->name);
    ck_assert_str_eq(a->version, b->version);
    ck_assert_str_eq(a->created, b->created);
    ck_assert_str_eq(a->training_data_digest, b->training_data_digest);
    ck_assert_str_eq(a->metrics_json ? a->metrics_json : "(null)",
                     b->metrics_json ? b->metrics_json : "(null)");
    ck_assert_str_eq(a->description ? a->description : "(null)",
                     b->description ? b->description : "(null)");
    ck_assert_int_eq(a->training_image_count, b->training_image_count);
    ck_assert_int_eq(a->training_digest_sample_bits, b->training_digest_sample_bits);
    ck_assert_uint_eq(a->training_digest_count, b->training_digest_count);
    if (a->training_digest_count)
        ck_assert_int_eq(memcmp(a->training_digests, b->training_digests,
                                a->training_digest_count * sizeof a->training_digests[0]),
                         0);
}

static void set_rich_meta(struct cxr_nn_model *m)
{
    struct cxr_nn_model_meta *mt = cxr_nn_model_meta_mut(m);
    mt->input_height = 256;
    mt->input_width = 192;
    mt->mean[0] = 0.1f + 0.0000001f; /* not a short decimal */
    mt->std[0] = 1.0f / 3.0f;
    mt->operating_threshold = 0.1234567890123;
    mt->urgent_threshold = 0.97;
    mt->resize_mode = CXR_NN_RESIZE_LETTERBOX;
    mt->preprocessing_version = 3;
    mt->age_min_years = 18;
    mt->age_max_years = 99.5;
    snprintf(mt->name, sizeof mt->name, "cxr-test \"quoted\" / slash");
    snprintf(mt->version, sizeof mt->version, "2026.11.1");
    snprintf(mt->created, sizeof mt->created, "2026-11-25T20:00:00Z");
    snprintf(mt->training_data_digest, sizeof mt->training_data_digest, "sha256:%064d", 7);
    ck_assert_int_eq(cxr_nn_model_set_text(m, "metrics_json", "{\"auc\":0.96,\"n\":624}"), CXR_OK);
    ck_assert_int_eq(cxr_nn_model_set_text(m, "description", "line 1\nline 2 \xc3\xa9"), CXR_OK);
    ck_assert_int_eq(cxr_nn_model_set_text(m, "colour", "x"), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_model_set_text(m, "metrics_json", "{\"auc\":"), CXR_ERR_INVALID_ARG);
    ck_assert_str_eq(cxr_nn_model_meta(m)->metrics_json, "{\"auc\":0.96,\"n\":624}");
}

/* The list of training images: stored sorted and unique, kept through a
 * save and a load (and the text of "model info"), looked up exactly; a list
 * larger than the cap becomes the smallest sample that fits, and a digest
 * outside the sample cannot be told; a model without a list says so. */
START_TEST(test_training_digests)
{
    char *dir = cxr_test_tmpdir();
    struct cxr_nn_model *m = small_model(CXR_NN_ARCH_RESNET18, 1, 2, 4, 3);
    ck_assert_int_eq(cxr_nn_model_meta_trained_on(cxr_nn_model_meta(m), 5), -1);
    const uint64_t d[] = {0xfedcba9876543210ull, 5, 0x8000000000000000ull, 5, 42};
    ck_assert_int_eq(cxr_nn_model_set_training_digests(m, d, 5, 0, 5), CXR_OK);
    ck_assert_int_eq(cxr_nn_model_set_training_digests(m, d, 5, 33, 5), CXR_ERR_INVALID_ARG);
    const struct cxr_nn_model_meta *mt = cxr_nn_model_meta(m);
    ck_assert_uint_eq(mt->training_digest_count, 4);
    ck_assert(mt->training_digests[0] == 5 && mt->training_digests[1] == 42 &&
              mt->training_digests[3] == 0xfedcba9876543210ull);
    const char *path = save_tmp(m, dir, "d.safetensors", CXR_NN_DTYPE_F32);
    struct cxr_nn_model *r = load_ok(path);
    expect_meta_equal(mt, cxr_nn_model_meta(r));
    ck_assert_int_eq(cxr_nn_model_meta_trained_on(cxr_nn_model_meta(r), 0x8000000000000000ull), 1);
    ck_assert_int_eq(cxr_nn_model_meta_trained_on(cxr_nn_model_meta(r), 0x8000000000000001ull), 0);
    ck_assert_int_eq(cxr_nn_model_meta_trained_on(cxr_nn_model_meta(r), 4), 0);
    ck_assert(cxr_nn_training_digest_from_hex("fedcba9876543210ff") == 0xfedcba9876543210ull);
    ck_assert(cxr_nn_training_digest_from_hex("fedcba98765432") == 0);
    char *text = NULL;
    size_t tlen = 0;
    FILE *fp = open_memstream(&text, &tlen);
    cxr_nn_model_describe(r, fp, false);
    fclose(fp);
    ck_assert_msg(strstr(text, "training list:  5 images"), "%s", text);
    free(text);
    cxr_nn_model_free(r);

    /* more than the cap: the smallest sample that fits */
    size_t n = 3 * (size_t)CXR_NN_MAX_TRAINING_DIGESTS;
    uint64_t *big = malloc(n * sizeof *big);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big[i] = x;
    }
    ck_assert_int_eq(cxr_nn_model_set_training_digests(m, big, n, 0, (int64_t)n), CXR_OK);
    ck_assert_int_eq(mt->training_digest_sample_bits, 2); /* 1 in 4 of 3 x cap fits */
    ck_assert_uint_le(mt->training_digest_count, CXR_NN_MAX_TRAINING_DIGESTS);
    size_t in = 0, out = 0;
    for (size_t i = 0; i < n; i++) {
        int t = cxr_nn_model_meta_trained_on(mt, big[i]);
        ck_assert_int_ne(t, 0);
        in += t == 1;
        out += t == -1;
    }
    ck_assert_uint_eq(in + out, n);
    ck_assert_uint_eq(in, mt->training_digest_count);
    path = save_tmp(m, dir, "big.safetensors", CXR_NN_DTYPE_F32);
    r = load_ok(path);
    expect_meta_equal(mt, cxr_nn_model_meta(r));
    cxr_nn_model_free(r);
    /* images 0: no list */
    ck_assert_int_eq(cxr_nn_model_set_training_digests(m, NULL, 0, 0, 0), CXR_OK);
    ck_assert_int_eq(cxr_nn_model_meta_trained_on(mt, big[0]), -1);
    free(big);
    cxr_nn_model_free(m);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_roundtrip_f32_bit_exact)
{
    char *dir = cxr_test_tmpdir();
    static const enum cxr_nn_arch archs[] = {CXR_NN_ARCH_RESNET18, CXR_NN_ARCH_RESNET34,
                                             CXR_NN_ARCH_RESNET50};
    for (int a = 0; a < 3; a++) {
        struct cxr_nn_model *m = small_model(archs[a], a == 1 ? 3 : 1, a == 2 ? 5 : 2, 4, 99 + a);
        set_rich_meta(m);
        /* non-trivial BN buffers */
        struct cxr_nn_tensor *rv = cxr_nn_model_tensor_find(m, "layer1.0.bn1.running_var");
        ((float *)rv->data)[0] = 0.123456789f;
        *(int64_t *)cxr_nn_model_tensor_find(m, "bn1.num_batches_tracked")->data = 123456789012;
        const char *path = save_tmp(m, dir, "rt.safetensors", CXR_NN_DTYPE_F32);
        struct cxr_nn_model *r = load_ok(path);
        ck_assert_str_eq(cxr_nn_model_sha256(m), cxr_nn_model_sha256(r));
        ck_assert_uint_eq(cxr_nn_model_tensor_count(m), cxr_nn_model_tensor_count(r));
        for (uint32_t i = 0; i < cxr_nn_model_tensor_count(m); i++) {
            const struct cxr_nn_tensor *x = cxr_nn_model_tensor_at(m, i),
                                       *y = cxr_nn_model_tensor_at(r, i);
            ck_assert_str_eq(x->name, y->name);
            ck_assert_int_eq(x->dtype, y->dtype);
            ck_assert_int_eq(x->ndim, y->ndim);
            ck_assert_uint_eq(x->nbytes, y->nbytes);
            ck_assert_msg(memcmp(x->data, y->data, x->nbytes) == 0, "%s differs", x->name);
        }
        ck_assert_ptr_null(cxr_nn_model_tensor_at(r, cxr_nn_model_tensor_count(r)));
        expect_meta_equal(cxr_nn_model_meta(m), cxr_nn_model_meta(r));
        struct cxr_nn_resnet_spec s1, s2;
        cxr_nn_model_spec(m, &s1);
        cxr_nn_model_spec(r, &s2);
        ck_assert_int_eq(memcmp(&s1, &s2, sizeof s1), 0);
        ck_assert_int_eq(s2.base_width, 4);
        /* saving the loaded model reproduces the file */
        char sha[65];
        snprintf(sha, sizeof sha, "%s", cxr_nn_model_sha256(r));
        save_tmp(r, dir, "rt2.safetensors", CXR_NN_DTYPE_F32);
        ck_assert_str_eq(sha, cxr_nn_model_sha256(r));
        cxr_nn_model_free(r);
        cxr_nn_model_free(m);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* Header layout: 8-byte aligned data area, space padding, torchvision
 * order, BN statistics F32 and the count I64 whatever the storage. */
START_TEST(test_saved_layout)
{
    char *dir = cxr_test_tmpdir();
    struct cxr_nn_model *m = small_model(CXR_NN_ARCH_RESNET18, 1, 2, 4, 3);
    const char *path = save_tmp(m, dir, "l.safetensors", CXR_NN_DTYPE_BF16);
    size_t len;
    uint8_t *buf = cxr_test_read_file(path, &len);
    ck_assert_ptr_nonnull(buf);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | buf[i];
    ck_assert_uint_eq((8 + h) % 8, 0);
    struct json_tokener *tok = json_tokener_new();
    struct json_object *root = json_tokener_parse_ex(tok, (const char *)buf + 8, (int)h);
    ck_assert_ptr_nonnull(root);
    for (size_t i = json_tokener_get_parse_end(tok); i < h; i++)
        ck_assert_int_eq(buf[8 + i], ' ');
    struct json_object *md, *e, *dt;
    ck_assert(json_object_object_get_ex(root, "__metadata__", &md));
    ck_assert(json_object_object_get_ex(md, "format", &e));
    ck_assert_str_eq(json_object_get_string(e), "cxr-triage-model/1");
    const char *want[][2] = {{"conv1.weight", "BF16"},           {"bn1.weight", "BF16"},
                             {"bn1.running_mean", "F32"},        {"bn1.running_var", "F32"},
                             {"bn1.num_batches_tracked", "I64"}, {"fc.bias", "BF16"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ck_assert_msg(json_object_object_get_ex(root, want[i][0], &e), "%s", want[i][0]);
        ck_assert(json_object_object_get_ex(e, "dtype", &dt));
        ck_assert_str_eq(json_object_get_string(dt), want[i][1]);
    }
    /* keys in torchvision state_dict order */
    struct json_object *order = read_json("nn/torch_resnet18_w4.json"), *names;
    ck_assert(json_object_object_get_ex(order, "state_dict_order", &names));
    size_t k = 0;
    json_object_object_foreach(root, key, val)
    {
        (void)val;
        if (strcmp(key, "__metadata__") == 0)
            continue;
        ck_assert_str_eq(key, json_object_get_string(json_object_array_get_idx(names, k)));
        k++;
    }
    ck_assert_uint_eq(k, json_object_array_length(names));
    json_object_put(order);
    json_object_put(root);
    json_tokener_free(tok);
    free(buf);
    cxr_nn_model_free(m);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* F16/BF16 storage rounds exactly as torch does (half_values.bin), and
 * loading widens the stored bits exactly. */
START_TEST(test_half_storage_matches_torch)
{
    size_t len;
    uint8_t *hv = cxr_test_read_file(cxr_test_data_path("nn/half_values.bin"), &len);
    ck_assert_ptr_nonnull(hv);
    int32_t n;
    memcpy(&n, hv, 4);
    ck_assert(n > 500 && len == 4 + (size_t)n * 8);
    float *x = malloc((size_t)n * 4);
    uint16_t *f16 = malloc((size_t)n * 2), *bf16 = malloc((size_t)n * 2);
    memcpy(x, hv + 4, (size_t)n * 4);
    memcpy(f16, hv + 4 + (size_t)n * 4, (size_t)n * 2);
    memcpy(bf16, hv + 4 + (size_t)n * 6, (size_t)n * 2);

    char *dir = cxr_test_tmpdir();
    struct cxr_nn_model *m = small_model(CXR_NN_ARCH_RESNET18, 1, 2, 8, 5);
    struct cxr_nn_tensor *t = cxr_nn_model_tensor_find(m, "layer4.0.conv2.weight");
    ck_assert_int_ge(cxr_nn_tensor_numel(t), n);
    memcpy(t->data, x, (size_t)n * 4);
    for (int pass = 0; pass < 2; pass++) {
        enum cxr_nn_dtype dt = pass ? CXR_NN_DTYPE_BF16 : CXR_NN_DTYPE_F16;
        const uint16_t *want = pass ? bf16 : f16;
        const char *path = save_tmp(m, dir, "h.safetensors", dt);
        size_t flen;
        uint8_t *file = cxr_test_read_file(path, &flen);
        uint64_t h = 0;
        for (int i = 7; i >= 0; i--)
            h = h << 8 | file[i];
        struct json_tokener *tok = json_tokener_new();
        struct json_object *root = json_tokener_parse_ex(tok, (const char *)file + 8, (int)h), *e,
                           *o;
        ck_assert(json_object_object_get_ex(root, t->name, &e));
        ck_assert(json_object_object_get_ex(e, "data_offsets", &o));
        const uint8_t *data = file + 8 + h + json_object_get_int64(json_object_array_get_idx(o, 0));
        struct cxr_nn_model *r = load_ok(path);
        const float *back = cxr_nn_model_tensor_find(r, t->name)->data;
        for (int i = 0; i < n; i++) {
            uint16_t got;
            memcpy(&got, data + 2 * i, 2);
            bool nan_both = isnan(x[i]) && (got & 0x7fff) > (pass ? 0x7f80 : 0x7c00);
            ck_assert_msg(got == want[i] || nan_both, "%s of %.9g: 0x%04x, torch 0x%04x",
                          pass ? "bf16" : "f16", (double)x[i], got, want[i]);
            /* widening is exact: compare with the value the bits mean */
            float wide = back[i];
            if (pass) {
                uint32_t u = (uint32_t)want[i] << 16;
                float v;
                memcpy(&v, &u, 4);
                ck_assert(wide == v || (isnan(wide) && isnan(v)));
            } else if (!isnan(x[i])) {
                int e5 = (want[i] >> 10) & 31, man = want[i] & 1023;
                double v = e5 == 31  ? INFINITY
                           : e5 == 0 ? ldexp(man, -24)
                                     : ldexp(1024 + man, e5 - 25);
                if (want[i] & 0x8000)
                    v = -v;
                ck_assert_msg(wide == (float)v, "f16 0x%04x widened to %.9g, want %.9g", want[i],
                              (double)wide, v);
            }
        }
        cxr_nn_model_free(r);
        json_object_put(root);
        json_tokener_free(tok);
        free(file);
    }
    cxr_nn_model_free(m);
    cxr_test_rmtree(dir);
    free(dir);
    free(x);
    free(f16);
    free(bf16);
    free(hv);
}
END_TEST

/* A whole model stored in BF16/F16 comes back within the rounding, BN
 * statistics exactly (they stay F32). */
START_TEST(test_roundtrip_half_within_rounding)
{
    char *dir = cxr_test_tmpdir();
    struct cxr_nn_model *m = small_model(CXR_NN_ARCH_RESNET50, 3, 2, 4, 11);
    float *rm = cxr_nn_model_tensor_find(m, "layer2.0.bn3.running_mean")->data;
    rm[0] = 0.1f;
    for (int pass = 0; pass < 2; pass++) {
        enum cxr_nn_dtype dt = pass ? CXR_NN_DTYPE_BF16 : CXR_NN_DTYPE_F16;
        double rel = pass ? 0x1p-8 : 0x1p-11;
        struct cxr_nn_model *r = load_ok(save_tmp(m, dir, "h.safetensors", dt));
        for (uint32_t i = 0; i < cxr_nn_model_tensor_count(m); i++) {
            const struct cxr_nn_tensor *x = cxr_nn_model_tensor_at(m, i),
                                       *y = cxr_nn_model_tensor_at(r, i);
            ck_assert_int_eq(y->dtype, x->dtype); /* loaded back as F32 (I64 count) */
            bool exact = strstr(x->name, "running_") || strstr(x->name, "num_batches");
            if (exact) {
                ck_assert_msg(memcmp(x->data, y->data, x->nbytes) == 0, "%s", x->name);
                continue;
            }
            const float *a = x->data, *b = y->data;
            for (int64_t k = 0; k < cxr_nn_tensor_numel(x); k++)
                ck_assert_msg(fabs(a[k] - b[k]) <= fabs(a[k]) * rel + 1e-7, "%s[%lld]: %g vs %g",
                              x->name, (long long)k, (double)a[k], (double)b[k]);
        }
        cxr_nn_model_free(r);
    }
    char err[CXR_ERRLEN] = "";
    ck_assert_int_eq(cxr_nn_model_save(m, "/tmp/x.safetensors", CXR_NN_DTYPE_F64, err),
                     CXR_ERR_NN_DTYPE);
    cxr_nn_model_free(m);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_save_failures_leave_nothing)
{
    char *dir = cxr_test_tmpdir();
    char path[4096], err[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = small_model(CXR_NN_ARCH_RESNET18, 1, 2, 2, 1);
    snprintf(path, sizeof path, "%s/no/such/dir/m.safetensors", dir);
    enum cxr_status st = cxr_nn_model_save(m, path, CXR_NN_DTYPE_F32, err);
    ck_assert_int_eq(st, CXR_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "no/such/dir"));
    /* invalid metadata set through meta_mut is refused before writing */
    cxr_nn_model_meta_mut(m)->urgent_threshold = -0.5;
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    st = cxr_nn_model_save(m, path, CXR_NN_DTYPE_F32, err);
    ck_assert_int_eq(st, CXR_ERR_NN_MODEL);
    ck_assert_ptr_nonnull(strstr(err, "urgent_threshold"));
    struct stat sb;
    ck_assert_int_ne(stat(path, &sb), 0);
    ck_assert_int_eq(cxr_test_sh("[ -z \"$(ls -A '%s')\" ]", dir), 0); /* no temp file left */
    cxr_nn_model_free(m);
    cxr_nn_model_free(NULL);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------------ PyTorch */

/* A file written from a torchvision state_dict with only {"format":"pt"}
 * metadata loads as it is: arch inferred, values where torch put them. */
START_TEST(test_torch_file_loads)
{
    const char *path = cxr_test_data_path("nn/torch_resnet18_w4.safetensors");
    struct cxr_nn_model *m = load_ok(path);
    struct json_object *side = read_json("nn/torch_resnet18_w4.json"), *v, *tensors;
    ck_assert(json_object_object_get_ex(side, "param_count", &v));
    ck_assert_int_eq(cxr_nn_model_param_count(m), json_object_get_int64(v));
    ck_assert(json_object_object_get_ex(side, "state_dict_entries", &v));
    ck_assert_int_eq(cxr_nn_model_tensor_count(m), json_object_get_int64(v));
    ck_assert(json_object_object_get_ex(side, "sha256", &v));
    ck_assert_str_eq(cxr_nn_model_sha256(m), json_object_get_string(v));
    const struct cxr_nn_model_meta *mt = cxr_nn_model_meta(m);
    ck_assert_int_eq(mt->arch, CXR_NN_ARCH_RESNET18);
    ck_assert_int_eq(mt->channels, 1);
    ck_assert_int_eq(mt->num_classes, 2);
    ck_assert_str_eq(mt->class_names[1], "PNEUMONIA");
    ck_assert_int_eq(mt->input_height, 224);
    ck_assert(mt->operating_threshold == 0.5);
    ck_assert(json_object_object_get_ex(side, "tensors", &tensors));
    json_object_object_foreach(tensors, name, info)
    {
        struct cxr_nn_tensor *t = cxr_nn_model_tensor_find(m, name);
        ck_assert_msg(t != NULL, "%s", name);
        struct json_object *shape, *first, *sum;
        ck_assert(json_object_object_get_ex(info, "shape", &shape));
        ck_assert(json_object_object_get_ex(info, "first", &first));
        ck_assert(json_object_object_get_ex(info, "sum", &sum));
        ck_assert_int_eq(t->ndim, (int)json_object_array_length(shape));
        for (int32_t d = 0; d < t->ndim; d++)
            ck_assert_int_eq(t->shape[d],
                             json_object_get_int64(json_object_array_get_idx(shape, d)));
        double s = 0;
        int64_t n = cxr_nn_tensor_numel(t);
        for (int64_t i = 0; i < n; i++) {
            double x = t->dtype == CXR_NN_DTYPE_I64 ? (double)((int64_t *)t->data)[i]
                                                    : (double)((float *)t->data)[i];
            s += x;
            if (i < (int64_t)json_object_array_length(first))
                ck_assert_msg(x == json_object_get_double(json_object_array_get_idx(first, i)),
                              "%s[%lld]", name, (long long)i);
        }
        ck_assert_msg(fabs(s - json_object_get_double(sum)) <= 1e-9 * (1 + fabs(s)), "%s sum",
                      name);
    }
    struct cxr_nn_resnet_spec spec;
    cxr_nn_model_spec(m, &spec);
    ck_assert_int_eq(spec.base_width, 4);
    ck_assert_int_eq(spec.in_channels, 1);
    json_object_put(side);
    cxr_nn_model_free(m);
}
END_TEST

START_TEST(test_load_missing_file)
{
    struct cxr_nn_model *m = (struct cxr_nn_model *)&m;
    char err[CXR_ERRLEN] = "";
    ck_assert_int_eq(cxr_nn_model_load("/nonexistent/m.safetensors", &m, err), CXR_ERR_NOT_FOUND);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/m.safetensors"));
    ck_assert_int_eq(cxr_nn_model_load("/", &m, err), CXR_ERR_IO);
    ck_assert_ptr_null(m);
}
END_TEST

/* ------------------------------------------------------------------ describe */

START_TEST(test_describe)
{
    char *dir = cxr_test_tmpdir();
    struct cxr_nn_model *m = small_model(CXR_NN_ARCH_RESNET18, 1, 2, 64, 2);
    set_rich_meta(m);
    save_tmp(m, dir, "d.safetensors", CXR_NN_DTYPE_F32);
    char *text = NULL;
    size_t tlen = 0;
    FILE *fp = open_memstream(&text, &tlen);
    cxr_nn_model_describe(m, fp, false);
    fclose(fp);
    ck_assert_ptr_nonnull(strstr(text, "resnet18"));
    ck_assert_ptr_nonnull(strstr(text, "11,171,266"));
    ck_assert_ptr_nonnull(strstr(text, cxr_nn_model_sha256(m)));
    ck_assert_ptr_nonnull(strstr(text, "letterbox"));
    ck_assert_ptr_nonnull(strstr(text, "age 18 to 99.5 years"));
    ck_assert_ptr_nonnull(strstr(text, "\"auc\":0.96"));
    free(text);
    fp = open_memstream(&text, &tlen);
    cxr_nn_model_describe(m, fp, true);
    fclose(fp);
    struct json_object *o = json_tokener_parse(text), *v;
    ck_assert_msg(o != NULL, "describe json does not parse: %s", text);
    ck_assert(json_object_object_get_ex(o, "parameters", &v) &&
              json_object_get_int64(v) == 11171266);
    ck_assert(json_object_object_get_ex(o, "sha256", &v));
    ck_assert_str_eq(json_object_get_string(v), cxr_nn_model_sha256(m));
    ck_assert(json_object_object_get_ex(o, "metrics", &v) &&
              json_object_is_type(v, json_type_object));
    ck_assert(json_object_object_get_ex(o, "name", &v));
    ck_assert_str_eq(json_object_get_string(v), "cxr-test \"quoted\" / slash");
    ck_assert(json_object_object_get_ex(o, "operating_threshold", &v));
    ck_assert(json_object_get_double(v) == 0.1234567890123);
    json_object_put(o);
    free(text);
    cxr_nn_model_free(m);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_model");
    TCase *tc = tcase_create("structure");
    tcase_add_test(tc, test_dtype_and_arch_names);
    tcase_add_test(tc, test_meta_untrained_mark);
    tcase_add_loop_test(tc, test_spec_counts_match_torchvision, 0,
                        (int)(sizeof torchvision_counts / sizeof torchvision_counts[0]));
    tcase_add_test(tc, test_spec_imagenet_counts);
    tcase_add_test(tc, test_spec_blocks);
    suite_add_tcase(s, tc);
    tc = tcase_create("init");
    tcase_add_test(tc, test_init_deterministic);
    tcase_add_test(tc, test_init_matches_documented_generator);
    tcase_add_test(tc, test_init_distribution);
    tcase_add_test(tc, test_init_refuses_bad_meta);
    suite_add_tcase(s, tc);
    tc = tcase_create("save_load");
    tcase_add_test(tc, test_roundtrip_f32_bit_exact);
    tcase_add_test(tc, test_saved_layout);
    tcase_add_test(tc, test_half_storage_matches_torch);
    tcase_add_test(tc, test_roundtrip_half_within_rounding);
    tcase_add_test(tc, test_save_failures_leave_nothing);
    tcase_add_test(tc, test_load_missing_file);
    tcase_add_test(tc, test_training_digests);
    suite_add_tcase(s, tc);
    tc = tcase_create("pytorch");
    tcase_add_test(tc, test_torch_file_loads);
    suite_add_tcase(s, tc);
    tc = tcase_create("describe");
    tcase_add_test(tc, test_describe);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
