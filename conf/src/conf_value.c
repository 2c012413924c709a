/* conf_value.c — one key's value: parse text into the struct, format it back,
 * describe what is accepted, free it; and the table's self-check. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf_internal.h"
#include "conf_text.h"

#define THRESHOLD_MAXLEN 26 /* "0." and 24 decimals: enough for any probability */
#define CS_MAXLEN        16 /* DICOM CS value length (PS3.5 6.2) */
#define UID_MAXLEN       64

static void *field(void *base, const struct conf_key *key) { return (char *)base + key->offset; }
static const void *cfield(const void *base, const struct conf_key *key)
{
    return (const char *)base + key->offset;
}

/* UTF-8 characters in s (continuation bytes do not count). */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static bool is_cs_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
static bool is_name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}
static bool is_xml_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* A DICOM UID (PS3.5 9.1): numeric components without leading zeros,
 * separated by single dots, at most 64 characters. */
static bool is_uid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > UID_MAXLEN)
        return false;
    const char *comp = s;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t clen = (size_t)(p - comp);
            if (clen == 0 || (clen > 1 && comp[0] == '0'))
                return false;
            if (*p == '\0')
                return true;
            comp = p + 1;
        } else if (*p < '0' || *p > '9') {
            return false;
        }
    }
}

const char *conf_key_expected(const struct conf_key *key, char *buf, size_t len)
{
    const char *nonempty = key->min > 0 ? "non-empty " : "";
    switch (key->type) {
    case CONF_T_TEXT:
        snprintf(buf, len, "%stext of at most %lld characters", nonempty, (long long)key->max);
        break;
    case CONF_T_LO:
        snprintf(buf, len, "%stext of at most %lld characters, without backslash", nonempty,
                 (long long)key->max);
        break;
    case CONF_T_PATH:
        snprintf(buf, len, "a %spath of at most %lld characters", nonempty, (long long)key->max);
        break;
    case CONF_T_NAME:
        snprintf(buf, len, "a word of %lld to %lld characters A-Z a-z 0-9 _ -", (long long)key->min,
                 (long long)key->max);
        break;
    case CONF_T_UID:
        snprintf(buf, len, "empty, or a DICOM UID (digits and dots, at most %d characters)",
                 UID_MAXLEN);
        break;
    case CONF_T_INT:
        snprintf(buf, len, "an integer %lld..%lld", (long long)key->min, (long long)key->max);
        break;
    case CONF_T_BOOL: snprintf(buf, len, "true or false"); break;
    case CONF_T_ENUM: {
        size_t n = (size_t)snprintf(buf, len, "one of");
        for (size_t i = 0; key->words[i] && n < len; i++)
            n += (size_t)snprintf(buf + n, len - n, "%s %s", i ? "," : "", key->words[i]);
        break;
    }
    case CONF_T_LIST:
        snprintf(buf, len,
                 "%lld to %lld DICOM code strings (A-Z 0-9 _, at most %d characters each) "
                 "separated by spaces",
                 (long long)key->min, (long long)key->max, CS_MAXLEN);
        break;
    case CONF_T_THRESHOLD: snprintf(buf, len, "a probability 0..1, or the word 'model'"); break;
    }
    return buf;
}

/* Writes "expected <what the key accepts>, got '<text>'<extra>" into why. */
static enum cxr_status bad(const struct conf_key *key, const char *text, const char *extra,
                           char *why, size_t whylen)
{
    char exp[256], got[64];
    snprintf(why, whylen, "expected %s, got '%s'%s", conf_key_expected(key, exp, sizeof exp),
             conf_quote(text, got, sizeof got), extra ? extra : "");
    return CXR_ERR_CONF_VALUE;
}

static enum cxr_status parse_text(const struct conf_key *key, const char *text, void *base,
                                  char *why, size_t whylen)
{
    for (const char *p = text; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return bad(key, text, " (tabs and line breaks are not allowed inside a value)", why,
                       whylen);
        if (key->type == CONF_T_LO && *p == '\\')
            return bad(key, text, NULL, why, whylen);
        if (key->type == CONF_T_NAME && !is_name_char(*p))
            return bad(key, text, NULL, why, whylen);
    }
    size_t chars = utf8_chars(text);
    if ((int64_t)chars < key->min || (int64_t)chars > key->max) {
        char extra[64];
        snprintf(extra, sizeof extra, " (%zu characters)", chars);
        return bad(key, text, chars > 60 ? extra : NULL, why, whylen);
    }
    if (key->type == CONF_T_UID && *text && !is_uid(text))
        return bad(key, text, NULL, why, whylen);

    if (key->store == CONF_S_CHARS) {
        size_t n = strlen(text);
        if (n >= key->size)
            return bad(key, text, NULL, why, whylen);
        memcpy(field(base, key), text, n + 1);
        return CXR_OK;
    }
    char *copy = strdup(text);
    if (!copy) {
        snprintf(why, whylen, "out of memory");
        return CXR_ERR_NOMEM;
    }
    char **slot = field(base, key);
    free(*slot);
    *slot = copy;
    return CXR_OK;
}

static enum cxr_status parse_int(const struct conf_key *key, const char *text, void *base,
                                 char *why, size_t whylen)
{
    const char *p = text + (*text == '+' || *text == '-');
    if (!*p)
        return bad(key, text, NULL, why, whylen);
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return bad(key, text, NULL, why, whylen);
    errno = 0;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (errno == ERANGE || *end || v < key->min || v > key->max)
        return bad(key, text, NULL, why, whylen);
    int32_t v32 = (int32_t)v;
    memcpy(field(base, key), &v32, sizeof v32);
    return CXR_OK;
}

static enum cxr_status parse_enum(const struct conf_key *key, const char *text, void *base,
                                  char *why, size_t whylen)
{
    for (int i = 0; key->words[i]; i++) {
        if (!strcmp(key->words[i], text)) {
            if (key->store == CONF_S_CHARS) {
                snprintf(field(base, key), key->size, "%s", text);
            } else {
                memcpy(field(base, key), &i, sizeof i);
            }
            return CXR_OK;
        }
        if (!strcasecmp(key->words[i], text))
            return bad(key, text, " (the words are lower-case)", why, whylen);
    }
    return bad(key, text, NULL, why, whylen);
}

static enum cxr_status parse_list(const struct conf_key *key, const char *text, void *base,
                                  char *why, size_t whylen)
{
    struct cxr_conf_list list;
    memset(&list, 0, sizeof list);
    const char *p = text;
    for (;;) {
        while (is_xml_space(*p))
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && !is_xml_space(*p))
            p++;
        size_t n = (size_t)(p - start);
        if (list.count >= (uint32_t)key->max) {
            char extra[64];
            snprintf(extra, sizeof extra, " (more than %lld items)", (long long)key->max);
            return bad(key, text, extra, why, whylen);
        }
        char token[CS_MAXLEN + 2];
        snprintf(token, sizeof token, "%.*s", (int)(n < CS_MAXLEN + 1 ? n : CS_MAXLEN + 1), start);
        bool ok = n >= 1 && n <= CS_MAXLEN;
        for (size_t i = 0; ok && i < n; i++)
            ok = is_cs_char(start[i]);
        if (!ok) {
            char extra[96], q[32];
            snprintf(extra, sizeof extra, " (item '%s' is not a DICOM code string%s)",
                     conf_quote(token, q, sizeof q),
                     n && start[0] >= 'a' && start[0] <= 'z' ? "; use upper case" : "");
            return bad(key, text, extra, why, whylen);
        }
        memcpy(list.items[list.count], start, n);
        list.items[list.count][n] = '\0';
        list.count++;
    }
    if (list.count < (uint32_t)key->min)
        return bad(key, text, NULL, why, whylen);
    memcpy(field(base, key), &list, sizeof list);
    return CXR_OK;
}

static enum cxr_status parse_threshold(const struct conf_key *key, const char *text, void *base,
                                       char *why, size_t whylen)
{
    double v;
    if (!strcmp(text, "model")) {
        v = CONF_THRESHOLD_MODEL;
    } else {
        /* digits [ '.' digits ], at least one digit: the XSD's pattern */
        size_t digits = 0, dots = 0;
        for (const char *p = text; *p; p++) {
            if (*p >= '0' && *p <= '9')
                digits++;
            else if (*p == '.' && ++dots == 1)
                continue;
            else
                return bad(key, text, NULL, why, whylen);
        }
        if (!digits || strlen(text) > THRESHOLD_MAXLEN)
            return bad(key, text, NULL, why, whylen);
        /* Decide "<= 1" on the text, not after rounding: 1.000...01 is > 1. */
        const char *ip = text + strspn(text, "0"); /* the integer part without leading zeros */
        if (*ip != '.' && *ip != '\0') {
            const char *fp = ip + 1; /* must be "1", then nothing or '.' and zeros */
            if (*ip != '1' || (*fp && *fp != '.'))
                return bad(key, text, NULL, why, whylen);
            fp += *fp == '.';
            if (fp[strspn(fp, "0")] != '\0')
                return bad(key, text, NULL, why, whylen);
        }
        char *end = NULL;
        v = conf_strtod(text, &end);
        if (*end || !(v >= 0.0 && v <= 1.0))
            return bad(key, text, NULL, why, whylen);
    }
    memcpy(field(base, key), &v, sizeof v);
    return CXR_OK;
}

enum cxr_status conf_value_parse(const struct conf_key *key, const char *text, void *base,
                                 char *why, size_t whylen)
{
    switch (key->type) {
    case CONF_T_TEXT:
    case CONF_T_LO:
    case CONF_T_NAME:
    case CONF_T_PATH:
    case CONF_T_UID: return parse_text(key, text, base, why, whylen);
    case CONF_T_INT: return parse_int(key, text, base, why, whylen);
    case CONF_T_BOOL: {
        bool v;
        if (!strcmp(text, "true") || !strcmp(text, "1"))
            v = true;
        else if (!strcmp(text, "false") || !strcmp(text, "0"))
            v = false;
        else
            return bad(key, text, NULL, why, whylen);
        memcpy(field(base, key), &v, sizeof v);
        return CXR_OK;
    }
    case CONF_T_ENUM: return parse_enum(key, text, base, why, whylen);
    case CONF_T_LIST: return parse_list(key, text, base, why, whylen);
    case CONF_T_THRESHOLD: return parse_threshold(key, text, base, why, whylen);
    }
    snprintf(why, whylen, "internal error: key type %d", (int)key->type);
    return CXR_ERR_INTERNAL;
}

/* The shortest fixed-point text (at least one decimal) that reads back as v. */
static void format_probability(double v, char *buf, size_t len)
{
    for (int d = 1; d <= 24; d++) {
        conf_format_fixed(buf, len, d, v);
        if (conf_strtod(buf, NULL) == v)
            return;
    }
}

enum cxr_status conf_value_format(const struct conf_key *key, const void *base, char *buf,
                                  size_t len)
{
    const void *p = cfield(base, key);
    char tmp[CXR_CONF_MAX_LIST * 65 + 64];
    tmp[0] = '\0';
    const char *text = tmp;
    switch (key->store) {
    case CONF_S_STRPTR: text = *(char *const *)p ? *(char *const *)p : ""; break;
    case CONF_S_CHARS: snprintf(tmp, sizeof tmp, "%.*s", (int)key->size, (const char *)p); break;
    case CONF_S_I32: {
        int32_t v;
        memcpy(&v, p, sizeof v);
        snprintf(tmp, sizeof tmp, "%d", (int)v);
        break;
    }
    case CONF_S_ENUM: {
        int v;
        memcpy(&v, p, sizeof v);
        int n = 0;
        while (key->words[n])
            n++;
        if (v < 0 || v >= n)
            return CXR_ERR_INVALID_ARG;
        text = key->words[v];
        break;
    }
    case CONF_S_BOOL: {
        bool v;
        memcpy(&v, p, sizeof v);
        text = v ? "true" : "false";
        break;
    }
    case CONF_S_DOUBLE: {
        double v;
        memcpy(&v, p, sizeof v);
        if (v < 0)
            text = "model";
        else
            format_probability(v, tmp, sizeof tmp);
        break;
    }
    case CONF_S_LIST: {
        const struct cxr_conf_list *l = p;
        size_t n = 0;
        for (uint32_t i = 0; i < l->count && i < CXR_CONF_MAX_LIST; i++)
            n += (size_t)snprintf(tmp + n, sizeof tmp - n, "%s%.*s", i ? " " : "",
                                  (int)sizeof l->items[i], l->items[i]);
        break;
    }
    }
    size_t n = strlen(text);
    if (len == 0)
        return CXR_ERR_LIMIT;
    snprintf(buf, len, "%s", text);
    return n < len ? CXR_OK : CXR_ERR_LIMIT;
}

void conf_value_free(const struct conf_key *key, void *base)
{
    if (key->store != CONF_S_STRPTR)
        return;
    char **slot = field(base, key);
    free(*slot);
    *slot = NULL;
}

static bool store_fits(const struct conf_key *k)
{
    switch (k->store) {
    case CONF_S_STRPTR: return k->size == sizeof(char *);
    case CONF_S_I32: return k->size == sizeof(int32_t) && k->type == CONF_T_INT;
    case CONF_S_ENUM: return k->size == sizeof(int) && k->type == CONF_T_ENUM;
    case CONF_S_BOOL: return k->size == sizeof(bool) && k->type == CONF_T_BOOL;
    case CONF_S_DOUBLE: return k->size == sizeof(double) && k->type == CONF_T_THRESHOLD;
    case CONF_S_LIST: return k->size == sizeof(struct cxr_conf_list) && k->max <= CXR_CONF_MAX_LIST;
    case CONF_S_CHARS:
        if (k->type == CONF_T_ENUM) {
            for (int i = 0; k->words[i]; i++)
                if (strlen(k->words[i]) >= k->size)
                    return false;
            return true;
        }
        return k->max >= 0 && (size_t)k->max < k->size; /* ASCII-only types for CHARS */
    }
    return false;
}

enum cxr_status conf_table_check(char *why, size_t whylen)
{
    struct cxr_conf scratch;
    memset(&scratch, 0, sizeof scratch);
    enum cxr_status st = CXR_OK;
    for (size_t s = 0; s < conf_nsections && st == CXR_OK; s++) {
        const struct conf_section *sec = &conf_sections[s];
        void *base = conf_section_base(&scratch, sec);
        for (size_t i = 0; i < sec->nkeys && st == CXR_OK; i++) {
            const struct conf_key *k = &sec->keys[i];
            char sub[256];
            if (strstr(k->desc, "--") || strchr(k->desc, '\n') || strstr(k->def, "--") ||
                strlen(k->name) > 40 ||
                strspn(k->name, "abcdefghijklmnopqrstuvwxyz-") != strlen(k->name)) {
                snprintf(why, whylen, "key %s/%s: bad name or description", sec->name, k->name);
                st = CXR_ERR_INTERNAL;
            } else if (!store_fits(k) || (k->store == CONF_S_CHARS && k->type != CONF_T_ENUM &&
                                          k->type != CONF_T_NAME)) {
                snprintf(why, whylen, "key %s/%s: storage does not fit its type", sec->name,
                         k->name);
                st = CXR_ERR_INTERNAL;
            } else if (conf_section_key(sec, k->name) != k) {
                snprintf(why, whylen, "key %s/%s appears twice", sec->name, k->name);
                st = CXR_ERR_INTERNAL;
            } else if (conf_value_parse(k, k->def, base, sub, sizeof sub) != CXR_OK) {
                snprintf(why, whylen, "key %s/%s: default '%s' does not parse: %s", sec->name,
                         k->name, k->def, sub);
                st = CXR_ERR_INTERNAL;
            }
        }
        for (size_t i = 0; i < sec->nkeys; i++)
            conf_value_free(&sec->keys[i], base);
    }
    for (size_t r = 0; r < conf_norder_rules && st == CXR_OK; r++) {
        const struct conf_key *lo = conf_key_find(conf_order_rules[r].lo, NULL);
        const struct conf_key *hi = conf_key_find(conf_order_rules[r].hi, NULL);
        if (!lo || !hi || lo->store != hi->store ||
            (lo->store != CONF_S_I32 && lo->store != CONF_S_DOUBLE)) {
            snprintf(why, whylen, "order rule %zu names a missing or non-numeric key", r);
            st = CXR_ERR_INTERNAL;
        }
    }
    return st;
}
