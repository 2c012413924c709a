#!/usr/bin/python3
"""Reference decoder for tests/unit/check_dicom.c: pydicom's view of a file.

Usage: dicom_pixel_ref.py <dicom file> <out.raw>
Decodes the first frame with pydicom (its own handlers: numpy, RLE, Pillow for
JPEG and JPEG 2000) and writes it as little-endian int32, row-major, samples
interleaved, each value the stored value masked to Bits Stored and
sign-extended when signed (for JPEG 2000 the codestream's precision and
signedness, as pydicom applies them). Prints one line:
    ok <rows> <cols> <samples> <photometric>
or  skip <reason>     (pydicom cannot decode it: no handler, broken file)
Exit status 0 in both cases; 2 on usage errors.
"""
import sys
import warnings

warnings.simplefilter("ignore")


def main():
    if len(sys.argv) != 3:
        print("usage: dicom_pixel_ref.py <dicom> <out.raw>", file=sys.stderr)
        return 2
    try:
        import numpy as np
        import pydicom
        from pydicom.pixel_data_handlers.util import get_j2k_parameters
    except Exception as e:  # pragma: no cover - environment without pydicom
        print(f"skip pydicom unavailable: {e}")
        return 0
    htj2k = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
    try:
        ds = pydicom.dcmread(sys.argv[1], force=True)
        tsu = str(ds.file_meta.get("TransferSyntaxUID", ""))
        if tsu in htj2k:
            # pydicom 2.3 has no HTJ2K handler: hand the first frame's
            # codestream to Pillow (OpenJPEG >= 2.5 decodes HT code-blocks)
            import io
            from PIL import Image
            from pydicom.encaps import generate_pixel_data_frame
            nf = int(getattr(ds, "NumberOfFrames", 1) or 1)
            cs = next(generate_pixel_data_frame(ds.PixelData, nf))
            arr = np.asarray(Image.open(io.BytesIO(cs)))
            if nf > 1:
                arr = arr[np.newaxis]
        else:
            arr = ds.pixel_array
    except Exception as e:
        print(f"skip {type(e).__name__}: {str(e)[:120]}")
        return 0
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    spp = int(getattr(ds, "SamplesPerPixel", 1))
    if frames > 1:
        arr = arr[0]
    rows, cols = int(ds.Rows), int(ds.Columns)
    ba = int(ds.BitsAllocated)
    bs = int(getattr(ds, "BitsStored", ba))
    hb = int(getattr(ds, "HighBit", bs - 1))
    pr = int(getattr(ds, "PixelRepresentation", 0))
    ts = str(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in ds.file_meta else ""
    if ts in ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"):
        # pydicom applies the codestream's precision and signedness
        from pydicom.encaps import generate_pixel_data_frame
        first = next(generate_pixel_data_frame(ds.PixelData, frames))
        p = get_j2k_parameters(first)
        if p.get("precision"):
            bs, hb = int(p["precision"]), int(p["precision"]) - 1
        if p.get("is_signed") is not None:
            pr = 1 if p["is_signed"] else 0
    pi = str(ds.PhotometricInterpretation)
    if ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51") and pi.startswith("YBR") \
            and spp == 3:
        # pydicom 2.3 hands JPEG colour back in YCbCr; DCMTK (like most viewers)
        # converts to RGB while decoding: compare like with like.
        from pydicom.pixel_data_handlers.util import convert_color_space
        arr = convert_color_space(arr, "YBR_FULL", "RGB")
        pi = "RGB"
    if ba not in (8, 16):
        print(f"skip BitsAllocated {ba}")
        return 0
    udt = np.uint8 if ba == 8 else np.uint16
    raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("="), copy=False)
    raw = raw.view(np.uint8 if raw.dtype.itemsize == 1 else udt) if raw.dtype.itemsize == ba // 8 \
        else raw.astype(np.int64).astype(udt)
    v = (raw.astype(np.int64) >> (hb + 1 - bs)) & ((1 << bs) - 1)
    if pr == 1:
        v = np.where(v & (1 << (bs - 1)), v - (1 << bs), v)
    if v.size != rows * cols * spp:
        print(f"skip shape {arr.shape}")
        return 0
    v.astype("<i4").tofile(sys.argv[2])
    print(f"ok {rows} {cols} {spp} {pi}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
