/* check_nn_modelfile.c — the safetensors loader refuses every kind of bad
 * file with the right status and a message naming the problem, without a
 * crash or a leak (run under ASan), and accepts the variants the format
 * allows (F16/BF16/F64 parameters, no num_batches_tracked, no "arch").
 *
 * Bad files are made by editing a valid small file in memory: the header is
 * parsed with json-c, changed, and packed again (data offsets recomputed
 * unless a test sets them), or edited as text where JSON cannot express the
 * fault (duplicate keys, syntax errors).
 */
#include <check.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/nn.h"
#include "test_util.h"

#define FILE_NAME "bad.safetensors"

/* ------------------------------------------------------------------ editing files */

struct tent {
    char name[128];
    struct json_object *desc; /* dtype, shape, data_offsets */
    uint8_t *data;
    size_t len;
    bool keep_offsets; /* a test set data_offsets itself */
};

struct tf {
    struct json_object *meta; /* NULL: no "__metadata__" */
    struct tent e[400];
    size_t n;
};

static uint64_t hlen_of(const uint8_t *b)
{
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | b[i];
    return h;
}

static void tf_load(struct tf *t, const uint8_t *buf, size_t len)
{
    memset(t, 0, sizeof *t);
    uint64_t h = hlen_of(buf);
    ck_assert(8 + h <= len);
    struct json_tokener *tok = json_tokener_new();
    struct json_object *root = json_tokener_parse_ex(tok, (const char *)buf + 8, (int)h);
    ck_assert_ptr_nonnull(root);
    json_tokener_free(tok);
    const uint8_t *data = buf + 8 + h;
    json_object_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            t->meta = json_object_get(val);
            continue;
        }
        struct tent *e = &t->e[t->n++];
        ck_assert(t->n <= sizeof t->e / sizeof t->e[0]);
        snprintf(e->name, sizeof e->name, "%s", key);
        e->desc = json_object_get(val);
        struct json_object *o;
        ck_assert(json_object_object_get_ex(val, "data_offsets", &o));
        size_t b = (size_t)json_object_get_int64(json_object_array_get_idx(o, 0));
        size_t en = (size_t)json_object_get_int64(json_object_array_get_idx(o, 1));
        e->len = en - b;
        e->data = malloc(e->len ? e->len : 1);
        memcpy(e->data, data + b, e->len);
    }
    json_object_put(root);
}

static void tf_free(struct tf *t)
{
    for (size_t i = 0; i < t->n; i++) {
        json_object_put(t->e[i].desc);
        free(t->e[i].data);
    }
    json_object_put(t->meta);
    memset(t, 0, sizeof *t);
}

static struct tent *tf_get(struct tf *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->e[i].name, name) == 0)
            return &t->e[i];
    ck_abort_msg("no tensor %s in the base file", name);
    return NULL;
}

static void tf_del(struct tf *t, const char *name)
{
    struct tent *e = tf_get(t, name);
    json_object_put(e->desc);
    free(e->data);
    size_t i = (size_t)(e - t->e);
    memmove(&t->e[i], &t->e[i + 1], (t->n - i - 1) * sizeof t->e[0]);
    t->n--;
}

static void tf_add(struct tf *t, const char *name, const char *desc, const void *data, size_t len)
{
    struct tent *e = &t->e[t->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->desc = json_tokener_parse(desc);
    ck_assert_ptr_nonnull(e->desc);
    e->data = malloc(len ? len : 1);
    memcpy(e->data, data, len);
    e->len = len;
}

/* Replaces one field of a tensor's entry with JSON text (NULL deletes it). */
static void tf_set(struct tf *t, const char *name, const char *field, const char *json)
{
    struct tent *e = tf_get(t, name);
    if (strcmp(field, "data_offsets") == 0)
        e->keep_offsets = true;
    if (!json) {
        json_object_object_del(e->desc, field);
        return;
    }
    struct json_object *v = json_tokener_parse(json);
    ck_assert_msg(v != NULL || strcmp(json, "null") == 0, "bad json %s", json);
    json_object_object_add(e->desc, field, v);
}

static void tf_meta(struct tf *t, const char *key, const char *value)
{
    if (!t->meta)
        t->meta = json_object_new_object();
    if (value)
        json_object_object_add(t->meta, key, json_object_new_string(value));
    else
        json_object_object_del(t->meta, key);
}

typedef void (*raw_fn)(struct json_object *root);

/* Packs the file: offsets contiguous in entry order, then `raw` may edit the
 * final header (to set offsets by hand). */
static uint8_t *tf_pack(struct tf *t, raw_fn raw, size_t *len)
{
    struct json_object *root = json_object_new_object();
    if (t->meta)
        json_object_object_add(root, "__metadata__", json_object_get(t->meta));
    size_t off = 0;
    for (size_t i = 0; i < t->n; i++) {
        struct json_object *o = json_object_new_array();
        json_object_array_add(o, json_object_new_int64((int64_t)off));
        json_object_array_add(o, json_object_new_int64((int64_t)(off + t->e[i].len)));
        if (!t->e[i].keep_offsets)
            json_object_object_add(t->e[i].desc, "data_offsets", o);
        else
            json_object_put(o);
        json_object_object_add(root, t->e[i].name, json_object_get(t->e[i].desc));
        off += t->e[i].len;
    }
    if (raw)
        raw(root);
    const char *text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    size_t h = strlen(text), pad = (8 - h % 8) % 8;
    *len = 8 + h + pad + off;
    uint8_t *buf = malloc(*len);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)(h + pad) >> (8 * i));
    memcpy(buf + 8, text, h);
    memset(buf + 8 + h, ' ', pad);
    size_t p = 8 + h + pad;
    for (size_t i = 0; i < t->n; i++) {
        memcpy(buf + p, t->e[i].data, t->e[i].len);
        p += t->e[i].len;
    }
    json_object_put(root);
    return buf;
}

/* Text edit of the header: first occurrence of `from` becomes `to`; the
 * header length is fixed up, the data area kept. */
static uint8_t *text_edit(const uint8_t *buf, size_t len, const char *from, const char *to,
                          size_t *out_len)
{
    uint64_t h = hlen_of(buf);
    char *hdr = strndup((const char *)buf + 8, h);
    char *at = strstr(hdr, from);
    ck_assert_msg(at != NULL, "'%s' not in the header", from);
    size_t fl = strlen(from), tl = strlen(to), nh = h - fl + tl;
    *out_len = len - fl + tl;
    uint8_t *out = malloc(*out_len);
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)((uint64_t)nh >> (8 * i));
    size_t pre = (size_t)(at - hdr);
    memcpy(out + 8, hdr, pre);
    memcpy(out + 8 + pre, to, tl);
    memcpy(out + 8 + pre + tl, at + fl, h - pre - fl);
    memcpy(out + 8 + nh, buf + 8 + h, len - 8 - h);
    free(hdr);
    return out;
}

/* ------------------------------------------------------------------ base files */

static uint8_t *base_bytes(enum cxr_nn_arch arch, size_t *len)
{
    struct cxr_nn_model_meta meta;
    cxr_nn_model_meta_defaults(&meta, arch);
    struct cxr_nn_model *m = NULL;
    char err[CXR_ERRLEN] = "", path[4096];
    ck_assert_int_eq(cxr_nn_model_init_width(&meta, 2, 5, &m, err), CXR_OK);
    char *dir = cxr_test_tmpdir();
    snprintf(path, sizeof path, "%s/base.safetensors", dir);
    ck_assert_int_eq(cxr_nn_model_save(m, path, CXR_NN_DTYPE_F32, err), CXR_OK);
    uint8_t *buf = cxr_test_read_file(path, len);
    ck_assert_ptr_nonnull(buf);
    cxr_nn_model_free(m);
    cxr_test_rmtree(dir);
    free(dir);
    return buf;
}

static void expect_refused(const uint8_t *buf, size_t len, enum cxr_status want, const char *needle,
                           const char *what)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = (struct cxr_nn_model *)&err; /* must be reset to NULL */
    enum cxr_status st = cxr_nn_model_load_memory(buf, len, FILE_NAME, &m, err);
    ck_assert_msg(st == want, "%s: status %s, want %s (%s)", what, cxr_status_name(st),
                  cxr_status_name(want), err);
    ck_assert_msg(m == NULL, "%s: *out not NULL on failure", what);
    ck_assert_msg(strstr(err, FILE_NAME) != NULL, "%s: message lacks the file name: %s", what, err);
    ck_assert_msg(strstr(err, needle) != NULL, "%s: message lacks \"%s\": %s", what, needle, err);
}

static struct cxr_nn_model *expect_loads(const uint8_t *buf, size_t len, const char *what)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = NULL;
    enum cxr_status st = cxr_nn_model_load_memory(buf, len, FILE_NAME, &m, err);
    ck_assert_msg(st == CXR_OK && m, "%s: %s (%s)", what, cxr_status_name(st), err);
    return m;
}

/* ------------------------------------------------------------------ tensor faults */

static void raw_begin_gt_end(struct json_object *root)
{
    struct json_object *e, *o;
    json_object_object_get_ex(root, "bn1.bias", &e);
    json_object_object_get_ex(e, "data_offsets", &o);
    int64_t b = json_object_get_int64(json_object_array_get_idx(o, 0));
    json_object_array_put_idx(o, 0, json_object_new_int64(b + 8));
    json_object_array_put_idx(o, 1, json_object_new_int64(b));
}

static void raw_past_end(struct json_object *root)
{
    struct json_object *e, *o;
    json_object_object_get_ex(root, "fc.bias", &e);
    json_object_object_get_ex(e, "data_offsets", &o);
    int64_t b = json_object_get_int64(json_object_array_get_idx(o, 0));
    json_object_array_put_idx(o, 0, json_object_new_int64(b + 4));
    json_object_array_put_idx(o, 1, json_object_new_int64(b + 12));
}

static void raw_overlap(struct json_object *root)
{
    struct json_object *w, *b, *o;
    json_object_object_get_ex(root, "bn1.weight", &w);
    json_object_object_get_ex(root, "bn1.bias", &b);
    json_object_object_get_ex(w, "data_offsets", &o);
    json_object_object_add(b, "data_offsets", json_object_get(o));
}

static void raw_hole(struct json_object *root)
{
    json_object_object_del(root, "layer1.0.conv2.weight");
}

static void raw_not_object(struct json_object *root)
{
    json_object_object_add(root, "conv1.weight", json_object_new_int(5));
}

static void raw_meta_not_object(struct json_object *root)
{
    json_object_object_add(root, "__metadata__", json_object_new_string("x"));
}

static void raw_meta_number(struct json_object *root)
{
    struct json_object *md;
    json_object_object_get_ex(root, "__metadata__", &md);
    json_object_object_add(md, "channels", json_object_new_int(1));
}

struct fault {
    const char *what;
    const char *tensor, *field, *json; /* tf_set */
    raw_fn raw;
    enum cxr_status want;
    const char *needle;
};

static const struct fault faults[] = {
    {"unknown dtype", "conv1.weight", "dtype", "\"F31\"", NULL, CXR_ERR_NN_DTYPE, "\"F31\""},
    {"dtype not a string", "conv1.weight", "dtype", "32", NULL, CXR_ERR_NN_MODEL, "dtype"},
    {"no dtype", "conv1.weight", "dtype", NULL, NULL, CXR_ERR_NN_MODEL, "'conv1.weight'"},
    {"shape not a list", "bn1.weight", "shape", "\"2\"", NULL, CXR_ERR_NN_MODEL, "shape"},
    {"shape negative", "bn1.weight", "shape", "[-2]", NULL, CXR_ERR_NN_MODEL, "shape entry 0"},
    {"shape float", "bn1.weight", "shape", "[2.0]", NULL, CXR_ERR_NN_MODEL, "shape entry 0"},
    {"shape string", "bn1.weight", "shape", "[\"2\"]", NULL, CXR_ERR_NN_MODEL, "shape entry"},
    {"too many dims", "bn1.weight", "shape", "[2,1,1,1,1]", NULL, CXR_ERR_NN_MODEL, "dimensions"},
    {"numel overflow", "bn1.weight", "shape", "[1099511627776,1099511627776,1099511627776]", NULL,
     CXR_ERR_NN_MODEL, "overflow"},
    {"absurd dim", "bn1.weight", "shape", "[9223372036854775807]", NULL, CXR_ERR_NN_MODEL,
     "shape entry"},
    {"offsets one int", "bn1.weight", "data_offsets", "[0]", NULL, CXR_ERR_NN_MODEL,
     "data_offsets"},
    {"offsets three ints", "bn1.weight", "data_offsets", "[0,8,16]", NULL, CXR_ERR_NN_MODEL,
     "data_offsets"},
    {"offsets strings", "bn1.weight", "data_offsets", "[\"0\",\"8\"]", NULL, CXR_ERR_NN_MODEL,
     "data_offsets"},
    {"offsets negative", "bn1.weight", "data_offsets", "[-8,0]", NULL, CXR_ERR_NN_MODEL,
     "data_offsets"},
    {"no offsets", "bn1.weight", "data_offsets", NULL, NULL, CXR_ERR_NN_MODEL, "data_offsets"},
    {"begin > end", NULL, NULL, NULL, raw_begin_gt_end, CXR_ERR_NN_MODEL, "begin > end"},
    {"end past data", NULL, NULL, NULL, raw_past_end, CXR_ERR_NN_MODEL,
     "past the end of the data area"},
    {"overlap", NULL, NULL, NULL, raw_overlap, CXR_ERR_NN_MODEL, "overlap"},
    {"hole", NULL, NULL, NULL, raw_hole, CXR_ERR_NN_MODEL, "hole"},
    {"entry not object", NULL, NULL, NULL, raw_not_object, CXR_ERR_NN_MODEL, "not an object"},
    {"metadata not object", NULL, NULL, NULL, raw_meta_not_object, CXR_ERR_NN_MODEL,
     "__metadata__"},
    {"metadata value number", NULL, NULL, NULL, raw_meta_number, CXR_ERR_NN_MODEL,
     "channels is not a string"},
    {"size != numel*dtype", "conv1.weight", "shape", "[2,1,7,6]", NULL, CXR_ERR_NN_MODEL, "need"},
    {"wrong shape for arch", "layer2.0.conv1.weight", "shape", "[2,4,3,3]", NULL, CXR_ERR_NN_SHAPE,
     "needs [4,2,3,3]"},
    {"fc rows vs conv", "layer4.1.conv2.weight", "shape", "[16,16,9,1]", NULL, CXR_ERR_NN_SHAPE,
     "layer4.1.conv2.weight"},
    {"conv1 not 4-d", "conv1.weight", "shape", "[2,49]", NULL, CXR_ERR_NN_SHAPE, "conv1.weight"},
};

START_TEST(test_tensor_faults)
{
    const struct fault *f = &faults[_i];
    size_t len, blen;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    struct tf t;
    tf_load(&t, base, blen);
    if (f->tensor)
        tf_set(&t, f->tensor, f->field, f->json);
    uint8_t *bad = tf_pack(&t, f->raw, &len);
    expect_refused(bad, len, f->want, f->needle, f->what);
    if (f->tensor && strcmp(f->needle, f->tensor) != 0 && f->want != CXR_ERR_NN_SHAPE)
        expect_refused(bad, len, f->want, f->tensor, f->what); /* names the tensor */
    free(bad);
    tf_free(&t);
    free(base);
}
END_TEST

/* The base file packs back to a loadable file (the editing is sound). */
START_TEST(test_repacked_base_loads)
{
    size_t len, blen;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    struct tf t;
    tf_load(&t, base, blen);
    uint8_t *again = tf_pack(&t, NULL, &len);
    cxr_nn_model_free(expect_loads(again, len, "repacked"));
    free(again);
    tf_free(&t);
    free(base);
}
END_TEST

START_TEST(test_missing_extra_and_dtypes)
{
    size_t len, blen;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    struct tf t;
    uint8_t *bad;

    tf_load(&t, base, blen);
    tf_del(&t, "layer3.1.bn2.running_var");
    bad = tf_pack(&t, NULL, &len);
    expect_refused(bad, len, CXR_ERR_NN_MODEL, "'layer3.1.bn2.running_var' missing", "missing");
    free(bad);
    tf_free(&t);

    tf_load(&t, base, blen);
    float one = 1.0f;
    tf_add(&t, "layer5.0.conv1.weight", "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,0]}",
           &one, 4);
    bad = tf_pack(&t, NULL, &len);
    expect_refused(bad, len, CXR_ERR_NN_MODEL, "'layer5.0.conv1.weight' is not a parameter",
                   "extra");
    free(bad);
    tf_free(&t);

    /* U8 where a float parameter belongs */
    tf_load(&t, base, blen);
    struct tent *e = tf_get(&t, "fc.bias");
    tf_set(&t, "fc.bias", "dtype", "\"U8\"");
    e->len = 2;
    bad = tf_pack(&t, NULL, &len);
    expect_refused(bad, len, CXR_ERR_NN_DTYPE, "'fc.bias': dtype U8", "U8 param");
    free(bad);
    tf_free(&t);

    /* num_batches_tracked as F32 */
    tf_load(&t, base, blen);
    e = tf_get(&t, "bn1.num_batches_tracked");
    tf_set(&t, "bn1.num_batches_tracked", "dtype", "\"F32\"");
    e->len = 4;
    bad = tf_pack(&t, NULL, &len);
    expect_refused(bad, len, CXR_ERR_NN_DTYPE, "bn1.num_batches_tracked", "F32 count");
    free(bad);
    tf_free(&t);

    /* a resnet34 file missing its last block cannot be told apart: arch
     * metadata says resnet34, the tensors say otherwise */
    tf_load(&t, base, blen);
    tf_meta(&t, "arch", "resnet34");
    bad = tf_pack(&t, NULL, &len);
    expect_refused(bad, len, CXR_ERR_NN_MODEL, "resnet18's", "arch mismatch");
    free(bad);
    tf_free(&t);

    /* no arch and an unknown block layout */
    tf_load(&t, base, blen);
    tf_meta(&t, "arch", NULL);
    const char *parts[] = {"conv1.weight",     "bn1.weight",      "bn1.bias",
                           "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
                           "conv2.weight",     "bn2.weight",      "bn2.bias",
                           "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked"};
    char name[64];
    for (size_t k = 0; k < 6; k++) {
        snprintf(name, sizeof name, "layer4.1.%s", parts[6 + k]);
        tf_del(&t, name);
        snprintf(name, sizeof name, "layer4.1.%s", parts[k]);
        tf_del(&t, name);
    }
    bad = tf_pack(&t, NULL, &len);
    expect_refused(bad, len, CXR_ERR_NN_MODEL, "2-2-2-1 basic", "unknown layout");
    free(bad);
    tf_free(&t);
    free(base);
}
END_TEST

/* Variants a PyTorch writer may produce: F64/F16/BF16 parameters, no
 * num_batches_tracked or a [1]-shaped one, no metadata at all. */
START_TEST(test_accepted_variants)
{
    size_t len, blen;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    struct cxr_nn_model *ref = expect_loads(base, blen, "base");
    const struct cxr_nn_tensor *c1 = cxr_nn_model_tensor_find(ref, "conv1.weight");
    const float *w = c1->data;
    size_t n = (size_t)cxr_nn_tensor_numel(c1);
    static const char *const dts[] = {"F64", "F16", "BF16"};
    for (int d = 0; d < 3; d++) {
        struct tf t;
        tf_load(&t, base, blen);
        struct tent *e = tf_get(&t, "conv1.weight");
        free(e->data);
        e->len = n * (d == 0 ? 8 : 2);
        e->data = malloc(e->len);
        for (size_t i = 0; i < n; i++) {
            if (d == 0) {
                double v = w[i];
                memcpy(e->data + 8 * i, &v, 8);
            } else {
                /* truncation is enough here: the load must widen these bits exactly */
                uint32_t u;
                memcpy(&u, &w[i], 4);
                uint16_t h;
                if (d == 2) {
                    h = (uint16_t)(u >> 16);
                } else {
                    float a = fabsf(w[i]);
                    int ex;
                    double m = frexp(a, &ex); /* a = m 2^ex, m in [0.5,1) */
                    ck_assert(a == 0 || (ex - 1 >= -14 && ex - 1 <= 15));
                    h = a == 0 ? 0
                               : (uint16_t)(((ex - 1 + 15) << 10) |
                                            ((int)((m * 2 - 1) * 1024) & 1023));
                    if (w[i] < 0)
                        h |= 0x8000;
                }
                memcpy(e->data + 2 * i, &h, 2);
            }
        }
        char desc[40];
        snprintf(desc, sizeof desc, "\"%s\"", dts[d]);
        tf_set(&t, "conv1.weight", "dtype", desc);
        uint8_t *f = tf_pack(&t, NULL, &len);
        struct cxr_nn_model *m = expect_loads(f, len, dts[d]);
        const struct cxr_nn_tensor *got = cxr_nn_model_tensor_find(m, "conv1.weight");
        ck_assert_int_eq(got->dtype, CXR_NN_DTYPE_F32);
        const float *g = got->data;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            if (d == 0) {
                ck_assert(g[i] == w[i]);
                continue;
            }
            memcpy(&h, e->data + 2 * i, 2);
            double want;
            if (d == 2) {
                uint32_t u = (uint32_t)h << 16;
                float v;
                memcpy(&v, &u, 4);
                want = v;
            } else {
                int ex = (h >> 10) & 31;
                want = h & 0x7fff ? ldexp(1024 + (h & 1023), ex - 25) : 0.0;
                if (h & 0x8000)
                    want = -want;
            }
            ck_assert_msg(g[i] == (float)want, "%s[%zu]: %g vs %g", dts[d], i, (double)g[i], want);
            ck_assert(fabsf(g[i] - w[i]) <= fabsf(w[i]) * (d == 2 ? 0x1p-7f : 0x1p-10f));
        }
        cxr_nn_model_free(m);
        free(f);
        tf_free(&t);
    }

    /* no num_batches_tracked anywhere; another with shape [1] */
    struct tf t;
    tf_load(&t, base, blen);
    for (size_t i = 0; i < t.n;)
        if (strstr(t.e[i].name, "num_batches_tracked"))
            tf_del(&t, t.e[i].name);
        else
            i++;
    uint8_t *f = tf_pack(&t, NULL, &len);
    struct cxr_nn_model *m = expect_loads(f, len, "no counts");
    ck_assert_uint_eq(cxr_nn_model_tensor_count(m), cxr_nn_model_tensor_count(ref));
    ck_assert_int_eq(*(int64_t *)cxr_nn_model_tensor_find(m, "bn1.num_batches_tracked")->data, 0);
    cxr_nn_model_free(m);
    free(f);
    tf_free(&t);

    tf_load(&t, base, blen);
    tf_set(&t, "bn1.num_batches_tracked", "shape", "[1]");
    f = tf_pack(&t, NULL, &len);
    cxr_nn_model_free(expect_loads(f, len, "count [1]"));
    free(f);
    tf_free(&t);

    /* no metadata: defaults, arch from the names */
    tf_load(&t, base, blen);
    json_object_put(t.meta);
    t.meta = NULL;
    f = tf_pack(&t, NULL, &len);
    m = expect_loads(f, len, "no metadata");
    ck_assert_int_eq(cxr_nn_model_meta(m)->arch, CXR_NN_ARCH_RESNET18);
    ck_assert_int_eq(cxr_nn_model_meta(m)->input_width, 224);
    cxr_nn_model_free(m);
    free(f);
    tf_free(&t);
    cxr_nn_model_free(ref);
    free(base);
}
END_TEST

/* Without "arch" the architecture comes from the tensor names. */
START_TEST(test_arch_inferred)
{
    static const enum cxr_nn_arch archs[] = {CXR_NN_ARCH_RESNET34, CXR_NN_ARCH_RESNET50};
    for (int a = 0; a < 2; a++) {
        size_t len, blen;
        uint8_t *base = base_bytes(archs[a], &blen);
        struct tf t;
        tf_load(&t, base, blen);
        tf_meta(&t, "arch", NULL);
        uint8_t *f = tf_pack(&t, NULL, &len);
        struct cxr_nn_model *m = expect_loads(f, len, "no arch");
        ck_assert_int_eq(cxr_nn_model_meta(m)->arch, archs[a]);
        cxr_nn_model_free(m);
        free(f);
        tf_free(&t);
        free(base);
    }
}
END_TEST

/* ------------------------------------------------------------------ metadata faults */

static const struct {
    const char *key, *value;
    enum cxr_status want;
    const char *needle;
} bad_meta[] = {
    {"operating_threshold", "1.5", CXR_ERR_NN_MODEL, "operating_threshold"},
    {"operating_threshold", "abc", CXR_ERR_NN_MODEL, "operating_threshold"},
    {"operating_threshold", "nan", CXR_ERR_NN_MODEL, "operating_threshold"},
    {"urgent_threshold", "-0.1", CXR_ERR_NN_MODEL, "urgent_threshold"},
    {"input_size", "0,224", CXR_ERR_NN_MODEL, "input_size"},
    {"input_size", "5000,224", CXR_ERR_NN_MODEL, "input_size"},
    {"input_size", "224x224", CXR_ERR_NN_MODEL, "input_size"},
    {"input_size", "", CXR_ERR_NN_MODEL, "input_size"},
    {"input_size", "224,-5", CXR_ERR_NN_MODEL, "input_size"},
    {"channels", "2", CXR_ERR_NN_MODEL, "channels"},
    {"channels", "3", CXR_ERR_NN_MODEL, "conv1.weight takes 1"},
    {"class_names", "A,B,C", CXR_ERR_NN_MODEL, "3 names but fc.weight has 2"},
    {"class_names", "A,,B", CXR_ERR_NN_MODEL, "class_names"},
    {"class_names", "[\"A\"]", CXR_ERR_NN_MODEL, "1 names"},
    {"class_names", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,B", CXR_ERR_NN_MODEL, "class_names"},
    {"mean", "0.5,0.5", CXR_ERR_NN_MODEL, "mean"},
    {"mean", "x", CXR_ERR_NN_MODEL, "mean"},
    {"std", "0", CXR_ERR_NN_MODEL, "std"},
    {"std", "-1", CXR_ERR_NN_MODEL, "std"},
    {"arch", "resnet101", CXR_ERR_UNSUPPORTED, "resnet101"},
    {"positive_class", "7", CXR_ERR_NN_MODEL, "positive_class"},
    {"positive_class", "FOO", CXR_ERR_NN_MODEL, "positive_class"},
    {"resize_mode", "crop", CXR_ERR_NN_MODEL, "resize_mode"},
    {"contrast", "sharpen", CXR_ERR_NN_MODEL, "contrast"},
    {"metrics", "{bad", CXR_ERR_NN_MODEL, "metrics"},
    {"metrics", "{\"a\":1} trailing", CXR_ERR_NN_MODEL, "metrics"},
    {"age_min_years", "200", CXR_ERR_NN_MODEL, "age_min_years"},
    {"age_max_years", "-1", CXR_ERR_NN_MODEL, "age_max_years"},
    {"preprocessing_version", "0", CXR_ERR_NN_MODEL, "preprocessing_version"},
    {"name", "0123456789012345678901234567890123456789012345678901234567890123456789",
     CXR_ERR_NN_MODEL, "name"},
    {"format", "cxr-triage-model/2", CXR_ERR_UNSUPPORTED, "cxr-triage-model/2"},
    {"training_images", "[1,2]", CXR_ERR_NN_MODEL, "training_images"},
    /* "AAAA" is 3 bytes, not 8-byte words */
    {"training_images",
     "{\"hash\":\"sha256-64\",\"images\":1,\"sample_bits\":0,\"digests\":\"AAAA\"}",
     CXR_ERR_NN_MODEL, "8-byte words"},
    /* 2, then 1: not ascending */
    {"training_images",
     "{\"hash\":\"sha256-64\",\"images\":2,\"sample_bits\":0,\"digests\":\"AAAAAAAAAAIAAAAAAAAAAQ==\"}",
     CXR_ERR_NN_MODEL, "not ascending"},
    /* 2^63 is outside a 1-in-2 sample */
    {"training_images",
     "{\"hash\":\"sha256-64\",\"images\":9,\"sample_bits\":1,\"digests\":\"gAAAAAAAAAA=\"}",
     CXR_ERR_NN_MODEL, "outside the sample"},
    {"training_images", "{\"hash\":\"sha256-64\",\"images\":0,\"sample_bits\":0,\"digests\":\"\"}",
     CXR_ERR_NN_MODEL, "images >= 1"},
};

START_TEST(test_metadata_faults)
{
    size_t len, blen;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    struct tf t;
    tf_load(&t, base, blen);
    tf_meta(&t, bad_meta[_i].key, bad_meta[_i].value);
    uint8_t *bad = tf_pack(&t, NULL, &len);
    char what[160];
    snprintf(what, sizeof what, "%s=\"%s\"", bad_meta[_i].key, bad_meta[_i].value);
    expect_refused(bad, len, bad_meta[_i].want, bad_meta[_i].needle, what);
    free(bad);
    tf_free(&t);
    free(base);
}
END_TEST

START_TEST(test_metadata_variants)
{
    size_t len, blen;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    struct tf t;
    tf_load(&t, base, blen);
    tf_meta(&t, "age_min_years", "50");
    tf_meta(&t, "age_max_years", "20");
    uint8_t *f = tf_pack(&t, NULL, &len);
    expect_refused(f, len, CXR_ERR_NN_MODEL, "age_min_years 50 > age_max_years 20", "age order");
    free(f);
    tf_free(&t);

    tf_load(&t, base, blen);
    tf_meta(&t, "class_names", "[\"healthy\",\"pneumonia\"]");
    tf_meta(&t, "positive_class", "pneumonia");
    tf_meta(&t, "input_size", "256");
    tf_meta(&t, "some_future_key", "ignored");
    tf_meta(&t, "training_images", "{\"hash\":\"blake3-64\",\"images\":3}"); /* not ours */
    tf_meta(&t, "format", "pt");
    f = tf_pack(&t, NULL, &len);
    struct cxr_nn_model *m = expect_loads(f, len, "variants");
    const struct cxr_nn_model_meta *mt = cxr_nn_model_meta(m);
    ck_assert_str_eq(mt->class_names[0], "healthy");
    ck_assert_int_eq(mt->positive_class, 1);
    ck_assert_int_eq(mt->input_height, 256);
    ck_assert_int_eq(mt->input_width, 256);
    ck_assert_int_eq(mt->training_image_count, 0);
    cxr_nn_model_free(m);
    free(f);
    tf_free(&t);
    free(base);
}
END_TEST

/* ------------------------------------------------------------------ byte-level faults */

START_TEST(test_header_faults)
{
    size_t blen, len;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    uint8_t *b = malloc(blen + 1);

    memcpy(b, base, blen);
    b[5] = 1; /* header length ~2^40 */
    expect_refused(b, blen, CXR_ERR_NN_MODEL, "absurd", "absurd header length");
    memcpy(b, base, blen);
    uint64_t h = blen - 7;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(h >> (8 * i));
    expect_refused(b, blen, CXR_ERR_NN_MODEL, "past the end of the file", "header past EOF");

    memcpy(b, base, blen);
    b[8] = '[';
    expect_refused(b, blen, CXR_ERR_NN_MODEL, "JSON object", "not an object");
    memcpy(b, base, blen);
    b[20] = '\0';
    expect_refused(b, blen, CXR_ERR_NN_MODEL, "NUL", "NUL in header");

    memcpy(b, base, blen);
    b[blen] = 0;
    expect_refused(b, blen + 1, CXR_ERR_NN_MODEL, "after the last tensor", "trailing byte");

    uint8_t *e = text_edit(base, blen, "\"dtype\":\"F32\"", "\"dtype\";\"F32\"", &len);
    expect_refused(e, len, CXR_ERR_NN_MODEL, "not valid JSON", "syntax error");
    free(e);
    e = text_edit(base, blen, "{", "{\"x\":1}, {", &len);
    expect_refused(e, len, CXR_ERR_NN_MODEL, "JSON", "two objects");
    free(e);
    e = text_edit(base, blen, "{", "{'a':1,", &len);
    expect_refused(e, len, CXR_ERR_NN_MODEL, "not valid JSON", "single quotes");
    free(e);
    /* the same key twice: json-c would silently keep one */
    e = text_edit(base, blen, "\"bn1.bias\":", "\"bn1.weight\":", &len);
    expect_refused(e, len, CXR_ERR_NN_MODEL, "'bn1.weight' appears more than once", "duplicate");
    free(e);
    e = text_edit(base, blen, "\"arch\":", "\"format\":", &len);
    expect_refused(e, len, CXR_ERR_NN_MODEL, "more than once", "duplicate in metadata");
    free(e);
    /* an 8-byte file, an empty header */
    memset(b, 0, 8);
    expect_refused(b, 8, CXR_ERR_NN_MODEL, "JSON object", "empty header");
    expect_refused(b, 3, CXR_ERR_NN_MODEL, "too short", "3 bytes");
    free(b);
    free(base);
}
END_TEST

/* Every prefix of a valid file is refused cleanly (ASan watches the reads:
 * each prefix is copied into a buffer of exactly its size). */
START_TEST(test_truncation_everywhere)
{
    size_t blen;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    uint64_t h = hlen_of(base);
    size_t tried = 0;
    for (size_t cut = 0; cut < blen; cut += cut < 8 + h + 64 ? 3 : 97) {
        uint8_t *p = malloc(cut ? cut : 1);
        memcpy(p, base, cut);
        char err[CXR_ERRLEN] = "";
        struct cxr_nn_model *m = (struct cxr_nn_model *)&err;
        enum cxr_status st = cxr_nn_model_load_memory(p, cut, FILE_NAME, &m, err);
        ck_assert_msg(st == CXR_ERR_NN_MODEL, "cut at %zu of %zu: %s (%s)", cut, blen,
                      cxr_status_name(st), err);
        ck_assert_ptr_null(m);
        ck_assert(err[0] != '\0');
        free(p);
        tried++;
    }
    ck_assert_uint_gt(tried, 1000);
    /* and from a file on disk: the error names the path */
    char *dir = cxr_test_tmpdir(), path[4096], err[CXR_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/cut.safetensors", dir);
    ck_assert(cxr_test_write_file(path, base, blen - 1));
    struct cxr_nn_model *m = NULL;
    ck_assert_int_eq(cxr_nn_model_load(path, &m, err), CXR_ERR_NN_MODEL);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "fc.bias"));
    cxr_test_rmtree(dir);
    free(dir);
    free(base);
}
END_TEST

/* Single-byte corruption anywhere in the header never crashes; the result
 * is either a refusal with a message or (for a change inside a string that
 * stays meaningful) a model. */
START_TEST(test_header_byte_flips)
{
    size_t blen;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    uint64_t h = hlen_of(base);
    uint8_t *b = malloc(blen);
    for (size_t i = 0; i < 8 + h; i += 5) {
        memcpy(b, base, blen);
        b[i] ^= (uint8_t)(0x5a + i);
        char err[CXR_ERRLEN] = "";
        struct cxr_nn_model *m = NULL;
        enum cxr_status st = cxr_nn_model_load_memory(b, blen, FILE_NAME, &m, err);
        if (st == CXR_OK)
            ck_assert_ptr_nonnull(m);
        else
            ck_assert(m == NULL && err[0]);
        cxr_nn_model_free(m);
    }
    free(b);
    free(base);
}
END_TEST

/* Weights that load (the file is well formed) but hold a NaN or an infinity
 * are named by cxr_nn_model_check_finite, which the engine runs; finite
 * weights pass. */
START_TEST(test_nonfinite_weights_named)
{
    size_t blen;
    uint8_t *base = base_bytes(CXR_NN_ARCH_RESNET18, &blen);
    char err[CXR_ERRLEN] = "";
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const char *names[] = {"layer2.0.conv1.weight", "fc.bias", "bn1.running_var"};
    for (int i = 0; i < 3; i++) {
        struct cxr_nn_model *m = expect_loads(base, blen, "base");
        ck_assert_int_eq(cxr_nn_model_check_finite(m, err), CXR_OK);
        struct cxr_nn_tensor *t = cxr_nn_model_tensor_find(m, names[i]);
        ck_assert_ptr_nonnull(t);
        ((float *)t->data)[1] = bad[i];
        ck_assert_int_eq(cxr_nn_model_check_finite(m, err), CXR_ERR_NN_MODEL);
        ck_assert_msg(strstr(err, names[i]) && strstr(err, "element 1") &&
                          strstr(err, i ? "infinity" : "NaN"),
                      "%s", err);
        cxr_nn_model_free(m);
    }
    free(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("nn_modelfile");
    TCase *tc = tcase_create("tensors");
    tcase_add_test(tc, test_repacked_base_loads);
    tcase_add_loop_test(tc, test_tensor_faults, 0, (int)(sizeof faults / sizeof faults[0]));
    tcase_add_test(tc, test_missing_extra_and_dtypes);
    tcase_add_test(tc, test_accepted_variants);
    tcase_add_test(tc, test_arch_inferred);
    tcase_add_test(tc, test_nonfinite_weights_named);
    suite_add_tcase(s, tc);
    tc = tcase_create("metadata");
    tcase_add_loop_test(tc, test_metadata_faults, 0, (int)(sizeof bad_meta / sizeof bad_meta[0]));
    tcase_add_test(tc, test_metadata_variants);
    suite_add_tcase(s, tc);
    tc = tcase_create("bytes");
    tcase_add_test(tc, test_header_faults);
    tcase_add_test(tc, test_truncation_everywhere);
    tcase_add_test(tc, test_header_byte_flips);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
