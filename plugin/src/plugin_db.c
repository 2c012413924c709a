/* plugin_db.c — the plugin's SQLite store: helpers, open, the change-log
 * cursor, the study queue and study rows (see plugin_db.h). Results, SRs and
 * forwards are in plugin_db_results.c.
 *
 * One connection, serialised by a mutex (the worker, the forwarder and
 * Orthanc's HTTP threads share it; every call is short). WAL journal with
 * synchronous=FULL: a call that changes state returns once it is on disk.
 * Write transactions start with BEGIN IMMEDIATE so another process reading
 * the file (sqlite3 by an admin) never deadlocks a lock upgrade.
 */
#include "cxr/mem.h"
#include "plugin_db_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Version 2: instances.info holds the header values as JSON text
 * (cxr_triage_info_to_json); version 1 (cxr-triage 0.1.0) kept the struct's
 * bytes, converted when the plugin opens such a file. */
#define SCHEMA_VERSION  3
#define BUSY_TIMEOUT_MS 15000

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS studies("
    " orthanc_id TEXT PRIMARY KEY,"
    " study_uid TEXT NOT NULL DEFAULT '',"
    " accession TEXT NOT NULL DEFAULT '',"
    " patient_id TEXT NOT NULL DEFAULT '',"
    " study_date TEXT NOT NULL DEFAULT '',"
    " description TEXT NOT NULL DEFAULT '',"
    " state INTEGER NOT NULL,"
    " first_seen_ms INTEGER NOT NULL,"
    " last_change_ms INTEGER NOT NULL,"
    " queued_ms INTEGER NOT NULL DEFAULT 0,"
    " priority INTEGER NOT NULL DEFAULT 0,"
    " score REAL,"
    " analysed INTEGER NOT NULL DEFAULT 0,"
    " not_analysed INTEGER NOT NULL DEFAULT 0,"
    " model_sha TEXT NOT NULL DEFAULT '',"
    " model_version TEXT NOT NULL DEFAULT '',"
    " scored_ms INTEGER NOT NULL DEFAULT 0,"
    " sr_blob BLOB,"
    " sr_sop_uid TEXT NOT NULL DEFAULT '',"
    " sr_series_uid TEXT NOT NULL DEFAULT '',"
    " sr_orthanc_id TEXT NOT NULL DEFAULT '',"
    " sr_series_orthanc_id TEXT NOT NULL DEFAULT '',"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT NOT NULL DEFAULT '',"
    " rescan INTEGER NOT NULL DEFAULT 0,"
    " read_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS studies_state ON studies(state, queued_ms);"
    "CREATE INDEX IF NOT EXISTS studies_uid ON studies(study_uid);"
    "CREATE INDEX IF NOT EXISTS studies_first ON studies(first_seen_ms);"
    "CREATE TABLE IF NOT EXISTS instances("
    " orthanc_id TEXT PRIMARY KEY,"
    " study TEXT NOT NULL,"
    " sop_uid TEXT NOT NULL DEFAULT '',"
    " series_uid TEXT NOT NULL DEFAULT '',"
    " sop_class_uid TEXT NOT NULL DEFAULT '',"
    " state INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " model_sha TEXT NOT NULL DEFAULT '',"
    " probability REAL,"
    " finding INTEGER NOT NULL DEFAULT 0,"
    " priority INTEGER NOT NULL DEFAULT 0,"
    " status INTEGER NOT NULL DEFAULT 0,"
    " reason TEXT NOT NULL DEFAULT '',"
    " warning TEXT NOT NULL DEFAULT '',"
    " taken_ms INTEGER NOT NULL DEFAULT 0,"
    " processed_ms INTEGER NOT NULL DEFAULT 0,"
    " reported INTEGER NOT NULL DEFAULT 0,"
    " info TEXT);"
    "CREATE INDEX IF NOT EXISTS instances_study ON instances(study);"
    "CREATE TABLE IF NOT EXISTS srs("
    " sop_uid TEXT PRIMARY KEY,"
    " study TEXT NOT NULL,"
    " series_uid TEXT NOT NULL,"
    " orthanc_id TEXT NOT NULL DEFAULT '',"
    " model_sha TEXT NOT NULL,"
    " priority INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " stored_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS srs_study ON srs(study);"
    "CREATE TABLE IF NOT EXISTS forwards("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " study TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " target TEXT NOT NULL,"
    " resource TEXT NOT NULL,"
    " state INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " last_error TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS forwards_due ON forwards(state, next_attempt_ms);"
    "CREATE INDEX IF NOT EXISTS forwards_study ON forwards(study);";

/* ------------------------------------------------------------------ helpers */

static __thread char db_error[PLUGIN_DB_ERRLEN];

const char *plugin_db_last_error(void) { return db_error; }

void pdb_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db_error, sizeof db_error, fmt, ap);
    va_end(ap);
}

enum cxr_status pdb_fail(struct plugin_db *d, const char *what)
{
    int rc = d->db ? sqlite3_errcode(d->db) : SQLITE_ERROR;
    pdb_set_error("plugin queue %s: %s: %s", d->path, what,
                  d->db ? sqlite3_errmsg(d->db) : "not open");
    return cxr_sq_status(rc);
}

enum cxr_status pdb_begin(struct plugin_db *d)
{
    return sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK
               ? CXR_OK
               : pdb_fail(d, "begin");
}

enum cxr_status pdb_commit(struct plugin_db *d)
{
    if (sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return CXR_OK;
    enum cxr_status st = pdb_fail(d, "commit");
    sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    return st;
}

void pdb_rollback(struct plugin_db *d) { cxr_sq_rollback(d->db); }

sqlite3_stmt *pdb_prepare(struct plugin_db *d, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK) {
        pdb_fail(d, "prepare");
        return NULL;
    }
    return st;
}

enum cxr_status pdb_step_done(struct plugin_db *d, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    enum cxr_status r = rc == SQLITE_DONE || rc == SQLITE_ROW ? CXR_OK : pdb_fail(d, what);
    sqlite3_reset(st);
    return r;
}

/* One statement with integer/text parameters given as "i" (int64) / "s"
 * (string) in `types`; no rows expected. Holds no lock (callers do). */
static enum cxr_status exec_args(struct plugin_db *d, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st = pdb_prepare(d, sql);
    if (!st)
        return CXR_ERR_TRIAGE_STORE;
    va_list ap;
    va_start(ap, types);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 'i')
            sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        else
            cxr_sq_bind_text(st, i + 1, va_arg(ap, const char *));
    }
    va_end(ap);
    enum cxr_status r = pdb_step_done(d, st, sql);
    sqlite3_finalize(st);
    return r;
}

/* A single integer from a query with one text parameter (may be NULL: none). */
static enum cxr_status query_int(struct plugin_db *d, const char *sql, const char *arg,
                                 int64_t *out, bool *found)
{
    sqlite3_stmt *st = pdb_prepare(d, sql);
    if (!st)
        return CXR_ERR_TRIAGE_STORE;
    if (arg)
        cxr_sq_bind_text(st, 1, arg);
    int rc = sqlite3_step(st);
    enum cxr_status r = CXR_OK;
    if (found)
        *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
        r = pdb_fail(d, sql);
    sqlite3_finalize(st);
    return r;
}

/* Schema 1 (cxr-triage 0.1.0) kept each instance's header values as the
 * struct's bytes: rewrite them as JSON and say so in meta, in one
 * transaction. A blob that is not 0.1.0's layout becomes NULL (the plugin
 * reads the header again from Orthanc when it needs it). */
static enum cxr_status upgrade_v1(struct plugin_db *d)
{
    enum cxr_status r = pdb_begin(d);
    if (r != CXR_OK)
        return r;
    sqlite3_stmt *q = pdb_prepare(d, "SELECT rowid, info FROM instances WHERE typeof(info)='blob'");
    sqlite3_stmt *upd = q ? pdb_prepare(d, "UPDATE instances SET info = ? WHERE rowid = ?") : NULL;
    if (!q || !upd)
        r = CXR_ERR_TRIAGE_STORE;
    int rc = SQLITE_ROW;
    while (r == CXR_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct cxr_dicom_info info;
        char *json = NULL;
        if (cxr_triage_info_from_legacy_blob(sqlite3_column_blob(q, 1),
                                             (size_t)sqlite3_column_bytes(q, 1), &info) &&
            !(json = cxr_triage_info_to_json(&info))) {
            pdb_set_error("out of memory upgrading the plugin queue");
            r = CXR_ERR_NOMEM;
            break;
        }
        if (json)
            sqlite3_bind_text(upd, 1, json, -1, free);
        else
            sqlite3_bind_null(upd, 1);
        sqlite3_bind_int64(upd, 2, sqlite3_column_int64(q, 0));
        r = pdb_step_done(d, upd, "convert header values");
    }
    if (r == CXR_OK && rc != SQLITE_DONE)
        r = pdb_fail(d, "read header values");
    sqlite3_finalize(q);
    sqlite3_finalize(upd);
    if (r == CXR_OK)
        r = exec_args(d, "UPDATE meta SET value = 2 WHERE key = 'schema'", "");
    if (r == CXR_OK)
        return pdb_commit(d);
    pdb_rollback(d);
    return r;
}

/* Schema 3: studies.read_ms, when a reader marked the study read. */
static enum cxr_status upgrade_v2(struct plugin_db *d)
{
    enum cxr_status r = pdb_begin(d);
    if (r != CXR_OK)
        return r;
    int64_t have = 0;
    r = query_int(d, "SELECT count(*) FROM pragma_table_info('studies') WHERE name = 'read_ms'",
                  NULL, &have, NULL);
    if (r == CXR_OK && have == 0)
        r = exec_args(d, "ALTER TABLE studies ADD COLUMN read_ms INTEGER NOT NULL DEFAULT 0", "");
    if (r == CXR_OK)
        r = exec_args(d, "UPDATE meta SET value = 3 WHERE key = 'schema'", "");
    if (r == CXR_OK)
        return pdb_commit(d);
    pdb_rollback(d);
    return r;
}

enum cxr_status pdb_unfinished(struct plugin_db *d, int64_t *n)
{
    return query_int(d, "SELECT count(*) FROM studies WHERE state IN (0, 1, 2)", NULL, n, NULL);
}

const char *plugin_study_state_name(int32_t state)
{
    switch (state) {
    case PLUGIN_STUDY_WAITING: return "waiting";
    case PLUGIN_STUDY_QUEUED: return "queued";
    case PLUGIN_STUDY_SR_PENDING: return "sr-pending";
    case PLUGIN_STUDY_DONE: return "done";
    }
    return "unknown";
}

const char *plugin_forward_state_name(int32_t state)
{
    switch (state) {
    case PLUGIN_FORWARD_PENDING: return "pending";
    case PLUGIN_FORWARD_DONE: return "done";
    case PLUGIN_FORWARD_DEAD: return "dead";
    }
    return "unknown";
}

/* ------------------------------------------------------------------ open */

enum cxr_status plugin_db_open(const char *path, struct plugin_db **out, char *err)
{
    *out = NULL;
    struct plugin_db *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, PLUGIN_DB_ERRLEN, "out of memory");
        return CXR_ERR_NOMEM;
    }
    snprintf(d->path, sizeof d->path, "%s", path);
    pthread_mutex_init(&d->lock, NULL);
    enum cxr_status st = CXR_ERR_TRIAGE_STORE;
    int rc = sqlite3_open_v2(
        path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, PLUGIN_DB_ERRLEN, "cannot open the plugin queue %s: %s", path,
                 d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(d->db, BUSY_TIMEOUT_MS);
    char *msg = NULL;
    if (sqlite3_exec(d->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL,
                     &msg) != SQLITE_OK ||
        sqlite3_exec(d->db, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, PLUGIN_DB_ERRLEN, "plugin queue %s: %s", path, msg ? msg : "schema");
        sqlite3_free(msg);
        goto fail;
    }
    int64_t version = 0;
    bool found = false;
    if (query_int(d, "SELECT value FROM meta WHERE key = 'schema'", NULL, &version, &found) !=
        CXR_OK) {
        snprintf(err, PLUGIN_DB_ERRLEN, "%s", plugin_db_last_error());
        goto fail;
    }
    if (found && version == 1 && upgrade_v1(d) != CXR_OK) {
        snprintf(err, PLUGIN_DB_ERRLEN, "plugin queue %s: upgrading from schema version 1: %s",
                 path, plugin_db_last_error());
        goto fail;
    }
    if (found && (version == 1 || version == 2) && upgrade_v2(d) != CXR_OK) {
        snprintf(err, PLUGIN_DB_ERRLEN, "plugin queue %s: upgrading from schema version 2: %s",
                 path, plugin_db_last_error());
        goto fail;
    }
    if (found && version != 1 && version != 2 && version != SCHEMA_VERSION) {
        snprintf(err, PLUGIN_DB_ERRLEN,
                 "plugin queue %s has schema version %lld, this plugin knows %d: use the plugin "
                 "version that made it, or move the file away",
                 path, (long long)version, SCHEMA_VERSION);
        goto fail;
    }
    if (!found && exec_args(d, "INSERT INTO meta(key, value) VALUES('schema', ?)", "i",
                            (int64_t)SCHEMA_VERSION) != CXR_OK) {
        snprintf(err, PLUGIN_DB_ERRLEN, "%s", plugin_db_last_error());
        goto fail;
    }
    *out = d;
    return CXR_OK;
fail:
    plugin_db_close(d);
    return st;
}

void plugin_db_close(struct plugin_db *d)
{
    if (!d)
        return;
    if (d->db)
        sqlite3_close(d->db);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* ------------------------------------------------------------------ cursor */

enum cxr_status plugin_db_cursor(struct plugin_db *d, int64_t *seq, bool *have)
{
    pthread_mutex_lock(&d->lock);
    *seq = 0;
    enum cxr_status r =
        query_int(d, "SELECT value FROM meta WHERE key = 'cursor'", NULL, seq, have);
    pthread_mutex_unlock(&d->lock);
    return r;
}

static enum cxr_status cursor_set_locked(struct plugin_db *d, int64_t seq)
{
    return exec_args(d,
                     "INSERT INTO meta(key, value) VALUES('cursor', ?)"
                     " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     "i", seq);
}

enum cxr_status plugin_db_cursor_set(struct plugin_db *d, int64_t seq)
{
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = cursor_set_locked(d, seq);
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* ------------------------------------------------------------------ queue */

/* Whether a study row exists; *state its state. */
static enum cxr_status study_state(struct plugin_db *d, const char *id, int64_t *state, bool *found)
{
    return query_int(d, "SELECT state FROM studies WHERE orthanc_id = ?", id, state, found);
}

static enum cxr_status study_insert(struct plugin_db *d, const char *id, int32_t state,
                                    int64_t seen_ms, int64_t now_ms)
{
    return exec_args(d,
                     "INSERT INTO studies(orthanc_id, state, first_seen_ms, last_change_ms,"
                     " queued_ms) VALUES(?, ?, ?, ?, ?)",
                     "siiii", id, (int64_t)state, seen_ms, seen_ms,
                     state == PLUGIN_STUDY_QUEUED ? now_ms : (int64_t)0);
}

static enum cxr_status forget_locked(struct plugin_db *d, const char *id)
{
    enum cxr_status r = exec_args(d, "DELETE FROM instances WHERE study = ?", "s", id);
    if (r == CXR_OK)
        r = exec_args(d, "DELETE FROM forwards WHERE study = ?", "s", id);
    if (r == CXR_OK)
        r = exec_args(d, "DELETE FROM srs WHERE study = ?", "s", id);
    if (r == CXR_OK)
        r = exec_args(d, "DELETE FROM studies WHERE orthanc_id = ?", "s", id);
    return r;
}

/* One change, inside the caller's transaction. *refused: it would add a
 * study beyond the limit (nothing done). */
static enum cxr_status apply_one(struct plugin_db *d, const struct plugin_change *c, int64_t limit,
                                 int64_t *unfinished, int64_t now_ms, bool *refused)
{
    *refused = false;
    if (c->kind == PLUGIN_CHANGE_IGNORE || !c->study[0])
        return CXR_OK;
    int64_t state = 0;
    bool found = false;
    enum cxr_status r = study_state(d, c->study, &state, &found);
    if (r != CXR_OK)
        return r;
    int64_t when = c->time_ms > 0 ? c->time_ms : now_ms;
    switch (c->kind) {
    case PLUGIN_CHANGE_DELETED: return found ? forget_locked(d, c->study) : CXR_OK;
    case PLUGIN_CHANGE_SEEN:
        if (!found) {
            if (*unfinished >= limit) {
                *refused = true;
                return CXR_OK;
            }
            (*unfinished)++;
            return study_insert(d, c->study, PLUGIN_STUDY_WAITING, when, now_ms);
        }
        if (state == PLUGIN_STUDY_DONE) {
            /* a late series: look again once Orthanc calls it stable */
            (*unfinished)++;
            return exec_args(
                d, "UPDATE studies SET state = 0, last_change_ms = ? WHERE orthanc_id = ?", "is",
                now_ms, c->study);
        }
        if (state == PLUGIN_STUDY_SR_PENDING) /* look again once the SR is stored */
            return exec_args(d, "UPDATE studies SET rescan = 1 WHERE orthanc_id = ?", "s",
                             c->study);
        if (state == PLUGIN_STUDY_WAITING)
            return exec_args(d, "UPDATE studies SET last_change_ms = ? WHERE orthanc_id = ?", "is",
                             now_ms, c->study);
        return CXR_OK; /* queued: the scoring will see every instance */
    case PLUGIN_CHANGE_STABLE:
        if (!found) {
            if (*unfinished >= limit) {
                *refused = true;
                return CXR_OK;
            }
            (*unfinished)++;
            return study_insert(d, c->study, PLUGIN_STUDY_QUEUED, when, now_ms);
        }
        if (state == PLUGIN_STUDY_SR_PENDING)
            return exec_args(d, "UPDATE studies SET rescan = 1 WHERE orthanc_id = ?", "s",
                             c->study);
        if (state == PLUGIN_STUDY_QUEUED)
            return CXR_OK;
        if (state == PLUGIN_STUDY_DONE)
            (*unfinished)++;
        return exec_args(d, "UPDATE studies SET state = 1, queued_ms = ? WHERE orthanc_id = ?",
                         "is", now_ms, c->study);
    case PLUGIN_CHANGE_IGNORE: break;
    }
    return CXR_OK;
}

enum cxr_status plugin_db_apply_changes(struct plugin_db *d, const struct plugin_change *changes,
                                        size_t n, int64_t limit, int64_t now_ms, size_t *applied)
{
    *applied = 0;
    if (n == 0)
        return CXR_OK;
    pthread_mutex_lock(&d->lock);
    int64_t unfinished = 0;
    enum cxr_status r = pdb_begin(d);
    if (r == CXR_OK)
        r = pdb_unfinished(d, &unfinished);
    size_t k = 0;
    for (; r == CXR_OK && k < n; k++) {
        bool refused = false;
        r = apply_one(d, &changes[k], limit, &unfinished, now_ms, &refused);
        if (refused)
            break;
    }
    if (r == CXR_OK && k > 0)
        r = cursor_set_locked(d, changes[k - 1].seq);
    if (r == CXR_OK)
        r = pdb_commit(d);
    else
        pdb_rollback(d);
    if (r == CXR_OK)
        *applied = k;
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_study_enqueue(struct plugin_db *d, const char *id, int64_t limit,
                                        int64_t now_ms)
{
    pthread_mutex_lock(&d->lock);
    int64_t state = 0, unfinished = 0;
    bool found = false;
    enum cxr_status r = pdb_begin(d);
    if (r == CXR_OK)
        r = study_state(d, id, &state, &found);
    if (r == CXR_OK && !found) {
        r = pdb_unfinished(d, &unfinished);
        if (r == CXR_OK && unfinished >= limit) {
            pdb_set_error("the plugin's queue is full (%lld studies, plugin/queue-limit)",
                          (long long)unfinished);
            r = CXR_ERR_LIMIT;
        }
        if (r == CXR_OK)
            r = study_insert(d, id, PLUGIN_STUDY_QUEUED, now_ms, now_ms);
    } else if (r == CXR_OK && state == PLUGIN_STUDY_SR_PENDING) {
        r = exec_args(d, "UPDATE studies SET rescan = 1 WHERE orthanc_id = ?", "s", id);
    } else if (r == CXR_OK) {
        r = exec_args(d,
                      "UPDATE studies SET state = 1, queued_ms = ?, attempts = 0,"
                      " next_attempt_ms = 0 WHERE orthanc_id = ?",
                      "is", now_ms, id);
    }
    if (r == CXR_OK)
        r = pdb_commit(d);
    else
        pdb_rollback(d);
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* Study identifiers of a query whose parameters are bound already; the
 * statement is finalized. Holds no lock (callers do). */
static enum cxr_status study_ids(struct plugin_db *d, sqlite3_stmt *st, size_t max,
                                 char (*ids)[PLUGIN_ID_LEN], size_t *n, const char *what)
{
    enum cxr_status r = CXR_OK;
    int rc = SQLITE_DONE;
    while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
        cxr_sq_col_text(st, 0, ids[(*n)++], PLUGIN_ID_LEN);
    if (*n < max && rc != SQLITE_DONE)
        r = pdb_fail(d, what);
    sqlite3_finalize(st);
    return r;
}

enum cxr_status plugin_db_waiting_due(struct plugin_db *d, int64_t before_ms, size_t max,
                                      char (*ids)[PLUGIN_ID_LEN], size_t *n)
{
    *n = 0;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_ERR_TRIAGE_STORE;
    sqlite3_stmt *st = pdb_prepare(d, "SELECT orthanc_id FROM studies WHERE state = 0 AND"
                                      " last_change_ms <= ? ORDER BY last_change_ms LIMIT ?");
    if (st) {
        sqlite3_bind_int64(st, 1, before_ms);
        sqlite3_bind_int64(st, 2, (int64_t)max);
        r = study_ids(d, st, max, ids, n, "waiting studies");
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_unfinished_ids(struct plugin_db *d, const char *after, size_t max,
                                         char (*ids)[PLUGIN_ID_LEN], size_t *n)
{
    *n = 0;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_ERR_TRIAGE_STORE;
    sqlite3_stmt *st = pdb_prepare(d, "SELECT orthanc_id FROM studies WHERE state IN (0, 1, 2)"
                                      " AND orthanc_id > ? ORDER BY orthanc_id LIMIT ?");
    if (st) {
        cxr_sq_bind_text(st, 1, after);
        sqlite3_bind_int64(st, 2, (int64_t)max);
        r = study_ids(d, st, max, ids, n, "unfinished studies");
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_study_touch(struct plugin_db *d, const char *id, int64_t now_ms)
{
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = exec_args(d, "UPDATE studies SET last_change_ms = ? WHERE orthanc_id = ?",
                                  "is", now_ms, id);
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_study_stable(struct plugin_db *d, const char *id, int64_t now_ms)
{
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = exec_args(d,
                                  "UPDATE studies SET state = 1, queued_ms = ?"
                                  " WHERE orthanc_id = ? AND state = 0",
                                  "is", now_ms, id);
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_study_forget(struct plugin_db *d, const char *id)
{
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = pdb_begin(d);
    if (r == CXR_OK)
        r = forget_locked(d, id);
    if (r == CXR_OK)
        r = pdb_commit(d);
    else
        pdb_rollback(d);
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* ------------------------------------------------------------------ study rows */

#define STUDY_COLUMNS                                                                           \
    "s.orthanc_id, s.study_uid, s.accession, s.patient_id, s.study_date, s.description,"        \
    " s.state, s.first_seen_ms, s.last_change_ms, s.queued_ms, s.priority, s.score,"            \
    " s.analysed, s.not_analysed, s.model_sha, s.model_version, s.scored_ms, s.sr_sop_uid,"     \
    " s.sr_series_uid, s.sr_orthanc_id, s.sr_series_orthanc_id, s.attempts, s.next_attempt_ms," \
    " s.last_error,"                                                                            \
    " (SELECT count(*) FROM srs WHERE srs.study = s.orthanc_id),"                               \
    " (SELECT coalesce(max(created_ms), 0) FROM srs WHERE srs.study = s.orthanc_id),"           \
    " (SELECT count(*) FROM instances i WHERE i.study = s.orthanc_id AND i.state = 1"           \
    "   AND i.reported = 0),"                                                                   \
    " (SELECT count(*) FROM forwards f WHERE f.study = s.orthanc_id AND f.state = 0),"          \
    " (SELECT count(*) FROM forwards f WHERE f.study = s.orthanc_id AND f.state = 1),"          \
    " (SELECT count(*) FROM forwards f WHERE f.study = s.orthanc_id AND f.state = 2),"          \
    " (SELECT coalesce(max(stored_ms), 0) FROM srs WHERE srs.study = s.orthanc_id),"            \
    " (SELECT i.warning FROM instances i WHERE i.study = s.orthanc_id AND i.warning <> ''"      \
    "   ORDER BY i.rowid LIMIT 1),"                                                             \
    " (SELECT i.reason FROM instances i WHERE i.study = s.orthanc_id AND i.state = 2"           \
    "   AND i.reason <> '' ORDER BY i.rowid LIMIT 1),"                                          \
    " s.read_ms"                                                                                \
    " FROM studies s"

static void read_study(sqlite3_stmt *st, struct plugin_study *s)
{
    memset(s, 0, sizeof *s);
    struct cxr_triage_study_row *r = &s->row;
    cxr_sq_col_text(st, 0, s->orthanc_id, sizeof s->orthanc_id);
    cxr_sq_col_text(st, 1, r->study_instance_uid, sizeof r->study_instance_uid);
    cxr_sq_col_text(st, 2, r->accession_number, sizeof r->accession_number);
    cxr_sq_col_text(st, 3, r->patient_id, sizeof r->patient_id);
    cxr_sq_col_text(st, 4, r->study_date, sizeof r->study_date);
    cxr_sq_col_text(st, 5, r->study_description, sizeof r->study_description);
    s->state = sqlite3_column_int(st, 6);
    r->first_received_ms = sqlite3_column_int64(st, 7);
    r->last_received_ms = sqlite3_column_int64(st, 8);
    s->queued_ms = sqlite3_column_int64(st, 9);
    r->priority = sqlite3_column_int(st, 10);
    r->score = cxr_sq_col_real(st, 11);
    r->analysed = sqlite3_column_int(st, 12);
    r->not_analysed = sqlite3_column_int(st, 13);
    cxr_sq_col_text(st, 14, s->model_sha, sizeof s->model_sha);
    cxr_sq_col_text(st, 15, s->model_version, sizeof s->model_version);
    s->scored_ms = sqlite3_column_int64(st, 16);
    cxr_sq_col_text(st, 17, r->last_sr_sop_instance_uid, sizeof r->last_sr_sop_instance_uid);
    cxr_sq_col_text(st, 18, r->last_sr_series_instance_uid, sizeof r->last_sr_series_instance_uid);
    cxr_sq_col_text(st, 19, s->sr_orthanc_id, sizeof s->sr_orthanc_id);
    cxr_sq_col_text(st, 20, s->sr_series_orthanc_id, sizeof s->sr_series_orthanc_id);
    s->attempts = sqlite3_column_int(st, 21);
    s->next_attempt_ms = sqlite3_column_int64(st, 22);
    cxr_sq_col_text(st, 23, s->last_error, sizeof s->last_error);
    r->sr_count = sqlite3_column_int(st, 24);
    r->last_sr_ms = sqlite3_column_int64(st, 25);
    r->unreported = sqlite3_column_int(st, 26);
    r->deliveries_pending = sqlite3_column_int(st, 27);
    r->deliveries_delivered = sqlite3_column_int(st, 28);
    r->deliveries_dead = sqlite3_column_int(st, 29);
    s->sr_stored_ms = sqlite3_column_int64(st, 30);
    cxr_sq_col_text(st, 31, r->warning, sizeof r->warning);
    cxr_sq_col_text(st, 32, r->reason, sizeof r->reason);
    r->read_ms = sqlite3_column_int64(st, 33);
}

/* Runs a study query (one row wanted); *found says whether there was one. */
static enum cxr_status one_study(struct plugin_db *d, sqlite3_stmt *st, struct plugin_study *out,
                                 bool *found)
{
    int rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        read_study(st, out);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? CXR_OK : pdb_fail(d, "study");
}

enum cxr_status plugin_db_next_job(struct plugin_db *d, int64_t now_ms, struct plugin_study *out,
                                   bool *found, int64_t *next_due_ms)
{
    *found = false;
    *next_due_ms = INT64_MAX;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_OK;
    /* SRs waiting to be stored first (finish what was started), then the
     * oldest queued study; a step that failed waits for its next attempt. */
    sqlite3_stmt *st =
        pdb_prepare(d, "SELECT " STUDY_COLUMNS " WHERE s.state IN (1, 2) AND s.next_attempt_ms <= ?"
                       " ORDER BY s.state DESC, s.queued_ms, s.orthanc_id LIMIT 1");
    if (!st) {
        r = CXR_ERR_TRIAGE_STORE;
        goto out;
    }
    sqlite3_bind_int64(st, 1, now_ms);
    r = one_study(d, st, out, found);
    sqlite3_finalize(st);
    if (r == CXR_OK && !*found) {
        int64_t next = 0;
        bool any = false;
        r = query_int(d,
                      "SELECT min(next_attempt_ms) FROM studies WHERE state IN (1, 2)"
                      " HAVING count(*) > 0",
                      NULL, &next, &any);
        if (r == CXR_OK && any)
            *next_due_ms = next;
    }
out:
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_study_get(struct plugin_db *d, const char *key, bool by_uid,
                                    struct plugin_study *out, bool *found)
{
    *found = false;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_ERR_TRIAGE_STORE;
    sqlite3_stmt *st = pdb_prepare(d, by_uid ? "SELECT " STUDY_COLUMNS " WHERE s.study_uid = ?"
                                               " ORDER BY s.first_seen_ms DESC LIMIT 1"
                                             : "SELECT " STUDY_COLUMNS " WHERE s.orthanc_id = ?");
    if (st) {
        cxr_sq_bind_text(st, 1, key);
        r = one_study(d, st, out, found);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_study_mark_read(struct plugin_db *d, const char *id, int64_t read_ms,
                                          bool *found)
{
    *found = false;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_ERR_TRIAGE_STORE;
    sqlite3_stmt *st = pdb_prepare(d, "UPDATE studies SET read_ms = ?1 WHERE orthanc_id = ?2");
    if (st) {
        sqlite3_bind_int64(st, 1, read_ms);
        cxr_sq_bind_text(st, 2, id);
        r = pdb_step_done(d, st, "mark a study read");
        *found = r == CXR_OK && sqlite3_changes(d->db) > 0;
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

enum cxr_status plugin_db_studies_list(struct plugin_db *d, int64_t since_ms, size_t limit,
                                       struct plugin_study **rows, size_t *n)
{
    *rows = NULL;
    *n = 0;
    if (limit == 0 || limit > 100000)
        limit = 100000;
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = CXR_OK;
    size_t cap = 0;
    sqlite3_stmt *st = pdb_prepare(d, "SELECT " STUDY_COLUMNS " WHERE s.first_seen_ms >= ?"
                                      " ORDER BY s.first_seen_ms DESC LIMIT ?");
    if (!st) {
        r = CXR_ERR_TRIAGE_STORE;
        goto out;
    }
    sqlite3_bind_int64(st, 1, since_ms);
    sqlite3_bind_int64(st, 2, (int64_t)limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!cxr_grow((void **)rows, &cap, *n, sizeof **rows, PDB_MAX_ROWS)) {
            pdb_set_error("out of memory (or more than %d rows) %s", PDB_MAX_ROWS,
                          "listing studies");
            r = CXR_ERR_NOMEM;
            break;
        }
        read_study(st, &(*rows)[(*n)++]);
    }
    if (r == CXR_OK && rc != SQLITE_DONE)
        r = pdb_fail(d, "list studies");
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

enum cxr_status plugin_db_study_header(struct plugin_db *d, const char *id,
                                       const struct plugin_study_header *h)
{
    pthread_mutex_lock(&d->lock);
    enum cxr_status r = exec_args(d,
                                  "UPDATE studies SET study_uid = ?, accession = ?,"
                                  " patient_id = ?, study_date = ?, description = ?"
                                  " WHERE orthanc_id = ?",
                                  "ssssss", h->study_uid, h->accession, h->patient_id,
                                  h->study_date, h->description, id);
    pthread_mutex_unlock(&d->lock);
    return r;
}
