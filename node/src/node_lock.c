/* node_lock.c — one node per spool folder (see cxr/node.h): an exclusive
 * flock(2) on <spool>/node.lock, held through one open descriptor for the
 * life of the node. The kernel drops the lock when the process ends in any
 * way (exit, crash, kill -9), so a lock file left behind never blocks the
 * next start; the pid written into the file only names the holder in the
 * message. flock locks belong to the open file description: a second
 * cxr_node_spool_lock in the same process conflicts as one in another
 * process does. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "node_internal.h"

struct cxr_node_spool_lock {
    int fd;
};

void cxr_node_lock_path(const char *spool_dir, char *out, size_t len)
{
    snprintf(out, len, "%s/node.lock", spool_dir);
}

/* The pid the holder wrote into the lock file; 0 when unreadable. */
static long holder_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end = NULL;
    long pid = strtol(buf, &end, 10);
    return end != buf && pid > 0 ? pid : 0;
}

enum cxr_status cxr_node_spool_lock(const char *spool_dir, struct cxr_node_spool_lock **out,
                                    char *err)
{
    *out = NULL;
    char path[CXR_NODE_PATHLEN + 16];
    cxr_node_lock_path(spool_dir, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return cxr_seterr(err, CXR_ERR_IO,
                          "cannot open the spool's lock file %.900s: %s (the node's user must "
                          "own the spool folder, node/spool-dir)",
                          path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long pid = e == EWOULDBLOCK ? holder_pid(fd) : 0;
        close(fd);
        if (e != EWOULDBLOCK)
            return cxr_seterr(err, CXR_ERR_IO, "cannot lock %.900s: %s", path, strerror(e));
        char who[48] = "pid unknown";
        if (pid > 0)
            snprintf(who, sizeof who, "pid %ld", pid);
        return cxr_seterr(
            err, CXR_ERR_TRIAGE_BUSY,
            "the spool folder %.900s is in use by another cxr-triage node (%s; lock file "
            "node.lock there): two nodes on one spool would score and report the same studies "
            "twice. Stop that node first (systemctl stop cxr-triage), or give this one a spool "
            "folder of its own (--spool DIR or node/spool-dir)",
            spool_dir, who);
    }
    struct cxr_node_spool_lock *l = malloc(sizeof *l);
    if (!l) {
        close(fd); /* drops the lock */
        return cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
    }
    l->fd = fd;
    /* The pid only names the holder for the next one; a failure to write it
     * leaves the message without a pid, the lock itself holds. */
    char text[32];
    int n = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n) {
        /* nothing to do: see above */
    }
    *out = l;
    return CXR_OK;
}

void cxr_node_spool_unlock(struct cxr_node_spool_lock *l)
{
    if (!l)
        return;
    close(l->fd); /* drops the lock; the file stays (a stale file never blocks) */
    free(l);
}

long cxr_node_spool_holder(const char *spool_dir)
{
    /* Reads the pid without touching the lock: probing with a lock of our
     * own could refuse a node that starts at that moment. */
    char path[CXR_NODE_PATHLEN + 16];
    cxr_node_lock_path(spool_dir, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0; /* no lock file: no node ever ran here (or it is unreadable) */
    long pid = holder_pid(fd);
    close(fd);
    if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        pid = 0; /* the file of a node that has ended */
    return pid;
}
