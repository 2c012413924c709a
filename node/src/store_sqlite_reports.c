/* store_sqlite_reports.c — the SQLite job store's studies, reports and
 * deliveries (see store_sqlite.c for the durability rules). */
#include "store_sqlite_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ studies */

#define STUDY_COLS                                                                               \
    "s.study_instance_uid, s.accession_number, s.patient_id, s.study_date, s.study_description," \
    " s.first_received_ms, s.last_received_ms, s.priority, s.score, s.analysed, s.not_analysed," \
    " s.unreported, s.sr_count, s.last_sr_sop_instance_uid, s.last_sr_series_instance_uid,"      \
    " s.last_sr_ms,"                                                                             \
    " (SELECT count(*) FROM deliveries d JOIN srs r ON r.id=d.sr_id"                             \
    "   WHERE r.study_instance_uid=s.study_instance_uid AND d.state=0),"                         \
    " (SELECT count(*) FROM deliveries d JOIN srs r ON r.id=d.sr_id"                             \
    "   WHERE r.study_instance_uid=s.study_instance_uid AND d.state=1),"                         \
    " (SELECT count(*) FROM deliveries d JOIN srs r ON r.id=d.sr_id"                             \
    "   WHERE r.study_instance_uid=s.study_instance_uid AND d.state=2),"                         \
    " (SELECT i.warning FROM instances i WHERE i.study_instance_uid=s.study_instance_uid"        \
    "   AND i.warning<>'' ORDER BY i.id LIMIT 1),"                                               \
    " (SELECT i.reason FROM instances i WHERE i.study_instance_uid=s.study_instance_uid"         \
    "   AND i.state=2 AND i.reason<>'' ORDER BY i.id LIMIT 1),"                                  \
    " s.read_ms"

static void read_study(sqlite3_stmt *st, struct cxr_triage_study_row *r)
{
    memset(r, 0, sizeof *r);
    cxr_sq_col_text(st, 0, r->study_instance_uid, sizeof r->study_instance_uid);
    cxr_sq_col_text(st, 1, r->accession_number, sizeof r->accession_number);
    cxr_sq_col_text(st, 2, r->patient_id, sizeof r->patient_id);
    cxr_sq_col_text(st, 3, r->study_date, sizeof r->study_date);
    cxr_sq_col_text(st, 4, r->study_description, sizeof r->study_description);
    r->first_received_ms = sqlite3_column_int64(st, 5);
    r->last_received_ms = sqlite3_column_int64(st, 6);
    r->priority = sqlite3_column_int(st, 7);
    r->score = cxr_sq_col_real(st, 8);
    r->analysed = sqlite3_column_int(st, 9);
    r->not_analysed = sqlite3_column_int(st, 10);
    r->unreported = sqlite3_column_int(st, 11);
    r->sr_count = sqlite3_column_int(st, 12);
    cxr_sq_col_text(st, 13, r->last_sr_sop_instance_uid, sizeof r->last_sr_sop_instance_uid);
    cxr_sq_col_text(st, 14, r->last_sr_series_instance_uid, sizeof r->last_sr_series_instance_uid);
    r->last_sr_ms = sqlite3_column_int64(st, 15);
    r->deliveries_pending = sqlite3_column_int(st, 16);
    r->deliveries_delivered = sqlite3_column_int(st, 17);
    r->deliveries_dead = sqlite3_column_int(st, 18);
    cxr_sq_col_text(st, 19, r->warning, sizeof r->warning);
    cxr_sq_col_text(st, 20, r->reason, sizeof r->reason);
    r->read_ms = sqlite3_column_int64(st, 21);
}

static enum cxr_status collect_studies(struct sq_store *s, sqlite3_stmt *st,
                                       struct cxr_triage_study_row **rows, size_t *n)
{
    struct cxr_triage_study_row *v = NULL;
    size_t cap = 0, k = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!sq_grow((void **)&v, &cap, k, sizeof *v)) {
            free(v);
            cxr_node_store_set_error("job store %s: too many rows", s->path);
            return CXR_ERR_LIMIT;
        }
        read_study(st, &v[k++]);
    }
    if (rc != SQLITE_DONE) {
        free(v);
        return sq_fail(s, rc, "reading studies");
    }
    *rows = v;
    *n = k;
    return CXR_OK;
}

static enum cxr_status query_studies(struct sq_store *s, const char *sql, int64_t a, int64_t b,
                                     struct cxr_triage_study_row **rows, size_t *n)
{
    sqlite3_stmt *st = NULL;
    enum cxr_status ret;
    *rows = NULL;
    *n = 0;
    sq_lock(s);
    int rc = sq_prepare(s, sql, &st);
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "preparing a study query");
    } else {
        if (a != INT64_MIN)
            sqlite3_bind_int64(st, 1, a);
        if (b != INT64_MIN)
            sqlite3_bind_int64(st, 2, b);
        ret = collect_studies(s, st, rows, n);
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

enum cxr_status sq_studies_unreported(struct cxr_node_store *base,
                                      struct cxr_triage_study_row **rows, size_t *n)
{
    return query_studies((struct sq_store *)base,
                         "SELECT " STUDY_COLS " FROM studies s WHERE s.unreported>0"
                         " ORDER BY s.last_received_ms LIMIT 10000",
                         INT64_MIN, INT64_MIN, rows, n);
}

enum cxr_status sq_studies_list(struct cxr_node_store *base, int64_t since_ms, size_t limit,
                                struct cxr_triage_study_row **rows, size_t *n)
{
    return query_studies((struct sq_store *)base,
                         "SELECT " STUDY_COLS " FROM studies s WHERE s.last_received_ms>=?"
                         " ORDER BY s.priority DESC, s.score DESC, s.first_received_ms LIMIT ?",
                         since_ms, (int64_t)(limit ? limit : MAX_ROWS), rows, n);
}

enum cxr_status sq_study_get(struct cxr_node_store *base, const char *uid,
                             struct cxr_triage_study_row *row, bool *found)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    *found = false;
    sq_lock(s);
    int rc =
        sq_prepare(s, "SELECT " STUDY_COLS " FROM studies s WHERE s.study_instance_uid=?", &st);
    if (rc == SQLITE_OK) {
        cxr_sq_bind_text(st, 1, uid);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            read_study(st, row);
            *found = true;
        } else if (rc != SQLITE_DONE) {
            ret = sq_fail(s, rc, "reading a study");
        }
    } else {
        ret = sq_fail(s, rc, "preparing a study query");
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

/* ------------------------------------------------------------------ reports, deliveries */

enum cxr_status sq_report_add(struct cxr_node_store *base, const struct cxr_node_store_report *rep,
                              int64_t *sr_id)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    int64_t id = 0;
    if (sr_id)
        *sr_id = 0;
    sq_lock(s);
    int rc = sq_set_durability(s, SQ_PROMISED); /* an SR must not be made twice */
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "starting a transaction");
        goto done;
    }
    if (rep->has_sr) {
        rc = sq_prepare(s,
                        "INSERT INTO srs(study_instance_uid, sop_instance_uid, series_instance_uid,"
                        " path, predecessor_sop_instance_uid, priority, study_last_received_ms,"
                        " created_ms) VALUES(?,?,?,?,?,?,?,?)",
                        &st);
        if (rc == SQLITE_OK) {
            cxr_sq_bind_text(st, 1, rep->study_instance_uid);
            cxr_sq_bind_text(st, 2, rep->sr_sop_instance_uid);
            cxr_sq_bind_text(st, 3, rep->sr_series_instance_uid);
            cxr_sq_bind_text(st, 4, rep->sr_path);
            cxr_sq_bind_text(st, 5, rep->predecessor_sop_instance_uid);
            sqlite3_bind_int(st, 6, rep->priority);
            sqlite3_bind_int64(st, 7, rep->study_last_received_ms);
            sqlite3_bind_int64(st, 8, rep->created_ms);
            rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
            id = sqlite3_last_insert_rowid(s->db);
        }
        sqlite3_finalize(st);
        st = NULL;
        if (rc == SQLITE_OK)
            rc = sq_prepare(s,
                            "INSERT INTO deliveries(sr_id, destination, state, attempts,"
                            " next_attempt_ms, created_ms, updated_ms) VALUES(?,?,0,0,?,?,?)",
                            &st);
        for (size_t i = 0; rc == SQLITE_OK && i < rep->destination_count; i++) {
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, id);
            cxr_sq_bind_text(st, 2, rep->destinations[i]);
            sqlite3_bind_int64(st, 3, rep->created_ms);
            sqlite3_bind_int64(st, 4, rep->created_ms);
            sqlite3_bind_int64(st, 5, rep->created_ms);
            rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    if (rc == SQLITE_OK)
        rc = sq_prepare(s,
                        "UPDATE instances SET reported=1 WHERE study_instance_uid=?1 AND state<>0"
                        " AND reported=0 AND id<=?2",
                        &st);
    if (rc == SQLITE_OK) {
        cxr_sq_bind_text(st, 1, rep->study_instance_uid);
        sqlite3_bind_int64(st, 2, rep->up_to_instance_id);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_OK)
        rc = sq_prepare(
            s,
            "UPDATE studies SET unreported=(SELECT count(*) FROM instances"
            "  WHERE study_instance_uid=?1 AND state<>0 AND reported=0),"
            " sr_count=sr_count+?2,"
            " last_sr_sop_instance_uid=CASE WHEN ?2 THEN ?3 ELSE last_sr_sop_instance_uid END,"
            " last_sr_series_instance_uid=CASE WHEN ?2 THEN ?4 ELSE last_sr_series_instance_uid END,"
            " last_sr_ms=CASE WHEN ?2 THEN ?5 ELSE last_sr_ms END"
            " WHERE study_instance_uid=?1",
            &st);
    if (rc == SQLITE_OK) {
        cxr_sq_bind_text(st, 1, rep->study_instance_uid);
        sqlite3_bind_int(st, 2, rep->has_sr ? 1 : 0);
        cxr_sq_bind_text(st, 3, rep->sr_sop_instance_uid);
        cxr_sq_bind_text(st, 4, rep->sr_series_instance_uid);
        sqlite3_bind_int64(st, 5, rep->created_ms);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_OK)
        rc = sq_exec(s, "COMMIT");
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "recording a report");
        sq_rollback(s);
    } else if (sr_id) {
        *sr_id = id;
    }
done:
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

#define DELIVERY_COLS                                                                            \
    "d.id, d.sr_id, d.destination, d.state, d.attempts, d.next_attempt_ms, d.created_ms,"        \
    " d.updated_ms, d.last_error, r.path, r.sop_instance_uid, r.study_instance_uid, r.priority," \
    " r.study_last_received_ms"

static void read_delivery(sqlite3_stmt *st, struct cxr_node_delivery_row *r)
{
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(st, 0);
    r->sr_id = sqlite3_column_int64(st, 1);
    cxr_sq_col_text(st, 2, r->destination, sizeof r->destination);
    r->state = (enum cxr_node_delivery_state)sqlite3_column_int(st, 3);
    r->attempts = sqlite3_column_int(st, 4);
    r->next_attempt_ms = sqlite3_column_int64(st, 5);
    r->created_ms = sqlite3_column_int64(st, 6);
    r->updated_ms = sqlite3_column_int64(st, 7);
    cxr_sq_col_text(st, 8, r->last_error, sizeof r->last_error);
    cxr_sq_col_text(st, 9, r->sr_path, sizeof r->sr_path);
    cxr_sq_col_text(st, 10, r->sr_sop_instance_uid, sizeof r->sr_sop_instance_uid);
    cxr_sq_col_text(st, 11, r->study_instance_uid, sizeof r->study_instance_uid);
    r->priority = sqlite3_column_int(st, 12);
    r->study_last_received_ms = sqlite3_column_int64(st, 13);
}

enum cxr_status sq_delivery_next(struct cxr_node_store *base, const char *dest, int64_t now_ms,
                                 struct cxr_node_delivery_row *row, bool *found,
                                 int64_t *next_due_ms)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    *found = false;
    *next_due_ms = INT64_MAX;
    sq_lock(s);
    int rc = sq_prepare(s,
                        "SELECT " DELIVERY_COLS " FROM deliveries d JOIN srs r ON r.id=d.sr_id"
                        " WHERE d.destination=? AND d.state=0 AND d.next_attempt_ms<=?"
                        " ORDER BY r.priority DESC, d.id LIMIT 1",
                        &st);
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "preparing the delivery query");
        goto done;
    }
    cxr_sq_bind_text(st, 1, dest);
    sqlite3_bind_int64(st, 2, now_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        read_delivery(st, row);
        *found = true;
        *next_due_ms = row->next_attempt_ms;
        goto done;
    }
    if (rc != SQLITE_DONE) {
        ret = sq_fail(s, rc, "finding the next delivery");
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    rc = sq_prepare(
        s, "SELECT min(next_attempt_ms) FROM deliveries WHERE destination=? AND state=0", &st);
    if (rc == SQLITE_OK) {
        cxr_sq_bind_text(st, 1, dest);
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL)
            *next_due_ms = sqlite3_column_int64(st, 0);
    } else {
        ret = sq_fail(s, rc, "finding the next due delivery");
    }
done:
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

enum cxr_status sq_delivery_update(struct cxr_node_store *base, int64_t id,
                                   enum cxr_node_delivery_state state, int32_t attempts,
                                   int64_t next_attempt_ms, const char *error, int64_t now_ms)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    sq_lock(s);
    /* A lost outcome (power loss) only means the SR is sent again. */
    int rc = sq_set_durability(s, SQ_REDOABLE);
    /* Only a PENDING row changes: `queue drop` or `queue retry` run by an
     * admin meanwhile win over the attempt that was in flight. */
    if (rc == SQLITE_OK)
        rc = sq_prepare(s,
                        "UPDATE deliveries SET state=?, attempts=?, next_attempt_ms=?,"
                        " last_error=?, updated_ms=? WHERE id=? AND state=0",
                        &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int(st, 1, (int)state);
        sqlite3_bind_int(st, 2, attempts);
        sqlite3_bind_int64(st, 3, next_attempt_ms);
        cxr_sq_bind_text(st, 4, error);
        sqlite3_bind_int64(st, 5, now_ms);
        sqlite3_bind_int64(st, 6, id);
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE)
        ret = sq_fail(s, rc, "updating a delivery");
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

enum cxr_status sq_deliveries_list(struct cxr_node_store *base, int32_t state, size_t limit,
                                   struct cxr_node_delivery_row **rows, size_t *n)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    struct cxr_node_delivery_row *v = NULL;
    size_t cap = 0, k = 0;
    *rows = NULL;
    *n = 0;
    sq_lock(s);
    int rc = sq_prepare(s,
                        "SELECT " DELIVERY_COLS " FROM deliveries d JOIN srs r ON r.id=d.sr_id"
                        " WHERE ?1<0 OR d.state=?1 ORDER BY d.id DESC LIMIT ?2",
                        &st);
    if (rc != SQLITE_OK) {
        ret = sq_fail(s, rc, "preparing the delivery list");
        goto done;
    }
    sqlite3_bind_int(st, 1, state);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)(limit ? limit : MAX_ROWS));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!sq_grow((void **)&v, &cap, k, sizeof *v)) {
            cxr_node_store_set_error("job store %s: too many rows", s->path);
            ret = CXR_ERR_LIMIT;
            goto done;
        }
        read_delivery(st, &v[k++]);
    }
    if (rc != SQLITE_DONE) {
        ret = sq_fail(s, rc, "listing deliveries");
        goto done;
    }
    *rows = v;
    *n = k;
    v = NULL;
done:
    free(v);
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

enum cxr_status sq_deliveries_retry(struct cxr_node_store *base, int64_t id, int64_t now_ms,
                                    int64_t *count)
{
    *count = 0;
    if (id > 0)
        return sq_exec_write((struct sq_store *)base, SQ_PROMISED,
                             "UPDATE deliveries SET state=0, attempts=0, next_attempt_ms=?1,"
                             " updated_ms=?1, last_error='' WHERE id=?2 AND state<>1",
                             now_ms, id, INT64_MIN, count, "retrying a delivery");
    return sq_exec_write((struct sq_store *)base, SQ_PROMISED,
                         "UPDATE deliveries SET state=0, attempts=0, next_attempt_ms=?1,"
                         " updated_ms=?1, last_error='' WHERE state=2",
                         now_ms, INT64_MIN, INT64_MIN, count, "retrying deliveries");
}

enum cxr_status sq_deliveries_drop(struct cxr_node_store *base, int64_t id, int64_t *count)
{
    *count = 0;
    if (id > 0)
        return sq_exec_write((struct sq_store *)base, SQ_PROMISED,
                             "DELETE FROM deliveries WHERE id=?1 AND state<>1", id, INT64_MIN,
                             INT64_MIN, count, "dropping a delivery");
    return sq_exec_write((struct sq_store *)base, SQ_PROMISED,
                         "DELETE FROM deliveries WHERE state=2", INT64_MIN, INT64_MIN, INT64_MIN,
                         count, "dropping dead deliveries");
}

enum cxr_status sq_counts(struct cxr_node_store *base, struct cxr_node_store_counts *c)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    memset(c, 0, sizeof *c);
    sq_lock(s);
    int rc = sq_prepare(s,
                        "SELECT (SELECT count(*) FROM instances WHERE state=0),"
                        " (SELECT count(*) FROM instances WHERE state=1),"
                        " (SELECT count(*) FROM instances WHERE state=2),"
                        " (SELECT count(*) FROM studies),"
                        " (SELECT count(*) FROM studies WHERE unreported>0),"
                        " (SELECT count(*) FROM deliveries WHERE state=0),"
                        " (SELECT count(*) FROM deliveries WHERE state=1),"
                        " (SELECT count(*) FROM deliveries WHERE state=2)",
                        &st);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        c->instances_pending = sqlite3_column_int64(st, 0);
        c->instances_analysed = sqlite3_column_int64(st, 1);
        c->instances_not_analysed = sqlite3_column_int64(st, 2);
        c->studies = sqlite3_column_int64(st, 3);
        c->studies_unreported = sqlite3_column_int64(st, 4);
        c->deliveries_pending = sqlite3_column_int64(st, 5);
        c->deliveries_delivered = sqlite3_column_int64(st, 6);
        c->deliveries_dead = sqlite3_column_int64(st, 7);
    } else {
        ret = sq_fail(s, rc, "counting");
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}

enum cxr_status sq_study_mark_read(struct cxr_node_store *base, const char *uid, int64_t read_ms,
                                   bool *found)
{
    struct sq_store *s = (struct sq_store *)base;
    sqlite3_stmt *st = NULL;
    enum cxr_status ret = CXR_OK;
    *found = false;
    sq_lock(s);
    int rc = sq_prepare(s, "UPDATE studies SET read_ms=?1 WHERE study_instance_uid=?2", &st);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, read_ms);
        cxr_sq_bind_text(st, 2, uid);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            *found = sqlite3_changes(s->db) > 0;
        else
            ret = sq_fail(s, rc, "marking a study read");
    } else {
        ret = sq_fail(s, rc, "marking a study read");
    }
    sqlite3_finalize(st);
    sq_unlock(s);
    return ret;
}
