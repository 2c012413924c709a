/* metrics.c — binary classification metrics for validation and evaluation:
 * confusion matrix and rates at a threshold, ROC curve, AUC as the
 * Mann-Whitney statistic (ties count 1/2), thresholds for a target
 * sensitivity or specificity, percentile bootstrap intervals, and the
 * calibration of the operating and urgent thresholds. */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/nn_train.h"
#include "model_internal.h"

#define MIN_RESAMPLES 100
#define MAX_RESAMPLES 1000000

void cxr_nn_confusion_at(const double *scores, const uint8_t *labels, size_t n, double threshold,
                         struct cxr_nn_confusion *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        bool pred = scores[i] >= threshold;
        if (labels[i])
            pred ? out->tp++ : out->fn++;
        else
            pred ? out->fp++ : out->tn++;
    }
}

static double ratio(int64_t a, int64_t b) { return b > 0 ? (double)a / (double)b : NAN; }

void cxr_nn_rates_of(const struct cxr_nn_confusion *c, struct cxr_nn_rates *out)
{
    out->sensitivity = ratio(c->tp, c->tp + c->fn);
    out->specificity = ratio(c->tn, c->tn + c->fp);
    out->accuracy = ratio(c->tp + c->tn, c->tp + c->tn + c->fp + c->fn);
    out->ppv = ratio(c->tp, c->tp + c->fp);
    out->npv = ratio(c->tn, c->tn + c->fn);
}

/* ---- sorting by score (qsort with a context-free comparator over pairs) */

struct scored {
    double score;
    uint8_t label;
    uint32_t index;
};

static int cmp_desc(const void *a, const void *b)
{
    const struct scored *x = a, *y = b;
    if (x->score > y->score)
        return -1;
    if (x->score < y->score)
        return 1;
    return (x->index > y->index) - (x->index < y->index); /* stable, deterministic */
}

/* A copy of the cases sorted by score, descending. NULL on OOM or when a
 * score is NaN (*nan set). */
static struct scored *sorted_desc(const double *scores, const uint8_t *labels, size_t n, bool *nan,
                                  int64_t *pos, int64_t *neg)
{
    *nan = false;
    *pos = *neg = 0;
    struct scored *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (isnan(scores[i])) {
            *nan = true;
            free(v);
            return NULL;
        }
        v[i].score = scores[i];
        v[i].label = labels[i] ? 1 : 0;
        v[i].index = (uint32_t)i;
        v[i].label ? (*pos)++ : (*neg)++;
    }
    qsort(v, n, sizeof *v, cmp_desc);
    return v;
}

double cxr_nn_auc(const double *scores, const uint8_t *labels, size_t n)
{
    bool nan;
    int64_t pos, neg;
    if (n == 0 || n > UINT32_MAX)
        return NAN;
    struct scored *v = sorted_desc(scores, labels, n, &nan, &pos, &neg);
    if (!v)
        return NAN;
    if (pos == 0 || neg == 0) {
        free(v);
        return NAN;
    }
    /* Walk tie groups from the lowest score up: each positive beats the
     * negatives below its group and ties with those inside it. */
    double wins = 0.0;
    int64_t neg_below = 0;
    size_t j = n;
    while (j > 0) {
        size_t i = j;
        while (i > 0 && v[i - 1].score == v[j - 1].score)
            i--;
        int64_t gp = 0, gn = 0;
        for (size_t k = i; k < j; k++)
            v[k].label ? gp++ : gn++;
        wins += (double)gp * ((double)neg_below + 0.5 * (double)gn);
        neg_below += gn;
        j = i;
    }
    free(v);
    return wins / ((double)pos * (double)neg);
}

void cxr_nn_roc_release(struct cxr_nn_roc *roc)
{
    if (!roc)
        return;
    free(roc->fpr);
    free(roc->tpr);
    free(roc->threshold);
    memset(roc, 0, sizeof *roc);
}

enum cxr_status cxr_nn_roc_compute(const double *scores, const uint8_t *labels, size_t n,
                                   struct cxr_nn_roc *out, char *err)
{
    memset(out, 0, sizeof *out);
    bool nan;
    int64_t pos, neg;
    if (n == 0 || n > UINT32_MAX)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "ROC: %zu cases", n);
    struct scored *v = sorted_desc(scores, labels, n, &nan, &pos, &neg);
    if (!v)
        return nan ? cxr_seterr(err, CXR_ERR_INVALID_ARG, "ROC: a score is NaN")
                   : cxr_seterr(err, CXR_ERR_NOMEM, "ROC: out of memory");
    if (pos == 0 || neg == 0) {
        free(v);
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "ROC: needs both classes (%lld positive, %lld negative cases)",
                          (long long)pos, (long long)neg);
    }
    out->fpr = malloc((n + 1) * sizeof(double));
    out->tpr = malloc((n + 1) * sizeof(double));
    out->threshold = malloc((n + 1) * sizeof(double));
    if (!out->fpr || !out->tpr || !out->threshold) {
        free(v);
        cxr_nn_roc_release(out);
        return cxr_seterr(err, CXR_ERR_NOMEM, "ROC: out of memory");
    }
    out->positives = pos;
    out->negatives = neg;
    out->fpr[0] = out->tpr[0] = 0.0;
    out->threshold[0] = INFINITY;
    size_t m = 1;
    int64_t tp = 0, fp = 0;
    double area = 0.0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && v[j].score == v[i].score) {
            v[j].label ? tp++ : fp++;
            j++;
        }
        out->fpr[m] = (double)fp / (double)neg;
        out->tpr[m] = (double)tp / (double)pos;
        out->threshold[m] = v[i].score;
        area += (out->fpr[m] - out->fpr[m - 1]) * 0.5 * (out->tpr[m] + out->tpr[m - 1]);
        m++;
        i = j;
    }
    out->count = m;
    out->auc = area;
    free(v);
    return CXR_OK;
}

/* tp/P >= target, tolerant of the rounding in target (0.95 * 20 = 19). */
static bool reaches(int64_t count, int64_t total, double target)
{
    return (double)count >= target * (double)total - 1e-9;
}

double cxr_nn_threshold_for_sensitivity(const double *scores, const uint8_t *labels, size_t n,
                                        double target)
{
    bool nan;
    int64_t pos, neg;
    if (n == 0 || n > UINT32_MAX)
        return NAN;
    struct scored *v = sorted_desc(scores, labels, n, &nan, &pos, &neg);
    if (!v)
        return NAN;
    double thr = NAN;
    if (pos > 0) {
        int64_t tp = 0;
        for (size_t i = 0; i < n;) {
            size_t j = i;
            while (j < n && v[j].score == v[i].score)
                tp += v[j++].label;
            if (reaches(tp, pos, target)) {
                thr = v[i].score;
                break;
            }
            i = j;
        }
        if (isnan(thr)) /* target > 1: the lowest score is as far as one can go */
            thr = v[n - 1].score;
    }
    free(v);
    return thr;
}

double cxr_nn_threshold_for_specificity(const double *scores, const uint8_t *labels, size_t n,
                                        double target)
{
    bool nan;
    int64_t pos, neg;
    if (n == 0 || n > UINT32_MAX)
        return NAN;
    struct scored *v = sorted_desc(scores, labels, n, &nan, &pos, &neg);
    if (!v)
        return NAN;
    double thr = NAN;
    if (neg > 0) {
        /* Ascending: at threshold = the score of group g, the negatives
         * strictly below g are the true negatives. */
        int64_t tn = 0;
        size_t j = n;
        while (j > 0) {
            size_t i = j;
            while (i > 0 && v[i - 1].score == v[j - 1].score)
                i--;
            if (reaches(tn, neg, target)) {
                thr = v[j - 1].score;
                break;
            }
            for (size_t k = i; k < j; k++)
                tn += !v[k].label;
            j = i;
        }
        if (isnan(thr))
            thr = nextafter(v[0].score, INFINITY);
    }
    free(v);
    return thr;
}

/* ---- bootstrap */

/* numpy's default (linear) percentile of sorted values. */
static double percentile(const double *sorted, size_t m, double q)
{
    if (m == 0)
        return NAN;
    double pos = q * (double)(m - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < m ? lo + 1 : lo;
    double frac = pos - (double)lo;
    return sorted[lo] + frac * (sorted[hi] - sorted[lo]);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void ci_from(double *vals, size_t m, struct cxr_nn_ci *ci)
{
    qsort(vals, m, sizeof *vals, cmp_double);
    ci->lo = percentile(vals, m, 0.025);
    ci->hi = percentile(vals, m, 0.975);
}

enum cxr_status cxr_nn_evaluate(const double *scores, const uint8_t *labels, size_t n,
                                double threshold, int32_t resamples, uint64_t seed,
                                struct cxr_nn_eval *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0 || n > UINT32_MAX)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "evaluate: %zu cases", n);
    if (resamples != 0 && (resamples < MIN_RESAMPLES || resamples > MAX_RESAMPLES))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "evaluate: %d bootstrap resamples (0 or %d..%d)", (int)resamples,
                          MIN_RESAMPLES, MAX_RESAMPLES);
    if (isnan(threshold))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "evaluate: the threshold is NaN");
    bool nan;
    int64_t pos, neg;
    struct scored *v = sorted_desc(scores, labels, n, &nan, &pos, &neg);
    if (!v)
        return nan ? cxr_seterr(err, CXR_ERR_INVALID_ARG, "evaluate: a score is NaN")
                   : cxr_seterr(err, CXR_ERR_NOMEM, "evaluate: out of memory");

    out->threshold = threshold;
    out->n = n;
    out->positives = pos;
    out->negatives = neg;
    out->resamples = resamples;
    out->seed = seed;
    cxr_nn_confusion_at(scores, labels, n, threshold, &out->cm);
    struct cxr_nn_rates r;
    cxr_nn_rates_of(&out->cm, &r);
    out->auc.value = cxr_nn_auc(scores, labels, n);
    out->sensitivity.value = r.sensitivity;
    out->specificity.value = r.specificity;
    out->accuracy.value = r.accuracy;
    out->ppv.value = r.ppv;
    out->npv.value = r.npv;
    struct cxr_nn_ci *cis[6] = {&out->auc,      &out->sensitivity, &out->specificity,
                                &out->accuracy, &out->ppv,         &out->npv};
    for (int k = 0; k < 6; k++)
        cis[k]->lo = cis[k]->hi = NAN;
    if (resamples == 0) {
        free(v);
        return CXR_OK;
    }

    /* Group starts of tied scores in the descending order, and each sorted
     * case's draw count per resample. */
    uint32_t *w = calloc(n, sizeof *w);
    uint32_t *at = malloc(n * sizeof *at); /* original index → sorted position */
    double *vals[6] = {0};
    size_t m[6] = {0};
    enum cxr_status st = CXR_OK;
    if (!w || !at) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "bootstrap: out of memory");
        goto fail;
    }
    for (int k = 0; k < 6; k++)
        if (!(vals[k] = malloc((size_t)resamples * sizeof(double)))) {
            st = cxr_seterr(err, CXR_ERR_NOMEM, "bootstrap: out of memory");
            goto fail;
        }
    for (size_t i = 0; i < n; i++)
        at[v[i].index] = (uint32_t)i;

    struct cxr_nn_rng rng;
    cxr_nn_rng_seed(&rng, seed);
    for (int32_t b = 0; b < resamples; b++) {
        memset(w, 0, n * sizeof *w);
        for (size_t d = 0; d < n; d++)
            w[at[cxr_nn_rng_below(&rng, n)]]++;
        /* One pass from the lowest score up: AUC (ties 1/2) and the matrix. */
        struct cxr_nn_confusion c = {0};
        double wins = 0.0;
        int64_t neg_below = 0, p_tot = 0, n_tot = 0;
        size_t j = n;
        while (j > 0) {
            size_t i = j;
            while (i > 0 && v[i - 1].score == v[j - 1].score)
                i--;
            int64_t gp = 0, gn = 0;
            for (size_t k = i; k < j; k++)
                v[k].label ? (gp += w[k]) : (gn += w[k]);
            wins += (double)gp * ((double)neg_below + 0.5 * (double)gn);
            neg_below += gn;
            p_tot += gp;
            n_tot += gn;
            if (v[i].score >= threshold) {
                c.tp += gp;
                c.fp += gn;
            } else {
                c.fn += gp;
                c.tn += gn;
            }
            j = i;
        }
        if (p_tot > 0 && n_tot > 0) {
            out->resamples_used++;
            vals[0][m[0]++] = wins / ((double)p_tot * (double)n_tot);
        }
        struct cxr_nn_rates rr;
        cxr_nn_rates_of(&c, &rr);
        double got[6] = {NAN, rr.sensitivity, rr.specificity, rr.accuracy, rr.ppv, rr.npv};
        for (int k = 1; k < 6; k++)
            if (!isnan(got[k]))
                vals[k][m[k]++] = got[k];
    }
    for (int k = 0; k < 6; k++)
        ci_from(vals[k], m[k], cis[k]);

fail:
    for (int k = 0; k < 6; k++)
        free(vals[k]);
    free(at);
    free(w);
    free(v);
    if (st != CXR_OK)
        memset(out, 0, sizeof *out);
    return st;
}

/* ---- reliability */

enum cxr_status cxr_nn_reliability_compute(const double *scores, const uint8_t *labels, size_t n,
                                           int32_t nbins, struct cxr_nn_reliability *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0 || nbins < 1 || nbins > CXR_NN_MAX_RELIABILITY_BINS)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "reliability: %zu cases in %d bins (1..%d)", n,
                          (int)nbins, CXR_NN_MAX_RELIABILITY_BINS);
    double sum[CXR_NN_MAX_RELIABILITY_BINS] = {0}, pos[CXR_NN_MAX_RELIABILITY_BINS] = {0};
    for (size_t i = 0; i < n; i++) {
        double p = scores[i];
        if (!(p >= 0.0 && p <= 1.0)) {
            memset(out, 0, sizeof *out);
            return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                              "reliability: score %g of case %zu is not a "
                              "probability",
                              p, i);
        }
        int32_t b = (int32_t)(p * nbins);
        if (b >= nbins)
            b = nbins - 1; /* p == 1 */
        out->count[b]++;
        sum[b] += p;
        pos[b] += labels[i] ? 1.0 : 0.0;
    }
    out->nbins = nbins;
    double ece = 0.0;
    for (int32_t b = 0; b < nbins; b++) {
        if (!out->count[b]) {
            out->mean_score[b] = out->observed[b] = NAN;
            continue;
        }
        out->mean_score[b] = sum[b] / (double)out->count[b];
        out->observed[b] = pos[b] / (double)out->count[b];
        ece += (double)out->count[b] / (double)n * fabs(out->mean_score[b] - out->observed[b]);
    }
    out->ece = ece;
    return CXR_OK;
}

/* ---- calibration */

void cxr_nn_calibration_options_defaults(struct cxr_nn_calibration_options *o)
{
    o->target_sensitivity = 0.95;
    o->urgent_specificity = 0.95;
    o->resamples = 2000;
    o->seed = 1;
}

static double clamp01(double v) { return v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v; }

enum cxr_status cxr_nn_calibrate(const double *scores, const uint8_t *labels, size_t n,
                                 const struct cxr_nn_calibration_options *opt,
                                 struct cxr_nn_calibration *out, char *err)
{
    memset(out, 0, sizeof *out);
    struct cxr_nn_calibration_options o;
    if (opt)
        o = *opt;
    else
        cxr_nn_calibration_options_defaults(&o);
    if (!(o.target_sensitivity > 0.0 && o.target_sensitivity <= 1.0) ||
        !(o.urgent_specificity > 0.0 && o.urgent_specificity <= 1.0))
        return cxr_seterr(
            err, CXR_ERR_INVALID_ARG,
            "calibration: target sensitivity %g and urgent specificity %g must be in (0, 1]",
            o.target_sensitivity, o.urgent_specificity);
    int64_t pos = 0;
    for (size_t i = 0; i < n; i++)
        pos += labels[i] ? 1 : 0;
    if (n == 0 || pos == 0 || pos == (int64_t)n)
        return cxr_seterr(
            err, CXR_ERR_INVALID_ARG,
            "calibration needs both classes in the validation data (%lld positive of %zu)",
            (long long)pos, n);
    double op = cxr_nn_threshold_for_sensitivity(scores, labels, n, o.target_sensitivity);
    double urg = cxr_nn_threshold_for_specificity(scores, labels, n, o.urgent_specificity);
    if (isnan(op) || isnan(urg))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "calibration: a score is NaN");
    op = clamp01(op);
    urg = clamp01(urg > op ? urg : op);
    enum cxr_status st =
        cxr_nn_evaluate(scores, labels, n, op, o.resamples, o.seed, &out->operating, err);
    if (st == CXR_OK)
        st = cxr_nn_evaluate(scores, labels, n, urg, o.resamples, o.seed, &out->urgent, err);
    if (st != CXR_OK) {
        memset(out, 0, sizeof *out);
        return st;
    }
    out->operating_threshold = op;
    out->urgent_threshold = urg;
    out->options = o;
    return CXR_OK;
}

/* ---- JSON */

static json_object *num(double v)
{
    if (!isfinite(v))
        return NULL; /* JSON null */
    char buf[32];
    snprintf(buf, sizeof buf, "%.6g", v);
    return json_object_new_double_s(v, buf);
}

static json_object *ci_json(const struct cxr_nn_ci *ci)
{
    json_object *o = json_object_new_object();
    json_object *a = json_object_new_array();
    if (!o || !a) {
        json_object_put(o);
        json_object_put(a);
        return NULL;
    }
    json_object_object_add(o, "value", num(ci->value));
    json_object_array_add(a, num(ci->lo));
    json_object_array_add(a, num(ci->hi));
    json_object_object_add(o, "ci95", a);
    return o;
}

static json_object *eval_json(const struct cxr_nn_eval *e)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "threshold", num(e->threshold));
    json_object *cm = json_object_new_object();
    if (cm) {
        json_object_object_add(cm, "tp", json_object_new_int64(e->cm.tp));
        json_object_object_add(cm, "fp", json_object_new_int64(e->cm.fp));
        json_object_object_add(cm, "tn", json_object_new_int64(e->cm.tn));
        json_object_object_add(cm, "fn", json_object_new_int64(e->cm.fn));
    }
    json_object_object_add(o, "confusion", cm);
    json_object_object_add(o, "sensitivity", ci_json(&e->sensitivity));
    json_object_object_add(o, "specificity", ci_json(&e->specificity));
    json_object_object_add(o, "accuracy", ci_json(&e->accuracy));
    json_object_object_add(o, "ppv", ci_json(&e->ppv));
    json_object_object_add(o, "npv", ci_json(&e->npv));
    return o;
}

char *cxr_nn_calibration_to_json(const struct cxr_nn_calibration *c, const char *split)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    const struct cxr_nn_eval *e = &c->operating;
    json_object_object_add(o, "split", json_object_new_string(split ? split : "validation"));
    json_object_object_add(o, "n", json_object_new_int64((int64_t)e->n));
    json_object_object_add(o, "positives", json_object_new_int64(e->positives));
    json_object_object_add(o, "negatives", json_object_new_int64(e->negatives));
    json_object_object_add(o, "auc", ci_json(&e->auc));
    json_object_object_add(o, "target_sensitivity", num(c->options.target_sensitivity));
    json_object_object_add(o, "urgent_specificity", num(c->options.urgent_specificity));
    json_object_object_add(o, "bootstrap_resamples", json_object_new_int(e->resamples));
    json_object_object_add(o, "bootstrap_seed", json_object_new_uint64(e->seed));
    json_object_object_add(o, "operating", eval_json(&c->operating));
    json_object_object_add(o, "urgent", eval_json(&c->urgent));
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    char *copy = text ? strdup(text) : NULL;
    json_object_put(o);
    return copy;
}
