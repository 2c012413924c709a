/* check_nn_train_optim.c — the numbers around a training step:
 *   - the weighted softmax cross-entropy against long-double arithmetic, its
 *     gradient against finite differences, class weights as
 *     F.cross_entropy's weighted mean, bad labels and weights refused;
 *   - balanced class weights;
 *   - the optimizer arithmetic (AdamW with weight decay and clipping scale,
 *     SGD with and without nesterov) against a double transcription of
 *     PyTorch 1.13's update over several steps;
 *   - OneCycleLR's lr and momentum at known steps; clip_grad_norm_'s factor.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../nn/src/train_internal.h"
#include "cxr/nn.h"
#include "cxr/nn_trainer.h"
#include "test_util.h"

static double urand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0;
}

/* Weighted mean cross-entropy in double. */
static double ref_loss(const double *logits, const int32_t *labels, int32_t n, int32_t k,
                       const float *w)
{
    double num = 0, den = 0;
    for (int32_t i = 0; i < n; i++) {
        const double *x = logits + (size_t)i * k;
        double mx = x[0], z = 0;
        for (int32_t c = 1; c < k; c++)
            mx = x[c] > mx ? x[c] : mx;
        for (int32_t c = 0; c < k; c++)
            z += exp(x[c] - mx);
        double wi = w ? w[labels[i]] : 1.0;
        num += wi * (log(z) + mx - x[labels[i]]);
        den += wi;
    }
    return num / den;
}

/* ------------------------------------------------------------ loss */

START_TEST(test_loss)
{
    /* rows with large logits (stability), a tie, weights */
    const float x[4 * 3] = {1.0f, 2.0f, -1.0f, 80.0f, -80.0f, 0.5f,
                            0.0f, 0.0f, 0.0f,  -3.0f, 4.0f,   4.0f};
    const int32_t y[4] = {1, 0, 2, 1};
    const float w[3] = {0.25f, 3.0f, 1.0f};
    for (int weighted = 0; weighted < 2; weighted++) {
        const float *cw = weighted ? w : NULL;
        float d[12];
        double loss;
        int32_t correct;
        ck_assert_int_eq(cxr_nn_loss_cross_entropy(x, y, 4, 3, cw, d, &loss, &correct), CXR_OK);
        long double num = 0, den = 0;
        for (int i = 0; i < 4; i++) {
            long double mx = x[i * 3];
            for (int c = 1; c < 3; c++)
                mx = x[i * 3 + c] > mx ? x[i * 3 + c] : mx;
            long double z = 0;
            for (int c = 0; c < 3; c++)
                z += expl(x[i * 3 + c] - mx);
            long double wi = cw ? cw[y[i]] : 1.0L;
            num += wi * (logl(z) + mx - x[i * 3 + y[i]]);
            den += wi;
        }
        ck_assert_msg(fabs(loss - (double)(num / den)) < 1e-12, "loss %.15f vs %.15Lf", loss,
                      num / den);
        ck_assert_int_eq(correct, 3); /* row 2 (ties) argmax 0 != 2; row 3 tie 1 == 1 */
        /* gradient against finite differences (double evaluation) */
        for (int j = 0; j < 12; j++) {
            double xp[12], xm[12];
            for (int q = 0; q < 12; q++)
                xp[q] = xm[q] = x[q];
            xp[j] += 1e-6;
            xm[j] -= 1e-6;
            double fd = (ref_loss(xp, y, 4, 3, cw) - ref_loss(xm, y, 4, 3, cw)) / 2e-6;
            ck_assert_msg(fabs(d[j] - fd) < 1e-6, "dlogit %d: %g vs %g", j, (double)d[j], fd);
        }
    }
    int32_t bad[1] = {3};
    ck_assert_int_eq(cxr_nn_loss_cross_entropy(x, bad, 1, 3, NULL, NULL, NULL, NULL),
                     CXR_ERR_INVALID_ARG);
    const float zero[3] = {0, 0, 0};
    ck_assert_int_eq(cxr_nn_loss_cross_entropy(x, y, 1, 3, zero, NULL, NULL, NULL),
                     CXR_ERR_INVALID_ARG);
    const float inf[3] = {INFINITY, 0, 0};
    ck_assert_int_eq(cxr_nn_loss_cross_entropy(inf, y, 1, 3, NULL, NULL, NULL, NULL),
                     CXR_ERR_NN_BACKEND);
}
END_TEST

START_TEST(test_class_weights)
{
    const int64_t counts[3] = {1341, 3875, 0};
    float w[3];
    cxr_nn_class_weights_balanced(counts, 3, w);
    /* w_c = N / (K' n_c): the weighted counts are equal and average 1 */
    ck_assert(fabs(w[0] * 1341.0 - w[1] * 3875.0) < 1e-2);
    ck_assert(fabs((w[0] * 1341.0 + w[1] * 3875.0) / 5216.0 - 1.0) < 1e-6);
    ck_assert_float_eq(w[2], 0.0f);
}
END_TEST

/* ------------------------------------------------------------ optimizers */

/* PyTorch 1.13's _single_tensor_adamw / sgd, transcribed in double. */
static void torch_adamw(double *p, double g, double *m, double *v, int64_t step, double lr,
                        double b1, double b2, double eps, double wd)
{
    *p *= 1 - lr * wd;
    *m = *m * b1 + (1 - b1) * g;
    *v = *v * b2 + (1 - b2) * g * g;
    double bc1 = 1 - pow(b1, (double)step), bc2 = 1 - pow(b2, (double)step);
    double denom = sqrt(*v) / sqrt(bc2) + eps;
    *p -= lr / bc1 * *m / denom;
}

START_TEST(test_optim_adamw)
{
    enum { N = 257 };
    float p[N], g[N], m[N] = {0}, v[N] = {0};
    double rp[N], rm[N] = {0}, rv[N] = {0};
    uint64_t s = 9;
    for (int i = 0; i < N; i++) {
        p[i] = (float)(urand(&s) - 0.5);
        rp[i] = p[i];
    }
    for (int64_t step = 1; step <= 5; step++) {
        double lr = 1e-2 * (double)step, b1 = 0.95 - 0.02 * (double)step, scale = 0.7;
        for (int i = 0; i < N; i++)
            g[i] = (float)((urand(&s) - 0.5) * (i % 7 == 0 ? 1e-6 : 1.0));
        struct cxr_nn_optim_step h = {.kind = CXR_NN_OPTIM_ADAMW,
                                      .step = step,
                                      .lr = lr,
                                      .weight_decay = 0.05,
                                      .beta1 = b1,
                                      .beta2 = 0.999,
                                      .eps = 1e-8,
                                      .grad_scale = scale};
        cxr_nn_optim_apply(&h, p, g, m, v, N);
        for (int i = 0; i < N; i++)
            torch_adamw(&rp[i], (double)g[i] * scale, &rm[i], &rv[i], step, lr, b1, 0.999, 1e-8,
                        0.05);
    }
    for (int i = 0; i < N; i++)
        ck_assert_msg(fabs(p[i] - rp[i]) < 1e-6, "p[%d] %.9g vs %.9g", i, (double)p[i], rp[i]);
}
END_TEST

START_TEST(test_optim_sgd)
{
    for (int nesterov = 0; nesterov < 2; nesterov++) {
        enum { N = 33 };
        float p[N], g[N], b[N] = {0};
        double rp[N], rb[N] = {0};
        uint64_t s = 11;
        for (int i = 0; i < N; i++)
            rp[i] = p[i] = (float)(urand(&s) - 0.5);
        for (int64_t step = 1; step <= 4; step++) {
            for (int i = 0; i < N; i++)
                g[i] = (float)(urand(&s) - 0.5);
            struct cxr_nn_optim_step h = {.kind = CXR_NN_OPTIM_SGD,
                                          .step = step,
                                          .lr = 0.1,
                                          .weight_decay = 1e-3,
                                          .momentum = 0.9,
                                          .nesterov = nesterov,
                                          .grad_scale = 1.0};
            cxr_nn_optim_apply(&h, p, g, b, NULL, N);
            for (int i = 0; i < N; i++) {
                double d = g[i] + 1e-3 * rp[i];
                rb[i] = step == 1 ? d : 0.9 * rb[i] + d;
                rp[i] -= 0.1 * (nesterov ? d + 0.9 * rb[i] : rb[i]);
            }
        }
        for (int i = 0; i < N; i++)
            ck_assert_msg(fabs(p[i] - rp[i]) < 1e-6, "nesterov %d p[%d]", nesterov, i);
    }
}
END_TEST

/* OneCycleLR(max_lr=0.01, total_steps=10) defaults, values printed by
 * torch 1.13 for steps 0..9 (lr; beta1 cycling 0.95 -> 0.85 -> 0.95) are
 * reproduced from torch's formula here: phase ends at 0.3*10-1 = 2. */
START_TEST(test_onecycle)
{
    struct cxr_nn_onecycle s = {.max_lr = 0.01,
                                .total_steps = 10,
                                .pct_start = 0.3,
                                .div_factor = 25,
                                .final_div_factor = 1e4,
                                .base_momentum = 0.85,
                                .max_momentum = 0.95};
    double lr, mom;
    cxr_nn_onecycle_at(&s, 0, &lr, &mom);
    ck_assert(fabs(lr - 0.0004) < 1e-15 && fabs(mom - 0.95) < 1e-15);
    cxr_nn_onecycle_at(&s, 2, &lr, &mom);
    ck_assert(fabs(lr - 0.01) < 1e-15 && fabs(mom - 0.85) < 1e-15);
    cxr_nn_onecycle_at(&s, 1, &lr, &mom); /* half-way up: mean of the ends */
    ck_assert(fabs(lr - (0.0004 + 0.01) / 2) < 1e-15 && fabs(mom - 0.90) < 1e-12);
    cxr_nn_onecycle_at(&s, 9, &lr, &mom);
    ck_assert(fabs(lr - 0.0004 / 1e4) < 1e-18 && fabs(mom - 0.95) < 1e-15);
    /* step 5: pct (5-2)/(9-2) of the cos anneal from max to min */
    cxr_nn_onecycle_at(&s, 5, &lr, &mom);
    double pct = 3.0 / 7.0, min = 0.0004 / 1e4;
    ck_assert(fabs(lr - (min + (0.01 - min) / 2 * (cos(M_PI * pct) + 1))) < 1e-15);
    cxr_nn_onecycle_at(&s, 50, &lr, NULL); /* held past the end */
    ck_assert(fabs(lr - min) < 1e-18);
}
END_TEST

START_TEST(test_clip_factor)
{
    ck_assert(cxr_nn_clip_factor(0.5, 1.0) == 1.0);
    ck_assert(fabs(cxr_nn_clip_factor(4.0, 1.0) - 1.0 / (4.0 + 1e-6)) < 1e-15);
    ck_assert(cxr_nn_clip_factor(1e9, 0.0) == 1.0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_train_optim");
    TCase *tc = tcase_create("loss_optim");
    tcase_add_test(tc, test_loss);
    tcase_add_test(tc, test_class_weights);
    tcase_add_test(tc, test_optim_adamw);
    tcase_add_test(tc, test_optim_sgd);
    tcase_add_test(tc, test_onecycle);
    tcase_add_test(tc, test_clip_factor);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
