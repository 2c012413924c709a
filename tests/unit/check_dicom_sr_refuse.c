/* check_dicom_sr_refuse.c — what the SR writer refuses (bad requests, with
 * the reason and without leaving a file or a buffer) and how it writes
 * (temp file + rename, I/O errors). */
#include <check.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/dicom.h"
#include "dicom_sr_fixture.h"
#include "test_util.h"

enum bad_kind {
    BAD_NULL_STUDY,
    BAD_NO_IMAGES,
    BAD_NULL_IMAGES,
    BAD_NAN,
    BAD_PROB_HIGH,
    BAD_PROB_NEG,
    BAD_UID_LETTERS,
    BAD_UID_LONG,
    BAD_UID_DOT,
    BAD_UID_EMPTY,
    BAD_STUDY_UID,
    BAD_ALGO_NULL,
    BAD_SHA_SHORT,
    BAD_SHA_HEX,
    BAD_CONTRADICTION,
    BAD_DUPLICATE,
    BAD_PRED_NO_SERIES,
    BAD_THRESHOLD,
    BAD_DEVICE_UID,
    BAD_PRIORITY_EMPTY,
    BAD_MANUFACTURER_NULL,
    BAD_UID_NO_NUL,
    BAD_WARNING_NO_NUL,
    BAD_COUNT
};

/* 65 characters: one more than a UID may have */
#define LONG_UID "1.2.3456789012345678901234567890123456789012345678901234567890123"
#define NOT_HEX  "g0c0ffee11223344556677889900aabbccddeeff0123456789abcdef01234567"

static void spoil(struct req_buf *b, int kind)
{
    switch (kind) {
    case BAD_NULL_STUDY: b->req.study = NULL; break;
    case BAD_NO_IMAGES: b->req.image_count = 0; break;
    case BAD_NULL_IMAGES: b->req.images = NULL; break;
    case BAD_NAN: b->img[1].probability = NAN; break;
    case BAD_PROB_HIGH: b->img[0].probability = 1.5; break;
    case BAD_PROB_NEG: b->img[1].probability = -0.01; break;
    case BAD_UID_LETTERS: snprintf(b->img[0].sop_instance_uid, CXR_DICOM_UID_LEN, "1.2.abc"); break;
    case BAD_UID_LONG: b->req.device_observer_uid = LONG_UID; break;
    case BAD_UID_DOT: snprintf(b->img[1].series_instance_uid, CXR_DICOM_UID_LEN, "1.2.3."); break;
    case BAD_UID_EMPTY: b->img[0].sop_class_uid[0] = '\0'; break;
    case BAD_STUDY_UID: snprintf(b->study.study_instance_uid, CXR_DICOM_UID_LEN, "1..2"); break;
    case BAD_ALGO_NULL: b->req.algorithm_name = NULL; break;
    case BAD_SHA_SHORT: b->req.model_sha256 = SHA + 1; break;
    case BAD_SHA_HEX: b->req.model_sha256 = NOT_HEX; break;
    case BAD_CONTRADICTION: b->img[0].finding_present = !b->img[0].finding_present; break;
    case BAD_DUPLICATE:
        memcpy(b->img[1].sop_instance_uid, b->img[0].sop_instance_uid, CXR_DICOM_UID_LEN);
        break;
    case BAD_PRED_NO_SERIES: b->req.predecessor_sop_instance_uid = "2.25.5"; break;
    case BAD_THRESHOLD: b->req.operating_threshold = INFINITY; break;
    case BAD_DEVICE_UID: b->req.device_observer_uid = "2.25.-1"; break;
    case BAD_PRIORITY_EMPTY: b->req.priority_name = ""; break;
    case BAD_MANUFACTURER_NULL: b->req.manufacturer = NULL; break;
    case BAD_UID_NO_NUL: memset(b->img[1].sop_instance_uid, '1', CXR_DICOM_UID_LEN); break;
    case BAD_WARNING_NO_NUL: memset(b->img[0].warning, 'w', sizeof b->img[0].warning); break;
    }
}

START_TEST(test_sr_invalid_requests)
{
    char *dir = cxr_test_tmpdir();
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/bad.dcm", dir);
    for (int kind = 0; kind < BAD_COUNT; kind++) {
        struct req_buf b;
        make_request(&b, 2);
        spoil(&b, kind);
        char uid[CXR_DICOM_UID_LEN] = "x", err[CXR_ERRLEN] = "";
        enum cxr_status st = cxr_dicom_sr_write_file(&b.req, path, uid, err);
        ck_assert_msg(st == CXR_ERR_INVALID_ARG, "case %d: %s (%s)", kind, cxr_status_name(st),
                      err);
        ck_assert_msg(err[0] != '\0', "case %d: no reason given", kind);
        ck_assert_str_eq(uid, "");
        ck_assert_msg(access(path, F_OK) != 0, "case %d: a file was written", kind);
        void *buf = (void *)1;
        size_t len = 7;
        st = cxr_dicom_sr_write_memory(&b.req, &buf, &len, NULL, NULL);
        ck_assert_int_eq(st, CXR_ERR_INVALID_ARG);
        ck_assert_ptr_null(buf);
        ck_assert_uint_eq(len, 0);
    }
    /* NULL request, path, out pointers */
    struct req_buf b;
    make_request(&b, 1);
    char err[CXR_ERRLEN];
    ck_assert_int_eq(cxr_dicom_sr_write_file(NULL, path, NULL, err), CXR_ERR_INVALID_ARG);
    ck_assert_int_eq(cxr_dicom_sr_write_file(&b.req, NULL, NULL, err), CXR_ERR_INVALID_ARG);
    size_t len;
    ck_assert_int_eq(cxr_dicom_sr_write_memory(&b.req, NULL, &len, NULL, err), CXR_ERR_INVALID_ARG);
    /* unterminated copied strings are cut at their array's end, not refused */
    memset(b.study.patient_name, 'A', sizeof b.study.patient_name);
    memset(b.study.institution_name, 'I', sizeof b.study.institution_name);
    void *mem = NULL;
    ck_assert_int_eq(cxr_dicom_sr_write_memory(&b.req, &mem, &len, NULL, err), CXR_OK);
    free(mem);
    /* the reason names the problem */
    b.img[0].probability = NAN;
    ck_assert_int_eq(cxr_dicom_sr_write_file(&b.req, path, NULL, err), CXR_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "probability") != NULL, "%s", err);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* Temp file + rename: nothing left beside the SR, an old file is replaced,
 * a missing folder is an I/O error that leaves nothing behind. */
START_TEST(test_sr_atomic_write)
{
    struct req_buf b;
    make_request(&b, 1);
    char *dir = cxr_test_tmpdir();
    char path[PATH_MAX], err[CXR_ERRLEN], uid[CXR_DICOM_UID_LEN];
    snprintf(path, sizeof path, "%s/sr.dcm", dir);
    ck_assert(cxr_test_write_file(path, "old", 3));
    ck_assert_int_eq(cxr_dicom_sr_write_file(&b.req, path, uid, err), CXR_OK);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_gt(sb.st_size, 300);
    ck_assert_int_eq(cxr_test_sh("test $(ls -A '%s' | wc -l) -eq 1", dir), 0);
    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s/no/such/folder/sr.dcm", dir);
    ck_assert_int_eq(cxr_dicom_sr_write_file(&b.req, missing, uid, err), CXR_ERR_IO);
    ck_assert_msg(strstr(err, "no/such/folder") != NULL, "%s", err);
    ck_assert_str_eq(uid, "");
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dicom_sr_refuse");
    TCase *tc = tcase_create("sr_refusals");
    tcase_add_test(tc, test_sr_invalid_requests);
    tcase_add_test(tc, test_sr_atomic_write);
    suite_add_tcase(s, tc);
    return cxr_test_run(s);
}
