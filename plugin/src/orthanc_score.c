/* orthanc_score.c — one study, from Orthanc to its SR (see orthanc_score.h).
 *
 *   GET /studies/{id}, /studies/{id}/series, /studies/{id}/instances
 *   → each instance not yet scored with this model (our own SRs skipped;
 *     series whose modality the gate can never accept are not even read)
 *   → its DICOM bytes (OrthancPluginGetDicomForInstance), in batches
 *   → the shared engine (cxr_triage_engine_score: gate, presentation,
 *     preprocessing, forward pass) → results kept in the queue file
 *   → the study's priority (the most severe image; never lowered) and, when
 *     an analysed image is not in an SR yet, one SR over every analysed image
 *     of the study (cxr_triage_engine_write_sr, in memory, kept in the queue
 *     file) → study metadata (and labels on Orthanc >= 1.12) → POST
 *     /instances (same study, new series) → forwards queued.
 * A study deleted from Orthanc meanwhile is dropped, never brought back: its
 * existence is checked after each batch, before metadata and SR, and after
 * the post (orthanc_deleted.c).
 * An instance is marked taken before it is read: one that is taken three
 * times without a result (it crashed the process) is set aside with a reason.
 * One taken before without a result is scored in a batch of its own, so that
 * a crash is counted against the instance that causes it, not its batch mates.
 */
#include "orthanc_score.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cxr/decision.h"
#include "cxr/outbox.h"

#define MAX_TAKES     3
#define RETRY_BASE_MS 5000
#define RETRY_CAP_MS  300000

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void fail_study(struct plugin *p, const char *id, int32_t attempts, const char *err)
{
    /* a study is retried until it works (0: never given up): it may only
     * wait for Orthanc or the disk */
    static const struct cxr_triage_retry policy = {RETRY_BASE_MS, RETRY_CAP_MS, 0};
    int64_t now = plugin_now_ms(), next = 0;
    cxr_triage_retry_next(&policy, attempts + 1, now, (double)rand() / ((double)RAND_MAX + 1.0),
                          &next);
    plugin_log(p, PLOG_ERROR, "study %s: %s (attempt %d, next in %lld s)", id, err, attempts + 1,
               (long long)((next - now) / 1000));
    if (plugin_db_study_failed(p->db, id, err, next) != CXR_OK)
        plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
}

/* ------------------------------------------------------------------ metadata, labels */

static void iso_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void put_metadata(struct plugin *p, const char *id, enum plugin_metadata m,
                         const char *value, bool *warned)
{
    char uri[192], err[PLUGIN_ERRLEN];
    snprintf(uri, sizeof uri, "/studies/%s/metadata/%s", id, plugin_metadata_names[m]);
    if (orest_put(p, uri, value, strlen(value), err) != CXR_OK && !*warned) {
        plugin_log(p, PLOG_WARN, "study %s: metadata not written: %s", id, err);
        *warned = true;
    }
}

static bool modality_possible(const struct cxr_conf *conf, const char *modality);

/* Whether the study gets metadata and labels (plugin/metadata). "gated": it
 * has a series whose modality the gate looks at (modality_possible: the same
 * test that decides which images are read; SR series, ours included, are
 * not); a study whose series Orthanc cannot list gets them. */
static bool metadata_wanted(struct plugin *p, const char *id)
{
    switch (p->conf->plugin.metadata) {
    case CXR_CONF_PLUGIN_METADATA_ALL: return true;
    case CXR_CONF_PLUGIN_METADATA_NONE: return false;
    case CXR_CONF_PLUGIN_METADATA_GATED: break;
    }
    char uri[160], err[PLUGIN_ERRLEN];
    json_object *series = NULL;
    snprintf(uri, sizeof uri, "/studies/%s/series", id);
    if (orest_get_json(p, uri, &series, err) != CXR_OK) {
        json_object_put(series);
        return true;
    }
    bool want = false;
    size_t n = json_object_is_type(series, json_type_array) ? json_object_array_length(series) : 0;
    for (size_t i = 0; i < n && !want; i++) {
        const char *m =
            ojson_str2(json_object_array_get_idx(series, i), "MainDicomTags", "Modality");
        want = strcmp(m, "SR") != 0 && modality_possible(p->conf, m);
    }
    json_object_put(series);
    return want;
}

/* Writes the study's result as metadata (and its label) when
 * plugin/metadata wants them on it. The row has the priority already raised
 * (never lowered). Returns false, having forgotten the study, when Orthanc
 * no longer has it: nothing may be written or posted then. */
static bool write_metadata(struct plugin *p, const struct plugin_study *s)
{
    if (plugin_study_gone(p, s->orthanc_id, "before its result was written"))
        return false;
    if (!metadata_wanted(p, s->orthanc_id))
        return true;
    const struct cxr_conf *conf = p->conf;
    const struct cxr_nn_model_meta *meta = cxr_triage_engine_model_meta(p->engine);
    const char *name = cxr_triage_priority_name(conf, (enum cxr_triage_priority)s->row.priority);
    if (p->os.metadata_declared) {
        bool warned = false;
        char v[256];
        put_metadata(p, s->orthanc_id, PLUGIN_MD_PRIORITY, name, &warned);
        snprintf(v, sizeof v, "%d", s->row.priority);
        put_metadata(p, s->orthanc_id, PLUGIN_MD_LEVEL, v, &warned);
        if (!isnan(s->row.score)) {
            snprintf(v, sizeof v, "%.6f", s->row.score);
            put_metadata(p, s->orthanc_id, PLUGIN_MD_SCORE, v, &warned);
        }
        snprintf(v, sizeof v, "%s%s%s %s", meta->name, meta->version[0] ? " " : "", meta->version,
                 s->model_sha);
        put_metadata(p, s->orthanc_id, PLUGIN_MD_MODEL, v, &warned);
        iso_time(s->scored_ms, v, sizeof v);
        put_metadata(p, s->orthanc_id, PLUGIN_MD_SCORED_AT, v, &warned);
        if (s->row.last_sr_sop_instance_uid[0])
            put_metadata(p, s->orthanc_id, PLUGIN_MD_SR, s->row.last_sr_sop_instance_uid, &warned);
    }
    if (!p->labels)
        return true;
    /* Orthanc >= 1.12: one label for the study's level, the others removed */
    for (int lvl = CXR_TRIAGE_PRIORITY_NOT_ANALYSED; lvl <= CXR_TRIAGE_PRIORITY_URGENT; lvl++) {
        char label[64], uri[192], err[PLUGIN_ERRLEN];
        plugin_label_for(cxr_triage_priority_name(conf, (enum cxr_triage_priority)lvl), label,
                         sizeof label);
        snprintf(uri, sizeof uri, "/studies/%s/labels/%s", s->orthanc_id, label);
        if (lvl == s->row.priority) {
            if (orest_put(p, uri, "", 0, err) != CXR_OK)
                plugin_log(p, PLOG_WARN, "study %s: label %s not set: %s", s->orthanc_id, label,
                           err);
        } else {
            orest_delete(p, uri, err); /* absent: nothing to do */
        }
    }
    return true;
}

/* ------------------------------------------------------------------ storing the SR */

static void store_sr(struct plugin *p, const char *id)
{
    struct plugin_study s;
    bool found = false;
    if (plugin_db_study_get(p->db, id, false, &s, &found) != CXR_OK || !found ||
        s.state != PLUGIN_STUDY_SR_PENDING)
        return;
    void *bytes = NULL;
    size_t len = 0;
    char err[PLUGIN_ERRLEN];
    if (plugin_db_study_sr(p->db, id, &bytes, &len, &found) != CXR_OK || !found) {
        plugin_log(p, PLOG_ERROR, "study %s: the pending SR cannot be read: %s", id,
                   plugin_db_last_error());
        return;
    }
    /* Metadata first: a Lua OnStableStudy that runs when the SR's arrival
     * makes the study stable again sees the priority. */
    if (!write_metadata(p, &s)) {
        free(bytes); /* deleted from Orthanc: the SR must not bring it back */
        return;
    }
    plugin_test_hold(p, "post", id);
    json_object *ans = NULL;
    enum cxr_status st = orest_post(p, "/instances", bytes, len, &ans, err);
    free(bytes);
    if (st != CXR_OK) {
        json_object_put(ans);
        fail_study(p, id, s.attempts, err);
        return;
    }
    char sr_id[PLUGIN_ID_LEN], series_id[PLUGIN_ID_LEN], parent[PLUGIN_ID_LEN], status[32];
    snprintf(sr_id, sizeof sr_id, "%s", ojson_str(ans, "ID"));
    snprintf(series_id, sizeof series_id, "%s", ojson_str(ans, "ParentSeries"));
    snprintf(parent, sizeof parent, "%s", ojson_str(ans, "ParentStudy"));
    snprintf(status, sizeof status, "%s", ojson_str(ans, "Status"));
    json_object_put(ans);
    if (plugin_sr_undo_if_alone(p, id, sr_id))
        return; /* a deletion raced the post */
    if (strcmp(parent, id) != 0)
        plugin_log(p, PLOG_ERROR,
                   "study %s: Orthanc filed the SR %s under study %s (another "
                   "patient ID?)",
                   id, sr_id, parent);
    struct plugin_forward_new fw[2 * PLUGIN_MAX_TARGETS];
    size_t nfw = 0;
    for (size_t i = 0; i < p->n_fw_sr; i++)
        fw[nfw++] = (struct plugin_forward_new){"sr", p->fw_sr[i].text, sr_id};
    for (size_t i = 0; i < p->n_fw_study; i++)
        fw[nfw++] = (struct plugin_forward_new){"study", p->fw_study[i].text, id};
    if (plugin_db_sr_stored(p->db, id, sr_id, series_id, fw, nfw, plugin_now_ms()) != CXR_OK) {
        /* the SR is in Orthanc; posting it again later is harmless (same SOP Instance) */
        fail_study(p, id, s.attempts, plugin_db_last_error());
        return;
    }
    double study_ms = (double)(plugin_now_ms() - s.queued_ms);
    pthread_mutex_lock(&p->lock);
    p->last_study_ms = study_ms;
    pthread_mutex_unlock(&p->lock);
    char phi[256];
    plugin_log(p, PLOG_INFO,
               "study %s%s: SR %s stored (%s, Orthanc %s), priority %s, %d image(s) "
               "analysed, %d not analysed, %.0f ms after it was queued%s",
               id, cxr_triage_study_phi(&s.row, phi, sizeof phi), s.row.last_sr_sop_instance_uid,
               sr_id, status,
               cxr_triage_priority_name(p->conf, (enum cxr_triage_priority)s.row.priority),
               s.row.analysed, s.row.not_analysed, study_ms, nfw ? "; forwards queued" : "");
    if (nfw)
        plugin_wake(p);
}

/* ------------------------------------------------------------------ scoring */

/* A result for an instance that was not read (gate by series modality, a
 * file Orthanc cannot give, a set-aside instance). */
/* An image not analysed before its header was read: only its SOP Instance
 * UID is known; the reason is `fmt` with two strings. */
static void not_read(struct cxr_triage_result *r, const char *sop_uid, enum cxr_status st,
                     const char *fmt, const char *a, const char *b)
{
    char reason[sizeof r->reason];
    memset(r, 0, sizeof *r);
    snprintf(r->info.sop_instance_uid, sizeof r->info.sop_instance_uid, "%s", sop_uid);
    snprintf(reason, sizeof reason, fmt, a, b);
    cxr_triage_result_not_analysed(r, st, reason);
}

/* Whether the gate could accept an image of this series modality at all. */
static bool modality_possible(const struct cxr_conf *conf, const char *modality)
{
    if (!modality[0])
        return true; /* unknown here: the full gate decides */
    for (uint32_t i = 0; i < conf->gate.modalities.count; i++)
        if (!strcmp(conf->gate.modalities.items[i], modality))
            return true;
    return conf->gate.allow_secondary_capture &&
           (!strcmp(modality, "CR") || !strcmp(modality, "DX") || !strcmp(modality, "OT"));
}

struct todo {
    char id[PLUGIN_ID_LEN];
    char sop[CXR_DICOM_UID_LEN];
};

/* Reads, scores and records todo[0..n-1] in batches. Returns false when the
 * job must stop (shutdown, or a failure recorded on the study). */
static bool score_instances(struct plugin *p, const struct plugin_study *job,
                            const struct todo *todo, size_t n)
{
    struct cxr_triage_engine *e = p->engine;
    const char *sha = cxr_triage_engine_model_sha256(e);
    size_t bs = (size_t)(cxr_triage_engine_batch_size(e) > 0 ? cxr_triage_engine_batch_size(e) : 1);
    struct cxr_dicom_instance **insts = calloc(bs, sizeof *insts);
    struct cxr_triage_result *res = calloc(bs, sizeof *res);
    struct plugin_take *takes = calloc(bs, sizeof *takes);
    struct plugin_outcome *out = calloc(bs, sizeof *out);
    int32_t *attempts = calloc(bs, sizeof *attempts);
    bool ok = insts && res && takes && out && attempts;
    if (!ok)
        fail_study(p, job->orthanc_id, job->attempts, "out of memory for a batch");
    for (size_t start = 0, k = 0; ok && start < n; start += k) {
        k = n - start < bs ? n - start : bs;
        /* after a crash, one at a time: an instance taken before without a
         * result runs alone, and a batch stops before one */
        for (size_t i = 0; i < k; i++)
            takes[i] = (struct plugin_take){todo[start + i].id, todo[start + i].sop};
        if (plugin_db_instances_unfinished(p->db, takes, k, attempts) != CXR_OK) {
            fail_study(p, job->orthanc_id, job->attempts, plugin_db_last_error());
            ok = false;
            break;
        }
        for (size_t i = 0; i < k; i++)
            if (attempts[i] > 0) {
                k = i ? i : 1;
                break;
            }
        double t0 = mono_ms();
        if (plugin_db_instances_take(p->db, job->orthanc_id, takes, k, plugin_now_ms(), attempts) !=
            CXR_OK) {
            fail_study(p, job->orthanc_id, job->attempts, plugin_db_last_error());
            ok = false;
            break;
        }
        for (size_t i = 0; i < k; i++) {
            const struct todo *t = &todo[start + i];
            insts[i] = NULL;
            memset(&res[i], 0, sizeof res[i]);
            if (attempts[i] > MAX_TAKES) {
                char times[16];
                snprintf(times, sizeof times, "%d", attempts[i] - 1);
                not_read(&res[i], t->sop, CXR_ERR_INTERNAL,
                         "set aside: reading it was interrupted %s times%s (Orthanc stopped or "
                         "crashed while the plugin read it); POST .../score retries it",
                         times, "");
                continue;
            }
            OrthancPluginMemoryBuffer buf = {0};
            OrthancPluginErrorCode code = OrthancPluginGetDicomForInstance(p->ctx, &buf, t->id);
            if (code != OrthancPluginErrorCode_Success) {
                const char *d = OrthancPluginGetErrorDescription(p->ctx, code);
                not_read(&res[i], t->sop, CXR_ERR_PLUGIN_ORTHANC,
                         "Orthanc cannot give the file of instance %s: %s", t->id, d ? d : "error");
                if (buf.data)
                    OrthancPluginFreeMemoryBuffer(p->ctx, &buf);
                continue;
            }
            char derr[CXR_ERRLEN] = "";
            enum cxr_status st = cxr_dicom_instance_load_memory_within(
                buf.data, buf.size, t->id, &cxr_triage_engine_conf(e)->gate, &insts[i], derr);
            OrthancPluginFreeMemoryBuffer(p->ctx, &buf);
            if (st != CXR_OK)
                not_read(&res[i], t->sop, st, "%s%s", derr[0] ? derr : cxr_status_str(st), "");
        }
        cxr_triage_engine_score(e, insts, (int32_t)k, res);
        const char *transient = NULL;
        for (size_t i = 0; i < k; i++) {
            out[i] = (struct plugin_outcome){todo[start + i].id, &res[i], insts[i] != NULL};
            if (insts[i] && (res[i].status == CXR_ERR_NN_BACKEND || res[i].status == CXR_ERR_NOMEM))
                transient = res[i].reason;
            cxr_dicom_instance_free(insts[i]);
            insts[i] = NULL;
        }
        if (transient) {
            /* the compute backend failed, not the images: try again later */
            fail_study(p, job->orthanc_id, job->attempts, transient);
            ok = false;
            break;
        }
        if (plugin_db_instances_record(p->db, job->orthanc_id, sha, out, k, plugin_now_ms()) !=
            CXR_OK) {
            fail_study(p, job->orthanc_id, job->attempts, plugin_db_last_error());
            ok = false;
            break;
        }
        pthread_mutex_lock(&p->lock);
        p->last_image_ms = (mono_ms() - t0) / (double)k;
        pthread_mutex_unlock(&p->lock);
        plugin_test_hold(p, "scoring", job->orthanc_id);
        if (plugin_study_gone(p, job->orthanc_id, "while it was being scored")) {
            ok = false; /* forgotten: the rest is not read, nothing is posted */
            break;
        }
        if (atomic_load(&p->stopping)) {
            ok = false; /* the rest at the next start: the study stays queued */
            break;
        }
    }
    free(insts);
    free(res);
    free(takes);
    free(out);
    free(attempts);
    return ok;
}

/* The decision over every result of this model (cxr_triage_study_decide,
 * the node's too): priority, score, and the SR listing every image of the
 * study when one is not in an SR yet. */
static void decide(struct plugin *p, const char *id)
{
    struct cxr_triage_engine *e = p->engine;
    const char *sha = cxr_triage_engine_model_sha256(e);
    const struct cxr_nn_model_meta *meta = cxr_triage_engine_model_meta(e);
    struct plugin_instance *rows = NULL;
    size_t n = 0;
    struct plugin_study s;
    bool found = false;
    if (plugin_db_study_instances(p->db, id, &rows, &n) != CXR_OK ||
        plugin_db_study_get(p->db, id, false, &s, &found) != CXR_OK || !found) {
        free(rows);
        plugin_log(p, PLOG_ERROR, "study %s: %s", id, plugin_db_last_error());
        return;
    }
    /* this model's results; rows of another model are scored again */
    struct cxr_triage_instance_row *mine = calloc(n ? n : 1, sizeof *mine);
    size_t k = 0;
    for (size_t i = 0; mine && i < n; i++)
        if (rows[i].row.state != CXR_TRIAGE_INSTANCE_ANALYSED ||
            strcmp(rows[i].model_sha, sha) == 0)
            mine[k++] = rows[i].row;
    free(rows);
    struct cxr_triage_decision d;
    if (!mine || cxr_triage_study_decide(p->conf, mine, k, &d) != CXR_OK) {
        free(mine);
        fail_study(p, id, s.attempts, "out of memory");
        return;
    }
    free(mine);
    int32_t priority = d.priority;
    double score = d.score;
    void *buf = NULL;
    size_t len = 0;
    char sop[CXR_DICOM_UID_LEN] = "", series[CXR_DICOM_UID_LEN] = "", err[CXR_ERRLEN] = "";
    bool have_sr = false;
    if (d.make_sr) {
        struct cxr_triage_sr_predecessor pred = {s.row.last_sr_sop_instance_uid,
                                                 s.row.last_sr_series_instance_uid};
        cxr_dicom_uid_new(series);
        enum cxr_status st = cxr_triage_engine_write_sr(e, d.results, d.count,
                                                        pred.sop_instance_uid[0] ? &pred : NULL,
                                                        series, NULL, &buf, &len, sop, err);
        if (st == CXR_OK) {
            have_sr = true;
        } else {
            /* results stay; the study is listed with them, without an SR */
            plugin_log(p, PLOG_ERROR, "study %s: no SR: %s", id, err[0] ? err : cxr_status_str(st));
        }
    }
    cxr_triage_decision_release(&d);
    struct plugin_sr sr = {sop, series, buf, len};
    enum cxr_status st = plugin_db_study_scored(p->db, id, sha, meta->version, priority, score,
                                                have_sr ? &sr : NULL, plugin_now_ms());
    free(buf);
    if (st != CXR_OK) {
        fail_study(p, id, s.attempts, plugin_db_last_error());
        return;
    }
    if (have_sr) {
        store_sr(p, id);
        return;
    }
    if (plugin_db_study_get(p->db, id, false, &s, &found) == CXR_OK && found)
        write_metadata(p, &s);
    plugin_log(p, PLOG_INFO,
               "study %s: no new image to report or nothing analysed, no SR (priority %s, "
               "%d analysed, %d not analysed)",
               id, cxr_triage_priority_name(p->conf, (enum cxr_triage_priority)s.row.priority),
               s.row.analysed, s.row.not_analysed);
}

void plugin_note_header(struct plugin *p, const char *id, json_object *study)
{
    struct plugin_study_header h = {
        .study_uid = ojson_str2(study, "MainDicomTags", "StudyInstanceUID"),
        .accession = ojson_str2(study, "MainDicomTags", "AccessionNumber"),
        .patient_id = ojson_str2(study, "PatientMainDicomTags", "PatientID"),
        .study_date = ojson_str2(study, "MainDicomTags", "StudyDate"),
        .description = ojson_str2(study, "MainDicomTags", "StudyDescription"),
    };
    if (plugin_db_study_header(p->db, id, &h) != CXR_OK)
        plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
}

static void score_study(struct plugin *p, const struct plugin_study *job)
{
    const char *id = job->orthanc_id;
    const char *sha = cxr_triage_engine_model_sha256(p->engine);
    char uri[160], err[PLUGIN_ERRLEN];
    json_object *study = NULL, *series = NULL, *insts = NULL;
    struct plugin_instance *known = NULL;
    struct todo *todo = NULL;
    struct plugin_outcome *gated = NULL;
    struct cxr_triage_result *gated_res = NULL;
    size_t nknown = 0, ntodo = 0, ngated = 0;

    snprintf(uri, sizeof uri, "/studies/%s", id);
    enum cxr_status st = orest_get_json(p, uri, &study, err);
    if (st == CXR_ERR_NOT_FOUND) {
        plugin_log(p, PLOG_INFO, "study %s was deleted from Orthanc before it was scored", id);
        plugin_db_study_forget(p->db, id);
        goto out;
    }
    if (st == CXR_OK) {
        plugin_note_header(p, id, study);
        snprintf(uri, sizeof uri, "/studies/%s/series", id);
        st = orest_get_json(p, uri, &series, err);
    }
    if (st == CXR_OK) {
        snprintf(uri, sizeof uri, "/studies/%s/instances", id);
        st = orest_get_json(p, uri, &insts, err);
    }
    if (st == CXR_OK && plugin_db_study_instances(p->db, id, &known, &nknown) != CXR_OK) {
        snprintf(err, sizeof err, "%s", plugin_db_last_error());
        st = CXR_ERR_TRIAGE_STORE;
    }
    if (st == CXR_ERR_NOT_FOUND && plugin_study_gone(p, id, "while it was being read"))
        goto out;
    if (st != CXR_OK) {
        fail_study(p, id, job->attempts, err);
        goto out;
    }
    size_t n = json_object_is_type(insts, json_type_array) ? json_object_array_length(insts) : 0;
    size_t nseries =
        json_object_is_type(series, json_type_array) ? json_object_array_length(series) : 0;
    todo = calloc(n ? n : 1, sizeof *todo);
    gated = calloc(n ? n : 1, sizeof *gated);
    gated_res = calloc(n ? n : 1, sizeof *gated_res);
    if (!todo || !gated || !gated_res) {
        fail_study(p, id, job->attempts, "out of memory");
        goto out;
    }
    bool unreported = false;
    for (size_t i = 0; i < nknown; i++)
        if (known[i].row.state == CXR_TRIAGE_INSTANCE_ANALYSED && !known[i].row.reported &&
            !strcmp(known[i].model_sha, sha))
            unreported = true;
    for (size_t i = 0; i < n; i++) {
        json_object *in = json_object_array_get_idx(insts, i);
        const char *iid = ojson_str(in, "ID");
        const char *sop = ojson_str2(in, "MainDicomTags", "SOPInstanceUID");
        const char *parent = ojson_str(in, "ParentSeries");
        bool done = false, own = false;
        for (size_t k = 0; k < nknown && !done; k++)
            done = !strcmp(known[k].orthanc_id, iid) && !strcmp(known[k].model_sha, sha) &&
                   known[k].row.state != CXR_TRIAGE_INSTANCE_RECEIVED;
        if (done || !iid[0])
            continue;
        if (plugin_db_study_is_own_sr(p->db, id, sop, &own) == CXR_OK && own)
            continue;
        const char *modality = "";
        for (size_t k = 0; k < nseries; k++) {
            json_object *se = json_object_array_get_idx(series, k);
            if (!strcmp(ojson_str(se, "ID"), parent))
                modality = ojson_str2(se, "MainDicomTags", "Modality");
        }
        if (!modality_possible(p->conf, modality)) {
            not_read(&gated_res[ngated], sop, CXR_ERR_DICOM_GATE,
                     "modality %s is not analysed (gate/modalities)%s; the image was not read",
                     modality, "");
            gated[ngated] = (struct plugin_outcome){iid, &gated_res[ngated], false};
            ngated++;
            continue;
        }
        snprintf(todo[ntodo].id, sizeof todo[ntodo].id, "%s", iid);
        snprintf(todo[ntodo].sop, sizeof todo[ntodo].sop, "%s", sop);
        ntodo++;
    }
    if (ngated &&
        plugin_db_instances_record(p->db, id, sha, gated, ngated, plugin_now_ms()) != CXR_OK) {
        fail_study(p, id, job->attempts, plugin_db_last_error());
        goto out;
    }
    if (ntodo && !score_instances(p, job, todo, ntodo))
        goto out;
    if (ntodo == 0 && ngated == 0 && !unreported && !strcmp(job->model_sha, sha)) {
        /* nothing new since the last scoring with this model (e.g. the study
         * became stable again because our own SR arrived) */
        if (plugin_db_study_scored(p->db, id, job->model_sha, job->model_version, job->row.priority,
                                   job->row.score, NULL, job->scored_ms) != CXR_OK)
            plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
        goto out;
    }
    decide(p, id);
out:
    json_object_put(study);
    json_object_put(series);
    json_object_put(insts);
    free(known);
    free(todo);
    free(gated);
    free(gated_res);
}

void plugin_run_job(struct plugin *p, const struct plugin_study *job)
{
    if (job->state == PLUGIN_STUDY_SR_PENDING)
        store_sr(p, job->orthanc_id);
    else
        score_study(p, job);
}
