/* cxr/nn_train.h — the numbers side of training: a seeded random generator,
 * data augmentation on 8-bit images, and binary-classification metrics
 * (ROC, AUC, thresholds, confusion matrix, bootstrap confidence intervals)
 * with the calibration of the operating and urgent thresholds.
 *
 * Pure numbers and images: nothing here knows DICOM, files or the network.
 * Reading labeled archives is triage's job (cxr/dataset.h); the backward
 * pass and the optimiser live beside the backends.
 *
 * Threads: every function is reentrant; a struct cxr_nn_rng is used by one
 * thread at a time. Nothing here keeps global state.
 * Errors: functions that can fail return enum cxr_status with detail in `err`
 * (CXR_ERRLEN bytes, may be NULL).
 */
#ifndef CXR_NN_TRAIN_H
#define CXR_NN_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/nn.h"
#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ random numbers */

/* xoshiro256** seeded through splitmix64 (Blackman & Vigna). The same seed
 * gives the same sequence on every platform. Plain data: copy it to fork a
 * stream. */
struct cxr_nn_rng {
    uint64_t s[4];
};

void cxr_nn_rng_seed(struct cxr_nn_rng *r, uint64_t seed);
uint64_t cxr_nn_rng_next(struct cxr_nn_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double cxr_nn_rng_uniform(struct cxr_nn_rng *r);
/* Uniform integer in [0, n) without modulo bias; 0 when n == 0. */
uint64_t cxr_nn_rng_below(struct cxr_nn_rng *r, uint64_t n);
/* Standard normal (Box-Muller, no cached second value). */
double cxr_nn_rng_normal(struct cxr_nn_rng *r);
/* Fisher-Yates shuffle of idx[0..n-1]. */
void cxr_nn_rng_shuffle(struct cxr_nn_rng *r, int32_t *idx, size_t n);
/* A well-mixed seed derived from a base seed and two counters (e.g. epoch and
 * sample index), so that sample i of epoch e gets the same augmentation in
 * every run whatever the thread or batch order: cxr_nn_seed_mix(seed, e, i). */
uint64_t cxr_nn_seed_mix(uint64_t seed, uint64_t a, uint64_t b);

/* ------------------------------------------------------------------ augmentation */

/* Ranges the random augmentation draws from (uniformly). Defaults
 * (cxr_nn_augment_options_defaults) follow the reference PyTorch recipe:
 * rotation ±10°, scale 0.9–1.1, translation ±6 % of the size, brightness and
 * contrast factors 1 ± 0.2, horizontal flip off (a chest film has the heart
 * on the patient's left: flipping makes anatomy no patient has). */
struct cxr_nn_augment_options {
    double max_rotate_deg;       /* |angle| <= this */
    double scale_min, scale_max; /* isotropic zoom factor */
    double max_translate;        /* |shift| <= this fraction of width/height */
    double max_brightness;       /* brightness factor in [1-b, 1+b] */
    double max_contrast;         /* contrast factor in [1-c, 1+c] */
    bool hflip;                  /* mirror left-right with probability 1/2 */
    uint8_t fill;                /* value of pixels mapped from outside the image (0 = black) */
};
void cxr_nn_augment_options_defaults(struct cxr_nn_augment_options *o);
/* Options that change nothing (for evaluation, and for tests). */
void cxr_nn_augment_options_none(struct cxr_nn_augment_options *o);

/* One concrete draw. The geometric part is an affine map about the image
 * centre: the output shows the input rotated by angle_deg (counter-clockwise
 * as seen on screen for a positive angle, as torchvision's RandomAffine),
 * zoomed by `scale`, shifted by (translate_x * width, translate_y * height)
 * pixels (positive: right and down), and mirrored left-right first when
 * `flip`. Intensities then become clamp(round((v - m) * contrast + m) *
 * brightness) where m is the mean of the warped image. */
struct cxr_nn_augment_params {
    double angle_deg;
    double scale;
    double translate_x, translate_y;
    bool flip;
    double brightness;
    double contrast;
    uint8_t fill;
};
/* Identity parameters (scale 1, factors 1, nothing else). */
void cxr_nn_augment_params_identity(struct cxr_nn_augment_params *p);
/* Draws parameters from `o` with a generator seeded by `seed` (use
 * cxr_nn_seed_mix(run_seed, epoch, sample_index)): the same seed gives the
 * same parameters. */
void cxr_nn_augment_draw(const struct cxr_nn_augment_options *o, uint64_t seed,
                         struct cxr_nn_augment_params *p);

/* Warps src (sw x sh, row stride sstride bytes) into dst (dw x dh, stride
 * dstride) with one affine map and bilinear sampling, then applies the
 * brightness/contrast jitter. The output is normally the same size as the
 * input (the next step, cxr_nn_preprocess_u8, does the antialiased resize to
 * the model input, exactly as at inference); a different dw/dh stretches the
 * input onto the output without antialiasing. Identity parameters with
 * dw == sw and dh == sh reproduce src exactly. src and dst must not overlap.
 * CXR_ERR_INVALID_ARG for sizes < 1, strides smaller than the width or
 * non-finite parameters. */
enum cxr_status cxr_nn_augment_apply(const struct cxr_nn_augment_params *p, const uint8_t *src,
                                     int32_t sw, int32_t sh, int32_t sstride, uint8_t *dst,
                                     int32_t dw, int32_t dh, int32_t dstride);

/* ------------------------------------------------------------------ images → tensors */

/* Antialiased resize of an 8-bit greyscale image to exactly dw x dh with the
 * filter cxr_nn_preprocess_u8 uses (triangle widened by the scale factor, as
 * PIL / torch antialias=True), rounded to the nearest integer. Used to bound
 * the memory of stored training images and to make report thumbnails.
 * CXR_ERR_INVALID_ARG for sizes < 1 or > 16384, or small strides. */
enum cxr_status cxr_nn_resize_u8(const uint8_t *src, int32_t sw, int32_t sh, int32_t sstride,
                                 uint8_t *dst, int32_t dw, int32_t dh, int32_t dstride);

/* One training input: the augmentation `p` (NULL: none — validation and
 * evaluation) warps `pixels` (w x h, stride) into `scratch` (w*h bytes; may
 * be NULL when p is NULL), then cxr_nn_preprocess_u8 makes the model tensor
 * `out` (meta->channels x input_height x input_width floats) exactly as
 * inference does. */
enum cxr_status cxr_nn_train_input(const struct cxr_nn_model_meta *meta,
                                   const struct cxr_nn_augment_params *p, const uint8_t *pixels,
                                   int32_t w, int32_t h, int32_t stride, uint8_t *scratch,
                                   float *out);

/* ------------------------------------------------------------------ metrics */

/* Binary metrics: scores are p(positive) (any real numbers work), labels are
 * 1 for the positive class and 0 otherwise. A case is called positive when
 * score >= threshold. */

struct cxr_nn_confusion {
    int64_t tp, fp, tn, fn;
};

/* Counts at `threshold`. */
void cxr_nn_confusion_at(const double *scores, const uint8_t *labels, size_t n, double threshold,
                         struct cxr_nn_confusion *out);

/* Rates of a confusion matrix; a rate with an empty denominator is NaN. */
struct cxr_nn_rates {
    double sensitivity; /* tp / (tp + fn), recall */
    double specificity; /* tn / (tn + fp) */
    double accuracy;    /* (tp + tn) / n */
    double ppv;         /* tp / (tp + fp), precision */
    double npv;         /* tn / (tn + fn) */
};
void cxr_nn_rates_of(const struct cxr_nn_confusion *c, struct cxr_nn_rates *out);

/* Area under the ROC curve as the Mann-Whitney statistic: the probability
 * that a random positive scores above a random negative, ties counting 1/2.
 * O(n log n). NaN when either class is absent or n == 0; also NaN when a
 * score is NaN. */
double cxr_nn_auc(const double *scores, const uint8_t *labels, size_t n);

/* The ROC curve: one point per distinct score, thresholds descending.
 * Point 0 is (fpr 0, tpr 0) at a threshold above every score
 * (threshold[0] = +INFINITY); the last point is (1, 1) at the lowest score.
 * Tied scores make one diagonal step, so the trapezoid area equals
 * cxr_nn_auc. Arrays are malloc'd and owned by the struct. */
struct cxr_nn_roc {
    size_t count;
    double *fpr, *tpr, *threshold;
    double auc; /* trapezoid area of the curve */
    int64_t positives, negatives;
};
/* CXR_ERR_INVALID_ARG when a class is absent or a score is NaN; on failure
 * *out is zeroed. Release with cxr_nn_roc_release. */
enum cxr_status cxr_nn_roc_compute(const double *scores, const uint8_t *labels, size_t n,
                                   struct cxr_nn_roc *out, char *err);
void cxr_nn_roc_release(struct cxr_nn_roc *roc);

/* The largest threshold (one of the scores) whose sensitivity is >= target,
 * i.e. the most specific operating point that still finds `target` of the
 * positives. NaN when there is no positive. */
double cxr_nn_threshold_for_sensitivity(const double *scores, const uint8_t *labels, size_t n,
                                        double target);
/* The smallest threshold whose specificity is >= target: one of the scores,
 * or just above the largest score (nextafter) when only that reaches the
 * target. NaN when there is no negative. */
double cxr_nn_threshold_for_specificity(const double *scores, const uint8_t *labels, size_t n,
                                        double target);

/* Reliability of the probabilities (are they frequencies?): the n cases in
 * `nbins` equal-width score bins [0, 1/k), [1/k, 2/k), ..., [(k-1)/k, 1];
 * per bin its case count, mean score and observed share of positives (NaN
 * for an empty bin), and the expected calibration error
 * ece = sum_b n_b / n * |mean_b - observed_b|. */
#define CXR_NN_MAX_RELIABILITY_BINS 20
struct cxr_nn_reliability {
    int32_t nbins;
    int64_t count[CXR_NN_MAX_RELIABILITY_BINS];
    double mean_score[CXR_NN_MAX_RELIABILITY_BINS];
    double observed[CXR_NN_MAX_RELIABILITY_BINS];
    double ece;
};
/* CXR_ERR_INVALID_ARG for n == 0, nbins outside 1..CXR_NN_MAX_RELIABILITY_BINS
 * or a score outside [0, 1] (NaN included); *out zeroed on failure. */
enum cxr_status cxr_nn_reliability_compute(const double *scores, const uint8_t *labels, size_t n,
                                           int32_t nbins, struct cxr_nn_reliability *out,
                                           char *err);

/* A value with its percentile bootstrap 95 % interval (NaN when undefined). */
struct cxr_nn_ci {
    double value, lo, hi;
};

/* Everything the report and the model metadata show for one threshold. */
struct cxr_nn_eval {
    double threshold;
    size_t n;
    int64_t positives, negatives;
    struct cxr_nn_confusion cm;
    struct cxr_nn_ci auc, sensitivity, specificity, accuracy, ppv, npv;
    int32_t resamples;      /* bootstrap resamples asked for */
    int32_t resamples_used; /* of which had both classes (AUC defined) */
    uint64_t seed;
};

/* Metrics at `threshold` with percentile bootstrap 95 % intervals from
 * `resamples` (0: no intervals, lo = hi = NaN; else >= 100) resamples of the
 * n cases drawn with replacement by a generator seeded with `seed`; a
 * resample lacking a class is left out of the intervals whose metric it
 * cannot define. Deterministic for a seed. CXR_ERR_INVALID_ARG for n == 0,
 * NaN scores or a bad resample count; CXR_ERR_NOMEM. */
enum cxr_status cxr_nn_evaluate(const double *scores, const uint8_t *labels, size_t n,
                                double threshold, int32_t resamples, uint64_t seed,
                                struct cxr_nn_eval *out, char *err);

/* ------------------------------------------------------------------ calibration */

/* How the thresholds are chosen on validation data.
 *   operating threshold = cxr_nn_threshold_for_sensitivity(target_sensitivity):
 *       the finding is reported for at least this share of validation positives;
 *   urgent threshold    = max(operating, cxr_nn_threshold_for_specificity(urgent_specificity)):
 *       at most (1 - urgent_specificity) of validation negatives would be
 *       raised to URGENT; URGENT is never easier to reach than the finding.
 * Both are clamped to [0, 1] (the model metadata's range). */
struct cxr_nn_calibration_options {
    double target_sensitivity; /* default 0.95 */
    double urgent_specificity; /* default 0.95 */
    int32_t resamples;         /* bootstrap resamples, default 2000 */
    uint64_t seed;             /* bootstrap seed, default 1 */
};
void cxr_nn_calibration_options_defaults(struct cxr_nn_calibration_options *o);

struct cxr_nn_calibration {
    double operating_threshold;
    double urgent_threshold;
    struct cxr_nn_eval operating; /* metrics at the operating threshold */
    struct cxr_nn_eval urgent;    /* metrics at the urgent threshold */
    struct cxr_nn_calibration_options options;
};

/* Chooses both thresholds and evaluates them (see above). Needs both
 * classes (CXR_ERR_INVALID_ARG otherwise). */
enum cxr_status cxr_nn_calibrate(const double *scores, const uint8_t *labels, size_t n,
                                 const struct cxr_nn_calibration_options *opt,
                                 struct cxr_nn_calibration *out, char *err);

/* The calibration as one JSON object, for the model's "metrics" metadata:
 * {"split":..., "n":..., "auc":{"value":..,"ci95":[lo,hi]}, "operating":{...},
 *  "urgent":{...}, "target_sensitivity":..., ...}. `split` names the data
 * ("validation"). Returns malloc'd text (caller frees), NULL on OOM. */
char *cxr_nn_calibration_to_json(const struct cxr_nn_calibration *c, const char *split);

#ifdef __cplusplus
}
#endif
#endif
