/* check_train.c — the training and evaluation driver (cxr/train.h)
 * on a small synthetic labeled folder (PNG stripes across = NORMAL, down =
 * PNEUMONIA, Kermany-style patient names):
 *   - the same seed gives the same weights twice; the model file carries
 *     thresholds that reproduce the validation sensitivity target on the
 *     validation scores, the data digest, the metrics JSON;
 *   - a run stopped after its first step (the SIGINT flag) leaves a
 *     checkpoint and CXR_ERR_CANCELLED; resuming gives weights identical to
 *     an uninterrupted run;
 *   - --init with other classes re-initialises the fc (and says so), with
 *     --freeze-backbone the backbone stays byte for byte; the new model lists
 *     the init's training images with its own;
 *   - the balanced sampler and SGD train; early stopping stops;
 *   - evaluate on the validation folder: counts, the model's own threshold,
 *     JSON;
 *   - option errors are CXR_ERR_USAGE with the reason;
 *   - a weak model goes to "<out>.weak" unless accept_weak.
 */
#include <check.h>
#include <json-c/json.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/dataset.h"
#include "cxr/nn.h"
#include "cxr/train.h"
#include "test_util.h"

static char *root; /* tmp folder with data/ and val/ */

static void write_png(const char *path, int cls, unsigned seed)
{
    enum { W = 40 };
    uint8_t px[W * W];
    double per = 5 + seed % 5, ph = (seed * 37 % 100) / 16.0;
    for (int r = 0; r < W; r++)
        for (int c = 0; c < W; c++) {
            seed = seed * 1103515245u + 12345u;
            double noise = (double)((seed >> 16) & 0xff) / 255.0 * 40 - 20;
            double v = 128 + 90 * sin(2 * M_PI * (cls ? c : r) / per + ph) + noise;
            px[r * W + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    void *buf = NULL;
    size_t len = 0;
    char err[CXR_ERRLEN];
    ck_assert_int_eq(cxr_train_image_encode_png(px, W, W, W, &buf, &len, err), CXR_OK);
    ck_assert(cxr_test_write_file(path, buf, len));
    free(buf);
}

static void make_data(void)
{
    root = cxr_test_tmpdir();
    const char *split[2] = {"data", "val"};
    const char *cls[2] = {"NORMAL", "PNEUMONIA"};
    char path[4096];
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < 2; c++) {
            snprintf(path, sizeof path, "%s/%s", root, split[s]);
            mkdir(path, 0755);
            snprintf(path, sizeof path, "%s/%s/%s", root, split[s], cls[c]);
            mkdir(path, 0755);
            int n = s == 0 ? 16 : 6;
            for (int i = 0; i < n; i++) {
                snprintf(path, sizeof path, "%s/%s/%s/person%d_x%d.png", root, split[s], cls[c],
                         1000 * c + 100 * s + i / 2, i);
                write_png(path, c, (unsigned)(7919 * (s * 100 + c * 50 + i) + 1));
            }
        }
}

static void drop_data(void)
{
    cxr_test_rmtree(root);
    free(root);
}

static FILE *quiet(void) { return fopen("/dev/null", "w"); }

/* Small, fast options: resnet18 width 4 at 40x40. accept_weak: these tiny
 * runs check the machinery, so a weak model is still written to `out`
 * (test_weak_model_not_installed checks the default). */
static void small(struct cxr_train_options *o, const char *out, FILE *log)
{
    static char data[4096], val[4096];
    cxr_train_options_init(o);
    snprintf(data, sizeof data, "%s/data", root);
    snprintf(val, sizeof val, "%s/val", root);
    o->data = data;
    o->val = val;
    o->out = out;
    o->base_width = 4;
    o->input_height = o->input_width = 40;
    o->epochs = 4;
    o->batch = 8;
    o->threads = 2;
    o->resamples = 200;
    o->log = log;
    o->accept_weak = true;
}

static struct cxr_nn_model *load(const char *path)
{
    struct cxr_nn_model *m = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_nn_model_load(path, &m, err) == CXR_OK, "%s", err);
    return m;
}

/* Tensors equal (names present in both); `prefix_only`: only names with it. */
static int tensors_differ(const struct cxr_nn_model *a, const struct cxr_nn_model *b,
                          const char *prefix_only)
{
    int n = 0;
    for (uint32_t i = 0; i < cxr_nn_model_tensor_count(a); i++) {
        const struct cxr_nn_tensor *t = cxr_nn_model_tensor_at(a, i);
        if (prefix_only && strncmp(t->name, prefix_only, strlen(prefix_only)) != 0)
            continue;
        const struct cxr_nn_tensor *u = cxr_nn_model_tensor_find(b, t->name);
        if (!u || u->nbytes != t->nbytes || memcmp(t->data, u->data, t->nbytes) != 0)
            n++;
    }
    return n;
}

static char *path_in(const char *name)
{
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/%s", root, name);
    return p;
}

START_TEST(test_train_reproducible_and_calibrated)
{
    make_data();
    FILE *log = quiet();
    char *a = path_in("a.safetensors"), *b = path_in("b.safetensors"), err[CXR_ERRLEN];
    struct cxr_train_options o;
    struct cxr_train_result ra, rb;
    small(&o, a, log);
    ck_assert_msg(cxr_train_run(&o, &ra, err) == CXR_OK, "%s", err);
    small(&o, b, log);
    ck_assert_msg(cxr_train_run(&o, &rb, err) == CXR_OK, "%s", err);
    struct cxr_nn_model *ma = load(a), *mb = load(b);
    ck_assert_int_eq(tensors_differ(ma, mb, NULL), 0);
    ck_assert_int_eq(ra.epochs_run, 4);
    ck_assert_uint_eq(ra.train_count, 32);
    ck_assert_uint_eq(ra.val_count, 12);
    const struct cxr_nn_model_meta *m = cxr_nn_model_meta(ma);
    ck_assert(fabs(m->operating_threshold - ra.operating_threshold) < 1e-12);
    ck_assert(m->urgent_threshold >= m->operating_threshold);
    ck_assert(ra.validation.sensitivity.value >= 0.95);
    ck_assert_str_eq(m->name, "cxr-custom");
    ck_assert_int_eq(strncmp(m->training_data_digest, "sha256:", 7), 0);
    struct json_object *j = json_tokener_parse(m->metrics_json);
    struct json_object *t, *v;
    ck_assert(j && json_object_object_get_ex(j, "training", &t) &&
              json_object_object_get_ex(t, "best_epoch", &v));
    ck_assert_int_eq(json_object_get_int(v), ra.best_epoch);
    json_object_put(j);
    /* evaluate the validation folder: the model's threshold reproduces the
     * calibration's confusion matrix */
    struct cxr_train_evaluate_options eo;
    cxr_train_evaluate_options_init(&eo);
    eo.model = a;
    eo.data = o.val;
    eo.resamples = 200;
    eo.log = log;
    struct cxr_train_evaluate_result er;
    ck_assert_msg(cxr_train_evaluate_run(&eo, &er, err) == CXR_OK, "%s", err);
    ck_assert_uint_eq(er.count, 12);
    ck_assert(fabs(er.operating.threshold - m->operating_threshold) < 1e-12);
    ck_assert_int_eq(er.operating.cm.tp, ra.validation.cm.tp);
    ck_assert_int_eq(er.operating.cm.fn, ra.validation.cm.fn);
    ck_assert_int_eq(er.operating.cm.tn, ra.validation.cm.tn);
    ck_assert(fabs(er.operating.auc.value - ra.validation.auc.value) < 1e-9);
    char *js = cxr_train_evaluate_to_json(&er, m);
    ck_assert_ptr_nonnull(js);
    j = json_tokener_parse(js);
    ck_assert(j && json_object_object_get_ex(j, "n", &v) && json_object_get_int(v) == 12);
    json_object_put(j);
    free(js);
    cxr_nn_model_free(ma);
    cxr_nn_model_free(mb);
    free(a);
    free(b);
    fclose(log);
    drop_data();
}
END_TEST

START_TEST(test_interrupt_and_resume_exact)
{
    make_data();
    FILE *log = quiet();
    char *a = path_in("a.safetensors"), *b = path_in("b.safetensors"), *ck = path_in("ck");
    char err[CXR_ERRLEN];
    struct cxr_train_options o;
    volatile sig_atomic_t stop = 1;
    small(&o, a, log);
    o.checkpoint_dir = ck;
    o.stop = &stop;
    ck_assert_int_eq(cxr_train_run(&o, NULL, err), CXR_ERR_CANCELLED);
    ck_assert_msg(strstr(err, "interrupted at epoch 1 batch 1"), "%s", err);
    char ckf[4200];
    snprintf(ckf, sizeof ckf, "%s/checkpoint.safetensors", ck);
    struct stat sb;
    ck_assert_int_eq(stat(ckf, &sb), 0);
    ck_assert_int_ne(stat(a, &sb), 0);
    /* resume: twice interrupted again at the next step, then to the end */
    o.resume = true;
    ck_assert_int_eq(cxr_train_run(&o, NULL, err), CXR_ERR_CANCELLED);
    ck_assert_msg(strstr(err, "interrupted at epoch 1 batch 2"), "%s", err);
    stop = 0;
    ck_assert_msg(cxr_train_run(&o, NULL, err) == CXR_OK, "%s", err);
    /* uninterrupted */
    small(&o, b, log);
    ck_assert_msg(cxr_train_run(&o, NULL, err) == CXR_OK, "%s", err);
    struct cxr_nn_model *ma = load(a), *mb = load(b);
    ck_assert_int_eq(tensors_differ(ma, mb, NULL), 0);
    /* a resume with another seed is refused */
    small(&o, a, log);
    o.checkpoint_dir = ck;
    o.resume = true;
    o.seed = 2;
    ck_assert_int_eq(cxr_train_run(&o, NULL, err), CXR_ERR_USAGE);
    ck_assert_msg(strstr(err, "other data or options"), "%s", err);
    cxr_nn_model_free(ma);
    cxr_nn_model_free(mb);
    free(a);
    free(b);
    free(ck);
    fclose(log);
    drop_data();
}
END_TEST

START_TEST(test_init_new_classes_frozen)
{
    make_data();
    FILE *log = fopen("/dev/null", "w");
    char *a = path_in("a.safetensors"), *b = path_in("b.safetensors"), err[CXR_ERRLEN];
    char *lg = path_in("log.txt");
    struct cxr_train_options o;
    small(&o, a, log);
    o.epochs = 1;
    ck_assert_int_eq(cxr_train_run(&o, NULL, err), CXR_OK);
    FILE *lf = fopen(lg, "w");
    small(&o, b, lf);
    const char *d = o.data; /* b trains on other images than a: val/ (and validates on data/) */
    o.data = o.val;
    o.val = d;
    o.init = a;
    o.freeze_backbone = true;
    o.classes = "NORMAL,PNEUMONIA,OTHER";
    o.epochs = 2;
    ck_assert_msg(cxr_train_run(&o, NULL, err) == CXR_OK, "%s", err);
    fclose(lf);
    size_t len = 0;
    char *text = cxr_test_read_file(lg, &len);
    ck_assert_msg(text && strstr(text, "fc layer was re-initialised"), "%s", text ? text : "");
    free(text);
    struct cxr_nn_model *ma = load(a), *mb = load(b);
    const struct cxr_nn_model_meta *mm = cxr_nn_model_meta(mb);
    ck_assert_int_eq(mm->num_classes, 3);
    ck_assert_str_eq(mm->class_names[2], "OTHER");
    ck_assert_int_eq(mm->positive_class, 1);
    /* the backbone (everything but fc and the bn counters) is the init's */
    for (uint32_t i = 0; i < cxr_nn_model_tensor_count(ma); i++) {
        const struct cxr_nn_tensor *t = cxr_nn_model_tensor_at(ma, i);
        if (!strncmp(t->name, "fc.", 3) || strstr(t->name, "num_batches"))
            continue;
        const struct cxr_nn_tensor *u = cxr_nn_model_tensor_find(mb, t->name);
        ck_assert_msg(!memcmp(t->data, u->data, t->nbytes), "%s changed", t->name);
    }
    ck_assert_int_eq(cxr_nn_model_tensor_find(mb, "fc.weight")->shape[0], 3);
    /* b lists its own 12 training images and the 32 that a's weights saw */
    const struct cxr_nn_model_meta *am = cxr_nn_model_meta(ma);
    ck_assert_int_eq(am->training_image_count, 32);
    ck_assert_int_eq(mm->training_image_count, 44);
    ck_assert_uint_eq(mm->training_digest_count, 44);
    for (uint32_t i = 0; i < am->training_digest_count; i++)
        ck_assert_int_eq(cxr_nn_model_meta_trained_on(mm, am->training_digests[i]), 1);
    cxr_nn_model_free(ma);
    cxr_nn_model_free(mb);
    free(a);
    free(b);
    free(lg);
    fclose(log);
    drop_data();
}
END_TEST

START_TEST(test_sampler_sgd_patience_storage)
{
    make_data();
    FILE *log = quiet();
    char *a = path_in("a.safetensors"), err[CXR_ERRLEN];
    struct cxr_train_options o;
    struct cxr_train_result r;
    small(&o, a, log);
    o.balanced_sampler = true;
    o.optimizer = CXR_NN_OPTIMIZER_SGD;
    o.lr = 0.05;
    o.storage = CXR_NN_DTYPE_BF16;
    o.val = NULL; /* the grouped split */
    o.epochs = 6;
    o.patience = 1;
    ck_assert_msg(cxr_train_run(&o, &r, err) == CXR_OK, "%s", err);
    ck_assert_uint_eq(r.train_count + r.val_count, 32);
    ck_assert(r.epochs_run <= 6 && r.epochs_run >= 2);
    ck_assert(r.stopped_early == (r.epochs_run < 6));
    ck_assert(r.epochs_run - r.best_epoch <= 1);
    /* bf16 storage: the file holds BF16 weights (the calibration used them) */
    size_t len = 0;
    char *buf = cxr_test_read_file(a, &len);
    ck_assert(buf && memmem(buf, len, "\"BF16\"", 6));
    free(buf);
    free(a);
    fclose(log);
    drop_data();
}
END_TEST

START_TEST(test_usage_errors)
{
    make_data();
    char *a = path_in("a.safetensors"), err[CXR_ERRLEN];
    FILE *log = quiet();
    struct cxr_train_options o;
    small(&o, a, log);
    o.freeze_backbone = true;
    ck_assert_int_eq(cxr_train_run(&o, NULL, err), CXR_ERR_USAGE);
    ck_assert_msg(strstr(err, "needs --init"), "%s", err);
    small(&o, a, log);
    o.out = NULL;
    ck_assert_int_eq(cxr_train_run(&o, NULL, err), CXR_ERR_USAGE);
    small(&o, a, log);
    o.classes = "ONLYONE";
    ck_assert_int_eq(cxr_train_run(&o, NULL, err), CXR_ERR_USAGE);
    small(&o, a, log);
    o.val = o.data; /* a folder without class folders: nothing usable, before training */
    char one[4200];
    snprintf(one, sizeof one, "%s/data/NORMAL", root);
    o.data = one;
    ck_assert_int_eq(cxr_train_run(&o, NULL, err), CXR_ERR_TRIAGE_ARCHIVE);
    free(a);
    fclose(log);
    drop_data();
}
END_TEST

/* A model that is not clearly better than chance on validation (here a
 * validation folder whose labels are swapped, so that what the model learns
 * counts against it) is written to "<out>.weak", not to `out`, and the
 * result says so; accept_weak writes it to `out`. */
START_TEST(test_weak_model_not_installed)
{
    make_data();
    char path[4300];
    const char *cls[2] = {"NORMAL", "PNEUMONIA"};
    for (int c = 0; c < 2; c++) {
        snprintf(path, sizeof path, "%s/swapped", root);
        mkdir(path, 0755);
        snprintf(path, sizeof path, "%s/swapped/%s", root, cls[c]);
        mkdir(path, 0755);
        for (int i = 0; i < 6; i++) {
            snprintf(path, sizeof path, "%s/swapped/%s/person%d_x%d.png", root, cls[c],
                     1000 * c + 500 + i / 2, i);
            write_png(path, 1 - c, (unsigned)(7919 * (300 + c * 50 + i) + 1));
        }
    }
    FILE *log = quiet();
    char *a = path_in("a.safetensors"), err[CXR_ERRLEN], swapped[4200], weak[4300];
    snprintf(swapped, sizeof swapped, "%s/swapped", root);
    snprintf(weak, sizeof weak, "%s.weak", a);
    struct cxr_train_options o;
    struct cxr_train_result r;
    small(&o, a, log);
    o.val = swapped;
    o.accept_weak = false;
    ck_assert_msg(cxr_train_run(&o, &r, err) == CXR_OK, "%s", err);
    ck_assert_msg(r.weak, "AUC %.3f [%.3f, %.3f] not weak", r.validation.auc.value,
                  r.validation.auc.lo, r.validation.auc.hi);
    ck_assert(r.validation.auc.lo <= CXR_TRAIN_WEAK_AUC_LOWER);
    ck_assert_str_eq(r.model_path, weak);
    ck_assert_int_ne(access(a, F_OK), 0);
    cxr_nn_model_free(load(weak));
    unlink(weak);
    o.accept_weak = true;
    ck_assert_msg(cxr_train_run(&o, &r, err) == CXR_OK, "%s", err);
    ck_assert(r.weak);
    ck_assert_str_eq(r.model_path, a);
    cxr_nn_model_free(load(a));
    ck_assert_int_ne(access(weak, F_OK), 0);
    free(a);
    fclose(log);
    drop_data();
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("triage_train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_train_reproducible_and_calibrated);
    tcase_add_test(tc, test_interrupt_and_resume_exact);
    tcase_add_test(tc, test_init_new_classes_frozen);
    tcase_add_test(tc, test_sampler_sgd_patience_storage);
    tcase_add_test(tc, test_usage_errors);
    tcase_add_test(tc, test_weak_model_not_installed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
