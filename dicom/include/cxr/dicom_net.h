/* cxr/dicom_net.h — DICOM networking: the node's SCP (C-ECHO, C-STORE) and
 * SCU (C-ECHO, C-STORE of SRs to destinations), with TLS (BCP 195). DCMTK
 * (dcmnet, dcmtls) inside; no DCMTK type crosses this header.
 *
 * Threads: cxr_dicom_scp_run blocks the calling thread and serves each
 * association on a thread of its own (up to max_associations at once);
 * callbacks run on those threads and must be thread-safe. cxr_dicom_scp_stop
 * may be called from any thread (also from a signal-handling thread).
 * SCU calls are independent and may run on any thread.
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
    CXR_DIMSE_OUT_OF_RESOURCES = 0xA700,     /* Refused: Out of Resources */
    CXR_DIMSE_DATASET_MISMATCH = 0xA900,     /* Error: Data Set does not match SOP Class */
    CXR_DIMSE_CANNOT_UNDERSTAND = 0xC000,    /* Error: Cannot understand */
    CXR_DIMSE_PROCESSING_FAILURE = 0x0110
};

/* TLS settings (BCP 195 profile). Paths to PEM files. */
struct cxr_dicom_tls {
    bool enabled;
    const char *certificate;       /* our certificate (PEM) */
    const char *private_key;       /* its key (PEM, unencrypted) */
    const char *ca_certificates;   /* CA bundle to verify the peer; NULL = no verification */
    bool verify_peer;              /* require and verify the peer's certificate */
};

/* One allowed peer: a calling AE title and/or a host (IP or name); an empty
 * field matches anything. */
struct cxr_dicom_peer_rule {
    char ae_title[17];
    char host[256];
};

struct cxr_dicom_scp_config {
    const char *ae_title;          /* our AE title (called AE must match when check_called_ae) */
    const char *bind_address;      /* "127.0.0.1", "0.0.0.0" */
    uint16_t port;
    uint32_t max_associations;     /* simultaneous associations; more are rejected (transient) */
    uint32_t max_pdu;              /* bytes, 4096..131072 typical */
    uint32_t acse_timeout_s;
    uint32_t dimse_timeout_s;
    bool check_called_ae;
    const struct cxr_dicom_peer_rule *allowed_peers;  /* NULL/0 = any peer */
    size_t allowed_peer_count;
    struct cxr_dicom_tls tls;
    const char *spool_tmp_dir;     /* where incoming objects are first written (same filesystem as the spool) */
};

/* What the SCP hands to the store callback: the received object written
 * bit-preserving as a complete Part 10 file at `tmp_path` (not yet fsynced).
 * The callback owns the file from then on (rename it into place or remove it). */
struct cxr_dicom_store_event {
    const char *calling_ae;
    const char *called_ae;
    const char *peer_host;
    const char *sop_class_uid;
    const char *sop_instance_uid;
    const char *transfer_syntax_uid;
    const char *tmp_path;
    uint64_t size;
};

/* Returns the DIMSE status to answer (CXR_DIMSE_SUCCESS only after the object
 * is durably stored). */
typedef uint16_t (*cxr_dicom_store_fn)(void *ctx, const struct cxr_dicom_store_event *ev);

/* Called when an association is requested, after the AE/peer checks of the
 * config passed; returns false to reject it (e.g. disk below the watermark),
 * writing a short reason into `reason` (256 bytes). May be NULL. */
typedef bool (*cxr_dicom_assoc_fn)(void *ctx, const char *calling_ae, const char *peer_host,
                                   char *reason);

struct cxr_dicom_scp;

/* Prepares the SCP (binds nothing yet). The config's strings are copied. */
enum cxr_status cxr_dicom_scp_new(const struct cxr_dicom_scp_config *cfg, cxr_dicom_store_fn store,
                                  cxr_dicom_assoc_fn assoc, void *ctx, struct cxr_dicom_scp **out,
                                  char *err);
/* Listens and serves until cxr_dicom_scp_stop; returns CXR_OK after a stop,
 * an error if the port cannot be bound (err says which port and why). */
enum cxr_status cxr_dicom_scp_run(struct cxr_dicom_scp *scp, char *err);
/* Asks a running SCP to stop accepting and return once the current
 * associations end. */
void cxr_dicom_scp_stop(struct cxr_dicom_scp *scp);
void cxr_dicom_scp_free(struct cxr_dicom_scp *scp);

/* A remote AE to send to. */
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

/* C-ECHO. CXR_OK when the peer answered success. */
enum cxr_status cxr_dicom_scu_echo(const struct cxr_dicom_scu_target *t, char *err);

/* C-STORE of one Part 10 file over a new association. *dimse_status gets
 * the peer's answer (0 success; warnings 0xB000.. count as stored).
 * CXR_ERR_DICOM_NET when the association or the transfer failed (peer down,
 * rejected, aborted); err says which and why. */
enum cxr_status cxr_dicom_scu_store_file(const struct cxr_dicom_scu_target *t, const char *path,
                                         uint16_t *dimse_status, char *err);

#ifdef __cplusplus
}
#endif
#endif
