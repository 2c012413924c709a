/* train_run_internal.h (internal to train) — what the training driver
 * (train_run.c: the run, epochs, checkpoints), its data side
 * (train_run_data.c: loading, split, batches, scoring) and its outputs
 * (train_run_out.c: calibration, model metadata, report) share. */
#ifndef CXR_TRAIN_RUN_INTERNAL_H
#define CXR_TRAIN_RUN_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cxr/dataset.h"
#include "cxr/nn.h"
#include "cxr/nn_train.h"
#include "cxr/nn_trainer.h"
#include "cxr/report.h"
#include "cxr/train.h"
#include "cxr/triage.h"

struct train_run {
    const struct cxr_train_options *o;
    FILE *log;
    char *err;
    double t_start;
    /* data */
    struct cxr_train_dataset *ds;  /* --data */
    struct cxr_train_dataset *vds; /* --val, or NULL (split of ds) */
    struct cxr_train_split split;  /* indices into ds (val empty with --val) */
    const int32_t *train_idx;
    size_t n_train;
    int64_t train_counts[CXR_NN_MAX_CLASSES];
    /* the validation set: samples of vds or ds */
    const struct cxr_train_dataset *vsrc;
    int32_t *val_idx;
    size_t n_val;
    int64_t val_counts[CXR_NN_MAX_CLASSES];
    /* model and training */
    struct cxr_nn_model *model;     /* current weights (export target), F32 */
    struct cxr_nn_model_meta *meta; /* model's metadata */
    struct cxr_nn_backend *b;
    struct cxr_nn_trainer *tr;
    int32_t batch, steps_per_epoch;
    size_t max_pixels; /* largest sample (augmentation scratch) */
    /* progress, history */
    struct cxr_train_report_epoch *hist;
    int32_t n_hist;
    double best_auc;
    int32_t best_epoch, bad_epochs;
    int64_t images_trained;
    double train_seconds;
    char ckpt_dir[4096], ckpt_path[4200], best_path[4200];
    char note[512]; /* a line for the report (transfer learning, ...) */
    /* --init's list of training images (its metadata), merged into the new
     * model's: what the starting weights saw counts as seen */
    uint64_t *init_digests;
    size_t n_init_digests;
    int32_t init_sample_bits;
    int64_t init_images;
};

/* printf to the run's log. */
void cxr_tr_log(struct train_run *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
enum cxr_status cxr_tr_err(struct train_run *R, enum cxr_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
double cxr_tr_now(void);

/* ---- data (train_run_data.c) */

/* Loads --data (and --val), prints class counts and skipped entries,
 * splits. Needs R->meta (classes, input size). */
enum cxr_status cxr_tr_load_data(struct train_run *R);
/* The training order of an epoch: indices into R->ds (n_train of them,
 * shuffled or class-balanced draws from (seed, epoch)); caller frees. */
int32_t *cxr_tr_epoch_order(struct train_run *R, int32_t epoch);
/* Fills x (n x C x H x W) and y for the samples order[k*batch ...]; on
 * failure `err` (CXR_ERRLEN) names the sample. Reads R only: may run
 * on another thread while the trainer steps. */
enum cxr_status cxr_tr_make_batch(const struct train_run *R, const int32_t *order, int32_t epoch,
                                  int32_t k, float *x, int32_t *y, uint8_t *scratch, char *err);
/* Scores samples idx[0..n) of ds with `m` through the inference path
 * (net batches of R->batch): probabilities of the positive class, mean
 * unweighted cross-entropy and accuracy (argmax). */
enum cxr_status cxr_tr_score(struct cxr_nn_backend *b, const struct cxr_nn_model *m,
                             const struct cxr_train_dataset *ds, const int32_t *idx, size_t n,
                             int32_t batch, double *probs, double *loss, double *accuracy,
                             char *err);

/* The validation samples at their full presented size, for the final
 * scoring: when the memory cap downscaled some at load, the source is read
 * again without the cap and full and idx point at it (full to be freed);
 * otherwise full is NULL and idx is R->val_idx into R->vsrc. */
enum cxr_status cxr_tr_full_size_val(struct train_run *R, struct cxr_train_dataset **full,
                                     int32_t **idx);

/* ---- outputs (train_run_out.c) */

/* Calibrates on the validation set with the kept model, fills its
 * metadata, writes --out and the report, fills res. */
enum cxr_status cxr_tr_finish(struct train_run *R, struct cxr_train_result *res);
/* "AMD EPYC ... (2 CPUs)" */
void cxr_tr_machine(char *buf, size_t len);

#endif
