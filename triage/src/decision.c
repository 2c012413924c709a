/* decision.c — the report decision for one study (cxr/decision.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/decision.h"
#include "cxr/log.h"

/* A not-analysed row can be listed: its header was read, it is an image a
 * chest radiograph triage is expected to look at (cxr_dicom_gate_concerns:
 * not a CT or an MR sent along) and it has the three UIDs the SR's image
 * reference needs. */
static bool listable(const struct cxr_conf *conf, const struct cxr_triage_instance_row *r)
{
    const struct cxr_dicom_info *i = &r->info;
    return r->has_info && i->sop_class_uid[0] && i->sop_instance_uid[0] &&
           i->series_instance_uid[0] && cxr_dicom_gate_concerns(i, conf ? &conf->gate : NULL);
}

enum cxr_status cxr_triage_study_decide(const struct cxr_conf *conf,
                                        const struct cxr_triage_instance_row *rows, size_t n,
                                        struct cxr_triage_decision *out)
{
    memset(out, 0, sizeof *out);
    out->score = NAN;
    out->priority = CXR_TRIAGE_PRIORITY_NOT_ANALYSED;
    out->results = calloc(n ? n : 1, sizeof *out->results);
    if (!out->results)
        return CXR_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct cxr_triage_instance_row *r = &rows[i];
        if (r->state == CXR_TRIAGE_INSTANCE_RECEIVED)
            continue;
        bool analysed = r->state == CXR_TRIAGE_INSTANCE_ANALYSED;
        if (analysed && !r->has_info) {
            cxr_log(CXR_LOG_WARN, "triage",
                    "study %s: instance %s has no header values left; left out of the SR",
                    r->study_instance_uid, r->sop_instance_uid);
            out->unlisted++;
            continue;
        }
        if (!analysed && !listable(conf, r)) {
            out->unlisted++;
            continue;
        }
        struct cxr_triage_result *x = &out->results[out->count++];
        x->info = r->info;
        x->analysed = analysed;
        x->status = analysed ? CXR_OK : (enum cxr_status)r->status;
        snprintf(x->warning, sizeof x->warning, "%s", r->warning);
        if (analysed) {
            x->probability = r->probability;
            x->finding_present = r->finding_present;
            x->priority = (enum cxr_triage_priority)r->priority;
            out->analysed++;
            if (isnan(out->score) || r->probability > out->score)
                out->score = r->probability;
        } else {
            x->probability = NAN;
            x->priority = CXR_TRIAGE_PRIORITY_NOT_ANALYSED;
            snprintf(x->reason, sizeof x->reason, "%s", r->reason);
            out->not_analysed++;
        }
        if (!r->reported)
            out->due = true;
    }
    out->priority = cxr_triage_study_priority(out->results, out->count);
    out->make_sr =
        out->due && out->count > 0 && (out->analysed > 0 || (conf && conf->sr.report_not_analysed));
    return CXR_OK;
}

void cxr_triage_decision_release(struct cxr_triage_decision *d)
{
    if (!d)
        return;
    free(d->results);
    memset(d, 0, sizeof *d);
}
