/* present.cc — the presentation pipeline: stored values → what a radiologist
 * sees, as an 8-bit MONOCHROME2 ("bright bone") image.
 *
 * PS3.4 Annex N order: Modality LUT (Rescale Slope/Intercept or Modality LUT
 * Sequence, PS3.3 C.11.1) → VOI (PS3.3 C.11.2: the first window with its VOI
 * LUT Function, else the first VOI LUT, else min/max) → Presentation LUT
 * (inverse for MONOCHROME1) → 8 bits.
 *
 * DCMTK's DicomImage (dcmimgle) does the transforms. We hand it a small
 * "presentation dataset": the Image Pixel Module of the decoded first frame
 * (frame.cc) plus the LUT attributes copied from the instance, so it never
 * sees other frames, overlays or codecs. What DicomImage lacks we add:
 *  - VOI LUT Function LINEAR_EXACT (PS3.3 C.11.2.1.3.2): exactly DCMTK's
 *    LINEAR with center + 0.5 and width + 1 (same line, same clipping points);
 *  - the min/max fallback excluding Pixel Padding Value / Range Limit
 *    (PS3.3 C.7.5.1.1.2, compared on stored values), padding painted black.
 * Colour images (RGB, YBR) become grey by luma (0.299 R + 0.587 G + 0.114 B)
 * with no VOI; PALETTE COLOR is refused.
 */
#include "dicom_internal.h"
#include "frame.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include <dcmtk/dcmimgle/dcmimage.h>
#include <dcmtk/dcmimgle/dipixel.h>
#include <dcmtk/dcmimage/diregist.h> /* registers colour support in DicomImage */

namespace
{

/* Appends `text` to the NUL-terminated dst[size], truncating. */
void append(char *dst, size_t size, const char *text)
{
    size_t k = std::strlen(dst);
    if (k + 1 < size)
        cxr_dicom_copy_str(dst + k, size - k, text);
}

/* Copies `tag` (deep, sequences included) from `src` into `dst` when present. */
void copy_element(DcmItem *src, DcmItem *dst, const DcmTagKey &tag)
{
    DcmElement *e = nullptr;
    if (src->findAndGetElement(tag, e).good() && e) {
        DcmElement *c = OFstatic_cast(DcmElement *, e->clone());
        if (c && dst->insert(c, OFTrue).bad())
            delete c;
    }
}

/* A US/SS ("xs") value such as Pixel Padding Value, read as the stored value
 * it stands for (signed when PixelRepresentation is 1). */
bool get_xs(DcmItem *ds, const DcmTagKey &tag, uint16_t pixel_representation, int32_t *out)
{
    DcmElement *e = nullptr;
    if (ds->findAndGetElement(tag, e).bad() || !e || e->getLength() < 2)
        return false;
    Uint16 u = 0;
    Sint16 s = 0;
    if (e->getUint16(u).good())
        *out = pixel_representation == 1 ? static_cast<int16_t>(u) : u;
    else if (e->getSint16(s).good())
        *out = pixel_representation == 1 ? s : static_cast<uint16_t>(s);
    else
        return false;
    return true;
}

/* Window from the dataset (first value pair, PS3.3 C.11.2.1.2). */
struct window {
    bool valid = false;
    double center = 0, width = 0;
    char function[20] = "LINEAR";
    unsigned long count = 0;
};

window first_window(DcmItem *ds)
{
    window w;
    Float64 c = 0, wd = 0;
    if (ds->findAndGetFloat64(DCM_WindowCenter, c, 0).bad() ||
        ds->findAndGetFloat64(DCM_WindowWidth, wd, 0).bad() || !std::isfinite(c) ||
        !std::isfinite(wd))
        return w;
    w.center = c;
    w.width = wd;
    DcmElement *e = nullptr;
    if (ds->findAndGetElement(DCM_WindowCenter, e).good() && e)
        w.count = e->getVM();
    char fn[20];
    cxr_dicom_get_str(ds, DCM_VOILUTFunction, fn, sizeof fn);
    if (fn[0])
        cxr_dicom_copy_str(w.function, sizeof w.function, fn);
    /* LINEAR needs width >= 1, LINEAR_EXACT and SIGMOID width > 0 */
    if (std::strcmp(w.function, "LINEAR_EXACT") == 0 || std::strcmp(w.function, "SIGMOID") == 0)
        w.valid = wd > 0;
    else
        w.valid = wd >= 1;
    return w;
}

/* Modality values of non-padding pixels: min and max; false if none. */
template <class T>
bool minmax_of(const void *data, size_t n, const std::vector<uint8_t> &pad, double *lo, double *hi)
{
    const T *p = static_cast<const T *>(data);
    bool any = false;
    T a = 0, b = 0;
    for (size_t i = 0; i < n; i++) {
        if (!pad.empty() && pad[i])
            continue;
        if (!any) {
            a = b = p[i];
            any = true;
        } else if (p[i] < a) {
            a = p[i];
        } else if (p[i] > b) {
            b = p[i];
        }
    }
    *lo = static_cast<double>(a);
    *hi = static_cast<double>(b);
    return any;
}

bool inter_minmax(const DiPixel *px, size_t n, const std::vector<uint8_t> &pad, double *lo,
                  double *hi)
{
    const void *d = px->getData();
    if (!d)
        return false;
    switch (px->getRepresentation()) {
    case EPR_Uint8: return minmax_of<Uint8>(d, n, pad, lo, hi);
    case EPR_Sint8: return minmax_of<Sint8>(d, n, pad, lo, hi);
    case EPR_Uint16: return minmax_of<Uint16>(d, n, pad, lo, hi);
    case EPR_Sint16: return minmax_of<Sint16>(d, n, pad, lo, hi);
    case EPR_Uint32: return minmax_of<Uint32>(d, n, pad, lo, hi);
    case EPR_Sint32: return minmax_of<Sint32>(d, n, pad, lo, hi);
    }
    return false;
}

/* The dataset DicomImage renders: one decoded frame and the LUT attributes. */
OFCondition build_presentation_dataset(DcmDataset *src, const cxr_frame &f, DcmDataset &dst)
{
    static const DcmTagKey k_copied[] = {
        DCM_SOPClassUID,    DCM_Modality,
        DCM_RescaleSlope,   DCM_RescaleIntercept,
        DCM_RescaleType,    DCM_ModalityLUTSequence,
        DCM_VOILUTSequence, DCM_WindowCenter,
        DCM_WindowWidth,    DCM_WindowCenterWidthExplanation,
    };
    for (const DcmTagKey &t : k_copied)
        copy_element(src, &dst, t);
    OFCondition c = dst.putAndInsertUint16(DCM_Rows, f.rows);
    if (c.good())
        c = dst.putAndInsertUint16(DCM_Columns, f.columns);
    if (c.good())
        c = dst.putAndInsertUint16(DCM_SamplesPerPixel, f.samples);
    if (c.good())
        c = dst.putAndInsertUint16(DCM_BitsAllocated, f.bits_allocated);
    if (c.good())
        c = dst.putAndInsertUint16(DCM_BitsStored, f.bits_stored);
    if (c.good())
        c = dst.putAndInsertUint16(DCM_HighBit, f.high_bit);
    if (c.good())
        c = dst.putAndInsertUint16(DCM_PixelRepresentation, f.pixel_representation);
    if (c.good())
        c = dst.putAndInsertString(DCM_PhotometricInterpretation, f.photometric);
    if (c.good() && f.samples > 1)
        c = dst.putAndInsertUint16(DCM_PlanarConfiguration, f.planar_configuration);
    if (c.good())
        c = dst.putAndInsertString(DCM_NumberOfFrames, "1");
    if (c.bad())
        return c;
    if (f.bits_allocated == 8)
        return dst.putAndInsertUint8Array(DCM_PixelData, f.data,
                                          static_cast<unsigned long>(f.size));
    return dst.putAndInsertUint16Array(DCM_PixelData, reinterpret_cast<const Uint16 *>(f.data),
                                       static_cast<unsigned long>(f.size / 2));
}

enum cxr_status present(struct cxr_dicom_instance *inst, struct cxr_dicom_image *out, char *err)
{
    const char *name = inst->name;
    DcmDataset *ds = inst->file->getDataset();
    cxr_frame f;
    enum cxr_status st = cxr_frame_decode(inst, &f, err);
    if (st != CXR_OK)
        return st;
    if (std::strcmp(f.photometric, "PALETTE COLOR") == 0)
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                          "%s: PALETTE COLOR images are not supported (not a radiograph)", name);
    const bool mono = f.samples == 1;
    const size_t npix = static_cast<size_t>(f.rows) * f.columns;

    /* Pixel padding (PS3.3 C.7.5.1.1.2): on stored values, before any LUT. */
    std::vector<uint8_t> pad;
    int32_t pv = 0, limit = 0;
    size_t npad = 0;
    if (mono && get_xs(ds, DCM_PixelPaddingValue, f.pixel_representation, &pv)) {
        int32_t lo = pv, hi = pv;
        if (get_xs(ds, DCM_PixelPaddingRangeLimit, f.pixel_representation, &limit)) {
            lo = pv < limit ? pv : limit;
            hi = pv < limit ? limit : pv;
        }
        pad.assign(npix, 0);
        for (size_t i = 0; i < npix; i++) {
            int32_t v = cxr_frame_stored_value(&f, i);
            if (v >= lo && v <= hi) {
                pad[i] = 1;
                npad++;
            }
        }
        if (npad == 0)
            pad.clear();
    }

    DcmDataset pds;
    OFCondition c = build_presentation_dataset(ds, f, pds);
    if (c.bad())
        return cxr_dicom_cond(err, CXR_ERR_INTERNAL, c, "%s: presentation dataset", name);
    std::free(f.data); /* pds holds its own copy now */
    f.data = nullptr;
    f.size = 0;

    std::unique_ptr<DicomImage> img(
        new DicomImage(&pds, EXS_LittleEndianExplicit, CIF_MayDetachPixelData));
    if (img->getStatus() != EIS_Normal)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: image not renderable: %s", name,
                          DicomImage::getString(img->getStatus()));
    if (img->getFrameCount() < 1 || img->getWidth() != f.columns || img->getHeight() != f.rows)
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: rendered size differs", name);

    char voi[sizeof out->voi_used] = "";
    if (!mono) {
        DicomImage *grey = img->createMonochromeImage(0.299, 0.587, 0.114);
        if (!grey || grey->getStatus() != EIS_Normal) {
            delete grey;
            return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: colour to grey failed", name);
        }
        img.reset(grey);
        std::snprintf(voi, sizeof voi, "colour %s to grey (luma), no VOI", f.photometric);
    } else {
        window w = first_window(ds);
        const unsigned long nlut = img->getVoiLutCount();
        int ok = 0;
        if (w.valid) {
            const bool exact = std::strcmp(w.function, "LINEAR_EXACT") == 0;
            const bool sigmoid = std::strcmp(w.function, "SIGMOID") == 0;
            ok = img->setVoiLutFunction(sigmoid ? EFV_Sigmoid : EFV_Linear);
            /* LINEAR_EXACT ((x - c)/w + 0.5) is LINEAR with c + 0.5, w + 1 */
            ok = ok &&
                 img->setWindow(exact ? w.center + 0.5 : w.center, exact ? w.width + 1 : w.width);
            std::snprintf(voi, sizeof voi, "window C=%g W=%g %s%s", w.center, w.width,
                          exact || sigmoid ? w.function : "LINEAR",
                          exact || sigmoid || std::strcmp(w.function, "LINEAR") == 0
                              ? ""
                              : " (unknown function, LINEAR used)");
            if (w.count > 1) {
                size_t k = std::strlen(voi);
                std::snprintf(voi + k, sizeof voi - k, " (1 of %lu)", w.count);
            }
        } else if (nlut > 0) {
            ok = img->setVoiLut(0);
            std::snprintf(voi, sizeof voi, "VOI LUT 1 of %lu", nlut);
        }
        if (!ok) {
            const DiPixel *inter = img->getInterData();
            double lo = 0, hi = 0;
            if (!inter || !inter_minmax(inter, npix, pad, &lo, &hi)) {
                lo = hi = 0;
                std::snprintf(voi, sizeof voi, "min/max (every pixel is padding)");
            } else {
                std::snprintf(voi, sizeof voi, "min/max %g..%g%s", lo, hi,
                              npad ? " (padding excluded)" : "");
            }
            /* LINEAR_EXACT with c = (min+max)/2, w = max-min maps min→0, max→255 */
            const double width = hi > lo ? hi - lo : 1;
            img->setVoiLutFunction(EFV_Linear);
            if (!img->setWindow((lo + hi) / 2 + 0.5, width + 1))
                return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: min/max window refused", name);
        }
        /* MONOCHROME1: DicomImage's default presentation LUT shape inverts it,
         * so the output is always MONOCHROME2 (bright bone). */
    }

    std::unique_ptr<uint8_t, void (*)(void *)> pixels(
        static_cast<uint8_t *>(std::malloc(npix ? npix : 1)), std::free);
    if (!pixels)
        return cxr_seterr(err, CXR_ERR_NOMEM, "%s: out of memory", name);
    if (!img->getOutputData(pixels.get(), static_cast<unsigned long>(npix), 8, 0)) {
        return cxr_seterr(err, CXR_ERR_DICOM_DECODE, "%s: rendering failed: %s", name,
                          DicomImage::getString(img->getStatus()));
    }
    if (!pad.empty())
        for (size_t i = 0; i < npix; i++)
            if (pad[i])
                pixels.get()[i] = 0;
    if (f.note[0]) {
        append(voi, sizeof voi, "; ");
        append(voi, sizeof voi, f.note);
    }
    out->width = f.columns;
    out->height = f.rows;
    out->pixels = pixels.release();
    cxr_dicom_copy_str(out->voi_used, sizeof out->voi_used, voi);
    return CXR_OK;
}

} // namespace

extern "C" enum cxr_status cxr_dicom_instance_present(struct cxr_dicom_instance *inst,
                                                      struct cxr_dicom_image *out, char *err)
{
    if (out)
        std::memset(out, 0, sizeof *out);
    return cxr_dicom_guard(
        err, [&]() -> enum cxr_status {
            if (!inst || !out)
                return cxr_seterr(err, CXR_ERR_INVALID_ARG, "present: NULL argument");
            enum cxr_status st = present(inst, out, err);
            if (st != CXR_OK)
                std::memset(out, 0, sizeof *out);
            return st;
        });
}

extern "C" void cxr_dicom_image_release(struct cxr_dicom_image *img)
{
    if (!img)
        return;
    std::free(img->pixels);
    std::memset(img, 0, sizeof *img);
}
