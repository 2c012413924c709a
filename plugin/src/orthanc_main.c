/* orthanc_main.c — the four entry points Orthanc calls (the only symbols the
 * shared object exports, see plugin/exports.map) and the change callback.
 *
 * OrthancPluginInitialize reads Orthanc's JSON configuration (only
 * CxrTriage.ConfigFile / CxrTriage.Required and a few facts of Orthanc's
 * own), loads the XML configuration and the model, opens the plugin's queue
 * and registers the REST routes. A broken configuration or model leaves
 * Orthanc running with a plugin that scores nothing and says why on
 * GET /cxr-triage/status — unless CxrTriage.Required or plugin/required says
 * otherwise, then Initialize fails and Orthanc does not start.
 *
 * The change callback runs on Orthanc's change thread with Orthanc's locks
 * held (the SDK warns of deadlocks): it only wakes the worker, and notes
 * deleted studies and patients for it (orthanc_deleted.c). The worker
 * and the forwarder start on OrthancStarted and are joined on
 * OrthancStopped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/log.h"
#include "cxr/version.h"
#include "orthanc_internal.h"

struct plugin *g_plugin;

static void start_threads(struct plugin *p)
{
    if (p->threads_running)
        return;
    atomic_store(&p->stopping, false);
    if (pthread_create(&p->worker, NULL, plugin_worker_main, p) != 0) {
        plugin_log(p, PLOG_ERROR, "cannot start the worker thread: nothing will be scored");
        return;
    }
    if (pthread_create(&p->forwarder, NULL, plugin_forwarder_main, p) != 0) {
        plugin_log(p, PLOG_ERROR, "cannot start the forwarder thread");
        atomic_store(&p->stopping, true);
        plugin_wake(p);
        pthread_join(p->worker, NULL);
        return;
    }
    p->threads_running = true;
}

static void stop_threads(struct plugin *p)
{
    if (!p->threads_running)
        return;
    atomic_store(&p->stopping, true);
    plugin_wake(p);
    pthread_join(p->worker, NULL);
    pthread_join(p->forwarder, NULL);
    p->threads_running = false;
    plugin_log(p, PLOG_INFO, "worker stopped; unfinished studies stay queued for the next start");
}

static OrthancPluginErrorCode on_change(OrthancPluginChangeType type,
                                        OrthancPluginResourceType resource, const char *id)
{
    struct plugin *p = g_plugin;
    if (!p)
        return OrthancPluginErrorCode_Success;
    switch (type) {
    case OrthancPluginChangeType_OrthancStarted: start_threads(p); break;
    case OrthancPluginChangeType_OrthancStopped: stop_threads(p); break;
    case OrthancPluginChangeType_NewStudy:
    case OrthancPluginChangeType_StableStudy:
        plugin_wake(p); /* the worker reads Orthanc's change log */
        break;
    case OrthancPluginChangeType_Deleted:
        /* not in Orthanc's change log: noted here, applied by the worker */
        if (resource == OrthancPluginResourceType_Study ||
            resource == OrthancPluginResourceType_Patient) {
            plugin_deleted_note(p, resource, id);
            plugin_wake(p);
        }
        break;
    default: break;
    }
    return OrthancPluginErrorCode_Success;
}

static void plugin_free(struct plugin *p)
{
    if (!p)
        return;
    cxr_triage_engine_free(p->engine);
    cxr_conf_free(p->conf);
    plugin_db_close(p->db);
    pthread_mutex_destroy(&p->lock);
    cxr_wake_destroy(&p->wake);
    pthread_mutex_destroy(&p->deleted_lock);
    free(p);
}

__attribute__((visibility("default"))) int32_t OrthancPluginInitialize(OrthancPluginContext *ctx)
{
    if (!OrthancPluginCheckVersion(ctx)) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "%s: this Orthanc (%s) is older than the plugin SDK it was built with "
                 "(%d.%d.%d): not loaded",
                 PLUGIN_NAME, ctx->orthancVersion, ORTHANC_PLUGINS_MINIMAL_MAJOR_NUMBER,
                 ORTHANC_PLUGINS_MINIMAL_MINOR_NUMBER, ORTHANC_PLUGINS_MINIMAL_REVISION_NUMBER);
        OrthancPluginLogError(ctx, msg);
        return -1;
    }
    struct plugin *p = calloc(1, sizeof *p);
    if (!p) {
        OrthancPluginLogError(ctx, PLUGIN_NAME ": out of memory");
        return -1;
    }
    p->ctx = ctx;
    pthread_mutex_init(&p->lock, NULL);
    cxr_wake_init(&p->wake);
    pthread_mutex_init(&p->deleted_lock, NULL);
    g_plugin = p;
    /* Labels arrived in Orthanc 1.12.0: use them only on such an Orthanc. */
    p->labels = OrthancPluginCheckVersionAdvanced(ctx, 1, 12, 0) != 0;
    OrthancPluginSetDescription(ctx, "Scores chest X-rays for pneumonia, stores a DICOM SR in the "
                                     "study, prioritises a reading worklist (/cxr-triage/ui/).");
    plugin_log(p, PLOG_INFO, "version %s on Orthanc %s (labels %s)", CXR_VERSION,
               ctx->orthancVersion, p->labels ? "on" : "off: Orthanc < 1.12, metadata only");

    char err[PLUGIN_ERRLEN] = "";
    char *json = OrthancPluginGetConfiguration(ctx);
    enum cxr_status st = plugin_settings_from_json(json, &p->os, err);
    if (json)
        OrthancPluginFreeString(ctx, json);
    if (st != CXR_OK) {
        p->health = PLUGIN_HEALTH_BROKEN;
        snprintf(p->health_reason, sizeof p->health_reason, "%s", err);
        plugin_log(p, PLOG_ERROR, "%s", err);
    } else if (!p->os.configured) {
        p->health = PLUGIN_HEALTH_UNCONFIGURED;
        snprintf(p->health_reason, sizeof p->health_reason,
                 "no \"CxrTriage\": {\"ConfigFile\": \"...\"} in Orthanc's configuration: "
                 "nothing is scored");
        plugin_log(p, PLOG_WARN, "%s", p->health_reason);
    } else {
        st = plugin_load_config(p, err);
        if (st != CXR_OK)
            plugin_log(p, PLOG_ERROR, "%s", err);
    }
    bool required = p->os.required || (p->conf && p->conf->plugin.required);
    if (st != CXR_OK && required) {
        plugin_log(p, PLOG_ERROR,
                   "the configuration says Required: refusing to load, so Orthanc "
                   "does not start without a working triage");
        g_plugin = NULL;
        plugin_free(p);
        return -1;
    }
    if (!p->os.metadata_declared)
        plugin_log(p, PLOG_WARN,
                   "Orthanc's \"UserMetadata\" lacks %s: study metadata will not be written "
                   "(see docs/orthanc-plugin.md for the lines to add)",
                   p->os.metadata_missing);
    plugin_register_rest(p);
    OrthancPluginRegisterOnChangeCallback(ctx, on_change);
    return 0;
}

__attribute__((visibility("default"))) void OrthancPluginFinalize(void)
{
    struct plugin *p = g_plugin;
    if (!p)
        return;
    stop_threads(p);
    g_plugin = NULL;
    plugin_free(p);
}

__attribute__((visibility("default"))) const char *OrthancPluginGetName(void)
{
    return PLUGIN_NAME;
}

__attribute__((visibility("default"))) const char *OrthancPluginGetVersion(void)
{
    return CXR_VERSION;
}
