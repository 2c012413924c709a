/* instance.cc — reading one DICOM instance (file or memory) and copying its
 * header values into struct cxr_dicom_info.
 *
 * Both doors end in load_bytes(): a file is mapped read-only and parsed from
 * the mapping, a caller's buffer is parsed in place. DCMTK copies every
 * element value into its own memory while it parses (a buffer stream has no
 * lazy loading), so the pixel data exists once on the heap and the caller's
 * buffer / the mapping can go as soon as we return. Before DCMTK sees any
 * byte, parse_guard.cc checks the structure (depth, lengths, counts).
 */
#include "dicom_internal.h"
#include "cxr/file.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcspchrs.h>

/* ------------------------------------------------------------------ age */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static long days_from_civil(long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<long>(doe) - 719468;
}

/* DA "YYYYMMDD" (or the ACR-NEMA "YYYY.MM.DD") → days; false when not a date. */
static bool parse_da(const char *s, long *days)
{
    char digits[9];
    size_t k = 0;
    for (const char *c = s; *c && k < 9; c++) {
        if (*c >= '0' && *c <= '9')
            digits[k++] = *c;
        else if (*c != '.' && *c != '-')
            return false;
    }
    if (k != 8)
        return false;
    digits[8] = '\0';
    long v = std::strtol(digits, nullptr, 10);
    long y = v / 10000;
    unsigned m = static_cast<unsigned>(v / 100 % 100), d = static_cast<unsigned>(v % 100);
    if (y < 1800 || m < 1 || m > 12 || d < 1 || d > 31)
        return false;
    *days = days_from_civil(y, m, d);
    return true;
}

/* AS "nnnD|W|M|Y" (PS3.5 6.2) → years; NaN when not an age. */
static double parse_as(const char *s)
{
    size_t n = std::strlen(s), k = 0;
    double v = 0;
    while (k < n && s[k] >= '0' && s[k] <= '9' && k < 3)
        v = v * 10 + (s[k++] - '0');
    if (k == 0)
        return NAN;
    char unit = k < n ? s[k] : 'Y';
    if (k + (k < n ? 1 : 0) != n)
        return NAN;
    switch (unit) {
    case 'D':
    case 'd': return v / 365.2425;
    case 'W':
    case 'w': return v * 7 / 365.2425;
    case 'M':
    case 'm': return v / 12;
    case 'Y':
    case 'y': return v;
    default: return NAN;
    }
}

/* Patient age in years: PatientAge, else BirthDate against the study (or
 * series / acquisition / content) date; NaN when unknown or implausible. */
static double patient_age_years(DcmItem *ds, const struct cxr_dicom_info *in)
{
    double a = in->patient_age[0] ? parse_as(in->patient_age) : NAN;
    if (!std::isnan(a))
        return a;
    long birth, when;
    if (!parse_da(in->patient_birth_date, &birth))
        return NAN;
    const DcmTagKey dates[] = {DCM_StudyDate, DCM_SeriesDate, DCM_AcquisitionDate, DCM_ContentDate};
    for (const DcmTagKey &t : dates) {
        char buf[20];
        cxr_dicom_get_str(ds, t, buf, sizeof buf);
        if (buf[0] && parse_da(buf, &when)) {
            if (when < birth)
                return NAN;
            return static_cast<double>(when - birth) / 365.2425;
        }
    }
    return NAN;
}

/* ------------------------------------------------------------------ info */

static uint16_t get_us(DcmItem *ds, const DcmTagKey &t)
{
    Uint16 v = 0;
    if (ds->findAndGetUint16(t, v).bad()) {
        Sint16 s = 0; /* some writers use SS where US belongs */
        if (ds->findAndGetSint16(t, s).good() && s >= 0)
            v = static_cast<Uint16>(s);
    }
    return v;
}

static void fill_info(DcmFileFormat *ff, const struct cxr_dicom_scan_result *scan,
                      E_TransferSyntax xfer, struct cxr_dicom_info *in)
{
    DcmDataset *ds = ff->getDataset();
    DcmMetaInfo *meta = ff->getMetaInfo();
    std::memset(in, 0, sizeof *in);
#define S(tag, field) cxr_dicom_get_str(ds, tag, in->field, sizeof in->field)
    S(DCM_SOPClassUID, sop_class_uid);
    if (!in->sop_class_uid[0])
        cxr_dicom_get_str(meta, DCM_MediaStorageSOPClassUID, in->sop_class_uid,
                          sizeof in->sop_class_uid);
    S(DCM_SOPInstanceUID, sop_instance_uid);
    if (!in->sop_instance_uid[0])
        cxr_dicom_get_str(meta, DCM_MediaStorageSOPInstanceUID, in->sop_instance_uid,
                          sizeof in->sop_instance_uid);
    if (scan->ts_uid[0])
        cxr_dicom_copy_str(in->transfer_syntax_uid, sizeof in->transfer_syntax_uid, scan->ts_uid);
    else if (xfer != EXS_Unknown)
        cxr_dicom_copy_str(in->transfer_syntax_uid, sizeof in->transfer_syntax_uid,
                           DcmXfer(xfer).getXferID());
    cxr_dicom_get_str(ds, DCM_SpecificCharacterSet, in->specific_character_set,
                      sizeof in->specific_character_set, -1);
    in->has_meta_header = scan->has_meta;
    S(DCM_PatientName, patient_name);
    S(DCM_PatientID, patient_id);
    S(DCM_IssuerOfPatientID, issuer_of_patient_id);
    S(DCM_PatientBirthDate, patient_birth_date);
    S(DCM_PatientSex, patient_sex);
    S(DCM_PatientAge, patient_age);
    S(DCM_StudyInstanceUID, study_instance_uid);
    S(DCM_StudyDate, study_date);
    S(DCM_StudyTime, study_time);
    S(DCM_StudyID, study_id);
    S(DCM_AccessionNumber, accession_number);
    S(DCM_ReferringPhysicianName, referring_physician_name);
    S(DCM_StudyDescription, study_description);
    S(DCM_InstitutionName, institution_name);
    S(DCM_SeriesInstanceUID, series_instance_uid);
    S(DCM_Modality, modality);
    S(DCM_BodyPartExamined, body_part_examined);
    S(DCM_ViewPosition, view_position);
    S(DCM_Laterality, laterality);
    if (!in->laterality[0])
        S(DCM_ImageLaterality, laterality);
    S(DCM_PresentationIntentType, presentation_intent_type);
    cxr_dicom_get_str(ds, DCM_ImageType, in->image_type, sizeof in->image_type, -1);
    S(DCM_PhotometricInterpretation, photometric_interpretation);
    S(DCM_Manufacturer, manufacturer);
#undef S
    in->patient_age_years = patient_age_years(ds, in);
    in->rows = get_us(ds, DCM_Rows);
    in->columns = get_us(ds, DCM_Columns);
    in->bits_allocated = get_us(ds, DCM_BitsAllocated);
    in->bits_stored = get_us(ds, DCM_BitsStored);
    in->high_bit = get_us(ds, DCM_HighBit);
    in->samples_per_pixel = get_us(ds, DCM_SamplesPerPixel);
    in->pixel_representation = get_us(ds, DCM_PixelRepresentation);
    Sint32 frames = 1;
    in->number_of_frames =
        ds->findAndGetSint32(DCM_NumberOfFrames, frames).good() && frames > 0 ? frames : 1;
    in->has_pixel_data = ds->tagExists(DCM_PixelData);
}

/* ------------------------------------------------------------------ load */

/* Converts the dataset's text to UTF-8 when it declares another character set
 * (PS3.5 6.1); on failure (unknown set, bad bytes) the original bytes stay. */
static void to_utf8(DcmDataset *ds, const char *name)
{
    OFString cs;
    if (ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, cs).bad() || cs.empty() ||
        cs == "ISO_IR 192" || cs == "ISO_IR 6")
        return;
    if (!DcmSpecificCharacterSet::isConversionAvailable())
        return;
    OFCondition c = ds->convertToUTF8();
    if (c.bad())
        cxr_log(CXR_LOG_DEBUG, "dicom", "%s: text kept in '%s' (conversion to UTF-8 failed: %s)",
                name, cs.c_str(), c.text());
}

/* Finishes a parsed instance: checks it holds data, converts text to UTF-8,
 * copies the header values. Takes ownership of `inst` (freed on failure). */
static enum cxr_status finish(struct cxr_dicom_instance *inst, OFCondition c,
                              const struct cxr_dicom_scan_result *scan,
                              struct cxr_dicom_instance **out, char *err)
{
    const char *name = inst->name;
    DcmDataset *ds = inst->file->getDataset();
    if (c.good() && (!ds || ds->card() == 0))
        c = makeOFCondition(OFM_dcmdata, 201, OF_error, "no data elements found");
    if (c.bad()) {
        enum cxr_status st =
            c == EC_StreamNotifyClient
                ? cxr_seterr(err, CXR_ERR_DICOM_PARSE,
                             "%s: not readable as DICOM: data ends early (truncated)", name)
                : cxr_dicom_cond(err, CXR_ERR_DICOM_PARSE, c, "%s: not readable as DICOM", name);
        cxr_dicom_instance_free(inst);
        return st;
    }
    inst->xfer = ds->getOriginalXfer();
    to_utf8(ds, name);
    fill_info(inst->file, scan, inst->xfer, &inst->info);
    *out = inst;
    return CXR_OK;
}

/* What bytes that failed the DICOM scan look like, for the message: a
 * common non-DICOM format by its signature, or nullptr. Only when there is
 * no "DICM" at offset 128 (a Part 10 file that fails is a broken DICOM). */
static const char *foreign_format(const uint8_t *p, size_t n)
{
    if (n >= 132 && std::memcmp(p + 128, "DICM", 4) == 0)
        return nullptr;
    struct sig {
        const char *bytes;
        size_t len;
        const char *what;
    };
    static const sig sigs[] = {
        {"\xFF\xD8\xFF", 3, "a JPEG image"},
        {"\x89PNG\r\n\x1A\n", 8, "a PNG image"},
        {"%PDF", 4, "a PDF document"},
        {"PK\x03\x04", 4, "a ZIP archive"},
        {"\x1F\x8B", 2, "a gzip file"},
        {"II*\0", 4, "a TIFF image"},
        {"MM\0*", 4, "a TIFF image"},
        {"GIF8", 4, "a GIF image"},
        {"BM", 2, "a BMP image"},
        {"<?xml", 5, "an XML document"},
    };
    for (const sig &s : sigs)
        if (n >= s.len && std::memcmp(p, s.bytes, s.len) == 0)
            return s.what;
    size_t look = n < 512 ? n : 512, printable = 0;
    for (size_t i = 0; i < look; i++)
        if ((p[i] >= 0x20 && p[i] < 0x7F) || p[i] == '\n' || p[i] == '\r' || p[i] == '\t')
            printable++;
    if (look >= 8 && printable == look)
        return "a text file";
    return nullptr;
}

/* The message of a failed scan: names the foreign format when it is one. */
static enum cxr_status scan_fail(char *err, enum cxr_status st, const char *name, const uint8_t *p,
                                 size_t n, const char *why)
{
    const char *other = foreign_format(p, n);
    if (other)
        return cxr_seterr(err, st, "%s: not a DICOM file: it looks like %s (%s)", name, other, why);
    if (n < 132 || std::memcmp(p + 128, "DICM", 4) != 0)
        return cxr_seterr(err, st,
                          "%s: not readable as DICOM (no DICM preamble, and not a raw DICOM "
                          "data set either: %s)",
                          name, why);
    return cxr_seterr(err, st, "%s: not readable as DICOM: %s", name, why);
}

static struct cxr_dicom_instance *new_instance(const char *name)
{
    auto *inst =
        static_cast<struct cxr_dicom_instance *>(std::calloc(1, sizeof(struct cxr_dicom_instance)));
    if (!inst)
        return nullptr;
    inst->file = new (std::nothrow) DcmFileFormat();
    if (!inst->file) {
        std::free(inst);
        return nullptr;
    }
    cxr_dicom_copy_str(inst->name, sizeof inst->name, name);
    return inst;
}

/* The most pixel bytes a frame may hold under `rules` (NULL: the decoder's
 * own limit): Rows x Columns within the gate's maxima and the decoder's
 * CXR_DICOM_MAX_PIXELS, 16 bits a sample, three samples where the gate admits
 * colour Secondary Capture. What a deflated data set may inflate to follows
 * from it (cxr_dicom_scan). */
static uint64_t max_pixel_bytes(const struct cxr_conf_gate *rules)
{
    uint64_t pixels = CXR_DICOM_MAX_PIXELS, samples = 1;
    if (rules) {
        uint64_t r = rules->max_rows > 0 ? static_cast<uint64_t>(rules->max_rows) : 0;
        uint64_t c = rules->max_cols > 0 ? static_cast<uint64_t>(rules->max_cols) : 0;
        if (r * c < pixels)
            pixels = r * c;
        if (rules->allow_secondary_capture)
            samples = 3;
    }
    return pixels * samples * 2;
}

/* Scans and parses bytes in memory. DCMTK copies every value out of the
 * buffer while it reads (a buffer stream has no lazy loading). */
static enum cxr_status load_bytes(const uint8_t *p, size_t n, const char *name,
                                  const struct cxr_conf_gate *rules,
                                  struct cxr_dicom_instance **out, char *err)
{
    struct cxr_dicom_scan_result scan;
    char why[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_dicom_scan(p, n, max_pixel_bytes(rules), &scan, why);
    if (st != CXR_OK)
        return scan_fail(err, st, name, p, n, why);
    struct cxr_dicom_instance *inst = new_instance(name);
    if (!inst)
        return cxr_seterr(err, CXR_ERR_NOMEM, "%s: out of memory", name);
    DcmInputBufferStream in;
    in.setBuffer(p, static_cast<offile_off_t>(n));
    in.setEos();
    inst->file->transferInit();
    /* Without a meta header DCMTK would guess the encoding; tell it what the
     * scan found, so that it reads exactly what was checked. */
    OFCondition c = inst->file->read(in, scan.has_meta ? EXS_Unknown : scan.xfer, EGL_noChange,
                                     DCM_MaxReadLength);
    inst->file->transferEnd();
    return finish(inst, c, &scan, out, err);
}

/* Reads the whole of fd (size n) into a new buffer; NULL with errno on failure. */
static uint8_t *read_all(int fd, size_t n)
{
    auto *buf = static_cast<uint8_t *>(std::malloc(n ? n : 1));
    if (!buf)
        return nullptr;
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, buf + got, n - got, static_cast<off_t>(got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = EIO; /* the file shrank under us */
            std::free(buf);
            return nullptr;
        }
        got += static_cast<size_t>(k);
    }
    return buf;
}

extern "C" enum cxr_status cxr_dicom_instance_load_memory(const void *buf, size_t len,
                                                          const char *name,
                                                          struct cxr_dicom_instance **out,
                                                          char *err)
{
    return cxr_dicom_instance_load_memory_within(buf, len, name, nullptr, out, err);
}

extern "C" enum cxr_status cxr_dicom_instance_load_file(const char *path,
                                                        struct cxr_dicom_instance **out, char *err)
{
    return cxr_dicom_instance_load_file_within(path, nullptr, out, err);
}

extern "C" enum cxr_status cxr_dicom_instance_load_memory_within(const void *buf, size_t len,
                                                                 const char *name,
                                                                 const struct cxr_conf_gate *rules,
                                                                 struct cxr_dicom_instance **out,
                                                                 char *err)
{
    if (out)
        *out = nullptr;
    return cxr_dicom_guard(
        err, [&]() -> enum cxr_status {
            if (!out || (!buf && len > 0))
                return cxr_seterr(err, CXR_ERR_INVALID_ARG, "load_memory: NULL argument");
            cxr_dicom_global_init();
            const char *label = name && *name ? name : "(memory)";
            if (len > CXR_DICOM_MAX_INPUT_BYTES)
                return cxr_seterr(err, CXR_ERR_LIMIT,
                                  "%s: %zu bytes is larger than the %zu-byte limit", label, len,
                                  CXR_DICOM_MAX_INPUT_BYTES);
            return load_bytes(static_cast<const uint8_t *>(buf), len, label, rules, out, err);
        });
}

extern "C" enum cxr_status cxr_dicom_instance_load_file_within(const char *path,
                                                               const struct cxr_conf_gate *rules,
                                                               struct cxr_dicom_instance **out,
                                                               char *err)
{
    if (out)
        *out = nullptr;
    return cxr_dicom_guard(
        err, [&]() -> enum cxr_status {
            if (!out || !path)
                return cxr_seterr(err, CXR_ERR_INVALID_ARG, "load_file: NULL argument");
            cxr_dicom_global_init();
            struct stat sb;
            enum cxr_status ost;
            int fd = cxr_file_open_regular(path, &sb, &ost, err); /* never waits on a FIFO */
            if (fd < 0)
                return ost;
            size_t n = static_cast<size_t>(sb.st_size);
            if (static_cast<uint64_t>(sb.st_size) > CXR_DICOM_MAX_INPUT_BYTES) {
                close(fd);
                return cxr_seterr(err, CXR_ERR_LIMIT,
                                  "%s: %zu bytes is larger than the %zu-byte limit", path, n,
                                  CXR_DICOM_MAX_INPUT_BYTES);
            }
            if (n == 0) {
                close(fd);
                return cxr_seterr(err, CXR_ERR_DICOM_PARSE, "%s: empty file", path);
            }
            /* The file is read once whole for the structural scan and released;
             * DCMTK then parses the file itself, leaving values above
             * DCM_MaxReadLength (the pixel data) on disk until they are used, so the
             * big buffers never exist twice. A file that changes between the two
             * reads is refused (size and modification time are compared). */
            uint8_t *bytes = read_all(fd, n);
            if (!bytes) {
                int e = errno;
                close(fd);
                return cxr_seterr(err, e == ENOMEM ? CXR_ERR_NOMEM : CXR_ERR_IO,
                                  "%s: cannot read: %s", path, std::strerror(e));
            }
            struct cxr_dicom_scan_result scan;
            char why[CXR_ERRLEN] = "";
            enum cxr_status st = cxr_dicom_scan(bytes, n, max_pixel_bytes(rules), &scan, why);
            if (st != CXR_OK) {
                st = scan_fail(err, st, path, bytes, n, why);
                std::free(bytes);
                close(fd);
                return st;
            }
            std::free(bytes);
            struct cxr_dicom_instance *inst = new_instance(path);
            if (!inst) {
                close(fd);
                return cxr_seterr(err, CXR_ERR_NOMEM, "%s: out of memory", path);
            }
            OFCondition c =
                inst->file->loadFile(OFFilename(path), scan.has_meta ? EXS_Unknown : scan.xfer,
                                     EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
            struct stat sb2;
            bool changed = fstat(fd, &sb2) != 0 || sb2.st_size != sb.st_size ||
                           sb2.st_mtim.tv_sec != sb.st_mtim.tv_sec ||
                           sb2.st_mtim.tv_nsec != sb.st_mtim.tv_nsec;
            struct stat sb3;
            changed = changed || stat(path, &sb3) != 0 || sb3.st_ino != sb.st_ino ||
                      sb3.st_dev != sb.st_dev;
            close(fd);
            if (changed && c.good())
                c = makeOFCondition(OFM_dcmdata, 202, OF_error,
                                    "the file changed while it was being read");
            return finish(inst, c, &scan, out, err);
        });
}

extern "C" void cxr_dicom_instance_free(struct cxr_dicom_instance *inst)
{
    if (!inst)
        return;
    cxr_dicom_guard_void("cxr_dicom_instance_free", [&] { delete inst->file; });
    std::free(inst);
}

extern "C" const struct cxr_dicom_info *
cxr_dicom_instance_info(const struct cxr_dicom_instance *inst)
{
    return inst ? &inst->info : nullptr;
}
