/* train_run_data.c — the data side of `cxr-triage train`: loading the
 * labeled sources, the class counts and skipped entries on the console,
 * the patient-grouped split, each epoch's order, building a batch
 * (augmentation + the inference preprocessing) and scoring a set through
 * the inference path (net, softmax). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_run_internal.h"

static void print_counts(struct train_run *R, const char *what, const int64_t *counts,
                         size_t groups)
{
    char line[512];
    size_t used = 0;
    int64_t total = 0;
    for (int32_t k = 0; k < R->meta->num_classes; k++) {
        used += (size_t)snprintf(line + used, sizeof line - used, "%s%s %lld", k ? ", " : "",
                                 R->meta->class_names[k], (long long)counts[k]);
        total += counts[k];
        if (used >= sizeof line)
            break;
    }
    cxr_tr_log(R, "%-10s %lld images: %s; %zu patient groups\n", what, (long long)total, line,
               groups);
}

static void print_skipped(struct train_run *R, const struct cxr_train_dataset *ds)
{
    if (!ds->skipped_count)
        return;
    cxr_tr_log(R, "skipped %zu entr%s of %s:\n", ds->skipped_count,
               ds->skipped_count == 1 ? "y" : "ies", ds->source);
    for (size_t i = 0; i < ds->skipped_count && i < 20; i++)
        cxr_tr_log(R, "  %s: %s\n", ds->skipped[i].name, ds->skipped[i].reason);
    if (ds->skipped_count > 20)
        cxr_tr_log(R, "  ... and %zu more (all listed in the report)\n", ds->skipped_count - 20);
}

static void progress(void *ctx, uint64_t entries, uint64_t skipped)
{
    struct train_run *R = ctx;
    if (R->o->progress_bar) {
        fprintf(R->log, "\rreading: %llu entries, %llu skipped", (unsigned long long)entries,
                (unsigned long long)skipped);
        fflush(R->log);
    }
}

static enum cxr_status load_one(struct train_run *R, const char *path,
                                struct cxr_train_dataset **out)
{
    struct cxr_train_dataset_options dopt;
    cxr_train_dataset_options_init(&dopt, R->meta);
    dopt.label_map = R->o->label_map;
    dopt.allow_outside = R->o->allow_outside;
    dopt.threads = R->o->threads;
    dopt.progress = progress;
    dopt.progress_ctx = R;
    char derr[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_train_dataset_load(path, &dopt, out, derr);
    if (R->o->progress_bar)
        fprintf(R->log, "\r\033[K");
    if (st != CXR_OK)
        return cxr_tr_err(R, st, "%s", derr);
    const struct cxr_train_dataset *ds = *out;
    cxr_tr_log(R, "read %s (%s): %zu images, %zu skipped, in %.1f s; digest %s\n", ds->source,
               ds->source_kind, ds->count, ds->skipped_count, ds->load_seconds, ds->digest);
    print_skipped(R, ds);
    return CXR_OK;
}

enum cxr_status cxr_tr_load_data(struct train_run *R)
{
    const struct cxr_train_options *o = R->o;
    enum cxr_status st;
    if ((st = load_one(R, o->data, &R->ds)) != CXR_OK)
        return st;
    if (o->val && (st = load_one(R, o->val, &R->vds)) != CXR_OK)
        return st;
    char serr[CXR_ERRLEN] = "";
    if ((st = cxr_train_dataset_split(R->ds, o->val ? 0.0 : o->val_fraction, o->seed, &R->split,
                                      serr)) != CXR_OK)
        return cxr_tr_err(R, st, "split: %s", serr);
    R->train_idx = R->split.train;
    R->n_train = R->split.n_train;
    memcpy(R->train_counts, R->split.train_counts, sizeof R->train_counts);
    if (o->val) {
        R->vsrc = R->vds;
        R->n_val = R->vds->count;
        R->val_idx = malloc((R->n_val ? R->n_val : 1) * sizeof *R->val_idx);
        if (!R->val_idx)
            return cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < R->n_val; i++) {
            R->val_idx[i] = (int32_t)i;
            R->val_counts[R->vds->samples[i].label]++;
        }
        size_t leak = cxr_train_dataset_overlap(R->ds, R->vds);
        if (leak == (size_t)-1)
            return cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
        if (leak)
            cxr_tr_log(R,
                       "WARNING: %zu validation image%s share a patient or their exact bytes "
                       "with training images: validation metrics will be optimistic\n",
                       leak, leak == 1 ? "" : "s");
    } else {
        R->vsrc = R->ds;
        R->n_val = R->split.n_val;
        R->val_idx = malloc((R->n_val ? R->n_val : 1) * sizeof *R->val_idx);
        if (!R->val_idx)
            return cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
        memcpy(R->val_idx, R->split.val, R->n_val * sizeof *R->val_idx);
        memcpy(R->val_counts, R->split.val_counts, sizeof R->val_counts);
    }
    print_counts(R, "training", R->train_counts,
                 o->val ? R->ds->patient_groups : R->split.train_groups);
    print_counts(R, "validation", R->val_counts,
                 o->val ? R->vds->patient_groups : R->split.val_groups);
    if (R->n_train < 2)
        return cxr_tr_err(R, CXR_ERR_INVALID_ARG, "only %zu training image%s: too few to train",
                          R->n_train, R->n_train == 1 ? "" : "s");
    int32_t pos = R->meta->positive_class, present = 0;
    for (int32_t k = 0; k < R->meta->num_classes; k++)
        present += R->train_counts[k] > 0;
    if (present < 2)
        return cxr_tr_err(R, CXR_ERR_INVALID_ARG,
                          "the training data holds a single class: "
                          "nothing to learn (check the class folders or --label-map)");
    if (R->n_val < 2 || R->val_counts[pos] == 0 || R->val_counts[pos] == (int64_t)R->n_val)
        return cxr_tr_err(R, CXR_ERR_INVALID_ARG,
                          "the validation set needs images of both the "
                          "positive class (%s) and the others to calibrate the thresholds; it has "
                          "%zu image%s",
                          R->meta->class_names[pos], R->n_val, R->n_val == 1 ? "" : "s");
    for (size_t i = 0; i < R->ds->count; i++) {
        size_t px = (size_t)R->ds->samples[i].width * (size_t)R->ds->samples[i].height;
        if (px > R->max_pixels)
            R->max_pixels = px;
    }
    return CXR_OK;
}

int32_t *cxr_tr_epoch_order(struct train_run *R, int32_t epoch)
{
    size_t n = R->n_train;
    int32_t *order = malloc(n * sizeof *order);
    if (!order)
        return NULL;
    struct cxr_nn_rng rng;
    cxr_nn_rng_seed(&rng, cxr_nn_seed_mix(R->o->seed, (uint64_t)epoch, 0x5348554646ull));
    if (!R->o->balanced_sampler) {
        memcpy(order, R->train_idx, n * sizeof *order);
        cxr_nn_rng_shuffle(&rng, order, n);
        return order;
    }
    /* balanced: each draw picks a class uniformly among those present, then
     * an image of it uniformly (with replacement) */
    int32_t k = R->meta->num_classes, present[CXR_NN_MAX_CLASSES], np = 0;
    int32_t *by_class[CXR_NN_MAX_CLASSES] = {0};
    size_t cnt[CXR_NN_MAX_CLASSES] = {0};
    for (int32_t c = 0; c < k; c++)
        if (R->train_counts[c] > 0) {
            present[np++] = c;
            by_class[c] = malloc((size_t)R->train_counts[c] * sizeof(int32_t));
            if (!by_class[c])
                goto oom;
        }
    for (size_t i = 0; i < n; i++) {
        int32_t s = R->train_idx[i], c = R->ds->samples[s].label;
        by_class[c][cnt[c]++] = s;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t c = present[cxr_nn_rng_below(&rng, (uint64_t)np)];
        order[i] = by_class[c][cxr_nn_rng_below(&rng, cnt[c])];
    }
    for (int32_t c = 0; c < k; c++)
        free(by_class[c]);
    return order;
oom:
    for (int32_t c = 0; c < k; c++)
        free(by_class[c]);
    free(order);
    return NULL;
}

enum cxr_status cxr_tr_make_batch(const struct train_run *R, const int32_t *order, int32_t epoch,
                                  int32_t k, float *x, int32_t *y, uint8_t *scratch, char *err)
{
    const struct cxr_nn_model_meta *m = R->meta;
    size_t per = (size_t)m->channels * (size_t)m->input_height * (size_t)m->input_width;
    struct cxr_nn_augment_options ao;
    cxr_nn_augment_options_defaults(&ao);
    for (int32_t j = 0; j < R->batch; j++) {
        size_t pos = (size_t)k * (size_t)R->batch + (size_t)j;
        const struct cxr_train_sample *s = &R->ds->samples[order[pos]];
        struct cxr_nn_augment_params p;
        /* the seed names the sample (or, with replacement, the draw) */
        uint64_t id = R->o->balanced_sampler ? pos : (uint64_t)order[pos];
        if (R->o->augment)
            cxr_nn_augment_draw(&ao, cxr_nn_seed_mix(R->o->seed, (uint64_t)epoch, id), &p);
        enum cxr_status st = cxr_nn_train_input(m, R->o->augment ? &p : NULL, s->pixels, s->width,
                                                s->height, s->width, scratch, x + (size_t)j * per);
        if (st != CXR_OK) {
            snprintf(err, CXR_ERRLEN, "%s: preprocessing failed", s->name);
            return st;
        }
        y[j] = s->label;
    }
    return CXR_OK;
}

enum cxr_status cxr_tr_score(struct cxr_nn_backend *b, const struct cxr_nn_model *m,
                             const struct cxr_train_dataset *ds, const int32_t *idx, size_t n,
                             int32_t batch, double *probs, double *loss, double *accuracy,
                             char *err)
{
    const struct cxr_nn_model_meta *meta = cxr_nn_model_meta(m);
    size_t per = (size_t)meta->channels * (size_t)meta->input_height * (size_t)meta->input_width;
    int32_t k = meta->num_classes;
    struct cxr_nn_net *net = NULL;
    char nerr[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_nn_net_new(b, m, batch, &net, nerr);
    if (st != CXR_OK) {
        snprintf(err, CXR_ERRLEN, "%s", nerr);
        return st;
    }
    float *x = malloc((size_t)batch * per * sizeof(float));
    float *logits = malloc((size_t)batch * (size_t)k * sizeof(float));
    if (!x || !logits) {
        st = CXR_ERR_NOMEM;
        snprintf(err, CXR_ERRLEN, "out of memory");
        goto done;
    }
    double lsum = 0.0;
    size_t right = 0;
    for (size_t i0 = 0; i0 < n; i0 += (size_t)batch) {
        int32_t nb = (int32_t)(n - i0 < (size_t)batch ? n - i0 : (size_t)batch);
        for (int32_t j = 0; j < nb; j++) {
            const struct cxr_train_sample *s = &ds->samples[idx[i0 + (size_t)j]];
            st = cxr_nn_preprocess_u8(meta, s->pixels, s->width, s->height, s->width, NULL,
                                      x + (size_t)j * per);
            if (st != CXR_OK) {
                snprintf(err, CXR_ERRLEN, "%s: preprocessing failed", s->name);
                goto done;
            }
        }
        if ((st = cxr_nn_net_forward(net, x, nb, logits)) != CXR_OK) {
            snprintf(err, CXR_ERRLEN, "%s", cxr_nn_net_last_error(net));
            goto done;
        }
        for (int32_t j = 0; j < nb; j++) {
            float p[CXR_NN_MAX_CLASSES];
            const float *l = logits + (size_t)j * (size_t)k;
            cxr_nn_softmax(l, k, p);
            int32_t label = ds->samples[idx[i0 + (size_t)j]].label, arg = 0;
            for (int32_t c = 1; c < k; c++)
                if (l[c] > l[arg])
                    arg = c;
            right += arg == label;
            lsum += -log(fmax((double)p[label], 1e-30));
            probs[i0 + (size_t)j] = p[meta->positive_class];
        }
    }
    if (loss)
        *loss = n ? lsum / (double)n : NAN;
    if (accuracy)
        *accuracy = n ? (double)right / (double)n : NAN;
done:
    free(x);
    free(logits);
    cxr_nn_net_free(net);
    return st;
}

static int cmp_name(const void *key, const void *elem)
{
    return strcmp(key, ((const struct cxr_train_sample *)elem)->name);
}

enum cxr_status cxr_tr_full_size_val(struct train_run *R, struct cxr_train_dataset **full,
                                     int32_t **idx)
{
    *full = NULL;
    *idx = R->val_idx;
    bool capped = false;
    for (size_t i = 0; i < R->n_val && !capped; i++) {
        const struct cxr_train_sample *s = &R->vsrc->samples[R->val_idx[i]];
        capped = s->width != s->source_width || s->height != s->source_height;
    }
    if (!capped)
        return CXR_OK;
    cxr_tr_log(R, "reading the validation images again at full size (the memory cap reduced "
                  "some), so the thresholds are calibrated on exactly what inference sees\n");
    struct cxr_train_dataset_options dopt;
    cxr_train_dataset_options_init(&dopt, R->meta);
    dopt.label_map = R->o->label_map;
    dopt.allow_outside = R->o->allow_outside;
    dopt.threads = R->o->threads;
    dopt.max_scale = 1e6;
    char derr[CXR_ERRLEN] = "";
    struct cxr_train_dataset *d = NULL;
    enum cxr_status st = cxr_train_dataset_load(R->vsrc->source, &dopt, &d, derr);
    if (st != CXR_OK)
        return cxr_tr_err(R, st, "%s", derr);
    int32_t *map = malloc((R->n_val ? R->n_val : 1) * sizeof *map);
    if (!map) {
        cxr_train_dataset_free(d);
        return cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < R->n_val; i++) {
        const char *name = R->vsrc->samples[R->val_idx[i]].name;
        const struct cxr_train_sample *f =
            bsearch(name, d->samples, d->count, sizeof *d->samples, cmp_name);
        if (!f || strcmp(f->sha256, R->vsrc->samples[R->val_idx[i]].sha256) != 0) {
            free(map);
            cxr_train_dataset_free(d);
            return cxr_tr_err(R, CXR_ERR_TRIAGE_ARCHIVE, "%s changed while training (%s)",
                              R->vsrc->source, name);
        }
        map[i] = (int32_t)(f - d->samples);
    }
    *full = d;
    *idx = map;
    return CXR_OK;
}
