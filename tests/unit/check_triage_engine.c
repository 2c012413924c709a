/* check_triage_engine.c — the scoring engine shared by `score`, the node and
 * the Orthanc plugin: thresholds and priorities, batch independence, SRs,
 * bad models, and the robustness sweep over every real file we have
 * (../shared/data/dicom-cxr and dicom-corpus, skipped when absent; the small
 * real files in tests/data always). Runs under ASan+UBSan in CI too. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cxr/conf.h"
#include "cxr/dicom.h"
#include "cxr/nn.h"
#include "cxr/triage.h"
#include "test_util.h"

/* A small, fast, untrained model (resnet18, width 8, 64x64) saved in a
 * temporary folder; the engine reads it like any model file. */
static char *tmpdir;
static char model_path[4200];

static void make_model(double operating, double urgent)
{
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, CXR_NN_ARCH_RESNET18);
    meta.input_height = 64;
    meta.input_width = 64;
    meta.operating_threshold = operating;
    meta.urgent_threshold = urgent;
    snprintf(meta.name, sizeof meta.name, "engine-test");
    struct cxr_nn_model *m = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_nn_model_init_width(&meta, 8, 11, &m, err) == CXR_OK, "%s", err);
    snprintf(model_path, sizeof model_path, "%s/model.safetensors", tmpdir);
    ck_assert_msg(cxr_nn_model_save(m, model_path, CXR_NN_DTYPE_F32, err) == CXR_OK, "%s", err);
    cxr_nn_model_free(m);
}

static void setup(void)
{
    cxr_dicom_global_init();
    tmpdir = cxr_test_tmpdir();
    ck_assert_ptr_nonnull(tmpdir);
    make_model(0.5, 0.9);
}

static void teardown(void)
{
    cxr_test_rmtree(tmpdir);
    free(tmpdir);
    tmpdir = NULL;
}

/* A configuration admitting what the real test files are: Secondary Capture
 * (11 of the 16 chest files are CR converted to SC) and images without
 * ViewPosition/BodyPartExamined. `extra` goes inside <priority>. */
static struct cxr_conf *permissive_conf(const char *priority_extra)
{
    char xml[8192];
    snprintf(xml, sizeof xml,
             "<cxr-triage version=\"1\">"
             "<model><path>%s</path><batch-size>4</batch-size><threads>1</threads></model>"
             "<gate><allow-secondary-capture>true</allow-secondary-capture>"
             "<allow-missing-body-part>true</allow-missing-body-part>"
             "<allow-missing-view-position>true</allow-missing-view-position></gate>"
             "<priority>%s</priority>"
             "</cxr-triage>",
             model_path, priority_extra ? priority_extra : "");
    struct cxr_conf *conf = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_conf_load_memory(xml, strlen(xml), "test.xml", &conf, err) == CXR_OK, "%s",
                  err);
    return conf;
}

static struct cxr_triage_engine *engine_for(const struct cxr_conf *conf)
{
    struct cxr_triage_engine *e = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_triage_engine_new(conf, NULL, &e, NULL, err) == CXR_OK, "%s", err);
    return e;
}

/* Loads and scores one file alone; returns the result. */
static struct cxr_triage_result score_one(struct cxr_triage_engine *e, const char *path)
{
    struct cxr_triage_result r;
    memset(&r, 0, sizeof r);
    struct cxr_dicom_instance *inst = NULL;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_dicom_instance_load_file(path, &inst, err);
    if (st != CXR_OK) {
        r.status = st;
        snprintf(r.reason, sizeof r.reason, "%.500s", err);
        return r;
    }
    cxr_triage_engine_score(e, &inst, 1, &r);
    cxr_dicom_instance_free(inst);
    return r;
}

/* ---------------------------------------------------------------- priorities */

START_TEST(test_priority_from_model_thresholds)
{
    struct cxr_conf *conf = permissive_conf(NULL);
    struct cxr_triage_engine *e = engine_for(conf);
    ck_assert(cxr_triage_engine_operating_threshold(e) == 0.5);
    ck_assert(cxr_triage_engine_urgent_threshold(e) == 0.9);
    static const struct {
        double p;
        enum cxr_triage_priority want;
    } rows[] = {
        {0.0, CXR_TRIAGE_PRIORITY_ROUTINE},  {0.4999, CXR_TRIAGE_PRIORITY_ROUTINE},
        {0.5, CXR_TRIAGE_PRIORITY_PRIORITY}, {0.8999, CXR_TRIAGE_PRIORITY_PRIORITY},
        {0.9, CXR_TRIAGE_PRIORITY_URGENT},   {1.0, CXR_TRIAGE_PRIORITY_URGENT},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        ck_assert_msg(cxr_triage_engine_priority(e, rows[i].p) == rows[i].want, "p=%g", rows[i].p);
    ck_assert_str_eq(cxr_triage_priority_name(conf, CXR_TRIAGE_PRIORITY_URGENT), "URGENT");
    cxr_triage_engine_free(e);
    cxr_conf_free(conf);
}
END_TEST

START_TEST(test_priority_config_overrides_model)
{
    struct cxr_conf *conf = permissive_conf(
        "<urgent-threshold>0.7</urgent-threshold><priority-threshold>0.3</priority-threshold>");
    struct cxr_triage_engine *e = engine_for(conf);
    ck_assert(cxr_triage_engine_operating_threshold(e) == 0.3);
    ck_assert(cxr_triage_engine_urgent_threshold(e) == 0.7);
    ck_assert(cxr_triage_engine_priority(e, 0.31) == CXR_TRIAGE_PRIORITY_PRIORITY);
    ck_assert(cxr_triage_engine_priority(e, 0.71) == CXR_TRIAGE_PRIORITY_URGENT);
    ck_assert(cxr_triage_engine_priority(e, 0.29) == CXR_TRIAGE_PRIORITY_ROUTINE);
    cxr_triage_engine_free(e);
    cxr_conf_free(conf);
}
END_TEST

START_TEST(test_study_priority_most_severe)
{
    struct cxr_triage_result r[3];
    memset(r, 0, sizeof r);
    ck_assert(cxr_triage_study_priority(r, 3) == CXR_TRIAGE_PRIORITY_NOT_ANALYSED);
    r[0].analysed = true;
    r[0].priority = CXR_TRIAGE_PRIORITY_ROUTINE;
    r[2].analysed = true;
    r[2].priority = CXR_TRIAGE_PRIORITY_URGENT;
    r[1].analysed = false; /* a not-analysed image never raises or lowers the study */
    r[1].priority = CXR_TRIAGE_PRIORITY_URGENT;
    ck_assert(cxr_triage_study_priority(r, 2) == CXR_TRIAGE_PRIORITY_ROUTINE);
    ck_assert(cxr_triage_study_priority(r, 3) == CXR_TRIAGE_PRIORITY_URGENT);
}
END_TEST

/* ---------------------------------------------------------------- scoring */

/* A result does not depend on which images share its batch: the same file
 * scored alone and in a batch with others gets the same probability. */
START_TEST(test_batch_independent)
{
    struct cxr_conf *conf = permissive_conf(NULL);
    struct cxr_triage_engine *e = engine_for(conf);
    const char *names[] = {"siim_cr_chest_jpeg_baseline.dcm", "cr_mono1_10_chest_nometa.dcm",
                           "siim_cr_chest_jpeg_baseline.dcm", "cr_mono1_10_chest_nometa.dcm",
                           "siim_cr_chest_jpeg_baseline.dcm"};
    enum { N = 5 };
    struct cxr_dicom_instance *insts[N];
    struct cxr_triage_result batch[N], alone[N];
    memset(batch, 0, sizeof batch);
    for (int i = 0; i < N; i++) {
        char err[CXR_ERRLEN] = "";
        ck_assert_msg(cxr_dicom_instance_load_file(cxr_test_data_path(names[i]), &insts[i], err) ==
                          CXR_OK,
                      "%s", err);
        alone[i] = score_one(e, cxr_test_data_path(names[i]));
        ck_assert_msg(alone[i].analysed, "%s: %s", names[i], alone[i].reason);
    }
    ck_assert(cxr_triage_engine_score(e, insts, N, batch) == CXR_OK); /* batches of 4 + 1 */
    for (int i = 0; i < N; i++) {
        ck_assert(batch[i].analysed);
        ck_assert_msg(fabs(batch[i].probability - alone[i].probability) <= 1e-6, "%s: %g vs %g",
                      names[i], batch[i].probability, alone[i].probability);
        ck_assert(batch[i].probability >= 0.0 && batch[i].probability <= 1.0);
        ck_assert(batch[i].finding_present == (batch[i].probability >= 0.5));
        ck_assert(batch[i].priority == cxr_triage_engine_priority(e, batch[i].probability));
        cxr_dicom_instance_free(insts[i]);
    }
    /* identical files, identical scores */
    ck_assert(batch[0].probability == batch[2].probability);
    ck_assert(batch[1].probability == batch[3].probability);
    cxr_triage_engine_free(e);
    cxr_conf_free(conf);
}
END_TEST

/* The engine's probability equals the pipeline done by hand with the
 * modules' own calls (present -> preprocess -> forward -> softmax). */
START_TEST(test_engine_equals_manual_pipeline)
{
    struct cxr_conf *conf = permissive_conf(NULL);
    struct cxr_triage_engine *e = engine_for(conf);
    const char *path = cxr_test_data_path("cr_mono1_10_chest_nometa.dcm");
    struct cxr_triage_result r = score_one(e, path);
    ck_assert_msg(r.analysed, "%s", r.reason);

    char err[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = NULL;
    ck_assert(cxr_nn_model_load(model_path, &m, err) == CXR_OK);
    const struct cxr_nn_model_meta *meta = cxr_nn_model_meta(m);
    struct cxr_nn_backend_options bo = {
        .kind = CXR_NN_BACKEND_CPU, .precision = CXR_NN_PRECISION_FP32, .threads = 1};
    struct cxr_nn_backend *b = NULL;
    struct cxr_nn_net *net = NULL;
    ck_assert(cxr_nn_backend_open(&bo, &b, NULL, err) == CXR_OK);
    ck_assert(cxr_nn_net_new(b, m, 1, &net, err) == CXR_OK);
    struct cxr_dicom_instance *inst = NULL;
    ck_assert(cxr_dicom_instance_load_file(path, &inst, err) == CXR_OK);
    struct cxr_dicom_image img = {0};
    ck_assert(cxr_dicom_instance_present(inst, &img, err) == CXR_OK);
    size_t nfl = (size_t)meta->channels * meta->input_height * meta->input_width;
    float *x = malloc(nfl * sizeof *x), logits[2], probs[2];
    ck_assert(cxr_nn_preprocess_u8(meta, img.pixels, img.width, img.height, img.width, NULL, x) ==
              CXR_OK);
    ck_assert(cxr_nn_net_forward(net, x, 1, logits) == CXR_OK);
    cxr_nn_softmax(logits, 2, probs);
    ck_assert_msg(fabs(probs[1] - r.probability) <= 1e-6, "%g vs %g", probs[1], r.probability);
    free(x);
    cxr_dicom_image_release(&img);
    cxr_dicom_instance_free(inst);
    cxr_nn_net_free(net);
    cxr_nn_backend_close(b);
    cxr_nn_model_free(m);
    cxr_triage_engine_free(e);
    cxr_conf_free(conf);
}
END_TEST

/* The SR of an analysed image is written in the series asked for and names
 * the image; an image that was not analysed is listed with its reason and
 * "Measurement not attempted" (issue 16: every received image is accounted
 * for); no image at all is refused. */
START_TEST(test_write_sr)
{
    struct cxr_conf *conf = permissive_conf(NULL);
    struct cxr_triage_engine *e = engine_for(conf);
    struct cxr_triage_result r = score_one(e, cxr_test_data_path("cr_mono1_10_chest_nometa.dcm"));
    ck_assert(r.analysed);
    char path[4300], uid[CXR_DICOM_UID_LEN] = "", err[CXR_ERRLEN] = "";
    char series[CXR_DICOM_UID_LEN];
    cxr_dicom_uid_new(series);
    snprintf(path, sizeof path, "%s/sr.dcm", tmpdir);
    ck_assert_msg(cxr_triage_engine_write_sr(e, &r, 1, NULL, series, path, NULL, NULL, uid, err) ==
                      CXR_OK,
                  "%s", err);
    ck_assert(strlen(uid) > 5);
    ck_assert_int_eq(
        cxr_test_sh("dcmdump +P 0008,1155 '%s' | grep -q '%s'", path, r.info.sop_instance_uid), 0);
    ck_assert_int_eq(cxr_test_sh("dcmdump +P 0020,000e '%s' | grep -q '\\[%s\\]'", path, series),
                     0);
    if (cxr_test_sh("command -v dciodvfy >/dev/null") == 0)
        ck_assert_int_eq(cxr_test_sh("dciodvfy '%s' 2>&1 | grep -q Error", path), 1);

    r.analysed = false;
    snprintf(r.reason, sizeof r.reason, "lateral view (ViewPosition LL)");
    ck_assert_msg(cxr_triage_engine_write_sr(e, &r, 1, NULL, NULL, path, NULL, NULL, uid, err) ==
                      CXR_OK,
                  "%s", err);
    ck_assert_int_eq(cxr_test_sh("dsrdump '%s' | grep -q 'Measurement not attempted'", path), 0);
    ck_assert_int_eq(
        cxr_test_sh("dsrdump +Pl '%s' | grep -q 'not analysed: lateral view (ViewPosition LL)'",
                    path),
        0);
    ck_assert_int_eq(cxr_test_sh("dsrdump '%s' | grep -q '52101004\\|2667000'", path), 1);
    if (cxr_test_sh("command -v dciodvfy >/dev/null") == 0)
        ck_assert_int_eq(cxr_test_sh("dciodvfy '%s' 2>&1 | grep -q Error", path), 1);
    ck_assert(cxr_triage_engine_write_sr(e, &r, 0, NULL, NULL, path, NULL, NULL, uid, err) ==
              CXR_ERR_INVALID_ARG);
    cxr_triage_engine_free(e);
    cxr_conf_free(conf);
}
END_TEST

/* The SR's device observer (TID 1004, Device Observer Name) is the AE title
 * the site gave the node, not a fixed "CXRTRIAGE". */
START_TEST(test_sr_device_name_is_ae_title)
{
    char xml[8192];
    snprintf(xml, sizeof xml,
             "<cxr-triage version=\"1\"><model><path>%s</path><threads>1</threads></model>"
             "<node><ae-title>WARD7CXR</ae-title></node></cxr-triage>",
             model_path);
    struct cxr_conf *conf = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_conf_load_memory(xml, strlen(xml), "test.xml", &conf, err) == CXR_OK, "%s",
                  err);
    struct cxr_triage_engine *e = engine_for(conf);
    struct cxr_triage_result r = score_one(e, cxr_test_data_path("cr_mono1_10_chest_nometa.dcm"));
    ck_assert_msg(r.analysed, "%s", r.reason);
    char path[4300], uid[CXR_DICOM_UID_LEN] = "";
    snprintf(path, sizeof path, "%s/sr-ae.dcm", tmpdir);
    ck_assert_msg(cxr_triage_engine_write_sr(e, &r, 1, NULL, NULL, path, NULL, NULL, uid, err) ==
                      CXR_OK,
                  "%s", err);
    ck_assert_int_eq(
        cxr_test_sh("dsrdump '%s' | grep -q 'Device Observer Name\")=\"WARD7CXR\"'", path), 0);
    cxr_triage_engine_free(e);
    cxr_conf_free(conf);
}
END_TEST

/* A missing or corrupt model is a clear error naming the file, no crash. */
START_TEST(test_bad_model_refused)
{
    struct cxr_conf *conf = permissive_conf(NULL);
    struct cxr_triage_engine *e = NULL;
    char err[CXR_ERRLEN] = "";
    struct cxr_triage_engine_options o;
    cxr_triage_engine_options_init(&o);
    char missing[4300];
    snprintf(missing, sizeof missing, "%s/absent.safetensors", tmpdir);
    o.model_path = missing;
    ck_assert(cxr_triage_engine_new(conf, &o, &e, NULL, err) != CXR_OK);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err, "absent.safetensors"), "%s", err);

    /* truncate a copy of the real model in the middle of its data */
    size_t len;
    char *bytes = cxr_test_read_file(model_path, &len);
    ck_assert_ptr_nonnull(bytes);
    char cut[4300];
    snprintf(cut, sizeof cut, "%s/cut.safetensors", tmpdir);
    ck_assert(cxr_test_write_file(cut, bytes, len / 2));
    free(bytes);
    o.model_path = cut;
    err[0] = '\0';
    ck_assert(cxr_triage_engine_new(conf, &o, &e, NULL, err) == CXR_ERR_NN_MODEL);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err, "cut.safetensors"), "%s", err);
    cxr_conf_free(conf);
}
END_TEST

/* Saves a copy of the test model as tmpdir/<name> with every value of the
 * named tensor set: to `v`, or (rows true) the first row to +v and the
 * others to -v. Every weight stays finite. */
static void edited_model(const char *name, const char *tensor, float v, bool rows, char *path,
                         size_t len)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = NULL;
    ck_assert_msg(cxr_nn_model_load(model_path, &m, err) == CXR_OK, "%s", err);
    struct cxr_nn_tensor *t = cxr_nn_model_tensor_find(m, tensor);
    ck_assert_ptr_nonnull(t);
    int64_t n = cxr_nn_tensor_numel(t), per = n / t->shape[0];
    for (int64_t i = 0; i < n; i++)
        ((float *)t->data)[i] = rows && i >= per ? -v : v;
    ck_assert_int_eq(cxr_nn_model_check_finite(m, err), CXR_OK);
    snprintf(path, len, "%s/%s", tmpdir, name);
    ck_assert_msg(cxr_nn_model_save(m, path, CXR_NN_DTYPE_F32, err) == CXR_OK, "%s", err);
    cxr_nn_model_free(m);
}

/* A forward pass whose output is NaN or infinite makes that image not
 * analysed with CXR_ERR_NN_NONFINITE and a reason, never ROUTINE without a
 * score (issue 14, item 5); the other images of the batch are scored. The
 * model's fc weights are +-3e38 (finite): a neutral input (zeros, the mean
 * grey) has no features and scores, any other overflows to infinity. */
START_TEST(test_nonfinite_output_not_analysed)
{
    char path[4400];
    edited_model("fc-extreme.safetensors", "fc.weight", 3e38f, true, path, sizeof path);
    struct cxr_conf *conf = permissive_conf(NULL);
    struct cxr_triage_engine_options o;
    cxr_triage_engine_options_init(&o);
    o.model_path = path;
    struct cxr_triage_engine *e = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_triage_engine_new(conf, &o, &e, NULL, err) == CXR_OK, "%s", err);
    size_t per = cxr_triage_engine_input_floats(e);
    float *t = calloc(3 * per, sizeof(float));
    ck_assert_ptr_nonnull(t);
    for (size_t i = 0; i < per; i++) {
        t[i] = (float)(i % 97) / 40.0f - 1.0f; /* a gradient */
        t[2 * per + i] = 1.0f;                 /* a white image */
    }
    struct cxr_triage_result r[3];
    memset(r, 0, sizeof r);
    ck_assert_int_eq(cxr_triage_engine_infer(e, t, 3, r), CXR_OK);
    for (int i = 0; i < 3; i += 2) {
        ck_assert_msg(!r[i].analysed && r[i].status == CXR_ERR_NN_NONFINITE, "image %d: %s p=%g", i,
                      cxr_status_name(r[i].status), r[i].probability);
        ck_assert_int_eq(r[i].priority, CXR_TRIAGE_PRIORITY_NOT_ANALYSED);
        ck_assert_msg(strstr(r[i].reason, "no finite score"), "%s", r[i].reason);
    }
    ck_assert(r[1].analysed && isfinite(r[1].probability));
    ck_assert_int_eq(cxr_triage_study_priority(r, 3), r[1].priority);
    free(t);
    cxr_triage_engine_free(e);
    cxr_conf_free(conf);
}
END_TEST

/* Finite weights that give no finite score for any image (a batch-norm
 * bias of 3e38 in the last block: the pooled features overflow) are refused
 * when the engine is made, from a neutral test image, instead of marking
 * every image not analysed (issue 14, item 5). */
START_TEST(test_model_scoring_nan_refused)
{
    char path[4400], err[CXR_ERRLEN] = "";
    edited_model("bn-extreme.safetensors", "layer4.1.bn2.bias", 3e38f, false, path, sizeof path);
    struct cxr_conf *conf = permissive_conf(NULL);
    struct cxr_triage_engine_options o;
    cxr_triage_engine_options_init(&o);
    o.model_path = path;
    struct cxr_triage_engine *e = (struct cxr_triage_engine *)&e;
    ck_assert_int_eq(cxr_triage_engine_new(conf, &o, &e, NULL, err), CXR_ERR_NN_NONFINITE);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err, "bn-extreme.safetensors") && strstr(err, "no finite score"), "%s",
                  err);
    cxr_conf_free(conf);
}
END_TEST

/* ---------------------------------------------------------------- sweep */

struct sweep {
    struct cxr_triage_engine *e;
    int files, analysed, not_analysed;
};

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Scores every regular file under `dir` (recursively). Each must either be
 * analysed with a probability in [0,1] or come back with a non-OK status and
 * a reason that is not empty. */
static void sweep_dir(struct sweep *s, const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    char *names[1024];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 1024) {
        if (de->d_name[0] == '.')
            continue;
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        free(names[i]);
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            sweep_dir(s, path);
            continue;
        }
        if (strstr(path, "MANIFEST.tsv") || strstr(path, "PROVENANCE.md"))
            continue;
        struct cxr_triage_result r = score_one(s->e, path);
        s->files++;
        if (r.analysed) {
            s->analysed++;
            ck_assert_msg(r.probability >= 0.0 && r.probability <= 1.0, "%s: p=%g", path,
                          r.probability);
            ck_assert(r.status == CXR_OK);
        } else {
            s->not_analysed++;
            ck_assert_msg(r.status != CXR_OK, "%s: not analysed but status OK", path);
            ck_assert_msg(strlen(r.reason) > 5, "%s: no reason given", path);
        }
    }
}

/* The 16 real chest radiographs (CR/DX, MONOCHROME1/2, 8-15 bit,
 * uncompressed, JPEG, JPEG-LS, JPEG 2000, one without meta header) are all
 * analysed under a configuration that admits SC and missing view/body part. */
START_TEST(test_sweep_chest_all_analysed)
{
    if (!cxr_test_have_shared("dicom-cxr", "chest sweep"))
        return;
    struct cxr_conf *conf = permissive_conf(NULL);
    struct sweep s = {.e = engine_for(conf)};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/dicom-cxr", cxr_test_shared_data());
    sweep_dir(&s, dir);
    printf("dicom-cxr: %d files, %d analysed, %d not analysed\n", s.files, s.analysed,
           s.not_analysed);
    ck_assert_int_eq(s.files, 16);
    ck_assert_int_eq(s.analysed, 16);
    cxr_triage_engine_free(s.e);
    cxr_conf_free(conf);
}
END_TEST

/* Every one of the 403 exotic/malformed files: scored or a clear reason;
 * no crash, no hang, no leak (ASan). */
START_TEST(test_sweep_corpus_no_crash)
{
    if (!cxr_test_have_shared("dicom-corpus", "corpus sweep"))
        return;
    struct cxr_conf *conf = permissive_conf(NULL);
    struct sweep s = {.e = engine_for(conf)};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/dicom-corpus", cxr_test_shared_data());
    sweep_dir(&s, dir);
    printf("dicom-corpus: %d files, %d analysed, %d not analysed\n", s.files, s.analysed,
           s.not_analysed);
    ck_assert_int_eq(s.files, 403);
    ck_assert_int_gt(s.analysed, 0);
    cxr_triage_engine_free(s.e);
    cxr_conf_free(conf);
}
END_TEST

/* On a fresh clone the real files in tests/data keep the sweep alive. */
START_TEST(test_sweep_bundled_files)
{
    struct cxr_conf *conf = permissive_conf(NULL);
    struct sweep s = {.e = engine_for(conf)};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/data", cxr_test_source_dir());
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strstr(de->d_name, ".dcm"))
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct cxr_triage_result r = score_one(s.e, path);
        s.files++;
        /* the three chest radiographs must be analysed (the test model
         * states no population, so the Kermany child's age does not matter);
         * the NM files and the extremity CR (RG3) are not chest films */
        if (strstr(de->d_name, "siim_cr") || strstr(de->d_name, "cr_mono1") ||
            strstr(de->d_name, "kermany_child"))
            ck_assert_msg(r.analysed, "%s: %s", de->d_name, r.reason);
        else
            ck_assert_msg(!r.analysed && r.reason[0], "%s analysed", de->d_name);
    }
    closedir(d);
    ck_assert_int_ge(s.files, 4);
    cxr_triage_engine_free(s.e);
    cxr_conf_free(conf);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("triage_engine");
    TCase *tc = tcase_create("priority");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_priority_from_model_thresholds);
    tcase_add_test(tc, test_priority_config_overrides_model);
    tcase_add_test(tc, test_study_priority_most_severe);
    suite_add_tcase(s, tc);
    tc = tcase_create("scoring");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_batch_independent);
    tcase_add_test(tc, test_engine_equals_manual_pipeline);
    tcase_add_test(tc, test_write_sr);
    tcase_add_test(tc, test_sr_device_name_is_ae_title);
    tcase_add_test(tc, test_bad_model_refused);
    tcase_add_test(tc, test_nonfinite_output_not_analysed);
    tcase_add_test(tc, test_model_scoring_nan_refused);
    suite_add_tcase(s, tc);
    tc = tcase_create("sweep");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_sweep_bundled_files);
    tcase_add_test(tc, test_sweep_chest_all_analysed);
    tcase_add_test(tc, test_sweep_corpus_no_crash);
    suite_add_tcase(s, tc);
    return cxr_test_run(s);
}
