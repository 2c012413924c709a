/* net_internal.h — helpers shared by the DICOM networking files (net_scp.cc,
 * net_scp_assoc.cc, net_scu.cc, net_tls.cc). C++ only; DCMTK types allowed. */
#ifndef CXR_NET_INTERNAL_H
#define CXR_NET_INTERNAL_H

#include "dcmtk/config/osconfig.h" /* first, as DCMTK requires */

#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmlayer.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmtls/tlslayer.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cxr/dicom_net.h"
#include "cxr/log.h"

namespace cxr_net
{

/* Once per process: quiets DCMTK's own network loggers (our log lines carry
 * the condition text), turns off DCMTK's reverse DNS lookup of peers (the
 * allowlist works on IP addresses; a slow resolver would stall the
 * listener), ignores SIGPIPE (a peer closing mid-write must not kill the
 * node), and initialises OpenSSL through DCMTK. Thread-safe. */
void global_init();

/* snprintf into an err buffer of CXR_ERRLEN bytes; err may be NULL. */
void set_err(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The socket of an established association, -1 if none. */
int assoc_socket(T_ASC_Association *assoc);

/* Sets TCP_NODELAY on the association's socket unless TCP_NODELAY=0 is in
 * the environment (read once). DCMTK 3.6.7 only does it when that variable
 * is set to non-zero at connect/accept time; we do it ourselves so the node
 * needs no environment and no setenv() races. */
void set_nodelay(T_ASC_Association *assoc);

/* Builds a DCMTK TLS layer for `role` (NET_ACCEPTOR or NET_REQUESTOR) from our
 * settings: non-downgrading BCP 195 profile, certificate/key (required for
 * the acceptor), CA and verification mode as documented in cxr/dicom_net.h.
 * Returns NULL with err set (and *st) when a file cannot be used. */
DcmTLSTransportLayer *tls_layer_new(const struct cxr_dicom_tls *tls, T_ASC_NetworkRole role,
                                    enum cxr_status *st, char *err);

/* After an SCU association over TLS with a CA configured: checks that the
 * server's certificate names `host` (IP or DNS subjectAltName, else CN).
 * Returns false with err set on a mismatch or when no certificate is there. */
bool tls_check_host(T_ASC_Association *assoc, const char *host, char *err);

/* A one-line description of the peer's certificate subject, for the
 * association log ("" without TLS). */
void tls_peer_subject(T_ASC_Association *assoc, char *out, size_t len);

/* The transfer syntaxes the SCP accepts, in order of preference
 * (uncompressed first; compressed ones are kept as sent). */
extern const char *const accepted_transfer_syntaxes[];
extern const size_t accepted_transfer_syntax_count;

/* Serialises the use of DCMTK's process-wide dcmExternalSocketHandle (the
 * SCP hands each accepted socket to DCMTK through it; DCMTK's network
 * initialisation reads it too). */
std::mutex &external_socket_mutex();

/* Log lines about events that a peer can cause at will (connections that
 * fail before negotiation, refused associations), limited per kind and
 * peer address: the first in each interval is printed in full, the others
 * are counted and summarised when the interval is over ("... 41 more from
 * 10.0.0.5 in the last 60 s; last: ..."). At most kMaxKeys (kind, address)
 * pairs are tracked; beyond that the others share one entry ("other
 * addresses"). Thread-safe. */
class log_limiter
{
  public:
    static constexpr size_t kMaxKeys = 1024;
    explicit log_limiter(std::chrono::seconds interval = std::chrono::seconds(60))
        : interval_(interval)
    {
    }
    /* Logs (or counts) one event of `kind` from `peer` (an IP address). */
    void event(enum cxr_log_level level, const char *kind, const char *peer, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));
    /* Prints the summaries of intervals that are over (all when `all`). */
    void flush(bool all);

  private:
    struct entry {
        std::chrono::steady_clock::time_point start;
        uint64_t suppressed = 0;
        enum cxr_log_level level = CXR_LOG_WARN;
        std::string kind, peer, last;
    };
    void summarise(const entry &e);
    std::chrono::seconds interval_;
    std::mutex mu_;
    std::map<std::string, entry> entries_;
};

/* "Rejected Permanent, Service User, Called AE Title Not Recognized". */
void reject_text(const T_ASC_RejectParameters *rej, char *out, size_t len);

/* DIMSE status text for logs and errors ("Refused: Out of Resources"). */
const char *dimse_status_text(unsigned status);

/* Copies s into out (len bytes) without leading/trailing spaces. */
void trim_copy(char *out, size_t len, const char *s);

/* ---- SCP internals shared by net_scp.cc (listener, policy, API) and
 * net_scp_assoc.cc (one thread per association). */

/* One allowlist rule, with its host resolved to IPv4 networks. */
struct peer_rule {
    std::string ae;                                  /* "" = any AE */
    std::string host;                                /* as configured, "" = any host */
    std::vector<std::pair<uint32_t, uint32_t>> nets; /* (address, mask), host order */
};

enum worker_state {
    WORKER_NEGOTIATING, /* TLS handshake / reading the A-ASSOCIATE-RQ; socket in `fd` */
    WORKER_STARTING,    /* request read; policy and A-ASSOCIATE-AC/RJ */
    WORKER_IDLE,        /* waiting for the next DIMSE command */
    WORKER_BUSY,
    WORKER_CLOSING
};

/* One accepted connection, from negotiation to the end of its association.
 * The listener creates it and starts its thread; the thread owns the socket
 * (`fd`, later inside `assoc`, where DCMTK may close it at any time, e.g.
 * on an A-ABORT) and `shut_fd`, a duplicate of it that stays open until the
 * thread ends: the listener shuts the socket down through shut_fd, never
 * through fd or the DCMTK connection object. `state`, `done`, the three
 * shut flags and `admitted` are guarded by scp->mu; fd, shut_fd, peer_ip,
 * accepted_at, deadline and host are set before the thread starts;
 * calling, called, stored and failed are the thread's. The listener may
 * shutdown(shut_fd) only while the state is WORKER_NEGOTIATING (deadline
 * passed, evicted by a newer connection, stop) or WORKER_IDLE (stop); the
 * thread leaves those states under the lock before it closes shut_fd. */
struct worker {
    struct cxr_dicom_scp *scp = nullptr;
    T_ASC_Association *assoc = nullptr;
    std::thread thread;
    worker_state state = WORKER_NEGOTIATING;
    bool done = false;
    int fd = -1;          /* the accepted socket */
    int shut_fd = -1;     /* its duplicate, for the listener's shutdown() */
    uint32_t peer_ip = 0; /* IPv4, host order */
    std::chrono::steady_clock::time_point accepted_at, deadline; /* negotiation */
    bool evicted = false, timed_out = false, stopped = false;    /* why the listener shut it */
    bool admitted = false; /* counted against max_associations */
    char calling[17] = "", called[17] = "", host[64] = "";
    uint64_t stored = 0, failed = 0;
};

/* Thread body for one connection (net_scp_assoc.cc): negotiation
 * (scp_negotiate), policy (scp_dispatch), the association; then it closes
 * everything and tells the listener (done flag + eventfd). */
void scp_connection_main(worker *w);

/* Negotiation (net_scp_accept.cc): TLS handshake, reading and checking the
 * A-ASSOCIATE-RQ within the worker's deadline, then DCMTK's
 * ASC_receiveAssociation on the bytes read. Returns the association (the
 * socket now inside it) with the state WORKER_STARTING, or NULL after
 * closing the socket and logging why (state WORKER_CLOSING). */
T_ASC_Association *scp_negotiate(worker *w);

/* The association policy (net_scp.cc) for a received request: either
 * rejects it (A-ASSOCIATE-RJ; frees `assoc`, returns false) or admits it
 * (w->assoc = assoc, counted against max_associations, returns true). */
bool scp_dispatch(worker *w, T_ASC_Association *assoc);

/* The transport layer of the SCP's DCMTK network: DCMTK calls
 * createConnection for the socket handed over through
 * dcmExternalSocketHandle, and gets the connection the worker already made
 * for it (`pending`, set under external_socket_mutex; net_scp_accept.cc). */
class handoff_layer : public DcmTransportLayer
{
  public:
    DcmTransportConnection *createConnection(DcmNativeSocketType sock, OFBool secure) override;
    DcmTransportConnection *pending = nullptr;
    int pending_fd = -1;
};

} // namespace cxr_net

struct cxr_dicom_scp {
    /* configuration (copied) */
    std::string ae_title, bind_address, spool_tmp_dir;
    std::atomic<uint64_t> memory_max{0}; /* data sets up to this size stay in memory */
    uint16_t port = 0;
    uint32_t max_associations = 0, max_pdu = 0, acse_timeout_s = 0, dimse_timeout_s = 0;
    uint32_t max_negotiations = 0, max_negotiations_per_peer = 0;
    bool check_called_ae = false;
    std::vector<cxr_net::peer_rule> rules;
    bool tls_enabled = false;
    DcmTLSTransportLayer *tls = nullptr;
    cxr_dicom_store_fn store = nullptr;
    cxr_dicom_assoc_fn assoc_cb = nullptr;
    void *ctx = nullptr;

    /* run state */
    int wake_fd = -1; /* eventfd: stop() writes, listener polls */
    std::atomic<bool> stop_requested{false};
    std::atomic<bool> ran{false};
    std::mutex mu; /* guards workers, ready_state, bound_port */
    std::condition_variable ready_cv;
    int ready_state = 0; /* 0 not yet, 1 listening, -1 failed/stopped */
    uint16_t bound_port = 0;
    std::list<cxr_net::worker *> workers;
    T_ASC_Network *net = nullptr;              /* while run runs */
    cxr_net::handoff_layer *handoff = nullptr; /* its transport layer */
    cxr_net::log_limiter peer_log;

    /* counters */
    std::atomic<uint64_t> n_accepted{0}, n_rejected{0}, n_failed{0}, n_stores_ok{0},
        n_stores_failed{0}, n_echoes{0}, n_bytes{0};
};

#endif
