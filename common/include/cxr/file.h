/* cxr/file.h — opening a file that a user names (the configuration, a model,
 * a DICOM file, a training manifest and its rows) without hanging on a FIFO
 * or a device: open(2) of a FIFO with no writer waits for one forever, and
 * reading a character device may never end.
 *
 * Threads: any. Errors: the detail goes into `err` (CXR_ERRLEN bytes, may be
 * NULL), naming the path and what it is instead ("a FIFO").
 */
#ifndef CXR_FILE_H
#define CXR_FILE_H

#include <sys/stat.h>

#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

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
