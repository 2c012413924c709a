/* node_notify.c — systemd's readiness protocol (sd_notify) without
 * libsystemd: one datagram to $NOTIFY_SOCKET. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cxr/node.h"

bool cxr_node_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path || !state)
        return false;
    size_t len = strlen(path);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (len >= sizeof addr.sun_path)
        return false;
    memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@') /* abstract namespace */
        addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    bool ok = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr, alen) >= 0;
    close(fd);
    return ok;
}
