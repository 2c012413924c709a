/* softmax.c — numerically stable softmax over a few logits. */
#include <math.h>

#include "cxr/nn.h"

/* probs[i] = exp(l[i] - max) / sum_j exp(l[j] - max), accumulated in double
 * so that huge or tiny logits neither overflow nor lose the small classes.
 * +inf logits share the probability; all -inf gives a uniform result; a NaN
 * logit makes every probability NaN (a broken input must not look valid). */
void cxr_nn_softmax(const float *logits, int32_t k, float *probs)
{
    if (!logits || !probs || k < 1)
        return;
    double max = -INFINITY;
    for (int32_t i = 0; i < k; i++) {
        if (isnan(logits[i])) {
            for (int32_t j = 0; j < k; j++)
                probs[j] = NAN;
            return;
        }
        if (logits[i] > max)
            max = logits[i];
    }
    if (isinf(max)) {
        int32_t n = 0;
        for (int32_t i = 0; i < k; i++)
            n += logits[i] == (float)max;
        for (int32_t i = 0; i < k; i++)
            probs[i] = logits[i] == (float)max ? (float)(1.0 / n) : 0.0f;
        return;
    }
    double e[CXR_NN_MAX_CLASSES], sum = 0.0;
    for (int32_t i = 0; i < k; i++) {
        double v = exp((double)logits[i] - max);
        if (i < CXR_NN_MAX_CLASSES)
            e[i] = v;
        sum += v;
    }
    for (int32_t i = 0; i < k; i++) {
        double v = i < CXR_NN_MAX_CLASSES ? e[i] : exp((double)logits[i] - max);
        probs[i] = (float)(v / sum);
    }
}
