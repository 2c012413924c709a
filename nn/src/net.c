/* net.c — a model compiled for a backend (cxr_nn_net_*): builds the ResNet
 * graph, fuses it for inference, hands the parameters to the backend once,
 * and keeps one backend plan per batch size (made on first use). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "graph.h"
#include "resnet.h"

#define NET_MAX_BATCH 1024

struct cxr_nn_net {
    struct cxr_nn_backend *b;
    struct cxr_nn_graph *g;
    int32_t max_batch;
    void **plans; /* [max_batch + 1], index = batch size */
    char err[CXR_ERRLEN];
};

void cxr_nn_net_free(struct cxr_nn_net *net)
{
    if (!net)
        return;
    const struct cxr_nn_backend_i *bi = net->b->iface;
    if (net->plans)
        for (int32_t n = 0; n <= net->max_batch; n++)
            bi->plan_free(net->b, net->plans[n]);
    free(net->plans);
    if (net->g) {
        bi->graph_release(net->b, net->g);
        for (int32_t i = 0; i < net->g->n_params; i++)
            bi->buffer_free(net->b, &net->g->params[i].t);
        cxr_nn_graph_free(net->g);
    }
    free(net);
}

/* Hands every parameter a live op reads to the backend (storage + data). */
static enum cxr_status upload(struct cxr_nn_net *net, char *err)
{
    const struct cxr_nn_backend_i *bi = net->b->iface;
    struct cxr_nn_graph *g = net->g;
    for (int32_t i = 0; i < g->n_ops; i++) {
        const struct cxr_nn_op *op = &g->ops[i];
        if (op->absorbed_by >= 0)
            continue;
        for (int32_t k = 0; k < op->n_params; k++) {
            if (op->param[k] < 0)
                continue;
            struct cxr_nn_tensor *t = &g->params[op->param[k]].t;
            if (t->extra)
                continue;
            enum cxr_status st = bi->buffer_alloc(net->b, t, err);
            if (st == CXR_OK)
                st = bi->tensor_set(net->b, t, t->data, 0, t->nbytes, err);
            if (st != CXR_OK)
                return st;
        }
    }
    return CXR_OK;
}

enum cxr_status cxr_nn_net_new_graph(struct cxr_nn_backend *b, struct cxr_nn_graph *g,
                                     cxr_nn_param_lookup_fn lookup, void *ctx, int32_t max_batch,
                                     struct cxr_nn_net **out, char *err)
{
    enum cxr_status st;
    if (!out) {
        cxr_nn_graph_free(g);
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "net: no output pointer");
    }
    *out = NULL;
    if (!b || !g || !lookup) {
        cxr_nn_graph_free(g);
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "net: backend, graph or lookup missing");
    }
    if (max_batch < 1 || max_batch > NET_MAX_BATCH) {
        cxr_nn_graph_free(g);
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "net: max_batch %d outside 1..%d",
                          (int)max_batch, NET_MAX_BATCH);
    }
    struct cxr_nn_net *net = calloc(1, sizeof *net);
    if (!net) {
        cxr_nn_graph_free(g);
        return cxr_seterr(err, CXR_ERR_NOMEM, "net: out of memory");
    }
    net->b = b;
    net->g = g;
    net->max_batch = max_batch;
    net->plans = calloc((size_t)max_batch + 1, sizeof *net->plans);
    if (!net->plans) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "net: out of memory");
        goto fail;
    }
    if ((st = cxr_nn_graph_fuse_inference(g, err)) != CXR_OK ||
        (st = cxr_nn_graph_bind(g, lookup, ctx, err)) != CXR_OK)
        goto fail;
    st = upload(net, err);
    cxr_nn_graph_unbind(g);
    if (st != CXR_OK)
        goto fail;
    /* batch 1 now, so that a graph the backend cannot run fails here */
    if ((st = b->iface->graph_plan(b, g, 1, &net->plans[1], err)) != CXR_OK)
        goto fail;
    *out = net;
    return CXR_OK;
fail:
    cxr_nn_net_free(net);
    return st;
}

static const struct cxr_nn_tensor *model_lookup(void *ctx, const char *name)
{
    return cxr_nn_model_tensor_find(ctx, name);
}

enum cxr_status cxr_nn_net_new(struct cxr_nn_backend *b, const struct cxr_nn_model *m,
                               int32_t max_batch, struct cxr_nn_net **out, char *err)
{
    if (!out)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "net: no output pointer");
    *out = NULL;
    if (!b || !m)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "net: backend or model missing");
    const struct cxr_nn_model_meta *meta = cxr_nn_model_meta(m);
    struct cxr_nn_resnet_spec spec;
    cxr_nn_model_spec(m, &spec);
    if (meta->channels != spec.in_channels)
        return cxr_seterr(err, CXR_ERR_NN_MODEL,
                          "net: metadata says %d input channels, "
                          "conv1.weight has %d",
                          (int)meta->channels, (int)spec.in_channels);
    struct cxr_nn_graph *g = NULL;
    enum cxr_status st =
        cxr_nn_graph_build_resnet(&spec, meta->input_height, meta->input_width, &g, err);
    if (st != CXR_OK)
        return st;
    return cxr_nn_net_new_graph(b, g, model_lookup, (void *)m, max_batch, out, err);
}

enum cxr_status cxr_nn_net_forward(struct cxr_nn_net *net, const float *input, int32_t n,
                                   float *logits)
{
    if (!net)
        return CXR_ERR_INVALID_ARG;
    net->err[0] = '\0';
    if (!input || !logits)
        return cxr_seterr(net->err, CXR_ERR_INVALID_ARG, "forward: input or output is NULL");
    if (n < 1 || n > net->max_batch)
        return cxr_seterr(net->err, CXR_ERR_INVALID_ARG,
                          "forward: batch of %d images, this net takes 1..%d (max_batch "
                          "given to cxr_nn_net_new)",
                          (int)n, (int)net->max_batch);
    const struct cxr_nn_backend_i *bi = net->b->iface;
    enum cxr_status st;
    if (!net->plans[n] &&
        (st = bi->graph_plan(net->b, net->g, n, &net->plans[n], net->err)) != CXR_OK)
        return st;
    if ((st = bi->graph_compute(net->b, net->plans[n], input, logits, net->err)) != CXR_OK)
        return st;
    return bi->synchronize(net->b, net->err);
}

struct cxr_nn_graph *cxr_nn_net_graph(struct cxr_nn_net *net) { return net ? net->g : NULL; }

struct cxr_nn_backend *cxr_nn_net_backend(struct cxr_nn_net *net) { return net ? net->b : NULL; }

const char *cxr_nn_net_last_error(const struct cxr_nn_net *net)
{
    return net ? net->err : "no net";
}
