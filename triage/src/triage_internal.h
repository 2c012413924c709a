/* triage_internal.h (internal to triage) — helpers shared by the module's
 * sources. */
#ifndef CXR_TRIAGE_INTERNAL_H
#define CXR_TRIAGE_INTERNAL_H

#include "cxr/status.h"

/* Formats into `err` (CXR_TRIAGE_ERRLEN bytes; NULL allowed) and returns
 * `st`, so a failure path is one line: return seterr(err, CXR_ERR_IO, ...). */
enum cxr_status cxr_triage_seterr(char *err, enum cxr_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define seterr cxr_triage_seterr

#endif
