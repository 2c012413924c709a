/* dicom_internal.h — helpers shared by the DCMTK layer of cxr_dicom (C++ only).
 *
 * Nothing here crosses the public header. Every extern "C" entry point of the
 * module wraps its body in cxr_dicom_guard() (all C++ exceptions become a
 * status) and turns DCMTK failures into a status with cxr_dicom_cond() (the
 * status plus DCMTK's own text). Errors are written into the caller's `err`
 * buffer (CXR_ERRLEN bytes, may be NULL).
 */
#ifndef CXR_DICOM_INTERNAL_H
#define CXR_DICOM_INTERNAL_H

#ifndef __cplusplus
#error "dicom_internal.h is for the C++ (DCMTK) layer only"
#endif

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>

#include "cxr/dicom.h"
#include "cxr/log.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

/* Hard limits of the reader, stated in docs/conformance-input.md. */
#define CXR_DICOM_MAX_INPUT_BYTES   ((size_t)2 << 30)   /* 2 GiB: bigger files are refused */
#define CXR_DICOM_MAX_SEQ_DEPTH     32                  /* nested sequences */
#define CXR_DICOM_MAX_ELEMENTS      1000000u            /* elements + items in one dataset */
#define CXR_DICOM_MAX_PIXELS        ((uint64_t)1 << 26) /* rows*columns a frame may have (67 M) */
/* A Deflated data set inflates to at most this before its Pixel Data, and
 * this beyond the pixels its geometry declares (parse_guard.cc). */
#define CXR_DICOM_INFLATE_ALLOWANCE ((uint64_t)16 << 20)

/* One parsed dataset (the opaque handle of cxr/dicom.h). */
struct cxr_dicom_instance {
    DcmFileFormat *file;        /* owns meta header and dataset */
    struct cxr_dicom_info info; /* header values copied out at load time */
    E_TransferSyntax xfer;      /* DCMTK's view of the dataset encoding (EXS_Unknown if the
                                   meta header names a syntax DCMTK 3.6.7 does not know) */
    char name[256];             /* file name or caller's label, for messages */
};

/* What the pre-scan (parse_guard.cc) learnt about a byte stream. */
struct cxr_dicom_scan_result {
    bool has_preamble;              /* 128 bytes + "DICM" */
    bool has_meta;                  /* group 0002 present */
    char ts_uid[CXR_DICOM_UID_LEN]; /* (0002,0010), "" when absent */
    E_TransferSyntax xfer;          /* the dataset encoding DCMTK is to read */
    size_t dataset_offset;          /* first byte after the meta header */
    unsigned long elements;         /* elements + items + fragments seen */
};

/* Walks the DICOM structure of p[0..n) without recursion limits being
 * DCMTK's problem: refuses sequences nested deeper than
 * CXR_DICOM_MAX_SEQ_DEPTH, more than CXR_DICOM_MAX_ELEMENTS elements, and any
 * length that runs past its container (truncated files), before DCMTK sees
 * the bytes. A Deflated data set is inflated first, to at most
 * CXR_DICOM_INFLATE_ALLOWANCE bytes before its Pixel Data, the pixel bytes
 * its Rows, Columns, Samples per Pixel, Bits Allocated and Number of Frames
 * declare (no more than max_pixel_bytes) and the allowance after them;
 * beyond that CXR_ERR_LIMIT (a decompression bomb) before more is held.
 * CXR_ERR_DICOM_PARSE / CXR_ERR_LIMIT with the reason in err. */
enum cxr_status cxr_dicom_scan(const uint8_t *p, size_t n, uint64_t max_pixel_bytes,
                               struct cxr_dicom_scan_result *r, char *err);

/* A failed OFCondition as a status: "<context>: <DCMTK's text>". */
enum cxr_status cxr_dicom_cond(char *err, enum cxr_status st, const OFCondition &cond,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Runs `body` (which returns enum cxr_status) and turns every C++ exception
 * into a status: std::bad_alloc → CXR_ERR_NOMEM, anything else →
 * CXR_ERR_INTERNAL with the exception text. Use it around the whole body of
 * each extern "C" function that returns a status. */
template <class F> enum cxr_status cxr_dicom_guard(char *err, F &&body) noexcept
{
    try {
        return body();
    } catch (const std::bad_alloc &) {
        return cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
    } catch (const std::exception &e) {
        return cxr_seterr(err, CXR_ERR_INTERNAL, "internal error (C++ exception: %s)", e.what());
    } catch (...) {
        return cxr_seterr(err, CXR_ERR_INTERNAL, "internal error (unknown C++ exception)");
    }
}

/* The same for extern "C" functions that return nothing: the exception is
 * logged (module "dicom", level ERROR) and swallowed. */
template <class F> void cxr_dicom_guard_void(const char *where, F &&body) noexcept
{
    try {
        body();
    } catch (const std::exception &e) {
        cxr_log(CXR_LOG_ERROR, "dicom", "%s: C++ exception: %s", where, e.what());
    } catch (...) {
        cxr_log(CXR_LOG_ERROR, "dicom", "%s: unknown C++ exception", where);
    }
}

/* Copies `src` into dst[size] (size >= 1), truncating at a UTF-8 character
 * boundary; src NULL gives "". */
void cxr_dicom_copy_str(char *dst, size_t size, const char *src);

/* Copies value `index` of a string-valued tag of `item` (trimmed of leading
 * and trailing spaces) into dst[size]; "" when absent or empty. With index -1
 * all values joined with '\'. */
void cxr_dicom_get_str(DcmItem *item, const DcmTagKey &tag, char *dst, size_t size, long index = 0);

/* The name of a transfer syntax ("JPEG 2000 Image Compression (Lossless
 * Only)"), including UIDs DCMTK 3.6.7 does not know (HTJ2K, JPEG XL, ...);
 * "unknown transfer syntax" otherwise. Never NULL. */
const char *cxr_dicom_ts_name(const char *uid);

/* Whether a transfer syntax UID is High-Throughput JPEG 2000 (.4.201–.4.203). */
bool cxr_dicom_ts_is_htj2k(const char *uid);

#endif
