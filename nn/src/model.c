/* model.c — the model object: allocation from a spec, accessors, free. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

struct alloc_ctx {
    struct cxr_nn_model *m;
    uint32_t n;
    bool count_only;
    bool oom;
};

static void alloc_param(void *vctx, const char *name, enum cxr_nn_param_kind kind, int32_t ndim,
                        const int64_t *shape)
{
    struct alloc_ctx *c = vctx;
    if (c->count_only) {
        c->n++;
        return;
    }
    struct cxr_nn_tensor *t = &c->m->tensors[c->n];
    c->m->kinds[c->n] = kind;
    c->n++;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = kind == CXR_NN_PARAM_BN_COUNT ? CXR_NN_DTYPE_I64 : CXR_NN_DTYPE_F32;
    t->ndim = ndim;
    for (int32_t i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    int64_t numel = cxr_nn_tensor_numel(t);
    t->nbytes = (size_t)numel * cxr_nn_dtype_size(t->dtype);
    void *p = NULL;
    /* 64-byte aligned for the backends; never a zero-sized request */
    if (posix_memalign(&p, 64, t->nbytes ? (t->nbytes + 63) & ~(size_t)63 : 64) != 0) {
        c->oom = true;
        return;
    }
    memset(p, 0, t->nbytes);
    t->data = p;
}

struct cxr_nn_model *cxr_nn_model_alloc(const struct cxr_nn_resnet_spec *spec)
{
    struct cxr_nn_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->spec = *spec;
    m->meta.operating_threshold = NAN;
    m->meta.urgent_threshold = NAN;
    m->meta.age_min_years = NAN;
    m->meta.age_max_years = NAN;
    struct alloc_ctx c = {.m = m, .count_only = true};
    cxr_nn_resnet_spec_params(spec, alloc_param, &c);
    m->tensors = calloc(c.n, sizeof *m->tensors);
    m->kinds = calloc(c.n, sizeof *m->kinds);
    if (!m->tensors || !m->kinds)
        goto fail;
    m->n_tensors = c.n;
    c.n = 0;
    c.count_only = false;
    cxr_nn_resnet_spec_params(spec, alloc_param, &c);
    if (c.oom)
        goto fail;
    return m;
fail:
    cxr_nn_model_free(m);
    return NULL;
}

/* Frees the tensors' data (never their `extra`, which belongs to whoever set
 * it), the owned metadata strings and the model. NULL is a no-op. */
void cxr_nn_model_free(struct cxr_nn_model *m)
{
    if (!m)
        return;
    if (m->tensors)
        for (uint32_t i = 0; i < m->n_tensors; i++)
            free(m->tensors[i].data);
    free(m->tensors);
    free(m->kinds);
    cxr_nn_meta_release(&m->meta);
    free(m);
}

enum cxr_nn_param_kind cxr_nn_model_kind_at(const struct cxr_nn_model *m, uint32_t i)
{
    return m->kinds[i];
}

const struct cxr_nn_model_meta *cxr_nn_model_meta(const struct cxr_nn_model *m)
{
    return m ? &m->meta : NULL;
}

struct cxr_nn_model_meta *cxr_nn_model_meta_mut(struct cxr_nn_model *m)
{
    return m ? &m->meta : NULL;
}

/* Replaces "metrics_json" or "description" with a copy of value (NULL
 * clears it). CXR_ERR_INVALID_ARG for another key, CXR_ERR_NOMEM. */
enum cxr_status cxr_nn_model_set_text(struct cxr_nn_model *m, const char *key, const char *value)
{
    if (!m || !key)
        return CXR_ERR_INVALID_ARG;
    char **slot;
    if (strcmp(key, "metrics_json") == 0 || strcmp(key, "metrics") == 0)
        slot = &m->meta.metrics_json;
    else if (strcmp(key, "description") == 0)
        slot = &m->meta.description;
    else
        return CXR_ERR_INVALID_ARG;
    char *copy = NULL;
    if (value && !(copy = strdup(value)))
        return CXR_ERR_NOMEM;
    free(*slot);
    *slot = copy;
    return CXR_OK;
}

const char *cxr_nn_model_sha256(const struct cxr_nn_model *m)
{
    return m ? m->sha256 : "";
}

uint32_t cxr_nn_model_tensor_count(const struct cxr_nn_model *m)
{
    return m ? m->n_tensors : 0;
}

struct cxr_nn_tensor *cxr_nn_model_tensor_at(const struct cxr_nn_model *m, uint32_t i)
{
    if (!m || i >= m->n_tensors)
        return NULL;
    return &m->tensors[i];
}

struct cxr_nn_tensor *cxr_nn_model_tensor_find(const struct cxr_nn_model *m, const char *name)
{
    if (!m || !name)
        return NULL;
    for (uint32_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

/* Trainable parameters only (conv, BN gamma/beta, fc), as PyTorch's
 * sum(p.numel() for p in model.parameters()): buffers are not counted. */
int64_t cxr_nn_model_param_count(const struct cxr_nn_model *m)
{
    if (!m)
        return 0;
    int64_t n = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        enum cxr_nn_param_kind k = m->kinds[i];
        if (k == CXR_NN_PARAM_BN_MEAN || k == CXR_NN_PARAM_BN_VAR || k == CXR_NN_PARAM_BN_COUNT)
            continue;
        n += cxr_nn_tensor_numel(&m->tensors[i]);
    }
    return n;
}
