/* plugin_db_results.c — the plugin's SQLite store, second half: instance
 * results, the scoring decision and its SR, forwards, counts (see
 * plugin_db.h). */
#include "cxr/mem.h"
#include "plugin_db_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ instances */

enum cxr_status plugin_db_study_instances(struct plugin_db *d, const char *study,
                                          struct plugin_instance **rows, size_t *n)
{
    *rows = NULL;
    *n = 0;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_OK;
    size_t cap = 0;
    sqlite3_stmt *st = pdb_prepare(
        d, "SELECT rowid, orthanc_id, sop_uid, series_uid, sop_class_uid, state, attempts,"
           " model_sha, probability, finding, priority, status, reason, warning, taken_ms,"
           " processed_ms, reported, info FROM instances WHERE study = ? ORDER BY rowid");
    if (!st) {
        r = CXR_ERR_TRIAGE_STORE;
        goto out;
    }
    cxr_sq_bind_text(st, 1, study);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!cxr_grow((void **)rows, &cap, *n, sizeof **rows, PDB_MAX_ROWS)) {
            pdb_set_error("out of memory (or more than %d rows) %s", PDB_MAX_ROWS,
                          "listing instances");
            r = CXR_ERR_NOMEM;
            break;
        }
        struct plugin_instance *p = &(*rows)[(*n)++];
        memset(p, 0, sizeof *p);
        struct cxr_triage_instance_row *x = &p->row;
        x->id = sqlite3_column_int64(st, 0);
        cxr_sq_col_text(st, 1, p->orthanc_id, sizeof p->orthanc_id);
        cxr_sq_col_text(st, 2, x->sop_instance_uid, sizeof x->sop_instance_uid);
        cxr_sq_col_text(st, 3, x->series_instance_uid, sizeof x->series_instance_uid);
        cxr_sq_col_text(st, 4, x->sop_class_uid, sizeof x->sop_class_uid);
        x->state = (enum cxr_triage_instance_state)sqlite3_column_int(st, 5);
        x->attempts = sqlite3_column_int(st, 6);
        cxr_sq_col_text(st, 7, p->model_sha, sizeof p->model_sha);
        x->probability = cxr_sq_col_real(st, 8);
        x->finding_present = sqlite3_column_int(st, 9) != 0;
        x->priority = sqlite3_column_int(st, 10);
        x->status = sqlite3_column_int(st, 11);
        cxr_sq_col_text(st, 12, x->reason, sizeof x->reason);
        cxr_sq_col_text(st, 13, x->warning, sizeof x->warning);
        x->received_ms = sqlite3_column_int64(st, 14);
        x->processed_ms = sqlite3_column_int64(st, 15);
        x->reported = sqlite3_column_int(st, 16) != 0;
        /* header values as JSON (schema 2; plugin_db_open converted older rows) */
        if (sqlite3_column_type(st, 17) == SQLITE_TEXT)
            x->has_info =
                cxr_triage_info_from_json((const char *)sqlite3_column_text(st, 17), &x->info);
        snprintf(x->study_instance_uid, sizeof x->study_instance_uid, "%s",
                 x->info.study_instance_uid);
    }
    if (r == CXR_OK && rc != SQLITE_DONE)
        r = pdb_fail(d, "list instances");
    sqlite3_finalize(st);
out:
    if (r != CXR_OK) {
        free(*rows);
        *rows = NULL;
        *n = 0;
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_study_is_own_sr(struct plugin_db *d, const char *study,
                                          const char *sop_uid, bool *own)
{
    *own = false;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_ERR_TRIAGE_STORE;
    sqlite3_stmt *st = pdb_prepare(d, "SELECT 1 FROM srs WHERE study = ? AND sop_uid = ?");
    if (st) {
        cxr_sq_bind_text(st, 1, study);
        cxr_sq_bind_text(st, 2, sop_uid);
        int rc = sqlite3_step(st);
        *own = rc == SQLITE_ROW;
        r = rc == SQLITE_ROW || rc == SQLITE_DONE ? CXR_OK : pdb_fail(d, "own SR");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_instances_take(struct plugin_db *d, const char *study,
                                         const struct plugin_take *takes, size_t n, int64_t now_ms,
                                         int32_t *attempts_out)
{
    pthread_mutex_lock(&d->lock);
    sqlite3_stmt *st = NULL;
    enum cxr_status r = pdb_begin(d);
    if (r != CXR_OK)
        goto out;
    /* Only takes that never ended count: a finished row starts again at 1. */
    st = pdb_prepare(d, "INSERT INTO instances(orthanc_id, study, sop_uid, state, attempts,"
                        " taken_ms) VALUES(?, ?, ?, 0, 1, ?)"
                        " ON CONFLICT(orthanc_id) DO UPDATE SET study = excluded.study,"
                        " sop_uid = excluded.sop_uid, taken_ms = excluded.taken_ms,"
                        " attempts = CASE WHEN state = 0 THEN attempts + 1 ELSE 1 END, state = 0"
                        " RETURNING attempts");
    if (!st) {
        r = CXR_ERR_TRIAGE_STORE;
        goto out;
    }
    for (size_t i = 0; i < n && r == CXR_OK; i++) {
        cxr_sq_bind_text(st, 1, takes[i].orthanc_id);
        cxr_sq_bind_text(st, 2, study);
        cxr_sq_bind_text(st, 3, takes[i].sop_uid);
        sqlite3_bind_int64(st, 4, now_ms);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            attempts_out[i] = sqlite3_column_int(st, 0);
            rc = sqlite3_step(st);
        }
        if (rc != SQLITE_DONE)
            r = pdb_fail(d, "take instances");
        sqlite3_reset(st);
    }
out:
    sqlite3_finalize(st);
    if (r == CXR_OK)
        r = pdb_commit(d);
    else
        pdb_rollback(d);
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_instances_unfinished(struct plugin_db *d, const struct plugin_take *takes,
                                               size_t n, int32_t *takes_out)
{
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_OK;
    sqlite3_stmt *st = pdb_prepare(d, "SELECT attempts FROM instances WHERE orthanc_id = ?"
                                      " AND state = 0");
    if (!st)
        r = CXR_ERR_TRIAGE_STORE;
    for (size_t i = 0; i < n && r == CXR_OK; i++) {
        cxr_sq_bind_text(st, 1, takes[i].orthanc_id);
        int rc = sqlite3_step(st);
        takes_out[i] = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            r = pdb_fail(d, "instances taken before");
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_instances_record(struct plugin_db *d, const char *study,
                                           const char *model_sha, const struct plugin_outcome *o,
                                           size_t n, int64_t now_ms)
{
    pthread_mutex_lock(&d->lock);
    sqlite3_stmt *st = NULL;
    enum cxr_status r = pdb_begin(d);
    if (r != CXR_OK)
        goto out;
    st = pdb_prepare(d,
                     "INSERT INTO instances(orthanc_id, study, sop_uid, series_uid,"
                     " sop_class_uid, state, model_sha, probability, finding, priority, status,"
                     " reason, warning, processed_ms, reported, info)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 0, ?15)"
                     " ON CONFLICT(orthanc_id) DO UPDATE SET study = ?2,"
                     " sop_uid = CASE WHEN ?3 = '' THEN sop_uid ELSE ?3 END, series_uid = ?4,"
                     " sop_class_uid = ?5, state = ?6, model_sha = ?7, probability = ?8,"
                     " finding = ?9, priority = ?10, status = ?11, reason = ?12, warning = ?13,"
                     " processed_ms = ?14, reported = 0, info = ?15");
    if (!st) {
        r = CXR_ERR_TRIAGE_STORE;
        goto out;
    }
    for (size_t i = 0; i < n && r == CXR_OK; i++) {
        const struct cxr_triage_result *res = o[i].result;
        const struct cxr_dicom_info *info = &res->info;
        cxr_sq_bind_text(st, 1, o[i].orthanc_id);
        cxr_sq_bind_text(st, 2, study);
        cxr_sq_bind_text(st, 3, info->sop_instance_uid);
        cxr_sq_bind_text(st, 4, info->series_instance_uid);
        cxr_sq_bind_text(st, 5, info->sop_class_uid);
        sqlite3_bind_int(
            st, 6, res->analysed ? CXR_TRIAGE_INSTANCE_ANALYSED : CXR_TRIAGE_INSTANCE_NOT_ANALYSED);
        cxr_sq_bind_text(st, 7, model_sha);
        cxr_sq_bind_real(st, 8, res->analysed ? res->probability : NAN);
        sqlite3_bind_int(st, 9, res->analysed && res->finding_present);
        sqlite3_bind_int(st, 10, res->analysed ? (int)res->priority : 0);
        sqlite3_bind_int(st, 11, (int)res->status);
        cxr_sq_bind_text(st, 12, res->analysed ? "" : res->reason);
        cxr_sq_bind_text(st, 13, res->warning);
        sqlite3_bind_int64(st, 14, now_ms);
        char *info_json = o[i].has_info ? cxr_triage_info_to_json(info) : NULL;
        if (o[i].has_info && !info_json) {
            pdb_set_error("out of memory recording results");
            r = CXR_ERR_NOMEM;
            break;
        }
        if (info_json)
            sqlite3_bind_text(st, 15, info_json, -1, free);
        else
            sqlite3_bind_null(st, 15);
        r = pdb_step_done(d, st, "record results");
    }
out:
    sqlite3_finalize(st);
    if (r == CXR_OK)
        r = pdb_commit(d);
    else
        pdb_rollback(d);
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* ------------------------------------------------------------------ decisions */

/* Runs `sql` with the text/int/real/blob parameters the caller bound via `bind`. */
static enum cxr_status run(struct plugin_db *d, const char *sql,
                           void (*bind)(sqlite3_stmt *, const void *), const void *ctx)
{
    sqlite3_stmt *st = pdb_prepare(d, sql);
    if (!st)
        return CXR_ERR_TRIAGE_STORE;
    bind(st, ctx);
    enum cxr_status r = pdb_step_done(d, st, sql);
    sqlite3_finalize(st);
    return r;
}

struct scored_args {
    const char *study, *model_sha, *model_version;
    int32_t priority;
    double score;
    const struct plugin_sr *sr;
    int64_t now_ms;
};

static void bind_study_update(sqlite3_stmt *st, const void *ctx)
{
    const struct scored_args *a = ctx;
    sqlite3_bind_int(st, 1, a->priority);
    cxr_sq_bind_real(st, 2, a->score);
    cxr_sq_bind_text(st, 3, a->model_sha);
    cxr_sq_bind_text(st, 4, a->model_version);
    sqlite3_bind_int64(st, 5, a->now_ms);
    sqlite3_bind_int(st, 6, a->sr ? PLUGIN_STUDY_SR_PENDING : PLUGIN_STUDY_DONE);
    cxr_sq_bind_text(st, 7, a->study);
}

static void bind_sr_update(sqlite3_stmt *st, const void *ctx)
{
    const struct scored_args *a = ctx;
    sqlite3_bind_blob(st, 1, a->sr->bytes, (int)a->sr->len, SQLITE_TRANSIENT);
    cxr_sq_bind_text(st, 2, a->sr->sop_uid);
    cxr_sq_bind_text(st, 3, a->sr->series_uid);
    cxr_sq_bind_text(st, 4, a->study);
}

static void bind_sr_insert(sqlite3_stmt *st, const void *ctx)
{
    const struct scored_args *a = ctx;
    cxr_sq_bind_text(st, 1, a->sr->sop_uid);
    cxr_sq_bind_text(st, 2, a->study);
    cxr_sq_bind_text(st, 3, a->sr->series_uid);
    cxr_sq_bind_text(st, 4, a->model_sha);
    sqlite3_bind_int64(st, 5, a->now_ms);
}

static void bind_study_sha(sqlite3_stmt *st, const void *ctx)
{
    const struct scored_args *a = ctx;
    cxr_sq_bind_text(st, 1, a->study);
    cxr_sq_bind_text(st, 2, a->model_sha);
}

enum cxr_status plugin_db_study_scored(struct plugin_db *d, const char *study,
                                       const char *model_sha, const char *model_version,
                                       int32_t priority, double score, const struct plugin_sr *sr,
                                       int64_t now_ms)
{
    if (sr && sr->len > 64u * 1024 * 1024) {
        pdb_set_error("SR of %zu bytes is too large to keep", sr->len);
        return CXR_ERR_LIMIT;
    }
    struct scored_args a = {study, model_sha, model_version, priority, score, sr, now_ms};
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = pdb_begin(d);
    /* counts of this model's results; priority and score never go down */
    if (r == CXR_OK)
        r = run(d,
                "UPDATE studies SET"
                " priority = max(priority, ?1),"
                " score = CASE WHEN ?2 IS NULL THEN score WHEN score IS NULL OR ?2 > score THEN ?2"
                "   ELSE score END,"
                " model_sha = ?3, model_version = ?4, scored_ms = ?5, state = ?6,"
                " analysed = (SELECT count(*) FROM instances i WHERE i.study = ?7 AND i.state = 1"
                "   AND i.model_sha = ?3),"
                " not_analysed = (SELECT count(*) FROM instances i WHERE i.study = ?7"
                "   AND i.state = 2 AND i.model_sha = ?3),"
                " attempts = 0, next_attempt_ms = 0, last_error = ''"
                " WHERE orthanc_id = ?7",
                bind_study_update, &a);
    if (r == CXR_OK && sr) {
        r = run(d,
                "UPDATE studies SET sr_blob = ?1, sr_sop_uid = ?2, sr_series_uid = ?3,"
                " rescan = 0 WHERE orthanc_id = ?4",
                bind_sr_update, &a);
        if (r == CXR_OK)
            r = run(d,
                    "INSERT INTO srs(sop_uid, study, series_uid, model_sha, priority, created_ms)"
                    " SELECT ?1, ?2, ?3, ?4, priority, ?5 FROM studies WHERE orthanc_id = ?2",
                    bind_sr_insert, &a);
        if (r == CXR_OK)
            r = run(d,
                    "UPDATE instances SET reported = 1 WHERE study = ?1 AND (state = 2 OR"
                    " (state = 1 AND model_sha = ?2))",
                    bind_study_sha, &a);
    }
    if (r == CXR_OK)
        r = pdb_commit(d);
    else
        pdb_rollback(d);
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_study_sr(struct plugin_db *d, const char *study, void **bytes,
                                   size_t *len, bool *found)
{
    *bytes = NULL;
    *len = 0;
    *found = false;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_ERR_TRIAGE_STORE;
    sqlite3_stmt *st = pdb_prepare(d, "SELECT sr_blob FROM studies WHERE orthanc_id = ?"
                                      " AND sr_blob IS NOT NULL");
    if (!st)
        goto out;
    cxr_sq_bind_text(st, 1, study);
    int rc = sqlite3_step(st);
    r = CXR_OK;
    if (rc == SQLITE_ROW) {
        int k = sqlite3_column_bytes(st, 0);
        const void *b = sqlite3_column_blob(st, 0);
        void *copy = malloc(k > 0 ? (size_t)k : 1);
        if (!copy) {
            pdb_set_error("out of memory reading the SR");
            r = CXR_ERR_NOMEM;
        } else {
            if (k > 0)
                memcpy(copy, b, (size_t)k);
            *bytes = copy;
            *len = (size_t)k;
            *found = true;
        }
    } else if (rc != SQLITE_DONE) {
        r = pdb_fail(d, "read SR");
    }
    sqlite3_finalize(st);
out:
    pthread_mutex_unlock(&d->lock);
    return r;
}

struct stored_args {
    const char *study, *sr_id, *series_id;
    int64_t now_ms;
};

static void bind_stored(sqlite3_stmt *st, const void *ctx)
{
    const struct stored_args *a = ctx;
    cxr_sq_bind_text(st, 1, a->sr_id);
    cxr_sq_bind_text(st, 2, a->series_id);
    sqlite3_bind_int64(st, 3, a->now_ms);
    cxr_sq_bind_text(st, 4, a->study);
}

enum cxr_status plugin_db_sr_stored(struct plugin_db *d, const char *study,
                                    const char *sr_orthanc_id, const char *sr_series_orthanc_id,
                                    const struct plugin_forward_new *fw, size_t nfw, int64_t now_ms)
{
    struct stored_args a = {study, sr_orthanc_id, sr_series_orthanc_id, now_ms};
    pthread_mutex_lock(&d->lock);
    sqlite3_stmt *ins = NULL;
    enum cxr_status r = pdb_begin(d);
    if (r == CXR_OK)
        r = run(d,
                "UPDATE srs SET orthanc_id = ?1, stored_ms = ?3 WHERE sop_uid ="
                " (SELECT sr_sop_uid FROM studies WHERE orthanc_id = ?4)",
                bind_stored, &a);
    /* a change seen while the SR was pending: look at the study again */
    if (r == CXR_OK)
        r = run(d,
                "UPDATE studies SET sr_blob = NULL, sr_orthanc_id = ?1,"
                " sr_series_orthanc_id = ?2, state = CASE WHEN rescan THEN 1 ELSE 3 END,"
                " queued_ms = CASE WHEN rescan THEN ?3 ELSE queued_ms END, rescan = 0,"
                " attempts = 0, next_attempt_ms = 0, last_error = '' WHERE orthanc_id = ?4",
                bind_stored, &a);
    if (r == CXR_OK && nfw > 0) {
        ins = pdb_prepare(
            d, "INSERT INTO forwards(study, kind, target, resource, state, attempts,"
               " next_attempt_ms, created_ms, updated_ms) VALUES(?, ?, ?, ?, 0, 0, ?, ?, ?)");
        if (!ins)
            r = CXR_ERR_TRIAGE_STORE;
        for (size_t i = 0; ins && i < nfw && r == CXR_OK; i++) {
            cxr_sq_bind_text(ins, 1, study);
            cxr_sq_bind_text(ins, 2, fw[i].kind);
            cxr_sq_bind_text(ins, 3, fw[i].target);
            cxr_sq_bind_text(ins, 4, fw[i].resource);
            sqlite3_bind_int64(ins, 5, now_ms);
            sqlite3_bind_int64(ins, 6, now_ms);
            sqlite3_bind_int64(ins, 7, now_ms);
            r = pdb_step_done(d, ins, "add forward");
        }
    }
    sqlite3_finalize(ins);
    if (r == CXR_OK)
        r = pdb_commit(d);
    else
        pdb_rollback(d);
    pthread_mutex_unlock(&d->lock);
    return r;
}

struct failed_args {
    const char *study, *error;
    int64_t next_ms;
};

static void bind_failed(sqlite3_stmt *st, const void *ctx)
{
    const struct failed_args *a = ctx;
    cxr_sq_bind_text(st, 1, a->error);
    sqlite3_bind_int64(st, 2, a->next_ms);
    cxr_sq_bind_text(st, 3, a->study);
}

enum cxr_status plugin_db_study_failed(struct plugin_db *d, const char *study, const char *error,
                                       int64_t next_attempt_ms)
{
    struct failed_args a = {study, error, next_attempt_ms};
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = run(d,
                            "UPDATE studies SET attempts = attempts + 1, last_error = ?1,"
                            " next_attempt_ms = ?2 WHERE orthanc_id = ?3",
                            bind_failed, &a);
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* ------------------------------------------------------------------ forwards */

#define FORWARD_COLUMNS                                                                \
    "id, study, kind, target, resource, state, attempts, next_attempt_ms, created_ms," \
    " updated_ms, last_error FROM forwards"

static void read_forward(sqlite3_stmt *st, struct plugin_forward *f)
{
    memset(f, 0, sizeof *f);
    f->id = sqlite3_column_int64(st, 0);
    cxr_sq_col_text(st, 1, f->study, sizeof f->study);
    cxr_sq_col_text(st, 2, f->kind, sizeof f->kind);
    cxr_sq_col_text(st, 3, f->target, sizeof f->target);
    cxr_sq_col_text(st, 4, f->resource, sizeof f->resource);
    f->state = sqlite3_column_int(st, 5);
    f->attempts = sqlite3_column_int(st, 6);
    f->next_attempt_ms = sqlite3_column_int64(st, 7);
    f->created_ms = sqlite3_column_int64(st, 8);
    f->updated_ms = sqlite3_column_int64(st, 9);
    cxr_sq_col_text(st, 10, f->last_error, sizeof f->last_error);
}

enum cxr_status plugin_db_forward_next(struct plugin_db *d, int64_t now_ms,
                                       struct plugin_forward *out, bool *found,
                                       int64_t *next_due_ms)
{
    *found = false;
    *next_due_ms = INT64_MAX;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_ERR_TRIAGE_STORE;
    sqlite3_stmt *st = pdb_prepare(d, "SELECT " FORWARD_COLUMNS " WHERE state = 0"
                                      " ORDER BY next_attempt_ms, id LIMIT 1");
    if (!st)
        goto out;
    int rc = sqlite3_step(st);
    r = CXR_OK;
    if (rc == SQLITE_ROW) {
        struct plugin_forward f;
        read_forward(st, &f);
        if (f.next_attempt_ms <= now_ms) {
            *out = f;
            *found = true;
        } else {
            *next_due_ms = f.next_attempt_ms;
        }
    } else if (rc != SQLITE_DONE) {
        r = pdb_fail(d, "next forward");
    }
    sqlite3_finalize(st);
out:
    pthread_mutex_unlock(&d->lock);
    return r;
}

struct fwd_update_args {
    int64_t id;
    int32_t state, attempts;
    int64_t next_ms, now_ms;
    const char *error;
};

static void bind_fwd_update(sqlite3_stmt *st, const void *ctx)
{
    const struct fwd_update_args *a = ctx;
    sqlite3_bind_int(st, 1, a->state);
    sqlite3_bind_int(st, 2, a->attempts);
    sqlite3_bind_int64(st, 3, a->next_ms);
    cxr_sq_bind_text(st, 4, a->error);
    sqlite3_bind_int64(st, 5, a->now_ms);
    sqlite3_bind_int64(st, 6, a->id);
}

enum cxr_status plugin_db_forward_update(struct plugin_db *d, int64_t id, int32_t state,
                                         int32_t attempts, int64_t next_attempt_ms,
                                         const char *error, int64_t now_ms)
{
    struct fwd_update_args a = {id, state, attempts, next_attempt_ms, now_ms, error};
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = run(d,
                            "UPDATE forwards SET state = ?1, attempts = ?2,"
                            " next_attempt_ms = ?3, last_error = ?4, updated_ms = ?5"
                            " WHERE id = ?6",
                            bind_fwd_update, &a);
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_forwards_list(struct plugin_db *d, int32_t state, const char *study,
                                        size_t limit, struct plugin_forward **rows, size_t *n)
{
    *rows = NULL;
    *n = 0;
    if (limit == 0 || limit > 100000)
        limit = 100000;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_OK;
    size_t cap = 0;
    sqlite3_stmt *st = pdb_prepare(d, "SELECT " FORWARD_COLUMNS
                                      " WHERE (?1 < 0 OR state = ?1) AND (?2 IS NULL OR study = ?2)"
                                      " ORDER BY id DESC LIMIT ?3");
    if (!st) {
        r = CXR_ERR_TRIAGE_STORE;
        goto out;
    }
    sqlite3_bind_int(st, 1, state);
    if (study)
        cxr_sq_bind_text(st, 2, study);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, (int64_t)limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!cxr_grow((void **)rows, &cap, *n, sizeof **rows, PDB_MAX_ROWS)) {
            pdb_set_error("out of memory (or more than %d rows) %s", PDB_MAX_ROWS,
                          "listing forwards");
            r = CXR_ERR_NOMEM;
            break;
        }
        read_forward(st, &(*rows)[(*n)++]);
    }
    if (r == CXR_OK && rc != SQLITE_DONE)
        r = pdb_fail(d, "list forwards");
    sqlite3_finalize(st);
out:
    if (r != CXR_OK) {
        free(*rows);
        *rows = NULL;
        *n = 0;
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_forwards_retry(struct plugin_db *d, int64_t id, int64_t now_ms,
                                         int64_t *count)
{
    *count = 0;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_ERR_TRIAGE_STORE;
    sqlite3_stmt *st = pdb_prepare(d, id > 0 ? "UPDATE forwards SET state = 0, attempts = 0,"
                                               " next_attempt_ms = ?1, updated_ms = ?1"
                                               " WHERE id = ?2 AND state IN (0, 2)"
                                             : "UPDATE forwards SET state = 0, attempts = 0,"
                                               " next_attempt_ms = ?1, updated_ms = ?1"
                                               " WHERE state = 2");
    if (st) {
        sqlite3_bind_int64(st, 1, now_ms);
        sqlite3_bind_int64(st, 2, id);
        r = pdb_step_done(d, st, "retry forwards");
        if (r == CXR_OK)
            *count = sqlite3_changes(d->db);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_counts(struct plugin_db *d, struct plugin_counts *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_ERR_TRIAGE_STORE;
    sqlite3_stmt *st = pdb_prepare(d, "SELECT"
                                      " (SELECT count(*) FROM studies WHERE state = 0),"
                                      " (SELECT count(*) FROM studies WHERE state = 1),"
                                      " (SELECT count(*) FROM studies WHERE state = 2),"
                                      " (SELECT count(*) FROM studies WHERE state = 3),"
                                      " (SELECT count(*) FROM instances WHERE state = 1),"
                                      " (SELECT count(*) FROM instances WHERE state = 2),"
                                      " (SELECT count(*) FROM srs),"
                                      " (SELECT count(*) FROM srs WHERE orthanc_id <> ''),"
                                      " (SELECT count(*) FROM forwards WHERE state = 0),"
                                      " (SELECT count(*) FROM forwards WHERE state = 1),"
                                      " (SELECT count(*) FROM forwards WHERE state = 2)");
    if (st) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            int64_t *v[] = {&c->waiting,
                            &c->queued,
                            &c->sr_pending,
                            &c->done,
                            &c->instances_analysed,
                            &c->instances_not_analysed,
                            &c->srs,
                            &c->srs_stored,
                            &c->forwards_pending,
                            &c->forwards_done,
                            &c->forwards_dead};
            for (int i = 0; i < (int)(sizeof v / sizeof v[0]); i++)
                *v[i] = sqlite3_column_int64(st, i);
            r = CXR_OK;
        } else {
            r = pdb_fail(d, "counts");
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}
