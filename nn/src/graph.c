/* graph.c — the backend-independent op graph (see graph.h). */
#include "graph.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *cxr_nn_op_kind_name(enum cxr_nn_op_kind k)
{
    static const char *const names[CXR_NN_OP_KIND_COUNT] = {"conv", "bn",  "relu", "maxpool",
                                                            "add",  "gap", "fc"};
    return (unsigned)k < CXR_NN_OP_KIND_COUNT ? names[k] : "?";
}

/* Grows an array of `size`-byte items to hold one more; false on OOM/cap. */
static bool grow(void **arr, int32_t n, int32_t *cap, size_t size)
{
    return n < CXR_NN_GRAPH_MAX_OPS * 4 && cxr_nn_grow(arr, n, cap, size);
}

static int32_t add_value(struct cxr_nn_graph *g, int32_t c, int32_t h, int32_t w, int32_t producer)
{
    if (!grow((void **)&g->values, g->n_values, &g->cap_values, sizeof *g->values))
        return -1;
    g->values[g->n_values] = (struct cxr_nn_value){.c = c, .h = h, .w = w, .producer = producer};
    return g->n_values++;
}

struct cxr_nn_graph *cxr_nn_graph_new(int32_t c, int32_t h, int32_t w)
{
    if (c < 1 || h < 1 || w < 1)
        return NULL;
    struct cxr_nn_graph *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->input = add_value(g, c, h, w, -1);
    if (g->input < 0) {
        free(g);
        return NULL;
    }
    g->output = g->input;
    return g;
}

void cxr_nn_graph_free(struct cxr_nn_graph *g)
{
    if (!g)
        return;
    cxr_nn_graph_unbind(g);
    free(g->ops);
    free(g->values);
    free(g->params);
    free(g);
}

/* Declares a parameter; returns its index or -1. */
static int32_t add_param(struct cxr_nn_graph *g, const char *op_name, const char *suffix,
                         int32_t ndim, const int64_t *shape)
{
    if (!grow((void **)&g->params, g->n_params, &g->cap_params, sizeof *g->params))
        return -1;
    struct cxr_nn_param *p = &g->params[g->n_params];
    memset(p, 0, sizeof *p);
    if ((size_t)snprintf(p->t.name, sizeof p->t.name, "%s.%s", op_name, suffix) >= sizeof p->t.name)
        return -1;
    p->t.dtype = CXR_NN_DTYPE_F32;
    p->t.ndim = ndim;
    size_t n = 1;
    for (int32_t i = 0; i < ndim; i++) {
        p->t.shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    p->t.nbytes = n * sizeof(float);
    p->derived_from = -1;
    p->src_weight = p->src_bias = -1;
    p->used = true;
    return g->n_params++;
}

/* Appends an op of `kind` reading x (and y when >= 0); checks value indices
 * and the name. Returns the op or NULL with err set. */
static struct cxr_nn_op *add_op(struct cxr_nn_graph *g, enum cxr_nn_op_kind kind, const char *name,
                                int32_t x, int32_t y, char *err)
{
    if (!g || x < 0 || x >= g->n_values || (y >= 0 && y >= g->n_values) || !name ||
        strlen(name) + 16 >= CXR_NN_NAME_LEN) {
        cxr_seterr(err, CXR_ERR_INVALID_ARG, "graph: bad arguments for %s op '%s'",
                   cxr_nn_op_kind_name(kind), name ? name : "(null)");
        return NULL;
    }
    if (g->n_ops >= CXR_NN_GRAPH_MAX_OPS ||
        !grow((void **)&g->ops, g->n_ops, &g->cap_ops, sizeof *g->ops)) {
        cxr_seterr(err, CXR_ERR_NOMEM, "graph: cannot add op '%s' (out of memory or too many ops)",
                   name);
        return NULL;
    }
    struct cxr_nn_op *op = &g->ops[g->n_ops];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    snprintf(op->name, sizeof op->name, "%s", name);
    op->in[0] = x;
    op->n_in = 1;
    if (y >= 0) {
        op->in[1] = y;
        op->n_in = 2;
    }
    op->out = -1;
    op->absorbed_by = op->folded_bn = op->sum_in = -1;
    for (int32_t i = 0; i < CXR_NN_OP_MAX_PARAMS; i++)
        op->param[i] = -1;
    return op;
}

/* Gives op its output value and commits it; returns the value or -1. */
static int32_t finish_op(struct cxr_nn_graph *g, struct cxr_nn_op *op, int32_t c, int32_t h,
                         int32_t w, char *err)
{
    if (c < 1 || h < 1 || w < 1) {
        cxr_seterr(err, CXR_ERR_NN_SHAPE, "graph: op '%s' would produce an empty %dx%dx%d tensor",
                   op->name, c, h, w);
        return -1;
    }
    int32_t v = add_value(g, c, h, w, g->n_ops);
    if (v < 0) {
        cxr_seterr(err, CXR_ERR_NOMEM, "graph: out of memory");
        return -1;
    }
    op->out = v;
    g->n_ops++;
    g->output = v;
    return v;
}

static int32_t out_dim(int32_t in, int32_t k, int32_t s, int32_t p)
{
    if (s < 1 || in + 2 * p < k)
        return 0;
    return (in + 2 * p - k) / s + 1;
}

int32_t cxr_nn_graph_conv(struct cxr_nn_graph *g, const char *name, int32_t x, int32_t out_ch,
                          int32_t kernel, int32_t stride, int32_t pad, bool bias, char *err)
{
    struct cxr_nn_op *op = add_op(g, CXR_NN_OP_CONV, name, x, -1, err);
    if (!op)
        return -1;
    const struct cxr_nn_value in = g->values[x];
    if (out_ch < 1 || kernel < 1 || stride < 1 || pad < 0 || pad >= kernel) {
        cxr_seterr(err, CXR_ERR_INVALID_ARG, "graph: conv '%s': bad geometry", name);
        return -1;
    }
    int64_t wshape[4] = {out_ch, in.c, kernel, kernel}, bshape[1] = {out_ch};
    op->kernel_h = op->kernel_w = kernel;
    op->stride = stride;
    op->pad = pad;
    op->param[0] = add_param(g, name, "weight", 4, wshape);
    op->n_params = 2;
    if (bias)
        op->param[1] = add_param(g, name, "bias", 1, bshape);
    if (op->param[0] < 0 || (bias && op->param[1] < 0)) {
        cxr_seterr(err, CXR_ERR_NOMEM, "graph: out of memory");
        return -1;
    }
    return finish_op(g, op, out_ch, out_dim(in.h, kernel, stride, pad),
                     out_dim(in.w, kernel, stride, pad), err);
}

int32_t cxr_nn_graph_bn(struct cxr_nn_graph *g, const char *name, int32_t x, float eps, char *err)
{
    static const char *const parts[4] = {"weight", "bias", "running_mean", "running_var"};
    struct cxr_nn_op *op = add_op(g, CXR_NN_OP_BN, name, x, -1, err);
    if (!op)
        return -1;
    const struct cxr_nn_value in = g->values[x];
    int64_t shape[1] = {in.c};
    op->eps = eps;
    op->n_params = 4;
    for (int32_t i = 0; i < 4; i++) {
        op->param[i] = add_param(g, name, parts[i], 1, shape);
        if (op->param[i] < 0) {
            cxr_seterr(err, CXR_ERR_NOMEM, "graph: out of memory");
            return -1;
        }
    }
    return finish_op(g, op, in.c, in.h, in.w, err);
}

int32_t cxr_nn_graph_relu(struct cxr_nn_graph *g, const char *name, int32_t x, char *err)
{
    struct cxr_nn_op *op = add_op(g, CXR_NN_OP_RELU, name, x, -1, err);
    if (!op)
        return -1;
    const struct cxr_nn_value in = g->values[x];
    return finish_op(g, op, in.c, in.h, in.w, err);
}

int32_t cxr_nn_graph_maxpool(struct cxr_nn_graph *g, const char *name, int32_t x, int32_t kernel,
                             int32_t stride, int32_t pad, char *err)
{
    struct cxr_nn_op *op = add_op(g, CXR_NN_OP_MAXPOOL, name, x, -1, err);
    if (!op)
        return -1;
    if (kernel < 1 || stride < 1 || pad < 0 || 2 * pad > kernel) {
        cxr_seterr(err, CXR_ERR_INVALID_ARG, "graph: maxpool '%s': bad geometry", name);
        return -1;
    }
    const struct cxr_nn_value in = g->values[x];
    op->kernel_h = op->kernel_w = kernel;
    op->stride = stride;
    op->pad = pad;
    return finish_op(g, op, in.c, out_dim(in.h, kernel, stride, pad),
                     out_dim(in.w, kernel, stride, pad), err);
}

int32_t cxr_nn_graph_add(struct cxr_nn_graph *g, const char *name, int32_t a, int32_t b, char *err)
{
    if (b < 0) {
        cxr_seterr(err, CXR_ERR_INVALID_ARG, "graph: add '%s': second input missing", name);
        return -1;
    }
    struct cxr_nn_op *op = add_op(g, CXR_NN_OP_ADD, name, a, b, err);
    if (!op)
        return -1;
    const struct cxr_nn_value va = g->values[a], vb = g->values[b];
    if (va.c != vb.c || va.h != vb.h || va.w != vb.w) {
        cxr_seterr(err, CXR_ERR_NN_SHAPE, "graph: add '%s': %dx%dx%d + %dx%dx%d", name, va.c, va.h,
                   va.w, vb.c, vb.h, vb.w);
        return -1;
    }
    return finish_op(g, op, va.c, va.h, va.w, err);
}

int32_t cxr_nn_graph_gap(struct cxr_nn_graph *g, const char *name, int32_t x, char *err)
{
    struct cxr_nn_op *op = add_op(g, CXR_NN_OP_GAP, name, x, -1, err);
    if (!op)
        return -1;
    const struct cxr_nn_value in = g->values[x];
    op->kernel_h = in.h;
    op->kernel_w = in.w;
    op->stride = 1;
    return finish_op(g, op, in.c, 1, 1, err);
}

int32_t cxr_nn_graph_fc(struct cxr_nn_graph *g, const char *name, int32_t x, int32_t out_features,
                        char *err)
{
    struct cxr_nn_op *op = add_op(g, CXR_NN_OP_FC, name, x, -1, err);
    if (!op)
        return -1;
    const struct cxr_nn_value in = g->values[x];
    if (in.h != 1 || in.w != 1 || out_features < 1) {
        cxr_seterr(err, CXR_ERR_NN_SHAPE, "graph: fc '%s' needs a C x 1 x 1 input, got %dx%dx%d",
                   name, in.c, in.h, in.w);
        return -1;
    }
    int64_t wshape[2] = {out_features, in.c}, bshape[1] = {out_features};
    op->param[0] = add_param(g, name, "weight", 2, wshape);
    op->param[1] = add_param(g, name, "bias", 1, bshape);
    op->n_params = 2;
    if (op->param[0] < 0 || op->param[1] < 0) {
        cxr_seterr(err, CXR_ERR_NOMEM, "graph: out of memory");
        return -1;
    }
    return finish_op(g, op, out_features, 1, 1, err);
}

/* conv -> bn, named "<prefix>.conv<k>"/"<prefix>.bn<k>" style by the caller. */
static int32_t conv_bn(struct cxr_nn_graph *g, const char *conv, const char *bn, int32_t x,
                       int32_t out_ch, int32_t k, int32_t s, int32_t p, char *err)
{
    int32_t v = cxr_nn_graph_conv(g, conv, x, out_ch, k, s, p, false, err);
    return v < 0 ? -1 : cxr_nn_graph_bn(g, bn, v, 1e-5f, err);
}

static int32_t build_block(struct cxr_nn_graph *g, const struct cxr_nn_resnet_spec *spec,
                           const struct cxr_nn_resnet_block *b, int32_t x, char *err)
{
    char p[48], n1[CXR_NN_NAME_LEN], n2[CXR_NN_NAME_LEN];
    snprintf(p, sizeof p, "layer%d.%d", b->layer, b->index);
    /* The shortcut first, so that the residual exists before the conv that
     * absorbs the add runs (torchvision computes it after; same result). */
    int32_t identity = x;
    if (b->downsample) {
        snprintf(n1, sizeof n1, "%s.downsample.0", p);
        snprintf(n2, sizeof n2, "%s.downsample.1", p);
        identity = conv_bn(g, n1, n2, x, b->out_ch, 1, b->stride, 0, err);
        if (identity < 0)
            return -1;
    }
    int32_t y = x;
    int32_t n_convs = spec->bottleneck ? 3 : 2;
    for (int32_t i = 1; i <= n_convs; i++) {
        int32_t k, s, ch;
        if (spec->bottleneck) { /* 1x1, 3x3 (stride, torchvision v1.5), 1x1 expand */
            k = i == 2 ? 3 : 1;
            s = i == 2 ? b->stride : 1;
            ch = i == 3 ? b->out_ch : b->mid_ch;
        } else { /* 3x3 (stride), 3x3 */
            k = 3;
            s = i == 1 ? b->stride : 1;
            ch = i == 2 ? b->out_ch : b->mid_ch;
        }
        snprintf(n1, sizeof n1, "%s.conv%d", p, i);
        snprintf(n2, sizeof n2, "%s.bn%d", p, i);
        y = conv_bn(g, n1, n2, y, ch, k, s, k / 2, err);
        if (y < 0)
            return -1;
        if (i < n_convs) {
            snprintf(n1, sizeof n1, "%s.relu%d", p, i);
            if ((y = cxr_nn_graph_relu(g, n1, y, err)) < 0)
                return -1;
        }
    }
    snprintf(n1, sizeof n1, "%s.add", p);
    if ((y = cxr_nn_graph_add(g, n1, y, identity, err)) < 0)
        return -1;
    snprintf(n1, sizeof n1, "%s.relu", p);
    return cxr_nn_graph_relu(g, n1, y, err);
}

enum cxr_status cxr_nn_graph_build_resnet(const struct cxr_nn_resnet_spec *spec, int32_t h,
                                          int32_t w, struct cxr_nn_graph **out, char *err)
{
    if (!out)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "graph: no output pointer");
    *out = NULL;
    if (!spec || spec->n_blocks < 1 || spec->n_blocks > CXR_NN_RESNET_MAX_BLOCKS)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "graph: bad ResNet spec");
    if (h < 32 || w < 32 || h > 8192 || w > 8192)
        return cxr_seterr(err, CXR_ERR_NN_SHAPE,
                          "graph: input %dx%d outside 32..8192 (a ResNet halves it five times)", h,
                          w);
    struct cxr_nn_graph *g = cxr_nn_graph_new(spec->in_channels, h, w);
    if (!g)
        return cxr_seterr(err, CXR_ERR_NOMEM, "graph: out of memory");
    int32_t x = conv_bn(g, "conv1", "bn1", g->input, spec->base_width, 7, 2, 3, err);
    if (x >= 0)
        x = cxr_nn_graph_relu(g, "relu", x, err);
    if (x >= 0)
        x = cxr_nn_graph_maxpool(g, "maxpool", x, 3, 2, 1, err);
    for (int32_t i = 0; x >= 0 && i < spec->n_blocks; i++)
        x = build_block(g, spec, &spec->blocks[i], x, err);
    if (x >= 0)
        x = cxr_nn_graph_gap(g, "avgpool", x, err);
    if (x >= 0)
        x = cxr_nn_graph_fc(g, "fc", x, spec->num_classes, err);
    if (x < 0) {
        cxr_nn_graph_free(g);
        return CXR_ERR_NN_SHAPE;
    }
    *out = g;
    return CXR_OK;
}

/* The only live op reading value v, or -1 when v has zero or several
 * readers or is the graph's output. */
static int32_t sole_reader(const struct cxr_nn_graph *g, int32_t v)
{
    if (v == g->output)
        return -1;
    int32_t found = -1;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (op->absorbed_by >= 0)
            continue;
        for (int32_t k = 0; k < op->n_in; k++) {
            if (op->in[k] != v)
                continue;
            if (found >= 0)
                return -1;
            found = i;
        }
        if (op->sum_in == v)
            return -1;
    }
    return found;
}

/* Replaces conv i's parameters with derived (bn-folded) ones. */
static enum cxr_status fold_bn(struct cxr_nn_graph *g, int32_t i, int32_t bn, char *err)
{
    struct cxr_nn_op *op = &g->ops[i];
    int64_t ws[4];
    memcpy(ws, g->params[op->param[0]].t.shape, sizeof ws); /* add_param moves the array */
    int64_t bshape[1] = {ws[0]};
    int32_t src_w = op->param[0], src_b = op->param[1];
    int32_t dw = add_param(g, op->name, "weight+bn", 4, ws);
    int32_t db = dw < 0 ? -1 : add_param(g, op->name, "bias+bn", 1, bshape);
    if (dw < 0 || db < 0)
        return cxr_seterr(err, CXR_ERR_NOMEM, "graph: out of memory");
    for (int32_t k = 0; k < 2; k++) {
        struct cxr_nn_param *p = &g->params[k == 0 ? dw : db];
        p->derived_from = i;
        p->src_weight = src_w;
        p->src_bias = src_b;
    }
    op->param[0] = dw;
    op->param[1] = db;
    op->folded_bn = bn;
    g->ops[bn].absorbed_by = i;
    return CXR_OK;
}

enum cxr_status cxr_nn_graph_fuse_inference(struct cxr_nn_graph *g, char *err)
{
    if (!g)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "graph: NULL");
    if (g->fused)
        return CXR_OK;
    for (int32_t i = 0; i < g->n_ops; i++) {
        struct cxr_nn_op *op = &g->ops[i];
        if (op->absorbed_by >= 0 || (op->kind != CXR_NN_OP_CONV && op->kind != CXR_NN_OP_ADD))
            continue;
        int32_t cur = op->out, r;
        if (op->kind == CXR_NN_OP_CONV && (r = sole_reader(g, cur)) >= 0 &&
            g->ops[r].kind == CXR_NN_OP_BN) {
            enum cxr_status st = fold_bn(g, i, r, err);
            if (st != CXR_OK)
                return st;
            op = &g->ops[i];
            cur = g->ops[r].out;
        }
        if (op->kind == CXR_NN_OP_CONV && (r = sole_reader(g, cur)) >= 0 &&
            g->ops[r].kind == CXR_NN_OP_ADD) {
            const struct cxr_nn_op *add = &g->ops[r];
            int32_t other = add->in[0] == cur ? add->in[1] : add->in[0];
            /* the residual must exist before this conv runs */
            if (other != cur && g->values[other].producer < i) {
                op->sum_in = other;
                g->ops[r].absorbed_by = i;
                cur = add->out;
            }
        }
        if ((r = sole_reader(g, cur)) >= 0 && g->ops[r].kind == CXR_NN_OP_RELU) {
            op->relu = true;
            g->ops[r].absorbed_by = i;
            cur = g->ops[r].out;
        }
        op->out = cur;
    }
    for (int32_t p = 0; p < g->n_params; p++)
        g->params[p].used = false;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (op->absorbed_by >= 0)
            continue;
        for (int32_t k = 0; k < op->n_params; k++)
            if (op->param[k] >= 0)
                g->params[op->param[k]].used = true;
        /* folding reads the conv's own weights and the bn's parameters */
        if (op->folded_bn >= 0) {
            const struct cxr_nn_op *bn = &g->ops[op->folded_bn];
            for (int32_t k = 0; k < bn->n_params; k++)
                g->params[bn->param[k]].used = true;
            const struct cxr_nn_param *d = &g->params[op->param[0]];
            g->params[d->src_weight].used = true;
            if (d->src_bias >= 0)
                g->params[d->src_bias].used = true;
        }
    }
    g->fused = true;
    return CXR_OK;
}

/* Computes W' = W * s and b' = (b - mean) * s + beta with
 * s = gamma / sqrt(var + eps), per output channel, in double. */
static enum cxr_status fold_compute(struct cxr_nn_graph *g, const struct cxr_nn_op *op, char *err)
{
    struct cxr_nn_param *dw = &g->params[op->param[0]], *db = &g->params[op->param[1]];
    const struct cxr_nn_op *bn = &g->ops[op->folded_bn];
    const float *w = g->params[dw->src_weight].t.data;
    const float *b = dw->src_bias >= 0 ? g->params[dw->src_bias].t.data : NULL;
    const float *gamma = g->params[bn->param[0]].t.data, *beta = g->params[bn->param[1]].t.data;
    const float *mean = g->params[bn->param[2]].t.data, *var = g->params[bn->param[3]].t.data;
    int64_t o = dw->t.shape[0];
    size_t per = dw->t.nbytes / sizeof(float) / (size_t)o;
    float *ow = malloc(dw->t.nbytes), *ob = malloc(db->t.nbytes);
    if (!ow || !ob) {
        free(ow);
        free(ob);
        return cxr_seterr(err, CXR_ERR_NOMEM, "graph: out of memory folding '%s'", op->name);
    }
    for (int64_t c = 0; c < o; c++) {
        double v = (double)var[c] + (double)bn->eps;
        if (!(v > 0.0) || !isfinite(v)) {
            free(ow);
            free(ob);
            return cxr_seterr(err, CXR_ERR_NN_MODEL, "'%s.running_var'[%lld] = %g: not a variance",
                              bn->name, (long long)c, (double)var[c]);
        }
        double s = (double)gamma[c] / sqrt(v);
        for (size_t k = 0; k < per; k++)
            ow[(size_t)c * per + k] = (float)((double)w[(size_t)c * per + k] * s);
        ob[c] = (float)(((b ? (double)b[c] : 0.0) - (double)mean[c]) * s + (double)beta[c]);
    }
    dw->t.data = ow;
    dw->owned = true;
    db->t.data = ob;
    db->owned = true;
    return CXR_OK;
}

enum cxr_status cxr_nn_graph_bind(struct cxr_nn_graph *g, cxr_nn_param_lookup_fn lookup, void *ctx,
                                  char *err)
{
    if (!g || !lookup)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "graph: bind without a lookup");
    enum cxr_status st = CXR_OK;
    for (int32_t i = 0; i < g->n_params; i++) {
        struct cxr_nn_param *p = &g->params[i];
        if (!p->used || p->derived_from >= 0)
            continue;
        const struct cxr_nn_tensor *t = lookup(ctx, p->t.name);
        if (!t) {
            st = cxr_seterr(err, CXR_ERR_NN_MODEL, "parameter '%s' missing", p->t.name);
            goto fail;
        }
        bool same = t->dtype == CXR_NN_DTYPE_F32 && t->ndim == p->t.ndim && t->data &&
                    t->nbytes == p->t.nbytes;
        for (int32_t d = 0; same && d < p->t.ndim; d++)
            same = t->shape[d] == p->t.shape[d];
        if (!same) {
            st = cxr_seterr(err, CXR_ERR_NN_SHAPE,
                            "parameter '%s': %s tensor of %d dims does not fit the "
                            "graph (F32, %d dims)",
                            p->t.name, cxr_nn_dtype_name(t->dtype), (int)t->ndim, (int)p->t.ndim);
            goto fail;
        }
        p->t.data = t->data;
        p->owned = false;
    }
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (op->absorbed_by < 0 && op->folded_bn >= 0 && (st = fold_compute(g, op, err)) != CXR_OK)
            goto fail;
    }
    return CXR_OK;
fail:
    cxr_nn_graph_unbind(g);
    return st;
}

void cxr_nn_graph_unbind(struct cxr_nn_graph *g)
{
    if (!g)
        return;
    for (int32_t i = 0; i < g->n_params; i++) {
        struct cxr_nn_param *p = &g->params[i];
        if (p->owned)
            free(p->t.data);
        p->t.data = NULL;
        p->owned = false;
    }
}

int32_t cxr_nn_graph_live_ops(const struct cxr_nn_graph *g)
{
    int32_t n = 0;
    for (int32_t i = 0; g && i < g->n_ops; i++)
        n += g->ops[i].absorbed_by < 0;
    return n;
}

/* ------------------------------------------------------------------ training */

int32_t cxr_nn_graph_set_trainable(struct cxr_nn_graph *g, bool fc_only, char *err)
{
    if (!g || g->fused) {
        cxr_seterr(err, CXR_ERR_INVALID_ARG, "graph: %s",
                   g ? "a fused (inference) graph cannot train" : "NULL");
        return -1;
    }
    int32_t last_fc = -1, count = 0;
    for (int32_t i = 0; i < g->n_ops; i++)
        if (g->ops[i].kind == CXR_NN_OP_FC)
            last_fc = i;
    for (int32_t p = 0; p < g->n_params; p++)
        g->params[p].trainable = false;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (fc_only && i != last_fc)
            continue;
        /* bn: weight, bias train; running_mean/var (params 2, 3) never */
        int32_t n = op->kind == CXR_NN_OP_BN ? 2 : op->n_params;
        for (int32_t k = 0; k < n; k++) {
            if (op->param[k] < 0)
                continue;
            struct cxr_nn_param *p = &g->params[op->param[k]];
            p->trainable = true;
            count++;
        }
    }
    for (int32_t p = 0; p < g->n_params; p++) {
        struct cxr_nn_param *pp = &g->params[p];
        void *extra = pp->grad.extra;
        memset(&pp->grad, 0, sizeof pp->grad);
        pp->grad.extra = extra; /* storage is the trainer's to free */
        if (!pp->trainable)
            continue;
        snprintf(pp->grad.name, sizeof pp->grad.name, "%.80s.grad", pp->t.name);
        pp->grad.dtype = CXR_NN_DTYPE_F32;
        pp->grad.ndim = pp->t.ndim;
        memcpy(pp->grad.shape, pp->t.shape, sizeof pp->grad.shape);
        pp->grad.nbytes = pp->t.nbytes;
    }
    return count;
}

bool cxr_nn_graph_param_is_no_decay(const struct cxr_nn_graph *g, int32_t param)
{
    if (!g || param < 0 || param >= g->n_params)
        return false;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        for (int32_t k = 0; k < op->n_params; k++)
            if (op->param[k] == param)
                return op->kind == CXR_NN_OP_BN || k > 0; /* bn params, or a bias */
    }
    return false;
}

void cxr_nn_graph_needs_grad(const struct cxr_nn_graph *g, bool *out)
{
    for (int32_t v = 0; v < g->n_values; v++)
        out[v] = false;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        bool need = false;
        for (int32_t k = 0; k < op->n_params; k++)
            if (op->param[k] >= 0 && g->params[op->param[k]].trainable)
                need = true;
        for (int32_t k = 0; k < op->n_in; k++)
            if (out[op->in[k]])
                need = true;
        if (op->out >= 0)
            out[op->out] = need;
    }
}
