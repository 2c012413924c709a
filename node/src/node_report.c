/* node_report.c — study stability and the SR.
 *
 * A study is stable when no instance of it arrived for study_stable_s
 * seconds and no job still waiting to be read could belong to it (every job
 * received up to last arrival + stable time has been processed: the study of
 * an instance is only known once its file is read). A stable study with
 * processed instances not yet reported gets one SR listing every image of
 * the study (cxr_triage_study_decide: analysed ones with their finding, the
 * others with the reason they were not analysed); when the study already had
 * an SR, the new one names it in the Predecessor Documents Sequence. A study
 * in which nothing could be analysed gets an SR saying so unless
 * sr/report-not-analysed is false. Objects that are not images stay listed
 * (worklist, /studies) with their reason only.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cxr/decision.h"
#include "cxr/log.h"
#include "node_internal.h"

#define REPORT_POLL_MS 250

/* The header values of an analysed instance: from the store, or read again
 * from its spool file when the store has none (a row from another version). */
static bool fill_info(struct cxr_node *n, const struct cxr_triage_instance_row *row,
                      struct cxr_dicom_info *info)
{
    if (!row->path[0])
        return false;
    struct cxr_dicom_instance *inst = NULL;
    char err[CXR_ERRLEN];
    if (node_instance_load(n, row->id, row->in_store, row->path, NULL, &inst, err) != CXR_OK)
        return false;
    *info = *cxr_dicom_instance_info(inst);
    cxr_dicom_instance_free(inst);
    return true;
}

/* Builds and stores the report decision for one stable study. Returns false
 * when it must be tried again later (SR not writable now). */
static bool report_study(struct cxr_node *n, const struct cxr_triage_study_row *study)
{
    struct cxr_triage_instance_row *rows = NULL;
    size_t k = 0;
    if (cxr_node_store_study_instances(n->store, study->study_instance_uid, &rows, &k) != CXR_OK) {
        cxr_log(CXR_LOG_ERROR, "node", "study %s: %s", study->study_instance_uid,
                cxr_node_store_last_error());
        return false;
    }
    int64_t up_to = 0;
    for (size_t i = 0; i < k; i++) {
        struct cxr_triage_instance_row *r = &rows[i];
        if (r->id > up_to)
            up_to = r->id;
        /* a row from another version may lack its header values: read them
         * again from the spool file while it is there */
        if (r->state != CXR_TRIAGE_INSTANCE_RECEIVED && !r->has_info)
            r->has_info = fill_info(n, r, &r->info);
    }
    struct cxr_triage_decision d;
    pthread_rwlock_rdlock(&n->gen_lock);
    enum cxr_status dst = cxr_triage_study_decide(n->conf, rows, k, &d);
    pthread_rwlock_unlock(&n->gen_lock);
    free(rows);
    if (dst != CXR_OK)
        return false;
    struct cxr_triage_result *res = d.results;
    int32_t nres = d.count, not_analysed = d.not_analysed + d.unlisted;

    struct cxr_node_store_report rep = {.study_instance_uid = study->study_instance_uid,
                                        .up_to_instance_id = up_to,
                                        .study_last_received_ms = study->last_received_ms,
                                        .created_ms = node_now_ms()};
    char sop[CXR_DICOM_UID_LEN] = "", series[CXR_DICOM_UID_LEN] = "", rel[CXR_NODE_STORE_PATHLEN];
    const char *names[CXR_NODE_MAX_DESTINATIONS];
    bool ok = true;
    if (d.make_sr) {
        double t0 = node_mono_ms();
        void *buf = NULL;
        size_t len = 0;
        char err[CXR_ERRLEN] = "";
        struct cxr_triage_sr_predecessor pred = {
            .sop_instance_uid = study->last_sr_sop_instance_uid,
            .series_instance_uid = study->last_sr_series_instance_uid};
        pthread_rwlock_rdlock(&n->gen_lock);
        cxr_dicom_uid_new(series);
        enum cxr_status st = cxr_triage_engine_write_sr(
            n->engine, res, nres, study->sr_count > 0 && pred.sop_instance_uid[0] ? &pred : NULL,
            series, NULL, &buf, &len, sop, err);
        char *copy_dir = n->conf->sr.output_dir && n->conf->sr.output_dir[0]
                             ? cxr_conf_resolve_path(n->conf, n->conf->sr.output_dir)
                             : NULL;
        size_t nd = n->set.destination_count;
        static __thread char dest_names[CXR_NODE_MAX_DESTINATIONS][CXR_NODE_DEST_NAMELEN];
        for (size_t i = 0; i < nd; i++) {
            snprintf(dest_names[i], sizeof dest_names[i], "%s", n->set.destinations[i].name);
            names[i] = dest_names[i];
        }
        pthread_rwlock_unlock(&n->gen_lock);
        if (st != CXR_OK) {
            /* The SR cannot be built from these results: keep the results,
             * say so, do not retry for ever. */
            cxr_log(CXR_LOG_ERROR, "node", "study %s: no SR: %s", study->study_instance_uid,
                    err[0] ? err : cxr_status_str(st));
            free(copy_dir);
            goto record;
        }
        snprintf(rel, sizeof rel, "sr/%s.dcm", sop);
        char path[CXR_NODE_PATHLEN + CXR_NODE_STORE_PATHLEN + 2];
        snprintf(path, sizeof path, "%s/%s", n->spool_dir, rel);
        st = cxr_file_write_atomic(path, buf, len, 0640, err);
        if (st == CXR_OK && copy_dir) {
            /* sr/output-dir: a copy for people and scripts; the spool's is the one delivered */
            char copy[CXR_NODE_PATHLEN + CXR_DICOM_UID_LEN + 8], cerr[CXR_ERRLEN];
            snprintf(copy, sizeof copy, "%.1000s/%s.dcm", copy_dir, sop);
            if (!node_mkdirs(copy_dir) ||
                cxr_file_write_atomic(copy, buf, len, 0640, cerr) != CXR_OK)
                cxr_log(CXR_LOG_WARN, "node", "study %s: no copy of the SR in sr/output-dir %s",
                        study->study_instance_uid, copy_dir);
        }
        free(copy_dir);
        free(buf);
        if (st != CXR_OK) {
            cxr_log(CXR_LOG_ERROR, "node", "study %s: cannot write the SR (will retry): %s",
                    study->study_instance_uid, err);
            ok = false;
            goto out;
        }
        rep.has_sr = true;
        rep.sr_sop_instance_uid = sop;
        rep.sr_series_instance_uid = series;
        rep.sr_path = rel;
        rep.predecessor_sop_instance_uid =
            study->sr_count > 0 ? study->last_sr_sop_instance_uid : "";
        int32_t p = d.priority;
        rep.priority = p > study->priority ? p : study->priority;
        rep.destinations = names;
        rep.destination_count = nd;
        cxr_node_metrics_observe(n->metrics, CXR_NODE_STAGE_SR, (node_mono_ms() - t0) / 1e3);
    }
record:
    if (cxr_node_store_report_add(n->store, &rep, NULL) != CXR_OK) {
        cxr_log(CXR_LOG_ERROR, "node", "study %s: cannot record the report (will retry): %s",
                study->study_instance_uid, cxr_node_store_last_error());
        if (rep.has_sr) {
            char path[CXR_NODE_PATHLEN + CXR_NODE_STORE_PATHLEN + 2];
            snprintf(path, sizeof path, "%s/%s", n->spool_dir, rel);
            unlink(path);
        }
        ok = false;
        goto out;
    }
    if (rep.has_sr) {
        cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_SR_CREATED, 1);
        pthread_rwlock_rdlock(&n->gen_lock);
        const char *pname =
            cxr_triage_priority_name(n->conf, (enum cxr_triage_priority)rep.priority);
        char phi[256];
        cxr_log(CXR_LOG_INFO, "node",
                "study %s%s: SR %s, priority %s, %d image(s) analysed, %d not analysed%s%s",
                study->study_instance_uid, cxr_triage_study_phi(study, phi, sizeof phi), sop, pname,
                d.analysed, not_analysed,
                rep.predecessor_sop_instance_uid[0] ? ", replaces SR " : "",
                rep.predecessor_sop_instance_uid);
        pthread_rwlock_unlock(&n->gen_lock);
    } else {
        cxr_log(CXR_LOG_INFO, "node", "study %s: %s, no SR (%d analysed, %d not analysed)",
                study->study_instance_uid,
                !d.due         ? "no new image to report"
                : d.count == 0 ? "no image to list"
                               : "nothing analysed and sr/report-not-analysed is false",
                d.analysed, not_analysed);
    }
out:
    cxr_triage_decision_release(&d);
    return ok;
}

void *node_reporter_main(void *arg)
{
    struct cxr_node *n = arg;
    while (!atomic_load(&n->stopping)) {
        uint64_t seq = node_wake_seq(n);
        pthread_rwlock_rdlock(&n->gen_lock);
        int64_t stable_ms = (int64_t)n->set.study_stable_s * 1000;
        pthread_rwlock_unlock(&n->gen_lock);
        int64_t next = node_now_ms() + REPORT_POLL_MS;
        int64_t oldest = 0;
        bool any = false;
        struct cxr_triage_study_row *rows = NULL;
        size_t k = 0;
        if (cxr_node_store_pending_oldest(n->store, &oldest, &any) != CXR_OK ||
            cxr_node_store_studies_unreported(n->store, &rows, &k) != CXR_OK) {
            cxr_log(CXR_LOG_ERROR, "node", "reporter: %s", cxr_node_store_last_error());
            node_wait(n, seq, node_now_ms() + 2000);
            continue;
        }
        bool made = false;
        for (size_t i = 0; i < k && !atomic_load(&n->stopping); i++) {
            int64_t quiet_until = rows[i].last_received_ms + stable_ms;
            int64_t now = node_now_ms();
            if (now < quiet_until) {
                if (quiet_until < next)
                    next = quiet_until;
                continue;
            }
            if (any && oldest <= quiet_until)
                continue; /* an unread job may still belong to this study */
            if (report_study(n, &rows[i]))
                made = true;
        }
        free(rows);
        if (made) {
            node_wake(n);
            continue; /* look again at once: the wake was ours */
        }
        node_wait(n, seq, next);
    }
    return NULL;
}
