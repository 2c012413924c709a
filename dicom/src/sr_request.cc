// sr_request.cc — checks an SR request and turns it into a Plan: every value
// the SR will carry, valid for its VR (PS3.5 6.2), truncated to the VR's
// maximum length, in one character set.
//
// Rules (docs/conformance.md, "SR"): what the caller controls (UIDs,
// probabilities, required strings) is refused when wrong; what is copied
// from the source image and is not valid for its VR (a date "2020.01.01", a
// sex "MALE") is left empty (Type 2) or out (Type 3), never copied broken.
#include "sr_internal.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdatset.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <set>

namespace cxr_sr
{
namespace
{

constexpr uint32_t kMaxImages = 1000; // a chest study has a handful; a cap bounds the SR size
constexpr size_t kTextMax = 1024;     // our TEXT values (UT has no practical limit)

enum cxr_status fail(char *err, enum cxr_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
enum cxr_status fail(char *err, enum cxr_status st, const char *fmt, ...)
{
    if (err) {
        int n = std::snprintf(err, CXR_ERRLEN, "SR request: ");
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(err + n, CXR_ERRLEN - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return st;
}

bool has_utf8(const std::string &charset)
{
    return charset.find("ISO_IR 192") != std::string::npos;
}
bool has_2022(const std::string &charset) { return charset.find("2022") != std::string::npos; }

bool non_ascii(const std::string &s)
{
    for (unsigned char c : s)
        if (c >= 0x80)
            return true;
    return false;
}

// A single-valued string for a header attribute or a TEXT item: control
// characters other than ESC (and, for text, CR LF TAB) become spaces, a
// backslash (the value delimiter) becomes '/' unless an ISO 2022 multi-byte
// set may use that byte inside a character, leading/trailing spaces go, and
// the value is cut to `max` bytes without splitting a UTF-8 sequence.
std::string clean(const char *s, size_t max, const std::string &charset, bool text = false)
{
    std::string out = s ? s : "";
    for (char &c : out) {
        unsigned char u = (unsigned char)c;
        if (u < 0x20 && u != 0x1B && !(text && (u == '\r' || u == '\n' || u == '\t')))
            c = ' ';
        else if (c == '\\' && !has_2022(charset))
            c = '/';
    }
    size_t b = out.find_first_not_of(' ');
    out.erase(0, b == std::string::npos ? out.size() : b);
    if (out.size() > max) {
        size_t cut = max;
        if (has_utf8(charset) || charset.empty()) // never leave half a UTF-8 character
            while (cut > 0 && ((unsigned char)out[cut] & 0xC0) == 0x80)
                cut--;
        out.resize(cut);
    }
    while (!out.empty() && out.back() == ' ')
        out.pop_back();
    return out;
}

// PN: up to three component groups (alphabetic=ideographic=phonetic), each
// at most 64 characters (PS3.5 Table 6.2-1).
std::string clean_pn(const char *s, const std::string &charset)
{
    std::string in = s ? s : "", out;
    size_t start = 0;
    for (int group = 0; group < 3; group++) {
        size_t eq = in.find('=', start);
        std::string part =
            in.substr(start, eq == std::string::npos ? std::string::npos : eq - start);
        if (group)
            out += '=';
        out += clean(part.c_str(), 64, charset);
        if (eq == std::string::npos)
            break;
        start = eq + 1;
    }
    while (!out.empty() && out.back() == '=')
        out.pop_back();
    return out;
}

bool all_digits(const std::string &s, size_t from, size_t n)
{
    if (from + n > s.size())
        return false;
    for (size_t i = from; i < from + n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

std::string valid_da(const char *s)
{
    std::string v = clean(s, 16, "");
    return v.size() == 8 && all_digits(v, 0, 8) ? v : "";
}

// TM: HH[MM[SS[.F{1,6}]]] (PS3.5 Table 6.2-1); the ACR-NEMA "HH:MM:SS" form is dropped.
std::string valid_tm(const char *s)
{
    std::string v = clean(s, 16, "");
    size_t dot = v.find('.');
    std::string hms = v.substr(0, dot);
    if (hms.empty() || hms.size() % 2 || hms.size() > 6 || !all_digits(hms, 0, hms.size()))
        return "";
    if (dot != std::string::npos) {
        size_t nf = v.size() - dot - 1;
        if (hms.size() != 6 || nf < 1 || nf > 6 || !all_digits(v, dot + 1, nf))
            return "";
    }
    return v;
}

std::string valid_as(const char *s)
{
    std::string v = clean(s, 8, "");
    return v.size() == 4 && all_digits(v, 0, 3) && std::strchr("DWMY", v[3]) ? v : "";
}

std::string valid_sex(const char *s)
{
    std::string v = clean(s, 16, "");
    return v == "M" || v == "F" || v == "O" ? v : "";
}

// Study strings in the source's character set; converted to UTF-8 when our
// own strings need it (see prepare()).
struct StudyText {
    DcmTagKey tag;
    std::string *dst;
    size_t max; // 0: a PN
};

// Converts the copied study strings to UTF-8 with DCMTK (iconv). False when
// the source character set is unknown to the converter.
bool convert_to_utf8(const std::string &charset, StudyText *st, size_t n)
{
    DcmDataset item; // a DcmItem alone does not convert (DCMTK 3.6.7)
    if (item.putAndInsertString(DCM_SpecificCharacterSet, charset.c_str()).bad())
        return false;
    for (size_t i = 0; i < n; i++)
        if (item.putAndInsertString(st[i].tag, st[i].dst->c_str()).bad())
            return false;
    if (item.convertToUTF8().bad())
        return false;
    for (size_t i = 0; i < n; i++) {
        OFString v;
        item.findAndGetOFStringArray(st[i].tag, v);
        // UTF-8 may be longer than the source bytes: cut again
        *st[i].dst = st[i].max ? clean(v.c_str(), st[i].max, "ISO_IR 192")
                               : clean_pn(v.c_str(), "ISO_IR 192");
    }
    return true;
}

template <size_t N> bool terminated(const char (&a)[N])
{
    return std::memchr(a, '\0', N) != nullptr;
}
template <size_t N> void terminate(char (&a)[N]) { a[N - 1] = '\0'; }

bool present_required(const char *s) { return s && *s && clean(s, 16, "").size() > 0; }

} // namespace

std::string percent_text(double probability)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", probability * 100.0);
    std::string s = buf;
    while (s.size() > 1 && s.back() == '0')
        s.pop_back();
    if (s.back() == '.')
        s.pop_back();
    return s;
}

enum cxr_status prepare(const struct cxr_dicom_sr_request *req, Plan &plan, char *err)
{
    if (!req)
        return fail(err, CXR_ERR_INVALID_ARG, "request is NULL");
    if (!req->study)
        return fail(err, CXR_ERR_INVALID_ARG, "study (source header values) is NULL");
    if (!req->images || req->image_count == 0)
        return fail(err, CXR_ERR_INVALID_ARG, "no image to report (image_count must be >= 1)");
    if (req->image_count > kMaxImages)
        return fail(err, CXR_ERR_LIMIT, "%u images exceed the limit of %u per SR",
                    (unsigned)req->image_count, (unsigned)kMaxImages);

    const struct {
        const char *name, *value;
    } required[] = {
        {"algorithm_name", req->algorithm_name},     {"algorithm_version", req->algorithm_version},
        {"model_sha256", req->model_sha256},         {"device_name", req->device_name},
        {"manufacturer", req->manufacturer},         {"model_name", req->model_name},
        {"software_version", req->software_version}, {"priority_name", req->priority_name},
    };
    for (const auto &r : required)
        if (!present_required(r.value))
            return fail(err, CXR_ERR_INVALID_ARG, "%s is %s (required)", r.name,
                        r.value ? "empty" : "NULL");
    if (std::strlen(req->model_sha256) != 64 ||
        std::strspn(req->model_sha256, "0123456789abcdefABCDEF") != 64)
        return fail(err, CXR_ERR_INVALID_ARG, "model_sha256 \"%.80s\" is not 64 hexadecimal digits",
                    req->model_sha256);
    if (!std::isfinite(req->operating_threshold) || req->operating_threshold < 0.0 ||
        req->operating_threshold > 1.0)
        return fail(err, CXR_ERR_INVALID_ARG, "operating_threshold %g is not in [0, 1]",
                    req->operating_threshold);

    // The study's fixed-size strings, each cut at its array's end: a caller's
    // missing NUL must not make us read past the struct.
    struct cxr_dicom_info study = *req->study;
    const struct cxr_dicom_info *st = &study;
    if (!terminated(study.study_instance_uid))
        return fail(err, CXR_ERR_INVALID_ARG, "Study Instance UID of the source is longer than 64");
    terminate(study.specific_character_set);
    terminate(study.patient_name);
    terminate(study.patient_id);
    terminate(study.issuer_of_patient_id);
    terminate(study.patient_birth_date);
    terminate(study.patient_sex);
    terminate(study.patient_age);
    terminate(study.study_date);
    terminate(study.study_time);
    terminate(study.study_id);
    terminate(study.accession_number);
    terminate(study.referring_physician_name);
    terminate(study.study_description);
    terminate(study.institution_name);
    if (!cxr_dicom_uid_valid(st->study_instance_uid))
        return fail(err, CXR_ERR_INVALID_ARG,
                    "Study Instance UID \"%.80s\" of the source is not a valid UID "
                    "(1-64 digits and dots)",
                    st->study_instance_uid);
    if (req->series_instance_uid && *req->series_instance_uid &&
        (strnlen(req->series_instance_uid, CXR_DICOM_UID_LEN) == CXR_DICOM_UID_LEN ||
         !cxr_dicom_uid_valid(req->series_instance_uid)))
        return fail(err, CXR_ERR_INVALID_ARG, "series_instance_uid \"%.80s\" is not a valid UID",
                    req->series_instance_uid);
    if (req->device_observer_uid && *req->device_observer_uid &&
        !cxr_dicom_uid_valid(req->device_observer_uid))
        return fail(err, CXR_ERR_INVALID_ARG, "device_observer_uid \"%.80s\" is not a valid UID",
                    req->device_observer_uid);
    bool has_pred = req->predecessor_sop_instance_uid && *req->predecessor_sop_instance_uid;
    if (has_pred) {
        if (!cxr_dicom_uid_valid(req->predecessor_sop_instance_uid))
            return fail(err, CXR_ERR_INVALID_ARG,
                        "predecessor_sop_instance_uid \"%.80s\" is not a valid UID",
                        req->predecessor_sop_instance_uid);
        if (!cxr_dicom_uid_valid(req->predecessor_series_instance_uid))
            return fail(err, CXR_ERR_INVALID_ARG,
                        "predecessor_series_instance_uid \"%.80s\" is not a valid UID (required "
                        "with a predecessor)",
                        req->predecessor_series_instance_uid ? req->predecessor_series_instance_uid
                                                             : "(NULL)");
    }

    std::set<std::string> seen;
    for (uint32_t i = 0; i < req->image_count; i++) {
        const struct cxr_dicom_sr_image *im = &req->images[i];
        const struct {
            const char *name, *uid;
        } uids[] = {{"SOP Class UID", im->sop_class_uid},
                    {"SOP Instance UID", im->sop_instance_uid},
                    {"Series Instance UID", im->series_instance_uid}};
        for (const auto &u : uids)
            if (!std::memchr(u.uid, '\0', CXR_DICOM_UID_LEN))
                return fail(err, CXR_ERR_INVALID_ARG, "image %u: %s is longer than 64",
                            (unsigned)i + 1, u.name);
        if (!terminated(im->warning) || !terminated(im->reason))
            return fail(err, CXR_ERR_INVALID_ARG,
                        "image %u: warning or reason is not NUL-terminated", (unsigned)i + 1);
        for (const auto &u : uids)
            if (!cxr_dicom_uid_valid(u.uid))
                return fail(err, CXR_ERR_INVALID_ARG, "image %u: %s \"%.80s\" is not a valid UID",
                            (unsigned)i + 1, u.name, u.uid);
        if (!seen.insert(im->sop_instance_uid).second)
            return fail(err, CXR_ERR_INVALID_ARG, "image %u: SOP Instance UID %s is listed twice",
                        (unsigned)i + 1, im->sop_instance_uid);
        if (im->not_analysed) {
            if (!im->reason[0])
                return fail(err, CXR_ERR_INVALID_ARG,
                            "image %u (%s): not analysed without a reason", (unsigned)i + 1,
                            im->sop_instance_uid);
            continue;
        }
        if (!std::isfinite(im->probability) || im->probability < 0.0 || im->probability > 1.0)
            return fail(err, CXR_ERR_INVALID_ARG, "image %u (%s): probability %g is not in [0, 1]",
                        (unsigned)i + 1, im->sop_instance_uid, im->probability);
        if (im->finding_present != (im->probability >= req->operating_threshold))
            return fail(err, CXR_ERR_INVALID_ARG,
                        "image %u (%s): finding_present=%s contradicts probability %g against "
                        "operating threshold %g",
                        (unsigned)i + 1, im->sop_instance_uid,
                        im->finding_present ? "true" : "false", im->probability,
                        req->operating_threshold);
    }

    // ---- character set: the source's, unless our own strings need UTF-8
    // (multi-valued only for ISO 2022 sets, whose backslash clean() keeps)
    plan.charset = clean(st->specific_character_set, 64, st->specific_character_set);
    const std::string &cs0 = plan.charset;
    plan.patient_name = clean_pn(st->patient_name, cs0);
    plan.referring_physician_name = clean_pn(st->referring_physician_name, cs0);
    plan.patient_id = clean(st->patient_id, 64, cs0);
    plan.issuer_of_patient_id = clean(st->issuer_of_patient_id, 64, cs0);
    plan.study_id = clean(st->study_id, 16, cs0);
    plan.accession_number = clean(st->accession_number, 16, cs0);
    plan.study_description = clean(st->study_description, 64, cs0);
    bool own_institution = req->institution_name && *req->institution_name;
    plan.institution_name = own_institution ? "" : clean(st->institution_name, 64, cs0);

    const char *own_text[] = {req->algorithm_name, req->algorithm_version,  req->device_name,
                              req->manufacturer,   req->model_name,         req->software_version,
                              req->priority_name,  req->series_description, req->institution_name};
    bool own_non_ascii = false;
    for (const char *t : own_text)
        if (t && non_ascii(t))
            own_non_ascii = true;
    for (uint32_t i = 0; i < req->image_count; i++)
        if (non_ascii(req->images[i].warning) || non_ascii(req->images[i].reason))
            own_non_ascii = true;
    bool ascii_only = false; // replace non-ASCII bytes of our strings with '?'
    if (own_non_ascii && !has_utf8(plan.charset)) {
        StudyText texts[] = {
            {DCM_PatientName, &plan.patient_name, 0},
            {DCM_ReferringPhysicianName, &plan.referring_physician_name, 0},
            {DCM_PatientID, &plan.patient_id, 64},
            {DCM_IssuerOfPatientID, &plan.issuer_of_patient_id, 64},
            {DCM_StudyID, &plan.study_id, 16},
            {DCM_AccessionNumber, &plan.accession_number, 16},
            {DCM_StudyDescription, &plan.study_description, 64},
            {DCM_InstitutionName, &plan.institution_name, 64},
        };
        if (plan.charset.empty() || plan.charset == "ISO_IR 6") {
            plan.charset = "ISO_IR 192"; // ASCII is a subset of UTF-8
        } else if (convert_to_utf8(plan.charset, texts, sizeof texts / sizeof texts[0])) {
            plan.charset = "ISO_IR 192";
        } else {
            ascii_only = true;
        }
    }
    const std::string &cs = plan.charset;
    auto own = [&](const char *s, size_t max, bool text) {
        std::string v = clean(s, max, cs, text);
        if (ascii_only)
            for (char &c : v)
                if ((unsigned char)c >= 0x80)
                    c = '?';
        return v;
    };

    // ---- patient / study (copied)
    plan.patient_birth_date = valid_da(st->patient_birth_date);
    plan.patient_sex = valid_sex(st->patient_sex);
    plan.patient_age = valid_as(st->patient_age);
    plan.study_instance_uid = st->study_instance_uid;
    plan.study_date = valid_da(st->study_date);
    plan.study_time = valid_tm(st->study_time);

    // ---- ours
    plan.enhanced = req->enhanced_sr;
    plan.complete = req->complete;
    char uid[CXR_DICOM_UID_LEN];
    if (req->series_instance_uid && *req->series_instance_uid) {
        plan.series_instance_uid = req->series_instance_uid;
    } else {
        cxr_dicom_uid_new(uid);
        plan.series_instance_uid = uid;
    }
    cxr_dicom_uid_new(uid);
    plan.sop_instance_uid = uid;
    plan.series_description = own(req->series_description, 64, false);
    char num[16];
    std::snprintf(num, sizeof num, "%d", (int)req->series_number);
    plan.series_number = num;
    if (own_institution)
        plan.institution_name = own(req->institution_name, 64, false);
    plan.manufacturer = own(req->manufacturer, 64, false);
    plan.model_name = own(req->model_name, 64, false);
    plan.software_version = own(req->software_version, 64, false);
    plan.device_name = own(req->device_name, kTextMax, true);
    if (req->device_observer_uid && *req->device_observer_uid) {
        plan.device_observer_uid = req->device_observer_uid;
    } else {
        cxr_dicom_uid_device_observer(req->model_name, uid);
        plan.device_observer_uid = uid;
    }
    plan.algorithm_name = own(req->algorithm_name, kTextMax, true);
    plan.algorithm_version = own(req->algorithm_version, kTextMax, true);
    plan.model_sha256 = req->model_sha256;
    for (char &c : plan.model_sha256)
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
    char thr[32];
    std::snprintf(thr, sizeof thr, "%.6g", req->operating_threshold);
    plan.threshold_text = thr;
    plan.priority_name = own(req->priority_name, kTextMax, true);
    if (has_pred) {
        plan.predecessor_sop_instance_uid = req->predecessor_sop_instance_uid;
        plan.predecessor_series_instance_uid = req->predecessor_series_instance_uid;
    }

    time_t now = time(nullptr);
    struct tm lt;
    localtime_r(&now, &lt);
    char d[16], t[16];
    strftime(d, sizeof d, "%Y%m%d", &lt);
    strftime(t, sizeof t, "%H%M%S", &lt);
    plan.content_date = d;
    plan.content_time = t;

    plan.images.resize(req->image_count);
    for (uint32_t i = 0; i < req->image_count; i++) {
        const struct cxr_dicom_sr_image *im = &req->images[i];
        Image &pi = plan.images[i];
        pi.sop_class_uid = im->sop_class_uid;
        pi.sop_instance_uid = im->sop_instance_uid;
        pi.series_instance_uid = im->series_instance_uid;
        pi.probability = im->probability;
        pi.present = im->finding_present;
        pi.warning = own(im->warning, kTextMax, true);
        pi.analysed = !im->not_analysed;
        if (im->not_analysed) {
            pi.probability = 0.0;
            pi.present = false;
            pi.reason = own(im->reason, kTextMax, true);
        }
        char tid[64];
        std::snprintf(tid, sizeof tid, "Pneumonia, image %u", (unsigned)i + 1);
        pi.tracking_id = tid;
        // The same finding on the same source image keeps its tracking UID
        // across reports (a corrected SR, a new model version).
        std::string key = std::string("tracking") + '\0' + pi.sop_instance_uid + '\0' + "233604007";
        cxr_dicom_uid_from_bytes(key.data(), key.size(), uid);
        pi.tracking_uid = uid;
    }
    return CXR_OK;
}

} // namespace cxr_sr
