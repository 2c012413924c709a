/* node_metrics.c — the node's counters and latency histograms, rendered in
 * the Prometheus text exposition format (version 0.0.4). */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/node.h"

#define NBUCKETS    16
#define MAX_REASONS 24

static const double bucket_le[NBUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,  0.25,
                                           0.5,   1.0,    2.5,   5.0,  10.0,  30.0, 60.0, 300.0};

static const char *const stage_names[CXR_NODE_STAGE_COUNT] = {
    "receive",    "queue", "read", "gate",    "present",
    "preprocess", "infer", "sr",   "deliver", "result"};

struct histogram {
    uint64_t buckets[NBUCKETS]; /* non-cumulative; rendered cumulative */
    uint64_t count;
    double sum;
};

struct reason_count {
    int32_t status;
    uint64_t n;
};

struct cxr_node_metrics {
    _Atomic uint64_t counters[CXR_NODE_COUNT_COUNT];
    pthread_mutex_t mu; /* histograms and reasons */
    struct histogram hist[CXR_NODE_STAGE_COUNT];
    struct reason_count reasons[MAX_REASONS];
    size_t nreasons;
    uint64_t reasons_other;
};

enum cxr_status cxr_node_metrics_new(struct cxr_node_metrics **out)
{
    struct cxr_node_metrics *m = calloc(1, sizeof *m);
    *out = NULL;
    if (!m)
        return CXR_ERR_NOMEM;
    for (int i = 0; i < CXR_NODE_COUNT_COUNT; i++)
        atomic_init(&m->counters[i], 0);
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return CXR_OK;
}

void cxr_node_metrics_free(struct cxr_node_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void cxr_node_metrics_count(struct cxr_node_metrics *m, enum cxr_node_counter c, uint64_t n)
{
    if (m && c >= 0 && c < CXR_NODE_COUNT_COUNT)
        atomic_fetch_add(&m->counters[c], n);
}

uint64_t cxr_node_metrics_get(const struct cxr_node_metrics *m, enum cxr_node_counter c)
{
    if (!m || c < 0 || c >= CXR_NODE_COUNT_COUNT)
        return 0;
    return atomic_load(&((struct cxr_node_metrics *)m)->counters[c]);
}

void cxr_node_metrics_not_analysed(struct cxr_node_metrics *m, enum cxr_status why)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    size_t i;
    for (i = 0; i < m->nreasons; i++)
        if (m->reasons[i].status == (int32_t)why)
            break;
    if (i == m->nreasons && m->nreasons < MAX_REASONS)
        m->reasons[m->nreasons++].status = (int32_t)why;
    if (i < m->nreasons)
        m->reasons[i].n++;
    else
        m->reasons_other++;
    pthread_mutex_unlock(&m->mu);
}

void cxr_node_metrics_observe(struct cxr_node_metrics *m, enum cxr_node_stage stage, double seconds)
{
    if (!m || stage < 0 || stage >= CXR_NODE_STAGE_COUNT || !(seconds >= 0.0))
        return;
    pthread_mutex_lock(&m->mu);
    struct histogram *h = &m->hist[stage];
    int b = 0;
    while (b < NBUCKETS && seconds > bucket_le[b])
        b++;
    if (b < NBUCKETS)
        h->buckets[b]++;
    h->count++;
    h->sum += seconds;
    pthread_mutex_unlock(&m->mu);
}

/* A bounded text buffer that grows (capped at 4 MiB). */
struct text {
    char *p;
    size_t len, cap;
    bool failed;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t ncap = t->cap * 2;
        if (ncap > (4u << 20)) {
            t->failed = true;
            return;
        }
        char *np = realloc(t->p, ncap);
        if (!np) {
            t->failed = true;
            return;
        }
        t->p = np;
        t->cap = ncap;
    }
}

static void counter(struct text *t, const char *name, const char *help, uint64_t v)
{
    put(t, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

static void gauge(struct text *t, const char *name, const char *help, int64_t v)
{
    put(t, "# HELP %s %s\n# TYPE %s gauge\n%s %" PRId64 "\n", name, help, name, name, v);
}

char *cxr_node_metrics_render(struct cxr_node_metrics *m,
                              const struct cxr_node_store_counts *counts, int64_t in_memory_queue)
{
    struct text t = {.p = malloc(8192), .cap = 8192};
    if (!t.p)
        return NULL;
    t.p[0] = '\0';
    uint64_t c[CXR_NODE_COUNT_COUNT];
    for (int i = 0; i < CXR_NODE_COUNT_COUNT; i++)
        c[i] = atomic_load(&m->counters[i]);

    counter(&t, "cxr_node_instances_received_total",
            "Instances acknowledged with success (durably spooled).", c[CXR_NODE_COUNT_RECEIVED]);
    counter(&t, "cxr_node_instances_duplicate_total",
            "Acknowledged instances whose SOP Instance UID was already known.",
            c[CXR_NODE_COUNT_DUPLICATE]);
    counter(&t, "cxr_node_intake_commits_total",
            "Durable commits of received instances; C-STOREs of concurrent associations that"
            " finish together share one (group commit).",
            c[CXR_NODE_COUNT_INTAKE_COMMITS]);
    counter(&t, "cxr_node_instances_refused_total",
            "C-STORE requests answered with a failure status.", c[CXR_NODE_COUNT_REFUSED]);
    counter(&t, "cxr_node_associations_refused_total",
            "Associations refused by the node (disk below the watermark).",
            c[CXR_NODE_COUNT_ASSOC_REFUSED]);
    counter(&t, "cxr_node_instances_analysed_total", "Instances scored by the model.",
            c[CXR_NODE_COUNT_ANALYSED]);

    put(&t, "# HELP cxr_node_instances_not_analysed_total Instances not scored, by reason.\n"
            "# TYPE cxr_node_instances_not_analysed_total counter\n");
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nreasons; i++)
        put(&t, "cxr_node_instances_not_analysed_total{reason=\"%s\"} %" PRIu64 "\n",
            cxr_status_name((enum cxr_status)m->reasons[i].status), m->reasons[i].n);
    if (m->reasons_other)
        put(&t, "cxr_node_instances_not_analysed_total{reason=\"other\"} %" PRIu64 "\n",
            m->reasons_other);
    pthread_mutex_unlock(&m->mu);

    counter(&t, "cxr_node_srs_created_total", "Structured Reports written.",
            c[CXR_NODE_COUNT_SR_CREATED]);
    put(&t, "# HELP cxr_node_sr_deliveries_total SR deliveries by outcome (failed = one failed"
            " attempt; dead = given up).\n# TYPE cxr_node_sr_deliveries_total counter\n");
    put(&t, "cxr_node_sr_deliveries_total{result=\"delivered\"} %" PRIu64 "\n",
        c[CXR_NODE_COUNT_SR_DELIVERED]);
    put(&t, "cxr_node_sr_deliveries_total{result=\"failed\"} %" PRIu64 "\n",
        c[CXR_NODE_COUNT_SR_ATTEMPT_FAILED]);
    put(&t, "cxr_node_sr_deliveries_total{result=\"dead\"} %" PRIu64 "\n",
        c[CXR_NODE_COUNT_SR_DEAD]);
    counter(&t, "cxr_node_reloads_total", "Configuration/model reloads that took effect.",
            c[CXR_NODE_COUNT_RELOADS]);
    counter(&t, "cxr_node_reloads_failed_total", "Reloads refused (the old setup kept serving).",
            c[CXR_NODE_COUNT_RELOADS_FAILED]);

    if (counts) {
        gauge(&t, "cxr_node_queue_instances", "Instances received and not yet scored.",
              counts->instances_pending);
        gauge(&t, "cxr_node_queue_studies_awaiting_report",
              "Studies with scored instances not yet in an SR.", counts->studies_unreported);
        gauge(&t, "cxr_node_queue_deliveries", "SR deliveries waiting for an attempt.",
              counts->deliveries_pending);
        gauge(&t, "cxr_node_dead_letters", "SR deliveries given up (see cxr-triage queue list).",
              counts->deliveries_dead);
    }
    gauge(&t, "cxr_node_queue_in_memory", "Jobs queued for the scoring workers.", in_memory_queue);

    put(&t, "# HELP cxr_node_stage_seconds Time per stage (receive: durable spool and job row;"
            " result: a study's last instance received to its SR delivered).\n"
            "# TYPE cxr_node_stage_seconds histogram\n");
    pthread_mutex_lock(&m->mu);
    for (int s = 0; s < CXR_NODE_STAGE_COUNT; s++) {
        const struct histogram *h = &m->hist[s];
        uint64_t cum = 0;
        for (int b = 0; b < NBUCKETS; b++) {
            cum += h->buckets[b];
            put(&t, "cxr_node_stage_seconds_bucket{stage=\"%s\",le=\"%g\"} %" PRIu64 "\n",
                stage_names[s], bucket_le[b], cum);
        }
        put(&t, "cxr_node_stage_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
            stage_names[s], h->count);
        put(&t, "cxr_node_stage_seconds_sum{stage=\"%s\"} %.6f\n", stage_names[s], h->sum);
        put(&t, "cxr_node_stage_seconds_count{stage=\"%s\"} %" PRIu64 "\n", stage_names[s],
            h->count);
    }
    pthread_mutex_unlock(&m->mu);
    if (t.failed) {
        free(t.p);
        return NULL;
    }
    return t.p;
}
