/* net_scp_assoc.cc — one thread per accepted association: presentation
 * context negotiation (all storage SOP classes, unknown/private ones too, and
 * Verification), the DIMSE loop (C-ECHO, C-STORE), and the bit-preserving
 * receive of each C-STORE data set into memory or a temp file (PS3.7 9.1.1,
 * PS3.10 File Meta Information built from the request). */
#include "net_internal.h"

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcostrma.h"
#include "dcmtk/dcmdata/dcuid.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/log.h"

namespace cxr_net
{

namespace
{

/* A DCMTK stream consumer for one received data set. Up to `mem_max` bytes
 * it keeps in memory (small instances: no temp file is created at all, the
 * store callback gets the bytes); past that it creates the temp file, writes
 * what it kept and streams the rest straight to it with write(2),
 * unbuffered: every PDV fragment (<= max PDU) is one write. It remembers the
 * first failure (temp file not creatable, ENOSPC, EFBIG, EIO...) and then
 * reports a bad status: DIMSE_receiveDataSetInFile drains the rest of the
 * data set from the network and returns DIMSEC_OUTOFRESOURCES, so the
 * association survives and we can answer 0xA700.
 * On Linux, every kWritebackChunk bytes it starts the disk writeback of
 * what arrived (sync_file_range, asynchronous), so that the fsync the
 * store callback makes before answering waits for the tail of a large
 * image instead of all of it. Durability still rests on that fsync. */
class SpillConsumer : public DcmConsumer
{
  public:
    static constexpr uint64_t kWritebackChunk = 4u << 20;
    SpillConsumer(const std::string &dir, uint64_t mem_max)
        : dir_(dir), mem_max_(mem_max), status_(EC_Normal)
    {
    }
    ~SpillConsumer() override
    {
        if (fd_ >= 0)
            ::close(fd_);
    }
    OFBool good() const override { return status_.good(); }
    OFCondition status() const override { return status_; }
    OFBool isFlushed() const override { return OFTrue; }
    offile_off_t avail() const override { return good() ? (offile_off_t)(1 << 30) : 0; }
    offile_off_t write(const void *buf, offile_off_t buflen) override
    {
        if (!good())
            return 0;
        if (fd_ < 0) { /* still in memory (a failed spill made good() false) */
            if (mem_.size() + (size_t)buflen <= mem_max_) {
                mem_.insert(mem_.end(), (const char *)buf, (const char *)buf + buflen);
                written_ += (uint64_t)buflen;
                return buflen;
            }
            if (!spill())
                return 0;
        }
        if (!write_all((const char *)buf, (size_t)buflen))
            return 0;
        written_ += (uint64_t)buflen;
#ifdef __linux__
        if (written_ - started_ >= kWritebackChunk) {
            /* advisory: a failure here only means the fsync does all the work */
            (void)sync_file_range(fd_, (off64_t)started_, (off64_t)(written_ - started_),
                                  SYNC_FILE_RANGE_WRITE);
            started_ = written_;
        }
#endif
        return buflen;
    }
    void flush() override {}
    int error() const { return errno_; }
    uint64_t written() const { return written_; }
    /* The temp file ("" while everything is in memory). */
    const std::string &path() const { return path_; }
    const struct stat &file_stat() const { return stat_; }
    const std::vector<char> &memory() const { return mem_; }
    /* Closes the temp file; false (and error()) when the close failed. */
    bool close_file()
    {
        if (fd_ < 0)
            return true;
        int rc = ::close(fd_);
        fd_ = -1;
        if (rc != 0 && !errno_)
            errno_ = errno;
        return rc == 0;
    }

  private:
    bool fail(int e, const char *what)
    {
        errno_ = e ? e : EIO;
        status_ = makeOFCondition(OFM_dcmdata, 900, OF_error, what);
        return false;
    }
    bool spill()
    {
        std::string tmpl = dir_ + "/rx-XXXXXX.part";
        std::vector<char> pbuf(tmpl.begin(), tmpl.end());
        pbuf.push_back('\0');
        fd_ = mkostemps(pbuf.data(), 5, O_CLOEXEC);
        if (fd_ < 0)
            return fail(errno, "temp file not creatable");
        path_ = pbuf.data();
        fstat(fd_, &stat_);
        bool ok = write_all(mem_.data(), mem_.size());
        mem_.clear();
        mem_.shrink_to_fit();
        return ok;
    }
    bool write_all(const char *p, size_t left)
    {
        while (left > 0) {
            ssize_t n = ::write(fd_, p, left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return fail(n < 0 ? errno : EIO, "temp file write failed");
            p += n;
            left -= (size_t)n;
        }
        return true;
    }

    std::string dir_;
    uint64_t mem_max_;
    std::vector<char> mem_;
    int fd_ = -1;
    std::string path_;
    struct stat stat_ = {};
    int errno_ = 0;
    uint64_t written_ = 0;
    uint64_t started_ = 0; /* bytes whose writeback was started */
    OFCondition status_;
};

class SpillOutputStream : public DcmOutputStream
{
  public:
    SpillOutputStream(const std::string &dir, uint64_t mem_max)
        : DcmOutputStream(&consumer_), consumer_(dir, mem_max)
    {
    }
    SpillConsumer consumer_;
};

bool is_success(uint16_t status)
{
    return status == 0x0000 || status == 0x0001 || (status & 0xF000) == 0xB000;
}

/* Accepts Verification, every storage SOP class DCMTK knows, and any UID it
 * does not know (private storage classes); refuses known non-storage
 * classes. For each context the first transfer syntax of our preference
 * list that the peer proposed wins. Returns the number accepted. */
int negotiate(T_ASC_Parameters *params)
{
    int accepted = 0;
    int n = ASC_countPresentationContexts(params);
    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(params, i, &pc).bad())
            continue;
        const char *as = pc.abstractSyntax;
        bool ok = strcmp(as, UID_VerificationSOPClass) == 0 ||
                  dcmIsaStorageSOPClassUID(as, ESSC_All) || dcmFindNameOfUID(as) == NULL;
        if (!ok) {
            ASC_refusePresentationContext(params, pc.presentationContextID,
                                          ASC_P_ABSTRACTSYNTAXNOTSUPPORTED);
            continue;
        }
        const char *ts = NULL;
        for (size_t k = 0; k < accepted_transfer_syntax_count && !ts; k++)
            for (int j = 0; j < pc.transferSyntaxCount; j++)
                if (strcmp(pc.proposedTransferSyntaxes[j], accepted_transfer_syntaxes[k]) == 0) {
                    ts = accepted_transfer_syntaxes[k];
                    break;
                }
        if (!ts) {
            ASC_refusePresentationContext(params, pc.presentationContextID,
                                          ASC_P_TRANSFERSYNTAXESNOTSUPPORTED);
            continue;
        }
        if (ASC_acceptPresentationContext(params, pc.presentationContextID, ts).good())
            accepted++;
    }
    return accepted;
}

/* Writes the File Meta Information (preamble, DICM, group 0002) for the
 * object announced by `req`, received on a context in transfer syntax `ts`. */
bool write_meta(SpillOutputStream &out, const T_DIMSE_C_StoreRQ &req, const char *ts,
                const char *calling)
{
    DcmMetaInfo meta;
    Uint8 version[2] = {0, 1};
    OFCondition c = meta.putAndInsertUint32(DCM_FileMetaInformationGroupLength, 0);
    if (c.good())
        c = meta.putAndInsertUint8Array(DCM_FileMetaInformationVersion, version, 2);
    if (c.good())
        c = meta.putAndInsertString(DCM_MediaStorageSOPClassUID, req.AffectedSOPClassUID);
    if (c.good())
        c = meta.putAndInsertString(DCM_MediaStorageSOPInstanceUID, req.AffectedSOPInstanceUID);
    if (c.good())
        c = meta.putAndInsertString(DCM_TransferSyntaxUID, ts);
    if (c.good())
        c = meta.putAndInsertString(DCM_ImplementationClassUID, OFFIS_IMPLEMENTATION_CLASS_UID);
    if (c.good())
        c = meta.putAndInsertString(DCM_ImplementationVersionName,
                                    OFFIS_DTK_IMPLEMENTATION_VERSION_NAME);
    if (c.good() && *calling)
        c = meta.putAndInsertString(DCM_SourceApplicationEntityTitle, calling);
    if (c.good())
        c = meta.computeGroupLengthAndPadding(
            EGL_withGL, EPD_noChange, META_HEADER_DEFAULT_TRANSFERSYNTAX, EET_UndefinedLength);
    if (c.bad())
        return false;
    meta.transferInit();
    c = meta.write(out, META_HEADER_DEFAULT_TRANSFERSYNTAX, EET_ExplicitLength, NULL);
    meta.transferEnd();
    return c.good() && out.good();
}

/* Removes `path` if it is still the file we created (same device/inode). */
void remove_if_ours(const char *path, const struct stat *ours)
{
    struct stat st;
    if (stat(path, &st) == 0 && st.st_dev == ours->st_dev && st.st_ino == ours->st_ino)
        unlink(path);
}

struct store_outcome {
    OFCondition net; /* bad: the association is broken, abort it */
    uint16_t status; /* what to answer when net is good */
};

/* Receives one C-STORE data set into a temp file and asks the store
 * callback for the status. The temp file never outlives a failure. */
store_outcome receive_store(worker *w, T_ASC_PresentationContextID pres_id, T_DIMSE_C_StoreRQ &req)
{
    cxr_dicom_scp *scp = w->scp;
    T_ASC_Association *assoc = w->assoc;
    T_DIMSE_BlockingMode mode = DIMSE_NONBLOCKING;
    int timeout = (int)scp->dimse_timeout_s;
    store_outcome out = {EC_Normal, CXR_DIMSE_SUCCESS};

    T_ASC_PresentationContext pc;
    if (ASC_findAcceptedPresentationContext(assoc->params, pres_id, &pc).bad()) {
        out.net = DIMSE_NOVALIDPRESENTATIONCONTEXTID;
        return out;
    }
    if (req.DataSetType == DIMSE_DATASET_NULL) {
        cxr_log(CXR_LOG_WARN, "dicom", "%s@%s: C-STORE without a data set", w->calling, w->host);
        out.status = CXR_DIMSE_CANNOT_UNDERSTAND;
        return out;
    }
    DIC_UL bytes = 0, pdvs = 0;
    if (strcmp(pc.abstractSyntax, req.AffectedSOPClassUID) != 0) {
        cxr_log(CXR_LOG_WARN, "dicom",
                "%s@%s: C-STORE of SOP class %s on a context for %s: refused", w->calling, w->host,
                req.AffectedSOPClassUID, pc.abstractSyntax);
        out.net = DIMSE_ignoreDataSet(assoc, mode, timeout, &bytes, &pdvs);
        out.status = CXR_DIMSE_SOP_CLASS_NOT_SUPPORTED;
        return out;
    }

    SpillOutputStream stream(scp->spool_tmp_dir, scp->memory_max.load());
    bool meta_ok = write_meta(stream, req, pc.acceptedTransferSyntax, w->calling);
    uint64_t meta_bytes = stream.consumer_.written();
    T_ASC_PresentationContextID data_id = 0;
    OFCondition c = EC_Normal;
    if (meta_ok)
        c = DIMSE_receiveDataSetInFile(assoc, mode, timeout, &data_id, &stream, NULL, NULL);
    else
        c = DIMSE_ignoreDataSet(assoc, mode, timeout, &bytes, &pdvs);
    stream.consumer_.close_file();
    int write_errno = stream.consumer_.error();
    uint64_t size = stream.consumer_.written();
    const std::string &tmp_path = stream.consumer_.path();
    const char *tmp = tmp_path.empty() ? NULL : tmp_path.c_str();

    if (!meta_ok || write_errno || (c.bad() && stream.consumer_.error())) {
        if (tmp)
            unlink(tmp);
        cxr_log(CXR_LOG_WARN, "dicom",
                "%s@%s: writing temp file in '%s' failed: %s; answering 0xA700", w->calling,
                w->host, scp->spool_tmp_dir.c_str(), strerror(write_errno ? write_errno : EIO));
        /* DCMTK drained the rest of the data set; if that failed too the
         * association is broken. */
        if (c.bad() && !(c.module() == OFM_dcmnet && c.code() == DIMSEC_OUTOFRESOURCES))
            out.net = c;
        out.status = CXR_DIMSE_OUT_OF_RESOURCES;
        return out;
    }
    if (c.bad()) {
        if (tmp)
            unlink(tmp);
        out.net = c;
        return out;
    }
    scp->n_bytes += size - meta_bytes;

    struct cxr_dicom_store_event ev;
    ev.calling_ae = w->calling;
    ev.called_ae = w->called;
    ev.peer_host = w->host;
    ev.sop_class_uid = req.AffectedSOPClassUID;
    ev.sop_instance_uid = req.AffectedSOPInstanceUID;
    ev.transfer_syntax_uid = pc.acceptedTransferSyntax;
    ev.tmp_path = tmp;
    ev.data = tmp ? NULL : stream.consumer_.memory().data();
    ev.size = size;
    out.status = scp->store(scp->ctx, &ev);
    if (!is_success(out.status) && tmp)
        remove_if_ours(tmp, &stream.consumer_.file_stat());
    return out;
}

OFCondition send_store_response(T_ASC_Association *assoc, T_ASC_PresentationContextID pres_id,
                                T_DIMSE_C_StoreRQ &req, uint16_t status)
{
    T_DIMSE_C_StoreRSP rsp;
    memset(&rsp, 0, sizeof rsp);
    rsp.MessageIDBeingRespondedTo = req.MessageID;
    rsp.DimseStatus = status;
    rsp.DataSetType = DIMSE_DATASET_NULL;
    OFStandard::strlcpy(rsp.AffectedSOPClassUID, req.AffectedSOPClassUID,
                        sizeof rsp.AffectedSOPClassUID);
    OFStandard::strlcpy(rsp.AffectedSOPInstanceUID, req.AffectedSOPInstanceUID,
                        sizeof rsp.AffectedSOPInstanceUID);
    rsp.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
    return DIMSE_sendStoreResponse(assoc, pres_id, &req, &rsp, NULL);
}

void set_state(worker *w, worker_state s)
{
    std::lock_guard<std::mutex> lock(w->scp->mu);
    if (w->state != WORKER_CLOSING)
        w->state = s;
}

/* The DIMSE loop; returns how the association ended (for the log). */
std::string serve(worker *w)
{
    cxr_dicom_scp *scp = w->scp;
    T_ASC_Association *assoc = w->assoc;
    for (;;) {
        bool stopping;
        {
            /* Under the lock so that stop's close_idle() either sees us
             * idle (and shuts the socket) or we see the stop flag. */
            std::lock_guard<std::mutex> lock(scp->mu);
            stopping = scp->stop_requested.load();
            w->state = stopping ? WORKER_CLOSING : WORKER_IDLE;
        }
        if (stopping) {
            ASC_abortAssociation(assoc);
            return "aborted: the node is stopping";
        }
        T_ASC_PresentationContextID pres_id = 0;
        T_DIMSE_Message msg;
        DcmDataset *detail = NULL;
        OFCondition c = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, (int)scp->dimse_timeout_s,
                                             &pres_id, &msg, &detail);
        delete detail;
        set_state(w, WORKER_BUSY);
        if (c == DUL_PEERREQUESTEDRELEASE) {
            ASC_acknowledgeRelease(assoc);
            return "released";
        }
        if (c == DUL_PEERABORTEDASSOCIATION)
            return "aborted by the peer";
        if (c == DIMSE_NODATAAVAILABLE) {
            ASC_abortAssociation(assoc);
            return "aborted: idle longer than the DIMSE timeout";
        }
        if (c.bad()) {
            ASC_abortAssociation(assoc);
            if (scp->stop_requested.load())
                return "closed: the node is stopping";
            scp->n_failed++;
            return std::string("aborted: ") + c.text();
        }
        if (msg.CommandField == DIMSE_C_ECHO_RQ) {
            c = DIMSE_sendEchoResponse(assoc, pres_id, &msg.msg.CEchoRQ, STATUS_Success, NULL);
            scp->n_echoes++;
        } else if (msg.CommandField == DIMSE_C_STORE_RQ) {
            store_outcome o = receive_store(w, pres_id, msg.msg.CStoreRQ);
            if (o.net.bad()) {
                w->failed++;
                scp->n_stores_failed++;
                ASC_abortAssociation(assoc);
                scp->n_failed++;
                return std::string("aborted during a C-STORE (nothing kept): ") + o.net.text();
            }
            c = send_store_response(assoc, pres_id, msg.msg.CStoreRQ, o.status);
            if (is_success(o.status)) {
                w->stored++;
                scp->n_stores_ok++;
            } else {
                w->failed++;
                scp->n_stores_failed++;
                cxr_log(CXR_LOG_WARN, "dicom",
                        "%s@%s: C-STORE of SOP class %s answered 0x%04X (%s)", w->calling, w->host,
                        msg.msg.CStoreRQ.AffectedSOPClassUID, o.status,
                        dimse_status_text(o.status));
            }
        } else {
            ASC_abortAssociation(assoc);
            scp->n_failed++;
            char buf[96];
            snprintf(buf, sizeof buf, "aborted: unsupported DIMSE command 0x%04X",
                     (unsigned)msg.CommandField);
            return buf;
        }
        if (c.bad()) {
            ASC_abortAssociation(assoc);
            scp->n_failed++;
            return std::string("aborted: sending the response failed: ") + c.text();
        }
    }
}

void run_association(worker *w)
{
    cxr_dicom_scp *scp = w->scp;
    T_ASC_Association *assoc = w->assoc;
    set_nodelay(assoc);
    char subject[256] = "";
    if (scp->tls_enabled)
        tls_peer_subject(assoc, subject, sizeof subject);
    int n = negotiate(assoc->params);
    if (n == 0) {
        T_ASC_RejectParameters rej = {ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
                                      ASC_REASON_SU_NOREASON};
        char text[160];
        reject_text(&rej, text, sizeof text);
        scp->peer_log.event(CXR_LOG_WARN, "associations rejected", w->host,
                            "association from %s@%s to %s rejected: no acceptable presentation "
                            "context (%d proposed) (%s)",
                            w->calling, w->host, w->called,
                            ASC_countPresentationContexts(assoc->params), text);
        scp->n_rejected++;
        ASC_rejectAssociation(assoc, &rej);
        return;
    }
    OFCondition c = ASC_acknowledgeAssociation(assoc);
    if (c.bad()) {
        cxr_log(CXR_LOG_WARN, "dicom", "association from %s@%s: sending A-ASSOCIATE-AC failed: %s",
                w->calling, w->host, c.text());
        scp->n_failed++;
        return;
    }
    scp->n_accepted++;
    cxr_log(CXR_LOG_INFO, "dicom", "association from %s@%s to %s accepted (%d of %d contexts%s%s)",
            w->calling, w->host, w->called, n, ASC_countPresentationContexts(assoc->params),
            *subject ? ", TLS client " : "", subject);
    std::string end = serve(w);
    cxr_log(CXR_LOG_INFO, "dicom", "association from %s@%s %s; %llu stored, %llu failed",
            w->calling, w->host, end.c_str(), (unsigned long long)w->stored,
            (unsigned long long)w->failed);
}

} // namespace

void scp_connection_main(worker *w)
{
    cxr_dicom_scp *scp = w->scp;
    try {
        T_ASC_Association *assoc = scp_negotiate(w);
        if (assoc && scp_dispatch(w, assoc))
            run_association(w);
    } catch (const std::exception &e) {
        cxr_log(CXR_LOG_ERROR, "dicom", "connection from %s (%s): %s", w->host, w->calling,
                e.what());
        if (w->assoc)
            ASC_abortAssociation(w->assoc);
    } catch (...) {
        cxr_log(CXR_LOG_ERROR, "dicom", "connection from %s (%s): unexpected exception", w->host,
                w->calling);
        if (w->assoc)
            ASC_abortAssociation(w->assoc);
    }
    {
        std::lock_guard<std::mutex> lock(scp->mu);
        w->state = WORKER_CLOSING;
    }
    if (w->assoc) {
        ASC_dropSCPAssociation(w->assoc, 1);
        ASC_destroyAssociation(&w->assoc);
    }
    close(w->shut_fd); /* the listener no longer uses it: the state is WORKER_CLOSING */
    w->shut_fd = -1;
    {
        std::lock_guard<std::mutex> lock(scp->mu);
        w->done = true;
    }
    uint64_t one = 1;
    ssize_t rc = write(scp->wake_fd, &one, sizeof one);
    (void)rc;
}

} // namespace cxr_net
