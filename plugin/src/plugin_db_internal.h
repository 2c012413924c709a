/* plugin_db_internal.h — what the two halves of the plugin's SQLite store
 * (plugin_db.c: queue and studies; plugin_db_results.c: results, SRs,
 * forwards) share. */
#ifndef CXR_PLUGIN_DB_INTERNAL_H
#define CXR_PLUGIN_DB_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "cxr/sqlite_util.h"
#include "plugin_db.h"

struct plugin_db {
    sqlite3 *db;
    pthread_mutex_t lock;
    char path[1024];
};

/* Records the detail (the statement and SQLite's text) and returns the status. */
enum cxr_status pdb_fail(struct plugin_db *d, const char *what);
void pdb_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The most rows one listing returns into memory (cxr_grow's hard cap). */
#define PDB_MAX_ROWS 1000000

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. */
enum cxr_status pdb_begin(struct plugin_db *d);
enum cxr_status pdb_commit(struct plugin_db *d);
void pdb_rollback(struct plugin_db *d);

/* Prepares `sql`; NULL on failure (the error is recorded). */
sqlite3_stmt *pdb_prepare(struct plugin_db *d, const char *sql);
/* Runs a statement that returns no row; SQLITE_DONE → CXR_OK. Resets it. */
enum cxr_status pdb_step_done(struct plugin_db *d, sqlite3_stmt *st, const char *what);

/* Unfinished studies (waiting, queued, SR pending). */
enum cxr_status pdb_unfinished(struct plugin_db *d, int64_t *n);

#endif
