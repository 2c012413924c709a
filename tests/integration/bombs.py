#!/usr/bin/env python3
"""bombs.py — small files that expand to a great deal (decompression bombs),
for the tests of the input budgets (issue 14, item 3). The bytes are made by
streaming zeros through zlib, so that the expanded data never exists here.

  bombs.py dicom OUT EXPANDED [ROWS COLS]
      a CR chest image in Deflated Explicit VR Little Endian
      (1.2.840.10008.1.2.1.99) whose Pixel Data holds EXPANDED zero bytes
      while Rows x Columns (default 512 x 512, 8 bits) declare far fewer
  bombs.py dicom-header OUT EXPANDED
      the same with a private OB element of EXPANDED zero bytes before a
      proper 512 x 512 Pixel Data
  bombs.py dicom-good OUT
      a proper deflated 512 x 512 CR chest image (a gradient), for contrast
  bombs.py png OUT WIDTH HEIGHT [BITDEPTH COLOUR]
      a PNG of WIDTH x HEIGHT zero pixels (default 8-bit grey: BITDEPTH 8,
      COLOUR 0; 16 and 2 make 16-bit RGB)
"""
import struct
import sys
import zlib

DEFLATED = "1.2.840.10008.1.2.1.99"
CHUNK = 1 << 20


def header_dataset(rows, cols, uid):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = uid + ".1"
    ds.SeriesInstanceUID = uid + ".2"
    ds.PatientName = "Bomb^Test"
    ds.PatientID = "BOMB"
    ds.PatientAge = "040Y"
    ds.StudyDate = "20260101"
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    return ds


def explicit_le(ds):
    """The data set's elements in Explicit VR Little Endian, as bytes."""
    import pydicom
    from pydicom.filebase import DicomBytesIO

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(buf, ds)
    return buf.getvalue()


def meta_bytes(ds):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DEFLATED
    meta.ImplementationClassUID = "2.25.14"
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    pydicom.filewriter.write_file_meta_info(buf, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buf.getvalue()


def ob_header(group, elem, length):
    return struct.pack("<HH2sHI", group, elem, b"OB", 0, length)


def zeros_into(comp, n, out):
    block = bytes(min(n, CHUNK))
    while n > 0:
        k = min(n, CHUNK)
        out.write(comp.compress(block[:k]))
        n -= k


def dicom(path, expanded, rows=512, cols=512, private=False):
    expanded += expanded & 1
    ds = header_dataset(rows, cols, "2.25.1414" + ("2" if private else "1"))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate (PS3.5 A.5)
    with open(path, "wb") as out:
        out.write(meta_bytes(ds))
        out.write(comp.compress(explicit_le(ds)))
        if private:
            out.write(comp.compress(struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 4) + b"BOMB"))
            out.write(comp.compress(ob_header(0x0009, 0x1010, expanded)))
            zeros_into(comp, expanded, out)
            out.write(comp.compress(ob_header(0x7FE0, 0x0010, rows * cols)))
            zeros_into(comp, rows * cols, out)
        else:
            out.write(comp.compress(ob_header(0x7FE0, 0x0010, expanded)))
            zeros_into(comp, expanded, out)
        out.write(comp.flush())


def dicom_good(path):
    ds = header_dataset(512, 512, "2.25.14143")
    ds.PixelData = bytes((x + y) // 4 % 256 for y in range(512) for x in range(512))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    with open(path, "wb") as out:
        out.write(meta_bytes(ds))
        out.write(comp.compress(explicit_le(ds)))
        out.write(comp.flush())


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(path, width, height, depth=8, colour=0):
    channels = {0: 1, 2: 3}[colour]
    row = 1 + width * channels * depth // 8  # filter byte + samples
    comp = zlib.compressobj(9)
    idat = bytearray()
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)))
        block = bytes(row) * max(1, CHUNK // row)
        left = height
        while left > 0:
            k = min(left, len(block) // row)
            idat += comp.compress(block[: k * row])
            left -= k
            if len(idat) > CHUNK:
                out.write(png_chunk(b"IDAT", bytes(idat)))
                idat.clear()
        idat += comp.flush()
        out.write(png_chunk(b"IDAT", bytes(idat)))
        out.write(png_chunk(b"IEND", b""))


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    kind, out = argv[1], argv[2]
    nums = [int(a) for a in argv[3:]]
    if kind == "dicom":
        dicom(out, *nums)
    elif kind == "dicom-header":
        dicom(out, nums[0], private=True)
    elif kind == "dicom-good":
        dicom_good(out)
    elif kind == "png":
        png(out, *nums)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
