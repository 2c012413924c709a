/* check_plugin.c — the Orthanc plugin's core, without Orthanc: its queue file
 * (plugin_db), what it reads from Orthanc's JSON configuration and its
 * forward targets (plugin_settings), and its REST documents over the node's
 * worklist code (plugin_json).
 *
 * What it protects: a change of Orthanc's log is consumed exactly once and
 * the cursor survives a reopen; the queue bound stops consuming (nothing is
 * dropped); an SR is kept until stored, then forwards are queued; a change
 * seen while an SR is pending makes the study look again; a study's
 * priority and score are never lowered; crash-loop takes are counted;
 * forwards are retried and dead ones revived; the worklist document has the
 * node's order and escalation, with each entry's Orthanc identifier. */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_db.h"
#include "plugin_json.h"
#include "plugin_settings.h"
#include "test_util.h"

static char *tmp;
static char dbpath[4096];

static void setup(void)
{
    tmp = cxr_test_tmpdir();
    ck_assert_ptr_nonnull(tmp);
    snprintf(dbpath, sizeof dbpath, "%s/queue.sqlite", tmp);
}

static void teardown(void)
{
    cxr_test_rmtree(tmp);
    free(tmp);
}

static struct plugin_db *open_db(void)
{
    char err[PLUGIN_DB_ERRLEN] = "";
    struct plugin_db *db = NULL;
    ck_assert_msg(plugin_db_open(dbpath, &db, err) == CXR_OK, "open: %s", err);
    return db;
}

static struct plugin_change change(int64_t seq, enum plugin_change_kind kind, const char *study)
{
    struct plugin_change c;
    memset(&c, 0, sizeof c);
    c.seq = seq;
    c.kind = kind;
    snprintf(c.study, sizeof c.study, "%s", study);
    c.time_ms = 1000 * seq;
    return c;
}

static struct plugin_study get(struct plugin_db *db, const char *id)
{
    struct plugin_study s;
    bool found = false;
    ck_assert_int_eq(plugin_db_study_get(db, id, false, &s, &found), CXR_OK);
    ck_assert_msg(found, "study %s not found", id);
    return s;
}

/* ---- the change log ---------------------------------------------------- */

START_TEST(test_changes_consumed_once_and_durable)
{
    struct plugin_db *db = open_db();
    int64_t seq = -1;
    bool have = true;
    ck_assert_int_eq(plugin_db_cursor(db, &seq, &have), CXR_OK);
    ck_assert(!have);
    struct plugin_change ch[] = {
        change(11, PLUGIN_CHANGE_SEEN, "A"), change(12, PLUGIN_CHANGE_SEEN, "A"),
        change(13, PLUGIN_CHANGE_IGNORE, ""), change(14, PLUGIN_CHANGE_STABLE, "A"),
        change(15, PLUGIN_CHANGE_SEEN, "B")};
    size_t applied = 0;
    ck_assert_int_eq(plugin_db_apply_changes(db, ch, 5, 100, 50000, &applied), CXR_OK);
    ck_assert_uint_eq(applied, 5);
    plugin_db_close(db);

    db = open_db(); /* what a restart finds */
    ck_assert_int_eq(plugin_db_cursor(db, &seq, &have), CXR_OK);
    ck_assert(have);
    ck_assert_int_eq(seq, 15);
    struct plugin_study a = get(db, "A"), b = get(db, "B");
    ck_assert_int_eq(a.state, PLUGIN_STUDY_QUEUED);
    ck_assert_int_eq(a.row.first_received_ms, 11000);
    ck_assert_int_eq(b.state, PLUGIN_STUDY_WAITING);
    struct plugin_study job;
    bool found = false;
    int64_t due = 0;
    ck_assert_int_eq(plugin_db_next_job(db, 60000, &job, &found, &due), CXR_OK);
    ck_assert(found);
    ck_assert_str_eq(job.orthanc_id, "A");
    struct plugin_counts c;
    ck_assert_int_eq(plugin_db_counts(db, &c), CXR_OK);
    ck_assert_int_eq(c.queued, 1);
    ck_assert_int_eq(c.waiting, 1);
    plugin_db_close(db);
}
END_TEST

START_TEST(test_queue_limit_stops_consuming)
{
    struct plugin_db *db = open_db();
    struct plugin_change ch[] = {
        change(1, PLUGIN_CHANGE_SEEN, "A"), change(2, PLUGIN_CHANGE_STABLE, "B"),
        change(3, PLUGIN_CHANGE_SEEN, "C"), change(4, PLUGIN_CHANGE_SEEN, "D")};
    size_t applied = 0;
    ck_assert_int_eq(plugin_db_apply_changes(db, ch, 4, 2, 1, &applied), CXR_OK);
    ck_assert_uint_eq(applied, 2); /* C would be a third unfinished study */
    int64_t seq = 0;
    bool have = false;
    ck_assert_int_eq(plugin_db_cursor(db, &seq, &have), CXR_OK);
    ck_assert_int_eq(seq, 2); /* C and D stay in Orthanc's log */
    struct plugin_study s;
    bool found = true;
    ck_assert_int_eq(plugin_db_study_get(db, "C", false, &s, &found), CXR_OK);
    ck_assert(!found);
    /* a change of a known study still goes through */
    struct plugin_change more[] = {change(3, PLUGIN_CHANGE_STABLE, "A")};
    ck_assert_int_eq(plugin_db_apply_changes(db, more, 1, 2, 1, &applied), CXR_OK);
    ck_assert_uint_eq(applied, 1);
    ck_assert_int_eq(plugin_db_study_enqueue(db, "E", 2, 1), CXR_ERR_LIMIT);
    ck_assert_int_eq(plugin_db_study_enqueue(db, "A", 2, 1), CXR_OK);
    plugin_db_close(db);
}
END_TEST

START_TEST(test_waiting_study_found_and_deleted)
{
    struct plugin_db *db = open_db();
    struct plugin_change ch[] = {change(1, PLUGIN_CHANGE_SEEN, "A"),
                                 change(2, PLUGIN_CHANGE_SEEN, "B")};
    size_t applied = 0;
    ck_assert_int_eq(plugin_db_apply_changes(db, ch, 2, 100, 1, &applied), CXR_OK);
    char ids[4][PLUGIN_ID_LEN];
    size_t n = 0;
    ck_assert_int_eq(plugin_db_waiting_due(db, 1500, 4, ids, &n), CXR_OK);
    ck_assert_uint_eq(n, 1); /* A last changed at 1000, B at 2000 */
    ck_assert_str_eq(ids[0], "A");
    ck_assert_int_eq(plugin_db_study_touch(db, "A", 9000), CXR_OK);
    ck_assert_int_eq(plugin_db_study_stable(db, "B", 9000), CXR_OK);
    ck_assert_int_eq(plugin_db_waiting_due(db, 5000, 4, ids, &n), CXR_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(get(db, "B").state, PLUGIN_STUDY_QUEUED);
    struct plugin_change del[] = {change(3, PLUGIN_CHANGE_DELETED, "B")};
    ck_assert_int_eq(plugin_db_apply_changes(db, del, 1, 100, 1, &applied), CXR_OK);
    struct plugin_study s;
    bool found = true;
    ck_assert_int_eq(plugin_db_study_get(db, "B", false, &s, &found), CXR_OK);
    ck_assert(!found);
    plugin_db_close(db);
}
END_TEST

/* A deleted patient makes the plugin check every unfinished study, a page
 * at a time: each one exactly once, done ones left out. */
START_TEST(test_unfinished_ids_paged)
{
    struct plugin_db *db = open_db();
    struct plugin_change ch[] = {
        change(1, PLUGIN_CHANGE_SEEN, "C"), change(2, PLUGIN_CHANGE_STABLE, "A"),
        change(3, PLUGIN_CHANGE_SEEN, "E"), change(4, PLUGIN_CHANGE_STABLE, "B"),
        change(5, PLUGIN_CHANGE_STABLE, "D")};
    size_t applied = 0;
    ck_assert_int_eq(plugin_db_apply_changes(db, ch, 5, 100, 1, &applied), CXR_OK);
    /* D is done: nothing new to report */
    ck_assert_int_eq(plugin_db_study_scored(db, "D", "sha", "1", 1, NAN, NULL, 2), CXR_OK);
    char ids[2][PLUGIN_ID_LEN], seen[8][PLUGIN_ID_LEN], after[PLUGIN_ID_LEN] = "";
    size_t n = 0, total = 0;
    do {
        ck_assert_int_eq(plugin_db_unfinished_ids(db, after, 2, ids, &n), CXR_OK);
        for (size_t i = 0; i < n; i++)
            snprintf(seen[total++], PLUGIN_ID_LEN, "%s", ids[i]);
        if (n)
            snprintf(after, sizeof after, "%s", ids[n - 1]);
    } while (n == 2 && total < 8);
    ck_assert_uint_eq(total, 4);
    ck_assert_str_eq(seen[0], "A");
    ck_assert_str_eq(seen[1], "B");
    ck_assert_str_eq(seen[2], "C");
    ck_assert_str_eq(seen[3], "E");
    plugin_db_close(db);
}
END_TEST

/* ---- results and SRs --------------------------------------------------- */

static struct cxr_triage_result result(const char *sop, bool analysed, double p, int32_t prio)
{
    struct cxr_triage_result r;
    memset(&r, 0, sizeof r);
    snprintf(r.info.sop_instance_uid, sizeof r.info.sop_instance_uid, "%s", sop);
    snprintf(r.info.study_instance_uid, sizeof r.info.study_instance_uid, "1.2.3");
    r.analysed = analysed;
    r.probability = analysed ? p : NAN;
    r.priority = (enum cxr_triage_priority)prio;
    r.status = analysed ? CXR_OK : CXR_ERR_DICOM_GATE;
    if (!analysed)
        snprintf(r.reason, sizeof r.reason, "lateral view (ViewPosition LL)");
    return r;
}

START_TEST(test_sr_kept_until_stored_then_forwards)
{
    struct plugin_db *db = open_db();
    ck_assert_int_eq(plugin_db_study_enqueue(db, "S", 10, 100), CXR_OK);
    struct plugin_take t[] = {{"i1", "1.2.3.1"}, {"i2", "1.2.3.2"}};
    int32_t att[2];
    ck_assert_int_eq(plugin_db_instances_take(db, "S", t, 2, 200, att), CXR_OK);
    ck_assert_int_eq(att[0], 1);
    struct cxr_triage_result r1 = result("1.2.3.1", true, 0.93, 3),
                             r2 = result("1.2.3.2", false, 0, 0);
    struct plugin_outcome o[] = {{"i1", &r1, true}, {"i2", &r2, false}};
    ck_assert_int_eq(plugin_db_instances_record(db, "S", "sha-a", o, 2, 300), CXR_OK);
    static const char bytes[] = "DICM fake SR bytes";
    struct plugin_sr sr = {"2.25.9", "2.25.9.1", bytes, sizeof bytes};
    ck_assert_int_eq(plugin_db_study_scored(db, "S", "sha-a", "1.0", 3, 0.93, &sr, 400), CXR_OK);
    plugin_db_close(db);

    db = open_db(); /* a crash between "SR built" and "SR stored" */
    struct plugin_study s = get(db, "S");
    ck_assert_int_eq(s.state, PLUGIN_STUDY_SR_PENDING);
    ck_assert_int_eq(s.row.priority, 3);
    ck_assert_int_eq(s.row.analysed, 1);
    ck_assert_int_eq(s.row.not_analysed, 1);
    ck_assert_str_eq(s.row.last_sr_sop_instance_uid, "2.25.9");
    ck_assert_int_eq(s.row.sr_count, 1);
    void *b = NULL;
    size_t len = 0;
    bool found = false;
    ck_assert_int_eq(plugin_db_study_sr(db, "S", &b, &len, &found), CXR_OK);
    ck_assert(found);
    ck_assert_uint_eq(len, sizeof bytes);
    ck_assert_mem_eq(b, bytes, len); /* the same SOP Instance is posted again */
    free(b);
    bool own = false;
    ck_assert_int_eq(plugin_db_study_is_own_sr(db, "S", "2.25.9", &own), CXR_OK);
    ck_assert(own);

    struct plugin_forward_new fw[] = {{"sr", "modality:pacs", "SR-ID"},
                                      {"study", "peer:backup", "S"}};
    ck_assert_int_eq(plugin_db_sr_stored(db, "S", "SR-ID", "SERIES-ID", fw, 2, 500), CXR_OK);
    s = get(db, "S");
    ck_assert_int_eq(s.state, PLUGIN_STUDY_DONE);
    ck_assert_str_eq(s.sr_orthanc_id, "SR-ID");
    ck_assert_int_eq(s.sr_stored_ms, 500);
    ck_assert_int_eq(s.row.unreported, 0);
    ck_assert_int_eq(s.row.deliveries_pending, 2);
    ck_assert_int_eq(plugin_db_study_sr(db, "S", &b, &len, &found), CXR_OK);
    ck_assert(!found);
    struct plugin_counts c;
    ck_assert_int_eq(plugin_db_counts(db, &c), CXR_OK);
    ck_assert_int_eq(c.srs, 1);
    ck_assert_int_eq(c.srs_stored, 1);
    ck_assert_int_eq(c.forwards_pending, 2);
    ck_assert_int_eq(c.done, 1);
    plugin_db_close(db);
}
END_TEST

START_TEST(test_change_during_pending_sr_rescans)
{
    struct plugin_db *db = open_db();
    ck_assert_int_eq(plugin_db_study_enqueue(db, "S", 10, 100), CXR_OK);
    struct plugin_sr sr = {"2.25.1", "2.25.1.1", "x", 1};
    ck_assert_int_eq(plugin_db_study_scored(db, "S", "sha", "1", 1, 0.1, &sr, 200), CXR_OK);
    struct plugin_change ch[] = {change(1, PLUGIN_CHANGE_SEEN, "S"),
                                 change(2, PLUGIN_CHANGE_STABLE, "S")};
    size_t applied = 0;
    ck_assert_int_eq(plugin_db_apply_changes(db, ch, 2, 10, 300, &applied), CXR_OK);
    ck_assert_int_eq(get(db, "S").state, PLUGIN_STUDY_SR_PENDING); /* the SR is stored first */
    ck_assert_int_eq(plugin_db_sr_stored(db, "S", "SR", "SE", NULL, 0, 400), CXR_OK);
    ck_assert_int_eq(get(db, "S").state, PLUGIN_STUDY_QUEUED); /* then a look at the late images */
    plugin_db_close(db);
}
END_TEST

START_TEST(test_priority_and_score_never_lowered)
{
    struct plugin_db *db = open_db();
    ck_assert_int_eq(plugin_db_study_enqueue(db, "S", 10, 100), CXR_OK);
    ck_assert_int_eq(plugin_db_study_scored(db, "S", "sha-a", "1", 3, 0.95, NULL, 200), CXR_OK);
    /* re-scored later (another model): milder */
    ck_assert_int_eq(plugin_db_study_enqueue(db, "S", 10, 300), CXR_OK);
    ck_assert_int_eq(plugin_db_study_scored(db, "S", "sha-b", "2", 1, 0.20, NULL, 400), CXR_OK);
    struct plugin_study s = get(db, "S");
    ck_assert_int_eq(s.row.priority, 3);
    ck_assert_double_eq_tol(s.row.score, 0.95, 1e-12);
    ck_assert_str_eq(s.model_sha, "sha-b");
    /* a study with nothing analysed keeps no score */
    ck_assert_int_eq(plugin_db_study_enqueue(db, "T", 10, 100), CXR_OK);
    ck_assert_int_eq(plugin_db_study_scored(db, "T", "sha-a", "1", 0, NAN, NULL, 200), CXR_OK);
    ck_assert(isnan(get(db, "T").row.score));
    plugin_db_close(db);
}
END_TEST

START_TEST(test_takes_count_unfinished_reads)
{
    struct plugin_db *db = open_db();
    struct plugin_take t[] = {{"i1", "1.2.1"}};
    int32_t att = 0;
    for (int k = 1; k <= 3; k++) { /* three takes that never ended (crashes) */
        ck_assert_int_eq(plugin_db_instances_take(db, "S", t, 1, k, &att), CXR_OK);
        ck_assert_int_eq(att, k);
    }
    struct cxr_triage_result r = result("1.2.1", true, 0.5, 2);
    struct plugin_outcome o = {"i1", &r, true};
    ck_assert_int_eq(plugin_db_instances_record(db, "S", "sha", &o, 1, 10), CXR_OK);
    ck_assert_int_eq(plugin_db_instances_take(db, "S", t, 1, 11, &att), CXR_OK);
    ck_assert_int_eq(att, 1); /* a finished read starts again at 1 */
    struct plugin_instance *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(plugin_db_study_instances(db, "S", &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(rows[0].orthanc_id, "i1");
    ck_assert_int_eq(rows[0].row.state, CXR_TRIAGE_INSTANCE_RECEIVED);
    free(rows);
    ck_assert_int_eq(plugin_db_instances_record(db, "S", "sha", &o, 1, 12), CXR_OK);
    ck_assert_int_eq(plugin_db_study_instances(db, "S", &rows, &n), CXR_OK);
    ck_assert_int_eq(rows[0].row.state, CXR_TRIAGE_INSTANCE_ANALYSED);
    ck_assert(rows[0].row.has_info);
    ck_assert_str_eq(rows[0].row.info.sop_instance_uid, "1.2.1");
    ck_assert_double_eq_tol(rows[0].row.probability, 0.5, 1e-12);
    ck_assert_str_eq(rows[0].model_sha, "sha");
    free(rows);
    plugin_db_close(db);
}
END_TEST

/* After a crash the worker scores the instances taken before without a
 * result one at a time (issue 14, item 6): plugin_db_instances_unfinished
 * says which of a batch those are, without taking them. A batch of three
 * dies; the first is then scored alone; the second dies alone and counts 2,
 * the third (never the culprit) stays at its one interrupted take. */
START_TEST(test_unfinished_takes_per_instance)
{
    struct plugin_db *db = open_db();
    struct plugin_take t[] = {{"i1", "1.2.1"}, {"i2", "1.2.2"}, {"i3", "1.2.3"}};
    int32_t att[3], un[3];
    ck_assert_int_eq(plugin_db_instances_unfinished(db, t, 3, un), CXR_OK);
    ck_assert(un[0] == 0 && un[1] == 0 && un[2] == 0);                         /* never taken */
    ck_assert_int_eq(plugin_db_instances_take(db, "S", t, 3, 1, att), CXR_OK); /* dies */
    ck_assert_int_eq(plugin_db_instances_unfinished(db, t, 3, un), CXR_OK);
    ck_assert(un[0] == 1 && un[1] == 1 && un[2] == 1);
    ck_assert_int_eq(plugin_db_instances_take(db, "S", t, 1, 2, att), CXR_OK);
    struct cxr_triage_result r = result("1.2.1", true, 0.5, 2);
    struct plugin_outcome o = {"i1", &r, true};
    ck_assert_int_eq(plugin_db_instances_record(db, "S", "sha", &o, 1, 3), CXR_OK);
    ck_assert_int_eq(plugin_db_instances_take(db, "S", t + 1, 1, 4, att), CXR_OK); /* dies */
    ck_assert_int_eq(plugin_db_instances_unfinished(db, t, 3, un), CXR_OK);
    ck_assert_msg(un[0] == 0 && un[1] == 2 && un[2] == 1, "%d %d %d", un[0], un[1], un[2]);
    ck_assert_int_eq(plugin_db_instances_take(db, "S", t, 3, 5, att), CXR_OK);
    ck_assert_int_eq(att[0], 1); /* taken again after its result: starts again */
    plugin_db_close(db);
}
END_TEST

START_TEST(test_forwards_retry_and_dead)
{
    struct plugin_db *db = open_db();
    ck_assert_int_eq(plugin_db_study_enqueue(db, "S", 10, 100), CXR_OK);
    struct plugin_sr sr = {"2.25.1", "2.25.1.1", "x", 1};
    ck_assert_int_eq(plugin_db_study_scored(db, "S", "sha", "1", 1, 0.1, &sr, 200), CXR_OK);
    struct plugin_forward_new fw[] = {{"sr", "modality:pacs", "SR"}};
    ck_assert_int_eq(plugin_db_sr_stored(db, "S", "SR", "SE", fw, 1, 1000), CXR_OK);
    struct plugin_forward f;
    bool found = false;
    int64_t due = 0;
    ck_assert_int_eq(plugin_db_forward_next(db, 1000, &f, &found, &due), CXR_OK);
    ck_assert(found);
    ck_assert_str_eq(f.target, "modality:pacs");
    ck_assert_int_eq(
        plugin_db_forward_update(db, f.id, PLUGIN_FORWARD_PENDING, 1, 5000, "refused", 1000),
        CXR_OK);
    ck_assert_int_eq(plugin_db_forward_next(db, 2000, &f, &found, &due), CXR_OK);
    ck_assert(!found);
    ck_assert_int_eq(due, 5000);
    ck_assert_int_eq(
        plugin_db_forward_update(db, f.id, PLUGIN_FORWARD_DEAD, 12, 0, "gave up", 6000), CXR_OK);
    struct plugin_forward *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(plugin_db_forwards_list(db, PLUGIN_FORWARD_DEAD, NULL, 10, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(rows[0].last_error, "gave up");
    free(rows);
    int64_t count = 0;
    ck_assert_int_eq(plugin_db_forwards_retry(db, 999, 7000, &count), CXR_OK);
    ck_assert_int_eq(count, 0);
    ck_assert_int_eq(plugin_db_forwards_retry(db, 0, 7000, &count), CXR_OK);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(plugin_db_forward_next(db, 7000, &f, &found, &due), CXR_OK);
    ck_assert(found);
    ck_assert_int_eq(f.attempts, 0);
    plugin_db_close(db);
}
END_TEST

START_TEST(test_newer_schema_refused)
{
    struct plugin_db *db = open_db();
    plugin_db_close(db);
    ck_assert_int_eq(
        cxr_test_sh("sqlite3 '%s' \"UPDATE meta SET value = 99 WHERE key = 'schema'\"", dbpath), 0);
    char err[PLUGIN_DB_ERRLEN] = "";
    ck_assert_int_ne(plugin_db_open(dbpath, &db, err), CXR_OK);
    ck_assert_ptr_null(db);
    ck_assert_msg(strstr(err, "schema version 99"), "%s", err);
}
END_TEST

/* The queue file of cxr-triage 0.1.0 (schema 1: header values as the
 * struct's bytes; tests/data/store/queue-v1.sqlite, see PROVENANCE) opens:
 * it is upgraded in place to JSON header values, and the study, its SR and
 * every instance with its header values are still there. */
START_TEST(test_release_queue_upgraded)
{
    size_t len = 0;
    void *bytes = cxr_test_read_file(cxr_test_data_path("store/queue-v1.sqlite"), &len);
    ck_assert_ptr_nonnull(bytes);
    ck_assert(cxr_test_write_file(dbpath, bytes, len));
    free(bytes);
    struct plugin_db *db = open_db();
    const char *study = "371e9659-d8fb4c26-84b0988e-dee94d30-4ff31df9";
    struct plugin_study s = get(db, study);
    ck_assert_str_eq(s.row.study_instance_uid, "2.25.902.1");
    ck_assert_int_eq(s.state, PLUGIN_STUDY_DONE);
    ck_assert_uint_gt(strlen(s.row.last_sr_sop_instance_uid), 10);
    struct plugin_instance *rows = NULL;
    size_t n = 0;
    ck_assert_int_eq(plugin_db_study_instances(db, study, &rows, &n), CXR_OK);
    ck_assert_uint_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        const struct cxr_triage_instance_row *r = &rows[i].row;
        ck_assert_msg(r->has_info, "instance %s lost its header values", rows[i].orthanc_id);
        ck_assert_str_eq(r->info.sop_instance_uid, r->sop_instance_uid);
        ck_assert_str_eq(r->study_instance_uid, "2.25.902.1");
        ck_assert_str_eq(r->info.patient_id, "PID9021");
        ck_assert_str_eq(r->info.modality, "CR");
        ck_assert_uint_eq(r->info.rows, 320);
        ck_assert_uint_eq(r->info.columns, 256);
    }
    int lateral = 0;
    for (size_t i = 0; i < n; i++)
        lateral += strcmp(rows[i].row.info.view_position, "LL") == 0 &&
                   rows[i].row.state == CXR_TRIAGE_INSTANCE_NOT_ANALYSED;
    ck_assert_int_eq(lateral, 1);
    free(rows);
    plugin_db_close(db);
    ck_assert_int_eq(
        cxr_test_sh("test \"$(sqlite3 '%s' \"SELECT value FROM meta WHERE key='schema';"
                    " SELECT count(*) FROM instances WHERE typeof(info)='blob'\""
                    " | tr '\\n' ' ')\" = '3 0 '",
                    dbpath),
        0);
}
END_TEST

/* ---- Orthanc's configuration, targets, labels -------------------------- */

START_TEST(test_settings_from_orthanc_json)
{
    struct plugin_orthanc_settings s;
    char err[PLUGIN_ERRLEN] = "";
    const char *full =
        "{\"StorageDirectory\": \"/var/lib/orthanc/db\", \"StableAge\": 5,"
        " \"CxrTriage\": {\"ConfigFile\": \"/etc/cxr-triage/cxr-triage.xml\", \"Required\": true},"
        " \"UserMetadata\": {\"CxrTriagePriority\": 7701, \"CxrTriageLevel\": 7702,"
        " \"CxrTriageScore\": 7703, \"CxrTriageModel\": 7704, \"CxrTriageScoredAt\": 7705,"
        " \"CxrTriageSr\": 7706}}";
    ck_assert_int_eq(plugin_settings_from_json(full, &s, err), CXR_OK);
    ck_assert(s.configured && s.required && s.metadata_declared);
    ck_assert_str_eq(s.config_file, "/etc/cxr-triage/cxr-triage.xml");
    ck_assert_str_eq(s.index_dir, "/var/lib/orthanc/db");
    ck_assert_int_eq(s.stable_age_s, 5);

    ck_assert_int_eq(
        plugin_settings_from_json("{\"UserMetadata\": {\"CxrTriageLevel\": 12}}", &s, err), CXR_OK);
    ck_assert(!s.configured && !s.required && !s.metadata_declared);
    ck_assert_int_eq(s.stable_age_s, 60);
    ck_assert_str_eq(s.index_dir, "OrthancStorage");
    ck_assert_msg(strstr(s.metadata_missing, "CxrTriageLevel"),
                  "index < 1024 counts as missing: %s", s.metadata_missing);
    ck_assert(strstr(s.metadata_missing, "CxrTriageSr"));

    static const char *const bad[] = {
        "{not json", "[1]", "{\"CxrTriage\": \"x.xml\"}", "{\"CxrTriage\": {\"ConfigFile\": 3}}",
        "{\"CxrTriage\": {\"ConfigFile\": \"a\", \"Required\": \"yes\"}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        ck_assert_msg(plugin_settings_from_json(bad[i], &s, err) == CXR_ERR_CONF_PARSE, "%s",
                      bad[i]);
        ck_assert_msg(err[0], "no message for %s", bad[i]);
    }
}
END_TEST

START_TEST(test_targets_parse)
{
    struct plugin_target t[PLUGIN_MAX_TARGETS];
    size_t n = 0;
    char err[PLUGIN_ERRLEN] = "";
    ck_assert_int_eq(
        plugin_targets_parse("  modality:pacs peer:backup-1  reading\t", t, 16, &n, err), CXR_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(t[0].kind, PLUGIN_TARGET_MODALITY);
    ck_assert_str_eq(t[0].name, "pacs");
    ck_assert_int_eq(t[1].kind, PLUGIN_TARGET_PEER);
    ck_assert_str_eq(t[1].name, "backup-1");
    ck_assert_str_eq(t[1].text, "peer:backup-1");
    ck_assert_int_eq(t[2].kind, PLUGIN_TARGET_MODALITY);
    ck_assert_int_eq(plugin_targets_parse("", t, 16, &n, err), CXR_OK);
    ck_assert_uint_eq(n, 0);
    static const char *const bad[] = {"ftp:x", "modality:", "peer:a/b", "modality:a\"b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(plugin_targets_parse(bad[i], t, 16, &n, err) == CXR_ERR_CONF_VALUE, "%s",
                      bad[i]);
    ck_assert_int_eq(plugin_targets_parse("a b c", t, 2, &n, err), CXR_ERR_CONF_VALUE);
}
END_TEST

START_TEST(test_labels)
{
    char l[64];
    plugin_label_for("URGENT", l, sizeof l);
    ck_assert_str_eq(l, "cxr-urgent");
    plugin_label_for("Not Analysed!", l, sizeof l);
    ck_assert_str_eq(l, "cxr-not_analysed_");
    plugin_label_for("VERYLONGNAME", l, 8);
    ck_assert_str_eq(l, "cxr-ver");
}
END_TEST

/* ---- REST documents ---------------------------------------------------- */

static struct plugin_study study(const char *id, const char *uid, int32_t prio, double score,
                                 int64_t first_ms)
{
    struct plugin_study s;
    memset(&s, 0, sizeof s);
    snprintf(s.orthanc_id, sizeof s.orthanc_id, "%s", id);
    snprintf(s.row.study_instance_uid, sizeof s.row.study_instance_uid, "%s", uid);
    snprintf(s.row.patient_id, sizeof s.row.patient_id, "PID-%s", id);
    s.row.priority = prio;
    s.row.score = score;
    s.row.first_received_ms = s.row.last_received_ms = first_ms;
    s.state = PLUGIN_STUDY_DONE;
    return s;
}

START_TEST(test_worklist_document)
{
    /* given out of order; ROUTINE "r-old" waited 2 h with a 60 min limit */
    struct plugin_study rows[] = {
        study("r-new", "1.1", CXR_TRIAGE_PRIORITY_ROUTINE, 0.2, 7000000),
        study("u", "1.2", CXR_TRIAGE_PRIORITY_URGENT, 0.97, 6000000),
        study("r-old", "1.3", CXR_TRIAGE_PRIORITY_ROUTINE, 0.1, 0),
        study("p", "1.4", CXR_TRIAGE_PRIORITY_PRIORITY, 0.7, 6500000),
        study("na", "1.5", CXR_TRIAGE_PRIORITY_NOT_ANALYSED, NAN, 6900000),
    };
    struct cxr_triage_worklist_options o;
    cxr_triage_worklist_options_init(&o, 7200000);
    o.max_wait_minutes = 60;
    char *text = plugin_worklist_json(rows, 5, &o);
    ck_assert_ptr_nonnull(text);
    json_object *root = json_tokener_parse(text);
    free(text);
    json_object *list = NULL;
    ck_assert(json_object_object_get_ex(root, "studies", &list));
    ck_assert_uint_eq(json_object_array_length(list), 5);
    static const char *const want_id[] = {"u", "p", "r-old", "r-new", "na"};
    static const char *const want_uid[] = {"1.2", "1.4", "1.3", "1.1", "1.5"};
    for (size_t i = 0; i < 5; i++) {
        json_object *e = json_object_array_get_idx(list, i), *v = NULL;
        ck_assert(json_object_object_get_ex(e, "orthanc_id", &v));
        ck_assert_str_eq(json_object_get_string(v), want_id[i]);
        ck_assert(json_object_object_get_ex(e, "study_instance_uid", &v));
        ck_assert_str_eq(json_object_get_string(v), want_uid[i]);
        ck_assert(json_object_object_get_ex(e, "state", &v));
        ck_assert_str_eq(json_object_get_string(v), "done");
        ck_assert(!json_object_object_get_ex(e, "patient_id", &v));
    }
    json_object *esc = NULL, *e2 = json_object_array_get_idx(list, 2);
    ck_assert(json_object_object_get_ex(e2, "escalated", &esc) && json_object_get_boolean(esc));
    json_object_put(root);
}
END_TEST

START_TEST(test_study_document)
{
    struct plugin_study s = study("S", "1.2", CXR_TRIAGE_PRIORITY_URGENT, 0.9, 0);
    struct plugin_instance inst[2];
    memset(inst, 0, sizeof inst);
    snprintf(inst[0].orthanc_id, sizeof inst[0].orthanc_id, "i-a");
    inst[0].row.state = CXR_TRIAGE_INSTANCE_ANALYSED;
    inst[0].row.probability = 0.9;
    snprintf(inst[1].orthanc_id, sizeof inst[1].orthanc_id, "i-b");
    inst[1].row.state = CXR_TRIAGE_INSTANCE_NOT_ANALYSED;
    inst[1].row.status = CXR_ERR_DICOM_GATE;
    snprintf(inst[1].row.reason, sizeof inst[1].row.reason, "lateral view");
    struct plugin_forward fw;
    memset(&fw, 0, sizeof fw);
    fw.id = 7;
    fw.state = PLUGIN_FORWARD_DEAD;
    snprintf(fw.last_error, sizeof fw.last_error, "refused");
    struct cxr_triage_worklist_options o;
    cxr_triage_worklist_options_init(&o, 1000);
    char *text = plugin_study_json(&s, inst, 2, &fw, 1, &o);
    ck_assert_ptr_nonnull(text);
    json_object *root = json_tokener_parse(text), *list = NULL, *v = NULL;
    free(text);
    ck_assert(json_object_object_get_ex(root, "instances", &list));
    json_object *b = json_object_array_get_idx(list, 1);
    ck_assert(json_object_object_get_ex(b, "orthanc_id", &v));
    ck_assert_str_eq(json_object_get_string(v), "i-b");
    ck_assert(json_object_object_get_ex(b, "reason", &v));
    ck_assert_str_eq(json_object_get_string(v), "lateral view");
    ck_assert(json_object_object_get_ex(root, "forwards", &list));
    ck_assert(json_object_object_get_ex(json_object_array_get_idx(list, 0), "state", &v));
    ck_assert_str_eq(json_object_get_string(v), "dead");
    json_object_put(root);
}
END_TEST

static Suite *plugin_suite(void)
{
    Suite *s = suite_create("plugin");
    TCase *tc = tcase_create("queue");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_changes_consumed_once_and_durable);
    tcase_add_test(tc, test_queue_limit_stops_consuming);
    tcase_add_test(tc, test_waiting_study_found_and_deleted);
    tcase_add_test(tc, test_unfinished_ids_paged);
    tcase_add_test(tc, test_newer_schema_refused);
    tcase_add_test(tc, test_release_queue_upgraded);
    suite_add_tcase(s, tc);
    tc = tcase_create("results");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_sr_kept_until_stored_then_forwards);
    tcase_add_test(tc, test_change_during_pending_sr_rescans);
    tcase_add_test(tc, test_priority_and_score_never_lowered);
    tcase_add_test(tc, test_takes_count_unfinished_reads);
    tcase_add_test(tc, test_unfinished_takes_per_instance);
    tcase_add_test(tc, test_forwards_retry_and_dead);
    suite_add_tcase(s, tc);
    tc = tcase_create("settings");
    tcase_add_test(tc, test_settings_from_orthanc_json);
    tcase_add_test(tc, test_targets_parse);
    tcase_add_test(tc, test_labels);
    suite_add_tcase(s, tc);
    tc = tcase_create("documents");
    tcase_add_test(tc, test_worklist_document);
    tcase_add_test(tc, test_study_document);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(plugin_suite()); }
