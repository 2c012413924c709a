/* check_train_report.c — the HTML training/evaluation report: contains the
 * numbers it was given, escapes every text, references nothing outside the
 * file, parses as XML (xmllint) with the expected charts and thumbnails, and
 * is written atomically. */
#include <check.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/dataset.h"
#include "cxr/nn_train.h"
#include "cxr/report.h"
#include "test_util.h"

enum { NCASES = 40, IMG = 50 };

struct fixture {
    struct cxr_nn_model_meta meta;
    struct cxr_train_report r;
    struct cxr_train_report_case cases[NCASES];
    char names[NCASES][32];
    uint8_t pixels[NCASES][IMG * IMG];
    double scores[NCASES];
    uint8_t labels[NCASES];
    struct cxr_nn_eval op, urg;
    struct cxr_train_report_epoch epochs[3];
    struct cxr_train_report_split splits[2];
    struct cxr_train_skip skipped[2];
    const char *notes[4];
    const char *warnings[2];
};

static struct fixture F;

/* A report with known numbers and hostile text everywhere text goes. */
static void make_fixture(void)
{
    memset(&F, 0, sizeof F);
    cxr_nn_model_meta_defaults(&F.meta, CXR_NN_ARCH_RESNET18);
    snprintf(F.meta.name, sizeof F.meta.name, "cxr-<script>alert(1)</script>&\"'");
    snprintf(F.meta.version, sizeof F.meta.version, "2026.11.1");
    struct cxr_nn_rng rng;
    cxr_nn_rng_seed(&rng, 5);
    for (int i = 0; i < NCASES; i++) {
        F.labels[i] = i % 3 != 0; /* 26 positive, 14 negative */
        F.scores[i] =
            fmin(1.0, fmax(0.0, (F.labels[i] ? 0.65 : 0.35) + 0.25 * cxr_nn_rng_normal(&rng)));
        snprintf(F.names[i], sizeof F.names[i], "%s/case<%02d>.png",
                 F.labels[i] ? "PNEUMONIA" : "NORMAL", i);
        for (int p = 0; p < IMG * IMG; p++)
            F.pixels[i][p] = (uint8_t)(p * (i + 1));
        F.cases[i] = (struct cxr_train_report_case){
            F.names[i], F.labels[i], F.scores[i], F.pixels[i], IMG, IMG, IMG};
    }
    ck_assert_int_eq(cxr_nn_evaluate(F.scores, F.labels, NCASES, 0.5, 1000, 3, &F.op, NULL),
                     CXR_OK);
    ck_assert_int_eq(cxr_nn_evaluate(F.scores, F.labels, NCASES, 0.8, 1000, 3, &F.urg, NULL),
                     CXR_OK);
    for (int e = 0; e < 3; e++)
        F.epochs[e] = (struct cxr_train_report_epoch){e + 1,
                                                      0.6931 - 0.1234 * e,
                                                      0.70 + 0.05 * e,
                                                      0.7007 - 0.1 * e,
                                                      0.69 + 0.04 * e,
                                                      0.80 + 0.05 * e,
                                                      1e-3,
                                                      61.5};
    F.splits[0] = (struct cxr_train_report_split){"train", {1006, 2906}, 2135};
    F.splits[1] = (struct cxr_train_report_split){"validation", {335, 969}, -1};
    F.skipped[0] = (struct cxr_train_skip){"NORMAL/<img src=\"/etc/evil\">.png", CXR_ERR_NN_IMAGE,
                                           "JPEG: Premature end & <b>"};
    F.skipped[1] = (struct cxr_train_skip){"bad\xff\xfe-utf8\x01.png", CXR_ERR_DICOM_GATE,
                                           "lateral view (ViewPosition LL)"};
    F.notes[0] = "seed";
    F.notes[1] = "20261125";
    F.notes[2] = "machine";
    F.notes[3] = "2 cores <fast>";

    struct cxr_train_report *r = &F.r;
    cxr_train_report_init(r);
    r->title = "Training report";
    r->command = "cxr-triage train --data 'x y' --report out.html";
    r->meta = &F.meta;
    r->model_sha256 = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12";
    r->data_source = "../shared/data/cxr-kermany/train";
    r->data_kind = "directory";
    r->data_digest = "sha256:8f2d7a5c3cdbc9aeb8d74dd13941c57146baec8a2926043d17e8990b7dadfe42";
    r->splits = F.splits;
    r->split_count = 2;
    r->skipped = F.skipped;
    r->skipped_count = 2;
    r->epochs = F.epochs;
    r->epoch_count = 3;
    r->eval_name = "validation";
    r->cases = F.cases;
    r->case_count = NCASES;
    r->operating = &F.op;
    r->urgent = &F.urg;
    r->target_sensitivity = 0.95;
    r->urgent_specificity = 0.95;
    r->max_thumbnails = 12;
    r->notes = F.notes;
    r->note_count = 2;
    F.warnings[0] = "weak model: AUC 0.31 <= 0.6";
    F.warnings[1] = "12 of 16 images <trained on>";
    r->warnings = F.warnings;
    r->warning_count = 2;
}

static char *render(size_t *len)
{
    char *html = NULL;
    char err[CXR_ERRLEN] = "";
    ck_assert_msg(cxr_train_report_render(&F.r, &html, len, err) == CXR_OK, "%s", err);
    ck_assert_ptr_nonnull(html);
    ck_assert_uint_eq(strlen(html), *len);
    return html;
}

static void must_contain(const char *html, const char *what)
{
    ck_assert_msg(strstr(html, what) != NULL, "report lacks '%s'", what);
}

static size_t count(const char *html, const char *what)
{
    size_t n = 0;
    for (const char *p = html; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

START_TEST(report_holds_the_numbers_it_was_given)
{
    make_fixture();
    size_t len;
    char *html = render(&len);
    char buf[128];
    /* metrics with intervals, as the table prints them (3 decimals) */
    const struct cxr_nn_ci *cis[] = {&F.op.auc,      &F.op.sensitivity, &F.op.specificity,
                                     &F.op.accuracy, &F.op.ppv,         &F.op.npv};
    for (size_t i = 0; i < sizeof cis / sizeof cis[0]; i++) {
        snprintf(buf, sizeof buf, "<td>%.3f</td><td>%.3f to %.3f</td>", cis[i]->value, cis[i]->lo,
                 cis[i]->hi);
        must_contain(html, buf);
    }
    /* AUC of the ROC from the cases themselves */
    snprintf(buf, sizeof buf, "ROC curve, AUC %.3f", cxr_nn_auc(F.scores, F.labels, NCASES));
    must_contain(html, buf);
    /* confusion matrix at the operating threshold */
    snprintf(buf, sizeof buf, "<td class=\"hit\">%lld</td><td class=\"miss\">%lld</td>",
             (long long)F.op.cm.tp, (long long)F.op.cm.fn);
    must_contain(html, buf);
    snprintf(buf, sizeof buf, "<td class=\"miss\">%lld</td><td class=\"hit\">%lld</td>",
             (long long)F.op.cm.fp, (long long)F.op.cm.tn);
    must_contain(html, buf);
    must_contain(html, "Confusion matrix at p &gt;= 0.5000");
    /* thresholds */
    must_contain(html, "<td>0.5000</td>");
    must_contain(html, "<td>0.8000</td>");
    must_contain(html, "sensitivity &gt;= 0.950");
    /* curves: per-epoch values in the table, two charts */
    must_contain(html, "<td>0.6931</td>");
    must_contain(html, "<td>0.4463</td>"); /* 0.6931 - 2 * 0.1234 */
    must_contain(html, "<td>0.7700</td>"); /* val accuracy, epoch 3 */
    must_contain(html, "Loss per epoch");
    must_contain(html, "Accuracy per epoch");
    /* data summary */
    must_contain(html, "<td>1006</td><td>2906</td><td>3912</td><td>2135</td>");
    must_contain(html, "<td>335</td><td>969</td><td>1304</td><td>n/a</td>");
    must_contain(html, F.r.data_digest);
    must_contain(html, F.r.model_sha256);
    must_contain(html, "2026.11.1");
    must_contain(html, "2 entries were skipped");
    must_contain(html, "CXR_ERR_DICOM_GATE");
    must_contain(html, "lateral view (ViewPosition LL)");
    must_contain(html, "20261125");
    /* warnings, each in a box of its own, under the title, escaped */
    ck_assert_uint_eq(count(html, "<p class=\"warning\"><b>Warning:</b> "), 2);
    must_contain(html, "<b>Warning:</b> weak model: AUC 0.31 &lt;= 0.6</p>");
    must_contain(html, "<b>Warning:</b> 12 of 16 images &lt;trained on&gt;</p>");
    ck_assert(strstr(html, "<b>Warning:</b>") < strstr(html, "<h2"));
    /* thumbnails: as many as asked, misclassified first */
    ck_assert_uint_eq(count(html, "<figure "), 12);
    ck_assert_uint_eq(count(html, "src=\"data:image/png;base64,"), 12);
    size_t wrong = 0;
    for (int i = 0; i < NCASES; i++)
        wrong += (F.scores[i] >= 0.5) != (F.labels[i] == 1);
    ck_assert_uint_gt(wrong, 0);
    snprintf(buf, sizeof buf, "%zu of %d cases misclassified", wrong, NCASES);
    must_contain(html, buf);
    const char *first = strstr(html, "<figure ");
    ck_assert(strncmp(first, "<figure class=\"wrong\">", 22) == 0);
    if (wrong < 12) { /* then the correct ones */
        ck_assert_uint_eq(count(html, "<figure class=\"wrong\">"), wrong);
    }
    free(html);
}
END_TEST

START_TEST(report_is_self_contained_and_escaped)
{
    make_fixture();
    size_t len;
    char *html = render(&len);
    /* nothing reaches outside the file */
    ck_assert_ptr_null(strstr(html, "http"));
    ck_assert_ptr_null(strstr(html, "src=\"/"));
    ck_assert_ptr_null(strstr(html, "href="));
    ck_assert_ptr_null(strstr(html, "url("));
    ck_assert_ptr_null(strstr(html, "@import"));
    ck_assert_ptr_null(strstr(html, "<script"));
    ck_assert_ptr_null(strstr(html, "<img src"));
    for (const char *p = html; (p = strstr(p, "src=\"")); p += 5)
        ck_assert(strncmp(p + 5, "data:image/png;base64,", 22) == 0);
    /* hostile text arrives escaped */
    must_contain(html, "cxr-&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;");
    must_contain(html, "NORMAL/&lt;img src=&quot;");
    must_contain(html, "JPEG: Premature end &amp; &lt;b&gt;");
    must_contain(html, "/case&lt;");
    must_contain(html, "2 cores &lt;fast&gt;");
    must_contain(html, "bad?"
                       "?-utf8?.png"); /* invalid UTF-8 and controls replaced */
    /* one thumbnail decodes back to a PNG of at most 96 px */
    const char *p = strstr(html, "base64,") + 7;
    const char *q = strchr(p, '"');
    size_t n = (size_t)(q - p);
    unsigned char *raw = malloc(n);
    int got = EVP_DecodeBlock(raw, (const unsigned char *)p, (int)n);
    ck_assert_int_gt(got, 8);
    while (n > 0 && p[n - 1] == '=') { /* DecodeBlock counts padding as zero bytes */
        got--;
        n--;
    }
    uint8_t *px;
    int32_t w, h;
    ck_assert_int_eq(cxr_train_image_decode(raw, (size_t)got, &px, &w, &h, NULL), CXR_OK);
    ck_assert(w == IMG && h == IMG); /* 50 px images are not enlarged */
    free(px);
    free(raw);
    free(html);
}
END_TEST

/* xmllint: the whole document is well-formed XML; the charts and figures
 * are where they should be. */
START_TEST(report_parses_with_xmllint)
{
    if (cxr_test_sh("command -v xmllint >/dev/null 2>&1") != 0) {
        printf("SKIP xmllint checks: xmllint not installed\n");
        return;
    }
    make_fixture();
    char *dir = cxr_test_tmpdir();
    char path[4096], out[4096];
    snprintf(path, sizeof path, "%s/report.html", dir);
    snprintf(out, sizeof out, "%s/out.txt", dir);
    char err[CXR_ERRLEN];
    ck_assert_int_eq(cxr_train_report_write(&F.r, path, err), CXR_OK);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0644);
    ck_assert_int_eq(cxr_test_sh("ls '%s' | grep -c tmp >/dev/null", dir), 1); /* no temp left */

    ck_assert_int_eq(cxr_test_sh("xmllint --noout --nonet '%s' 2>'%s'", path, out), 0);
    /* libxml2's HTML parser knows HTML 4 only: it may name the HTML5 and
     * SVG elements unknown, and must report nothing else */
    ck_assert_int_eq(cxr_test_sh("xmllint --html --noout --nonet '%s' 2>'%s'", path, out), 0);
    ck_assert_int_eq(cxr_test_sh("! grep -E 'error|warning' '%s' | grep -v -E 'error : Tag "
                                 "(svg|figure|figcaption|title|line|polyline|circle|rect|text) "
                                 "invalid$' | grep -q .",
                                 out),
                     0);
    ck_assert_int_eq(cxr_test_sh("test \"$(xmllint --xpath 'count(//svg)' '%s')\" = 3", path), 0);
    ck_assert_int_eq(cxr_test_sh("test \"$(xmllint --xpath 'count(//figure)' '%s')\" = 12", path),
                     0);
    ck_assert_int_eq(
        cxr_test_sh("test \"$(xmllint --xpath 'count(//svg//polyline)' '%s')\" -ge 5", path), 0);
    ck_assert_int_eq(
        cxr_test_sh("xmllint --xpath 'string(//h1)' '%s' | grep -qx 'Training report'", path), 0);

    /* evaluate: no epochs, no urgent threshold → no curves, still valid */
    F.r.epoch_count = 0;
    F.r.urgent = NULL;
    F.r.title = "Evaluation report";
    F.r.eval_name = "test";
    ck_assert_int_eq(cxr_train_report_write(&F.r, path, err), CXR_OK);
    ck_assert_int_eq(cxr_test_sh("xmllint --noout --nonet '%s'", path), 0);
    ck_assert_int_eq(cxr_test_sh("test \"$(xmllint --xpath 'count(//svg)' '%s')\" = 1", path), 0);
    ck_assert_int_eq(cxr_test_sh("! grep -q 'Loss per epoch' '%s'", path), 0);
    ck_assert_int_eq(cxr_test_sh("grep -q 'Results on the test data' '%s'", path), 0);
    /* the calibration table: one row per non-empty bin, cases summing to the cases */
    ck_assert_int_eq(cxr_test_sh("grep -q 'id=\"calibration\"' '%s'", path), 0);
    ck_assert_int_eq(cxr_test_sh("grep -q 'Expected calibration error' '%s'", path), 0);

    /* a folder that does not exist: an error, nothing written */
    snprintf(path, sizeof path, "%s/no/such/report.html", dir);
    ck_assert_int_eq(cxr_train_report_write(&F.r, path, err), CXR_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "no/such"));
    cxr_test_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(report_refuses_bad_input)
{
    make_fixture();
    char *html = (char *)1;
    size_t len;
    char err[CXR_ERRLEN];
    F.r.operating = NULL;
    ck_assert_int_eq(cxr_train_report_render(&F.r, &html, &len, err), CXR_ERR_INVALID_ARG);
    ck_assert_ptr_null(html);
    F.r.operating = &F.op;
    F.cases[3].label = 7;
    ck_assert_int_eq(cxr_train_report_render(&F.r, &html, &len, err), CXR_ERR_INVALID_ARG);
    ck_assert_ptr_null(html);
    /* one class only among the cases: no ROC, but a report */
    F.cases[3].label = 1;
    for (int i = 0; i < NCASES; i++)
        F.cases[i].label = 1;
    ck_assert_int_eq(cxr_train_report_render(&F.r, &html, &len, err), CXR_OK);
    ck_assert_ptr_nonnull(strstr(html, "No ROC curve"));
    free(html);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("triage_report");
    TCase *t = tcase_create("report");
    tcase_add_test(t, report_holds_the_numbers_it_was_given);
    tcase_add_test(t, report_is_self_contained_and_escaped);
    tcase_add_test(t, report_parses_with_xmllint);
    tcase_add_test(t, report_refuses_bad_input);
    suite_add_tcase(s, t);
    return s;
}

int main(void) { return cxr_test_run(suite()); }
