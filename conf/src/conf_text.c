/* conf_text.c — small text helpers of the conf module: a growable buffer for
 * the generators, error formatting, and locale-independent number text. */
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_internal.h"
#include "conf_text.h"

#define CONF_BUF_CAP (4u << 20) /* generated documents are a few KB; a hard cap */

static bool buf_reserve(struct conf_buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    if (cap > CONF_BUF_CAP) {
        b->failed = true;
        return false;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void conf_buf_printf(struct conf_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n)) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void conf_buf_puts(struct conf_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (!buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n + 1);
    b->len += n;
}

void conf_buf_xml_escape(struct conf_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': conf_buf_puts(b, "&amp;"); break;
        case '<': conf_buf_puts(b, "&lt;"); break;
        case '>': conf_buf_puts(b, "&gt;"); break;
        case '"': conf_buf_puts(b, "&quot;"); break;
        default: {
            char c[2] = {*s, '\0'};
            conf_buf_puts(b, c);
        }
        }
    }
}

void conf_err(char *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, CXR_ERRLEN, fmt, ap);
    va_end(ap);
}

const char *conf_quote(const char *text, char *buf, size_t len)
{
    size_t i = 0, j = 0;
    const size_t keep = len > 4 ? len - 4 : 0; /* room for "..." and NUL */
    for (; text[i] && j < keep; i++)
        buf[j++] = ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) ? '?' : text[i];
    if (text[i] && len >= 4) {
        memcpy(buf + j, "...", 3);
        j += 3;
    }
    if (len)
        buf[j < len ? j : len - 1] = '\0';
    return buf;
}

/* The "C" locale, so that numbers read and print with a '.' whatever the
 * host program did with setlocale() (the Orthanc plugin lives in a host). */
static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

double conf_strtod(const char *s, char **end)
{
    pthread_once(&c_locale_once, c_locale_init);
    if (!c_locale)
        return strtod(s, end);
    return strtod_l(s, end, c_locale);
}

int conf_format_fixed(char *buf, size_t len, int decimals, double v)
{
    pthread_once(&c_locale_once, c_locale_init);
    locale_t old = c_locale ? uselocale(c_locale) : (locale_t)0;
    int n = snprintf(buf, len, "%.*f", decimals, v);
    if (old)
        uselocale(old);
    return n;
}
