/* split.c — patient groups and the seeded, stratified, grouped
 * train/validation split of a loaded dataset; leak check between two sets. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/nn_train.h"
#include "dataset_internal.h"

/* ---- union-find over sample indices */

static size_t uf_find(size_t *parent, size_t i)
{
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static void uf_union(size_t *parent, size_t a, size_t b)
{
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a != b) {
        if (a < b)
            parent[b] = a;
        else
            parent[a] = b;
    }
}

/* Sorting sample indices by a string key (qsort_r keeps the dataset). */
struct key_ctx {
    const struct cxr_train_dataset *ds;
    bool by_patient;
};

static const char *key_of(const struct key_ctx *c, size_t i)
{
    return c->by_patient ? c->ds->samples[i].patient : c->ds->samples[i].sha256;
}

static int cmp_key(const void *a, const void *b, void *ctx)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int r = strcmp(key_of(ctx, x), key_of(ctx, y));
    return r ? r : (x > y) - (x < y);
}

/* Joins samples whose key (known patient, or content hash) is equal. */
static void join_equal(const struct cxr_train_dataset *ds, bool by_patient, size_t *idx,
                       size_t *parent, size_t *dups)
{
    struct key_ctx c = {ds, by_patient};
    size_t m = 0;
    for (size_t i = 0; i < ds->count; i++)
        if (!by_patient || ds->samples[i].patient[0])
            idx[m++] = i;
    qsort_r(idx, m, sizeof *idx, cmp_key, &c);
    for (size_t i = 1; i < m; i++)
        if (strcmp(key_of(&c, idx[i - 1]), key_of(&c, idx[i])) == 0) {
            uf_union(parent, idx[i - 1], idx[i]);
            if (dups)
                (*dups)++;
        }
}

static size_t groups_impl(const struct cxr_train_dataset *ds, size_t *group_of, size_t *dups)
{
    size_t n = ds->count;
    size_t *parent = malloc((n ? n : 1) * sizeof *parent);
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    size_t *num = malloc((n ? n : 1) * sizeof *num);
    if (!parent || !idx || !num) {
        free(parent);
        free(idx);
        free(num);
        return (size_t)-1;
    }
    for (size_t i = 0; i < n; i++)
        parent[i] = i;
    join_equal(ds, true, idx, parent, NULL);
    join_equal(ds, false, idx, parent, dups);
    /* Roots are each group's smallest index: number groups in that order. */
    size_t groups = 0;
    for (size_t i = 0; i < n; i++) {
        size_t r = uf_find(parent, i);
        if (r == i)
            num[i] = groups++;
        if (group_of)
            group_of[i] = num[r];
    }
    free(parent);
    free(idx);
    free(num);
    return groups;
}

size_t ds_groups(const struct cxr_train_dataset *ds, size_t *group_of)
{
    return groups_impl(ds, group_of, NULL);
}

enum cxr_status ds_group_stats(struct cxr_train_dataset *ds, char *err)
{
    size_t dups = 0;
    size_t g = groups_impl(ds, NULL, &dups);
    if (g == (size_t)-1)
        return cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
    ds->patient_groups = g;
    ds->duplicate_samples = dups;
    return CXR_OK;
}

/* ---- the split */

void cxr_train_split_release(struct cxr_train_split *s)
{
    if (!s)
        return;
    free(s->train);
    free(s->val);
    memset(s, 0, sizeof *s);
}

struct group {
    size_t size;
    int32_t label; /* majority class (ties: the lower index) */
    bool val;
};

enum cxr_status cxr_train_dataset_split(const struct cxr_train_dataset *ds, double val_fraction,
                                        uint64_t seed, struct cxr_train_split *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (!ds || !(val_fraction == 0.0 || (val_fraction > 0.0 && val_fraction < 1.0)))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "split: the validation fraction %g must be 0 or between 0 and 1",
                          val_fraction);
    const size_t n = ds->count;
    size_t *group_of = malloc((n ? n : 1) * sizeof *group_of);
    struct group *g = NULL;
    int64_t(*counts)[CXR_NN_MAX_CLASSES] = NULL;
    int32_t *order = NULL;
    enum cxr_status st = CXR_OK;
    size_t ng = group_of ? ds_groups(ds, group_of) : (size_t)-1;
    if (ng == (size_t)-1 || ng > INT32_MAX) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "split: out of memory");
        goto done;
    }
    g = calloc(ng ? ng : 1, sizeof *g);
    counts = calloc(ng ? ng : 1, sizeof *counts);
    order = malloc((ng ? ng : 1) * sizeof *order);
    out->train = malloc((n ? n : 1) * sizeof *out->train);
    out->val = malloc((n ? n : 1) * sizeof *out->val);
    if (!g || !counts || !order || !out->train || !out->val) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "split: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        g[group_of[i]].size++;
        counts[group_of[i]][ds->samples[i].label]++;
    }
    for (size_t k = 0; k < ng; k++) {
        int32_t best = 0;
        for (int32_t c = 1; c < ds->num_classes; c++)
            if (counts[k][c] > counts[k][best])
                best = c;
        g[k].label = best;
    }
    if (val_fraction > 0.0) {
        for (int32_t c = 0; c < ds->num_classes; c++) {
            size_t m = 0, total = 0;
            for (size_t k = 0; k < ng; k++)
                if (g[k].label == c) {
                    order[m++] = (int32_t)k;
                    total += g[k].size;
                }
            struct cxr_nn_rng rng;
            cxr_nn_rng_seed(&rng,
                            cxr_nn_seed_mix(seed, 0x73706c6974ull /* "split" */, (uint64_t)c));
            cxr_nn_rng_shuffle(&rng, order, m);
            const double target = val_fraction * (double)total;
            double have = 0.0;
            for (size_t i = 0; i < m; i++) {
                struct group *gr = &g[order[i]];
                /* take the group when that brings the count closer to the target */
                if (fabs(have + (double)gr->size - target) < fabs(have - target)) {
                    gr->val = true;
                    have += (double)gr->size;
                }
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct group *gr = &g[group_of[i]];
        if (gr->val) {
            out->val[out->n_val++] = (int32_t)i;
            out->val_counts[ds->samples[i].label]++;
        } else {
            out->train[out->n_train++] = (int32_t)i;
            out->train_counts[ds->samples[i].label]++;
        }
    }
    for (size_t k = 0; k < ng; k++)
        g[k].val ? out->val_groups++ : out->train_groups++;
    out->val_fraction = val_fraction;
    out->seed = seed;
done:
    free(group_of);
    free(g);
    free(counts);
    free(order);
    if (st != CXR_OK)
        cxr_train_split_release(out);
    return st;
}

/* ---- leak check between two datasets */

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

size_t cxr_train_dataset_overlap(const struct cxr_train_dataset *a,
                                 const struct cxr_train_dataset *b)
{
    if (!a || !b || a->count == 0 || b->count == 0)
        return 0;
    const char **pat = malloc(a->count * sizeof *pat);
    const char **sha = malloc(a->count * sizeof *sha);
    size_t np = 0, hits = 0;
    if (!pat || !sha) {
        free(pat);
        free(sha);
        return (size_t)-1;
    }
    for (size_t i = 0; i < a->count; i++) {
        if (a->samples[i].patient[0])
            pat[np++] = a->samples[i].patient;
        sha[i] = a->samples[i].sha256;
    }
    qsort(pat, np, sizeof *pat, cmp_cstr);
    qsort(sha, a->count, sizeof *sha, cmp_cstr);
    for (size_t i = 0; i < b->count; i++) {
        const char *p = b->samples[i].patient, *h = b->samples[i].sha256;
        if ((p[0] && bsearch(&p, pat, np, sizeof *pat, cmp_cstr)) ||
            bsearch(&h, sha, a->count, sizeof *sha, cmp_cstr))
            hits++;
    }
    free(pat);
    free(sha);
    return hits;
}
