/* cxr/report.h — the training/evaluation report: ONE self-contained HTML
 * file (inline CSS and SVG, thumbnails as base64 PNG data URIs; no script,
 * no network reference) that an admin opens in any browser or archives.
 *
 * Contents: title with the model's name, version, architecture and SHA-256;
 * the data (per-class counts per split, digest, skipped entries with the
 * reason); loss and accuracy per epoch for training and validation (when
 * epochs are given); the ROC curve with its AUC; the confusion matrix at the
 * operating threshold; sensitivity, specificity, accuracy, PPV, NPV and AUC
 * with bootstrap 95 % intervals; the operating and urgent thresholds; and a
 * grid of thumbnails, label against prediction and probability,
 * misclassified first (most confident error first), then correct cases
 * nearest the threshold.
 *
 * The document is well-formed XML as well as HTML (every element closed,
 * attributes quoted, all text escaped), so XML tools can check it.
 * Everything given is borrowed for the duration of the call only.
 * Thread-safe (no global state).
 */
#ifndef CXR_REPORT_H
#define CXR_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "cxr/dataset.h"
#include "cxr/nn.h"
#include "cxr/nn_train.h"
#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One training epoch; NaN for a value not measured. */
struct cxr_train_report_epoch {
    int32_t epoch; /* 1-based */
    double train_loss, train_accuracy;
    double val_loss, val_accuracy, val_auc;
    double learning_rate; /* at the end of the epoch */
    double seconds;
};

/* One evaluated case. `label` is the true class index; `probability` is
 * p(positive class). pixels (8-bit grey, borrowed) may be NULL: no thumbnail. */
struct cxr_train_report_case {
    const char *name;
    int32_t label;
    double probability;
    const uint8_t *pixels;
    int32_t width, height, stride;
};

/* A row of the data table: how many samples of each class (and patient
 * groups, -1 when unknown) one split holds. */
struct cxr_train_report_split {
    const char *name; /* "train", "validation", "test" */
    int64_t counts[CXR_NN_MAX_CLASSES];
    int64_t groups;
};

struct cxr_train_report {
    const char *title;   /* "Training report"; NULL: "cxr-triage report" */
    const char *command; /* the command line, shown verbatim; may be NULL */
    /* the model */
    const struct cxr_nn_model_meta *meta; /* name, version, arch, classes, positive class */
    const char *model_sha256;
    const char *model_path;
    /* the data */
    const char *data_source;
    const char *data_kind;
    const char *data_digest;
    const struct cxr_train_report_split *splits;
    int32_t split_count;
    const struct cxr_train_skip *skipped;
    size_t skipped_count;
    double age_min_years, age_max_years; /* NaN: unknown */
    /* training curves (optional: epoch_count 0 for `evaluate`) */
    const struct cxr_train_report_epoch *epochs;
    int32_t epoch_count;
    /* the evaluated split: every case, with the metrics computed from them */
    const char *eval_name; /* "validation", "test" */
    const struct cxr_train_report_case *cases;
    size_t case_count;
    const struct cxr_nn_eval *operating; /* at the operating threshold (required) */
    const struct cxr_nn_eval *urgent;    /* at the urgent threshold; may be NULL */
    double target_sensitivity;           /* how the threshold was chosen; NaN: not shown */
    double urgent_specificity;           /* NaN: not shown */
    /* thumbnails */
    int32_t max_thumbnails; /* 0: 60 */
    int32_t thumbnail_size; /* longest side in pixels; 0: 96 */
    /* further facts shown as a table: notes[2i] = key, notes[2i+1] = value
     * (seed, epochs, time taken, machine, backend) */
    const char *const *notes;
    int32_t note_count; /* pairs */
    /* warnings shown prominently under the title (a weak model, evaluated
     * images the model was trained on); may be NULL */
    const char *const *warnings;
    int32_t warning_count;
};
void cxr_train_report_init(struct cxr_train_report *r);

/* Renders the report into *html (malloc'd, NUL-terminated, caller frees).
 * CXR_ERR_INVALID_ARG without `operating` or with a class index out of
 * range; CXR_ERR_LIMIT past 512 MiB. */
enum cxr_status cxr_train_report_render(const struct cxr_train_report *r, char **html, size_t *len,
                                        char *err);

/* Renders and writes to `path` atomically (temporary file in the same
 * folder, fsync, rename). */
enum cxr_status cxr_train_report_write(const struct cxr_train_report *r, const char *path,
                                       char *err);

#ifdef __cplusplus
}
#endif
#endif
