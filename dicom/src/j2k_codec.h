/* j2k_codec.h — JPEG 2000 decoding through OpenJPEG 2.5 (C++ internal).
 *
 * DCMTK 3.6.7 has no JPEG 2000 codec, and none is registered with its
 * process-wide DcmCodecList: a process that shares DCMTK with us (Orthanc,
 * which loads the plugin) must decode exactly what it decoded without us.
 * frame.cc hands the first frame's bytes of JPEG 2000 (.4.90/.4.91) and
 * HTJ2K (.4.201-.4.203, which OpenJPEG >= 2.5 decodes) to cxr_j2k_decode()
 * directly.
 */
#ifndef CXR_J2K_CODEC_H
#define CXR_J2K_CODEC_H

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cxr/status.h"

class DcmPixelSequence;

/* What the caller expects (from the dataset); checked against the codestream
 * before anything is written. */
struct cxr_j2k_target {
    uint32_t rows, columns;
    uint32_t samples;        /* 1 or 3 */
    uint32_t bits_allocated; /* 8 or 16 */
};

/* What the codestream holds. */
struct cxr_j2k_decoded {
    uint32_t precision; /* bits per sample in the codestream (<= 16) */
    bool is_signed;
};

/* Whether the linked OpenJPEG decodes HTJ2K (version >= 2.5). */
bool cxr_j2k_have_htj2k(void);

/* Decodes one JPEG 2000 codestream (raw J2K, or a JP2 file some writers put
 * in DICOM) held in memory into `out` (out_size bytes): samples of
 * bits_allocated bits, little-endian host order, interleaved (Planar
 * Configuration 0), codestream values as they are (signed values in two's
 * complement). Rows, columns, component count, sub-sampling and precision
 * (<= bits_allocated, <= 16) are checked against `t` after the header is read
 * and before the image is decoded. Multi-tile codestreams are fine. Errors:
 * CXR_ERR_DICOM_DECODE with OpenJPEG's text, CXR_ERR_LIMIT if out_size is too
 * small. Thread-safe (no shared state). */
enum cxr_status cxr_j2k_decode(const uint8_t *data, size_t len, const struct cxr_j2k_target *t,
                               void *out, size_t out_size, struct cxr_j2k_decoded *got, char *err);

/* Collects the compressed bytes of frame `frame` (0-based) of an
 * encapsulated JPEG 2000 pixel sequence: uses the Basic Offset Table when
 * present, one fragment per frame when the counts agree, else frame starts
 * found by the SOC marker. Fails with CXR_ERR_DICOM_DECODE naming what is
 * missing. */
enum cxr_status cxr_j2k_frame_bytes(DcmPixelSequence *seq, uint32_t frame, uint32_t frames,
                                    std::vector<uint8_t> &bytes, char *err);

#endif
