/* train_run_out.c — the end of `cxr-triage train`: the kept model (best
 * validation AUC) rounded to its storage type, scored on the validation set
 * through the inference path, the thresholds calibrated on those scores
 * (cxr_nn_calibrate), the metadata (thresholds, validation metrics, data
 * digest, the list of training images, age range, name, version, created),
 * the model file, the report. */
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "train_run_internal.h"

void cxr_tr_machine(char *buf, size_t len)
{
    char model[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) {
                    c += 2;
                    c[strcspn(c, "\n")] = '\0';
                    snprintf(model, sizeof model, "%s", c);
                }
                break;
            }
        fclose(f);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(buf, len, "%s, %ld CPU%s", model, n, n == 1 ? "" : "s");
}

/* The calibration JSON with a "training" object added. */
static char *metrics_json(struct train_run *R, const struct cxr_nn_calibration *cal)
{
    char *c = cxr_nn_calibration_to_json(cal, "validation");
    struct json_object *o = c ? json_tokener_parse(c) : NULL, *t = json_object_new_object();
    free(c);
    if (!o || !t) {
        json_object_put(o);
        json_object_put(t);
        return NULL;
    }
    const struct cxr_train_options *op = R->o;
    json_object_object_add(t, "arch", json_object_new_string(cxr_nn_arch_name(R->meta->arch)));
    json_object_object_add(t, "epochs", json_object_new_int(R->n_hist));
    json_object_object_add(t, "best_epoch", json_object_new_int(R->best_epoch));
    json_object_object_add(t, "seed", json_object_new_uint64(op->seed));
    json_object_object_add(t, "batch", json_object_new_int(R->batch));
    json_object_object_add(t, "optimizer",
                           json_object_new_string(cxr_nn_optimizer_name(op->optimizer)));
    json_object_object_add(t, "lr", isfinite(op->lr) ? json_object_new_double(op->lr) : NULL);
    json_object_object_add(t, "train_images", json_object_new_int64((int64_t)R->n_train));
    json_object_object_add(t, "validation_images", json_object_new_int64((int64_t)R->n_val));
    json_object_object_add(t, "validation",
                           json_object_new_string(op->val ? "explicit" : "patient-grouped split"));
    if (!op->val)
        json_object_object_add(t, "val_fraction",
                               isfinite(op->val_fraction) ? json_object_new_double(op->val_fraction)
                                                          : NULL);
    json_object_object_add(t, "data_digest", json_object_new_string(R->ds->digest));
    if (R->vds)
        json_object_object_add(t, "validation_digest", json_object_new_string(R->vds->digest));
    if (op->init)
        json_object_object_add(t, "init", json_object_new_string(op->init));
    json_object_object_add(o, "training", t);
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    char *copy = s ? strdup(s) : NULL;
    json_object_put(o);
    return copy;
}

static void set_identity(struct train_run *R, struct cxr_nn_model_meta *m)
{
    const struct cxr_train_options *o = R->o;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(m->name, sizeof m->name, "%s", o->name ? o->name : "cxr-custom");
    if (o->version)
        snprintf(m->version, sizeof m->version, "%s", o->version);
    else
        strftime(m->version, sizeof m->version, "%Y.%m.%d", &tm);
    strftime(m->created, sizeof m->created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(m->training_data_digest, sizeof m->training_data_digest, "%s", R->ds->digest);
    if (!isnan(o->age_min_years) || !isnan(o->age_max_years)) {
        m->age_min_years = o->age_min_years;
        m->age_max_years = o->age_max_years;
    } else {
        m->age_min_years = R->ds->age_min_years;
        m->age_max_years = R->ds->age_max_years;
    }
}

/* The list of the images the model was trained on (its metadata
 * "training_images"): the digest of each training sample's file, and those
 * of --init's list, so that `evaluate` can tell when it scores them. */
static enum cxr_status set_training_list(struct train_run *R, struct cxr_nn_model *m)
{
    size_t n = R->n_train + R->n_init_digests;
    uint64_t *d = malloc((n ? n : 1) * sizeof *d);
    if (!d)
        return cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < R->n_train; i++)
        d[i] = cxr_nn_training_digest_from_hex(R->ds->samples[R->train_idx[i]].sha256);
    if (R->n_init_digests)
        memcpy(d + R->n_train, R->init_digests, R->n_init_digests * sizeof *d);
    /* --init's list may be a sample: then so is the merged one, and its image
     * count an upper bound (images seen by both are counted twice) */
    enum cxr_status st = cxr_nn_model_set_training_digests(m, d, n, R->init_sample_bits,
                                                           (int64_t)R->n_train + R->init_images);
    free(d);
    if (st != CXR_OK)
        return cxr_tr_err(R, st, "the list of training images: %s", cxr_status_str(st));
    const struct cxr_nn_model_meta *mt = cxr_nn_model_meta(m);
    if (mt->training_digest_sample_bits > 0)
        cxr_tr_log(R,
                   "note: the model lists a 1-in-%llu sample of its %lld training images "
                   "(at most %u digests are kept)\n",
                   1ull << mt->training_digest_sample_bits, (long long)mt->training_image_count,
                   CXR_NN_MAX_TRAINING_DIGESTS);
    return CXR_OK;
}

/* The report: validation cases with their thumbnails, the curves. */
static enum cxr_status write_report(struct train_run *R, const struct cxr_nn_model *m,
                                    const struct cxr_train_dataset *vset, const int32_t *vidx,
                                    const double *probs, const struct cxr_nn_calibration *cal,
                                    double seconds, const char *model_path, const char *warning)
{
    const struct cxr_train_options *o = R->o;
    enum cxr_status st = CXR_OK;
    struct cxr_train_report_case *cases = calloc(R->n_val, sizeof *cases);
    size_t nskip = R->ds->skipped_count + (R->vds ? R->vds->skipped_count : 0);
    struct cxr_train_skip *skips = calloc(nskip ? nskip : 1, sizeof *skips);
    if (!cases || !skips) {
        st = cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < R->n_val; i++) {
        const struct cxr_train_sample *s = &vset->samples[vidx[i]];
        cases[i] = (struct cxr_train_report_case){.name = s->name,
                                                  .label = s->label,
                                                  .probability = probs[i],
                                                  .pixels = s->pixels,
                                                  .width = s->width,
                                                  .height = s->height,
                                                  .stride = s->width};
    }
    memcpy(skips, R->ds->skipped, R->ds->skipped_count * sizeof *skips);
    if (R->vds)
        memcpy(skips + R->ds->skipped_count, R->vds->skipped,
               R->vds->skipped_count * sizeof *skips);
    struct cxr_train_report_split splits[2] = {{.name = "train"}, {.name = "validation"}};
    memcpy(splits[0].counts, R->train_counts, sizeof splits[0].counts);
    memcpy(splits[1].counts, R->val_counts, sizeof splits[1].counts);
    splits[0].groups = (int64_t)(o->val ? R->ds->patient_groups : R->split.train_groups);
    splits[1].groups = (int64_t)(o->val ? R->vds->patient_groups : R->split.val_groups);
    char seed[32], epochs[64], took[64], machine[320], rate[64], best[64], sched[160];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    snprintf(epochs, sizeof epochs, "%d of %d (batch %d)", (int)R->n_hist, (int)o->epochs,
             (int)R->batch);
    snprintf(took, sizeof took, "%.0f s (training %.0f s)", seconds, R->train_seconds);
    snprintf(rate, sizeof rate, "%.1f images/s",
             R->train_seconds > 0 ? (double)R->images_trained / R->train_seconds : 0.0);
    snprintf(best, sizeof best, "epoch %d, validation AUC %.4f", (int)R->best_epoch, R->best_auc);
    snprintf(sched, sizeof sched, "%s, one-cycle peak lr %g, weight decay %g, clip %g, %s%s",
             cxr_nn_optimizer_name(o->optimizer), o->lr, o->weight_decay, o->clip_norm,
             o->balanced_sampler ? "balanced sampler" : "class-weighted loss",
             o->augment ? ", augmentation" : ", no augmentation");
    cxr_tr_machine(machine, sizeof machine);
    const char *notes[] = {"seed",       seed,    "epochs",       epochs,
                           "kept model", best,    "optimisation", sched,
                           "time",       took,    "speed",        rate,
                           "machine",    machine, "backend",      cxr_nn_backend_describe(R->b),
                           "note",       R->note};
    struct cxr_train_report r;
    cxr_train_report_init(&r);
    r.title = "Training report";
    r.command = o->command_line;
    r.meta = cxr_nn_model_meta(m);
    r.model_sha256 = cxr_nn_model_sha256(m);
    r.model_path = model_path;
    if (warning[0]) {
        r.warnings = &warning;
        r.warning_count = 1;
    }
    r.data_source = R->ds->source;
    r.data_kind = R->ds->source_kind;
    r.data_digest = R->ds->digest;
    r.splits = splits;
    r.split_count = 2;
    r.skipped = skips;
    r.skipped_count = nskip;
    r.age_min_years = R->ds->age_min_years;
    r.age_max_years = R->ds->age_max_years;
    r.epochs = R->hist;
    r.epoch_count = R->n_hist;
    r.eval_name = "validation";
    r.cases = cases;
    r.case_count = R->n_val;
    r.operating = &cal->operating;
    r.urgent = &cal->urgent;
    r.target_sensitivity = o->target_sensitivity;
    r.urgent_specificity = o->urgent_specificity;
    r.notes = notes;
    r.note_count = (int32_t)(sizeof notes / sizeof notes[0] / 2) - (R->note[0] ? 0 : 1);
    char rerr[CXR_ERRLEN] = "";
    if ((st = cxr_train_report_write(&r, o->report, rerr)) != CXR_OK)
        cxr_tr_err(R, st, "report: %s", rerr);
    else
        cxr_tr_log(R, "report: %s\n", o->report);
done:
    free(cases);
    free(skips);
    return st;
}

enum cxr_status cxr_tr_finish(struct train_run *R, struct cxr_train_result *res)
{
    const struct cxr_train_options *o = R->o;
    char nerr[CXR_ERRLEN] = "", terr[CXR_ERRLEN] = "", tmp[4300];
    enum cxr_status st;
    struct cxr_nn_model *kept = NULL, *m = NULL;
    struct cxr_train_dataset *full = NULL;
    int32_t *vidx = NULL;
    double *probs = malloc(R->n_val * sizeof *probs);
    uint8_t *lab = malloc(R->n_val);
    char *metrics = NULL;
    if (!probs || !lab) {
        st = cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* the kept weights: the best epoch's, else the last */
    if (R->best_epoch > 0 && access(R->best_path, R_OK) == 0)
        st = cxr_nn_model_load(R->best_path, &kept, nerr);
    else
        st = cxr_nn_model_save(R->model, R->best_path, CXR_NN_DTYPE_F32, nerr) == CXR_OK
                 ? cxr_nn_model_load(R->best_path, &kept, nerr)
                 : CXR_ERR_IO;
    if (st != CXR_OK) {
        cxr_tr_err(R, st, "kept model: %s", nerr);
        goto done;
    }
    set_identity(R, cxr_nn_model_meta_mut(kept));
    char desc[600];
    snprintf(desc, sizeof desc,
             "Trained by cxr-triage train: %s, %d epochs (kept %d), seed %llu, "
             "data %s. %s",
             cxr_nn_arch_name(R->meta->arch), (int)R->n_hist, (int)R->best_epoch,
             (unsigned long long)o->seed, R->ds->source, R->note);
    cxr_nn_model_set_text(kept, "description", desc);
    /* round to the storage type exactly as the file will hold it */
    snprintf(tmp, sizeof tmp, "%s/stored.safetensors", R->ckpt_dir);
    if ((st = cxr_nn_model_save(kept, tmp, o->storage, nerr)) != CXR_OK ||
        (st = cxr_nn_model_load(tmp, &m, nerr)) != CXR_OK) {
        cxr_tr_err(R, st, "%s", nerr);
        goto done;
    }
    unlink(tmp);
    if ((st = cxr_tr_full_size_val(R, &full, &vidx)) != CXR_OK)
        goto done;
    const struct cxr_train_dataset *vset = full ? full : R->vsrc;
    if ((st = cxr_tr_score(R->b, m, vset, vidx, R->n_val, R->batch, probs, NULL, NULL, terr)) !=
        CXR_OK) {
        cxr_tr_err(R, st, "validation: %s", terr);
        goto done;
    }
    for (size_t i = 0; i < R->n_val; i++)
        lab[i] = R->vsrc->samples[R->val_idx[i]].label == R->meta->positive_class;
    struct cxr_nn_calibration_options co;
    cxr_nn_calibration_options_defaults(&co);
    co.target_sensitivity = o->target_sensitivity;
    co.urgent_specificity = o->urgent_specificity;
    co.resamples = o->resamples;
    struct cxr_nn_calibration cal;
    if ((st = cxr_nn_calibrate(probs, lab, R->n_val, &co, &cal, nerr)) != CXR_OK) {
        cxr_tr_err(R, st, "calibration: %s", nerr);
        goto done;
    }
    if ((st = set_training_list(R, m)) != CXR_OK)
        goto done;
    struct cxr_nn_model_meta *mm = cxr_nn_model_meta_mut(m);
    mm->operating_threshold = cal.operating_threshold;
    mm->urgent_threshold = cal.urgent_threshold;
    if (!(metrics = metrics_json(R, &cal)) ||
        (st = cxr_nn_model_set_text(m, "metrics_json", metrics)) != CXR_OK) {
        st = cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
        goto done;
    }
    const struct cxr_nn_eval *e = &cal.operating;
    /* Not clearly better than chance: warn, and unless accepted keep it away
     * from --out, which may be the file a node loads. */
    double lo = isfinite(e->auc.lo) ? e->auc.lo : e->auc.value;
    bool weak = !(lo > CXR_TRAIN_WEAK_AUC_LOWER);
    char weak_path[4300], warning[1200] = "";
    const char *path = o->out;
    if (weak && !o->accept_weak) {
        snprintf(weak_path, sizeof weak_path, "%s.weak", o->out);
        path = weak_path;
    }
    if ((st = cxr_nn_model_save(m, path, o->storage, nerr)) != CXR_OK) {
        cxr_tr_err(R, st, "%s", nerr);
        goto done;
    }
    if (weak) {
        char auc[96];
        if (isfinite(e->auc.lo))
            snprintf(auc, sizeof auc, "AUC %.3f, 95 %% CI [%.3f, %.3f]", e->auc.value, e->auc.lo,
                     e->auc.hi);
        else
            snprintf(auc, sizeof auc, "AUC %.3f (no interval: --resamples 0)", e->auc.value);
        snprintf(warning, sizeof warning,
                 "the kept model is not clearly better than chance on the %zu validation images "
                 "(%s; %s at or below %.2f). %s",
                 R->n_val, auc, isfinite(e->auc.lo) ? "the lower bound is" : "that is",
                 CXR_TRAIN_WEAK_AUC_LOWER,
                 o->accept_weak ? "--accept-weak: it was written to --out all the same; do not "
                                  "let it triage before it is evaluated on images of your site."
                                : "It was NOT written to --out (which is unchanged); it is left "
                                  "beside it with the suffix .weak. Train longer, on more or "
                                  "better-labelled data, or pass --accept-weak to keep it.");
        cxr_tr_log(R, "WARNING: %s\n", warning);
    }
    char ci[3][48];
    const struct cxr_nn_ci *cis[3] = {&e->sensitivity, &e->specificity, &e->accuracy};
    for (int i = 0; i < 3; i++)
        if (isfinite(cis[i]->lo))
            snprintf(ci[i], sizeof ci[i], " [%.3f, %.3f]", cis[i]->lo, cis[i]->hi);
        else
            ci[i][0] = '\0';
    cxr_tr_log(R,
               "kept epoch %d (validation AUC %.4f during training); scored as inference "
               "sees them, the validation images give AUC %.4f and the thresholds: operating "
               "%.4f (target sensitivity %.2f), urgent %.4f\n",
               (int)R->best_epoch, R->best_auc, e->auc.value, cal.operating_threshold,
               o->target_sensitivity, cal.urgent_threshold);
    cxr_tr_log(R,
               "validation at the operating threshold: sensitivity %.3f%s, specificity "
               "%.3f%s, accuracy %.3f%s (n %zu)\n",
               e->sensitivity.value, ci[0], e->specificity.value, ci[1], e->accuracy.value, ci[2],
               e->n);
    cxr_tr_log(R, "model: %s (%s storage, sha256 %s)%s\n", path, cxr_nn_dtype_name(o->storage),
               cxr_nn_model_sha256(m), weak ? ", WEAK: see the warning above" : "");
    res->best_epoch = R->best_epoch;
    res->best_val_auc = R->best_auc;
    res->operating_threshold = cal.operating_threshold;
    res->urgent_threshold = cal.urgent_threshold;
    res->validation = cal.operating;
    snprintf(res->model_sha256, sizeof res->model_sha256, "%s", cxr_nn_model_sha256(m));
    res->weak = weak;
    snprintf(res->model_path, sizeof res->model_path, "%s", path);
    if (o->report)
        st = write_report(R, m, vset, vidx, probs, &cal, cxr_tr_now() - R->t_start, path, warning);
done:
    if (vidx != R->val_idx)
        free(vidx);
    cxr_train_dataset_free(full);
    free(metrics);
    free(probs);
    free(lab);
    cxr_nn_model_free(kept);
    cxr_nn_model_free(m);
    return st;
}
