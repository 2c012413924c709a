/* optim.c — the optimizer arithmetic (AdamW, SGD with momentum) on plain F32
 * arrays, the one-cycle learning-rate schedule and the global gradient-norm
 * clipping factor, each as PyTorch 1.13 computes them (torch.optim.AdamW,
 * torch.optim.SGD, torch.optim.lr_scheduler.OneCycleLR,
 * torch.nn.utils.clip_grad_norm_). The CPU backend's optim_step runs
 * cxr_nn_optim_apply on the parameter's storage; another backend must do the
 * same arithmetic on its device. */
#include <math.h>

#include "train_internal.h"

void cxr_nn_optim_apply(const struct cxr_nn_optim_step *h, float *p, const float *grad, float *s0,
                        float *s1, size_t n)
{
    const float scale = (float)h->grad_scale;
    if (h->kind == CXR_NN_OPTIM_ADAMW) {
        const float decay = (float)(1.0 - h->lr * h->weight_decay);
        const float b1 = (float)h->beta1, b2 = (float)h->beta2;
        const float one_b1 = (float)(1.0 - h->beta1), one_b2 = (float)(1.0 - h->beta2);
        const double bc1 = 1.0 - pow(h->beta1, (double)h->step);
        const double bc2 = 1.0 - pow(h->beta2, (double)h->step);
        const float step_size = (float)(h->lr / bc1);
        const float bc2_sqrt = (float)sqrt(bc2);
        const float eps = (float)h->eps;
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] * scale;
            float w = p[i] * decay;
            float m = s0[i] * b1 + one_b1 * g;
            float v = s1[i] * b2 + one_b2 * g * g;
            s0[i] = m;
            s1[i] = v;
            p[i] = w - step_size * (m / (sqrtf(v) / bc2_sqrt + eps));
        }
        return;
    }
    const float lr = (float)h->lr, wd = (float)h->weight_decay, mom = (float)h->momentum;
    for (size_t i = 0; i < n; i++) {
        float d = grad[i] * scale + wd * p[i];
        if (mom != 0.0f) {
            float b = h->step <= 1 ? d : mom * s0[i] + d;
            s0[i] = b;
            d = h->nesterov ? d + mom * b : b;
        }
        p[i] -= lr * d;
    }
}

/* torch's _annealing_cos: end + (start - end) / 2 * (cos(pi * pct) + 1). */
static double anneal_cos(double start, double end, double pct)
{
    return end + (start - end) / 2.0 * (cos(M_PI * pct) + 1.0);
}

void cxr_nn_onecycle_at(const struct cxr_nn_onecycle *s, int64_t step, double *lr, double *momentum)
{
    double initial = s->max_lr / s->div_factor;
    double min_lr = initial / s->final_div_factor;
    /* two phases (three_phase=False): warm-up to max_lr, then anneal */
    double end0 = s->pct_start * (double)s->total_steps - 1.0;
    double end1 = (double)s->total_steps - 1.0;
    if (step > s->total_steps - 1)
        step = s->total_steps - 1; /* torch raises past the end; hold the last value */
    if (step < 0)
        step = 0;
    double t = (double)step, pct, l, m;
    if (t <= end0) {
        pct = end0 > 0.0 ? t / end0 : 1.0;
        l = anneal_cos(initial, s->max_lr, pct);
        m = anneal_cos(s->max_momentum, s->base_momentum, pct);
    } else {
        pct = end1 - end0 > 0.0 ? (t - end0) / (end1 - end0) : 1.0;
        l = anneal_cos(s->max_lr, min_lr, pct);
        m = anneal_cos(s->base_momentum, s->max_momentum, pct);
    }
    if (lr)
        *lr = l;
    if (momentum)
        *momentum = m;
}

double cxr_nn_clip_factor(double total_norm, double max_norm)
{
    if (!(max_norm > 0.0))
        return 1.0;
    double c = max_norm / (total_norm + 1e-6);
    return c < 1.0 ? c : 1.0;
}
