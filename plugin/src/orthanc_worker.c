/* orthanc_worker.c — the worker thread: loads the configuration and model,
 * reads Orthanc's change log into the plugin's queue, notices stable
 * studies, and runs each queued study (orthanc_score.c) — every REST call
 * into Orthanc and every inference of the plugin happens on this thread.
 *
 * The inbox is Orthanc's own change log (GET /changes), durable in Orthanc's
 * index: the plugin keeps a cursor (the Seq of the last change consumed) in
 * its queue file and moves it in the same transaction that records what the
 * changes mean, so nothing is lost when Orthanc stops or crashes, and the
 * change callback needs to do nothing but wake this thread. When the queue
 * holds plugin/queue-limit unfinished studies the cursor stops: the backlog
 * waits in Orthanc's log. A study is queued on StableStudy; a study seen but
 * never called stable (Orthanc forgets unstable studies when it restarts)
 * is checked after StableAge and queued once Orthanc says it is stable.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/log.h"
#include "orthanc_internal.h"
#include "orthanc_score.h"

#define CHANGES_PAGE            500
#define CHANGES_PAGES_PER_ROUND 20
#define CHANGES_EVERY_MS        100 /* during an ingest, read the log at most this often */
#define ENGINE_RETRY_MS         30000
#define WORKER_NICE             19 /* scoring yields the CPU to Orthanc's ingest */
#define METRICS_EVERY_MS        1000

/* ------------------------------------------------------------------ configuration */

static bool mkdirs(const char *path)
{
    char tmp[PLUGIN_PATHLEN];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *s = tmp + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            return false;
        *s = '/';
    }
    return mkdir(tmp, 0750) == 0 || errno == EEXIST;
}

/* Opens the queue file the first time a configuration loads. */
static enum cxr_status open_queue(struct plugin *p, const struct cxr_conf *conf, char *err)
{
    char dir[PLUGIN_PATHLEN];
    if (conf->plugin.state_dir && conf->plugin.state_dir[0]) {
        char *r = cxr_conf_resolve_path(conf, conf->plugin.state_dir);
        snprintf(dir, sizeof dir, "%s", r ? r : conf->plugin.state_dir);
        free(r);
    } else {
        snprintf(dir, sizeof dir, "%.4000s/cxr-triage", p->os.index_dir);
    }
    if (p->db) {
        if (strcmp(dir, p->state_dir) != 0)
            plugin_log(p, PLOG_WARN,
                       "plugin/state-dir changed to %s: takes effect when Orthanc "
                       "restarts (still using %s)",
                       dir, p->state_dir);
        return CXR_OK;
    }
    if (!mkdirs(dir)) {
        snprintf(err, PLUGIN_ERRLEN,
                 "cannot create the plugin's state folder %.400s: %s "
                 "(plugin/state-dir; Orthanc's user must be able to write it)",
                 dir, strerror(errno));
        return CXR_ERR_IO;
    }
    char path[PLUGIN_PATHLEN + 16], derr[PLUGIN_DB_ERRLEN];
    snprintf(path, sizeof path, "%s/queue.sqlite", dir);
    struct plugin_db *db = NULL;
    enum cxr_status st = plugin_db_open(path, &db, derr);
    if (st != CXR_OK) {
        snprintf(err, PLUGIN_ERRLEN, "%s", derr);
        return st;
    }
    pthread_mutex_lock(&p->lock);
    p->db = db;
    snprintf(p->state_dir, sizeof p->state_dir, "%s", dir);
    pthread_mutex_unlock(&p->lock);
    plugin_log(p, PLOG_INFO, "queue: %s", path);
    return CXR_OK;
}

static void set_broken(struct plugin *p, const char *why)
{
    pthread_mutex_lock(&p->lock);
    p->health = PLUGIN_HEALTH_BROKEN;
    snprintf(p->health_reason, sizeof p->health_reason, "%s", why);
    pthread_mutex_unlock(&p->lock);
}

enum cxr_status plugin_load_config(struct plugin *p, char *err)
{
    struct cxr_conf *conf = NULL;
    struct cxr_triage_engine *engine = NULL;
    char cerr[CXR_ERRLEN] = "", note[CXR_ERRLEN] = "", eerr[CXR_ERRLEN] = "";
    struct plugin_target sr[PLUGIN_MAX_TARGETS], st_[PLUGIN_MAX_TARGETS];
    size_t nsr = 0, nst = 0;
    enum cxr_status st = cxr_conf_load(p->os.config_file, &conf, cerr);
    if (st != CXR_OK) {
        snprintf(err, PLUGIN_ERRLEN, "configuration %.300s does not load: %.680s",
                 p->os.config_file, cerr);
        goto broken;
    }
    if ((st = plugin_targets_parse(conf->plugin.forward_sr, sr, PLUGIN_MAX_TARGETS, &nsr, cerr)) !=
            CXR_OK ||
        (st = plugin_targets_parse(conf->plugin.forward_study, st_, PLUGIN_MAX_TARGETS, &nst,
                                   cerr)) != CXR_OK) {
        snprintf(err, PLUGIN_ERRLEN,
                 "configuration %.300s: plugin/forward-sr or forward-study: %.600s",
                 p->os.config_file, cerr);
        goto broken;
    }
    cxr_conf_log_apply(conf);
    /* the queue first: studies are recorded even while the model is broken */
    if ((st = open_queue(p, conf, err)) != CXR_OK)
        goto broken;
    struct cxr_triage_engine_options opt;
    cxr_triage_engine_options_init(&opt);
    st = cxr_triage_engine_new(conf, &opt, &engine, note, eerr);
    if (st != CXR_OK) {
        snprintf(err, PLUGIN_ERRLEN, "model does not load (configuration %.300s): %.680s",
                 p->os.config_file, eerr);
        goto broken;
    }
    struct cxr_conf *old_conf;
    struct cxr_triage_engine *old_engine;
    pthread_mutex_lock(&p->lock);
    old_conf = p->conf;
    old_engine = p->engine;
    p->conf = conf;
    p->engine = engine;
    p->health = PLUGIN_HEALTH_READY;
    p->health_reason[0] = '\0';
    snprintf(p->backend_note, sizeof p->backend_note, "%s", note);
    memcpy(p->fw_sr, sr, sizeof sr);
    memcpy(p->fw_study, st_, sizeof st_);
    p->n_fw_sr = nsr;
    p->n_fw_study = nst;
    p->queue_limit = conf->plugin.queue_limit;
    p->retry_s = (uint32_t)conf->plugin.retry_seconds;
    p->retry_max = (uint32_t)conf->plugin.retry_max_attempts;
    pthread_mutex_unlock(&p->lock);
    cxr_triage_engine_free(old_engine); /* before the configuration it points to */
    cxr_conf_free(old_conf);
    plugin_log(p, PLOG_INFO, "ready: %s%s%s", cxr_triage_engine_describe(engine),
               note[0] ? "; " : "", note);
    if (cxr_nn_model_meta_untrained(cxr_triage_engine_model_meta(engine)))
        plugin_log(p, PLOG_WARN,
                   "the model %s is UNTRAINED (random weights): its scores, priorities and SRs "
                   "mean nothing; use a trained model (model/path)",
                   cxr_triage_engine_model_path(engine));
    plugin_wake(p);
    return CXR_OK;

broken:
    pthread_mutex_lock(&p->lock);
    bool have_old = p->engine != NULL;
    if (!have_old && conf) {
        /* no engine points to the old one: keep the newest configuration
         * for the level names, the worklist options and the queue limit */
        struct cxr_conf *prev = p->conf;
        p->conf = conf;
        p->queue_limit = conf->plugin.queue_limit;
        conf = prev;
    }
    pthread_mutex_unlock(&p->lock);
    cxr_conf_free(conf);
    if (have_old)
        plugin_log(p, PLOG_WARN,
                   "reload refused, the previous configuration and model keep "
                   "scoring: %s",
                   err);
    else
        set_broken(p, err);
    return st;
}

void plugin_worklist_options(struct plugin *p, struct cxr_triage_worklist_options *o)
{
    cxr_triage_worklist_options_init(o, plugin_now_ms());
    pthread_mutex_lock(&p->lock);
    const struct cxr_conf *c = p->conf;
    if (c) {
        o->max_wait_minutes = c->priority.max_wait_minutes;
        o->show_patient_id = c->plugin.show_patient_id;
        o->window_hours = (uint32_t)c->plugin.worklist_hours;
        for (int i = 0; i <= CXR_TRIAGE_PRIORITY_URGENT; i++)
            snprintf(o->priority_names[i], sizeof o->priority_names[i], "%s",
                     cxr_triage_priority_name(c, (enum cxr_triage_priority)i));
    }
    pthread_mutex_unlock(&p->lock);
}

/* ------------------------------------------------------------------ change log */

/* What one change of Orthanc's log means for the queue. */
static void read_change(json_object *c, struct plugin_change *out)
{
    memset(out, 0, sizeof *out);
    json_object *v = NULL;
    if (json_object_object_get_ex(c, "Seq", &v))
        out->seq = json_object_get_int64(v);
    out->kind = PLUGIN_CHANGE_IGNORE;
    out->time_ms = plugin_now_ms();
    const char *type = ojson_str(c, "ChangeType"), *rt = ojson_str(c, "ResourceType");
    const char *id = ojson_str(c, "ID");
    /* NewSeries/NewInstance are not followed: a late image in a scored
     * study makes Orthanc send StableStudy again, which re-queues it. */
    if (!strcmp(type, "NewStudy"))
        out->kind = PLUGIN_CHANGE_SEEN;
    else if (!strcmp(type, "StableStudy"))
        out->kind = PLUGIN_CHANGE_STABLE;
    else if (!strcmp(type, "Deleted") && !strcmp(rt, "Study"))
        out->kind = PLUGIN_CHANGE_DELETED;
    if (out->kind != PLUGIN_CHANGE_IGNORE)
        snprintf(out->study, sizeof out->study, "%s", id);
}

/* Reads new changes into the queue. Returns true when changes were applied. */
static bool consume_changes(struct plugin *p)
{
    bool any = false;
    int64_t limit;
    pthread_mutex_lock(&p->lock);
    limit = p->queue_limit > 0 ? p->queue_limit : 10000;
    pthread_mutex_unlock(&p->lock);
    for (int page = 0; page < CHANGES_PAGES_PER_ROUND && !atomic_load(&p->stopping); page++) {
        int64_t cursor = 0;
        bool have = false;
        char err[PLUGIN_ERRLEN], uri[96];
        if (plugin_db_cursor(p->db, &cursor, &have) != CXR_OK) {
            plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
            return any;
        }
        json_object *ans = NULL;
        if (!have) {
            /* first start on this Orthanc: studies stored before the plugin
             * was installed are not scored (POST .../score does that) */
            if (orest_get_json(p, "/changes?last", &ans, err) != CXR_OK) {
                plugin_log(p, PLOG_ERROR, "reading Orthanc's change log: %s", err);
                return any;
            }
            json_object *last = NULL;
            int64_t seq =
                json_object_object_get_ex(ans, "Last", &last) ? json_object_get_int64(last) : 0;
            json_object_put(ans);
            plugin_db_cursor_set(p->db, seq);
            plugin_log(p, PLOG_INFO, "first start: following Orthanc's change log from Seq %lld",
                       (long long)seq);
            continue;
        }
        snprintf(uri, sizeof uri, "/changes?since=%lld&limit=%d", (long long)cursor, CHANGES_PAGE);
        if (orest_get_json(p, uri, &ans, err) != CXR_OK) {
            plugin_log(p, PLOG_ERROR, "reading Orthanc's change log: %s", err);
            return any;
        }
        json_object *list = NULL, *done = NULL, *last = NULL;
        json_object_object_get_ex(ans, "Changes", &list);
        bool finished =
            !json_object_object_get_ex(ans, "Done", &done) || json_object_get_boolean(done);
        size_t n =
            list && json_object_is_type(list, json_type_array) ? json_object_array_length(list) : 0;
        if (n == 0) {
            int64_t l = json_object_object_get_ex(ans, "Last", &last) ? json_object_get_int64(last)
                                                                      : cursor;
            json_object_put(ans);
            if (l < cursor) {
                /* Orthanc's log was cleared or its database replaced */
                plugin_log(p, PLOG_WARN,
                           "Orthanc's change log restarted (Seq %lld < %lld): "
                           "following it from there",
                           (long long)l, (long long)cursor);
                plugin_db_cursor_set(p->db, l);
            }
            return any;
        }
        struct plugin_change *ch = calloc(n, sizeof *ch);
        if (!ch) {
            json_object_put(ans);
            return any;
        }
        for (size_t i = 0; i < n; i++)
            read_change(json_object_array_get_idx(list, i), &ch[i]);
        json_object_put(ans);
        size_t applied = 0;
        if (plugin_db_apply_changes(p->db, ch, n, limit, plugin_now_ms(), &applied) != CXR_OK)
            plugin_log(p, PLOG_ERROR, "recording Orthanc's changes: %s", plugin_db_last_error());
        free(ch);
        any |= applied > 0;
        if (applied < n) {
            static int64_t warned_ms;
            int64_t now = plugin_now_ms();
            if (now - warned_ms > 60000) {
                warned_ms = now;
                plugin_log(p, PLOG_WARN,
                           "queue full (%lld studies, plugin/queue-limit): the rest "
                           "waits in Orthanc's change log",
                           (long long)limit);
            }
            return any;
        }
        if (finished)
            return any;
    }
    return any;
}

/* Studies seen but not called stable after StableAge (+1 s): ask Orthanc. */
static void sweep_waiting(struct plugin *p)
{
    char ids[32][PLUGIN_ID_LEN];
    size_t n = 0;
    int64_t now = plugin_now_ms();
    int64_t age_ms = ((int64_t)p->os.stable_age_s + 1) * 1000;
    if (plugin_db_waiting_due(p->db, now - age_ms, 32, ids, &n) != CXR_OK)
        return;
    for (size_t i = 0; i < n && !atomic_load(&p->stopping); i++) {
        char uri[96], err[PLUGIN_ERRLEN];
        json_object *s = NULL;
        snprintf(uri, sizeof uri, "/studies/%s", ids[i]);
        enum cxr_status st = orest_get_json(p, uri, &s, err);
        if (st == CXR_ERR_NOT_FOUND) {
            plugin_db_study_forget(p->db, ids[i]);
        } else if (st == CXR_OK) {
            plugin_note_header(p, ids[i], s); /* listed with its accession number */
            json_object *stable = NULL;
            if (json_object_object_get_ex(s, "IsStable", &stable) &&
                json_object_get_boolean(stable))
                plugin_db_study_stable(p->db, ids[i], now);
            else
                plugin_db_study_touch(p->db, ids[i], now);
        }
        json_object_put(s);
    }
}

/* ------------------------------------------------------------------ the loop */

/* Test hook: CXR_ORTHANC_TEST_JOB_DELAY_MS makes each job wait that long
 * first, so that a test can stop Orthanc while studies are still queued.
 * Interrupted by shutdown. */
static void test_delay(struct plugin *p)
{
    static int64_t delay_ms = -1;
    if (delay_ms < 0) {
        const char *v = getenv("CXR_ORTHANC_TEST_JOB_DELAY_MS");
        delay_ms = v ? atoll(v) : 0;
        if (delay_ms > 0)
            plugin_log(p, PLOG_WARN, "test hook: each job waits %lld ms first",
                       (long long)delay_ms);
    }
    if (delay_ms > 0)
        plugin_nap(p, plugin_now_ms() + delay_ms);
}

void plugin_test_hold(struct plugin *p, const char *point, const char *study)
{
    static int armed = -1;
    static char path[PLUGIN_PATHLEN];
    if (armed < 0) {
        const char *v = getenv("CXR_ORTHANC_TEST_HOLD");
        armed = v && v[0] && strlen(v) < sizeof path - 8;
        if (armed) {
            snprintf(path, sizeof path, "%s", v);
            plugin_log(p, PLOG_WARN, "test hook: jobs hold where %s says", path);
        }
    }
    if (!armed)
        return;
    char want[32] = "", held[PLUGIN_PATHLEN + 8];
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    bool match = fgets(want, sizeof want, f) && !strncmp(want, point, strlen(point)) &&
                 (want[strlen(point)] == '\0' || want[strlen(point)] == '\n');
    fclose(f);
    if (!match)
        return;
    snprintf(held, sizeof held, "%s.held", path);
    f = fopen(held, "w");
    if (!f)
        return;
    fprintf(f, "%s\n", study);
    fclose(f);
    unlink(path); /* one hold per arming */
    plugin_log(p, PLOG_WARN, "test hook: study %s held at %s until %s is removed", study, point,
               held);
    struct stat sb;
    while (!atomic_load(&p->stopping) && stat(held, &sb) == 0)
        plugin_nap(p, plugin_now_ms() + 20);
    plugin_log(p, PLOG_WARN, "test hook: study %s goes on from %s", study, point);
}

void *plugin_worker_main(void *arg)
{
    struct plugin *p = arg;
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), WORKER_NICE) != 0)
        plugin_log(p, PLOG_INFO, "cannot lower the scoring thread's CPU priority");
    int64_t metrics_ms = 0, last_changes_ms = 0;
    while (!atomic_load(&p->stopping)) {
        uint64_t seq = plugin_wake_seq(p);
        int64_t now = plugin_now_ms();
        pthread_mutex_lock(&p->lock);
        bool broken = p->health == PLUGIN_HEALTH_BROKEN && p->os.configured;
        bool retry_due = broken && now >= p->engine_retry_ms;
        pthread_mutex_unlock(&p->lock);
        if (atomic_exchange(&p->reload_requested, false) || retry_due) {
            char err[PLUGIN_ERRLEN];
            if (plugin_load_config(p, err) != CXR_OK && !broken)
                plugin_log(p, PLOG_ERROR, "%s", err);
            pthread_mutex_lock(&p->lock);
            p->engine_retry_ms = plugin_now_ms() + ENGINE_RETRY_MS;
            pthread_mutex_unlock(&p->lock);
        }
        if (!p->db) {
            plugin_wait(p, seq, plugin_now_ms() + 1000);
            continue;
        }
        /* the wake-ups of an ingest are coalesced into fewer reads of the
         * log (jobs are not held back by this) */
        int64_t next_due = plugin_now_ms() + 1000;
        int64_t since = plugin_now_ms() - last_changes_ms;
        if (since < 0 || since >= CHANGES_EVERY_MS) {
            last_changes_ms = plugin_now_ms();
            consume_changes(p);
            sweep_waiting(p);
        } else {
            next_due = last_changes_ms + CHANGES_EVERY_MS; /* a change may be waiting */
        }
        plugin_deleted_apply(p); /* the deletions the change callback noted */
        bool worked = false;
        pthread_mutex_lock(&p->lock);
        bool ready = p->engine != NULL;
        pthread_mutex_unlock(&p->lock);
        if (ready && !atomic_load(&p->stopping)) {
            struct plugin_study job;
            bool found = false;
            int64_t due = INT64_MAX;
            if (plugin_db_next_job(p->db, plugin_now_ms(), &job, &found, &due) != CXR_OK) {
                plugin_log(p, PLOG_ERROR, "%s", plugin_db_last_error());
            } else if (found) {
                test_delay(p);
                plugin_run_job(p, &job);
                worked = true;
            } else if (due < next_due) {
                next_due = due;
            }
        }
        now = plugin_now_ms();
        if (now - metrics_ms >= METRICS_EVERY_MS) {
            plugin_publish_metrics(p);
            metrics_ms = now;
        }
        if (!worked)
            plugin_wait(p, seq, next_due);
    }
    return NULL;
}
