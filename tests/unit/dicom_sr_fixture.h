/* dicom_sr_fixture.h — the SR request the SR suites (check_dicom_sr.c,
 * check_dicom_sr_refuse.c) start from: one CR/DX study with 1..4 images,
 * every header value filled by hand. Included once per suite (static). */
#ifndef CXR_DICOM_SR_FIXTURE_H
#define CXR_DICOM_SR_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cxr/dicom.h"

#define SHA        "00c0ffee11223344556677889900aabbccddeeff0123456789abcdef01234567"
#define STUDY_UID  "1.2.826.0.1.3680043.8.498.10"
#define SRC_SERIES "1.2.826.0.1.3680043.8.498.10.1"
#define DX_CLASS   "1.2.840.10008.5.1.4.1.1.1.1"
#define CR_CLASS   "1.2.840.10008.5.1.4.1.1.1"

/* ---- building requests ------------------------------------------------ */

struct req_buf {
    struct cxr_dicom_info study;
    struct cxr_dicom_sr_image img[4];
    struct cxr_dicom_sr_request req;
};

static const double PROBS[4] = {0.8734, 0.1, 0.95, 0.0};

/* A request for `n` (1..4) images of one CR/DX study, threshold 0.5. */
static void make_request(struct req_buf *b, uint32_t n)
{
    memset(b, 0, sizeof *b);
    struct cxr_dicom_info *s = &b->study;
    snprintf(s->study_instance_uid, sizeof s->study_instance_uid, STUDY_UID);
    snprintf(s->patient_name, sizeof s->patient_name, "Doe^Jane");
    snprintf(s->patient_id, sizeof s->patient_id, "PID-0042");
    snprintf(s->issuer_of_patient_id, sizeof s->issuer_of_patient_id, "HOSP");
    snprintf(s->patient_birth_date, sizeof s->patient_birth_date, "19800214");
    snprintf(s->patient_sex, sizeof s->patient_sex, "F");
    snprintf(s->patient_age, sizeof s->patient_age, "044Y");
    snprintf(s->study_date, sizeof s->study_date, "20240102");
    snprintf(s->study_time, sizeof s->study_time, "101530.25");
    snprintf(s->study_id, sizeof s->study_id, "ST1");
    snprintf(s->accession_number, sizeof s->accession_number, "ACC0001");
    snprintf(s->referring_physician_name, sizeof s->referring_physician_name, "Smith^John");
    snprintf(s->study_description, sizeof s->study_description, "CHEST PA");
    snprintf(s->institution_name, sizeof s->institution_name, "General Hospital");
    snprintf(s->modality, sizeof s->modality, "DX");
    for (uint32_t i = 0; i < n; i++) {
        struct cxr_dicom_sr_image *im = &b->img[i];
        snprintf(im->sop_class_uid, sizeof im->sop_class_uid, "%s", i % 2 ? CR_CLASS : DX_CLASS);
        snprintf(im->sop_instance_uid, sizeof im->sop_instance_uid, "%s.%u", SRC_SERIES, i + 1);
        snprintf(im->series_instance_uid, sizeof im->series_instance_uid, "%s", SRC_SERIES);
        im->probability = PROBS[i];
        im->finding_present = PROBS[i] >= 0.5;
    }
    b->req = (struct cxr_dicom_sr_request){
        .study = &b->study,
        .images = b->img,
        .image_count = n,
        .algorithm_name = "cxr-triage pneumonia triage",
        .algorithm_version = "resnet18-pneumonia 1.2.0",
        .model_sha256 = SHA,
        .operating_threshold = 0.5,
        .device_observer_uid = "1.2.826.0.1.3680043.8.498.99",
        .device_name = "CXRTRIAGE",
        .manufacturer = "cxr-triage project",
        .model_name = "cxr-triage",
        .software_version = "0.1.0",
        .priority_name = "URGENT",
        .series_description = "CXR triage AI result",
        .series_number = 9901,
        .complete = true,
    };
}

#endif
