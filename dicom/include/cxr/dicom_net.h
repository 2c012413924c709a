/* cxr/dicom_net.h — DICOM networking: the node's SCP (C-ECHO, C-STORE) and
 * SCU (C-ECHO, C-STORE of SRs to destinations), with TLS (BCP 195). DCMTK
 * (dcmnet, dcmtls) inside; no DCMTK type crosses this header.
 *
 * Threads: cxr_dicom_scp_run blocks the calling thread (the listener), which
 * only accepts TCP connections; each connection gets a thread of its own at
 * once, which does the TLS handshake, reads the A-ASSOCIATE-RQ and then
 * serves the association (up to max_associations at once); callbacks run on
 * those threads and must be thread-safe. cxr_dicom_scp_stop may be called from any thread, and is
 * async-signal-safe (it only sets a flag and writes to an eventfd), so a
 * SIGTERM handler may call it directly. SCU calls are independent and may
 * run on any thread.
 * Errors: every function catches all C++ exceptions and returns a status;
 * `err` is a buffer of CXR_ERRLEN bytes (may be NULL) that gets a
 * one-line explanation naming the peer (AE@host:port), the file or the
 * setting that failed.
 * Nagle: TCP_NODELAY is set on every association socket (both directions)
 * unless the environment variable TCP_NODELAY=0 is set explicitly (the same
 * switch DCMTK honours, kept for A/B measurements).
 */
#ifndef CXR_DICOM_NET_H
#define CXR_DICOM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_DICOM_NET_MAX_PEERS 64

/* DIMSE status codes a store callback may return (PS3.4 Annex B.2.3). */
enum {
    CXR_DIMSE_SUCCESS = 0x0000,
    CXR_DIMSE_OUT_OF_RESOURCES = 0xA700,  /* Refused: Out of Resources */
    CXR_DIMSE_DATASET_MISMATCH = 0xA900,  /* Error: Data Set does not match SOP Class */
    CXR_DIMSE_CANNOT_UNDERSTAND = 0xC000, /* Error: Cannot understand */
    CXR_DIMSE_PROCESSING_FAILURE = 0x0110,
    CXR_DIMSE_SOP_CLASS_NOT_SUPPORTED = 0x0122, /* Refused: SOP Class not supported */
    CXR_DIMSE_NO_RESPONSE = 0xFFFF              /* not a DIMSE status: no response arrived (SCU) */
};

/* TLS settings: DICOM's Non-downgrading BCP 195 profile (PS3.15 B.9:
 * TLS 1.2 or newer, ECDHE/DHE-RSA with AES-GCM), so certificates must be RSA
 * (2048 bits or more, SHA-256 signatures). Paths to PEM files.
 * SCP: certificate + private_key required. verify_peer => clients must show a
 * certificate that chains to ca_certificates (required then); ca given
 * without verify_peer => a client certificate is verified if one is shown.
 * SCU: certificate + private_key optional (needed when the peer asks for a
 * client certificate). With ca_certificates the server's certificate must
 * chain to it AND name the target host (subjectAltName IP or DNS, else CN;
 * RFC 6125), checked right after the association is accepted; without
 * ca_certificates (and verify_peer false) the server is not authenticated. */
struct cxr_dicom_tls {
    bool enabled;
    const char *certificate;     /* our certificate (PEM) */
    const char *private_key;     /* its key (PEM, unencrypted) */
    const char *ca_certificates; /* CA bundle to verify the peer; NULL = no verification */
    bool verify_peer;            /* require and verify the peer's certificate */
};

/* One allowed peer: a calling AE title and/or a host; an empty field matches
 * anything. host is an IPv4 address ("10.1.2.3"), a CIDR block
 * ("10.1.0.0/16") or a name, resolved (IPv4) once when cxr_dicom_scp_run
 * starts. AE titles compare exactly after trimming spaces. */
struct cxr_dicom_peer_rule {
    char ae_title[17];
    char host[256];
};

/* Association policy (PS3.8 Table 9-21 reject codes), in this order:
 *  1. application context not DICOM      -> permanent, service-user, 2
 *  2. check_called_ae and called AE != ae_title
 *                                        -> permanent, service-user, 7 (called AE not recognized)
 *  3. allowlist set, calling AE in no rule -> permanent, service-user, 3 (calling AE not
 * recognized) AE known but not from this host      -> permanent, service-user, 1 (no reason given)
 *  4. max_associations busy              -> transient, service-provider (presentation), 2 (local
 * limit exceeded)
 *  5. the assoc callback says no         -> transient, service-provider (presentation), 1
 * (temporary congestion)
 *  6. no acceptable presentation context -> permanent, service-user, 1
 * Every association is logged (calling AE, called AE, host, outcome, reason);
 * refusals and connections that fail before an association is negotiated
 * are logged once per peer address and minute, with a count of the others.
 *
 * Before that policy (negotiation, before any authentication): a
 * connection has acse_timeout_s in all to complete its TLS handshake and
 * send a complete A-ASSOCIATE-RQ; the request must pass
 * cxr_dicom_assoc_rq_check (else A-ABORT). At most max_negotiations
 * connections negotiate at once, at most max_negotiations_per_peer from one
 * IP address; a connection beyond either limit closes the oldest one still
 * negotiating (of that address, else of the address with the most), so
 * that held-open connections cannot lock out a peer that sends its request
 * at once.
 * Zero numbers take defaults: max_associations 16, max_pdu 65536 (allowed
 * 4096..131072), acse_timeout_s 30, dimse_timeout_s 60,
 * max_negotiations_per_peer max_associations, max_negotiations 4 x
 * max_associations (at least max_negotiations_per_peer). bind_address NULL or
 * "" means all interfaces; it must be an IPv4 address or a name (DCMTK 3.6.7's
 * acceptor is IPv4 only). port 0 picks a free port (see
 * cxr_dicom_scp_wait_ready). */
struct cxr_dicom_scp_config {
    const char *ae_title;     /* our AE title (called AE must match when check_called_ae) */
    const char *bind_address; /* "127.0.0.1", "0.0.0.0" */
    uint16_t port;
    uint32_t max_associations; /* simultaneous associations; more are rejected (transient) */
    uint32_t max_pdu;          /* bytes, 4096..131072 typical */
    uint32_t acse_timeout_s;   /* TLS handshake + A-ASSOCIATE-RQ read, in all, per connection */
    uint32_t dimse_timeout_s;  /* each DIMSE read; also the idle time before the SCP aborts */
    bool check_called_ae;
    const struct cxr_dicom_peer_rule *allowed_peers; /* NULL/0 = any peer */
    size_t allowed_peer_count;
    struct cxr_dicom_tls tls;
    const char *
        spool_tmp_dir; /* where incoming objects are first written (same filesystem as the spool) */
    uint64_t memory_max_bytes; /* objects up to this size are handed over in memory, not as a file;
                                  0 = always a file */
    uint32_t max_negotiations; /* connections negotiating at once (all peers) */
    uint32_t max_negotiations_per_peer; /* connections negotiating at once from one IP address */
};

/* What the SCP hands to the store callback: the received object,
 * bit-preserving, as a complete Part 10 file: a File Meta Information group
 * built from the C-STORE request (SOP class and instance, the accepted
 * transfer syntax, Source AE = calling AE) followed by the data set bytes
 * exactly as they arrived (compressed syntaxes as-is). An object of at most
 * memory_max_bytes comes as `data` (size bytes, valid during the call;
 * tmp_path NULL); a larger one as the file at `tmp_path` (not yet fsynced;
 * data NULL). The callback owns that file from then on (rename it into place
 * or remove it); if it answers a non-success status and leaves the file
 * there, the SCP removes it. The strings are valid only during the call. If the temp file
 * cannot be created or written (disk full, unwritable spool) the callback is
 * not called: the SCP answers 0xA700 and removes the partial file. A stream
 * that breaks mid-object aborts the association; nothing is left behind. */
struct cxr_dicom_store_event {
    const char *calling_ae;
    const char *called_ae;
    const char *peer_host;
    const char *sop_class_uid;
    const char *sop_instance_uid;
    const char *transfer_syntax_uid;
    const char *tmp_path; /* the object as a file, or NULL (see data) */
    const void *data;     /* the object in memory, or NULL (see tmp_path) */
    uint64_t size;
};

/* Returns the DIMSE status to answer (CXR_DIMSE_SUCCESS only after the object
 * is durably stored). */
typedef uint16_t (*cxr_dicom_store_fn)(void *ctx, const struct cxr_dicom_store_event *ev);

/* Called when an association is requested, after the AE/peer checks of the
 * config passed; returns false to reject it (e.g. disk below the watermark),
 * writing a short reason into `reason` (256 bytes). May be NULL. Runs on the
 * listener thread (before the association gets a thread): keep it quick. */
typedef bool (*cxr_dicom_assoc_fn)(void *ctx, const char *calling_ae, const char *peer_host,
                                   char *reason);

struct cxr_dicom_scp;

/* Prepares the SCP (binds nothing yet). The config's strings are copied;
 * TLS files are loaded here (an unreadable or mismatched key/certificate is
 * reported now). `store` is required, `assoc` may be NULL. */
enum cxr_status cxr_dicom_scp_new(const struct cxr_dicom_scp_config *cfg, cxr_dicom_store_fn store,
                                  cxr_dicom_assoc_fn assoc, void *ctx, struct cxr_dicom_scp **out,
                                  char *err);
/* Listens and serves until cxr_dicom_scp_stop; returns CXR_OK after a stop,
 * an error if the port cannot be bound (err says which port and why).
 * Call it once per object (a second call returns CXR_ERR_INVALID_ARG). */
enum cxr_status cxr_dicom_scp_run(struct cxr_dicom_scp *scp, char *err);
/* Asks a running (or about to run) SCP to stop: it accepts no new
 * association; an association waiting for its next command is closed at
 * once; one in the middle of a C-STORE finishes it (data set, store callback,
 * response) and is then aborted (A-ABORT; the peer resends the rest later).
 * run returns when all association threads have ended: promptly, bounded by
 * dimse_timeout_s for a stalled transfer; connections still negotiating
 * (TLS handshake, A-ASSOCIATE-RQ) are closed at once. Async-signal-safe. */
void cxr_dicom_scp_stop(struct cxr_dicom_scp *scp);
/* Waits until run is listening and returns the bound port (useful with port
 * 0); 0 if run failed or stopped first, or after timeout_ms. Any thread. */
uint16_t cxr_dicom_scp_wait_ready(struct cxr_dicom_scp *scp, uint32_t timeout_ms);

/* Counters since run started (for /metrics). Any thread. */
struct cxr_dicom_scp_stats {
    uint64_t associations_accepted;
    uint64_t associations_rejected; /* by the policy above, incl. the cap */
    uint64_t associations_failed;   /* aborted, broken, TLS handshake failures, garbage */
    uint64_t stores_ok;             /* C-STORE answered with success/warning */
    uint64_t stores_failed;         /* answered with a failure status, or broken mid-object */
    uint64_t echoes;
    uint64_t bytes_received; /* data set bytes written to temp files */
    uint32_t active_associations;
};
void cxr_dicom_scp_get_stats(struct cxr_dicom_scp *scp, struct cxr_dicom_scp_stats *out);
/* Frees an SCP that is not running (run never called, or returned). */
/* Changes memory_max_bytes for the objects received from now on (any thread). */
void cxr_dicom_scp_set_memory_max(struct cxr_dicom_scp *scp, uint64_t bytes);
void cxr_dicom_scp_free(struct cxr_dicom_scp *scp);

/* Checks an A-ASSOCIATE-RQ PDU (`len` bytes from its PDU-type byte) for the
 * structure PS3.8 9.3.2 and PS3.7 D.3.3 prescribe, before DCMTK parses it:
 * item and sub-item lengths that add up, one abstract syntax and at least
 * one transfer syntax per presentation context, UIDs of 1 to 64 bytes, at
 * most one user information item and one user identity sub-item, role
 * selection, extended negotiation and user identity fields within their
 * sub-items. DCMTK 3.6.7 leaks memory on several of these faults (see
 * dicom/src/assoc_rq.c). Returns 0 when the request may be parsed,
 * otherwise the A-ABORT reason to answer with (PS3.8 Table 9-26: 1
 * unrecognized PDU, 2 unexpected PDU, 4 unrecognized PDU parameter, 6
 * invalid PDU parameter value) and a one-line reason naming the item and
 * its offset in `why` (why_len bytes; may be NULL). Pure; any thread. */
int cxr_dicom_assoc_rq_check(const uint8_t *pdu, size_t len, char *why, size_t why_len);

/* A remote AE to send to. Zero numbers take defaults: max_pdu 65536,
 * connect_timeout_s 10 (TCP connect and the A-ASSOCIATE exchange; DCMTK keeps
 * the connect timeout in a process-wide setting, so concurrent calls with
 * different values may see each other's), dimse_timeout_s 60. */
struct cxr_dicom_scu_target {
    const char *called_ae;
    const char *calling_ae;
    const char *host;
    uint16_t port;
    uint32_t max_pdu;
    uint32_t connect_timeout_s;
    uint32_t dimse_timeout_s;
    struct cxr_dicom_tls tls;
};

/* C-ECHO. CXR_OK when the peer answered success; CXR_ERR_DICOM_NET when the
 * peer is down (connection refused / timed out), rejected the association
 * (err carries the PS3.8 result, source and reason), or answered a failure;
 * CXR_ERR_INVALID_ARG for a bad target or unusable TLS files. */
enum cxr_status cxr_dicom_scu_echo(const struct cxr_dicom_scu_target *t, char *err);

/* C-STORE of one Part 10 file over a new association. Proposes the file's
 * own transfer syntax plus explicit and implicit VR little endian, and sends
 * the data set as it is in the file when the peer accepts that syntax
 * (otherwise converts to the accepted uncompressed one; a compressed file
 * whose syntax is refused fails with CXR_ERR_DICOM_TS).
 * *dimse_status gets the peer's answer (0 success; warnings 0x0001, 0xB000..
 * count as stored and return CXR_OK), or CXR_DIMSE_NO_RESPONSE when no
 * response arrived. CXR_ERR_DICOM_NET when the association or the transfer
 * failed (peer down, rejected, aborted) or the peer answered a failure status
 * (then *dimse_status says which); CXR_ERR_IO / CXR_ERR_DICOM_PARSE when the
 * file cannot be read; err says which and why. */
enum cxr_status cxr_dicom_scu_store_file(const struct cxr_dicom_scu_target *t, const char *path,
                                         uint16_t *dimse_status, char *err);

#ifdef __cplusplus
}
#endif
#endif
