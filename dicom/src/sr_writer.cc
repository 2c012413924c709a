// sr_writer.cc — cxr_dicom_sr_write_file / _memory: the SR document
// (Comprehensive SR, or Enhanced SR on request; PS3.3 A.35.2/A.35.3) around
// the content tree of sr_content.cc, encoded as a Part 10 file (PS3.10) in
// Explicit VR Little Endian, written atomically (cxr/file.h: temp file in
// the same folder, fsync, rename, fsync of the folder).
//
// Needs no other part of cxr_dicom: DCMTK loads its data dictionary on first
// use, and nothing here depends on cxr_dicom_global_init().
#include "sr_internal.h"

#include "cxr/file.h"
#include "cxr/log.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "dicom_internal.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <new>
#include <string>
#include <vector>

namespace
{

using cxr_sr::Plan;

// One DCMTK failure becomes CXR_ERR_DICOM_SR with DCMTK's text.
#define SR_TRY(call, what)                                                             \
    do {                                                                               \
        OFCondition c_ = (call);                                                       \
        if (c_.bad())                                                                  \
            return cxr_seterr(err, CXR_ERR_DICOM_SR, "SR: %s: %s", (what), c_.text()); \
    } while (0)

using Setter = OFCondition (DSRDocument::*)(const OFString &, const OFBool);

// A value copied from the source. DCMTK checks it against its VR more
// thoroughly than sr_request.cc does (PN component counts, character
// repertoires); when it refuses, the attribute is left empty rather than the
// whole SR refused: the result matters more than one patient/study value.
// The log names the attribute, never the value (PHI).
OFCondition set_copied(DSRDocument &doc, Setter set, const std::string &value, const char *name)
{
    OFCondition c = (doc.*set)(value.c_str(), OFTrue);
    // DCMTK's checker knows neither ISO 2022 escape sequences (PS3.5
    // 6.1.2.5) nor multi-valued character sets: a value beyond ASCII is kept
    // as the source wrote it (sr_request.cc has cut it to length already).
    bool beyond_ascii = false;
    for (unsigned char ch : value)
        beyond_ascii |= ch >= 0x80 || ch == 0x1B;
    if (c.bad() && beyond_ascii)
        c = (doc.*set)(value.c_str(), OFFalse);
    if (c.bad()) {
        cxr_log(CXR_LOG_WARN, "dicom",
                "SR: the source's %s is not valid for its VR (%s); left empty", name, c.text());
        c = (doc.*set)("", OFTrue);
    }
    return c;
}

// The document header (PS3.3 A.35.2/A.35.3 modules) and content of `plan`.
enum cxr_status fill_document(const Plan &plan, DSRDocument &doc, char *err)
{
    // Patient and General Study modules: copied from the source
    // DSRDocument checks values against a single-valued set only; the
    // dataset gets the full value in patch_dataset().
    if (!plan.charset.empty() && plan.charset.find('\\') == std::string::npos)
        SR_TRY(doc.setSpecificCharacterSet(plan.charset.c_str()), "Specific Character Set");
    const struct {
        Setter set;
        const std::string &value;
        const char *name;
    } copied[] = {
        {&DSRDocument::setPatientName, plan.patient_name, "Patient's Name"},
        {&DSRDocument::setPatientID, plan.patient_id, "Patient ID"},
        {&DSRDocument::setIssuerOfPatientID, plan.issuer_of_patient_id, "Issuer of Patient ID"},
        {&DSRDocument::setPatientBirthDate, plan.patient_birth_date, "Patient's Birth Date"},
        {&DSRDocument::setPatientSex, plan.patient_sex, "Patient's Sex"},
        {&DSRDocument::setStudyDate, plan.study_date, "Study Date"},
        {&DSRDocument::setStudyTime, plan.study_time, "Study Time"},
        {&DSRDocument::setReferringPhysicianName, plan.referring_physician_name,
         "Referring Physician's Name"},
        {&DSRDocument::setStudyID, plan.study_id, "Study ID"},
        {&DSRDocument::setAccessionNumber, plan.accession_number, "Accession Number"},
        {&DSRDocument::setStudyDescription, plan.study_description, "Study Description"},
    };
    for (const auto &c : copied)
        SR_TRY(set_copied(doc, c.set, c.value, c.name), c.name);
    SR_TRY(doc.createNewSeriesInStudy(plan.study_instance_uid.c_str()), "Study Instance UID");
    // SR Document Series, General Equipment, SR Document General modules: ours
    SR_TRY(doc.setSeriesNumber(plan.series_number.c_str()), "Series Number");
    if (!plan.series_description.empty())
        SR_TRY(doc.setSeriesDescription(plan.series_description.c_str()), "Series Description");
    SR_TRY(doc.setSeriesDate(plan.content_date.c_str()), "Series Date");
    SR_TRY(doc.setSeriesTime(plan.content_time.c_str()), "Series Time");
    SR_TRY(doc.setManufacturer(plan.manufacturer.c_str()), "Manufacturer");
    SR_TRY(doc.setManufacturerModelName(plan.model_name.c_str()), "Manufacturer's Model Name");
    SR_TRY(doc.setSoftwareVersions(plan.software_version.c_str()), "Software Versions");
    SR_TRY(doc.setInstanceNumber("1"), "Instance Number");
    SR_TRY(doc.setContentDate(plan.content_date.c_str()), "Content Date");
    SR_TRY(doc.setContentTime(plan.content_time.c_str()), "Content Time");
    if (plan.complete)
        SR_TRY(doc.completeDocument(), "Completion Flag");

    // Current Requested Procedure Evidence: every image the content references.
    // The source's UIDs are referenced exactly as the PACS knows them, even when
    // they break PS3.5 9.1's stricter rules (a component with a leading zero, as
    // real archives hold): sr_request.cc has checked length and characters, so
    // DCMTK's own UID check is off here (check = OFFalse).
    for (const cxr_sr::Image &im : plan.images)
        SR_TRY(doc.getCurrentRequestedProcedureEvidence().addItem(
                   plan.study_instance_uid.c_str(), im.series_instance_uid.c_str(),
                   im.sop_class_uid.c_str(), im.sop_instance_uid.c_str(), OFFalse),
               "Current Requested Procedure Evidence Sequence");
    // Predecessor Documents: the SR this one replaces (assumed of the same SOP class)
    if (!plan.predecessor_sop_instance_uid.empty())
        SR_TRY(doc.getPredecessorDocuments().addItem(
                   plan.study_instance_uid.c_str(), plan.predecessor_series_instance_uid.c_str(),
                   plan.enhanced ? UID_EnhancedSRStorage : UID_ComprehensiveSRStorage,
                   plan.predecessor_sop_instance_uid.c_str(), OFFalse),
               "Predecessor Documents Sequence");
    // Our private coding scheme (the triage priority concept), PS3.3 C.12.1.1.4
    DSRCodingSchemeIdentificationList &schemes = doc.getCodingSchemeIdentification();
    SR_TRY(schemes.addItem("99CXRTRIAGE"), "Coding Scheme Identification Sequence");
    SR_TRY(schemes.setCodingSchemeName("cxr-triage result codes"), "Coding Scheme Name");
    SR_TRY(schemes.setCodingSchemeResponsibleOrganization(plan.manufacturer.c_str()),
           "Coding Scheme Responsible Organization");

    std::string what;
    if (!cxr_sr::build_content(plan, doc.getTree(), what))
        return cxr_seterr(err, CXR_ERR_DICOM_SR, "SR content: %s", what.c_str());
    return CXR_OK;
}

// The values DSRDocument has no setter for, and our own UIDs in place of the
// ones DSRDocument generated under DCMTK's root.
enum cxr_status patch_dataset(const Plan &plan, DcmDataset &ds, char *err)
{
    // Again here: DSRDocument writes only the single-valued sets it knows
    if (!plan.charset.empty())
        SR_TRY(ds.putAndInsertString(DCM_SpecificCharacterSet, plan.charset.c_str()),
               "Specific Character Set");
    SR_TRY(ds.putAndInsertString(DCM_SOPInstanceUID, plan.sop_instance_uid.c_str()),
           "SOP Instance UID");
    SR_TRY(ds.putAndInsertString(DCM_SeriesInstanceUID, plan.series_instance_uid.c_str()),
           "Series Instance UID");
    SR_TRY(ds.putAndInsertString(DCM_InstanceCreatorUID, plan.device_observer_uid.c_str()),
           "Instance Creator UID");
    SR_TRY(ds.putAndInsertString(DCM_InstanceCreationDate, plan.content_date.c_str()),
           "Instance Creation Date");
    SR_TRY(ds.putAndInsertString(DCM_InstanceCreationTime, plan.content_time.c_str()),
           "Instance Creation Time");
    if (!plan.patient_age.empty())
        SR_TRY(ds.putAndInsertString(DCM_PatientAge, plan.patient_age.c_str()), "Patient's Age");
    if (!plan.institution_name.empty())
        SR_TRY(ds.putAndInsertString(DCM_InstitutionName, plan.institution_name.c_str()),
               "Institution Name");
    return CXR_OK;
}

// Part 10 bytes of `ff` in Explicit VR Little Endian with a new meta header.
enum cxr_status encode(DcmFileFormat &ff, std::vector<unsigned char> &out, char *err)
{
    SR_TRY(ff.validateMetaInfo(EXS_LittleEndianExplicit), "File Meta Information");
    static const offile_off_t kChunk = 64 * 1024;
    std::vector<unsigned char> chunk(kChunk);
    DcmOutputBufferStream os(chunk.data(), kChunk);
    ff.transferInit();
    OFCondition c = EC_StreamNotifyClient;
    void *p = nullptr;
    offile_off_t n = 0;
    while (c == EC_StreamNotifyClient) {
        c = ff.write(os, EXS_LittleEndianExplicit, EET_ExplicitLength, nullptr, EGL_recalcGL,
                     EPD_noChange, 0, 0, 0, EWM_createNewMeta);
        os.flushBuffer(p, n);
        out.insert(out.end(), (unsigned char *)p, (unsigned char *)p + n);
    }
    ff.transferEnd();
    os.flush();
    os.flushBuffer(p, n);
    out.insert(out.end(), (unsigned char *)p, (unsigned char *)p + n);
    if (c.bad())
        return cxr_seterr(err, CXR_ERR_DICOM_SR, "SR: encoding as Part 10: %s", c.text());
    return CXR_OK;
}

// Builds the whole SR; `out` receives the Part 10 bytes, `uid_out` the SOP
// Instance UID.
enum cxr_status build(const struct cxr_dicom_sr_request *req, std::vector<unsigned char> &out,
                      std::string &uid_out, char *err)
{
    Plan plan;
    enum cxr_status st = cxr_sr::prepare(req, plan, err);
    if (st != CXR_OK)
        return st;
    DSRDocument doc(plan.enhanced ? DSRTypes::DT_EnhancedSR : DSRTypes::DT_ComprehensiveSR);
    if ((st = fill_document(plan, doc, err)) != CXR_OK)
        return st;
    DcmFileFormat ff;
    SR_TRY(doc.write(*ff.getDataset()), "writing the SR dataset");
    if ((st = patch_dataset(plan, *ff.getDataset(), err)) != CXR_OK)
        return st;
    if ((st = encode(ff, out, err)) != CXR_OK)
        return st;
    uid_out = plan.sop_instance_uid;
    return CXR_OK;
}

// Writes `data` to `path` atomically and durably (cxr/file.h), mode 0666
// less the umask; err says which step failed, prefixed "SR: ".
enum cxr_status write_atomic(const std::string &path, const std::vector<unsigned char> &data,
                             char *err)
{
    char why[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_file_write_atomic(path.c_str(), data.data(), data.size(), 0666, why);
    if (st != CXR_OK)
        return cxr_seterr(err, st, "SR: %s", why);
    return CXR_OK;
}

// Every extern "C" entry ends here on a C++ exception.
enum cxr_status caught(char *err)
{
    try {
        throw;
    } catch (const std::bad_alloc &) {
        return cxr_seterr(err, CXR_ERR_NOMEM, "SR: out of memory");
    } catch (const std::exception &e) {
        return cxr_seterr(err, CXR_ERR_INTERNAL, "SR: unexpected exception: %s", e.what());
    } catch (...) {
        return cxr_seterr(err, CXR_ERR_INTERNAL, "SR: unexpected exception");
    }
}

} // namespace

extern "C" enum cxr_status cxr_dicom_sr_write_file(const struct cxr_dicom_sr_request *req,
                                                   const char *path, char *sop_instance_uid_out,
                                                   char *err)
{
    if (sop_instance_uid_out)
        sop_instance_uid_out[0] = '\0';
    if (err)
        err[0] = '\0';
    try {
        if (!path || !*path)
            return cxr_seterr(err, CXR_ERR_INVALID_ARG, "SR: no output path");
        std::vector<unsigned char> data;
        std::string uid;
        enum cxr_status st = build(req, data, uid, err);
        if (st == CXR_OK)
            st = write_atomic(path, data, err);
        if (st == CXR_OK && sop_instance_uid_out)
            std::snprintf(sop_instance_uid_out, CXR_DICOM_UID_LEN, "%s", uid.c_str());
        return st;
    } catch (...) {
        return caught(err);
    }
}

extern "C" enum cxr_status cxr_dicom_sr_write_memory(const struct cxr_dicom_sr_request *req,
                                                     void **buf, size_t *len,
                                                     char *sop_instance_uid_out, char *err)
{
    if (sop_instance_uid_out)
        sop_instance_uid_out[0] = '\0';
    if (err)
        err[0] = '\0';
    if (!buf || !len)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "SR: buf and len must not be NULL");
    *buf = nullptr;
    *len = 0;
    try {
        std::vector<unsigned char> data;
        std::string uid;
        enum cxr_status st = build(req, data, uid, err);
        if (st != CXR_OK)
            return st;
        void *copy = std::malloc(data.size());
        if (!copy)
            return cxr_seterr(err, CXR_ERR_NOMEM, "SR: out of memory (%zu bytes)", data.size());
        std::memcpy(copy, data.data(), data.size());
        *buf = copy;
        *len = data.size();
        if (sop_instance_uid_out)
            std::snprintf(sop_instance_uid_out, CXR_DICOM_UID_LEN, "%s", uid.c_str());
        return CXR_OK;
    } catch (...) {
        return caught(err);
    }
}
