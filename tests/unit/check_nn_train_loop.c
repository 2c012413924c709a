/* check_nn_train_loop.c — the trainer over many steps (cxr/nn_trainer.h):
 *   - a tiny synthetic two-class set (stripes across vs. down, with noise)
 *     is learnt to 100 % training accuracy by a small resnet18 in a few
 *     seconds, the loss falls, and the exported model, run through the
 *     INFERENCE path (cxr_nn_net_new: batch norm folded from the running
 *     statistics), classifies every image; the same with SGD, with a
 *     frozen backbone (only the fc learns) and in bf16;
 *   - a checkpoint restores the exact state: continuing from it gives
 *     bit-identical parameters to an uninterrupted run; the caller's JSON
 *     comes back; a checkpoint of another structure or optimizer, a
 *     truncated or foreign file are refused with a reason;
 *   - bad steps: labels out of range, a batch over max_batch, a diverging
 *     lr (non-finite loss) are errors that leave the parameters unchanged.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../nn/src/backend.h"
#include "../../nn/src/train_internal.h"
#include "cxr/nn.h"
#include "cxr/nn_trainer.h"
#include "test_util.h"

#define S        32 /* image side */
#define N_IMAGES 16

static struct cxr_nn_model *tiny_model(enum cxr_nn_arch arch, int32_t width, uint64_t seed)
{
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, arch);
    meta.input_height = meta.input_width = S;
    struct cxr_nn_model *m = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_nn_model_init_width(&meta, width, seed, &m, err) == CXR_OK, "%s", err);
    return m;
}

static struct cxr_nn_backend *cpu_prec(enum cxr_nn_precision prec)
{
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_CPU, .precision = prec, .threads = 2};
    struct cxr_nn_backend *b = NULL;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_nn_backend_open(&o, &b, NULL, err);
    if (st == CXR_ERR_UNSUPPORTED && prec == CXR_NN_PRECISION_BF16) {
        printf("SKIP bf16: %s\n", err);
        return NULL;
    }
    ck_assert_msg(st == CXR_OK, "%s", err);
    return b;
}

static struct cxr_nn_backend *cpu(void) { return cpu_prec(CXR_NN_PRECISION_FP32); }

/* Class 0: stripes across; class 1: stripes down; random phase, period and
 * noise per image, normalised roughly to the model's range. */
static void synth(float *x, int32_t *y)
{
    uint64_t s = 12345;
    for (int i = 0; i < N_IMAGES; i++) {
        y[i] = i % 2;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double phase = (double)(s >> 40) / 16777216.0 * 6.28;
        double period = 4.0 + (double)((s >> 20) & 7);
        for (int r = 0; r < S; r++)
            for (int c = 0; c < S; c++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                double noise = ((double)(s >> 11) / 9007199254740992.0 - 0.5) * 0.6;
                double t = y[i] ? c : r;
                x[(size_t)i * S * S + (size_t)r * S + c] =
                    (float)(sin(2 * M_PI * t / period + phase) * 1.5 + noise);
            }
    }
}

/* Accuracy of the exported model through the inference path. */
static int inference_correct(struct cxr_nn_backend *b, const struct cxr_nn_model *m, const float *x,
                             const int32_t *y)
{
    struct cxr_nn_net *net = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_nn_net_new(b, m, N_IMAGES, &net, err) == CXR_OK, "%s", err);
    float logits[N_IMAGES * 2];
    ck_assert_int_eq(cxr_nn_net_forward(net, x, N_IMAGES, logits), CXR_OK);
    int ok = 0;
    for (int i = 0; i < N_IMAGES; i++)
        ok += (logits[2 * i + 1] > logits[2 * i]) == (y[i] == 1);
    cxr_nn_net_free(net);
    return ok;
}

struct overfit_case {
    const char *name;
    enum cxr_nn_optimizer opt;
    bool freeze;
    double lr;
    int epochs;
    bool bf16;
};
static const struct overfit_case overfit_cases[] = {
    {"adamw, one-cycle", CXR_NN_OPTIMIZER_ADAMW, false, 1e-2, 12, false},
    {"sgd nesterov, one-cycle", CXR_NN_OPTIMIZER_SGD, false, 5e-2, 12, false},
    {"frozen backbone, adamw", CXR_NN_OPTIMIZER_ADAMW, true, 5e-2, 30, false},
    {"bf16, adamw, one-cycle", CXR_NN_OPTIMIZER_ADAMW, false, 1e-2, 12, true},
};

START_TEST(test_overfit)
{
    const struct overfit_case *oc = &overfit_cases[_i];
    float *x = malloc(sizeof(float) * N_IMAGES * S * S);
    int32_t y[N_IMAGES];
    synth(x, y);
    struct cxr_nn_backend *b = cpu_prec(oc->bf16 ? CXR_NN_PRECISION_BF16 : CXR_NN_PRECISION_FP32);
    if (!b) {
        free(x);
        return;
    }
    struct cxr_nn_model *m = tiny_model(CXR_NN_ARCH_RESNET18, 8, 3);
    const int batch = 8, steps_per_epoch = N_IMAGES / batch;
    struct cxr_nn_trainer_options o;
    cxr_nn_trainer_options_defaults(&o);
    o.optimizer = oc->opt;
    o.nesterov = oc->opt == CXR_NN_OPTIMIZER_SGD;
    o.lr = oc->lr;
    o.freeze_backbone = oc->freeze;
    o.total_steps = oc->epochs * steps_per_epoch;
    o.max_batch = batch;
    struct cxr_nn_trainer *tr = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_nn_trainer_new(b, m, &o, &tr, err) == CXR_OK, "%s", err);
    int before = inference_correct(b, m, x, y);
    double first = 0, last = 0;
    int last_correct = 0;
    for (int e = 0; e < oc->epochs; e++) {
        double loss = 0;
        int correct = 0;
        for (int k = 0; k < steps_per_epoch; k++) {
            /* a different pairing of images each epoch */
            int32_t idx[8], yy[8];
            float xb[8 * S * S];
            for (int j = 0; j < batch; j++) {
                idx[j] = (k * batch + j + e * 3) % N_IMAGES;
                yy[j] = y[idx[j]];
                memcpy(xb + (size_t)j * S * S, x + (size_t)idx[j] * S * S, sizeof(float) * S * S);
            }
            struct cxr_nn_step_stats st;
            ck_assert_msg(cxr_nn_trainer_step(tr, xb, yy, batch, &st) == CXR_OK, "%s",
                          cxr_nn_trainer_last_error(tr));
            loss += st.loss / steps_per_epoch;
            correct += st.correct;
        }
        if (e == 0)
            first = loss;
        last = loss;
        last_correct = correct;
    }
    ck_assert_int_eq(cxr_nn_trainer_steps(tr), o.total_steps);
    ck_assert_int_eq(cxr_nn_trainer_export(tr, m, err), CXR_OK);
    int after = inference_correct(b, m, x, y);
    printf("%-26s loss %.4f -> %.4f, last epoch %d/%d, inference %d/%d before, %d/%d after\n",
           oc->name, first, last, last_correct, N_IMAGES, before, N_IMAGES, after, N_IMAGES);
    ck_assert_msg(last < 0.5 * first, "%s: loss %.4f -> %.4f did not fall", oc->name, first, last);
    ck_assert_int_eq(last_correct, N_IMAGES);
    ck_assert_int_eq(after, N_IMAGES);
    cxr_nn_trainer_free(tr);
    cxr_nn_model_free(m);
    cxr_nn_backend_close(b);
    free(x);
}
END_TEST

/* ------------------------------------------------------------ checkpoints */

static void params_of(struct cxr_nn_trainer *tr, struct cxr_nn_model *m)
{
    char err[CXR_ERRLEN] = "";
    ck_assert_int_eq(cxr_nn_trainer_export(tr, m, err), CXR_OK);
}

static bool models_equal(const struct cxr_nn_model *a, const struct cxr_nn_model *b, bool say)
{
    for (uint32_t i = 0; i < cxr_nn_model_tensor_count(a); i++) {
        const struct cxr_nn_tensor *t = cxr_nn_model_tensor_at(a, i);
        const struct cxr_nn_tensor *u = cxr_nn_model_tensor_find(b, t->name);
        if (!u || u->nbytes != t->nbytes || memcmp(t->data, u->data, t->nbytes) != 0) {
            if (say)
                printf("differs: %s\n", t->name);
            return false;
        }
    }
    return true;
}

static void run_steps(struct cxr_nn_trainer *tr, const float *x, const int32_t *y, int from, int to)
{
    for (int k = from; k < to; k++) {
        int off = (k * 4) % N_IMAGES;
        ck_assert_msg(cxr_nn_trainer_step(tr, x + (size_t)off * S * S, y + off, 4, NULL) == CXR_OK,
                      "%s", cxr_nn_trainer_last_error(tr));
    }
}

START_TEST(test_checkpoint_resume_exact)
{
    for (int optk = 0; optk < 2; optk++) {
        float *x = malloc(sizeof(float) * N_IMAGES * S * S);
        int32_t y[N_IMAGES];
        synth(x, y);
        struct cxr_nn_backend *b = cpu();
        struct cxr_nn_model *m0 = tiny_model(CXR_NN_ARCH_RESNET18, 4, 5);
        struct cxr_nn_model *ma = tiny_model(CXR_NN_ARCH_RESNET18, 4, 5);
        struct cxr_nn_model *mb = tiny_model(CXR_NN_ARCH_RESNET18, 4, 5);
        struct cxr_nn_trainer_options o;
        cxr_nn_trainer_options_defaults(&o);
        o.optimizer = optk ? CXR_NN_OPTIMIZER_SGD : CXR_NN_OPTIMIZER_ADAMW;
        o.total_steps = 6;
        o.max_batch = 4;
        char err[CXR_ERRLEN] = "", *dir = cxr_test_tmpdir(), path[4096];
        snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
        struct cxr_nn_trainer *t1 = NULL, *t2 = NULL;
        ck_assert_int_eq(cxr_nn_trainer_new(b, m0, &o, &t1, err), CXR_OK);
        run_steps(t1, x, y, 0, 3);
        ck_assert_msg(
            cxr_nn_trainer_checkpoint_save(t1, path, "{\"epoch\":2,\"note\":\"x\"}", err) == CXR_OK,
            "%s", err);
        run_steps(t1, x, y, 3, 6);
        params_of(t1, ma);

        /* a fresh trainer from the starting model, resumed */
        ck_assert_int_eq(cxr_nn_trainer_new(b, m0, &o, &t2, err), CXR_OK);
        char *extra = NULL;
        ck_assert_msg(cxr_nn_trainer_checkpoint_load(t2, path, &extra, err) == CXR_OK, "%s", err);
        ck_assert_str_eq(extra, "{\"epoch\":2,\"note\":\"x\"}");
        free(extra);
        ck_assert_int_eq(cxr_nn_trainer_steps(t2), 3);
        ck_assert(fabs(cxr_nn_trainer_next_lr(t2) - cxr_nn_trainer_next_lr(t2)) == 0);
        run_steps(t2, x, y, 3, 6);
        params_of(t2, mb);
        ck_assert_msg(models_equal(ma, mb, true), "resumed run differs from the uninterrupted one");
        ck_assert(!models_equal(m0, mb, false));
        cxr_nn_trainer_free(t1);
        cxr_nn_trainer_free(t2);
        cxr_test_rmtree(dir);
        free(dir);
        cxr_nn_model_free(m0);
        cxr_nn_model_free(ma);
        cxr_nn_model_free(mb);
        cxr_nn_backend_close(b);
        free(x);
    }
}
END_TEST

START_TEST(test_checkpoint_refused)
{
    struct cxr_nn_backend *b = cpu();
    struct cxr_nn_model *m = tiny_model(CXR_NN_ARCH_RESNET18, 4, 5);
    struct cxr_nn_model *m8 = tiny_model(CXR_NN_ARCH_RESNET18, 8, 5);
    struct cxr_nn_trainer_options o;
    cxr_nn_trainer_options_defaults(&o);
    o.total_steps = 4;
    o.max_batch = 4;
    char err[CXR_ERRLEN] = "", *dir = cxr_test_tmpdir(), path[4096], bad[4096];
    snprintf(path, sizeof path, "%s/c.safetensors", dir);
    struct cxr_nn_trainer *t = NULL, *u = NULL;
    ck_assert_int_eq(cxr_nn_trainer_new(b, m, &o, &t, err), CXR_OK);
    ck_assert_int_eq(cxr_nn_trainer_checkpoint_save(t, path, NULL, err), CXR_OK);
    /* another width */
    ck_assert_int_eq(cxr_nn_trainer_new(b, m8, &o, &u, err), CXR_OK);
    ck_assert_int_eq(cxr_nn_trainer_checkpoint_load(u, path, NULL, err), CXR_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "base_width"), "%s", err);
    cxr_nn_trainer_free(u);
    /* another optimizer */
    o.optimizer = CXR_NN_OPTIMIZER_SGD;
    ck_assert_int_eq(cxr_nn_trainer_new(b, m, &o, &u, err), CXR_OK);
    ck_assert_int_eq(cxr_nn_trainer_checkpoint_load(u, path, NULL, err), CXR_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "optimizer"), "%s", err);
    cxr_nn_trainer_free(u);
    /* truncated: the data of the last tensor is missing */
    size_t len = 0;
    unsigned char *buf = cxr_test_read_file(path, &len);
    snprintf(bad, sizeof bad, "%s/cut.safetensors", dir);
    ck_assert(cxr_test_write_file(bad, buf, len - 100));
    ck_assert_int_eq(cxr_nn_trainer_checkpoint_load(t, bad, NULL, err), CXR_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "inside the file"), "%s", err);
    /* a model file is not a checkpoint */
    ck_assert_int_eq(cxr_nn_model_save(m, bad, CXR_NN_DTYPE_F32, err), CXR_OK);
    ck_assert_int_eq(cxr_nn_trainer_checkpoint_load(t, bad, NULL, err), CXR_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "not a cxr-triage checkpoint"), "%s", err);
    snprintf(bad, sizeof bad, "%s/none.safetensors", dir);
    ck_assert_int_eq(cxr_nn_trainer_checkpoint_load(t, bad, NULL, err), CXR_ERR_NOT_FOUND);
    /* no temporary file left behind by the saves */
    ck_assert_int_eq(cxr_test_sh("ls %s | grep -q tmp-", dir) == 0, 0);
    free(buf);
    cxr_nn_trainer_free(t);
    cxr_test_rmtree(dir);
    free(dir);
    cxr_nn_model_free(m);
    cxr_nn_model_free(m8);
    cxr_nn_backend_close(b);
}
END_TEST

START_TEST(test_bad_steps)
{
    float *x = malloc(sizeof(float) * N_IMAGES * S * S);
    int32_t y[N_IMAGES];
    synth(x, y);
    struct cxr_nn_backend *b = cpu();
    struct cxr_nn_model *m = tiny_model(CXR_NN_ARCH_RESNET18, 4, 5);
    struct cxr_nn_model *after = tiny_model(CXR_NN_ARCH_RESNET18, 4, 5);
    struct cxr_nn_trainer_options o;
    cxr_nn_trainer_options_defaults(&o);
    o.schedule = CXR_NN_SCHEDULE_CONSTANT;
    o.max_batch = 4;
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_trainer *t = NULL;
    ck_assert_int_eq(cxr_nn_trainer_new(b, m, &o, &t, err), CXR_OK);
    int32_t bad[4] = {0, 1, 2, 0};
    ck_assert_int_eq(cxr_nn_trainer_step(t, x, bad, 4, NULL), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_trainer_step(t, x, y, 5, NULL), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_nn_trainer_step(t, x, y, 0, NULL), CXR_ERR_INVALID_ARG);
    /* an input that overflows: the step fails, parameters stay */
    float *huge = malloc(sizeof(float) * 4 * S * S);
    for (int i = 0; i < 4 * S * S; i++)
        huge[i] = (i % 3) ? 3e38f : -3e38f;
    enum cxr_status st = cxr_nn_trainer_step(t, huge, y, 4, NULL);
    ck_assert_int_eq(st, CXR_ERR_NN_BACKEND);
    ck_assert_msg(strstr(cxr_nn_trainer_last_error(t), "diverged"), "%s",
                  cxr_nn_trainer_last_error(t));
    ck_assert_int_eq(cxr_nn_trainer_steps(t), 0);
    ck_assert_int_eq(cxr_nn_trainer_export(t, after, err), CXR_OK);
    for (uint32_t i = 0; i < cxr_nn_model_tensor_count(m); i++) {
        const struct cxr_nn_tensor *u = cxr_nn_model_tensor_at(m, i);
        if (strstr(u->name, "running") || strstr(u->name, "num_batches"))
            continue; /* the forward pass updated them, as PyTorch's would */
        ck_assert_msg(!memcmp(u->data, cxr_nn_model_tensor_find(after, u->name)->data, u->nbytes),
                      "%s changed", u->name);
    }
    /* options */
    struct cxr_nn_trainer *u = NULL;
    o.lr = -1;
    ck_assert_int_eq(cxr_nn_trainer_new(b, m, &o, &u, err), CXR_ERR_INVALID_ARG);
    ck_assert_ptr_null(u);
    cxr_nn_trainer_options_defaults(&o);
    o.total_steps = 0; /* one-cycle needs a length */
    ck_assert_int_eq(cxr_nn_trainer_new(b, m, &o, &u, err), CXR_ERR_INVALID_ARG);
    free(huge);
    free(x);
    cxr_nn_trainer_free(t);
    cxr_nn_model_free(m);
    cxr_nn_model_free(after);
    cxr_nn_backend_close(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_train_loop");
    TCase *tc = tcase_create("overfit");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_overfit, 0, sizeof overfit_cases / sizeof overfit_cases[0]);
    suite_add_tcase(s, tc);
    tc = tcase_create("checkpoint");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_checkpoint_resume_exact);
    tcase_add_test(tc, test_checkpoint_refused);
    tcase_add_test(tc, test_bad_steps);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
