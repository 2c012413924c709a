/* plugin_json.h — the plugin's REST documents, built on the node's worklist
 * code (cxr/worklist.h): the same ordering, escalation and fields, plus what
 * only the plugin knows (the Orthanc identifiers, the queue state, the
 * forwards). No Orthanc SDK here. All returned strings are malloc'd (caller
 * frees); NULL when out of memory. */
#ifndef CXR_PLUGIN_JSON_H
#define CXR_PLUGIN_JSON_H

#include <stddef.h>

#include "cxr/worklist.h"
#include "plugin_db.h"

/* {"generated_ms":..,"count":..,"studies":[..]}: cxr_triage_worklist_json's
 * document, each entry with "orthanc_id", "state", "model_version",
 * "scored_ms", "queued_ms", "sr_stored_ms" added. */
char *plugin_worklist_json(const struct plugin_study *rows, size_t n,
                           const struct cxr_triage_worklist_options *o);

/* One study: cxr_triage_study_json's document (instances with results or
 * the reasons they were not analysed) plus the Orthanc identifiers, the
 * queue state, the model, the last error and the forwards. */
char *plugin_study_json(const struct plugin_study *s, const struct plugin_instance *inst, size_t n,
                        const struct plugin_forward *fw, size_t nfw,
                        const struct cxr_triage_worklist_options *o);

/* A list of forwards {"forwards":[..]}. */
char *plugin_forwards_json(const struct plugin_forward *fw, size_t n);

#endif
