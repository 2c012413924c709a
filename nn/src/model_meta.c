/* model_meta.c — model metadata: defaults, validation, the safetensors
 * "__metadata__" text form, and `model info` output.
 *
 * "__metadata__" keys (every value is a JSON string, as safetensors requires;
 * unknown keys are ignored, every key is optional except that a file without
 * "arch" must have a parameter set that identifies one):
 *   format                 "cxr-triage-model/1" (written; another
 *                          "cxr-triage-model/N" is refused, other values ignored)
 *   arch                   resnet18 | resnet34 | resnet50
 *   input_size             "H,W" (or "N" for N x N), 1..4096        default 224,224
 *   channels               1 | 3, must match conv1.weight           default from conv1
 *   mean, std              comma lists, one value per channel,
 *                          applied to x/255; std > 0                 default 0.5 / 0.25
 *   class_names            "NORMAL,PNEUMONIA" (or a JSON array), one
 *                          per row of fc.weight, 1..31 bytes each    default NORMAL,PNEUMONIA
 *                                                                    for 2 classes, else class<i>
 *   positive_class         index or class name of the finding       default 1 (0 if 1 class)
 *   operating_threshold    0..1, p(positive) >= it: finding present  default 0.5
 *   urgent_threshold       0..1, p >= it: URGENT priority            default 0.9
 *   resize_mode            stretch | letterbox                       default stretch
 *   contrast               none | equalize                           default none
 *   preprocessing_version  integer >= 1                              default 1
 *   age_min_years,         intended population, 0..150, min <= max   default unknown
 *   age_max_years
 *   name (< 64 bytes), version (< 32), created (ISO 8601 UTC, < 32),
 *   training_data_digest ("sha256:<hex>", < 72)                     default ""
 *   metrics                JSON text (must parse)                    default none
 *   description            free text                                 default none
 *   training_images        JSON text: the digests of the training
 *                          images (model_digests.c)                  default none
 * docs/model-format.md says the same for users.
 */
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

void cxr_nn_model_meta_defaults(struct cxr_nn_model_meta *meta, enum cxr_nn_arch arch)
{
    memset(meta, 0, sizeof *meta);
    meta->arch = arch;
    meta->input_height = meta->input_width = 224;
    meta->channels = 1;
    for (int c = 0; c < 3; c++) {
        meta->mean[c] = 0.5f;
        meta->std[c] = 0.25f;
    }
    meta->num_classes = 2;
    snprintf(meta->class_names[0], sizeof meta->class_names[0], "NORMAL");
    snprintf(meta->class_names[1], sizeof meta->class_names[1], "PNEUMONIA");
    meta->positive_class = 1;
    meta->operating_threshold = 0.5;
    meta->urgent_threshold = 0.9;
    meta->resize_mode = CXR_NN_RESIZE_STRETCH;
    meta->contrast = CXR_NN_CONTRAST_NONE;
    meta->preprocessing_version = 1;
    meta->age_min_years = NAN;
    meta->age_max_years = NAN;
}

void cxr_nn_meta_release(struct cxr_nn_model_meta *meta)
{
    free(meta->metrics_json);
    free(meta->description);
    free(meta->training_digests);
    meta->metrics_json = meta->description = NULL;
    meta->training_digests = NULL;
    meta->training_digest_count = 0;
    meta->training_image_count = 0;
}

enum cxr_status cxr_nn_meta_copy(struct cxr_nn_model_meta *dst, const struct cxr_nn_model_meta *src)
{
    *dst = *src;
    dst->metrics_json = dst->description = NULL;
    dst->training_digests = NULL;
    if (src->metrics_json && !(dst->metrics_json = strdup(src->metrics_json)))
        return CXR_ERR_NOMEM;
    if (src->description && !(dst->description = strdup(src->description))) {
        cxr_nn_meta_release(dst);
        return CXR_ERR_NOMEM;
    }
    if (src->training_digest_count) {
        size_t bytes = (size_t)src->training_digest_count * sizeof *src->training_digests;
        if (!(dst->training_digests = malloc(bytes))) {
            cxr_nn_meta_release(dst);
            return CXR_ERR_NOMEM;
        }
        memcpy(dst->training_digests, src->training_digests, bytes);
    }
    return CXR_OK;
}

static bool str_fits(const char *s, size_t cap) { return memchr(s, '\0', cap) != NULL; }

bool cxr_nn_json_text_valid(const char *text)
{
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return false;
    size_t len = strlen(text);
    struct json_object *j =
        json_tokener_parse_ex(tok, text, len > INT32_MAX ? INT32_MAX : (int)len);
    bool ok = json_tokener_get_error(tok) == json_tokener_success;
    size_t end = json_tokener_get_parse_end(tok);
    while (ok && end < len && strchr(" \t\r\n", text[end]))
        end++;
    ok = ok && end == len;
    json_object_put(j);
    json_tokener_free(tok);
    return ok;
}

enum cxr_status cxr_nn_meta_validate(const struct cxr_nn_model_meta *meta,
                                     const struct cxr_nn_resnet_spec *spec, char *err)
{
    const enum cxr_status bad = CXR_ERR_NN_MODEL;
    if (meta->arch != spec->arch)
        return cxr_seterr(err, bad, "metadata: arch %s but the parameters are %s's",
                          cxr_nn_arch_name(meta->arch), cxr_nn_arch_name(spec->arch));
    if (meta->channels != spec->in_channels)
        return cxr_seterr(err, bad, "metadata: channels %d but conv1.weight takes %d",
                          (int)meta->channels, (int)spec->in_channels);
    if (meta->num_classes != spec->num_classes)
        return cxr_seterr(err, bad, "metadata: %d class names but fc.weight has %d rows",
                          (int)meta->num_classes, (int)spec->num_classes);
    if (meta->input_height < 1 || meta->input_height > 4096 || meta->input_width < 1 ||
        meta->input_width > 4096)
        return cxr_seterr(err, bad, "metadata: input_size %dx%d outside 1..4096",
                          (int)meta->input_height, (int)meta->input_width);
    for (int c = 0; c < meta->channels; c++) {
        if (!isfinite(meta->mean[c]))
            return cxr_seterr(err, bad, "metadata: mean[%d] is not a finite number", c);
        if (!isfinite(meta->std[c]) || meta->std[c] <= 0.0f)
            return cxr_seterr(err, bad, "metadata: std[%d] = %g must be > 0", c,
                              (double)meta->std[c]);
    }
    for (int k = 0; k < meta->num_classes; k++) {
        const char *c = meta->class_names[k];
        if (!str_fits(c, sizeof meta->class_names[k]) || !c[0])
            return cxr_seterr(err, bad, "metadata: class name %d is empty or too long", k);
        /* the file keeps them as a comma list */
        if (strchr(c, ',') || c[0] == ' ' || c[strlen(c) - 1] == ' ')
            return cxr_seterr(err, bad, "metadata: class name \"%s\" has a comma or an outer space",
                              c);
    }
    if (meta->positive_class < 0 || meta->positive_class >= meta->num_classes)
        return cxr_seterr(err, bad, "metadata: positive_class %d outside 0..%d",
                          (int)meta->positive_class, (int)meta->num_classes - 1);
    if (!(meta->operating_threshold >= 0.0 && meta->operating_threshold <= 1.0))
        return cxr_seterr(err, bad, "metadata: operating_threshold %g outside 0..1",
                          meta->operating_threshold);
    if (!(meta->urgent_threshold >= 0.0 && meta->urgent_threshold <= 1.0))
        return cxr_seterr(err, bad, "metadata: urgent_threshold %g outside 0..1",
                          meta->urgent_threshold);
    if (meta->resize_mode != CXR_NN_RESIZE_STRETCH && meta->resize_mode != CXR_NN_RESIZE_LETTERBOX)
        return cxr_seterr(err, bad, "metadata: unknown resize_mode %d", (int)meta->resize_mode);
    if (meta->contrast != CXR_NN_CONTRAST_NONE && meta->contrast != CXR_NN_CONTRAST_EQUALIZE)
        return cxr_seterr(err, bad, "metadata: unknown contrast %d", (int)meta->contrast);
    if (meta->preprocessing_version < 1)
        return cxr_seterr(err, bad, "metadata: preprocessing_version %d must be >= 1",
                          (int)meta->preprocessing_version);
    double amin = meta->age_min_years, amax = meta->age_max_years;
    if ((!isnan(amin) && !(amin >= 0 && amin <= 150)) ||
        (!isnan(amax) && !(amax >= 0 && amax <= 150)))
        return cxr_seterr(err, bad, "metadata: age range outside 0..150 years");
    if (!isnan(amin) && !isnan(amax) && amin > amax)
        return cxr_seterr(err, bad, "metadata: age_min_years %g > age_max_years %g", amin, amax);
    if (!str_fits(meta->name, sizeof meta->name) ||
        !str_fits(meta->version, sizeof meta->version) ||
        !str_fits(meta->created, sizeof meta->created) ||
        !str_fits(meta->training_data_digest, sizeof meta->training_data_digest))
        return cxr_seterr(err, bad, "metadata: a text field is not terminated");
    if (meta->metrics_json && !cxr_nn_json_text_valid(meta->metrics_json))
        return cxr_seterr(err, bad, "metadata: metrics is not valid JSON");
    return CXR_OK;
}

/* ---- parsing "__metadata__" */

static bool parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno == ERANGE || !isfinite(v))
        return false;
    while (*end == ' ')
        end++;
    if (*end)
        return false;
    *out = v;
    return true;
}

static bool parse_int(const char *s, long lo, long hi, int32_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || errno == ERANGE || v < lo || v > hi)
        return false;
    while (*end == ' ')
        end++;
    if (*end)
        return false;
    *out = (int32_t)v;
    return true;
}

/* Splits a comma list of numbers; returns the count or -1 if unparsable or
 * more than cap entries. */
static int parse_float_list(const char *s, float *out, int cap)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno == ERANGE || !isfinite(v) || n >= cap)
            return -1;
        out[n++] = (float)v;
        while (*end == ' ')
            end++;
        if (*end == '\0')
            return n;
        if (*end != ',')
            return -1;
        p = end + 1;
    }
}

static enum cxr_status parse_class_names(const char *s, struct cxr_nn_model_meta *meta,
                                         const char *file, char *err)
{
    int n = 0;
    if (s[0] == '[') {
        struct json_object *arr = json_tokener_parse(s);
        bool ok = arr && json_object_is_type(arr, json_type_array);
        size_t len = ok ? json_object_array_length(arr) : 0;
        for (size_t i = 0; ok && i < len; i++) {
            struct json_object *e = json_object_array_get_idx(arr, i);
            const char *v =
                json_object_is_type(e, json_type_string) ? json_object_get_string(e) : NULL;
            if (!v || !*v || strlen(v) >= sizeof meta->class_names[0] || n >= CXR_NN_MAX_CLASSES)
                ok = false;
            else
                snprintf(meta->class_names[n++], sizeof meta->class_names[0], "%s", v);
        }
        json_object_put(arr);
        if (!ok)
            n = -1;
    } else {
        const char *p = s;
        for (;;) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            while (len && *p == ' ')
                p++, len--;
            while (len && p[len - 1] == ' ')
                len--;
            if (!len || len >= sizeof meta->class_names[0] || n >= CXR_NN_MAX_CLASSES) {
                n = -1;
                break;
            }
            memcpy(meta->class_names[n], p, len);
            meta->class_names[n][len] = '\0';
            n++;
            if (!c)
                break;
            p = c + 1;
        }
    }
    if (n < 0)
        return cxr_seterr(err, CXR_ERR_NN_MODEL,
                          "%s: metadata class_names \"%.80s\": expected up to %d non-empty names "
                          "of < 32 bytes",
                          file, s, CXR_NN_MAX_CLASSES);
    if (n != meta->num_classes)
        return cxr_seterr(err, CXR_ERR_NN_MODEL,
                          "%s: metadata class_names has %d names but fc.weight has %d rows", file,
                          n, (int)meta->num_classes);
    return CXR_OK;
}

static const char *md_get(struct json_object *md, const char *key)
{
    struct json_object *v;
    if (!md || !json_object_object_get_ex(md, key, &v))
        return NULL;
    return json_object_get_string(v);
}

#define BADMD(key, val, what) \
    cxr_seterr(err, CXR_ERR_NN_MODEL, "%s: metadata %s \"%.80s\": %s", file, key, val, what)

enum cxr_status cxr_nn_meta_from_json(struct json_object *md, const struct cxr_nn_resnet_spec *spec,
                                      struct cxr_nn_model_meta *meta, const char *file, char *err)
{
    cxr_nn_model_meta_defaults(meta, spec->arch);
    meta->channels = spec->in_channels;
    meta->num_classes = spec->num_classes;
    if (spec->num_classes != 2) {
        for (int k = 0; k < spec->num_classes; k++)
            snprintf(meta->class_names[k], sizeof meta->class_names[k], "class%d", k);
        if (spec->num_classes == 1)
            memset(meta->class_names[1], 0, sizeof meta->class_names[1]);
        meta->positive_class = spec->num_classes >= 2 ? 1 : 0;
    }
    if (md) {
        json_object_object_foreach(md, key, val)
        {
            if (!json_object_is_type(val, json_type_string))
                return cxr_seterr(err, CXR_ERR_NN_MODEL,
                                  "%s: metadata %s is not a string (safetensors metadata "
                                  "values are strings)",
                                  file, key);
        }
    }
    const char *s;
    enum cxr_status st;
    if ((s = md_get(md, "format")) && strncmp(s, "cxr-triage-model/", 17) == 0 &&
        strcmp(s, CXR_NN_MODEL_FORMAT) != 0)
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                          "%s: format \"%.40s\" is newer than this build reads (%s)", file, s,
                          CXR_NN_MODEL_FORMAT);
    if ((s = md_get(md, "input_size"))) {
        int32_t h, w;
        const char *comma = strchr(s, ',');
        char hb[32];
        size_t hl = comma ? (size_t)(comma - s) : 0;
        bool ok;
        if (comma) {
            ok = hl < sizeof hb;
            if (ok) {
                memcpy(hb, s, hl);
                hb[hl] = '\0';
                ok = parse_int(hb, 1, 4096, &h) && parse_int(comma + 1, 1, 4096, &w);
            }
        } else {
            ok = parse_int(s, 1, 4096, &h);
            w = h;
        }
        if (!ok)
            return BADMD("input_size", s, "expected \"H,W\" with 1..4096 pixels each");
        meta->input_height = h;
        meta->input_width = w;
    }
    if ((s = md_get(md, "channels"))) {
        int32_t c;
        if (!parse_int(s, 1, 3, &c) || c == 2)
            return BADMD("channels", s, "expected 1 or 3");
        if (c != spec->in_channels)
            return cxr_seterr(err, CXR_ERR_NN_MODEL,
                              "%s: metadata channels %d but conv1.weight takes %d", file, (int)c,
                              (int)spec->in_channels);
    }
    const char *lists[2] = {"mean", "std"};
    float *dst[2] = {meta->mean, meta->std};
    for (int i = 0; i < 2; i++) {
        if (!(s = md_get(md, lists[i])))
            continue;
        float v[3];
        int n = parse_float_list(s, v, 3);
        if (n != meta->channels)
            return BADMD(lists[i], s,
                         meta->channels == 1 ? "expected 1 number (1 channel)"
                                             : "expected 3 numbers (3 channels)");
        for (int c = 0; c < n; c++) {
            if (i == 1 && !(v[c] > 0.0f))
                return BADMD(lists[i], s, "std must be > 0");
            dst[i][c] = v[c];
        }
    }
    if ((s = md_get(md, "class_names")) && (st = parse_class_names(s, meta, file, err)) != CXR_OK)
        return st;
    if ((s = md_get(md, "positive_class"))) {
        int32_t k = -1;
        if (!parse_int(s, 0, meta->num_classes - 1, &k)) {
            k = -1;
            for (int c = 0; c < meta->num_classes; c++)
                if (strcmp(s, meta->class_names[c]) == 0)
                    k = c;
        }
        if (k < 0)
            return BADMD("positive_class", s, "not a class index or class name");
        meta->positive_class = k;
    }
    const char *dkeys[4] = {"operating_threshold", "urgent_threshold", "age_min_years",
                            "age_max_years"};
    double *ddst[4] = {&meta->operating_threshold, &meta->urgent_threshold, &meta->age_min_years,
                       &meta->age_max_years};
    for (int i = 0; i < 4; i++) {
        if (!(s = md_get(md, dkeys[i])))
            continue;
        double v;
        bool age = i >= 2;
        if (!parse_double(s, &v) || v < 0 || v > (age ? 150 : 1))
            return BADMD(dkeys[i], s,
                         age ? "expected years in 0..150" : "expected a number in 0..1");
        *ddst[i] = v;
    }
    if ((s = md_get(md, "resize_mode"))) {
        if (strcmp(s, "stretch") == 0)
            meta->resize_mode = CXR_NN_RESIZE_STRETCH;
        else if (strcmp(s, "letterbox") == 0)
            meta->resize_mode = CXR_NN_RESIZE_LETTERBOX;
        else
            return BADMD("resize_mode", s, "expected stretch or letterbox");
    }
    if ((s = md_get(md, "contrast"))) {
        if (strcmp(s, "none") == 0)
            meta->contrast = CXR_NN_CONTRAST_NONE;
        else if (strcmp(s, "equalize") == 0)
            meta->contrast = CXR_NN_CONTRAST_EQUALIZE;
        else
            return BADMD("contrast", s, "expected none or equalize");
    }
    if ((s = md_get(md, "preprocessing_version")) &&
        !parse_int(s, 1, 1000000, &meta->preprocessing_version))
        return BADMD("preprocessing_version", s, "expected an integer >= 1");
    struct {
        const char *key;
        char *dst;
        size_t cap;
    } texts[] = {
        {"name", meta->name, sizeof meta->name},
        {"version", meta->version, sizeof meta->version},
        {"created", meta->created, sizeof meta->created},
        {"training_data_digest", meta->training_data_digest, sizeof meta->training_data_digest}};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        if (!(s = md_get(md, texts[i].key)))
            continue;
        if (strlen(s) >= texts[i].cap)
            return BADMD(texts[i].key, s, "too long");
        snprintf(texts[i].dst, texts[i].cap, "%s", s);
    }
    if ((s = md_get(md, "metrics"))) {
        if (!cxr_nn_json_text_valid(s))
            return BADMD("metrics", s, "not valid JSON");
        if (!(meta->metrics_json = strdup(s)))
            return CXR_ERR_NOMEM;
    }
    if ((s = md_get(md, "description")) && !(meta->description = strdup(s))) {
        cxr_nn_meta_release(meta);
        return CXR_ERR_NOMEM;
    }
    if ((s = md_get(md, "training_images"))) {
        char why[256];
        if ((st = cxr_nn_meta_digests_from_text(s, meta, why, sizeof why)) != CXR_OK) {
            cxr_nn_meta_release(meta);
            return st == CXR_ERR_NOMEM ? st : BADMD("training_images", s, why);
        }
    }
    char verr[CXR_ERRLEN];
    st = cxr_nn_meta_validate(meta, spec, verr);
    if (st != CXR_OK) {
        cxr_seterr(err, st, "%s: %.900s", file, verr);
        cxr_nn_meta_release(meta);
    }
    return st;
}

/* ---- writing "__metadata__" */

/* Shortest decimal text that reads back to the same double. */
static void fmt_double(char *buf, size_t cap, double v)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void fmt_float(char *buf, size_t cap, float v)
{
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, cap, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v)
            return;
    }
}

static bool put(struct json_object *o, const char *key, const char *val)
{
    struct json_object *s = json_object_new_string(val);
    return s && json_object_object_add(o, key, s) == 0;
}

struct json_object *cxr_nn_meta_to_json(const struct cxr_nn_model_meta *meta)
{
    struct json_object *o = json_object_new_object();
    char buf[CXR_NN_MAX_CLASSES * 34 + 64], num[40];
    bool ok = o != NULL;
    ok = ok && put(o, "format", CXR_NN_MODEL_FORMAT);
    ok = ok && put(o, "arch", cxr_nn_arch_name(meta->arch));
    snprintf(buf, sizeof buf, "%d,%d", (int)meta->input_height, (int)meta->input_width);
    ok = ok && put(o, "input_size", buf);
    snprintf(buf, sizeof buf, "%d", (int)meta->channels);
    ok = ok && put(o, "channels", buf);
    const float *lists[2] = {meta->mean, meta->std};
    const char *lkeys[2] = {"mean", "std"};
    for (int i = 0; i < 2; i++) {
        buf[0] = '\0';
        for (int c = 0; c < meta->channels && c < 3; c++) {
            fmt_float(num, sizeof num, lists[i][c]);
            size_t l = strlen(buf);
            snprintf(buf + l, sizeof buf - l, "%s%s", c ? "," : "", num);
        }
        ok = ok && put(o, lkeys[i], buf);
    }
    buf[0] = '\0';
    for (int k = 0; k < meta->num_classes && k < CXR_NN_MAX_CLASSES; k++) {
        size_t l = strlen(buf);
        snprintf(buf + l, sizeof buf - l, "%s%.31s", k ? "," : "", meta->class_names[k]);
    }
    ok = ok && put(o, "class_names", buf);
    snprintf(buf, sizeof buf, "%d", (int)meta->positive_class);
    ok = ok && put(o, "positive_class", buf);
    fmt_double(buf, sizeof buf, meta->operating_threshold);
    ok = ok && put(o, "operating_threshold", buf);
    fmt_double(buf, sizeof buf, meta->urgent_threshold);
    ok = ok && put(o, "urgent_threshold", buf);
    ok = ok && put(o, "resize_mode",
                   meta->resize_mode == CXR_NN_RESIZE_LETTERBOX ? "letterbox" : "stretch");
    ok = ok && put(o, "contrast", meta->contrast == CXR_NN_CONTRAST_EQUALIZE ? "equalize" : "none");
    snprintf(buf, sizeof buf, "%d", (int)meta->preprocessing_version);
    ok = ok && put(o, "preprocessing_version", buf);
    if (!isnan(meta->age_min_years)) {
        fmt_double(buf, sizeof buf, meta->age_min_years);
        ok = ok && put(o, "age_min_years", buf);
    }
    if (!isnan(meta->age_max_years)) {
        fmt_double(buf, sizeof buf, meta->age_max_years);
        ok = ok && put(o, "age_max_years", buf);
    }
    if (meta->name[0])
        ok = ok && put(o, "name", meta->name);
    if (meta->version[0])
        ok = ok && put(o, "version", meta->version);
    if (meta->created[0])
        ok = ok && put(o, "created", meta->created);
    if (meta->training_data_digest[0])
        ok = ok && put(o, "training_data_digest", meta->training_data_digest);
    if (meta->metrics_json)
        ok = ok && put(o, "metrics", meta->metrics_json);
    if (meta->description)
        ok = ok && put(o, "description", meta->description);
    if (meta->training_image_count > 0) {
        char *list = cxr_nn_meta_digests_to_text(meta);
        ok = ok && list && put(o, "training_images", list);
        free(list);
    }
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

bool cxr_nn_model_meta_untrained(const struct cxr_nn_model_meta *meta)
{
    return meta->description && strstr(meta->description, "UNTRAINED") != NULL;
}
