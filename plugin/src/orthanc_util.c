/* orthanc_util.c — clock, logging into Orthanc's log, the worker's wake-up,
 * REST calls into Orthanc and Orthanc metrics (see orthanc_internal.h). */
#include "orthanc_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t plugin_now_ms(void) { return cxr_wake_now_ms(); }

void plugin_log(struct plugin *p, int level, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    char line[2100];
    snprintf(line, sizeof line, "%s: %s", PLUGIN_NAME, text);
    if (level == PLOG_ERROR) {
        OrthancPluginLogError(p->ctx, line);
        pthread_mutex_lock(&p->lock);
        snprintf(p->last_error, sizeof p->last_error, "%.1000s", text);
        p->last_error_ms = plugin_now_ms();
        pthread_mutex_unlock(&p->lock);
        atomic_fetch_add(&p->errors, 1);
    } else if (level == PLOG_WARN) {
        OrthancPluginLogWarning(p->ctx, line);
    } else {
        OrthancPluginLogInfo(p->ctx, line);
    }
}

void plugin_wake(struct plugin *p) { cxr_wake_signal(&p->wake); }

uint64_t plugin_wake_seq(struct plugin *p) { return cxr_wake_seq(&p->wake); }

/* The deadline is wall-clock; the wait runs on the monotonic clock
 * (cxr/wake.h), so a step of the wall clock cannot stall the worker. */
void plugin_wait(struct plugin *p, uint64_t seq, int64_t deadline_ms)
{
    cxr_wake_wait(&p->wake, seq, deadline_ms, &p->stopping);
}

void plugin_nap(struct plugin *p, int64_t deadline_ms)
{
    while (!atomic_load(&p->stopping) && plugin_now_ms() < deadline_ms)
        plugin_wait(p, plugin_wake_seq(p), deadline_ms);
}

/* ------------------------------------------------------------------ REST */

static enum cxr_status rest_status(struct plugin *p, OrthancPluginErrorCode code,
                                   const char *method, const char *uri, char *err)
{
    if (code == OrthancPluginErrorCode_Success)
        return CXR_OK;
    const char *desc = OrthancPluginGetErrorDescription(p->ctx, code);
    if (err)
        snprintf(err, PLUGIN_ERRLEN, "%s %s: %s (Orthanc error %d)", method, uri,
                 desc ? desc : "failed", (int)code);
    return code == OrthancPluginErrorCode_UnknownResource ||
                   code == OrthancPluginErrorCode_InexistentItem
               ? CXR_ERR_NOT_FOUND
               : CXR_ERR_PLUGIN_ORTHANC;
}

/* Parses an answer buffer into *out (when out is not NULL) and frees it. */
static enum cxr_status parse_answer(struct plugin *p, OrthancPluginMemoryBuffer *buf,
                                    const char *method, const char *uri, json_object **out,
                                    char *err)
{
    enum cxr_status st = CXR_OK;
    if (out) {
        *out = NULL;
        json_tokener *tok = json_tokener_new();
        json_object *j =
            tok && buf->size ? json_tokener_parse_ex(tok, buf->data, (int)buf->size) : NULL;
        json_tokener_free(tok);
        if (!j) {
            if (err)
                snprintf(err, PLUGIN_ERRLEN, "%s %s: the answer is not JSON", method, uri);
            st = CXR_ERR_PLUGIN_ORTHANC;
        }
        *out = j;
    }
    if (buf->data)
        OrthancPluginFreeMemoryBuffer(p->ctx, buf);
    return st;
}

enum cxr_status orest_get_json(struct plugin *p, const char *uri, json_object **out, char *err)
{
    OrthancPluginMemoryBuffer buf = {0};
    if (out)
        *out = NULL;
    OrthancPluginErrorCode code = OrthancPluginRestApiGet(p->ctx, &buf, uri);
    if (code != OrthancPluginErrorCode_Success) {
        if (buf.data)
            OrthancPluginFreeMemoryBuffer(p->ctx, &buf);
        return rest_status(p, code, "GET", uri, err);
    }
    return parse_answer(p, &buf, "GET", uri, out, err);
}

enum cxr_status orest_post(struct plugin *p, const char *uri, const void *body, size_t len,
                           json_object **out, char *err)
{
    OrthancPluginMemoryBuffer buf = {0};
    if (out)
        *out = NULL;
    if (len > UINT32_MAX) {
        if (err)
            snprintf(err, PLUGIN_ERRLEN, "POST %s: body too large", uri);
        return CXR_ERR_LIMIT;
    }
    OrthancPluginErrorCode code = OrthancPluginRestApiPost(p->ctx, &buf, uri, body, (uint32_t)len);
    if (code != OrthancPluginErrorCode_Success) {
        if (buf.data)
            OrthancPluginFreeMemoryBuffer(p->ctx, &buf);
        return rest_status(p, code, "POST", uri, err);
    }
    return parse_answer(p, &buf, "POST", uri, out, err);
}

enum cxr_status orest_put(struct plugin *p, const char *uri, const void *body, size_t len,
                          char *err)
{
    OrthancPluginMemoryBuffer buf = {0};
    OrthancPluginErrorCode code = OrthancPluginRestApiPut(p->ctx, &buf, uri, body, (uint32_t)len);
    if (buf.data)
        OrthancPluginFreeMemoryBuffer(p->ctx, &buf);
    return rest_status(p, code, "PUT", uri, err);
}

enum cxr_status orest_delete(struct plugin *p, const char *uri, char *err)
{
    return rest_status(p, OrthancPluginRestApiDelete(p->ctx, uri), "DELETE", uri, err);
}

const char *ojson_str(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return "";
    return json_object_get_string(v);
}

const char *ojson_str2(json_object *o, const char *obj, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_object_get_ex(o, obj, &v))
        return "";
    return ojson_str(v, key);
}

/* ------------------------------------------------------------------ metrics */

void plugin_publish_metrics(struct plugin *p)
{
    struct plugin_counts c;
    if (!p->db || plugin_db_counts(p->db, &c) != CXR_OK)
        return;
    pthread_mutex_lock(&p->lock);
    float ready = p->health == PLUGIN_HEALTH_READY ? 1.0f : 0.0f;
    float study_ms = (float)p->last_study_ms, image_ms = (float)p->last_image_ms;
    pthread_mutex_unlock(&p->lock);
    const struct {
        const char *name;
        double v;
        OrthancPluginMetricsType type;
    } m[] = {
        {"cxr_triage_ready", ready, OrthancPluginMetricsType_Default},
        {"cxr_triage_queue_studies", (double)(c.waiting + c.queued + c.sr_pending),
         OrthancPluginMetricsType_Default},
        {"cxr_triage_queue_scoring", (double)(c.queued + c.sr_pending),
         OrthancPluginMetricsType_Default},
        {"cxr_triage_studies_done", (double)c.done, OrthancPluginMetricsType_Default},
        {"cxr_triage_instances_analysed", (double)c.instances_analysed,
         OrthancPluginMetricsType_Default},
        {"cxr_triage_instances_not_analysed", (double)c.instances_not_analysed,
         OrthancPluginMetricsType_Default},
        {"cxr_triage_srs_stored", (double)c.srs_stored, OrthancPluginMetricsType_Default},
        {"cxr_triage_forwards_pending", (double)c.forwards_pending,
         OrthancPluginMetricsType_Default},
        {"cxr_triage_forwards_dead", (double)c.forwards_dead, OrthancPluginMetricsType_Default},
        {"cxr_triage_errors", (double)atomic_load(&p->errors), OrthancPluginMetricsType_Default},
        {"cxr_triage_study_ms", study_ms, OrthancPluginMetricsType_Timer},
        {"cxr_triage_image_ms", image_ms, OrthancPluginMetricsType_Timer},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        OrthancPluginSetMetricsValue(p->ctx, m[i].name, (float)m[i].v, m[i].type);
}
