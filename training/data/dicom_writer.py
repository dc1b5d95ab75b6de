"""Write phantom images as DICOM the way PACS sends chest radiographs: DX (For Presentation) or CR,
MONOCHROME1 or MONOCHROME2, 12-16 bit stored values with a window, uncompressed or lossless compressed
(JPEG 2000 via pylibjpeg-openjpeg, RLE via pydicom)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
TRANSFER_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}
# SNOMED CT view codes (DICOM CID 4010) and the chest anatomic region (CID 4031).
VIEW_CODES = {
    "PA": ("399348003", "postero-anterior"),
    "AP": ("399182000", "antero-posterior"),
    "LL": ("399173006", "left lateral"),
}
PATIENT_ORIENTATION = {"PA": ["L", "F"], "AP": ["L", "F"], "LL": ["A", "F"]}


class DicomWriteError(ValueError):
    """The image or its attributes cannot be encoded as requested."""


@dataclass(frozen=True)
class ImageEncoding:
    """How one image is stored: modality, photometric interpretation, bit depth and transfer syntax."""

    modality: str = "DX"             # "DX" or "CR"
    photometric: str = "MONOCHROME2"  # or "MONOCHROME1" (inverted: air is white in the stored values)
    bits_stored: int = 12            # 12..16
    transfer_syntax: str = "explicit"  # "explicit", "jpeg2000" or "rle"

    def __post_init__(self) -> None:
        if self.modality not in ("DX", "CR"):
            raise DicomWriteError(f"modality must be DX or CR, got {self.modality!r}")
        if self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise DicomWriteError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {self.photometric!r}")
        if not 12 <= self.bits_stored <= 16:
            raise DicomWriteError(f"bits_stored must lie in 12..16, got {self.bits_stored}")
        if self.transfer_syntax not in TRANSFER_SYNTAXES:
            raise DicomWriteError(f"transfer_syntax must be one of {sorted(TRANSFER_SYNTAXES)}")


@dataclass(frozen=True)
class StudyIdentity:
    """Patient and study attributes shared by every image of one study (all fictitious)."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    description: str


@dataclass(frozen=True)
class ImageIdentity:
    series_uid: str
    series_number: int
    sop_instance_uid: str
    view: str  # "PA", "AP" or "LL"


def deterministic_uid(*parts: object) -> str:
    """A UID derived from its parts (pydicom's root + a hash): the same parts give the same UID."""
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def to_stored_values(image: np.ndarray, encoding: ImageEncoding) -> tuple[np.ndarray, float, float]:
    """Scale a 0..1 presentation image (white = dense) to stored values; returns (pixels, center, width)
    with the window given in stored values."""
    if image.ndim != 2 or not np.isfinite(image).all():
        raise DicomWriteError("image must be a finite 2-D array")
    top = (1 << encoding.bits_stored) - 1
    values = np.rint((0.03 + 0.94 * np.clip(image, 0.0, 1.0)) * top).astype(np.uint16)
    lo, hi = np.percentile(values[:: 4, :: 4], [1.0, 99.5])
    center, width = float(np.rint((lo + hi) / 2)), float(max(np.rint((hi - lo) * 1.05), 2.0))
    if encoding.photometric == "MONOCHROME1":
        values = (top - values).astype(np.uint16)
        center = float(top) - center
    return values, center, width


def build_dataset(image: np.ndarray, study: StudyIdentity, ident: ImageIdentity, encoding: ImageEncoding,
                  pixel_spacing_mm: float) -> Dataset:
    """A complete, valid DX or CR dataset for one image, not yet compressed."""
    pixels, center, width = to_stored_values(image, encoding)
    ds = Dataset()
    _patient_and_study(ds, study)
    _series_and_equipment(ds, study, ident, encoding)
    _image(ds, ident, encoding, pixels, pixel_spacing_mm)
    ds.WindowCenter = center
    ds.WindowWidth = width
    ds.WindowCenterWidthExplanation = "PHANTOM"
    ds.VOILUTFunction = "LINEAR"
    ds.file_meta = _file_meta(ds)
    return ds


def write_dicom(path: Path, ds: Dataset, encoding: ImageEncoding) -> None:
    """Compress as requested and write a DICOM Part 10 file."""
    syntax = TRANSFER_SYNTAXES[encoding.transfer_syntax]
    if syntax.is_compressed:
        ds.compress(syntax, generate_instance_uid=False)  # keep our deterministic UID
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _patient_and_study(ds: Dataset, study: StudyIdentity) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.IssuerOfPatientID = "RADDRAFT-PHANTOM"
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.PatientIdentityRemoved = "NO"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.AccessionNumber = study.accession
    ds.StudyID = study.study_id
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.description


def _series_and_equipment(ds: Dataset, study: StudyIdentity, ident: ImageIdentity, enc: ImageEncoding) -> None:
    ds.Modality = enc.modality
    ds.SeriesInstanceUID = ident.series_uid
    ds.SeriesNumber = ident.series_number
    ds.SeriesDate = study.study_date
    ds.SeriesTime = study.study_time
    ds.SeriesDescription = {"PA": "CHEST PA", "AP": "CHEST AP", "LL": "CHEST LAT"}[ident.view]
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "LL" if ident.view == "LL" else ident.view
    ds.Manufacturer = "RadDraft"
    ds.ManufacturerModelName = "Phantom Generator"
    ds.SoftwareVersions = "1"
    ds.InstitutionName = "RadDraft Synthetic"
    ds.StationName = "PHANTOM"
    if enc.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"


def _image(ds: Dataset, ident: ImageIdentity, enc: ImageEncoding, pixels: np.ndarray, spacing: float) -> None:
    ds.SOPClassUID = DX_FOR_PRESENTATION if enc.modality == "DX" else CR_IMAGE_STORAGE
    ds.SOPInstanceUID = ident.sop_instance_uid
    ds.InstanceNumber = 1
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionDate = ds.StudyDate
    ds.AcquisitionTime = ds.StudyTime
    ds.ImageType = ["ORIGINAL", "PRIMARY"] + ([""] if enc.modality == "DX" else [])
    ds.PatientOrientation = PATIENT_ORIENTATION[ident.view]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.KVP = 120 if ident.view != "LL" else 125
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = enc.photometric
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = enc.bits_stored
    ds.HighBit = enc.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PixelData = pixels.tobytes()
    if enc.modality == "DX":
        _dx_modules(ds, ident, enc)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def _dx_modules(ds: Dataset, ident: ImageIdentity, enc: ImageEncoding) -> None:
    inverse = enc.photometric == "MONOCHROME1"
    ds.PixelIntensityRelationship = "LOG"
    # -1: higher stored values mean less X-ray intensity reached the detector (MONOCHROME2, white = dense)
    ds.PixelIntensityRelationshipSign = 1 if inverse else -1
    ds.PresentationLUTShape = "INVERSE" if inverse else "IDENTITY"
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = Sequence([_code("43799004", "Chest")])
    ds.ViewCodeSequence = Sequence([_code(*VIEW_CODES[ident.view])])
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = Sequence()
    ds.DetectorType = "SCINTILLATOR"
    ds.AcquisitionContextSequence = Sequence()
    ds.PositionerType = "NONE"


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RADDRAFT_PHANTOM"
    return meta
