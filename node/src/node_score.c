/* node_score.c — the job queue and the scoring workers.
 *
 * A worker takes up to a batch of jobs (waiting at most batch_wait_ms for
 * the batch to fill once it has one), counts an attempt on each in the store
 * (so that a job that crashes the node is not retried forever; a job retried
 * after a crash runs alone, so that only the image that crashes is set
 * aside), reads and
 * prepares each image (gate, presentation, preprocessing) with the engine,
 * runs one forward pass for the batch, and records every outcome in one
 * transaction. One worker fills a batch at a time; the others prepare or
 * wait, and the engine serialises the forward passes.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cxr/log.h"
#include "node_internal.h"

enum cxr_status node_queue_init(struct node_queue *q)
{
    memset(q, 0, sizeof *q);
    q->limit = NODE_QUEUE_CAP;
    /* A smaller limit makes tests exercise the overflow into the store. */
    const char *env = getenv("CXR_NODE_QUEUE_LIMIT");
    if (env && atol(env) > 0 && atol(env) < NODE_QUEUE_CAP)
        q->limit = (size_t)atol(env);
    q->cap = q->limit < 1024 ? q->limit : 1024;
    q->v = calloc(q->cap, sizeof *q->v);
    if (!q->v)
        return CXR_ERR_NOMEM;
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&q->collect_mu, NULL);
    return CXR_OK;
}

void node_queue_destroy(struct node_queue *q)
{
    if (!q->v)
        return;
    free(q->v);
    q->v = NULL;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->collect_mu);
}

/* Appends under q->mu; false when full (the job stays in the store only). */
static bool push_locked(struct node_queue *q, const struct node_job *job)
{
    if (q->count >= q->limit)
        return false;
    if (q->count == q->cap) {
        size_t ncap = q->cap * 2 < q->limit ? q->cap * 2 : q->limit;
        struct node_job *nv = malloc(ncap * sizeof *nv);
        if (!nv)
            return false;
        for (size_t i = 0; i < q->count; i++)
            nv[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = nv;
        q->cap = ncap;
        q->head = 0;
    }
    q->v[(q->head + q->count) % q->cap] = *job;
    q->count++;
    return true;
}

void node_queue_push(struct cxr_node *n, const struct node_job *job)
{
    struct node_queue *q = &n->q;
    pthread_mutex_lock(&q->mu);
    /* A job a store reload already picked up, or one that must wait in the
     * store because memory is full, is not queued here. */
    if (job->id > q->loaded_max_id && !q->overflow) {
        if (!push_locked(q, job)) {
            q->overflow = true;
            cxr_log(CXR_LOG_WARN, "node",
                    "more than %zu jobs waiting: the rest wait in the job store", q->limit);
        }
    }
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Loads RECEIVED jobs from the store; caller holds q->mu, no job is in flight. */
static enum cxr_status load_locked(struct cxr_node *n)
{
    struct node_queue *q = &n->q;
    struct cxr_triage_instance_row *rows = NULL;
    size_t k = 0;
    size_t room = q->limit - q->count;
    enum cxr_status st = cxr_node_store_instances_pending(n->store, 0, room, &rows, &k);
    if (st != CXR_OK) {
        cxr_log(CXR_LOG_ERROR, "node", "cannot read the jobs: %s", cxr_node_store_last_error());
        return st;
    }
    q->overflow = false;
    for (size_t i = 0; i < k; i++) {
        struct node_job job = {
            .id = rows[i].id, .received_ms = rows[i].received_ms, .attempts = rows[i].attempts};
        snprintf(job.path, sizeof job.path, "%s", rows[i].path);
        job.in_store = rows[i].in_store;
        if (!push_locked(q, &job)) {
            q->overflow = true;
            break;
        }
        if (rows[i].id > q->loaded_max_id)
            q->loaded_max_id = rows[i].id;
    }
    if (k == room)
        q->overflow = true; /* there may be more than fitted */
    free(rows);
    pthread_cond_broadcast(&q->cv);
    return CXR_OK;
}

enum cxr_status node_queue_load(struct cxr_node *n)
{
    pthread_mutex_lock(&n->q.mu);
    enum cxr_status st = load_locked(n);
    size_t count = n->q.count;
    pthread_mutex_unlock(&n->q.mu);
    if (st == CXR_OK && count)
        cxr_log(CXR_LOG_INFO, "node", "resuming %zu unfinished job(s)", count);
    return st;
}

int64_t node_queue_depth(struct cxr_node *n)
{
    pthread_mutex_lock(&n->q.mu);
    int64_t d = (int64_t)n->q.count;
    pthread_mutex_unlock(&n->q.mu);
    return d;
}

void node_queue_stop(struct node_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

static void deadline_after(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts); /* the queue's condition variable runs on it */
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Moves jobs from the head of the queue into out[*k..max) (caller holds
 * q->mu). A job taken before without a result (attempts > 0: the node
 * stopped or crashed with it in a batch) runs in a batch of its own: it is
 * taken only first, and closes its batch. So after a crash the batch's
 * images are tried one at a time, and NODE_MAX_ATTEMPTS counts the crashes
 * of the image that causes them, not of its batch mates. Returns true when
 * the batch is closed. */
static bool take_locked(struct node_queue *q, struct node_job *out, size_t *k, size_t max)
{
    while (*k < max && q->count > 0) {
        const struct node_job *j = &q->v[q->head];
        if (j->attempts > 0 && *k > 0)
            return true;
        out[(*k)++] = *j;
        q->head = (q->head + 1) % q->cap;
        q->count--;
        if (out[*k - 1].attempts > 0)
            return true;
    }
    return *k == max;
}

/* Takes 1..max jobs, waiting for the first and then up to wait_ms for the
 * batch to fill (take_locked: a job retried after a crash runs alone).
 * Returns 0 when stopping. */
static size_t queue_take(struct cxr_node *n, struct node_job *out, size_t max, uint32_t wait_ms)
{
    struct node_queue *q = &n->q;
    size_t k = 0;
    pthread_mutex_lock(&q->collect_mu);
    pthread_mutex_lock(&q->mu);
    for (;;) {
        if (q->stopping)
            goto done;
        if (q->count > 0)
            break;
        if (q->overflow && q->inflight == 0) {
            load_locked(n);
            if (q->count > 0)
                break;
        }
        pthread_cond_wait(&q->cv, &q->mu);
    }
    struct timespec deadline;
    deadline_after(&deadline, wait_ms);
    for (;;) {
        if (take_locked(q, out, &k, max) || wait_ms == 0 || q->stopping)
            break;
        if (pthread_cond_timedwait(&q->cv, &q->mu, &deadline) == ETIMEDOUT) {
            take_locked(q, out, &k, max);
            break;
        }
    }
    q->inflight += k;
done:
    pthread_mutex_unlock(&q->mu);
    pthread_mutex_unlock(&q->collect_mu);
    return k;
}

static void queue_done(struct node_queue *q, size_t k)
{
    pthread_mutex_lock(&q->mu);
    q->inflight -= k;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Worker scratch: the batch's jobs, results and tensors. The job arrays
 * grow to the largest batch seen; the tensors are sized under the engine
 * lock for the engine that will use them (a reload may change its input). */
struct scratch {
    size_t max_jobs;
    struct node_job *jobs;
    struct cxr_triage_result *results;
    struct cxr_triage_result *batch_results;
    bool *has_info;
    int32_t *slot;
    struct cxr_node_store_outcome *outcomes;
    int64_t *ids;
    size_t floats;     /* per image, for the engine in use */
    size_t tensor_cap; /* floats allocated */
    float *tensors;
};

static void scratch_free(struct scratch *s)
{
    free(s->tensors);
    free(s->jobs);
    free(s->results);
    free(s->batch_results);
    free(s->has_info);
    free(s->slot);
    free(s->outcomes);
    free(s->ids);
    memset(s, 0, sizeof *s);
}

static bool scratch_jobs(struct scratch *s, size_t max_jobs)
{
    if (s->max_jobs >= max_jobs)
        return true;
    struct scratch t = {.max_jobs = max_jobs};
    t.jobs = calloc(max_jobs, sizeof *t.jobs);
    t.results = calloc(max_jobs, sizeof *t.results);
    t.batch_results = calloc(max_jobs, sizeof *t.batch_results);
    t.has_info = calloc(max_jobs, sizeof *t.has_info);
    t.slot = calloc(max_jobs, sizeof *t.slot);
    t.outcomes = calloc(max_jobs, sizeof *t.outcomes);
    t.ids = calloc(max_jobs, sizeof *t.ids);
    if (!t.jobs || !t.results || !t.batch_results || !t.has_info || !t.slot || !t.outcomes ||
        !t.ids) {
        scratch_free(&t);
        return false;
    }
    scratch_free(s);
    *s = t;
    return true;
}

/* Sizes the tensors for k images of `floats` each (caller holds gen_lock). */
static bool scratch_tensors(struct scratch *s, size_t k, size_t floats)
{
    s->floats = floats;
    if (s->tensor_cap >= k * floats)
        return true;
    float *t = malloc(sizeof(float) * k * floats);
    if (!t)
        return false;
    free(s->tensors);
    s->tensors = t;
    s->tensor_cap = k * floats;
    return true;
}

/* Reads, gates and prepares job i into the next tensor slot. */
static void prepare_one(struct cxr_node *n, struct cxr_triage_engine *e, struct scratch *s,
                        size_t i, int32_t *filled)
{
    struct cxr_triage_result *r = &s->results[i];
    const struct node_job *job = &s->jobs[i];
    memset(r, 0, sizeof *r);
    s->has_info[i] = false;
    if (job->attempts >= NODE_MAX_ATTEMPTS) {
        char why[160];
        snprintf(why, sizeof why,
                 "processing was interrupted %d times (the node stopped while scoring it);"
                 " not retried",
                 job->attempts);
        cxr_triage_result_not_analysed(r, CXR_ERR_INTERNAL, why);
        cxr_log(CXR_LOG_ERROR, "node", "job %" PRId64 ": %s", job->id, why);
        return;
    }
    char err[CXR_ERRLEN] = "";
    struct cxr_dicom_instance *inst = NULL;
    double t0 = node_mono_ms();
    enum cxr_status st = node_instance_load(n, job->id, job->in_store, job->path,
                                            &cxr_triage_engine_conf(e)->gate, &inst, err);
    r->t.read_ms = node_mono_ms() - t0;
    if (st != CXR_OK) {
        cxr_triage_result_not_analysed(r, st, err);
        return;
    }
    s->has_info[i] = true;
    /* Test hook (tests/integration/test_node_crash_guard.sh): the node dies
     * as in a crash (SIGKILL) while this image is in its batch. */
    const char *crash = getenv("CXR_NODE_TEST_CRASH_SOP");
    if (crash && *crash && !strcmp(crash, cxr_dicom_instance_info(inst)->sop_instance_uid)) {
        cxr_log(CXR_LOG_WARN, "node", "CXR_NODE_TEST_CRASH_SOP: dying on %s as asked", crash);
        raise(SIGKILL);
    }
    if (cxr_triage_engine_prepare(e, inst, s->tensors + (size_t)*filled * s->floats, r))
        s->slot[(*filled)++] = (int32_t)i;
    cxr_dicom_instance_free(inst);
}

bool node_scoring_healthy(struct cxr_node *n, char *why, size_t len)
{
    pthread_mutex_lock(&n->health_mu);
    int k = n->score_failures;
    if (k >= NODE_UNHEALTHY_AFTER)
        snprintf(why, len, "scoring fails: the last %d images got no score from the model (%s)", k,
                 n->score_failure);
    pthread_mutex_unlock(&n->health_mu);
    return k < NODE_UNHEALTHY_AFTER;
}

void node_scoring_reset(struct cxr_node *n)
{
    pthread_mutex_lock(&n->health_mu);
    n->score_failures = 0;
    n->score_failure[0] = '\0';
    pthread_mutex_unlock(&n->health_mu);
}

/* Counts a result for node_scoring_healthy: a score resets, a forward pass
 * without one counts; images the gate or the reader refused say nothing
 * about the engine. */
static void health_note(struct cxr_node *n, const struct cxr_triage_result *r)
{
    bool failed =
        !r->analysed && (r->status == CXR_ERR_NN_NONFINITE || r->status == CXR_ERR_NN_BACKEND);
    if (!r->analysed && !failed)
        return;
    pthread_mutex_lock(&n->health_mu);
    if (failed) {
        n->score_failures++;
        snprintf(n->score_failure, sizeof n->score_failure, "%.*s",
                 (int)sizeof n->score_failure - 1, r->reason);
    } else {
        n->score_failures = 0;
    }
    pthread_mutex_unlock(&n->health_mu);
}

static void observe(struct cxr_node *n, const struct cxr_triage_result *r)
{
    struct cxr_node_metrics *m = n->metrics;
    cxr_node_metrics_observe(m, CXR_NODE_STAGE_READ, r->t.read_ms / 1e3);
    cxr_node_metrics_observe(m, CXR_NODE_STAGE_GATE, r->t.gate_ms / 1e3);
    if (r->t.present_ms > 0)
        cxr_node_metrics_observe(m, CXR_NODE_STAGE_PRESENT, r->t.present_ms / 1e3);
    if (r->t.preprocess_ms > 0)
        cxr_node_metrics_observe(m, CXR_NODE_STAGE_PREPROCESS, r->t.preprocess_ms / 1e3);
    if (r->analysed) {
        cxr_node_metrics_observe(m, CXR_NODE_STAGE_INFER, r->t.infer_ms / 1e3);
        cxr_node_metrics_count(m, CXR_NODE_COUNT_ANALYSED, 1);
    } else {
        cxr_node_metrics_not_analysed(m, r->status);
    }
}

/* Processes one batch of taken jobs. */
static void process(struct cxr_node *n, struct scratch *s, size_t k)
{
    int64_t taken_ms = node_now_ms();
    for (size_t i = 0; i < k; i++) {
        s->ids[i] = s->jobs[i].id;
        cxr_node_metrics_observe(n->metrics, CXR_NODE_STAGE_QUEUE,
                                 (double)(taken_ms - s->jobs[i].received_ms) / 1e3);
    }
    if (cxr_node_store_instances_claim(n->store, s->ids, k) != CXR_OK)
        cxr_log(CXR_LOG_WARN, "node", "cannot count job attempts: %s", cxr_node_store_last_error());

    pthread_rwlock_rdlock(&n->gen_lock);
    struct cxr_triage_engine *e = n->engine;
    int32_t filled = 0;
    bool have_tensors = scratch_tensors(s, k, cxr_triage_engine_input_floats(e));
    for (size_t i = 0; i < k; i++) {
        if (have_tensors) {
            prepare_one(n, e, s, i, &filled);
        } else {
            memset(&s->results[i], 0, sizeof s->results[i]);
            s->has_info[i] = false;
            cxr_triage_result_not_analysed(&s->results[i], CXR_ERR_NOMEM,
                                           "out of memory for the batch");
        }
    }
    if (filled > 0) {
        for (int32_t j = 0; j < filled; j++)
            s->batch_results[j] = s->results[s->slot[j]];
        enum cxr_status st = cxr_triage_engine_infer(e, s->tensors, filled, s->batch_results);
        if (st != CXR_OK)
            cxr_log(CXR_LOG_ERROR, "node", "inference failed for %d image(s): %s", filled,
                    s->batch_results[0].reason);
        for (int32_t j = 0; j < filled; j++)
            s->results[s->slot[j]] = s->batch_results[j];
    }
    pthread_rwlock_unlock(&n->gen_lock);

    for (size_t i = 0; i < k; i++) {
        s->outcomes[i].instance_id = s->jobs[i].id;
        s->outcomes[i].result = &s->results[i];
        s->outcomes[i].has_info = s->has_info[i];
        observe(n, &s->results[i]);
        health_note(n, &s->results[i]);
        const struct cxr_triage_result *r = &s->results[i];
        if (r->analysed)
            cxr_log(CXR_LOG_INFO, "node", "instance %s (study %s): p=%.3f %s",
                    r->info.sop_instance_uid, r->info.study_instance_uid, r->probability,
                    r->finding_present ? "finding present" : "finding absent");
        else
            cxr_log(CXR_LOG_INFO, "node", "instance %s: not analysed: %s",
                    r->info.sop_instance_uid[0] ? r->info.sop_instance_uid : s->jobs[i].path,
                    r->reason);
    }
    /* The results must be kept; retry while the store refuses (disk full). */
    int64_t processed_ms = node_now_ms();
    while (cxr_node_store_record(n->store, s->outcomes, k, processed_ms) != CXR_OK) {
        cxr_log(CXR_LOG_ERROR, "node", "cannot record %zu result(s), retrying: %s", k,
                cxr_node_store_last_error());
        if (atomic_load(&n->stopping))
            break; /* they stay RECEIVED and are scored again at the next start */
        node_wait(n, node_wake_seq(n), node_now_ms() + 2000);
    }
}

void *node_worker_main(void *arg)
{
    struct cxr_node *n = arg;
    struct scratch s = {0};
    /* Reception comes first: a peer waits for each C-STORE response, while a
     * score can wait a little. Scoring threads (and the compute threads they
     * start) run at a lower CPU priority (Linux: nice is per thread). */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), NODE_WORKER_NICE) != 0)
        cxr_log(CXR_LOG_DEBUG, "node", "cannot lower the scoring threads' priority");
    for (;;) {
        pthread_rwlock_rdlock(&n->gen_lock);
        int32_t bs = cxr_triage_engine_batch_size(n->engine);
        uint32_t wait_ms = n->set.batch_wait_ms;
        pthread_rwlock_unlock(&n->gen_lock);
        size_t max = bs > 0 ? (size_t)bs : 1;
        if (!scratch_jobs(&s, max)) {
            cxr_log(CXR_LOG_ERROR, "node", "out of memory for a batch of %zu", max);
            if (atomic_load(&n->stopping))
                break;
            node_wait(n, node_wake_seq(n), node_now_ms() + 1000);
            continue;
        }
        size_t k = queue_take(n, s.jobs, max, wait_ms);
        if (k == 0)
            break;
        process(n, &s, k);
        queue_done(&n->q, k);
        node_wake(n);
    }
    scratch_free(&s);
    return NULL;
}
