/* cxr/triage.h — the engine both front doors (the DICOM node and the Orthanc
 * plugin) share: instance → gate → presentation → preprocessing → batched
 * forward pass → probability → finding and priority → SR.
 *
 * A result must be identical whichever door an image came through: both call
 * these functions and nothing else to score.
 *
 * Threads: an engine may be used from several threads; preparation
 * (cxr_triage_engine_prepare) runs concurrently, the forward pass is
 * serialised inside the engine. The engine keeps the configuration pointer it
 * was given: the caller keeps the config alive until the engine is freed.
 */
#ifndef CXR_TRIAGE_H
#define CXR_TRIAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/conf.h"
#include "cxr/dicom.h"
#include "cxr/nn.h"
#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Ordered by severity: a larger value is read sooner. */
enum cxr_triage_priority {
    CXR_TRIAGE_PRIORITY_NOT_ANALYSED = 0,
    CXR_TRIAGE_PRIORITY_ROUTINE = 1,
    CXR_TRIAGE_PRIORITY_PRIORITY = 2,
    CXR_TRIAGE_PRIORITY_URGENT = 3
};

/* The configured display name of a level ("URGENT" by default). */
const char *cxr_triage_priority_name(const struct cxr_conf *conf, enum cxr_triage_priority p);

/* Milliseconds spent per stage for one image. */
struct cxr_triage_timing {
    double read_ms;       /* parse the DICOM bytes */
    double gate_ms;       /* header checks */
    double present_ms;    /* decode + presentation pipeline */
    double preprocess_ms; /* resize + normalise */
    double infer_ms;      /* this image's share of its batch's forward pass */
    double sr_ms;         /* build and write the SR */
};

/* The outcome for one image. `analysed` false: `reason` says why in words
 * ("not a chest radiograph: CT Image Storage") and `status` which kind. */
struct cxr_triage_result {
    struct cxr_dicom_info info;
    bool analysed;
    enum cxr_status status;
    char reason[512];
    char warning[256];
    double probability;   /* p(finding), 0..1 */
    bool finding_present; /* probability >= operating threshold */
    enum cxr_triage_priority priority;
    struct cxr_triage_timing t;
};

/* Marks `res` not analysed: status `st`, priority NOT_ANALYSED, no
 * probability, and `reason` (NULL or "": the status's text). The one place
 * a result says the AI did not look (engine, node, plugin, score). */
void cxr_triage_result_not_analysed(struct cxr_triage_result *res, enum cxr_status st,
                                    const char *reason);

struct cxr_triage_engine_options {
    const char *model_path; /* overrides conf model/path when non-NULL */
    int32_t backend;        /* -1: from conf; else enum cxr_nn_backend_kind */
    int32_t precision;      /* -1: from conf; else enum cxr_nn_precision */
    int32_t threads;        /* -1: from conf */
    int32_t batch_size;     /* -1: from conf */
};
void cxr_triage_engine_options_init(struct cxr_triage_engine_options *opt);

struct cxr_triage_engine;

/* Loads the model (checked: structure, and every weight finite), opens the backend and compiles the
 * net, then scores a neutral test image (all inputs 0): a model whose output is then NaN or
 * infinite is refused (CXR_ERR_NN_NONFINITE). On failure *out == NULL and err says what (the model
 * file and its problem, or the backend). `note` (may be NULL, CXR_ERRLEN) receives the backend
 * selection note ("CPU: no CUDA backend in this build"). */
enum cxr_status cxr_triage_engine_new(const struct cxr_conf *conf,
                                      const struct cxr_triage_engine_options *opt,
                                      struct cxr_triage_engine **out, char *note, char *err);
void cxr_triage_engine_free(struct cxr_triage_engine *e);

/* The configuration the engine was built with (borrowed; lives as long as e). */
const struct cxr_conf *cxr_triage_engine_conf(const struct cxr_triage_engine *e);
const struct cxr_nn_model_meta *cxr_triage_engine_model_meta(const struct cxr_triage_engine *e);
const char *cxr_triage_engine_model_sha256(const struct cxr_triage_engine *e);
const char *cxr_triage_engine_model_path(const struct cxr_triage_engine *e);
/* "oneDNN 2.6.3 ..., model cxr-default 2026.11.1 (sha256 ab12…)" */
const char *cxr_triage_engine_describe(const struct cxr_triage_engine *e);
/* Floats in one prepared input tensor (C*H*W). */
size_t cxr_triage_engine_input_floats(const struct cxr_triage_engine *e);
int32_t cxr_triage_engine_batch_size(const struct cxr_triage_engine *e);
/* The effective thresholds (config, or the model's calibrated values). */
double cxr_triage_engine_operating_threshold(const struct cxr_triage_engine *e);
double cxr_triage_engine_urgent_threshold(const struct cxr_triage_engine *e);

/* Stage 1 for one instance: gate, decode + present, preprocess into `tensor`
 * (cxr_triage_engine_input_floats floats). Fills res->info and the timings.
 * Returns true when the image is ready for the forward pass; false when it
 * is not analysed (res->analysed false, reason and status set). Thread-safe. */
bool cxr_triage_engine_prepare(struct cxr_triage_engine *e, struct cxr_dicom_instance *inst,
                               float *tensor, struct cxr_triage_result *res);

/* Stage 2: the forward pass for n prepared tensors (n x input_floats,
 * contiguous), in chunks of the batch size; fills probability, finding,
 * priority and infer_ms of results[0..n-1] and sets analysed. An image whose
 * output is NaN or infinite is not analysed (CXR_ERR_NN_NONFINITE, with the
 * reason; the call still returns CXR_OK). On a backend failure every result
 * gets the status and reason. Thread-safe (serialised). */
enum cxr_status cxr_triage_engine_infer(struct cxr_triage_engine *e, const float *tensors,
                                        int32_t n, struct cxr_triage_result *results);

/* Both stages for a set of loaded instances (NULL entries allowed: already
 * failed, left untouched). Images that pass are batched together. Returns
 * the first failure of any batch (its images are marked not analysed with
 * the reason), else CXR_OK. */
enum cxr_status cxr_triage_engine_score(struct cxr_triage_engine *e,
                                        struct cxr_dicom_instance *const *insts, int32_t n,
                                        struct cxr_triage_result *results);

/* Priority of one probability under the engine's thresholds. */
enum cxr_triage_priority cxr_triage_engine_priority(const struct cxr_triage_engine *e, double p);

/* The study's priority: the most severe of its images' (NOT_ANALYSED only
 * when none was analysed). */
enum cxr_triage_priority cxr_triage_study_priority(const struct cxr_triage_result *results,
                                                   int32_t n);

/* Builds the SR for results[0..n-1] (all of one study; n >= 1): analysed
 * results with their finding, the others listed as not analysed with their
 * reason (their info needs the SOP Class, SOP Instance and Series UIDs). The
 * patient and study values come from the first analysed result, else from
 * results[0]. Writes it to `path` (a file) — or, with path NULL, into *buf/
 * *len (malloc'd, caller frees). `predecessor` (may be NULL) names an
 * earlier SR of the same study this one replaces; `series_instance_uid`
 * (NULL = a new one) is the SR's series. Fills sop_instance_uid_out
 * (CXR_DICOM_UID_LEN, may be NULL). */
struct cxr_triage_sr_predecessor {
    const char *sop_instance_uid;
    const char *series_instance_uid;
};
enum cxr_status cxr_triage_engine_write_sr(struct cxr_triage_engine *e,
                                           const struct cxr_triage_result *results, int32_t n,
                                           const struct cxr_triage_sr_predecessor *predecessor,
                                           const char *series_instance_uid, const char *path,
                                           void **buf, size_t *len, char *sop_instance_uid_out,
                                           char *err);

#ifdef __cplusplus
}
#endif
#endif
