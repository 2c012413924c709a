/* file.c — see cxr/file.h. */
#include "cxr/file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

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
