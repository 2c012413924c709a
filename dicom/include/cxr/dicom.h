/* cxr/dicom.h — everything DICOM: parse, pixel decode, presentation, gating,
 * SR writing (and, later, the SCP/SCU). C outside, DCMTK (C++) inside; no
 * DCMTK type crosses this header. Knows nothing of neural nets.
 *
 * Threads: an instance is used by one thread at a time; different instances
 * may be used concurrently. cxr_dicom_global_init() must have run once
 * (it registers the codecs) before any other call; it is idempotent and
 * thread-safe.
 * Errors: every function catches all C++ exceptions and returns a status; the
 * detail goes into `err` (CXR_ERRLEN bytes, may be NULL).
 */
#ifndef CXR_DICOM_H
#define CXR_DICOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/conf.h"
#include "cxr/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_DICOM_UID_LEN 65 /* 64 characters + NUL */

/* Registers DCMTK's decoders (JPEG, JPEG-LS, RLE) and ours (JPEG 2000 via
 * OpenJPEG) and quiets DCMTK's own logger. Safe to call many times. */
void cxr_dicom_global_init(void);
/* Codecs built in, for `cxr-triage version` ("JPEG JPEG-LS RLE JPEG2000 HTJ2K deflate"). */
const char *cxr_dicom_codecs_built(void);
/* DCMTK version text. */
const char *cxr_dicom_dcmtk_version(void);

/* Header values of one instance, copied out of the dataset (NUL-terminated,
 * "" when absent, cut at a UTF-8 character boundary when too long; numbers 0
 * when absent). Text declared in another Specific Character Set is converted
 * to UTF-8 at load time, and specific_character_set then reads "ISO_IR 192";
 * where conversion is impossible the original bytes and set are kept.
 * Plain data: copy it freely. */
struct cxr_dicom_info {
    /* SOP common / file meta */
    char sop_class_uid[CXR_DICOM_UID_LEN];
    char sop_instance_uid[CXR_DICOM_UID_LEN];
    char transfer_syntax_uid[CXR_DICOM_UID_LEN];
    char specific_character_set[80];
    bool has_meta_header;
    /* patient */
    char patient_name[324];
    char patient_id[68];
    char issuer_of_patient_id[68];
    char patient_birth_date[12];
    char patient_sex[20];
    char patient_age[8];      /* AS, e.g. "004Y" */
    double patient_age_years; /* from PatientAge, else BirthDate and StudyDate; NaN unknown */
    /* study */
    char study_instance_uid[CXR_DICOM_UID_LEN];
    char study_date[12];
    char study_time[20];
    char study_id[20];
    char accession_number[20];
    char referring_physician_name[324];
    char study_description[68];
    char institution_name[68];
    /* series / image */
    char series_instance_uid[CXR_DICOM_UID_LEN];
    char modality[20];
    char body_part_examined[20];
    char view_position[20];
    char laterality[4];
    char presentation_intent_type[20]; /* "FOR PRESENTATION" / "FOR PROCESSING" / "" */
    char image_type[68];
    char photometric_interpretation[20];
    char manufacturer[68];
    uint16_t rows, columns;
    uint16_t bits_allocated, bits_stored, high_bit;
    uint16_t samples_per_pixel;
    uint16_t pixel_representation;
    int32_t number_of_frames; /* 1 when absent */
    bool has_pixel_data;
};

struct cxr_dicom_instance; /* opaque: one parsed dataset */

/* Reads a Part 10 file, or a file without preamble/meta header (implicit or
 * explicit VR little endian detected). The pixel data is not decoded, and
 * values larger than 4 KB (the pixel data) stay in the file until
 * _present/_decode reads them: keep the file in place until then. Before
 * DCMTK parses anything, the structure is checked with hard limits (file
 * <= 2 GiB, sequences nested <= 32 deep, <= 1 000 000 elements, every length
 * inside its container): truncated or hostile files are refused with
 * CXR_ERR_DICOM_PARSE / CXR_ERR_LIMIT, never a crash. On failure
 * *out == NULL; err names the file and the problem. Any thread. */
enum cxr_status cxr_dicom_instance_load_file(const char *path, struct cxr_dicom_instance **out,
                                             char *err);
/* The same from memory (a C-STORE payload, an Orthanc buffer); the values
 * are copied while parsing, the caller keeps the buffer and may free it on
 * return. `name` is used in messages. */
enum cxr_status cxr_dicom_instance_load_memory(const void *buf, size_t len, const char *name,
                                               struct cxr_dicom_instance **out, char *err);
/* The same two within the image size limits of `rules` (NULL: the decoder's
 * own, 2^26 pixels): a data set in the Deflated transfer syntax
 * (1.2.840.10008.1.2.1.99) is inflated to at most 16 MiB before its Pixel
 * Data, the bytes its Rows x Columns x Samples per Pixel x Bits Allocated x
 * Number of Frames declare (and no more than gate/max-rows x
 * gate/max-columns 16-bit pixels, three samples each where colour Secondary
 * Capture is admitted) and 16 MiB after them; beyond that it is refused
 * (CXR_ERR_LIMIT, "a decompression bomb?") without being held in memory. The
 * node, the Orthanc plugin, score and the training loader read through
 * these with their gate. */
enum cxr_status cxr_dicom_instance_load_file_within(const char *path,
                                                    const struct cxr_conf_gate *rules,
                                                    struct cxr_dicom_instance **out, char *err);
enum cxr_status cxr_dicom_instance_load_memory_within(const void *buf, size_t len, const char *name,
                                                      const struct cxr_conf_gate *rules,
                                                      struct cxr_dicom_instance **out, char *err);
void cxr_dicom_instance_free(struct cxr_dicom_instance *inst);
const struct cxr_dicom_info *cxr_dicom_instance_info(const struct cxr_dicom_instance *inst);

/* ------------------------------------------------------------------ gating */

/* Why an instance is or is not analysed. `pass` false: `reason` says why in
 * words a radiographer understands ("lateral view (ViewPosition LL)", "For
 * Processing image (raw detector data)"). `warning` may be set even when it
 * passes (age outside the intended population with policy WARN). */
struct cxr_dicom_gate_result {
    bool pass;
    char reason[256];
    char warning[256];
};

/* Decides from header values alone (no pixel decoding, no allocation sized
 * by the file): SOP class is an image (CR, DX for presentation/processing,
 * SC if allowed), modality, body part, view position, single frame,
 * monochrome, rows/cols within limits, bits sane, For Processing policy, age
 * policy against [age_min, age_max] years (NaN bounds: no age check). */
void cxr_dicom_gate(const struct cxr_dicom_info *info, const struct cxr_conf_gate *rules,
                    double age_min_years, double age_max_years, struct cxr_dicom_gate_result *res);

/* True when the image is one a chest radiograph triage is expected to look
 * at, whether or not the gate then admits it: an image (not an SR, a PDF,
 * ...) whose Modality is one of gate/modalities, or absent, or CR, DX or OT
 * when Secondary Capture is admitted — the images the Orthanc plugin reads
 * (it decides from the series' modality before reading). A CT, MR or US
 * image is not. The images for which an SR says "not analysed". */
bool cxr_dicom_gate_concerns(const struct cxr_dicom_info *info, const struct cxr_conf_gate *rules);

/* ------------------------------------------------------------------ presentation */

/* An 8-bit presentation image: what a radiologist would see, MONOCHROME2
 * (bright bone). `pixels` has width*height bytes, row-major, owned by the
 * image; free with cxr_dicom_image_release. */
struct cxr_dicom_image {
    int32_t width, height;
    uint8_t *pixels;
    char voi_used[128]; /* "window C=2048 W=4096 LINEAR", "VOI LUT 1 of 2", "min/max" */
};

/* Decodes the first frame (any supported transfer syntax; unsupported →
 * CXR_ERR_DICOM_TS naming it; frames over 2^26 pixels → CXR_ERR_LIMIT before
 * any allocation) and applies, in PS3.4 Annex N order: Modality
 * LUT (rescale slope/intercept or Modality LUT Sequence) → VOI (the first
 * window, with VOI LUT Function LINEAR/LINEAR_EXACT/SIGMOID; else the first
 * VOI LUT; else min/max of the values excluding Pixel Padding) → inversion for
 * MONOCHROME1 → 8 bits. Pixel padding becomes black. Colour (RGB, YBR)
 * becomes grey by luma (0.299 R + 0.587 G + 0.114 B) without VOI; PALETTE
 * COLOR → CXR_ERR_UNSUPPORTED. On failure *out is zeroed. See
 * docs/conformance-input.md. */
enum cxr_status cxr_dicom_instance_present(struct cxr_dicom_instance *inst,
                                           struct cxr_dicom_image *out, char *err);
void cxr_dicom_image_release(struct cxr_dicom_image *img);

/* The first frame's stored pixel values, decoded but untransformed (no LUT):
 * what the modality wrote, for checks and tools. `values` has
 * width*height*samples entries, row-major, samples interleaved, each the
 * stored value masked to Bits Stored and sign-extended when signed; owned by
 * the struct, free with cxr_dicom_pixels_release. `photometric` is that of the
 * decoded samples (JPEG/JPEG 2000 colour comes out as RGB). `note` names a
 * correction forced by the codestream (JPEG 2000 precision or signedness
 * disagreeing with the header), "" none. Same errors as _present. */
struct cxr_dicom_pixels {
    int32_t width, height, samples;
    int32_t *values;
    char photometric[20];
    char note[160];
};
enum cxr_status cxr_dicom_instance_decode(struct cxr_dicom_instance *inst,
                                          struct cxr_dicom_pixels *out, char *err);
void cxr_dicom_pixels_release(struct cxr_dicom_pixels *px);

/* ------------------------------------------------------------------ SR */

/* One image of the study as the SR reports it: analysed (probability and
 * finding), or received but not analysed (`not_analysed`, with `reason`;
 * probability and finding_present are then ignored). */
struct cxr_dicom_sr_image {
    char sop_class_uid[CXR_DICOM_UID_LEN];
    char sop_instance_uid[CXR_DICOM_UID_LEN];
    char series_instance_uid[CXR_DICOM_UID_LEN];
    double probability;   /* 0..1 of the finding (pneumonia) */
    bool finding_present; /* probability >= operating threshold */
    char warning[256];    /* e.g. age outside the intended population; "" none */
    bool not_analysed;    /* listed with Measurement not attempted and `reason` */
    char reason[256];     /* why it was not analysed (required when not_analysed) */
};

struct cxr_dicom_sr_request {
    /* patient/study module values copied into the SR (from the first image) */
    const struct cxr_dicom_info *study;
    const struct cxr_dicom_sr_image *images;
    uint32_t image_count; /* >= 1 */
    /* algorithm (TID 4019) */
    const char *algorithm_name;    /* "cxr-triage pneumonia" */
    const char *algorithm_version; /* model name + version */
    const char *model_sha256;      /* 64 hex */
    double operating_threshold;
    /* device observer (TID 1004) */
    const char *device_observer_uid; /* NULL/"" = a stable 2.25 UID derived from the host name */
    const char *device_name;         /* node/ae-title ("CXRTRIAGE" by default) */
    const char *manufacturer;
    const char *model_name;       /* "cxr-triage" */
    const char *software_version; /* product version */
    /* study-level triage result */
    const char *priority_name; /* "URGENT", ... */
    /* SR series */
    const char *series_instance_uid; /* NULL/"" = a new UID (cxr_dicom_uid_new) */
    const char *series_description;
    int32_t series_number;
    const char *institution_name; /* NULL/"" = the source's */
    bool enhanced_sr;             /* Enhanced SR IOD instead of Comprehensive SR */
    /* an earlier SR this one replaces (Predecessor Documents Sequence); NULL none */
    const char *predecessor_sop_instance_uid;
    const char *predecessor_series_instance_uid;
    bool complete; /* CompletionFlag COMPLETE (else PARTIAL) */
};

/* Builds the TID 1500 Imaging Measurement Report (as IHE AI Results shapes
 * it; see docs/conformance.md) and writes it as a Part 10 file to `path`
 * (temp + rename). `sop_instance_uid_out` (may be NULL, CXR_DICOM_UID_LEN)
 * receives the new SR's SOP Instance UID. */
enum cxr_status cxr_dicom_sr_write_file(const struct cxr_dicom_sr_request *req, const char *path,
                                        char *sop_instance_uid_out, char *err);
/* The same into memory; *buf is malloc'd, caller frees. */
enum cxr_status cxr_dicom_sr_write_memory(const struct cxr_dicom_sr_request *req, void **buf,
                                          size_t *len, char *sop_instance_uid_out, char *err);

/* True unless `sop_class_uid` names a storage class that holds no image
 * (structured reports, presentation states, encapsulated documents,
 * waveforms, RT plans and structure sets, registrations, segmentations,
 * DICOMDIR). An unknown class counts as an image. */
bool cxr_dicom_sop_class_is_image(const char *sop_class_uid);

/* A new globally unique UID: "2.25." + a random (version 4) UUID as decimal (PS3.5 B.2). */
void cxr_dicom_uid_new(char out[CXR_DICOM_UID_LEN]);

#ifdef __cplusplus
}
#endif
#endif
