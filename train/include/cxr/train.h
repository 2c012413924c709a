/* cxr/train.h — `cxr-triage train` and `cxr-triage evaluate` as library
 * calls: labeled data (cxr/dataset.h) → the trainer (cxr/nn_trainer.h) with
 * augmentation and the inference preprocessing (cxr/nn_train.h) → validation
 * each epoch → calibration of the thresholds → a model file with its
 * metadata → the HTML report (cxr/report.h); and the evaluation of any
 * model on any labeled set through exactly the inference preprocessing.
 *
 * A run is reproducible from its seed: the split, the order of each epoch
 * (shuffle seeded by (seed, epoch)), every augmentation (seeded by (seed,
 * epoch, sample index)) and the initial weights (seeded) do not depend on
 * threads or timing; a run resumed from a checkpoint continues exactly.
 *
 * Threads: one call runs on the calling thread (plus the dataset loader's
 * and the backend's threads). A SIGINT handler may set *stop; the run then
 * writes a resumable checkpoint and returns CXR_ERR_CANCELLED.
 * Errors: detail text in `err` (CXR_ERRLEN bytes, may be NULL).
 */
#ifndef CXR_TRAIN_H
#define CXR_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cxr/nn.h"
#include "cxr/nn_train.h"
#include "cxr/nn_trainer.h"
#include "cxr/status.h"
#include "cxr/triage.h" /* CXR_ERRLEN */

#ifdef __cplusplus
extern "C" {
#endif

struct cxr_train_options {
    /* data */
    const char *data;      /* --data: folder, archive or CSV manifest (required) */
    const char *val;       /* --val: explicit validation set; NULL: split --data */
    double val_fraction;   /* 0.25 (grouped by patient, stratified) */
    const char *label_map; /* "healthy=NORMAL opacity=PNEUMONIA"; NULL: none */
    bool allow_outside;    /* --allow-outside: manifest rows may leave the manifest's folder */
    const char *classes;   /* "NORMAL,PNEUMONIA" (default; --init: the model's) */
    /* model */
    enum cxr_nn_arch arch;             /* resnet18 (ignored with --init: the model's own) */
    bool arch_given;                   /* --arch was given (checked against --init) */
    int32_t base_width;                /* 64 (torchvision); smaller for tests */
    int32_t input_height, input_width; /* 224 x 224 (--init: the model's unless given) */
    bool input_given;
    enum cxr_nn_contrast contrast; /* contrast normalisation before the resize: none (default;
                                    * --init: the model's unless given) or equalize */
    bool contrast_given;
    const char *init;           /* --init MODEL: start from its weights; NULL: seeded init */
    bool freeze_backbone;       /* only the fc trains (needs --init) */
    const char *out;            /* model file to write (required) */
    enum cxr_nn_dtype storage;  /* F32 (default), BF16 or F16 */
    const char *name, *version; /* metadata; default "cxr-custom", "<UTC date>" */
    double age_min_years, age_max_years; /* intended population stated by the trainer (NaN:
                                          * the range measured on DICOM ages of the data, if any) */
    /* optimisation */
    int32_t epochs;                  /* 10 */
    int32_t batch;                   /* 32 */
    double lr;                       /* 3e-3 (one-cycle peak) */
    double weight_decay;             /* 1e-4 */
    enum cxr_nn_optimizer optimizer; /* AdamW */
    double clip_norm;                /* 1.0; 0 = no clipping */
    bool balanced_sampler;           /* draw classes equally instead of weighting the loss */
    bool augment;                    /* true: rotation/scale/translation/intensity jitter */
    bool direct_conv;                /* no Winograd (see nn_trainer.h) */
    bool no_prefetch;                /* prepare each batch before its step instead of on a second
                                      * thread during the previous step */
    uint64_t seed;                   /* 1 */
    int32_t patience;                /* early stop after this many epochs without a better
                                      * validation AUC; 0 = never */
    /* calibration */
    double target_sensitivity; /* 0.95 */
    double urgent_specificity; /* 0.95 */
    int32_t resamples;         /* bootstrap resamples for the CIs, 2000 */
    /* machinery */
    int32_t threads;                 /* compute threads, 0 = all */
    enum cxr_nn_precision precision; /* FP32 or BF16 (AUTO = FP32) */
    const char *checkpoint_dir;      /* default "<out>.ckpt" */
    bool resume;                     /* continue from <checkpoint_dir>/checkpoint.safetensors */
    const char *report;              /* HTML report file; NULL: none */
    const char *command_line;        /* shown in the report; may be NULL */
    FILE *log;                       /* progress and summaries; NULL: stderr */
    bool progress_bar;               /* one rewritten line (a terminal) instead of plain lines */
    volatile sig_atomic_t *stop;     /* set from a signal handler: checkpoint and stop */
    /* A weak model (see CXR_TRAIN_WEAK_AUC_LOWER) is written to "<out>.weak"
     * instead of `out`, which stays as it was; true: to `out` all the same.
     * Either way the run warns. */
    bool accept_weak;
};

/* The kept model is weak — not clearly better than chance — when the lower
 * bound of its validation AUC's bootstrap 95 % interval is at or below this
 * (the AUC itself when no interval was computed, --resamples 0; a validation
 * AUC that cannot be measured counts as weak). */
#define CXR_TRAIN_WEAK_AUC_LOWER 0.6
void cxr_train_options_init(struct cxr_train_options *o);

struct cxr_train_result {
    int32_t epochs_run;       /* epochs completed in this call and before (resume) */
    int32_t best_epoch;       /* 1-based, the one kept */
    double best_val_auc;      /* during training (memory-capped images) */
    double seconds;           /* wall time of this call */
    double images_per_second; /* training images per second of training time */
    double operating_threshold, urgent_threshold;
    struct cxr_nn_eval validation; /* the kept model on the validation images as inference
                                    * sees them, at the operating threshold (its auc is
                                    * the one in the model's metrics) */
    size_t train_count, val_count;
    size_t skipped; /* entries not used (both sources) */
    bool stopped_early;
    char model_sha256[65];
    bool weak;             /* CXR_TRAIN_WEAK_AUC_LOWER: the run warned */
    char model_path[4300]; /* where the model was written: out, or "<out>.weak" for a weak
                            * model without accept_weak */
};

/* Trains, calibrates, writes the model (and the report): to o->out, or to
 * "<out>.weak" when it is weak and o->accept_weak is false (res->weak and
 * res->model_path say which; CXR_OK either way). On
 * CXR_ERR_CANCELLED a checkpoint was written and `--resume` continues.
 * Returns CXR_ERR_USAGE for inconsistent options (message says which). */
enum cxr_status cxr_train_run(const struct cxr_train_options *o, struct cxr_train_result *res,
                              char *err);

struct cxr_train_evaluate_options {
    const char *model; /* required */
    const char *data;  /* required */
    const char *label_map;
    bool allow_outside; /* manifest rows may leave the manifest's folder */
    const char *report; /* NULL: none */
    const char *command_line;
    int32_t threads;
    enum cxr_nn_precision precision;
    int32_t batch;     /* images per forward pass, 16 */
    int32_t resamples; /* 2000 */
    uint64_t seed;     /* bootstrap seed, 1 */
    FILE *log;         /* NULL: stderr */
    /* Which DICOM entries are scored: the node's gate (e.g. the configuration's
     * conf->gate), so that the figures describe the images the node analyses;
     * NULL: the permissive training gate (cxr_train_dataset_gate_defaults). */
    const struct cxr_conf_gate *gate;
    /* Recalibration on these images (a site's own labeled films): the
     * thresholds chosen as `train` chooses them on validation data, written
     * with the same weights to `calibrate_out` (NULL: none). The metrics
     * printed stay those at the model's own thresholds. */
    const char *calibrate_out;
    double target_sensitivity; /* 0.95 */
    double urgent_specificity; /* 0.95 */
};
void cxr_train_evaluate_options_init(struct cxr_train_evaluate_options *o);

struct cxr_train_evaluate_result {
    struct cxr_nn_eval operating;          /* at the model's operating threshold */
    struct cxr_nn_eval urgent;             /* at its urgent threshold */
    double loss;                           /* mean cross-entropy */
    struct cxr_nn_reliability reliability; /* 10 bins of p(positive) */
    size_t count, skipped;
    char digest[72];
    bool recalibrated;                       /* calibrate_out written */
    struct cxr_nn_calibration recalibration; /* its thresholds and metrics on these images */
    char recalibrated_sha256[65];
    /* Evaluated images the model was trained on, by the digests of their
     * files against the model's list (cxr_nn_model_meta.training_digests).
     * training_list false: the model carries no list, nothing can be told. */
    bool training_list;
    int64_t training_overlap;         /* how many (estimated when the list is a sample) */
    double training_overlap_fraction; /* of the evaluated images; NaN: cannot be told */
    bool training_overlap_estimated;  /* from a 1-in-2^k sample of the list */
};

/* Scores every usable image of `data` with the model: the presented 8-bit
 * image at its own size (no memory-cap downscale) → cxr_nn_preprocess_u8 →
 * forward → softmax, as the engine does; metrics at the model's thresholds
 * with bootstrap 95 % intervals. Evaluated images that the model was trained
 * on (its list of training images) are counted, and warned about on the log
 * and in the report: the metrics are then optimistic; a model without a
 * list is said to have none, once. */
enum cxr_status cxr_train_evaluate_run(const struct cxr_train_evaluate_options *o,
                                       struct cxr_train_evaluate_result *res, char *err);

/* The result as one JSON object (malloc'd text, caller frees; NULL on OOM). */
char *cxr_train_evaluate_to_json(const struct cxr_train_evaluate_result *r,
                                 const struct cxr_nn_model_meta *meta);

#ifdef __cplusplus
}
#endif
#endif
