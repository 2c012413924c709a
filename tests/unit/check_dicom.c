/* check_dicom.c — reading DICOM (file, memory, no meta header, limits),
 * and decoding every supported transfer syntax against independent
 * references. Gating: check_dicom_gate.c; presentation:
 * check_dicom_present.c; the corpus sweep: check_dicom_sweep.c.
 *
 * References, never our own output: pydicom 2.3 (tests/unit/dicom_pixel_ref.py,
 * run at test time with Debian's python3), the same image stored losslessly
 * in another transfer syntax, the min/max GDCM/pydicom recorded in the
 * corpus MANIFEST.tsv, header values as dcmdump prints them.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "cxr/dicom.h"
#include "dicom_test_writer.h"
#include "test_util.h"

/* ------------------------------------------------------------------ helpers */

static char g_err[CXR_ERRLEN];

static struct cxr_dicom_instance *load_ok(const char *path)
{
    struct cxr_dicom_instance *inst = NULL;
    enum cxr_status st = cxr_dicom_instance_load_file(path, &inst, g_err);
    ck_assert_msg(st == CXR_OK, "%s: %s", path, g_err);
    ck_assert_ptr_nonnull(inst);
    return inst;
}

static struct cxr_dicom_instance *load_mem_ok(const uint8_t *p, size_t n, const char *name)
{
    struct cxr_dicom_instance *inst = NULL;
    enum cxr_status st = cxr_dicom_instance_load_memory(p, n, name, &inst, g_err);
    ck_assert_msg(st == CXR_OK, "%s: %s", name, g_err);
    return inst;
}

static const char *shared_path(const char *rel)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", cxr_test_shared_data(), rel);
    return buf;
}

/* Decodes `path` raw; caller releases. */
static void decode_ok(const char *path, struct cxr_dicom_pixels *px)
{
    struct cxr_dicom_instance *inst = load_ok(path);
    enum cxr_status st = cxr_dicom_instance_decode(inst, px, g_err);
    ck_assert_msg(st == CXR_OK, "%s: decode: %s", path, g_err);
    cxr_dicom_instance_free(inst);
}

/* pydicom's first frame of `path` (int32, see dicom_pixel_ref.py); NULL when
 * python/pydicom is absent or pydicom cannot decode it (reason printed). */
static int32_t *pydicom_ref(const char *path, size_t *count, char *photometric, size_t pisize)
{
    static int seq;
    char raw[256], txt[256];
    snprintf(raw, sizeof raw, "%s/dicom_ref_%d_%d.raw", cxr_test_binary_dir(), (int)getpid(), seq);
    snprintf(txt, sizeof txt, "%s/dicom_ref_%d_%d.txt", cxr_test_binary_dir(), (int)getpid(),
             seq++);
    if (access(cxr_test_python(), X_OK) != 0) {
        printf("SKIP pydicom reference: %s absent\n", cxr_test_python());
        return NULL;
    }
    int rc = cxr_test_sh("'%s' '%s/tests/unit/dicom_pixel_ref.py' '%s' '%s' > '%s' 2>/dev/null",
                         cxr_test_python(), cxr_test_source_dir(), path, raw, txt);
    char *line = cxr_test_read_file(txt, NULL);
    unlink(txt);
    if (rc != 0 || !line || strncmp(line, "ok ", 3) != 0) {
        printf("SKIP pydicom reference for %s: %s", path, line ? line : "no output\n");
        free(line);
        unlink(raw);
        return NULL;
    }
    int r = 0, c = 0, s = 0;
    char pi[32] = "";
    sscanf(line, "ok %d %d %d %31s", &r, &c, &s, pi);
    free(line);
    if (photometric)
        snprintf(photometric, pisize, "%s", pi);
    size_t n = 0;
    int32_t *v = cxr_test_read_file(raw, &n);
    unlink(raw);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(n, (size_t)r * (size_t)c * (size_t)s * 4);
    *count = n / 4;
    return v;
}

struct diff {
    long max;
    double mean;
};

static struct diff compare(const int32_t *a, const int32_t *b, size_t n)
{
    struct diff d = {0, 0};
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        long e = labs((long)a[i] - (long)b[i]);
        if (e > d.max)
            d.max = e;
        sum += (double)e;
    }
    d.mean = n ? sum / (double)n : 0;
    return d;
}

static void minmax(const struct cxr_dicom_pixels *px, int32_t *lo, int32_t *hi)
{
    size_t n = (size_t)px->width * (size_t)px->height * (size_t)px->samples;
    *lo = *hi = px->values[0];
    for (size_t i = 1; i < n; i++) {
        if (px->values[i] < *lo)
            *lo = px->values[i];
        if (px->values[i] > *hi)
            *hi = px->values[i];
    }
}

/* ------------------------------------------------------------------ read */

START_TEST(test_read_header_values)
{
    /* values as dcmdump prints them for the committed WG04 file */
    struct cxr_dicom_instance *inst = load_ok(cxr_test_data_path("wg04_RG3_JPLY.dcm"));
    const struct cxr_dicom_info *in = cxr_dicom_instance_info(inst);
    ck_assert_str_eq(in->sop_class_uid, "1.2.840.10008.5.1.4.1.1.1");
    ck_assert_str_eq(in->transfer_syntax_uid, "1.2.840.10008.1.2.4.51");
    ck_assert(in->has_meta_header);
    ck_assert_str_eq(in->modality, "CR");
    ck_assert_str_eq(in->body_part_examined, "EXTREMITY");
    ck_assert_str_eq(in->view_position, "AP");
    ck_assert_str_eq(in->photometric_interpretation, "MONOCHROME1");
    ck_assert_uint_eq(in->rows, 1760);
    ck_assert_uint_eq(in->columns, 1760);
    ck_assert_uint_eq(in->bits_allocated, 16);
    ck_assert_uint_eq(in->bits_stored, 10);
    ck_assert_uint_eq(in->high_bit, 9);
    ck_assert_uint_eq(in->samples_per_pixel, 1);
    ck_assert_int_eq(in->number_of_frames, 1);
    ck_assert(in->has_pixel_data);
    /* no PatientAge: birth 1979-04-08, study 2004-08-26 → 9272 days */
    ck_assert_double_eq_tol(in->patient_age_years, 9272 / 365.2425, 1e-9);
    cxr_dicom_instance_free(inst);

    inst = load_ok(cxr_test_data_path("siim_cr_chest_jpeg_baseline.dcm"));
    in = cxr_dicom_instance_info(inst);
    ck_assert_str_eq(in->sop_class_uid, "1.2.840.10008.5.1.4.1.1.7");
    ck_assert_str_eq(in->body_part_examined, "CHEST");
    ck_assert_str_eq(in->view_position, "PA");
    ck_assert_str_eq(in->patient_age, "38"); /* AS without a unit: read as years */
    ck_assert_double_eq_tol(in->patient_age_years, 38.0, 1e-12);
    cxr_dicom_instance_free(inst);
}
END_TEST

/* The same bytes through load_memory give the same header and image. */
START_TEST(test_read_memory_equals_file)
{
    const char *files[] = {"wg04_RG3_JPLY.dcm", "siim_cr_chest_jpeg_baseline.dcm",
                           "nm1_jpegls_lossless.dcm", "nm1_j2k_lossless.dcm"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        const char *path = cxr_test_data_path(files[k]);
        size_t n = 0;
        uint8_t *bytes = cxr_test_read_file(path, &n);
        ck_assert_ptr_nonnull(bytes);
        struct cxr_dicom_instance *a = load_ok(path);
        struct cxr_dicom_instance *b = load_mem_ok(bytes, n, files[k]);
        free(bytes); /* the instance must not need the caller's buffer */
        ck_assert_msg(memcmp(cxr_dicom_instance_info(a), cxr_dicom_instance_info(b),
                             sizeof(struct cxr_dicom_info)) == 0,
                      "%s: header values differ between file and memory", files[k]);
        struct cxr_dicom_image ia, ib;
        ck_assert_msg(cxr_dicom_instance_present(a, &ia, g_err) == CXR_OK, "%s", g_err);
        ck_assert_msg(cxr_dicom_instance_present(b, &ib, g_err) == CXR_OK, "%s", g_err);
        ck_assert_int_eq(ia.width, ib.width);
        ck_assert_int_eq(ia.height, ib.height);
        ck_assert(memcmp(ia.pixels, ib.pixels, (size_t)ia.width * (size_t)ia.height) == 0);
        ck_assert_str_eq(ia.voi_used, ib.voi_used);
        cxr_dicom_image_release(&ia);
        cxr_dicom_image_release(&ib);
        cxr_dicom_instance_free(a);
        cxr_dicom_instance_free(b);
    }
}
END_TEST

/* A small CR dataset (Explicit or Implicit VR LE) for the reader tests. */
static void small_cr(struct tds *d, const char *age, const char *birth, const char *study,
                     const char *charset, const char *name)
{
    if (charset)
        tds_str(d, 0x0008, 0x0005, "CS", charset);
    tds_str(d, 0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.1");
    tds_str(d, 0x0008, 0x0018, "UI", "1.2.826.0.1.3680043.10.1234.3");
    if (study)
        tds_str(d, 0x0008, 0x0020, "DA", study);
    tds_str(d, 0x0008, 0x0060, "CS", "CR");
    tds_str(d, 0x0010, 0x0010, "PN", name ? name : "Test^Patient");
    if (birth)
        tds_str(d, 0x0010, 0x0030, "DA", birth);
    if (age)
        tds_str(d, 0x0010, 0x1010, "AS", age);
    tds_us(d, 0x0028, 0x0002, 1);
    tds_str(d, 0x0028, 0x0004, "CS", "MONOCHROME2");
    tds_us(d, 0x0028, 0x0010, 2);
    tds_us(d, 0x0028, 0x0011, 2);
    tds_us(d, 0x0028, 0x0100, 8);
    tds_us(d, 0x0028, 0x0101, 8);
    tds_us(d, 0x0028, 0x0102, 7);
    tds_us(d, 0x0028, 0x0103, 0);
    uint8_t px[4] = {0, 80, 160, 240};
    tds_el(d, 0x7FE0, 0x0010, "OB", px, 4);
}

START_TEST(test_read_without_meta_header)
{
    /* Implicit VR LE dataset with no preamble and no group 0002 (ACR-NEMA style) */
    struct tds d = {.implicit = true};
    small_cr(&d, "045Y", NULL, NULL, NULL, NULL);
    struct cxr_dicom_instance *inst = load_mem_ok(d.p, d.n, "no-meta");
    const struct cxr_dicom_info *in = cxr_dicom_instance_info(inst);
    ck_assert(!in->has_meta_header);
    ck_assert_str_eq(in->transfer_syntax_uid, "1.2.840.10008.1.2");
    ck_assert_str_eq(in->modality, "CR");
    ck_assert_uint_eq(in->rows, 2);
    struct cxr_dicom_pixels px;
    ck_assert_msg(cxr_dicom_instance_decode(inst, &px, g_err) == CXR_OK, "%s", g_err);
    ck_assert_int_eq(px.values[3], 240);
    cxr_dicom_pixels_release(&px);
    cxr_dicom_instance_free(inst);
    free(d.p);

    /* the real one from the chest set */
    if (!cxr_test_have_shared("dicom-cxr", "file without meta header"))
        return;
    inst = load_ok(shared_path("dicom-cxr/barre-gdcm/CR-MONO1-10-chest"));
    in = cxr_dicom_instance_info(inst);
    ck_assert(!in->has_meta_header);
    ck_assert_str_eq(in->photometric_interpretation, "MONOCHROME1");
    ck_assert_uint_eq(in->rows, 440);
    cxr_dicom_instance_free(inst);
}
END_TEST

/* PatientAge (AS, PS3.5 6.2) and the BirthDate/StudyDate fallback. */
START_TEST(test_read_patient_age)
{
    struct tm b = {.tm_year = 80, .tm_mon = 5, .tm_mday = 15};
    struct tm s = {.tm_year = 120, .tm_mon = 5, .tm_mday = 14};
    double days = difftime(timegm(&s), timegm(&b)) / 86400.0;
    const struct {
        const char *age, *birth, *study;
        double years; /* NAN: unknown */
    } rows[] = {
        {"004Y", NULL, NULL, 4.0},
        {"018M", NULL, NULL, 1.5},
        {"010W", NULL, NULL, 70 / 365.2425},
        {"100D", NULL, NULL, 100 / 365.2425},
        {NULL, "19800615", "20200614", days / 365.2425},
        {"", "19800615", "20200614", days / 365.2425},
        {"XYZ", "19800615", "20200614", days / 365.2425}, /* unreadable AS: dates */
        {NULL, "20200615", "19800614", NAN},              /* birth after study */
        {NULL, "19800615", NULL, NAN},
        {NULL, NULL, NULL, NAN},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct tds d = {0};
        small_cr(&d, rows[i].age, rows[i].birth, rows[i].study, NULL, NULL);
        size_t n;
        uint8_t *f = tds_part10(&d, "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.1.2.1", &n);
        struct cxr_dicom_instance *inst = load_mem_ok(f, n, "age");
        double got = cxr_dicom_instance_info(inst)->patient_age_years;
        if (isnan(rows[i].years))
            ck_assert_msg(isnan(got), "row %zu: expected unknown age, got %g", i, got);
        else
            ck_assert_msg(fabs(got - rows[i].years) < 1e-9, "row %zu: %g != %g", i, got,
                          rows[i].years);
        cxr_dicom_instance_free(inst);
        free(f);
        free(d.p);
    }
}
END_TEST

START_TEST(test_read_strings_truncated_and_utf8)
{
    /* ISO_IR 100 (Latin-1) text comes out as UTF-8 */
    struct tds d = {0};
    small_cr(&d, NULL, NULL, NULL, "ISO_IR 100", "Sch\xe9tt^Ren\xe9");
    size_t n;
    uint8_t *f = tds_part10(&d, "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.1.2.1", &n);
    struct cxr_dicom_instance *inst = load_mem_ok(f, n, "latin1");
    const struct cxr_dicom_info *in = cxr_dicom_instance_info(inst);
    ck_assert_str_eq(in->patient_name, "Sch\xc3\xa9tt^Ren\xc3\xa9");
    ck_assert_str_eq(in->specific_character_set, "ISO_IR 192");
    cxr_dicom_instance_free(inst);
    free(f);
    free(d.p);

    /* a name longer than the field is cut, NUL-terminated, at a character boundary */
    char longname[400];
    size_t k = 0;
    while (k + 2 < 340) {
        longname[k++] = '\xc3'; /* "é" in UTF-8, 2 bytes each */
        longname[k++] = '\xa9';
    }
    longname[k] = '\0';
    memset(&d, 0, sizeof d);
    small_cr(&d, NULL, NULL, NULL, "ISO_IR 192", longname);
    f = tds_part10(&d, "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.1.2.1", &n);
    inst = load_mem_ok(f, n, "long");
    in = cxr_dicom_instance_info(inst);
    size_t len = strlen(in->patient_name);
    ck_assert_uint_lt(len, sizeof in->patient_name);
    ck_assert_uint_ge(len, sizeof in->patient_name - 3);
    ck_assert_msg(len % 2 == 0, "cut inside a UTF-8 character (%zu bytes)", len);
    cxr_dicom_instance_free(inst);
    free(f);
    free(d.p);
}
END_TEST

/* Bad input: a clear error, *out NULL, never a crash, never a huge allocation. */
START_TEST(test_read_refuses_bad_input)
{
    struct cxr_dicom_instance *inst = (struct cxr_dicom_instance *)&inst;
    ck_assert_int_eq(cxr_dicom_instance_load_file("/nonexistent/x.dcm", &inst, g_err),
                     CXR_ERR_NOT_FOUND);
    ck_assert_ptr_null(inst);
    ck_assert_ptr_nonnull(strstr(g_err, "/nonexistent/x.dcm"));
    ck_assert_int_eq(cxr_dicom_instance_load_file("/", &inst, g_err), CXR_ERR_IO);
    /* a FIFO is refused, not waited on (issue 14, item 6) */
    char *dir = cxr_test_tmpdir(), fifo[4200];
    snprintf(fifo, sizeof fifo, "%s/x.dcm", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(cxr_dicom_instance_load_file(fifo, &inst, g_err), CXR_ERR_IO);
    ck_assert_msg(strstr(g_err, "not a regular file (it is a FIFO)"), "%s", g_err);
    cxr_test_rmtree(dir);
    free(dir);

    const char text[] = "this is a text file, not DICOM at all, just words\n";
    ck_assert_int_eq(cxr_dicom_instance_load_memory(text, sizeof text - 1, "text", &inst, g_err),
                     CXR_ERR_DICOM_PARSE);
    ck_assert_ptr_null(inst);
    ck_assert_msg(strstr(g_err, "not a DICOM file: it looks like a text file"), "%s", g_err);

    /* a picture handed over instead of DICOM is named as what it is */
    static const struct {
        const char *file, *what;
    } foreign[] = {{"train/gray.jpg", "a JPEG image"}, {"train/rgb.png", "a PNG image"}};
    for (size_t k = 0; k < sizeof foreign / sizeof foreign[0]; k++) {
        const char *path = cxr_test_data_path(foreign[k].file);
        ck_assert_int_eq(cxr_dicom_instance_load_file(path, &inst, g_err), CXR_ERR_DICOM_PARSE);
        ck_assert_ptr_null(inst);
        ck_assert_msg(strstr(g_err, foreign[k].what) && strstr(g_err, "not a DICOM file"), "%s: %s",
                      path, g_err);
    }
    ck_assert_int_eq(cxr_dicom_instance_load_memory(text, 0, "empty", &inst, g_err),
                     CXR_ERR_DICOM_PARSE);

    /* a real file cut in half */
    size_t n = 0;
    uint8_t *bytes = cxr_test_read_file(cxr_test_data_path("nm1_j2k_lossless.dcm"), &n);
    ck_assert_ptr_nonnull(bytes);
    enum cxr_status st = cxr_dicom_instance_load_memory(bytes, n / 2, "half", &inst, g_err);
    ck_assert_int_eq(st, CXR_ERR_DICOM_PARSE);
    ck_assert_ptr_nonnull(strstr(g_err, "half"));
    ck_assert_ptr_null(inst);
    free(bytes);

    /* an element claiming 4 GB in a 200-byte stream */
    struct tds d = {0};
    tds_str(&d, 0x0008, 0x0060, "CS", "CR");
    tds_u16(&d, 0x0010);
    tds_u16(&d, 0x0010);
    tds_bytes(&d, "UT\0\0", 4);
    tds_u32(&d, 0xFFFFFFF0u);
    tds_bytes(&d, "abcdefgh", 8);
    uint8_t *f = tds_part10(&d, "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.1.2.1", &n);
    ck_assert_int_eq(cxr_dicom_instance_load_memory(f, n, "huge", &inst, g_err),
                     CXR_ERR_DICOM_PARSE);
    ck_assert_ptr_nonnull(strstr(g_err, "claims"));
    /* a Part 10 file that fails is a broken DICOM file, not a foreign one */
    ck_assert_msg(!strstr(g_err, "not a DICOM file") && strstr(g_err, "not readable as DICOM"),
                  "%s", g_err);
    free(f);
    free(d.p);
}
END_TEST

/* Sequences nested beyond the limit are refused before DCMTK (whose parser
 * recurses without bound) sees them; moderate nesting still reads. */
static uint8_t *nested(int depth, size_t *n)
{
    struct tds d = {0};
    tds_str(&d, 0x0008, 0x0060, "CS", "CR");
    for (int i = 0; i < depth; i++) {
        tds_seq_begin(&d, 0x0040, 0x0260);
        tds_item_begin(&d);
    }
    tds_str(&d, 0x0008, 0x0100, "SH", "X");
    for (int i = 0; i < depth; i++) {
        tds_item_end(&d);
        tds_seq_end(&d);
    }
    uint8_t *f = tds_part10(&d, "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.1.2.1", n);
    free(d.p);
    return f;
}

START_TEST(test_read_nesting_limit)
{
    size_t n;
    uint8_t *f = nested(20, &n);
    struct cxr_dicom_instance *inst = load_mem_ok(f, n, "nest20");
    cxr_dicom_instance_free(inst);
    free(f);

    f = nested(100000, &n);
    ck_assert_int_eq(cxr_dicom_instance_load_memory(f, n, "nest100k", &inst, g_err),
                     CXR_ERR_DICOM_PARSE);
    ck_assert_ptr_nonnull(strstr(g_err, "nested deeper"));
    ck_assert_ptr_null(inst);
    free(f);

    if (!cxr_test_have_shared("dicom-corpus", "deeply nested corpus file"))
        return;
    ck_assert_int_eq(
        cxr_dicom_instance_load_file(
            shared_path("dicom-corpus/orthanc-tests/2026-05-06-Deeply-Nested-Sequence.dcm"), &inst,
            g_err),
        CXR_ERR_DICOM_PARSE);
    ck_assert_ptr_nonnull(strstr(g_err, "nested deeper"));
}
END_TEST

/* A CR chest image in the Deflated transfer syntax (PS3.5 A.5): the header
 * declares rows x cols 8-bit (16-bit when bits16) pixels; the stream then
 * holds `private_zeros` bytes of a private OB element (none when 0) and
 * Pixel Data of `pixel_bytes` bytes (a gradient when it matches the
 * geometry, else zeros). The zeros go through zlib in slices, so a small
 * file may stand for gigabytes. Caller frees. */
static uint8_t *deflated_image(uint16_t rows, uint16_t cols, bool bits16, uint32_t private_zeros,
                               uint32_t pixel_bytes, size_t *len)
{
    struct tds d = {0};
    tds_str(&d, 0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.1");
    tds_str(&d, 0x0008, 0x0018, "UI", "2.25.1414");
    tds_str(&d, 0x0008, 0x0060, "CS", "CR");
    tds_str(&d, 0x0018, 0x0015, "CS", "CHEST");
    tds_us(&d, 0x0028, 0x0002, 1);
    tds_str(&d, 0x0028, 0x0004, "CS", "MONOCHROME2");
    tds_us(&d, 0x0028, 0x0010, rows);
    tds_us(&d, 0x0028, 0x0011, cols);
    tds_us(&d, 0x0028, 0x0100, bits16 ? 16 : 8);
    tds_us(&d, 0x0028, 0x0101, bits16 ? 16 : 8);
    tds_us(&d, 0x0028, 0x0102, bits16 ? 15 : 7);
    tds_us(&d, 0x0028, 0x0103, 0);
    struct tds tail = {0}; /* element headers between the zero runs */
    const uint64_t geometry = (uint64_t)rows * cols * (bits16 ? 2 : 1);

    z_stream z;
    memset(&z, 0, sizeof z);
    ck_assert_int_eq(deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    struct tds out = {0};
    uint8_t buf[1 << 16];
    const size_t slice = 1 << 20;
    uint8_t *zeros = calloc(1, slice);
    ck_assert_ptr_nonnull(zeros);
    /* FEED: count bytes from ptr (zeros when NULL) through the compressor */
#define FEED(ptr, count, flush)                                    \
    do {                                                           \
        uint64_t left_ = (count);                                  \
        const uint8_t *p_ = (ptr);                                 \
        do {                                                       \
            size_t k_ = left_ < slice ? (size_t)left_ : slice;     \
            z.next_in = (Bytef *)(p_ ? p_ : zeros);                \
            z.avail_in = (uInt)k_;                                 \
            int f_ = left_ == k_ ? (flush) : Z_NO_FLUSH;           \
            do {                                                   \
                z.next_out = buf;                                  \
                z.avail_out = sizeof buf;                          \
                ck_assert_int_ne(deflate(&z, f_), Z_STREAM_ERROR); \
                tds_bytes(&out, buf, sizeof buf - z.avail_out);    \
            } while (z.avail_out == 0);                            \
            if (p_)                                                \
                p_ += k_;                                          \
            left_ -= k_;                                           \
        } while (left_ > 0);                                       \
    } while (0)
    FEED(d.p, d.n, Z_NO_FLUSH);
    if (private_zeros) {
        tds_str(&tail, 0x0009, 0x0010, "LO", "BOMB");
        tds_u16(&tail, 0x0009);
        tds_u16(&tail, 0x1010);
        tds_bytes(&tail, "OB\0\0", 4);
        tds_u32(&tail, private_zeros);
        FEED(tail.p, tail.n, Z_NO_FLUSH);
        FEED(NULL, private_zeros, Z_NO_FLUSH);
        tail.n = 0;
    }
    tds_u16(&tail, 0x7FE0);
    tds_u16(&tail, 0x0010);
    tds_bytes(&tail, "OB\0\0", 4);
    tds_u32(&tail, pixel_bytes);
    FEED(tail.p, tail.n, Z_NO_FLUSH);
    if (pixel_bytes == geometry) {
        uint8_t *px = malloc(pixel_bytes);
        ck_assert_ptr_nonnull(px);
        for (uint32_t i = 0; i < pixel_bytes; i++)
            px[i] = (uint8_t)(i % cols + i / cols);
        FEED(px, pixel_bytes, Z_FINISH);
        free(px);
    } else {
        FEED(NULL, pixel_bytes, Z_FINISH);
    }
#undef FEED
    deflateEnd(&z);
    free(zeros);
    struct tds empty = {0};
    size_t mlen;
    uint8_t *meta =
        tds_part10(&empty, "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.1.2.1.99", &mlen);
    uint8_t *f = malloc(mlen + out.n);
    ck_assert_ptr_nonnull(f);
    memcpy(f, meta, mlen);
    memcpy(f + mlen, out.p, out.n);
    *len = mlen + out.n;
    free(meta);
    free(out.p);
    free(tail.p);
    free(d.p);
    return f;
}

/* A deflated data set inflates only as far as its declared geometry allows
 * (issue 14, item 3: a 1.9 MB file inflated to 2 GB): a proper deflated
 * image reads and decodes; Pixel Data far beyond Rows x Columns, and a
 * private element of 32 MiB before the Pixel Data, are refused as bombs
 * from a file of a few hundred KB; the gate's size limits bound what a
 * large declared geometry may inflate to. */
START_TEST(test_read_deflate_budget)
{
    size_t n;
    uint8_t *f = deflated_image(512, 512, false, 0, 512 * 512, &n);
    struct cxr_dicom_instance *inst = load_mem_ok(f, n, "deflated");
    struct cxr_dicom_pixels px;
    ck_assert_msg(cxr_dicom_instance_decode(inst, &px, g_err) == CXR_OK, "%s", g_err);
    ck_assert_int_eq(px.width, 512);
    ck_assert_int_eq(px.values[3 * 512 + 5], 8);
    cxr_dicom_pixels_release(&px);
    cxr_dicom_instance_free(inst);
    char *dir = cxr_test_tmpdir(), path[4096];
    ck_assert_ptr_nonnull(dir);
    snprintf(path, sizeof path, "%s/deflated.dcm", dir);
    ck_assert(cxr_test_write_file(path, f, n));
    inst = load_ok(path);
    cxr_dicom_instance_free(inst);
    free(f);

    /* 64 MiB of Pixel Data behind a 512 x 512 header: a few hundred KB */
    f = deflated_image(512, 512, false, 0, 64u << 20, &n);
    ck_assert_uint_lt(n, 1u << 20);
    inst = NULL;
    ck_assert_int_eq(cxr_dicom_instance_load_memory(f, n, "bomb", &inst, g_err), CXR_ERR_LIMIT);
    ck_assert_ptr_null(inst);
    ck_assert_msg(strstr(g_err, "decompression bomb") && strstr(g_err, "512 x 512"), "%s", g_err);
    ck_assert(cxr_test_write_file(path, f, n));
    ck_assert_int_eq(cxr_dicom_instance_load_file(path, &inst, g_err), CXR_ERR_LIMIT);
    ck_assert_ptr_nonnull(strstr(g_err, "decompression bomb"));
    cxr_test_rmtree(dir);
    free(dir);
    free(f);

    /* 32 MiB of a private element before the pixels */
    f = deflated_image(512, 512, false, 32u << 20, 512 * 512, &n);
    ck_assert_int_eq(cxr_dicom_instance_load_memory(f, n, "header bomb", &inst, g_err),
                     CXR_ERR_LIMIT);
    ck_assert_msg(strstr(g_err, "before its Pixel Data"), "%s", g_err);
    free(f);

    /* 4096 x 4096 x 16 bits declared and held: within the decoder's limit,
     * beyond what a gate of at most 1024 x 1024 admits */
    f = deflated_image(4096, 4096, true, 0, 4096u * 4096u * 2u, &n);
    inst = load_mem_ok(f, n, "large");
    cxr_dicom_instance_free(inst);
    struct cxr_conf *conf = NULL;
    ck_assert_int_eq(cxr_conf_defaults(&conf), CXR_OK);
    conf->gate.max_rows = conf->gate.max_cols = 1024;
    ck_assert_int_eq(
        cxr_dicom_instance_load_memory_within(f, n, "large", &conf->gate, &inst, g_err),
        CXR_ERR_LIMIT);
    ck_assert_msg(strstr(g_err, "gate's image size limits"), "%s", g_err);
    conf->gate.max_rows = conf->gate.max_cols = 4096;
    inst = NULL;
    ck_assert_msg(cxr_dicom_instance_load_memory_within(f, n, "large", &conf->gate, &inst, g_err) ==
                      CXR_OK,
                  "%s", g_err);
    cxr_dicom_instance_free(inst);
    cxr_conf_free(conf);
    free(f);
}
END_TEST

/* ------------------------------------------------------------------ decode */

/* A syntax we do not decode is CXR_ERR_DICOM_TS naming it. */
START_TEST(test_decode_unsupported_syntax_named)
{
    const struct {
        const char *uid, *name;
    } rows[] = {
        {"1.2.840.10008.1.2.4.100", "MPEG2"},
        {"1.2.840.10008.1.2.4.92", "JPEG 2000"},
        {"1.2.840.10008.1.2.4.112", "JPEG XL"},
        {"1.2.3.999", "unknown transfer syntax"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct tds d = {0};
        tds_str(&d, 0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.1");
        tds_str(&d, 0x0008, 0x0060, "CS", "CR");
        tds_us(&d, 0x0028, 0x0002, 1);
        tds_str(&d, 0x0028, 0x0004, "CS", "MONOCHROME2");
        tds_us(&d, 0x0028, 0x0010, 4);
        tds_us(&d, 0x0028, 0x0011, 4);
        tds_us(&d, 0x0028, 0x0100, 8);
        tds_us(&d, 0x0028, 0x0101, 8);
        tds_us(&d, 0x0028, 0x0102, 7);
        tds_us(&d, 0x0028, 0x0103, 0);
        tds_encapsulated(&d, "\x00\x00\x01\xB3garbage", 11);
        size_t n;
        uint8_t *f = tds_part10(&d, "1.2.840.10008.5.1.4.1.1.1", rows[i].uid, &n);
        struct cxr_dicom_instance *inst = load_mem_ok(f, n, "ts");
        struct cxr_dicom_image img;
        enum cxr_status st = cxr_dicom_instance_present(inst, &img, g_err);
        ck_assert_msg(st == CXR_ERR_DICOM_TS, "%s: status %d (%s)", rows[i].uid, st, g_err);
        ck_assert_ptr_null(img.pixels);
        ck_assert_msg(strstr(g_err, rows[i].name) && strstr(g_err, rows[i].uid),
                      "%s: '%s' should name the syntax", rows[i].uid, g_err);
        cxr_dicom_instance_free(inst);
        free(f);
        free(d.p);
    }
}
END_TEST

/* The committed files: the same NM image stored as JPEG-LS lossless and as
 * JPEG 2000 lossless must decode to identical values, matching pydicom and
 * the range the corpus MANIFEST records (GDCM: min 0, max 278). */
START_TEST(test_decode_committed_files)
{
    struct cxr_dicom_pixels jls, j2k, jply, jpeg;
    decode_ok(cxr_test_data_path("nm1_jpegls_lossless.dcm"), &jls);
    decode_ok(cxr_test_data_path("nm1_j2k_lossless.dcm"), &j2k);
    ck_assert_int_eq(jls.width, 256);
    ck_assert_int_eq(jls.height, 1024);
    ck_assert_int_eq(j2k.width, 256);
    size_t n = 256 * 1024;
    struct diff d = compare(jls.values, j2k.values, n);
    ck_assert_msg(d.max == 0, "JPEG-LS and JPEG 2000 lossless differ by up to %ld", d.max);
    int32_t lo, hi;
    minmax(&jls, &lo, &hi);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 278);
    size_t rn = 0;
    int32_t *ref = pydicom_ref(cxr_test_data_path("nm1_j2k_lossless.dcm"), &rn, NULL, 0);
    if (ref) {
        ck_assert_uint_eq(rn, n);
        d = compare(j2k.values, ref, n);
        ck_assert_msg(d.max == 0, "JPEG 2000 differs from pydicom by %ld", d.max);
        free(ref);
    }

    /* JPEG extended 12-bit lossy, MONOCHROME1 CR: MANIFEST (GDCM) min 0, max 1022 */
    decode_ok(cxr_test_data_path("wg04_RG3_JPLY.dcm"), &jply);
    ck_assert_int_eq(jply.width, 1760);
    minmax(&jply, &lo, &hi);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 1022);

    /* JPEG baseline 8-bit: MANIFEST (pydicom) min 1, max 246; pydicom within 1 */
    decode_ok(cxr_test_data_path("siim_cr_chest_jpeg_baseline.dcm"), &jpeg);
    minmax(&jpeg, &lo, &hi);
    ck_assert_int_eq(lo, 1);
    ck_assert_int_eq(hi, 246);
    ref = pydicom_ref(cxr_test_data_path("siim_cr_chest_jpeg_baseline.dcm"), &rn, NULL, 0);
    if (ref) {
        d = compare(jpeg.values, ref, 1024 * 1024);
        ck_assert_msg(d.max <= 1, "JPEG baseline differs from pydicom by %ld", d.max);
        free(ref);
    }
    cxr_dicom_pixels_release(&jls);
    cxr_dicom_pixels_release(&j2k);
    cxr_dicom_pixels_release(&jply);
    cxr_dicom_pixels_release(&jpeg);
}
END_TEST

/* Every decoded transfer syntax against a reference (corpus files). */
enum ref_kind { REF_PYDICOM, REF_TWIN, REF_MINMAX };
struct ts_row {
    const char *ts;   /* expected transfer syntax UID */
    const char *path; /* under ../shared/data */
    enum ref_kind ref;
    const char *twin; /* REF_TWIN: the same image stored losslessly elsewhere */
    long max_err;     /* largest allowed |difference| */
    double mean_err;  /* largest allowed mean |difference| */
    int32_t lo, hi;   /* REF_MINMAX: MANIFEST.tsv (GDCM) */
};

static const struct ts_row k_ts_rows[] = {
    {"1.2.840.10008.1.2", "dicom-corpus/pydicom/MR_small_implicit.dcm", REF_PYDICOM, NULL, 0, 0, 0,
     0},
    {"1.2.840.10008.1.2.1", "dicom-corpus/pydicom/MR_small.dcm", REF_PYDICOM, NULL, 0, 0, 0, 0},
    {"1.2.840.10008.1.2.2", "dicom-corpus/pydicom/MR_small_bigendian.dcm", REF_PYDICOM, NULL, 0, 0,
     0, 0},
    {"1.2.840.10008.1.2.1.99", "dicom-corpus/pydicom/image_dfl.dcm", REF_PYDICOM, NULL, 0, 0, 0, 0},
    {"1.2.840.10008.1.2.1.99",
     "dicom-corpus/orthanc-tests/TransferSyntaxes/1.2.840.10008.1.2.1.99.dcm", REF_PYDICOM, NULL, 0,
     0, 0, 0},
    {"1.2.840.10008.1.2.4.50", "dicom-cxr/orthanc-issue44/Monochrome1-Jpeg.dcm", REF_PYDICOM, NULL,
     1, 0.01, 0, 0},
    {"1.2.840.10008.1.2.4.50",
     "dicom-corpus/orthanc-tests/TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm", REF_PYDICOM, NULL, 1,
     0.01, 0, 0},
    /* lossy 12-bit JPEG of 10-bit data: a few overshoots wrap when masked to
     * BitsStored (1024 → 0), hence the max; the mean bounds the error */
    {"1.2.840.10008.1.2.4.51", "dicom-corpus/nema-wg04/JPLY/RG3_JPLY", REF_TWIN,
     "dicom-corpus/nema-wg04/J2KR/RG3_J2KR", 1023, 2.5, 0, 0},
    {"1.2.840.10008.1.2.4.51", "dicom-corpus/nema-wg04/JPLY/RG2_JPLY", REF_MINMAX, NULL, 0, 0, 0,
     960},
    {"1.2.840.10008.1.2.4.57",
     "dicom-corpus/orthanc-tests/TransferSyntaxes/1.2.840.10008.1.2.4.57.dcm", REF_MINMAX, NULL, 0,
     0, 0, 595},
    {"1.2.840.10008.1.2.4.70", "dicom-corpus/nema-wg04/JPLL/RG3_JPLL", REF_TWIN,
     "dicom-corpus/nema-wg04/J2KR/RG3_J2KR", 0, 0, 0, 0},
    {"1.2.840.10008.1.2.4.70", "dicom-corpus/pydicom-data/JPEG-LL.dcm", REF_TWIN,
     "dicom-corpus/orthanc-tests/TransferSyntaxes/1.2.840.10008.1.2.4.90.dcm", 0, 0, 0, 0},
    {"1.2.840.10008.1.2.4.80", "dicom-corpus/nema-wg04/JLSL/RG3_JLSL", REF_TWIN,
     "dicom-corpus/nema-wg04/J2KR/RG3_J2KR", 0, 0, 0, 0},
    {"1.2.840.10008.1.2.4.80", "dicom-corpus/pydicom/MR_small_jpeg_ls_lossless.dcm", REF_TWIN,
     "dicom-corpus/pydicom/MR_small.dcm", 0, 0, 0, 0},
    /* near-lossless: the WG04 JLSN streams carry NEAR=4 in their SOS marker */
    {"1.2.840.10008.1.2.4.81", "dicom-corpus/nema-wg04/JLSN/RG3_JLSN", REF_TWIN,
     "dicom-corpus/nema-wg04/J2KR/RG3_J2KR", 4, 2.0, 0, 0},
    {"1.2.840.10008.1.2.4.81", "dicom-cxr/nema-wg04/RG1_JLSN", REF_MINMAX, NULL, 0, 0, 871, 26481},
    {"1.2.840.10008.1.2.5", "dicom-corpus/nema-wg04/RLE/RG3_RLE", REF_PYDICOM, NULL, 0, 0, 0, 0},
    {"1.2.840.10008.1.2.5", "dicom-corpus/pydicom/MR_small_RLE.dcm", REF_TWIN,
     "dicom-corpus/pydicom/MR_small.dcm", 0, 0, 0, 0},
    /* a single RLE frame split over several fragments */
    {"1.2.840.10008.1.2.5", "dicom-corpus/fo-dicom/D_CLUNIE_CT1_RLE_FRAGS.dcm", REF_TWIN,
     "dicom-corpus/fo-dicom/GH177_D_CLUNIE_CT1_IVRLE_BigEndian_undefined_length.dcm", 0, 0, 0, 0},
    {"1.2.840.10008.1.2.4.90", "dicom-corpus/nema-wg04/J2KR/RG3_J2KR", REF_PYDICOM, NULL, 0, 0, 0,
     0},
    {"1.2.840.10008.1.2.4.90", "dicom-corpus/pydicom/examples_jpeg2k.dcm", REF_PYDICOM, NULL, 0, 0,
     0, 0},
    {"1.2.840.10008.1.2.4.90", "dicom-corpus/pydicom-data/693_J2KR.dcm", REF_PYDICOM, NULL, 0, 0, 0,
     0},
    {"1.2.840.10008.1.2.4.91", "dicom-cxr/nema-wg04/RG1_J2KI", REF_PYDICOM, NULL, 0, 0, 0, 0},
    {"1.2.840.10008.1.2.4.91", "dicom-corpus/nema-wg04/J2KI/RG3_J2KI", REF_TWIN,
     "dicom-corpus/nema-wg04/J2KR/RG3_J2KR", 16, 1.0, 0, 0},
    {"1.2.840.10008.1.2.4.201", "dicom-corpus/pydicom-data/HTJ2KLossless_08_RGB.dcm", REF_PYDICOM,
     NULL, 0, 0, 0, 0},
    {"1.2.840.10008.1.2.4.203", "dicom-corpus/pydicom-data/HTJ2K_08_RGB.dcm", REF_PYDICOM, NULL, 0,
     0, 0, 0},
};

START_TEST(test_decode_transfer_syntax)
{
    const struct ts_row *r = &k_ts_rows[_i];
    if (!cxr_test_have_shared(strncmp(r->path, "dicom-cxr", 9) == 0 ? "dicom-cxr" : "dicom-corpus",
                              "transfer syntax table"))
        return;
    struct cxr_dicom_instance *inst = load_ok(shared_path(r->path));
    ck_assert_str_eq(cxr_dicom_instance_info(inst)->transfer_syntax_uid, r->ts);
    cxr_dicom_instance_free(inst);
    struct cxr_dicom_pixels px;
    decode_ok(shared_path(r->path), &px);
    size_t n = (size_t)px.width * (size_t)px.height * (size_t)px.samples;
    if (r->ref == REF_MINMAX) {
        int32_t lo, hi;
        minmax(&px, &lo, &hi);
        ck_assert_msg(lo == r->lo && hi == r->hi, "%s: range %d..%d, MANIFEST says %d..%d", r->path,
                      lo, hi, r->lo, r->hi);
    } else {
        int32_t *ref = NULL;
        size_t rn = 0;
        struct cxr_dicom_pixels twin = {0};
        if (r->ref == REF_PYDICOM) {
            ref = pydicom_ref(shared_path(r->path), &rn, NULL, 0);
            if (!ref) {
                cxr_dicom_pixels_release(&px);
                return;
            }
        } else {
            decode_ok(shared_path(r->twin), &twin);
            ref = twin.values;
            rn = (size_t)twin.width * (size_t)twin.height * (size_t)twin.samples;
        }
        ck_assert_msg(rn == n, "%s: %zu values, reference %zu", r->path, n, rn);
        struct diff d = compare(px.values, ref, n);
        ck_assert_msg(d.max <= r->max_err && d.mean <= r->mean_err + 1e-12,
                      "%s: max |diff| %ld (allowed %ld), mean %.4f (allowed %.4f)", r->path, d.max,
                      r->max_err, d.mean, r->mean_err);
        if (r->ref == REF_PYDICOM)
            free(ref);
        cxr_dicom_pixels_release(&twin);
    }
    cxr_dicom_pixels_release(&px);
}
END_TEST

START_TEST(test_decode_deflated_image_frame_refused)
{
    if (!cxr_test_have_shared("dicom-corpus", "Deflated Image Frame Compression"))
        return;
    struct cxr_dicom_instance *inst =
        load_ok(shared_path("dicom-corpus/pydicom-data/liver_deflate.dcm"));
    struct cxr_dicom_pixels px;
    ck_assert_int_eq(cxr_dicom_instance_decode(inst, &px, g_err), CXR_ERR_DICOM_TS);
    ck_assert_ptr_nonnull(
        strstr(g_err, "Deflated Image Frame Compression (1.2.840.10008.1.2.8.1)"));
    ck_assert_ptr_null(px.values);
    cxr_dicom_instance_free(inst);
}
END_TEST

/* ------------------------------------------------------------------ suite */

START_TEST(test_version_strings)
{
    ck_assert_ptr_nonnull(strstr(cxr_dicom_dcmtk_version(), "3.6"));
    const char *c = cxr_dicom_codecs_built();
    ck_assert_ptr_nonnull(strstr(c, "JPEG2000"));
    ck_assert_ptr_nonnull(strstr(c, "JPEG-LS"));
    ck_assert_ptr_nonnull(strstr(c, "RLE"));
    ck_assert_ptr_nonnull(strstr(c, "HTJ2K")); /* OpenJPEG 2.5 on Debian 12 */
}
END_TEST

static Suite *dicom_suite(void)
{
    Suite *s = suite_create("dicom");
    TCase *tc = tcase_create("read");
    tcase_set_timeout(tc, 120); /* a FIFO that were waited on: a timeout, not a hang */
    tcase_add_test(tc, test_version_strings);
    tcase_add_test(tc, test_read_header_values);
    tcase_add_test(tc, test_read_memory_equals_file);
    tcase_add_test(tc, test_read_without_meta_header);
    tcase_add_test(tc, test_read_patient_age);
    tcase_add_test(tc, test_read_strings_truncated_and_utf8);
    tcase_add_test(tc, test_read_refuses_bad_input);
    tcase_add_test(tc, test_read_nesting_limit);
    tcase_add_test(tc, test_read_deflate_budget);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_decode_unsupported_syntax_named);
    tcase_add_test(tc, test_decode_committed_files);
    tcase_add_loop_test(tc, test_decode_transfer_syntax, 0,
                        (int)(sizeof k_ts_rows / sizeof k_ts_rows[0]));
    tcase_add_test(tc, test_decode_deflated_image_frame_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    cxr_dicom_global_init();
    return cxr_test_run(dicom_suite());
}
