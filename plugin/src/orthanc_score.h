/* orthanc_score.h — one job of the worker thread (orthanc_score.c). */
#ifndef CXR_PLUGIN_ORTHANC_SCORE_H
#define CXR_PLUGIN_ORTHANC_SCORE_H

#include "orthanc_internal.h"

/* Runs one job the queue handed out: scores a queued study (every instance
 * not yet scored with the current model), decides its priority, builds its
 * SR and stores it in Orthanc; or, for a study whose SR is pending, stores
 * that SR. Failures are recorded on the study and retried with backoff; a
 * malformed instance is an instance result, never a failed job. Worker
 * thread only. */
void plugin_run_job(struct plugin *p, const struct plugin_study *job);

/* Records a study's header values (Study Instance UID, accession, patient
 * ID, date, description) from Orthanc's GET /studies/{id} answer. */
void plugin_note_header(struct plugin *p, const char *id, json_object *study);

#endif
