/* model_digests.c — the list of images a model was trained on (see struct
 * cxr_nn_model_meta and docs/model-format.md): 8-byte digests, sorted and
 * unique, sampled 1 in 2^k when there are too many, and their text form in
 * "__metadata__"."training_images":
 *
 *   {"hash": "sha256-64", "images": N, "sample_bits": K, "digests": "<base64>"}
 *
 * "digests" is the base64 (RFC 4648, padded) of the digests as big-endian
 * 8-byte words in ascending order. A digest d belongs to the sample when
 * its top K bits are 0 (d >> (64 - K) == 0; every d when K is 0). */
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

#define HASH_NAME "sha256-64"

static bool in_sample(uint64_t d, int32_t bits) { return bits == 0 || (d >> (64 - bits)) == 0; }

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t cxr_nn_training_digest_from_hex(const char *hex)
{
    uint64_t d = 0;
    for (int i = 0; i < 16; i++) {
        char c = hex ? hex[i] : '\0';
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0)
            return 0;
        d = d << 4 | (uint64_t)v;
    }
    return d;
}

enum cxr_status cxr_nn_model_set_training_digests(struct cxr_nn_model *m, const uint64_t *digests,
                                                  size_t n, int32_t sample_bits, int64_t images)
{
    if (!m || sample_bits < 0 || sample_bits > 32 || images < 0 || (n && !digests))
        return CXR_ERR_INVALID_ARG;
    struct cxr_nn_model_meta *mt = &m->meta;
    uint64_t *v = NULL;
    size_t kept = 0;
    if (images > 0 && n > 0) {
        if (!(v = malloc(n * sizeof *v)))
            return CXR_ERR_NOMEM;
        memcpy(v, digests, n * sizeof *v);
        qsort(v, n, sizeof *v, cmp_u64);
        /* unique, then the sample; a sparser one while too many remain */
        for (;;) {
            kept = 0;
            for (size_t i = 0; i < n; i++)
                if ((i == 0 || v[i] != v[i - 1]) && in_sample(v[i], sample_bits))
                    kept++;
            if (kept <= CXR_NN_MAX_TRAINING_DIGESTS || sample_bits == 32)
                break;
            sample_bits++;
        }
        size_t w = 0;
        for (size_t i = 0; i < n && w < CXR_NN_MAX_TRAINING_DIGESTS; i++)
            if ((i == 0 || v[i] != v[i - 1]) && in_sample(v[i], sample_bits))
                v[w++] = v[i];
        kept = w;
    }
    free(mt->training_digests);
    mt->training_digests = v;
    mt->training_digest_count = (uint32_t)kept;
    mt->training_digest_sample_bits = images > 0 ? sample_bits : 0;
    mt->training_image_count = images;
    return CXR_OK;
}

int cxr_nn_model_meta_trained_on(const struct cxr_nn_model_meta *meta, uint64_t digest)
{
    if (!meta || meta->training_image_count <= 0 ||
        !in_sample(digest, meta->training_digest_sample_bits))
        return -1;
    size_t lo = 0, hi = meta->training_digest_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t d = meta->training_digests[mid];
        if (d == digest)
            return 1;
        if (d < digest)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

char *cxr_nn_meta_digests_to_text(const struct cxr_nn_model_meta *meta)
{
    size_t n = meta->training_digest_count, raw_len = n * 8;
    unsigned char *raw = malloc(raw_len ? raw_len : 1);
    char *b64 = malloc(4 * ((raw_len + 2) / 3) + 1);
    struct json_object *o = json_object_new_object();
    char *text = NULL;
    if (!raw || !b64 || !o)
        goto done;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 8; k++)
            raw[8 * i + (size_t)k] = (unsigned char)(meta->training_digests[i] >> (56 - 8 * k));
    EVP_EncodeBlock((unsigned char *)b64, raw, (int)raw_len);
    json_object_object_add(o, "hash", json_object_new_string(HASH_NAME));
    json_object_object_add(o, "images", json_object_new_int64(meta->training_image_count));
    json_object_object_add(o, "sample_bits",
                           json_object_new_int(meta->training_digest_sample_bits));
    json_object_object_add(o, "digests", json_object_new_string(b64));
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    text = s ? strdup(s) : NULL;
done:
    json_object_put(o);
    free(raw);
    free(b64);
    return text;
}

enum cxr_status cxr_nn_meta_digests_from_text(const char *text, struct cxr_nn_model_meta *meta,
                                              char *why, size_t len)
{
    enum cxr_status st = CXR_ERR_NN_MODEL;
    struct json_object *o = json_tokener_parse(text), *h, *im, *sb, *dg;
    unsigned char *raw = NULL;
    uint64_t *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, "hash", &h) || !json_object_is_type(h, json_type_string)) {
        snprintf(why, len, "expected a JSON object with \"hash\"");
        goto done;
    }
    if (strcmp(json_object_get_string(h), HASH_NAME) != 0) {
        st = CXR_OK; /* a list this build cannot compare: as if there were none */
        goto done;
    }
    if (!json_object_object_get_ex(o, "images", &im) || !json_object_is_type(im, json_type_int) ||
        !json_object_object_get_ex(o, "sample_bits", &sb) ||
        !json_object_is_type(sb, json_type_int) || !json_object_object_get_ex(o, "digests", &dg) ||
        !json_object_is_type(dg, json_type_string)) {
        snprintf(why, len, "expected \"images\", \"sample_bits\" (integers) and \"digests\"");
        goto done;
    }
    int64_t images = json_object_get_int64(im), bits = json_object_get_int64(sb);
    const char *b64 = json_object_get_string(dg);
    size_t blen = strlen(b64);
    if (bits < 0 || bits > 32 || images < 1) {
        snprintf(why, len, "sample_bits must be 0..32 and images >= 1");
        goto done;
    }
    if (blen % 4 || blen / 4 * 3 > (size_t)CXR_NN_MAX_TRAINING_DIGESTS * 8 + 2) {
        snprintf(why, len, "digests: not base64, or more than %u digests",
                 CXR_NN_MAX_TRAINING_DIGESTS);
        goto done;
    }
    size_t pad =
        blen >= 1 && b64[blen - 1] == '=' ? (blen >= 2 && b64[blen - 2] == '=' ? 2 : 1) : 0;
    raw = malloc(blen / 4 * 3 + 1);
    if (!raw) {
        st = CXR_ERR_NOMEM;
        goto done;
    }
    int got = blen ? EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)blen) : 0;
    size_t raw_len = got < 0 ? 1 : (size_t)got - pad; /* DecodeBlock counts padding as bytes */
    if (got < 0 || raw_len % 8) {
        snprintf(why, len, "digests: not base64 of 8-byte words");
        goto done;
    }
    size_t n = raw_len / 8;
    if (n > (size_t)images) {
        snprintf(why, len, "more digests than images");
        goto done;
    }
    if (n && !(v = malloc(n * sizeof *v))) {
        st = CXR_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t d = 0;
        for (int k = 0; k < 8; k++)
            d = d << 8 | raw[8 * i + (size_t)k];
        if ((i && d <= v[i - 1]) || !in_sample(d, (int32_t)bits)) {
            snprintf(why, len, "digests: not ascending, or outside the sample, at %zu", i);
            goto done;
        }
        v[i] = d;
    }
    free(meta->training_digests);
    meta->training_digests = v;
    v = NULL;
    meta->training_digest_count = (uint32_t)n;
    meta->training_digest_sample_bits = (int32_t)bits;
    meta->training_image_count = images;
    st = CXR_OK;
done:
    json_object_put(o);
    free(raw);
    free(v);
    return st;
}
