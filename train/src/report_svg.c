/* report_svg.c — text buffer, escaping and inline SVG charts for the HTML
 * report. The SVG is written without a namespace attribute (HTML5 puts
 * inline <svg> in the SVG namespace by itself), so the document holds no
 * URL at all. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report_html.h"

/* ------------------------------------------------------------------ buffer */

void rpt_putn(struct rpt_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1 << 16;
        while (nc < b->n + n + 1)
            nc *= 2;
        if (nc > RPT_MAX_BYTES) {
            b->failed = true;
            return;
        }
        char *np = realloc(b->p, nc);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void rpt_put(struct rpt_buf *b, const char *s) { rpt_putn(b, s, strlen(s)); }

void rpt_printf(struct rpt_buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        rpt_putn(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    rpt_putn(b, big, (size_t)n);
    free(big);
}

/* Length of a valid UTF-8 sequence at s (1..4), 0 when invalid. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0xFFFE || cp == 0xFFFF)
        return 0;
    return n;
}

void rpt_esc(struct rpt_buf *b, const char *s)
{
    if (!s)
        return;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        const unsigned char *run = p;
        while (*p && *p >= 0x20 && *p < 0x80 && *p != '&' && *p != '<' && *p != '>' && *p != '"' &&
               *p != '\'')
            p++;
        rpt_putn(b, (const char *)run, (size_t)(p - run));
        if (!*p)
            break;
        switch (*p) {
        case '&':
            rpt_put(b, "&amp;");
            p++;
            continue;
        case '<':
            rpt_put(b, "&lt;");
            p++;
            continue;
        case '>':
            rpt_put(b, "&gt;");
            p++;
            continue;
        case '"':
            rpt_put(b, "&quot;");
            p++;
            continue;
        case '\'':
            rpt_put(b, "&#39;");
            p++;
            continue;
        default: break;
        }
        if (*p < 0x20) {
            rpt_put(b, *p == '\t' || *p == '\n' ? " " : "?");
            p++;
            continue;
        }
        size_t n = utf8_len(p);
        if (n == 0) {
            rpt_put(b, "?");
            p++;
        } else {
            rpt_putn(b, (const char *)p, n);
            p += n;
        }
    }
}

void rpt_num(struct rpt_buf *b, double v, int digits)
{
    if (!isfinite(v))
        rpt_put(b, "n/a");
    else
        rpt_printf(b, "%.*f", digits, v);
}

/* ------------------------------------------------------------------ charts */

struct frame {
    double x0, x1, y0, y1;
    double left, top, w, h; /* plot area in px */
};

static double fx(const struct frame *f, double x)
{
    return f->left + (x - f->x0) / (f->x1 - f->x0) * f->w;
}

static double fy(const struct frame *f, double y)
{
    return f->top + (1.0 - (y - f->y0) / (f->y1 - f->y0)) * f->h;
}

/* A tick step of 1, 2 or 5 times a power of ten giving about `want` ticks. */
static double nice_step(double span, int want)
{
    if (!(span > 0))
        return 1;
    double raw = span / want, p = pow(10.0, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void axes(struct rpt_buf *b, const struct frame *f, const char *xlabel, const char *ylabel,
                 bool integer_x)
{
    rpt_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"plot\"/>\n",
               f->left, f->top, f->w, f->h);
    double sx = nice_step(f->x1 - f->x0, 6);
    if (integer_x && sx < 1)
        sx = 1;
    double sy = nice_step(f->y1 - f->y0, 5);
    for (double t = ceil(f->x0 / sx) * sx; t <= f->x1 + 1e-9 * sx; t += sx) {
        double x = fx(f, t);
        rpt_printf(b,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"middle\">%g</text>\n",
                   x, f->top, x, f->top + f->h, x, f->top + f->h + 14, fabs(t) < 1e-12 ? 0 : t);
    }
    for (double t = ceil(f->y0 / sy) * sy; t <= f->y1 + 1e-9 * sy; t += sy) {
        double y = fy(f, t);
        rpt_printf(b,
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%g</text>\n",
                   f->left, y, f->left + f->w, y, f->left - 5, y + 4, fabs(t) < 1e-12 ? 0 : t);
    }
    rpt_printf(b, "<text x=\"%.1f\" y=\"%.1f\" class=\"axis\" text-anchor=\"middle\">",
               f->left + f->w / 2, f->top + f->h + 32);
    rpt_esc(b, xlabel);
    rpt_printf(b,
               "</text>\n<text x=\"%.1f\" y=\"%.1f\" class=\"axis\" text-anchor=\"middle\" "
               "transform=\"rotate(-90 %.1f %.1f)\">",
               f->left - 38, f->top + f->h / 2, f->left - 38, f->top + f->h / 2);
    rpt_esc(b, ylabel);
    rpt_put(b, "</text>\n");
}

static void polyline(struct rpt_buf *b, const struct frame *f, const double *x, const double *y,
                     size_t n, const char *color, bool dashed)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (!isfinite(x[i]) || !isfinite(y[i])))
            i++;
        size_t start = i;
        while (i < n && isfinite(x[i]) && isfinite(y[i]))
            i++;
        if (i == start)
            break;
        if (i - start == 1) {
            rpt_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                       fx(f, x[start]), fy(f, y[start]), color);
            continue;
        }
        rpt_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color,
                   dashed ? " stroke-dasharray=\"6 4\"" : "");
        for (size_t k = start; k < i; k++)
            rpt_printf(b, "%s%.1f,%.1f", k == start ? "" : " ", fx(f, x[k]), fy(f, y[k]));
        rpt_put(b, "\"/>\n");
    }
}

static void legend(struct rpt_buf *b, double x, double y, const char *color, bool dashed,
                   const char *label)
{
    rpt_printf(b,
               "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
               "stroke-width=\"2\"%s/><text x=\"%.1f\" y=\"%.1f\" class=\"legend\">",
               x, y, x + 22, y, color, dashed ? " stroke-dasharray=\"6 4\"" : "", x + 27, y + 4);
    rpt_esc(b, label);
    rpt_put(b, "</text>\n");
}

void rpt_svg_lines(struct rpt_buf *b, const char *title, const char *xlabel, const char *ylabel,
                   double x0, double x1, double y0, double y1, bool integer_x, bool legend_low,
                   const struct rpt_series *s, int ns, int width, int height)
{
    if (!(x1 > x0))
        x1 = x0 + 1;
    if (!(y1 > y0))
        y1 = y0 + 1;
    struct frame f = {x0, x1, y0, y1, 56, 28, width - 56 - 16, height - 28 - 44};
    rpt_printf(b,
               "<svg class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\"><title>",
               width, height, width, height);
    rpt_esc(b, title);
    rpt_printf(b, "</title>\n<text x=\"%d\" y=\"17\" class=\"ctitle\">", 56);
    rpt_esc(b, title);
    rpt_put(b, "</text>\n");
    axes(b, &f, xlabel, ylabel, integer_x);
    for (int i = 0; i < ns; i++) {
        polyline(b, &f, s[i].x, s[i].y, s[i].n, s[i].color, s[i].dashed);
        double ly = legend_low ? f.top + f.h - 14 - 16.0 * (ns - 1 - i) : f.top + 14 + 16.0 * i;
        legend(b, f.left + f.w - 150, ly, s[i].color, s[i].dashed, s[i].label);
    }
    rpt_put(b, "</svg>\n");
}

void rpt_svg_roc(struct rpt_buf *b, const double *fpr, const double *tpr, size_t n, double auc,
                 const struct rpt_mark *marks, int nmarks, int size)
{
    struct frame f = {0, 1, 0, 1, 56, 28, size - 56 - 16, size - 28 - 44};
    rpt_printf(b,
               "<svg class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\"><title>ROC curve</title>\n",
               size, size, size, size);
    rpt_put(b, "<text x=\"56\" y=\"17\" class=\"ctitle\">ROC curve, AUC ");
    rpt_num(b, auc, 3);
    rpt_put(b, "</text>\n");
    axes(b, &f, "1 - specificity (false positive rate)", "sensitivity (true positive rate)", false);
    rpt_printf(b,
               "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
               "stroke-dasharray=\"4 4\"/>\n",
               fx(&f, 0), fy(&f, 0), fx(&f, 1), fy(&f, 1));
    polyline(b, &f, fpr, tpr, n, "#1f5fa8", false);
    for (int i = 0; i < nmarks; i++) {
        if (!isfinite(marks[i].fpr) || !isfinite(marks[i].tpr))
            continue;
        double x = fx(&f, marks[i].fpr), y = fy(&f, marks[i].tpr);
        rpt_printf(b,
                   "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"none\" stroke=\"%s\" "
                   "stroke-width=\"2.5\"/>\n",
                   x, y, marks[i].color);
        rpt_printf(b,
                   "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"none\" stroke=\"%s\" "
                   "stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.1f\" class=\"legend\">",
                   f.left + f.w - 195, f.top + f.h - 12 - 16.0 * i, marks[i].color,
                   f.left + f.w - 185, f.top + f.h - 8 - 16.0 * i); /* room for "operating
                                                                     * point (p >= 0.8323)" */
        rpt_esc(b, marks[i].label);
        rpt_put(b, "</text>\n");
    }
    rpt_put(b, "</svg>\n");
}
