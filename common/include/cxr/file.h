/* cxr/file.h — files, the one way every module handles them:
 *   - written atomically and durably (a file that must be whole or absent
 *     after a crash: SRs, the node's spool copies, models, checkpoints,
 *     reports): a unique temporary file beside the target (O_EXCL), the
 *     bytes, fsync, rename over the target, fsync of the folder (the rename
 *     itself is durable only then). On any failure the temporary file is
 *     removed and the target is as it was;
 *   - opened for reading when a user names them (the configuration, a
 *     model, a DICOM file, a training manifest and its rows) without hanging
 *     on a FIFO or a device: open(2) of a FIFO with no writer waits for one
 *     forever, and reading a character device may never end.
 * Thread-safe (no shared state). Errors: the detail goes into `err`
 * (CXR_ERRLEN bytes, may be NULL), naming the path.
 */
#ifndef CXR_FILE_H
#define CXR_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
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

/* Opens `path` read-only and close-on-exec if it is a regular file (a
 * symbolic link to one counts), without blocking: the open is non-blocking,
 * the type is checked with fstat, then the descriptor is made blocking
 * again. Returns the descriptor (the caller closes it) and fills *sb (may be
 * NULL); or -1 with *status (may be NULL) CXR_ERR_NOT_FOUND (no such file),
 * CXR_ERR_IO (cannot open, or not a regular file) and err "<path>: not a
 * regular file (it is a FIFO)" / "<path>: cannot open: <errno text>". */
int cxr_file_open_regular(const char *path, struct stat *sb, enum cxr_status *status, char *err);

/* What kind of file a mode names, for messages: "a FIFO", "a folder",
 * "a character device", "a block device", "a socket", "a regular file". */
const char *cxr_file_kind(mode_t mode);

#ifdef __cplusplus
}
#endif
#endif
