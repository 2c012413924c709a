/* report_html.h (internal to train) — the growable text buffer, escaping
 * and SVG charts the report is built from (report_svg.c), shared with
 * report.c. */
#ifndef CXR_TRIAGE_REPORT_HTML_H
#define CXR_TRIAGE_REPORT_HTML_H

#include <stdbool.h>
#include <stddef.h>

#define RPT_MAX_BYTES (512u << 20)

struct rpt_buf {
    char *p;
    size_t n, cap;
    bool failed; /* out of memory or past RPT_MAX_BYTES: later writes are dropped */
};

void rpt_put(struct rpt_buf *b, const char *s);
void rpt_putn(struct rpt_buf *b, const char *s, size_t n);
void rpt_printf(struct rpt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Text escaped for HTML/XML element content and attribute values: & < > "
 * ' as entities, control characters and invalid UTF-8 as '?'. NULL → "". */
void rpt_esc(struct rpt_buf *b, const char *s);
/* A number with `digits` decimals, or "n/a" for NaN/inf. */
void rpt_num(struct rpt_buf *b, double v, int digits);

/* A data series of a line chart; NaN y values break the line. */
struct rpt_series {
    const double *x, *y;
    size_t n;
    const char *color; /* CSS colour */
    const char *label; /* legend text (escaped) */
    bool dashed;
};

/* A line chart (width x height px) of the series over [x0,x1] x [y0,y1],
 * with axes, ticks, axis labels and a legend (top right, or bottom right
 * with legend_low, away from curves that rise). integer_x: ticks on whole
 * numbers (epochs). */
void rpt_svg_lines(struct rpt_buf *b, const char *title, const char *xlabel, const char *ylabel,
                   double x0, double x1, double y0, double y1, bool integer_x, bool legend_low,
                   const struct rpt_series *s, int ns, int width, int height);

/* A marked point on the ROC chart. */
struct rpt_mark {
    double fpr, tpr;
    const char *color;
    const char *label;
};
/* The ROC curve (square), the chance diagonal, and marks. */
void rpt_svg_roc(struct rpt_buf *b, const double *fpr, const double *tpr, size_t n, double auc,
                 const struct rpt_mark *marks, int nmarks, int size);

#endif
