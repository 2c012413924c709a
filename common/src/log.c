/* log.c — see cxr/log.h. */
#define _POSIX_C_SOURCE 200809L
#include "cxr/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static enum cxr_log_level log_level = CXR_LOG_INFO;
static bool log_journal;
static bool log_phi;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const level_words[] = {"error", "warn", "info", "debug"};
/* syslog priorities: err, warning, info, debug */
static const int level_syslog[] = {3, 4, 6, 7};

static void log_init(void)
{
    const char *env = getenv("CXR_LOG_LEVEL");
    enum cxr_log_level l;
    if (env && cxr_log_level_parse(env, &l))
        log_level = l;
    log_journal = getenv("JOURNAL_STREAM") != NULL;
}

bool cxr_log_level_parse(const char *text, enum cxr_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (text && strcasecmp(text, level_words[i]) == 0) {
            *out = (enum cxr_log_level)i;
            return true;
        }
    }
    return false;
}

void cxr_log_set_level(enum cxr_log_level level)
{
    pthread_once(&log_once, log_init);
    pthread_mutex_lock(&log_lock);
    log_level = level;
    pthread_mutex_unlock(&log_lock);
}

enum cxr_log_level cxr_log_get_level(void)
{
    pthread_once(&log_once, log_init);
    pthread_mutex_lock(&log_lock);
    enum cxr_log_level l = log_level;
    pthread_mutex_unlock(&log_lock);
    return l;
}

void cxr_log_set_phi_allowed(bool allowed)
{
    pthread_mutex_lock(&log_lock);
    log_phi = allowed;
    pthread_mutex_unlock(&log_lock);
}

bool cxr_log_phi_allowed(void)
{
    pthread_mutex_lock(&log_lock);
    bool b = log_phi;
    pthread_mutex_unlock(&log_lock);
    return b;
}

void cxr_logv(enum cxr_log_level level, const char *module, const char *fmt, va_list ap)
{
    if ((int)level < 0 || level > CXR_LOG_DEBUG)
        level = CXR_LOG_ERROR;
    if (level > cxr_log_get_level())
        return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';

    pthread_mutex_lock(&log_lock);
    if (log_journal) {
        fprintf(stderr, "<%d>%s: %s\n", level_syslog[level], module ? module : "cxr", msg);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: %s\n", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                level_names[level], module ? module : "cxr", msg);
    }
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

void cxr_log(enum cxr_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cxr_logv(level, module, fmt, ap);
    va_end(ap);
}
