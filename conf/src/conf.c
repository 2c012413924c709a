/* conf.c — the config object: defaults, free, key look-up, path resolution. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_internal.h"
#include "cxr/log.h"

static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static enum cxr_status table_status;
static char table_why[256];
static void table_check_once(void) { table_status = conf_table_check(table_why, sizeof table_why); }

enum cxr_status conf_section_defaults(const struct conf_section *sec, void *base)
{
    enum cxr_status st = CXR_OK;
    for (size_t i = 0; i < sec->nkeys && st == CXR_OK; i++) {
        char why[256];
        st = conf_value_parse(&sec->keys[i], sec->keys[i].def, base, why, sizeof why);
    }
    return st;
}

/* Every key at its default, parsed from the table's default text (so a
 * default obeys the same rules as a value from a file). Repeated sections
 * start with no element. */
enum cxr_status cxr_conf_defaults(struct cxr_conf **out)
{
    if (!out)
        return CXR_ERR_INVALID_ARG;
    *out = NULL;
    pthread_once(&table_once, table_check_once);
    if (table_status != CXR_OK)
        return CXR_ERR_INTERNAL; /* a bug in conf_keys.c; check_conf names it */
    struct cxr_conf *conf = calloc(1, sizeof *conf);
    if (!conf)
        return CXR_ERR_NOMEM;
    enum cxr_status st = CXR_OK;
    for (size_t s = 0; s < conf_nsections && st == CXR_OK; s++)
        if (!conf_sections[s].max_count)
            st = conf_section_defaults(&conf_sections[s],
                                       conf_section_base(conf, &conf_sections[s]));
    if (st == CXR_OK && !(conf->source_path = strdup("")))
        st = CXR_ERR_NOMEM;
    if (st != CXR_OK) {
        cxr_conf_free(conf);
        return st == CXR_ERR_NOMEM ? st : CXR_ERR_INTERNAL;
    }
    *out = conf;
    return CXR_OK;
}

void cxr_conf_free(struct cxr_conf *conf)
{
    if (!conf)
        return;
    for (size_t s = 0; s < conf_nsections; s++) {
        const struct conf_section *sec = &conf_sections[s];
        /* every element a load may have touched, also past a failed one */
        size_t n = sec->max_count ? sec->max_count : 1;
        for (size_t e = 0; e < n; e++)
            for (size_t i = 0; i < sec->nkeys; i++)
                conf_value_free(&sec->keys[i], conf_section_elem(conf, sec, e));
    }
    free(conf->source_path);
    free(conf);
}

enum cxr_status cxr_conf_get_text(const struct cxr_conf *conf, const char *key, char *buf,
                                  size_t buflen)
{
    if (!conf || !key || !buf || !buflen)
        return CXR_ERR_INVALID_ARG;
    buf[0] = '\0';
    const struct conf_section *sec = NULL;
    const struct conf_key *k = conf_key_find(key, &sec);
    if (!k)
        return CXR_ERR_NOT_FOUND;
    if (sec->max_count && conf_section_count(conf, sec) == 0) {
        /* no element: the value a new element would have */
        size_t n = (size_t)snprintf(buf, buflen, "%s", k->def);
        return n < buflen ? CXR_OK : CXR_ERR_LIMIT;
    }
    return conf_value_format(k, conf_section_base(conf, sec), buf, buflen);
}

size_t cxr_conf_key_count(void) { return conf_key_total(); }

/* "section/key" strings, built once (the table is static). */
#define KEY_PATHS_MAX 256
static char key_paths[KEY_PATHS_MAX][96];
static pthread_once_t key_paths_once = PTHREAD_ONCE_INIT;
static void key_paths_build(void)
{
    size_t k = 0;
    for (size_t s = 0; s < conf_nsections; s++)
        for (size_t i = 0; i < conf_sections[s].nkeys && k < KEY_PATHS_MAX; i++, k++)
            snprintf(key_paths[k], sizeof key_paths[k], "%s/%s", conf_sections[s].name,
                     conf_sections[s].keys[i].name);
}

const char *cxr_conf_key_path(size_t i)
{
    if (i >= conf_key_total() || i >= KEY_PATHS_MAX)
        return NULL;
    pthread_once(&key_paths_once, key_paths_build);
    return key_paths[i];
}

/* Whether one key holds the same value in two section structs (compared as
 * the text the loader accepts, so lists and thresholds compare by value). */
static bool key_same(const struct conf_key *k, const void *a, const void *b)
{
    char va[CXR_CONF_MAX_LIST * 65 + 4096], vb[sizeof va];
    return conf_value_format(k, a, va, sizeof va) == CXR_OK &&
           conf_value_format(k, b, vb, sizeof vb) == CXR_OK && strcmp(va, vb) == 0;
}

/* Whether a section holds the same values in a and b (every element of a
 * repeated one); only its restart-only keys when `restart_only`. */
static bool section_same(const struct conf_section *sec, const struct cxr_conf *a,
                         const struct cxr_conf *b, bool restart_only)
{
    size_t n = conf_section_count(a, sec);
    if (n != conf_section_count(b, sec))
        return false;
    for (size_t e = 0; e < n; e++)
        for (size_t i = 0; i < sec->nkeys; i++)
            if ((!restart_only || sec->keys[i].restart) &&
                !key_same(&sec->keys[i], conf_section_elem(a, sec, e),
                          conf_section_elem(b, sec, e)))
                return false;
    return true;
}

bool cxr_conf_equal(const struct cxr_conf *a, const struct cxr_conf *b)
{
    if (!a || !b)
        return a == b;
    for (size_t s = 0; s < conf_nsections; s++)
        if (!section_same(&conf_sections[s], a, b, false))
            return false;
    return true;
}

void cxr_conf_restart_changes(const struct cxr_conf *a, const struct cxr_conf *b,
                              void (*fn)(const char *key, void *ctx), void *ctx)
{
    char path[160];
    for (size_t s = 0; s < conf_nsections; s++) {
        const struct conf_section *sec = &conf_sections[s];
        bool any = false;
        for (size_t i = 0; i < sec->nkeys; i++)
            any = any || sec->keys[i].restart;
        if (!any)
            continue;
        if (sec->max_count) { /* a repeated section changes as a whole */
            if (!section_same(sec, a, b, true))
                fn(sec->name, ctx);
            continue;
        }
        for (size_t i = 0; i < sec->nkeys; i++) {
            const struct conf_key *k = &sec->keys[i];
            if (k->restart && !key_same(k, conf_section_base(a, sec), conf_section_base(b, sec))) {
                snprintf(path, sizeof path, "%s/%s", sec->name, k->name);
                fn(path, ctx);
            }
        }
    }
}

char *cxr_conf_resolve_path(const struct cxr_conf *conf, const char *path)
{
    if (!path)
        return NULL;
    const char *src = conf && conf->source_path ? conf->source_path : "";
    const char *slash = strrchr(src, '/');
    if (path[0] == '/' || path[0] == '\0' || !slash)
        return strdup(path); /* absolute, empty, or the config sits in the working directory */
    size_t dirlen = (size_t)(slash - src);
    char *out = NULL;
    if (asprintf(&out, "%.*s/%s", (int)dirlen, src, path) < 0)
        return NULL;
    return out;
}

void cxr_conf_log_apply(const struct cxr_conf *conf)
{
    enum cxr_log_level level;
    if (!getenv("CXR_LOG_LEVEL") && cxr_log_level_parse(conf->log.level, &level))
        cxr_log_set_level(level);
    cxr_log_set_phi_allowed(conf->log.allow_phi);
}
