/* cxr/nn.h — tensors, ResNet models, model files, preprocessing and the
 * compute backends (CPU: oneDNN; GPU: cuDNN). Knows nothing of DICOM.
 *
 * Threads: a model is immutable after load/init and may be shared by threads.
 * A net (a model compiled for one backend) is used by one thread at a time.
 * Errors: functions return enum cxr_status; detail text goes to the `err`
 * buffer given by the caller (CXR_ERRLEN bytes, may be NULL) or to the
 * object's cxr_nn_*_last_error().
 */
#ifndef CXR_NN_H
#define CXR_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_NN_MAX_DIMS    4
#define CXR_NN_MAX_CLASSES 16
#define CXR_NN_NAME_LEN    96

/* ------------------------------------------------------------------ tensors */

enum cxr_nn_dtype {
    CXR_NN_DTYPE_F32 = 0,
    CXR_NN_DTYPE_F16 = 1,
    CXR_NN_DTYPE_BF16 = 2,
    CXR_NN_DTYPE_F64 = 3,
    CXR_NN_DTYPE_I64 = 4, /* only for BN's num_batches_tracked */
    CXR_NN_DTYPE_U8 = 5
};

/* Bytes per element; 0 for an unknown dtype. */
size_t cxr_nn_dtype_size(enum cxr_nn_dtype t);
/* "F32", "BF16", ... as in safetensors. */
const char *cxr_nn_dtype_name(enum cxr_nn_dtype t);

/* A named dense tensor in host memory, row-major (PyTorch layout: conv
 * weights are OIHW). `data` is owned by whoever made the tensor (the model
 * for model parameters). `extra` is for a backend's own state (device copy,
 * reordered weights); core code never looks inside it. */
struct cxr_nn_tensor {
    char name[CXR_NN_NAME_LEN];
    enum cxr_nn_dtype dtype;
    int32_t ndim;
    int64_t shape[CXR_NN_MAX_DIMS];
    void *data;
    size_t nbytes;
    void *extra;
};

int64_t cxr_nn_tensor_numel(const struct cxr_nn_tensor *t);

/* ------------------------------------------------------------------ models */

enum cxr_nn_arch { CXR_NN_ARCH_RESNET18 = 0, CXR_NN_ARCH_RESNET34 = 1, CXR_NN_ARCH_RESNET50 = 2 };

/* "resnet18" ... ; parse returns false for an unknown name. */
const char *cxr_nn_arch_name(enum cxr_nn_arch a);
bool cxr_nn_arch_parse(const char *name, enum cxr_nn_arch *out);

/* Contrast normalisation of the 8-bit image before resizing (metadata key
 * "contrast"). */
enum cxr_nn_contrast {
    CXR_NN_CONTRAST_NONE = 0,    /* the presentation image as it is */
    CXR_NN_CONTRAST_EQUALIZE = 1 /* global histogram equalisation (see cxr_nn_equalize_u8) */
};

enum cxr_nn_resize_mode {
    CXR_NN_RESIZE_STRETCH = 0,  /* scale each axis to the input size */
    CXR_NN_RESIZE_LETTERBOX = 1 /* keep aspect, pad with black, centred */
};

/* The model's metadata (safetensors "__metadata__", all values stored as
 * strings there). Unknown values: NaN for doubles, "" for strings. */
struct cxr_nn_model_meta {
    enum cxr_nn_arch arch;
    int32_t input_height, input_width; /* e.g. 224 x 224 */
    int32_t channels;                  /* 1 or 3 */
    float mean[3], std[3];             /* applied to x/255 per channel */
    int32_t num_classes;
    char class_names[CXR_NN_MAX_CLASSES][32];
    int32_t positive_class;     /* index of the finding class ("PNEUMONIA") */
    double operating_threshold; /* p(positive) >= this: finding present */
    double urgent_threshold;    /* p >= this: URGENT priority */
    enum cxr_nn_resize_mode resize_mode;
    enum cxr_nn_contrast contrast;       /* applied before the resize; default none */
    int32_t preprocessing_version;       /* bumps when the pixel pipeline changes */
    double age_min_years, age_max_years; /* intended population (NaN: unknown) */
    char name[64];                       /* e.g. "cxr-default" */
    char version[32];                    /* e.g. "2026.11.1" */
    char created[32];                    /* ISO 8601 UTC */
    char training_data_digest[72];       /* "sha256:<hex>" of the training list */
    char *metrics_json;                  /* validation metrics as JSON text, owned by the model */
    char *description;                   /* free text, owned by the model */
    /* The images the model was trained on (metadata "training_images"; see
     * docs/model-format.md), so that an evaluation can tell when it scores
     * them: per image, the first 8 bytes of the SHA-256 of its file's bytes,
     * read big-endian; sorted, unique, owned by the model. When more than
     * CXR_NN_MAX_TRAINING_DIGESTS would be kept, only those whose top
     * training_digest_sample_bits bits are 0 are (a 1-in-2^bits sample).
     * training_image_count 0: the model carries no list (NULL, 0, 0). */
    uint64_t *training_digests;
    uint32_t training_digest_count;
    int32_t training_digest_sample_bits; /* 0..32 */
    int64_t training_image_count;        /* images the list stands for */
};

/* Cap on the digests a model keeps: 1 MiB of digests, 1.4 MB of metadata. */
#define CXR_NN_MAX_TRAINING_DIGESTS 131072u

struct cxr_nn_model; /* opaque */

/* Loads a safetensors file. Everything is checked before use: header length
 * (<= 64 MiB and inside the file), JSON, dtypes, shapes, data offsets (inside
 * the data area, sized exactly, not overlapping), the parameters the
 * architecture needs (names and shapes, torchvision naming), metadata values.
 * F16/BF16/F64 parameters are converted to F32 in memory. Computes the file's
 * SHA-256. On failure *out == NULL and err says what and where
 * ("model.safetensors: tensor 'layer1.0.conv1.weight': data_offsets [..] past
 * the end of the file"). Caller frees with cxr_nn_model_free. */
enum cxr_status cxr_nn_model_load(const char *path, struct cxr_nn_model **out, char *err);
enum cxr_status cxr_nn_model_load_memory(const void *buf, size_t len, const char *name,
                                         struct cxr_nn_model **out, char *err);

/* A new model with He (Kaiming normal, fan_out, as torchvision) initialised
 * conv weights, BN gamma=1/beta=0/mean=0/var=1, and torchvision's default
 * Linear init, from a seeded generator: the same seed gives the same bytes.
 * `meta` supplies arch, input size, channels, classes, mean/std and
 * thresholds; the model keeps a copy. */
enum cxr_status cxr_nn_model_init(const struct cxr_nn_model_meta *meta, uint64_t seed,
                                  struct cxr_nn_model **out, char *err);

/* As cxr_nn_model_init with layer widths base_width, 2x, 4x, 8x (torchvision:
 * 64, which cxr_nn_model_init uses): small widths make small, fast models
 * for tests. base_width 1..1024, else CXR_ERR_INVALID_ARG. */
enum cxr_status cxr_nn_model_init_width(const struct cxr_nn_model_meta *meta, int32_t base_width,
                                        uint64_t seed, struct cxr_nn_model **out, char *err);

/* Default metadata for a fresh model: 1 channel, 224x224, mean 0.5, std 0.25,
 * classes NORMAL/PNEUMONIA (positive 1), threshold 0.5, urgent 0.9, stretch. */
void cxr_nn_model_meta_defaults(struct cxr_nn_model_meta *meta, enum cxr_nn_arch arch);

/* True when the metadata marks the weights as untrained (`cxr-triage model
 * init` writes "UNTRAINED" into the description): its scores mean nothing. */
bool cxr_nn_model_meta_untrained(const struct cxr_nn_model_meta *meta);

/* Writes the model as safetensors (metadata included) to `path` atomically
 * (temp file, fsync, rename). `storage` is F32, F16 or BF16 for the float
 * parameters (BN running statistics are kept in F32). */
enum cxr_status cxr_nn_model_save(const struct cxr_nn_model *m, const char *path,
                                  enum cxr_nn_dtype storage, char *err);

void cxr_nn_model_free(struct cxr_nn_model *m);

const struct cxr_nn_model_meta *cxr_nn_model_meta(const struct cxr_nn_model *m);
/* Mutable metadata (for the trainer: thresholds, metrics). Strings inside are
 * owned by the model; set them with cxr_nn_model_set_text. */
struct cxr_nn_model_meta *cxr_nn_model_meta_mut(struct cxr_nn_model *m);
/* Replaces an owned text field: key "metrics_json" or "description". */
enum cxr_status cxr_nn_model_set_text(struct cxr_nn_model *m, const char *key, const char *value);
/* Appends `note` to the description: the old text without trailing blanks,
 * one space, the note. CXR_ERR_NOMEM. */
enum cxr_status cxr_nn_model_append_note(struct cxr_nn_model *m, const char *note);

/* SHA-256 of the file it was loaded from, as 64 hex characters ("" for a
 * model made in memory and not yet saved; save updates it). */
const char *cxr_nn_model_sha256(const struct cxr_nn_model *m);

/* The float storage type of the file the model was loaded from (F32, F16 or
 * BF16; F64 files and models made in memory give F32). */
enum cxr_nn_dtype cxr_nn_model_storage(const struct cxr_nn_model *m);

uint32_t cxr_nn_model_tensor_count(const struct cxr_nn_model *m);
struct cxr_nn_tensor *cxr_nn_model_tensor_at(const struct cxr_nn_model *m, uint32_t i);
/* NULL when absent. */
struct cxr_nn_tensor *cxr_nn_model_tensor_find(const struct cxr_nn_model *m, const char *name);
/* Number of trainable parameters (elements). */
int64_t cxr_nn_model_param_count(const struct cxr_nn_model *m);
/* Replaces the list of training images with the digests[0..n) (any order,
 * duplicates allowed; see struct cxr_nn_model_meta), sampled 1 in
 * 2^sample_bits or, when more than CXR_NN_MAX_TRAINING_DIGESTS would remain,
 * the smallest sparser sample that fits. `images` is the number of images the
 * digests stand for (n when they are all the images; an estimate when merged
 * from sampled lists); images 0 removes the list. CXR_ERR_INVALID_ARG for
 * sample_bits outside 0..32 or images < 0; CXR_ERR_NOMEM. */
enum cxr_status cxr_nn_model_set_training_digests(struct cxr_nn_model *m, const uint64_t *digests,
                                                  size_t n, int32_t sample_bits, int64_t images);
/* Whether the image whose digest this is was in the model's training list:
 * 1 yes, 0 no, -1 cannot tell (no list, or the digest lies outside the
 * list's sample). */
int cxr_nn_model_meta_trained_on(const struct cxr_nn_model_meta *meta, uint64_t digest);
/* The digest of the image file whose SHA-256 is `sha256_hex` (64 hex
 * characters): its first 8 bytes, big-endian. 0 for text that is not hex. */
uint64_t cxr_nn_training_digest_from_hex(const char *sha256_hex);

/* CXR_ERR_NN_MODEL when a parameter or buffer holds a NaN or an infinity
 * (err names the tensor and the element), else CXR_OK. A model that loads
 * may still hold them (cxr_nn_model_load checks the file's structure, not
 * the values); the engine refuses such a model, since every score it gave
 * would be NaN. */
enum cxr_status cxr_nn_model_check_finite(const struct cxr_nn_model *m, char *err);

/* Human-readable summary for `cxr-triage model info`: arch, parameters,
 * metadata, SHA-256; `json` selects one JSON object instead. */
void cxr_nn_model_describe(const struct cxr_nn_model *m, FILE *fp, bool json);

/* ------------------------------------------------------------------ backends */

enum cxr_nn_backend_kind {
    CXR_NN_BACKEND_AUTO = 0, /* CUDA when usable, else CPU */
    CXR_NN_BACKEND_CPU = 1,
    CXR_NN_BACKEND_CUDA = 2
};

enum cxr_nn_precision {
    CXR_NN_PRECISION_AUTO = 0, /* CPU: fp32 (bf16 is opt-in: scores would otherwise depend on
                                * the host's CPU features and drift from the fp32-calibrated
                                * thresholds; see docs/benchmarks.md) */
    CXR_NN_PRECISION_FP32 = 1,
    CXR_NN_PRECISION_BF16 = 2, /* CPU: needs AVX512-BF16 or AMX, else CXR_ERR_UNSUPPORTED */
    CXR_NN_PRECISION_FP16 = 3
};

struct cxr_nn_backend_options {
    enum cxr_nn_backend_kind kind;
    enum cxr_nn_precision precision;
    int32_t threads; /* CPU threads; 0 = all online CPUs */
    int32_t device;  /* GPU index */
};

struct cxr_nn_backend; /* opaque; see nn/src/backend.h for the function table */

/* Opens a backend. AUTO picks CUDA when a device and the libraries are
 * usable, else the CPU, and says why in `note` (may be NULL, CXR_ERRLEN).
 * CUDA asked for without a device: CXR_ERR_NN_NO_DEVICE. */
enum cxr_status cxr_nn_backend_open(const struct cxr_nn_backend_options *opt,
                                    struct cxr_nn_backend **out, char *note, char *err);
void cxr_nn_backend_close(struct cxr_nn_backend *b);
/* "cpu" or "cuda"; and a description ("oneDNN 2.6.3, avx512_core_bf16, 2 threads, bf16"). */
const char *cxr_nn_backend_name(const struct cxr_nn_backend *b);
const char *cxr_nn_backend_describe(const struct cxr_nn_backend *b);
/* The precision it actually runs (AUTO resolved). */
enum cxr_nn_precision cxr_nn_backend_precision(const struct cxr_nn_backend *b);
/* Which backends this build has (for `cxr-triage version`): "cpu(oneDNN 2.6.3) cuda(cuDNN 9.19)".
 */
const char *cxr_nn_backends_built(void);

/* ------------------------------------------------------------------ nets */

struct cxr_nn_net; /* a model compiled for a backend, for batches up to max_batch */

/* Compiles `m` for `b` (batch-norm folded into conv, ReLU and the residual add
 * fused, weights converted/uploaded once). The net keeps a reference to
 * neither: it copies what it needs, so the model may be freed afterwards.
 * The backend must outlive the net. */
enum cxr_status cxr_nn_net_new(struct cxr_nn_backend *b, const struct cxr_nn_model *m,
                               int32_t max_batch, struct cxr_nn_net **out, char *err);
void cxr_nn_net_free(struct cxr_nn_net *net);

/* Forward pass: `input` is n x C x H x W float (NCHW, already normalised),
 * `logits` receives n x num_classes floats. 1 <= n <= max_batch. */
enum cxr_status cxr_nn_net_forward(struct cxr_nn_net *net, const float *input, int32_t n,
                                   float *logits);
const char *cxr_nn_net_last_error(const struct cxr_nn_net *net);

/* Softmax over k logits into probs (numerically stable). */
void cxr_nn_softmax(const float *logits, int32_t k, float *probs);

/* ------------------------------------------------------------------ preprocessing */

/* Turns an 8-bit greyscale presentation image (row stride in bytes) into the
 * model's input tensor C x H x W (C = meta->channels; grey replicated):
 * contrast normalisation per meta->contrast (cxr_nn_equalize_u8), then an
 * antialiased resize (triangle filter widened by the scale factor, as PIL and
 * torch's interpolate(antialias=True) do), stretch or letterbox per
 * meta->resize_mode (letterbox pads with black), then (x/255 - mean)/std.
 * `mask` (may be NULL) marks valid pixels (non-zero); padding pixels are
 * replaced by black before resizing. `out` has C*H*W floats. */
enum cxr_status cxr_nn_preprocess_u8(const struct cxr_nn_model_meta *meta, const uint8_t *pixels,
                                     int32_t width, int32_t height, int32_t stride,
                                     const uint8_t *mask, float *out);

/* The same on backend b's device when it has a preprocessing kernel (CUDA:
 * the image goes up, C x H x W floats come back; results equal the CPU's to
 * float rounding), else cxr_nn_preprocess_u8 itself. `err` (may be NULL)
 * gets the device's error text. Thread-safe for one backend. */
enum cxr_status cxr_nn_backend_preprocess_u8(struct cxr_nn_backend *b,
                                             const struct cxr_nn_model_meta *meta,
                                             const uint8_t *pixels, int32_t width, int32_t height,
                                             int32_t stride, const uint8_t *mask, float *out,
                                             char *err);

/* Global histogram equalisation of an 8-bit image, as OpenCV's
 * equalizeHist defines it: with h the histogram of the valid pixels (mask
 * non-zero, or all when mask is NULL), cdf its running sum, n the number of
 * valid pixels and m = cdf[v_min] (v_min the smallest value present),
 * lut[v] = round(255 * (cdf[v] - m) / (n - m)); the smallest value present
 * maps to 0, the largest to 255. A constant image (n == m) is copied as it
 * is. Masked-out pixels become 0. `out` has width*height bytes (row stride =
 * width); it may not alias `pixels`. */
enum cxr_status cxr_nn_equalize_u8(const uint8_t *pixels, int32_t width, int32_t height,
                                   int32_t stride, const uint8_t *mask, uint8_t *out);

#ifdef __cplusplus
}
#endif
#endif
