/* cxr/sqlite_util.h — the SQLite value and error helpers both doors' stores
 * use (the node's job store, node/src/store_sqlite*.c, and the Orthanc
 * plugin's queue, plugin/src/plugin_db*.c): one way to bind and read a text
 * or a number that may be NaN, and one mapping of SQLite's result codes to
 * cxr_status. */
#ifndef CXR_SQLITE_UTIL_H
#define CXR_SQLITE_UTIL_H

#include <stddef.h>
#include <sqlite3.h>

#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A text parameter (NULL binds ""); SQLite copies it. */
void cxr_sq_bind_text(sqlite3_stmt *st, int i, const char *v);
/* A number parameter; NaN binds NULL. */
void cxr_sq_bind_real(sqlite3_stmt *st, int i, double v);
/* A text column into buf (NULL reads ""), cut at size - 1 bytes. */
void cxr_sq_col_text(sqlite3_stmt *st, int i, char *buf, size_t size);
/* A number column; NULL reads NaN. */
double cxr_sq_col_real(sqlite3_stmt *st, int i);
/* The status a failed SQLite call calls for: CXR_ERR_NO_SPACE for a full
 * disk, CXR_ERR_IO for an I/O error, else CXR_ERR_TRIAGE_STORE. */
enum cxr_status cxr_sq_status(int rc);
/* Rolls back the open transaction of db, if any (after a failed write). */
void cxr_sq_rollback(sqlite3 *db);

#ifdef __cplusplus
}
#endif
#endif
