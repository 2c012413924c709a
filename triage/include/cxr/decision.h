/* cxr/decision.h — the report decision for one study, the same for both
 * doors (the node's reporter, node/src/node_report.c, and the Orthanc
 * plugin, plugin/src/orthanc_score.c): which received images the SR lists,
 * whether an SR is due, the study's priority and score.
 *
 * Every received image is accounted for: an analysed image is listed with
 * its finding, an image the node could not analyse is listed with its
 * reason (docs/conformance.md, "Images not analysed"). Objects that are not
 * images a chest radiograph triage looks at (an SR, a PDF, a CT or MR image
 * sent along: cxr_dicom_gate_concerns, by Modality, the same rule by which
 * the Orthanc plugin decides which images to read) and instances whose
 * header could not be read are not listed; they stay on the worklist with
 * their reason.
 */
#ifndef CXR_DECISION_H
#define CXR_DECISION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/conf.h"
#include "cxr/study.h"
#include "cxr/triage.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cxr_triage_decision {
    struct cxr_triage_result *results; /* the images the SR lists, in row order; owned */
    int32_t count;                     /* entries in results */
    int32_t analysed;                  /* of them analysed */
    int32_t not_analysed;              /* of them not analysed */
    int32_t unlisted;                  /* processed rows not listed (not images, no header) */
    bool due;                          /* a listed image is in no earlier report decision */
    bool make_sr;                      /* due, and something to say: an analysed image, or only
                                          not-analysed ones and sr/report-not-analysed */
    int32_t priority;                  /* enum cxr_triage_priority: the most severe analysed */
    double score;                      /* highest probability; NaN when none analysed */
};

/* Builds the decision over rows[0..n-1], every processed instance row of
 * one study (rows still RECEIVED are ignored: the caller waits for them).
 * An analysed row needs its header values (has_info); one without is left
 * out with a warning in the log (the caller may fill `info` first). On
 * CXR_OK the caller frees with cxr_triage_decision_release; on failure
 * (CXR_ERR_NOMEM) *out is empty. */
enum cxr_status cxr_triage_study_decide(const struct cxr_conf *conf,
                                        const struct cxr_triage_instance_row *rows, size_t n,
                                        struct cxr_triage_decision *out);
void cxr_triage_decision_release(struct cxr_triage_decision *d);

#ifdef __cplusplus
}
#endif
#endif
