/* node_spool.c — reception: the association check (disk watermark), the
 * durable C-STORE callback, leftovers of a crash, and retention.
 *
 * The store callback answers success only after the instance is durable.
 * An instance up to node/spool-inline-max-kb is kept in the job store: its
 * bytes and its job row in one commit (synchronous=FULL: one WAL sync). A
 * larger one becomes a spool file: fsync of the received file, rename into
 * <spool>/<aa>/<SOP UID>.dcm, fsync of that folder, and the job row
 * committed (three syncs). Any failure
 * answers 0xA700 (Refused: Out of Resources, PS3.4 B.2.3) and leaves nothing
 * half-written: the temp file and a renamed file are removed again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cxr/log.h"
#include "node_internal.h"

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static bool uid_is_safe(const char *uid)
{
    size_t n = strlen(uid);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((uid[i] >= '0' && uid[i] <= '9') || uid[i] == '.'))
            return false;
    return true;
}

/* "<aa>/<uid>.dcm" where aa spreads files over 256 folders; a UID with
 * characters that do not belong in a UID is named by its hash instead. */
void node_spool_relpath(const char *uid, char *out, size_t len)
{
    uint64_t h = fnv1a(uid);
    if (uid_is_safe(uid))
        snprintf(out, len, "%02x/%s.dcm", (unsigned)(h & 0xff), uid);
    else
        snprintf(out, len, "%02x/x%016" PRIx64 ".dcm", (unsigned)(h & 0xff), h);
}

bool node_on_association(void *ctx, const char *calling_ae, const char *peer_host, char *reason)
{
    struct cxr_node *n = ctx;
    if (atomic_load(&n->stopping)) {
        snprintf(reason, 256, "the node is shutting down");
        return false;
    }
    pthread_rwlock_rdlock(&n->gen_lock);
    uint64_t min_mb = n->set.disk_min_free_mb;
    pthread_rwlock_unlock(&n->gen_lock);
    struct statvfs vfs;
    if (statvfs(n->spool_dir, &vfs) != 0) {
        snprintf(reason, 256, "cannot check the spool folder: %s", strerror(errno));
        cxr_log(CXR_LOG_ERROR, "node", "association from %s (%s) refused: %s", calling_ae,
                peer_host, reason);
        cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_ASSOC_REFUSED, 1);
        return false;
    }
    uint64_t free_mb = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize / (1024u * 1024u);
    if (free_mb < min_mb) {
        snprintf(reason, 256,
                 "spool folder has %" PRIu64 " MB free, below node/disk-min-free-mb %" PRIu64,
                 free_mb, min_mb);
        cxr_log(CXR_LOG_WARN, "node", "association from %s (%s) refused: %s", calling_ae, peer_host,
                reason);
        cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_ASSOC_REFUSED, 1);
        return false;
    }
    return true;
}

static uint16_t refuse(struct cxr_node *n, const struct cxr_dicom_store_event *ev, const char *tmp,
                       const char *what, int errnum, uint16_t status)
{
    if (tmp)
        unlink(tmp);
    cxr_log(CXR_LOG_ERROR, "node", "C-STORE %s from %s refused (0x%04X): %s%s%s",
            ev->sop_instance_uid, ev->calling_ae, status, what, errnum ? ": " : "",
            errnum ? strerror(errnum) : "");
    cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_REFUSED, 1);
    return status;
}

static bool fsync_path(const char *path, int *errnum)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *errnum = errno;
        return false;
    }
    bool ok = fsync(fd) == 0;
    if (!ok)
        *errnum = errno;
    close(fd);
    return ok;
}

enum cxr_status node_instance_load(struct cxr_node *n, int64_t id, bool in_store, const char *rel,
                                   const struct cxr_conf_gate *rules,
                                   struct cxr_dicom_instance **out, char *err)
{
    if (!in_store) {
        char path[CXR_NODE_PATHLEN + CXR_NODE_STORE_PATHLEN + 2];
        snprintf(path, sizeof path, "%s/%s", n->spool_dir, rel);
        return cxr_dicom_instance_load_file_within(path, rules, out, err);
    }
    void *buf = NULL;
    size_t len = 0;
    enum cxr_status st = cxr_node_store_instance_data(n->store, id, &buf, &len);
    if (st != CXR_OK) {
        snprintf(err, CXR_ERRLEN, "%s", cxr_node_store_last_error());
        return st;
    }
    st = cxr_dicom_instance_load_memory_within(buf, len, rel, rules, out, err);
    free(buf);
    return st;
}

/* One received instance waiting for the group commit. */
struct node_intake_item {
    struct cxr_node_store_new_instance it;
    enum cxr_status st;
    char err[CXR_NODE_STORE_ERRLEN];
    bool done;
    struct node_intake_item *next;
};

/* Commits `me` (its row, and its bytes when kept in the store) durably.
 * Group commit: the first thread to arrive commits every item queued by
 * then in one transaction (one sync); threads arriving meanwhile queue up
 * and one of them commits the next group. A single association sees a
 * group of one. On failure me->err says why (the store's words). */
static enum cxr_status intake_commit(struct cxr_node *n, struct node_intake_item *me)
{
    pthread_mutex_lock(&n->intake_mu);
    me->next = NULL;
    me->done = false;
    if (n->intake_tail)
        n->intake_tail->next = me;
    else
        n->intake_head = me;
    n->intake_tail = me;
    while (!me->done) {
        if (n->intake_busy) {
            pthread_cond_wait(&n->intake_cv, &n->intake_mu);
            continue;
        }
        n->intake_busy = true;
        struct node_intake_item *group = n->intake_head;
        n->intake_head = n->intake_tail = NULL;
        pthread_mutex_unlock(&n->intake_mu);
        size_t k = 0;
        for (struct node_intake_item *p = group; p; p = p->next)
            k++;
        struct cxr_node_store_new_instance *v = malloc(k * sizeof *v);
        enum cxr_status st = CXR_ERR_NOMEM;
        char err[CXR_NODE_STORE_ERRLEN] = "out of memory";
        if (v) {
            size_t i = 0;
            for (struct node_intake_item *p = group; p; p = p->next)
                v[i++] = p->it;
            st = cxr_node_store_instances_add(n->store, v, k);
            snprintf(err, sizeof err, "%s", st == CXR_OK ? "" : cxr_node_store_last_error());
        }
        cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_INTAKE_COMMITS, 1);
        pthread_mutex_lock(&n->intake_mu);
        /* The owners read their item only under intake_mu, after `done`. */
        size_t i = 0;
        for (struct node_intake_item *p = group; p; p = p->next, i++) {
            if (v) {
                p->it.duplicate = v[i].duplicate;
                p->it.id = v[i].id;
            }
            p->st = st;
            snprintf(p->err, sizeof p->err, "%s", err);
            p->done = true;
        }
        free(v);
        n->intake_busy = false;
        pthread_cond_broadcast(&n->intake_cv);
    }
    pthread_mutex_unlock(&n->intake_mu);
    return me->st;
}

/* An instance whose SOP Instance UID is known already: success, nothing changes. */
static void note_duplicate(struct cxr_node *n, const struct cxr_dicom_store_event *ev)
{
    cxr_log(CXR_LOG_DEBUG, "node", "C-STORE %s from %s: already received (idempotent)",
            ev->sop_instance_uid, ev->calling_ae);
    cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_DUPLICATE, 1);
}

/* A received file into the spool for good: the caller has fsynced it; it is
 * renamed to `abs` and its folder fsynced. On failure the file is gone. */
static bool spool_file(struct cxr_node *n, const char *tmp, const char *abs, const char *dir,
                       const char **what, int *errnum)
{
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
            *errnum = errno;
            *what = "cannot create a spool folder";
            unlink(tmp);
            return false;
        }
        cxr_file_fsync_dir(n->spool_dir);
    }
    if (rename(tmp, abs) != 0) {
        *errnum = errno;
        *what = "cannot move the received file into the spool";
        unlink(tmp);
        return false;
    }
    if (!cxr_file_fsync_dir(dir)) {
        *errnum = errno;
        *what = "fsync of the spool folder failed";
        unlink(abs);
        return false;
    }
    return true;
}

uint16_t node_on_store(void *ctx, const struct cxr_dicom_store_event *ev)
{
    struct cxr_node *n = ctx;
    double t0 = node_mono_ms();
    int64_t received_ms = node_now_ms();
    int e = 0;
    if (!ev->sop_instance_uid || !ev->sop_instance_uid[0])
        return refuse(n, ev, ev->tmp_path, "no SOP Instance UID", 0, CXR_DIMSE_CANNOT_UNDERSTAND);

    /* Small instances are kept in the job store: the row and the bytes reach
     * the disk in one commit (one sync). The SCP hands them over in memory
     * (up to node/spool-inline-max-kb, which it follows on reload); larger
     * ones arrive as a temp file and become spool files. */
    const void *bytes = ev->data; /* kept in the store: these bytes */
    const char *tmp = ev->tmp_path;
    if (!bytes && !fsync_path(tmp, &e)) {
        /* 1. The received bytes reach the disk. */
        return refuse(n, ev, tmp, "fsync of the received file failed", e,
                      CXR_DIMSE_OUT_OF_RESOURCES);
    }

    struct cxr_triage_instance_row row;
    memset(&row, 0, sizeof row);
    node_spool_relpath(ev->sop_instance_uid, row.path, sizeof row.path);
    char abs[CXR_NODE_PATHLEN + CXR_NODE_STORE_PATHLEN + 2];
    char dir[sizeof abs];
    snprintf(abs, sizeof abs, "%s/%s", n->spool_dir, row.path);
    snprintf(dir, sizeof dir, "%s/%.2s", n->spool_dir, row.path);

    /* Same UID in two associations at once: one wins, the other is a
     * duplicate. A file must not replace the file of an instance already
     * received, so it is looked up first; a kept instance needs no lookup:
     * its commit says whether the UID was known (and the other receivers
     * are not held up waiting for the store meanwhile). */
    pthread_mutex_t *stripe = &n->receive_mu[fnv1a(ev->sop_instance_uid) % NODE_RECEIVE_STRIPES];
    pthread_mutex_lock(stripe);
    bool found = false;
    if (!bytes && cxr_node_store_instance_find(n->store, ev->sop_instance_uid, &found) != CXR_OK) {
        pthread_mutex_unlock(stripe);
        return refuse(n, ev, tmp, cxr_node_store_last_error(), 0, CXR_DIMSE_OUT_OF_RESOURCES);
    }
    if (found) {
        pthread_mutex_unlock(stripe);
        unlink(tmp);
        note_duplicate(n, ev);
        cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_RECEIVED, 1);
        return CXR_DIMSE_SUCCESS;
    }

    /* 2. A spool file: into the spool; the folder entry reaches the disk. */
    const char *what = "";
    if (!bytes && !spool_file(n, tmp, abs, dir, &what, &e)) {
        pthread_mutex_unlock(stripe);
        return refuse(n, ev, NULL, what, e, CXR_DIMSE_OUT_OF_RESOURCES);
    }

    /* 3. The job row (with the bytes of a kept instance), committed. */
    snprintf(row.sop_instance_uid, sizeof row.sop_instance_uid, "%s", ev->sop_instance_uid);
    snprintf(row.sop_class_uid, sizeof row.sop_class_uid, "%s",
             ev->sop_class_uid ? ev->sop_class_uid : "");
    snprintf(row.transfer_syntax_uid, sizeof row.transfer_syntax_uid, "%s",
             ev->transfer_syntax_uid ? ev->transfer_syntax_uid : "");
    snprintf(row.calling_ae, sizeof row.calling_ae, "%s", ev->calling_ae ? ev->calling_ae : "");
    snprintf(row.peer_host, sizeof row.peer_host, "%s", ev->peer_host ? ev->peer_host : "");
    row.size = ev->size;
    row.received_ms = received_ms;
    row.in_store = bytes != NULL;
    struct node_intake_item item = {
        .it = {.row = &row, .data = bytes, .data_len = (size_t)ev->size}};
    enum cxr_status st = intake_commit(n, &item);
    bool dup = item.it.duplicate;
    int64_t id = item.it.id;
    if (st != CXR_OK) {
        const char *why = item.err;
        if (!row.in_store) { /* a kept instance left nothing on disk */
            unlink(abs);
            cxr_file_fsync_dir(dir);
        }
        pthread_mutex_unlock(stripe);
        return refuse(n, ev, NULL, why, 0, CXR_DIMSE_OUT_OF_RESOURCES);
    }
    pthread_mutex_unlock(stripe);
    if (dup) {
        note_duplicate(n, ev);
    } else {
        struct node_job job = {
            .id = id, .received_ms = received_ms, .attempts = 0, .in_store = row.in_store};
        snprintf(job.path, sizeof job.path, "%s", row.path);
        node_queue_push(n, &job);
    }
    cxr_node_metrics_count(n->metrics, CXR_NODE_COUNT_RECEIVED, 1);
    cxr_node_metrics_observe(n->metrics, CXR_NODE_STAGE_RECEIVE, (node_mono_ms() - t0) / 1e3);
    cxr_log(CXR_LOG_DEBUG, "node", "C-STORE %s from %s stored (%" PRIu64 " bytes%s)",
            ev->sop_instance_uid, ev->calling_ae, row.size,
            row.in_store ? ", in the job store" : "");
    return CXR_DIMSE_SUCCESS;
}

/* Removes every file in `dir` for which keep() is false; returns the count. */
static int sweep(struct cxr_node *n, const char *dir, const char *rel_prefix, bool check_store)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char path[CXR_NODE_PATHLEN * 2];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat sb;
        if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        bool keep = false;
        if (check_store) {
            char rel[CXR_NODE_STORE_PATHLEN];
            snprintf(rel, sizeof rel, "%s%s", rel_prefix, de->d_name);
            if (cxr_node_store_path_known(n->store, rel, &keep) != CXR_OK)
                keep = true; /* in doubt, keep */
        }
        if (!keep && unlink(path) == 0)
            removed++;
    }
    closedir(d);
    if (removed)
        cxr_file_fsync_dir(dir);
    return removed;
}

enum cxr_status node_spool_clean(struct cxr_node *n)
{
    int tmp = sweep(n, n->tmp_dir, "", false);
    int orphans = 0;
    DIR *d = opendir(n->spool_dir);
    if (!d)
        return CXR_ERR_IO;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        /* the two-hex-digit folders hold instances; sr/ the reports */
        bool hex2 = strlen(de->d_name) == 2 && strspn(de->d_name, "0123456789abcdef") == 2;
        if (!hex2 && strcmp(de->d_name, "sr") != 0)
            continue;
        char sub[CXR_NODE_PATHLEN + 8], prefix[8];
        snprintf(sub, sizeof sub, "%s/%.2s", n->spool_dir, de->d_name);
        snprintf(prefix, sizeof prefix, "%.2s/", de->d_name);
        orphans += sweep(n, sub, prefix, true);
    }
    closedir(d);
    if (tmp || orphans)
        cxr_log(CXR_LOG_WARN, "node",
                "removed %d unfinished temporary file(s) and %d file(s) never acknowledged"
                " (left by a crash or a refused C-STORE)",
                tmp, orphans);
    return CXR_OK;
}

/* Retention: spool files (or the kept bytes) of processed, reported
 * instances older than the configured hours are removed (their results stay
 * in the store). */
static void retention_pass(struct cxr_node *n)
{
    pthread_rwlock_rdlock(&n->gen_lock);
    int64_t keep_ms = (int64_t)n->set.spool_retention_hours * 3600000;
    pthread_rwlock_unlock(&n->gen_lock);
    for (int round = 0; round < 20 && !atomic_load(&n->stopping); round++) {
        struct cxr_triage_instance_row *rows = NULL;
        size_t k = 0;
        if (cxr_node_store_instances_expired(n->store, node_now_ms() - keep_ms, 500, &rows, &k) !=
            CXR_OK) {
            cxr_log(CXR_LOG_WARN, "node", "retention: %s", cxr_node_store_last_error());
            return;
        }
        for (size_t i = 0; i < k; i++) {
            char abs[CXR_NODE_PATHLEN + CXR_NODE_STORE_PATHLEN + 2];
            snprintf(abs, sizeof abs, "%s/%s", n->spool_dir, rows[i].path);
            if (rows[i].in_store || unlink(abs) == 0 || errno == ENOENT)
                cxr_node_store_instance_forget_file(n->store, rows[i].id);
        }
        free(rows);
        if (k < 500)
            return;
    }
}

void *node_housekeeper_main(void *arg)
{
    struct cxr_node *n = arg;
    int64_t next = 0;
    while (!atomic_load(&n->stopping)) {
        if (node_now_ms() >= next) {
            retention_pass(n);
            next = node_now_ms() + 60000;
        }
        node_wait(n, node_wake_seq(n), next);
    }
    return NULL;
}
