/* j2k_codec.cc — JPEG 2000 decoder for DCMTK through OpenJPEG 2.5 (see
 * j2k_codec.h). Decoding reads from memory (opj_stream with our own read /
 * skip / seek callbacks), never from a temporary file. PS3.5 A.4.4 (JPEG
 * 2000), A.4.1 (fragments and Basic Offset Table). */
#include "dicom_internal.h"
#include "j2k_codec.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <mutex>

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcvrpobw.h>
#include <openjpeg.h>

/* ------------------------------------------------------------------ OpenJPEG */

namespace
{

struct mem_source {
    const uint8_t *p;
    size_t len, pos;
};

OPJ_SIZE_T mem_read(void *buf, OPJ_SIZE_T n, void *user)
{
    auto *m = static_cast<mem_source *>(user);
    if (m->pos >= m->len)
        return static_cast<OPJ_SIZE_T>(-1); /* end of stream */
    size_t k = m->len - m->pos < n ? m->len - m->pos : n;
    std::memcpy(buf, m->p + m->pos, k);
    m->pos += k;
    return k;
}

OPJ_OFF_T mem_skip(OPJ_OFF_T n, void *user)
{
    auto *m = static_cast<mem_source *>(user);
    if (n < 0) {
        size_t back = static_cast<size_t>(-n);
        if (back > m->pos)
            back = m->pos;
        m->pos -= back;
        return -static_cast<OPJ_OFF_T>(back);
    }
    size_t fwd = static_cast<size_t>(n);
    if (fwd > m->len - m->pos)
        fwd = m->len - m->pos;
    m->pos += fwd;
    return static_cast<OPJ_OFF_T>(fwd);
}

OPJ_BOOL mem_seek(OPJ_OFF_T n, void *user)
{
    auto *m = static_cast<mem_source *>(user);
    if (n < 0 || static_cast<uint64_t>(n) > m->len)
        return OPJ_FALSE;
    m->pos = static_cast<size_t>(n);
    return OPJ_TRUE;
}

/* OpenJPEG reports errors through a callback; keep the first one. */
struct opj_messages {
    char first_error[256];
};

void on_opj_error(const char *msg, void *user)
{
    auto *m = static_cast<opj_messages *>(user);
    if (m->first_error[0] == '\0') {
        cxr_dicom_copy_str(m->first_error, sizeof m->first_error, msg);
        size_t n = std::strlen(m->first_error);
        while (n > 0 && (m->first_error[n - 1] == '\n' || m->first_error[n - 1] == ' '))
            m->first_error[--n] = '\0';
    }
}

void on_opj_quiet(const char *, void *) {}

const uint8_t k_jp2_signature[12] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};

} // namespace

bool cxr_j2k_have_htj2k(void)
{
    int major = 0, minor = 0;
    if (std::sscanf(opj_version(), "%d.%d", &major, &minor) != 2)
        return false;
    return major > 2 || (major == 2 && minor >= 5);
}

enum cxr_status cxr_j2k_decode(const uint8_t *data, size_t len, const struct cxr_j2k_target *t,
                               void *out, size_t out_size, struct cxr_j2k_decoded *got, char *err)
{
    enum cxr_status st = CXR_OK;
    opj_stream_t *stream = nullptr;
    opj_codec_t *codec = nullptr;
    opj_image_t *image = nullptr;
    opj_dparameters_t params;
    opj_messages msgs{};
    mem_source src{data, len, 0};
    OPJ_CODEC_FORMAT fmt;
    uint32_t prec = 0;
    bool sgnd = false;
    size_t bytes_per_sample = t->bits_allocated == 8 ? 1 : 2;
    uint64_t need = static_cast<uint64_t>(t->rows) * t->columns * t->samples * bytes_per_sample;

    if (t->bits_allocated != 8 && t->bits_allocated != 16)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                          "JPEG 2000: BitsAllocated %u not supported (8 or 16)", t->bits_allocated);
    if (need > out_size)
        return cxr_seterr(err, CXR_ERR_LIMIT,
                          "JPEG 2000: output buffer of %zu bytes, frame needs %llu", out_size,
                          static_cast<unsigned long long>(need));
    if (len >= 12 && std::memcmp(data, k_jp2_signature, 12) == 0)
        fmt = OPJ_CODEC_JP2;
    else if (len >= 4 && data[0] == 0xFF && data[1] == 0x4F && data[2] == 0xFF && data[3] == 0x51)
        fmt = OPJ_CODEC_J2K;
    else
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                          "JPEG 2000: the frame does not start with a codestream (SOC/SIZ "
                          "markers) or a JP2 signature");

    stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE);
    codec = opj_create_decompress(fmt);
    if (!stream || !codec) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "JPEG 2000: OpenJPEG could not allocate a decoder");
        goto fail;
    }
    opj_stream_set_user_data(stream, &src, nullptr);
    opj_stream_set_user_data_length(stream, len);
    opj_stream_set_read_function(stream, mem_read);
    opj_stream_set_skip_function(stream, mem_skip);
    opj_stream_set_seek_function(stream, mem_seek);
    opj_set_error_handler(codec, on_opj_error, &msgs);
    opj_set_warning_handler(codec, on_opj_quiet, nullptr);
    opj_set_info_handler(codec, on_opj_quiet, nullptr);
    opj_set_default_decoder_parameters(&params);
    if (!opj_setup_decoder(codec, &params)) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE, "JPEG 2000 decoder setup failed: %s",
                        msgs.first_error[0] ? msgs.first_error : "no detail from OpenJPEG");
        goto fail;
    }
    /* Code blocks decode in parallel: decoding dominates the time of a
     * JPEG 2000 image (a 1955x1841 radiograph: ~110 ms on one core). Up to
     * 4 threads, fewer on smaller machines; OPJ_NUM_THREADS, OpenJPEG's own
     * variable, decides when it is set. Without thread support in the
     * library the call fails and decoding stays on this thread. */
    if (!std::getenv("OPJ_NUM_THREADS")) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        (void)opj_codec_set_threads(codec, ncpu < 1 ? 1 : ncpu > 4 ? 4 : static_cast<int>(ncpu));
    }
    if (!opj_read_header(stream, codec, &image) || !image) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE, "JPEG 2000 header unreadable: %s",
                        msgs.first_error[0] ? msgs.first_error : "no detail from OpenJPEG");
        goto fail;
    }

    /* Check the codestream against the dataset before decoding allocates. */
    if (image->numcomps != t->samples) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                        "JPEG 2000 codestream has %u components, SamplesPerPixel is %u",
                        image->numcomps, t->samples);
        goto fail;
    }
    prec = image->comps[0].prec;
    sgnd = image->comps[0].sgnd != 0;
    for (uint32_t c = 0; c < image->numcomps; c++) {
        const opj_image_comp_t &k = image->comps[c];
        if (k.dx != 1 || k.dy != 1) {
            st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                            "JPEG 2000 component %u is sub-sampled (%ux%u): not supported", c, k.dx,
                            k.dy);
            goto fail;
        }
        if (k.w != t->columns || k.h != t->rows) {
            st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                            "JPEG 2000 codestream is %ux%u, the dataset says %ux%u "
                            "(Columns x Rows)",
                            k.w, k.h, t->columns, t->rows);
            goto fail;
        }
        if (k.prec != prec || (k.sgnd != 0) != sgnd) {
            st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                            "JPEG 2000 components differ in precision or signedness");
            goto fail;
        }
    }
    if (prec < 1 || prec > 16 || prec > t->bits_allocated) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                        "JPEG 2000 precision %u bits does not fit BitsAllocated %u", prec,
                        t->bits_allocated);
        goto fail;
    }

    if (!opj_decode(codec, stream, image) || !opj_end_decompress(codec, stream)) {
        st = cxr_seterr(err, CXR_ERR_DICOM_DECODE, "JPEG 2000 decoding failed: %s",
                        msgs.first_error[0] ? msgs.first_error : "no detail from OpenJPEG");
        goto fail;
    }
    for (uint32_t c = 0; c < image->numcomps; c++)
        if (!image->comps[c].data) {
            st = cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                            "JPEG 2000 decoding produced no data for component %u", c);
            goto fail;
        }

    {
        const size_t npix = static_cast<size_t>(t->rows) * t->columns;
        const uint32_t ns = t->samples;
        if (bytes_per_sample == 1) {
            auto *o = static_cast<uint8_t *>(out);
            for (uint32_t c = 0; c < ns; c++) {
                const OPJ_INT32 *d = image->comps[c].data;
                for (size_t i = 0; i < npix; i++)
                    o[i * ns + c] = static_cast<uint8_t>(static_cast<uint32_t>(d[i]) & 0xFFu);
            }
        } else {
            auto *o = static_cast<uint16_t *>(out);
            for (uint32_t c = 0; c < ns; c++) {
                const OPJ_INT32 *d = image->comps[c].data;
                for (size_t i = 0; i < npix; i++)
                    o[i * ns + c] = static_cast<uint16_t>(static_cast<uint32_t>(d[i]) & 0xFFFFu);
            }
        }
    }
    if (got) {
        got->precision = prec;
        got->is_signed = sgnd;
    }

fail:
    if (image)
        opj_image_destroy(image);
    if (codec)
        opj_destroy_codec(codec);
    if (stream)
        opj_stream_destroy(stream);
    return st;
}

bool cxr_j2k_peek(const uint8_t *data, size_t len, struct cxr_j2k_decoded *got)
{
    /* SIZ (ISO/IEC 15444-1 A.5.1): FF51 Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz
     * XTOsiz YTOsiz Csiz, then Ssiz XRsiz YRsiz per component. It follows SOC
     * (FF4F) directly; in a JP2 file the codestream sits in the jp2c box. */
    const size_t scan = len < 4096 ? len : 4096;
    for (size_t i = 0; i + 4 <= scan; i++) {
        if (data[i] != 0xFF || data[i + 1] != 0x4F || data[i + 2] != 0xFF || data[i + 3] != 0x51)
            continue;
        const size_t ssiz = i + 4 + 2 + 2 + 8 * 4 + 2; /* first component's Ssiz */
        if (ssiz >= len)
            return false;
        got->precision = (data[ssiz] & 0x7Fu) + 1;
        got->is_signed = (data[ssiz] & 0x80u) != 0;
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------ fragments */

static bool starts_codestream(const Uint8 *p, Uint32 n)
{
    if (n >= 4 && p[0] == 0xFF && p[1] == 0x4F && p[2] == 0xFF && p[3] == 0x51)
        return true;
    return n >= 12 && std::memcmp(p, k_jp2_signature, 12) == 0;
}

enum cxr_status cxr_j2k_frame_bytes(DcmPixelSequence *seq, uint32_t frame, uint32_t frames,
                                    std::vector<uint8_t> &bytes, char *err)
{
    bytes.clear();
    const unsigned long nitems = seq ? seq->card() : 0;
    if (nitems < 2)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                          "encapsulated Pixel Data has no fragments after the offset table");
    if (frames < 1)
        frames = 1;
    if (frame >= frames)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "frame %u requested, the image has %u",
                          frame + 1, frames);

    struct frag {
        Uint8 *p;
        Uint32 n;
    };
    std::vector<frag> frags;
    frags.reserve(nitems - 1);
    for (unsigned long i = 1; i < nitems; i++) {
        DcmPixelItem *it = nullptr;
        Uint8 *p = nullptr;
        if (seq->getItem(it, i).bad() || !it)
            return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "pixel fragment %lu unreadable", i);
        Uint32 n = it->getLength();
        if (n > 0 && (it->getUint8Array(p).bad() || !p))
            return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "pixel fragment %lu unreadable", i);
        frags.push_back({p, n});
    }

    size_t first = 0, last = frags.size(); /* [first, last) */
    if (frames == 1) {
        /* every fragment belongs to the only frame */
    } else {
        /* Basic Offset Table: byte offsets of each frame's first fragment item,
         * counted from the first fragment's item tag (8-byte item headers). */
        DcmPixelItem *bot = nullptr;
        Uint8 *botp = nullptr;
        Uint32 botn = 0;
        if (seq->getItem(bot, 0).good() && bot && (botn = bot->getLength()) >= 4 * frames &&
            bot->getUint8Array(botp).good() && botp) {
            auto off_at = [&](uint32_t k) -> uint64_t {
                const Uint8 *q = botp + 4 * k;
                return static_cast<uint64_t>(q[0]) | static_cast<uint64_t>(q[1]) << 8 |
                       static_cast<uint64_t>(q[2]) << 16 | static_cast<uint64_t>(q[3]) << 24;
            };
            uint64_t start = off_at(frame);
            uint64_t end = frame + 1 < frames ? off_at(frame + 1) : UINT64_MAX;
            uint64_t pos = 0;
            first = last = SIZE_MAX;
            for (size_t i = 0; i < frags.size(); i++) {
                if (pos == start)
                    first = i;
                if (pos == end) {
                    last = i;
                    break;
                }
                pos += 8 + static_cast<uint64_t>(frags[i].n);
            }
            if (first == SIZE_MAX)
                return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                                  "Basic Offset Table entry %u (%llu) points between "
                                  "fragments",
                                  frame, static_cast<unsigned long long>(start));
            if (last == SIZE_MAX)
                last = frags.size();
        } else if (frags.size() == frames) {
            first = frame;
            last = frame + 1;
        } else {
            /* no usable table: a frame begins at each fragment that starts a codestream */
            uint32_t k = 0;
            first = SIZE_MAX;
            for (size_t i = 0; i < frags.size(); i++) {
                if (!starts_codestream(frags[i].p, frags[i].n))
                    continue;
                if (k == frame)
                    first = i;
                else if (k == frame + 1) {
                    last = i;
                    break;
                }
                k++;
            }
            if (first == SIZE_MAX)
                return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                                  "cannot find frame %u among %zu fragments (no offset "
                                  "table)",
                                  frame + 1, frags.size());
        }
    }
    if (first >= last)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "frame %u has no fragments", frame + 1);
    size_t total = 0;
    for (size_t i = first; i < last; i++)
        total += frags[i].n;
    if (total == 0)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "frame %u is empty", frame + 1);
    bytes.reserve(total);
    for (size_t i = first; i < last; i++)
        bytes.insert(bytes.end(), frags[i].p, frags[i].p + frags[i].n);
    return CXR_OK;
}

/* ------------------------------------------------------------------ DcmCodec */

namespace
{

class J2KCodecParameter : public DcmCodecParameter
{
  public:
    DcmCodecParameter *clone() const override { return new J2KCodecParameter(*this); }
    const char *className() const override { return "cxr::J2KCodecParameter"; }
};

class J2KRepresentationParameter : public DcmRepresentationParameter
{
  public:
    DcmRepresentationParameter *clone() const override
    {
        return new J2KRepresentationParameter(*this);
    }
    const char *className() const override { return "cxr::J2KRepresentationParameter"; }
    OFBool operator==(const DcmRepresentationParameter &arg) const override
    {
        return std::strcmp(arg.className(), className()) == 0;
    }
};

/* The image geometry a codec needs, read from the dataset holding the pixel data. */
struct geometry {
    cxr_j2k_target t;
    uint32_t frames;
    OFString photometric;
};

OFCondition read_geometry(DcmItem *ds, geometry &g)
{
    Uint16 rows = 0, cols = 0, spp = 0, ba = 0;
    Sint32 frames = 1;
    OFCondition c = ds->findAndGetUint16(DCM_Rows, rows);
    if (c.good())
        c = ds->findAndGetUint16(DCM_Columns, cols);
    if (c.good())
        c = ds->findAndGetUint16(DCM_SamplesPerPixel, spp);
    if (c.good())
        c = ds->findAndGetUint16(DCM_BitsAllocated, ba);
    if (c.bad())
        return c;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1)
        frames = 1;
    if (rows == 0 || cols == 0 || (spp != 1 && spp != 3) || (ba != 8 && ba != 16) ||
        static_cast<uint64_t>(rows) * cols > CXR_DICOM_MAX_PIXELS)
        return EC_CannotChangeRepresentation;
    g.t = {rows, cols, spp, ba};
    g.frames = static_cast<uint32_t>(frames);
    ds->findAndGetOFString(DCM_PhotometricInterpretation, g.photometric);
    return EC_Normal;
}

/* YBR_ICT / YBR_RCT mean the codestream used a multi-component transform,
 * which OpenJPEG reverses: the decoded samples are RGB (PS3.5 8.2.4). */
OFString decoded_color_model(const OFString &photometric)
{
    if (photometric == "YBR_ICT" || photometric == "YBR_RCT")
        return "RGB";
    return photometric;
}

/* Our detail text travels inside the OFCondition (DCMTK copies it). */
OFCondition status_to_cond(const char *detail)
{
    return makeOFCondition(OFM_dcmdata, 200, OF_error, detail);
}

class J2KDecoder : public DcmCodec
{
  public:
    explicit J2KDecoder(E_TransferSyntax xfer) : xfer_(xfer) {}

    OFBool canChangeCoding(const E_TransferSyntax oldRepType,
                           const E_TransferSyntax newRepType) const override
    {
        return oldRepType == xfer_ && DcmXfer(newRepType).isNotEncapsulated();
    }

    OFCondition decode(const DcmRepresentationParameter *, DcmPixelSequence *pixSeq,
                       DcmPolymorphOBOW &uncompressed, const DcmCodecParameter *,
                       const DcmStack &objStack, OFBool &) const override
    {
        DcmStack stack(objStack);
        (void)stack.pop(); /* the pixel data element */
        DcmObject *obj = stack.pop();
        if (!obj || (obj->ident() != EVR_dataset && obj->ident() != EVR_item))
            return EC_InvalidTag;
        DcmItem *ds = static_cast<DcmItem *>(obj);
        geometry g;
        OFCondition c = read_geometry(ds, g);
        if (c.bad())
            return c;
        const uint64_t frame_bytes =
            static_cast<uint64_t>(g.t.rows) * g.t.columns * g.t.samples * (g.t.bits_allocated / 8);
        const uint64_t total = frame_bytes * g.frames;
        if (total >= 0xFFFFFFFEull || total > CXR_DICOM_MAX_INPUT_BYTES)
            return EC_ElemLengthExceeds32BitField;
        const Uint32 total_even = static_cast<Uint32>(total + (total & 1));
        Uint8 *dst = nullptr;
        if (g.t.bits_allocated == 8) {
            c = uncompressed.createUint8Array(total_even, dst);
        } else {
            Uint16 *d16 = nullptr;
            c = uncompressed.createUint16Array(total_even / 2, d16);
            dst = reinterpret_cast<Uint8 *>(d16);
        }
        if (c.bad())
            return c;
        std::vector<uint8_t> bytes;
        char err[CXR_ERRLEN];
        for (uint32_t f = 0; f < g.frames; f++) {
            enum cxr_status st = cxr_j2k_frame_bytes(pixSeq, f, g.frames, bytes, err);
            if (st == CXR_OK)
                st = cxr_j2k_decode(bytes.data(), bytes.size(), &g.t, dst + f * frame_bytes,
                                    static_cast<size_t>(frame_bytes), nullptr, err);
            if (st != CXR_OK)
                return status_to_cond(err);
        }
        if (total & 1)
            dst[total] = 0;
        /* the decoded samples are plain RGB / interleaved (PS3.5 8.2.4) */
        OFString model = decoded_color_model(g.photometric);
        if (model != g.photometric)
            ds->putAndInsertString(DCM_PhotometricInterpretation, model.c_str());
        if (g.t.samples > 1)
            ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
        return EC_Normal;
    }

    OFCondition decodeFrame(const DcmRepresentationParameter *, DcmPixelSequence *fromPixSeq,
                            const DcmCodecParameter *, DcmItem *dataset, Uint32 frameNo,
                            Uint32 &startFragment, void *buffer, Uint32 bufSize,
                            OFString &decompressedColorModel) const override
    {
        if (!dataset || !fromPixSeq || !buffer)
            return EC_IllegalParameter;
        geometry g;
        OFCondition c = read_geometry(dataset, g);
        if (c.bad())
            return c;
        std::vector<uint8_t> bytes;
        char err[CXR_ERRLEN];
        enum cxr_status st = cxr_j2k_frame_bytes(fromPixSeq, frameNo, g.frames, bytes, err);
        if (st == CXR_OK)
            st = cxr_j2k_decode(bytes.data(), bytes.size(), &g.t, buffer, bufSize, nullptr, err);
        if (st != CXR_OK)
            return status_to_cond(err);
        startFragment = 0; /* let DCMTK recompute: we locate frames ourselves */
        decompressedColorModel = decoded_color_model(g.photometric);
        return EC_Normal;
    }

    OFCondition encode(const Uint16 *, const Uint32, const DcmRepresentationParameter *,
                       DcmPixelSequence *&, const DcmCodecParameter *, DcmStack &,
                       OFBool &) const override
    {
        return EC_IllegalCall; /* decoder only */
    }

    OFCondition encode(const E_TransferSyntax, const DcmRepresentationParameter *,
                       DcmPixelSequence *, const DcmRepresentationParameter *, DcmPixelSequence *&,
                       const DcmCodecParameter *, DcmStack &, OFBool &) const override
    {
        return EC_IllegalCall;
    }

    OFCondition determineDecompressedColorModel(const DcmRepresentationParameter *,
                                                DcmPixelSequence *, const DcmCodecParameter *,
                                                DcmItem *dataset,
                                                OFString &decompressedColorModel) const override
    {
        if (!dataset)
            return EC_IllegalParameter;
        OFString pi;
        OFCondition c = dataset->findAndGetOFString(DCM_PhotometricInterpretation, pi);
        if (c.good())
            decompressedColorModel = decoded_color_model(pi);
        return c;
    }

  private:
    E_TransferSyntax xfer_;
};

} // namespace

void cxr_j2k_register_codecs(void)
{
    /* Called once from cxr_dicom_global_init; the objects live for the process. */
    static J2KCodecParameter param;
    static J2KRepresentationParameter rep;
    static J2KDecoder lossless(EXS_JPEG2000LosslessOnly);
    static J2KDecoder lossy(EXS_JPEG2000);
    OFCondition c1 = DcmCodecList::registerCodec(&lossless, &rep, &param);
    OFCondition c2 = DcmCodecList::registerCodec(&lossy, &rep, &param);
    if (c1.bad() || c2.bad())
        cxr_log(CXR_LOG_ERROR, "dicom", "JPEG 2000 codec registration failed: %s",
                (c1.bad() ? c1 : c2).text());
}
