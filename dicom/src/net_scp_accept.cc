/* net_scp_accept.cc — association negotiation of one accepted connection, on
 * that connection's own thread: the TLS handshake, reading the
 * A-ASSOCIATE-RQ (PS3.8 9.3.2) within the connection's deadline, checking its
 * structure (cxr_dicom_assoc_rq_check), and handing socket and request to
 * DCMTK's ASC layer.
 *
 * How the hand-off works, and why this way: DCMTK 3.6.7 has one function
 * that reads an A-ASSOCIATE-RQ, ASC_receiveAssociation, and it both accepts
 * the TCP connection (on the network's listening socket) and reads the
 * request; DcmSCPPool calls it on its listener thread too
 * (dcmnet/libsrc/scppool.cc, DcmBaseSCPPool::listen), so one slow client
 * stalls every other (DUL_ReceiveAssociationRQ reads the body with
 * DUL_BLOCK, and the TLS handshake, DcmTLSConnection::serverSideHandshake,
 * is a blocking SSL_accept with no timeout at all). Forking per connection
 * (DUL_requestForkOnTransportConnectionReceipt) does not suit a threaded
 * server with a shared job store. The public ways into DCMTK's DUL for a
 * socket accepted elsewhere are the global dcmExternalSocketHandle (dul.h:
 * "an already opened socket ... used the next time
 * receiveTransportConnectionTCP() is called", as storescp --inetd uses it)
 * and the transport layer's createConnection() (dcmlayer.h), which
 * receiveTransportConnectionTCP calls for that socket. So the listener
 * accepts; this thread makes the DcmTransportConnection itself (plain, or
 * TLS through the configured DcmTLSTransportLayer), does the handshake and
 * reads the whole request through it, bounded by the listener's watchdog
 * (it shuts the socket down at the deadline); only then does it take
 * external_socket_mutex, set dcmExternalSocketHandle and call
 * ASC_receiveAssociation, whose transport layer (handoff_layer) returns a
 * connection that replays the request bytes already read. Under that lock
 * DCMTK only parses memory, so the lock is held for microseconds and never
 * across a network wait. */
#include "net_internal.h"

#include "dcmtk/dcmnet/dcmlayer.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/dul.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

namespace cxr_net
{

DcmTransportConnection *handoff_layer::createConnection(DcmNativeSocketType sock, OFBool)
{
    if (!pending || (int)sock != pending_fd)
        return NULL; /* not a socket we handed over: DCMTK refuses it */
    DcmTransportConnection *c = pending;
    pending = NULL;
    return c;
}

namespace
{

/* A transport connection that first returns the bytes of the request
 * already read through `inner` (the socket's real connection, TCP or TLS),
 * then reads from `inner`. Owns `inner` (and through it the socket): DCMTK
 * deletes this object when the association is dropped. */
class replay_connection : public DcmTransportConnection
{
  public:
    replay_connection(DcmTransportConnection *inner, int fd, std::vector<uint8_t> &&bytes)
        : DcmTransportConnection(fd), inner_(inner), bytes_(std::move(bytes))
    {
    }
    ~replay_connection() override { delete inner_; }
    OFCondition serverSideHandshake() override { return EC_Normal; } /* done already */
    OFCondition clientSideHandshake() override { return inner_->clientSideHandshake(); }
    OFCondition renegotiate(const char *suite) override { return inner_->renegotiate(suite); }
    ssize_t read(void *buf, size_t nbyte) override
    {
        if (pos_ < bytes_.size()) {
            size_t n = std::min(nbyte, bytes_.size() - pos_);
            memcpy(buf, bytes_.data() + pos_, n);
            pos_ += n;
            if (pos_ == bytes_.size())
                std::vector<uint8_t>().swap(bytes_), pos_ = 0;
            return (ssize_t)n;
        }
        return inner_->read(buf, nbyte);
    }
    ssize_t write(void *buf, size_t nbyte) override { return inner_->write(buf, nbyte); }
    void close() override { inner_->close(); }
    void closeTransportConnection() override { inner_->closeTransportConnection(); }
    unsigned long getPeerCertificateLength() override { return inner_->getPeerCertificateLength(); }
    unsigned long getPeerCertificate(void *buf, unsigned long len) override
    {
        return inner_->getPeerCertificate(buf, len);
    }
    OFBool networkDataAvailable(int timeout) override
    {
        return pos_ < bytes_.size() ? OFTrue : inner_->networkDataAvailable(timeout);
    }
    OFBool isTransparentConnection() override
    {
        return pos_ < bytes_.size() ? OFFalse : inner_->isTransparentConnection();
    }
    OFString &dumpConnectionParameters(OFString &str) override
    {
        return inner_->dumpConnectionParameters(str);
    }

  private:
    DcmTransportConnection *inner_;
    std::vector<uint8_t> bytes_;
    size_t pos_ = 0;
};

/* Reads exactly `len` bytes; false on end of stream or error (including the
 * listener's shutdown at the deadline). */
bool read_exact(DcmTransportConnection *conn, uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = conn->read(buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* Sends an A-ABORT PDU (PS3.8 9.3.8), source service-provider. */
void send_abort(DcmTransportConnection *conn, uint8_t reason)
{
    uint8_t pdu[10] = {0x07, 0, 0, 0, 0, 4, 0, 0, 2, reason};
    (void)conn->write(pdu, sizeof pdu);
}

const size_t kReadChunk = 64 * 1024;

/* Reads one A-ASSOCIATE-RQ into `pdu` (header included) and checks it.
 * Memory grows with the bytes that arrive, up to DCMTK's
 * dcmAssociatePDUSizeLimit. Returns "" or why it was refused (an A-ABORT
 * was sent where the peer is owed one). */
std::string read_request(DcmTransportConnection *conn, std::vector<uint8_t> &pdu)
{
    uint8_t hdr[6];
    if (!read_exact(conn, hdr, sizeof hdr))
        return "closed before a complete PDU header";
    uint32_t len = (uint32_t)hdr[2] << 24 | (uint32_t)hdr[3] << 16 | (uint32_t)hdr[4] << 8 | hdr[5];
    char why[256];
    if (hdr[0] != 0x01) {
        int reason = cxr_dicom_assoc_rq_check(hdr, sizeof hdr, why, sizeof why);
        send_abort(conn, (uint8_t)reason);
        return why;
    }
    size_t limit = dcmAssociatePDUSizeLimit.get();
    if (limit == 0 || limit > (1u << 20))
        limit = 1u << 20;
    if (len > limit) {
        send_abort(conn, 6);
        snprintf(why, sizeof why, "A-ASSOCIATE-RQ of %u bytes (at most %zu accepted)",
                 (unsigned)len, limit);
        return why;
    }
    pdu.assign(hdr, hdr + sizeof hdr);
    size_t got = 0;
    while (got < len) {
        size_t n = std::min(kReadChunk, (size_t)len - got);
        pdu.resize(pdu.size() + n);
        if (!read_exact(conn, pdu.data() + sizeof hdr + got, n)) {
            snprintf(why, sizeof why, "closed after %zu of the %u bytes of its A-ASSOCIATE-RQ", got,
                     (unsigned)len);
            return why;
        }
        got += n;
    }
    int reason = cxr_dicom_assoc_rq_check(pdu.data(), pdu.size(), why, sizeof why);
    if (reason) {
        send_abort(conn, (uint8_t)reason);
        return std::string("malformed A-ASSOCIATE-RQ, answered with A-ABORT: ") + why;
    }
    return "";
}

/* Hands socket and request to DCMTK (see the file comment). On return
 * `*conn` is NULL if DCMTK took the connection (then *assoc exists, even on
 * failure, and owns the socket), else still ours. */
OFCondition receive(cxr_dicom_scp *scp, int fd, DcmTransportConnection **conn,
                    T_ASC_Association **assoc)
{
    std::lock_guard<std::mutex> lock(external_socket_mutex());
    struct reset_guard {
        handoff_layer *layer;
        ~reset_guard()
        {
            dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
            layer->pending = NULL;
            layer->pending_fd = -1;
        }
    } guard{scp->handoff};
    scp->handoff->pending = *conn;
    scp->handoff->pending_fd = fd;
    dcmExternalSocketHandle.set(fd);
    OFCondition c = ASC_receiveAssociation(scp->net, assoc, (long)scp->max_pdu, NULL, NULL,
                                           scp->tls_enabled ? OFTrue : OFFalse, DUL_NOBLOCK,
                                           (int)scp->acse_timeout_s);
    if (scp->handoff->pending == NULL)
        *conn = NULL;
    return c;
}

/* Leaves WORKER_NEGOTIATING under the lock, for WORKER_STARTING when `ok`
 * and the listener has not shut the socket meanwhile, else for
 * WORKER_CLOSING; returns why the listener shut it, or NULL. After this the
 * listener no longer touches the socket. */
const char *leave_negotiation(worker *w, bool ok)
{
    std::lock_guard<std::mutex> lock(w->scp->mu);
    bool shut = w->stopped || w->timed_out || w->evicted;
    w->state = ok && !shut ? WORKER_STARTING : WORKER_CLOSING;
    if (w->stopped)
        return "the node is stopping";
    if (w->timed_out)
        return "no complete A-ASSOCIATE-RQ within the ACSE timeout";
    if (w->evicted)
        return "closed to make room: too many connections negotiating";
    return NULL;
}

} // namespace

T_ASC_Association *scp_negotiate(worker *w)
{
    cxr_dicom_scp *scp = w->scp;
    /* Who closes the socket: the bare fd until `conn` exists, then `conn`
     * (deleting it closes the socket), then `assoc` once DCMTK took conn. */
    DcmTransportConnection *conn = NULL;
    T_ASC_Association *assoc = NULL;
    std::string failure;
    try {
        OFCondition c;
        if (scp->tls_enabled)
            conn = scp->tls->createConnection(w->fd, OFTrue);
        else
            conn = new DcmTCPConnection(w->fd);
        if (!conn)
            failure = "no transport connection for the socket (TLS context unusable)";
        if (failure.empty() && scp->tls_enabled) {
            c = conn->serverSideHandshake();
            if (c.bad())
                failure = std::string("TLS handshake failed: ") + c.text();
        }
        std::vector<uint8_t> pdu;
        if (failure.empty())
            failure = read_request(conn, pdu);
        if (failure.empty()) {
            DcmTransportConnection *replay = new replay_connection(conn, w->fd, std::move(pdu));
            conn = replay;
            c = receive(scp, w->fd, &conn, &assoc);
            if (c.bad())
                failure = std::string("A-ASSOCIATE-RQ refused by DCMTK: ") + c.text();
        }
    } catch (const std::bad_alloc &) {
        failure = "out of memory";
    } catch (const std::exception &e) {
        failure = e.what();
    } catch (...) {
        failure = "unexpected exception";
    }
    bool had_conn = conn != NULL || assoc != NULL;
    const char *shut = leave_negotiation(w, failure.empty());
    if (failure.empty() && shut)
        failure = shut;
    else if (shut)
        failure = std::string(shut) + " (" + failure + ")";
    if (failure.empty())
        return assoc;

    /* The listener no longer touches the socket: close it. */
    if (assoc) {
        ASC_dropAssociation(assoc); /* closes the socket if DCMTK took the connection */
        ASC_destroyAssociation(&assoc);
    }
    if (conn)
        delete conn; /* closes the socket */
    else if (!had_conn)
        ::close(w->fd);
    w->fd = -1;
    scp->n_failed++;
    scp->peer_log.event(CXR_LOG_WARN, "connections closed before an association was negotiated",
                        w->host,
                        "connection from %s closed before an association was negotiated%s: %s",
                        w->host, scp->tls_enabled ? " (TLS)" : "", failure.c_str());
    return NULL;
}

} // namespace cxr_net
