/* cxr/worklist.h — the reading worklist the node serves over HTTP: studies
 * ordered by priority (most severe first), then score (highest first), then
 * arrival (oldest first). A ROUTINE study that has waited longer than the
 * configured maximum is escalated one level (to PRIORITY) and flagged.
 * Patient IDs appear only when the configuration allows it.
 *
 * Pure functions over rows read from the job store: no locking, no I/O.
 */
#ifndef CXR_WORKLIST_H
#define CXR_WORKLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/study.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cxr_triage_worklist_options {
    int64_t now_ms;           /* the time waiting is measured to */
    int32_t max_wait_minutes; /* 0 = never escalate */
    bool show_patient_id;
    uint32_t window_hours; /* studies older than this are left out (0 = all) */
    size_t limit;          /* at most this many entries (0 = 1000) */
    /* Display names of the levels, indexed by enum cxr_triage_priority. */
    char priority_names[4][32];
};

/* Sets the defaults: now, no escalation, no patient IDs, 24 h, 1000 entries,
 * names URGENT/PRIORITY/ROUTINE/NOT_ANALYSED. */
void cxr_triage_worklist_options_init(struct cxr_triage_worklist_options *o, int64_t now_ms);

/* One worklist line. */
struct cxr_triage_worklist_entry {
    const struct cxr_triage_study_row *study;
    int32_t priority; /* after escalation */
    bool escalated;
    int64_t waiting_ms; /* since the study's first instance arrived */
};

/* Fills entries[0..n-1] from rows[0..n-1] and sorts them in worklist order
 * (ties keep a stable order by Study Instance UID). */
void cxr_triage_worklist_order(const struct cxr_triage_study_row *rows, size_t n,
                               const struct cxr_triage_worklist_options *o,
                               struct cxr_triage_worklist_entry *entries);

/* The worklist as a JSON document {"generated_ms":..,"studies":[..]}; caller
 * frees. NULL when out of memory. */
char *cxr_triage_worklist_json(const struct cxr_triage_study_row *rows, size_t n,
                               const struct cxr_triage_worklist_options *o);

/* One study with its instances (each with its result or the reason it was
 * not analysed) as JSON; caller frees. */
char *cxr_triage_study_json(const struct cxr_triage_study_row *study,
                            const struct cxr_triage_instance_row *instances, size_t n,
                            const struct cxr_triage_worklist_options *o);

#ifdef __cplusplus
}
#endif
#endif
