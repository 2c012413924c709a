/* check_node_store.c — the node's durable job store (SQLite, WAL).
 *
 * What it protects: a received instance is a job until scored and survives
 * a reopen; duplicates are idempotent; a study's priority is never lowered;
 * report decisions mark exactly the instances they cover; deliveries are
 * handed out by priority and due time, dead-lettered, retried and dropped;
 * a second connection (the `queue` command) sees and changes the same state
 * while the first is open. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/store.h"
#include "cxr/worklist.h"
#include "test_util.h"

/* One received instance through the store's real entry, instances_add: a
 * new job (state RECEIVED), with its bytes kept in the store when `data`
 * is given; *duplicate for a SOP Instance UID already present. */
static enum cxr_status add_instance(struct cxr_node_store *s,
                                    const struct cxr_triage_instance_row *row, const void *data,
                                    size_t len, bool *duplicate, int64_t *id)
{
    struct cxr_node_store_new_instance it = {.row = row, .data = data, .data_len = len};
    enum cxr_status st = cxr_node_store_instances_add(s, &it, 1);
    *duplicate = it.duplicate;
    if (id)
        *id = it.id;
    return st;
}

static char *tmp;
static char dbpath[4096];

static void setup(void)
{
    tmp = cxr_test_tmpdir();
    ck_assert_ptr_nonnull(tmp);
    snprintf(dbpath, sizeof dbpath, "%s/jobs.sqlite", tmp);
}

static void teardown(void)
{
    cxr_test_rmtree(tmp);
    free(tmp);
}

static struct cxr_node_store *open_store(void)
{
    char err[CXR_NODE_STORE_ERRLEN] = "";
    struct cxr_node_store *s = NULL;
    enum cxr_status st = cxr_node_store_open_sqlite(dbpath, false, &s, err);
    ck_assert_msg(st == CXR_OK, "open: %s", err);
    return s;
}

/* Runs SQL on the store's file through a connection of the test's own (to
 * make a file of another version, or a database that refuses a row). */
static void raw_sql(const char *sql)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    sqlite3_close(db);
}

static int64_t add(struct cxr_node_store *s, const char *uid, int64_t received_ms)
{
    struct cxr_triage_instance_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.sop_instance_uid, sizeof r.sop_instance_uid, "%s", uid);
    snprintf(r.sop_class_uid, sizeof r.sop_class_uid, "1.2.840.10008.5.1.4.1.1.1");
    snprintf(r.path, sizeof r.path, "ab/%s.dcm", uid);
    snprintf(r.calling_ae, sizeof r.calling_ae, "CR01");
    r.size = 1234;
    r.received_ms = received_ms;
    bool dup = true;
    int64_t id = 0;
    ck_assert_int_eq(add_instance(s, &r, NULL, 0, &dup, &id), CXR_OK);
    ck_assert(!dup);
    ck_assert_int_gt(id, 0);
    return id;
}

/* A result as the engine would give it: analysed with probability p and
 * priority prio, or not analysed when prio < 0. */
static void result(struct cxr_triage_result *r, const char *study, const char *sop, double p,
                   int prio)
{
    memset(r, 0, sizeof *r);
    snprintf(r->info.study_instance_uid, sizeof r->info.study_instance_uid, "%s", study);
    snprintf(r->info.sop_instance_uid, sizeof r->info.sop_instance_uid, "%s", sop);
    snprintf(r->info.series_instance_uid, sizeof r->info.series_instance_uid, "%s.1", study);
    snprintf(r->info.accession_number, sizeof r->info.accession_number, "ACC-%s", study);
    snprintf(r->info.patient_id, sizeof r->info.patient_id, "PID-%s", study);
    if (prio < 0) {
        r->analysed = false;
        r->status = CXR_ERR_DICOM_GATE;
        r->priority = CXR_TRIAGE_PRIORITY_NOT_ANALYSED;
        r->probability = NAN;
        snprintf(r->reason, sizeof r->reason, "lateral view (ViewPosition LL)");
    } else {
        r->analysed = true;
        r->probability = p;
        r->finding_present = p >= 0.5;
        r->priority = (enum cxr_triage_priority)prio;
    }
}

static void record(struct cxr_node_store *s, int64_t id, const struct cxr_triage_result *r)
{
    struct cxr_node_store_outcome o = {.instance_id = id, .result = r, .has_info = true};
    ck_assert_int_eq(cxr_node_store_record(s, &o, 1, 1000), CXR_OK);
}

static struct cxr_triage_study_row get_study(struct cxr_node_store *s, const char *uid)
{
    struct cxr_triage_study_row row;
    bool found = false;
    ck_assert_int_eq(cxr_node_store_study_get(s, uid, &row, &found), CXR_OK);
    ck_assert_msg(found, "study %s not found", uid);
    return row;
}

START_TEST(test_open_is_wal_full_sync)
{
    struct cxr_node_store *s = open_store();
    cxr_node_store_close(s);
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}
END_TEST

START_TEST(test_newer_schema_refused)
{
    cxr_node_store_close(open_store());
    raw_sql("PRAGMA user_version=99");
    char err[CXR_NODE_STORE_ERRLEN] = "";
    struct cxr_node_store *s = (void *)1;
    ck_assert_int_eq(cxr_node_store_open_sqlite(dbpath, false, &s, err), CXR_ERR_UNSUPPORTED);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, "schema version 99"), "err: %s", err);
}
END_TEST

/* A job store written by cxr-triage 0.1.0 (schema 2: header values as the
 * struct's bytes; tests/data/store/jobs-v2.sqlite, see its PROVENANCE) is
 * named by a reader, upgraded by a writer to JSON header values, and serves:
 * every instance keeps its header values (an SR made after retention removed
 * the files still lists them), the study, its SR and its delivery are there. */
START_TEST(test_release_store_upgraded)
{
    size_t len = 0;
    void *bytes = cxr_test_read_file(cxr_test_data_path("store/jobs-v2.sqlite"), &len);
    ck_assert_ptr_nonnull(bytes);
    ck_assert(cxr_test_write_file(dbpath, bytes, len));
    free(bytes);

    char err[CXR_NODE_STORE_ERRLEN] = "";
    struct cxr_node_store *ro = (void *)1;
    ck_assert_int_eq(cxr_node_store_open_sqlite(dbpath, true, &ro, err), CXR_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(err, "schema version 2") && strstr(err, "upgrade"), "err: %s", err);

    struct cxr_node_store *s = open_store();
    struct cxr_triage_instance_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_study_instances(s, "2.25.901.1", &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        const struct cxr_triage_instance_row *r = &rows[i];
        ck_assert_msg(r->has_info, "instance %s lost its header values", r->sop_instance_uid);
        ck_assert_str_eq(r->info.sop_instance_uid, r->sop_instance_uid);
        ck_assert_str_eq(r->info.study_instance_uid, "2.25.901.1");
        ck_assert_str_eq(r->info.series_instance_uid, "2.25.901.1.0");
        ck_assert_str_eq(r->info.patient_id, "PID9011");
        ck_assert_str_eq(r->info.patient_name, "Test^Patient1");
        ck_assert_str_eq(r->info.accession_number, "A9011");
        ck_assert_str_eq(r->info.modality, "CR");
        ck_assert_str_eq(r->info.body_part_examined, "CHEST");
        ck_assert_str_eq(r->info.sop_class_uid, "1.2.840.10008.5.1.4.1.1.1");
        ck_assert_uint_eq(r->info.rows, 320);
        ck_assert_uint_eq(r->info.columns, 256);
        ck_assert_uint_eq(r->info.bits_stored, 8);
        ck_assert_int_eq(r->info.number_of_frames, 1);
        ck_assert(r->info.has_pixel_data);
    }
    ck_assert_str_eq(rows[0].info.view_position, "PA");
    ck_assert_int_eq(rows[0].state, CXR_TRIAGE_INSTANCE_ANALYSED);
    ck_assert_str_eq(rows[2].info.view_position, "LL");
    ck_assert_int_eq(rows[2].state, CXR_TRIAGE_INSTANCE_NOT_ANALYSED);
    ck_assert_ptr_nonnull(strstr(rows[2].reason, "lateral"));
    free(rows);
    struct cxr_triage_study_row study;
    bool found = false;
    ck_assert_int_eq(cxr_node_store_study_get(s, "2.25.901.1", &study, &found), CXR_OK);
    ck_assert(found);
    ck_assert_int_eq(study.analysed, 2);
    ck_assert_int_eq(study.not_analysed, 1);
    ck_assert_int_eq(study.sr_count, 1);
    struct cxr_node_delivery_row *d = NULL;
    ck_assert_int_eq(cxr_node_store_deliveries_list(s, -1, 10, &d, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(d[0].destination, "pacs");
    free(d);
    cxr_node_store_close(s);

    /* Upgraded in place: no struct image is left, and a reader now opens it. */
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT count(*) FROM instances WHERE"
                                        " typeof(info)='blob'), (SELECT count(*) FROM instances"
                                        " WHERE typeof(info)='text')",
                                        -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 0);
    ck_assert_int_eq(sqlite3_column_int(st, 1), 3);
    sqlite3_finalize(st);
    sqlite3_close(db);
    ro = NULL;
    ck_assert_int_eq(cxr_node_store_open_sqlite(dbpath, true, &ro, err), CXR_OK);
    cxr_node_store_close(ro);
}
END_TEST

/* Header values are JSON: a member this version does not know is ignored,
 * one it expects but does not find takes its default, so adding a field to
 * struct cxr_dicom_info never makes older rows unreadable. */
START_TEST(test_info_json_round_trip_and_tolerance)
{
    struct cxr_dicom_info a, b;
    memset(&a, 0, sizeof a);
    snprintf(a.patient_id, sizeof a.patient_id, "P\"1\\x");
    snprintf(a.study_instance_uid, sizeof a.study_instance_uid, "1.2.3");
    a.patient_age_years = 4.5;
    a.rows = 4096;
    a.number_of_frames = 2;
    a.has_pixel_data = true;
    char *j = cxr_triage_info_to_json(&a);
    ck_assert_ptr_nonnull(j);
    ck_assert(cxr_triage_info_from_json(j, &b));
    ck_assert_int_eq(memcmp(&a, &b, sizeof a), 0);
    free(j);
    a.patient_age_years = NAN;
    j = cxr_triage_info_to_json(&a);
    ck_assert(cxr_triage_info_from_json(j, &b));
    ck_assert(isnan(b.patient_age_years));
    free(j);
    ck_assert(
        cxr_triage_info_from_json("{\"patient_id\":\"Q\",\"a_field_from_the_future\":7}", &b));
    ck_assert_str_eq(b.patient_id, "Q");
    ck_assert_str_eq(b.study_instance_uid, "");
    ck_assert_int_eq(b.number_of_frames, 1);
    ck_assert(isnan(b.patient_age_years));
    ck_assert(!cxr_triage_info_from_json("not json", &b));
    ck_assert(!cxr_triage_info_from_json("[1,2]", &b));
    ck_assert(!cxr_triage_info_from_legacy_blob(&a, sizeof a - 1, &b));
}
END_TEST

/* A store of the first version (files only) is upgraded in place by a
 * writer, its jobs kept; a reader names the version instead of misreading. */
START_TEST(test_first_version_store_upgraded)
{
    struct cxr_node_store *s = open_store();
    int64_t id = add(s, "2.25.61.1", 1000);
    cxr_node_store_close(s);
    raw_sql("DROP TRIGGER instance_bytes_forgotten; DROP TABLE instance_data;"
            " ALTER TABLE instances DROP COLUMN in_store; PRAGMA user_version=1");

    char err[CXR_NODE_STORE_ERRLEN] = "";
    struct cxr_node_store *ro = (void *)1;
    ck_assert_int_eq(cxr_node_store_open_sqlite(dbpath, true, &ro, err), CXR_ERR_UNSUPPORTED);
    ck_assert_ptr_null(ro);
    ck_assert_msg(strstr(err, "schema version 1") && strstr(err, "upgrade"), "err: %s", err);

    s = open_store();
    struct cxr_triage_instance_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_instances_pending(s, 0, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(rows[0].id, id);
    ck_assert(!rows[0].in_store);
    free(rows);
    static const unsigned char bytes[] = {'D', 'I', 'C', 'M', 0, 1, 2};
    struct cxr_triage_instance_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.sop_instance_uid, sizeof r.sop_instance_uid, "2.25.61.2");
    r.size = sizeof bytes;
    bool dup = true;
    ck_assert_int_eq(add_instance(s, &r, bytes, sizeof bytes, &dup, &id), CXR_OK);
    ck_assert(!dup);
    cxr_node_store_close(s);
    ck_assert_int_eq(cxr_node_store_open_sqlite(dbpath, true, &ro, err), CXR_OK);
    cxr_node_store_close(ro);
}
END_TEST

START_TEST(test_open_unwritable_folder_fails)
{
    char err[CXR_NODE_STORE_ERRLEN] = "";
    struct cxr_node_store *s = (void *)1;
    enum cxr_status st =
        cxr_node_store_open_sqlite("/nonexistent-folder/x/jobs.sqlite", false, &s, err);
    ck_assert_int_ne(st, CXR_OK);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, "/nonexistent-folder/x/jobs.sqlite"), "err names the file: %s", err);
}
END_TEST

START_TEST(test_duplicate_is_idempotent)
{
    struct cxr_node_store *s = open_store();
    int64_t id = add(s, "1.2.3.1", 100);
    struct cxr_triage_instance_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.sop_instance_uid, sizeof r.sop_instance_uid, "1.2.3.1");
    snprintf(r.path, sizeof r.path, "zz/other.dcm");
    r.received_ms = 200;
    bool dup = false;
    int64_t id2 = -1;
    ck_assert_int_eq(add_instance(s, &r, NULL, 0, &dup, &id2), CXR_OK);
    ck_assert(dup);
    ck_assert_int_eq(id2, 0);
    struct cxr_triage_instance_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_instances_pending(s, 0, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(rows[0].id, id);
    ck_assert_str_eq(rows[0].path, "ab/1.2.3.1.dcm"); /* the first copy's row is kept */
    ck_assert_int_eq(rows[0].received_ms, 100);
    free(rows);
    bool found = false;
    ck_assert_int_eq(cxr_node_store_instance_find(s, "1.2.3.1", &found), CXR_OK);
    ck_assert(found);
    ck_assert_int_eq(cxr_node_store_instance_find(s, "1.2.3.9", &found), CXR_OK);
    ck_assert(!found);
    cxr_node_store_close(s);
}
END_TEST

/* An instance kept in the store: its bytes survive a reopen exactly (NUL
 * bytes included), a duplicate does not replace them, retention removes
 * them; a file instance has none. */
START_TEST(test_kept_instance_bytes)
{
    struct cxr_node_store *s = open_store();
    size_t len = 300000;
    unsigned char *bytes = malloc(len);
    ck_assert_ptr_nonnull(bytes);
    for (size_t i = 0; i < len; i++)
        bytes[i] = (unsigned char)((i * 131u) >> 3);
    struct cxr_triage_instance_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.sop_instance_uid, sizeof r.sop_instance_uid, "2.25.62.1");
    snprintf(r.path, sizeof r.path, "ab/2.25.62.1.dcm");
    r.size = len;
    r.received_ms = 1000;
    bool dup = true;
    int64_t id = 0;
    ck_assert_int_eq(add_instance(s, &r, bytes, len, &dup, &id), CXR_OK);
    ck_assert(!dup);
    ck_assert_int_gt(id, 0);
    int64_t file_id = add(s, "2.25.62.2", 1001);
    /* the same UID again, other bytes: idempotent, the first copy stays */
    unsigned char other[16] = {0};
    int64_t id2 = 0;
    ck_assert_int_eq(add_instance(s, &r, other, sizeof other, &dup, &id2), CXR_OK);
    ck_assert(dup);
    cxr_node_store_close(s);

    s = open_store();
    struct cxr_triage_instance_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_instances_pending(s, 0, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert(rows[0].in_store);
    ck_assert(!rows[1].in_store);
    free(rows);
    void *got = NULL;
    size_t got_len = 0;
    ck_assert_int_eq(cxr_node_store_instance_data(s, id, &got, &got_len), CXR_OK);
    ck_assert_uint_eq(got_len, len);
    ck_assert(memcmp(got, bytes, len) == 0);
    free(got);
    got = (void *)1;
    ck_assert_int_eq(cxr_node_store_instance_data(s, file_id, &got, &got_len), CXR_ERR_NOT_FOUND);
    ck_assert_ptr_null(got);

    /* processed and reported, then past retention: the bytes go */
    struct cxr_triage_result res;
    result(&res, "2.25.62", "2.25.62.1", 0.2, CXR_TRIAGE_PRIORITY_ROUTINE);
    res.info.study_instance_uid[0] = '\0'; /* no study: expires without a report */
    record(s, id, &res);
    struct cxr_triage_instance_row *exp = NULL;
    ck_assert_int_eq(cxr_node_store_instances_expired(s, 5000, 0, &exp, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(exp[0].id, id);
    ck_assert(exp[0].in_store);
    free(exp);
    ck_assert_int_eq(cxr_node_store_instance_forget_file(s, id), CXR_OK);
    ck_assert_int_eq(cxr_node_store_instance_data(s, id, &got, &got_len), CXR_ERR_NOT_FOUND);
    ck_assert_int_eq(cxr_node_store_instances_expired(s, 5000, 0, &exp, &n), CXR_OK);
    ck_assert_uint_eq(n, 0);
    free(exp);
    cxr_node_store_close(s);
    free(bytes);
}
END_TEST

/* A group commit: rows and kept bytes of several instances in one
 * transaction, duplicates flagged per item; a failure of one item records
 * none of the group (each sender then gets a refusal, nothing half-kept). */
START_TEST(test_group_commit_all_or_nothing)
{
    struct cxr_node_store *s = open_store();
    add(s, "2.25.63.1", 1000);
    struct cxr_triage_instance_row r[3];
    memset(r, 0, sizeof r);
    const char *uids[3] = {"2.25.63.2", "2.25.63.1", "2.25.63.3"};
    for (int i = 0; i < 3; i++) {
        snprintf(r[i].sop_instance_uid, sizeof r[i].sop_instance_uid, "%s", uids[i]);
        r[i].received_ms = 2000 + i;
    }
    static const char small[] = "kept bytes";
    struct cxr_node_store_new_instance it[3] = {
        {.row = &r[0], .data = small, .data_len = sizeof small},
        {.row = &r[1]},
        {.row = &r[2]},
    };
    ck_assert_int_eq(cxr_node_store_instances_add(s, it, 3), CXR_OK);
    ck_assert(!it[0].duplicate && it[0].id > 0);
    ck_assert(it[1].duplicate && it[1].id == 0);
    ck_assert(!it[2].duplicate && it[2].id > it[0].id);
    void *got = NULL;
    size_t len = 0;
    ck_assert_int_eq(cxr_node_store_instance_data(s, it[0].id, &got, &len), CXR_OK);
    ck_assert_uint_eq(len, sizeof small);
    ck_assert(memcmp(got, small, len) == 0);
    free(got);

    /* the second of two items is refused by the database: neither is kept */
    raw_sql("CREATE TRIGGER refuse_bad BEFORE INSERT ON instances"
            " WHEN NEW.sop_instance_uid='2.25.63.9'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
    snprintf(r[0].sop_instance_uid, sizeof r[0].sop_instance_uid, "2.25.63.8");
    snprintf(r[2].sop_instance_uid, sizeof r[2].sop_instance_uid, "2.25.63.9");
    struct cxr_node_store_new_instance bad[2] = {
        {.row = &r[0], .data = small, .data_len = sizeof small},
        {.row = &r[2]},
    };
    ck_assert_int_ne(cxr_node_store_instances_add(s, bad, 2), CXR_OK);
    ck_assert_msg(strstr(cxr_node_store_last_error(), "refused by the test"), "error: %s",
                  cxr_node_store_last_error());
    ck_assert_int_eq(bad[0].id, 0);
    bool found = true;
    ck_assert_int_eq(cxr_node_store_instance_find(s, "2.25.63.8", &found), CXR_OK);
    ck_assert(!found);
    struct cxr_triage_instance_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_instances_pending(s, 0, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 3);
    free(rows);
    /* and the store goes on */
    add(s, "2.25.63.10", 3000);
    cxr_node_store_close(s);
}
END_TEST

/* With background checkpoints the journal still reaches the database file
 * (no commit does it any more: the store's thread must), while the store
 * keeps serving; closing stops the thread. */
START_TEST(test_background_checkpoints)
{
    struct cxr_node_store *s = open_store();
    ck_assert_int_eq(cxr_node_store_background_checkpoints(s), CXR_OK);
    ck_assert_int_eq(cxr_node_store_background_checkpoints(s), CXR_OK); /* once only */
    struct stat before;
    ck_assert_int_eq(stat(dbpath, &before), 0);
    size_t len = 200 * 1024;
    unsigned char *bytes = calloc(1, len);
    ck_assert_ptr_nonnull(bytes);
    for (int i = 0; i < 40; i++) { /* 8 MB: twice the 4 MB that wakes the thread */
        struct cxr_triage_instance_row r;
        memset(&r, 0, sizeof r);
        snprintf(r.sop_instance_uid, sizeof r.sop_instance_uid, "2.25.64.%d", i);
        r.size = len;
        bytes[0] = (unsigned char)i;
        bool dup = true;
        int64_t id = 0;
        ck_assert_int_eq(add_instance(s, &r, bytes, len, &dup, &id), CXR_OK);
    }
    struct stat now;
    bool copied = false;
    for (int t = 0; t < 50 && !copied; t++) { /* 2.5 s, under the test timeout */
        ck_assert_int_eq(stat(dbpath, &now), 0);
        copied = now.st_size >= before.st_size + 6 * 1024 * 1024;
        if (!copied)
            usleep(50 * 1000);
    }
    ck_assert_msg(copied, "database file %lld bytes after 8 MB of commits: no checkpoint ran",
                  (long long)now.st_size);
    struct cxr_triage_instance_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_instances_pending(s, 0, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 40);
    free(rows);
    cxr_node_store_close(s);
    free(bytes);
}
END_TEST

START_TEST(test_jobs_survive_reopen_in_order)
{
    struct cxr_node_store *s = open_store();
    int64_t a = add(s, "1.1", 300);
    int64_t b = add(s, "1.2", 100);
    int64_t c = add(s, "1.3", 200);
    ck_assert_int_eq(cxr_node_store_instances_claim(s, &b, 1), CXR_OK);
    struct cxr_triage_result r;
    result(&r, "9.1", "1.1", 0.2, CXR_TRIAGE_PRIORITY_ROUTINE);
    record(s, a, &r);
    cxr_node_store_close(s);

    s = open_store();
    struct cxr_triage_instance_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_instances_pending(s, 0, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(rows[0].id, b);
    ck_assert_int_eq(rows[0].attempts, 1);
    ck_assert_int_eq(rows[1].id, c);
    ck_assert_int_eq(rows[1].attempts, 0);
    free(rows);
    ck_assert_int_eq(cxr_node_store_instances_pending(s, b, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(rows[0].id, c);
    free(rows);
    int64_t oldest = 0;
    bool any = false;
    ck_assert_int_eq(cxr_node_store_pending_oldest(s, &oldest, &any), CXR_OK);
    ck_assert(any);
    ck_assert_int_eq(oldest, 100);
    cxr_node_store_close(s);
}
END_TEST

START_TEST(test_priority_never_lowered)
{
    struct cxr_node_store *s = open_store();
    int64_t a = add(s, "2.1", 1000);
    int64_t b = add(s, "2.2", 3000);
    int64_t c = add(s, "2.3", 2000);
    struct cxr_triage_result r;
    result(&r, "S1", "2.1", 0.95, CXR_TRIAGE_PRIORITY_URGENT);
    record(s, a, &r);
    struct cxr_triage_study_row st = get_study(s, "S1");
    ck_assert_int_eq(st.priority, CXR_TRIAGE_PRIORITY_URGENT);
    result(&r, "S1", "2.2", 0.1, CXR_TRIAGE_PRIORITY_ROUTINE);
    record(s, b, &r);
    result(&r, "S1", "2.3", NAN, -1);
    record(s, c, &r);
    st = get_study(s, "S1");
    ck_assert_int_eq(st.priority, CXR_TRIAGE_PRIORITY_URGENT);
    ck_assert_double_eq_tol(st.score, 0.95, 1e-12);
    ck_assert_int_eq(st.analysed, 2);
    ck_assert_int_eq(st.not_analysed, 1);
    ck_assert_int_eq(st.unreported, 3);
    ck_assert_int_eq(st.first_received_ms, 1000);
    ck_assert_int_eq(st.last_received_ms, 3000);
    ck_assert_str_eq(st.accession_number, "ACC-S1");
    ck_assert_str_eq(st.patient_id, "PID-S1");

    /* Recording the same job twice changes nothing. */
    result(&r, "S1", "2.2", 0.1, CXR_TRIAGE_PRIORITY_ROUTINE);
    record(s, b, &r);
    st = get_study(s, "S1");
    ck_assert_int_eq(st.analysed, 2);
    ck_assert_int_eq(st.unreported, 3);

    struct cxr_triage_instance_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_study_instances(s, "S1", &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(rows[0].state, CXR_TRIAGE_INSTANCE_ANALYSED);
    ck_assert_double_eq_tol(rows[0].probability, 0.95, 1e-12);
    ck_assert(rows[0].has_info);
    ck_assert_str_eq(rows[0].info.sop_instance_uid, "2.1");
    ck_assert_int_eq(rows[2].state, CXR_TRIAGE_INSTANCE_NOT_ANALYSED);
    ck_assert(isnan(rows[2].probability));
    ck_assert_str_eq(rows[2].reason, "lateral view (ViewPosition LL)");
    ck_assert_int_eq(rows[2].status, CXR_ERR_DICOM_GATE);
    free(rows);
    cxr_node_store_close(s);
}
END_TEST

/* An image's warning (e.g. a patient outside the model's population) shows
 * at the study level, in the store row and in the worklist JSON. */
START_TEST(test_study_warning_reaches_worklist)
{
    struct cxr_node_store *s = open_store();
    int64_t a = add(s, "4.1", 1000);
    int64_t b = add(s, "4.2", 2000);
    struct cxr_triage_result r;
    result(&r, "S4", "4.1", 0.2, CXR_TRIAGE_PRIORITY_ROUTINE);
    record(s, a, &r);
    struct cxr_triage_study_row st = get_study(s, "S4");
    ck_assert_str_eq(st.warning, "");
    result(&r, "S4", "4.2", 0.3, CXR_TRIAGE_PRIORITY_ROUTINE);
    snprintf(r.warning, sizeof r.warning,
             "patient age 38.0 years is above the intended maximum "
             "of 5 years");
    record(s, b, &r);
    st = get_study(s, "S4");
    ck_assert_str_eq(st.warning, r.warning);

    struct cxr_triage_worklist_options o;
    memset(&o, 0, sizeof o);
    o.now_ms = 5000;
    for (int i = 0; i < 4; i++)
        snprintf(o.priority_names[i], sizeof o.priority_names[i], "P%d", i);
    char *json = cxr_triage_worklist_json(&st, 1, &o);
    ck_assert_ptr_nonnull(json);
    ck_assert_msg(strstr(json, "\"warning\": \"patient age 38.0 years") ||
                      strstr(json, "\"warning\":\"patient age 38.0 years"),
                  "%s", json);
    free(json);
    cxr_node_store_close(s);
}
END_TEST

START_TEST(test_unreadable_instance_has_no_study)
{
    struct cxr_node_store *s = open_store();
    int64_t a = add(s, "3.1", 10);
    struct cxr_triage_result r;
    memset(&r, 0, sizeof r);
    r.analysed = false;
    r.status = CXR_ERR_DICOM_PARSE;
    snprintf(r.reason, sizeof r.reason, "not DICOM");
    struct cxr_node_store_outcome o = {.instance_id = a, .result = &r, .has_info = false};
    ck_assert_int_eq(cxr_node_store_record(s, &o, 1, 20), CXR_OK);
    struct cxr_node_store_counts c;
    ck_assert_int_eq(cxr_node_store_counts(s, &c), CXR_OK);
    ck_assert_int_eq(c.instances_pending, 0);
    ck_assert_int_eq(c.instances_not_analysed, 1);
    ck_assert_int_eq(c.studies, 0);
    /* Retention may remove its file at once: it will never be reported. */
    struct cxr_triage_instance_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_instances_expired(s, 100, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(rows[0].id, a);
    free(rows);
    ck_assert_int_eq(cxr_node_store_instance_forget_file(s, a), CXR_OK);
    ck_assert_int_eq(cxr_node_store_instances_expired(s, 100, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 0);
    free(rows);
    cxr_node_store_close(s);
}
END_TEST

static int64_t report(struct cxr_node_store *s, const char *study, int64_t upto, const char *sr_uid,
                      const char *pred, int prio)
{
    const char *dests[] = {"pacs", "archive"};
    char path[128];
    snprintf(path, sizeof path, "sr/%s.dcm", sr_uid);
    struct cxr_node_store_report rep = {
        .study_instance_uid = study,
        .up_to_instance_id = upto,
        .has_sr = true,
        .sr_sop_instance_uid = sr_uid,
        .sr_series_instance_uid = "7.7.7",
        .sr_path = path,
        .predecessor_sop_instance_uid = pred,
        .priority = prio,
        .study_last_received_ms = 5,
        .created_ms = 50,
        .destinations = dests,
        .destination_count = 2,
    };
    int64_t id = 0;
    ck_assert_int_eq(cxr_node_store_report_add(s, &rep, &id), CXR_OK);
    ck_assert_int_gt(id, 0);
    return id;
}

START_TEST(test_report_marks_covered_instances)
{
    struct cxr_node_store *s = open_store();
    int64_t a = add(s, "4.1", 1);
    int64_t b = add(s, "4.2", 2);
    struct cxr_triage_result r;
    result(&r, "S4", "4.1", 0.7, CXR_TRIAGE_PRIORITY_PRIORITY);
    record(s, a, &r);
    result(&r, "S4", "4.2", 0.3, CXR_TRIAGE_PRIORITY_ROUTINE);
    record(s, b, &r);
    /* A late instance processed after the report was built is not covered. */
    int64_t c = add(s, "4.3", 3);
    report(s, "S4", b, "8.1", NULL, CXR_TRIAGE_PRIORITY_PRIORITY);
    result(&r, "S4", "4.3", 0.99, CXR_TRIAGE_PRIORITY_URGENT);
    record(s, c, &r);
    struct cxr_triage_study_row st = get_study(s, "S4");
    ck_assert_int_eq(st.unreported, 1);
    ck_assert_int_eq(st.sr_count, 1);
    ck_assert_str_eq(st.last_sr_sop_instance_uid, "8.1");
    ck_assert_str_eq(st.last_sr_series_instance_uid, "7.7.7");
    ck_assert_int_eq(st.deliveries_pending, 2);

    struct cxr_triage_study_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_studies_unreported(s, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(rows[0].study_instance_uid, "S4");
    free(rows);

    report(s, "S4", c, "8.2", "8.1", CXR_TRIAGE_PRIORITY_URGENT);
    st = get_study(s, "S4");
    ck_assert_int_eq(st.unreported, 0);
    ck_assert_int_eq(st.sr_count, 2);
    ck_assert_str_eq(st.last_sr_sop_instance_uid, "8.2");
    ck_assert_int_eq(st.priority, CXR_TRIAGE_PRIORITY_URGENT);
    ck_assert_int_eq(st.deliveries_pending, 4);
    ck_assert_int_eq(cxr_node_store_studies_unreported(s, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 0);
    free(rows);

    bool known = false;
    ck_assert_int_eq(cxr_node_store_path_known(s, "sr/8.2.dcm", &known), CXR_OK);
    ck_assert(known);
    ck_assert_int_eq(cxr_node_store_path_known(s, "ab/4.1.dcm", &known), CXR_OK);
    ck_assert(known);
    ck_assert_int_eq(cxr_node_store_path_known(s, "sr/orphan.dcm", &known), CXR_OK);
    ck_assert(!known);
    cxr_node_store_close(s);
}
END_TEST

START_TEST(test_report_without_sr)
{
    struct cxr_node_store *s = open_store();
    int64_t a = add(s, "5.1", 1);
    struct cxr_triage_result r;
    result(&r, "S5", "5.1", NAN, -1);
    record(s, a, &r);
    struct cxr_node_store_report rep = {.study_instance_uid = "S5", .up_to_instance_id = a};
    int64_t id = -1;
    ck_assert_int_eq(cxr_node_store_report_add(s, &rep, &id), CXR_OK);
    ck_assert_int_eq(id, 0);
    struct cxr_triage_study_row st = get_study(s, "S5");
    ck_assert_int_eq(st.unreported, 0);
    ck_assert_int_eq(st.sr_count, 0);
    ck_assert_int_eq(st.priority, CXR_TRIAGE_PRIORITY_NOT_ANALYSED);
    ck_assert(isnan(st.score));
    cxr_node_store_close(s);
}
END_TEST

/* Two studies, one SR each, to two destinations. */
static void two_reports(struct cxr_node_store *s, int64_t *routine_sr, int64_t *urgent_sr)
{
    int64_t a = add(s, "6.1", 1);
    int64_t b = add(s, "6.2", 2);
    struct cxr_triage_result r;
    result(&r, "R", "6.1", 0.1, CXR_TRIAGE_PRIORITY_ROUTINE);
    record(s, a, &r);
    result(&r, "U", "6.2", 0.99, CXR_TRIAGE_PRIORITY_URGENT);
    record(s, b, &r);
    *routine_sr = report(s, "R", a, "8.10", NULL, CXR_TRIAGE_PRIORITY_ROUTINE);
    *urgent_sr = report(s, "U", b, "8.11", NULL, CXR_TRIAGE_PRIORITY_URGENT);
}

START_TEST(test_delivery_order_backoff_dead_letter)
{
    struct cxr_node_store *s = open_store();
    int64_t routine_sr, urgent_sr;
    two_reports(s, &routine_sr, &urgent_sr);
    struct cxr_node_delivery_row d;
    bool found = false;
    int64_t due = 0;
    /* The urgent study's SR goes first although it was made later. */
    ck_assert_int_eq(cxr_node_store_delivery_next(s, "pacs", 100, &d, &found, &due), CXR_OK);
    ck_assert(found);
    ck_assert_int_eq(d.sr_id, urgent_sr);
    ck_assert_str_eq(d.sr_path, "sr/8.11.dcm");
    ck_assert_str_eq(d.sr_sop_instance_uid, "8.11");
    ck_assert_str_eq(d.study_instance_uid, "U");
    ck_assert_str_eq(d.destination, "pacs");
    int64_t urgent_id = d.id;
    /* A failed attempt: not due again before its next time. */
    ck_assert_int_eq(cxr_node_store_delivery_update(s, urgent_id, CXR_NODE_DELIVERY_PENDING, 1,
                                                    5000, "connection refused", 100),
                     CXR_OK);
    ck_assert_int_eq(cxr_node_store_delivery_next(s, "pacs", 200, &d, &found, &due), CXR_OK);
    ck_assert(found);
    ck_assert_int_eq(d.sr_id, routine_sr);
    ck_assert_int_eq(
        cxr_node_store_delivery_update(s, d.id, CXR_NODE_DELIVERY_DELIVERED, 1, 0, "", 200),
        CXR_OK);
    ck_assert_int_eq(cxr_node_store_delivery_next(s, "pacs", 300, &d, &found, &due), CXR_OK);
    ck_assert(!found);
    ck_assert_int_eq(due, 5000);
    ck_assert_int_eq(cxr_node_store_delivery_next(s, "pacs", 5000, &d, &found, &due), CXR_OK);
    ck_assert(found);
    ck_assert_int_eq(d.id, urgent_id);
    ck_assert_int_eq(d.attempts, 1);
    ck_assert_str_eq(d.last_error, "connection refused");
    /* The other destination is independent. */
    struct cxr_node_delivery_row d2;
    ck_assert_int_eq(cxr_node_store_delivery_next(s, "archive", 0, &d2, &found, &due), CXR_OK);
    ck_assert(!found);
    ck_assert_int_eq(due, 50);
    /* Give up: dead letter. */
    ck_assert_int_eq(cxr_node_store_delivery_update(s, urgent_id, CXR_NODE_DELIVERY_DEAD, 2, 0,
                                                    "association rejected", 6000),
                     CXR_OK);
    ck_assert_int_eq(cxr_node_store_delivery_next(s, "pacs", INT64_MAX - 1, &d, &found, &due),
                     CXR_OK);
    ck_assert(!found);
    ck_assert_int_eq(due, INT64_MAX);
    struct cxr_node_delivery_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_deliveries_list(s, CXR_NODE_DELIVERY_DEAD, 0, &rows, &n),
                     CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(rows[0].id, urgent_id);
    ck_assert_str_eq(rows[0].last_error, "association rejected");
    free(rows);
    ck_assert_int_eq(cxr_node_store_deliveries_list(s, -1, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 4);
    free(rows);
    struct cxr_node_store_counts c;
    ck_assert_int_eq(cxr_node_store_counts(s, &c), CXR_OK);
    ck_assert_int_eq(c.deliveries_pending, 2);
    ck_assert_int_eq(c.deliveries_delivered, 1);
    ck_assert_int_eq(c.deliveries_dead, 1);
    cxr_node_store_close(s);
}
END_TEST

START_TEST(test_queue_retry_and_drop_from_second_connection)
{
    struct cxr_node_store *node = open_store();
    int64_t routine_sr, urgent_sr;
    two_reports(node, &routine_sr, &urgent_sr);
    struct cxr_node_delivery_row d;
    bool found;
    int64_t due;
    /* Kill every pacs delivery. */
    while (cxr_node_store_delivery_next(node, "pacs", 100, &d, &found, &due) == CXR_OK && found)
        ck_assert_int_eq(
            cxr_node_store_delivery_update(node, d.id, CXR_NODE_DELIVERY_DEAD, 3, 0, "down", 100),
            CXR_OK);
    /* The admin's `queue` command opens the same file while the node has it open. */
    struct cxr_node_store *cli = open_store();
    int64_t count = 0;
    ck_assert_int_eq(cxr_node_store_deliveries_retry(cli, 0, 700, &count), CXR_OK);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(cxr_node_store_delivery_next(node, "pacs", 700, &d, &found, &due), CXR_OK);
    ck_assert(found);
    ck_assert_int_eq(d.attempts, 0);
    ck_assert_int_eq(d.state, CXR_NODE_DELIVERY_PENDING);
    /* Delivered rows cannot be dropped or retried; others can. */
    ck_assert_int_eq(
        cxr_node_store_delivery_update(node, d.id, CXR_NODE_DELIVERY_DELIVERED, 1, 0, "", 800),
        CXR_OK);
    ck_assert_int_eq(cxr_node_store_deliveries_drop(cli, d.id, &count), CXR_OK);
    ck_assert_int_eq(count, 0);
    ck_assert_int_eq(cxr_node_store_deliveries_retry(cli, d.id, 900, &count), CXR_OK);
    ck_assert_int_eq(count, 0);
    ck_assert_int_eq(cxr_node_store_delivery_next(node, "pacs", 900, &d, &found, &due), CXR_OK);
    ck_assert(found);
    int64_t other = d.id;
    ck_assert_int_eq(cxr_node_store_deliveries_drop(cli, other, &count), CXR_OK);
    ck_assert_int_eq(count, 1);
    /* A dropped row's in-flight attempt cannot bring it back. */
    ck_assert_int_eq(
        cxr_node_store_delivery_update(node, other, CXR_NODE_DELIVERY_DEAD, 9, 0, "late", 950),
        CXR_OK);
    ck_assert_int_eq(cxr_node_store_delivery_next(node, "pacs", 1000, &d, &found, &due), CXR_OK);
    ck_assert(!found);
    struct cxr_node_store_counts c;
    ck_assert_int_eq(cxr_node_store_counts(node, &c), CXR_OK);
    ck_assert_int_eq(c.deliveries_dead, 0);
    ck_assert_int_eq(c.deliveries_delivered, 1);
    ck_assert_int_eq(c.deliveries_pending, 2); /* the archive ones */
    cxr_node_store_close(cli);
    cxr_node_store_close(node);
}
END_TEST

START_TEST(test_studies_list_window)
{
    struct cxr_node_store *s = open_store();
    int64_t a = add(s, "7.1", 1000);
    int64_t b = add(s, "7.2", 5000);
    struct cxr_triage_result r;
    result(&r, "OLD", "7.1", 0.1, CXR_TRIAGE_PRIORITY_ROUTINE);
    record(s, a, &r);
    result(&r, "NEW", "7.2", 0.6, CXR_TRIAGE_PRIORITY_PRIORITY);
    record(s, b, &r);
    struct cxr_triage_study_row *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(cxr_node_store_studies_list(s, 0, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 2);
    free(rows);
    ck_assert_int_eq(cxr_node_store_studies_list(s, 2000, 0, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(rows[0].study_instance_uid, "NEW");
    free(rows);
    cxr_node_store_close(s);
}
END_TEST

START_TEST(test_null_store_is_an_error)
{
    struct cxr_node_store_counts c;
    ck_assert_int_eq(cxr_node_store_counts(NULL, &c), CXR_ERR_INVALID_ARG);
    cxr_node_store_close(NULL);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("triage_store");
    TCase *tc = tcase_create("open");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_open_is_wal_full_sync);
    tcase_add_test(tc, test_newer_schema_refused);
    tcase_add_test(tc, test_first_version_store_upgraded);
    tcase_add_test(tc, test_release_store_upgraded);
    tcase_add_test(tc, test_info_json_round_trip_and_tolerance);
    tcase_add_test(tc, test_open_unwritable_folder_fails);
    tcase_add_test(tc, test_null_store_is_an_error);
    suite_add_tcase(s, tc);
    tc = tcase_create("instances");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_duplicate_is_idempotent);
    tcase_add_test(tc, test_kept_instance_bytes);
    tcase_add_test(tc, test_group_commit_all_or_nothing);
    tcase_add_test(tc, test_background_checkpoints);
    tcase_add_test(tc, test_jobs_survive_reopen_in_order);
    tcase_add_test(tc, test_priority_never_lowered);
    tcase_add_test(tc, test_study_warning_reaches_worklist);
    tcase_add_test(tc, test_unreadable_instance_has_no_study);
    tcase_add_test(tc, test_studies_list_window);
    suite_add_tcase(s, tc);
    tc = tcase_create("reports");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_report_marks_covered_instances);
    tcase_add_test(tc, test_report_without_sr);
    suite_add_tcase(s, tc);
    tc = tcase_create("deliveries");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_delivery_order_backoff_dead_letter);
    tcase_add_test(tc, test_queue_retry_and_drop_from_second_connection);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(store_suite()); }
