/* train_internal.h (internal to nn) — what the trainer (train.c,
 * train_checkpoint.c), the optimizer arithmetic (optim.c) and the backends'
 * training entries share, and the hooks the unit tests use to look inside a
 * step (gradients before the update). */
#ifndef CXR_NN_TRAIN_INTERNAL_H
#define CXR_NN_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "cxr/nn_trainer.h"
#include "graph.h"

/* The update of backend.h's struct cxr_nn_optim_step on n elements of plain
 * F32 arrays (s1 unused for SGD). */
void cxr_nn_optim_apply(const struct cxr_nn_optim_step *h, float *p, const float *grad, float *s0,
                        float *s1, size_t n);

/* torch.optim.lr_scheduler.OneCycleLR (two phases, cos anneal). */
struct cxr_nn_onecycle {
    double max_lr;
    int64_t total_steps;
    double pct_start, div_factor, final_div_factor;
    double base_momentum, max_momentum;
};
/* lr and momentum (beta1) at 0-based step `step` (held at the last value
 * past the end); either output may be NULL. */
void cxr_nn_onecycle_at(const struct cxr_nn_onecycle *s, int64_t step, double *lr,
                        double *momentum);

/* clip_grad_norm_'s factor: min(1, max_norm / (total_norm + 1e-6)); 1 when
 * max_norm <= 0. */
double cxr_nn_clip_factor(double total_norm, double max_norm);

/* A step split in two, for tests that compare gradients before the update:
 * forward + loss + backward (gradients in the graph's grad tensors; stats
 * loss/correct/grad_norm/clip_scale filled), then the update (clipping,
 * optimizer, schedule; stats lr filled). cxr_nn_trainer_step = both. */
enum cxr_status cxr_nn_trainer_forward_backward(struct cxr_nn_trainer *tr, const float *input,
                                                const int32_t *labels, int32_t n, float *logits,
                                                struct cxr_nn_step_stats *stats);
enum cxr_status cxr_nn_trainer_update(struct cxr_nn_trainer *tr, struct cxr_nn_step_stats *stats);

/* The trainer's graph (parameters and gradients carry backend storage) and
 * backend. */
struct cxr_nn_graph *cxr_nn_trainer_graph(struct cxr_nn_trainer *tr);
struct cxr_nn_backend *cxr_nn_trainer_backend(struct cxr_nn_trainer *tr);

#endif
