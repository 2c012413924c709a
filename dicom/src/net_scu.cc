/* net_scu.cc — the node's SCU: C-ECHO and C-STORE of one file over a new
 * association (PS3.4 Annex A, B), with TLS, TCP_NODELAY and errors that say
 * whether the peer was down, rejected us (PS3.8 reason) or answered a
 * failure status. */
#include "net_internal.h"

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmnet/dul.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "cxr/log.h"

using namespace cxr_net;

namespace
{

const uint32_t DEFAULT_MAX_PDU = 65536;
const uint32_t DEFAULT_CONNECT_TIMEOUT_S = 10;
const uint32_t DEFAULT_DIMSE_TIMEOUT_S = 60;

struct proposal {
    const char *abstract_syntax;
    std::vector<const char *> ts;
};

/* One association and what it needs; the destructor aborts whatever is left. */
struct session {
    T_ASC_Network *net = nullptr;
    T_ASC_Association *assoc = nullptr;
    DcmTLSTransportLayer *tls = nullptr;
    char peer[300] = "";
    uint32_t dimse_timeout_s = DEFAULT_DIMSE_TIMEOUT_S;

    ~session()
    {
        if (assoc) {
            ASC_abortAssociation(assoc);
            ASC_destroyAssociation(&assoc);
        }
        if (net)
            ASC_dropNetwork(&net);
        delete tls;
    }
    /* A-RELEASE; falls back to an abort when the peer does not answer. */
    void release()
    {
        if (!assoc)
            return;
        if (ASC_releaseAssociation(assoc).bad())
            ASC_abortAssociation(assoc);
        ASC_destroyAssociation(&assoc);
    }
};

bool ae_ok(const char *ae)
{
    char buf[64];
    trim_copy(buf, sizeof buf, ae);
    return *buf && strlen(buf) <= 16;
}

enum cxr_status check_target(const struct cxr_dicom_scu_target *t, char *err)
{
    if (!t || !t->host || !*t->host || !t->port) {
        set_err(err, "DICOM SCU: the target needs a host and a port");
        return CXR_ERR_INVALID_ARG;
    }
    if (!ae_ok(t->called_ae) || !ae_ok(t->calling_ae)) {
        set_err(err, "DICOM SCU: called AE '%s' and calling AE '%s' must have 1 to 16 characters",
                t->called_ae ? t->called_ae : "", t->calling_ae ? t->calling_ae : "");
        return CXR_ERR_INVALID_ARG;
    }
    uint32_t pdu = t->max_pdu ? t->max_pdu : DEFAULT_MAX_PDU;
    if (pdu < ASC_MINIMUMPDUSIZE || pdu > ASC_MAXIMUMPDUSIZE) {
        set_err(err, "DICOM SCU: max_pdu %u out of range (%u..%u)", (unsigned)pdu,
                (unsigned)ASC_MINIMUMPDUSIZE, (unsigned)ASC_MAXIMUMPDUSIZE);
        return CXR_ERR_INVALID_ARG;
    }
    return CXR_OK;
}

/* Opens an association to the target proposing `props` (context IDs 1, 3,
 * 5...). On failure returns the status with err set; `s` cleans up. */
enum cxr_status open_session(const struct cxr_dicom_scu_target *t,
                             const std::vector<proposal> &props, session &s, char *err)
{
    global_init();
    enum cxr_status st = check_target(t, err);
    if (st != CXR_OK)
        return st;
    snprintf(s.peer, sizeof s.peer, "%s@%s:%u", t->called_ae, t->host, (unsigned)t->port);
    uint32_t connect_s = t->connect_timeout_s ? t->connect_timeout_s : DEFAULT_CONNECT_TIMEOUT_S;
    s.dimse_timeout_s = t->dimse_timeout_s ? t->dimse_timeout_s : DEFAULT_DIMSE_TIMEOUT_S;
    /* DCMTK 3.6.7 keeps the TCP connect timeout in a process-wide global. */
    dcmConnectionTimeout.set((Sint32)connect_s);

    if (t->tls.enabled) {
        s.tls = tls_layer_new(&t->tls, NET_REQUESTOR, &st, err);
        if (!s.tls)
            return st;
    }
    OFCondition c = ASC_initializeNetwork(NET_REQUESTOR, 0, (int)connect_s, &s.net);
    if (c.good() && s.tls)
        c = ASC_setTransportLayer(s.net, s.tls, 0);
    if (c.bad()) {
        set_err(err, "DICOM SCU: network initialisation failed: %s", c.text());
        return CXR_ERR_INTERNAL;
    }
    T_ASC_Parameters *params = NULL;
    c = ASC_createAssociationParameters(&params, (long)(t->max_pdu ? t->max_pdu : DEFAULT_MAX_PDU));
    if (c.bad()) {
        set_err(err, "DICOM SCU: %s", c.text());
        return CXR_ERR_INTERNAL;
    }
    char calling[17], called[17], addr[300];
    trim_copy(calling, sizeof calling, t->calling_ae);
    trim_copy(called, sizeof called, t->called_ae);
    snprintf(addr, sizeof addr, "%s:%u", t->host, (unsigned)t->port);
    ASC_setAPTitles(params, calling, called, NULL);
    ASC_setPresentationAddresses(params, "localhost", addr);
    ASC_setTransportLayerType(params, s.tls ? OFTrue : OFFalse);
    T_ASC_PresentationContextID id = 1;
    for (const proposal &p : props) {
        c = ASC_addPresentationContext(params, id, p.abstract_syntax,
                                       const_cast<const char **>(p.ts.data()), (int)p.ts.size());
        if (c.bad()) {
            ASC_destroyAssociationParameters(&params);
            set_err(err, "DICOM SCU: presentation context: %s", c.text());
            return CXR_ERR_INTERNAL;
        }
        id = (T_ASC_PresentationContextID)(id + 2);
    }
    c = ASC_requestAssociation(s.net, params, &s.assoc);
    if (!s.assoc) /* otherwise the association owns params */
        ASC_destroyAssociationParameters(&params);
    if (c.bad()) {
        if (c == DUL_ASSOCIATIONREJECTED) {
            T_ASC_RejectParameters rej;
            char text[160];
            ASC_getRejectParameters(s.assoc->params, &rej);
            reject_text(&rej, text, sizeof text);
            set_err(err, "DICOM SCU: association rejected by %s: %s", s.peer, text);
        } else {
            const char *hint = strstr(c.text(), "refused") ? " (is the peer running on that port?)"
                               : strstr(c.text(), "imeout") || strstr(c.text(), "timed out")
                                   ? " (peer unreachable or too slow)"
                               : s.tls
                                   ? " (TLS: check certificates, CA and that the peer speaks TLS)"
                                   : "";
            set_err(err, "DICOM SCU: cannot associate with %s: %s%s", s.peer, c.text(), hint);
        }
        if (s.assoc) {
            ASC_dropAssociation(s.assoc);
            ASC_destroyAssociation(&s.assoc);
        }
        return CXR_ERR_DICOM_NET;
    }
    set_nodelay(s.assoc);
    if (s.tls && t->tls.ca_certificates && *t->tls.ca_certificates &&
        !tls_check_host(s.assoc, t->host, err))
        return CXR_ERR_DICOM_NET;
    if (ASC_countAcceptedPresentationContexts(s.assoc->params) == 0) {
        set_err(err, "DICOM SCU: %s accepted none of the presentation contexts for %s", s.peer,
                props.empty() ? "?" : props[0].abstract_syntax);
        return CXR_ERR_DICOM_NET;
    }
    return CXR_OK;
}

bool status_ok(uint16_t s) { return s == 0x0000 || s == 0x0001 || (s & 0xF000) == 0xB000; }

/* " (peer says: <ErrorComment>)" from a status detail, or "". */
std::string detail_comment(DcmDataset *detail)
{
    OFString comment;
    if (detail && detail->findAndGetOFString(DCM_ErrorComment, comment).good() && !comment.empty())
        return " (peer says: " + std::string(comment.c_str()) + ")";
    return "";
}

enum cxr_status echo(const struct cxr_dicom_scu_target *t, char *err)
{
    session s;
    std::vector<proposal> props = {
        {UID_VerificationSOPClass,
         {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax}}};
    enum cxr_status st = open_session(t, props, s, err);
    if (st != CXR_OK)
        return st;
    DIC_US status = 0;
    DcmDataset *detail = NULL;
    OFCondition c = DIMSE_echoUser(s.assoc, s.assoc->nextMsgID++, DIMSE_NONBLOCKING,
                                   (int)s.dimse_timeout_s, &status, &detail);
    std::string comment = detail_comment(detail);
    delete detail;
    if (c.bad()) {
        set_err(err, "DICOM SCU: C-ECHO to %s failed: %s", s.peer, c.text());
        return CXR_ERR_DICOM_NET;
    }
    s.release();
    if (status != 0) {
        set_err(err, "DICOM SCU: %s answered C-ECHO with 0x%04X (%s)%s", s.peer, status,
                dimse_status_text(status), comment.c_str());
        return CXR_ERR_DICOM_NET;
    }
    return CXR_OK;
}

enum cxr_status store(const struct cxr_dicom_scu_target *t, const char *path,
                      uint16_t *dimse_status, char *err)
{
    *dimse_status = CXR_DIMSE_NO_RESPONSE;
    enum cxr_status st = check_target(t, err);
    if (st != CXR_OK)
        return st;
    if (!path || !*path) {
        set_err(err, "DICOM SCU: no file to send");
        return CXR_ERR_INVALID_ARG;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        set_err(err, "DICOM SCU: cannot read '%s': %s", path, strerror(errno));
        return CXR_ERR_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        set_err(err, "DICOM SCU: '%s' is not a regular file", path);
        return CXR_ERR_IO;
    }
    /* Large values (pixel data) stay in the file and are read while sending. */
    DcmFileFormat ff;
    OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
    if (c.bad()) {
        set_err(err, "DICOM SCU: '%s' is not readable as DICOM: %s", path, c.text());
        return CXR_ERR_DICOM_PARSE;
    }
    DcmDataset *ds = ff.getDataset();
    OFString sop_class, sop_instance;
    if (ff.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPClassUID, sop_class).bad() ||
        sop_class.empty())
        ds->findAndGetOFString(DCM_SOPClassUID, sop_class);
    if (ff.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPInstanceUID, sop_instance).bad() ||
        sop_instance.empty())
        ds->findAndGetOFString(DCM_SOPInstanceUID, sop_instance);
    if (sop_class.empty() || sop_instance.empty()) {
        set_err(err, "DICOM SCU: '%s' has no SOP Class/Instance UID", path);
        return CXR_ERR_DICOM_PARSE;
    }
    E_TransferSyntax file_xfer = ds->getOriginalXfer();
    DcmXfer file_ts(file_xfer);
    const char *file_uid = file_ts.getXferID();
    const char *ex = UID_LittleEndianExplicitTransferSyntax,
               *im = UID_LittleEndianImplicitTransferSyntax;
    /* The file's own syntax alone in the first context, so that a peer
     * preferring another one cannot make us transcode; the uncompressed
     * fallback in a second context. */
    std::vector<proposal> props;
    props.push_back({sop_class.c_str(), {file_uid}});
    props.push_back({sop_class.c_str(), {ex, im}});

    session s;
    st = open_session(t, props, s, err);
    if (st != CXR_OK)
        return st;
    /* Context 1 carries the file's own syntax, context 3 the uncompressed
     * fallback (open_session numbers them 1, 3, ...). */
    T_ASC_PresentationContextID pres = 0;
    T_ASC_PresentationContext pc;
    for (T_ASC_PresentationContextID id : {1, 3}) {
        if (ASC_findAcceptedPresentationContext(s.assoc->params, id, &pc).good() &&
            pc.resultReason == ASC_P_ACCEPTANCE) {
            pres = id;
            break;
        }
    }
    if (pres == 0) {
        set_err(err, "DICOM SCU: %s accepted no context for SOP class %s", s.peer,
                sop_class.c_str());
        return CXR_ERR_DICOM_NET;
    }
    if (strcmp(pc.acceptedTransferSyntax, file_uid) != 0) {
        E_TransferSyntax to = DcmXfer(pc.acceptedTransferSyntax).getXfer();
        /* Decompressing needs the pixel data in memory and a registered
         * decoder (cxr_dicom_global_init registers them in the node). */
        if (file_ts.isEncapsulated())
            ds->loadAllDataIntoMemory();
        if (ds->chooseRepresentation(to, NULL).bad() || !ds->canWriteXfer(to, file_xfer) ||
            (file_ts.isEncapsulated() && !ds->hasRepresentation(to, NULL))) {
            set_err(err,
                    "DICOM SCU: '%s' is %s; %s accepted only %s and it cannot be converted here",
                    path, file_ts.getXferName(), s.peer, DcmXfer(to).getXferName());
            return CXR_ERR_DICOM_TS;
        }
    }
    T_DIMSE_C_StoreRQ req;
    memset(&req, 0, sizeof req);
    req.MessageID = s.assoc->nextMsgID++;
    OFStandard::strlcpy(req.AffectedSOPClassUID, sop_class.c_str(), sizeof req.AffectedSOPClassUID);
    OFStandard::strlcpy(req.AffectedSOPInstanceUID, sop_instance.c_str(),
                        sizeof req.AffectedSOPInstanceUID);
    req.DataSetType = DIMSE_DATASET_PRESENT;
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    T_DIMSE_C_StoreRSP rsp;
    memset(&rsp, 0, sizeof rsp);
    DcmDataset *detail = NULL;
    c = DIMSE_storeUser(s.assoc, pres, &req, NULL, ds, NULL, NULL, DIMSE_NONBLOCKING,
                        (int)s.dimse_timeout_s, &rsp, &detail);
    std::string comment = detail_comment(detail);
    delete detail;
    if (c.bad()) {
        set_err(err, "DICOM SCU: C-STORE of '%s' to %s failed: %s", path, s.peer, c.text());
        return CXR_ERR_DICOM_NET;
    }
    *dimse_status = rsp.DimseStatus;
    s.release();
    if (!status_ok(rsp.DimseStatus)) {
        set_err(err, "DICOM SCU: %s answered C-STORE of '%s' with 0x%04X (%s)%s", s.peer, path,
                rsp.DimseStatus, dimse_status_text(rsp.DimseStatus), comment.c_str());
        return CXR_ERR_DICOM_NET;
    }
    return CXR_OK;
}

} // namespace

extern "C" {

enum cxr_status cxr_dicom_scu_echo(const struct cxr_dicom_scu_target *t, char *err)
{
    try {
        return echo(t, err);
    } catch (const std::bad_alloc &) {
        set_err(err, "DICOM SCU: out of memory");
        return CXR_ERR_NOMEM;
    } catch (const std::exception &e) {
        set_err(err, "DICOM SCU: %s", e.what());
    } catch (...) {
        set_err(err, "DICOM SCU: unexpected exception");
    }
    return CXR_ERR_INTERNAL;
}

enum cxr_status cxr_dicom_scu_store_file(const struct cxr_dicom_scu_target *t, const char *path,
                                         uint16_t *dimse_status, char *err)
{
    uint16_t dummy;
    if (!dimse_status)
        dimse_status = &dummy;
    *dimse_status = CXR_DIMSE_NO_RESPONSE;
    try {
        return store(t, path, dimse_status, err);
    } catch (const std::bad_alloc &) {
        set_err(err, "DICOM SCU: out of memory");
        return CXR_ERR_NOMEM;
    } catch (const std::exception &e) {
        set_err(err, "DICOM SCU: %s", e.what());
    } catch (...) {
        set_err(err, "DICOM SCU: unexpected exception");
    }
    return CXR_ERR_INTERNAL;
}

} // extern "C"
