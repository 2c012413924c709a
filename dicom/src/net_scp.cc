/* net_scp.cc — the node's Storage SCP: the listener thread (accepts TCP
 * connections, caps the connections still negotiating, enforces their
 * deadline), the association policy (PS3.8 Table 9-21 reject codes, see
 * cxr/dicom_net.h) and the public SCP functions. Each accepted connection
 * runs on a thread of its own from the start: negotiation in
 * net_scp_accept.cc, the association in net_scp_assoc.cc.
 *
 * Why not DcmSCPPool: in DCMTK 3.6.7 it reads every A-ASSOCIATE-RQ (and TLS
 * handshake) on its listener thread, one connection after the other, like
 * ASC_receiveAssociation does wherever it is called (net_scp_accept.cc);
 * it cannot bind one address, checks the calling host against the *called*
 * presentation address, can only be stopped between connections, and gives
 * no way to close an idle association on shutdown. We keep DCMTK's
 * ASC/DIMSE layers (PDU parsing, TLS, negotiation, DIMSE) and own the
 * sockets, the threads and the policy. */
#include "net_internal.h"

#include "dcmtk/dcmnet/dul.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <new>

#include "cxr/log.h"

using namespace cxr_net;

namespace
{

const uint32_t DEFAULT_MAX_ASSOCIATIONS = 16;
const uint32_t DEFAULT_MAX_PDU = 65536;
const uint32_t DEFAULT_ACSE_TIMEOUT_S = 30;
const uint32_t DEFAULT_DIMSE_TIMEOUT_S = 60;
const int ACCEPTS_PER_WAKEUP = 64; /* then the listener looks at deadlines again */

/* Parses "a.b.c.d" or "a.b.c.d/n" into (address, mask); false otherwise. */
bool parse_ipv4_net(const std::string &text, uint32_t *addr, uint32_t *mask)
{
    std::string ip = text;
    int prefix = 32;
    size_t slash = text.find('/');
    if (slash != std::string::npos) {
        ip = text.substr(0, slash);
        const char *p = text.c_str() + slash + 1;
        char *end = NULL;
        long n = strtol(p, &end, 10);
        if (end == p || *end || n < 0 || n > 32)
            return false;
        prefix = (int)n;
    }
    struct in_addr a;
    if (inet_pton(AF_INET, ip.c_str(), &a) != 1)
        return false;
    *mask = prefix == 0 ? 0 : 0xFFFFFFFFu << (32 - prefix);
    *addr = ntohl(a.s_addr) & *mask;
    return true;
}

/* Fills rule.nets from rule.host (IP, CIDR or a name resolved now). */
void resolve_rule(peer_rule &rule)
{
    rule.nets.clear();
    if (rule.host.empty())
        return;
    uint32_t addr, mask;
    if (parse_ipv4_net(rule.host, &addr, &mask)) {
        rule.nets.push_back({addr, mask});
        return;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(rule.host.c_str(), NULL, &hints, &res);
    if (rc != 0) {
        cxr_log(CXR_LOG_WARN, "dicom",
                "allowed peer host '%s' does not resolve (%s): the rule matches no peer",
                rule.host.c_str(), gai_strerror(rc));
        return;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ai->ai_addr;
        rule.nets.push_back({ntohl(sin->sin_addr.s_addr), 0xFFFFFFFFu});
    }
    freeaddrinfo(res);
}

bool rule_host_matches(const peer_rule &rule, const char *peer_ip)
{
    if (rule.host.empty())
        return true;
    struct in_addr a;
    if (inet_pton(AF_INET, peer_ip, &a) != 1)
        return false;
    uint32_t ip = ntohl(a.s_addr);
    for (const auto &n : rule.nets)
        if ((ip & n.second) == n.first)
            return true;
    return false;
}

/* Creates the listening socket on bind_address:port (IPv4), non-blocking,
 * close-on-exec. Returns the fd or -1 with err set. */
int open_listener(const cxr_dicom_scp *scp, uint16_t *bound, char *err)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(scp->port);
    const char *where = scp->bind_address.empty() ? "0.0.0.0" : scp->bind_address.c_str();
    if (scp->bind_address.empty()) {
        sin.sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (inet_pton(AF_INET, where, &sin.sin_addr) != 1) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo(where, NULL, &hints, &res);
        if (rc != 0 || !res) {
            set_err(err,
                    "DICOM SCP: bind address '%s' is not an IPv4 address or a resolvable name (%s)",
                    where, rc ? gai_strerror(rc) : "no address");
            return -1;
        }
        sin.sin_addr = ((const struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        set_err(err, "DICOM SCP: socket(): %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        set_err(err, "DICOM SCP: cannot listen on %s:%u: %s%s", where, (unsigned)scp->port,
                strerror(e),
                e == EADDRINUSE ? " (another process has the port: stop it or change the port)"
                : e == EACCES   ? " (ports below 1024 need privileges)"
                                : "");
        close(fd);
        return -1;
    }
    socklen_t len = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &len);
    *bound = ntohs(sin.sin_port);
    return fd;
}

void reject(cxr_dicom_scp *scp, T_ASC_Association *assoc, T_ASC_RejectParametersResult result,
            T_ASC_RejectParametersSource source, T_ASC_RejectParametersReason reason,
            const char *calling, const char *called, const char *host, const char *why)
{
    T_ASC_RejectParameters rej = {result, source, reason};
    char text[160];
    reject_text(&rej, text, sizeof text);
    scp->peer_log.event(CXR_LOG_WARN, "associations rejected", host,
                        "association from %s@%s to %s rejected: %s (%s)", calling, host, called,
                        why, text);
    scp->n_rejected++; /* counted before the peer can see it */
    ASC_rejectAssociation(assoc, &rej);
}

/* Applies the association policy to a received A-ASSOCIATE-RQ, on the
 * connection's thread: either rejects it (and frees `assoc`) or admits it
 * (w->assoc, counted against max_associations). */
bool dispatch(worker *w, T_ASC_Association *assoc)
{
    cxr_dicom_scp *scp = w->scp;
    w->assoc = assoc; /* from here the thread's cleanup frees it, whatever happens */
    char calling[17], called[17], host[64];
    trim_copy(calling, sizeof calling, assoc->params->DULparams.callingAPTitle);
    trim_copy(called, sizeof called, assoc->params->DULparams.calledAPTitle);
    if (!*calling)
        snprintf(calling, sizeof calling, "(none)");
    if (!*called)
        snprintf(called, sizeof called, "(none)");
    memcpy(host, w->host, sizeof host);

    char ctxname[128] = "";
    ASC_getApplicationContextName(assoc->params, ctxname, sizeof ctxname);
    bool refused = true;
    if (strcmp(ctxname, UID_StandardApplicationContext) != 0) {
        reject(scp, assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED, calling, called, host,
               "application context is not DICOM's");
    } else if (scp->check_called_ae && scp->ae_title != called) {
        reject(scp, assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED, calling, called, host,
               "called AE title is not ours");
    } else {
        bool allowed = scp->rules.empty(), ae_known = scp->rules.empty();
        for (const peer_rule &r : scp->rules) {
            bool ae_ok = r.ae.empty() || r.ae == calling;
            ae_known = ae_known || ae_ok;
            if (ae_ok && rule_host_matches(r, host)) {
                allowed = true;
                break;
            }
        }
        if (!ae_known) {
            reject(scp, assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
                   ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED, calling, called, host,
                   "calling AE title is not in the allowed peers");
        } else if (!allowed) {
            reject(scp, assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
                   ASC_REASON_SU_NOREASON, calling, called, host,
                   "calling AE title is not allowed from this host");
        } else {
            refused = false;
        }
    }
    if (!refused) {
        /* Count and admit in one step: other connections dispatch at the
         * same time on their own threads. */
        size_t busy = 0;
        {
            std::lock_guard<std::mutex> lock(scp->mu);
            for (worker *o : scp->workers)
                busy += o->admitted && !o->done;
            if (busy < scp->max_associations)
                w->admitted = true;
        }
        char reason[256] = "";
        if (!w->admitted) {
            snprintf(reason, sizeof reason, "%zu associations already running (the limit)", busy);
            reject(scp, assoc, ASC_RESULT_REJECTEDTRANSIENT,
                   ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                   ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED, calling, called, host, reason);
            refused = true;
        } else if (scp->assoc_cb && !scp->assoc_cb(scp->ctx, calling, host, reason)) {
            reason[sizeof reason - 1] = '\0';
            std::string why =
                std::string("refused by the node: ") + (*reason ? reason : "no reason");
            reject(scp, assoc, ASC_RESULT_REJECTEDTRANSIENT,
                   ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                   ASC_REASON_SP_PRES_TEMPORARYCONGESTION, calling, called, host, why.c_str());
            refused = true;
        }
    }
    if (refused) {
        std::lock_guard<std::mutex> lock(scp->mu);
        w->admitted = false;
        w->state = WORKER_CLOSING;
    }
    if (refused) {
        ASC_dropAssociation(w->assoc);
        ASC_destroyAssociation(&w->assoc);
        return false;
    }
    memcpy(w->calling, calling, sizeof calling);
    memcpy(w->called, called, sizeof called);
    return true;
}

/* Joins and frees the connection threads that have finished (all of them
 * when `all`). */
void reap(cxr_dicom_scp *scp, bool all)
{
    std::list<worker *> finished;
    {
        std::lock_guard<std::mutex> lock(scp->mu);
        for (auto it = scp->workers.begin(); it != scp->workers.end();) {
            if ((*it)->done || all) {
                finished.push_back(*it);
                it = scp->workers.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (worker *w : finished) {
        if (w->thread.joinable())
            w->thread.join();
        delete w;
    }
}

/* Closes the sockets of connections still negotiating and of associations
 * that wait for their next command, so that their threads end now (stop). */
void close_idle(cxr_dicom_scp *scp)
{
    std::lock_guard<std::mutex> lock(scp->mu);
    for (worker *w : scp->workers) {
        if (w->state == WORKER_NEGOTIATING)
            w->stopped = true;
        if (w->state == WORKER_NEGOTIATING || w->state == WORKER_IDLE)
            shutdown(w->shut_fd, SHUT_RDWR);
    }
}

void set_ready(cxr_dicom_scp *scp, int state, uint16_t port)
{
    std::lock_guard<std::mutex> lock(scp->mu);
    scp->ready_state = state;
    scp->bound_port = port;
    scp->ready_cv.notify_all();
}

using steady = std::chrono::steady_clock;

/* Shuts down the sockets of connections whose negotiation deadline has
 * passed (their threads then fail their read or handshake and log it);
 * returns the milliseconds until the next deadline, at most 1000. */
int expire_negotiations(cxr_dicom_scp *scp)
{
    steady::time_point now = steady::now(), next = now + std::chrono::seconds(1);
    std::lock_guard<std::mutex> lock(scp->mu);
    for (worker *w : scp->workers) {
        if (w->state != WORKER_NEGOTIATING || w->evicted || w->timed_out || w->stopped)
            continue;
        if (w->deadline <= now) {
            w->timed_out = true;
            shutdown(w->shut_fd, SHUT_RDWR);
        } else if (w->deadline < next) {
            next = w->deadline;
        }
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
    return (int)std::max<long long>(1, std::min<long long>(ms + 1, 1000));
}

/* Under scp->mu: the connection to close so that one more from `ip` may
 * negotiate, or NULL if there is room. Over the per-peer cap: that peer's
 * oldest; over the total cap: the oldest of the peer with the most. A peer
 * that sends its request at once never waits on those that do not. */
worker *pick_eviction(cxr_dicom_scp *scp, uint32_t ip)
{
    std::map<uint32_t, std::pair<uint32_t, worker *>> per_peer; /* count, oldest */
    uint32_t total = 0;
    for (worker *w : scp->workers) {
        if (w->state != WORKER_NEGOTIATING || w->evicted || w->timed_out || w->stopped)
            continue;
        total++;
        auto &e = per_peer[w->peer_ip];
        e.first++;
        if (!e.second || w->accepted_at < e.second->accepted_at)
            e.second = w;
    }
    auto mine = per_peer.find(ip);
    if (mine != per_peer.end() && mine->second.first >= scp->max_negotiations_per_peer)
        return mine->second.second;
    if (total < scp->max_negotiations)
        return NULL;
    worker *victim = NULL;
    uint32_t most = 0;
    for (auto &kv : per_peer)
        if (kv.second.first > most ||
            (kv.second.first == most && kv.second.second->accepted_at < victim->accepted_at)) {
            most = kv.second.first;
            victim = kv.second.second;
        }
    return victim;
}

/* Takes one accepted connection: makes room under the negotiation caps,
 * then starts its thread (which owns `fd` from then on). */
void admit(cxr_dicom_scp *scp, int fd, const struct sockaddr_in &peer)
{
    char host[64];
    if (!inet_ntop(AF_INET, &peer.sin_addr, host, sizeof host))
        snprintf(host, sizeof host, "?");
    uint32_t ip = ntohl(peer.sin_addr.s_addr);
    const size_t max_threads = (size_t)scp->max_associations + 2u * scp->max_negotiations;
    char why[160] = "";
    {
        std::lock_guard<std::mutex> lock(scp->mu);
        /* Threads of closed connections are joined on the next turn of the
         * loop; the bound keeps a flood from piling them up meanwhile. */
        size_t live = scp->workers.size();
        worker *w = live < max_threads ? new (std::nothrow) worker : NULL;
        int shut_fd = w ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
        if (w && shut_fd < 0) {
            delete w;
            w = NULL;
        }
        if (w) {
            worker *victim = pick_eviction(scp, ip);
            if (victim) {
                victim->evicted = true;
                shutdown(victim->shut_fd, SHUT_RDWR);
            }
            w->scp = scp;
            w->fd = fd;
            w->shut_fd = shut_fd;
            w->peer_ip = ip;
            w->accepted_at = steady::now();
            w->deadline = w->accepted_at + std::chrono::seconds(scp->acse_timeout_s);
            memcpy(w->host, host, sizeof host);
            try {
                scp->workers.push_back(w);
                w->thread = std::thread(scp_connection_main, w);
                return;
            } catch (const std::exception &e) {
                if (!scp->workers.empty() && scp->workers.back() == w)
                    scp->workers.pop_back();
                close(shut_fd);
                delete w;
                snprintf(why, sizeof why, "no thread for it (%s)", e.what());
            }
        } else if (live >= max_threads) {
            snprintf(why, sizeof why,
                     "%zu connections open (the limit: max-associations and the negotiation "
                     "caps set it)",
                     live);
        } else {
            snprintf(why, sizeof why, "%s",
                     errno == EMFILE || errno == ENFILE ? "out of file descriptors"
                                                        : "out of memory");
        }
    }
    close(fd);
    scp->n_failed++;
    scp->peer_log.event(CXR_LOG_WARN, "connections closed at once", host,
                        "connection from %s closed at once: %s", host, why);
}

/* Accepts what is pending on the listening socket (at most
 * ACCEPTS_PER_WAKEUP). Returns false when accept() fails for lack of
 * resources (EMFILE...), so that the caller pauses instead of spinning. */
bool accept_pending(cxr_dicom_scp *scp, int lfd)
{
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        memset(&peer, 0, sizeof peer);
        /* blocking, like the sockets DCMTK accepts itself */
        int fd = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == EPERM)
                continue;
            scp->peer_log.event(CXR_LOG_ERROR, "failed accepts", "the listener",
                                "SCP listener: accept(): %s; pausing 100 ms%s", strerror(errno),
                                errno == EMFILE || errno == ENFILE
                                    ? " (out of file descriptors: raise LimitNOFILE or lower "
                                      "max-associations)"
                                    : "");
            return false;
        }
        admit(scp, fd, peer);
    }
    return true;
}

/* The listener loop: polls the listening socket and the stop eventfd,
 * accepts connections and hands each to its own thread at once, closes
 * negotiations past their deadline, joins finished threads and prints the
 * rate-limited log summaries. It never reads from a connection. */
void listen_loop(cxr_dicom_scp *scp, int lfd)
{
    steady::time_point paused_until = steady::now();
    while (!scp->stop_requested.load()) {
        reap(scp, false);
        scp->peer_log.flush(false);
        int wait_ms = expire_negotiations(scp);
        bool paused = steady::now() < paused_until;
        struct pollfd pfd[2] = {{scp->wake_fd, POLLIN, 0}, {lfd, POLLIN, 0}};
        int n = poll(pfd, paused ? 1 : 2, paused ? std::min(wait_ms, 100) : wait_ms);
        if (n < 0 && errno != EINTR) {
            cxr_log(CXR_LOG_ERROR, "dicom", "SCP listener: poll(): %s", strerror(errno));
            break;
        }
        if (n <= 0)
            continue;
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            if (read(scp->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                cxr_log(CXR_LOG_WARN, "dicom", "SCP listener: eventfd read: %s", strerror(errno));
        }
        if (paused || !(pfd[1].revents & POLLIN) || scp->stop_requested.load())
            continue;
        if (!accept_pending(scp, lfd))
            paused_until = steady::now() + std::chrono::milliseconds(100);
    }
}

enum cxr_status scp_run(cxr_dicom_scp *scp, char *err)
{
    global_init();
    if (scp->ran.exchange(true)) {
        set_err(err, "DICOM SCP: run was already called on this object");
        return CXR_ERR_INVALID_ARG;
    }
    for (peer_rule &r : scp->rules)
        resolve_rule(r);
    struct stat st;
    if (stat(scp->spool_tmp_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        cxr_log(CXR_LOG_WARN, "dicom",
                "spool temp directory '%s' is not a directory: every C-STORE will be refused "
                "(0xA700) until it exists",
                scp->spool_tmp_dir.c_str());

    uint16_t port = 0;
    int lfd = open_listener(scp, &port, err);
    if (lfd < 0) {
        set_ready(scp, -1, 0);
        return CXR_ERR_DICOM_NET;
    }
    /* DCMTK 3.6.7 binds its acceptor to INADDR_ANY only: let it create its
     * network on a throw-away port, then put our socket (bound where the
     * config says) on its listening file descriptor. We accept on it
     * ourselves; DCMTK gets each connection through dcmExternalSocketHandle
     * (net_scp_accept.cc), which its network initialisation reads too: hence
     * the lock. */
    T_ASC_Network *net = NULL;
    OFCondition c;
    {
        std::lock_guard<std::mutex> lock(external_socket_mutex());
        c = ASC_initializeNetwork(NET_ACCEPTOR, 0, (int)scp->acse_timeout_s, &net);
    }
    int dfd = c.good() ? (int)DUL_networkSocket(net->network) : -1;
    if (c.bad() || dfd < 0 || dup2(lfd, dfd) < 0) {
        set_err(err, "DICOM SCP: DCMTK network initialisation failed: %s",
                c.bad() ? c.text() : strerror(errno));
        close(lfd);
        if (net)
            ASC_dropNetwork(&net);
        set_ready(scp, -1, 0);
        return CXR_ERR_DICOM_NET;
    }
    close(lfd);
    fcntl(dfd, F_SETFD, FD_CLOEXEC);
    scp->handoff = new handoff_layer;
    c = ASC_setTransportLayer(net, scp->handoff, 0);
    if (c.bad()) {
        set_err(err, "DICOM SCP: transport layer: %s", c.text());
        ASC_dropNetwork(&net);
        delete scp->handoff;
        scp->handoff = NULL;
        set_ready(scp, -1, 0);
        return CXR_ERR_DICOM_NET;
    }
    scp->net = net;
    cxr_log(CXR_LOG_INFO, "dicom",
            "SCP %s listening on %s:%u%s (max %u associations; %u connections negotiating, %u "
            "per address, %u s each)",
            scp->ae_title.c_str(),
            scp->bind_address.empty() ? "0.0.0.0" : scp->bind_address.c_str(), (unsigned)port,
            scp->tls_enabled ? " with TLS" : "", scp->max_associations, scp->max_negotiations,
            scp->max_negotiations_per_peer, scp->acse_timeout_s);
    set_ready(scp, 1, port);

    listen_loop(scp, dfd);

    /* Stop: no more accepts; negotiations and idle associations close now,
     * busy ones after their current C-STORE (they check stop_requested).
     * Re-check while joining, since a busy association may turn idle
     * meanwhile. */
    for (;;) {
        close_idle(scp);
        reap(scp, false);
        std::unique_lock<std::mutex> lock(scp->mu);
        if (scp->workers.empty())
            break;
        lock.unlock();
        struct pollfd pfd = {scp->wake_fd, POLLIN, 0};
        if (poll(&pfd, 1, 200) > 0) {
            uint64_t v;
            if (read(scp->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                break;
        }
    }
    reap(scp, true);
    scp->net = NULL;
    ASC_dropNetwork(&net);
    delete scp->handoff;
    scp->handoff = NULL;
    scp->peer_log.flush(true);
    set_ready(scp, -1, 0);
    cxr_log(CXR_LOG_INFO, "dicom", "SCP %s stopped", scp->ae_title.c_str());
    return CXR_OK;
}

} // namespace

bool cxr_net::scp_dispatch(worker *w, T_ASC_Association *assoc) { return dispatch(w, assoc); }

extern "C" {

enum cxr_status cxr_dicom_scp_new(const struct cxr_dicom_scp_config *cfg, cxr_dicom_store_fn store,
                                  cxr_dicom_assoc_fn assoc, void *ctx, struct cxr_dicom_scp **out,
                                  char *err)
{
    if (out)
        *out = NULL;
    if (!cfg || !store || !out) {
        set_err(err, "DICOM SCP: config, store callback and out are required");
        return CXR_ERR_INVALID_ARG;
    }
    cxr_dicom_scp *scp = NULL;
    enum cxr_status st = CXR_ERR_INVALID_ARG;
    try {
        global_init();
        char ae[64];
        trim_copy(ae, sizeof ae, cfg->ae_title);
        if (!*ae || strlen(ae) > 16) {
            set_err(err, "DICOM SCP: AE title '%s' must have 1 to 16 characters",
                    cfg->ae_title ? cfg->ae_title : "");
            return CXR_ERR_INVALID_ARG;
        }
        if (!cfg->spool_tmp_dir || !*cfg->spool_tmp_dir) {
            set_err(err, "DICOM SCP: spool_tmp_dir is required");
            return CXR_ERR_INVALID_ARG;
        }
        uint32_t max_pdu = cfg->max_pdu ? cfg->max_pdu : DEFAULT_MAX_PDU;
        if (max_pdu < ASC_MINIMUMPDUSIZE || max_pdu > ASC_MAXIMUMPDUSIZE) {
            set_err(err, "DICOM SCP: max_pdu %u out of range (%u..%u)", (unsigned)max_pdu,
                    (unsigned)ASC_MINIMUMPDUSIZE, (unsigned)ASC_MAXIMUMPDUSIZE);
            return CXR_ERR_INVALID_ARG;
        }
        if (cfg->allowed_peer_count > CXR_DICOM_NET_MAX_PEERS ||
            (cfg->allowed_peer_count && !cfg->allowed_peers)) {
            set_err(err, "DICOM SCP: %zu allowed peers (at most %d)", cfg->allowed_peer_count,
                    CXR_DICOM_NET_MAX_PEERS);
            return CXR_ERR_INVALID_ARG;
        }
        if (cfg->bind_address && strchr(cfg->bind_address, ':')) {
            set_err(err,
                    "DICOM SCP: bind address '%s' is IPv6; DCMTK 3.6.7's acceptor is IPv4 only",
                    cfg->bind_address);
            return CXR_ERR_INVALID_ARG;
        }
        scp = new cxr_dicom_scp;
        scp->ae_title = ae;
        scp->bind_address = cfg->bind_address ? cfg->bind_address : "";
        scp->spool_tmp_dir = cfg->spool_tmp_dir;
        scp->memory_max = cfg->memory_max_bytes;
        scp->port = cfg->port;
        scp->max_associations =
            cfg->max_associations ? cfg->max_associations : DEFAULT_MAX_ASSOCIATIONS;
        scp->max_pdu = max_pdu;
        scp->acse_timeout_s = cfg->acse_timeout_s ? cfg->acse_timeout_s : DEFAULT_ACSE_TIMEOUT_S;
        scp->max_negotiations_per_peer =
            cfg->max_negotiations_per_peer ? cfg->max_negotiations_per_peer : scp->max_associations;
        scp->max_negotiations =
            cfg->max_negotiations ? cfg->max_negotiations : 4 * scp->max_associations;
        if (scp->max_negotiations < scp->max_negotiations_per_peer)
            scp->max_negotiations = scp->max_negotiations_per_peer;
        scp->dimse_timeout_s =
            cfg->dimse_timeout_s ? cfg->dimse_timeout_s : DEFAULT_DIMSE_TIMEOUT_S;
        scp->check_called_ae = cfg->check_called_ae;
        for (size_t i = 0; i < cfg->allowed_peer_count; i++) {
            peer_rule r;
            char buf[256];
            trim_copy(buf, sizeof buf, cfg->allowed_peers[i].ae_title);
            r.ae = buf;
            trim_copy(buf, sizeof buf, cfg->allowed_peers[i].host);
            r.host = buf;
            if (!r.host.empty() && r.host.find('/') != std::string::npos) {
                uint32_t a, m;
                if (!parse_ipv4_net(r.host, &a, &m)) {
                    set_err(err, "DICOM SCP: allowed peer host '%s' is not a valid IPv4 CIDR block",
                            r.host.c_str());
                    goto fail;
                }
            }
            scp->rules.push_back(r);
        }
        scp->store = store;
        scp->assoc_cb = assoc;
        scp->ctx = ctx;
        if (cfg->tls.enabled) {
            scp->tls = tls_layer_new(&cfg->tls, NET_ACCEPTOR, &st, err);
            if (!scp->tls)
                goto fail;
            scp->tls_enabled = true;
        }
        scp->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (scp->wake_fd < 0) {
            set_err(err, "DICOM SCP: eventfd: %s", strerror(errno));
            st = CXR_ERR_INTERNAL;
            goto fail;
        }
        *out = scp;
        return CXR_OK;
    } catch (const std::bad_alloc &) {
        set_err(err, "DICOM SCP: out of memory");
        st = CXR_ERR_NOMEM;
    } catch (const std::exception &e) {
        set_err(err, "DICOM SCP: %s", e.what());
        st = CXR_ERR_INTERNAL;
    } catch (...) {
        set_err(err, "DICOM SCP: unexpected exception");
        st = CXR_ERR_INTERNAL;
    }
fail:
    cxr_dicom_scp_free(scp);
    return st;
}

enum cxr_status cxr_dicom_scp_run(struct cxr_dicom_scp *scp, char *err)
{
    if (!scp) {
        set_err(err, "DICOM SCP: NULL object");
        return CXR_ERR_INVALID_ARG;
    }
    try {
        return scp_run(scp, err);
    } catch (const std::exception &e) {
        set_err(err, "DICOM SCP: %s", e.what());
    } catch (...) {
        set_err(err, "DICOM SCP: unexpected exception");
    }
    set_ready(scp, -1, 0);
    return CXR_ERR_INTERNAL;
}

void cxr_dicom_scp_stop(struct cxr_dicom_scp *scp)
{
    if (!scp)
        return;
    scp->stop_requested.store(true);
    uint64_t one = 1;
    ssize_t rc = write(scp->wake_fd, &one, sizeof one);
    (void)rc; /* EAGAIN: the counter is already non-zero, the listener wakes anyway */
}

uint16_t cxr_dicom_scp_wait_ready(struct cxr_dicom_scp *scp, uint32_t timeout_ms)
{
    if (!scp)
        return 0;
    try {
        std::unique_lock<std::mutex> lock(scp->mu);
        scp->ready_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                               [scp] { return scp->ready_state != 0; });
        return scp->ready_state == 1 ? scp->bound_port : 0;
    } catch (...) {
        return 0;
    }
}

void cxr_dicom_scp_get_stats(struct cxr_dicom_scp *scp, struct cxr_dicom_scp_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!scp)
        return;
    out->associations_accepted = scp->n_accepted.load();
    out->associations_rejected = scp->n_rejected.load();
    out->associations_failed = scp->n_failed.load();
    out->stores_ok = scp->n_stores_ok.load();
    out->stores_failed = scp->n_stores_failed.load();
    out->echoes = scp->n_echoes.load();
    out->bytes_received = scp->n_bytes.load();
    try {
        std::lock_guard<std::mutex> lock(scp->mu);
        for (cxr_net::worker *w : scp->workers)
            out->active_associations += !w->done;
    } catch (...) {
    }
}

void cxr_dicom_scp_free(struct cxr_dicom_scp *scp)
{
    if (!scp)
        return;
    try {
        reap(scp, true); /* nothing left after run returned; defensive */
        if (scp->wake_fd >= 0)
            close(scp->wake_fd);
        delete scp->tls;
        delete scp;
    } catch (...) {
    }
}

} // extern "C"

void cxr_dicom_scp_set_memory_max(struct cxr_dicom_scp *scp, uint64_t bytes)
{
    if (scp)
        scp->memory_max = bytes;
}
