/* check_triage_decision.c — the report decision both doors share
 * (cxr_triage_study_decide): which images an SR lists, when one is due,
 * the study's priority and score. Issue 16: every received radiograph is
 * accounted for in the SR, analysed or not; a study with nothing analysed
 * gets an SR unless sr/report-not-analysed is false; a CT, an MR or an SR
 * sent along is not listed. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cxr/conf.h"
#include "cxr/decision.h"
#include "test_util.h"

#define CR "1.2.840.10008.5.1.4.1.1.1"
#define SC "1.2.840.10008.5.1.4.1.1.7"
#define CT "1.2.840.10008.5.1.4.1.1.2"
#define SR "1.2.840.10008.5.1.4.1.1.88.33"

static struct cxr_triage_instance_row row(int id, const char *cls, const char *modality,
                                          enum cxr_triage_instance_state st, double p, bool info)
{
    struct cxr_triage_instance_row r;
    memset(&r, 0, sizeof r);
    r.id = id;
    r.state = st;
    snprintf(r.study_instance_uid, sizeof r.study_instance_uid, "2.25.9");
    snprintf(r.sop_instance_uid, sizeof r.sop_instance_uid, "2.25.9.%d", id);
    snprintf(r.sop_class_uid, sizeof r.sop_class_uid, "%s", cls);
    r.has_info = info;
    if (info) {
        snprintf(r.info.sop_class_uid, sizeof r.info.sop_class_uid, "%s", cls);
        snprintf(r.info.sop_instance_uid, sizeof r.info.sop_instance_uid, "2.25.9.%d", id);
        snprintf(r.info.series_instance_uid, sizeof r.info.series_instance_uid, "2.25.9.0");
        snprintf(r.info.study_instance_uid, sizeof r.info.study_instance_uid, "2.25.9");
        snprintf(r.info.modality, sizeof r.info.modality, "%s", modality);
    }
    if (st == CXR_TRIAGE_INSTANCE_ANALYSED) {
        r.probability = p;
        r.finding_present = p >= 0.5;
        r.priority = p >= 0.9   ? CXR_TRIAGE_PRIORITY_URGENT
                     : p >= 0.5 ? CXR_TRIAGE_PRIORITY_PRIORITY
                                : CXR_TRIAGE_PRIORITY_ROUTINE;
    } else {
        r.probability = NAN;
        snprintf(r.reason, sizeof r.reason, "reason %d", id);
    }
    return r;
}

static struct cxr_conf *conf_with(bool report_not_analysed)
{
    struct cxr_conf *c = NULL;
    ck_assert_int_eq(cxr_conf_defaults(&c), CXR_OK);
    c->sr.report_not_analysed = report_not_analysed;
    return c;
}

/* A PA (analysed), a lateral, a Secondary Capture (not analysed), a CT and
 * an SR sent along, one unreadable file, one still waiting: the SR lists the
 * three radiographs, in row order, with the reasons. */
START_TEST(test_mixed_study_lists_every_radiograph)
{
    struct cxr_conf *c = conf_with(true);
    struct cxr_triage_instance_row rows[] = {
        row(1, CR, "CR", CXR_TRIAGE_INSTANCE_ANALYSED, 0.7, true),
        row(2, CR, "CR", CXR_TRIAGE_INSTANCE_NOT_ANALYSED, 0, true),
        row(3, SC, "CR", CXR_TRIAGE_INSTANCE_NOT_ANALYSED, 0, true),
        row(4, CT, "CT", CXR_TRIAGE_INSTANCE_NOT_ANALYSED, 0, true),
        row(5, SR, "CR", CXR_TRIAGE_INSTANCE_NOT_ANALYSED, 0, true),
        row(6, CR, "CR", CXR_TRIAGE_INSTANCE_NOT_ANALYSED, 0, false),
        row(7, CR, "CR", CXR_TRIAGE_INSTANCE_RECEIVED, 0, false),
    };
    struct cxr_triage_decision d;
    ck_assert_int_eq(cxr_triage_study_decide(c, rows, 7, &d), CXR_OK);
    ck_assert_int_eq(d.count, 3);
    ck_assert_int_eq(d.analysed, 1);
    ck_assert_int_eq(d.not_analysed, 2);
    ck_assert_int_eq(d.unlisted, 3);
    ck_assert(d.due && d.make_sr);
    ck_assert_str_eq(d.results[0].info.sop_instance_uid, "2.25.9.1");
    ck_assert(d.results[0].analysed);
    ck_assert_str_eq(d.results[1].info.sop_instance_uid, "2.25.9.2");
    ck_assert(!d.results[1].analysed);
    ck_assert_str_eq(d.results[1].reason, "reason 2");
    ck_assert_str_eq(d.results[2].info.sop_instance_uid, "2.25.9.3");
    ck_assert_int_eq(d.priority, CXR_TRIAGE_PRIORITY_PRIORITY);
    ck_assert(fabs(d.score - 0.7) < 1e-12);
    cxr_triage_decision_release(&d);
    cxr_conf_free(c);
}
END_TEST

/* Nothing analysed: an SR saying so, priority NOT_ANALYSED, no score;
 * none with sr/report-not-analysed false. */
START_TEST(test_nothing_analysed)
{
    struct cxr_triage_instance_row rows[] = {
        row(1, CR, "CR", CXR_TRIAGE_INSTANCE_NOT_ANALYSED, 0, true),
        row(2, SC, "CR", CXR_TRIAGE_INSTANCE_NOT_ANALYSED, 0, true),
    };
    for (int on = 0; on <= 1; on++) {
        struct cxr_conf *c = conf_with(on);
        struct cxr_triage_decision d;
        ck_assert_int_eq(cxr_triage_study_decide(c, rows, 2, &d), CXR_OK);
        ck_assert_int_eq(d.count, 2);
        ck_assert(d.due);
        ck_assert_int_eq(d.make_sr, on);
        ck_assert_int_eq(d.priority, CXR_TRIAGE_PRIORITY_NOT_ANALYSED);
        ck_assert(isnan(d.score));
        cxr_triage_decision_release(&d);
        cxr_conf_free(c);
    }
}
END_TEST

/* Everything listed was in an earlier decision: no SR; a late lateral view
 * makes one due (its successor lists it); a late CT does not. */
START_TEST(test_due_only_for_new_listed_images)
{
    struct cxr_conf *c = conf_with(true);
    struct cxr_triage_instance_row rows[] = {
        row(1, CR, "CR", CXR_TRIAGE_INSTANCE_ANALYSED, 0.95, true),
        row(2, CT, "CT", CXR_TRIAGE_INSTANCE_NOT_ANALYSED, 0, true),
        row(3, CR, "DX", CXR_TRIAGE_INSTANCE_NOT_ANALYSED, 0, true),
    };
    rows[0].reported = true;
    rows[2].reported = true;
    struct cxr_triage_decision d;
    ck_assert_int_eq(cxr_triage_study_decide(c, rows, 3, &d), CXR_OK);
    ck_assert(!d.due && !d.make_sr);
    ck_assert_int_eq(d.priority, CXR_TRIAGE_PRIORITY_URGENT);
    cxr_triage_decision_release(&d);
    rows[2].reported = false;
    ck_assert_int_eq(cxr_triage_study_decide(c, rows, 3, &d), CXR_OK);
    ck_assert(d.due && d.make_sr);
    ck_assert_int_eq(d.count, 2);
    cxr_triage_decision_release(&d);
    cxr_triage_decision_release(NULL);
    cxr_conf_free(c);
}
END_TEST

/* Which images a chest triage is expected to look at: by Modality (the
 * plugin's own rule before reading), never a non-image object. */
START_TEST(test_gate_concerns)
{
    struct cxr_conf *c = conf_with(true);
    struct cxr_dicom_info i;
    memset(&i, 0, sizeof i);
    const struct {
        const char *cls, *modality;
        bool sc_allowed, want;
    } cases[] = {
        {CR, "CR", false, true},  {CR, "DX", false, true},  {SC, "CR", false, true},
        {CR, "", false, true},    {SC, "OT", false, false}, {SC, "OT", true, true},
        {SC, "XC", true, false},  {CT, "CT", false, false}, {CT, "CR", false, true},
        {SR, "CR", false, false}, {SR, "SR", true, false},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(i.sop_class_uid, sizeof i.sop_class_uid, "%s", cases[k].cls);
        snprintf(i.modality, sizeof i.modality, "%s", cases[k].modality);
        c->gate.allow_secondary_capture = cases[k].sc_allowed;
        ck_assert_msg(cxr_dicom_gate_concerns(&i, &c->gate) == cases[k].want, "case %zu", k);
    }
    ck_assert(!cxr_dicom_gate_concerns(NULL, &c->gate));
    cxr_conf_free(c);
}
END_TEST

/* The kinds of object an SR never lists as images. */
START_TEST(test_sop_class_is_image)
{
    ck_assert(cxr_dicom_sop_class_is_image(CR));
    ck_assert(cxr_dicom_sop_class_is_image(CT));
    ck_assert(cxr_dicom_sop_class_is_image("1.2.840.10008.5.1.4.1.1.481.1")); /* RT Image */
    ck_assert(!cxr_dicom_sop_class_is_image(SR));
    ck_assert(!cxr_dicom_sop_class_is_image("1.2.840.10008.5.1.4.1.1.104.1"));
    ck_assert(!cxr_dicom_sop_class_is_image("1.2.840.10008.5.1.4.1.1.66.4"));
    ck_assert(!cxr_dicom_sop_class_is_image("1.2.840.10008.5.1.4.1.1.481.5"));
    ck_assert(!cxr_dicom_sop_class_is_image("1.2.840.10008.1.3.10"));
    ck_assert(!cxr_dicom_sop_class_is_image(""));
    ck_assert(!cxr_dicom_sop_class_is_image(NULL));
}
END_TEST

static Suite *decision_suite(void)
{
    Suite *s = suite_create("triage_decision");
    TCase *tc = tcase_create("decide");
    tcase_add_test(tc, test_mixed_study_lists_every_radiograph);
    tcase_add_test(tc, test_nothing_analysed);
    tcase_add_test(tc, test_due_only_for_new_listed_images);
    tcase_add_test(tc, test_sop_class_is_image);
    tcase_add_test(tc, test_gate_concerns);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(decision_suite()); }
