/* orthanc_forward.c — the forwarder thread: sends each stored SR (and, when
 * configured, each scored study) to Orthanc modalities and peers through
 * Orthanc's own REST API (POST /modalities/{name}/store, /peers/{name}/store,
 * synchronous), one at a time, oldest due first. A failure is retried with
 * exponential backoff and jitter (plugin/retry-seconds, doubling, at most
 * 10 min); after plugin/retry-max-attempts the forward is dead: listed on
 * GET /cxr-triage/forwards and in the study's page, retryable with
 * POST /cxr-triage/forwards/{id}/retry (or .../forwards/retry for every dead
 * one). A forward in flight when Orthanc stops is sent again at the next
 * start (C-STORE of the same instances is idempotent at the receiver). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/outbox.h"
#include "orthanc_internal.h"

#define RETRY_CAP_MS 600000

/* Sends one forward; err says why it failed. */
static enum cxr_status send_one(struct plugin *p, const struct plugin_forward *f, char *err)
{
    struct plugin_target t;
    size_t n = 0;
    if (plugin_targets_parse(f->target, &t, 1, &n, err) != CXR_OK || n != 1) {
        if (n != 1)
            snprintf(err, PLUGIN_ERRLEN, "forward target '%s' is not valid", f->target);
        return CXR_ERR_CONF_VALUE;
    }
    char uri[256], body[256];
    snprintf(uri, sizeof uri, "/%s/%s/store", t.kind == PLUGIN_TARGET_PEER ? "peers" : "modalities",
             t.name);
    int len =
        snprintf(body, sizeof body, "{\"Resources\":[\"%s\"],\"Synchronous\":true}", f->resource);
    json_object *ans = NULL;
    enum cxr_status st = orest_post(p, uri, body, (size_t)len, &ans, err);
    json_object_put(ans);
    return st;
}

void *plugin_forwarder_main(void *arg)
{
    struct plugin *p = arg;
    while (!atomic_load(&p->stopping)) {
        uint64_t seq = plugin_wake_seq(p);
        int64_t now = plugin_now_ms();
        if (!p->db) {
            plugin_wait(p, seq, now + 1000);
            continue;
        }
        struct plugin_forward f;
        bool found = false;
        int64_t next_due = INT64_MAX;
        if (plugin_db_forward_next(p->db, now, &f, &found, &next_due) != CXR_OK) {
            plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
            plugin_wait(p, seq, now + 2000);
            continue;
        }
        if (!found) {
            plugin_wait(p, seq, next_due < now + 5000 ? next_due : now + 5000);
            continue;
        }
        char err[PLUGIN_ERRLEN] = "";
        enum cxr_status st = send_one(p, &f, err);
        int32_t attempts = f.attempts + 1;
        pthread_mutex_lock(&p->lock);
        int64_t base_ms = (int64_t)(p->retry_s ? p->retry_s : 10) * 1000;
        int32_t max = (int32_t)(p->retry_max ? p->retry_max : 12);
        pthread_mutex_unlock(&p->lock);
        now = plugin_now_ms();
        enum cxr_status ust;
        int64_t next = 0;
        if (st == CXR_OK) {
            ust = plugin_db_forward_update(p->db, f.id, PLUGIN_FORWARD_DONE, attempts, 0, "", now);
            plugin_log(p, PLOG_INFO, "forward %lld: %s %s sent to %s", (long long)f.id, f.kind,
                       f.resource, f.target);
        } else if (!cxr_triage_retry_next(
                       &(struct cxr_triage_retry){
                           .base_ms = base_ms, .cap_ms = RETRY_CAP_MS, .max_attempts = max},
                       attempts, now, (double)rand() / ((double)RAND_MAX + 1.0), &next)) {
            ust = plugin_db_forward_update(p->db, f.id, PLUGIN_FORWARD_DEAD, attempts, 0, err, now);
            plugin_log(p, PLOG_ERROR,
                       "forward %lld of %s %s to %s is dead after %d attempts: %s "
                       "(POST /cxr-triage/forwards/%lld/retry once fixed)",
                       (long long)f.id, f.kind, f.resource, f.target, attempts, err,
                       (long long)f.id);
        } else {
            int64_t delay = next - now;
            ust = plugin_db_forward_update(p->db, f.id, PLUGIN_FORWARD_PENDING, attempts, next, err,
                                           now);
            plugin_log(p, PLOG_WARN,
                       "forward %lld of %s %s to %s failed (attempt %d of %d, next "
                       "in %lld s): %s",
                       (long long)f.id, f.kind, f.resource, f.target, attempts, max,
                       (long long)(delay / 1000), err);
        }
        if (ust != CXR_OK) {
            plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
            plugin_wait(p, seq, now + 2000);
        }
    }
    return NULL;
}
