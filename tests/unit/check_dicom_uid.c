/* check_dicom_uid.c — cxr_dicom_uid_new: "2.25.<decimal of a version 4
 * UUID>" (PS3.5 B.2), at most 64 characters, no leading zero, unique. */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/dicom.h"
#include "test_util.h"

/* "2.25.<decimal>" back to 16 big-endian bytes; false on overflow. */
static bool uid_to_uuid(const char *uid, uint8_t b[16])
{
    memset(b, 0, 16);
    for (const char *p = uid + 5; *p; p++) {
        unsigned carry = (unsigned)(*p - '0');
        for (int i = 15; i >= 0; i--) {
            unsigned v = b[i] * 10u + carry;
            b[i] = (uint8_t)v;
            carry = v >> 8;
        }
        if (carry)
            return false;
    }
    return true;
}

START_TEST(test_uid_format)
{
    for (int i = 0; i < 1000; i++) {
        char uid[CXR_DICOM_UID_LEN];
        memset(uid, 'x', sizeof uid);
        cxr_dicom_uid_new(uid);
        size_t n = strlen(uid);
        ck_assert_uint_le(n, 64);
        ck_assert_int_eq(strncmp(uid, "2.25.", 5), 0);
        ck_assert_uint_eq(strspn(uid + 5, "0123456789"), n - 5);
        ck_assert_msg(uid[5] != '0', "leading zero in %s", uid);
        ck_assert_uint_le(n - 5, 39); /* < 2^128 */
        uint8_t b[16];
        ck_assert_msg(uid_to_uuid(uid, b), "%s exceeds 128 bits", uid);
        ck_assert_msg((b[6] >> 4) == 4 && (b[8] & 0xC0) == 0x80, "%s is not a version 4 UUID", uid);
    }
}
END_TEST

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(test_uid_unique)
{
    enum { N = 100000 };
    char *buf = malloc((size_t)N * CXR_DICOM_UID_LEN);
    char **v = malloc(N * sizeof *v);
    ck_assert(buf && v);
    for (int i = 0; i < N; i++) {
        v[i] = buf + (size_t)i * CXR_DICOM_UID_LEN;
        cxr_dicom_uid_new(v[i]);
    }
    qsort(v, N, sizeof *v, cmp_str);
    for (int i = 1; i < N; i++)
        ck_assert_msg(strcmp(v[i - 1], v[i]) != 0, "duplicate UID %s", v[i]);
    free(v);
    free(buf);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dicom_uid");
    TCase *tc = tcase_create("uid");
    tcase_add_test(tc, test_uid_format);
    tcase_add_test(tc, test_uid_unique);
    suite_add_tcase(s, tc);
    return cxr_test_run(s);
}
