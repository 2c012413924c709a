/* conf_keys.c — THE key table: every configuration key, once.
 *
 * Add a key here (and its field in cxr/conf.h); the loader, the printer, the
 * XSD and the documentation table follow. Then regenerate the committed
 * artefacts (tests fail until they agree):
 *     cxr-triage config schema   > conf/cxr-triage.xsd
 *     cxr-triage config defaults > conf/cxr-triage.xml
 *     cxr-triage config doc      → between the markers in docs/configuration.md
 *
 * The row macros check the field's C type at compile time (a mismatch is a
 * "distinct pointer types" or negative-array-size diagnostic, fatal under
 * -Werror), so a row cannot store an int into a char *.
 */
#include <string.h>

#include "conf_internal.h"

#define FSIZE(S, f)        sizeof(((S *)0)->f)
/* 0, but fails to compile (warning → -Werror) unless &S.f has type T *. */
#define TYPECHECK(S, f, T) (0 * sizeof(&((S *)0)->f == (T *)0))
/* 0, but fails to compile unless S.f is a char array. */
#define ARRCHECK(S, f)     (0 * sizeof(&((S *)0)->f == (char(*)[FSIZE(S, f)])0))
/* 0, but fails to compile unless sizeof S.f == n. */
#define SIZECHECK(S, f, n) (0 * sizeof(char[FSIZE(S, f) == (n) ? 1 : -1]))

/* Rows between "#define KEY_RESTART true" and its undo are keys the node reads
 * only when it starts: a SIGHUP reload logs that they changed and that they
 * take effect at the next start (cxr_conf_restart_changes); the generated docs
 * say so too. */
#define KEY_RESTART false

#define K_INT(S, f, nm, lo, hi, df, ds)                                                      \
    {                                                                                        \
        .name = nm, .type = CONF_T_INT, .store = CONF_S_I32,                                 \
        .offset = offsetof(S, f) + TYPECHECK(S, f, int32_t), .size = FSIZE(S, f), .min = lo, \
        .max = hi, .def = df, .desc = ds, .restart = KEY_RESTART                             \
    }
#define K_BOOL(S, f, nm, df, ds)                                                                   \
    {                                                                                              \
        .name = nm, .type = CONF_T_BOOL, .store = CONF_S_BOOL,                                     \
        .offset = offsetof(S, f) + TYPECHECK(S, f, bool), .size = FSIZE(S, f), .min = 0, .max = 1, \
        .def = df, .desc = ds, .restart = KEY_RESTART                                              \
    }
#define K_STR(S, f, nm, ty, lo, hi, df, ds)                                                 \
    {                                                                                       \
        .name = nm, .type = ty, .store = CONF_S_STRPTR,                                     \
        .offset = offsetof(S, f) + TYPECHECK(S, f, char *), .size = FSIZE(S, f), .min = lo, \
        .max = hi, .def = df, .desc = ds, .restart = KEY_RESTART                            \
    }
#define K_CHARS(S, f, nm, ty, lo, hi, df, ds)                                                     \
    {                                                                                             \
        .name = nm, .type = ty, .store = CONF_S_CHARS, .offset = offsetof(S, f) + ARRCHECK(S, f), \
        .size = FSIZE(S, f), .min = lo, .max = hi, .def = df, .desc = ds, .restart = KEY_RESTART  \
    }
#define K_ENUM(S, f, nm, df, ds, ...)                                                 \
    {                                                                                 \
        .name = nm, .type = CONF_T_ENUM, .store = CONF_S_ENUM,                        \
        .offset = offsetof(S, f) + SIZECHECK(S, f, sizeof(int)), .size = FSIZE(S, f), \
        .words = {__VA_ARGS__, NULL}, .def = df, .desc = ds, .restart = KEY_RESTART   \
    }
/* An enum whose word itself is stored (char[]), e.g. log/level. */
#define K_WORD(S, f, nm, df, ds, ...)                                               \
    {                                                                               \
        .name = nm, .type = CONF_T_ENUM, .store = CONF_S_CHARS,                     \
        .offset = offsetof(S, f) + ARRCHECK(S, f), .size = FSIZE(S, f),             \
        .words = {__VA_ARGS__, NULL}, .def = df, .desc = ds, .restart = KEY_RESTART \
    }
#define K_LIST(S, f, nm, lo, hi, df, ds)                                                       \
    {                                                                                          \
        .name = nm, .type = CONF_T_LIST, .store = CONF_S_LIST,                                 \
        .offset = offsetof(S, f) + TYPECHECK(S, f, struct cxr_conf_list), .size = FSIZE(S, f), \
        .min = lo, .max = hi, .def = df, .desc = ds, .restart = KEY_RESTART                    \
    }
#define K_THRESHOLD(S, f, nm, df, ds)                                                      \
    {                                                                                      \
        .name = nm, .type = CONF_T_THRESHOLD, .store = CONF_S_DOUBLE,                      \
        .offset = offsetof(S, f) + TYPECHECK(S, f, double), .size = FSIZE(S, f), .min = 0, \
        .max = 1, .def = df, .desc = ds, .restart = KEY_RESTART                            \
    }

#define COUNT(a)    (sizeof(a) / sizeof((a)[0]))
#define PATH_MAXLEN 4095

#define M struct cxr_conf_model
static const struct conf_key model_keys[] = {
    K_STR(M, path, "path", CONF_T_PATH, 1, PATH_MAXLEN, "../models/cxr-default.safetensors",
          "Model file (.safetensors); a relative path resolves against the folder of this "
          "configuration file."),
    K_ENUM(M, backend, "backend", "auto",
           "Compute backend: auto uses CUDA when a GPU is usable, else the CPU (oneDNN).", "auto",
           "cpu", "cuda"),
    K_ENUM(M, precision, "precision", "auto",
           "Arithmetic precision: auto is fp32 on the CPU (the same score on every host; "
           "thresholds are calibrated in fp32); bf16 needs AVX512-BF16 or AMX; fp16 is for the "
           "GPU only.",
           "auto", "fp32", "bf16", "fp16"),
    K_INT(M, threads, "threads", 0, 256, "0",
          "CPU threads for inference; 0 = the number of online CPUs."),
    K_INT(M, batch_size, "batch-size", 1, 256, "8", "Images per forward pass."),
};
#undef M

#define G struct cxr_conf_gate
static const struct conf_key gate_keys[] = {
    K_LIST(G, modalities, "modalities", 1, CXR_CONF_MAX_LIST, "CR DX",
           "Modality (0008,0060) values that are analysed."),
    K_BOOL(G, allow_secondary_capture, "allow-secondary-capture", "false",
           "Also analyse Secondary Capture images whose modality is CR, DX or OT."),
    K_LIST(G, body_parts, "body-parts", 1, CXR_CONF_MAX_LIST, "CHEST",
           "Accepted Body Part Examined (0018,0015) values, compared in upper case."),
    K_BOOL(G, allow_missing_body_part, "allow-missing-body-part", "true",
           "An image without Body Part Examined passes the body-part check."),
    K_LIST(G, view_positions, "view-positions", 1, CXR_CONF_MAX_LIST, "PA AP",
           "Accepted View Position (0018,5101) values (frontal views)."),
    K_BOOL(G, allow_missing_view_position, "allow-missing-view-position", "true",
           "An image without View Position passes the view check."),
    K_ENUM(G, for_processing, "for-processing", "reject",
           "DX For Processing images (raw detector data): reject = not analysed, analyse = "
           "analysed with a warning.",
           "reject", "analyse"),
    K_INT(G, min_rows, "min-rows", 1, 65535, "256",
          "Smallest accepted image height (Rows), checked before pixel data is decoded."),
    K_INT(G, max_rows, "max-rows", 1, 65535, "8192",
          "Largest accepted image height (Rows), checked before pixel data is decoded; with "
          "max-columns it also bounds how far a deflated data set may expand while it is read."),
    K_INT(G, min_cols, "min-columns", 1, 65535, "256",
          "Smallest accepted image width (Columns), checked before pixel data is decoded."),
    K_INT(G, max_cols, "max-columns", 1, 65535, "8192",
          "Largest accepted image width (Columns), checked before pixel data is decoded."),
    K_ENUM(G, age_policy, "age-policy", "reject",
           "Patient age outside the model's intended population, or unknown, when the model "
           "states one: reject = not analysed (with the reason), warn = analysed with a warning "
           "shown on the worklist and in the SR (only for a site that validated the model on its "
           "own patients), ignore = analysed silently.",
           "reject", "warn", "ignore"),
};
#undef G

#define S struct cxr_conf_sr
static const struct conf_key sr_keys[] = {
    K_STR(S, output_dir, "output-dir", CONF_T_PATH, 0, PATH_MAXLEN, "",
          "Folder where score and the node write SR files; empty = no files. A relative path "
          "resolves against the folder of this configuration file."),
    K_STR(S, manufacturer, "manufacturer", CONF_T_LO, 1, 64, "cxr-triage project",
          "Manufacturer (0008,0070) of the SR and of its device observer."),
    K_STR(S, series_description, "series-description", CONF_T_LO, 0, 64, "CXR triage AI result",
          "Series Description (0008,103E) of the SR series."),
    K_INT(S, series_number, "series-number", 1, INT32_MAX, "9901",
          "Series Number (0020,0011) of the SR series."),
    K_STR(S, device_observer_uid, "device-observer-uid", CONF_T_UID, 0, 64, "",
          "Device Observer UID (121012) in the SR; empty = derived from the host and product."),
    K_STR(S, institution_name, "institution-name", CONF_T_LO, 0, 64, "",
          "Institution Name (0008,0080) of the SR; empty = copied from the source image."),
    K_ENUM(S, sop_class, "sop-class", "comprehensive",
           "SR SOP class: comprehensive = Comprehensive SR (1.2.840.10008.5.1.4.1.1.88.33), "
           "enhanced = Enhanced SR (1.2.840.10008.5.1.4.1.1.88.22).",
           "comprehensive", "enhanced"),
    K_BOOL(S, report_not_analysed, "report-not-analysed", "true",
           "Make an SR for a study in which no image could be analysed, listing each image as "
           "not analysed with its reason; false = such a study gets no SR (it stays on the "
           "worklist). Images not analysed in a study with an analysed one are always listed."),
};
#undef S

#define P struct cxr_conf_priority
static const struct conf_key priority_keys[] = {
    K_THRESHOLD(P, urgent_threshold, "urgent-threshold", "model",
                "Probability at or above which a study is URGENT; model = the urgent threshold "
                "calibrated in the model file."),
    K_THRESHOLD(P, priority_threshold, "priority-threshold", "model",
                "Probability at or above which a study is PRIORITY; model = the model's "
                "calibrated operating threshold."),
    K_CHARS(P, urgent_name, "urgent-name", CONF_T_NAME, 1, 31, "URGENT",
            "Name of the highest level, shown in worklists and SRs."),
    K_CHARS(P, priority_name, "priority-name", CONF_T_NAME, 1, 31, "PRIORITY",
            "Name of the level for a positive finding below the urgent threshold."),
    K_CHARS(P, routine_name, "routine-name", CONF_T_NAME, 1, 31, "ROUTINE",
            "Name of the level for a negative finding."),
    K_CHARS(P, not_analysed_name, "not-analysed-name", CONF_T_NAME, 1, 31, "NOT_ANALYSED",
            "Name of the level for a study with no analysable image."),
    K_INT(P, max_wait_minutes, "max-wait-minutes", 0, 10080, "60",
          "A ROUTINE study waiting longer than this many minutes moves up to PRIORITY in the "
          "worklist; 0 = never."),
};
#undef P

#define L struct cxr_conf_log
static const struct conf_key log_keys[] = {
    K_WORD(L, level, "level", "info",
           "Most verbose level written to the log; the CXR_LOG_LEVEL environment variable "
           "overrides it.",
           "error", "warn", "info", "debug"),
    K_BOOL(L, allow_phi, "allow-phi", "false",
           "Allow patient names and IDs in log lines (PHI); keep false unless the logs are "
           "protected like the PACS itself."),
};
#undef L

#define N struct cxr_conf_node
static const struct conf_key node_keys[] = {
#undef KEY_RESTART
#define KEY_RESTART true
    K_STR(N, ae_title, "ae-title", CONF_T_LO, 1, 16, "CXRTRIAGE",
          "The node's AE title: what modalities and PACS call it, and the calling AE title of its "
          "SR deliveries unless a destination says otherwise."),
    K_STR(N, bind_address, "bind-address", CONF_T_TEXT, 1, 255, "127.0.0.1",
          "Address the DICOM port listens on; 0.0.0.0 = every interface."),
    K_INT(N, port, "port", 1, 65535, "11112", "DICOM port (TCP)."),
    K_INT(N, max_associations, "max-associations", 1, 1024, "16",
          "Simultaneous incoming associations; more are refused (transient) until one ends."),
    K_INT(N, max_pdu, "max-pdu", 4096, 131072, "65536", "Largest PDU received, in bytes."),
#undef KEY_RESTART
#define KEY_RESTART false
    K_INT(N, acse_timeout_s, "acse-timeout", 1, 3600, "30",
          "Seconds to wait for association negotiation messages."),
    K_INT(N, dimse_timeout_s, "dimse-timeout", 1, 3600, "60",
          "Seconds to wait for a DIMSE message (in and out)."),
    K_INT(N, connect_timeout_s, "connect-timeout", 1, 600, "10",
          "Seconds to wait for a destination to accept a connection."),
#undef KEY_RESTART
#define KEY_RESTART true
    K_BOOL(N, check_called_ae, "check-called-ae", "true",
           "Refuse associations whose called AE title is not ae-title."),
    K_BOOL(N, tls, "tls", "false",
           "DICOM TLS (BCP 195) on the DICOM port; needs tls-certificate and tls-private-key."),
    K_STR(N, tls_certificate, "tls-certificate", CONF_T_PATH, 0, PATH_MAXLEN, "",
          "The node's certificate (PEM), also presented to TLS destinations."),
    K_STR(N, tls_private_key, "tls-private-key", CONF_T_PATH, 0, PATH_MAXLEN, "",
          "The private key of tls-certificate (PEM, unencrypted; readable by the node only)."),
    K_STR(N, tls_ca_certificates, "tls-ca-certificates", CONF_T_PATH, 0, PATH_MAXLEN, "",
          "CA certificates (PEM) that peers' and destinations' certificates are verified "
          "against; empty = no verification."),
    K_BOOL(N, tls_verify_peer, "tls-verify-peer", "false",
           "Require a client certificate signed by tls-ca-certificates from every peer."),
    K_STR(N, spool_dir, "spool-dir", CONF_T_PATH, 1, PATH_MAXLEN, "/var/lib/cxr-triage/spool",
          "Folder for received instances, SRs and the job store (jobs.sqlite); a local "
          "filesystem, owned by the node's user."),
#undef KEY_RESTART
#define KEY_RESTART false
    K_INT(N, disk_min_free_mb, "disk-min-free-mb", 0, 100000000, "1024",
          "New associations are refused while the spool filesystem has less free space (MB)."),
    K_INT(N, spool_retention_hours, "spool-retention-hours", 0, 87600, "24",
          "Hours a processed instance file stays in the spool (results stay in the job store)."),
    K_INT(N, spool_inline_max_kb, "spool-inline-max-kb", 0, 65536, "1024",
          "Received instances up to this size (KiB) are kept inside the job store, committed with "
          "their job in one disk sync, instead of as spool files (three syncs); 0 = always files."),
#undef KEY_RESTART
#define KEY_RESTART true
    K_INT(
        N, worker_threads, "worker-threads", 0, 64, "0",
        "Scoring workers (decode and preprocess in parallel); 0 = automatic: one per CPU, 2 to 8."),
#undef KEY_RESTART
#define KEY_RESTART false
    K_INT(N, batch_wait_ms, "batch-wait-ms", 0, 10000, "20",
          "Milliseconds a worker waits for more images to fill a batch once it has one."),
    K_INT(N, study_stable_seconds, "study-stable-seconds", 0, 86400, "5",
          "A study is complete when no instance of it arrived for this many seconds; then its SR "
          "is made."),
    K_INT(N, retry_base_seconds, "retry-base-seconds", 1, 86400, "10",
          "Delay before the first retry of a failed SR delivery; it doubles on each failure "
          "(with jitter)."),
    K_INT(N, retry_cap_seconds, "retry-cap-seconds", 1, 604800, "600",
          "Longest delay between two delivery attempts."),
    K_INT(N, retry_max_attempts, "retry-max-attempts", 1, 1000, "12",
          "Delivery attempts before an SR goes to the dead-letter list (cxr-triage queue)."),
};
#undef N

#define H struct cxr_conf_http
static const struct conf_key http_keys[] = {
#undef KEY_RESTART
#define KEY_RESTART true
    K_BOOL(H, enabled, "enabled", "true",
           "Serve the worklist, study results, health and metrics over HTTP."),
    K_STR(H, bind_address, "bind-address", CONF_T_TEXT, 1, 255, "127.0.0.1",
          "Address of the HTTP endpoint (an IP address); it has no authentication, so keep it "
          "on loopback or behind a proxy."),
    K_INT(H, port, "port", 0, 65535, "8090", "HTTP port; 0 = any free port."),
    K_STR(H, allowed_hosts, "allowed-hosts", CONF_T_TEXT, 0, 1024, "",
          "Host names (space-separated) by which browsers reach the HTTP endpoint, e.g. the "
          "reverse proxy's; a request whose Host header names anything else is refused (421), "
          "so that a web page cannot read the worklist through DNS rebinding. IP addresses and "
          "localhost are always accepted."),
#undef KEY_RESTART
#define KEY_RESTART false
    K_BOOL(H, show_patient_id, "show-patient-id", "false",
           "Include the Patient ID (PHI) in the worklist and study results."),
    K_INT(H, worklist_hours, "worklist-hours", 0, 87600, "72",
          "Studies whose last image arrived longer ago leave the worklist; 0 = keep all."),
};
#undef H

#define PL struct cxr_conf_plugin
static const struct conf_key plugin_keys[] = {
    K_BOOL(PL, required, "required", "false",
           "Refuse to load (Orthanc does not start) when this configuration or the model is "
           "broken; false = Orthanc starts, the plugin scores nothing and says why on "
           "/cxr-triage/status."),
    K_STR(PL, state_dir, "state-dir", CONF_T_PATH, 0, PATH_MAXLEN, "",
          "Folder of the plugin's queue and results (queue.sqlite); empty = a cxr-triage folder "
          "in Orthanc's IndexDirectory."),
    K_INT(PL, queue_limit, "queue-limit", 1, 10000000, "10000",
          "Studies waiting or queued for scoring; beyond this the plugin stops reading Orthanc's "
          "change log until there is room (nothing is lost)."),
    K_STR(PL, forward_sr, "forward-sr", CONF_T_TEXT, 0, 1023, "",
          "Where each SR is sent once stored: Orthanc modalities and peers as "
          "modality:NAME or peer:NAME, separated by spaces; empty = nowhere."),
    K_STR(PL, forward_study, "forward-study", CONF_T_TEXT, 0, 1023, "",
          "Where the whole study (with its SR) is sent once scored, as in forward-sr."),
    K_INT(PL, retry_seconds, "retry-seconds", 1, 86400, "10",
          "Delay before the first retry of a failed forward; it doubles on each failure (with "
          "jitter), at most 10 minutes."),
    K_INT(PL, retry_max_attempts, "retry-max-attempts", 1, 1000, "12",
          "Forward attempts before it is marked dead (listed on /cxr-triage/forwards, "
          "retryable)."),
    K_BOOL(PL, show_patient_id, "show-patient-id", "false",
           "Include the Patient ID (PHI) in the plugin's worklist, study results and page."),
    K_INT(PL, worklist_hours, "worklist-hours", 0, 87600, "72",
          "Studies first seen longer ago leave the plugin's worklist; 0 = keep all."),
    K_ENUM(PL, metadata, "metadata", "gated",
           "Which studies get the plugin's metadata (CxrTriage*, and labels on Orthanc >= 1.12): "
           "gated = studies with an image the gate looked at (a series whose modality is in "
           "gate/modalities, or CR/DX/OT with gate/allow-secondary-capture); all = every study "
           "the plugin scored, MR and CT included; none = no study.",
           "gated", "all", "none"),
};
#undef PL

#define A struct cxr_conf_allow
static const struct conf_key allow_keys[] = {
#undef KEY_RESTART
#define KEY_RESTART true
    K_STR(A, ae_title, "ae-title", CONF_T_LO, 0, 16, "",
          "Calling AE title allowed to associate; empty = any AE title."),
    K_STR(A, host, "host", CONF_T_TEXT, 0, 255, "",
          "Peer address (IP or host name) allowed to associate; empty = any host."),
#undef KEY_RESTART
#define KEY_RESTART false
};
#undef A

#define D struct cxr_conf_destination
static const struct conf_key destination_keys[] = {
    K_STR(D, name, "name", CONF_T_TEXT, 0, 63, "",
          "Name of the destination in logs and in cxr-triage queue; empty = AE@host:port."),
    K_STR(D, ae_title, "ae-title", CONF_T_LO, 1, 16, "PACS", "Called AE title of the destination."),
    K_STR(D, host, "host", CONF_T_TEXT, 1, 255, "127.0.0.1", "Host name or IP address."),
    K_INT(D, port, "port", 1, 65535, "104", "DICOM port of the destination."),
    K_STR(D, calling_ae_title, "calling-ae-title", CONF_T_LO, 0, 16, "",
          "Calling AE title used towards this destination; empty = node/ae-title."),
    K_BOOL(D, tls, "tls", "false",
           "Use DICOM TLS, with node/tls-certificate, tls-private-key and tls-ca-certificates."),
};
#undef D

#define SECTION(nm, field, ds, tbl)                                                      \
    {                                                                                    \
        .name = nm, .offset = offsetof(struct cxr_conf, field), .desc = ds, .keys = tbl, \
        .nkeys = COUNT(tbl)                                                              \
    }
/* A section that may appear up to COUNT(array) times, into array[] and count. */
#define REPEATED(nm, array, count, ds, tbl)                                                \
    {                                                                                      \
        .name = nm, .offset = offsetof(struct cxr_conf, array), .desc = ds, .keys = tbl,   \
        .nkeys = COUNT(tbl), .max_count = COUNT(((struct cxr_conf *)0)->array),            \
        .elem_size = sizeof(((struct cxr_conf *)0)->array[0]),                             \
        .count_offset =                                                                    \
            offsetof(struct cxr_conf, count) + TYPECHECK(struct cxr_conf, count, uint32_t) \
    }

const struct conf_section conf_sections[] = {
    SECTION("model", model, "The neural network: model file, backend, precision, batching.",
            model_keys),
    SECTION("gate", gate, "Which images are analysed; the others are reported as not analysed.",
            gate_keys),
    SECTION("sr", sr, "The DICOM Structured Report (TID 1500) written for each study.", sr_keys),
    SECTION("priority", priority, "How a probability becomes a triage priority.", priority_keys),
    SECTION("log", log, "Logging.", log_keys),
    SECTION("node", node,
            "The DICOM node (cxr-triage serve): AE, port, TLS, spool, workers, "
            "retries.",
            node_keys),
    SECTION("http", http, "The node's HTTP endpoint: worklist, study results, health, metrics.",
            http_keys),
    SECTION("plugin", plugin,
            "The Orthanc plugin: its queue, forwarding of SRs and studies "
            "through Orthanc, its worklist.",
            plugin_keys),
    REPEATED("allow", allow, allow_count,
             "A peer allowed to associate with the node (repeat the element for each); without "
             "any allow element every peer is allowed.",
             allow_keys),
    REPEATED("destination", destinations, destination_count,
             "A DICOM destination of the SRs (repeat the element for each); without any the SRs "
             "stay in the spool.",
             destination_keys),
};
const size_t conf_nsections = COUNT(conf_sections);

const struct conf_order_rule conf_order_rules[] = {
    {"gate/min-rows", "gate/max-rows"},
    {"gate/min-columns", "gate/max-columns"},
    {"priority/priority-threshold", "priority/urgent-threshold"},
};
const size_t conf_norder_rules = COUNT(conf_order_rules);

const struct conf_section *conf_section_find(const char *name)
{
    for (size_t i = 0; i < conf_nsections; i++)
        if (!strcmp(conf_sections[i].name, name))
            return &conf_sections[i];
    return NULL;
}

const struct conf_key *conf_section_key(const struct conf_section *sec, const char *name)
{
    for (size_t i = 0; i < sec->nkeys; i++)
        if (!strcmp(sec->keys[i].name, name))
            return &sec->keys[i];
    return NULL;
}

const struct conf_key *conf_key_find(const char *path, const struct conf_section **sec_out)
{
    const char *slash = path ? strchr(path, '/') : NULL;
    if (!slash)
        return NULL;
    char name[64];
    size_t n = (size_t)(slash - path);
    if (n >= sizeof name)
        return NULL;
    memcpy(name, path, n);
    name[n] = '\0';
    const struct conf_section *sec = conf_section_find(name);
    const struct conf_key *key = sec ? conf_section_key(sec, slash + 1) : NULL;
    if (key && sec_out)
        *sec_out = sec;
    return key;
}

size_t conf_key_total(void)
{
    size_t n = 0;
    for (size_t i = 0; i < conf_nsections; i++)
        n += conf_sections[i].nkeys;
    return n;
}

size_t conf_key_index(const struct conf_section *sec, const struct conf_key *key)
{
    size_t n = 0;
    for (const struct conf_section *s = conf_sections; s != sec; s++)
        n += s->nkeys;
    return n + (size_t)(key - sec->keys);
}

void *conf_section_base(const struct cxr_conf *conf, const struct conf_section *sec)
{
    return (char *)conf + sec->offset;
}

void *conf_section_elem(const struct cxr_conf *conf, const struct conf_section *sec, size_t i)
{
    return (char *)conf + sec->offset + i * sec->elem_size;
}

uint32_t *conf_section_count_ptr(struct cxr_conf *conf, const struct conf_section *sec)
{
    return sec->max_count ? (uint32_t *)((char *)conf + sec->count_offset) : NULL;
}

size_t conf_section_count(const struct cxr_conf *conf, const struct conf_section *sec)
{
    if (!sec->max_count)
        return 1;
    uint32_t n;
    memcpy(&n, (const char *)conf + sec->count_offset, sizeof n);
    return n < sec->max_count ? n : sec->max_count;
}
