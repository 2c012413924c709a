/* loss.c — softmax cross-entropy with class weights, as
 * torch.nn.functional.cross_entropy(logits, labels, weight=w) with the mean
 * reduction: the weighted mean sum_i w[y_i] * -log softmax(x_i)[y_i] /
 * sum_i w[y_i], and its gradient with respect to the logits,
 * dL/dx_i = w[y_i] / sum_j w[y_j] * (softmax(x_i) - onehot(y_i)).
 * Computed in double (logits are few: batch x classes). */
#include <math.h>
#include <stdlib.h>

#include "cxr/nn_trainer.h"
#include "train_internal.h"

enum cxr_status cxr_nn_loss_cross_entropy(const float *logits, const int32_t *labels, int32_t n,
                                          int32_t k, const float *class_weights, float *dlogits,
                                          double *loss, int32_t *correct)
{
    if (!logits || !labels || n < 1 || k < 1 || k > CXR_NN_MAX_CLASSES)
        return CXR_ERR_INVALID_ARG;
    double wsum = 0.0, lsum = 0.0;
    int32_t right = 0;
    for (int32_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= k)
            return CXR_ERR_INVALID_ARG;
        double w = class_weights ? (double)class_weights[labels[i]] : 1.0;
        if (!(w >= 0.0) || !isfinite(w))
            return CXR_ERR_INVALID_ARG;
        wsum += w;
    }
    if (!(wsum > 0.0))
        return CXR_ERR_INVALID_ARG;
    for (int32_t i = 0; i < n; i++) {
        const float *x = logits + (size_t)i * (size_t)k;
        double mx = x[0], p[CXR_NN_MAX_CLASSES], z = 0.0;
        int32_t arg = 0;
        for (int32_t c = 1; c < k; c++)
            if (x[c] > mx) {
                mx = x[c];
                arg = c;
            }
        for (int32_t c = 0; c < k; c++) {
            p[c] = exp((double)x[c] - mx);
            z += p[c];
        }
        int32_t y = labels[i];
        double w = class_weights ? (double)class_weights[y] : 1.0;
        lsum += w * (log(z) - ((double)x[y] - mx));
        right += arg == y;
        if (dlogits)
            for (int32_t c = 0; c < k; c++)
                dlogits[(size_t)i * (size_t)k + c] =
                    (float)(w / wsum * (p[c] / z - (c == y ? 1.0 : 0.0)));
    }
    if (loss)
        *loss = lsum / wsum;
    if (correct)
        *correct = right;
    return isfinite(lsum) ? CXR_OK : CXR_ERR_NN_BACKEND;
}
