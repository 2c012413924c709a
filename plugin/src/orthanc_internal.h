/* orthanc_internal.h — the plugin's state and the functions its Orthanc-facing
 * files share (orthanc_main.c: entry points and events; orthanc_rest.c: the
 * REST routes and the page; orthanc_worker.c: change log, scoring, SRs,
 * metadata; orthanc_forward.c: forwards; orthanc_util.c: REST calls into
 * Orthanc, logging, metrics).
 *
 * Threads:
 *  - Orthanc's threads run OrthancPluginInitialize/Finalize, the change
 *    callback (which only wakes the worker: it never blocks and never calls
 *    Orthanc) and the REST callbacks (short reads of the queue file);
 *  - the worker thread (started on OrthancStarted, joined on OrthancStopped)
 *    reads Orthanc's change log, scores, stores SRs and writes metadata: every
 *    REST call into Orthanc and every inference happens there;
 *  - the forwarder thread sends SRs and studies to modalities and peers.
 * `lock` guards the configuration, the engine pointer and the status texts;
 * the engine itself is used by the worker only. `deleted_lock` guards the
 * ring of deletions the change callback notes (orthanc_deleted.c).
 */
#ifndef CXR_PLUGIN_ORTHANC_INTERNAL_H
#define CXR_PLUGIN_ORTHANC_INTERNAL_H

#include <orthanc/OrthancCPlugin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#include "cxr/wake.h"
#include "cxr/conf.h"
#include "cxr/triage.h"
#include "cxr/worklist.h"
#include "cxr/ui_assets.h"
#include "plugin_db.h"
#include "plugin_settings.h"

#define PLUGIN_NAME "cxr-triage"

/* A study or patient Orthanc reported deleted (change callback). */
#define PLUGIN_DELETED_RING 1024
struct plugin_deleted {
    bool patient; /* a patient (else a study) */
    char id[PLUGIN_ID_LEN];
};

enum plugin_health {
    PLUGIN_HEALTH_STARTING = 0, /* loaded, worker not running yet */
    PLUGIN_HEALTH_READY,        /* configuration and model loaded */
    PLUGIN_HEALTH_BROKEN,       /* configuration or model does not load: nothing is scored */
    PLUGIN_HEALTH_UNCONFIGURED  /* no CxrTriage.ConfigFile in Orthanc's configuration */
};

struct plugin {
    OrthancPluginContext *ctx;
    struct plugin_orthanc_settings os;
    bool labels; /* Orthanc >= 1.12: labels exist */

    pthread_mutex_t lock;             /* guards everything down to `wake_lock` */
    struct cxr_conf *conf;            /* NULL when it did not load */
    struct cxr_triage_engine *engine; /* NULL when the model did not load */
    enum plugin_health health;
    char health_reason[PLUGIN_ERRLEN];
    char backend_note[CXR_ERRLEN];
    char last_error[PLUGIN_ERRLEN];
    int64_t last_error_ms;
    struct plugin_target fw_sr[PLUGIN_MAX_TARGETS], fw_study[PLUGIN_MAX_TARGETS];
    size_t n_fw_sr, n_fw_study;
    char state_dir[PLUGIN_PATHLEN];
    int64_t queue_limit;
    uint32_t retry_s, retry_max;
    int64_t engine_retry_ms; /* when the worker tries the configuration again */
    /* latest latencies, ms (also Orthanc metrics) */
    double last_study_ms, last_image_ms;

    struct plugin_db *db; /* opened once; NULL while the configuration never loaded */

    struct cxr_wake wake; /* work for the worker or the forwarder (cxr/wake.h) */
    pthread_t worker, forwarder;
    bool threads_running;
    atomic_bool stopping;
    atomic_bool reload_requested;
    atomic_llong errors; /* failures logged since start */

    pthread_mutex_t deleted_lock;
    struct plugin_deleted deleted[PLUGIN_DELETED_RING];
    uint64_t deleted_seq;     /* deletions noted since start; the k-th is deleted[k % RING] */
    uint64_t deleted_drained; /* worker only: deletions before this one were applied */
};

extern struct plugin *g_plugin;

/* ---- orthanc_util.c */
int64_t plugin_now_ms(void);
/* Logs to Orthanc's log. Errors also become the status' last error. */
void plugin_log(struct plugin *p, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define PLOG_ERROR 0
#define PLOG_WARN  1
#define PLOG_INFO  2
/* Wakes the worker and the forwarder. Never blocks for long: any thread. */
void plugin_wake(struct plugin *p);
/* Waits until woken after `seq` or until deadline_ms (wall clock). */
void plugin_wait(struct plugin *p, uint64_t seq, int64_t deadline_ms);
uint64_t plugin_wake_seq(struct plugin *p);
/* Sleeps until deadline_ms whatever wakes the thread; returns early only on
 * shutdown. */
void plugin_nap(struct plugin *p, int64_t deadline_ms);

/* REST calls into Orthanc's built-in API (worker and forwarder threads, and
 * REST callbacks; never the change callback). A 404 is CXR_ERR_NOT_FOUND;
 * other failures CXR_ERR_PLUGIN_ORTHANC with Orthanc's error text in err
 * (PLUGIN_ERRLEN). *out (may be NULL) receives the parsed answer. */
enum cxr_status orest_get_json(struct plugin *p, const char *uri, json_object **out, char *err);
enum cxr_status orest_post(struct plugin *p, const char *uri, const void *body, size_t len,
                           json_object **out, char *err);
enum cxr_status orest_put(struct plugin *p, const char *uri, const void *body, size_t len,
                          char *err);
enum cxr_status orest_delete(struct plugin *p, const char *uri, char *err);
/* A string member of a JSON object ("" when absent). */
const char *ojson_str(json_object *o, const char *key);
/* A member of a nested object: ojson_str2(o, "MainDicomTags", "StudyInstanceUID"). */
const char *ojson_str2(json_object *o, const char *obj, const char *key);

/* Publishes counts and latencies as Orthanc metrics. */
void plugin_publish_metrics(struct plugin *p);

/* ---- orthanc_worker.c */
void *plugin_worker_main(void *arg);
/* Loads (or reloads) the configuration named in Orthanc's JSON and its
 * model. Worker thread, or OrthancPluginInitialize before the threads run.
 * On failure the plugin is BROKEN with the reason; returns the status. */
enum cxr_status plugin_load_config(struct plugin *p, char *err);
/* The worklist options of the current configuration (names, escalation, PHI). */
void plugin_worklist_options(struct plugin *p, struct cxr_triage_worklist_options *o);

/* Test hook (CXR_ORTHANC_TEST_HOLD=FILE): when FILE exists and holds
 * `point` ("scoring": after a batch of images is recorded; "post": just
 * before the SR is posted), the worker removes it, writes the study's ID
 * into FILE.held and waits until a test removes FILE.held (or Orthanc stops),
 * so that a test can act at that point without timing. Worker thread. */
void plugin_test_hold(struct plugin *p, const char *point, const char *study);

/* ---- orthanc_deleted.c: deletions in Orthanc (the plugin never brings back
 * what was deleted) */
/* Notes a deleted study or patient (other resource types are ignored). The
 * change callback's thread: no Orthanc call, no I/O. */
void plugin_deleted_note(struct plugin *p, OrthancPluginResourceType type, const char *id);
/* Forgets the queue rows of the studies noted deleted since the last call
 * that Orthanc no longer has (a deleted patient: every unfinished study is
 * checked). Worker thread, between jobs. */
void plugin_deleted_apply(struct plugin *p);
/* True, after forgetting its rows, when Orthanc no longer has the study
 * (GET /studies/{id} is 404). `when` ("while it was being scored") makes it
 * a warning that work in flight was dropped; NULL, an info line. Worker
 * thread. */
bool plugin_study_gone(struct plugin *p, const char *id, const char *when);
/* After the SR `sr_id` was posted into `study`: when the study holds nothing
 * but the plugin's own SRs (its images were deleted while the SR was on its
 * way, and the post re-created it), deletes the SR again, forgets the study
 * and returns true. Worker thread. */
bool plugin_sr_undo_if_alone(struct plugin *p, const char *study, const char *sr_id);

/* ---- orthanc_forward.c */
void *plugin_forwarder_main(void *arg);

/* ---- orthanc_rest.c */
void plugin_register_rest(struct plugin *p);

#endif
