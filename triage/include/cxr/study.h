/* cxr/study.h — what both doors (the node and the Orthanc plugin) keep of a
 * received image and of a study: the rows their stores hand to the shared
 * worklist code (cxr/worklist.h). Plain data, owned by whoever holds them.
 */
#ifndef CXR_STUDY_H
#define CXR_STUDY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_TRIAGE_PATHLEN 512

/* The life of one received instance. */
enum cxr_triage_instance_state {
    CXR_TRIAGE_INSTANCE_RECEIVED = 0,    /* durably spooled, not scored yet (a job) */
    CXR_TRIAGE_INSTANCE_ANALYSED = 1,    /* scored */
    CXR_TRIAGE_INSTANCE_NOT_ANALYSED = 2 /* processed, not scored: `reason` says why */
};

/* One instance row. Fields after `received_ms` are known once processed. */
struct cxr_triage_instance_row {
    int64_t id;
    char sop_instance_uid[CXR_DICOM_UID_LEN];
    char sop_class_uid[CXR_DICOM_UID_LEN];
    char transfer_syntax_uid[CXR_DICOM_UID_LEN];
    char path[CXR_TRIAGE_PATHLEN]; /* spool file, relative to the spool folder; "" = removed */
    bool in_store;                 /* the bytes are in the store (instance_data), no file at path */
    uint64_t size;
    char calling_ae[17];
    char peer_host[64];
    int64_t received_ms;
    int32_t attempts; /* times a worker took it (crash-loop guard) */
    enum cxr_triage_instance_state state;
    char study_instance_uid[CXR_DICOM_UID_LEN];
    char series_instance_uid[CXR_DICOM_UID_LEN];
    double probability; /* NaN unless analysed */
    bool finding_present;
    int32_t priority; /* enum cxr_triage_priority */
    int32_t status;   /* enum cxr_status of the outcome */
    char reason[512];
    char warning[256];
    int64_t processed_ms;
    bool reported; /* taken into a study report decision */
    bool has_info; /* `info` holds the header values */
    struct cxr_dicom_info info;
};

/* One study row. */
struct cxr_triage_study_row {
    char study_instance_uid[CXR_DICOM_UID_LEN];
    char accession_number[20];
    char patient_id[68];
    char study_date[12];
    char study_description[68];
    int64_t first_received_ms;
    int64_t last_received_ms;
    int32_t priority; /* the most severe so far: never lowered */
    double score;     /* highest probability so far; NaN none */
    int32_t analysed; /* instance counts */
    int32_t not_analysed;
    int32_t unreported; /* processed, not yet in a report decision */
    int32_t sr_count;
    char last_sr_sop_instance_uid[CXR_DICOM_UID_LEN];
    char last_sr_series_instance_uid[CXR_DICOM_UID_LEN];
    int64_t last_sr_ms;
    int32_t deliveries_pending;
    int32_t deliveries_delivered;
    int32_t deliveries_dead;
    char warning[256]; /* the first image warning of the study, e.g. an
                        * age outside the model's population; "" none */
    char reason[256];  /* the first reason an image of the study was not
                        * analysed; "" none */
    int64_t read_ms;   /* when a reader marked it read (0: never); it counts
                        * as read while no image arrived after that */
};

/* Whether the study is read: marked read, and no image arrived since. */
static inline bool cxr_triage_study_is_read(const struct cxr_triage_study_row *s)
{
    return s->read_ms > 0 && s->read_ms >= s->last_received_ms;
}

/* The header values of an image as the JSON object both doors' stores keep
 * (one member per field of struct cxr_dicom_info, by its name; an unknown age
 * is left out). Never a memory image of the struct: a field added later reads
 * as its default from an older row. Returns malloc'd text (caller frees), or
 * NULL when out of memory. Any thread. */
char *cxr_triage_info_to_json(const struct cxr_dicom_info *info);

/* Reads such text into *info: members it does not know are ignored, missing
 * ones keep their defaults ("" / 0 / 1 frame / NaN age). False (and *info
 * all defaults) when the text is not a JSON object. */
bool cxr_triage_info_from_json(const char *text, struct cxr_dicom_info *info);

/* Reads the struct image that cxr-triage 0.1.0 stored instead (node job store
 * schema 1-2, plugin queue schema 1), to upgrade such stores. False when
 * `len` is not that layout's size. */
bool cxr_triage_info_from_legacy_blob(const void *blob, size_t len, struct cxr_dicom_info *info);

/* The study's patient ID and accession number for a log line,
 * " (patient ..., accession ...)", when log/allow-phi permits (the log may
 * then be PHI: protect it like the PACS); "" otherwise. Writes into buf
 * (len bytes) and returns it. */
const char *cxr_triage_study_phi(const struct cxr_triage_study_row *study, char *buf, size_t len);

/* "received", "analysed", "not_analysed" (JSON and logs). */
const char *cxr_triage_instance_state_name(enum cxr_triage_instance_state st);

#ifdef __cplusplus
}
#endif

#endif
