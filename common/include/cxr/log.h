/* cxr/log.h — leveled logging to stderr (journald-aware).
 *
 * Lines look like "2026-11-25T20:40:35.123Z WARN  dicom: text". When stderr is
 * connected to journald (JOURNAL_STREAM set) the line starts with the syslog
 * priority prefix "<4>" instead of the timestamp, so journald keeps the level.
 * Patient names and IDs must never be passed to these functions unless the
 * configuration allows it (callers check cxr_log_phi_allowed()).
 * All functions are thread-safe.
 */
#ifndef CXR_LOG_H
#define CXR_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

enum cxr_log_level { CXR_LOG_ERROR = 0, CXR_LOG_WARN = 1, CXR_LOG_INFO = 2, CXR_LOG_DEBUG = 3 };

/* Sets the most verbose level printed (default INFO, or CXR_LOG_LEVEL from the
 * environment: error|warn|info|debug). */
void cxr_log_set_level(enum cxr_log_level level);
enum cxr_log_level cxr_log_get_level(void);

/* Parses "error|warn|info|debug"; returns false for anything else. */
bool cxr_log_level_parse(const char *text, enum cxr_log_level *out);

/* Whether patient-identifying values may appear in logs (default false). */
void cxr_log_set_phi_allowed(bool allowed);
bool cxr_log_phi_allowed(void);

/* Logs one line; `module` is a short tag ("nn", "dicom"). A trailing newline
 * in fmt is not needed. */
void cxr_log(enum cxr_log_level level, const char *module, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void cxr_logv(enum cxr_log_level level, const char *module, const char *fmt, va_list ap);

#ifdef __cplusplus
}
#endif
#endif
