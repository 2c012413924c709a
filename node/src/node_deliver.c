/* node_deliver.c — SR delivery: one thread per destination, so that a
 * destination that is down never holds up another one (nor reception or
 * scoring, which never wait on delivery). Each thread sends the due SRs of
 * its destination, most severe study first, over a new association each;
 * a failure is retried after an exponential, jittered, capped delay; after
 * the maximum attempts the delivery is dead-lettered for `cxr-triage queue`.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cxr/log.h"
#include "node_internal.h"

void node_scu_target(const struct cxr_node_settings *set, const struct cxr_node_destination *d,
                     struct cxr_dicom_scu_target *t)
{
    memset(t, 0, sizeof *t);
    t->called_ae = d->ae_title;
    t->calling_ae = d->calling_ae_title[0] ? d->calling_ae_title : set->ae_title;
    t->host = d->host;
    t->port = d->port;
    t->max_pdu = set->max_pdu;
    t->connect_timeout_s = set->connect_timeout_s;
    t->dimse_timeout_s = set->dimse_timeout_s;
    t->tls.enabled = d->tls;
    if (d->tls) {
        t->tls.certificate = set->tls_certificate[0] ? set->tls_certificate : NULL;
        t->tls.private_key = set->tls_private_key[0] ? set->tls_private_key : NULL;
        t->tls.ca_certificates = set->tls_ca_certificates[0] ? set->tls_ca_certificates : NULL;
        t->tls.verify_peer = t->tls.ca_certificates != NULL;
    }
}

static double rand01(uint32_t *state)
{
    /* xorshift32: jitter only, not security */
    uint32_t x = *state ? *state : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return (double)(x >> 8) / (double)(1u << 24);
}

/* One attempt for one due delivery. */
static void attempt(struct node_deliverer *dl, const struct cxr_node_delivery_row *row)
{
    struct cxr_node *n = dl->node;
    /* The target and retry policy as configured now (a reload may change them). */
    struct cxr_node_settings *set = malloc(sizeof *set);
    if (!set)
        return;
    pthread_rwlock_rdlock(&n->gen_lock);
    *set = n->set;
    pthread_rwlock_unlock(&n->gen_lock);
    struct cxr_dicom_scu_target t;
    node_scu_target(set, &dl->dest, &t);
    char path[CXR_NODE_PATHLEN + CXR_NODE_STORE_PATHLEN + 2];
    snprintf(path, sizeof path, "%s/%s", n->spool_dir, row->sr_path);

    char err[CXR_ERRLEN] = "";
    uint16_t dimse = 0xFFFF;
    double t0 = node_mono_ms();
    enum cxr_status st = cxr_dicom_scu_store_file(&t, path, &dimse, err);
    double took = node_mono_ms() - t0;
    int64_t now = node_now_ms();
    int32_t attempts = row->attempts + 1;
    bool stored = st == CXR_OK && (dimse == 0x0000 || (dimse & 0xF000) == 0xB000);
    if (stored) {
        cxr_node_store_delivery_update(n->store, row->id, CXR_NODE_DELIVERY_DELIVERED, attempts, 0,
                                       "", now);
        cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_SR_DELIVERED, 1);
        cxr_node_metrics_observe(n->metrics, CXR_NODE_STAGE_DELIVER, took / 1e3);
        cxr_node_metrics_observe(n->metrics, CXR_NODE_STAGE_RESULT,
                                 (double)(now - row->study_last_received_ms) / 1e3);
        cxr_log(CXR_LOG_INFO, "node", "SR %s (study %s) delivered to %s (%s@%s:%u) in %.0f ms%s",
                row->sr_sop_instance_uid, row->study_instance_uid, dl->dest.name, dl->dest.ae_title,
                dl->dest.host, (unsigned)dl->dest.port, took,
                dimse ? " (with a warning status)" : "");
        goto done;
    }
    char why[640];
    if (st == CXR_OK)
        snprintf(why, sizeof why, "the destination answered status 0x%04X", dimse);
    else
        snprintf(why, sizeof why, "%.600s", err[0] ? err : cxr_status_str(st));
    cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_SR_ATTEMPT_FAILED, 1);
    struct cxr_triage_retry policy = {.base_ms = (int64_t)set->retry_base_s * 1000,
                                      .cap_ms = (int64_t)set->retry_cap_s * 1000,
                                      .max_attempts = (int32_t)set->retry_max_attempts};
    int64_t next = 0;
    if (!cxr_triage_retry_next(&policy, attempts, now, rand01(&dl->rng), &next)) {
        cxr_node_store_delivery_update(n->store, row->id, CXR_NODE_DELIVERY_DEAD, attempts, 0, why,
                                       now);
        cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_SR_DEAD, 1);
        cxr_log(CXR_LOG_ERROR, "node",
                "SR %s (study %s) to %s: attempt %d failed: %s; given up (dead letter:"
                " cxr-triage queue list --dead, then queue retry)",
                row->sr_sop_instance_uid, row->study_instance_uid, dl->dest.name, attempts, why);
        goto done;
    }
    int64_t delay = next - now;
    cxr_node_store_delivery_update(n->store, row->id, CXR_NODE_DELIVERY_PENDING, attempts, next,
                                   why, now);
    cxr_log(CXR_LOG_WARN, "node", "SR %s (study %s) to %s: attempt %d failed: %s; next in %.1f s",
            row->sr_sop_instance_uid, row->study_instance_uid, dl->dest.name, attempts, why,
            (double)delay / 1e3);
done:
    free(set);
}

static void *deliverer_main(void *arg)
{
    struct node_deliverer *dl = arg;
    struct cxr_node *n = dl->node;
    while (!atomic_load(&dl->stop) && !atomic_load(&n->stopping)) {
        uint64_t seq = node_wake_seq(n);
        struct cxr_node_delivery_row row;
        bool found = false;
        int64_t due = INT64_MAX;
        int64_t now = node_now_ms();
        if (cxr_node_store_delivery_next(n->store, dl->dest.name, now, &row, &found, &due) !=
            CXR_OK) {
            cxr_log(CXR_LOG_ERROR, "node", "deliveries to %s: %s", dl->dest.name,
                    cxr_node_store_last_error());
            node_wait(n, seq, now + 2000);
            continue;
        }
        if (found) {
            attempt(dl, &row);
            continue;
        }
        /* Nothing due: sleep until the next attempt, a new SR, or 1 s (the
         * queue command may have put a dead letter back from another process). */
        int64_t until = now + 1000;
        if (due < until)
            until = due;
        node_wait(n, seq, until);
    }
    return NULL;
}

enum cxr_status node_deliverers_start(struct cxr_node *n)
{
    pthread_rwlock_rdlock(&n->gen_lock);
    size_t nd = n->set.destination_count;
    struct node_deliverer *v = calloc(nd ? nd : 1, sizeof *v);
    if (v)
        for (size_t i = 0; i < nd; i++) {
            v[i].node = n;
            v[i].dest = n->set.destinations[i];
            v[i].rng = (uint32_t)node_now_ms() ^ (uint32_t)(i * 2654435761u);
            atomic_init(&v[i].stop, false);
        }
    pthread_rwlock_unlock(&n->gen_lock);
    if (!v)
        return CXR_ERR_NOMEM;
    for (size_t i = 0; i < nd; i++) {
        if (pthread_create(&v[i].thread, NULL, deliverer_main, &v[i]) != 0) {
            cxr_log(CXR_LOG_ERROR, "node", "cannot start the delivery thread for %s",
                    v[i].dest.name);
            continue;
        }
        v[i].started = true;
    }
    pthread_mutex_lock(&n->deliverers_mu);
    n->deliverers = v;
    n->ndeliverers = nd;
    pthread_mutex_unlock(&n->deliverers_mu);
    return CXR_OK;
}

void node_deliverers_stop(struct cxr_node *n)
{
    pthread_mutex_lock(&n->deliverers_mu);
    struct node_deliverer *v = n->deliverers;
    size_t nd = n->ndeliverers;
    n->deliverers = NULL;
    n->ndeliverers = 0;
    pthread_mutex_unlock(&n->deliverers_mu);
    for (size_t i = 0; i < nd; i++)
        atomic_store(&v[i].stop, true);
    node_wake(n);
    for (size_t i = 0; i < nd; i++)
        if (v[i].started)
            pthread_join(v[i].thread, NULL);
    free(v);
}
