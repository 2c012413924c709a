/* check_dicom_sr.c — the SR writer (TID 1500 Imaging Measurement Report as
 * IHE AIR shapes it). The UID generator has its own suite (check_dicom_uid.c).
 *
 * Every SR written here is checked twice, by tools that share no code with
 * the writer's logic: dciodvfy (dicom3tools) must report no "Error" line, and
 * DCMTK's dcm2json turns the file into the DICOM JSON model, which the tests
 * walk to find each content item by its concept code. The expected values
 * come from the request the test built, never from the writer. Requests are
 * built by hand (struct cxr_dicom_info filled field by field): no source
 * image file is needed. Refused requests: check_dicom_sr_refuse.c. */
#include <check.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/dicom.h"
#include "dicom_sr_fixture.h"
#include "test_util.h"

/* ---- tools -------------------------------------------------------------- */

static bool have_tool(const char *name)
{
    if (cxr_test_sh("command -v %s >/dev/null 2>&1", name) == 0)
        return true;
    printf("SKIP checks needing %s: not installed (Debian: dicom3tools / dcmtk)\n", name);
    return false;
}

/* dciodvfy must report no line containing "Error"; other lines (warnings)
 * are printed. The one expected warning is dciodvfy not knowing the
 * private coding scheme 99CXRTRIAGE (declared in the SR itself). */
static void dciodvfy_clean(const char *path)
{
    if (!have_tool("dciodvfy"))
        return;
    char out[PATH_MAX + 32];
    snprintf(out, sizeof out, "%s.dciodvfy.txt", path);
    ck_assert_int_ne(cxr_test_sh("dciodvfy '%s' >'%s' 2>&1", path, out), -1);
    char *text = cxr_test_read_file(out, NULL);
    ck_assert_ptr_nonnull(text);
    bool error = false;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strstr(line, "Error"))
            error = true;
        else if (strstr(line, "Warning") && !strstr(line, "<99CXRTRIAGE>"))
            printf("dciodvfy %s: %s\n", path, line);
    }
    free(text);
    if (error) {
        text = cxr_test_read_file(out, NULL);
        printf("dciodvfy output for %s:\n%s\n", path, text ? text : "");
        free(text);
    }
    ck_assert_msg(!error, "dciodvfy reports errors for %s (output above)", path);
}

/* The SR as DCMTK's dcm2json sees it (DICOM JSON model, PS3.18 F.2);
 * NULL (after a SKIP line) when dcm2json is not installed. */
static json_object *sr_json(const char *path)
{
    if (!have_tool("dcm2json"))
        return NULL;
    char out[PATH_MAX + 32];
    snprintf(out, sizeof out, "%s.json", path);
    ck_assert_int_eq(cxr_test_sh("dcm2json '%s' '%s' 2>/dev/null", path, out), 0);
    json_object *j = json_object_from_file(out);
    ck_assert_msg(j != NULL, "dcm2json output of %s does not parse", path);
    return j;
}

/* The SR as pydicom (Debian's /usr/bin/python3) sees it, in the same JSON
 * model: a second reader that shares no code with DCMTK. NULL when pydicom
 * is not installed. */
static json_object *sr_json_pydicom(const char *path)
{
    static int have = -1;
    if (have < 0) {
        have = cxr_test_sh("'%s' -c 'import pydicom' >/dev/null 2>&1", cxr_test_python()) == 0;
        if (!have)
            printf("SKIP pydicom cross-check: %s has no pydicom (python3-pydicom)\n",
                   cxr_test_python());
    }
    if (!have)
        return NULL;
    char out[PATH_MAX + 32];
    snprintf(out, sizeof out, "%s.pydicom.json", path);
    ck_assert_int_eq(
        cxr_test_sh("'%s' -c 'import sys, pydicom; "
                    "open(sys.argv[2], \"w\").write(pydicom.dcmread(sys.argv[1]).to_json())'"
                    " '%s' '%s'",
                    cxr_test_python(), path, out),
        0);
    json_object *j = json_object_from_file(out);
    ck_assert_msg(j != NULL, "pydicom JSON of %s does not parse", path);
    return j;
}

/* The value of one top-level attribute as dcmdump prints it ("" when absent). */
static void dcmdump_value(const char *path, const char *tag, char *out, size_t cap)
{
    char txt[PATH_MAX + 32];
    snprintf(txt, sizeof txt, "%s.dcmdump.txt", path);
    ck_assert_int_eq(cxr_test_sh("dcmdump -q +P %s '%s' >'%s' 2>/dev/null", tag, path, txt), 0);
    char *text = cxr_test_read_file(txt, NULL);
    ck_assert_ptr_nonnull(text);
    out[0] = '\0';
    char *l = strchr(text, '['), *r = l ? strchr(l, ']') : NULL;
    if (l && r)
        snprintf(out, cap, "%.*s", (int)(r - l - 1), l + 1);
    free(text);
}

/* ---- DICOM JSON accessors ------------------------------------------------ */

static json_object *jval(json_object *ds, const char *tag, size_t i)
{
    json_object *el, *v;
    if (!ds || !json_object_object_get_ex(ds, tag, &el) ||
        !json_object_object_get_ex(el, "Value", &v))
        return NULL;
    return i < json_object_array_length(v) ? json_object_array_get_idx(v, i) : NULL;
}
static bool jhas(json_object *ds, const char *tag)
{
    json_object *el;
    return ds && json_object_object_get_ex(ds, tag, &el);
}
static const char *jstr(json_object *ds, const char *tag)
{
    json_object *v = jval(ds, tag, 0);
    return v ? json_object_get_string(v) : "";
}
static size_t jcount(json_object *ds, const char *tag)
{
    json_object *el, *v;
    if (!ds || !json_object_object_get_ex(ds, tag, &el) ||
        !json_object_object_get_ex(el, "Value", &v))
        return 0;
    return json_object_array_length(v);
}
static const char *pn_alpha(json_object *ds, const char *tag)
{
    json_object *v = jval(ds, tag, 0), *a;
    return v && json_object_object_get_ex(v, "Alphabetic", &a) ? json_object_get_string(a) : "";
}

/* content items */
static const char *concept(json_object *it) { return jstr(jval(it, "0040A043", 0), "00080100"); }
static const char *code_val(json_object *it) { return jstr(jval(it, "0040A168", 0), "00080100"); }
static const char *code_scheme(json_object *it)
{
    return jstr(jval(it, "0040A168", 0), "00080102");
}
static const char *text_val(json_object *it) { return jstr(it, "0040A160"); }
static const char *uid_val(json_object *it) { return jstr(it, "0040A124"); }
static const char *rel(json_object *it) { return jstr(it, "0040A010"); }
static const char *vtype(json_object *it) { return jstr(it, "0040A040"); }
static const char *ref_sop(json_object *it) { return jstr(jval(it, "00081199", 0), "00081155"); }
static const char *ref_class(json_object *it) { return jstr(jval(it, "00081199", 0), "00081150"); }
static double num_val(json_object *it, const char **unit, const char **unit_scheme)
{
    json_object *mv = jval(it, "0040A300", 0);
    json_object *u = jval(mv, "004008EA", 0);
    *unit = jstr(u, "00080100");
    *unit_scheme = jstr(u, "00080102");
    json_object *v = jval(mv, "0040A30A", 0);
    ck_assert_msg(v != NULL, "NUM without Numeric Value");
    return json_object_get_double(v); /* DS: a number, or a string strtod reads */
}
static size_t nchildren(json_object *it) { return jcount(it, "0040A730"); }
static json_object *child(json_object *it, size_t i) { return jval(it, "0040A730", i); }

/* The direct children of `it` with concept code `code`: the k-th one. */
static json_object *child_named(json_object *it, const char *code, size_t k)
{
    for (size_t i = 0; i < nchildren(it); i++)
        if (strcmp(concept(child(it, i)), code) == 0 && k-- == 0)
            return child(it, i);
    return NULL;
}
static size_t count_named(json_object *it, const char *code)
{
    size_t n = 0;
    for (size_t i = 0; i < nchildren(it); i++)
        n += strcmp(concept(child(it, i)), code) == 0;
    return n;
}
static const char *template_id(json_object *it)
{
    return jstr(jval(it, "0040A504", 0), "0040DB00");
}

/* ---- the common content check -------------------------------------------- */

static bool valid_uid(const char *u)
{
    size_t n = strlen(u);
    if (n == 0 || n > 64 || u[0] == '.' || u[n - 1] == '.' || strstr(u, ".."))
        return false;
    return strspn(u, "0123456789.") == n;
}

/* Everything TID 1500 / the IOD must carry for request `r`, checked on the
 * JSON of the written file. */
static void check_sr(json_object *ds, const struct cxr_dicom_sr_request *r, const char *sop_uid)
{
    const struct cxr_dicom_info *st = r->study;
    /* IOD and header */
    ck_assert_str_eq(jstr(ds, "00080016"), r->enhanced_sr ? "1.2.840.10008.5.1.4.1.1.88.22"
                                                          : "1.2.840.10008.5.1.4.1.1.88.33");
    ck_assert_str_eq(jstr(ds, "00080018"), sop_uid);
    ck_assert_str_eq(jstr(ds, "00080060"), "SR");
    ck_assert_str_eq(jstr(ds, "0020000D"), st->study_instance_uid);
    const char *series = jstr(ds, "0020000E");
    ck_assert(valid_uid(series));
    for (uint32_t i = 0; i < r->image_count; i++)
        ck_assert_str_ne(series, r->images[i].series_instance_uid);
    ck_assert_str_eq(jstr(ds, "0040A493"), "UNVERIFIED");
    ck_assert_str_eq(jstr(ds, "0040A491"), r->complete ? "COMPLETE" : "PARTIAL");
    ck_assert(jhas(ds, "0040A372")); /* Performed Procedure Code Sequence */
    ck_assert(jhas(ds, "00081111")); /* Referenced Performed Procedure Step Sequence */
    ck_assert_uint_le(strlen(jstr(ds, "00100020")), 64); /* LO, cut when longer */
    ck_assert_int_eq(strncmp(jstr(ds, "00100020"), st->patient_id, 64), 0);
    ck_assert_str_eq(jstr(ds, "00080050"), st->accession_number);
    ck_assert_int_eq(atoi(jstr(ds, "00200011")), r->series_number);
    ck_assert_str_eq(jstr(ds, "00080070"), r->manufacturer);
    ck_assert_str_eq(jstr(ds, "00181020"), r->software_version);

    /* Current Requested Procedure Evidence: every source image */
    json_object *ev = jval(ds, "0040A375", 0);
    ck_assert_str_eq(jstr(ev, "0020000D"), st->study_instance_uid);
    for (uint32_t i = 0; i < r->image_count; i++) {
        bool found = false;
        for (size_t s = 0; s < jcount(ev, "00081115"); s++) {
            json_object *ser = jval(ev, "00081115", s);
            for (size_t k = 0; k < jcount(ser, "00081199"); k++) {
                json_object *ref = jval(ser, "00081199", k);
                if (strcmp(jstr(ref, "00081155"), r->images[i].sop_instance_uid) == 0) {
                    found = true;
                    ck_assert_str_eq(jstr(ref, "00081150"), r->images[i].sop_class_uid);
                    ck_assert_str_eq(jstr(ser, "0020000E"), r->images[i].series_instance_uid);
                }
            }
        }
        ck_assert_msg(found, "image %u not in the evidence sequence", i + 1);
    }

    /* root: TID 1500 */
    ck_assert_str_eq(vtype(ds), "CONTAINER");
    ck_assert_str_eq(concept(ds), "126000");
    ck_assert_str_eq(template_id(ds), "1500");
    json_object *lang = child_named(ds, "121049", 0);
    ck_assert_str_eq(code_val(lang), "en");
    ck_assert_str_eq(code_scheme(lang), "RFC5646");
    json_object *obs = child_named(ds, "121005", 0);
    ck_assert_str_eq(rel(obs), "HAS OBS CONTEXT");
    ck_assert_str_eq(code_val(obs), "121007");
    const char *dev_uid = uid_val(child_named(ds, "121012", 0));
    ck_assert(valid_uid(dev_uid));
    if (r->device_observer_uid && *r->device_observer_uid)
        ck_assert_str_eq(dev_uid, r->device_observer_uid);
    ck_assert_str_eq(text_val(child_named(ds, "121013", 0)), r->device_name);
    ck_assert_str_eq(text_val(child_named(ds, "121014", 0)), r->manufacturer);
    ck_assert_str_eq(text_val(child_named(ds, "121015", 0)), r->model_name);
    json_object *proc = child_named(ds, "121058", 0);
    ck_assert_str_eq(code_val(proc), "36554-4");
    ck_assert_str_eq(code_scheme(proc), "LN");

    /* Image Library: one IMAGE per source image */
    json_object *lib = child_named(child_named(ds, "111028", 0), "126200", 0);
    ck_assert_ptr_nonnull(lib);
    ck_assert_uint_eq(nchildren(lib), r->image_count);
    for (uint32_t i = 0; i < r->image_count; i++) {
        ck_assert_str_eq(vtype(child(lib, i)), "IMAGE");
        ck_assert_str_eq(ref_sop(child(lib, i)), r->images[i].sop_instance_uid);
        ck_assert_str_eq(ref_class(child(lib, i)), r->images[i].sop_class_uid);
    }

    /* Imaging Measurements: one TID 1501 group per image */
    json_object *meas = child_named(ds, "126010", 0);
    ck_assert_uint_eq(count_named(meas, "125007"), r->image_count);
    for (uint32_t i = 0; i < r->image_count; i++) {
        const struct cxr_dicom_sr_image *im = &r->images[i];
        json_object *g = child_named(meas, "125007", i);
        ck_assert_str_eq(template_id(g), "1501");
        ck_assert_str_ne(text_val(child_named(g, "112039", 0)), "");
        ck_assert(valid_uid(uid_val(child_named(g, "112040", 0))));
        json_object *finding = child_named(g, "121071", 0);
        ck_assert_str_eq(code_val(finding), "233604007");
        ck_assert_str_eq(code_scheme(finding), "SCT");
        json_object *site = child_named(g, "363698007", 0);
        ck_assert_str_eq(code_val(site), "39607008");
        /* TID 4019 */
        ck_assert_str_eq(text_val(child_named(g, "111001", 0)), r->algorithm_name);
        ck_assert_str_eq(text_val(child_named(g, "111003", 0)), r->algorithm_version);
        bool sha_found = false, thr_found = false;
        for (size_t k = 0; k < count_named(g, "111002"); k++) {
            const char *p = text_val(child_named(g, "111002", k));
            sha_found |= strstr(p, SHA) != NULL;
            char thr[32];
            snprintf(thr, sizeof thr, "%g", r->operating_threshold);
            thr_found |= strstr(p, "threshold") && strstr(p, thr);
        }
        ck_assert_msg(sha_found, "group %u: no Algorithm Parameters with the model SHA-256", i + 1);
        ck_assert_msg(thr_found, "group %u: no Algorithm Parameters with the threshold", i + 1);
        /* Certainty of Finding in %, inferred from the source image */
        json_object *cert = child_named(g, "111012", 0);
        ck_assert_str_eq(vtype(cert), "NUM");
        const char *unit, *unit_scheme;
        double pct = num_val(cert, &unit, &unit_scheme);
        ck_assert_str_eq(unit, "%");
        ck_assert_str_eq(unit_scheme, "UCUM");
        ck_assert_double_eq_tol(pct, im->probability * 100.0, 0.01);
        json_object *src = child_named(cert, "121112", 0);
        ck_assert_str_eq(rel(src), "INFERRED FROM");
        ck_assert_str_eq(ref_sop(src), im->sop_instance_uid);
        /* presence at the operating threshold */
        json_object *pres = child_named(g, "233604007", 0);
        ck_assert_str_eq(code_val(pres),
                         im->probability >= r->operating_threshold ? "52101004" : "2667000");
        ck_assert_str_eq(code_scheme(pres), "SCT");
        json_object *comment = child_named(g, "121106", 0);
        if (im->warning[0])
            ck_assert_str_eq(text_val(comment), im->warning);
        else
            ck_assert_ptr_null(comment);
    }

    /* Qualitative Evaluations: the study's triage priority */
    json_object *qe = child_named(ds, "C0034375", 0);
    ck_assert_str_eq(text_val(child_named(qe, "TRIAGEPRIORITY", 0)), r->priority_name);
    ck_assert_str_eq(jstr(jval(ds, "00080110", 0), "00080102"), "99CXRTRIAGE");

    /* never "Probability of cancer"; Enhanced SR has nothing Comprehensive-only */
    const char *all = json_object_to_json_string(ds);
    ck_assert_ptr_null(strstr(all, "\"111047\""));
    ck_assert_ptr_null(strstr(all, "SCOORD3D"));

    /* predecessor */
    if (r->predecessor_sop_instance_uid && *r->predecessor_sop_instance_uid) {
        json_object *pd = jval(ds, "0040A360", 0);
        ck_assert_ptr_nonnull(pd);
        ck_assert_str_eq(jstr(pd, "0020000D"), st->study_instance_uid);
        json_object *ps = jval(pd, "00081115", 0);
        ck_assert_str_eq(jstr(ps, "0020000E"), r->predecessor_series_instance_uid);
        ck_assert_str_eq(jstr(jval(ps, "00081199", 0), "00081155"),
                         r->predecessor_sop_instance_uid);
    } else {
        ck_assert(!jhas(ds, "0040A360"));
    }
}

/* Writes `r` into a fresh folder, checks the call, dciodvfy and the content
 * (as DCMTK and pydicom read it); returns DCMTK's JSON, else pydicom's
 * (caller puts it), or NULL when neither tool is installed.
 * `dir_out` receives the folder (caller removes it). */
static json_object *write_and_check(const struct cxr_dicom_sr_request *r, char **dir_out,
                                    char *path, char *uid)
{
    char *dir = cxr_test_tmpdir();
    ck_assert_ptr_nonnull(dir);
    snprintf(path, PATH_MAX, "%s/sr.dcm", dir);
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_dicom_sr_write_file(r, path, uid, err);
    ck_assert_msg(st == CXR_OK, "write failed: %s: %s", cxr_status_name(st), err);
    ck_assert(valid_uid(uid));
    ck_assert_int_eq(strncmp(uid, "2.25.", 5), 0);
    dciodvfy_clean(path);
    json_object *py = sr_json_pydicom(path);
    if (py)
        check_sr(py, r, uid);
    /* Debian's DCMTK converts with glibc iconv, which has no ISO 2022 IR 87:
     * dcm2json cannot read such a file; pydicom's view stands in for it. */
    json_object *j = strstr(r->study->specific_character_set, "2022") ? NULL : sr_json(path);
    if (j) {
        check_sr(j, r, uid);
        json_object_put(py);
        py = NULL;
    }
    *dir_out = dir;
    return j ? j : py;
}

/* ---- SR content ----------------------------------------------------------- */

START_TEST(test_sr_one_image)
{
    struct req_buf b;
    make_request(&b, 1);
    char *dir, path[PATH_MAX], uid[CXR_DICOM_UID_LEN];
    json_object *j = write_and_check(&b.req, &dir, path, uid);
    if (j) {
        /* patient / study copied */
        ck_assert_str_eq(pn_alpha(j, "00100010"), "Doe^Jane");
        ck_assert_str_eq(pn_alpha(j, "00080090"), "Smith^John");
        ck_assert_str_eq(jstr(j, "00100030"), "19800214");
        ck_assert_str_eq(jstr(j, "00100040"), "F");
        ck_assert_str_eq(jstr(j, "00101010"), "044Y");
        ck_assert_str_eq(jstr(j, "00100021"), "HOSP");
        ck_assert_str_eq(jstr(j, "00080020"), "20240102");
        ck_assert_str_eq(jstr(j, "00080030"), "101530.25");
        ck_assert_str_eq(jstr(j, "00200010"), "ST1");
        ck_assert_str_eq(jstr(j, "00081030"), "CHEST PA");
        ck_assert_str_eq(jstr(j, "00080080"), "General Hospital"); /* the source's */
        ck_assert_str_eq(jstr(j, "0008103E"), "CXR triage AI result");
        ck_assert(!jhas(j, "00080005")); /* ASCII only: no Specific Character Set */
        json_object_put(j);
    }
    /* Part 10, Explicit VR Little Endian */
    size_t len;
    unsigned char *f = cxr_test_read_file(path, &len);
    ck_assert(f && len > 300);
    ck_assert_int_eq(memcmp(f + 128, "DICM", 4), 0);
    ck_assert_ptr_nonnull(memmem(f, 400, "1.2.840.10008.1.2.1\0", 20));
    free(f);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_sr_several_images_warning)
{
    struct req_buf b;
    make_request(&b, 4);
    snprintf(b.img[1].warning, sizeof b.img[1].warning,
             "patient age 4 years is outside the intended population (18-100 years)");
    b.req.institution_name = "Radiology Partners";
    b.req.priority_name = "ROUTINE";
    b.req.complete = false;
    char *dir, path[PATH_MAX], uid[CXR_DICOM_UID_LEN];
    json_object *j = write_and_check(&b.req, &dir, path, uid);
    if (j) {
        ck_assert_str_eq(jstr(j, "00080080"), "Radiology Partners");
        /* tracking UIDs differ between images */
        json_object *meas = child_named(j, "126010", 0);
        const char *t0 = uid_val(child_named(child_named(meas, "125007", 0), "112040", 0));
        const char *t1 = uid_val(child_named(child_named(meas, "125007", 1), "112040", 0));
        ck_assert_str_ne(t0, t1);
        json_object_put(j);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* Present exactly at the operating threshold, absent just below it. */
START_TEST(test_sr_threshold_boundary)
{
    struct req_buf b;
    make_request(&b, 2);
    b.req.operating_threshold = 0.37;
    b.img[0].probability = 0.37;
    b.img[0].finding_present = true;
    b.img[1].probability = nextafter(0.37, 0.0);
    b.img[1].finding_present = false;
    char *dir, path[PATH_MAX], uid[CXR_DICOM_UID_LEN];
    json_object *j = write_and_check(&b.req, &dir, path, uid);
    if (j) {
        json_object *meas = child_named(j, "126010", 0);
        ck_assert_str_eq(code_val(child_named(child_named(meas, "125007", 0), "233604007", 0)),
                         "52101004");
        ck_assert_str_eq(code_val(child_named(child_named(meas, "125007", 1), "233604007", 0)),
                         "2667000");
        json_object_put(j);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_sr_enhanced_predecessor)
{
    struct req_buf b;
    make_request(&b, 2);
    b.req.enhanced_sr = true;
    b.req.predecessor_sop_instance_uid = "2.25.1234567890123456789";
    b.req.predecessor_series_instance_uid = "2.25.9876543210987654321";
    char *dir, path[PATH_MAX], uid[CXR_DICOM_UID_LEN];
    json_object *j = write_and_check(&b.req, &dir, path, uid);
    if (j) {
        json_object *ps = jval(jval(j, "0040A360", 0), "00081115", 0);
        ck_assert_str_eq(jstr(jval(ps, "00081199", 0), "00081150"),
                         "1.2.840.10008.5.1.4.1.1.88.22");
        json_object_put(j);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_sr_comprehensive_predecessor)
{
    struct req_buf b;
    make_request(&b, 1);
    b.req.predecessor_sop_instance_uid = "2.25.1234567890123456789";
    b.req.predecessor_series_instance_uid = "2.25.9876543210987654321";
    char *dir, path[PATH_MAX], uid[CXR_DICOM_UID_LEN];
    json_object *j = write_and_check(&b.req, &dir, path, uid);
    if (j) {
        json_object *ps = jval(jval(j, "0040A360", 0), "00081115", 0);
        ck_assert_str_eq(jstr(jval(ps, "00081199", 0), "00081150"),
                         "1.2.840.10008.5.1.4.1.1.88.33");
        json_object_put(j);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* A UTF-8 source keeps its name and its Specific Character Set. */
START_TEST(test_sr_utf8_name)
{
    struct req_buf b;
    make_request(&b, 1);
    snprintf(b.study.specific_character_set, sizeof b.study.specific_character_set, "ISO_IR 192");
    snprintf(b.study.patient_name, sizeof b.study.patient_name, "Müller^Jürgen=山田^太郎");
    char *dir, path[PATH_MAX], uid[CXR_DICOM_UID_LEN];
    json_object *j = write_and_check(&b.req, &dir, path, uid);
    if (j) {
        ck_assert_str_eq(jstr(j, "00080005"), "ISO_IR 192");
        ck_assert_str_eq(pn_alpha(j, "00100010"), "Müller^Jürgen");
        json_object *pn = jval(j, "00100010", 0), *ideo;
        ck_assert(json_object_object_get_ex(pn, "Ideographic", &ideo));
        ck_assert_str_eq(json_object_get_string(ideo), "山田^太郎");
        json_object_put(j);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* ISO 2022 (Japanese, PS3.5 H.3.1): the multi-valued set and the escape
 * sequences survive. With a non-ASCII string of ours the copied values
 * cannot be converted (glibc iconv has no ISO 2022 IR 87), so the set stays
 * and our non-ASCII bytes become '?'. */
START_TEST(test_sr_iso2022_name)
{
    for (int own_utf8 = 0; own_utf8 < 2; own_utf8++) {
        struct req_buf b;
        make_request(&b, 1);
        snprintf(b.study.specific_character_set, sizeof b.study.specific_character_set,
                 "\\ISO 2022 IR 87");
        snprintf(
            b.study.patient_name, sizeof b.study.patient_name,
            "Yamada^Tarou=\033$B;3ED\033(B^\033$BB@O:\033(B=\033$B$d$^$@\033(B^\033$B$?$m$&\033(B");
        char *dir, path[PATH_MAX], uid[CXR_DICOM_UID_LEN];
        json_object *j = NULL;
        if (!own_utf8) {
            j = write_and_check(&b.req, &dir, path, uid);
        } else { /* check_sr would compare the manufacturer: only dciodvfy here */
            b.req.manufacturer = "R\xc3\xb6ntgen AG";
            dir = cxr_test_tmpdir();
            snprintf(path, sizeof path, "%s/sr.dcm", dir);
            char err[CXR_ERRLEN];
            ck_assert_msg(cxr_dicom_sr_write_file(&b.req, path, uid, err) == CXR_OK, "%s", err);
            dciodvfy_clean(path);
        }
        if (have_tool("dcmdump")) {
            char v[64];
            dcmdump_value(path, "0008,0005", v, sizeof v);
            ck_assert_str_eq(v, "\\ISO 2022 IR 87");
            dcmdump_value(path, "0008,0070", v, sizeof v);
            ck_assert_str_eq(v, own_utf8 ? "R??ntgen AG" : "cxr-triage project");
        }
        if (j) {
            ck_assert_str_eq(pn_alpha(j, "00100010"), "Yamada^Tarou");
            json_object *pn = jval(j, "00100010", 0), *ideo;
            ck_assert(json_object_object_get_ex(pn, "Ideographic", &ideo));
            ck_assert_str_eq(json_object_get_string(ideo), "山田^太郎");
            json_object_put(j);
        }
        cxr_test_rmtree(dir);
        free(dir);
    }
}
END_TEST

/* A Latin-1 source stays Latin-1 while our strings are ASCII; when one of
 * ours is not ASCII the copied values are converted and the SR is UTF-8. */
START_TEST(test_sr_latin1_source)
{
    for (int own_utf8 = 0; own_utf8 < 2; own_utf8++) {
        struct req_buf b;
        make_request(&b, 1);
        snprintf(b.study.specific_character_set, sizeof b.study.specific_character_set,
                 "ISO_IR 100");
        snprintf(b.study.patient_name, sizeof b.study.patient_name, "M\xfcller^J\xfcrgen");
        if (own_utf8)
            b.req.manufacturer = "Röntgen Süd AG";
        char *dir, path[PATH_MAX], uid[CXR_DICOM_UID_LEN];
        json_object *j = write_and_check(&b.req, &dir, path, uid);
        if (j) {
            /* dcm2json converts to UTF-8 and says so: ask dcmdump for the stored set */
            char cs[64];
            dcmdump_value(path, "0008,0005", cs, sizeof cs);
            ck_assert_str_eq(cs, own_utf8 ? "ISO_IR 192" : "ISO_IR 100");
            ck_assert_str_eq(pn_alpha(j, "00100010"), "Müller^Jürgen");
            if (own_utf8)
                ck_assert_str_eq(jstr(j, "00080070"), "Röntgen Süd AG");
            json_object_put(j);
        }
        cxr_test_rmtree(dir);
        free(dir);
    }
}
END_TEST

/* The memory variant gives the same kind of Part 10 object. */
START_TEST(test_sr_memory)
{
    struct req_buf b;
    make_request(&b, 2);
    void *buf = (void *)1;
    size_t len = 0;
    char uid[CXR_DICOM_UID_LEN], err[CXR_ERRLEN];
    enum cxr_status st = cxr_dicom_sr_write_memory(&b.req, &buf, &len, uid, err);
    ck_assert_msg(st == CXR_OK, "%s", err);
    ck_assert(buf != NULL && len > 300);
    ck_assert_int_eq(memcmp((char *)buf + 128, "DICM", 4), 0);
    char *dir = cxr_test_tmpdir();
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/mem.dcm", dir);
    ck_assert(cxr_test_write_file(path, buf, len));
    free(buf);
    dciodvfy_clean(path);
    json_object *j = sr_json(path);
    if (j) {
        check_sr(j, &b.req, uid);
        json_object_put(j);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* No configured device UID: one derived, the same on every SR of this host;
 * tracking UIDs follow the source image across reports. */
START_TEST(test_sr_device_uid_stable)
{
    char uids[2][CXR_DICOM_UID_LEN], track[2][CXR_DICOM_UID_LEN], series[2][CXR_DICOM_UID_LEN];
    char sop[2][CXR_DICOM_UID_LEN];
    bool have = true;
    for (int k = 0; k < 2; k++) {
        struct req_buf b;
        make_request(&b, 1);
        b.req.device_observer_uid = k ? "" : NULL;
        char *dir, path[PATH_MAX];
        json_object *j = write_and_check(&b.req, &dir, path, sop[k]);
        if (j) {
            snprintf(uids[k], sizeof uids[k], "%s", uid_val(child_named(j, "121012", 0)));
            json_object *g = child_named(child_named(j, "126010", 0), "125007", 0);
            snprintf(track[k], sizeof track[k], "%s", uid_val(child_named(g, "112040", 0)));
            snprintf(series[k], sizeof series[k], "%s", jstr(j, "0020000E"));
            json_object_put(j);
        } else {
            have = false;
        }
        cxr_test_rmtree(dir);
        free(dir);
    }
    ck_assert_str_ne(sop[0], sop[1]);
    if (have) {
        ck_assert_int_eq(strncmp(uids[0], "2.25.", 5), 0);
        ck_assert_str_eq(uids[0], uids[1]);
        ck_assert_str_eq(track[0], track[1]);
        ck_assert_str_ne(series[0], series[1]);
    }
}
END_TEST

/* Long values are cut to their VR's maximum; copied values that are not
 * valid for their VR are left empty instead of breaking the SR. */
START_TEST(test_sr_truncation_and_bad_source_values)
{
    struct req_buf b;
    make_request(&b, 1);
    char longdesc[200];
    memset(longdesc, 'D', sizeof longdesc - 1);
    longdesc[sizeof longdesc - 1] = '\0';
    b.req.series_description = longdesc;
    memset(b.study.patient_id, 'P', sizeof b.study.patient_id - 1);
    snprintf(b.study.study_date, sizeof b.study.study_date, "2020.01.01");
    snprintf(b.study.patient_sex, sizeof b.study.patient_sex, "MALE");
    snprintf(b.study.study_id, sizeof b.study.study_id, "STUDY\\2");
    /* six PN components: DCMTK refuses it, the SR is still written */
    snprintf(b.study.patient_name, sizeof b.study.patient_name, "A^B^C^D^E^F");
    /* four component groups: the fourth is dropped */
    snprintf(b.study.referring_physician_name, sizeof b.study.referring_physician_name,
             "Smith^John=S=J=extra");
    char *dir, path[PATH_MAX], uid[CXR_DICOM_UID_LEN];
    json_object *j = write_and_check(&b.req, &dir, path, uid);
    if (j) {
        ck_assert_uint_eq(strlen(jstr(j, "0008103E")), 64);
        ck_assert_uint_eq(strlen(jstr(j, "00100020")), 64);
        ck_assert(jhas(j, "00080020"));
        ck_assert_str_eq(jstr(j, "00080020"), "");
        ck_assert_str_eq(jstr(j, "00100040"), "");
        ck_assert_str_eq(jstr(j, "00200010"), "STUDY/2");
        ck_assert_str_eq(pn_alpha(j, "00100010"), "");
        ck_assert_str_eq(pn_alpha(j, "00080090"), "Smith^John");
        json_object *rp = jval(j, "00080090", 0), *ph;
        ck_assert(json_object_object_get_ex(rp, "Phonetic", &ph));
        ck_assert_str_eq(json_object_get_string(ph), "J");
        json_object_put(j);
    }
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

/* A real archive may hold UIDs that break PS3.5 9.1 (a component with a
 * leading zero, as in the corpus's fo-dicom/CR-ModalitySequenceLUT.dcm). The
 * SR must still reference the source exactly as the PACS knows it: written,
 * the UID present unchanged in the evidence, the image library and the
 * source of measurement, and dciodvfy's only errors are about that UID. */
START_TEST(test_sr_source_uid_leading_zero)
{
    struct req_buf b;
    make_request(&b, 1);
    const char *bad = "999.999.01.23.45.6789";
    snprintf(b.img[0].sop_instance_uid, sizeof b.img[0].sop_instance_uid, "%s", bad);
    char *dir = cxr_test_tmpdir(), path[PATH_MAX], uid[CXR_DICOM_UID_LEN], err[CXR_ERRLEN] = "";
    ck_assert_ptr_nonnull(dir);
    snprintf(path, sizeof path, "%s/sr.dcm", dir);
    ck_assert_msg(cxr_dicom_sr_write_file(&b.req, path, uid, err) == CXR_OK, "%s", err);
    ck_assert_int_eq(
        cxr_test_sh("test \"$(dcmdump +P 0008,1155 +s '%s' | grep -c '\\[%s\\]')\" = 3", path, bad),
        0);
    if (cxr_test_sh("command -v dciodvfy >/dev/null") == 0)
        ck_assert_int_eq(cxr_test_sh("dciodvfy '%s' 2>&1 | grep Error | grep -v '%s' "
                                     "| grep -v 'invalid data values for Value Representations' "
                                     "| grep -q .",
                                     path, bad),
                         1);
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dicom_sr");
    TCase *tc = tcase_create("sr_content");
    tcase_add_test(tc, test_sr_one_image);
    tcase_add_test(tc, test_sr_several_images_warning);
    tcase_add_test(tc, test_sr_threshold_boundary);
    tcase_add_test(tc, test_sr_enhanced_predecessor);
    tcase_add_test(tc, test_sr_comprehensive_predecessor);
    tcase_add_test(tc, test_sr_utf8_name);
    tcase_add_test(tc, test_sr_iso2022_name);
    tcase_add_test(tc, test_sr_latin1_source);
    tcase_add_test(tc, test_sr_memory);
    tcase_add_test(tc, test_sr_device_uid_stable);
    tcase_add_test(tc, test_sr_truncation_and_bad_source_values);
    tcase_add_test(tc, test_sr_source_uid_leading_zero);
    suite_add_tcase(s, tc);
    return cxr_test_run(s);
}
