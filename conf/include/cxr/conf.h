/* cxr/conf.h — the XML configuration of cxr-triage.
 *
 * One XML file (conf/cxr-triage.xml is the shipped default) validated against
 * conf/cxr-triage.xsd. Every key is a row of one table (name, type, range,
 * default, description): the loader, the XSD (cxr_conf_schema_xsd) and the
 * documentation table (cxr_conf_doc_markdown) are all produced from it, and a
 * test checks that the committed conf/cxr-triage.xsd and docs/configuration.md
 * agree with the table.
 *
 * Keys are addressed by path "section/key" (e.g. "model/path"); in the XML
 * each section is an element below the root <cxr-triage> and each key an
 * element inside it: <model><path>...</path></model>. A key may be omitted:
 * then its default applies. List-typed keys hold whitespace-separated tokens.
 *
 * Ownership: cxr_conf_load/cxr_conf_defaults return a struct the caller frees
 * with cxr_conf_free (NULL is a no-op). All strings inside belong to the
 * struct. A loaded struct is immutable; several threads may read it.
 */
#ifndef CXR_CONF_H
#define CXR_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_CONF_MAX_LIST 16 /* max tokens in a list-typed key */

enum cxr_conf_backend {
    CXR_CONF_BACKEND_AUTO = 0,
    CXR_CONF_BACKEND_CPU = 1,
    CXR_CONF_BACKEND_CUDA = 2
};

enum cxr_conf_precision {
    CXR_CONF_PRECISION_AUTO = 0, /* fp32 on the CPU (see nn.h); the GPU backend's choice there */
    CXR_CONF_PRECISION_FP32 = 1,
    CXR_CONF_PRECISION_BF16 = 2,
    CXR_CONF_PRECISION_FP16 = 3 /* GPU only */
};

/* What to do with a DX "For Processing" image (raw detector data). */
enum cxr_conf_for_processing {
    CXR_CONF_FOR_PROCESSING_REJECT = 0, /* not analysed, reason given */
    CXR_CONF_FOR_PROCESSING_ANALYSE = 1 /* analysed, with a warning */
};

/* What to do when the patient's age is outside the model's intended range. */
enum cxr_conf_age_policy {
    CXR_CONF_AGE_REJECT = 0, /* not analysed, reason given */
    CXR_CONF_AGE_WARN = 1,   /* analysed; the SR and output carry a warning */
    CXR_CONF_AGE_IGNORE = 2  /* analysed silently */
};

/* A list of up to CXR_CONF_MAX_LIST short tokens (e.g. "CR", "DX"). */
struct cxr_conf_list {
    uint32_t count;
    char items[CXR_CONF_MAX_LIST][64];
};

struct cxr_conf_model {
    char *path; /* model file (.safetensors); relative paths resolve against the config file's
                   folder */
    enum cxr_conf_backend backend;
    enum cxr_conf_precision precision;
    int32_t threads;    /* 0 = number of online CPUs */
    int32_t batch_size; /* images per forward pass, 1..256 */
};

struct cxr_conf_gate {
    struct cxr_conf_list modalities;     /* default "CR DX" */
    bool allow_secondary_capture;        /* admit SC images of modality CR/DX/OT */
    struct cxr_conf_list body_parts;     /* default "CHEST"; upper-case compare */
    bool allow_missing_body_part;        /* absent BodyPartExamined passes */
    struct cxr_conf_list view_positions; /* default "PA AP" */
    bool allow_missing_view_position;    /* absent ViewPosition passes */
    enum cxr_conf_for_processing for_processing;
    int32_t min_rows, max_rows; /* image size limits checked before any allocation */
    int32_t min_cols, max_cols;
    enum cxr_conf_age_policy age_policy;
};

struct cxr_conf_sr {
    char *output_dir;          /* where `score` and the node write SR files; "" = none */
    char *manufacturer;        /* (0008,0070) and device observer manufacturer */
    char *series_description;  /* (0008,103E) of the SR series */
    int32_t series_number;     /* (0020,0011) of the SR series */
    char *device_observer_uid; /* "" = derived from the host and product */
    char *institution_name;    /* "" = copied from the source image */
    enum { CXR_CONF_SR_COMPREHENSIVE = 0, CXR_CONF_SR_ENHANCED = 1 } sop_class;
    bool report_not_analysed; /* an SR for a study with no analysed image */
};

struct cxr_conf_priority {
    /* Probability thresholds; a negative value means "use the model's calibrated value". */
    double urgent_threshold;   /* p >= this: URGENT */
    double priority_threshold; /* p >= this: PRIORITY (the operating threshold by default) */
    char urgent_name[32];      /* level names shown in worklists and SRs */
    char priority_name[32];
    char routine_name[32];
    char not_analysed_name[32];
    int32_t max_wait_minutes; /* a ROUTINE study waiting longer is escalated; 0 = never */
};

struct cxr_conf_log {
    char level[16]; /* error|warn|info|debug */
    bool allow_phi; /* patient names/IDs may appear in logs */
};

/* The DICOM node (`cxr-triage serve`): its AE, spool, workers, retries. */
struct cxr_conf_node {
    char *ae_title;     /* our AE title (1..16 characters) */
    char *bind_address; /* address the DICOM port listens on */
    int32_t port;
    int32_t max_associations;      /* simultaneous associations */
    int32_t max_pdu;               /* bytes */
    int32_t acse_timeout_s;        /* association negotiation */
    int32_t dimse_timeout_s;       /* one DIMSE message */
    int32_t connect_timeout_s;     /* outgoing associations (SR delivery) */
    bool check_called_ae;          /* refuse associations addressed to another AE title */
    bool tls;                      /* DICOM TLS (BCP 195) on the listening port */
    char *tls_certificate;         /* PEM; also the client certificate for TLS destinations */
    char *tls_private_key;         /* PEM, unencrypted */
    char *tls_ca_certificates;     /* PEM bundle to verify peers; "" = no verification */
    bool tls_verify_peer;          /* require a client certificate signed by the CA */
    char *spool_dir;               /* received instances, SRs and the job store */
    int32_t disk_min_free_mb;      /* below this much free space, associations are refused */
    int32_t spool_retention_hours; /* keep processed instance files this long */
    int32_t spool_inline_max_kb;   /* instances up to this size live in the job store */
    int32_t worker_threads;        /* scoring workers; 0 = automatic */
    int32_t batch_wait_ms;         /* wait this long for a batch to fill */
    int32_t study_stable_seconds;  /* a study is complete after this quiet time */
    int32_t retry_base_seconds;    /* first SR delivery retry delay (doubles each time) */
    int32_t retry_cap_seconds;     /* longest delay between retries */
    int32_t retry_max_attempts;    /* then the delivery is dead-lettered */
};

/* The node's HTTP endpoint (worklist, study results, health, metrics). */
struct cxr_conf_http {
    bool enabled;
    char *bind_address;
    int32_t port;           /* 0 = any free port */
    char *allowed_hosts;    /* host names the Host header may give (space-separated) */
    bool show_patient_id;   /* Patient ID in the worklist (PHI) */
    int32_t worklist_hours; /* studies whose last image is older leave the worklist; 0 = keep */
};

/* Which studies the Orthanc plugin writes its metadata (and labels) on. */
enum cxr_conf_plugin_metadata {
    CXR_CONF_PLUGIN_METADATA_GATED = 0, /* studies with an image the gate looked at */
    CXR_CONF_PLUGIN_METADATA_ALL = 1,   /* every study the plugin scored */
    CXR_CONF_PLUGIN_METADATA_NONE = 2   /* none */
};

/* The Orthanc plugin (libcxr_triage_orthanc.so): its durable queue, SR and
 * study forwarding through Orthanc, and its worklist. */
struct cxr_conf_plugin {
    bool required;       /* a broken configuration or model stops Orthanc's start-up */
    char *state_dir;     /* the plugin's queue (SQLite); "" = <Orthanc IndexDirectory>/cxr-triage */
    int32_t queue_limit; /* studies waiting or queued; beyond, Orthanc's change log holds them */
    char *forward_sr;    /* "modality:NAME peer:NAME ..." that each SR is sent to */
    char *forward_study; /* the same, for the whole study once its SR is stored */
    int32_t retry_seconds;      /* first retry of a failed forward (doubles, at most 10 min) */
    int32_t retry_max_attempts; /* then the forward is dead (listed, retryable over REST) */
    bool show_patient_id;       /* Patient ID in the plugin's worklist and page (PHI) */
    int32_t worklist_hours;     /* studies older than this leave the worklist; 0 = keep */
    enum cxr_conf_plugin_metadata metadata; /* which studies get metadata and labels */
};

/* One <allow> element: a peer allowed to associate (empty field = any). */
struct cxr_conf_allow {
    char *ae_title; /* calling AE title */
    char *host;     /* IP address or host name */
};

/* One <destination> element: where the node sends its SRs (C-STORE). */
struct cxr_conf_destination {
    char *name;     /* "" = derived from AE title, host and port */
    char *ae_title; /* called AE title */
    char *host;
    int32_t port;
    char *calling_ae_title; /* "" = node/ae-title */
    bool tls;
};

#define CXR_CONF_MAX_ALLOW        64 /* <allow> elements */
#define CXR_CONF_MAX_DESTINATIONS 16 /* <destination> elements */

struct cxr_conf {
    char *source_path; /* absolute path of the file it was loaded from ("" for defaults and memory
                          documents) */
    struct cxr_conf_model model;
    struct cxr_conf_gate gate;
    struct cxr_conf_sr sr;
    struct cxr_conf_priority priority;
    struct cxr_conf_log log;
    struct cxr_conf_node node;
    struct cxr_conf_http http;
    struct cxr_conf_plugin plugin;
    /* Repeated sections: `count` elements are used (0 by default). */
    uint32_t allow_count;
    struct cxr_conf_allow allow[CXR_CONF_MAX_ALLOW];
    uint32_t destination_count;
    struct cxr_conf_destination destinations[CXR_CONF_MAX_DESTINATIONS];
};

/* Loads and validates `path`. On success *out is a new config (caller frees).
 * On failure *out == NULL and `err` (CXR_ERRLEN bytes, may be NULL) holds
 * "file:line: key 'model/threads': expected an integer 0..256, got 'x'".
 * The parser never touches the network and never expands entities. */
enum cxr_status cxr_conf_load(const char *path, struct cxr_conf **out, char *err);

/* The same from an in-memory document; `name` is used in messages. */
enum cxr_status cxr_conf_load_memory(const char *xml, size_t len, const char *name,
                                     struct cxr_conf **out, char *err);

/* A config holding every key's default (what an empty <cxr-triage/> gives). */
enum cxr_status cxr_conf_defaults(struct cxr_conf **out);

void cxr_conf_free(struct cxr_conf *conf);

/* Writes the effective configuration as a complete XML document (every key,
 * defaults filled in) to `fp`. */
enum cxr_status cxr_conf_print(const struct cxr_conf *conf, void *fp /* FILE* */);

/* The XSD generated from the key table (static string, do not free). */
const char *cxr_conf_schema_xsd(void);

/* The Markdown table of every key generated from the key table; caller frees. */
char *cxr_conf_doc_markdown(void);

/* Looks a key up by "section/key"; returns its value as text in `buf`, in
 * the form the loader accepts ("model" for a threshold taken from the model,
 * list items joined by one space). Returns CXR_ERR_NOT_FOUND for an unknown
 * key, CXR_ERR_LIMIT when buflen is too small (the text is truncated). A key
 * of a repeated section (destination/host) gives the first element's value,
 * or the key's default when there is none. */
enum cxr_status cxr_conf_get_text(const struct cxr_conf *conf, const char *key, char *buf,
                                  size_t buflen);

/* The keys, in table order: cxr_conf_key_path(i) is "section/key" for
 * i < cxr_conf_key_count(), NULL past the end (static strings). */
size_t cxr_conf_key_count(void);
const char *cxr_conf_key_path(size_t i);

/* True when every key has the same value in a and b (source_path is not
 * compared). Two NULLs are equal. */
bool cxr_conf_equal(const struct cxr_conf *a, const struct cxr_conf *b);

/* Applies the log section to the process's logger: log/level (unless the
 * CXR_LOG_LEVEL environment variable is set, which wins) and log/allow-phi.
 * Every door calls it after loading a configuration and after a reload. */
void cxr_conf_log_apply(const struct cxr_conf *conf);

/* Calls fn(key, ctx) for each key whose value differs between a (running)
 * and b (reloaded) and that the node reads only when it starts (the key
 * table's restart flag: AE title, ports, TLS, allowed peers, spool folder,
 * workers, HTTP endpoint), in table order; a repeated section such as
 * "allow" is named once, as a whole. Neither may be NULL. */
void cxr_conf_restart_changes(const struct cxr_conf *a, const struct cxr_conf *b,
                              void (*fn)(const char *key, void *ctx), void *ctx);

/* Resolves a path from the config: absolute and empty paths are returned as
 * they are; a relative one is joined to the folder of conf->source_path
 * (cxr_conf_load stores the file's absolute path there). With no folder
 * (defaults, memory documents) the path stays relative to the working
 * directory. Caller frees; NULL for a NULL path or when out of memory. */
char *cxr_conf_resolve_path(const struct cxr_conf *conf, const char *path);

#ifdef __cplusplus
}
#endif
#endif
