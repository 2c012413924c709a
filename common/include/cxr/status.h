/* cxr/status.h — the one status enum shared by every module.
 *
 * Append-only: a value, once released, keeps its number forever (logs, metrics
 * and scripts match on it). Numbers are grouped in ranges per module:
 *     0        OK
 *     1..99    general (memory, I/O, arguments, limits)
 *   100..199   conf
 *   200..299   dicom
 *   300..399   nn
 *   400..499   triage (engine, job store, node)
 *   500..599   plugin
 * The human detail text of a failure lives on the object that failed
 * (cxr_<module>_<object>_last_error()), like curl's error buffer; the enum
 * only says which kind of failure it was.
 */
#ifndef CXR_STATUS_H
#define CXR_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

enum cxr_status {
    CXR_OK = 0,

    /* general */
    CXR_ERR_NOMEM = 1,       /* an allocation failed */
    CXR_ERR_INVALID_ARG = 2, /* a caller passed something the contract forbids */
    CXR_ERR_IO = 3,          /* read/write/open/fsync failed (errno text in detail) */
    CXR_ERR_NOT_FOUND = 4,   /* a named file, key or object does not exist */
    CXR_ERR_LIMIT = 5,       /* a size or count exceeds a hard cap */
    CXR_ERR_UNSUPPORTED = 6, /* valid input this build cannot handle */
    CXR_ERR_INTERNAL = 7,    /* a bug or vendor failure with no better code */
    CXR_ERR_USAGE = 8,       /* command-line usage error */
    CXR_ERR_NO_SPACE = 9,    /* disk full or below the watermark */
    CXR_ERR_CANCELLED = 10,  /* stopped on request (signal, shutdown) */

    /* conf */
    CXR_ERR_CONF_PARSE = 100,  /* not well-formed XML */
    CXR_ERR_CONF_SCHEMA = 101, /* well-formed but fails cxr-triage.xsd */
    CXR_ERR_CONF_VALUE = 102,  /* a value out of range or of the wrong kind */

    /* dicom */
    CXR_ERR_DICOM_PARSE = 200,   /* not readable as DICOM */
    CXR_ERR_DICOM_MISSING = 201, /* a required attribute is absent */
    CXR_ERR_DICOM_DECODE = 202,  /* pixel data could not be decoded */
    CXR_ERR_DICOM_TS = 203,      /* transfer syntax not supported */
    CXR_ERR_DICOM_GATE = 204,    /* the instance is not an image this product analyses */
    CXR_ERR_DICOM_SR = 205,      /* the SR could not be built or written */
    CXR_ERR_DICOM_NET = 206,     /* association / DIMSE failure */

    /* nn */
    CXR_ERR_NN_MODEL = 300,     /* the model file is corrupt, truncated or inconsistent */
    CXR_ERR_NN_SHAPE = 301,     /* tensor shapes do not fit the graph */
    CXR_ERR_NN_BACKEND = 302,   /* the compute backend failed (oneDNN, cuDNN, CUDA) */
    CXR_ERR_NN_NO_DEVICE = 303, /* the requested backend/device is not available */
    CXR_ERR_NN_DTYPE = 304,     /* an unsupported data type */
    CXR_ERR_NN_IMAGE = 305,     /* an image file could not be decoded (PNG/JPEG) */
    CXR_ERR_NN_NONFINITE = 306, /* the network's output is NaN or infinite */

    /* triage */
    CXR_ERR_TRIAGE_STORE = 400,   /* the durable job store failed */
    CXR_ERR_TRIAGE_ARCHIVE = 401, /* a labeled archive could not be read */
    CXR_ERR_TRIAGE_BUSY = 402,    /* another node holds the spool folder (and its job store) */

    /* plugin */
    CXR_ERR_PLUGIN_ORTHANC = 500 /* an Orthanc SDK call failed */
};

/* Size of every error text buffer (`char err[CXR_ERRLEN]`) that a function
 * of any module fills on failure. */
#define CXR_ERRLEN 1024

/* Formats the detail of a failure into `err` (CXR_ERRLEN bytes; NULL allowed:
 * nothing written) and returns `st`, so that a failure path is one line:
 * `return cxr_seterr(err, CXR_ERR_IO, "%s: %s", path, strerror(errno));`.
 * Thread-safe. */
enum cxr_status cxr_seterr(char *err, enum cxr_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A short, constant, English description of a status ("model file is corrupt").
 * Never NULL; unknown values give "unknown status". Thread-safe. */
const char *cxr_status_str(enum cxr_status s);

/* The symbolic name of a status ("CXR_ERR_NN_MODEL"), for logs and JSON. */
const char *cxr_status_name(enum cxr_status s);

#ifdef __cplusplus
}
#endif
#endif
