/* file.c — atomic, durable file writes and safe opens (cxr/file.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cxr/file.h"

enum cxr_status cxr_file_errno_status(int e)
{
    return e == ENOSPC || e == EDQUOT ? CXR_ERR_NO_SPACE : CXR_ERR_IO;
}

bool cxr_file_fsync_dir(const char *dir)
{
    int fd = open(dir && *dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e == EINVAL)
        return true;
    errno = e;
    return rc == 0;
}

/* The folder of `path` ("." when it has none, "/" for a file at the root). */
static void folder_of(const char *path, char *dir, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, size, ".");
    else if (slash == path)
        snprintf(dir, size, "/");
    else
        snprintf(dir, size, "%.*s", (int)(slash - path), path);
}

static void release(struct cxr_file_atomic *f)
{
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
    f->fd = -1;
}

enum cxr_status cxr_file_atomic_open(struct cxr_file_atomic *f, const char *path, mode_t mode,
                                     char *err)
{
    f->fd = -1;
    f->tmp = NULL;
    f->path = strdup(path ? path : "");
    size_t n = f->path ? strlen(f->path) + 64 : 0;
    f->tmp = n ? malloc(n) : NULL;
    if (!f->path || !f->tmp || !path || !*path) {
        bool empty = f->path && !*f->path;
        release(f);
        return empty ? cxr_seterr(err, CXR_ERR_INVALID_ARG, "no file name to write")
                     : cxr_seterr(err, CXR_ERR_NOMEM, "out of memory writing %s", path);
    }
    static unsigned counter;
    for (int attempt = 0; attempt < 100 && f->fd < 0; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(f->tmp, n, "%s.tmp-%ld-%u-%ld", path, (long)getpid(),
                 __atomic_fetch_add(&counter, 1u, __ATOMIC_RELAXED), (long)ts.tv_nsec);
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (f->fd < 0 && errno != EEXIST) {
            int e = errno;
            char dir[4096];
            folder_of(path, dir, sizeof dir);
            release(f);
            return cxr_seterr(err, cxr_file_errno_status(e),
                              "%s: cannot create a temporary file in %s: %s", path, dir,
                              strerror(e));
        }
    }
    if (f->fd < 0) {
        release(f);
        return cxr_seterr(err, CXR_ERR_IO, "%s: cannot create a unique temporary file", path);
    }
    return CXR_OK;
}

bool cxr_file_atomic_write(struct cxr_file_atomic *f, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(f->fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return false;
        }
        p += w;
        len -= (size_t)w;
    }
    return true;
}

void cxr_file_atomic_abort(struct cxr_file_atomic *f)
{
    if (!f)
        return;
    int e = errno;
    if (f->fd >= 0)
        close(f->fd);
    if (f->tmp)
        unlink(f->tmp);
    release(f);
    errno = e;
}

enum cxr_status cxr_file_atomic_commit(struct cxr_file_atomic *f, char *err)
{
    const char *step = NULL;
    int fd = f->fd;
    f->fd = -1;
    if (fd < 0)
        step = "not open";
    else if (fsync(fd) != 0) {
        step = "fsync";
        int e = errno;
        close(fd);
        errno = e;
    } else if (close(fd) != 0)
        step = "close";
    else if (rename(f->tmp, f->path) != 0)
        step = "rename";
    if (step) {
        int e = errno;
        enum cxr_status st = cxr_seterr(err, cxr_file_errno_status(e), "%s: %s failed: %s",
                                        f->path ? f->path : "(none)", step, strerror(e));
        cxr_file_atomic_abort(f);
        return st;
    }
    char dir[4096];
    folder_of(f->path, dir, sizeof dir);
    if (!cxr_file_fsync_dir(dir)) {
        int e = errno;
        enum cxr_status st = cxr_seterr(err, CXR_ERR_IO, "%s: fsync of the folder %s failed: %s",
                                        f->path, dir, strerror(e));
        release(f); /* the file is in place; only its durability is in doubt */
        return st;
    }
    release(f);
    return CXR_OK;
}

enum cxr_status cxr_file_write_atomic(const char *path, const void *buf, size_t len, mode_t mode,
                                      char *err)
{
    struct cxr_file_atomic f;
    enum cxr_status st = cxr_file_atomic_open(&f, path, mode, err);
    if (st != CXR_OK)
        return st;
    if (!cxr_file_atomic_write(&f, buf, len)) {
        int e = errno;
        st = cxr_seterr(err, cxr_file_errno_status(e), "%s: write failed: %s", path, strerror(e));
        cxr_file_atomic_abort(&f);
        return st;
    }
    return cxr_file_atomic_commit(&f, err);
}

const char *cxr_file_kind(mode_t mode)
{
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a folder";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a file";
}

int cxr_file_open_regular(const char *path, struct stat *sb, enum cxr_status *status, char *err)
{
    struct stat own;
    if (!sb)
        sb = &own;
    enum cxr_status dummy;
    if (!status)
        status = &dummy;
    if (!path || !*path) {
        *status = cxr_seterr(err, CXR_ERR_INVALID_ARG, "no file name given");
        errno = EINVAL;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        *status = cxr_seterr(err, e == ENOENT ? CXR_ERR_NOT_FOUND : CXR_ERR_IO,
                             "%s: cannot open: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    if (fstat(fd, sb) != 0) {
        int e = errno;
        close(fd);
        *status = cxr_seterr(err, CXR_ERR_IO, "%s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    if (!S_ISREG(sb->st_mode)) {
        close(fd);
        *status = cxr_seterr(err, CXR_ERR_IO, "%s: not a regular file (it is %s)", path,
                             cxr_file_kind(sb->st_mode));
        errno = S_ISDIR(sb->st_mode) ? EISDIR : EINVAL;
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        *status = cxr_seterr(err, CXR_ERR_IO, "%s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    *status = CXR_OK;
    return fd;
}
