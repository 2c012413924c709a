/* store.c — the job store's public wrappers over the implementation table
 * (see cxr/store.h) and the per-thread error text. */
#include "cxr/store.h"

#include <stdarg.h>
#include <stdio.h>

static __thread char store_error[CXR_NODE_STORE_ERRLEN];

const char *cxr_node_store_last_error(void) { return store_error; }

void cxr_node_store_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(store_error, sizeof store_error, fmt, ap);
    va_end(ap);
}

void cxr_node_store_close(struct cxr_node_store *s)
{
    if (s)
        s->ops->close(s);
}

/* Every wrapper checks its handle so that a NULL store is an error, not a crash. */
#define STORE_CALL(s, op, ...)                                               \
    do {                                                                     \
        if (!(s) || !(s)->ops->op) {                                         \
            cxr_node_store_set_error("job store: %s is not available", #op); \
            return CXR_ERR_INVALID_ARG;                                      \
        }                                                                    \
        return (s)->ops->op((s), __VA_ARGS__);                               \
    } while (0)

enum cxr_status cxr_node_store_background_checkpoints(struct cxr_node_store *s)
{
    if (!s || !s->ops->background_checkpoints) {
        cxr_node_store_set_error("job store: background checkpoints are not available");
        return CXR_ERR_INVALID_ARG;
    }
    return s->ops->background_checkpoints(s);
}

enum cxr_status cxr_node_store_instances_add(struct cxr_node_store *s,
                                             struct cxr_node_store_new_instance *items, size_t n)
{
    STORE_CALL(s, instances_add, items, n);
}

enum cxr_status cxr_node_store_instance_data(struct cxr_node_store *s, int64_t id, void **data,
                                             size_t *len)
{
    STORE_CALL(s, instance_data, id, data, len);
}

enum cxr_status cxr_node_store_instance_find(struct cxr_node_store *s, const char *sop_instance_uid,
                                             bool *found)
{
    STORE_CALL(s, instance_find, sop_instance_uid, found);
}

enum cxr_status cxr_node_store_instances_pending(struct cxr_node_store *s, int64_t after_id,
                                                 size_t limit,
                                                 struct cxr_triage_instance_row **rows, size_t *n)
{
    STORE_CALL(s, instances_pending, after_id, limit, rows, n);
}

enum cxr_status cxr_node_store_instances_claim(struct cxr_node_store *s, const int64_t *ids,
                                               size_t n)
{
    STORE_CALL(s, instances_claim, ids, n);
}

enum cxr_status cxr_node_store_record(struct cxr_node_store *s,
                                      const struct cxr_node_store_outcome *outcomes, size_t n,
                                      int64_t processed_ms)
{
    STORE_CALL(s, record, outcomes, n, processed_ms);
}

enum cxr_status cxr_node_store_pending_oldest(struct cxr_node_store *s, int64_t *received_ms,
                                              bool *any)
{
    STORE_CALL(s, pending_oldest, received_ms, any);
}

enum cxr_status cxr_node_store_studies_unreported(struct cxr_node_store *s,
                                                  struct cxr_triage_study_row **rows, size_t *n)
{
    STORE_CALL(s, studies_unreported, rows, n);
}

enum cxr_status cxr_node_store_study_instances(struct cxr_node_store *s,
                                               const char *study_instance_uid,
                                               struct cxr_triage_instance_row **rows, size_t *n)
{
    STORE_CALL(s, study_instances, study_instance_uid, rows, n);
}

enum cxr_status cxr_node_store_report_add(struct cxr_node_store *s,
                                          const struct cxr_node_store_report *rep, int64_t *sr_id)
{
    STORE_CALL(s, report_add, rep, sr_id);
}

enum cxr_status cxr_node_store_delivery_next(struct cxr_node_store *s, const char *destination,
                                             int64_t now_ms, struct cxr_node_delivery_row *row,
                                             bool *found, int64_t *next_due_ms)
{
    STORE_CALL(s, delivery_next, destination, now_ms, row, found, next_due_ms);
}

enum cxr_status cxr_node_store_delivery_update(struct cxr_node_store *s, int64_t id,
                                               enum cxr_node_delivery_state state, int32_t attempts,
                                               int64_t next_attempt_ms, const char *error,
                                               int64_t now_ms)
{
    STORE_CALL(s, delivery_update, id, state, attempts, next_attempt_ms, error, now_ms);
}

enum cxr_status cxr_node_store_deliveries_list(struct cxr_node_store *s, int32_t state,
                                               size_t limit, struct cxr_node_delivery_row **rows,
                                               size_t *n)
{
    STORE_CALL(s, deliveries_list, state, limit, rows, n);
}

enum cxr_status cxr_node_store_deliveries_retry(struct cxr_node_store *s, int64_t id,
                                                int64_t now_ms, int64_t *count)
{
    STORE_CALL(s, deliveries_retry, id, now_ms, count);
}

enum cxr_status cxr_node_store_deliveries_drop(struct cxr_node_store *s, int64_t id, int64_t *count)
{
    STORE_CALL(s, deliveries_drop, id, count);
}

enum cxr_status cxr_node_store_studies_list(struct cxr_node_store *s, int64_t since_ms,
                                            size_t limit, struct cxr_triage_study_row **rows,
                                            size_t *n)
{
    STORE_CALL(s, studies_list, since_ms, limit, rows, n);
}

enum cxr_status cxr_node_store_study_get(struct cxr_node_store *s, const char *study_instance_uid,
                                         struct cxr_triage_study_row *row, bool *found)
{
    STORE_CALL(s, study_get, study_instance_uid, row, found);
}

enum cxr_status cxr_node_store_study_mark_read(struct cxr_node_store *s,
                                               const char *study_instance_uid, int64_t read_ms,
                                               bool *found)
{
    STORE_CALL(s, study_mark_read, study_instance_uid, read_ms, found);
}

enum cxr_status cxr_node_store_counts(struct cxr_node_store *s, struct cxr_node_store_counts *c)
{
    STORE_CALL(s, counts, c);
}

enum cxr_status cxr_node_store_path_known(struct cxr_node_store *s, const char *path, bool *known)
{
    STORE_CALL(s, path_known, path, known);
}

enum cxr_status cxr_node_store_instances_expired(struct cxr_node_store *s, int64_t before_ms,
                                                 size_t limit,
                                                 struct cxr_triage_instance_row **rows, size_t *n)
{
    STORE_CALL(s, instances_expired, before_ms, limit, rows, n);
}

enum cxr_status cxr_node_store_instance_forget_file(struct cxr_node_store *s, int64_t id)
{
    STORE_CALL(s, instance_forget_file, id);
}

const char *cxr_node_delivery_state_name(enum cxr_node_delivery_state st)
{
    switch (st) {
    case CXR_NODE_DELIVERY_PENDING: return "pending";
    case CXR_NODE_DELIVERY_DELIVERED: return "delivered";
    case CXR_NODE_DELIVERY_DEAD: return "dead";
    }
    return "unknown";
}
