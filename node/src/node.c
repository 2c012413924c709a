/* node.c — the node's lifecycle (see cxr/node.h): build, run, stop, reload,
 * free; and the small file and time helpers node*.c share. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cxr/file.h"
#include "cxr/log.h"
#include "cxr/version.h"
#include "node_internal.h"

/* ------------------------------------------------------------------ helpers */

int64_t node_now_ms(void) { return cxr_wake_now_ms(); }

double node_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void node_wake(struct cxr_node *n) { cxr_wake_signal(&n->wake); }

uint64_t node_wake_seq(struct cxr_node *n) { return cxr_wake_seq(&n->wake); }

void node_wait(struct cxr_node *n, uint64_t seen, int64_t deadline_ms)
{
    cxr_wake_wait(&n->wake, seen, deadline_ms, &n->stopping);
}

bool node_mkdirs(const char *path)
{
    char buf[CXR_NODE_PATHLEN * 2];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0750) != 0 && errno != EEXIST)
            return false;
        *p = '/';
    }
    return mkdir(buf, 0750) == 0 || errno == EEXIST;
}

void cxr_node_store_path(const char *spool_dir, char *out, size_t len)
{
    snprintf(out, len, "%s/jobs.sqlite", spool_dir);
}

void cxr_node_options_init(struct cxr_node_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->port = -1;
    opt->http_port = -1;
    opt->study_stable_s = -1;
}

/* ------------------------------------------------------------------ settings + overrides */

/* A TLS file that is there must be a regular file: OpenSSL would wait for
 * ever on a FIFO (at start, or at each delivery). One that is missing is
 * reported where it is loaded. stat(2) does not block. */
static enum cxr_status tls_file_regular(const char *key, const char *path, char *err)
{
    struct stat sb;
    if (!path[0] || stat(path, &sb) != 0 || S_ISREG(sb.st_mode))
        return CXR_OK;
    snprintf(err, CXR_ERRLEN, "%s: %.900s is not a regular file (it is %s)", key, path,
             cxr_file_kind(sb.st_mode));
    return CXR_ERR_CONF_VALUE;
}

enum cxr_status node_settings_for(const struct cxr_node_options *opt, const struct cxr_conf *conf,
                                  struct cxr_node_settings *s, char *err)
{
    enum cxr_status st = cxr_node_settings_from_conf(conf, s, err);
    if (st != CXR_OK)
        return st;
    if ((st = tls_file_regular("node/tls-certificate", s->tls_certificate, err)) != CXR_OK ||
        (st = tls_file_regular("node/tls-private-key", s->tls_private_key, err)) != CXR_OK ||
        (st = tls_file_regular("node/tls-ca-certificates", s->tls_ca_certificates, err)) != CXR_OK)
        return st;
    if (opt && opt->spool_dir)
        snprintf(s->spool_dir, sizeof s->spool_dir, "%s", opt->spool_dir);
    if (opt && opt->port >= 0)
        s->port = (uint16_t)opt->port;
    if (opt && opt->http_port >= 0)
        s->http_port = (uint16_t)opt->http_port;
    if (opt && opt->study_stable_s >= 0)
        s->study_stable_s = (uint32_t)opt->study_stable_s;
    if (!s->spool_dir[0]) {
        snprintf(err, CXR_ERRLEN, "node/spool-dir is empty: set a folder for the spool");
        return CXR_ERR_CONF_VALUE;
    }
    return CXR_OK;
}

enum cxr_status node_engine_new(const struct cxr_conf *conf, const char *model_path,
                                struct cxr_triage_engine **out, char *note, char *err)
{
    struct cxr_triage_engine_options eo;
    cxr_triage_engine_options_init(&eo);
    eo.model_path = model_path;
    char eerr[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_triage_engine_new(conf, &eo, out, note, eerr);
    if (st == CXR_OK)
        return CXR_OK;
    const char *rel = conf->model.path;
    if ((st == CXR_ERR_NOT_FOUND || st == CXR_ERR_IO) && !model_path && rel && rel[0] &&
        rel[0] != '/' && conf->source_path && strchr(conf->source_path, '/')) {
        /* A copied configuration whose relative model/path points nowhere:
         * say what it is relative to. */
        const char *slash = strrchr(conf->source_path, '/');
        snprintf(err, CXR_ERRLEN,
                 "%.500s (model/path \"%.200s\" is relative: it resolves against %.*s, the "
                 "folder of the configuration file)",
                 eerr[0] ? eerr : cxr_status_str(st), rel,
                 (int)(slash - conf->source_path > 250 ? 250 : slash - conf->source_path),
                 conf->source_path);
    } else {
        snprintf(err, CXR_ERRLEN, "%s", eerr[0] ? eerr : cxr_status_str(st));
    }
    return st;
}

/* node_engine_new with the node's model override, and the log lines of a
 * start or reload. */
static enum cxr_status new_engine(const struct cxr_node *n, const struct cxr_conf *conf,
                                  struct cxr_triage_engine **out, char *err)
{
    char note[CXR_ERRLEN] = "";
    enum cxr_status st = node_engine_new(conf, n->opt_model_path, out, note, err);
    if (st != CXR_OK)
        return st;
    if (note[0])
        cxr_log(CXR_LOG_INFO, "node", "%s", note);
    cxr_log(CXR_LOG_INFO, "node", "engine: %s", cxr_triage_engine_describe(*out));
    if (cxr_nn_model_meta_untrained(cxr_triage_engine_model_meta(*out)))
        cxr_log(CXR_LOG_WARN, "node",
                "the model %s is UNTRAINED (random weights): its scores, priorities and SRs "
                "mean nothing; use a trained model (model/path)",
                cxr_triage_engine_model_path(*out));
    return CXR_OK;
}

/* ------------------------------------------------------------------ lifecycle */

/* The error of a spool folder that cannot be created (errno says why). */
static enum cxr_status spool_mkdir_failed(const struct cxr_node *n, char *err)
{
    snprintf(err, CXR_ERRLEN,
             "cannot create the spool folder %.900s: %s (node/spool-dir; the node's user must own "
             "it)",
             n->spool_dir, strerror(errno));
    return CXR_ERR_IO;
}

enum cxr_status cxr_node_new(struct cxr_conf *conf, const struct cxr_node_options *opt,
                             struct cxr_node **out, char *err)
{
    enum cxr_status st;
    *out = NULL;
    err[0] = '\0';
    struct cxr_node *n = calloc(1, sizeof *n);
    if (!n) {
        cxr_conf_free(conf);
        return CXR_ERR_NOMEM;
    }
    pthread_rwlock_init(&n->gen_lock, NULL);
    pthread_mutex_init(&n->scp_mu, NULL);
    pthread_mutex_init(&n->deliverers_mu, NULL);
    cxr_wake_init(&n->wake);
    pthread_mutex_init(&n->health_mu, NULL);
    for (int i = 0; i < NODE_RECEIVE_STRIPES; i++)
        pthread_mutex_init(&n->receive_mu[i], NULL);
    pthread_mutex_init(&n->intake_mu, NULL);
    pthread_cond_init(&n->intake_cv, NULL);
    atomic_init(&n->stopping, false);
    n->conf = conf;
    if (opt)
        n->opt = *opt;
    else
        cxr_node_options_init(&n->opt);
    if ((opt && opt->model_path && !(n->opt_model_path = strdup(opt->model_path))) ||
        (opt && opt->spool_dir && !(n->opt_spool_dir = strdup(opt->spool_dir)))) {
        st = CXR_ERR_NOMEM;
        goto fail;
    }
    n->opt.model_path = n->opt_model_path; /* owned copies, not the caller's */
    n->opt.spool_dir = n->opt_spool_dir;
    st = node_queue_init(&n->q);
    if (st != CXR_OK)
        goto fail;
    st = cxr_node_metrics_new(&n->metrics);
    if (st != CXR_OK)
        goto fail;
    st = node_settings_for(&n->opt, conf, &n->set, err);
    if (st != CXR_OK)
        goto fail;

    snprintf(n->spool_dir, sizeof n->spool_dir, "%s", n->set.spool_dir);
    snprintf(n->tmp_dir, sizeof n->tmp_dir, "%s/tmp", n->spool_dir);
    snprintf(n->sr_dir, sizeof n->sr_dir, "%s/sr", n->spool_dir);
    cxr_node_store_path(n->spool_dir, n->db_path, sizeof n->db_path);
    if (!node_mkdirs(n->spool_dir)) {
        st = spool_mkdir_failed(n, err);
        goto fail;
    }
    /* Before anything in the spool is touched: a second node must not open
     * the job store, nor sweep away the first one's files in flight. */
    st = cxr_node_spool_lock(n->spool_dir, &n->spool_lock, err);
    if (st != CXR_OK)
        goto fail;
    if (!node_mkdirs(n->tmp_dir) || !node_mkdirs(n->sr_dir)) {
        st = spool_mkdir_failed(n, err);
        goto fail;
    }
    char serr[CXR_NODE_STORE_ERRLEN];
    st = cxr_node_store_open_sqlite(n->db_path, false, &n->store, serr);
    if (st == CXR_OK)
        st = cxr_node_store_open_sqlite(n->db_path, false, &n->http_store, serr);
    if (st != CXR_OK) {
        snprintf(err, CXR_ERRLEN, "%s", serr);
        goto fail;
    }
    /* C-STORE commits never wait for the WAL to be copied into the database */
    if (cxr_node_store_background_checkpoints(n->store) != CXR_OK)
        cxr_log(CXR_LOG_WARN, "node", "%s; checkpoints run inside commits",
                cxr_node_store_last_error());
    st = node_spool_clean(n);
    if (st != CXR_OK) {
        snprintf(err, CXR_ERRLEN, "cannot read the spool folder %.900s", n->spool_dir);
        goto fail;
    }
    cxr_dicom_global_init();
    st = new_engine(n, conf, &n->engine, err);
    if (st != CXR_OK)
        goto fail;
    *out = n;
    return CXR_OK;

fail:
    cxr_node_free(n);
    return st;
}

void cxr_node_set_state_callback(struct cxr_node *n, cxr_node_state_fn fn, void *ctx)
{
    n->state_fn = fn;
    n->state_ctx = ctx;
}

static void state(struct cxr_node *n, const char *s)
{
    if (n->state_fn)
        n->state_fn(n->state_ctx, s);
}

static void http_options(void *ctx, struct cxr_triage_worklist_options *o)
{
    struct cxr_node *n = ctx;
    pthread_rwlock_rdlock(&n->gen_lock);
    o->max_wait_minutes = n->conf->priority.max_wait_minutes;
    o->show_patient_id = n->set.worklist_show_patient_id;
    o->window_hours = n->set.worklist_hours;
    for (int p = 0; p < 4; p++)
        snprintf(o->priority_names[p], sizeof o->priority_names[p], "%s",
                 cxr_triage_priority_name(n->conf, (enum cxr_triage_priority)p));
    pthread_rwlock_unlock(&n->gen_lock);
}

static bool http_healthy(void *ctx, char *why, size_t len)
{
    struct cxr_node *n = ctx;
    if (atomic_load(&n->stopping)) {
        snprintf(why, len, "shutting down");
        return false;
    }
    return node_scoring_healthy(n, why, len);
}

static int64_t http_queue_depth(void *ctx) { return node_queue_depth(ctx); }

/* Free space of the spool's filesystem and the job store's size (with its
 * WAL), in bytes; -1 where unknown. The job store holds the small instances
 * (node/spool-inline-max-kb), so both matter for sizing the spool. */
static void spool_space(const struct cxr_node *n, int64_t *free_bytes, int64_t *store_bytes)
{
    struct statvfs vfs;
    *free_bytes =
        statvfs(n->spool_dir, &vfs) == 0 ? (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize : -1;
    *store_bytes = -1;
    struct stat sb;
    if (stat(n->db_path, &sb) == 0) {
        *store_bytes = (int64_t)sb.st_size;
        char wal[sizeof n->db_path + 8];
        snprintf(wal, sizeof wal, "%s-wal", n->db_path);
        if (stat(wal, &sb) == 0)
            *store_bytes += (int64_t)sb.st_size;
    }
}

/* GET /status: what the worklist page's status line shows, in the shape of
 * the Orthanc plugin's status (state, reason, model, backend, queue). */
static char *http_status_json(void *ctx)
{
    struct cxr_node *n = ctx;
    json_object *o = json_object_new_object(), *m = json_object_new_object(),
                *q = json_object_new_object();
    if (!o || !m || !q) {
        json_object_put(o);
        json_object_put(m);
        json_object_put(q);
        return NULL;
    }
    char why[256] = "";
    bool ok = http_healthy(ctx, why, sizeof why);
    json_object_object_add(o, "service", json_object_new_string("node"));
    json_object_object_add(o, "version", json_object_new_string(CXR_VERSION));
    json_object_object_add(o, "state",
                           json_object_new_string(ok                          ? "ready"
                                                  : atomic_load(&n->stopping) ? "stopping"
                                                                              : "failing"));
    if (!ok)
        json_object_object_add(o, "reason", json_object_new_string(why));
    pthread_rwlock_rdlock(&n->gen_lock);
    if (n->engine) {
        const struct cxr_nn_model_meta *meta = cxr_triage_engine_model_meta(n->engine);
        json_object_object_add(m, "name", json_object_new_string(meta->name));
        json_object_object_add(m, "version", json_object_new_string(meta->version));
        json_object_object_add(m, "sha256",
                               json_object_new_string(cxr_triage_engine_model_sha256(n->engine)));
        json_object_object_add(m, "untrained",
                               json_object_new_boolean(cxr_nn_model_meta_untrained(meta)));
        json_object_object_add(o, "backend",
                               json_object_new_string(cxr_triage_engine_describe(n->engine)));
    }
    pthread_rwlock_unlock(&n->gen_lock);
    json_object_object_add(o, "model", m);
    json_object_object_add(q, "depth", json_object_new_int64(node_queue_depth(n)));
    json_object_object_add(o, "queue", q);
    int64_t free_bytes, store_bytes;
    spool_space(n, &free_bytes, &store_bytes);
    json_object *sp = json_object_new_object();
    if (sp) {
        json_object_object_add(sp, "free_bytes", json_object_new_int64(free_bytes));
        json_object_object_add(sp, "job_store_bytes", json_object_new_int64(store_bytes));
        json_object_object_add(o, "spool", sp);
    }
    const char *text =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *out = text ? strdup(text) : NULL;
    json_object_put(o);
    return out;
}

/* The node's own gauges and the DICOM service's counters, for /metrics. */
static char *http_node_metrics(void *ctx)
{
    struct cxr_node *n = ctx;
    int64_t free_bytes, store_bytes;
    spool_space(n, &free_bytes, &store_bytes);
    char *spool = NULL;
    if (asprintf(&spool,
                 "# HELP cxr_node_spool_free_bytes Free space on the spool's filesystem (new"
                 " associations are refused below node/disk-min-free-mb).\n"
                 "# TYPE cxr_node_spool_free_bytes gauge\n"
                 "cxr_node_spool_free_bytes %" PRId64 "\n"
                 "# HELP cxr_node_job_store_bytes Size of jobs.sqlite and its journal (it holds the"
                 " instances up to node/spool-inline-max-kb).\n"
                 "# TYPE cxr_node_job_store_bytes gauge\n"
                 "cxr_node_job_store_bytes %" PRId64 "\n",
                 free_bytes, store_bytes) < 0)
        return NULL;
    struct cxr_dicom_scp_stats st;
    pthread_mutex_lock(&n->scp_mu);
    bool have = n->scp != NULL;
    if (have)
        cxr_dicom_scp_get_stats(n->scp, &st);
    pthread_mutex_unlock(&n->scp_mu);
    if (!have)
        return spool;
    char *out = NULL;
    if (asprintf(&out,
                 "%s"
                 "# HELP cxr_node_associations_total Incoming associations by outcome.\n"
                 "# TYPE cxr_node_associations_total counter\n"
                 "cxr_node_associations_total{result=\"accepted\"} %" PRIu64 "\n"
                 "cxr_node_associations_total{result=\"rejected\"} %" PRIu64 "\n"
                 "cxr_node_associations_total{result=\"failed\"} %" PRIu64 "\n"
                 "# HELP cxr_node_associations_active Incoming associations open now.\n"
                 "# TYPE cxr_node_associations_active gauge\n"
                 "cxr_node_associations_active %u\n"
                 "# HELP cxr_node_received_bytes_total Data set bytes received.\n"
                 "# TYPE cxr_node_received_bytes_total counter\n"
                 "cxr_node_received_bytes_total %" PRIu64 "\n",
                 spool, st.associations_accepted, st.associations_rejected, st.associations_failed,
                 (unsigned)st.active_associations, st.bytes_received) < 0)
        out = NULL;
    free(spool);
    return out;
}

void node_scp_config(const struct cxr_node_settings *s, const char *tmp_dir,
                     struct cxr_dicom_scp_config *c)
{
    memset(c, 0, sizeof *c);
    c->ae_title = s->ae_title;
    c->bind_address = s->bind_address;
    c->port = s->port;
    c->max_associations = s->max_associations;
    c->max_pdu = s->max_pdu;
    c->acse_timeout_s = s->acse_timeout_s;
    c->dimse_timeout_s = s->dimse_timeout_s;
    c->check_called_ae = s->check_called_ae;
    c->allowed_peers = s->allowed_peer_count ? s->allowed_peers : NULL;
    c->allowed_peer_count = s->allowed_peer_count;
    c->tls.enabled = s->tls_enabled;
    c->tls.certificate = s->tls_certificate[0] ? s->tls_certificate : NULL;
    c->tls.private_key = s->tls_private_key[0] ? s->tls_private_key : NULL;
    c->tls.ca_certificates = s->tls_ca_certificates[0] ? s->tls_ca_certificates : NULL;
    c->tls.verify_peer = s->tls_verify_peer;
    c->spool_tmp_dir = tmp_dir;
    c->memory_max_bytes = (uint64_t)s->spool_inline_max_kb * 1024u;
}

/* Stops and joins every background thread (in-flight work finishes). */
static void stop_threads(struct cxr_node *n)
{
    atomic_store(&n->stopping, true);
    node_queue_stop(&n->q);
    node_wake(n);
    for (int i = 0; i < n->nworkers; i++)
        pthread_join(n->workers[i], NULL);
    n->nworkers = 0;
    if (n->reporter_started)
        pthread_join(n->reporter, NULL);
    n->reporter_started = false;
    node_deliverers_stop(n);
    if (n->housekeeper_started)
        pthread_join(n->housekeeper, NULL);
    n->housekeeper_started = false;
    cxr_node_http_stop(n->http);
    n->http = NULL;
}

struct scp_runner {
    struct cxr_dicom_scp *scp;
    enum cxr_status st;
    char err[CXR_ERRLEN];
};

static void *scp_thread(void *arg)
{
    struct scp_runner *r = arg;
    r->st = cxr_dicom_scp_run(r->scp, r->err);
    return NULL;
}

enum cxr_status cxr_node_run(struct cxr_node *n, char *err)
{
    enum cxr_status st;
    struct cxr_dicom_scp *scp = NULL;
    err[0] = '\0';
    /* The settings this run starts with (a reload may change n->set later;
     * listening settings only apply at the next start). */
    struct cxr_node_settings *s = malloc(sizeof *s);
    if (!s)
        return CXR_ERR_NOMEM;
    pthread_rwlock_rdlock(&n->gen_lock);
    *s = n->set;
    pthread_rwlock_unlock(&n->gen_lock);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int workers = cxr_node_settings_workers(s, ncpu > 0 && ncpu < 4096 ? (int32_t)ncpu : 1);

    st = node_queue_load(n);
    if (st != CXR_OK) {
        snprintf(err, CXR_ERRLEN, "cannot read the unfinished jobs: %s",
                 cxr_node_store_last_error());
        goto fail;
    }
    if (s->http_enabled) {
        struct cxr_node_http_source src = {.store = n->http_store,
                                           .metrics = n->metrics,
                                           .options = http_options,
                                           .healthy = http_healthy,
                                           .queue_depth = http_queue_depth,
                                           .extra_metrics = http_node_metrics,
                                           .status_json = http_status_json,
                                           .ctx = n,
                                           .allowed_hosts = s->http_allowed_hosts};
        st = cxr_node_http_start(s->http_bind_address, s->http_port, &src, &n->http, err);
        if (st != CXR_OK)
            goto fail;
        cxr_log(CXR_LOG_INFO, "node", "worklist and metrics on http://%s:%u/", s->http_bind_address,
                (unsigned)cxr_node_http_port(n->http));
    }
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&n->workers[i], NULL, node_worker_main, n) != 0) {
            snprintf(err, CXR_ERRLEN, "cannot start scoring worker %d", i);
            st = CXR_ERR_INTERNAL;
            goto fail;
        }
        n->nworkers++;
    }
    if (pthread_create(&n->reporter, NULL, node_reporter_main, n) != 0) {
        snprintf(err, CXR_ERRLEN, "cannot start the reporter thread");
        st = CXR_ERR_INTERNAL;
        goto fail;
    }
    n->reporter_started = true;
    if (pthread_create(&n->housekeeper, NULL, node_housekeeper_main, n) != 0) {
        snprintf(err, CXR_ERRLEN, "cannot start the housekeeping thread");
        st = CXR_ERR_INTERNAL;
        goto fail;
    }
    n->housekeeper_started = true;
    st = node_deliverers_start(n);
    if (st != CXR_OK) {
        snprintf(err, CXR_ERRLEN, "cannot start the delivery threads");
        goto fail;
    }

    struct cxr_dicom_scp_config sc;
    node_scp_config(s, n->tmp_dir, &sc);
    char derr[CXR_ERRLEN] = "";
    st = cxr_dicom_scp_new(&sc, node_on_store, node_on_association, n, &scp, derr);
    if (st != CXR_OK) {
        snprintf(err, CXR_ERRLEN, "DICOM service: %.1000s", derr);
        goto fail;
    }
    pthread_mutex_lock(&n->scp_mu);
    n->scp = scp;
    bool stop_early = atomic_load(&n->stopping);
    pthread_mutex_unlock(&n->scp_mu);
    if (stop_early)
        cxr_dicom_scp_stop(scp);
    struct scp_runner runner = {.scp = scp};
    pthread_t listener;
    if (pthread_create(&listener, NULL, scp_thread, &runner) != 0) {
        snprintf(err, CXR_ERRLEN, "cannot start the DICOM listener");
        st = CXR_ERR_INTERNAL;
        pthread_mutex_lock(&n->scp_mu);
        n->scp = NULL;
        pthread_mutex_unlock(&n->scp_mu);
        cxr_dicom_scp_free(scp);
        goto fail;
    }
    uint16_t port = cxr_dicom_scp_wait_ready(scp, 120000);
    if (port) {
        cxr_log(CXR_LOG_INFO, "node",
                "listening: DICOM %son %s:%u, AE %s%s; spool %s; %d worker(s); %zu destination(s)",
                s->tls_enabled ? "TLS " : "", s->bind_address[0] ? s->bind_address : "*",
                (unsigned)port, s->ae_title, s->check_called_ae ? "" : " (any called AE)",
                n->spool_dir, workers, s->destination_count);
        char status[128];
        snprintf(status, sizeof status, "READY=1\nSTATUS=serving DICOM on port %u", (unsigned)port);
        state(n, status);
    }
    pthread_join(listener, NULL);
    st = runner.st;
    memcpy(derr, runner.err, sizeof derr);
    state(n, "STOPPING=1");
    cxr_log(CXR_LOG_INFO, "node", "stopping: finishing the work in flight");
    pthread_mutex_lock(&n->scp_mu);
    n->scp = NULL;
    pthread_mutex_unlock(&n->scp_mu);
    cxr_dicom_scp_free(scp);
    if (st != CXR_OK)
        snprintf(err, CXR_ERRLEN, "DICOM service: %.1000s", derr);
fail:
    stop_threads(n);
    if (st == CXR_OK)
        cxr_log(CXR_LOG_INFO, "node", "stopped");
    free(s);
    return st;
}

void cxr_node_stop(struct cxr_node *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->scp_mu);
    atomic_store(&n->stopping, true);
    if (n->scp)
        cxr_dicom_scp_stop(n->scp);
    pthread_mutex_unlock(&n->scp_mu);
    node_wake(n);
}

static bool same_destinations(const struct cxr_node_settings *a, const struct cxr_node_settings *b)
{
    return a->destination_count == b->destination_count &&
           memcmp(a->destinations, b->destinations,
                  a->destination_count * sizeof a->destinations[0]) == 0;
}

/* Warns about settings that only a restart applies. */
/* A key the node reads only at start changed in a reload (the key table's
 * restart flag, cxr_conf_restart_changes): say so. */
static void warn_restart_only(const char *key, void *ctx)
{
    (void)ctx;
    cxr_log(CXR_LOG_WARN, "node", "reload: %s changed; it takes effect at the next start", key);
}

enum cxr_status cxr_node_reload(struct cxr_node *n, struct cxr_conf *conf, char *err)
{
    err[0] = '\0';
    if (!conf) {
        cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_RELOADS_FAILED, 1);
        snprintf(err, CXR_ERRLEN, "the new configuration does not load");
        cxr_log(CXR_LOG_ERROR, "node", "reload refused, the running configuration stays: %s", err);
        return CXR_ERR_INVALID_ARG;
    }
    struct cxr_node_settings *nw = malloc(sizeof *nw);
    struct cxr_triage_engine *engine = NULL;
    enum cxr_status st = nw ? node_settings_for(&n->opt, conf, nw, err) : CXR_ERR_NOMEM;
    if (st == CXR_OK)
        st = new_engine(n, conf, &engine, err);
    if (st != CXR_OK) {
        cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_RELOADS_FAILED, 1);
        cxr_log(CXR_LOG_ERROR, "node", "reload refused, the running configuration stays: %s",
                err[0] ? err : cxr_status_str(st));
        free(nw);
        cxr_conf_free(conf);
        return st;
    }
    pthread_rwlock_wrlock(&n->gen_lock);
    struct cxr_conf *old_conf = n->conf;
    struct cxr_triage_engine *old_engine = n->engine;
    struct cxr_node_settings old = n->set;
    /* Restart-only settings keep their running values until the restart. */
    struct cxr_node_settings applied = *nw;
    memcpy(applied.ae_title, old.ae_title, sizeof applied.ae_title);
    memcpy(applied.spool_dir, old.spool_dir, sizeof applied.spool_dir);
    applied.worker_threads = old.worker_threads;
    n->set = applied;
    n->conf = conf;
    n->engine = engine;
    pthread_rwlock_unlock(&n->gen_lock);
    node_scoring_reset(n); /* the failures were the old model's */
    cxr_conf_restart_changes(old_conf, conf, warn_restart_only, NULL);
    pthread_mutex_lock(&n->scp_mu); /* n->scp comes and goes with run/stop */
    if (n->scp)
        cxr_dicom_scp_set_memory_max(n->scp, (uint64_t)nw->spool_inline_max_kb * 1024u);
    pthread_mutex_unlock(&n->scp_mu);
    if (!same_destinations(&old, nw) && !atomic_load(&n->stopping)) {
        node_deliverers_stop(n);
        node_deliverers_start(n);
        cxr_log(CXR_LOG_INFO, "node", "reload: %zu destination(s) now", nw->destination_count);
    }
    /* log/level (unless CXR_LOG_LEVEL overrides it) and log/allow-phi follow
     * the reload like the other keys that are read at each use. */
    cxr_conf_log_apply(conf);
    cxr_triage_engine_free(old_engine);
    cxr_conf_free(old_conf);
    free(nw);
    cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_RELOADS, 1);
    cxr_log(CXR_LOG_INFO, "node", "reloaded: %s", cxr_triage_engine_describe(engine));
    node_wake(n);
    return CXR_OK;
}

void cxr_node_free(struct cxr_node *n)
{
    if (!n)
        return;
    stop_threads(n);
    cxr_triage_engine_free(n->engine);
    cxr_conf_free(n->conf);
    cxr_node_store_close(n->store);
    cxr_node_store_close(n->http_store);
    cxr_node_metrics_free(n->metrics);
    node_queue_destroy(&n->q);
    free(n->opt_model_path);
    free(n->opt_spool_dir);
    cxr_node_spool_unlock(n->spool_lock); /* last: the spool is no longer used */
    for (int i = 0; i < NODE_RECEIVE_STRIPES; i++)
        pthread_mutex_destroy(&n->receive_mu[i]);
    pthread_cond_destroy(&n->intake_cv);
    pthread_mutex_destroy(&n->intake_mu);
    cxr_wake_destroy(&n->wake);
    pthread_mutex_destroy(&n->health_mu);
    pthread_mutex_destroy(&n->deliverers_mu);
    pthread_mutex_destroy(&n->scp_mu);
    pthread_rwlock_destroy(&n->gen_lock);
    free(n);
}
