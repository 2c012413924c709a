/* test_util.c — see test_util.h. */
#define _GNU_SOURCE
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *cxr_test_source_dir(void) { return CXR_TEST_SOURCE_DIR; }
const char *cxr_test_binary_dir(void) { return CXR_TEST_BINARY_DIR; }
const char *cxr_test_shared_data(void)
{
    const char *env = getenv("CXR_SHARED_DATA");
    return env && *env ? env : CXR_TEST_SHARED_DATA;
}
const char *cxr_test_python(void) { return CXR_TEST_PYTHON; }

const char *cxr_test_data_path(const char *name)
{
    static __thread char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s/tests/data/%s", CXR_TEST_SOURCE_DIR, name);
    return buf;
}

bool cxr_test_have_shared(const char *subdir, const char *why)
{
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", cxr_test_shared_data(), subdir ? subdir : "");
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return true;
    printf("SKIP %s: %s absent (a fresh clone has no ../shared)\n", why, path);
    return false;
}

void *cxr_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0 || st.st_size > (512L << 20)) {
        fclose(f);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (buf && fread(buf, 1, n, f) != n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = n;
    }
    return buf;
}

bool cxr_test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

char *cxr_test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof tmpl, "%s/cxr-test-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

void cxr_test_rmtree(const char *path)
{
    if (!path || !*path)
        return;
    cxr_test_sh("rm -rf '%s'", path);
}

int cxr_test_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc == -1)
        return -1;
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

/* The file cxr_test_skip appends to: set by cxr_test_run for the forked
 * test processes (they share no memory with the runner). */
#define SKIP_FILE_ENV "CXR_TEST_SKIP_FILE"

void cxr_test_skip(const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    printf("SKIP %s\n", why);
    fflush(stdout);
    const char *path = getenv(SKIP_FILE_ENV);
    FILE *f = path ? fopen(path, "a") : NULL;
    if (f) {
        fprintf(f, "%s\n", why);
        fclose(f);
    }
}

int cxr_test_run(Suite *s)
{
    const char *base = getenv("TMPDIR");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cxr-test-skips-XXXXXX", base && *base ? base : "/tmp");
    int fd = mkstemp(path);
    if (fd >= 0) {
        close(fd);
        setenv(SKIP_FILE_ENV, path, 1);
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    size_t nskips = 0, len = 0;
    char *skips = fd >= 0 ? cxr_test_read_file(path, &len) : NULL;
    for (size_t i = 0; skips && i < len; i++)
        nskips += skips[i] == '\n';
    if (fd >= 0)
        unlink(path);
    if (failed == 0 && nskips > 0) {
        printf("SKIPPED: nothing failed, but %zu test(s) did not run what they are for:\n%.*s",
               nskips, (int)len, skips);
        free(skips);
        return 77;
    }
    free(skips);
    return failed == 0 ? 0 : 1;
}
