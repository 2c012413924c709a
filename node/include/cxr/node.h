/* cxr/node.h — the DICOM node (`cxr-triage serve`): receives studies over
 * DICOM (SCP), keeps every acknowledged instance durably (spool + job store),
 * scores them with the engine, writes one SR per stable study, delivers it to
 * the configured destinations with retries and a dead-letter list, and serves
 * the worklist and metrics over HTTP.
 *
 * Threads: cxr_node_run blocks (it serves DICOM on the calling
 * thread); cxr_node_stop and cxr_node_reload may be called from
 * another thread (the command's signal thread). Everything else in the node
 * runs on threads the node owns: the SCP's association threads (store
 * callback), the scoring workers, the reporter (study stability → SR), one
 * delivery thread per destination, the housekeeper and the HTTP thread.
 */
#ifndef CXR_NODE_H
#define CXR_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/conf.h"
#include "cxr/dicom_net.h"
#include "cxr/outbox.h"
#include "cxr/status.h"
#include "cxr/store.h"
#include "cxr/worklist.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_NODE_MAX_DESTINATIONS 16
#define CXR_NODE_PATHLEN          1024

/* One place the SRs go (C-STORE SCU). */
struct cxr_node_destination {
    char name[CXR_NODE_DEST_NAMELEN]; /* unique; names the delivery rows */
    char ae_title[17];                /* called AE */
    char calling_ae_title[17];        /* "" = the node's AE title */
    char host[256];
    uint16_t port;
    bool tls; /* with the node's certificate, key and CA */
};

/* Everything the node reads from the configuration, as plain values (paths
 * already resolved). cxr_node_settings_from_conf fills it. */
struct cxr_node_settings {
    /* DICOM SCP */
    char ae_title[17];
    char bind_address[64];
    uint16_t port;
    uint32_t max_associations;
    uint32_t max_pdu;
    uint32_t acse_timeout_s;
    uint32_t dimse_timeout_s;
    uint32_t connect_timeout_s; /* outgoing associations */
    bool check_called_ae;
    struct cxr_dicom_peer_rule allowed_peers[CXR_DICOM_NET_MAX_PEERS];
    size_t allowed_peer_count; /* 0 = any peer */
    /* TLS (incoming and, for destinations with tls, outgoing) */
    bool tls_enabled;
    char tls_certificate[CXR_NODE_PATHLEN];
    char tls_private_key[CXR_NODE_PATHLEN];
    char tls_ca_certificates[CXR_NODE_PATHLEN];
    bool tls_verify_peer;
    /* spool and jobs */
    char spool_dir[CXR_NODE_PATHLEN];
    uint64_t disk_min_free_mb;      /* below this, new associations are refused */
    uint32_t spool_retention_hours; /* processed instance files kept this long */
    uint32_t spool_inline_max_kb;   /* instances up to this size are kept in the job store */
    int32_t worker_threads;         /* 0 = automatic */
    uint32_t batch_wait_ms;         /* wait this long to fill a batch */
    uint32_t study_stable_s;        /* a study is complete after this quiet time */
    /* delivery */
    struct cxr_node_destination destinations[CXR_NODE_MAX_DESTINATIONS];
    size_t destination_count;
    uint32_t retry_base_s;
    uint32_t retry_cap_s;
    uint32_t retry_max_attempts;
    /* HTTP */
    bool http_enabled;
    char http_bind_address[64];
    uint16_t http_port;            /* 0 = any free port (tests) */
    char http_allowed_hosts[1025]; /* http/allowed-hosts */
    bool worklist_show_patient_id;
    uint32_t worklist_hours; /* studies older than this leave the worklist */
};

/* The built-in defaults (AE CXRTRIAGE on 127.0.0.1:11112, HTTP 127.0.0.1:8090, ...). */
void cxr_node_settings_defaults(struct cxr_node_settings *s);

/* Reads the node's keys from a loaded configuration. CXR_ERR_CONF_VALUE
 * (err says which key) for values the node cannot use together. */
enum cxr_status cxr_node_settings_from_conf(const struct cxr_conf *conf,
                                            struct cxr_node_settings *s, char *err);

/* How many scoring workers a node with these settings runs on a machine with
 * `online_cpus` CPUs: node/worker-threads when set, else automatic: one per
 * CPU, at least 2 (one decodes while another waits for the forward pass), at
 * most 8 (the forward pass is shared; more workers only queue). */
int32_t cxr_node_settings_workers(const struct cxr_node_settings *s, int32_t online_cpus);

/* ------------------------------------------------------------------ metrics */

/* Stages timed into histograms. */
enum cxr_node_stage {
    CXR_NODE_STAGE_RECEIVE = 0, /* store callback: fsync, rename, job row */
    CXR_NODE_STAGE_QUEUE,       /* received → taken by a worker */
    CXR_NODE_STAGE_READ,
    CXR_NODE_STAGE_GATE,
    CXR_NODE_STAGE_PRESENT,
    CXR_NODE_STAGE_PREPROCESS,
    CXR_NODE_STAGE_INFER,
    CXR_NODE_STAGE_SR,
    CXR_NODE_STAGE_DELIVER, /* one C-STORE of an SR */
    CXR_NODE_STAGE_RESULT,  /* study's last instance received → its SR delivered */
    CXR_NODE_STAGE_COUNT
};

enum cxr_node_counter {
    CXR_NODE_COUNT_RECEIVED = 0,   /* instances acknowledged */
    CXR_NODE_COUNT_DUPLICATE,      /* of which already known */
    CXR_NODE_COUNT_INTAKE_COMMITS, /* durable commits of received instances (group commit) */
    CXR_NODE_COUNT_REFUSED,        /* C-STORE answered with a failure */
    CXR_NODE_COUNT_ASSOC_REFUSED,  /* associations refused (disk watermark) */
    CXR_NODE_COUNT_ANALYSED,
    CXR_NODE_COUNT_SR_CREATED,
    CXR_NODE_COUNT_SR_DELIVERED,
    CXR_NODE_COUNT_SR_ATTEMPT_FAILED, /* one failed delivery attempt */
    CXR_NODE_COUNT_SR_DEAD,           /* deliveries given up (dead letter) */
    CXR_NODE_COUNT_RELOADS,
    CXR_NODE_COUNT_RELOADS_FAILED,
    CXR_NODE_COUNT_COUNT
};

struct cxr_node_metrics;

enum cxr_status cxr_node_metrics_new(struct cxr_node_metrics **out);
void cxr_node_metrics_free(struct cxr_node_metrics *m);
/* Thread-safe. */
void cxr_node_metrics_count(struct cxr_node_metrics *m, enum cxr_node_counter c, uint64_t n);
/* A not-analysed instance, labelled by the status that says why. */
void cxr_node_metrics_not_analysed(struct cxr_node_metrics *m, enum cxr_status why);
void cxr_node_metrics_observe(struct cxr_node_metrics *m, enum cxr_node_stage stage,
                              double seconds);
uint64_t cxr_node_metrics_get(const struct cxr_node_metrics *m, enum cxr_node_counter c);
/* Prometheus text exposition (version 0.0.4) of every metric, plus the
 * queue depths in `counts` (may be NULL) and `in_memory_queue`. Caller frees. */
char *cxr_node_metrics_render(struct cxr_node_metrics *m,
                              const struct cxr_node_store_counts *counts, int64_t in_memory_queue);

/* ------------------------------------------------------------------ HTTP */

/* What the HTTP endpoint reads. Called on the HTTP thread. */
struct cxr_node_http_source {
    struct cxr_node_store *store; /* a connection of its own */
    struct cxr_node_metrics *metrics;
    /* Current worklist options (names, maximum wait, PHI policy); reload-safe. */
    void (*options)(void *ctx, struct cxr_triage_worklist_options *out);
    /* Health: false with a reason when the node cannot take work. May be NULL. */
    bool (*healthy)(void *ctx, char *why, size_t len);
    /* Jobs waiting in memory (for /metrics). May be NULL. */
    int64_t (*queue_depth)(void *ctx);
    /* More Prometheus text appended to /metrics (malloc'd, freed by the
     * caller; NULL for none). May be NULL. */
    char *(*extra_metrics)(void *ctx);
    /* GET /status: a JSON object (malloc'd, freed by the caller) with "state"
     * ("ready" or not, and "reason"), "model" {name, version, sha256},
     * "backend" and "queue" {depth}, as the Orthanc plugin's status gives
     * them (the page reads both). May be NULL: 503. */
    char *(*status_json)(void *ctx);
    void *ctx;
    /* Host names a request's Host header may give besides IP addresses and
     * localhost (space-separated; NULL or "" none): http/allowed-hosts.
     * Copied at start. */
    const char *allowed_hosts;
};

struct cxr_node_http;

/* Serves GET /worklist, /studies/{StudyInstanceUID}, /status, /healthz,
 * /metrics and the reading worklist page (/ui/) on bind_address:port
 * (loopback by default) on a thread of its own. port 0
 * takes any free port (cxr_node_http_port says which). */
enum cxr_status cxr_node_http_start(const char *bind_address, uint16_t port,
                                    const struct cxr_node_http_source *src,
                                    struct cxr_node_http **out, char *err);
uint16_t cxr_node_http_port(const struct cxr_node_http *h);
/* What cxr_node_http_start checks first, for `config check`: bind_address
 * (NULL or "": loopback) must be an IPv4 or IPv6 address literal, not a host
 * name. CXR_ERR_INVALID_ARG with the reason in err (CXR_ERRLEN). */
enum cxr_status cxr_node_http_check_bind(const char *bind_address, char *err);
/* Stops serving and frees; NULL is a no-op. */
void cxr_node_http_stop(struct cxr_node_http *h);

/* ------------------------------------------------------------------ the node */

/* Command-line overrides of configured values (0/NULL = keep). */
struct cxr_node_options {
    const char *model_path;
    const char *spool_dir;
    int32_t port;           /* -1 keep */
    int32_t http_port;      /* -1 keep */
    int32_t study_stable_s; /* -1 keep */
};
void cxr_node_options_init(struct cxr_node_options *opt);

struct cxr_node;

/* Builds the node: checks the settings, takes the spool folder
 * (cxr_node_spool_lock: CXR_ERR_TRIAGE_BUSY while another node holds it;
 * held until cxr_node_free), opens the job store, removes half-written files
 * a crash left behind, loads the model. Binds nothing yet. Takes ownership of `conf` in every case
 * (freed with the node, or at once on failure). On failure *out == NULL and err says what. */
enum cxr_status cxr_node_new(struct cxr_conf *conf, const struct cxr_node_options *opt,
                             struct cxr_node **out, char *err);

/* One line of cxr_node_check: `item` ("settings", "model", "spool",
 * "sr/output-dir", "tls"), whether it passed, and what was found (the
 * resolved path and what is wrong with it, or what was loaded). */
typedef void (*cxr_node_check_fn)(void *ctx, bool ok, const char *item, const char *detail);

/* `cxr-triage config check`: tries what cxr_node_new and cxr_node_run open
 * at start, built by the same code, so that a configuration that passes does
 * not fail at start for a file: the node's settings with the overrides of
 * `opt` (may be NULL); the model with its backend and network, from
 * model/path resolved against the configuration file's folder (a missing,
 * corrupt or non-finite model fails); the spool folder (a folder this user
 * can write, or can create) and its job store; sr/output-dir likewise; the
 * TLS files (loaded as the DICOM service loads them; read access for
 * destinations' TLS). A spool held by a running node is reported, not a
 * failure. Creates, locks and binds nothing (ports are not tried: a running
 * node holds them). `fn` (may be NULL) gets one call per item, in that
 * order. Returns CXR_OK when every item passed, else the status of the first
 * failure. Any thread. */
enum cxr_status cxr_node_check(const struct cxr_conf *conf, const struct cxr_node_options *opt,
                               cxr_node_check_fn fn, void *ctx);

/* The same for the Orthanc plugin's use of a configuration (`config check
 * --plugin`): the model as cxr_node_check tries it, and plugin/state-dir (a
 * folder this user can write or create; "" is Orthanc's own index folder,
 * not known here); the node's own keys, spool and TLS are not tried. */
enum cxr_status cxr_node_check_plugin(const struct cxr_conf *conf, cxr_node_check_fn fn, void *ctx);

/* Resumes every unfinished job, starts the workers, the reporter, the
 * deliveries and HTTP, then serves DICOM until cxr_node_stop. Returns
 * after in-flight work finished (unfinished jobs stay in the store). */
enum cxr_status cxr_node_run(struct cxr_node *n, char *err);

/* Asks a running node to stop. Any thread; returns at once. */
void cxr_node_stop(struct cxr_node *n);

/* Replaces the configuration and the model with `conf` (ownership taken in
 * every case). A configuration whose model does not load, or that the node
 * cannot use, is refused: the old one keeps serving and err says why.
 * conf NULL (the new file did not even load) counts as a refused reload.
 * Settings that need a new listening socket (AE title, port, TLS, peers) take
 * effect at the next start; a warning says so. */
enum cxr_status cxr_node_reload(struct cxr_node *n, struct cxr_conf *conf, char *err);

/* Frees a stopped node; NULL is a no-op. */
void cxr_node_free(struct cxr_node *n);

/* Reached when the node is ready (listening) or stops; for sd_notify. May be NULL. */
typedef void (*cxr_node_state_fn)(void *ctx, const char *state);
void cxr_node_set_state_callback(struct cxr_node *n, cxr_node_state_fn fn, void *ctx);

/* Tells systemd (Type=notify) the service state ("READY=1", "RELOADING=1",
 * "STOPPING=1", "STATUS=..."): a datagram to $NOTIFY_SOCKET. False when not
 * run by systemd or the send failed. Any thread. */
bool cxr_node_sd_notify(const char *state);

/* The job store path inside a spool folder ("<spool>/jobs.sqlite"). */
void cxr_node_store_path(const char *spool_dir, char *out, size_t len);

/* ------------------------------------------------------------------ one node per spool */

/* The lock file inside a spool folder ("<spool>/node.lock"). */
void cxr_node_lock_path(const char *spool_dir, char *out, size_t len);

struct cxr_node_spool_lock;

/* Takes the spool folder (and so its job store, which always lives in it)
 * for the caller until cxr_node_spool_unlock: an exclusive flock(2) on
 * <spool>/node.lock (created if needed), into which the caller's pid is
 * written. The kernel drops the lock when the process ends in any way (kill
 * -9 included), so a lock file left behind never blocks. Fails with
 * CXR_ERR_TRIAGE_BUSY while another holder (another process, or another lock
 * of this one) has it: err names the folder, the holder's pid when known and
 * what to do; CXR_ERR_IO when the file cannot be opened. cxr_node_new takes
 * it before it touches the spool. The folder must exist. On failure
 * *out == NULL. Any thread. */
enum cxr_status cxr_node_spool_lock(const char *spool_dir, struct cxr_node_spool_lock **out,
                                    char *err);
/* Releases and frees; NULL is a no-op. The lock file stays. */
void cxr_node_spool_unlock(struct cxr_node_spool_lock *l);
/* The pid that <spool>/node.lock names when that process is alive (a node
 * holds the spool, unless the pid was reused); 0 otherwise. Reads only:
 * takes no lock, so it never gets in a starting node's way. */
long cxr_node_spool_holder(const char *spool_dir);

#ifdef __cplusplus
}
#endif
#endif
