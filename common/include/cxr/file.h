/* cxr/file.h — files written atomically and durably, the one way every
 * module writes a file that must be whole or absent after a crash (SRs, the
 * node's spool copies, models, checkpoints, reports): a unique temporary
 * file beside the target (O_EXCL), the bytes, fsync, rename over the
 * target, fsync of the folder (the rename itself is durable only then).
 * On any failure the temporary file is removed and the target is as it
 * was. Thread-safe (no shared state).
 */
#ifndef CXR_FILE_H
#define CXR_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A file being written: cxr_file_atomic_open, any number of
 * cxr_file_atomic_write, then cxr_file_atomic_commit or _abort. */
struct cxr_file_atomic {
    int fd;     /* -1 when not open */
    char *tmp;  /* the temporary file's path (malloc'd) */
    char *path; /* the target (malloc'd) */
};

/* Creates the temporary file beside `path` with `mode` (umask applies).
 * CXR_ERR_IO / CXR_ERR_NOMEM with err (CXR_ERRLEN, may be NULL) naming the
 * folder and the reason. */
enum cxr_status cxr_file_atomic_open(struct cxr_file_atomic *f, const char *path, mode_t mode,
                                     char *err);

/* Appends `len` bytes (retries short writes and EINTR). False with errno
 * set on failure; the caller then aborts. */
bool cxr_file_atomic_write(struct cxr_file_atomic *f, const void *buf, size_t len);

/* fsync, close, rename over the target, fsync of the folder. Frees f's
 * strings whatever the outcome; on failure the temporary file is gone and
 * err says which step failed (CXR_ERR_NO_SPACE for a full disk or quota,
 * else CXR_ERR_IO). */
enum cxr_status cxr_file_atomic_commit(struct cxr_file_atomic *f, char *err);

/* Closes and removes the temporary file; frees f's strings. Safe on a
 * file that was never opened (fd -1, NULL strings) or already committed. */
void cxr_file_atomic_abort(struct cxr_file_atomic *f);

/* The whole write in one call: `len` bytes of `buf` to `path`. */
enum cxr_status cxr_file_write_atomic(const char *path, const void *buf, size_t len, mode_t mode,
                                      char *err);

/* fsync of a folder (makes a rename or a new entry in it durable). False
 * with errno set on failure; file systems that cannot fsync a folder
 * (EINVAL) count as success. */
bool cxr_file_fsync_dir(const char *dir);

/* The status a failed write's errno calls for: CXR_ERR_NO_SPACE for
 * ENOSPC and EDQUOT, else CXR_ERR_IO. */
enum cxr_status cxr_file_errno_status(int e);

#ifdef __cplusplus
}
#endif
#endif
