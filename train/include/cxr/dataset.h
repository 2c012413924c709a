/* cxr/dataset.h — labeled training and evaluation data: a directory of class
 * folders, a tar/tar.gz/tar.xz/zip archive of one, or a CSV manifest, read
 * into 8-bit presentation images with labels and patient groups; the
 * patient-grouped, stratified train/validation split; and the PNG/JPEG image
 * codecs the loader and the report use.
 *
 * DICOM entries go through cxr_dicom_instance_load_memory → cxr_dicom_gate →
 * cxr_dicom_instance_present: the presentation pipeline inference uses, so
 * training and inference see the same pixels. PNG and JPEG become 8-bit grey
 * (RGB through the ITU-R 601 luma that PIL's convert("L") uses).
 *
 * Archives are streamed entry by entry (libarchive) and never extracted to
 * disk; entry names that are absolute or contain a ".." component are
 * refused. Every entry that cannot be used (unreadable, not an image, no
 * label, refused by the gate) is kept in the skipped list with the reason:
 * one bad file never stops a load.
 *
 * Threads: a dataset is immutable after cxr_train_dataset_load and may be
 * read from several threads. The loader itself decodes on `threads` worker
 * threads. cxr_dicom_global_init() is called by the loader.
 * Errors: detail text in `err` (CXR_ERRLEN bytes, may be NULL).
 */
#ifndef CXR_DATASET_H
#define CXR_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cxr/conf.h"
#include "cxr/nn.h"
#include "cxr/status.h"
#include "cxr/triage.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_TRAIN_DATASET_MAX_ENTRY_BYTES (256ull << 20) /* default cap on one entry */
#define CXR_TRAIN_DATASET_MAX_ENTRIES     1000000u       /* default cap on entries read */
#define CXR_TRAIN_IMAGE_MAX_PIXELS        (1ull << 26)   /* a PNG/JPEG image (as a DICOM frame) */

enum cxr_train_image_kind {
    CXR_TRAIN_IMAGE_DICOM = 0,
    CXR_TRAIN_IMAGE_PNG = 1,
    CXR_TRAIN_IMAGE_JPEG = 2
};

/* Where a sample's patient group came from. */
enum cxr_train_patient_source {
    CXR_TRAIN_PATIENT_NONE = 0,     /* unknown: the sample is a group of its own */
    CXR_TRAIN_PATIENT_MANIFEST = 1, /* the manifest's third column */
    CXR_TRAIN_PATIENT_DICOM = 2,    /* PatientID (0010,0020) */
    CXR_TRAIN_PATIENT_FILENAME = 3  /* the Kermany file-name pattern (see below) */
};

/* One usable image. All memory is owned by the dataset. */
struct cxr_train_sample {
    char *name;    /* entry path relative to the source, '/'-separated
                      ("PNEUMONIA/person1_bacteria_1.jpeg"); the manifest's path */
    char *patient; /* patient group key; "" when unknown (source NONE) */
    enum cxr_train_patient_source patient_source;
    int32_t label; /* class index into the dataset's class_names */
    enum cxr_train_image_kind kind;
    int32_t width, height;               /* of `pixels` */
    int32_t source_width, source_height; /* before the memory cap's downscale */
    uint8_t *pixels;                     /* 8-bit presentation image, width*height, row-major */
    double age_years;                    /* DICOM PatientAge (or birth/study date); NaN unknown */
    char sha256[65];                     /* hex SHA-256 of the entry's bytes */
};

/* An entry that was not used, and why. */
struct cxr_train_skip {
    char *name;
    enum cxr_status status; /* CXR_ERR_DICOM_GATE, CXR_ERR_NN_IMAGE, CXR_ERR_LIMIT, ... */
    char *reason;           /* "no class folder (expected one of NORMAL, PNEUMONIA)" */
};

struct cxr_train_dataset {
    char *source;         /* the path given */
    char source_kind[32]; /* "directory", "manifest", or libarchive's format name */
    int32_t num_classes;
    char class_names[CXR_NN_MAX_CLASSES][32];
    struct cxr_train_sample *samples; /* sorted by name (bytewise) */
    size_t count;
    struct cxr_train_skip *skipped; /* in reading order */
    size_t skipped_count;
    int64_t class_counts[CXR_NN_MAX_CLASSES];
    size_t patient_groups;               /* split groups (patients, duplicates merged) */
    size_t samples_with_patient;         /* samples whose patient is known */
    size_t duplicate_samples;            /* samples whose bytes equal an earlier sample's */
    double age_min_years, age_max_years; /* over samples with a known age; NaN none */
    char digest[72];                     /* "sha256:<hex>" — see cxr_train_dataset_load */
    uint64_t bytes_read;
    double load_seconds;
};

/* Progress while loading: entries seen so far and how many were skipped.
 * Called from the loading thread, at most every 64 entries and at the end. */
typedef void (*cxr_train_dataset_progress_fn)(void *ctx, uint64_t entries, uint64_t skipped);

struct cxr_train_dataset_options {
    /* Classes from the model metadata (names, count); the input size bounds
     * stored images: an image larger than max_scale x the input size on
     * either side is downscaled (antialiased, aspect kept) to fit. */
    const struct cxr_nn_model_meta *meta;
    double max_scale; /* default 2.0 */
    /* Extra folder/label names, "name=CLASS" pairs separated by ',' ';' or
     * whitespace (CLASS a class name or index), e.g. "healthy=NORMAL
     * opacity=PNEUMONIA". Class names and indexes always work. Names compare
     * case-insensitively. NULL or "": none. */
    const char *label_map;
    /* Gate for DICOM entries; NULL: cxr_train_dataset_gate_defaults. No age
     * check is made (the age range of the data is measured instead). */
    const struct cxr_conf_gate *gate;
    /* Manifest rows may name files outside the manifest's folder (absolute
     * paths, "..", symbolic links leading out); false: such rows are
     * skipped, so that a manifest cannot make the loader read, say,
     * /etc/passwd. */
    bool allow_outside;
    int32_t threads;          /* decoding threads; 0: online CPUs, at most 8 */
    uint64_t max_entry_bytes; /* 0: CXR_TRAIN_DATASET_MAX_ENTRY_BYTES */
    uint32_t max_entries;     /* 0: CXR_TRAIN_DATASET_MAX_ENTRIES */
    cxr_train_dataset_progress_fn progress;
    void *progress_ctx;
};
/* Defaults for a model's metadata (which the options keep a pointer to). */
void cxr_train_dataset_options_init(struct cxr_train_dataset_options *o,
                                    const struct cxr_nn_model_meta *meta);

/* Permissive gate rules for training data: CR, DX, OT (and Secondary
 * Capture) images, body part and view position may be absent (a view that
 * is present must be PA or AP), For Processing refused, 32..16384 rows and
 * columns, no age policy. */
void cxr_train_dataset_gate_defaults(struct cxr_conf_gate *g);

/* Reads `path`:
 *   - a directory: every regular file below it (dot files and __MACOSX
 *     ignored; symbolic links to files followed, to directories not);
 *   - a file ending in ".csv": a manifest, one "path,label[,patient_id]" row
 *     per image, RFC 4180 quoting, optional header row ("path,label,..."),
 *     paths relative to the manifest's folder and inside it (no absolute
 *     path, no ".." component, no symbolic link leading out; unless
 *     allow_outside), regular files only (a FIFO or device is skipped, never
 *     waited on), labels a class name, an alias of label_map, or a class
 *     index;
 *   - any other file: an archive libarchive reads (tar, tar.gz, tar.xz,
 *     tar.bz2, tar.zst, zip, 7z, ...), streamed.
 * For folders and archives the label is the innermost folder of the entry's
 * path that names a class ("train/NORMAL/x.jpeg" → NORMAL).
 * Image type is detected from the content: "DICM" at offset 128, the PNG or
 * JPEG signature, else a DICOM parse is tried (files without preamble).
 * Patient groups: the manifest's patient_id, else DICOM PatientID, else the
 * Kermany file-name rule (case-insensitive, on the file's base name):
 *   "person<N>_..."                → "person<N>"
 *   "[NORMAL<k>-]IM-<NNNN>-..."    → "IM-<NNNN>" / "NORMAL<k>-IM-<NNNN>"
 * (IM-0629 and NORMAL2-IM-0629 are different patients: the numbering restarts
 * in the NORMAL2 batch), else unknown.
 * The digest is SHA-256 over "<name>\t<class name>\t<sha256 of bytes>\n" of
 * every sample in name order: the same data gives the same digest whether it
 * comes as a folder, a tar or a zip.
 * Fails (CXR_ERR_TRIAGE_ARCHIVE) when the source cannot be read at all, the
 * archive is corrupt beyond one entry, or no sample was usable (the message
 * then gives the first reasons); CXR_ERR_LIMIT beyond max_entries. On
 * failure *out == NULL. Free with cxr_train_dataset_free. */
enum cxr_status cxr_train_dataset_load(const char *path,
                                       const struct cxr_train_dataset_options *opt,
                                       struct cxr_train_dataset **out, char *err);
void cxr_train_dataset_free(struct cxr_train_dataset *ds);

/* The patient-group key rule above for one file name ("" when none matches);
 * writes at most cap bytes including the NUL. */
void cxr_train_patient_from_filename(const char *name, char *out, size_t cap);

/* ------------------------------------------------------------------ split */

/* Indices into ds->samples for each side, ascending. */
struct cxr_train_split {
    int32_t *train, *val;
    size_t n_train, n_val;
    int64_t train_counts[CXR_NN_MAX_CLASSES], val_counts[CXR_NN_MAX_CLASSES];
    size_t train_groups, val_groups;
    double val_fraction;
    uint64_t seed;
};

/* A seeded split stratified by class and grouped: samples of one patient,
 * and byte-identical samples, always land on the same side. Per class the
 * groups (labelled by their majority class) are shuffled with the seed and
 * each goes to validation while that brings the class's validation count
 * closer to val_fraction of the class. val_fraction 0 puts everything in
 * train (for an explicit validation set); otherwise it must be in (0, 1).
 * Deterministic for (dataset, val_fraction, seed). Release with
 * cxr_train_split_release. */
enum cxr_status cxr_train_dataset_split(const struct cxr_train_dataset *ds, double val_fraction,
                                        uint64_t seed, struct cxr_train_split *out, char *err);
void cxr_train_split_release(struct cxr_train_split *s);

/* For an explicit validation set: how many samples of `b` share a known
 * patient or their exact bytes with some sample of `a` (0 = no leak;
 * (size_t)-1 when out of memory). */
size_t cxr_train_dataset_overlap(const struct cxr_train_dataset *a,
                                 const struct cxr_train_dataset *b);

/* ------------------------------------------------------------------ image files */

/* Decodes a PNG (any bit depth/colour type; 16-bit rounded to 8, alpha
 * dropped) or JPEG (grey or YCbCr/RGB; CMYK unsupported) into 8-bit grey,
 * RGB through luma (R*19595 + G*38470 + B*7471 + 32768) >> 16. Sides up to
 * 16384 and at most CXR_TRAIN_IMAGE_MAX_PIXELS pixels, checked on the
 * header before anything is decoded (CXR_ERR_LIMIT beyond: a small file may
 * declare a huge image, a decompression bomb); memory beyond the grey image
 * is one row (an interlaced colour PNG: one RGB image). Corrupt or truncated
 * data is an error (CXR_ERR_NN_IMAGE), never a half-grey image. *pixels is
 * malloc'd (caller frees); NULL on failure. */
enum cxr_status cxr_train_image_decode(const void *buf, size_t len, uint8_t **pixels,
                                       int32_t *width, int32_t *height, char *err);

/* Encodes an 8-bit grey image as PNG into *out (malloc'd, caller frees). */
enum cxr_status cxr_train_image_encode_png(const uint8_t *pixels, int32_t width, int32_t height,
                                           int32_t stride, void **out, size_t *len, char *err);

#ifdef __cplusplus
}
#endif
#endif
