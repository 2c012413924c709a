/* train_checkpoint.c — a trainer's checkpoint as ONE safetensors file:
 * every parameter and running statistic under its torchvision name (F32),
 * the optimizer state as "optimizer.<param>.<slot>" (exp_avg, exp_avg_sq or
 * momentum_buffer), and "__metadata__" strings: format
 * "cxr-triage-checkpoint/1", the structure that must match on resume (arch,
 * base width, channels, classes, input size, optimizer, frozen backbone),
 * the counters (step, bn_steps, nbt_base) and the caller's JSON ("extra").
 * Written to a temporary file in the same folder, fsync'd, renamed over the
 * target and the folder fsync'd: a crash leaves the old or the new file,
 * never a mix. Read through mmap with every offset and size checked. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/file.h"
#include "train_priv.h"

#define CKPT_FORMAT     "cxr-triage-checkpoint/1"
#define CKPT_MAX_HEADER (64u << 20)

/* The tensors of a checkpoint, in file order: graph parameters, then the
 * optimizer state of each trainable one. */
struct ck_item {
    struct cxr_nn_tensor *t;
    char name[CXR_NN_NAME_LEN + 16];
};

static int32_t ck_items(struct cxr_nn_trainer *tr, struct ck_item **out)
{
    int32_t n = tr->g->n_params + 2 * tr->n_tp, k = 0;
    struct ck_item *it = calloc((size_t)n, sizeof *it);
    if (!it)
        return -1;
    for (int32_t i = 0; i < tr->g->n_params; i++) {
        it[k].t = &tr->g->params[i].t;
        snprintf(it[k].name, sizeof it[k].name, "%s", it[k].t->name);
        k++;
    }
    for (int32_t i = 0; i < tr->n_tp; i++) {
        struct cxr_nn_tensor *s[2] = {&tr->tp[i].s0, &tr->tp[i].s1};
        for (int j = 0; j < 2; j++) {
            if (!s[j]->extra)
                continue;
            it[k].t = s[j];
            snprintf(it[k].name, sizeof it[k].name, "optimizer.%s", s[j]->name);
            k++;
        }
    }
    *out = it;
    return k;
}

static bool add_str(struct json_object *o, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool add_str(struct json_object *o, const char *key, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    struct json_object *v = json_object_new_string(buf);
    if (!v || json_object_object_add(o, key, v) != 0) {
        json_object_put(v);
        return false;
    }
    return true;
}

static struct json_object *ck_header(struct cxr_nn_trainer *tr, const struct ck_item *it, int32_t n,
                                     const char *extra)
{
    struct json_object *root = json_object_new_object(), *md = json_object_new_object();
    bool ok = root && md && json_object_object_add(root, "__metadata__", md) == 0;
    if (!ok) {
        json_object_put(md);
        json_object_put(root);
        return NULL;
    }
    ok = add_str(md, "format", "%s", CKPT_FORMAT) &&
         add_str(md, "arch", "%s", cxr_nn_arch_name(tr->spec.arch)) &&
         add_str(md, "base_width", "%d", (int)tr->spec.base_width) &&
         add_str(md, "channels", "%d", (int)tr->c) && add_str(md, "classes", "%d", (int)tr->k) &&
         add_str(md, "input_size", "%d,%d", (int)tr->h, (int)tr->w) &&
         add_str(md, "optimizer", "%s", cxr_nn_optimizer_name(tr->o.optimizer)) &&
         add_str(md, "freeze_backbone", "%d", tr->o.freeze_backbone ? 1 : 0) &&
         add_str(md, "step", "%" PRId64, tr->step) &&
         add_str(md, "bn_steps", "%" PRId64, tr->bn_steps) &&
         add_str(md, "nbt_base", "%" PRId64, tr->nbt_base);
    if (ok && extra) {
        struct json_object *v = json_object_new_string(extra);
        ok = v && json_object_object_add(md, "extra", v) == 0;
        if (!ok)
            json_object_put(v);
    }
    uint64_t off = 0;
    for (int32_t i = 0; ok && i < n; i++) {
        const struct cxr_nn_tensor *t = it[i].t;
        struct json_object *e = json_object_new_object(), *shape = json_object_new_array(),
                           *offs = json_object_new_array();
        ok = e && shape && offs &&
             json_object_object_add(e, "dtype", json_object_new_string("F32")) == 0;
        for (int32_t d = 0; ok && d < t->ndim; d++)
            ok = json_object_array_add(shape, json_object_new_int64(t->shape[d])) == 0;
        ok = ok && json_object_array_add(offs, json_object_new_int64((int64_t)off)) == 0 &&
             json_object_array_add(offs, json_object_new_int64((int64_t)(off + t->nbytes))) == 0;
        if (ok && json_object_object_add(e, "shape", shape) == 0)
            shape = NULL;
        else
            ok = false;
        if (ok && json_object_object_add(e, "data_offsets", offs) == 0)
            offs = NULL;
        else
            ok = false;
        if (ok && json_object_object_add(root, it[i].name, e) == 0)
            e = NULL;
        else
            ok = false;
        json_object_put(shape);
        json_object_put(offs);
        json_object_put(e);
        off += t->nbytes;
    }
    if (!ok) {
        json_object_put(root);
        return NULL;
    }
    return root;
}

static enum cxr_status io_err(char *err, const char *path, const char *what, int e)
{
    return cxr_seterr(err, e == ENOSPC || e == EDQUOT ? CXR_ERR_NO_SPACE : CXR_ERR_IO,
                      "checkpoint %s: %s: %s", path, what, strerror(e));
}

enum cxr_status cxr_nn_trainer_checkpoint_save(struct cxr_nn_trainer *tr, const char *path,
                                               const char *extra_json, char *err)
{
    if (!tr || !path)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "checkpoint: trainer or path missing");
    if (extra_json && !extra_json[0])
        extra_json = NULL;
    struct ck_item *it = NULL;
    int32_t n = ck_items(tr, &it);
    if (n < 0)
        return cxr_seterr(err, CXR_ERR_NOMEM, "checkpoint: out of memory");
    enum cxr_status st = CXR_OK;
    struct json_object *hdr = ck_header(tr, it, n, extra_json);
    struct cxr_file_atomic f = {.fd = -1};
    void *buf = NULL;
    size_t cap = 0;
    if (!hdr) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "checkpoint: out of memory");
        goto done;
    }
    size_t hl = 0;
    const char *h = json_object_to_json_string_length(hdr, JSON_C_TO_STRING_PLAIN, &hl);
    size_t padded = (hl + 7) & ~(size_t)7;
    char why[CXR_ERRLEN];
    if ((st = cxr_file_atomic_open(&f, path, 0644, why)) != CXR_OK) {
        cxr_seterr(err, st, "checkpoint: %s", why);
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    char spaces[8] = "       ";
    if (!cxr_file_atomic_write(&f, len8, 8) || !cxr_file_atomic_write(&f, h, hl) ||
        !cxr_file_atomic_write(&f, spaces, padded - hl)) {
        st = io_err(err, path, "write", errno);
        goto done;
    }
    const struct cxr_nn_backend_i *bi = tr->b->iface;
    for (int32_t i = 0; i < n; i++) {
        const struct cxr_nn_tensor *t = it[i].t;
        if (t->nbytes > cap) {
            void *nb = realloc(buf, t->nbytes);
            if (!nb) {
                st = cxr_seterr(err, CXR_ERR_NOMEM, "checkpoint: out of memory");
                goto done;
            }
            buf = nb;
            cap = t->nbytes;
        }
        if ((st = bi->tensor_get(tr->b, t, buf, 0, t->nbytes, err)) != CXR_OK)
            goto done;
        if (!cxr_file_atomic_write(&f, buf, t->nbytes)) {
            st = io_err(err, path, "write", errno);
            goto done;
        }
    }
    if ((st = cxr_file_atomic_commit(&f, why)) != CXR_OK)
        cxr_seterr(err, st, "checkpoint: %s", why);
done:
    cxr_file_atomic_abort(&f); /* no-op once committed */
    free(buf);
    json_object_put(hdr);
    free(it);
    return st;
}

/* ------------------------------------------------------------ load */

static const char *md_get(struct json_object *md, const char *key)
{
    struct json_object *v;
    if (!md || !json_object_object_get_ex(md, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Checks that the metadata's structure equals the trainer's. */
static enum cxr_status ck_match(struct cxr_nn_trainer *tr, struct json_object *md, const char *path,
                                char *err)
{
    char want[64];
    const char *f = md_get(md, "format");
    if (!f || strcmp(f, CKPT_FORMAT) != 0)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "checkpoint %s: not a cxr-triage checkpoint "
                          "(format \"%s\")",
                          path, f ? f : "");
    struct {
        const char *key;
        char val[64];
    } need[] = {{"arch", ""},       {"base_width", ""}, {"channels", ""},       {"classes", ""},
                {"input_size", ""}, {"optimizer", ""},  {"freeze_backbone", ""}};
    snprintf(need[0].val, sizeof need[0].val, "%s", cxr_nn_arch_name(tr->spec.arch));
    snprintf(need[1].val, sizeof need[1].val, "%d", (int)tr->spec.base_width);
    snprintf(need[2].val, sizeof need[2].val, "%d", (int)tr->c);
    snprintf(need[3].val, sizeof need[3].val, "%d", (int)tr->k);
    snprintf(need[4].val, sizeof need[4].val, "%d,%d", (int)tr->h, (int)tr->w);
    snprintf(need[5].val, sizeof need[5].val, "%s", cxr_nn_optimizer_name(tr->o.optimizer));
    snprintf(need[6].val, sizeof need[6].val, "%d", tr->o.freeze_backbone ? 1 : 0);
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        const char *v = md_get(md, need[i].key);
        snprintf(want, sizeof want, "%s", need[i].val);
        if (!v || strcmp(v, want) != 0)
            return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                              "checkpoint %s: %s is \"%s\" there but \"%s\" "
                              "here: resume with the options the run started with",
                              path, need[i].key, v ? v : "(missing)", want);
    }
    return CXR_OK;
}

static bool parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 0)
        return false;
    *out = v;
    return true;
}

enum cxr_status cxr_nn_trainer_checkpoint_load(struct cxr_nn_trainer *tr, const char *path,
                                               char **extra_json, char *err)
{
    if (extra_json)
        *extra_json = NULL;
    if (!tr || !path)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "checkpoint: trainer or path missing");
    enum cxr_status st = CXR_OK;
    struct ck_item *it = NULL;
    struct json_object *root = NULL;
    void *map = MAP_FAILED;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cxr_seterr(err, errno == ENOENT ? CXR_ERR_NOT_FOUND : CXR_ERR_IO,
                          "checkpoint %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < 8) {
        st = cxr_seterr(err, CXR_ERR_INVALID_ARG, "checkpoint %s: not a checkpoint (too short)",
                        path);
        goto done;
    }
    len = (size_t)sb.st_size;
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = cxr_seterr(err, CXR_ERR_IO, "checkpoint %s: mmap: %s", path, strerror(errno));
        goto done;
    }
    const uint8_t *b = map;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | b[i];
    if (hl > CKPT_MAX_HEADER || hl > len - 8) {
        st = cxr_seterr(err, CXR_ERR_INVALID_ARG,
                        "checkpoint %s: header length %" PRIu64 " is not "
                        "inside the file",
                        path, hl);
        goto done;
    }
    struct json_tokener *tok = json_tokener_new();
    if (!tok) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "checkpoint: out of memory");
        goto done;
    }
    root = json_tokener_parse_ex(tok, (const char *)b + 8, (int)hl);
    json_tokener_free(tok);
    struct json_object *md = NULL;
    if (!root || !json_object_is_type(root, json_type_object) ||
        !json_object_object_get_ex(root, "__metadata__", &md)) {
        st = cxr_seterr(err, CXR_ERR_INVALID_ARG,
                        "checkpoint %s: header is not a safetensors JSON "
                        "object with metadata",
                        path);
        goto done;
    }
    if ((st = ck_match(tr, md, path, err)) != CXR_OK)
        goto done;
    int64_t step, bn_steps, nbt_base;
    if (!parse_i64(md_get(md, "step"), &step) || !parse_i64(md_get(md, "bn_steps"), &bn_steps) ||
        !parse_i64(md_get(md, "nbt_base"), &nbt_base)) {
        st = cxr_seterr(err, CXR_ERR_INVALID_ARG, "checkpoint %s: step counters missing", path);
        goto done;
    }
    int32_t n = ck_items(tr, &it);
    if (n < 0) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "checkpoint: out of memory");
        goto done;
    }
    const uint8_t *data = b + 8 + hl;
    size_t data_len = len - 8 - (size_t)hl;
    const struct cxr_nn_backend_i *bi = tr->b->iface;
    for (int32_t i = 0; i < n; i++) {
        struct json_object *e, *v;
        const struct cxr_nn_tensor *t = it[i].t;
        if (!json_object_object_get_ex(root, it[i].name, &e)) {
            st = cxr_seterr(err, CXR_ERR_INVALID_ARG, "checkpoint %s: tensor '%s' missing", path,
                            it[i].name);
            goto done;
        }
        int64_t a = -1, z = -1;
        if (json_object_object_get_ex(e, "data_offsets", &v) &&
            json_object_is_type(v, json_type_array) && json_object_array_length(v) == 2) {
            a = json_object_get_int64(json_object_array_get_idx(v, 0));
            z = json_object_get_int64(json_object_array_get_idx(v, 1));
        }
        const char *dt = json_object_object_get_ex(e, "dtype", &v) ? json_object_get_string(v) : "";
        if (strcmp(dt ? dt : "", "F32") != 0 || a < 0 || z < a || (uint64_t)z > data_len ||
            (size_t)(z - a) != t->nbytes) {
            st = cxr_seterr(err, CXR_ERR_INVALID_ARG,
                            "checkpoint %s: tensor '%s': not F32 of %zu "
                            "bytes inside the file",
                            path, it[i].name, t->nbytes);
            goto done;
        }
        /* the backend copies from the map (tensor_set of a const view) */
        if ((st = bi->tensor_set(tr->b, (struct cxr_nn_tensor *)t, data + a, 0, t->nbytes, err)) !=
            CXR_OK)
            goto done;
    }
    tr->step = step;
    tr->bn_steps = bn_steps;
    tr->nbt_base = nbt_base;
    tr->have_grads = false;
    if (extra_json) {
        const char *x = md_get(md, "extra");
        *extra_json = strdup(x ? x : "");
        if (!*extra_json)
            st = cxr_seterr(err, CXR_ERR_NOMEM, "checkpoint: out of memory");
    }
done:
    if (map != MAP_FAILED)
        munmap(map, len);
    close(fd);
    json_object_put(root);
    free(it);
    return st;
}
