/* sqlite_util.c — SQLite helpers shared by the node's store and the
 * plugin's queue (cxr/sqlite_util.h). */
#include <math.h>
#include <stdio.h>

#include "cxr/sqlite_util.h"

void cxr_sq_bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_TRANSIENT);
}

void cxr_sq_bind_real(sqlite3_stmt *st, int i, double v)
{
    if (isnan(v))
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_double(st, i, v);
}

void cxr_sq_col_text(sqlite3_stmt *st, int i, char *buf, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(buf, size, "%s", t ? (const char *)t : "");
}

double cxr_sq_col_real(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

enum cxr_status cxr_sq_status(int rc)
{
    if ((rc & 0xff) == SQLITE_FULL)
        return CXR_ERR_NO_SPACE;
    if ((rc & 0xff) == SQLITE_IOERR)
        return CXR_ERR_IO;
    return CXR_ERR_TRIAGE_STORE;
}

void cxr_sq_rollback(sqlite3 *db)
{
    if (db && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}
