/* plugin_db.h — the Orthanc plugin's durable state: one SQLite file (WAL,
 * synchronous=FULL) in the plugin's state folder.
 *
 * Why its own file and not the node's job store (cxr/store.h): the node's
 * unit of work is a received instance in its own spool, keyed by SOP
 * Instance UID, delivered by C-STORE. The plugin's unit of work is an Orthanc
 * study: the instances stay in Orthanc, the inbox is Orthanc's own change log
 * (durable in Orthanc's index), an SR must never be made twice for the same
 * study and model SHA-256, and forwards go through Orthanc's modalities and
 * peers. The rows are shaped so that the node's worklist code
 * (cxr/worklist.h) orders and prints them unchanged.
 *
 * The queue:
 *   Orthanc change log --(cursor, here)--> study WAITING --StableStudy--> QUEUED
 *   --scored--> SR_PENDING (the SR's bytes kept here) --stored in Orthanc--> DONE
 * Moving the cursor and creating/updating study rows happen in one
 * transaction, so a change is consumed exactly once; an SR is kept here
 * before it is posted, so a crash between the two posts the same SOP
 * Instance again (Orthanc answers AlreadyStored) instead of making a second.
 *
 * Threads: every call may come from any thread; calls are serialised on the
 * handle's mutex. Errors: CXR_ERR_TRIAGE_STORE with the detail in `err`
 * (PLUGIN_DB_ERRLEN bytes) where a call takes one, else plugin_db_last_error.
 * Times are milliseconds since the Unix epoch.
 */
#ifndef CXR_PLUGIN_DB_H
#define CXR_PLUGIN_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/status.h"
#include "cxr/study.h"
#include "cxr/triage.h"

#define PLUGIN_DB_ERRLEN 512
#define PLUGIN_ID_LEN    64 /* Orthanc identifiers are 44 characters */
#define PLUGIN_SHA_LEN   65

enum plugin_study_state {
    PLUGIN_STUDY_WAITING = 0,    /* seen in the change log, not stable yet */
    PLUGIN_STUDY_QUEUED = 1,     /* stable (or asked for): to score */
    PLUGIN_STUDY_SR_PENDING = 2, /* scored, SR built and kept here, not yet stored in Orthanc */
    PLUGIN_STUDY_DONE = 3
};
const char *plugin_study_state_name(int32_t state);

enum plugin_forward_state {
    PLUGIN_FORWARD_PENDING = 0,
    PLUGIN_FORWARD_DONE = 1,
    PLUGIN_FORWARD_DEAD = 2
};
const char *plugin_forward_state_name(int32_t state);

/* One study. `row` holds what the worklist shows (first_received_ms = first
 * seen in Orthanc, last_received_ms = last change seen). */
struct plugin_study {
    char orthanc_id[PLUGIN_ID_LEN];
    struct cxr_triage_study_row row;
    int32_t state;
    int64_t queued_ms;
    char model_sha[PLUGIN_SHA_LEN]; /* model of the last scoring ("" none) */
    char model_version[64];
    int64_t scored_ms;
    char sr_orthanc_id[PLUGIN_ID_LEN]; /* the last SR, once stored */
    char sr_series_orthanc_id[PLUGIN_ID_LEN];
    int64_t sr_stored_ms; /* when the last SR was stored in Orthanc (0 none) */
    int32_t attempts;     /* failed attempts at the current step */
    int64_t next_attempt_ms;
    char last_error[512];
};

/* One instance of a study and its result. row.path holds nothing; the
 * Orthanc identifier is `orthanc_id`. row.state RECEIVED means "taken by the
 * worker, no result yet" (row.attempts counts the takes: a file that crashes
 * the process is set aside after a few). */
struct plugin_instance {
    char orthanc_id[PLUGIN_ID_LEN];
    char model_sha[PLUGIN_SHA_LEN];
    struct cxr_triage_instance_row row;
};

/* One forward of an SR or a whole study to an Orthanc modality or peer. */
struct plugin_forward {
    int64_t id;
    char study[PLUGIN_ID_LEN];
    char kind[8];                 /* "sr" | "study" */
    char target[160];             /* "modality:NAME" | "peer:NAME" */
    char resource[PLUGIN_ID_LEN]; /* the Orthanc identifier sent */
    int32_t state;
    int32_t attempts;
    int64_t next_attempt_ms;
    int64_t created_ms;
    int64_t updated_ms;
    char last_error[512];
};

/* One entry read from Orthanc's change log, as the worker understood it. */
enum plugin_change_kind {
    PLUGIN_CHANGE_SEEN = 0,    /* a new study (or series): the study is receiving */
    PLUGIN_CHANGE_STABLE = 1,  /* StableStudy */
    PLUGIN_CHANGE_DELETED = 2, /* the study was deleted from Orthanc */
    PLUGIN_CHANGE_IGNORE = 3   /* only moves the cursor */
};
struct plugin_change {
    int64_t seq;
    enum plugin_change_kind kind;
    char study[PLUGIN_ID_LEN];
    int64_t time_ms;
};

struct plugin_counts {
    int64_t waiting, queued, sr_pending, done;
    int64_t instances_analysed, instances_not_analysed;
    int64_t srs, srs_stored;
    int64_t forwards_pending, forwards_done, forwards_dead;
};

struct plugin_db;

/* Opens (creating) `path`. On failure *out == NULL and err says why. */
enum cxr_status plugin_db_open(const char *path, struct plugin_db **out, char *err);
void plugin_db_close(struct plugin_db *db);
/* Detail of the calling thread's last failed call. */
const char *plugin_db_last_error(void);

/* The change-log cursor: the Seq of the last change consumed; *have false
 * before the first one was set. */
enum cxr_status plugin_db_cursor(struct plugin_db *db, int64_t *seq, bool *have);
enum cxr_status plugin_db_cursor_set(struct plugin_db *db, int64_t seq);

/* Applies changes[0..n-1] in order and moves the cursor past the last one
 * applied, in one transaction. A change that would add a study while
 * `limit` studies are unfinished (waiting, queued or SR pending) is not
 * applied, nor any after it: *applied says how many were. */
enum cxr_status plugin_db_apply_changes(struct plugin_db *db, const struct plugin_change *changes,
                                        size_t n, int64_t limit, int64_t now_ms, size_t *applied);

/* Queues a study now (POST .../score); creates its row when unknown, which
 * is refused with CXR_ERR_LIMIT when `limit` studies are unfinished. A study
 * whose SR is pending stays pending. */
enum cxr_status plugin_db_study_enqueue(struct plugin_db *db, const char *orthanc_id, int64_t limit,
                                        int64_t now_ms);

/* Waiting studies whose last change is at or before `before_ms`, at most
 * `max` identifiers (PLUGIN_ID_LEN each) into ids. */
enum cxr_status plugin_db_waiting_due(struct plugin_db *db, int64_t before_ms, size_t max,
                                      char (*ids)[PLUGIN_ID_LEN], size_t *n);
/* A waiting study Orthanc still receives: its last change becomes now. */
enum cxr_status plugin_db_study_touch(struct plugin_db *db, const char *orthanc_id, int64_t now_ms);
/* Waiting → queued. */
enum cxr_status plugin_db_study_stable(struct plugin_db *db, const char *orthanc_id,
                                       int64_t now_ms);
/* Unfinished studies (waiting, queued, SR pending) whose identifier sorts
 * after `after` ("" from the first), in identifier order, at most `max`
 * identifiers (PLUGIN_ID_LEN each) into ids: page through them. */
enum cxr_status plugin_db_unfinished_ids(struct plugin_db *db, const char *after, size_t max,
                                         char (*ids)[PLUGIN_ID_LEN], size_t *n);
/* Forgets a study (deleted from Orthanc) with its instances and forwards. */
enum cxr_status plugin_db_study_forget(struct plugin_db *db, const char *orthanc_id);

/* The next unit of work due at now_ms: a study whose SR is pending (first),
 * else the oldest queued study. *found false when none is due; then
 * *next_due_ms is the earliest later attempt (INT64_MAX none). */
enum cxr_status plugin_db_next_job(struct plugin_db *db, int64_t now_ms, struct plugin_study *out,
                                   bool *found, int64_t *next_due_ms);

/* One study by Orthanc identifier, or by Study Instance UID when `by_uid`. */
enum cxr_status plugin_db_study_get(struct plugin_db *db, const char *key, bool by_uid,
                                    struct plugin_study *out, bool *found);
/* Marks a study read at `read_ms` (0: unread); *found false for an unknown
 * Orthanc ID. A study counts as read while nothing arrived after that. */
enum cxr_status plugin_db_study_mark_read(struct plugin_db *db, const char *id, int64_t read_ms,
                                          bool *found);
/* Studies first seen at or after since_ms (0 = all), at most `limit`, any
 * order (the worklist orders them). malloc'd; caller frees. */
enum cxr_status plugin_db_studies_list(struct plugin_db *db, int64_t since_ms, size_t limit,
                                       struct plugin_study **rows, size_t *n);

/* The header values Orthanc knows of a study. */
struct plugin_study_header {
    const char *study_uid, *accession, *patient_id, *study_date, *description;
};
enum cxr_status plugin_db_study_header(struct plugin_db *db, const char *orthanc_id,
                                       const struct plugin_study_header *h);

/* Every instance row of a study (results and takes). malloc'd. */
enum cxr_status plugin_db_study_instances(struct plugin_db *db, const char *orthanc_id,
                                          struct plugin_instance **rows, size_t *n);
/* SOP Instance UIDs of the SRs made for a study (skipped when scoring). */
enum cxr_status plugin_db_study_is_own_sr(struct plugin_db *db, const char *study,
                                          const char *sop_uid, bool *own);

/* Marks instances taken (state RECEIVED, attempts + 1), in one transaction,
 * before the worker reads them; attempts_out[i] is the new count. */
struct plugin_take {
    const char *orthanc_id;
    const char *sop_uid;
};
enum cxr_status plugin_db_instances_take(struct plugin_db *db, const char *study,
                                         const struct plugin_take *takes, size_t n, int64_t now_ms,
                                         int32_t *attempts_out);

/* How often each of n instances was taken without a result so far (0: never,
 * or it has a result): >0 means the process died while it was in a batch.
 * Reads only. */
enum cxr_status plugin_db_instances_unfinished(struct plugin_db *db,
                                               const struct plugin_take *takes, size_t n,
                                               int32_t *takes_out);

/* Stores the results of n instances (taken before) scored with model_sha. */
struct plugin_outcome {
    const char *orthanc_id;
    const struct cxr_triage_result *result;
    bool has_info; /* result->info was read from the file */
};
enum cxr_status plugin_db_instances_record(struct plugin_db *db, const char *study,
                                           const char *model_sha,
                                           const struct plugin_outcome *outcomes, size_t n,
                                           int64_t now_ms);

/* The decision after scoring a study with the model model_sha, in one
 * transaction: the counts of its instances with results of that model, the
 * priority raised to `priority` (never lowered) and the score to `score`
 * (NaN none, kept at the highest), and either
 *   - sr != NULL: the SR (bytes kept here), state SR_PENDING, every analysed
 *     instance of that model reported;
 *   - sr == NULL: state DONE (nothing new to report). */
struct plugin_sr {
    const char *sop_uid;
    const char *series_uid;
    const void *bytes;
    size_t len;
};
enum cxr_status plugin_db_study_scored(struct plugin_db *db, const char *study,
                                       const char *model_sha, const char *model_version,
                                       int32_t priority, double score, const struct plugin_sr *sr,
                                       int64_t now_ms);

/* The SR kept for a study in SR_PENDING (malloc'd bytes; caller frees). */
enum cxr_status plugin_db_study_sr(struct plugin_db *db, const char *study, void **bytes,
                                   size_t *len, bool *found);

/* The SR is in Orthanc: state DONE, bytes dropped, and one pending forward
 * per (kind, target) given, in one transaction. */
struct plugin_forward_new {
    const char *kind, *target, *resource;
};
enum cxr_status plugin_db_sr_stored(struct plugin_db *db, const char *study,
                                    const char *sr_orthanc_id, const char *sr_series_orthanc_id,
                                    const struct plugin_forward_new *fw, size_t nfw,
                                    int64_t now_ms);

/* A failed step of a study: attempts + 1, the error, next attempt time. */
enum cxr_status plugin_db_study_failed(struct plugin_db *db, const char *study, const char *error,
                                       int64_t next_attempt_ms);

/* Forwards. */
enum cxr_status plugin_db_forward_next(struct plugin_db *db, int64_t now_ms,
                                       struct plugin_forward *out, bool *found,
                                       int64_t *next_due_ms);
enum cxr_status plugin_db_forward_update(struct plugin_db *db, int64_t id, int32_t state,
                                         int32_t attempts, int64_t next_attempt_ms,
                                         const char *error, int64_t now_ms);
/* state -1: all; study NULL: every study; newest first. malloc'd. */
enum cxr_status plugin_db_forwards_list(struct plugin_db *db, int32_t state, const char *study,
                                        size_t limit, struct plugin_forward **rows, size_t *n);
/* id > 0: that forward (pending or dead) back to pending, attempts reset,
 * due now; id 0: every dead one. *count: rows changed. */
enum cxr_status plugin_db_forwards_retry(struct plugin_db *db, int64_t id, int64_t now_ms,
                                         int64_t *count);

enum cxr_status plugin_db_counts(struct plugin_db *db, struct plugin_counts *c);

#endif
