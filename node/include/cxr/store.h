/* cxr/store.h — the node's durable job store.
 *
 * Everything the node must not forget lives here: each received instance
 * (a job until it is scored), its result, each study's state (priority, the
 * SRs made for it) and each SR delivery (pending, delivered, dead-lettered).
 *
 * The store is a small interface (a table of function pointers, like nn's
 * backends) so that a PostgreSQL store shared by several nodes can replace
 * the SQLite one later; callers use the cxr_node_store_* wrappers below and
 * never the table directly. The SQLite store runs in WAL mode with
 * synchronous=FULL: a call that changes state returns only after the change
 * is on disk. Other processes (`cxr-triage queue`) may open the same file
 * while the node runs.
 *
 * Times are milliseconds since the Unix epoch (they survive restarts).
 * Threads: one store object may be used from several threads (calls are
 * serialised inside); rows handed out are plain data owned by the caller.
 * Errors: each call returns a status; cxr_node_store_last_error() gives the
 * detail of the calling thread's last failure.
 */
#ifndef CXR_STORE_H
#define CXR_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/dicom.h"
#include "cxr/status.h"
#include "cxr/study.h"
#include "cxr/triage.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_NODE_STORE_ERRLEN  512
#define CXR_NODE_STORE_PATHLEN CXR_TRIAGE_PATHLEN
#define CXR_NODE_DEST_NAMELEN  64

/* The life of one SR delivery to one destination. */
enum cxr_node_delivery_state {
    CXR_NODE_DELIVERY_PENDING = 0, /* waiting for its next attempt */
    CXR_NODE_DELIVERY_DELIVERED = 1,
    CXR_NODE_DELIVERY_DEAD = 2 /* gave up after the maximum attempts */
};

/* The outcome of scoring one instance, for cxr_node_store_record. */
struct cxr_node_store_outcome {
    int64_t instance_id;
    const struct cxr_triage_result *result; /* info (study UID, ...), analysed, probability, ... */
    bool has_info;                          /* result->info was read from the file */
};

/* A received instance for cxr_node_store_instances_add: the row, and
 * with `data` its bytes kept in the store (row->in_store is implied). The
 * store fills `duplicate` and `id` (0 for a duplicate). */
struct cxr_node_store_new_instance {
    const struct cxr_triage_instance_row *row;
    const void *data;
    size_t data_len;
    bool duplicate;
    int64_t id;
};

/* A report decision for a study: the SR made (or none, when nothing new was
 * analysed) and the destinations it must reach. Every processed, unreported
 * instance of the study with id <= up_to_instance_id becomes reported. */
struct cxr_node_store_report {
    const char *study_instance_uid;
    int64_t up_to_instance_id;
    bool has_sr;
    const char *sr_sop_instance_uid;
    const char *sr_series_instance_uid;
    const char *sr_path;                      /* relative to the spool folder */
    const char *predecessor_sop_instance_uid; /* NULL/"" none */
    int32_t priority;                         /* the study priority the SR states */
    int64_t study_last_received_ms;
    int64_t created_ms;
    const char *const *destinations; /* names; one pending delivery each */
    size_t destination_count;
};

/* One delivery row, with its SR. */
struct cxr_node_delivery_row {
    int64_t id;
    int64_t sr_id;
    char destination[CXR_NODE_DEST_NAMELEN];
    enum cxr_node_delivery_state state;
    int32_t attempts;
    int64_t next_attempt_ms;
    int64_t created_ms;
    int64_t updated_ms;
    char last_error[512];
    char sr_path[CXR_NODE_STORE_PATHLEN];
    char sr_sop_instance_uid[CXR_DICOM_UID_LEN];
    char study_instance_uid[CXR_DICOM_UID_LEN];
    int32_t priority;
    int64_t study_last_received_ms;
};

/* Queue depths, for /metrics and `queue list`. */
struct cxr_node_store_counts {
    int64_t instances_pending; /* received, not processed */
    int64_t instances_analysed;
    int64_t instances_not_analysed;
    int64_t studies;
    int64_t studies_unreported; /* processed instances awaiting a report decision */
    int64_t deliveries_pending;
    int64_t deliveries_delivered;
    int64_t deliveries_dead;
};

struct cxr_node_store;

/* The interface a store implements. Arrays returned through `**rows` are
 * malloc'd (caller frees with free()); on failure *rows == NULL, *n == 0. */
struct cxr_node_store_ops {
    const char *name;
    void (*close)(struct cxr_node_store *s);
    enum cxr_status (*instances_add)(struct cxr_node_store *s,
                                     struct cxr_node_store_new_instance *items, size_t n);
    enum cxr_status (*instance_data)(struct cxr_node_store *s, int64_t id, void **data,
                                     size_t *len);
    enum cxr_status (*background_checkpoints)(struct cxr_node_store *s);
    enum cxr_status (*instance_find)(struct cxr_node_store *s, const char *sop_instance_uid,
                                     bool *found);
    enum cxr_status (*instances_pending)(struct cxr_node_store *s, int64_t after_id, size_t limit,
                                         struct cxr_triage_instance_row **rows, size_t *n);
    enum cxr_status (*instances_claim)(struct cxr_node_store *s, const int64_t *ids, size_t n);
    enum cxr_status (*record)(struct cxr_node_store *s,
                              const struct cxr_node_store_outcome *outcomes, size_t n,
                              int64_t processed_ms);
    enum cxr_status (*pending_oldest)(struct cxr_node_store *s, int64_t *received_ms, bool *any);
    enum cxr_status (*studies_unreported)(struct cxr_node_store *s,
                                          struct cxr_triage_study_row **rows, size_t *n);
    enum cxr_status (*study_instances)(struct cxr_node_store *s, const char *study_instance_uid,
                                       struct cxr_triage_instance_row **rows, size_t *n);
    enum cxr_status (*report_add)(struct cxr_node_store *s, const struct cxr_node_store_report *rep,
                                  int64_t *sr_id);
    enum cxr_status (*delivery_next)(struct cxr_node_store *s, const char *destination,
                                     int64_t now_ms, struct cxr_node_delivery_row *row, bool *found,
                                     int64_t *next_due_ms);
    enum cxr_status (*delivery_update)(struct cxr_node_store *s, int64_t id,
                                       enum cxr_node_delivery_state state, int32_t attempts,
                                       int64_t next_attempt_ms, const char *error, int64_t now_ms);
    enum cxr_status (*deliveries_list)(struct cxr_node_store *s, int32_t state, size_t limit,
                                       struct cxr_node_delivery_row **rows, size_t *n);
    enum cxr_status (*deliveries_retry)(struct cxr_node_store *s, int64_t id, int64_t now_ms,
                                        int64_t *count);
    enum cxr_status (*deliveries_drop)(struct cxr_node_store *s, int64_t id, int64_t *count);
    enum cxr_status (*studies_list)(struct cxr_node_store *s, int64_t since_ms, size_t limit,
                                    struct cxr_triage_study_row **rows, size_t *n);
    enum cxr_status (*study_get)(struct cxr_node_store *s, const char *study_instance_uid,
                                 struct cxr_triage_study_row *row, bool *found);
    enum cxr_status (*study_mark_read)(struct cxr_node_store *s, const char *study_instance_uid,
                                       int64_t read_ms, bool *found);
    enum cxr_status (*counts)(struct cxr_node_store *s, struct cxr_node_store_counts *c);
    enum cxr_status (*path_known)(struct cxr_node_store *s, const char *path, bool *known);
    enum cxr_status (*instances_expired)(struct cxr_node_store *s, int64_t before_ms, size_t limit,
                                         struct cxr_triage_instance_row **rows, size_t *n);
    enum cxr_status (*instance_forget_file)(struct cxr_node_store *s, int64_t id);
};

/* The common head of every store implementation. */
struct cxr_node_store {
    const struct cxr_node_store_ops *ops;
};

/* Opens (creating when absent) the SQLite store at `path`: WAL,
 * synchronous=FULL, a busy timeout so that another process may write too.
 * `readonly` opens an existing file without creating or migrating it. On
 * failure *out == NULL and err (CXR_NODE_STORE_ERRLEN) says what. */
enum cxr_status cxr_node_store_open_sqlite(const char *path, bool readonly,
                                           struct cxr_node_store **out, char *err);

/* Closes and frees; NULL is a no-op. */
void cxr_node_store_close(struct cxr_node_store *s);

/* The detail of the calling thread's last failed store call ("" none). */
const char *cxr_node_store_last_error(void);
/* Sets it (for implementations). */
void cxr_node_store_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* From now on the store's journal is copied into the database by a thread of
 * its own (with its own connection) instead of inside whichever write
 * crosses the threshold: the node's C-STORE commits never wait for that
 * copy. Stopped by cxr_node_store_close. */
enum cxr_status cxr_node_store_background_checkpoints(struct cxr_node_store *s);
/* Several received instances in one durable commit (group commit of
 * concurrent associations): all are recorded or none (the error says why). */
enum cxr_status cxr_node_store_instances_add(struct cxr_node_store *s,
                                             struct cxr_node_store_new_instance *items, size_t n);
/* The bytes of an instance kept in the store: *data malloc'd (caller frees).
 * CXR_ERR_NOT_FOUND when the store holds none for that id. */
enum cxr_status cxr_node_store_instance_data(struct cxr_node_store *s, int64_t id, void **data,
                                             size_t *len);
enum cxr_status cxr_node_store_instance_find(struct cxr_node_store *s, const char *sop_instance_uid,
                                             bool *found);
/* Instances still RECEIVED with id > after_id, oldest first, at most `limit`. */
enum cxr_status cxr_node_store_instances_pending(struct cxr_node_store *s, int64_t after_id,
                                                 size_t limit,
                                                 struct cxr_triage_instance_row **rows, size_t *n);
/* Counts one more attempt on each job (before a worker processes it). */
enum cxr_status cxr_node_store_instances_claim(struct cxr_node_store *s, const int64_t *ids,
                                               size_t n);
/* Stores the outcomes of n jobs and folds them into their studies (created
 * when new; priority raised, never lowered; highest score kept; first/last
 * arrival extended) in one transaction. An outcome without a study UID
 * (unreadable file) is recorded on the instance only. */
enum cxr_status cxr_node_store_record(struct cxr_node_store *s,
                                      const struct cxr_node_store_outcome *outcomes, size_t n,
                                      int64_t processed_ms);
/* Arrival time of the oldest RECEIVED instance; *any false when none. */
enum cxr_status cxr_node_store_pending_oldest(struct cxr_node_store *s, int64_t *received_ms,
                                              bool *any);
/* Studies with processed instances not yet in a report decision. */
enum cxr_status cxr_node_store_studies_unreported(struct cxr_node_store *s,
                                                  struct cxr_triage_study_row **rows, size_t *n);
/* Every processed instance of a study (with header values), by id. */
enum cxr_status cxr_node_store_study_instances(struct cxr_node_store *s,
                                               const char *study_instance_uid,
                                               struct cxr_triage_instance_row **rows, size_t *n);
/* Records a report decision in one transaction (see the struct). */
enum cxr_status cxr_node_store_report_add(struct cxr_node_store *s,
                                          const struct cxr_node_store_report *rep, int64_t *sr_id);
/* The next PENDING delivery to `destination` due at `now_ms` (most severe
 * priority first, then oldest). *found false when none is due; then
 * *next_due_ms is the earliest future attempt (INT64_MAX when none). */
enum cxr_status cxr_node_store_delivery_next(struct cxr_node_store *s, const char *destination,
                                             int64_t now_ms, struct cxr_node_delivery_row *row,
                                             bool *found, int64_t *next_due_ms);
enum cxr_status cxr_node_store_delivery_update(struct cxr_node_store *s, int64_t id,
                                               enum cxr_node_delivery_state state, int32_t attempts,
                                               int64_t next_attempt_ms, const char *error,
                                               int64_t now_ms);
/* Deliveries in `state` (-1: all), newest first, at most `limit`. */
enum cxr_status cxr_node_store_deliveries_list(struct cxr_node_store *s, int32_t state,
                                               size_t limit, struct cxr_node_delivery_row **rows,
                                               size_t *n);
/* Puts a dead or pending delivery (id > 0) or every dead one (id 0) back to
 * PENDING with its attempts reset and due now. *count: rows changed. */
enum cxr_status cxr_node_store_deliveries_retry(struct cxr_node_store *s, int64_t id,
                                                int64_t now_ms, int64_t *count);
/* Removes a delivery that is not delivered (id > 0), or every dead one (id 0). */
enum cxr_status cxr_node_store_deliveries_drop(struct cxr_node_store *s, int64_t id,
                                               int64_t *count);
/* Studies whose last instance arrived at or after since_ms, any order (the
 * worklist orders them), at most `limit`. */
enum cxr_status cxr_node_store_studies_list(struct cxr_node_store *s, int64_t since_ms,
                                            size_t limit, struct cxr_triage_study_row **rows,
                                            size_t *n);
enum cxr_status cxr_node_store_study_get(struct cxr_node_store *s, const char *study_instance_uid,
                                         struct cxr_triage_study_row *row, bool *found);
/* Marks a study read at `read_ms` (a reader finished it), or unread with 0.
 * A study counts as read while no image arrived after that
 * (cxr_triage_study_is_read). *found false for an unknown study. */
enum cxr_status cxr_node_store_study_mark_read(struct cxr_node_store *s,
                                               const char *study_instance_uid, int64_t read_ms,
                                               bool *found);
enum cxr_status cxr_node_store_counts(struct cxr_node_store *s, struct cxr_node_store_counts *c);
/* Whether a spool-relative path belongs to an instance or an SR row. */
enum cxr_status cxr_node_store_path_known(struct cxr_node_store *s, const char *path, bool *known);
/* Processed and reported instances received before `before_ms` whose spool
 * file is still there (retention); cxr_node_store_instance_forget_file
 * marks one's file as removed. */
enum cxr_status cxr_node_store_instances_expired(struct cxr_node_store *s, int64_t before_ms,
                                                 size_t limit,
                                                 struct cxr_triage_instance_row **rows, size_t *n);
enum cxr_status cxr_node_store_instance_forget_file(struct cxr_node_store *s, int64_t id);

/* Names for logs and JSON. */
const char *cxr_node_delivery_state_name(enum cxr_node_delivery_state st);

#ifdef __cplusplus
}
#endif
#endif
