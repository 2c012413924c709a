/* safetensors_write.c — writing model files (layout in safetensors.c and
 * docs/model-format.md): metadata first, tensors in torchvision state_dict
 * order, contiguous, header padded with spaces to 8-byte alignment; float
 * parameters in F32/F16/BF16, BN running statistics F32, counts I64. */
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

static enum cxr_nn_dtype stored_dtype(enum cxr_nn_param_kind k, enum cxr_nn_dtype storage)
{
    if (k == CXR_NN_PARAM_BN_MEAN || k == CXR_NN_PARAM_BN_VAR)
        return CXR_NN_DTYPE_F32;
    if (k == CXR_NN_PARAM_BN_COUNT)
        return CXR_NN_DTYPE_I64;
    return storage;
}

static bool write_all(struct cxr_file_atomic *f, const void *p, size_t n, EVP_MD_CTX *md)
{
    if (EVP_DigestUpdate(md, p, n) != 1) {
        errno = ENOMEM;
        return false;
    }
    return cxr_file_atomic_write(f, p, n);
}

/* Writes one tensor in dtype `dt`, converting from F32 in chunks. */
static bool write_tensor(struct cxr_file_atomic *f, const struct cxr_nn_tensor *t,
                         enum cxr_nn_dtype dt, EVP_MD_CTX *md)
{
    if (dt == t->dtype)
        return write_all(f, t->data, t->nbytes, md);
    uint16_t chunk[8192];
    const float *src = t->data;
    size_t n = t->nbytes / 4;
    for (size_t i = 0; i < n; i += 8192) {
        size_t k = n - i < 8192 ? n - i : 8192;
        for (size_t j = 0; j < k; j++)
            chunk[j] = dt == CXR_NN_DTYPE_F16 ? cxr_nn_f32_to_f16(src[i + j])
                                              : cxr_nn_f32_to_bf16(src[i + j]);
        if (!write_all(f, chunk, k * 2, md))
            return false;
    }
    return true;
}

/* The header JSON: "__metadata__" then the tensors in state_dict order with
 * contiguous data offsets. Caller frees with json_object_put. */
static struct json_object *build_header(const struct cxr_nn_model *m, enum cxr_nn_dtype storage)
{
    struct json_object *root = json_object_new_object();
    struct json_object *meta = cxr_nn_meta_to_json(&m->meta);
    if (!root || !meta || json_object_object_add(root, "__metadata__", meta) != 0) {
        json_object_put(meta);
        json_object_put(root);
        return NULL;
    }
    uint64_t off = 0;
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const struct cxr_nn_tensor *t = &m->tensors[i];
        enum cxr_nn_dtype dt = stored_dtype(m->kinds[i], storage);
        uint64_t size = (uint64_t)cxr_nn_tensor_numel(t) * cxr_nn_dtype_size(dt);
        struct json_object *e = json_object_new_object(), *shape = json_object_new_array(),
                           *offs = json_object_new_array();
        bool ok = e && shape && offs;
        for (int32_t d = 0; ok && d < t->ndim; d++)
            ok = json_object_array_add(shape, json_object_new_int64(t->shape[d])) == 0;
        ok = ok && json_object_array_add(offs, json_object_new_int64((int64_t)off)) == 0 &&
             json_object_array_add(offs, json_object_new_int64((int64_t)(off + size))) == 0;
        ok = ok &&
             json_object_object_add(e, "dtype", json_object_new_string(cxr_nn_dtype_name(dt))) == 0;
        ok = ok && json_object_object_add(e, "shape", shape) == 0;
        if (ok)
            shape = NULL;
        ok = ok && json_object_object_add(e, "data_offsets", offs) == 0;
        if (ok)
            offs = NULL;
        ok = ok && json_object_object_add(root, t->name, e) == 0;
        if (ok)
            e = NULL;
        json_object_put(shape);
        json_object_put(offs);
        json_object_put(e);
        if (!ok) {
            json_object_put(root);
            return NULL;
        }
        off += size;
    }
    return root;
}

static enum cxr_status io_err(char *err, const char *path, const char *what, int e)
{
    return cxr_seterr(err, e == ENOSPC || e == EDQUOT ? CXR_ERR_NO_SPACE : CXR_ERR_IO, "%s: %s: %s",
                      path, what, strerror(e));
}

/* Atomic: writes "<path>.tmp-XXXXXX" in the same folder, fsyncs it, renames
 * it over path and fsyncs the folder. The model's SHA-256 becomes that of
 * the written bytes (the one non-const effect; do not save a model another
 * thread is reading the digest of). */
enum cxr_status cxr_nn_model_save(const struct cxr_nn_model *m, const char *path,
                                  enum cxr_nn_dtype storage, char *err)
{
    if (!m || !path)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "save: no model or no path");
    if (storage != CXR_NN_DTYPE_F32 && storage != CXR_NN_DTYPE_F16 && storage != CXR_NN_DTYPE_BF16)
        return cxr_seterr(err, CXR_ERR_NN_DTYPE, "%s: storage dtype %s (F32, F16 or BF16)", path,
                          cxr_nn_dtype_name(storage));
    char verr[CXR_ERRLEN];
    enum cxr_status st = cxr_nn_meta_validate(&m->meta, &m->spec, verr);
    if (st != CXR_OK)
        return cxr_seterr(err, st, "%s: not written: %s", path, verr);

    struct json_object *root = build_header(m, storage);
    if (!root)
        return cxr_seterr(err, CXR_ERR_NOMEM, "%s: out of memory for the header", path);
    const char *text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t hlen = text ? strlen(text) : 0;
    size_t pad = (8 - hlen % 8) % 8;
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (uint8_t)((uint64_t)(hlen + pad) >> (8 * i));

    EVP_MD_CTX *md = EVP_MD_CTX_new();
    struct cxr_file_atomic f = {.fd = -1};
    if (!text || !md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    if ((st = cxr_file_atomic_open(&f, path, 0644, err)) != CXR_OK)
        goto fail;
    static const char spaces[8] = "        ";
    bool ok = write_all(&f, lenbuf, 8, md) && write_all(&f, text, hlen, md) &&
              write_all(&f, spaces, pad, md);
    for (uint32_t i = 0; ok && i < m->n_tensors; i++)
        ok = write_tensor(&f, &m->tensors[i], stored_dtype(m->kinds[i], storage), md);
    if (!ok) {
        st = io_err(err, path, "write", errno);
        goto fail;
    }
    if ((st = cxr_file_atomic_commit(&f, err)) != CXR_OK)
        goto fail;
    unsigned char dg[EVP_MAX_MD_SIZE];
    unsigned int dglen = 0;
    struct cxr_nn_model *mm = (struct cxr_nn_model *)m; /* the digest is a cache */
    if (EVP_DigestFinal_ex(md, dg, &dglen) == 1 && dglen == 32)
        for (unsigned i = 0; i < 32; i++)
            snprintf(mm->sha256 + 2 * i, 3, "%02x", dg[i]);
    else
        mm->sha256[0] = '\0';
    st = CXR_OK;
fail:
    cxr_file_atomic_abort(&f); /* no-op once committed */
    EVP_MD_CTX_free(md);
    json_object_put(root);
    return st;
}
