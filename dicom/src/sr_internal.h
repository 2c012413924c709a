/* sr_internal.h — shared between the SR writer files (sr_*.cc, uid.cc) only.
 * No DCMTK type here: the UID helpers are plain C so that uid.cc stays small.
 */
#ifndef CXR_DICOM_SR_INTERNAL_H
#define CXR_DICOM_SR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "cxr/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "2.25.<decimal>" of a 128-bit name-based UUID (RFC 9562 version 8: the
 * first 16 bytes of SHA-256 over `len` bytes of `data`, version and variant
 * bits set), PS3.5 B.2. The same bytes always give the same UID. */
void cxr_dicom_uid_from_bytes(const void *data, size_t len, char out[CXR_DICOM_UID_LEN]);

/* The device observer UID of this installation when the configuration gives
 * none: cxr_dicom_uid_from_bytes("device-observer\0" hostname "\0" product).
 * Stable for one host name; thread-safe. */
void cxr_dicom_uid_device_observer(const char *product, char out[CXR_DICOM_UID_LEN]);

/* True when `uid` is a syntactically valid UID (PS3.5 9.1): 1..64 characters,
 * digits and dots, no empty component, first and last character a digit.
 * Leading zeros in a component are tolerated (seen in real archives). */
bool cxr_dicom_uid_valid(const char *uid);

#ifdef __cplusplus
}

#include <string>
#include <vector>

class DSRDocumentTree;

namespace cxr_sr
{

/* One image after validation: analysed, or listed as not analysed. */
struct Image {
    std::string sop_class_uid, sop_instance_uid, series_instance_uid;
    bool analysed = true;
    double probability = 0.0;
    bool present = false;
    std::string warning;      /* "" none; sanitised for TEXT */
    std::string reason;       /* not analysed: why (sanitised for TEXT) */
    std::string tracking_id;  /* human-readable (112039) */
    std::string tracking_uid; /* 2.25 UID derived from the source instance (112040) */
};

/* Everything the SR carries, validated, truncated to each VR's maximum and
 * in one character set (`charset`, "" = default repertoire). Built by
 * prepare() (sr_request.cc); read by the header writer (sr_writer.cc) and
 * the content tree builder (sr_content.cc). */
struct Plan {
    bool enhanced = false, complete = true;
    std::string charset;
    /* patient / general study (copied from the source) */
    std::string patient_name, patient_id, issuer_of_patient_id, patient_birth_date, patient_sex,
        patient_age, study_instance_uid, study_date, study_time, referring_physician_name, study_id,
        accession_number, study_description;
    /* SR series, equipment, instance */
    std::string series_instance_uid, sop_instance_uid, series_description, series_number,
        institution_name, manufacturer, model_name, software_version;
    std::string content_date, content_time; /* now, local time */
    /* device observer (TID 1004) and algorithm (TID 4019) */
    std::string device_observer_uid, device_name;
    std::string algorithm_name, algorithm_version, model_sha256, threshold_text;
    std::string priority_name;
    std::string predecessor_sop_instance_uid, predecessor_series_instance_uid;
    std::vector<Image> images;
};

/* Checks `req` and fills `plan`. CXR_ERR_INVALID_ARG (or CXR_ERR_LIMIT for a
 * huge image count) with the reason in `err` (CXR_ERRLEN, may be
 * NULL). May throw std::bad_alloc. */
enum cxr_status prepare(const struct cxr_dicom_sr_request *req, Plan &plan, char *err);

/* Builds the TID 1500 content tree of `plan` into the empty `tree`
 * (PS3.16 TID 1500/1501/1600/4019, see docs/conformance.md). On failure
 * returns false and `what` names the content item and DCMTK's reason. */
bool build_content(const Plan &plan, DSRDocumentTree &tree, std::string &what);

/* Percent text of a probability for the NUM value (DS, at most 16
 * characters): 4 decimals, trailing zeros removed ("87.1234", "100"). */
std::string percent_text(double probability);

} // namespace cxr_sr
#endif
#endif
