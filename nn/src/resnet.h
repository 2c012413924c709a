/* resnet.h (internal to nn) — the structure of torchvision's ResNets.
 *
 * One place knows which parameters resnet18/34/50 have, with which names and
 * shapes: the model loader validates files against it, model init creates
 * parameters from it, and the graph builder walks it. Widths are derived from
 * a base width (64 in torchvision; smaller in the committed test fixtures):
 * layer widths are base, 2*base, 4*base, 8*base; bottleneck blocks (resnet50)
 * expand their output by 4.
 */
#ifndef CXR_NN_RESNET_H
#define CXR_NN_RESNET_H

#include <stdbool.h>
#include <stdint.h>

#include "cxr/nn.h"

#define CXR_NN_RESNET_MAX_BLOCKS 16

/* What a parameter is, for init and for folding batch norm. */
enum cxr_nn_param_kind {
    CXR_NN_PARAM_CONV_WEIGHT = 0, /* [out, in, kh, kw] */
    CXR_NN_PARAM_BN_WEIGHT = 1,   /* gamma [c] */
    CXR_NN_PARAM_BN_BIAS = 2,     /* beta [c] */
    CXR_NN_PARAM_BN_MEAN = 3,     /* running_mean [c] (buffer) */
    CXR_NN_PARAM_BN_VAR = 4,      /* running_var [c] (buffer) */
    CXR_NN_PARAM_BN_COUNT = 5,    /* num_batches_tracked [] I64 (buffer, optional in files) */
    CXR_NN_PARAM_FC_WEIGHT = 6,   /* [classes, features] */
    CXR_NN_PARAM_FC_BIAS = 7      /* [classes] */
};

/* One residual block: layer L (1..4), index i inside the layer.
 * Names: "layer<L>.<i>.conv1" ... ; downsample: "layer<L>.<i>.downsample.0"
 * (conv 1x1, stride) and ".downsample.1" (bn). */
struct cxr_nn_resnet_block {
    int32_t layer, index;
    int32_t in_ch;   /* channels entering the block */
    int32_t mid_ch;  /* width of the block's inner convs ("planes") */
    int32_t out_ch;  /* channels leaving the block (mid_ch * expansion) */
    int32_t stride;  /* 1 or 2 (on conv1 for basic, conv2 for bottleneck, as torchvision v1.5) */
    bool downsample; /* identity replaced by conv1x1(stride)+bn */
};

struct cxr_nn_resnet_spec {
    enum cxr_nn_arch arch;
    int32_t in_channels; /* 1 or 3 */
    int32_t base_width;  /* 64 for torchvision */
    int32_t num_classes;
    bool bottleneck;   /* resnet50 */
    int32_t expansion; /* 1 basic, 4 bottleneck */
    int32_t blocks_per_layer[4];
    int32_t n_blocks;
    struct cxr_nn_resnet_block blocks[CXR_NN_RESNET_MAX_BLOCKS];
    int32_t feature_dim; /* channels into fc: 8 * base_width * expansion */
};

/* Fills `out` for an architecture. base_width 1..1024, in_channels 1 or 3,
 * num_classes 1..CXR_NN_MAX_CLASSES; CXR_ERR_INVALID_ARG otherwise. */
enum cxr_status cxr_nn_resnet_spec_make(enum cxr_nn_arch arch, int32_t in_channels,
                                        int32_t base_width, int32_t num_classes,
                                        struct cxr_nn_resnet_spec *out);

/* Calls fn once per parameter/buffer in torchvision's state_dict order
 * ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
 * "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.conv1.weight", ...,
 * "fc.weight", "fc.bias"). `shape` has `ndim` entries (0 for the scalar
 * num_batches_tracked). */
typedef void (*cxr_nn_resnet_param_fn)(void *ctx, const char *name, enum cxr_nn_param_kind kind,
                                       int32_t ndim, const int64_t *shape);
void cxr_nn_resnet_spec_params(const struct cxr_nn_resnet_spec *spec, cxr_nn_resnet_param_fn fn,
                               void *ctx);

/* The spec of a loaded/initialised model (arch from metadata, widths from
 * "conv1.weight", classes from "fc.weight"); the model was validated against
 * it when it was loaded, so this cannot fail for a model that exists. */
void cxr_nn_model_spec(const struct cxr_nn_model *m, struct cxr_nn_resnet_spec *out);

#endif
