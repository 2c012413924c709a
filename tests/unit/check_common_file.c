/* check_common_file.c — atomic, durable file writes (cxr/file.h), the one
 * way SRs, spool copies, models, checkpoints and reports are written
 * (issue 12 step 5): the target is whole or as it was, no temporary file
 * is left behind, errors name the path and the step. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/file.h"
#include "test_util.h"

static char dir[4096];

static void setup(void)
{
    char *d = cxr_test_tmpdir();
    ck_assert_ptr_nonnull(d);
    snprintf(dir, sizeof dir, "%s", d);
    free(d);
}

static void teardown(void) { cxr_test_rmtree(dir); }

/* Entries of `dir` whose name contains ".tmp" (leftover temporary files). */
static int leftovers(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".tmp") != NULL;
    closedir(d);
    return n;
}

static char *slurp(const char *path, size_t *len)
{
    char *buf = cxr_test_read_file(path, len);
    ck_assert_ptr_nonnull(buf);
    return buf;
}

START_TEST(test_write_replace_and_mode)
{
    char path[4200], err[CXR_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/a.bin", dir);
    ck_assert_int_eq(cxr_file_write_atomic(path, "first", 5, 0600, err), CXR_OK);
    ck_assert_int_eq(cxr_file_write_atomic(path, "second!", 7, 0600, err), CXR_OK);
    size_t len = 0;
    char *got = slurp(path, &len);
    ck_assert_uint_eq(len, 7);
    ck_assert(memcmp(got, "second!", 7) == 0);
    free(got);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0600);
    ck_assert_int_eq(leftovers(), 0);
}
END_TEST

/* A stream of writes, then abort: the target keeps its old bytes and no
 * temporary file is left. */
START_TEST(test_abort_keeps_target)
{
    char path[4200], err[CXR_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/b.bin", dir);
    ck_assert_int_eq(cxr_file_write_atomic(path, "old", 3, 0644, err), CXR_OK);
    struct cxr_file_atomic f;
    ck_assert_int_eq(cxr_file_atomic_open(&f, path, 0644, err), CXR_OK);
    ck_assert(cxr_file_atomic_write(&f, "new bytes", 9));
    ck_assert_int_eq(leftovers(), 1);
    cxr_file_atomic_abort(&f);
    cxr_file_atomic_abort(&f); /* twice: harmless */
    size_t len = 0;
    char *got = slurp(path, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert(memcmp(got, "old", 3) == 0);
    free(got);
    ck_assert_int_eq(leftovers(), 0);
    /* and a stream that commits */
    ck_assert_int_eq(cxr_file_atomic_open(&f, path, 0644, err), CXR_OK);
    for (int i = 0; i < 1000; i++)
        ck_assert(cxr_file_atomic_write(&f, "0123456789", 10));
    ck_assert_int_eq(cxr_file_atomic_commit(&f, err), CXR_OK);
    cxr_file_atomic_abort(&f); /* after commit: a no-op, the file stays */
    got = slurp(path, &len);
    ck_assert_uint_eq(len, 10000);
    free(got);
    ck_assert_int_eq(leftovers(), 0);
}
END_TEST

START_TEST(test_errors_name_path_and_step)
{
    char path[4200], err[CXR_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/no-such-folder/c.bin", dir);
    ck_assert_int_eq(cxr_file_write_atomic(path, "x", 1, 0644, err), CXR_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "No such file or directory"));
    ck_assert_int_eq(cxr_file_write_atomic("", "x", 1, 0644, err), CXR_ERR_INVALID_ARG);
    /* renaming over a folder fails at the rename step, and cleans up */
    snprintf(path, sizeof path, "%s/sub", dir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    ck_assert_int_eq(cxr_file_write_atomic(path, "x", 1, 0644, err), CXR_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "rename failed"));
    ck_assert_int_eq(leftovers(), 0);
    ck_assert_int_eq(cxr_file_errno_status(ENOSPC), CXR_ERR_NO_SPACE);
    ck_assert_int_eq(cxr_file_errno_status(EDQUOT), CXR_ERR_NO_SPACE);
    ck_assert_int_eq(cxr_file_errno_status(EACCES), CXR_ERR_IO);
    ck_assert(cxr_file_fsync_dir(dir));
    ck_assert(!cxr_file_fsync_dir("/no/such/folder"));
}
END_TEST

static Suite *file_suite(void)
{
    Suite *s = suite_create("common_file");
    TCase *tc = tcase_create("atomic");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_write_replace_and_mode);
    tcase_add_test(tc, test_abort_keeps_target);
    tcase_add_test(tc, test_errors_name_path_and_step);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(file_suite()); }
