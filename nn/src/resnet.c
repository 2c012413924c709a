/* resnet.c — torchvision's ResNet structure (see resnet.h). */
#include <stdio.h>
#include <string.h>

#include "model_internal.h"
#include "resnet.h"

enum cxr_status cxr_nn_resnet_spec_make(enum cxr_nn_arch arch, int32_t in_channels,
                                        int32_t base_width, int32_t num_classes,
                                        struct cxr_nn_resnet_spec *out)
{
    static const int32_t blocks[3][4] = {{2, 2, 2, 2}, {3, 4, 6, 3}, {3, 4, 6, 3}};
    if (!out || (unsigned)arch > CXR_NN_ARCH_RESNET50 || (in_channels != 1 && in_channels != 3) ||
        base_width < 1 || base_width > 1024 || num_classes < 1 || num_classes > CXR_NN_MAX_CLASSES)
        return CXR_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    out->arch = arch;
    out->in_channels = in_channels;
    out->base_width = base_width;
    out->num_classes = num_classes;
    out->bottleneck = arch == CXR_NN_ARCH_RESNET50;
    out->expansion = out->bottleneck ? 4 : 1;
    memcpy(out->blocks_per_layer, blocks[arch], sizeof out->blocks_per_layer);

    int32_t in_ch = base_width; /* after the stem (conv1 -> bn1 -> relu -> maxpool) */
    int32_t n = 0;
    for (int32_t l = 0; l < 4; l++) {
        int32_t mid = base_width << l;
        int32_t outc = mid * out->expansion;
        for (int32_t i = 0; i < out->blocks_per_layer[l]; i++) {
            struct cxr_nn_resnet_block *b = &out->blocks[n++];
            b->layer = l + 1;
            b->index = i;
            b->in_ch = in_ch;
            b->mid_ch = mid;
            b->out_ch = outc;
            b->stride = (i == 0 && l > 0) ? 2 : 1;
            b->downsample = i == 0 && (b->stride != 1 || in_ch != outc);
            in_ch = outc;
        }
    }
    out->n_blocks = n;
    out->feature_dim = 8 * base_width * out->expansion;
    return CXR_OK;
}

static void emit_conv(const char *prefix, int32_t o, int32_t i, int32_t k,
                      cxr_nn_resnet_param_fn fn, void *ctx)
{
    char name[CXR_NN_NAME_LEN];
    int64_t shape[4] = {o, i, k, k};
    snprintf(name, sizeof name, "%s.weight", prefix);
    fn(ctx, name, CXR_NN_PARAM_CONV_WEIGHT, 4, shape);
}

static void emit_bn(const char *prefix, int32_t c, cxr_nn_resnet_param_fn fn, void *ctx)
{
    static const struct {
        const char *suffix;
        enum cxr_nn_param_kind kind;
    } parts[] = {
        {"weight", CXR_NN_PARAM_BN_WEIGHT},
        {"bias", CXR_NN_PARAM_BN_BIAS},
        {"running_mean", CXR_NN_PARAM_BN_MEAN},
        {"running_var", CXR_NN_PARAM_BN_VAR},
        {"num_batches_tracked", CXR_NN_PARAM_BN_COUNT},
    };
    char name[CXR_NN_NAME_LEN];
    int64_t shape[1] = {c};
    for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++) {
        snprintf(name, sizeof name, "%s.%s", prefix, parts[p].suffix);
        bool count = parts[p].kind == CXR_NN_PARAM_BN_COUNT;
        fn(ctx, name, parts[p].kind, count ? 0 : 1, shape);
    }
}

void cxr_nn_resnet_spec_params(const struct cxr_nn_resnet_spec *spec, cxr_nn_resnet_param_fn fn,
                               void *ctx)
{
    char prefix[64];
    emit_conv("conv1", spec->base_width, spec->in_channels, 7, fn, ctx);
    emit_bn("bn1", spec->base_width, fn, ctx);
    for (int32_t n = 0; n < spec->n_blocks; n++) {
        const struct cxr_nn_resnet_block *b = &spec->blocks[n];
        char base[32];
        snprintf(base, sizeof base, "layer%d.%d", (int)b->layer, (int)b->index);
        if (spec->bottleneck) {
            snprintf(prefix, sizeof prefix, "%s.conv1", base);
            emit_conv(prefix, b->mid_ch, b->in_ch, 1, fn, ctx);
            snprintf(prefix, sizeof prefix, "%s.bn1", base);
            emit_bn(prefix, b->mid_ch, fn, ctx);
            snprintf(prefix, sizeof prefix, "%s.conv2", base);
            emit_conv(prefix, b->mid_ch, b->mid_ch, 3, fn, ctx);
            snprintf(prefix, sizeof prefix, "%s.bn2", base);
            emit_bn(prefix, b->mid_ch, fn, ctx);
            snprintf(prefix, sizeof prefix, "%s.conv3", base);
            emit_conv(prefix, b->out_ch, b->mid_ch, 1, fn, ctx);
            snprintf(prefix, sizeof prefix, "%s.bn3", base);
            emit_bn(prefix, b->out_ch, fn, ctx);
        } else {
            snprintf(prefix, sizeof prefix, "%s.conv1", base);
            emit_conv(prefix, b->mid_ch, b->in_ch, 3, fn, ctx);
            snprintf(prefix, sizeof prefix, "%s.bn1", base);
            emit_bn(prefix, b->mid_ch, fn, ctx);
            snprintf(prefix, sizeof prefix, "%s.conv2", base);
            emit_conv(prefix, b->out_ch, b->mid_ch, 3, fn, ctx);
            snprintf(prefix, sizeof prefix, "%s.bn2", base);
            emit_bn(prefix, b->out_ch, fn, ctx);
        }
        if (b->downsample) {
            snprintf(prefix, sizeof prefix, "%s.downsample.0", base);
            emit_conv(prefix, b->out_ch, b->in_ch, 1, fn, ctx);
            snprintf(prefix, sizeof prefix, "%s.downsample.1", base);
            emit_bn(prefix, b->out_ch, fn, ctx);
        }
    }
    int64_t fcw[2] = {spec->num_classes, spec->feature_dim};
    int64_t fcb[1] = {spec->num_classes};
    fn(ctx, "fc.weight", CXR_NN_PARAM_FC_WEIGHT, 2, fcw);
    fn(ctx, "fc.bias", CXR_NN_PARAM_FC_BIAS, 1, fcb);
}

void cxr_nn_model_spec(const struct cxr_nn_model *m, struct cxr_nn_resnet_spec *out)
{
    *out = m->spec;
}
