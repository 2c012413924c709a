/* engine.c — see cxr/triage.h. The scoring path shared by the node, the
 * Orthanc plugin and the `score` command. */
#include "cxr/triage.h"

#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cxr/log.h"
#include "cxr/version.h"

struct cxr_triage_engine {
    const struct cxr_conf *conf;
    char *model_path;
    struct cxr_nn_model *model; /* kept for metadata and SHA-256 */
    struct cxr_nn_backend *backend;
    struct cxr_nn_net *net;
    pthread_mutex_t net_lock; /* a net is used by one thread at a time */
    int32_t batch_size;
    size_t input_floats;
    double operating_threshold;
    double urgent_threshold;
    char description[512];
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void cxr_triage_engine_options_init(struct cxr_triage_engine_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->backend = -1;
    opt->precision = -1;
    opt->threads = -1;
    opt->batch_size = -1;
}

const char *cxr_triage_priority_name(const struct cxr_conf *conf, enum cxr_triage_priority p)
{
    switch (p) {
    case CXR_TRIAGE_PRIORITY_URGENT: return conf ? conf->priority.urgent_name : "URGENT";
    case CXR_TRIAGE_PRIORITY_PRIORITY: return conf ? conf->priority.priority_name : "PRIORITY";
    case CXR_TRIAGE_PRIORITY_ROUTINE: return conf ? conf->priority.routine_name : "ROUTINE";
    case CXR_TRIAGE_PRIORITY_NOT_ANALYSED:
    default: return conf ? conf->priority.not_analysed_name : "NOT_ANALYSED";
    }
}

/* Maps the configuration's backend/precision words onto nn's enums. */
static enum cxr_nn_backend_kind backend_from_conf(enum cxr_conf_backend b)
{
    switch (b) {
    case CXR_CONF_BACKEND_CPU: return CXR_NN_BACKEND_CPU;
    case CXR_CONF_BACKEND_CUDA: return CXR_NN_BACKEND_CUDA;
    case CXR_CONF_BACKEND_AUTO:
    default: return CXR_NN_BACKEND_AUTO;
    }
}

static enum cxr_nn_precision precision_from_conf(enum cxr_conf_precision p)
{
    switch (p) {
    case CXR_CONF_PRECISION_FP32: return CXR_NN_PRECISION_FP32;
    case CXR_CONF_PRECISION_BF16: return CXR_NN_PRECISION_BF16;
    case CXR_CONF_PRECISION_FP16: return CXR_NN_PRECISION_FP16;
    case CXR_CONF_PRECISION_AUTO:
    default: return CXR_NN_PRECISION_AUTO;
    }
}

/* A threshold from the config when set (>= 0), else the model's value; NaN
 * from both falls back to `fallback` with a warning. */
static double pick_threshold(double conf_value, double model_value, double fallback,
                             const char *what)
{
    if (conf_value >= 0.0)
        return conf_value;
    if (!isnan(model_value))
        return model_value;
    cxr_log(CXR_LOG_WARN, "triage", "model has no calibrated %s; using %.2f", what, fallback);
    return fallback;
}

/* Whether all k logits are finite numbers. */
static bool finite_output(const float *logits, int32_t k)
{
    for (int32_t c = 0; c < k; c++)
        if (!isfinite(logits[c]))
            return false;
    return true;
}

/* Scores a neutral image (every input value 0: a grey image at the model's
 * mean) through the compiled network, as every image will be: finite
 * weights can still give NaN (a negative batch-norm variance, overflowing
 * activations), and such a model must be refused at load rather than mark
 * every image not analysed. CXR_ERR_NN_NONFINITE (err says so) or the
 * backend's failure. */
static enum cxr_status self_test(struct cxr_triage_engine *e, char *err)
{
    const struct cxr_nn_model_meta *m = cxr_nn_model_meta(e->model);
    float *input = calloc(e->input_floats, sizeof(float));
    float *logits = malloc(sizeof(float) * (size_t)m->num_classes);
    if (!input || !logits) {
        free(input);
        free(logits);
        return cxr_seterr(err, CXR_ERR_NOMEM, "out of memory for the test image");
    }
    enum cxr_status st = cxr_nn_net_forward(e->net, input, 1, logits);
    if (st != CXR_OK)
        cxr_seterr(err, st, "the test image cannot be scored: %s", cxr_nn_net_last_error(e->net));
    else if (!finite_output(logits, m->num_classes))
        st = cxr_seterr(err, CXR_ERR_NN_NONFINITE,
                        "a neutral test image gives no finite score (NaN or infinity in the "
                        "output) although every weight is finite: batch-norm statistics or "
                        "weights that overflow (a damaged or badly converted model); use "
                        "another model");
    free(input);
    free(logits);
    return st;
}

enum cxr_status cxr_triage_engine_new(const struct cxr_conf *conf,
                                      const struct cxr_triage_engine_options *opt,
                                      struct cxr_triage_engine **out, char *note, char *err)
{
    char nnerr[CXR_ERRLEN] = "";
    enum cxr_status st;
    *out = NULL;
    if (!conf) {
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "no configuration given");
    }
    struct cxr_triage_engine_options defaults;
    if (!opt) {
        cxr_triage_engine_options_init(&defaults);
        opt = &defaults;
    }
    struct cxr_triage_engine *e = calloc(1, sizeof *e);
    if (!e)
        return CXR_ERR_NOMEM;
    e->conf = conf;
    pthread_mutex_init(&e->net_lock, NULL);

    if (opt->model_path)
        e->model_path = strdup(opt->model_path);
    else
        e->model_path = cxr_conf_resolve_path(conf, conf->model.path);
    if (!e->model_path) {
        st = CXR_ERR_NOMEM;
        goto fail;
    }
    st = cxr_nn_model_load(e->model_path, &e->model, nnerr);
    if (st != CXR_OK) {
        cxr_seterr(err, st, "model %s", nnerr);
        goto fail;
    }
    st = cxr_nn_model_check_finite(e->model, nnerr); /* NaN weights: every score NaN */
    if (st != CXR_OK) {
        cxr_seterr(err, st, "model %s: %s", e->model_path, nnerr);
        goto fail;
    }

    struct cxr_nn_backend_options bo = {
        .kind = opt->backend >= 0 ? (enum cxr_nn_backend_kind)opt->backend
                                  : backend_from_conf(conf->model.backend),
        .precision = opt->precision >= 0 ? (enum cxr_nn_precision)opt->precision
                                         : precision_from_conf(conf->model.precision),
        .threads = opt->threads >= 0 ? opt->threads : conf->model.threads,
        .device = 0,
    };
    st = cxr_nn_backend_open(&bo, &e->backend, note, nnerr);
    if (st != CXR_OK) {
        cxr_seterr(err, st, "backend: %s", nnerr);
        goto fail;
    }
    e->batch_size = opt->batch_size > 0 ? opt->batch_size : conf->model.batch_size;
    if (e->batch_size < 1)
        e->batch_size = 1;
    st = cxr_nn_net_new(e->backend, e->model, e->batch_size, &e->net, nnerr);
    if (st != CXR_OK) {
        cxr_seterr(err, st, "cannot prepare the network: %s", nnerr);
        goto fail;
    }

    const struct cxr_nn_model_meta *m = cxr_nn_model_meta(e->model);
    e->input_floats = (size_t)m->channels * (size_t)m->input_height * (size_t)m->input_width;
    st = self_test(e, nnerr);
    if (st != CXR_OK) {
        cxr_seterr(err, st, "model %s: %s", e->model_path, nnerr);
        goto fail;
    }
    e->operating_threshold = pick_threshold(conf->priority.priority_threshold,
                                            m->operating_threshold, 0.5, "operating threshold");
    e->urgent_threshold = pick_threshold(conf->priority.urgent_threshold, m->urgent_threshold, 0.9,
                                         "urgent threshold");
    if (e->urgent_threshold < e->operating_threshold) {
        cxr_log(CXR_LOG_WARN, "triage",
                "urgent threshold %.3f is below the operating threshold %.3f; using the latter",
                e->urgent_threshold, e->operating_threshold);
        e->urgent_threshold = e->operating_threshold;
    }
    const char *sha = cxr_nn_model_sha256(e->model);
    snprintf(e->description, sizeof e->description, "%s; model %s %s (%s, sha256 %.12s)",
             cxr_nn_backend_describe(e->backend), m->name[0] ? m->name : "(unnamed)",
             m->version[0] ? m->version : "", cxr_nn_arch_name(m->arch), sha);
    *out = e;
    return CXR_OK;

fail:
    cxr_triage_engine_free(e);
    return st;
}

void cxr_triage_engine_free(struct cxr_triage_engine *e)
{
    if (!e)
        return;
    cxr_nn_net_free(e->net);
    cxr_nn_backend_close(e->backend);
    cxr_nn_model_free(e->model);
    free(e->model_path);
    pthread_mutex_destroy(&e->net_lock);
    free(e);
}

const struct cxr_conf *cxr_triage_engine_conf(const struct cxr_triage_engine *e) { return e->conf; }

const struct cxr_nn_model_meta *cxr_triage_engine_model_meta(const struct cxr_triage_engine *e)
{
    return cxr_nn_model_meta(e->model);
}
const char *cxr_triage_engine_model_sha256(const struct cxr_triage_engine *e)
{
    return cxr_nn_model_sha256(e->model);
}
const char *cxr_triage_engine_model_path(const struct cxr_triage_engine *e)
{
    return e->model_path;
}
const char *cxr_triage_engine_describe(const struct cxr_triage_engine *e) { return e->description; }
size_t cxr_triage_engine_input_floats(const struct cxr_triage_engine *e) { return e->input_floats; }
int32_t cxr_triage_engine_batch_size(const struct cxr_triage_engine *e) { return e->batch_size; }
double cxr_triage_engine_operating_threshold(const struct cxr_triage_engine *e)
{
    return e->operating_threshold;
}
double cxr_triage_engine_urgent_threshold(const struct cxr_triage_engine *e)
{
    return e->urgent_threshold;
}

enum cxr_triage_priority cxr_triage_engine_priority(const struct cxr_triage_engine *e, double p)
{
    if (p >= e->urgent_threshold)
        return CXR_TRIAGE_PRIORITY_URGENT;
    if (p >= e->operating_threshold)
        return CXR_TRIAGE_PRIORITY_PRIORITY;
    return CXR_TRIAGE_PRIORITY_ROUTINE;
}

enum cxr_triage_priority cxr_triage_study_priority(const struct cxr_triage_result *results,
                                                   int32_t n)
{
    enum cxr_triage_priority p = CXR_TRIAGE_PRIORITY_NOT_ANALYSED;
    for (int32_t i = 0; i < n; i++)
        if (results[i].analysed && results[i].priority > p)
            p = results[i].priority;
    return p;
}

void cxr_triage_result_not_analysed(struct cxr_triage_result *res, enum cxr_status st,
                                    const char *reason)
{
    res->analysed = false;
    res->status = st;
    res->priority = CXR_TRIAGE_PRIORITY_NOT_ANALYSED;
    res->probability = NAN;
    res->finding_present = false;
    snprintf(res->reason, sizeof res->reason, "%s",
             reason && *reason ? reason : cxr_status_str(st));
}

bool cxr_triage_engine_prepare(struct cxr_triage_engine *e, struct cxr_dicom_instance *inst,
                               float *tensor, struct cxr_triage_result *res)
{
    char derr[CXR_ERRLEN] = "";
    const struct cxr_nn_model_meta *m = cxr_nn_model_meta(e->model);
    res->info = *cxr_dicom_instance_info(inst);
    res->warning[0] = '\0';

    double t0 = now_ms();
    struct cxr_dicom_gate_result gate;
    cxr_dicom_gate(&res->info, &e->conf->gate, m->age_min_years, m->age_max_years, &gate);
    double t1 = now_ms();
    res->t.gate_ms = t1 - t0;
    if (!gate.pass) {
        cxr_triage_result_not_analysed(res, CXR_ERR_DICOM_GATE, gate.reason);
        return false;
    }
    snprintf(res->warning, sizeof res->warning, "%s", gate.warning);

    struct cxr_dicom_image img = {0};
    enum cxr_status st = cxr_dicom_instance_present(inst, &img, derr);
    double t2 = now_ms();
    res->t.present_ms = t2 - t1;
    if (st != CXR_OK) {
        cxr_triage_result_not_analysed(res, st, derr);
        return false;
    }
    st = cxr_nn_preprocess_u8(m, img.pixels, img.width, img.height, img.width, NULL, tensor);
    cxr_dicom_image_release(&img);
    res->t.preprocess_ms = now_ms() - t2;
    if (st != CXR_OK) {
        cxr_triage_result_not_analysed(res, st, "the image could not be resized for the model");
        return false;
    }
    res->status = CXR_OK;
    res->reason[0] = '\0';
    return true;
}

enum cxr_status cxr_triage_engine_infer(struct cxr_triage_engine *e, const float *tensors,
                                        int32_t n, struct cxr_triage_result *results)
{
    const struct cxr_nn_model_meta *m = cxr_nn_model_meta(e->model);
    int32_t k = m->num_classes;
    float *logits = malloc(sizeof(float) * (size_t)k * (size_t)(e->batch_size));
    float probs[CXR_NN_MAX_CLASSES];
    if (!logits)
        return CXR_ERR_NOMEM;
    enum cxr_status st = CXR_OK;
    for (int32_t off = 0; off < n; off += e->batch_size) {
        int32_t nb = n - off < e->batch_size ? n - off : e->batch_size;
        double t0 = now_ms();
        pthread_mutex_lock(&e->net_lock);
        st = cxr_nn_net_forward(e->net, tensors + (size_t)off * e->input_floats, nb, logits);
        char neterr[512];
        if (st != CXR_OK)
            snprintf(neterr, sizeof neterr, "inference failed: %s", cxr_nn_net_last_error(e->net));
        pthread_mutex_unlock(&e->net_lock);
        double share = (now_ms() - t0) / nb;
        for (int32_t i = 0; i < nb; i++) {
            struct cxr_triage_result *r = &results[off + i];
            r->t.infer_ms = share;
            if (st != CXR_OK) {
                cxr_triage_result_not_analysed(r, st, neterr);
                continue;
            }
            if (k == 1) {
                probs[0] = 1.0f / (1.0f + expf(-logits[i]));
                r->probability = probs[0];
            } else {
                cxr_nn_softmax(logits + (size_t)i * k, k, probs);
                r->probability = probs[m->positive_class];
            }
            if (!finite_output(logits + (size_t)i * k, k) || !isfinite(r->probability)) {
                /* never ROUTINE with no score: the image is not analysed */
                cxr_triage_result_not_analysed(
                    r, CXR_ERR_NN_NONFINITE,
                    "the model gave no finite score for this image (NaN or infinity "
                    "in its output): not analysed; the model's weights or "
                    "normalisation may be broken for such images (report it)");
                continue;
            }
            r->analysed = true;
            r->status = CXR_OK;
            r->finding_present = r->probability >= e->operating_threshold;
            r->priority = cxr_triage_engine_priority(e, r->probability);
        }
        if (st != CXR_OK)
            break;
    }
    free(logits);
    return st;
}

enum cxr_status cxr_triage_engine_score(struct cxr_triage_engine *e,
                                        struct cxr_dicom_instance *const *insts, int32_t n,
                                        struct cxr_triage_result *results)
{
    size_t per = e->input_floats;
    int32_t bs = e->batch_size;
    float *batch = malloc(sizeof(float) * per * (size_t)bs);
    int32_t *slot = malloc(sizeof(int32_t) * (size_t)bs);
    struct cxr_triage_result *tmp = malloc(sizeof *tmp * (size_t)bs);
    enum cxr_status st = CXR_OK;
    if (!batch || !slot || !tmp) {
        st = CXR_ERR_NOMEM;
        goto done;
    }
    int32_t filled = 0;
    for (int32_t i = 0; i <= n; i++) {
        if (i < n && insts[i]) {
            if (cxr_triage_engine_prepare(e, insts[i], batch + (size_t)filled * per, &results[i]))
                slot[filled++] = i;
        }
        if (filled == bs || (i == n && filled > 0)) {
            for (int32_t j = 0; j < filled; j++)
                tmp[j] = results[slot[j]];
            enum cxr_status bst = cxr_triage_engine_infer(e, batch, filled, tmp);
            if (st == CXR_OK)
                st = bst; /* the first failure stays: a later batch must not hide it */
            for (int32_t j = 0; j < filled; j++)
                results[slot[j]] = tmp[j];
            filled = 0;
        }
    }
done:
    free(batch);
    free(slot);
    free(tmp);
    return st;
}

enum cxr_status cxr_triage_engine_write_sr(struct cxr_triage_engine *e,
                                           const struct cxr_triage_result *results, int32_t n,
                                           const struct cxr_triage_sr_predecessor *predecessor,
                                           const char *series_instance_uid, const char *path,
                                           void **buf, size_t *len, char *sop_instance_uid_out,
                                           char *err)
{
    const struct cxr_conf *conf = e->conf;
    const struct cxr_nn_model_meta *m = cxr_nn_model_meta(e->model);
    if (n <= 0) {
        if (err)
            snprintf(err, CXR_ERRLEN, "no image to report");
        return CXR_ERR_INVALID_ARG;
    }
    struct cxr_dicom_sr_image *imgs = calloc((size_t)n, sizeof *imgs);
    if (!imgs)
        return CXR_ERR_NOMEM;
    /* The patient and study values come from the first analysed image, else
     * from the first one listed (its header was read: the gate refused it). */
    const struct cxr_dicom_info *study = &results[0].info;
    for (int32_t i = 0; i < n; i++)
        if (results[i].analysed) {
            study = &results[i].info;
            break;
        }
    for (int32_t i = 0; i < n; i++) {
        const struct cxr_triage_result *r = &results[i];
        struct cxr_dicom_sr_image *im = &imgs[i];
        snprintf(im->sop_class_uid, sizeof im->sop_class_uid, "%s", r->info.sop_class_uid);
        snprintf(im->sop_instance_uid, sizeof im->sop_instance_uid, "%s", r->info.sop_instance_uid);
        snprintf(im->series_instance_uid, sizeof im->series_instance_uid, "%s",
                 r->info.series_instance_uid);
        snprintf(im->warning, sizeof im->warning, "%s", r->warning);
        if (r->analysed) {
            im->probability = r->probability;
            im->finding_present = r->finding_present;
        } else {
            im->not_analysed = true;
            snprintf(im->reason, sizeof im->reason, "%.*s", (int)sizeof im->reason - 1,
                     r->reason[0] ? r->reason : "not analysed (no reason recorded)");
        }
    }
    uint32_t count = (uint32_t)n;
    char algo_version[128];
    snprintf(algo_version, sizeof algo_version, "%s %s", m->name[0] ? m->name : "model",
             m->version[0] ? m->version : "unversioned");
    struct cxr_dicom_sr_request req = {
        .study = study,
        .images = imgs,
        .image_count = count,
        .algorithm_name = "cxr-triage pneumonia triage",
        .algorithm_version = algo_version,
        .model_sha256 = cxr_nn_model_sha256(e->model),
        .operating_threshold = e->operating_threshold,
        .device_observer_uid = conf->sr.device_observer_uid,
        .device_name = conf->node.ae_title, /* the AE title the site gave us */
        .manufacturer = conf->sr.manufacturer,
        .model_name = CXR_PRODUCT,
        .software_version = CXR_VERSION,
        .priority_name = cxr_triage_priority_name(conf, cxr_triage_study_priority(results, n)),
        .series_instance_uid = series_instance_uid,
        .series_description = conf->sr.series_description,
        .series_number = conf->sr.series_number,
        .institution_name = conf->sr.institution_name,
        .enhanced_sr = conf->sr.sop_class == CXR_CONF_SR_ENHANCED,
        .predecessor_sop_instance_uid = predecessor ? predecessor->sop_instance_uid : NULL,
        .predecessor_series_instance_uid = predecessor ? predecessor->series_instance_uid : NULL,
        .complete = true,
    };
    enum cxr_status st;
    if (path)
        st = cxr_dicom_sr_write_file(&req, path, sop_instance_uid_out, err);
    else
        st = cxr_dicom_sr_write_memory(&req, buf, len, sop_instance_uid_out, err);
    free(imgs);
    return st;
}
