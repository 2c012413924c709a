/* train_run.c — `cxr-triage train` as a library call (cxr/train.h): the
 * model to start from, the epochs (batches, progress, validation, the best
 * model, early stopping), checkpoints every epoch and on SIGINT, resume.
 * Data: train_run_data.c; calibration, model file and report:
 * train_run_out.c. */
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "train_run_internal.h"

double cxr_tr_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cxr_tr_log(struct train_run *R, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(R->log, fmt, ap);
    va_end(ap);
    fflush(R->log);
}

enum cxr_status cxr_tr_err(struct train_run *R, enum cxr_status st, const char *fmt, ...)
{
    if (R->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(R->err, CXR_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return st;
}

void cxr_train_options_init(struct cxr_train_options *o)
{
    memset(o, 0, sizeof *o);
    o->val_fraction = 0.25;
    o->arch = CXR_NN_ARCH_RESNET18;
    o->base_width = 64;
    o->age_min_years = o->age_max_years = NAN;
    o->input_height = o->input_width = 224;
    o->storage = CXR_NN_DTYPE_F32;
    o->epochs = 10;
    o->batch = 32;
    o->lr = 3e-3;
    o->weight_decay = 1e-4;
    o->optimizer = CXR_NN_OPTIMIZER_ADAMW;
    o->clip_norm = 1.0;
    o->augment = true;
    o->seed = 1;
    o->patience = 0;
    o->target_sensitivity = 0.95;
    o->urgent_specificity = 0.95;
    o->resamples = 2000;
    o->precision = CXR_NN_PRECISION_FP32;
}

/* Parses "A,B,C" into the metadata's class names (2..16 names). */
static bool parse_classes(const char *s, struct cxr_nn_model_meta *meta)
{
    int32_t n = 0;
    const char *p = s;
    while (*p && n < CXR_NN_MAX_CLASSES) {
        size_t l = strcspn(p, ", ");
        if (l == 0 || l >= sizeof meta->class_names[0])
            return false;
        memcpy(meta->class_names[n], p, l);
        meta->class_names[n][l] = '\0';
        n++;
        p += l;
        while (*p == ',' || *p == ' ')
            p++;
    }
    if (*p || n < 2)
        return false;
    meta->num_classes = n;
    meta->positive_class = n - 1;
    for (int32_t k = 0; k < n; k++)
        if (!strcasecmp(meta->class_names[k], "PNEUMONIA"))
            meta->positive_class = k;
    return true;
}

static bool same_classes(const struct cxr_nn_model_meta *a, const struct cxr_nn_model_meta *b)
{
    if (a->num_classes != b->num_classes)
        return false;
    for (int32_t k = 0; k < a->num_classes; k++)
        if (strcmp(a->class_names[k], b->class_names[k]) != 0)
            return false;
    return true;
}

/* The model to train: --init's weights (fc re-initialised when the classes
 * differ), or a seeded He initialisation. */
static enum cxr_status make_model(struct train_run *R)
{
    const struct cxr_train_options *o = R->o;
    char nerr[CXR_ERRLEN] = "";
    struct cxr_nn_model_meta meta;
    struct cxr_nn_model *init = NULL;
    enum cxr_status st;
    if (o->init) {
        if ((st = cxr_nn_model_load(o->init, &init, nerr)) != CXR_OK)
            return cxr_tr_err(R, st, "--init: %s", nerr);
        const struct cxr_nn_model_meta *im = cxr_nn_model_meta(init);
        if (o->arch_given && o->arch != im->arch) {
            cxr_nn_model_free(init);
            return cxr_tr_err(R, CXR_ERR_USAGE, "--arch %s but --init %s is a %s",
                              cxr_nn_arch_name(o->arch), o->init, cxr_nn_arch_name(im->arch));
        }
        cxr_nn_model_meta_defaults(&meta, im->arch);
        meta.channels = im->channels;
        memcpy(meta.mean, im->mean, sizeof meta.mean);
        memcpy(meta.std, im->std, sizeof meta.std);
        meta.resize_mode = im->resize_mode;
        meta.contrast = o->contrast_given ? o->contrast : im->contrast;
        meta.input_height = o->input_given ? o->input_height : im->input_height;
        meta.input_width = o->input_given ? o->input_width : im->input_width;
        meta.num_classes = im->num_classes;
        memcpy(meta.class_names, im->class_names, sizeof meta.class_names);
        meta.positive_class = im->positive_class;
    } else {
        cxr_nn_model_meta_defaults(&meta, o->arch);
        meta.input_height = o->input_height;
        meta.input_width = o->input_width;
        meta.contrast = o->contrast;
    }
    if (o->classes && !parse_classes(o->classes, &meta)) {
        cxr_nn_model_free(init);
        return cxr_tr_err(R, CXR_ERR_USAGE,
                          "--classes expects 2..%d names separated by commas, "
                          "got '%s'",
                          CXR_NN_MAX_CLASSES, o->classes);
    }
    int32_t width =
        init ? (int32_t)cxr_nn_model_tensor_find(init, "conv1.weight")->shape[0] : o->base_width;
    if ((st = cxr_nn_model_init_width(&meta, width, o->seed, &R->model, nerr)) != CXR_OK) {
        cxr_nn_model_free(init);
        return cxr_tr_err(R, st, "model: %s", nerr);
    }
    if (init && cxr_nn_model_meta(init)->training_image_count > 0) {
        const struct cxr_nn_model_meta *im = cxr_nn_model_meta(init);
        size_t n = im->training_digest_count;
        if (n && !(R->init_digests = malloc(n * sizeof *R->init_digests))) {
            cxr_nn_model_free(init);
            return cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
        }
        if (n)
            memcpy(R->init_digests, im->training_digests, n * sizeof *R->init_digests);
        R->n_init_digests = n;
        R->init_sample_bits = im->training_digest_sample_bits;
        R->init_images = im->training_image_count;
    }
    if (init) {
        bool fc_too = same_classes(cxr_nn_model_meta(init), &meta);
        for (uint32_t i = 0; i < cxr_nn_model_tensor_count(R->model); i++) {
            struct cxr_nn_tensor *t = cxr_nn_model_tensor_at(R->model, i);
            const struct cxr_nn_tensor *s = cxr_nn_model_tensor_find(init, t->name);
            if (!strncmp(t->name, "fc.", 3) && !fc_too)
                continue;
            if (!s || s->nbytes != t->nbytes || s->dtype != t->dtype) {
                cxr_nn_model_free(init);
                return cxr_tr_err(R, CXR_ERR_NN_SHAPE, "--init: tensor '%s' does not fit", t->name);
            }
            memcpy(t->data, s->data, t->nbytes);
        }
        if (!fc_too) {
            snprintf(R->note, sizeof R->note,
                     "--init %s has other classes: its fc layer was "
                     "re-initialised (seed %llu) for %d classes",
                     o->init, (unsigned long long)o->seed, (int)meta.num_classes);
            cxr_tr_log(R, "note: %s\n", R->note);
        } else {
            snprintf(R->note, sizeof R->note, "started from %s (sha256 %.16s...)%s", o->init,
                     cxr_nn_model_sha256(init), o->freeze_backbone ? ", backbone frozen" : "");
        }
        cxr_nn_model_free(init);
    }
    R->meta = cxr_nn_model_meta_mut(R->model);
    return CXR_OK;
}

/* ------------------------------------------------------------ progress */

static void fmt_time(char *buf, size_t len, double s)
{
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, len, "--:--");
    else if (s >= 3600)
        snprintf(buf, len, "%d:%02d:%02d", (int)(s / 3600), (int)fmod(s / 60, 60),
                 (int)fmod(s, 60));
    else
        snprintf(buf, len, "%d:%02d", (int)(s / 60), (int)fmod(s, 60));
}

static void show_progress(struct train_run *R, int32_t epoch, int32_t k, double loss, double acc,
                          double rate, double eta, bool force)
{
    const struct cxr_train_options *o = R->o;
    char e[32];
    fmt_time(e, sizeof e, eta);
    if (o->progress_bar) {
        int width = 20, done = (int)((double)(k + 1) / R->steps_per_epoch * width);
        char bar[32];
        for (int i = 0; i < width; i++)
            bar[i] = i < done ? '#' : '.';
        bar[width] = '\0';
        fprintf(R->log,
                "\r\033[Kepoch %d/%d [%s] batch %d/%d  loss %.4f  acc %.3f  %.1f img/s  "
                "ETA %s",
                (int)epoch + 1, (int)o->epochs, bar, (int)k + 1, (int)R->steps_per_epoch, loss, acc,
                rate, e);
        fflush(R->log);
        return;
    }
    int every = R->steps_per_epoch / 10 > 0 ? R->steps_per_epoch / 10 : 1;
    if (force || (k + 1) % every == 0)
        cxr_tr_log(R, "epoch %d/%d batch %d/%d loss %.4f acc %.3f %.1f img/s ETA %s\n",
                   (int)epoch + 1, (int)o->epochs, (int)k + 1, (int)R->steps_per_epoch, loss, acc,
                   rate, e);
}

/* ------------------------------------------------------------ checkpoints */

struct position {
    int32_t epoch, batch; /* where to continue */
    double loss_sum;      /* of the epoch so far */
    int64_t correct, seen;
};

/* A JSON number, or null for NaN and the infinities (json-c would write
 * NaN, which is not JSON); jnum reads null back as NaN. */
static struct json_object *json_num(double v)
{
    return isfinite(v) ? json_object_new_double(v) : NULL;
}

static char *resume_json(struct train_run *R, const struct position *pos)
{
    struct json_object *o = json_object_new_object(), *h = json_object_new_array();
    if (!o || !h) {
        json_object_put(o);
        json_object_put(h);
        return NULL;
    }
    json_object_object_add(o, "epoch", json_object_new_int(pos->epoch));
    json_object_object_add(o, "batch", json_object_new_int(pos->batch));
    json_object_object_add(o, "loss_sum", json_num(pos->loss_sum));
    json_object_object_add(o, "correct", json_object_new_int64(pos->correct));
    json_object_object_add(o, "seen", json_object_new_int64(pos->seen));
    json_object_object_add(o, "best_auc", json_num(R->best_auc));
    json_object_object_add(o, "best_epoch", json_object_new_int(R->best_epoch));
    json_object_object_add(o, "bad_epochs", json_object_new_int(R->bad_epochs));
    json_object_object_add(o, "images_trained", json_object_new_int64(R->images_trained));
    json_object_object_add(o, "train_seconds", json_num(R->train_seconds));
    json_object_object_add(o, "seed", json_object_new_uint64(R->o->seed));
    json_object_object_add(o, "batch_size", json_object_new_int(R->batch));
    json_object_object_add(o, "epochs", json_object_new_int(R->o->epochs));
    json_object_object_add(o, "data_digest", json_object_new_string(R->ds->digest));
    json_object_object_add(o, "val_digest",
                           json_object_new_string(R->vds ? R->vds->digest : "split"));
    for (int32_t i = 0; i < R->n_hist; i++) {
        const struct cxr_train_report_epoch *e = &R->hist[i];
        struct json_object *r = json_object_new_array();
        double v[] = {e->epoch,        e->train_loss, e->train_accuracy, e->val_loss,
                      e->val_accuracy, e->val_auc,    e->learning_rate,  e->seconds};
        for (size_t j = 0; j < sizeof v / sizeof v[0]; j++)
            json_object_array_add(r, json_num(v[j]));
        json_object_array_add(h, r);
    }
    json_object_object_add(o, "history", h);
    const char *t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    char *copy = t ? strdup(t) : NULL;
    json_object_put(o);
    return copy;
}

static enum cxr_status save_checkpoint(struct train_run *R, const struct position *pos)
{
    char *extra = resume_json(R, pos);
    if (!extra)
        return cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
    char nerr[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_nn_trainer_checkpoint_save(R->tr, R->ckpt_path, extra, nerr);
    free(extra);
    if (st != CXR_OK)
        return cxr_tr_err(R, st, "%s", nerr);
    return CXR_OK;
}

/* A number of the checkpoint; NaN where it is null (written for NaN) or absent. */
static double jnum(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) && v ? json_object_get_double(v) : NAN;
}

static const char *jstr(struct json_object *o, const char *k)
{
    struct json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

static enum cxr_status load_checkpoint(struct train_run *R, struct position *pos)
{
    char nerr[CXR_ERRLEN] = "", *extra = NULL;
    enum cxr_status st = cxr_nn_trainer_checkpoint_load(R->tr, R->ckpt_path, &extra, nerr);
    if (st != CXR_OK)
        return cxr_tr_err(R, st, "--resume: %s", nerr);
    struct json_object *o = json_tokener_parse(extra);
    free(extra);
    if (!o)
        return cxr_tr_err(R, CXR_ERR_INVALID_ARG, "--resume: %s has no training position",
                          R->ckpt_path);
    st = CXR_OK;
    if ((uint64_t)jnum(o, "seed") != R->o->seed || (int32_t)jnum(o, "batch_size") != R->batch ||
        (int32_t)jnum(o, "epochs") != R->o->epochs ||
        strcmp(jstr(o, "data_digest"), R->ds->digest) != 0 ||
        strcmp(jstr(o, "val_digest"), R->vds ? R->vds->digest : "split") != 0) {
        st = cxr_tr_err(R, CXR_ERR_USAGE,
                        "--resume: the checkpoint was made with other data or "
                        "options (seed %.0f, batch %.0f, epochs %.0f, data %s); run with the "
                        "same --data/--val/--seed/--batch/--epochs",
                        jnum(o, "seed"), jnum(o, "batch_size"), jnum(o, "epochs"),
                        jstr(o, "data_digest"));
        goto done;
    }
    pos->epoch = (int32_t)jnum(o, "epoch");
    pos->batch = (int32_t)jnum(o, "batch");
    pos->loss_sum = jnum(o, "loss_sum");
    pos->correct = (int64_t)jnum(o, "correct");
    pos->seen = (int64_t)jnum(o, "seen");
    R->best_auc = jnum(o, "best_auc");
    R->best_epoch = (int32_t)jnum(o, "best_epoch");
    R->bad_epochs = (int32_t)jnum(o, "bad_epochs");
    R->images_trained = (int64_t)jnum(o, "images_trained");
    R->train_seconds = jnum(o, "train_seconds");
    struct json_object *h;
    if (json_object_object_get_ex(o, "history", &h) && json_object_is_type(h, json_type_array)) {
        size_t n = json_object_array_length(h);
        for (size_t i = 0; i < n && (int32_t)i < R->o->epochs; i++) {
            struct json_object *r = json_object_array_get_idx(h, i);
            double v[8];
            for (int j = 0; j < 8; j++) {
                struct json_object *x = json_object_array_get_idx(r, (size_t)j);
                v[j] = x ? json_object_get_double(x) : NAN; /* null: NaN (no AUC yet) */
            }
            R->hist[R->n_hist++] = (struct cxr_train_report_epoch){.epoch = (int32_t)v[0],
                                                                   .train_loss = v[1],
                                                                   .train_accuracy = v[2],
                                                                   .val_loss = v[3],
                                                                   .val_accuracy = v[4],
                                                                   .val_auc = v[5],
                                                                   .learning_rate = v[6],
                                                                   .seconds = v[7]};
        }
    }
    cxr_tr_log(R, "resumed from %s: epoch %d, batch %d (step %lld)\n", R->ckpt_path,
               (int)pos->epoch + 1, (int)pos->batch, (long long)cxr_nn_trainer_steps(R->tr));
done:
    json_object_put(o);
    return st;
}

/* ------------------------------------------------------------ epochs */

/* Validation at the end of an epoch; keeps the best model. */
static enum cxr_status end_epoch(struct train_run *R, int32_t epoch, double train_loss,
                                 double train_acc, double seconds, bool *stop_now)
{
    char nerr[CXR_ERRLEN] = "", terr[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_nn_trainer_export(R->tr, R->model, nerr);
    if (st != CXR_OK)
        return cxr_tr_err(R, st, "%s", nerr);
    double *probs = malloc(R->n_val * sizeof *probs);
    uint8_t *lab = malloc(R->n_val);
    if (!probs || !lab) {
        free(probs);
        free(lab);
        return cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
    }
    double vloss = NAN, vacc = NAN, t0 = cxr_tr_now();
    st = cxr_tr_score(R->b, R->model, R->vsrc, R->val_idx, R->n_val, R->batch, probs, &vloss, &vacc,
                      terr);
    for (size_t i = 0; i < R->n_val; i++)
        lab[i] = R->vsrc->samples[R->val_idx[i]].label == R->meta->positive_class;
    double auc = st == CXR_OK ? cxr_nn_auc(probs, lab, R->n_val) : NAN;
    free(probs);
    free(lab);
    if (st != CXR_OK)
        return cxr_tr_err(R, st, "validation: %s", terr);
    struct cxr_train_report_epoch *e = &R->hist[R->n_hist++];
    *e = (struct cxr_train_report_epoch){.epoch = epoch + 1,
                                         .train_loss = train_loss,
                                         .train_accuracy = train_acc,
                                         .val_loss = vloss,
                                         .val_accuracy = vacc,
                                         .val_auc = auc,
                                         .learning_rate = cxr_nn_trainer_next_lr(R->tr),
                                         .seconds = seconds + (cxr_tr_now() - t0)};
    bool better = isfinite(auc) && (!isfinite(R->best_auc) || auc > R->best_auc);
    if (better) {
        R->best_auc = auc;
        R->best_epoch = epoch + 1;
        R->bad_epochs = 0;
        if ((st = cxr_nn_model_save(R->model, R->best_path, CXR_NN_DTYPE_F32, nerr)) != CXR_OK)
            return cxr_tr_err(R, st, "%s", nerr);
    } else {
        R->bad_epochs++;
    }
    if (R->o->progress_bar)
        fprintf(R->log, "\r\033[K");
    cxr_tr_log(R,
               "epoch %d/%d: train loss %.4f acc %.3f | validation loss %.4f acc %.3f AUC "
               "%.4f%s | %.0f s\n",
               (int)epoch + 1, (int)R->o->epochs, train_loss, train_acc, vloss, vacc, auc,
               better ? " (best)" : "", e->seconds);
    *stop_now = R->o->patience > 0 && R->bad_epochs >= R->o->patience;
    if (*stop_now)
        cxr_tr_log(R, "early stop: no better validation AUC for %d epochs\n", (int)R->bad_epochs);
    return CXR_OK;
}

/* One batch being prepared, possibly on a thread of its own. */
struct prep {
    const struct train_run *R;
    const int32_t *order;
    int32_t epoch, k;
    float *x;
    int32_t *y;
    uint8_t *scratch;
    enum cxr_status st;
    char err[CXR_ERRLEN];
    pthread_t thread;
    bool running;
};

static void *prep_main(void *arg)
{
    struct prep *p = arg;
    p->st = cxr_tr_make_batch(p->R, p->order, p->epoch, p->k, p->x, p->y, p->scratch, p->err);
    return NULL;
}

/* Starts preparing batch k of the epoch into p (on a thread when `thread`,
 * else now). */
static void prep_start(struct prep *p, const int32_t *order, int32_t epoch, int32_t k, bool thread)
{
    p->order = order;
    p->epoch = epoch;
    p->k = k;
    p->st = CXR_OK;
    p->err[0] = '\0';
    p->running = thread && pthread_create(&p->thread, NULL, prep_main, p) == 0;
    if (!p->running)
        prep_main(p);
}

static enum cxr_status prep_wait(struct train_run *R, struct prep *p)
{
    if (p->running) {
        pthread_join(p->thread, NULL);
        p->running = false;
    }
    return p->st == CXR_OK ? CXR_OK : cxr_tr_err(R, p->st, "%s", p->err);
}

static enum cxr_status train_epochs(struct train_run *R, struct position *pos, bool *early)
{
    const struct cxr_train_options *o = R->o;
    const struct cxr_nn_model_meta *m = R->meta;
    size_t per = (size_t)m->channels * (size_t)m->input_height * (size_t)m->input_width;
    struct prep buf[2];
    int32_t *order = NULL;
    enum cxr_status st = CXR_OK;
    bool thread = !o->no_prefetch;
    memset(buf, 0, sizeof buf);
    for (int i = 0; i < 2; i++) {
        buf[i].R = R;
        buf[i].x = malloc((size_t)R->batch * per * sizeof(float));
        buf[i].y = malloc((size_t)R->batch * sizeof(int32_t));
        buf[i].scratch = malloc(R->max_pixels ? R->max_pixels : 1);
        if (!buf[i].x || !buf[i].y || !buf[i].scratch) {
            st = cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory for a batch");
            goto done;
        }
    }
    int64_t total_steps = (int64_t)o->epochs * R->steps_per_epoch;
    for (int32_t epoch = pos->epoch; epoch < o->epochs; epoch++) {
        free(order);
        if (!(order = cxr_tr_epoch_order(R, epoch))) {
            st = cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
            goto done;
        }
        double t_epoch = cxr_tr_now();
        if (pos->batch < R->steps_per_epoch)
            prep_start(&buf[pos->batch & 1], order, epoch, pos->batch, false);
        for (int32_t k = pos->batch; k < R->steps_per_epoch; k++) {
            double t0 = cxr_tr_now();
            struct prep *cur = &buf[k & 1];
            if ((st = prep_wait(R, cur)) != CXR_OK)
                goto done;
            /* the next batch is prepared while this one trains */
            if (k + 1 < R->steps_per_epoch)
                prep_start(&buf[(k + 1) & 1], order, epoch, k + 1, thread);
            struct cxr_nn_step_stats s;
            if ((st = cxr_nn_trainer_step(R->tr, cur->x, cur->y, R->batch, &s)) != CXR_OK) {
                cxr_tr_err(R, st, "epoch %d batch %d: %s", (int)epoch + 1, (int)k + 1,
                           cxr_nn_trainer_last_error(R->tr));
                goto done;
            }
            R->train_seconds += cxr_tr_now() - t0;
            R->images_trained += R->batch;
            pos->loss_sum += s.loss * R->batch;
            pos->correct += s.correct;
            pos->seen += R->batch;
            pos->batch = k + 1;
            double rate = R->train_seconds > 0 ? (double)R->images_trained / R->train_seconds : 0;
            int64_t left = total_steps - cxr_nn_trainer_steps(R->tr);
            show_progress(R, epoch, k, pos->loss_sum / (double)pos->seen,
                          (double)pos->correct / (double)pos->seen, rate,
                          rate > 0 ? (double)left * R->batch / rate : -1, false);
            if (o->stop && *o->stop) {
                if (o->progress_bar)
                    fprintf(R->log, "\n");
                if ((st = save_checkpoint(R, pos)) == CXR_OK) {
                    cxr_tr_log(R,
                               "interrupted: checkpoint written to %s; continue with the same "
                               "command and --resume\n",
                               R->ckpt_path);
                    st = cxr_tr_err(R, CXR_ERR_CANCELLED, "interrupted at epoch %d batch %d",
                                    (int)epoch + 1, (int)k + 1);
                }
                goto done;
            }
        }
        bool stop_now = false;
        if ((st = end_epoch(R, epoch, pos->loss_sum / (double)pos->seen,
                            (double)pos->correct / (double)pos->seen, cxr_tr_now() - t_epoch,
                            &stop_now)) != CXR_OK)
            goto done;
        *pos = (struct position){.epoch = epoch + 1};
        if ((st = save_checkpoint(R, pos)) != CXR_OK)
            goto done;
        if (stop_now) {
            *early = true;
            break;
        }
        if (o->stop && *o->stop) {
            cxr_tr_log(R, "interrupted: checkpoint written to %s; continue with --resume\n",
                       R->ckpt_path);
            st = cxr_tr_err(R, CXR_ERR_CANCELLED, "interrupted after epoch %d", (int)epoch + 1);
            goto done;
        }
    }
done:
    for (int i = 0; i < 2; i++) {
        if (buf[i].running)
            pthread_join(buf[i].thread, NULL);
        free(buf[i].x);
        free(buf[i].y);
        free(buf[i].scratch);
    }
    free(order);
    return st;
}

static enum cxr_status check_options(struct train_run *R)
{
    const struct cxr_train_options *o = R->o;
    if (!o->data || !o->out)
        return cxr_tr_err(R, CXR_ERR_USAGE, "--data and --out are required");
    if (o->epochs < 1 || o->epochs > 100000 || o->batch < 2 || o->batch > 1024)
        return cxr_tr_err(R, CXR_ERR_USAGE, "--epochs 1..100000 and --batch 2..1024");
    if (o->freeze_backbone && !o->init)
        return cxr_tr_err(R, CXR_ERR_USAGE,
                          "--freeze-backbone needs --init (a trained backbone "
                          "to keep)");
    if (!(o->val_fraction > 0 && o->val_fraction < 1) && !o->val)
        return cxr_tr_err(R, CXR_ERR_USAGE, "the validation fraction must be in (0, 1)");
    if (!(o->target_sensitivity > 0 && o->target_sensitivity <= 1) ||
        !(o->urgent_specificity > 0 && o->urgent_specificity <= 1))
        return cxr_tr_err(R, CXR_ERR_USAGE,
                          "--target-sensitivity and the urgent specificity "
                          "must be in (0, 1]");
    if (o->patience < 0)
        return cxr_tr_err(R, CXR_ERR_USAGE, "--patience must be >= 0");
    return CXR_OK;
}

static enum cxr_status prepare(struct train_run *R)
{
    const struct cxr_train_options *o = R->o;
    enum cxr_status st;
    char nerr[CXR_ERRLEN] = "", note[CXR_ERRLEN] = "";
    if (o->checkpoint_dir)
        snprintf(R->ckpt_dir, sizeof R->ckpt_dir, "%s", o->checkpoint_dir);
    else
        snprintf(R->ckpt_dir, sizeof R->ckpt_dir, "%s.ckpt", o->out);
    if (mkdir(R->ckpt_dir, 0755) != 0 && errno != EEXIST)
        return cxr_tr_err(R, CXR_ERR_IO, "checkpoint folder %s: %s", R->ckpt_dir, strerror(errno));
    snprintf(R->ckpt_path, sizeof R->ckpt_path, "%s/checkpoint.safetensors", R->ckpt_dir);
    snprintf(R->best_path, sizeof R->best_path, "%s/best.safetensors", R->ckpt_dir);
    if ((st = make_model(R)) != CXR_OK || (st = cxr_tr_load_data(R)) != CXR_OK)
        return st;
    R->batch = o->batch;
    if ((size_t)R->batch > R->n_train) {
        R->batch = (int32_t)R->n_train;
        cxr_tr_log(R, "note: batch lowered to %d (the training images)\n", (int)R->batch);
    }
    R->steps_per_epoch = (int32_t)(R->n_train / (size_t)R->batch); /* the rest: next epochs */
    struct cxr_nn_backend_options bo = {
        .kind = CXR_NN_BACKEND_CPU, .precision = o->precision, .threads = o->threads};
    if ((st = cxr_nn_backend_open(&bo, &R->b, note, nerr)) != CXR_OK)
        return cxr_tr_err(R, st, "backend: %s", nerr);
    struct cxr_nn_trainer_options to;
    cxr_nn_trainer_options_defaults(&to);
    to.optimizer = o->optimizer;
    to.lr = o->lr;
    to.weight_decay = o->weight_decay;
    to.clip_norm = o->clip_norm;
    to.total_steps = (int64_t)o->epochs * R->steps_per_epoch;
    to.freeze_backbone = o->freeze_backbone;
    to.direct_conv = o->direct_conv;
    to.max_batch = R->batch;
    if (!o->balanced_sampler)
        cxr_nn_class_weights_balanced(R->train_counts, R->meta->num_classes, to.class_weights);
    if ((st = cxr_nn_trainer_new(R->b, R->model, &to, &R->tr, nerr)) != CXR_OK)
        return cxr_tr_err(R, st, "trainer: %s", nerr);
    R->hist = calloc((size_t)o->epochs, sizeof *R->hist);
    if (!R->hist)
        return cxr_tr_err(R, CXR_ERR_NOMEM, "out of memory");
    char weights[256] = "";
    if (!o->balanced_sampler)
        for (int32_t k = 0, u = 0; k < R->meta->num_classes; k++)
            u += snprintf(weights + u, sizeof weights - (size_t)u, "%s%s %.3f", k ? ", " : "",
                          R->meta->class_names[k], (double)to.class_weights[k]);
    cxr_tr_log(R, "training %s (%s) on %s: %d epochs x %d batches of %d, %s lr %g, %s%s\n",
               cxr_nn_arch_name(R->meta->arch), o->freeze_backbone ? "fc only" : "all layers",
               cxr_nn_backend_describe(R->b), (int)o->epochs, (int)R->steps_per_epoch,
               (int)R->batch, cxr_nn_optimizer_name(o->optimizer), o->lr,
               o->balanced_sampler ? "balanced sampler" : "class weights ", weights);
    return CXR_OK;
}

enum cxr_status cxr_train_run(const struct cxr_train_options *o, struct cxr_train_result *res,
                              char *err)
{
    struct train_run R = {.o = o,
                          .log = o && o->log ? o->log : stderr,
                          .err = err,
                          .t_start = cxr_tr_now(),
                          .best_auc = NAN};
    struct cxr_train_result dummy;
    if (!res)
        res = &dummy;
    memset(res, 0, sizeof *res);
    if (!o)
        return CXR_ERR_INVALID_ARG;
    enum cxr_status st = check_options(&R);
    struct position pos = {0};
    bool early = false;
    if (st == CXR_OK)
        st = prepare(&R);
    if (st == CXR_OK && o->resume)
        st = load_checkpoint(&R, &pos);
    else if (st == CXR_OK && access(R.ckpt_path, F_OK) == 0)
        cxr_tr_log(&R, "note: %s exists and will be replaced (use --resume to continue it)\n",
                   R.ckpt_path);
    if (st == CXR_OK && pos.epoch < o->epochs)
        st = train_epochs(&R, &pos, &early);
    if (st == CXR_OK) {
        res->stopped_early = early;
        st = cxr_tr_finish(&R, res);
    }
    res->train_count = R.n_train;
    res->val_count = R.n_val;
    res->skipped = (R.ds ? R.ds->skipped_count : 0) + (R.vds ? R.vds->skipped_count : 0);
    res->epochs_run = R.n_hist;
    res->seconds = cxr_tr_now() - R.t_start;
    res->images_per_second = R.train_seconds > 0 ? (double)R.images_trained / R.train_seconds : 0;
    cxr_nn_trainer_free(R.tr);
    cxr_nn_backend_close(R.b);
    cxr_nn_model_free(R.model);
    cxr_train_split_release(&R.split);
    cxr_train_dataset_free(R.ds);
    cxr_train_dataset_free(R.vds);
    free(R.val_idx);
    free(R.hist);
    free(R.init_digests);
    return st;
}
