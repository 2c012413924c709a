/* store_sqlite.c — the job store on SQLite (see cxr/store.h): helpers,
 * instances, open/close; store_sqlite_reports.c has studies, reports and
 * deliveries.
 *
 * WAL journal. Durability per write: what the node promised a peer (a
 * received instance: instances_add) and what must not be made twice (an SR:
 * report_add) and an admin's queue commands commit with synchronous=FULL, on
 * disk when the call returns. Later steps that a power loss may only undo
 * (a job's attempt count, its result, a delivery's outcome) commit with
 * synchronous=NORMAL: in WAL mode they are in the OS at once (a crashed
 * process loses nothing) and reach the disk with the next FULL commit or
 * checkpoint; if a power loss undoes one, the step is simply done again and
 * each is idempotent (a rescored instance, a resent SR). This keeps
 * reception to one WAL sync per instance while scoring runs.
 * Readers (the HTTP thread, `cxr-triage queue` in another process) never
 * block the writer. Write transactions start with BEGIN IMMEDIATE so two
 * processes never deadlock on a lock upgrade; the busy timeout makes one
 * wait for the other. One connection per store object, serialised by a
 * mutex; with cxr_node_store_background_checkpoints a second one, used
 * only by the store's checkpoint thread.
 * Received instances are added in groups (one transaction, one sync for
 * the C-STOREs of concurrent associations); a small instance's bytes go
 * into instance_data in the same transaction as its row.
 */
#include "store_sqlite_internal.h"

#include "cxr/log.h"
#include "cxr/mem.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCHEMA_VERSION  4
#define BUSY_TIMEOUT_MS 15000

/* Version 2: small instances kept in the store (instances.in_store,
 * instance_data). Clearing in_store drops the bytes in the same statement.
 * Version 3: instances.info holds the header values as JSON text
 * (cxr_triage_info_to_json), no longer the struct's bytes.
 * Version 4: studies.read_ms, when a reader marked the study read. */
static const char *const schema_v2_sql =
    "CREATE TABLE IF NOT EXISTS instance_data("
    " instance_id INTEGER PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,"
    " data BLOB NOT NULL);"
    "CREATE TRIGGER IF NOT EXISTS instance_bytes_forgotten AFTER UPDATE OF in_store ON instances"
    " WHEN NEW.in_store=0 BEGIN DELETE FROM instance_data WHERE instance_id=NEW.id; END;";

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS instances("
    " id INTEGER PRIMARY KEY,"
    " sop_instance_uid TEXT NOT NULL UNIQUE,"
    " sop_class_uid TEXT NOT NULL DEFAULT '',"
    " transfer_syntax_uid TEXT NOT NULL DEFAULT '',"
    " path TEXT NOT NULL DEFAULT '',"
    " in_store INTEGER NOT NULL DEFAULT 0,"
    " size INTEGER NOT NULL DEFAULT 0,"
    " calling_ae TEXT NOT NULL DEFAULT '',"
    " peer_host TEXT NOT NULL DEFAULT '',"
    " received_ms INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " state INTEGER NOT NULL DEFAULT 0,"
    " study_instance_uid TEXT NOT NULL DEFAULT '',"
    " series_instance_uid TEXT NOT NULL DEFAULT '',"
    " probability REAL,"
    " finding INTEGER NOT NULL DEFAULT 0,"
    " priority INTEGER NOT NULL DEFAULT 0,"
    " status INTEGER NOT NULL DEFAULT 0,"
    " reason TEXT NOT NULL DEFAULT '',"
    " warning TEXT NOT NULL DEFAULT '',"
    " processed_ms INTEGER NOT NULL DEFAULT 0,"
    " reported INTEGER NOT NULL DEFAULT 0,"
    " info TEXT);"
    "CREATE INDEX IF NOT EXISTS instances_state ON instances(state, received_ms);"
    "CREATE INDEX IF NOT EXISTS instances_study ON instances(study_instance_uid);"
    "CREATE INDEX IF NOT EXISTS instances_path ON instances(path);"
    "CREATE TABLE IF NOT EXISTS studies("
    " study_instance_uid TEXT PRIMARY KEY,"
    " accession_number TEXT NOT NULL DEFAULT '',"
    " patient_id TEXT NOT NULL DEFAULT '',"
    " study_date TEXT NOT NULL DEFAULT '',"
    " study_description TEXT NOT NULL DEFAULT '',"
    " first_received_ms INTEGER NOT NULL,"
    " last_received_ms INTEGER NOT NULL,"
    " priority INTEGER NOT NULL DEFAULT 0,"
    " score REAL,"
    " analysed INTEGER NOT NULL DEFAULT 0,"
    " not_analysed INTEGER NOT NULL DEFAULT 0,"
    " unreported INTEGER NOT NULL DEFAULT 0,"
    " sr_count INTEGER NOT NULL DEFAULT 0,"
    " last_sr_sop_instance_uid TEXT NOT NULL DEFAULT '',"
    " last_sr_series_instance_uid TEXT NOT NULL DEFAULT '',"
    " last_sr_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS studies_unreported ON studies(unreported);"
    "CREATE INDEX IF NOT EXISTS studies_last ON studies(last_received_ms);"
    "CREATE TABLE IF NOT EXISTS srs("
    " id INTEGER PRIMARY KEY,"
    " study_instance_uid TEXT NOT NULL,"
    " sop_instance_uid TEXT NOT NULL UNIQUE,"
    " series_instance_uid TEXT NOT NULL,"
    " path TEXT NOT NULL,"
    " predecessor_sop_instance_uid TEXT NOT NULL DEFAULT '',"
    " priority INTEGER NOT NULL,"
    " study_last_received_ms INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS srs_study ON srs(study_instance_uid);"
    "CREATE INDEX IF NOT EXISTS srs_path ON srs(path);"
    "CREATE TABLE IF NOT EXISTS deliveries("
    " id INTEGER PRIMARY KEY,"
    " sr_id INTEGER NOT NULL REFERENCES srs(id),"
    " destination TEXT NOT NULL,"
    " state INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_ms INTEGER NOT NULL,"
    " last_error TEXT NOT NULL DEFAULT '',"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " UNIQUE(sr_id, destination));"
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(destination, state, next_attempt_ms);"
    "CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(state);";

/* ------------------------------------------------------------------ helpers */

enum cxr_status sq_fail(struct sq_store *s, int rc, const char *what)
{
    cxr_node_store_set_error("job store %s: %s: %s", s->path, what,
                             s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    return cxr_sq_status(rc);
}

int sq_exec(struct sq_store *s, const char *sql)
{
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL);
}

int sq_prepare(struct sq_store *s, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
}

void sq_lock(struct sq_store *s) { pthread_mutex_lock(&s->mu); }
void sq_unlock(struct sq_store *s) { pthread_mutex_unlock(&s->mu); }

/* Rolls back a failed write transaction; the error text already set stays. */
void sq_rollback(struct sq_store *s) { cxr_sq_rollback(s->db); }

/* A growable row array capped at MAX_ROWS. */
bool sq_grow(void **rows, size_t *cap, size_t n, size_t elem)
{
    return cxr_grow(rows, cap, n, elem, MAX_ROWS);
}

enum cxr_status sq_exec_write(struct sq_store *s, enum sq_durability d, const char *sql, int64_t a,
                              int64_t b, int64_t c, int64_t *changes, const char *what)
{
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    sq_lock(s);
    int rc = sq_set_durability(s, d);
    if (rc == SQLITE_OK)
        rc = sq_prepare(s, sql, &st);
    if (rc == SQLITE_OK) {
        if (a != INT64_MIN)
            sqlite3_bind_int64(st, 1, a);
        if (b != INT64_MIN)
            sqlite3_bind_int64(st, 2, b);
        if (c != INT64_MIN)
            sqlite3_bind_int64(st, 3, c);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE && changes)
            *changes = sqlite3_changes(s->db);
    }
    if (rc != SQLITE_DONE)
        ret = sq_fail(s, rc, what);
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

int sq_set_durability(struct sq_store *s, enum sq_durability d)
{
    if (s->sync_level == (int)d)
        return SQLITE_OK;
    int rc = sq_exec(s, d == SQ_PROMISED ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    if (rc == SQLITE_OK)
        s->sync_level = (int)d;
    return rc;
}

/* ------------------------------------------------------------------ instances */

#define INSTANCE_COLS                                                                              \
    "id, sop_instance_uid, sop_class_uid, transfer_syntax_uid, path, size, calling_ae, peer_host," \
    " received_ms, attempts, state, study_instance_uid, series_instance_uid, probability,"         \
    " finding, priority, status, reason, warning, processed_ms, reported, info, in_store"

static void read_instance(sqlite3_stmt *st, struct cxr_triage_instance_row *r)
{
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(st, 0);
    cxr_sq_col_text(st, 1, r->sop_instance_uid, sizeof r->sop_instance_uid);
    cxr_sq_col_text(st, 2, r->sop_class_uid, sizeof r->sop_class_uid);
    cxr_sq_col_text(st, 3, r->transfer_syntax_uid, sizeof r->transfer_syntax_uid);
    cxr_sq_col_text(st, 4, r->path, sizeof r->path);
    r->size = (uint64_t)sqlite3_column_int64(st, 5);
    cxr_sq_col_text(st, 6, r->calling_ae, sizeof r->calling_ae);
    cxr_sq_col_text(st, 7, r->peer_host, sizeof r->peer_host);
    r->received_ms = sqlite3_column_int64(st, 8);
    r->attempts = sqlite3_column_int(st, 9);
    r->state = (enum cxr_triage_instance_state)sqlite3_column_int(st, 10);
    cxr_sq_col_text(st, 11, r->study_instance_uid, sizeof r->study_instance_uid);
    cxr_sq_col_text(st, 12, r->series_instance_uid, sizeof r->series_instance_uid);
    r->probability = cxr_sq_col_real(st, 13);
    r->finding_present = sqlite3_column_int(st, 14) != 0;
    r->priority = sqlite3_column_int(st, 15);
    r->status = sqlite3_column_int(st, 16);
    cxr_sq_col_text(st, 17, r->reason, sizeof r->reason);
    cxr_sq_col_text(st, 18, r->warning, sizeof r->warning);
    r->processed_ms = sqlite3_column_int64(st, 19);
    r->reported = sqlite3_column_int(st, 20) != 0;
    /* The header values, as JSON (schema 3; migrate() converted older rows). */
    if (sqlite3_column_type(st, 21) == SQLITE_TEXT)
        r->has_info =
            cxr_triage_info_from_json((const char *)sqlite3_column_text(st, 21), &r->info);
    r->in_store = sqlite3_column_int(st, 22) != 0;
}

/* Steps a prepared SELECT of INSTANCE_COLS into a malloc'd array. */
static enum cxr_status collect_instances(struct sq_store *s, sqlite3_stmt *st,
                                         struct cxr_triage_instance_row **rows, size_t *n)
{
    struct cxr_triage_instance_row *v = NULL;
    size_t cap = 0, k = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!sq_grow((void **)&v, &cap, k, sizeof *v)) {
            free(v);
            cxr_node_store_set_error("job store %s: too many rows", s->path);
            return CXR_ERR_LIMIT;
        }
        read_instance(st, &v[k++]);
    }
    if (rc != SQLITE_DONE) {
        free(v);
        return sq_fail(s, rc, "reading instances");
    }
    *rows = v;
    *n = k;
    return CXR_OK;
}

/* Inserts one received instance (and its bytes) inside the caller's
 * transaction; SQLITE_OK or the failing step's code. */
static int insert_one(struct sq_store *s, sqlite3_stmt *ins, sqlite3_stmt *data,
                      struct cxr_node_store_new_instance *it)
{
    const struct cxr_triage_instance_row *row = it->row;
    sqlite3_reset(ins);
    cxr_sq_bind_text(ins, 1, row->sop_instance_uid);
    cxr_sq_bind_text(ins, 2, row->sop_class_uid);
    cxr_sq_bind_text(ins, 3, row->transfer_syntax_uid);
    cxr_sq_bind_text(ins, 4, row->path);
    sqlite3_bind_int64(ins, 5, (sqlite3_int64)row->size);
    cxr_sq_bind_text(ins, 6, row->calling_ae);
    cxr_sq_bind_text(ins, 7, row->peer_host);
    sqlite3_bind_int64(ins, 8, row->received_ms);
    sqlite3_bind_int(ins, 9, it->data ? 1 : 0);
    if (sqlite3_step(ins) != SQLITE_DONE)
        return sqlite3_errcode(s->db);
    it->duplicate = sqlite3_changes(s->db) == 0;
    it->id = it->duplicate ? 0 : sqlite3_last_insert_rowid(s->db);
    if (!it->data || it->duplicate)
        return SQLITE_OK;
    sqlite3_reset(data);
    sqlite3_bind_int64(data, 1, it->id);
    sqlite3_bind_blob(data, 2, it->data_len ? it->data : "", (int)it->data_len, SQLITE_STATIC);
    return sqlite3_step(data) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
}

/* Received instances (rows, and the bytes of those kept in the store) in
 * one durable commit: all or none. */
static enum cxr_status sq_instances_add(struct cxr_node_store *base,
                                        struct cxr_node_store_new_instance *items, size_t n)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *ins = NULL, *data = NULL;
    enum cxr_status ret = CXR_OK;
    for (size_t i = 0; i < n; i++) {
        items[i].duplicate = false;
        items[i].id = 0;
        if (items[i].data && items[i].data_len > (size_t)INT32_MAX) {
            cxr_node_store_set_error("job store %s: %zu bytes are too many to keep in the store",
                                     s->path, items[i].data_len);
            return CXR_ERR_LIMIT;
        }
    }
    sq_lock(s);
    int rc = sq_set_durability(s, SQ_PROMISED);
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "starting a transaction");
        goto done;
    }
    rc = sq_prepare(s,
                    "INSERT INTO instances(sop_instance_uid, sop_class_uid, transfer_syntax_uid,"
                    " path, size, calling_ae, peer_host, received_ms, in_store)"
                    " VALUES(?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(sop_instance_uid) DO NOTHING",
                    &ins);
    if (rc == SQLITE_OK)
        rc = sq_prepare(s, "INSERT INTO instance_data(instance_id, data) VALUES(?,?)", &data);
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++)
        rc = insert_one(s, ins, data, &items[i]);
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "COMMIT");
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "recording received instances");
        sq_rollback(s);
        for (size_t i = 0; i < n; i++) {
            items[i].duplicate = false;
            items[i].id = 0;
        }
    }
done:
    sqlite3_finalize(ins);
    sqlite3_finalize(data);
    sq_unlock(s);
    return ret;
}

static enum cxr_status sq_instance_data(struct cxr_node_store *base, int64_t id, void **data,
                                        size_t *len)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    *data = NULL;
    *len = 0;
    sq_lock(s);
    int rc = sq_prepare(s, "SELECT data FROM instance_data WHERE instance_id=?", &st);
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "preparing an instance read");
        goto done;
    }
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        cxr_node_store_set_error("job store %s: no bytes kept for instance %" PRId64, s->path, id);
        ret = CXR_ERR_NOT_FOUND;
        goto done;
    }
    if (rc != SQLITE_ROW) {
        ret = sq_fail(s, rc, "reading an instance kept in the store");
        goto done;
    }
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    const void *p = sqlite3_column_blob(st, 0);
    void *copy = malloc(n ? n : 1);
    if (!copy) {
        cxr_node_store_set_error("job store %s: out of memory reading %zu bytes", s->path, n);
        ret = CXR_ERR_NOMEM;
        goto done;
    }
    if (n)
        memcpy(copy, p, n);
    *data = copy;
    *len = n;
done:
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

static enum cxr_status sq_instance_find(struct cxr_node_store *base, const char *uid, bool *found)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    *found = false;
    sq_lock(s);
    int rc = sq_prepare(s, "SELECT 1 FROM instances WHERE sop_instance_uid=?", &st);
    if (rc == SQLITE_OK) {
        cxr_sq_bind_text(st, 1, uid);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *found = true;
        else if (rc != SQLITE_DONE)
            ret = sq_fail(s, rc, "looking up an instance");
    } else {
        ret = sq_fail(s, rc, "preparing lookup");
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

static enum cxr_status sq_instances_pending(struct cxr_node_store *base, int64_t after_id,
                                            size_t limit, struct cxr_triage_instance_row **rows,
                                            size_t *n)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret;
    *rows = NULL;
    *n = 0;
    sq_lock(s);
    int rc = sq_prepare(s,
                        "SELECT " INSTANCE_COLS " FROM instances WHERE state=0 AND id>?"
                        " ORDER BY id LIMIT ?",
                        &st);
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "preparing pending query");
    } else {
        sqlite3_bind_int64(st, 1, after_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)(limit ? limit : MAX_ROWS));
        ret = collect_instances(s, st, rows, n);
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

static enum cxr_status sq_instances_claim(struct cxr_node_store *base, const int64_t *ids, size_t n)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    sq_lock(s);
    int rc = sq_set_durability(s, SQ_REDOABLE);
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "starting a transaction");
        goto done;
    }
    rc = sq_prepare(s, "UPDATE instances SET attempts=attempts+1 WHERE id=?", &st);
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, ids[i]);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    }
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "COMMIT");
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "claiming jobs");
        sq_rollback(s);
    }
done:
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

/* One outcome: the instance's result, then its study (upsert). Runs inside
 * the caller's transaction. */
static int record_one(struct sq_store *s, sqlite3_stmt *upd, sqlite3_stmt *study,
                      const struct cxr_node_store_outcome *o, int64_t processed_ms)
{
    const struct cxr_triage_result *r = o->result;
    const struct cxr_dicom_info *info = &r->info;
    sqlite3_reset(upd);
    sqlite3_clear_bindings(upd);
    sqlite3_bind_int(upd, 1,
                     r->analysed ? CXR_TRIAGE_INSTANCE_ANALYSED : CXR_TRIAGE_INSTANCE_NOT_ANALYSED);
    cxr_sq_bind_text(upd, 2, info->study_instance_uid);
    cxr_sq_bind_text(upd, 3, info->series_instance_uid);
    cxr_sq_bind_real(upd, 4, r->analysed ? r->probability : NAN);
    sqlite3_bind_int(upd, 5, r->analysed && r->finding_present);
    sqlite3_bind_int(upd, 6, r->analysed ? (int)r->priority : CXR_TRIAGE_PRIORITY_NOT_ANALYSED);
    sqlite3_bind_int(upd, 7, (int)r->status);
    cxr_sq_bind_text(upd, 8, r->analysed ? "" : r->reason);
    cxr_sq_bind_text(upd, 9, r->warning);
    char *info_json = o->has_info ? cxr_triage_info_to_json(info) : NULL;
    if (o->has_info && !info_json)
        return SQLITE_NOMEM;
    if (info_json)
        sqlite3_bind_text(upd, 10, info_json, -1, free);
    else
        sqlite3_bind_null(upd, 10);
    sqlite3_bind_int64(upd, 11, processed_ms);
    sqlite3_bind_int64(upd, 12, o->instance_id);
    int rc = sqlite3_step(upd);
    if (rc != SQLITE_DONE)
        return rc;
    /* Already processed (a worker ran twice on it): the study has it. */
    if (sqlite3_changes(s->db) == 0 || !info->study_instance_uid[0])
        return SQLITE_OK;
    sqlite3_reset(study);
    sqlite3_clear_bindings(study);
    cxr_sq_bind_text(study, 1, info->study_instance_uid);
    cxr_sq_bind_text(study, 2, info->accession_number);
    cxr_sq_bind_text(study, 3, info->patient_id);
    cxr_sq_bind_text(study, 4, info->study_date);
    cxr_sq_bind_text(study, 5, info->study_description);
    sqlite3_bind_int64(study, 6, o->instance_id);
    sqlite3_bind_int(study, 7, r->analysed ? (int)r->priority : CXR_TRIAGE_PRIORITY_NOT_ANALYSED);
    cxr_sq_bind_real(study, 8, r->analysed ? r->probability : NAN);
    sqlite3_bind_int(study, 9, r->analysed ? 1 : 0);
    sqlite3_bind_int(study, 10, r->analysed ? 0 : 1);
    rc = sqlite3_step(study);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static enum cxr_status sq_record(struct cxr_node_store *base,
                                 const struct cxr_node_store_outcome *outcomes, size_t n,
                                 int64_t processed_ms)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *upd = NULL, *study = NULL;
    enum cxr_status ret = CXR_OK;
    sq_lock(s);
    int rc = sq_set_durability(s, SQ_REDOABLE);
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "starting a transaction");
        goto done;
    }
    rc = sq_prepare(s,
                    "UPDATE instances SET state=?, study_instance_uid=?, series_instance_uid=?,"
                    " probability=?, finding=?, priority=?, status=?, reason=?, warning=?, info=?,"
                    " processed_ms=?, reported=0 WHERE id=? AND state=0",
                    &upd);
    if (rc == SQLITE_OK)
        rc = sq_prepare(
            s,
            "INSERT INTO studies(study_instance_uid, accession_number, patient_id, study_date,"
            " study_description, first_received_ms, last_received_ms, priority, score, analysed,"
            " not_analysed, unreported)"
            " SELECT ?1, ?2, ?3, ?4, ?5, received_ms, received_ms, ?7, ?8, ?9, ?10, 1"
            " FROM instances WHERE id=?6"
            " ON CONFLICT(study_instance_uid) DO UPDATE SET"
            "  first_received_ms=min(first_received_ms, excluded.first_received_ms),"
            "  last_received_ms=max(last_received_ms, excluded.last_received_ms),"
            "  priority=max(priority, excluded.priority),"
            "  score=CASE WHEN score IS NULL THEN excluded.score"
            "             WHEN excluded.score IS NULL THEN score"
            "             ELSE max(score, excluded.score) END,"
            "  analysed=analysed+excluded.analysed,"
            "  not_analysed=not_analysed+excluded.not_analysed,"
            "  unreported=unreported+1,"
            "  accession_number=CASE WHEN accession_number='' THEN excluded.accession_number"
            "                        ELSE accession_number END,"
            "  patient_id=CASE WHEN patient_id='' THEN excluded.patient_id ELSE patient_id END,"
            "  study_date=CASE WHEN study_date='' THEN excluded.study_date ELSE study_date END,"
            "  study_description=CASE WHEN study_description='' THEN excluded.study_description"
            "                         ELSE study_description END",
            &study);
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++)
        rc = record_one(s, upd, study, &outcomes[i], processed_ms);
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "COMMIT");
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "recording results");
        sq_rollback(s);
    }
done:
    sqlite3_finalize(upd);
    sqlite3_finalize(study);
    sq_unlock(s);
    return ret;
}

static enum cxr_status sq_pending_oldest(struct cxr_node_store *base, int64_t *received_ms,
                                         bool *any)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    *any = false;
    *received_ms = 0;
    sq_lock(s);
    int rc = sq_prepare(s, "SELECT min(received_ms) FROM instances WHERE state=0", &st);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
            *any = true;
            *received_ms = sqlite3_column_int64(st, 0);
        }
    } else {
        ret = sq_fail(s, rc, "finding the oldest job");
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

static enum cxr_status sq_study_instances(struct cxr_node_store *base, const char *uid,
                                          struct cxr_triage_instance_row **rows, size_t *n)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret;
    *rows = NULL;
    *n = 0;
    sq_lock(s);
    int rc = sq_prepare(s,
                        "SELECT " INSTANCE_COLS " FROM instances WHERE study_instance_uid=?"
                        " AND state<>0 ORDER BY id",
                        &st);
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "preparing study query");
    } else {
        cxr_sq_bind_text(st, 1, uid);
        ret = collect_instances(s, st, rows, n);
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

static enum cxr_status sq_instances_expired(struct cxr_node_store *base, int64_t before_ms,
                                            size_t limit, struct cxr_triage_instance_row **rows,
                                            size_t *n)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret;
    *rows = NULL;
    *n = 0;
    sq_lock(s);
    int rc = sq_prepare(s,
                        "SELECT " INSTANCE_COLS " FROM instances WHERE state<>0 AND path<>''"
                        " AND (reported=1 OR study_instance_uid='') AND received_ms<?"
                        " ORDER BY id LIMIT ?",
                        &st);
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "preparing retention query");
    } else {
        sqlite3_bind_int64(st, 1, before_ms);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)(limit ? limit : MAX_ROWS));
        ret = collect_instances(s, st, rows, n);
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

static enum cxr_status sq_instance_forget_file(struct cxr_node_store *base, int64_t id)
{
    /* the trigger instance_bytes_forgotten drops kept bytes in the same statement */
    return sq_exec_write((struct sq_store *)base, SQ_REDOABLE,
                         "UPDATE instances SET path='', in_store=0 WHERE id=?1", id, INT64_MIN,
                         INT64_MIN, NULL, "forgetting a spool file");
}

static enum cxr_status sq_path_known(struct cxr_node_store *base, const char *path, bool *known)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    *known = false;
    sq_lock(s);
    int rc = sq_prepare(s,
                        "SELECT 1 FROM instances WHERE path=?1 UNION ALL"
                        " SELECT 1 FROM srs WHERE path=?1 LIMIT 1",
                        &st);
    if (rc == SQLITE_OK) {
        cxr_sq_bind_text(st, 1, path);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *known = true;
        else if (rc != SQLITE_DONE)
            ret = sq_fail(s, rc, "looking up a spool file");
    } else {
        ret = sq_fail(s, rc, "preparing path lookup");
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

/* ------------------------------------------------------------------ open / close */

/* ------------------------------------------------------------------ checkpoints */

/* WAL frames that wake the checkpoint thread (16 KiB pages: 4 MiB). */
#define CK_WAKE_PAGES 256
/* With fewer frames it still runs after this quiet time, so that an idle
 * store's WAL is fully copied and the next write starts it over. */
#define CK_IDLE_MS    1000

static int ck_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    struct sq_store *s = arg;
    pthread_mutex_lock(&s->ck.mu);
    s->ck.wal_pages = pages;
    if (pages >= CK_WAKE_PAGES)
        pthread_cond_signal(&s->ck.cv);
    pthread_mutex_unlock(&s->ck.mu);
    return SQLITE_OK;
}

static void *ck_main(void *arg)
{
    struct sq_store *s = arg;
    pthread_mutex_lock(&s->ck.mu);
    while (!s->ck.stop) {
        if (s->ck.wal_pages < CK_WAKE_PAGES) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += CK_IDLE_MS / 1000;
            int pages = s->ck.wal_pages;
            if (pthread_cond_timedwait(&s->ck.cv, &s->ck.mu, &until) != 0 &&
                s->ck.wal_pages == pages && pages == 0)
                continue; /* quiet and nothing to copy */
            if (s->ck.stop)
                break;
        }
        s->ck.wal_pages = 0;
        pthread_mutex_unlock(&s->ck.mu);
        /* PASSIVE: copies what no reader still needs, never blocks a writer. */
        int log = 0, done = 0;
        int rc = sqlite3_wal_checkpoint_v2(s->ck.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            cxr_log(CXR_LOG_WARN, "store", "job store %s: checkpoint: %s", s->path,
                    sqlite3_errmsg(s->ck.db));
        pthread_mutex_lock(&s->ck.mu);
        s->ck.runs++;
    }
    pthread_mutex_unlock(&s->ck.mu);
    return NULL;
}

static enum cxr_status sq_background_checkpoints(struct cxr_node_store *base)
{
    struct sq_store *s = (struct sq_store *)base;
    if (s->ck.started)
        return CXR_OK;
    int rc = sqlite3_open_v2(s->path, &s->ck.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(s->ck.db, BUSY_TIMEOUT_MS);
        rc = sqlite3_exec(s->ck.db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        cxr_node_store_set_error("job store %s: checkpoint connection: %s", s->path,
                                 s->ck.db ? sqlite3_errmsg(s->ck.db) : sqlite3_errstr(rc));
        sqlite3_close_v2(s->ck.db);
        s->ck.db = NULL;
        return CXR_ERR_IO;
    }
    /* the checkpoint connection never writes: its own automatic checkpoint stays idle */
    pthread_mutex_init(&s->ck.mu, NULL);
    pthread_cond_init(&s->ck.cv, NULL);
    s->ck.stop = false;
    if (pthread_create(&s->ck.thread, NULL, ck_main, s) != 0) {
        pthread_cond_destroy(&s->ck.cv);
        pthread_mutex_destroy(&s->ck.mu);
        sqlite3_close_v2(s->ck.db);
        s->ck.db = NULL;
        cxr_node_store_set_error("job store %s: cannot start the checkpoint thread", s->path);
        return CXR_ERR_INTERNAL;
    }
    sq_lock(s);
    sqlite3_wal_hook(s->db, ck_wal_hook, s); /* replaces the automatic checkpoint */
    sq_unlock(s);
    s->ck.started = true;
    return CXR_OK;
}

static void sq_close(struct cxr_node_store *base)
{
    struct sq_store *s = (struct sq_store *)base;
    if (s->ck.started) {
        pthread_mutex_lock(&s->ck.mu);
        s->ck.stop = true;
        pthread_cond_signal(&s->ck.cv);
        pthread_mutex_unlock(&s->ck.mu);
        pthread_join(s->ck.thread, NULL);
        sqlite3_close_v2(s->ck.db);
        pthread_cond_destroy(&s->ck.cv);
        pthread_mutex_destroy(&s->ck.mu);
        if (s->db)
            sqlite3_wal_autocheckpoint(s->db, 1000); /* close checkpoints as usual */
    }
    if (s->db)
        sqlite3_close_v2(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static const struct cxr_node_store_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .instances_add = sq_instances_add,
    .instance_data = sq_instance_data,
    .background_checkpoints = sq_background_checkpoints,
    .instance_find = sq_instance_find,
    .instances_pending = sq_instances_pending,
    .instances_claim = sq_instances_claim,
    .record = sq_record,
    .pending_oldest = sq_pending_oldest,
    .studies_unreported = sq_studies_unreported,
    .study_instances = sq_study_instances,
    .report_add = sq_report_add,
    .delivery_next = sq_delivery_next,
    .delivery_update = sq_delivery_update,
    .deliveries_list = sq_deliveries_list,
    .deliveries_retry = sq_deliveries_retry,
    .deliveries_drop = sq_deliveries_drop,
    .studies_list = sq_studies_list,
    .study_get = sq_study_get,
    .study_mark_read = sq_study_mark_read,
    .counts = sq_counts,
    .path_known = sq_path_known,
    .instances_expired = sq_instances_expired,
    .instance_forget_file = sq_instance_forget_file,
};

/* Schema 1-2 kept each instance's header values as a memory image of the
 * struct: rewrite them as JSON (inside the caller's transaction). A blob of
 * another size cannot be read: it becomes NULL, and the header is read again
 * from the instance's bytes when they are still there. */
static int convert_info_blobs(struct sq_store *s)
{
    sqlite3_stmt *q = NULL, *upd = NULL;
    int rc = sq_prepare(s, "SELECT id, info FROM instances WHERE typeof(info)='blob'", &q);
    if (rc == SQLITE_OK)
        rc = sq_prepare(s, "UPDATE instances SET info=? WHERE id=?", &upd);
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct cxr_dicom_info info;
        char *json = NULL;
        if (cxr_triage_info_from_legacy_blob(sqlite3_column_blob(q, 1),
                                             (size_t)sqlite3_column_bytes(q, 1), &info)) {
            json = cxr_triage_info_to_json(&info);
            if (!json) {
                rc = SQLITE_NOMEM;
                break;
            }
        }
        sqlite3_reset(upd);
        if (json)
            sqlite3_bind_text(upd, 1, json, -1, free);
        else
            sqlite3_bind_null(upd, 1);
        sqlite3_bind_int64(upd, 2, sqlite3_column_int64(q, 0));
        rc = sqlite3_step(upd) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    sqlite3_finalize(q);
    sqlite3_finalize(upd);
    return rc;
}

/* Whether `table` has a column `column` (an upgrade adds only what lacks). */
static bool has_column(struct sq_store *s, const char *table, const char *column)
{
    sqlite3_stmt *st = NULL;
    bool found = false;
    if (sq_prepare(s, "SELECT 1 FROM pragma_table_info(?1) WHERE name=?2", &st) == SQLITE_OK) {
        cxr_sq_bind_text(st, 1, table);
        cxr_sq_bind_text(st, 2, column);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

/* Creates the tables of a new file, or upgrades an older one in one
 * transaction (a file from a newer version is refused rather than misread). */
static enum cxr_status migrate(struct sq_store *s)
{
    sqlite3_stmt *st = NULL;
    int version = 0;
    int rc = sq_prepare(s, "PRAGMA user_version", &st);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        return sq_fail(s, rc, "reading the schema version");
    if (version > SCHEMA_VERSION) {
        cxr_node_store_set_error("job store %s has schema version %d; this program knows %d:"
                                 " use the newer cxr-triage that wrote it",
                                 s->path, version, SCHEMA_VERSION);
        return CXR_ERR_UNSUPPORTED;
    }
    if (version == SCHEMA_VERSION)
        return CXR_OK;
    rc = sq_exec(s, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK && version == 0)
        rc = sq_exec(s, schema_sql);
    if (rc == SQLITE_OK && version == 1) /* a store of the first version: files only */
        rc = sq_exec(s, "ALTER TABLE instances ADD COLUMN in_store INTEGER NOT NULL DEFAULT 0");
    if (rc == SQLITE_OK)
        rc = sq_exec(s, schema_v2_sql);
    if (rc == SQLITE_OK && version >= 1 && version <= 2)
        rc = convert_info_blobs(s);
    if (rc == SQLITE_OK && version < 4 && !has_column(s, "studies", "read_ms"))
        rc = sq_exec(s, "ALTER TABLE studies ADD COLUMN read_ms INTEGER NOT NULL DEFAULT 0");
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "PRAGMA user_version=4");
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "COMMIT");
    if (rc != SQLITE_OK) {
        enum cxr_status ret =
            sq_fail(s, rc, version == 0 ? "creating the tables" : "upgrading the schema");
        sq_rollback(s);
        return ret;
    }
    return CXR_OK;
}

enum cxr_status cxr_node_store_open_sqlite(const char *path, bool readonly,
                                           struct cxr_node_store **out, char *err)
{
    enum cxr_status st = CXR_OK;
    *out = NULL;
    struct sq_store *s = calloc(1, sizeof *s);
    if (!s)
        return CXR_ERR_NOMEM;
    s->base.ops = &sq_ops;
    pthread_mutex_init(&s->mu, NULL);
    snprintf(s->path, sizeof s->path, "%s", path);
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = sqlite3_open_v2(path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        st = sq_fail(s, rc, readonly ? "cannot open (does it exist?)" : "cannot open or create");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(s->db, 0);
    if (!readonly) {
        /* A new file gets 16 KiB pages: an instance kept in the store (a
         * few hundred KiB) is then a quarter of the WAL frames and write
         * calls it is with 4 KiB pages (measured: its durable commit 0.74 ->
         * 0.53 ms). A no-op on an existing file; must precede WAL. */
        sq_exec(s, "PRAGMA page_size=16384");
        /* WAL must really be on: another process reads while we write. */
        sqlite3_stmt *q = NULL;
        char mode[16] = "";
        rc = sq_prepare(s, "PRAGMA journal_mode=WAL", &q);
        if (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
            cxr_sq_col_text(q, 0, mode, sizeof mode);
        sqlite3_finalize(q);
        if (rc != SQLITE_OK || strcmp(mode, "wal") != 0) {
            st = sq_fail(s, rc == SQLITE_OK ? SQLITE_ERROR : rc,
                         "cannot switch to WAL (is the folder on a local filesystem?)");
            goto fail;
        }
    }
    rc = sq_exec(s, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON");
    s->sync_level = SQ_PROMISED;
    if (rc != SQLITE_OK) {
        st = sq_fail(s, rc, "setting durability pragmas");
        goto fail;
    }
    if (!readonly) {
        st = migrate(s);
        if (st != CXR_OK)
            goto fail;
    } else {
        /* A reader cannot upgrade: an older store is named, not misread. */
        sqlite3_stmt *q = NULL;
        int version = SCHEMA_VERSION;
        if (sq_prepare(s, "PRAGMA user_version", &q) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
            version = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
        if (version != SCHEMA_VERSION) {
            cxr_node_store_set_error(
                "job store %s has schema version %d; this program reads %d:"
                " %s",
                s->path, version, SCHEMA_VERSION,
                version < SCHEMA_VERSION
                    ? "start the node (or run a queue command that writes) once to upgrade it"
                    : "use the newer cxr-triage that wrote it");
            st = CXR_ERR_UNSUPPORTED;
            goto fail;
        }
    }
    *out = &s->base;
    return CXR_OK;

fail:
    if (err)
        snprintf(err, CXR_NODE_STORE_ERRLEN, "%s", cxr_node_store_last_error());
    sq_close(&s->base);
    return st;
}
