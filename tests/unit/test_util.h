/* test_util.h — helpers shared by the Check suites. */
#ifndef CXR_TEST_UTIL_H
#define CXR_TEST_UTIL_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>

/* Absolute paths baked in by CMake. */
const char *cxr_test_source_dir(void);  /* the repository root */
const char *cxr_test_binary_dir(void);  /* the build folder */
const char *cxr_test_shared_data(void); /* ../shared/data, may not exist */
const char *cxr_test_python(void);      /* Debian's python3 */

/* "<source>/tests/data/<name>" in a static buffer (one per thread). */
const char *cxr_test_data_path(const char *name);

/* True when ../shared/data (or a sub-folder of it) exists; otherwise prints
 * "SKIP <why>: ../shared/data absent" once and returns false. */
bool cxr_test_have_shared(const char *subdir, const char *why);

/* Reads a whole file (capped at 512 MiB); caller frees. NULL on failure. */
void *cxr_test_read_file(const char *path, size_t *len);
/* Writes bytes to a file; returns false on failure. */
bool cxr_test_write_file(const char *path, const void *data, size_t len);

/* A fresh empty temporary directory (mkdtemp under TMPDIR); caller removes it
 * with cxr_test_rmtree. */
char *cxr_test_tmpdir(void);
void cxr_test_rmtree(const char *path);

/* Runs a shell command, returns its exit status (-1 if it could not run). */
int cxr_test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Says that the calling test did not run what it is for ("no CUDA device")
 * and returns: prints "SKIP <why>" and records it, so that cxr_test_run
 * reports the suite as skipped (exit 77, CTest's SKIP_RETURN_CODE) instead of
 * passed when nothing failed. Works from Check's forked test processes. */
void cxr_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runs a suite with CK_ENV fork mode and returns the process exit status: 1
 * when a test failed, else 77 when a test called cxr_test_skip, else 0. */
int cxr_test_run(Suite *s);

#endif
