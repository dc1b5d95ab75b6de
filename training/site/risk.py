"""Which images are kept out for text burned into their pixels (DICOM PS3.15 E.3.1: pixel data is not
read here, so the attributes decide).

- Burned In Annotation = YES: excluded (reason `burned_in_annotation`).
- Modalities and SOP classes that usually carry burned-in text (ultrasound, angiography, fluoroscopy,
  endoscopy, secondary capture, screenshots) are excluded unless they say Burned In Annotation = NO
  (reason `burned_in_risk`).
- `allow_burned_in` keeps both; such images get no Clean Pixel Data Option in their marking.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from training.site.descriptors import values_of

BURNED_IN, BURNED_IN_RISK = "burned_in_annotation", "burned_in_risk"
RISKY_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "SM", "OP", "DOC", "VL"})
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_VIDEO_AND_VISIBLE_LIGHT = "1.2.840.10008.5.1.4.1.1.77."
_RISKY_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.3.1",  # US
    "1.2.840.10008.5.1.4.1.1.12.1", "1.2.840.10008.5.1.4.1.1.12.1.1", "1.2.840.10008.5.1.4.1.1.12.2",  # XA, RF
    "1.2.840.10008.5.1.4.1.1.12.2.1", "1.2.840.10008.5.1.4.1.1.104.1",  # enhanced RF, encapsulated PDF
})
_SCREENSHOT_WORDS = ("SCREEN SHOT", "SCREENSHOT", "SCREEN CAPTURE", "SECONDARY CAPTURE")


def burned_in_reason(ds: Dataset) -> str | None:
    """Why `ds` must stay out (see the module docstring), or None."""
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return BURNED_IN
    if flag == "NO":
        return None
    return BURNED_IN_RISK if is_high_risk(ds) else None


def is_high_risk(ds: Dataset) -> bool:
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    image_type = " ".join(values_of(ds.get("ImageType"))).upper().replace("_", " ")
    return (modality in RISKY_MODALITIES or sop_class.startswith((_SECONDARY_CAPTURE, _VIDEO_AND_VISIBLE_LIGHT))
            or sop_class in _RISKY_CLASSES
            or "ConversionType" in ds or any(word in image_type for word in _SCREENSHOT_WORDS))
