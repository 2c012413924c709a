/* net_common.cc — small helpers shared by the SCP and the SCU: one-time
 * process setup, error text, TCP_NODELAY, transfer syntax table, PS3.8
 * reject and PS3.7 status texts. */
#include "net_internal.h"

#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/oflog/oflog.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cxr/log.h"

namespace cxr_net
{

const char *const accepted_transfer_syntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEGProcess1TransferSyntax,         /* .50 baseline */
    UID_JPEGProcess2_4TransferSyntax,       /* .51 extended */
    UID_JPEGProcess14TransferSyntax,        /* .57 lossless */
    UID_JPEGProcess14SV1TransferSyntax,     /* .70 lossless SV1 */
    UID_JPEGLSLosslessTransferSyntax,       /* .80 */
    UID_JPEGLSLossyTransferSyntax,          /* .81 near-lossless */
    UID_RLELosslessTransferSyntax,          /* .5 */
    UID_JPEG2000LosslessOnlyTransferSyntax, /* .90 */
    UID_JPEG2000TransferSyntax,             /* .91 */
};
const size_t accepted_transfer_syntax_count =
    sizeof accepted_transfer_syntaxes / sizeof accepted_transfer_syntaxes[0];

namespace
{

pthread_once_t init_once = PTHREAD_ONCE_INIT;
int nodelay_setting = 1;

void init_once_fn()
{
    /* DCMTK's dcmnet/dcmtls loggers would print their own copy of every
     * failure to stderr; our log lines carry the condition text instead.
     * At debug level they stay on (warnings) for diagnosis. */
    OFLogger::LogLevel lvl =
        cxr_log_get_level() >= CXR_LOG_DEBUG ? OFLogger::WARN_LOG_LEVEL : OFLogger::OFF_LOG_LEVEL;
    OFLog::getLogger("dcmtk.dcmnet").setLogLevel(lvl);
    OFLog::getLogger("dcmtk.dcmtls").setLogLevel(lvl);
    dcmDisableGethostbyaddr.set(OFTrue);
    /* A peer that closes while we write would raise SIGPIPE (DCMTK writes
     * with write(2)); a server must survive that. A handler someone installed
     * on purpose is kept. */
    /* Likewise a file-size limit (RLIMIT_FSIZE) must turn into EFBIG on the
     * temp file write, answered 0xA700, not kill the process (SIGXFSZ). */
    for (int sig : {SIGPIPE, SIGXFSZ}) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = SIG_IGN;
            sigaction(sig, &sa, NULL);
        }
    }
    DcmTLSTransportLayer::initializeOpenSSL();
    const char *env = getenv("TCP_NODELAY");
    if (env && *env && atoi(env) == 0) {
        nodelay_setting = 0;
        cxr_log(CXR_LOG_INFO, "dicom",
                "TCP_NODELAY=0 in the environment: Nagle's algorithm stays on");
    }
}

} // namespace

void global_init() { pthread_once(&init_once, init_once_fn); }

void set_err(char *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, CXR_ERRLEN, fmt, ap);
    va_end(ap);
}

namespace
{
/* DcmTransportConnection::getSocket() is protected in 3.6.7; a pointer to
 * the inherited member, named through a derived class, reaches it legally
 * (the class is never instantiated). */
struct socket_peek : DcmTransportConnection {
    static DcmNativeSocketType of(DcmTransportConnection *c)
    {
        DcmNativeSocketType (DcmTransportConnection::*get)() = &socket_peek::getSocket;
        return (c->*get)();
    }
};
} // namespace

int assoc_socket(T_ASC_Association *assoc)
{
    if (!assoc || !assoc->DULassociation)
        return -1;
    DcmTransportConnection *conn = DUL_getTransportConnection(assoc->DULassociation);
    return conn ? (int)socket_peek::of(conn) : -1;
}

void set_nodelay(T_ASC_Association *assoc)
{
    int fd = assoc_socket(assoc);
    if (fd < 0 || !nodelay_setting)
        return;
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        cxr_log(CXR_LOG_WARN, "dicom", "TCP_NODELAY could not be set: %s", strerror(errno));
}

void reject_text(const T_ASC_RejectParameters *rej, char *out, size_t len)
{
    const char *result = rej->result == ASC_RESULT_REJECTEDPERMANENT   ? "rejected permanent"
                         : rej->result == ASC_RESULT_REJECTEDTRANSIENT ? "rejected transient"
                                                                       : "rejected (result ?)";
    const char *source = "unknown source";
    switch (rej->source) {
    case ASC_SOURCE_SERVICEUSER: source = "service user"; break;
    case ASC_SOURCE_SERVICEPROVIDER_ACSE_RELATED: source = "service provider (ACSE)"; break;
    case ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED:
        source = "service provider (presentation)";
        break;
    }
    const char *reason = "unknown reason";
    switch (rej->reason) {
    case ASC_REASON_SU_NOREASON:
    case ASC_REASON_SP_ACSE_NOREASON: reason = "no reason given"; break;
    case ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED:
        reason = "application context name not supported";
        break;
    case ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED:
        reason = "calling AE title not recognized";
        break;
    case ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED: reason = "called AE title not recognized"; break;
    case ASC_REASON_SP_ACSE_PROTOCOLVERSIONNOTSUPPORTED:
        reason = "protocol version not supported";
        break;
    case ASC_REASON_SP_PRES_TEMPORARYCONGESTION: reason = "temporary congestion"; break;
    case ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED: reason = "local limit exceeded"; break;
    }
    snprintf(out, len, "%s, %s, %s", result, source, reason);
}

const char *dimse_status_text(unsigned status)
{
    if (status == 0x0000)
        return "Success";
    if (status == 0x0001 || (status & 0xF000) == 0xB000)
        return "Warning";
    if (status == 0xFFFF)
        return "no response";
    if ((status & 0xFF00) == 0xA700)
        return "Refused: Out of Resources";
    if ((status & 0xFF00) == 0xA900)
        return "Error: Data Set does not match SOP Class";
    if ((status & 0xF000) == 0xC000)
        return "Error: Cannot understand";
    switch (status) {
    case 0x0110: return "Failure: Processing failure";
    case 0x0122: return "Refused: SOP Class not supported";
    case 0x0124: return "Refused: Not authorized";
    case 0x0210: return "Failure: Duplicate invocation";
    case 0x0211: return "Failure: Unrecognized operation";
    case 0x0212: return "Failure: Mistyped argument";
    case 0xFE00: return "Cancel";
    }
    return "Failure";
}

std::mutex &external_socket_mutex()
{
    static std::mutex mu;
    return mu;
}

void log_limiter::event(enum cxr_log_level level, const char *kind, const char *peer,
                        const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    std::string key = std::string(kind) + '\n' + peer;
    auto it = entries_.find(key);
    if (it == entries_.end() && entries_.size() >= kMaxKeys) {
        key = std::string(kind) + "\n*";
        peer = "other addresses";
        it = entries_.find(key);
    }
    if (it != entries_.end() && now - it->second.start < interval_) {
        it->second.suppressed++;
        it->second.last = text;
        return;
    }
    if (it != entries_.end()) {
        summarise(it->second);
        entries_.erase(it);
    }
    entry e;
    e.start = now;
    e.level = level;
    e.kind = kind;
    e.peer = peer;
    entries_.emplace(key, e);
    cxr_log(level, "dicom", "%s", text);
}

void log_limiter::flush(bool all)
{
    auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end();) {
        if (all || now - it->second.start >= interval_) {
            summarise(it->second);
            it = entries_.erase(it);
        } else {
            ++it;
        }
    }
}

void log_limiter::summarise(const entry &e)
{
    if (e.suppressed == 0)
        return;
    long secs = (long)std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::steady_clock::now() - e.start)
                    .count();
    cxr_log(e.level, "dicom",
            "%llu more %s from %s in the last %ld s (not logged one by one); last: %s",
            (unsigned long long)e.suppressed, e.kind.c_str(), e.peer.c_str(), secs, e.last.c_str());
}

void trim_copy(char *out, size_t len, const char *s)
{
    if (!s)
        s = "";
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        n--;
    if (n >= len)
        n = len - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

} // namespace cxr_net
