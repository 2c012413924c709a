/* status.c — names and descriptions of enum cxr_status. */
#include "cxr/status.h"

#include <stdarg.h>
#include <stdio.h>

struct status_row {
    enum cxr_status s;
    const char *name;
    const char *text;
};

/* One row per value; keep in the enum's order. */
static const struct status_row rows[] = {
    {CXR_OK, "CXR_OK", "success"},
    {CXR_ERR_NOMEM, "CXR_ERR_NOMEM", "out of memory"},
    {CXR_ERR_INVALID_ARG, "CXR_ERR_INVALID_ARG", "invalid argument"},
    {CXR_ERR_IO, "CXR_ERR_IO", "input/output error"},
    {CXR_ERR_NOT_FOUND, "CXR_ERR_NOT_FOUND", "not found"},
    {CXR_ERR_LIMIT, "CXR_ERR_LIMIT", "size or count limit exceeded"},
    {CXR_ERR_UNSUPPORTED, "CXR_ERR_UNSUPPORTED", "not supported"},
    {CXR_ERR_INTERNAL, "CXR_ERR_INTERNAL", "internal error"},
    {CXR_ERR_USAGE, "CXR_ERR_USAGE", "usage error"},
    {CXR_ERR_NO_SPACE, "CXR_ERR_NO_SPACE", "no space left"},
    {CXR_ERR_CANCELLED, "CXR_ERR_CANCELLED", "cancelled"},
    {CXR_ERR_CONF_PARSE, "CXR_ERR_CONF_PARSE", "configuration is not well-formed XML"},
    {CXR_ERR_CONF_SCHEMA, "CXR_ERR_CONF_SCHEMA", "configuration does not match the schema"},
    {CXR_ERR_CONF_VALUE, "CXR_ERR_CONF_VALUE", "configuration value is invalid"},
    {CXR_ERR_DICOM_PARSE, "CXR_ERR_DICOM_PARSE", "not readable as DICOM"},
    {CXR_ERR_DICOM_MISSING, "CXR_ERR_DICOM_MISSING", "required DICOM attribute missing"},
    {CXR_ERR_DICOM_DECODE, "CXR_ERR_DICOM_DECODE", "pixel data could not be decoded"},
    {CXR_ERR_DICOM_TS, "CXR_ERR_DICOM_TS", "transfer syntax not supported"},
    {CXR_ERR_DICOM_GATE, "CXR_ERR_DICOM_GATE", "not an image this product analyses"},
    {CXR_ERR_DICOM_SR, "CXR_ERR_DICOM_SR", "structured report could not be written"},
    {CXR_ERR_DICOM_NET, "CXR_ERR_DICOM_NET", "DICOM network failure"},
    {CXR_ERR_NN_MODEL, "CXR_ERR_NN_MODEL", "model file is corrupt or inconsistent"},
    {CXR_ERR_NN_SHAPE, "CXR_ERR_NN_SHAPE", "tensor shape mismatch"},
    {CXR_ERR_NN_BACKEND, "CXR_ERR_NN_BACKEND", "compute backend failure"},
    {CXR_ERR_NN_NO_DEVICE, "CXR_ERR_NN_NO_DEVICE", "compute device not available"},
    {CXR_ERR_NN_DTYPE, "CXR_ERR_NN_DTYPE", "unsupported data type"},
    {CXR_ERR_NN_IMAGE, "CXR_ERR_NN_IMAGE", "image could not be decoded"},
    {CXR_ERR_NN_NONFINITE, "CXR_ERR_NN_NONFINITE", "the model's output is not a finite number"},
    {CXR_ERR_TRIAGE_STORE, "CXR_ERR_TRIAGE_STORE", "job store failure"},
    {CXR_ERR_TRIAGE_ARCHIVE, "CXR_ERR_TRIAGE_ARCHIVE", "labeled archive could not be read"},
    {CXR_ERR_TRIAGE_BUSY, "CXR_ERR_TRIAGE_BUSY", "another node holds the spool folder"},
    {CXR_ERR_PLUGIN_ORTHANC, "CXR_ERR_PLUGIN_ORTHANC", "Orthanc call failed"},
};

static const struct status_row *find(enum cxr_status s)
{
    for (unsigned i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].s == s)
            return &rows[i];
    return 0;
}

const char *cxr_status_str(enum cxr_status s)
{
    const struct status_row *r = find(s);
    return r ? r->text : "unknown status";
}

const char *cxr_status_name(enum cxr_status s)
{
    const struct status_row *r = find(s);
    return r ? r->name : "CXR_ERR_UNKNOWN";
}

enum cxr_status cxr_seterr(char *err, enum cxr_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, CXR_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return st;
}
