/* orthanc_rest.c — the plugin's REST routes under /cxr-triage/ and the page
 * at /cxr-triage/ui/ (files embedded at build time). They run on Orthanc's
 * HTTP threads (registered without Orthanc's global plugin lock: every
 * route only reads the queue file or enqueues, and wakes the worker).
 *
 *   GET  /cxr-triage/worklist[?limit=N]   studies by priority (the node's rules)
 *   GET  /cxr-triage/studies/{id}         one study (Orthanc ID or Study Instance UID)
 *   POST /cxr-triage/studies/{id}/score   queue it now
 *   POST /cxr-triage/studies/{id}/read, /unread   a reader's mark (JSON requests only)
 *   GET  /cxr-triage/status               model, backend, queue, counts, last error
 *   POST /cxr-triage/reload               read the configuration and model again
 *   GET  /cxr-triage/forwards[?state=pending|done|dead]
 *   POST /cxr-triage/forwards/{id}/retry, POST /cxr-triage/forwards/retry (every dead one)
 *   GET  /cxr-triage/ui/                  the worklist page (→ ui/index.html)
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cxr/version.h"
#include "orthanc_internal.h"
#include "plugin_json.h"

#define ANSWER_LIMIT 1000

static void answer_json(struct plugin *p, OrthancPluginRestOutput *out, char *text)
{
    if (!text) {
        OrthancPluginSendHttpStatusCode(p->ctx, out, 500);
        return;
    }
    OrthancPluginSetHttpHeader(p->ctx, out, "Cache-Control", "no-store");
    OrthancPluginAnswerBuffer(p->ctx, out, text, (uint32_t)strlen(text), "application/json");
    free(text);
}

static void answer_error(struct plugin *p, OrthancPluginRestOutput *out, uint16_t code,
                         const char *msg)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    const char *t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    OrthancPluginSendHttpStatus(p->ctx, out, code, t, (uint32_t)strlen(t));
    json_object_put(o);
}

static const char *get_arg(const OrthancPluginHttpRequest *req, const char *key)
{
    for (uint32_t i = 0; i < req->getCount; i++)
        if (!strcmp(req->getKeys[i], key))
            return req->getValues[i];
    return NULL;
}

/* Whether `key` has the shape of an Orthanc identifier (5 groups of 8 hex digits). */
static bool is_orthanc_id(const char *key)
{
    if (strlen(key) != 44)
        return false;
    for (int i = 0; i < 44; i++) {
        bool dash = i % 9 == 8;
        if (dash ? key[i] != '-' : !isxdigit((unsigned char)key[i]))
            return false;
    }
    return true;
}

/* Returns the plugin, or answers 503 and returns NULL when there is no queue. */
static struct plugin *ready_db(OrthancPluginRestOutput *out)
{
    struct plugin *p = g_plugin;
    if (!p)
        return NULL;
    if (!p->db) {
        pthread_mutex_lock(&p->lock);
        char why[PLUGIN_ERRLEN + 64];
        snprintf(why, sizeof why, "the plugin has no queue: %s",
                 p->health_reason[0] ? p->health_reason : "not configured");
        pthread_mutex_unlock(&p->lock);
        answer_error(p, out, 503, why);
        return NULL;
    }
    return p;
}

/* ready_db for a route served for one method only: NULL (answered: 503,
 * or 405 naming `allow`) when the request cannot go on. */
static struct plugin *ready_for(OrthancPluginRestOutput *out, const OrthancPluginHttpRequest *req,
                                OrthancPluginHttpMethod method, const char *allow)
{
    struct plugin *p = ready_db(out);
    if (p && req->method != method) {
        OrthancPluginSendMethodNotAllowed(p->ctx, out, allow);
        return NULL;
    }
    return p;
}

/* ------------------------------------------------------------------ worklist, studies */

static OrthancPluginErrorCode on_worklist(OrthancPluginRestOutput *out, const char *url,
                                          const OrthancPluginHttpRequest *req)
{
    struct plugin *p = ready_for(out, req, OrthancPluginHttpMethod_Get, "GET");
    if (!p)
        return OrthancPluginErrorCode_Success;
    struct cxr_triage_worklist_options o;
    plugin_worklist_options(p, &o);
    const char *lim = get_arg(req, "limit");
    if (lim && atoi(lim) > 0)
        o.limit = (size_t)atoi(lim);
    int64_t since = o.window_hours ? o.now_ms - (int64_t)o.window_hours * 3600000 : 0;
    struct plugin_study *rows = NULL;
    size_t n = 0;
    if (plugin_db_studies_list(p->db, since, 100000, &rows, &n) != CXR_OK) {
        answer_error(p, out, 500, plugin_db_last_error());
        return OrthancPluginErrorCode_Success;
    }
    answer_json(p, out, plugin_worklist_json(rows, n, &o));
    free(rows);
    (void)url;
    return OrthancPluginErrorCode_Success;
}

/* Finds a study row by Orthanc ID or Study Instance UID. */
static bool find_study(struct plugin *p, const char *key, struct plugin_study *s)
{
    bool found = false;
    if (plugin_db_study_get(p->db, key, !is_orthanc_id(key), s, &found) != CXR_OK)
        return false;
    return found;
}

static OrthancPluginErrorCode on_study(OrthancPluginRestOutput *out, const char *url,
                                       const OrthancPluginHttpRequest *req)
{
    struct plugin *p = ready_for(out, req, OrthancPluginHttpMethod_Get, "GET");
    if (!p)
        return OrthancPluginErrorCode_Success;
    struct plugin_study s;
    if (req->groupsCount < 1 || !find_study(p, req->groups[0], &s)) {
        answer_error(p, out, 404,
                     "study not known to the plugin (not received since the plugin "
                     "was installed: POST .../score to score it)");
        return OrthancPluginErrorCode_Success;
    }
    struct plugin_instance *inst = NULL;
    struct plugin_forward *fw = NULL;
    size_t n = 0, nfw = 0;
    if (plugin_db_study_instances(p->db, s.orthanc_id, &inst, &n) != CXR_OK ||
        plugin_db_forwards_list(p->db, -1, s.orthanc_id, 100, &fw, &nfw) != CXR_OK) {
        answer_error(p, out, 500, plugin_db_last_error());
    } else {
        struct cxr_triage_worklist_options o;
        plugin_worklist_options(p, &o);
        answer_json(p, out, plugin_study_json(&s, inst, n, fw, nfw, &o));
    }
    free(inst);
    free(fw);
    (void)url;
    return OrthancPluginErrorCode_Success;
}

static OrthancPluginErrorCode on_score(OrthancPluginRestOutput *out, const char *url,
                                       const OrthancPluginHttpRequest *req)
{
    struct plugin *p = ready_for(out, req, OrthancPluginHttpMethod_Post, "POST");
    if (!p)
        return OrthancPluginErrorCode_Success;
    const char *key = req->groupsCount ? req->groups[0] : "";
    char id[PLUGIN_ID_LEN] = "";
    if (is_orthanc_id(key)) {
        char uri[96], err[PLUGIN_ERRLEN];
        snprintf(uri, sizeof uri, "/studies/%s", key);
        if (orest_get_json(p, uri, NULL, err) == CXR_OK)
            snprintf(id, sizeof id, "%s", key);
    } else {
        char *found = OrthancPluginLookupStudy(p->ctx, key);
        if (found) {
            snprintf(id, sizeof id, "%s", found);
            OrthancPluginFreeString(p->ctx, found);
        }
    }
    if (!id[0]) {
        answer_error(p, out, 404, "no such study in Orthanc");
        return OrthancPluginErrorCode_Success;
    }
    pthread_mutex_lock(&p->lock);
    int64_t limit = p->queue_limit > 0 ? p->queue_limit : 10000;
    pthread_mutex_unlock(&p->lock);
    enum cxr_status st = plugin_db_study_enqueue(p->db, id, limit, plugin_now_ms());
    if (st != CXR_OK) {
        answer_error(p, out, st == CXR_ERR_LIMIT ? 503 : 500, plugin_db_last_error());
        return OrthancPluginErrorCode_Success;
    }
    plugin_wake(p);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "orthanc_id", json_object_new_string(id));
    json_object_object_add(o, "queued", json_object_new_boolean(1));
    char *text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    answer_json(p, out, text);
    (void)url;
    return OrthancPluginErrorCode_Success;
}

/* ------------------------------------------------------------------ status, reload */

static const char *health_name(enum plugin_health h)
{
    switch (h) {
    case PLUGIN_HEALTH_STARTING: return "starting";
    case PLUGIN_HEALTH_READY: return "ready";
    case PLUGIN_HEALTH_BROKEN: return "broken";
    case PLUGIN_HEALTH_UNCONFIGURED: return "not-configured";
    }
    return "unknown";
}

static OrthancPluginErrorCode on_status(OrthancPluginRestOutput *out, const char *url,
                                        const OrthancPluginHttpRequest *req)
{
    struct plugin *p = g_plugin;
    if (!p)
        return OrthancPluginErrorCode_Success;
    if (req->method != OrthancPluginHttpMethod_Get) {
        OrthancPluginSendMethodNotAllowed(p->ctx, out, "GET");
        return OrthancPluginErrorCode_Success;
    }
    json_object *o = json_object_new_object(), *m = json_object_new_object();
    json_object_object_add(o, "plugin", json_object_new_string(PLUGIN_NAME));
    json_object_object_add(o, "version", json_object_new_string(CXR_VERSION));
    json_object_object_add(o, "orthanc_version", json_object_new_string(p->ctx->orthancVersion));
    json_object_object_add(o, "config_file", json_object_new_string(p->os.config_file));
    pthread_mutex_lock(&p->lock);
    json_object_object_add(o, "state", json_object_new_string(health_name(p->health)));
    if (p->health_reason[0])
        json_object_object_add(o, "reason", json_object_new_string(p->health_reason));
    if (p->engine) {
        const struct cxr_nn_model_meta *meta = cxr_triage_engine_model_meta(p->engine);
        json_object_object_add(m, "path",
                               json_object_new_string(cxr_triage_engine_model_path(p->engine)));
        json_object_object_add(m, "name", json_object_new_string(meta->name));
        json_object_object_add(m, "version", json_object_new_string(meta->version));
        json_object_object_add(m, "sha256",
                               json_object_new_string(cxr_triage_engine_model_sha256(p->engine)));
        json_object_object_add(m, "untrained",
                               json_object_new_boolean(cxr_nn_model_meta_untrained(meta)));
        json_object_object_add(m, "description",
                               json_object_new_string(cxr_triage_engine_describe(p->engine)));
        json_object_object_add(
            m, "priority_threshold",
            json_object_new_double(cxr_triage_engine_operating_threshold(p->engine)));
        json_object_object_add(
            m, "urgent_threshold",
            json_object_new_double(cxr_triage_engine_urgent_threshold(p->engine)));
        json_object_object_add(o, "backend", json_object_new_string(p->backend_note));
    }
    json_object_object_add(o, "model", m);
    json_object_object_add(o, "state_dir", json_object_new_string(p->state_dir));
    json_object_object_add(o, "last_error", json_object_new_string(p->last_error));
    json_object_object_add(o, "last_error_ms", json_object_new_int64(p->last_error_ms));
    json_object_object_add(o, "last_study_ms", json_object_new_double(p->last_study_ms));
    json_object_object_add(o, "last_image_ms", json_object_new_double(p->last_image_ms));
    int64_t limit = p->queue_limit;
    pthread_mutex_unlock(&p->lock);
    json_object_object_add(o, "errors", json_object_new_int64(atomic_load(&p->errors)));
    json_object *md = json_object_new_object();
    static const char *const policy[] = {"gated", "all", "none"};
    pthread_mutex_lock(&p->lock);
    int pol = p->conf ? (int)p->conf->plugin.metadata : 0;
    pthread_mutex_unlock(&p->lock);
    json_object_object_add(md, "policy",
                           json_object_new_string(pol >= 0 && pol <= 2 ? policy[pol] : "?"));
    json_object_object_add(md, "declared", json_object_new_boolean(p->os.metadata_declared));
    if (!p->os.metadata_declared)
        json_object_object_add(md, "missing", json_object_new_string(p->os.metadata_missing));
    json_object_object_add(o, "metadata", md);
    json_object_object_add(o, "labels", json_object_new_boolean(p->labels));
    json_object_object_add(o, "stable_age_s", json_object_new_int(p->os.stable_age_s));
    struct plugin_counts c;
    if (p->db && plugin_db_counts(p->db, &c) == CXR_OK) {
        json_object *q = json_object_new_object(), *k = json_object_new_object();
        int64_t seq = 0;
        bool have = false;
        plugin_db_cursor(p->db, &seq, &have);
        json_object_object_add(q, "depth",
                               json_object_new_int64(c.waiting + c.queued + c.sr_pending));
        json_object_object_add(q, "waiting", json_object_new_int64(c.waiting));
        json_object_object_add(q, "queued", json_object_new_int64(c.queued));
        json_object_object_add(q, "sr_pending", json_object_new_int64(c.sr_pending));
        json_object_object_add(q, "limit", json_object_new_int64(limit));
        json_object_object_add(q, "change_seq", json_object_new_int64(seq));
        json_object_object_add(o, "queue", q);
        json_object_object_add(k, "studies_done", json_object_new_int64(c.done));
        json_object_object_add(k, "instances_analysed",
                               json_object_new_int64(c.instances_analysed));
        json_object_object_add(k, "instances_not_analysed",
                               json_object_new_int64(c.instances_not_analysed));
        json_object_object_add(k, "srs", json_object_new_int64(c.srs));
        json_object_object_add(k, "srs_stored", json_object_new_int64(c.srs_stored));
        json_object_object_add(k, "forwards_pending", json_object_new_int64(c.forwards_pending));
        json_object_object_add(k, "forwards_done", json_object_new_int64(c.forwards_done));
        json_object_object_add(k, "forwards_dead", json_object_new_int64(c.forwards_dead));
        json_object_object_add(o, "counts", k);
    }
    char *text = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    answer_json(p, out, text);
    (void)url;
    return OrthancPluginErrorCode_Success;
}

static OrthancPluginErrorCode on_reload(OrthancPluginRestOutput *out, const char *url,
                                        const OrthancPluginHttpRequest *req)
{
    struct plugin *p = g_plugin;
    if (!p)
        return OrthancPluginErrorCode_Success;
    if (req->method != OrthancPluginHttpMethod_Post) {
        OrthancPluginSendMethodNotAllowed(p->ctx, out, "POST");
        return OrthancPluginErrorCode_Success;
    }
    if (!p->os.configured) {
        answer_error(p, out, 409, "no CxrTriage.ConfigFile in Orthanc's configuration");
        return OrthancPluginErrorCode_Success;
    }
    atomic_store(&p->reload_requested, true);
    plugin_wake(p);
    answer_json(p, out, strdup("{\"reload\":\"requested\"}"));
    (void)url;
    return OrthancPluginErrorCode_Success;
}

/* ------------------------------------------------------------------ forwards */

static OrthancPluginErrorCode on_forwards(OrthancPluginRestOutput *out, const char *url,
                                          const OrthancPluginHttpRequest *req)
{
    struct plugin *p = ready_for(out, req, OrthancPluginHttpMethod_Get, "GET");
    if (!p)
        return OrthancPluginErrorCode_Success;
    int32_t state = -1;
    const char *s = get_arg(req, "state");
    if (s)
        state = !strcmp(s, "pending") ? 0 : !strcmp(s, "done") ? 1 : !strcmp(s, "dead") ? 2 : -2;
    if (state == -2) {
        answer_error(p, out, 400, "state must be pending, done or dead");
        return OrthancPluginErrorCode_Success;
    }
    struct plugin_forward *fw = NULL;
    size_t n = 0;
    if (plugin_db_forwards_list(p->db, state, NULL, ANSWER_LIMIT, &fw, &n) != CXR_OK)
        answer_error(p, out, 500, plugin_db_last_error());
    else
        answer_json(p, out, plugin_forwards_json(fw, n));
    free(fw);
    (void)url;
    return OrthancPluginErrorCode_Success;
}

static OrthancPluginErrorCode on_retry(OrthancPluginRestOutput *out, const char *url,
                                       const OrthancPluginHttpRequest *req)
{
    struct plugin *p = ready_for(out, req, OrthancPluginHttpMethod_Post, "POST");
    if (!p)
        return OrthancPluginErrorCode_Success;
    int64_t id = req->groupsCount ? strtoll(req->groups[0], NULL, 10) : 0;
    int64_t count = 0;
    if (plugin_db_forwards_retry(p->db, id, plugin_now_ms(), &count) != CXR_OK) {
        answer_error(p, out, 500, plugin_db_last_error());
        return OrthancPluginErrorCode_Success;
    }
    if (id > 0 && count == 0) {
        answer_error(p, out, 404, "no pending or dead forward with that id");
        return OrthancPluginErrorCode_Success;
    }
    plugin_wake(p);
    char text[64];
    snprintf(text, sizeof text, "{\"retried\":%lld}", (long long)count);
    answer_json(p, out, strdup(text));
    (void)url;
    return OrthancPluginErrorCode_Success;
}

/* ------------------------------------------------------------------ the page */

static OrthancPluginErrorCode on_ui_root(OrthancPluginRestOutput *out, const char *url,
                                         const OrthancPluginHttpRequest *req)
{
    /* Orthanc hands both /cxr-triage/ui and /cxr-triage/ui/ over as
     * "/cxr-triage/ui": only an absolute target resolves the same from both
     * (the page's own links are relative, so it works behind a proxy). */
    struct plugin *p = g_plugin;
    if (p)
        OrthancPluginRedirect(p->ctx, out, "/cxr-triage/ui/index.html");
    (void)url;
    (void)req;
    return OrthancPluginErrorCode_Success;
}

static OrthancPluginErrorCode on_ui(OrthancPluginRestOutput *out, const char *url,
                                    const OrthancPluginHttpRequest *req)
{
    struct plugin *p = g_plugin;
    if (!p)
        return OrthancPluginErrorCode_Success;
    if (req->method != OrthancPluginHttpMethod_Get) {
        OrthancPluginSendMethodNotAllowed(p->ctx, out, "GET");
        return OrthancPluginErrorCode_Success;
    }
    const struct cxr_ui_asset *a = cxr_ui_asset_find(req->groupsCount ? req->groups[0] : NULL);
    if (a) {
        OrthancPluginSetHttpHeader(p->ctx, out, "Cache-Control", "no-cache");
        OrthancPluginAnswerBuffer(p->ctx, out, a->data, (uint32_t)a->size, a->mime);
        return OrthancPluginErrorCode_Success;
    }
    OrthancPluginSendHttpStatusCode(p->ctx, out, 404);
    (void)url;
    return OrthancPluginErrorCode_Success;
}

/* POST /cxr-triage/studies/{id}/read and /unread: a reader marks the study
 * done (it leaves the page's list until something new arrives) or not.
 * Orthanc's own authentication applies; besides, only a JSON request is
 * taken, which a page of another site cannot send without a CORS preflight
 * (no cross-site marking through a browser's saved credentials). */
static OrthancPluginErrorCode on_read(OrthancPluginRestOutput *out, const char *url,
                                      const OrthancPluginHttpRequest *req)
{
    struct plugin *p = ready_for(out, req, OrthancPluginHttpMethod_Post, "POST");
    if (!p)
        return OrthancPluginErrorCode_Success;
    bool json = false;
    for (uint32_t i = 0; i < req->headersCount; i++)
        if (!strcasecmp(req->headersKeys[i], "content-type") &&
            !strncasecmp(req->headersValues[i], "application/json", 16))
            json = true;
    if (!json) {
        answer_error(p, out, 415, "send Content-Type: application/json");
        return OrthancPluginErrorCode_Success;
    }
    const char *id = req->groupsCount > 0 ? req->groups[0] : "";
    bool read = req->groupsCount > 1 && !strcmp(req->groups[1], "read");
    bool found = false;
    if (plugin_db_study_mark_read(p->db, id, read ? plugin_now_ms() : 0, &found) != CXR_OK) {
        answer_error(p, out, 500, plugin_db_last_error());
        return OrthancPluginErrorCode_Success;
    }
    if (!found) {
        answer_error(p, out, 404, "no such study in the plugin's queue");
        return OrthancPluginErrorCode_Success;
    }
    plugin_log(p, PLOG_INFO, "study %s marked %s", id, read ? "read" : "unread");
    json_object *o = json_object_new_object();
    json_object_object_add(o, "orthanc_id", json_object_new_string(id));
    json_object_object_add(o, "read", json_object_new_boolean(read));
    char *text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    answer_json(p, out, text);
    (void)url;
    return OrthancPluginErrorCode_Success;
}

void plugin_register_rest(struct plugin *p)
{
    static const struct {
        const char *re;
        OrthancPluginRestCallback cb;
    } routes[] = {
        {"/cxr-triage/worklist", on_worklist},
        {"/cxr-triage/status", on_status},
        {"/cxr-triage/reload", on_reload},
        {"/cxr-triage/studies/([^/]+)", on_study},
        {"/cxr-triage/studies/([^/]+)/score", on_score},
        {"/cxr-triage/studies/([^/]+)/(read|unread)", on_read},
        {"/cxr-triage/forwards", on_forwards},
        {"/cxr-triage/forwards/retry", on_retry},
        {"/cxr-triage/forwards/([0-9]+)/retry", on_retry},
        {"/cxr-triage/ui", on_ui_root},
        {"/cxr-triage/ui/([a-z0-9._-]*)", on_ui},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        OrthancPluginRegisterRestCallbackNoLock(p->ctx, routes[i].re, routes[i].cb);
}
