/* cxr/nn_trainer.h — training a ResNet model on a compute backend: the
 * training-mode forward pass, class-weighted softmax cross-entropy, the
 * backward pass, global gradient-norm clipping and AdamW / SGD updates
 * under a one-cycle learning-rate schedule, with checkpoints to resume.
 *
 * The trainer sees tensors and labels only; epochs, data, augmentation
 * (cxr/nn_train.h), validation and calibration are the caller's (triage's
 * cxr/train.h drives a whole run). Every formula is PyTorch 1.13's, and
 * tests/oracle/make_train_fixtures.py checks a whole step against it:
 *   - batch norm in training mode normalises with the batch statistics and
 *     updates the running ones with momentum 0.1 and the unbiased variance;
 *   - loss = F.cross_entropy(logits, labels, weight=class_weights) (the
 *     weighted mean);
 *   - clipping = torch.nn.utils.clip_grad_norm_(params, clip_norm);
 *   - AdamW = torch.optim.AdamW with two parameter groups: conv and fc
 *     weights with weight_decay, batch-norm weights/biases and all biases
 *     with none (no_decay_bn_bias; PyTorch's default is decay on
 *     everything, which `no_decay_bn_bias = false` gives);
 *   - schedule = torch.optim.lr_scheduler.OneCycleLR(max_lr=lr,
 *     total_steps, pct_start 0.3, anneal cos, div_factor 25,
 *     final_div_factor 1e4, cycle_momentum: beta1 (AdamW) or momentum (SGD)
 *     cycles 0.95 -> 0.85 -> 0.95), stepped once per optimizer step.
 * With freeze_backbone only the fc trains and batch norm stays in eval mode
 * (model.eval() for the backbone, requires_grad False on it).
 *
 * Threads: a trainer is used by one thread at a time; it holds its backend
 * for its life (the backend must outlive it and not be used by another
 * thread meanwhile). Errors: functions return enum cxr_status with detail in
 * `err` (CXR_ERRLEN bytes, may be NULL) or cxr_nn_trainer_last_error().
 */
#ifndef CXR_NN_TRAINER_H
#define CXR_NN_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/nn.h"
#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum cxr_nn_optimizer { CXR_NN_OPTIMIZER_ADAMW = 0, CXR_NN_OPTIMIZER_SGD = 1 };
/* "adamw", "sgd"; parse returns false for another name. */
const char *cxr_nn_optimizer_name(enum cxr_nn_optimizer o);
bool cxr_nn_optimizer_parse(const char *name, enum cxr_nn_optimizer *out);

enum cxr_nn_lr_schedule {
    CXR_NN_SCHEDULE_ONECYCLE = 0, /* OneCycleLR over total_steps */
    CXR_NN_SCHEDULE_CONSTANT = 1  /* lr throughout (tests, fine-tuning) */
};

struct cxr_nn_trainer_options {
    enum cxr_nn_optimizer optimizer;    /* default AdamW */
    double lr;                          /* peak lr (one-cycle max_lr), default 3e-3 */
    double weight_decay;                /* default 1e-4 */
    double beta1, beta2, eps;           /* AdamW: 0.9, 0.999, 1e-8 (beta1 cycles under one-cycle) */
    double momentum;                    /* SGD: 0.9 (cycles under one-cycle) */
    bool nesterov;                      /* SGD: false */
    bool no_decay_bn_bias;              /* true: no weight decay on bn weights/biases and biases */
    enum cxr_nn_lr_schedule schedule;   /* default one-cycle */
    int64_t total_steps;                /* one-cycle length in optimizer steps (required for it) */
    double pct_start;                   /* 0.3 */
    double div_factor;                  /* 25: initial lr = lr / 25 */
    double final_div_factor;            /* 1e4: final lr = initial / 1e4 */
    bool cycle_momentum;                /* true */
    double base_momentum, max_momentum; /* 0.85, 0.95 */
    double clip_norm; /* global L2 norm cap on the gradients; 0: none (default 1.0) */
    /* Per-class loss weights (index = class); all zero: unweighted. */
    float class_weights[CXR_NN_MAX_CLASSES];
    bool freeze_backbone; /* only the fc trains; batch norm in eval mode */
    bool direct_conv;     /* direct convolutions only; default false lets the
                           * backend pick faster algorithms (CPU: Winograd for
                           * large 3x3 stride-1 layers, ~1e-6 relative
                           * difference in the gradients) */
    float bn_momentum;    /* 0.1 */
    int32_t max_batch;    /* largest batch given to step (default 32) */
};
void cxr_nn_trainer_options_defaults(struct cxr_nn_trainer_options *o);

/* What one step measured. */
struct cxr_nn_step_stats {
    int32_t n;         /* images */
    double loss;       /* the (weighted) mean loss of the batch */
    int32_t correct;   /* argmax == label */
    double lr;         /* the lr this step used */
    double grad_norm;  /* global L2 norm before clipping */
    double clip_scale; /* factor applied to the gradients (1: not clipped) */
};

struct cxr_nn_trainer;

/* A trainer for model `m` (copied: the model may be freed afterwards) on
 * backend `b` (CPU; a backend without the training entries gives
 * CXR_ERR_UNSUPPORTED). Parameters are uploaded; optimizer state starts at
 * zero; plans are made on first use per batch size. Input size and channels
 * come from m's metadata. On failure *out == NULL. */
enum cxr_status cxr_nn_trainer_new(struct cxr_nn_backend *b, const struct cxr_nn_model *m,
                                   const struct cxr_nn_trainer_options *o,
                                   struct cxr_nn_trainer **out, char *err);
void cxr_nn_trainer_free(struct cxr_nn_trainer *tr);

/* One optimizer step on a batch: `input` is n x C x H x W floats
 * (cxr_nn_train_input output), labels n class indices, 1 <= n <= max_batch
 * (n >= 2 unless the backbone is frozen: batch statistics need two values).
 * Forward, loss, backward, clipping, update, schedule. `stats` may be NULL.
 * A non-finite loss or gradient is CXR_ERR_NN_BACKEND and leaves the
 * parameters as they were ("training diverged: lower the lr"). */
enum cxr_status cxr_nn_trainer_step(struct cxr_nn_trainer *tr, const float *input,
                                    const int32_t *labels, int32_t n,
                                    struct cxr_nn_step_stats *stats);

/* Optimizer steps taken (restored by checkpoint_load). */
int64_t cxr_nn_trainer_steps(const struct cxr_nn_trainer *tr);
/* The lr the next step will use. */
double cxr_nn_trainer_next_lr(const struct cxr_nn_trainer *tr);

/* Copies the trained parameters, the batch-norm running statistics and
 * num_batches_tracked (+ one per training-mode step) into `m`, which must
 * have the trainer's architecture, widths and classes (e.g. the model the
 * trainer was made from). Metadata is left alone. */
enum cxr_status cxr_nn_trainer_export(struct cxr_nn_trainer *tr, struct cxr_nn_model *m, char *err);

/* Checkpoint: ONE safetensors file holding every parameter and running
 * statistic, the optimizer state, the step count and the options that must
 * not change on resume, plus the caller's `extra_json` (a JSON object text
 * or NULL: epoch, data position, history...). Written atomically (temporary
 * file, fsync, rename, folder fsync); an interrupted write leaves the
 * previous checkpoint. */
enum cxr_status cxr_nn_trainer_checkpoint_save(struct cxr_nn_trainer *tr, const char *path,
                                               const char *extra_json, char *err);
/* Restores a checkpoint into a trainer made with the same model structure
 * and optimizer (checked: names, shapes, optimizer kind; a mismatch is
 * CXR_ERR_INVALID_ARG naming it). *extra_json (may be NULL) receives the
 * caller's JSON text (malloc'd, caller frees; "" when none). */
enum cxr_status cxr_nn_trainer_checkpoint_load(struct cxr_nn_trainer *tr, const char *path,
                                               char **extra_json, char *err);

const char *cxr_nn_trainer_last_error(const struct cxr_nn_trainer *tr);

/* Weighted softmax cross-entropy of n rows of k logits (row-major) against
 * labels (0..k-1), as F.cross_entropy(weight=class_weights, reduction mean);
 * class_weights NULL: all 1. Writes dLoss/dlogits to `dlogits` (n x k, may
 * be NULL), the loss to *loss and the number of rows whose argmax is the
 * label to *correct (each may be NULL). CXR_ERR_INVALID_ARG for a label out
 * of range, a negative weight or a zero total weight; CXR_ERR_NN_BACKEND
 * when the loss is not finite. */
enum cxr_status cxr_nn_loss_cross_entropy(const float *logits, const int32_t *labels, int32_t n,
                                          int32_t k, const float *class_weights, float *dlogits,
                                          double *loss, int32_t *correct);

/* Class weights inverse to the class frequency, normalised so that the
 * weighted count of every class is the same and the weights average to 1
 * over the samples: w_c = N / (K' * n_c) for the K' classes present (0 for
 * an absent class). counts[k]; out[k]. */
void cxr_nn_class_weights_balanced(const int64_t *counts, int32_t k, float *out);

#ifdef __cplusplus
}
#endif
#endif
