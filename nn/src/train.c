/* train.c — the trainer (cxr/nn_trainer.h): an unfused ResNet graph on a
 * backend's training entries (backend.h), the loss on the host, global
 * gradient-norm clipping, the optimizer update per trainable parameter and
 * the one-cycle schedule. Checkpoints are in train_checkpoint.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet.h"
#include "train_internal.h"
#include "train_priv.h"

#define TRAINER_MAX_BATCH 1024

void cxr_nn_trainer_options_defaults(struct cxr_nn_trainer_options *o)
{
    memset(o, 0, sizeof *o);
    o->optimizer = CXR_NN_OPTIMIZER_ADAMW;
    o->lr = 3e-3;
    o->weight_decay = 1e-4;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->momentum = 0.9;
    o->no_decay_bn_bias = true;
    o->schedule = CXR_NN_SCHEDULE_ONECYCLE;
    o->pct_start = 0.3;
    o->div_factor = 25.0;
    o->final_div_factor = 1e4;
    o->cycle_momentum = true;
    o->base_momentum = 0.85;
    o->max_momentum = 0.95;
    o->clip_norm = 1.0;
    o->bn_momentum = 0.1f;
    o->max_batch = 32;
}

const char *cxr_nn_optimizer_name(enum cxr_nn_optimizer o)
{
    return o == CXR_NN_OPTIMIZER_SGD ? "sgd" : "adamw";
}

bool cxr_nn_optimizer_parse(const char *name, enum cxr_nn_optimizer *out)
{
    if (!name)
        return false;
    if (!strcmp(name, "adamw")) {
        *out = CXR_NN_OPTIMIZER_ADAMW;
        return true;
    }
    if (!strcmp(name, "sgd")) {
        *out = CXR_NN_OPTIMIZER_SGD;
        return true;
    }
    return false;
}

void cxr_nn_class_weights_balanced(const int64_t *counts, int32_t k, float *out)
{
    int64_t total = 0;
    int32_t present = 0;
    for (int32_t c = 0; c < k; c++)
        if (counts[c] > 0) {
            total += counts[c];
            present++;
        }
    for (int32_t c = 0; c < k; c++)
        out[c] =
            counts[c] > 0 ? (float)((double)total / ((double)present * (double)counts[c])) : 0.0f;
}

void cxr_nn_trainer_free(struct cxr_nn_trainer *tr)
{
    if (!tr)
        return;
    const struct cxr_nn_backend_i *bi = tr->b->iface;
    if (tr->plans)
        for (int32_t n = 0; n <= tr->o.max_batch; n++)
            if (tr->plans[n])
                bi->train_plan_free(tr->b, tr->plans[n]);
    free(tr->plans);
    if (tr->g) {
        bi->graph_release(tr->b, tr->g);
        for (int32_t i = 0; i < tr->g->n_params; i++) {
            bi->buffer_free(tr->b, &tr->g->params[i].t);
            bi->buffer_free(tr->b, &tr->g->params[i].grad);
        }
        cxr_nn_graph_free(tr->g);
    }
    for (int32_t i = 0; i < tr->n_tp; i++) {
        bi->buffer_free(tr->b, &tr->tp[i].s0);
        bi->buffer_free(tr->b, &tr->tp[i].s1);
    }
    free(tr->tp);
    free(tr->logits);
    free(tr->dlogits);
    free(tr);
}

static const struct cxr_nn_tensor *model_lookup(void *ctx, const char *name)
{
    return cxr_nn_model_tensor_find(ctx, name);
}

/* Backend storage for t, zero-filled (state tensors start at zero). */
static enum cxr_status alloc_zero(struct cxr_nn_trainer *tr, struct cxr_nn_tensor *t, char *err)
{
    const struct cxr_nn_backend_i *bi = tr->b->iface;
    enum cxr_status st = bi->buffer_alloc(tr->b, t, err);
    if (st != CXR_OK)
        return st;
    void *zero = calloc(1, t->nbytes);
    if (!zero)
        return cxr_seterr(err, CXR_ERR_NOMEM, "trainer: out of memory");
    st = bi->tensor_set(tr->b, t, zero, 0, t->nbytes, err);
    free(zero);
    return st;
}

static void state_tensor(struct cxr_nn_tensor *s, const struct cxr_nn_tensor *p, const char *suffix)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%.70s.%s", p->name, suffix);
    s->dtype = CXR_NN_DTYPE_F32;
    s->ndim = p->ndim;
    memcpy(s->shape, p->shape, sizeof s->shape);
    s->nbytes = p->nbytes;
}

static enum cxr_status check_options(const struct cxr_nn_trainer_options *o, char *err)
{
    if (o->optimizer != CXR_NN_OPTIMIZER_ADAMW && o->optimizer != CXR_NN_OPTIMIZER_SGD)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "trainer: unknown optimizer %d",
                          (int)o->optimizer);
    if (!(o->lr > 0.0 && o->lr < 10.0) || !(o->weight_decay >= 0.0 && o->weight_decay < 1.0))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "trainer: lr %g (0..10) or weight decay %g (0..1) "
                          "out of range",
                          o->lr, o->weight_decay);
    if (!(o->beta1 >= 0.0 && o->beta1 < 1.0) || !(o->beta2 >= 0.0 && o->beta2 < 1.0) ||
        !(o->eps > 0.0) || !(o->momentum >= 0.0 && o->momentum < 1.0) || !(o->clip_norm >= 0.0))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "trainer: betas, eps, momentum or clip norm out of "
                          "range");
    if (o->max_batch < 1 || o->max_batch > TRAINER_MAX_BATCH)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "trainer: max_batch %d outside 1..%d",
                          (int)o->max_batch, TRAINER_MAX_BATCH);
    if (o->schedule == CXR_NN_SCHEDULE_ONECYCLE &&
        (o->total_steps < 1 || !(o->pct_start > 0.0 && o->pct_start < 1.0) ||
         !(o->div_factor > 0.0) || !(o->final_div_factor > 0.0) ||
         !(o->base_momentum >= 0.0 && o->base_momentum < 1.0) ||
         !(o->max_momentum >= 0.0 && o->max_momentum < 1.0)))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "trainer: the one-cycle schedule needs total_steps "
                          ">= 1, pct_start in (0,1), positive div factors and momenta in [0,1)");
    if (!(o->bn_momentum >= 0.0f && o->bn_momentum <= 1.0f))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "trainer: bn_momentum %g outside 0..1",
                          (double)o->bn_momentum);
    return CXR_OK;
}

enum cxr_status cxr_nn_trainer_new(struct cxr_nn_backend *b, const struct cxr_nn_model *m,
                                   const struct cxr_nn_trainer_options *o,
                                   struct cxr_nn_trainer **out, char *err)
{
    enum cxr_status st;
    if (!out)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "trainer: no output pointer");
    *out = NULL;
    if (!b || !m || !o)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "trainer: backend, model or options missing");
    if (!b->iface->train_plan || !b->iface->train_forward || !b->iface->train_backward ||
        !b->iface->tensor_sumsq || !b->iface->optim_step)
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                          "trainer: the %s backend cannot train (no training "
                          "entries); use the CPU backend",
                          cxr_nn_backend_name(b));
    if ((st = check_options(o, err)) != CXR_OK)
        return st;
    const struct cxr_nn_model_meta *meta = cxr_nn_model_meta(m);
    struct cxr_nn_trainer *tr = calloc(1, sizeof *tr);
    if (!tr)
        return cxr_seterr(err, CXR_ERR_NOMEM, "trainer: out of memory");
    tr->b = b;
    tr->o = *o;
    cxr_nn_model_spec(m, &tr->spec);
    tr->c = meta->channels;
    tr->h = meta->input_height;
    tr->w = meta->input_width;
    tr->k = tr->spec.num_classes;
    tr->plans = calloc((size_t)o->max_batch + 1, sizeof *tr->plans);
    tr->logits = calloc((size_t)o->max_batch * (size_t)tr->k, sizeof(float));
    tr->dlogits = calloc((size_t)o->max_batch * (size_t)tr->k, sizeof(float));
    if (!tr->plans || !tr->logits || !tr->dlogits) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "trainer: out of memory");
        goto fail;
    }
    if (meta->channels != tr->spec.in_channels) {
        st = cxr_seterr(err, CXR_ERR_NN_MODEL, "trainer: metadata says %d channels, conv1 takes %d",
                        (int)meta->channels, (int)tr->spec.in_channels);
        goto fail;
    }
    if ((st = cxr_nn_graph_build_resnet(&tr->spec, tr->h, tr->w, &tr->g, err)) != CXR_OK ||
        (st = cxr_nn_graph_bind(tr->g, model_lookup, (void *)m, err)) != CXR_OK)
        goto fail;
    const struct cxr_nn_backend_i *bi = b->iface;
    for (int32_t i = 0; i < tr->g->n_params && st == CXR_OK; i++) {
        struct cxr_nn_tensor *t = &tr->g->params[i].t;
        st = bi->buffer_alloc(b, t, err);
        if (st == CXR_OK)
            st = bi->tensor_set(b, t, t->data, 0, t->nbytes, err);
    }
    cxr_nn_graph_unbind(tr->g);
    if (st != CXR_OK)
        goto fail;
    /* num_batches_tracked: PyTorch counts training-mode forwards per bn */
    for (uint32_t i = 0; i < cxr_nn_model_tensor_count(m); i++) {
        const struct cxr_nn_tensor *t = cxr_nn_model_tensor_at(m, i);
        size_t l = strlen(t->name);
        if (l > 20 && !strcmp(t->name + l - 20, ".num_batches_tracked") &&
            t->dtype == CXR_NN_DTYPE_I64 && t->data) {
            memcpy(&tr->nbt_base, t->data, sizeof tr->nbt_base);
            break;
        }
    }
    int32_t ntrain = cxr_nn_graph_set_trainable(tr->g, o->freeze_backbone, err);
    if (ntrain < 1) {
        st = cxr_seterr(err, CXR_ERR_INTERNAL, "trainer: no trainable parameter");
        goto fail;
    }
    tr->tp = calloc((size_t)ntrain, sizeof *tr->tp);
    if (!tr->tp) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "trainer: out of memory");
        goto fail;
    }
    bool adam = o->optimizer == CXR_NN_OPTIMIZER_ADAMW;
    for (int32_t i = 0; i < tr->g->n_params; i++) {
        struct cxr_nn_param *p = &tr->g->params[i];
        if (!p->trainable)
            continue;
        struct tparam *tp = &tr->tp[tr->n_tp++];
        tp->index = i;
        tp->decay = !(o->no_decay_bn_bias && cxr_nn_graph_param_is_no_decay(tr->g, i));
        state_tensor(&tp->s0, &p->t, adam ? "exp_avg" : "momentum_buffer");
        if ((st = bi->buffer_alloc(b, &p->grad, err)) != CXR_OK ||
            (st = alloc_zero(tr, &tp->s0, err)) != CXR_OK)
            goto fail;
        if (adam) {
            state_tensor(&tp->s1, &p->t, "exp_avg_sq");
            if ((st = alloc_zero(tr, &tp->s1, err)) != CXR_OK)
                goto fail;
        }
    }
    *out = tr;
    return CXR_OK;
fail:
    cxr_nn_trainer_free(tr);
    return st;
}

static void schedule_at(const struct cxr_nn_trainer *tr, int64_t step, double *lr, double *mom)
{
    const struct cxr_nn_trainer_options *o = &tr->o;
    double m = o->optimizer == CXR_NN_OPTIMIZER_ADAMW ? o->beta1 : o->momentum;
    if (o->schedule == CXR_NN_SCHEDULE_ONECYCLE) {
        struct cxr_nn_onecycle s = {.max_lr = o->lr,
                                    .total_steps = o->total_steps,
                                    .pct_start = o->pct_start,
                                    .div_factor = o->div_factor,
                                    .final_div_factor = o->final_div_factor,
                                    .base_momentum = o->base_momentum,
                                    .max_momentum = o->max_momentum};
        double cm;
        cxr_nn_onecycle_at(&s, step, lr, &cm);
        if (o->cycle_momentum)
            m = cm;
    } else {
        *lr = o->lr;
    }
    *mom = m;
}

enum cxr_status cxr_nn_trainer_forward_backward(struct cxr_nn_trainer *tr, const float *input,
                                                const int32_t *labels, int32_t n, float *logits,
                                                struct cxr_nn_step_stats *stats)
{
    if (!tr)
        return CXR_ERR_INVALID_ARG;
    char *err = tr->err;
    err[0] = '\0';
    tr->have_grads = false;
    if (!input || !labels || n < 1 || n > tr->o.max_batch)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "trainer: batch of %d images, this trainer takes "
                          "1..%d",
                          (int)n, (int)tr->o.max_batch);
    const struct cxr_nn_backend_i *bi = tr->b->iface;
    enum cxr_status st;
    if (!tr->plans[n]) {
        struct cxr_nn_train_plan_options po = {.batch = n,
                                               .bn_frozen = tr->o.freeze_backbone,
                                               .bn_momentum = tr->o.bn_momentum,
                                               .conv_algo = tr->o.direct_conv ? CXR_NN_CONV_DIRECT
                                                                              : CXR_NN_CONV_AUTO};
        if ((st = bi->train_plan(tr->b, tr->g, &po, &tr->plans[n], err)) != CXR_OK)
            return st;
    }
    if ((st = bi->train_forward(tr->b, tr->plans[n], input, tr->logits, err)) != CXR_OK)
        return st;
    if (!tr->o.freeze_backbone)
        tr->bn_steps++;
    if (logits)
        memcpy(logits, tr->logits, (size_t)n * (size_t)tr->k * sizeof(float));
    bool weighted = false;
    for (int32_t c = 0; c < tr->k; c++)
        weighted |= tr->o.class_weights[c] != 0.0f;
    double loss = 0.0;
    int32_t correct = 0;
    st = cxr_nn_loss_cross_entropy(tr->logits, labels, n, tr->k,
                                   weighted ? tr->o.class_weights : NULL, tr->dlogits, &loss,
                                   &correct);
    if (st == CXR_ERR_NN_BACKEND)
        return cxr_seterr(err, st,
                          "trainer: the loss is not finite: training diverged (lower the "
                          "learning rate)");
    if (st != CXR_OK)
        return cxr_seterr(err, st,
                          "trainer: a label is outside 0..%d or the class weights of this "
                          "batch sum to 0",
                          (int)tr->k - 1);
    if ((st = bi->train_backward(tr->b, tr->plans[n], tr->dlogits, err)) != CXR_OK)
        return st;
    double ss = 0.0;
    for (int32_t i = 0; i < tr->n_tp; i++) {
        double s;
        if ((st = bi->tensor_sumsq(tr->b, &tr->g->params[tr->tp[i].index].grad, &s, err)) != CXR_OK)
            return st;
        ss += s;
    }
    tr->grad_norm = sqrt(ss);
    if (!isfinite(tr->grad_norm))
        return cxr_seterr(err, CXR_ERR_NN_BACKEND,
                          "trainer: the gradients are not finite: training "
                          "diverged (lower the learning rate)");
    tr->have_grads = true;
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->n = n;
        stats->loss = loss;
        stats->correct = correct;
        stats->grad_norm = tr->grad_norm;
        stats->clip_scale = cxr_nn_clip_factor(tr->grad_norm, tr->o.clip_norm);
    }
    return CXR_OK;
}

enum cxr_status cxr_nn_trainer_update(struct cxr_nn_trainer *tr, struct cxr_nn_step_stats *stats)
{
    if (!tr)
        return CXR_ERR_INVALID_ARG;
    char *err = tr->err;
    if (!tr->have_grads)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "trainer: update without gradients");
    const struct cxr_nn_backend_i *bi = tr->b->iface;
    double lr, mom;
    schedule_at(tr, tr->step, &lr, &mom);
    bool adam = tr->o.optimizer == CXR_NN_OPTIMIZER_ADAMW;
    struct cxr_nn_optim_step h = {.kind = adam ? CXR_NN_OPTIM_ADAMW : CXR_NN_OPTIM_SGD,
                                  .step = tr->step + 1,
                                  .lr = lr,
                                  .beta1 = adam ? mom : tr->o.beta1,
                                  .beta2 = tr->o.beta2,
                                  .eps = tr->o.eps,
                                  .momentum = adam ? tr->o.momentum : mom,
                                  .nesterov = tr->o.nesterov,
                                  .grad_scale = cxr_nn_clip_factor(tr->grad_norm, tr->o.clip_norm)};
    for (int32_t i = 0; i < tr->n_tp; i++) {
        struct tparam *tp = &tr->tp[i];
        struct cxr_nn_param *p = &tr->g->params[tp->index];
        h.weight_decay = tp->decay ? tr->o.weight_decay : 0.0;
        enum cxr_status st =
            bi->optim_step(tr->b, &p->t, &p->grad, &tp->s0, adam ? &tp->s1 : NULL, &h, err);
        if (st != CXR_OK)
            return st;
    }
    tr->step++;
    tr->have_grads = false;
    if (stats)
        stats->lr = lr;
    return CXR_OK;
}

enum cxr_status cxr_nn_trainer_step(struct cxr_nn_trainer *tr, const float *input,
                                    const int32_t *labels, int32_t n,
                                    struct cxr_nn_step_stats *stats)
{
    enum cxr_status st = cxr_nn_trainer_forward_backward(tr, input, labels, n, NULL, stats);
    if (st == CXR_OK)
        st = cxr_nn_trainer_update(tr, stats);
    return st;
}

int64_t cxr_nn_trainer_steps(const struct cxr_nn_trainer *tr) { return tr ? tr->step : 0; }

double cxr_nn_trainer_next_lr(const struct cxr_nn_trainer *tr)
{
    double lr = 0.0, mom;
    if (tr)
        schedule_at(tr, tr->step, &lr, &mom);
    return lr;
}

enum cxr_status cxr_nn_trainer_export(struct cxr_nn_trainer *tr, struct cxr_nn_model *m, char *err)
{
    if (!tr || !m)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "trainer: export needs a trainer and a model");
    const struct cxr_nn_backend_i *bi = tr->b->iface;
    for (int32_t i = 0; i < tr->g->n_params; i++) {
        struct cxr_nn_tensor *t = &tr->g->params[i].t;
        struct cxr_nn_tensor *mt = cxr_nn_model_tensor_find(m, t->name);
        if (!mt || mt->dtype != CXR_NN_DTYPE_F32 || mt->nbytes != t->nbytes || !mt->data)
            return cxr_seterr(err, CXR_ERR_NN_SHAPE,
                              "trainer: the model has no F32 '%s' of %zu bytes "
                              "(another architecture?)",
                              t->name, t->nbytes);
        enum cxr_status st = bi->tensor_get(tr->b, t, mt->data, 0, t->nbytes, err);
        if (st != CXR_OK)
            return st;
    }
    int64_t nbt = tr->nbt_base + tr->bn_steps;
    for (uint32_t i = 0; i < cxr_nn_model_tensor_count(m); i++) {
        struct cxr_nn_tensor *t = cxr_nn_model_tensor_at(m, i);
        size_t l = strlen(t->name);
        if (l > 20 && !strcmp(t->name + l - 20, ".num_batches_tracked") &&
            t->dtype == CXR_NN_DTYPE_I64 && t->data && t->nbytes >= sizeof nbt)
            memcpy(t->data, &nbt, sizeof nbt);
    }
    return CXR_OK;
}

const char *cxr_nn_trainer_last_error(const struct cxr_nn_trainer *tr)
{
    return tr ? tr->err : "no trainer";
}

struct cxr_nn_graph *cxr_nn_trainer_graph(struct cxr_nn_trainer *tr) { return tr ? tr->g : NULL; }

struct cxr_nn_backend *cxr_nn_trainer_backend(struct cxr_nn_trainer *tr)
{
    return tr ? tr->b : NULL;
}
