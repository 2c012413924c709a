/* train_run_eval.c — `cxr-triage evaluate` as a library call: every usable
 * image of a labeled set, at its own presented size, through the inference
 * preprocessing and the model (cxr_tr_score), the metrics at the model's
 * own thresholds with bootstrap intervals, and the report without training
 * curves. */
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_run_internal.h"

void cxr_train_evaluate_options_init(struct cxr_train_evaluate_options *o)
{
    memset(o, 0, sizeof *o);
    o->precision = CXR_NN_PRECISION_FP32;
    o->batch = 16;
    o->resamples = 2000;
    o->seed = 1;
    o->target_sensitivity = 0.95;
    o->urgent_specificity = 0.95;
}

/* A JSON number, or null for NaN and the infinities (not JSON). */
static struct json_object *json_num(double v)
{
    return isfinite(v) ? json_object_new_double(v) : NULL;
}

static struct json_object *ci(const struct cxr_nn_ci *c)
{
    struct json_object *o = json_object_new_object(), *a = json_object_new_array();
    json_object_object_add(o, "value",
                           isfinite(c->value) ? json_object_new_double(c->value) : NULL);
    json_object_array_add(a, isfinite(c->lo) ? json_object_new_double(c->lo) : NULL);
    json_object_array_add(a, isfinite(c->hi) ? json_object_new_double(c->hi) : NULL);
    json_object_object_add(o, "ci95", a);
    return o;
}

static struct json_object *eval_json(const struct cxr_nn_eval *e)
{
    struct json_object *o = json_object_new_object(), *cm = json_object_new_object();
    json_object_object_add(o, "threshold", json_num(e->threshold));
    json_object_object_add(cm, "tp", json_object_new_int64(e->cm.tp));
    json_object_object_add(cm, "fp", json_object_new_int64(e->cm.fp));
    json_object_object_add(cm, "tn", json_object_new_int64(e->cm.tn));
    json_object_object_add(cm, "fn", json_object_new_int64(e->cm.fn));
    json_object_object_add(o, "confusion", cm);
    json_object_object_add(o, "sensitivity", ci(&e->sensitivity));
    json_object_object_add(o, "specificity", ci(&e->specificity));
    json_object_object_add(o, "accuracy", ci(&e->accuracy));
    json_object_object_add(o, "ppv", ci(&e->ppv));
    json_object_object_add(o, "npv", ci(&e->npv));
    return o;
}

char *cxr_train_evaluate_to_json(const struct cxr_train_evaluate_result *r,
                                 const struct cxr_nn_model_meta *meta)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "n", json_object_new_int64((int64_t)r->count));
    json_object_object_add(o, "skipped", json_object_new_int64((int64_t)r->skipped));
    json_object_object_add(o, "positives", json_object_new_int64(r->operating.positives));
    json_object_object_add(o, "negatives", json_object_new_int64(r->operating.negatives));
    json_object_object_add(o, "data_digest", json_object_new_string(r->digest));
    if (meta)
        json_object_object_add(o, "positive_class",
                               json_object_new_string(meta->class_names[meta->positive_class]));
    json_object_object_add(o, "auc", ci(&r->operating.auc));
    json_object_object_add(o, "loss", isfinite(r->loss) ? json_object_new_double(r->loss) : NULL);
    json_object_object_add(o, "operating", eval_json(&r->operating));
    json_object_object_add(o, "urgent", eval_json(&r->urgent));
    struct json_object *cal = json_object_new_object(), *bins = json_object_new_array();
    const struct cxr_nn_reliability *rl = &r->reliability;
    for (int32_t k = 0; k < rl->nbins; k++) {
        struct json_object *bj = json_object_new_object();
        json_object_object_add(bj, "from", json_object_new_double((double)k / rl->nbins));
        json_object_object_add(bj, "to", json_object_new_double((double)(k + 1) / rl->nbins));
        json_object_object_add(bj, "n", json_object_new_int64(rl->count[k]));
        json_object_object_add(bj, "mean_probability",
                               rl->count[k] ? json_num(rl->mean_score[k]) : NULL);
        json_object_object_add(bj, "observed", rl->count[k] ? json_num(rl->observed[k]) : NULL);
        json_object_array_add(bins, bj);
    }
    json_object_object_add(cal, "ece", rl->nbins ? json_num(rl->ece) : NULL);
    json_object_object_add(cal, "bins", bins);
    json_object_object_add(o, "calibration", cal);
    if (r->recalibrated) {
        struct json_object *rc = json_object_new_object();
        json_object_object_add(rc, "operating_threshold",
                               json_num(r->recalibration.operating_threshold));
        json_object_object_add(rc, "urgent_threshold", json_num(r->recalibration.urgent_threshold));
        json_object_object_add(rc, "operating", eval_json(&r->recalibration.operating));
        json_object_object_add(rc, "sha256", json_object_new_string(r->recalibrated_sha256));
        json_object_object_add(o, "recalibration", rc);
    }
    struct json_object *ov = NULL;
    if (r->training_list && isfinite(r->training_overlap_fraction)) {
        ov = json_object_new_object();
        json_object_object_add(ov, "images", json_object_new_int64(r->training_overlap));
        json_object_object_add(ov, "fraction",
                               json_object_new_double(r->training_overlap_fraction));
        json_object_object_add(ov, "estimated",
                               json_object_new_boolean(r->training_overlap_estimated));
    }
    json_object_object_add(o, "training_list", json_object_new_boolean(r->training_list));
    json_object_object_add(o, "training_overlap", ov);
    json_object_object_add(o, "bootstrap_resamples", json_object_new_int(r->operating.resamples));
    const char *s =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
    char *copy = s ? strdup(s) : NULL;
    json_object_put(o);
    return copy;
}

/* --calibrate-out: thresholds from these scores, written into a copy of the
 * model (same weights, same storage) whose metrics say where they came from
 * and keep the previous ones. */
static enum cxr_status recalibrate(const struct cxr_train_evaluate_options *o,
                                   struct cxr_nn_model *m, const struct cxr_train_dataset *ds,
                                   const double *probs, const uint8_t *lab,
                                   struct cxr_train_evaluate_result *res, FILE *log, char *err)
{
    char nerr[CXR_ERRLEN] = "";
    struct cxr_nn_calibration_options co;
    cxr_nn_calibration_options_defaults(&co);
    co.target_sensitivity = o->target_sensitivity;
    co.urgent_specificity = o->urgent_specificity;
    co.resamples = o->resamples;
    co.seed = o->seed;
    struct cxr_nn_calibration *cal = &res->recalibration;
    enum cxr_status st = cxr_nn_calibrate(probs, lab, ds->count, &co, cal, nerr);
    if (st != CXR_OK)
        return cxr_seterr(err, st, "recalibration: %s", nerr);
    struct cxr_nn_model_meta *mm = cxr_nn_model_meta_mut(m);
    char *fresh = cxr_nn_calibration_to_json(cal, "recalibration");
    struct json_object *j = fresh ? json_tokener_parse(fresh) : NULL;
    free(fresh);
    if (!j)
        return cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
    json_object_object_add(j, "data", json_object_new_string(o->data));
    json_object_object_add(j, "data_digest", json_object_new_string(ds->digest));
    json_object_object_add(
        j, "precision",
        json_object_new_string(o->precision == CXR_NN_PRECISION_BF16 ? "bf16" : "fp32"));
    struct json_object *before = mm->metrics_json ? json_tokener_parse(mm->metrics_json) : NULL;
    if (before)
        json_object_object_add(j, "before_recalibration", before);
    char *note = NULL;
    if (asprintf(&note,
                 "Thresholds recalibrated on %zu images of %s (%s) for sensitivity "
                 "%.3f: operating %.4f -> %.4f, urgent %.4f -> %.4f.",
                 ds->count, o->data, ds->digest, o->target_sensitivity, mm->operating_threshold,
                 cal->operating_threshold, mm->urgent_threshold, cal->urgent_threshold) < 0)
        note = NULL;
    const char *text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
    st = !note || !text ? CXR_ERR_NOMEM : cxr_nn_model_set_text(m, "metrics_json", text);
    if (st == CXR_OK)
        st = cxr_nn_model_append_note(m, note);
    free(note);
    json_object_put(j);
    if (st != CXR_OK)
        return cxr_seterr(err, st, "out of memory");
    mm->operating_threshold = cal->operating_threshold;
    mm->urgent_threshold = cal->urgent_threshold;
    if ((st = cxr_nn_model_save(m, o->calibrate_out, cxr_nn_model_storage(m), nerr)) != CXR_OK)
        return cxr_seterr(err, st, "%s", nerr);
    res->recalibrated = true;
    snprintf(res->recalibrated_sha256, sizeof res->recalibrated_sha256, "%s",
             cxr_nn_model_sha256(m));
    fprintf(log,
            "recalibrated on these images: operating %.4f (sensitivity %.3f, specificity %.3f "
            "here), urgent %.4f; wrote %s (sha256 %s)\n",
            cal->operating_threshold, cal->operating.sensitivity.value,
            cal->operating.specificity.value, cal->urgent_threshold, o->calibrate_out,
            res->recalibrated_sha256);
    return CXR_OK;
}

/* The evaluated images that the model was trained on: each sample's file
 * digest looked up in the model's list. Fills res's training_* fields, logs
 * the warning (or that the model has no list) and leaves the warning's text
 * in `warning` for the report ("" when none). */
static void training_overlap(const struct cxr_nn_model_meta *meta,
                             const struct cxr_train_dataset *ds,
                             struct cxr_train_evaluate_result *res, FILE *log, char *warning,
                             size_t len)
{
    res->training_list = meta->training_image_count > 0;
    res->training_overlap = 0;
    res->training_overlap_fraction = NAN;
    if (!res->training_list) {
        fprintf(log, "note: the model carries no list of the images it was trained on (made "
                     "before cxr-triage listed them, or elsewhere): whether these images were "
                     "among them cannot be checked\n");
        return;
    }
    size_t eligible = 0, seen = 0;
    for (size_t i = 0; i < ds->count; i++) {
        int t = cxr_nn_model_meta_trained_on(
            meta, cxr_nn_training_digest_from_hex(ds->samples[i].sha256));
        eligible += t >= 0;
        seen += t == 1;
    }
    res->training_overlap_estimated = meta->training_digest_sample_bits > 0;
    if (eligible == 0) {
        fprintf(log,
                "note: none of these images falls in the model's 1-in-%llu sample of its "
                "training images: whether they were among them cannot be checked\n",
                1ull << meta->training_digest_sample_bits);
        return;
    }
    res->training_overlap_fraction = (double)seen / (double)eligible;
    res->training_overlap =
        res->training_overlap_estimated
            ? (int64_t)llround(res->training_overlap_fraction * (double)ds->count)
            : (int64_t)seen;
    if (seen == 0)
        return;
    snprintf(warning, len,
             "%s%lld of the %zu evaluated images (%.1f %%) are images this model was trained on: "
             "the metrics are optimistic. Evaluate on images it has not seen.",
             res->training_overlap_estimated ? "about " : "", (long long)res->training_overlap,
             ds->count, 100.0 * res->training_overlap_fraction);
    if (res->training_overlap_estimated) {
        size_t l = strlen(warning);
        snprintf(warning + l, len - l,
                 " (estimated from %zu of them, those in the model's 1-in-%llu sample)", eligible,
                 1ull << meta->training_digest_sample_bits);
    }
    fprintf(log, "WARNING: %s\n", warning);
}

enum cxr_status cxr_train_evaluate_run(const struct cxr_train_evaluate_options *o,
                                       struct cxr_train_evaluate_result *res, char *err)
{
    struct cxr_train_evaluate_result dummy;
    if (!res)
        res = &dummy;
    memset(res, 0, sizeof *res);
    if (!o || !o->model || !o->data)
        return cxr_seterr(err, CXR_ERR_USAGE, "--model and --data are required");
    if (o->batch < 1 || o->batch > 1024)
        return cxr_seterr(err, CXR_ERR_USAGE, "--batch 1..1024");
    FILE *log = o->log ? o->log : stderr;
    char nerr[CXR_ERRLEN] = "", terr[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = NULL;
    struct cxr_train_dataset *ds = NULL;
    struct cxr_nn_backend *b = NULL;
    double *probs = NULL;
    uint8_t *lab = NULL;
    int32_t *idx = NULL;
    struct cxr_train_report_case *cases = NULL;
    enum cxr_status st = cxr_nn_model_load(o->model, &m, nerr);
    if (st != CXR_OK) {
        cxr_seterr(err, st, "%s", nerr);
        goto done;
    }
    const struct cxr_nn_model_meta *meta = cxr_nn_model_meta(m);
    struct cxr_train_dataset_options dopt;
    cxr_train_dataset_options_init(&dopt, meta);
    dopt.label_map = o->label_map;
    dopt.allow_outside = o->allow_outside;
    dopt.threads = o->threads;
    dopt.gate = o->gate;
    /* the presented image as it is: preprocessing happens once, as at inference */
    dopt.max_scale = 1e6;
    if ((st = cxr_train_dataset_load(o->data, &dopt, &ds, terr)) != CXR_OK) {
        cxr_seterr(err, st, "%s", terr);
        goto done;
    }
    fprintf(log, "read %s (%s): %zu images, %zu skipped, in %.1f s; digest %s\n", ds->source,
            ds->source_kind, ds->count, ds->skipped_count, ds->load_seconds, ds->digest);
    for (size_t i = 0; i < ds->skipped_count && i < 20; i++)
        fprintf(log, "  skipped %s: %s\n", ds->skipped[i].name, ds->skipped[i].reason);
    if (ds->skipped_count > 20)
        fprintf(log, "  ... and %zu more skipped (all listed in the report)\n",
                ds->skipped_count - 20);
    char overlap_warning[512] = "";
    training_overlap(meta, ds, res, log, overlap_warning, sizeof overlap_warning);
    res->count = ds->count;
    res->skipped = ds->skipped_count;
    snprintf(res->digest, sizeof res->digest, "%s", ds->digest);
    int64_t pos = ds->class_counts[meta->positive_class];
    if (pos == 0 || pos == (int64_t)ds->count) {
        st = cxr_seterr(err, CXR_ERR_INVALID_ARG,
                        "%s: the data must hold images of the positive class "
                        "(%s) and of the others to measure sensitivity and specificity",
                        o->data, meta->class_names[meta->positive_class]);
        goto done;
    }
    struct cxr_nn_backend_options bo = {
        .kind = CXR_NN_BACKEND_CPU, .precision = o->precision, .threads = o->threads};
    if ((st = cxr_nn_backend_open(&bo, &b, NULL, nerr)) != CXR_OK) {
        cxr_seterr(err, st, "backend: %s", nerr);
        goto done;
    }
    probs = malloc(ds->count * sizeof *probs);
    lab = malloc(ds->count);
    idx = malloc(ds->count * sizeof *idx);
    cases = calloc(ds->count, sizeof *cases);
    if (!probs || !lab || !idx || !cases) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ds->count; i++) {
        idx[i] = (int32_t)i;
        lab[i] = ds->samples[i].label == meta->positive_class;
    }
    double t0 = cxr_tr_now();
    if ((st = cxr_tr_score(b, m, ds, idx, ds->count, o->batch, probs, &res->loss, NULL, terr)) !=
        CXR_OK) {
        cxr_seterr(err, st, "%s", terr);
        goto done;
    }
    fprintf(log, "scored %zu images in %.1f s on %s\n", ds->count, cxr_tr_now() - t0,
            cxr_nn_backend_describe(b));
    if ((st = cxr_nn_evaluate(probs, lab, ds->count, meta->operating_threshold, o->resamples,
                              o->seed, &res->operating, nerr)) != CXR_OK ||
        (st = cxr_nn_evaluate(probs, lab, ds->count, meta->urgent_threshold, o->resamples, o->seed,
                              &res->urgent, nerr)) != CXR_OK) {
        cxr_seterr(err, st, "metrics: %s", nerr);
        goto done;
    }
    if ((st = cxr_nn_reliability_compute(probs, lab, ds->count, 10, &res->reliability, nerr)) !=
        CXR_OK) {
        cxr_seterr(err, st, "calibration: %s", nerr);
        goto done;
    }
    if (o->report) {
        for (size_t i = 0; i < ds->count; i++) {
            const struct cxr_train_sample *s = &ds->samples[i];
            cases[i] = (struct cxr_train_report_case){.name = s->name,
                                                      .label = s->label,
                                                      .probability = probs[i],
                                                      .pixels = s->pixels,
                                                      .width = s->width,
                                                      .height = s->height,
                                                      .stride = s->width};
        }
        struct cxr_train_report_split split = {.name = "evaluated",
                                               .groups = (int64_t)ds->patient_groups};
        memcpy(split.counts, ds->class_counts, sizeof split.counts);
        char machine[320], n[32];
        cxr_tr_machine(machine, sizeof machine);
        snprintf(n, sizeof n, "%zu", ds->count);
        const char *notes[] = {"images", n,         "machine",
                               machine,  "backend", cxr_nn_backend_describe(b)};
        struct cxr_train_report r;
        cxr_train_report_init(&r);
        r.title = "Evaluation report";
        r.command = o->command_line;
        r.meta = meta;
        r.model_sha256 = cxr_nn_model_sha256(m);
        r.model_path = o->model;
        r.data_source = ds->source;
        r.data_kind = ds->source_kind;
        r.data_digest = ds->digest;
        r.splits = &split;
        r.split_count = 1;
        r.skipped = ds->skipped;
        r.skipped_count = ds->skipped_count;
        r.age_min_years = ds->age_min_years;
        r.age_max_years = ds->age_max_years;
        r.eval_name = "evaluated";
        r.cases = cases;
        r.case_count = ds->count;
        r.operating = &res->operating;
        r.urgent = &res->urgent;
        r.target_sensitivity = NAN;
        r.urgent_specificity = NAN;
        r.notes = notes;
        r.note_count = 3;
        const char *warnings[1] = {overlap_warning};
        if (overlap_warning[0]) {
            r.warnings = warnings;
            r.warning_count = 1;
        }
        if ((st = cxr_train_report_write(&r, o->report, terr)) != CXR_OK) {
            cxr_seterr(err, st, "report: %s", terr);
            goto done;
        }
        fprintf(log, "report: %s\n", o->report);
    }
    /* last: it changes the model's thresholds and file identity */
    if (o->calibrate_out)
        st = recalibrate(o, m, ds, probs, lab, res, log, err);
done:
    free(probs);
    free(lab);
    free(idx);
    free(cases);
    cxr_nn_backend_close(b);
    cxr_train_dataset_free(ds);
    cxr_nn_model_free(m);
    return st;
}
