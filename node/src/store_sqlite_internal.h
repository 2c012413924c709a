/* store_sqlite_internal.h — what the two halves of the SQLite job store
 * share: store_sqlite.c (helpers, instances, open/close) and
 * store_sqlite_reports.c (studies, reports, deliveries, counts). */
#ifndef CXR_STORE_SQLITE_INTERNAL_H
#define CXR_STORE_SQLITE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "cxr/sqlite_util.h"
#include "cxr/store.h"

#define MAX_ROWS 100000

struct sq_store {
    struct cxr_node_store base;
    sqlite3 *db;
    pthread_mutex_t mu;
    /* Background checkpoints (store_sqlite.c): a thread with its own
     * connection copies the WAL into the database, so that no write of
     * this connection (a C-STORE's commit) waits for a checkpoint. */
    struct {
        bool started, stop;
        sqlite3 *db;
        pthread_t thread;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        int wal_pages; /* frames in the WAL after the last commit */
        uint64_t runs;
    } ck;
    int sync_level; /* the connection's PRAGMA synchronous now (1 NORMAL, 2 FULL) */
    char path[CXR_NODE_STORE_PATHLEN];
};

/* How durable a write must be when the call returns (see store_sqlite.c). */
enum sq_durability {
    SQ_REDOABLE = 1, /* synchronous=NORMAL: a power loss may undo it; it is then redone */
    SQ_PROMISED = 2  /* synchronous=FULL: on disk before the call returns */
};

/* The detail of a failure into the thread's error text; the status for rc. */
enum cxr_status sq_fail(struct sq_store *s, int rc, const char *what);
int sq_exec(struct sq_store *s, const char *sql);
int sq_prepare(struct sq_store *s, const char *sql, sqlite3_stmt **st);
/* Sets PRAGMA synchronous for the next write (outside a transaction; caller holds the lock). */
int sq_set_durability(struct sq_store *s, enum sq_durability d);
void sq_lock(struct sq_store *s);
void sq_unlock(struct sq_store *s);
/* Rolls back a failed write transaction. */
void sq_rollback(struct sq_store *s);
/* Grows a row array (capped at MAX_ROWS); false when it cannot. */
bool sq_grow(void **rows, size_t *cap, size_t n, size_t elem);
/* One-statement write with up to three int64 bindings (INT64_MIN = not
 * bound); *changes gets the rows changed (may be NULL). */
enum cxr_status sq_exec_write(struct sq_store *s, enum sq_durability d, const char *sql, int64_t a,
                              int64_t b, int64_t c, int64_t *changes, const char *what);

/* store_sqlite_reports.c: the ops on studies, reports and deliveries. */
enum cxr_status sq_studies_unreported(struct cxr_node_store *base,
                                      struct cxr_triage_study_row **rows, size_t *n);
enum cxr_status sq_studies_list(struct cxr_node_store *base, int64_t since_ms, size_t limit,
                                struct cxr_triage_study_row **rows, size_t *n);
enum cxr_status sq_study_get(struct cxr_node_store *base, const char *uid,
                             struct cxr_triage_study_row *row, bool *found);
enum cxr_status sq_study_mark_read(struct cxr_node_store *base, const char *uid, int64_t read_ms,
                                   bool *found);
enum cxr_status sq_report_add(struct cxr_node_store *base, const struct cxr_node_store_report *rep,
                              int64_t *sr_id);
enum cxr_status sq_delivery_next(struct cxr_node_store *base, const char *dest, int64_t now_ms,
                                 struct cxr_node_delivery_row *row, bool *found,
                                 int64_t *next_due_ms);
enum cxr_status sq_delivery_update(struct cxr_node_store *base, int64_t id,
                                   enum cxr_node_delivery_state state, int32_t attempts,
                                   int64_t next_attempt_ms, const char *error, int64_t now_ms);
enum cxr_status sq_deliveries_list(struct cxr_node_store *base, int32_t state, size_t limit,
                                   struct cxr_node_delivery_row **rows, size_t *n);
enum cxr_status sq_deliveries_retry(struct cxr_node_store *base, int64_t id, int64_t now_ms,
                                    int64_t *count);
enum cxr_status sq_deliveries_drop(struct cxr_node_store *base, int64_t id, int64_t *count);
enum cxr_status sq_counts(struct cxr_node_store *base, struct cxr_node_store_counts *c);

#endif
