/* report.c — the self-contained HTML training/evaluation report (see
 * cxr/report.h): sections for the model, the data, the curves, the ROC, the
 * confusion matrix, metrics with bootstrap intervals, thresholds and a
 * thumbnail grid. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cxr/file.h"
#include "cxr/report.h"
#include "cxr/version.h"
#include "report_html.h"

#define MAX_SKIPPED_SHOWN 300

void cxr_train_report_init(struct cxr_train_report *r)
{
    memset(r, 0, sizeof *r);
    r->age_min_years = r->age_max_years = NAN;
    r->target_sensitivity = r->urgent_specificity = NAN;
}

static const char CSS[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;"
    "max-width:1180px;color:#222;padding:0 16px}"
    "h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;border-bottom:1px solid #ccc;"
    "padding-bottom:3px;margin-top:28px}"
    "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 9px;"
    "text-align:right}th{background:#f2f2f2}td.l,th.l{text-align:left}"
    "code{font-size:.9em;word-break:break-all}.sub{color:#555;margin-top:0}"
    ".charts{display:flex;flex-wrap:wrap;gap:18px}"
    "svg.chart{background:#fff;border:1px solid #ddd}"
    "svg .plot{fill:#fafafa;stroke:#888}svg .grid{stroke:#e4e4e4}"
    "svg .tick{font-size:11px;fill:#444}svg .axis{font-size:12px;fill:#222}"
    "svg .legend{font-size:12px;fill:#222}svg .ctitle{font-size:13px;font-weight:bold;fill:#222}"
    ".cm td.hit{background:#dff0d8}.cm td.miss{background:#f8d7da}"
    ".grid{display:flex;flex-wrap:wrap;gap:10px}"
    "figure{margin:0;padding:4px;border:3px solid #5a5;width:min-content;font-size:11px}"
    "figure.wrong{border-color:#d33}figure img{display:block;image-rendering:auto}"
    "figcaption{margin-top:3px;white-space:nowrap}figcaption .n{color:#666;display:block;"
    "max-width:110px;overflow:hidden;text-overflow:ellipsis}"
    ".note{color:#555;font-size:.9em}"
    ".warning{background:#fff3cd;border:2px solid #d39e00;padding:8px 12px;margin:10px 0}";

static const char *class_name(const struct cxr_train_report *r, int32_t k)
{
    if (r->meta && k >= 0 && k < r->meta->num_classes)
        return r->meta->class_names[k];
    return "?";
}

static int32_t positive_class(const struct cxr_train_report *r)
{
    return r->meta ? r->meta->positive_class : 1;
}

static int32_t num_classes(const struct cxr_train_report *r)
{
    return r->meta ? r->meta->num_classes : 2;
}

/* ------------------------------------------------------------------ sections */

static void section_header(struct rpt_buf *b, const struct cxr_train_report *r)
{
    const struct cxr_nn_model_meta *m = r->meta;
    rpt_put(b, "<h1>");
    rpt_esc(b, r->title ? r->title : "cxr-triage report");
    rpt_put(b, "</h1>\n<p class=\"sub\">Model <b>");
    rpt_esc(b, m && m->name[0] ? m->name : "(unnamed)");
    rpt_put(b, "</b> version <b>");
    rpt_esc(b, m && m->version[0] ? m->version : "(none)");
    rpt_put(b, "</b>");
    if (m) {
        rpt_printf(b, ", %s, input %dx%d, %d channel%s", cxr_nn_arch_name(m->arch),
                   (int)m->input_width, (int)m->input_height, (int)m->channels,
                   m->channels == 1 ? "" : "s");
    }
    rpt_put(b, "<br/>SHA-256 <code>");
    rpt_esc(b, r->model_sha256 && r->model_sha256[0] ? r->model_sha256 : "(not saved yet)");
    rpt_put(b, "</code>");
    if (r->model_path) {
        rpt_put(b, "<br/>File <code>");
        rpt_esc(b, r->model_path);
        rpt_put(b, "</code>");
    }
    rpt_put(b, "</p>\n");
    for (int32_t i = 0; r->warnings && i < r->warning_count; i++) {
        rpt_put(b, "<p class=\"warning\"><b>Warning:</b> ");
        rpt_esc(b, r->warnings[i]);
        rpt_put(b, "</p>\n");
    }
    if (r->command) {
        rpt_put(b, "<p class=\"sub\">Command: <code>");
        rpt_esc(b, r->command);
        rpt_put(b, "</code></p>\n");
    }
    if (r->note_count > 0 && r->notes) {
        rpt_put(b, "<table class=\"notes\">\n");
        for (int32_t i = 0; i < r->note_count; i++) {
            rpt_put(b, "<tr><th class=\"l\">");
            rpt_esc(b, r->notes[2 * i]);
            rpt_put(b, "</th><td class=\"l\">");
            rpt_esc(b, r->notes[2 * i + 1]);
            rpt_put(b, "</td></tr>\n");
        }
        rpt_put(b, "</table>\n");
    }
}

static void section_data(struct rpt_buf *b, const struct cxr_train_report *r)
{
    const int32_t nc = num_classes(r);
    rpt_put(b, "<h2 id=\"data\">Data</h2>\n<p>");
    if (r->data_source) {
        rpt_put(b, "Source <code>");
        rpt_esc(b, r->data_source);
        rpt_put(b, "</code>");
        if (r->data_kind) {
            rpt_put(b, " (");
            rpt_esc(b, r->data_kind);
            rpt_put(b, ")");
        }
        rpt_put(b, "<br/>");
    }
    rpt_put(b, "Digest <code>");
    rpt_esc(b, r->data_digest ? r->data_digest : "(none)");
    rpt_put(b, "</code>");
    if (isfinite(r->age_min_years) && isfinite(r->age_max_years)) {
        rpt_put(b, "<br/>Patient ages (DICOM) ");
        rpt_num(b, r->age_min_years, 1);
        rpt_put(b, " to ");
        rpt_num(b, r->age_max_years, 1);
        rpt_put(b, " years");
    }
    rpt_put(b, "</p>\n");
    if (r->split_count > 0 && r->splits) {
        rpt_put(b, "<table class=\"counts\"><tr><th class=\"l\">split</th>");
        for (int32_t k = 0; k < nc; k++) {
            rpt_put(b, "<th>");
            rpt_esc(b, class_name(r, k));
            rpt_put(b, "</th>");
        }
        rpt_put(b, "<th>total</th><th>patient groups</th></tr>\n");
        for (int32_t i = 0; i < r->split_count; i++) {
            const struct cxr_train_report_split *s = &r->splits[i];
            int64_t total = 0;
            rpt_put(b, "<tr><td class=\"l\">");
            rpt_esc(b, s->name);
            rpt_put(b, "</td>");
            for (int32_t k = 0; k < nc; k++) {
                rpt_printf(b, "<td>%lld</td>", (long long)s->counts[k]);
                total += s->counts[k];
            }
            rpt_printf(b, "<td>%lld</td>", (long long)total);
            if (s->groups >= 0)
                rpt_printf(b, "<td>%lld</td></tr>\n", (long long)s->groups);
            else
                rpt_put(b, "<td>n/a</td></tr>\n");
        }
        rpt_put(b, "</table>\n");
    }
    rpt_printf(b, "<p>%zu entr%s skipped", r->skipped_count,
               r->skipped_count == 1 ? "y was" : "ies were");
    if (r->skipped_count == 0) {
        rpt_put(b, ".</p>\n");
        return;
    }
    rpt_put(b, " (not used, with the reason):</p>\n<table class=\"skipped\"><tr><th class=\"l\">"
               "entry</th><th class=\"l\">reason</th><th class=\"l\">kind</th></tr>\n");
    size_t shown = r->skipped_count < MAX_SKIPPED_SHOWN ? r->skipped_count : MAX_SKIPPED_SHOWN;
    for (size_t i = 0; i < shown; i++) {
        const struct cxr_train_skip *k = &r->skipped[i];
        rpt_put(b, "<tr><td class=\"l\"><code>");
        rpt_esc(b, k->name);
        rpt_put(b, "</code></td><td class=\"l\">");
        rpt_esc(b, k->reason);
        rpt_put(b, "</td><td class=\"l\">");
        rpt_esc(b, cxr_status_name(k->status));
        rpt_put(b, "</td></tr>\n");
    }
    rpt_put(b, "</table>\n");
    if (shown < r->skipped_count)
        rpt_printf(b, "<p class=\"note\">... and %zu more.</p>\n", r->skipped_count - shown);
}

static void section_curves(struct rpt_buf *b, const struct cxr_train_report *r)
{
    const int32_t n = r->epoch_count;
    if (n <= 0 || !r->epochs)
        return;
    double *x = malloc((size_t)n * sizeof *x * 5);
    if (!x) {
        b->failed = true;
        return;
    }
    double *tl = x + n, *vl = x + 2 * n, *ta = x + 3 * n, *va = x + 4 * n;
    double lmax = 0, amin = 1;
    for (int32_t i = 0; i < n; i++) {
        const struct cxr_train_report_epoch *e = &r->epochs[i];
        x[i] = e->epoch;
        tl[i] = e->train_loss;
        vl[i] = e->val_loss;
        ta[i] = e->train_accuracy;
        va[i] = e->val_accuracy;
        if (isfinite(tl[i]))
            lmax = fmax(lmax, tl[i]);
        if (isfinite(vl[i]))
            lmax = fmax(lmax, vl[i]);
        if (isfinite(ta[i]))
            amin = fmin(amin, ta[i]);
        if (isfinite(va[i]))
            amin = fmin(amin, va[i]);
    }
    double x0 = fmin(1.0, x[0]), x1 = fmax(x[n - 1], x0 + 1);
    rpt_put(b, "<h2 id=\"curves\">Training</h2>\n<div class=\"charts\">\n");
    struct rpt_series loss[2] = {{x, tl, (size_t)n, "#1f5fa8", "training", false},
                                 {x, vl, (size_t)n, "#d9822b", "validation", true}};
    rpt_svg_lines(b, "Loss per epoch", "epoch", "loss", x0, x1, 0, lmax > 0 ? lmax * 1.05 : 1, true,
                  false, loss, 2, 520, 300);
    struct rpt_series acc[2] = {{x, ta, (size_t)n, "#1f5fa8", "training", false},
                                {x, va, (size_t)n, "#d9822b", "validation", true}};
    double a0 = floor(fmin(amin, 0.9) * 10) / 10;
    rpt_svg_lines(b, "Accuracy per epoch", "epoch", "accuracy", x0, x1, a0, 1.0, true, true, acc, 2,
                  520, 300);
    rpt_put(b, "</div>\n<table class=\"epochs\"><tr><th>epoch</th><th>training loss</th>"
               "<th>training accuracy</th><th>validation loss</th><th>validation accuracy</th>"
               "<th>validation AUC</th><th>learning rate</th><th>seconds</th></tr>\n");
    for (int32_t i = 0; i < n; i++) {
        const struct cxr_train_report_epoch *e = &r->epochs[i];
        rpt_printf(b, "<tr><td>%d</td><td>", (int)e->epoch);
        rpt_num(b, e->train_loss, 4);
        rpt_put(b, "</td><td>");
        rpt_num(b, e->train_accuracy, 4);
        rpt_put(b, "</td><td>");
        rpt_num(b, e->val_loss, 4);
        rpt_put(b, "</td><td>");
        rpt_num(b, e->val_accuracy, 4);
        rpt_put(b, "</td><td>");
        rpt_num(b, e->val_auc, 4);
        rpt_put(b, "</td><td>");
        if (isfinite(e->learning_rate))
            rpt_printf(b, "%.3g", e->learning_rate);
        else
            rpt_put(b, "n/a");
        rpt_put(b, "</td><td>");
        rpt_num(b, e->seconds, 1);
        rpt_put(b, "</td></tr>\n");
    }
    rpt_put(b, "</table>\n");
    free(x);
}

static void metric_row(struct rpt_buf *b, const char *name, const struct cxr_nn_ci *ci)
{
    rpt_put(b, "<tr><th class=\"l\">");
    rpt_esc(b, name);
    rpt_put(b, "</th><td>");
    rpt_num(b, ci->value, 3);
    rpt_put(b, "</td><td>");
    if (isfinite(ci->lo) && isfinite(ci->hi)) {
        rpt_num(b, ci->lo, 3);
        rpt_put(b, " to ");
        rpt_num(b, ci->hi, 3);
    } else {
        rpt_put(b, "n/a");
    }
    rpt_put(b, "</td></tr>\n");
}

/* ROC, confusion matrix, metrics table, thresholds. */
static enum cxr_status section_results(struct rpt_buf *b, const struct cxr_train_report *r,
                                       char *err)
{
    const struct cxr_nn_eval *op = r->operating;
    const int32_t pos = positive_class(r);
    const char *evn = r->eval_name ? r->eval_name : "evaluation";
    rpt_put(b, "<h2 id=\"results\">Results on the ");
    rpt_esc(b, evn);
    rpt_printf(b, " data (%zu cases: %lld ", op->n, (long long)op->positives);
    rpt_esc(b, class_name(r, pos));
    rpt_printf(b, ", %lld ", (long long)op->negatives);
    rpt_esc(b, num_classes(r) == 2 ? class_name(r, 1 - pos) : "other");
    rpt_put(b, ")</h2>\n<div class=\"charts\">\n");

    /* ROC from the cases themselves */
    struct cxr_nn_roc roc;
    memset(&roc, 0, sizeof roc);
    double *scores = malloc((r->case_count ? r->case_count : 1) * sizeof *scores);
    uint8_t *labels = malloc(r->case_count ? r->case_count : 1);
    if (!scores || !labels) {
        free(scores);
        free(labels);
        return cxr_seterr(err, CXR_ERR_NOMEM, "report: out of memory");
    }
    for (size_t i = 0; i < r->case_count; i++) {
        scores[i] = r->cases[i].probability;
        labels[i] = r->cases[i].label == pos;
    }
    char rerr[CXR_ERRLEN];
    if (r->case_count > 0 &&
        cxr_nn_roc_compute(scores, labels, r->case_count, &roc, rerr) == CXR_OK) {
        struct rpt_mark marks[2];
        int nm = 0;
        char l1[96], l2[96];
        snprintf(l1, sizeof l1, "operating point (p >= %.4f)", op->threshold);
        marks[nm++] =
            (struct rpt_mark){1.0 - op->specificity.value, op->sensitivity.value, "#c0392b", l1};
        if (r->urgent) {
            snprintf(l2, sizeof l2, "urgent (p >= %.4f)", r->urgent->threshold);
            marks[nm++] = (struct rpt_mark){1.0 - r->urgent->specificity.value,
                                            r->urgent->sensitivity.value, "#8e44ad", l2};
        }
        rpt_svg_roc(b, roc.fpr, roc.tpr, roc.count, roc.auc, marks, nm, 420);
        cxr_nn_roc_release(&roc);
    } else {
        rpt_put(b, "<p class=\"note\">No ROC curve: ");
        rpt_esc(b, r->case_count ? rerr : "no cases");
        rpt_put(b, "</p>\n");
    }
    free(scores);
    free(labels);

    /* confusion matrix */
    const char *pname = class_name(r, pos);
    char other[48];
    if (num_classes(r) == 2)
        snprintf(other, sizeof other, "%s", class_name(r, 1 - pos));
    else
        snprintf(other, sizeof other, "not %s", pname);
    rpt_put(b, "<div><table class=\"cm\"><caption>Confusion matrix at p &gt;= ");
    rpt_num(b, op->threshold, 4);
    rpt_put(b, "</caption>\n<tr><th></th><th>predicted ");
    rpt_esc(b, pname);
    rpt_put(b, "</th><th>predicted ");
    rpt_esc(b, other);
    rpt_put(b, "</th></tr>\n<tr><th class=\"l\">true ");
    rpt_esc(b, pname);
    rpt_printf(b, "</th><td class=\"hit\">%lld</td><td class=\"miss\">%lld</td></tr>\n",
               (long long)op->cm.tp, (long long)op->cm.fn);
    rpt_put(b, "<tr><th class=\"l\">true ");
    rpt_esc(b, other);
    rpt_printf(b, "</th><td class=\"miss\">%lld</td><td class=\"hit\">%lld</td></tr>\n</table>\n",
               (long long)op->cm.fp, (long long)op->cm.tn);

    /* metrics */
    rpt_put(b, "<table class=\"metrics\"><tr><th class=\"l\">metric</th><th>value</th>"
               "<th>95 % interval</th></tr>\n");
    metric_row(b, "AUC", &op->auc);
    metric_row(b, "sensitivity", &op->sensitivity);
    metric_row(b, "specificity", &op->specificity);
    metric_row(b, "accuracy", &op->accuracy);
    metric_row(b, "PPV (precision)", &op->ppv);
    metric_row(b, "NPV", &op->npv);
    rpt_put(b, "</table>\n");
    if (op->resamples > 0)
        rpt_printf(b,
                   "<p class=\"note\">Percentile bootstrap: %d resamples of the %zu cases "
                   "(seed %llu).</p>\n",
                   (int)op->resamples, op->n, (unsigned long long)op->seed);
    rpt_put(b, "</div>\n</div>\n");

    /* thresholds */
    rpt_put(b, "<h2 id=\"thresholds\">Thresholds</h2>\n<table class=\"thresholds\">"
               "<tr><th class=\"l\">threshold</th><th>p(");
    rpt_esc(b, pname);
    rpt_put(b, ") &gt;=</th><th>sensitivity</th><th>specificity</th><th class=\"l\">how "
               "chosen</th></tr>\n<tr><th class=\"l\">operating (finding reported)</th><td>");
    rpt_num(b, op->threshold, 4);
    rpt_put(b, "</td><td>");
    rpt_num(b, op->sensitivity.value, 3);
    rpt_put(b, "</td><td>");
    rpt_num(b, op->specificity.value, 3);
    rpt_put(b, "</td><td class=\"l\">");
    if (isfinite(r->target_sensitivity))
        rpt_printf(b, "the highest threshold with sensitivity &gt;= %.3f on validation",
                   r->target_sensitivity);
    else
        rpt_put(b, "from the model");
    rpt_put(b, "</td></tr>\n");
    if (r->urgent) {
        rpt_put(b, "<tr><th class=\"l\">urgent (URGENT priority)</th><td>");
        rpt_num(b, r->urgent->threshold, 4);
        rpt_put(b, "</td><td>");
        rpt_num(b, r->urgent->sensitivity.value, 3);
        rpt_put(b, "</td><td>");
        rpt_num(b, r->urgent->specificity.value, 3);
        rpt_put(b, "</td><td class=\"l\">");
        if (isfinite(r->urgent_specificity))
            rpt_printf(b,
                       "the lowest threshold with specificity &gt;= %.3f on validation, never "
                       "below the operating one",
                       r->urgent_specificity);
        else
            rpt_put(b, "from the model");
        rpt_put(b, "</td></tr>\n");
    }
    rpt_put(b, "</table>\n");

    /* calibration: are the probabilities frequencies? */
    if (num_classes(r) == 2 && r->case_count > 0) {
        double *ps = malloc(r->case_count * sizeof *ps);
        uint8_t *ls = malloc(r->case_count);
        struct cxr_nn_reliability rel;
        bool have = false;
        if (ps && ls) {
            for (size_t i = 0; i < r->case_count; i++) {
                ps[i] = r->cases[i].probability;
                ls[i] = r->cases[i].label == pos;
            }
            have = cxr_nn_reliability_compute(ps, ls, r->case_count, 10, &rel, rerr) == CXR_OK;
        }
        free(ps);
        free(ls);
        if (have) {
            rpt_put(b, "<h2 id=\"calibration\">Calibration</h2>\n<table class=\"thresholds\">"
                       "<tr><th class=\"l\">p(");
            rpt_esc(b, pname);
            rpt_put(b, ")</th><th>cases</th><th>mean p</th><th>observed share</th></tr>\n");
            for (int32_t k = 0; k < rel.nbins; k++) {
                if (!rel.count[k])
                    continue;
                rpt_printf(b, "<tr><th class=\"l\">%.1f to %.1f</th><td>%lld</td><td>",
                           (double)k / rel.nbins, (double)(k + 1) / rel.nbins,
                           (long long)rel.count[k]);
                rpt_num(b, rel.mean_score[k], 3);
                rpt_put(b, "</td><td>");
                rpt_num(b, rel.observed[k], 3);
                rpt_put(b, "</td></tr>\n");
            }
            rpt_put(b, "</table>\n<p class=\"note\">Expected calibration error ");
            rpt_num(b, rel.ece, 3);
            rpt_put(b, " (10 equal-width bins): the mean distance between the probability the "
                       "model gives and the share of positives among the cases given it. A "
                       "probability is only a frequency where the two columns agree.</p>\n");
        }
    }
    return CXR_OK;
}

/* ------------------------------------------------------------------ thumbnails */

struct thumb_order {
    size_t index;
    bool wrong;
    double margin; /* |p - threshold| */
    const char *name;
};

static int cmp_thumb(const void *a, const void *b)
{
    const struct thumb_order *x = a, *y = b;
    if (x->wrong != y->wrong)
        return x->wrong ? -1 : 1;
    if (x->margin != y->margin) /* wrong: most confident first; right: closest first */
        return x->wrong ? (x->margin > y->margin ? -1 : 1) : (x->margin < y->margin ? -1 : 1);
    return strcmp(x->name ? x->name : "", y->name ? y->name : "");
}

static enum cxr_status thumbnail(struct rpt_buf *b, const struct cxr_train_report_case *c,
                                 int32_t size, char *err)
{
    int32_t w = c->width, h = c->height;
    double s = (double)size / (w > h ? w : h);
    if (s > 1.0)
        s = 1.0;
    int32_t tw = (int32_t)lround(w * s), th = (int32_t)lround(h * s);
    tw = tw < 1 ? 1 : tw;
    th = th < 1 ? 1 : th;
    uint8_t *small = malloc((size_t)tw * (size_t)th);
    if (!small)
        return cxr_seterr(err, CXR_ERR_NOMEM, "report: out of memory");
    enum cxr_status st =
        cxr_nn_resize_u8(c->pixels, w, h, c->stride ? c->stride : w, small, tw, th, tw);
    void *png = NULL;
    size_t plen = 0;
    if (st == CXR_OK)
        st = cxr_train_image_encode_png(small, tw, th, tw, &png, &plen, err);
    free(small);
    if (st != CXR_OK)
        return st;
    size_t blen = 4 * ((plen + 2) / 3) + 1;
    unsigned char *b64 = malloc(blen);
    if (!b64) {
        free(png);
        return cxr_seterr(err, CXR_ERR_NOMEM, "report: out of memory");
    }
    EVP_EncodeBlock(b64, png, (int)plen);
    free(png);
    rpt_printf(b, "<img width=\"%d\" height=\"%d\" alt=\"\" src=\"data:image/png;base64,", (int)tw,
               (int)th);
    rpt_put(b, (const char *)b64);
    rpt_put(b, "\"/>");
    free(b64);
    return CXR_OK;
}

static enum cxr_status section_thumbnails(struct rpt_buf *b, const struct cxr_train_report *r,
                                          char *err)
{
    if (r->case_count == 0 || !r->cases)
        return CXR_OK;
    const double thr = r->operating->threshold;
    const int32_t pos = positive_class(r);
    const int32_t max = r->max_thumbnails > 0 ? r->max_thumbnails : 60;
    const int32_t size = r->thumbnail_size > 0 ? r->thumbnail_size : 96;
    struct thumb_order *o = malloc(r->case_count * sizeof *o);
    if (!o)
        return cxr_seterr(err, CXR_ERR_NOMEM, "report: out of memory");
    size_t m = 0, wrong = 0;
    for (size_t i = 0; i < r->case_count; i++) {
        const struct cxr_train_report_case *c = &r->cases[i];
        bool pred = c->probability >= thr, truth = c->label == pos;
        wrong += pred != truth;
        if (!c->pixels || c->width < 1 || c->height < 1)
            continue;
        o[m++] = (struct thumb_order){i, pred != truth, fabs(c->probability - thr), c->name};
    }
    qsort(o, m, sizeof *o, cmp_thumb);
    size_t shown = m < (size_t)max ? m : (size_t)max;
    rpt_printf(b,
               "<h2 id=\"predictions\">Predictions against labels</h2>\n<p>%zu of %zu cases "
               "misclassified at p &gt;= ",
               wrong, r->case_count);
    rpt_num(b, thr, 4);
    rpt_printf(b,
               ". Showing %zu: misclassified first (most confident first, red), then correct "
               "cases nearest the threshold (green).</p>\n<div class=\"grid\">\n",
               shown);
    enum cxr_status st = CXR_OK;
    for (size_t k = 0; k < shown && st == CXR_OK; k++) {
        const struct cxr_train_report_case *c = &r->cases[o[k].index];
        bool pred = c->probability >= thr;
        rpt_printf(b, "<figure class=\"%s\">", o[k].wrong ? "wrong" : "right");
        st = thumbnail(b, c, size, err);
        rpt_put(b, "<figcaption><span class=\"n\">");
        rpt_esc(b, c->name);
        rpt_put(b, "</span>label ");
        rpt_esc(b, class_name(r, c->label));
        rpt_put(b, "<br/>predicted ");
        if (num_classes(r) == 2)
            rpt_esc(b, class_name(r, pred ? pos : 1 - pos));
        else {
            rpt_put(b, pred ? "" : "not ");
            rpt_esc(b, class_name(r, pos));
        }
        rpt_put(b, "<br/>p = ");
        rpt_num(b, c->probability, 3);
        rpt_put(b, "</figcaption></figure>\n");
    }
    rpt_put(b, "</div>\n");
    free(o);
    return st;
}

/* ------------------------------------------------------------------ document */

enum cxr_status cxr_train_report_render(const struct cxr_train_report *r, char **html, size_t *len,
                                        char *err)
{
    *html = NULL;
    if (len)
        *len = 0;
    if (!r || !r->operating)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "report: no metrics at the operating threshold");
    const int32_t nc = num_classes(r);
    if (nc < 1 || nc > CXR_NN_MAX_CLASSES || positive_class(r) < 0 || positive_class(r) >= nc)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "report: bad class metadata");
    for (size_t i = 0; i < r->case_count; i++)
        if (r->cases[i].label < 0 || r->cases[i].label >= nc)
            return cxr_seterr(err, CXR_ERR_INVALID_ARG, "report: case %zu has class %d of %d", i,
                              (int)r->cases[i].label, (int)nc);

    struct rpt_buf b = {0};
    rpt_put(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>");
    rpt_esc(&b, r->title ? r->title : "cxr-triage report");
    if (r->meta && r->meta->name[0]) {
        rpt_put(&b, " - ");
        rpt_esc(&b, r->meta->name);
    }
    rpt_put(&b, "</title>\n<style>");
    rpt_put(&b, CSS);
    rpt_put(&b, "</style>\n</head>\n<body>\n");
    section_header(&b, r);
    section_data(&b, r);
    section_curves(&b, r);
    enum cxr_status st = section_results(&b, r, err);
    if (st == CXR_OK)
        st = section_thumbnails(&b, r, err);
    if (st == CXR_OK) {
        char when[32];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        rpt_printf(&b,
                   "<p class=\"note\">Generated by %s %s at %s. A triage aid, not a "
                   "diagnosis.</p>\n</body>\n</html>\n",
                   CXR_PRODUCT, CXR_VERSION, when);
    }
    if (st == CXR_OK && b.failed)
        st = cxr_seterr(err, CXR_ERR_LIMIT, "report: out of memory or larger than %u MiB",
                        RPT_MAX_BYTES >> 20);
    if (st != CXR_OK) {
        free(b.p);
        return st;
    }
    *html = b.p;
    if (len)
        *len = b.n;
    return CXR_OK;
}

enum cxr_status cxr_train_report_write(const struct cxr_train_report *r, const char *path,
                                       char *err)
{
    char *html = NULL;
    size_t len = 0;
    enum cxr_status st = cxr_train_report_render(r, &html, &len, err);
    if (st != CXR_OK)
        return st;
    st = cxr_file_write_atomic(path, html, len, 0644, err);
    free(html);
    return st;
}
