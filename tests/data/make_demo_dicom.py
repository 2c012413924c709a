#!/usr/bin/python3
"""make_demo_dicom.py — the README's example study: one chest X-ray of a child
with pneumonia from the Kermany test split (../shared/data/cxr-kermany/test,
CC BY 4.0; the copy there is 224x224), upscaled 2x (bilinear) to 448x448 so
that it passes the gate's minimum size, stored as an uncompressed CR image.

PatientAge is set to 003Y by us: the Kermany set holds children aged one to
five; the age of this child is not published. Everything else that names a
person is a placeholder. Deterministic: the same input gives the same bytes.

usage: make_demo_dicom.py KERMANY_JPEG OUT.dcm
"""
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

src, out = sys.argv[1], sys.argv[2]
img = Image.open(src).convert("L").resize((448, 448), Image.BILINEAR)
px = np.asarray(img, dtype=np.uint8)
name = src.rsplit("/", 1)[-1]
ds = Dataset()
ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
# fixed UIDs under 2.25 (UUIDv8-style from the file name would do; fixed is simpler to cite)
ds.StudyInstanceUID = "2.25.160935238915311233853312412003512540001"
ds.SeriesInstanceUID = "2.25.160935238915311233853312412003512540002"
ds.SOPInstanceUID = "2.25.160935238915311233853312412003512540003"
ds.PatientName = "Demo^Child"
ds.PatientID = "DEMO-KERMANY-1"
ds.PatientAge = "003Y"
ds.PatientSex = ""
ds.PatientBirthDate = ""
ds.StudyDate = "20260101"
ds.StudyTime = "120000"
ds.AccessionNumber = "DEMO1"
ds.StudyID = "1"
ds.ReferringPhysicianName = ""
ds.StudyDescription = "XR CHEST 1 VIEW (demo, Kermany test image)"
ds.SeriesNumber = 1
ds.InstanceNumber = 1
ds.Modality = "CR"
ds.BodyPartExamined = "CHEST"
ds.ViewPosition = "AP"
ds.Manufacturer = "cxr-triage demo (from " + name + ")"
ds.ImageType = ["DERIVED", "SECONDARY"]
ds.Rows, ds.Columns = px.shape
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.BitsAllocated = 8
ds.BitsStored = 8
ds.HighBit = 7
ds.PixelRepresentation = 0
ds.PixelData = px.tobytes()
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = ds.SOPClassUID
meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.file_meta = meta
ds.is_little_endian, ds.is_implicit_VR = True, False
pydicom.dcmwrite(out, ds, write_like_original=False)
