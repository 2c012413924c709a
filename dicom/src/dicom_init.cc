/* dicom_init.cc — module start-up (codec registration, DCMTK logging) and the
 * small helpers every DCMTK-facing file of cxr_dicom shares (dicom_internal.h). */
#include "dicom_internal.h"

#include <cstdio>
#include <cstring>
#include <mutex>

#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>
#include <openjpeg.h>

#include "j2k_codec.h"

static std::once_flag g_init_once;
static char g_codecs[96];

/* Registers DCMTK's own decoders once per process (DCMTK keeps the codec list
 * for the process's lifetime; we never deregister: other threads may decode).
 * In Orthanc they are Orthanc's own, registered already, and a second
 * registration changes nothing. JPEG 2000 is decoded privately (frame.cc,
 * j2k_codec.h): registering it would change what Orthanc itself decodes. */
static void init_once(void)
{
    /* DCMTK logs through oflog to stderr by default; our own log carries what
     * matters (the status text names DCMTK's error), so keep DCMTK quiet
     * unless we are debugging. */
    OFLog::configure(cxr_log_get_level() >= CXR_LOG_DEBUG ? OFLogger::WARN_LOG_LEVEL
                                                          : OFLogger::FATAL_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();   /* JPEG: baseline, extended, lossless (14, 14 SV1) */
    DJLSDecoderRegistration::registerCodecs(); /* JPEG-LS lossless and near-lossless */
    DcmRLEDecoderRegistration::registerCodecs();

    std::snprintf(g_codecs, sizeof g_codecs, "JPEG JPEG-LS RLE JPEG2000%s deflate",
                  cxr_j2k_have_htj2k() ? " HTJ2K" : "");
}

extern "C" void cxr_dicom_global_init(void)
{
    cxr_dicom_guard_void("cxr_dicom_global_init", [] { std::call_once(g_init_once, init_once); });
}

extern "C" const char *cxr_dicom_codecs_built(void)
{
    cxr_dicom_global_init();
    return g_codecs;
}

extern "C" const char *cxr_dicom_dcmtk_version(void) { return OFFIS_DCMTK_VERSION; }

/* ------------------------------------------------------------------ helpers */

enum cxr_status cxr_dicom_cond(char *err, enum cxr_status st, const OFCondition &cond,
                               const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        int k = std::vsnprintf(err, CXR_ERRLEN, fmt, ap);
        va_end(ap);
        if (k >= 0 && k < CXR_ERRLEN - 3) {
            size_t used = static_cast<size_t>(k);
            std::snprintf(err + used, CXR_ERRLEN - used, ": %s", cond.text());
        }
    }
    return st;
}

void cxr_dicom_copy_str(char *dst, size_t size, const char *src)
{
    if (!dst || size == 0)
        return;
    if (!src)
        src = "";
    size_t n = std::strlen(src);
    if (n >= size) {
        n = size - 1;
        /* do not cut a UTF-8 sequence in half: back up over continuation bytes */
        while (n > 0 && (static_cast<unsigned char>(src[n]) & 0xC0) == 0x80)
            n--;
    }
    std::memcpy(dst, src, n);
    dst[n] = '\0';
}

void cxr_dicom_get_str(DcmItem *item, const DcmTagKey &tag, char *dst, size_t size, long index)
{
    if (!dst || size == 0)
        return;
    dst[0] = '\0';
    if (!item)
        return;
    OFString v;
    OFCondition c =
        index < 0 ? item->findAndGetOFStringArray(tag, v, OFFalse)
                  : item->findAndGetOFString(tag, v, static_cast<unsigned long>(index), OFFalse);
    if (c.bad())
        return;
    size_t b = 0, e = v.length();
    while (b < e && (v[b] == ' ' || v[b] == '\0'))
        b++;
    while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\0'))
        e--;
    OFString t = v.substr(b, e - b);
    cxr_dicom_copy_str(dst, size, t.c_str());
}

/* Transfer syntaxes DCMTK 3.6.7 does not know, named for error messages
 * (PS3.6 Table A-1). */
static const struct {
    const char *uid, *name;
} k_extra_ts[] = {
    {"1.2.840.10008.1.2.1.98", "Encapsulated Uncompressed Explicit VR Little Endian"},
    {"1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 Image Compression (Lossless Only)"},
    {"1.2.840.10008.1.2.4.202",
     "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)"},
    {"1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000 Image Compression"},
    {"1.2.840.10008.1.2.4.204", "JPIP HTJ2K Referenced"},
    {"1.2.840.10008.1.2.4.205", "JPIP HTJ2K Referenced Deflate"},
    {"1.2.840.10008.1.2.4.110", "JPEG XL Lossless"},
    {"1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression"},
    {"1.2.840.10008.1.2.4.112", "JPEG XL"},
    {"1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression"},
    {"1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video"},
    {"1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1"},
    {"1.2.840.10008.1.2.7.1", "SMPTE ST 2110-20 Uncompressed Progressive Active Video"},
};

const char *cxr_dicom_ts_name(const char *uid)
{
    if (!uid || !*uid)
        return "no transfer syntax";
    for (const auto &t : k_extra_ts)
        if (std::strcmp(t.uid, uid) == 0)
            return t.name;
    DcmXfer x(uid);
    if (x.getXfer() != EXS_Unknown)
        return x.getXferName();
    return "unknown transfer syntax";
}

bool cxr_dicom_ts_is_htj2k(const char *uid)
{
    return uid && (std::strcmp(uid, "1.2.840.10008.1.2.4.201") == 0 ||
                   std::strcmp(uid, "1.2.840.10008.1.2.4.202") == 0 ||
                   std::strcmp(uid, "1.2.840.10008.1.2.4.203") == 0);
}
