/* train_priv.h (internal to train.c and train_checkpoint.c) — the trainer
 * object. */
#ifndef CXR_NN_TRAIN_PRIV_H
#define CXR_NN_TRAIN_PRIV_H

#include <stdarg.h>

#include "resnet.h"
#include "train_internal.h"

/* A trainable parameter and its optimizer state (backend storage). */
struct tparam {
    int32_t index;               /* into the graph's params */
    struct cxr_nn_tensor s0, s1; /* AdamW exp_avg/exp_avg_sq; SGD momentum_buffer (s1 unused) */
    bool decay;                  /* weight decay applies */
};

struct cxr_nn_trainer {
    struct cxr_nn_backend *b;
    struct cxr_nn_graph *g; /* unfused; parameters, grads with backend storage */
    struct cxr_nn_trainer_options o;
    struct cxr_nn_resnet_spec spec;
    int32_t c, h, w, k; /* input channels and size, classes */
    struct tparam *tp;
    int32_t n_tp;
    void **plans;     /* [max_batch + 1], index = batch size */
    int64_t step;     /* optimizer steps taken */
    int64_t bn_steps; /* training-mode forwards (num_batches_tracked) */
    int64_t nbt_base; /* num_batches_tracked of the model it started from */
    float *logits, *dlogits;
    double grad_norm;
    bool have_grads;
    char err[CXR_ERRLEN];
};

#endif
