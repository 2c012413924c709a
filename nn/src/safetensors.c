/* safetensors.c — reading model files (https://github.com/huggingface/safetensors):
 *
 *   u64 little-endian N | N bytes of JSON header | data area
 *
 * The header is one JSON object: "__metadata__" (optional, string -> string)
 * and, per tensor, "<name>": {"dtype": "F32", "shape": [..], "data_offsets":
 * [begin, end]} with offsets relative to the data area. As the reference
 * implementation does, the tensors must cover the data area exactly (no
 * overlap, no hole, nothing after the last one). Everything is checked
 * before it is used; the first problem found is reported with the file name
 * and, where there is one, the tensor name.
 *
 * Statuses: CXR_ERR_NOT_FOUND / CXR_ERR_IO (opening, reading), CXR_ERR_NN_MODEL
 * (corrupt, truncated, inconsistent, missing or extra tensors, bad metadata),
 * CXR_ERR_NN_DTYPE (a dtype the format or the parameter does not allow),
 * CXR_ERR_NN_SHAPE (a parameter whose shape does not fit the architecture),
 * CXR_ERR_UNSUPPORTED (an architecture or format version this build does not
 * know), CXR_ERR_NOMEM.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/file.h"
#include "model_internal.h"

#define MAX_ENTRIES 8192
#define MAX_DIM     (INT64_C(1) << 40)
#define MAX_FILE    (UINT64_C(16) << 30)     /* resnet50 at width 1024 in F32 is ~6 GiB */
#define MAX_KEYS    (4 * MAX_ENTRIES + 4096) /* all objects of the header together */

struct entry {
    const char *name; /* owned by the json-c root */
    enum cxr_nn_dtype dtype;
    int32_t ndim;
    int64_t shape[CXR_NN_MAX_DIMS];
    uint64_t begin, end;
    bool used;
};

static const struct {
    const char *name;
    enum cxr_nn_dtype dtype;
} dtype_names[] = {
    {"F32", CXR_NN_DTYPE_F32}, {"F16", CXR_NN_DTYPE_F16}, {"BF16", CXR_NN_DTYPE_BF16},
    {"F64", CXR_NN_DTYPE_F64}, {"I64", CXR_NN_DTYPE_I64}, {"U8", CXR_NN_DTYPE_U8},
};

/* json-c keeps one of two equal keys of an object silently, so duplicates
 * are found in the text: count the keys of every object there and compare
 * with the keys json-c holds (count_tree_keys). Sets *dup to the first key
 * seen twice in one object. Runs on text json-c already accepted (depth <=
 * 16); returns SIZE_MAX for the 'single-quoted' strings json-c 0.16 takes
 * even in strict mode but JSON does not, SIZE_MAX - 1 past MAX_KEYS keys. */
static size_t count_text_keys(const char *s, size_t n, const char **dup, size_t *dup_len)
{
    struct key {
        const char *p;
        size_t len;
    } *list = NULL;
    size_t total = 0, nlist = 0, cap = 0, starts[64];
    int objs = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '{') {
            if (objs < 64)
                starts[objs] = nlist;
            objs++;
        } else if (c == '}') {
            objs--;
            if (objs >= 0 && objs < 64)
                nlist = starts[objs];
        } else if (c == '\'') {
            total = SIZE_MAX;
            break;
        } else if (c == '"') {
            size_t start = ++i;
            while (i < n && s[i] != '"')
                i += s[i] == '\\' ? 2 : 1;
            size_t j = i + 1;
            while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'))
                j++;
            if (j >= n || s[j] != ':' || objs < 1 || objs > 64)
                continue;
            size_t len = i - start;
            if (++total > MAX_KEYS) {
                total = SIZE_MAX - 1; /* bounds the quadratic duplicate search */
                break;
            }
            for (size_t k = starts[objs - 1]; k < nlist && !*dup; k++)
                if (list[k].len == len && memcmp(list[k].p, s + start, len) == 0) {
                    *dup = s + start;
                    *dup_len = len;
                }
            if (nlist == cap) {
                size_t ncap = cap ? cap * 2 : 256;
                struct key *p = realloc(list, ncap * sizeof *list);
                if (!p)
                    continue; /* still counted; only the name of a duplicate may be lost */
                list = p;
                cap = ncap;
            }
            list[nlist].p = s + start;
            list[nlist].len = len;
            nlist++;
        }
    }
    free(list);
    return total;
}

static size_t count_tree_keys(struct json_object *o)
{
    size_t n = 0;
    if (json_object_is_type(o, json_type_object)) {
        json_object_object_foreach(o, k, v)
        {
            (void)k;
            n += 1 + count_tree_keys(v);
        }
    } else if (json_object_is_type(o, json_type_array)) {
        size_t len = json_object_array_length(o);
        for (size_t i = 0; i < len; i++)
            n += count_tree_keys(json_object_array_get_idx(o, i));
    }
    return n;
}

/* A non-negative JSON integer; false for anything else. */
static bool json_u64(struct json_object *v, uint64_t *out)
{
    if (!json_object_is_type(v, json_type_int))
        return false;
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (x < 0 || x == INT64_MAX)
        return false;
    *out = (uint64_t)x;
    return true;
}

static enum cxr_status parse_entry(const char *file, const char *name, struct json_object *v,
                                   uint64_t data_len, struct entry *e, char *err)
{
    const enum cxr_status bad = CXR_ERR_NN_MODEL;
    struct json_object *dt, *shape, *offs;
    e->name = name;
    if (strlen(name) >= CXR_NN_NAME_LEN)
        return cxr_seterr(err, bad, "%s: tensor name '%.60s...' longer than %d bytes", file, name,
                          CXR_NN_NAME_LEN - 1);
    if (!json_object_is_type(v, json_type_object))
        return cxr_seterr(err, bad, "%s: tensor '%s': header entry is not an object", file, name);
    if (!json_object_object_get_ex(v, "dtype", &dt) || !json_object_is_type(dt, json_type_string))
        return cxr_seterr(err, bad, "%s: tensor '%s': no \"dtype\" string", file, name);
    const char *dts = json_object_get_string(dt);
    size_t d;
    for (d = 0; d < sizeof dtype_names / sizeof dtype_names[0]; d++)
        if (strcmp(dts, dtype_names[d].name) == 0)
            break;
    if (d == sizeof dtype_names / sizeof dtype_names[0])
        return cxr_seterr(err, CXR_ERR_NN_DTYPE,
                          "%s: tensor '%s': dtype \"%.20s\" not supported (F32, F16, BF16, F64, "
                          "I64, U8)",
                          file, name, dts);
    e->dtype = dtype_names[d].dtype;
    if (!json_object_object_get_ex(v, "shape", &shape) ||
        !json_object_is_type(shape, json_type_array))
        return cxr_seterr(err, bad, "%s: tensor '%s': no \"shape\" list", file, name);
    size_t nd = json_object_array_length(shape);
    if (nd > CXR_NN_MAX_DIMS)
        return cxr_seterr(err, bad, "%s: tensor '%s': %zu dimensions (at most %d)", file, name, nd,
                          CXR_NN_MAX_DIMS);
    e->ndim = (int32_t)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t dim;
        if (!json_u64(json_object_array_get_idx(shape, i), &dim) || dim > (uint64_t)MAX_DIM)
            return cxr_seterr(err, bad,
                              "%s: tensor '%s': shape entry %zu is not a non-negative integer "
                              "(or is absurdly large)",
                              file, name, i);
        e->shape[i] = (int64_t)dim;
        if (dim && numel > (uint64_t)INT64_MAX / 8 / dim)
            return cxr_seterr(err, bad, "%s: tensor '%s': element count overflows", file, name);
        numel *= dim;
    }
    if (!json_object_object_get_ex(v, "data_offsets", &offs) ||
        !json_object_is_type(offs, json_type_array) || json_object_array_length(offs) != 2 ||
        !json_u64(json_object_array_get_idx(offs, 0), &e->begin) ||
        !json_u64(json_object_array_get_idx(offs, 1), &e->end))
        return cxr_seterr(err, bad,
                          "%s: tensor '%s': \"data_offsets\" is not a list of 2 non-negative "
                          "integers",
                          file, name);
    if (e->begin > e->end)
        return cxr_seterr(err, bad, "%s: tensor '%s': data_offsets [%llu,%llu] begin > end", file,
                          name, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_len)
        return cxr_seterr(err, bad,
                          "%s: tensor '%s': data_offsets [%llu,%llu] past the end of the data "
                          "area (%llu bytes; file truncated?)",
                          file, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                          (unsigned long long)data_len);
    uint64_t want = numel * cxr_nn_dtype_size(e->dtype);
    if (e->end - e->begin != want)
        return cxr_seterr(err, bad,
                          "%s: tensor '%s': data_offsets [%llu,%llu] hold %llu bytes but %s x "
                          "%llu elements need %llu",
                          file, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                          (unsigned long long)(e->end - e->begin), dts, (unsigned long long)numel,
                          (unsigned long long)want);
    return CXR_OK;
}

static int cmp_begin(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Overlap and coverage of the data area. */
static enum cxr_status check_layout(const char *file, struct entry *ents, size_t n,
                                    uint64_t data_len, char *err)
{
    struct entry **order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return CXR_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        order[i] = &ents[i];
    qsort(order, n, sizeof *order, cmp_begin);
    enum cxr_status st = CXR_OK;
    uint64_t pos = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < n && st == CXR_OK; i++) {
        const struct entry *e = order[i];
        if (e->begin == e->end && e->begin <= pos)
            continue; /* an empty tensor occupies nothing */
        if (e->begin < pos)
            st = cxr_seterr(err, CXR_ERR_NN_MODEL,
                            "%s: tensor '%s': data_offsets [%llu,%llu] overlap tensor '%s'", file,
                            e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                            prev ? prev : "?");
        else if (e->begin > pos)
            st = cxr_seterr(err, CXR_ERR_NN_MODEL,
                            "%s: tensor '%s': data_offsets [%llu,%llu] leave a hole of %llu "
                            "bytes in the data area",
                            file, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                            (unsigned long long)(e->begin - pos));
        pos = e->end;
        prev = e->name;
    }
    if (st == CXR_OK && pos != data_len)
        st = cxr_seterr(err, CXR_ERR_NN_MODEL,
                        "%s: %llu bytes after the last tensor's data (data area %llu bytes)", file,
                        (unsigned long long)(data_len - pos), (unsigned long long)data_len);
    free(order);
    return st;
}

static struct entry *find_entry(struct entry *ents, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ents[i].name, name) == 0)
            return &ents[i];
    return NULL;
}

/* Which of resnet18/34/50 the tensor names describe: conv3 in the blocks
 * means bottleneck; block counts per layer from "layer<L>.<i>.conv1.weight". */
static bool infer_arch(struct entry *ents, size_t n, enum cxr_nn_arch *arch, char *desc, size_t cap)
{
    int32_t counts[4] = {0};
    char name[64];
    for (int l = 0; l < 4; l++)
        for (int i = 0; i < 64; i++) {
            snprintf(name, sizeof name, "layer%d.%d.conv1.weight", l + 1, i);
            if (!find_entry(ents, n, name))
                break;
            counts[l]++;
        }
    bool bottleneck = find_entry(ents, n, "layer1.0.conv3.weight") != NULL;
    snprintf(desc, cap, "%d-%d-%d-%d %s blocks", (int)counts[0], (int)counts[1], (int)counts[2],
             (int)counts[3], bottleneck ? "bottleneck" : "basic");
    static const int32_t b18[4] = {2, 2, 2, 2}, b34[4] = {3, 4, 6, 3};
    if (!bottleneck && memcmp(counts, b18, sizeof counts) == 0)
        *arch = CXR_NN_ARCH_RESNET18;
    else if (!bottleneck && memcmp(counts, b34, sizeof counts) == 0)
        *arch = CXR_NN_ARCH_RESNET34;
    else if (bottleneck && memcmp(counts, b34, sizeof counts) == 0)
        *arch = CXR_NN_ARCH_RESNET50;
    else
        return false;
    return true;
}

static void fmt_shape(char *buf, size_t cap, int32_t ndim, const int64_t *shape)
{
    size_t l = (size_t)snprintf(buf, cap, "[");
    for (int32_t i = 0; i < ndim && l < cap; i++)
        l += (size_t)snprintf(buf + l, cap - l, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (l < cap)
        snprintf(buf + l, cap - l, "]");
}

/* Copies one entry's bytes into the model's tensor, converting floats to F32. */
static void convert(struct cxr_nn_tensor *t, const struct entry *e, const uint8_t *data)
{
    const uint8_t *src = data + e->begin;
    size_t n = (size_t)cxr_nn_tensor_numel(t);
    if (t->dtype == CXR_NN_DTYPE_I64 || e->dtype == CXR_NN_DTYPE_F32) {
        memcpy(t->data, src, t->nbytes);
        return;
    }
    float *dst = t->data;
    for (size_t i = 0; i < n; i++) {
        if (e->dtype == CXR_NN_DTYPE_F64) {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
        } else {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = e->dtype == CXR_NN_DTYPE_F16 ? cxr_nn_f16_to_f32(h) : cxr_nn_bf16_to_f32(h);
        }
    }
}

/* Matches the entries against the spec's parameters and fills the model. */
static enum cxr_status fill_model(const char *file, struct cxr_nn_model *m, struct entry *ents,
                                  size_t n, const uint8_t *data, char *err)
{
    const char *arch = cxr_nn_arch_name(m->spec.arch);
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        struct cxr_nn_tensor *t = &m->tensors[i];
        enum cxr_nn_param_kind kind = m->kinds[i];
        struct entry *e = find_entry(ents, n, t->name);
        if (!e) {
            if (kind == CXR_NN_PARAM_BN_COUNT)
                continue; /* optional buffer, stays 0 */
            return cxr_seterr(err, CXR_ERR_NN_MODEL,
                              "%s: tensor '%s' missing (%s needs it; torchvision naming)", file,
                              t->name, arch);
        }
        e->used = true;
        bool is_float = e->dtype == CXR_NN_DTYPE_F32 || e->dtype == CXR_NN_DTYPE_F16 ||
                        e->dtype == CXR_NN_DTYPE_BF16 || e->dtype == CXR_NN_DTYPE_F64;
        if (kind == CXR_NN_PARAM_BN_COUNT ? e->dtype != CXR_NN_DTYPE_I64 : !is_float)
            return cxr_seterr(err, CXR_ERR_NN_DTYPE, "%s: tensor '%s': dtype %s, expected %s", file,
                              t->name, cxr_nn_dtype_name(e->dtype),
                              kind == CXR_NN_PARAM_BN_COUNT ? "I64" : "F32, F16, BF16 or F64");
        bool same = e->ndim == t->ndim;
        for (int32_t d = 0; same && d < t->ndim; d++)
            same = e->shape[d] == t->shape[d];
        /* num_batches_tracked: PyTorch writes [], accept [1] too */
        if (kind == CXR_NN_PARAM_BN_COUNT && e->ndim == 1 && e->shape[0] == 1)
            same = true;
        if (!same) {
            char got[96], want[96];
            fmt_shape(got, sizeof got, e->ndim, e->shape);
            fmt_shape(want, sizeof want, t->ndim, t->shape);
            return cxr_seterr(err, CXR_ERR_NN_SHAPE,
                              "%s: tensor '%s': shape %s, but %s (in %d, width %d, %d classes) "
                              "needs %s",
                              file, t->name, got, arch, (int)m->spec.in_channels,
                              (int)m->spec.base_width, (int)m->spec.num_classes, want);
        }
        convert(t, e, data);
        if (kind == CXR_NN_PARAM_CONV_WEIGHT || kind == CXR_NN_PARAM_FC_WEIGHT)
            m->storage = e->dtype == CXR_NN_DTYPE_F64 ? CXR_NN_DTYPE_F32 : e->dtype;
    }
    for (size_t i = 0; i < n; i++)
        if (!ents[i].used)
            return cxr_seterr(err, CXR_ERR_NN_MODEL, "%s: tensor '%s' is not a parameter of %s",
                              file, ents[i].name, arch);
    return CXR_OK;
}

/* The spec the entries describe: arch from metadata (or inferred), input
 * channels and base width from conv1.weight, classes from fc.weight. */
static enum cxr_status make_spec(const char *file, struct json_object *md, struct entry *ents,
                                 size_t n, struct cxr_nn_resnet_spec *spec, char *err)
{
    enum cxr_nn_arch arch, inferred;
    char desc[80];
    bool have_inferred = infer_arch(ents, n, &inferred, desc, sizeof desc);
    struct json_object *a = NULL;
    if (md && json_object_object_get_ex(md, "arch", &a)) {
        const char *s = json_object_get_string(a);
        if (!json_object_is_type(a, json_type_string) || !cxr_nn_arch_parse(s, &arch))
            return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                              "%s: metadata arch \"%.40s\" is not one this build knows (resnet18, "
                              "resnet34, resnet50)",
                              file, s ? s : "");
        if (have_inferred && inferred != arch)
            return cxr_seterr(err, CXR_ERR_NN_MODEL,
                              "%s: metadata arch %s but the tensors are %s's (%s)", file,
                              cxr_nn_arch_name(arch), cxr_nn_arch_name(inferred), desc);
    } else if (have_inferred) {
        arch = inferred;
    } else {
        return cxr_seterr(err, CXR_ERR_NN_MODEL,
                          "%s: no \"arch\" metadata and the tensors (%s) are not those of "
                          "resnet18, resnet34 or resnet50",
                          file, desc);
    }
    struct entry *c1 = find_entry(ents, n, "conv1.weight");
    struct entry *fc = find_entry(ents, n, "fc.weight");
    if (!c1 || c1->ndim != 4)
        return cxr_seterr(err, c1 ? CXR_ERR_NN_SHAPE : CXR_ERR_NN_MODEL,
                          "%s: tensor 'conv1.weight' %s", file,
                          c1 ? "is not 4-dimensional" : "missing (torchvision naming)");
    if (!fc || fc->ndim != 2)
        return cxr_seterr(err, fc ? CXR_ERR_NN_SHAPE : CXR_ERR_NN_MODEL,
                          "%s: tensor 'fc.weight' %s", file,
                          fc ? "is not 2-dimensional" : "missing (torchvision naming)");
    if (c1->shape[1] != 1 && c1->shape[1] != 3)
        return cxr_seterr(err, CXR_ERR_NN_SHAPE,
                          "%s: tensor 'conv1.weight' takes %lld input channels (1 or 3 supported)",
                          file, (long long)c1->shape[1]);
    if (c1->shape[0] < 1 || c1->shape[0] > 1024)
        return cxr_seterr(err, CXR_ERR_NN_SHAPE,
                          "%s: tensor 'conv1.weight' has %lld output channels (1..1024 supported)",
                          file, (long long)c1->shape[0]);
    if (fc->shape[0] < 1 || fc->shape[0] > CXR_NN_MAX_CLASSES)
        return cxr_seterr(err, CXR_ERR_NN_SHAPE,
                          "%s: tensor 'fc.weight' has %lld classes (1..%d supported)", file,
                          (long long)fc->shape[0], CXR_NN_MAX_CLASSES);
    if (cxr_nn_resnet_spec_make(arch, (int32_t)c1->shape[1], (int32_t)c1->shape[0],
                                (int32_t)fc->shape[0], spec) != CXR_OK)
        return cxr_seterr(err, CXR_ERR_INTERNAL, "%s: cannot make the %s spec", file,
                          cxr_nn_arch_name(arch));
    return CXR_OK;
}

void cxr_nn_sha256_hex(const void *buf, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    out[0] = '\0';
    if (EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return;
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

enum cxr_status cxr_nn_model_load_memory(const void *buf, size_t len, const char *name,
                                         struct cxr_nn_model **out, char *err)
{
    const enum cxr_status bad = CXR_ERR_NN_MODEL;
    const uint8_t *b = buf;
    const char *file = name ? name : "(memory)";
    struct json_tokener *tok = NULL;
    struct json_object *root = NULL, *md = NULL;
    struct entry *ents = NULL;
    struct cxr_nn_model *m = NULL;
    enum cxr_status st;
    if (!out)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "%s: no output pointer", file);
    *out = NULL;
    if (!buf && len)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "%s: no buffer", file);
    if (len < 8)
        return cxr_seterr(err, bad, "%s: %zu bytes, too short for a safetensors file", file, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | b[i];
    if (hlen > CXR_NN_MAX_HEADER)
        return cxr_seterr(err, bad,
                          "%s: header length %llu is absurd (cap %u bytes): not a safetensors "
                          "file?",
                          file, (unsigned long long)hlen, CXR_NN_MAX_HEADER);
    if (hlen > len - 8)
        return cxr_seterr(err, bad,
                          "%s: header length %llu runs past the end of the file (%zu bytes; "
                          "truncated?)",
                          file, (unsigned long long)hlen, len);
    if (hlen < 2 || b[8] != '{')
        return cxr_seterr(err, bad, "%s: header does not start with a JSON object", file);
    const char *hdr = (const char *)b + 8;
    if (memchr(hdr, '\0', hlen))
        return cxr_seterr(err, bad, "%s: header contains a NUL byte", file);
    uint64_t data_len = len - 8 - hlen;
    const uint8_t *data = b + 8 + hlen;

    if (!(tok = json_tokener_new_ex(16)))
        return CXR_ERR_NOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    root = json_tokener_parse_ex(tok, hdr, (int)hlen);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    if (!root || jerr != json_tokener_success) {
        st = cxr_seterr(err, bad, "%s: header is not valid JSON (%s near byte %zu)", file,
                        root ? "trailing data" : json_tokener_error_desc(jerr), end);
        goto fail;
    }
    for (size_t i = end; i < hlen; i++)
        if (hdr[i] != ' ' && hdr[i] != '\t' && hdr[i] != '\n' && hdr[i] != '\r') {
            st = cxr_seterr(err, bad, "%s: header has data after the JSON object (byte %zu)", file,
                            i);
            goto fail;
        }
    if (!json_object_is_type(root, json_type_object)) {
        st = cxr_seterr(err, bad, "%s: header is not a JSON object", file);
        goto fail;
    }
    size_t nkeys = (size_t)json_object_object_length(root);
    const char *dup = NULL;
    size_t dup_len = 0;
    size_t counted = count_text_keys(hdr, end, &dup, &dup_len);
    if (counted == SIZE_MAX) {
        st = cxr_seterr(err, bad, "%s: header is not valid JSON (single-quoted string)", file);
        goto fail;
    }
    if (counted == SIZE_MAX - 1) {
        st = cxr_seterr(err, bad, "%s: more than %d keys in the header", file, MAX_KEYS);
        goto fail;
    }
    if (counted != count_tree_keys(root)) {
        st = cxr_seterr(err, bad, "%s: key '%.*s' appears more than once in the header", file,
                        (int)(dup ? (dup_len > 80 ? 80 : dup_len) : 1), dup ? dup : "?");
        goto fail;
    }
    if (nkeys > MAX_ENTRIES) {
        st = cxr_seterr(err, bad, "%s: %zu header entries (cap %d)", file, nkeys, MAX_ENTRIES);
        goto fail;
    }
    if (!(ents = calloc(nkeys ? nkeys : 1, sizeof *ents))) {
        st = CXR_ERR_NOMEM;
        goto fail;
    }
    size_t n = 0;
    json_object_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_object_is_type(val, json_type_object)) {
                st = cxr_seterr(err, bad, "%s: \"__metadata__\" is not an object", file);
                goto fail;
            }
            md = val;
            continue;
        }
        if ((st = parse_entry(file, key, val, data_len, &ents[n], err)) != CXR_OK)
            goto fail;
        n++;
    }
    if ((st = check_layout(file, ents, n, data_len, err)) != CXR_OK)
        goto fail;
    struct cxr_nn_resnet_spec spec;
    if ((st = make_spec(file, md, ents, n, &spec, err)) != CXR_OK)
        goto fail;
    if (!(m = cxr_nn_model_alloc(&spec))) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "%s: out of memory for the tensors", file);
        goto fail;
    }
    if ((st = fill_model(file, m, ents, n, data, err)) != CXR_OK)
        goto fail;
    if ((st = cxr_nn_meta_from_json(md, &spec, &m->meta, file, err)) != CXR_OK)
        goto fail;
    cxr_nn_sha256_hex(buf, len, m->sha256);
    free(ents);
    json_object_put(root);
    json_tokener_free(tok);
    *out = m;
    return CXR_OK;
fail:
    cxr_nn_model_free(m);
    free(ents);
    json_object_put(root);
    json_tokener_free(tok);
    return st;
}

enum cxr_status cxr_nn_model_load(const char *path, struct cxr_nn_model **out, char *err)
{
    if (!out)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "no output pointer");
    *out = NULL;
    if (!path)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "no model path");
    struct stat st;
    enum cxr_status ost;
    int fd = cxr_file_open_regular(path, &st, &ost, err); /* never waits on a FIFO */
    if (fd < 0)
        return ost;
    if (st.st_size < 8) {
        close(fd);
        return cxr_seterr(err, CXR_ERR_NN_MODEL, "%s: %lld bytes, too short for a safetensors file",
                          path, (long long)st.st_size);
    }
    if ((uint64_t)st.st_size > MAX_FILE) {
        close(fd);
        return cxr_seterr(err, CXR_ERR_LIMIT, "%s: %lld bytes, more than a model can be (%llu)",
                          path, (long long)st.st_size, (unsigned long long)MAX_FILE);
    }
    /* read, not mmap: a file truncated under us must be an error, not SIGBUS */
    size_t len = (size_t)st.st_size, got = 0;
    uint8_t *buf = malloc(len);
    if (!buf) {
        close(fd);
        return cxr_seterr(err, CXR_ERR_NOMEM, "%s: no memory for %zu bytes", path, len);
    }
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            close(fd);
            free(buf);
            return cxr_seterr(err, CXR_ERR_IO, "%s: read: %s", path,
                              r == 0 ? "file shrank while reading" : strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    enum cxr_status s = cxr_nn_model_load_memory(buf, len, path, out, err);
    free(buf);
    return s;
}
