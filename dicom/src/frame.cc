/* frame.cc — decoding the first frame of an instance's pixel data into native
 * samples, whatever the transfer syntax (PS3.5 §8, Annex A), and the raw
 * decode entry point cxr_dicom_instance_decode().
 *
 * Native and DCMTK-decodable syntaxes go through
 * DcmPixelData::getUncompressedFrame() (one frame only, codec chosen by
 * DcmCodecList). JPEG 2000 and HTJ2K go straight to OpenJPEG
 * (j2k_codec.h) on the frame's bytes: no codec is registered with DCMTK's
 * process-wide DcmCodecList for them, so a host that shares DCMTK (Orthanc,
 * with the plugin) decodes exactly what it decoded without us. The
 * codestream's own precision and signedness are known that way: when they
 * disagree with Bits Stored / Pixel Representation the codestream wins (as
 * pydicom does) and the frame says so in `note`.
 */
#include "dicom_internal.h"
#include "frame.h"
#include "j2k_codec.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>

/* Transfer syntaxes this build decodes (docs/conformance-input.md). */
static bool ts_supported(E_TransferSyntax x)
{
    switch (x) {
    case EXS_LittleEndianImplicit:
    case EXS_LittleEndianExplicit:
    case EXS_BigEndianExplicit:
    case EXS_DeflatedLittleEndianExplicit:
    case EXS_JPEGProcess1:
    case EXS_JPEGProcess2_4:
    case EXS_JPEGProcess14:
    case EXS_JPEGProcess14SV1:
    case EXS_JPEGLSLossless:
    case EXS_JPEGLSLossy:
    case EXS_RLELossless:
    case EXS_JPEG2000LosslessOnly:
    case EXS_JPEG2000: return true;
    default: return false;
    }
}

static enum cxr_status ts_error(char *err, const char *name, const char *uid)
{
    return cxr_seterr(err, CXR_ERR_DICOM_TS, "%s: transfer syntax not supported: %s (%s)", name,
                      cxr_dicom_ts_name(uid), uid && *uid ? uid : "none");
}

static bool photometric_known(const OFString &pi, Uint16 spp)
{
    if (spp == 1)
        return pi == "MONOCHROME1" || pi == "MONOCHROME2" || pi == "PALETTE COLOR";
    return pi == "RGB" || pi == "YBR_FULL" || pi == "YBR_FULL_422" || pi == "YBR_PARTIAL_422" ||
           pi == "YBR_PARTIAL_420" || pi == "YBR_ICT" || pi == "YBR_RCT";
}

/* JPEG 2000: the codestream's precision and signedness win over Bits Stored /
 * Pixel Representation when they disagree (as pydicom applies them); the
 * multi-component transform of YBR_ICT / YBR_RCT is undone by the decoder. */
static void apply_codestream(struct cxr_frame *f, const cxr_j2k_decoded &got, const OFString &pi)
{
    if (got.precision >= 1 && got.precision <= f->bits_allocated &&
        (got.precision != f->bits_stored || (got.is_signed ? 1 : 0) != f->pixel_representation)) {
        std::snprintf(f->note, sizeof f->note,
                      "codestream %u-bit %s overrides BitsStored %u / PixelRepresentation %u",
                      got.precision, got.is_signed ? "signed" : "unsigned", f->bits_stored,
                      f->pixel_representation);
        f->bits_stored = static_cast<uint16_t>(got.precision);
        f->high_bit = static_cast<uint16_t>(got.precision - 1);
        f->pixel_representation = got.is_signed ? 1 : 0;
    }
    if (pi == "YBR_ICT" || pi == "YBR_RCT")
        cxr_dicom_copy_str(f->photometric, sizeof f->photometric, "RGB");
    f->planar_configuration = 0;
}

/* RLE puts each frame in one fragment (PS3.5 A.4.2), but some writers split a
 * single frame over several; DCMTK 3.6.7's RLE decoder then mis-assembles
 * segments that cross a fragment boundary. For a single-frame image every
 * fragment belongs to the one frame: join them into one fragment first (the
 * bytes are unchanged, only the item boundaries go). */
static enum cxr_status merge_rle_fragments(DcmPixelData *pix, E_TransferSyntax x, const char *name,
                                           char *err)
{
    const DcmRepresentationParameter *rp = nullptr;
    E_TransferSyntax orig = EXS_Unknown;
    DcmPixelSequence *seq = nullptr;
    pix->getOriginalRepresentationKey(orig, rp);
    if (orig != x || pix->getEncapsulatedRepresentation(orig, rp, seq).bad() || !seq ||
        seq->card() <= 2)
        return CXR_OK;
    std::vector<Uint8> joined;
    for (unsigned long i = 1; i < seq->card(); i++) {
        DcmPixelItem *it = nullptr;
        Uint8 *p = nullptr;
        if (seq->getItem(it, i).bad() || !it)
            return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: RLE fragment %lu unreadable", name,
                              i);
        Uint32 n = it->getLength();
        if (n > 0 && (it->getUint8Array(p).bad() || !p))
            return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: RLE fragment %lu unreadable", name,
                              i);
        joined.insert(joined.end(), p, p + n);
    }
    if (joined.size() >= 0xFFFFFFFEu)
        return cxr_seterr(err, CXR_ERR_LIMIT, "%s: RLE frame too large", name);
    DcmPixelItem *first = nullptr;
    if (seq->getItem(first, 1).bad() || !first ||
        first->putUint8Array(joined.data(), static_cast<unsigned long>(joined.size())).bad())
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: cannot join RLE fragments", name);
    while (seq->card() > 2) {
        DcmPixelItem *it = nullptr;
        if (seq->remove(it, seq->card() - 1).bad())
            break;
        delete it;
    }
    return CXR_OK;
}

enum cxr_status cxr_frame_decode(struct cxr_dicom_instance *inst, struct cxr_frame *f, char *err)
{
    const char *name = inst->name;
    DcmDataset *ds = inst->file->getDataset();
    const char *uid = inst->info.transfer_syntax_uid;
    const bool htj2k = cxr_dicom_ts_is_htj2k(uid);
    E_TransferSyntax x = inst->xfer;
    if (!htj2k) {
        if (uid[0] && DcmXfer(uid).getXfer() == EXS_Unknown)
            return ts_error(err, name, uid); /* a syntax DCMTK 3.6.7 does not know */
        if (!ts_supported(x))
            return ts_error(err, name, DcmXfer(x).getXferID());
    }
    if (htj2k && !cxr_j2k_have_htj2k())
        return ts_error(err, name, uid);

    DcmElement *elem = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, elem).bad() || !elem || elem->ident() != EVR_PixelData)
        return cxr_seterr(err, CXR_ERR_DICOM_MISSING, "%s: no Pixel Data (not an image)", name);

    /* Image Pixel Module (PS3.3 C.7.6.3): checked before anything is allocated. */
    Uint16 rows = 0, cols = 0, spp = 0, ba = 0, bs = 0, hb = 0, pr = 0, pc = 0;
    OFString pi;
    char pi_buf[20];
    bool spp_present = true;
    if (ds->findAndGetUint16(DCM_Rows, rows).bad() ||
        ds->findAndGetUint16(DCM_Columns, cols).bad() ||
        ds->findAndGetUint16(DCM_BitsAllocated, ba).bad())
        return cxr_seterr(err, CXR_ERR_DICOM_MISSING, "%s: Rows, Columns or BitsAllocated missing",
                          name);
    if (ds->findAndGetUint16(DCM_SamplesPerPixel, spp).bad()) {
        spp = 1;
        spp_present = false;
    }
    if (ds->findAndGetUint16(DCM_BitsStored, bs).bad())
        bs = ba;
    if (ds->findAndGetUint16(DCM_HighBit, hb).bad())
        hb = static_cast<Uint16>(bs - 1);
    if (ds->findAndGetUint16(DCM_PixelRepresentation, pr).bad())
        pr = 0;
    if (spp > 1 && ds->findAndGetUint16(DCM_PlanarConfiguration, pc).bad())
        pc = 0;
    cxr_dicom_get_str(ds, DCM_PhotometricInterpretation, pi_buf, sizeof pi_buf);
    for (char *q = pi_buf; *q; q++)
        if (*q >= 'a' && *q <= 'z')
            *q = static_cast<char>(*q - 'a' + 'A');
    pi = pi_buf;
    if (!spp_present && (pi == "MONOCHROME1" || pi == "MONOCHROME2")) {
        /* Type 1, but some writers omit it; DCMTK's frame functions need it */
        ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
    }
    if (rows == 0 || cols == 0)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: image size %ux%u", name, cols, rows);
    if (static_cast<uint64_t>(rows) * cols > CXR_DICOM_MAX_PIXELS)
        return cxr_seterr(err, CXR_ERR_LIMIT, "%s: %ux%u pixels is more than the %llu-pixel limit",
                          name, cols, rows, static_cast<unsigned long long>(CXR_DICOM_MAX_PIXELS));
    if (ba != 8 && ba != 16)
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED, "%s: BitsAllocated %u not supported (8 or 16)",
                          name, ba);
    if (bs < 1 || bs > ba || hb >= ba || hb + 1 < bs)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                          "%s: inconsistent BitsStored %u / HighBit %u / BitsAllocated %u", name,
                          bs, hb, ba);
    if (spp != 1 && spp != 3)
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED, "%s: SamplesPerPixel %u not supported", name,
                          spp);
    if (!photometric_known(pi, spp))
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                          "%s: PhotometricInterpretation '%s' with %u sample(s) per pixel not "
                          "supported",
                          name, pi.c_str(), spp);

    if (pi == "YBR_FULL_422" || pi == "YBR_PARTIAL_422" || pi == "YBR_PARTIAL_420") {
        if (!DcmXfer(x).isEncapsulated() && !htj2k)
            return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                              "%s: uncompressed sub-sampled colour (%s) not supported", name,
                              pi.c_str());
    }

    DcmPixelData *pix = static_cast<DcmPixelData *>(elem);
    Sint32 frames = 1;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1)
        frames = 1;

    f->rows = rows;
    f->columns = cols;
    f->samples = spp;
    f->bits_allocated = ba;
    f->bits_stored = bs;
    f->high_bit = hb;
    f->pixel_representation = pr;
    f->planar_configuration = pc;
    f->note[0] = '\0';
    cxr_dicom_copy_str(f->photometric, sizeof f->photometric, pi.c_str());

    if (htj2k || x == EXS_JPEG2000LosslessOnly || x == EXS_JPEG2000) {
        /* OpenJPEG directly, on the first frame's bytes */
        E_TransferSyntax orig = EXS_Unknown;
        const DcmRepresentationParameter *rp = nullptr;
        DcmPixelSequence *seq = nullptr;
        pix->getOriginalRepresentationKey(orig, rp);
        if (pix->getEncapsulatedRepresentation(orig, rp, seq).bad() || !seq)
            return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: %s Pixel Data is not encapsulated",
                              name, htj2k ? "HTJ2K" : "JPEG 2000");
        std::vector<uint8_t> bytes;
        char why[CXR_ERRLEN];
        enum cxr_status st = cxr_j2k_frame_bytes(seq, 0, static_cast<uint32_t>(frames), bytes, why);
        if (st != CXR_OK)
            return cxr_seterr(err, st, "%s: %s", name, why);
        const size_t size = static_cast<size_t>(rows) * cols * spp * (ba / 8);
        if (!f->alloc(size))
            return cxr_seterr(err, CXR_ERR_NOMEM, "%s: out of memory (%zu bytes)", name, size);
        cxr_j2k_target t{rows, cols, spp, ba};
        cxr_j2k_decoded got{};
        st = cxr_j2k_decode(bytes.data(), bytes.size(), &t, f->data, f->size, &got, why);
        if (st != CXR_OK)
            return cxr_seterr(err, st, "%s: %s", name, why);
        apply_codestream(f, got, pi);
        return CXR_OK;
    }
    if (x == EXS_RLELossless && frames == 1) {
        enum cxr_status st = merge_rle_fragments(pix, x, name, err);
        if (st != CXR_OK)
            return st;
    }

    Uint32 size = 0;
    OFCondition c = pix->getUncompressedFrameSize(ds, size);
    if (c.bad() || size == 0)
        return cxr_dicom_cond(err, CXR_ERR_DICOM_DECODE, c, "%s: frame size", name);
    if (!DcmXfer(x).isEncapsulated()) {
        /* native: the value must hold the whole first frame */
        Uint32 have = pix->getLength(x);
        if (have < size)
            return cxr_seterr(err, CXR_ERR_DICOM_DECODE,
                              "%s: Pixel Data holds %u bytes, one %ux%u frame needs %u "
                              "(truncated)",
                              name, have, cols, rows, size);
    }
    if (!f->alloc(size))
        return cxr_seterr(err, CXR_ERR_NOMEM, "%s: out of memory (%u bytes)", name, size);
    Uint32 start_fragment = 0;
    OFString model;
    /* DCMTK wants an even buffer (it may swap bytes in place); alloc() gave n+1 */
    c = pix->getUncompressedFrame(ds, 0, start_fragment, f->data, size + (size & 1), model,
                                  nullptr);
    if (c.bad())
        return cxr_dicom_cond(err, CXR_ERR_DICOM_DECODE, c, "%s: decoding %s", name,
                              DcmXfer(x).getXferName());
    if (!model.empty())
        cxr_dicom_copy_str(f->photometric, sizeof f->photometric, model.c_str());
    return CXR_OK;
}

int32_t cxr_frame_stored_value(const struct cxr_frame *f, size_t i)
{
    uint32_t raw = f->bits_allocated == 8
                       ? f->data[i]
                       : static_cast<uint32_t>(reinterpret_cast<const uint16_t *>(f->data)[i]);
    const unsigned shift = static_cast<unsigned>(f->high_bit + 1 - f->bits_stored);
    const uint32_t mask = f->bits_stored >= 32 ? 0xFFFFFFFFu : (1u << f->bits_stored) - 1u;
    raw = (raw >> shift) & mask;
    if (f->pixel_representation == 1 && (raw & (1u << (f->bits_stored - 1))))
        return static_cast<int32_t>(raw | ~mask);
    return static_cast<int32_t>(raw);
}

extern "C" enum cxr_status cxr_dicom_instance_decode(struct cxr_dicom_instance *inst,
                                                     struct cxr_dicom_pixels *out, char *err)
{
    if (out)
        std::memset(out, 0, sizeof *out);
    return cxr_dicom_guard(
        err, [&]() -> enum cxr_status {
            if (!inst || !out)
                return cxr_seterr(err, CXR_ERR_INVALID_ARG, "decode: NULL argument");
            cxr_frame f;
            enum cxr_status st = cxr_frame_decode(inst, &f, err);
            if (st != CXR_OK)
                return st;
            const size_t npix = static_cast<size_t>(f.rows) * f.columns;
            const size_t n = npix * f.samples;
            if (f.samples > 1 && n * (f.bits_allocated / 8) > f.size)
                return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                                  "%s: sub-sampled colour (%s) not supported by the raw decoder",
                                  inst->name, f.photometric);
            auto *v = static_cast<int32_t *>(std::malloc(n * sizeof(int32_t)));
            if (!v)
                return cxr_seterr(err, CXR_ERR_NOMEM, "%s: out of memory", inst->name);
            for (size_t i = 0; i < npix; i++)
                for (size_t s = 0; s < f.samples; s++) {
                    /* planar configuration 1 stores each colour plane whole */
                    size_t src = f.planar_configuration == 1 ? s * npix + i : i * f.samples + s;
                    v[i * f.samples + s] = cxr_frame_stored_value(&f, src);
                }
            out->width = f.columns;
            out->height = f.rows;
            out->samples = f.samples;
            out->values = v;
            cxr_dicom_copy_str(out->photometric, sizeof out->photometric, f.photometric);
            cxr_dicom_copy_str(out->note, sizeof out->note, f.note);
            return CXR_OK;
        });
}

extern "C" void cxr_dicom_pixels_release(struct cxr_dicom_pixels *px)
{
    if (!px)
        return;
    std::free(px->values);
    std::memset(px, 0, sizeof *px);
}
