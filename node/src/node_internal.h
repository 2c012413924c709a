/* node_internal.h — the node's shared state, split over node*.c:
 *   node.c          lifecycle (new, run, stop, reload, free)
 *   node_settings.c settings defaults and the configuration keys
 *   node_spool.c    reception: association check, durable store callback,
 *                   crash leftovers, retention
 *   node_score.c    the job queue and the scoring workers
 *   node_report.c   study stability → one SR per study (and successors)
 *   node_deliver.c  one delivery thread per destination, retries, dead letters
 *   node_lock.c     one node per spool: the lock file
 *   node_check.c    what `config check` tries: everything a start opens
 *
 * Locking: `gen_lock` (rwlock) guards the swappable generation (conf,
 * engine, settings): readers hold it while they use the engine or read
 * settings; a reload takes it for writing to swap. The job queue has its own
 * mutex; the store serialises its own calls. Never take gen_lock while
 * holding the queue mutex.
 */
#ifndef CXR_NODE_INTERNAL_H
#define CXR_NODE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cxr/dicom_net.h"
#include "cxr/file.h"
#include "cxr/wake.h"
#include "cxr/node.h"
#include "cxr/store.h"
#include "cxr/triage.h"

#define NODE_QUEUE_CAP   100000 /* jobs held in memory; the rest wait in the store */
#define NODE_MAX_WORKERS 64
#define NODE_MAX_ATTEMPTS                                                \
    3 /* a job that was taken this often without a result is not retried \
       (after the first, it is taken alone: see take_locked) */
#define NODE_RECEIVE_STRIPES 64
#define NODE_WORKER_NICE     10 /* scoring yields the CPU to reception */
#define NODE_UNHEALTHY_AFTER 3  /* images in a row the engine gave no score: /healthz fails */

/* One job for the scoring workers. */
struct node_job {
    int64_t id;
    int64_t received_ms;
    int32_t attempts;                  /* before this take */
    char path[CXR_NODE_STORE_PATHLEN]; /* relative to the spool */
    bool in_store;                     /* the bytes are in the job store, not at path */
};

struct node_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct node_job *v; /* ring buffer */
    size_t cap, head, count;
    size_t limit;          /* NODE_QUEUE_CAP, or less from CXR_NODE_QUEUE_LIMIT */
    bool overflow;         /* some RECEIVED jobs are only in the store */
    int64_t loaded_max_id; /* ids <= this came from a store reload */
    size_t inflight;       /* jobs taken and not yet done */
    bool stopping;
    pthread_mutex_t collect_mu; /* one worker fills a batch at a time */
};

struct node_deliverer {
    struct cxr_node *node;
    struct cxr_node_destination dest;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    uint32_t rng;
};

struct cxr_node {
    struct cxr_node_options opt;
    char *opt_model_path, *opt_spool_dir;

    /* the generation a reload swaps */
    pthread_rwlock_t gen_lock;
    struct cxr_conf *conf;
    struct cxr_triage_engine *engine;
    struct cxr_node_settings set;

    /* fixed for the node's life (from the settings at start) */
    char spool_dir[CXR_NODE_PATHLEN];
    char tmp_dir[CXR_NODE_PATHLEN + 8];
    char sr_dir[CXR_NODE_PATHLEN + 8];
    char db_path[CXR_NODE_PATHLEN + 16];
    struct cxr_node_spool_lock *spool_lock; /* held from new to free: one node per spool */
    struct cxr_node_store *store;
    struct cxr_node_store *http_store;
    struct cxr_node_metrics *metrics;
    struct cxr_node_http *http;
    pthread_mutex_t scp_mu;
    struct cxr_dicom_scp *scp;
    pthread_mutex_t receive_mu[NODE_RECEIVE_STRIPES];
    /* Group commit of received instances (node_spool.c): associations that
     * finish a C-STORE while a commit is being made share the next one. */
    pthread_mutex_t intake_mu;
    pthread_cond_t intake_cv;
    struct node_intake_item *intake_head, *intake_tail;
    bool intake_busy;

    struct node_queue q;
    pthread_t workers[NODE_MAX_WORKERS];
    int nworkers;
    pthread_t reporter, housekeeper;
    bool reporter_started, housekeeper_started;
    pthread_mutex_t deliverers_mu; /* guards the array across reloads */
    struct node_deliverer *deliverers;
    size_t ndeliverers;

    /* wakes the reporter, deliverers and housekeeper */
    struct cxr_wake wake; /* work for a worker, the reporter or a deliverer */

    /* Scoring health (/healthz, /status): images in a row for which the
     * forward pass gave no score (a backend failure, a non-finite output),
     * and the last reason; a score or a reload starts again from 0. */
    pthread_mutex_t health_mu;
    int score_failures;
    char score_failure[256];

    atomic_bool stopping;
    cxr_node_state_fn state_fn;
    void *state_ctx;
};

/* Time helpers: wall clock (persisted) and monotonic (durations), in ms. */
int64_t node_now_ms(void);
double node_mono_ms(void);
/* Wakes every waiting background thread. */
void node_wake(struct cxr_node *n);
/* The wake counter; read it before looking for work, pass it to node_wait. */
uint64_t node_wake_seq(struct cxr_node *n);
/* Waits until a wake after `seen` (returns at once if one happened already),
 * `deadline_ms` (wall clock) or stop. */
void node_wait(struct cxr_node *n, uint64_t seen, int64_t deadline_ms);
/* mkdir -p with mode 0750. */
bool node_mkdirs(const char *path);
/* Loads a received instance: from the job store when it is kept there
 * (in_store), else from its spool file `rel`, within the image size limits
 * of `rules` (NULL: the decoder's; cxr_dicom_instance_load_file_within).
 * err: CXR_ERRLEN. */
enum cxr_status node_instance_load(struct cxr_node *n, int64_t id, bool in_store, const char *rel,
                                   const struct cxr_conf_gate *rules,
                                   struct cxr_dicom_instance **out, char *err);

/* node.c: what a start (and cxr_node_check) builds from the configuration */
/* The node's settings from `conf` with the command-line overrides of `opt`
 * (may be NULL); err (CXR_ERRLEN) says which key is wrong. */
enum cxr_status node_settings_for(const struct cxr_node_options *opt, const struct cxr_conf *conf,
                                  struct cxr_node_settings *s, char *err);
/* The engine as a start builds it: the model at `model_path` (NULL: the
 * configuration's model/path, resolved against the configuration file's
 * folder), its backend and network. `note` (CXR_ERRLEN) gets the backend's
 * remark, if any; err names the file, and says what a relative model/path is
 * relative to. Logs nothing. */
enum cxr_status node_engine_new(const struct cxr_conf *conf, const char *model_path,
                                struct cxr_triage_engine **out, char *note, char *err);
/* The SCP configuration from the settings (strings point into `s`). */
void node_scp_config(const struct cxr_node_settings *s, const char *tmp_dir,
                     struct cxr_dicom_scp_config *c);

/* node_spool.c */
uint16_t node_on_store(void *ctx, const struct cxr_dicom_store_event *ev);
bool node_on_association(void *ctx, const char *calling_ae, const char *peer_host, char *reason);
void node_spool_relpath(const char *sop_instance_uid, char *out, size_t len);
enum cxr_status node_spool_clean(struct cxr_node *n);
void *node_housekeeper_main(void *arg);

/* node_score.c */
/* Whether the engine gives scores: false after NODE_UNHEALTHY_AFTER images
 * in a row without one, `why` (len bytes) then says so with the last
 * reason. Any thread. */
bool node_scoring_healthy(struct cxr_node *n, char *why, size_t len);
/* Forgets the failures (a reload brings a new engine). */
void node_scoring_reset(struct cxr_node *n);
enum cxr_status node_queue_init(struct node_queue *q);
void node_queue_destroy(struct node_queue *q);
/* Adds a job received now (skipped while the queue overflows into the store). */
void node_queue_push(struct cxr_node *n, const struct node_job *job);
/* Loads RECEIVED jobs from the store (start-up and overflow). */
enum cxr_status node_queue_load(struct cxr_node *n);
int64_t node_queue_depth(struct cxr_node *n);
void node_queue_stop(struct node_queue *q);
void *node_worker_main(void *arg);

/* node_report.c */
void *node_reporter_main(void *arg);

/* node_deliver.c */
enum cxr_status node_deliverers_start(struct cxr_node *n);
void node_deliverers_stop(struct cxr_node *n);
/* The SCU target for a destination under the current settings. */
void node_scu_target(const struct cxr_node_settings *set, const struct cxr_node_destination *d,
                     struct cxr_dicom_scu_target *t);

#endif
