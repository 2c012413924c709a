/* model.c — the model object: allocation from a spec, accessors, free. */
#include <json-c/json.h>
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

enum cxr_status cxr_nn_model_append_note(struct cxr_nn_model *m, const char *note)
{
    if (!m || !note)
        return CXR_ERR_INVALID_ARG;
    const char *old = m->meta.description ? m->meta.description : "";
    size_t olen = strlen(old);
    while (olen && (old[olen - 1] == ' ' || old[olen - 1] == '\n'))
        olen--;
    size_t len = olen + strlen(note) + 2;
    char *d = malloc(len);
    if (!d)
        return CXR_ERR_NOMEM;
    snprintf(d, len, "%.*s%s%s", (int)olen, old, olen ? " " : "", note);
    free(m->meta.description);
    m->meta.description = d;
    return CXR_OK;
}

struct cxr_nn_model_meta *cxr_nn_model_meta_mut(struct cxr_nn_model *m)
{
    return m ? &m->meta : NULL;
}

/* Replaces "metrics_json" or "description" with a copy of value (NULL
 * clears it). CXR_ERR_INVALID_ARG for another key or for metrics that are
 * not valid JSON text; CXR_ERR_NOMEM. */
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
    if (value && slot == &m->meta.metrics_json && !cxr_nn_json_text_valid(value))
        return CXR_ERR_INVALID_ARG;
    char *copy = NULL;
    if (value && !(copy = strdup(value)))
        return CXR_ERR_NOMEM;
    free(*slot);
    *slot = copy;
    return CXR_OK;
}

enum cxr_nn_dtype cxr_nn_model_storage(const struct cxr_nn_model *m) { return m->storage; }

const char *cxr_nn_model_sha256(const struct cxr_nn_model *m) { return m ? m->sha256 : ""; }

uint32_t cxr_nn_model_tensor_count(const struct cxr_nn_model *m) { return m ? m->n_tensors : 0; }

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

enum cxr_status cxr_nn_model_check_finite(const struct cxr_nn_model *m, char *err)
{
    for (uint32_t i = 0; m && i < m->n_tensors; i++) {
        const struct cxr_nn_tensor *t = &m->tensors[i];
        if (t->dtype != CXR_NN_DTYPE_F32)
            continue;
        const float *v = t->data;
        int64_t n = cxr_nn_tensor_numel(t);
        for (int64_t k = 0; k < n; k++)
            if (!isfinite(v[k]))
                return cxr_seterr(err, CXR_ERR_NN_MODEL,
                                  "tensor '%s' holds %s at element %lld: the weights are "
                                  "corrupt (a training run that diverged, or a damaged file); "
                                  "use another model",
                                  t->name, isnan(v[k]) ? "NaN" : "an infinity", (long long)k);
    }
    return CXR_OK;
}

static void fmt_thousands(char *buf, size_t cap, int64_t v)
{
    char raw[32];
    snprintf(raw, sizeof raw, "%lld", (long long)v);
    size_t n = strlen(raw), o = 0;
    for (size_t i = 0; i < n && o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0 && raw[0] != '-')
            buf[o++] = ',';
        buf[o++] = raw[i];
    }
    buf[o] = '\0';
}

static struct json_object *json_num(double v)
{
    return isfinite(v) ? json_object_new_double(v) : NULL;
}

static void describe_json(const struct cxr_nn_model *m, FILE *fp)
{
    const struct cxr_nn_model_meta *mt = &m->meta;
    struct json_object *o = json_object_new_object(), *a;
    if (!o)
        return;
    json_object_object_add(o, "arch", json_object_new_string(cxr_nn_arch_name(mt->arch)));
    json_object_object_add(o, "base_width", json_object_new_int(m->spec.base_width));
    json_object_object_add(o, "parameters", json_object_new_int64(cxr_nn_model_param_count(m)));
    json_object_object_add(o, "input_height", json_object_new_int(mt->input_height));
    json_object_object_add(o, "input_width", json_object_new_int(mt->input_width));
    json_object_object_add(o, "channels", json_object_new_int(mt->channels));
    a = json_object_new_array();
    for (int c = 0; c < mt->channels; c++)
        json_object_array_add(a, json_num(mt->mean[c]));
    json_object_object_add(o, "mean", a);
    a = json_object_new_array();
    for (int c = 0; c < mt->channels; c++)
        json_object_array_add(a, json_num(mt->std[c]));
    json_object_object_add(o, "std", a);
    json_object_object_add(o, "resize_mode",
                           json_object_new_string(mt->resize_mode == CXR_NN_RESIZE_LETTERBOX
                                                      ? "letterbox"
                                                      : "stretch"));
    json_object_object_add(
        o, "contrast",
        json_object_new_string(mt->contrast == CXR_NN_CONTRAST_EQUALIZE ? "equalize" : "none"));
    json_object_object_add(o, "preprocessing_version",
                           json_object_new_int(mt->preprocessing_version));
    a = json_object_new_array();
    for (int k = 0; k < mt->num_classes; k++)
        json_object_array_add(a, json_object_new_string(mt->class_names[k]));
    json_object_object_add(o, "class_names", a);
    json_object_object_add(o, "positive_class", json_object_new_int(mt->positive_class));
    /* NaN (not calibrated, not stated) is null: json-c would print NaN */
    json_object_object_add(o, "operating_threshold", json_num(mt->operating_threshold));
    json_object_object_add(o, "urgent_threshold", json_num(mt->urgent_threshold));
    json_object_object_add(o, "age_min_years", json_num(mt->age_min_years));
    json_object_object_add(o, "age_max_years", json_num(mt->age_max_years));
    json_object_object_add(o, "name", json_object_new_string(mt->name));
    json_object_object_add(o, "version", json_object_new_string(mt->version));
    json_object_object_add(o, "created", json_object_new_string(mt->created));
    json_object_object_add(o, "training_data_digest",
                           json_object_new_string(mt->training_data_digest));
    struct json_object *ti = NULL;
    if (mt->training_image_count > 0 && (ti = json_object_new_object())) {
        json_object_object_add(ti, "images", json_object_new_int64(mt->training_image_count));
        json_object_object_add(ti, "digests",
                               json_object_new_int64((int64_t)mt->training_digest_count));
        json_object_object_add(ti, "sample_bits",
                               json_object_new_int(mt->training_digest_sample_bits));
    }
    json_object_object_add(o, "training_images", ti);
    json_object_object_add(o, "sha256", json_object_new_string(m->sha256));
    struct json_object *metrics = mt->metrics_json ? json_tokener_parse(mt->metrics_json) : NULL;
    json_object_object_add(o, "metrics", metrics);
    json_object_object_add(o, "description",
                           mt->description ? json_object_new_string(mt->description) : NULL);
    fprintf(fp, "%s\n",
            json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

/* Text for `cxr-triage model info`, or one JSON object (keys as in the text,
 * unknown values null). Writes to fp; nothing is returned. */
void cxr_nn_model_describe(const struct cxr_nn_model *m, FILE *fp, bool json)
{
    if (!m || !fp)
        return;
    if (json) {
        describe_json(m, fp);
        return;
    }
    const struct cxr_nn_model_meta *mt = &m->meta;
    const struct cxr_nn_resnet_spec *sp = &m->spec;
    char num[40];
    fprintf(fp, "model:          %s %s%s%s%s\n", mt->name[0] ? mt->name : "(unnamed)", mt->version,
            mt->created[0] ? " (created " : "", mt->created, mt->created[0] ? ")" : "");
    fprintf(fp, "architecture:   %s, base width %d, %s blocks %d-%d-%d-%d\n",
            cxr_nn_arch_name(mt->arch), (int)sp->base_width,
            sp->bottleneck ? "bottleneck" : "basic", (int)sp->blocks_per_layer[0],
            (int)sp->blocks_per_layer[1], (int)sp->blocks_per_layer[2],
            (int)sp->blocks_per_layer[3]);
    fmt_thousands(num, sizeof num, cxr_nn_model_param_count(m));
    fprintf(fp, "parameters:     %s\n", num);
    fprintf(fp, "input:          %d x %d x %d (C x H x W), %s, contrast %s, preprocessing v%d\n",
            (int)mt->channels, (int)mt->input_height, (int)mt->input_width,
            mt->resize_mode == CXR_NN_RESIZE_LETTERBOX ? "letterbox" : "stretch",
            mt->contrast == CXR_NN_CONTRAST_EQUALIZE ? "equalize" : "none",
            (int)mt->preprocessing_version);
    fprintf(fp, "normalisation:  (x/255 - mean) / std, mean");
    for (int c = 0; c < mt->channels; c++)
        fprintf(fp, " %g", (double)mt->mean[c]);
    fprintf(fp, ", std");
    for (int c = 0; c < mt->channels; c++)
        fprintf(fp, " %g", (double)mt->std[c]);
    fprintf(fp, "\nclasses:        ");
    for (int k = 0; k < mt->num_classes; k++)
        fprintf(fp, "%s%s", k ? ", " : "", mt->class_names[k]);
    if (mt->positive_class >= 0 && mt->positive_class < mt->num_classes)
        fprintf(fp, " (positive: %s)", mt->class_names[mt->positive_class]);
    fprintf(fp, "\nthresholds:     operating %g, urgent %g\n", mt->operating_threshold,
            mt->urgent_threshold);
    if (mt->urgent_threshold <= mt->operating_threshold)
        fprintf(fp, "                the same: every present finding is URGENT and PRIORITY is "
                    "not used (the validation data gave no separate urgent threshold; set "
                    "priority/urgent-threshold after checking it on your own films)\n");
    if (isnan(mt->age_min_years) && isnan(mt->age_max_years))
        fprintf(fp, "population:     age range not stated\n");
    else
        fprintf(fp, "population:     age %g to %g years\n", mt->age_min_years, mt->age_max_years);
    fprintf(fp, "training data:  %s\n",
            mt->training_data_digest[0] ? mt->training_data_digest : "(not stated)");
    if (mt->training_image_count <= 0)
        fprintf(fp,
                "training list:  none (evaluate cannot tell when it scores a training image)\n");
    else if (mt->training_digest_sample_bits == 0)
        fprintf(fp, "training list:  %lld images (digests of their files)\n",
                (long long)mt->training_image_count);
    else
        fprintf(fp,
                "training list:  %lld images, a 1-in-%llu sample of %u (digests of their "
                "files)\n",
                (long long)mt->training_image_count, 1ull << mt->training_digest_sample_bits,
                (unsigned)mt->training_digest_count);
    fprintf(fp, "sha256:         %s\n", m->sha256[0] ? m->sha256 : "(not saved)");
    if (mt->metrics_json)
        fprintf(fp, "metrics:        %s\n", mt->metrics_json);
    if (mt->description)
        fprintf(fp, "description:    %s\n", mt->description);
}
