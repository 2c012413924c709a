/* dataset.c — the training-data loader: labels, the decoding worker pool,
 * DICOM through the inference presentation pipeline, PNG/JPEG to grey, the
 * memory cap, patient groups, the digest. Sources are read in archive.c,
 * the split is in split.c. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cxr/dicom.h"
#include "cxr/nn_train.h"
#include "dataset_internal.h"

#define QUEUE_BYTES (64u << 20) /* undecoded bytes waiting for a worker */
#define MAX_THREADS 8
#define MAX_ALIASES 64

struct ds_job {
    char *name;
    uint8_t *bytes;
    size_t len;
    int32_t label;
    char *patient; /* from the manifest, or NULL */
    size_t seq;
    bool is_skip; /* result: a skip (st, reason) or a sample (s) */
    enum cxr_status st;
    char *reason;
    struct cxr_train_sample s;
};

struct ds_alias {
    char name[64];
    int32_t label;
};

struct ds_loader {
    const struct cxr_train_dataset_options *opt;
    struct cxr_conf_gate gate;
    int32_t num_classes;
    char names[CXR_NN_MAX_CLASSES][32];
    struct ds_alias aliases[MAX_ALIASES];
    size_t n_aliases;
    char class_list[CXR_NN_MAX_CLASSES * 34];
    uint64_t max_entry_bytes;
    uint32_t max_entries;
    int32_t limit_w, limit_h; /* stored images fit in this */
    uint64_t entries;
    uint64_t skipped; /* atomically updated (workers) */
    uint64_t bytes_read;
    struct ds_job **jobs;
    size_t njobs, capjobs;
    /* work queue */
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    struct ds_job **queue;
    size_t qcap, qhead, qlen, qbytes;
    bool closing;
    pthread_t *threads;
    int nthreads;
};

void cxr_train_dataset_options_init(struct cxr_train_dataset_options *o,
                                    const struct cxr_nn_model_meta *meta)
{
    memset(o, 0, sizeof *o);
    o->meta = meta;
    o->max_scale = 2.0;
}

static void list_set(struct cxr_conf_list *l, const char *const *items, uint32_t n)
{
    memset(l, 0, sizeof *l);
    for (uint32_t i = 0; i < n && i < CXR_CONF_MAX_LIST; i++)
        snprintf(l->items[l->count++], sizeof l->items[0], "%s", items[i]);
}

void cxr_train_dataset_gate_defaults(struct cxr_conf_gate *g)
{
    memset(g, 0, sizeof *g);
    static const char *const mods[] = {"CR", "DX", "OT"};
    static const char *const parts[] = {"CHEST"};
    static const char *const views[] = {"PA", "AP"};
    list_set(&g->modalities, mods, 3);
    g->allow_secondary_capture = true;
    list_set(&g->body_parts, parts, 1);
    g->allow_missing_body_part = true;
    list_set(&g->view_positions, views, 2);
    g->allow_missing_view_position = true;
    g->for_processing = CXR_CONF_FOR_PROCESSING_REJECT;
    g->min_rows = g->min_cols = 32;
    g->max_rows = g->max_cols = 16384;
    g->age_policy = CXR_CONF_AGE_IGNORE;
}

/* ------------------------------------------------------------------ labels */

int32_t ds_label_from_text(const struct ds_loader *L, const char *text)
{
    if (!text || !text[0])
        return -1;
    for (int32_t k = 0; k < L->num_classes; k++)
        if (strcasecmp(text, L->names[k]) == 0)
            return k;
    for (size_t i = 0; i < L->n_aliases; i++)
        if (strcasecmp(text, L->aliases[i].name) == 0)
            return L->aliases[i].label;
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (isdigit((unsigned char)text[0]) && !*end && errno == 0 && v >= 0 && v < L->num_classes)
        return (int32_t)v;
    return -1;
}

int32_t ds_label_from_path(const struct ds_loader *L, const char *name, char *why, size_t cap)
{
    const char *end = strrchr(name, '/');
    while (end) {
        const char *start = end;
        while (start > name && start[-1] != '/')
            start--;
        char comp[256];
        size_t n = (size_t)(end - start);
        if (n < sizeof comp) {
            memcpy(comp, start, n);
            comp[n] = '\0';
            int32_t k = ds_label_from_text(L, comp);
            if (k >= 0)
                return k;
        }
        end = start > name ? start - 1 : NULL;
    }
    snprintf(why, cap, "no class folder in the path (expected a folder named %s)", L->class_list);
    return -1;
}

const char *ds_class_list(const struct ds_loader *L) { return L->class_list; }

uint64_t ds_max_entry_bytes(const struct ds_loader *L) { return L->max_entry_bytes; }

bool ds_allow_outside(const struct ds_loader *L) { return L->opt->allow_outside; }

/* "healthy=NORMAL, opacity=1" */
static enum cxr_status parse_label_map(struct ds_loader *L, const char *text, char *err)
{
    const char *p = text;
    while (p && *p) {
        while (*p && (*p == ',' || *p == ';' || isspace((unsigned char)*p)))
            p++;
        if (!*p)
            break;
        const char *q = p;
        while (*q && *q != ',' && *q != ';' && !isspace((unsigned char)*q))
            q++;
        char tok[160];
        size_t n = (size_t)(q - p);
        if (n >= sizeof tok)
            return cxr_seterr(err, CXR_ERR_INVALID_ARG, "label map: entry '%.40s...' too long", p);
        memcpy(tok, p, n);
        tok[n] = '\0';
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || !eq[1])
            return cxr_seterr(err, CXR_ERR_INVALID_ARG, "label map: '%s' is not name=CLASS", tok);
        *eq = '\0';
        int32_t k = ds_label_from_text(L, eq + 1);
        if (k < 0)
            return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                              "label map: '%s' is not a class (one of %s)", eq + 1, L->class_list);
        size_t tl = strlen(tok);
        if (L->n_aliases == MAX_ALIASES || tl >= sizeof L->aliases[0].name)
            return cxr_seterr(err, CXR_ERR_LIMIT,
                              "label map: more than %d names or a name too long", MAX_ALIASES);
        memcpy(L->aliases[L->n_aliases].name, tok, tl + 1);
        L->aliases[L->n_aliases++].label = k;
        p = q;
    }
    return CXR_OK;
}

/* ------------------------------------------------------------------ patients */

void cxr_train_patient_from_filename(const char *name, char *out, size_t cap)
{
    if (cap == 0)
        return;
    out[0] = '\0';
    const char *b = strrchr(name, '/');
    b = b ? b + 1 : name;
    size_t n = 0;
    if (strncasecmp(b, "person", 6) == 0 && isdigit((unsigned char)b[6])) {
        n = 6;
        while (isdigit((unsigned char)b[n]))
            n++;
        if (b[n] != '_')
            return;
    } else {
        const char *p = b;
        if (strncasecmp(p, "NORMAL", 6) == 0 && isdigit((unsigned char)p[6])) {
            p += 6;
            while (isdigit((unsigned char)*p))
                p++;
            if (*p != '-')
                return;
            p++;
        }
        if (strncasecmp(p, "IM-", 3) != 0 || !isdigit((unsigned char)p[3]))
            return;
        p += 3;
        while (isdigit((unsigned char)*p))
            p++;
        if (*p != '-')
            return;
        n = (size_t)(p - b);
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(out, b, n);
    out[n] = '\0';
}

/* ------------------------------------------------------------------ decoding */

static void hex_digest(const uint8_t *md, unsigned n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hx[md[i] >> 4];
        out[2 * i + 1] = hx[md[i] & 15];
    }
    out[2 * n] = '\0';
}

static void job_fail(struct ds_loader *L, struct ds_job *j, enum cxr_status st, const char *why)
{
    j->is_skip = true;
    j->st = st;
    j->reason = strdup(why && why[0] ? why : cxr_status_str(st));
    free(j->s.pixels);
    j->s.pixels = NULL;
    __atomic_fetch_add(&L->skipped, 1, __ATOMIC_RELAXED);
}

/* Bytes → a sample (or a skip), on a worker thread. */
static void decode_job(struct ds_loader *L, struct ds_job *j)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_train_sample *s = &j->s;
    s->age_years = NAN;
    s->label = j->label;
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(j->bytes, j->len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
        job_fail(L, j, CXR_ERR_INTERNAL, "SHA-256 failed");
        goto out;
    }
    hex_digest(md, mdlen, s->sha256);

    const uint8_t *b = j->bytes;
    bool dicm = j->len >= 132 && memcmp(b + 128, "DICM", 4) == 0;
    bool png = j->len >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0;
    bool jpeg = j->len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff;
    const char *dicom_pid = NULL;
    char pid[68] = "";
    if (!dicm && (png || jpeg)) {
        s->kind = png ? CXR_TRAIN_IMAGE_PNG : CXR_TRAIN_IMAGE_JPEG;
        enum cxr_status st =
            cxr_train_image_decode(j->bytes, j->len, &s->pixels, &s->width, &s->height, err);
        if (st != CXR_OK) {
            job_fail(L, j, st, err);
            goto out;
        }
    } else {
        s->kind = CXR_TRAIN_IMAGE_DICOM;
        struct cxr_dicom_instance *inst = NULL;
        enum cxr_status st =
            cxr_dicom_instance_load_memory_within(j->bytes, j->len, j->name, &L->gate, &inst, err);
        if (st != CXR_OK) {
            /* Without "DICM" the bytes were only tried as a raw data set: the
             * parser's detail would quote them (a text file's first bytes
             * read as a tag and a length), so the reason says what it is not. */
            job_fail(L, j, dicm ? st : CXR_ERR_NN_IMAGE,
                     dicm ? err
                          : "not a PNG, JPEG or DICOM file (no PNG or JPEG signature, no DICM "
                            "preamble, and not readable as a DICOM data set)");
            goto out;
        }
        const struct cxr_dicom_info *info = cxr_dicom_instance_info(inst);
        struct cxr_dicom_gate_result gr;
        memset(&gr, 0, sizeof gr);
        cxr_dicom_gate(info, &L->gate, NAN, NAN, &gr);
        if (!gr.pass) {
            cxr_dicom_instance_free(inst);
            job_fail(L, j, CXR_ERR_DICOM_GATE, gr.reason);
            goto out;
        }
        snprintf(pid, sizeof pid, "%s", info->patient_id);
        s->age_years = info->patient_age_years;
        struct cxr_dicom_image img;
        memset(&img, 0, sizeof img);
        st = cxr_dicom_instance_present(inst, &img, err);
        cxr_dicom_instance_free(inst);
        if (st != CXR_OK) {
            job_fail(L, j, st, err);
            goto out;
        }
        size_t n = (size_t)img.width * (size_t)img.height;
        s->pixels = malloc(n ? n : 1);
        if (!s->pixels || img.width < 1 || img.height < 1) {
            cxr_dicom_image_release(&img);
            job_fail(L, j, s->pixels ? CXR_ERR_DICOM_DECODE : CXR_ERR_NOMEM,
                     s->pixels ? "empty image" : "out of memory");
            goto out;
        }
        memcpy(s->pixels, img.pixels, n);
        s->width = img.width;
        s->height = img.height;
        cxr_dicom_image_release(&img);
        /* trim DICOM padding */
        size_t pl = strlen(pid);
        while (pl > 0 && pid[pl - 1] == ' ')
            pid[--pl] = '\0';
        if (pid[0])
            dicom_pid = pid;
    }
    free(j->bytes);
    j->bytes = NULL;

    /* Bound memory: at most limit_w x limit_h, aspect kept. */
    s->source_width = s->width;
    s->source_height = s->height;
    if (s->width > L->limit_w || s->height > L->limit_h) {
        double f = fmax((double)s->width / L->limit_w, (double)s->height / L->limit_h);
        int32_t nw = (int32_t)lround(s->width / f), nh = (int32_t)lround(s->height / f);
        nw = nw < 1 ? 1 : nw > L->limit_w ? L->limit_w : nw;
        nh = nh < 1 ? 1 : nh > L->limit_h ? L->limit_h : nh;
        uint8_t *small = malloc((size_t)nw * (size_t)nh);
        enum cxr_status st =
            small ? cxr_nn_resize_u8(s->pixels, s->width, s->height, s->width, small, nw, nh, nw)
                  : CXR_ERR_NOMEM;
        if (st != CXR_OK) {
            free(small);
            job_fail(L, j, st, "cannot downscale the image");
            goto out;
        }
        free(s->pixels);
        s->pixels = small;
        s->width = nw;
        s->height = nh;
    }

    /* Patient: manifest, DICOM, file name. */
    char fromname[96];
    cxr_train_patient_from_filename(j->name, fromname, sizeof fromname);
    const char *p = "";
    s->patient_source = CXR_TRAIN_PATIENT_NONE;
    if (j->patient && j->patient[0]) {
        p = j->patient;
        s->patient_source = CXR_TRAIN_PATIENT_MANIFEST;
    } else if (dicom_pid) {
        p = dicom_pid;
        s->patient_source = CXR_TRAIN_PATIENT_DICOM;
    } else if (fromname[0]) {
        p = fromname;
        s->patient_source = CXR_TRAIN_PATIENT_FILENAME;
    }
    if (!(s->patient = strdup(p)))
        job_fail(L, j, CXR_ERR_NOMEM, "out of memory");
out:
    free(j->bytes);
    j->bytes = NULL;
}

static void *worker(void *arg)
{
    struct ds_loader *L = arg;
    for (;;) {
        pthread_mutex_lock(&L->mu);
        while (L->qlen == 0 && !L->closing)
            pthread_cond_wait(&L->not_empty, &L->mu);
        if (L->qlen == 0) {
            pthread_mutex_unlock(&L->mu);
            return NULL;
        }
        struct ds_job *j = L->queue[L->qhead];
        L->qhead = (L->qhead + 1) % L->qcap;
        L->qlen--;
        L->qbytes -= j->len;
        pthread_cond_signal(&L->not_full);
        pthread_mutex_unlock(&L->mu);
        decode_job(L, j);
    }
}

/* ------------------------------------------------------------------ intake */

static void report_progress(struct ds_loader *L, bool force)
{
    if (L->opt->progress && (force || L->entries % 64 == 0))
        L->opt->progress(L->opt->progress_ctx, L->entries,
                         __atomic_load_n(&L->skipped, __ATOMIC_RELAXED));
}

/* A new job in reading order; NULL on OOM. */
static struct ds_job *new_job(struct ds_loader *L, const char *name)
{
    if (L->njobs == L->capjobs) {
        size_t nc = L->capjobs ? L->capjobs * 2 : 256;
        struct ds_job **nj = realloc(L->jobs, nc * sizeof *nj);
        if (!nj)
            return NULL;
        L->jobs = nj;
        L->capjobs = nc;
    }
    struct ds_job *j = calloc(1, sizeof *j);
    if (!j || !(j->name = strdup(name))) {
        free(j);
        return NULL;
    }
    j->seq = L->njobs;
    L->jobs[L->njobs++] = j;
    return j;
}

static enum cxr_status count_entry(struct ds_loader *L)
{
    if (L->entries >= L->max_entries)
        return CXR_ERR_LIMIT;
    L->entries++;
    return CXR_OK;
}

enum cxr_status ds_skip(struct ds_loader *L, const char *name, enum cxr_status st, const char *fmt,
                        ...)
{
    if (count_entry(L) != CXR_OK)
        return CXR_ERR_LIMIT;
    struct ds_job *j = new_job(L, name);
    if (!j)
        return CXR_ERR_NOMEM;
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    job_fail(L, j, st, why);
    report_progress(L, false);
    return j->reason ? CXR_OK : CXR_ERR_NOMEM;
}

enum cxr_status ds_submit(struct ds_loader *L, const char *name, uint8_t *bytes, size_t len,
                          int32_t label, const char *patient)
{
    if (count_entry(L) != CXR_OK) {
        free(bytes);
        return CXR_ERR_LIMIT;
    }
    struct ds_job *j = new_job(L, name);
    if (!j || (patient && !(j->patient = strdup(patient)))) {
        free(bytes);
        return CXR_ERR_NOMEM;
    }
    j->bytes = bytes;
    j->len = len;
    j->label = label;
    L->bytes_read += len;
    if (L->nthreads == 0) {
        decode_job(L, j);
    } else {
        pthread_mutex_lock(&L->mu);
        while (L->qlen == L->qcap || (L->qlen > 0 && L->qbytes + len > QUEUE_BYTES))
            pthread_cond_wait(&L->not_full, &L->mu);
        L->queue[(L->qhead + L->qlen) % L->qcap] = j;
        L->qlen++;
        L->qbytes += len;
        pthread_cond_signal(&L->not_empty);
        pthread_mutex_unlock(&L->mu);
    }
    report_progress(L, false);
    return CXR_OK;
}

static void stop_workers(struct ds_loader *L)
{
    if (L->nthreads == 0)
        return;
    pthread_mutex_lock(&L->mu);
    L->closing = true;
    pthread_cond_broadcast(&L->not_empty);
    pthread_mutex_unlock(&L->mu);
    for (int i = 0; i < L->nthreads; i++)
        pthread_join(L->threads[i], NULL);
    L->nthreads = 0;
}

static void free_job(struct ds_job *j)
{
    if (!j)
        return;
    free(j->name);
    free(j->bytes);
    free(j->patient);
    free(j->reason);
    free(j->s.pixels);
    free(j->s.patient);
    free(j);
}

/* ------------------------------------------------------------------ result */

void cxr_train_dataset_free(struct cxr_train_dataset *ds)
{
    if (!ds)
        return;
    for (size_t i = 0; i < ds->count; i++) {
        free(ds->samples[i].name);
        free(ds->samples[i].patient);
        free(ds->samples[i].pixels);
    }
    for (size_t i = 0; i < ds->skipped_count; i++) {
        free(ds->skipped[i].name);
        free(ds->skipped[i].reason);
    }
    free(ds->samples);
    free(ds->skipped);
    free(ds->source);
    free(ds);
}

static int cmp_job(const void *a, const void *b)
{
    const struct ds_job *x = *(const struct ds_job *const *)a,
                        *y = *(const struct ds_job *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

/* Moves the jobs' results into the dataset (jobs emptied): skips in reading
 * order, samples sorted by name; a repeated name keeps the entry read first
 * and lists the others as skipped. Then counts and hashes. */
static enum cxr_status finish(struct ds_loader *L, struct cxr_train_dataset *ds, char *err)
{
    size_t ns = 0;
    for (size_t i = 0; i < L->njobs; i++)
        ns += !L->jobs[i]->is_skip;
    ds->samples = calloc(ns ? ns : 1, sizeof *ds->samples);
    ds->skipped = calloc(L->njobs + 1, sizeof *ds->skipped);
    struct ds_job **order = malloc((ns ? ns : 1) * sizeof *order);
    if (!ds->samples || !ds->skipped || !order) {
        free(order);
        return cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < L->njobs; i++) {
        struct ds_job *j = L->jobs[i];
        if (j->is_skip) {
            struct cxr_train_skip *sk = &ds->skipped[ds->skipped_count++];
            sk->name = j->name;
            sk->status = j->st;
            sk->reason = j->reason;
            j->name = j->reason = NULL;
        } else {
            order[k++] = j;
        }
    }
    qsort(order, ns, sizeof *order, cmp_job);
    for (size_t i = 0; i < ns; i++) {
        struct ds_job *j = order[i];
        if (ds->count > 0 && strcmp(ds->samples[ds->count - 1].name, j->name) == 0) {
            struct cxr_train_skip *sk = &ds->skipped[ds->skipped_count++];
            sk->status = CXR_ERR_TRIAGE_ARCHIVE;
            sk->reason = strdup("a second entry with the same name (the first one read is used)");
            sk->name = j->name;
            j->name = NULL;
            continue; /* free_job frees its pixels */
        }
        struct cxr_train_sample *s = &ds->samples[ds->count++];
        *s = j->s;
        s->name = j->name;
        j->name = NULL;
        memset(&j->s, 0, sizeof j->s);
    }
    free(order);

    ds->age_min_years = ds->age_max_years = NAN;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        return cxr_seterr(err, CXR_ERR_INTERNAL, "SHA-256 unavailable");
    }
    for (size_t i = 0; i < ds->count; i++) {
        const struct cxr_train_sample *s = &ds->samples[i];
        ds->class_counts[s->label]++;
        if (s->patient[0])
            ds->samples_with_patient++;
        if (!isnan(s->age_years)) {
            if (isnan(ds->age_min_years) || s->age_years < ds->age_min_years)
                ds->age_min_years = s->age_years;
            if (isnan(ds->age_max_years) || s->age_years > ds->age_max_years)
                ds->age_max_years = s->age_years;
        }
        const char *cls = ds->class_names[s->label];
        EVP_DigestUpdate(ctx, s->name, strlen(s->name));
        EVP_DigestUpdate(ctx, "\t", 1);
        EVP_DigestUpdate(ctx, cls, strlen(cls));
        EVP_DigestUpdate(ctx, "\t", 1);
        EVP_DigestUpdate(ctx, s->sha256, 64);
        EVP_DigestUpdate(ctx, "\n", 1);
    }
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    memcpy(ds->digest, "sha256:", 7);
    hex_digest(md, mdlen, ds->digest + 7);
    return ds_group_stats(ds, err);
}

static bool ends_with_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

enum cxr_status cxr_train_dataset_load(const char *path,
                                       const struct cxr_train_dataset_options *opt,
                                       struct cxr_train_dataset **out, char *err)
{
    *out = NULL;
    if (err)
        err[0] = '\0';
    if (!path || !opt || !opt->meta)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "dataset: no path or no model metadata");
    const struct cxr_nn_model_meta *meta = opt->meta;
    if (meta->num_classes < 1 || meta->num_classes > CXR_NN_MAX_CLASSES || meta->input_width < 1 ||
        meta->input_height < 1)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "dataset: bad model metadata");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cxr_dicom_global_init();

    struct ds_loader *L = calloc(1, sizeof *L);
    struct cxr_train_dataset *ds = calloc(1, sizeof *ds);
    enum cxr_status st = CXR_OK;
    if (!L || !ds || !(ds->source = strdup(path))) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
        goto fail_early;
    }
    L->opt = opt;
    if (opt->gate)
        L->gate = *opt->gate;
    else
        cxr_train_dataset_gate_defaults(&L->gate);
    L->num_classes = ds->num_classes = meta->num_classes;
    for (int32_t k = 0; k < meta->num_classes; k++) {
        snprintf(L->names[k], sizeof L->names[k], "%s", meta->class_names[k]);
        snprintf(ds->class_names[k], sizeof ds->class_names[k], "%s", meta->class_names[k]);
        size_t used = strlen(L->class_list);
        snprintf(L->class_list + used, sizeof L->class_list - used, "%s%s",
                 k == 0                       ? ""
                 : k == meta->num_classes - 1 ? " or "
                                              : ", ",
                 L->names[k]);
    }
    L->max_entry_bytes =
        opt->max_entry_bytes ? opt->max_entry_bytes : CXR_TRAIN_DATASET_MAX_ENTRY_BYTES;
    L->max_entries = opt->max_entries ? opt->max_entries : CXR_TRAIN_DATASET_MAX_ENTRIES;
    double ms = opt->max_scale > 0 ? opt->max_scale : 2.0;
    L->limit_w = (int32_t)fmin(16384.0, ceil(ms * meta->input_width));
    L->limit_h = (int32_t)fmin(16384.0, ceil(ms * meta->input_height));
    if (opt->label_map && (st = parse_label_map(L, opt->label_map, err)) != CXR_OK)
        goto fail_early;

    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = cxr_seterr(err, errno == ENOENT ? CXR_ERR_NOT_FOUND : CXR_ERR_IO, "%s: %s", path,
                        strerror(errno));
        goto fail_early;
    }

    /* workers */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = opt->threads > 0 ? opt->threads : (int)(cpus > 0 ? cpus : 1);
    if (nt > MAX_THREADS)
        nt = MAX_THREADS;
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->not_empty, NULL);
    pthread_cond_init(&L->not_full, NULL);
    if (nt > 1) {
        L->qcap = 4 * (size_t)nt;
        L->queue = calloc(L->qcap, sizeof *L->queue);
        L->threads = calloc((size_t)nt, sizeof *L->threads);
        if (!L->queue || !L->threads) {
            st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (int i = 0; i < nt; i++) {
            if (pthread_create(&L->threads[i], NULL, worker, L) != 0)
                break;
            L->nthreads++;
        }
    }

    if (S_ISDIR(sb.st_mode)) {
        snprintf(ds->source_kind, sizeof ds->source_kind, "directory");
        st = ds_read_directory(L, path, err);
    } else if (ends_with_ci(path, ".csv")) {
        snprintf(ds->source_kind, sizeof ds->source_kind, "manifest");
        st = ds_read_manifest(L, path, err);
    } else {
        st = ds_read_archive(L, path, ds->source_kind, sizeof ds->source_kind, err);
    }
    if (st == CXR_ERR_LIMIT)
        cxr_seterr(err, st, "%s: more than %u entries (the limit)", path, (unsigned)L->max_entries);
    stop_workers(L);
    if (st != CXR_OK)
        goto fail;
    report_progress(L, true);
    ds->bytes_read = L->bytes_read;
    if ((st = finish(L, ds, err)) != CXR_OK)
        goto fail;
    if (ds->count == 0) {
        char first[600] = "";
        if (ds->skipped_count)
            snprintf(first, sizeof first, "; first: %s: %s", ds->skipped[0].name,
                     ds->skipped[0].reason ? ds->skipped[0].reason : "");
        st = cxr_seterr(err, CXR_ERR_TRIAGE_ARCHIVE,
                        "%s: no usable labeled image (%zu entries skipped%s)", path,
                        ds->skipped_count, first);
        goto fail;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ds->load_seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);

fail:
    stop_workers(L);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->not_empty);
    pthread_cond_destroy(&L->not_full);
fail_early:
    if (L) {
        for (size_t i = 0; i < L->njobs; i++)
            free_job(L->jobs[i]);
        free(L->jobs);
        free(L->queue);
        free(L->threads);
        free(L);
    }
    if (st != CXR_OK) {
        if (err && !err[0]) /* e.g. out of memory inside a reader */
            cxr_seterr(err, st, "%s: %s", path, cxr_status_str(st));
        cxr_train_dataset_free(ds);
        return st;
    }
    *out = ds;
    return CXR_OK;
}
