/* model_internal.h (internal to nn) — the model object shared by the loader
 * (safetensors.c), the writer, init (model_init.c), metadata (model_meta.c)
 * and the accessors (model.c). Other nn files use cxr/nn.h and resnet.h only.
 */
#ifndef CXR_NN_MODEL_INTERNAL_H
#define CXR_NN_MODEL_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>

#include "cxr/nn.h"
#include "resnet.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "model files are little-endian; this code assumes a little-endian host"
#endif

/* The format tag written to "__metadata__"."format". */
#define CXR_NN_MODEL_FORMAT "cxr-triage-model/1"
/* Cap on a safetensors JSON header. */
#define CXR_NN_MAX_HEADER   (64u << 20)

/* A model: metadata, the spec it was checked against, and every tensor of
 * the spec in torchvision state_dict order (num_batches_tracked included,
 * 0 when the file had none). Float parameters are F32, num_batches_tracked
 * I64; each tensor's data is its own 64-byte aligned allocation. */
struct cxr_nn_model {
    struct cxr_nn_model_meta meta;
    struct cxr_nn_resnet_spec spec;
    struct cxr_nn_tensor *tensors;
    enum cxr_nn_param_kind *kinds; /* per tensor */
    uint32_t n_tensors;
    enum cxr_nn_dtype storage; /* float storage of the file it came from (F64 read as F32) */
    char sha256[65];
};

/* Allocates an empty model with one zeroed F32/I64 tensor per parameter of
 * `spec` (names, kinds and shapes from cxr_nn_resnet_spec_params). The
 * metadata is zeroed except that doubles are NaN. NULL when out of memory. */
struct cxr_nn_model *cxr_nn_model_alloc(const struct cxr_nn_resnet_spec *spec);

/* The kind of the model's i-th tensor (same order as the spec). */
enum cxr_nn_param_kind cxr_nn_model_kind_at(const struct cxr_nn_model *m, uint32_t i);

/* ---- metadata (model_meta.c) */

/* Checks metadata values against each other and against the spec (arch,
 * channels, classes). Returns CXR_OK or CXR_ERR_NN_MODEL with a message
 * starting with "metadata". */
enum cxr_status cxr_nn_meta_validate(const struct cxr_nn_model_meta *meta,
                                     const struct cxr_nn_resnet_spec *spec, char *err);

/* Whether text is exactly one JSON value (surrounding whitespace allowed). */
bool cxr_nn_json_text_valid(const char *text);

/* Deep copy of src into dst (dst's owned strings are not freed first). */
enum cxr_status cxr_nn_meta_copy(struct cxr_nn_model_meta *dst,
                                 const struct cxr_nn_model_meta *src);
void cxr_nn_meta_release(struct cxr_nn_model_meta *meta);

/* Fills `meta` from the "__metadata__" key/value strings (a json-c object,
 * may be NULL) for a model of `spec`; missing keys take the defaults of
 * cxr_nn_model_meta_defaults (classes "class<i>" unless 2). */
struct json_object;
enum cxr_status cxr_nn_meta_from_json(struct json_object *md, const struct cxr_nn_resnet_spec *spec,
                                      struct cxr_nn_model_meta *meta, const char *file, char *err);
/* A new json-c object of string values for "__metadata__"; NULL on OOM. */
struct json_object *cxr_nn_meta_to_json(const struct cxr_nn_model_meta *meta);

/* "training_images" (model_digests.c): the text form of the list, JSON
 * {"hash": "sha256-64", "images": N, "sample_bits": K, "digests": base64 of
 * the big-endian 8-byte digests}. from_text fills meta's list (an unknown
 * "hash" leaves it empty) or fails with CXR_ERR_NN_MODEL and why (`why`,
 * `len` bytes); to_text returns malloc'd text, NULL when out of memory. */
enum cxr_status cxr_nn_meta_digests_from_text(const char *text, struct cxr_nn_model_meta *meta,
                                              char *why, size_t len);
char *cxr_nn_meta_digests_to_text(const struct cxr_nn_model_meta *meta);

/* SHA-256 of buf as 64 lowercase hex characters ("" if OpenSSL fails). */
void cxr_nn_sha256_hex(const void *buf, size_t len, char out[65]);

/* ---- number formats (tensor.c) */
float cxr_nn_f16_to_f32(uint16_t h);
float cxr_nn_bf16_to_f32(uint16_t b);
uint16_t cxr_nn_f32_to_f16(float f);  /* round to nearest even */
uint16_t cxr_nn_f32_to_bf16(float f); /* round to nearest even, NaN kept NaN */

#endif
