"""What the node accepts: transfer syntaxes from pydicom's UID dictionary, storage SOP classes by rule.

Every transfer syntax in pydicom's dictionary is accepted (the node stores datasets byte for byte
as received and never transcodes), except the two retired ones that are no DICOM byte stream at
all (MIME and XML encapsulation) and Papyrus 3. A pydicom that learns a new syntax brings it here
without an edit. JPEG XL (2023) is newer than pydicom 3.0's dictionary, so its three UIDs are
added until pydicom lists them.

A SOP class counts as storage when pynetdicom or pydicom names it a storage class, or when neither
knows it at all (private classes, and public ones newer than both): Orthanc's
UnknownSopClassAccepted. A class they know as something else (Verification, query/retrieve,
worklist...) is not storage, and a C-STORE on its context is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom._uid_dict import UID_dictionary
from pydicom.uid import UID
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import _STORAGE_CLASSES, uid_to_service_class

_NOT_A_BYTE_STREAM = frozenset({
    "1.2.840.10008.1.2.6.1",  # RFC 2557 MIME encapsulation (retired)
    "1.2.840.10008.1.2.6.2",  # XML Encoding (retired)
    "1.2.840.10008.1.20",  # Papyrus 3 Implicit VR Little Endian (retired; a file format)
})
_JPEG_XL = ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112")
_DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"})
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
# Pixel data stays native (defined length) in these; every other syntax encapsulates it.
_NATIVE = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN,
                     "1.2.840.10008.1.2.1.99"})


def _pydicom_transfer_syntaxes() -> list[str]:
    return [uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax"]


def _accepted() -> tuple[str, ...]:
    known = _pydicom_transfer_syntaxes()
    listed = [uid for uid in known if uid not in _NOT_A_BYTE_STREAM]
    listed += [uid for uid in _JPEG_XL if uid not in known]
    # Explicit VR Little Endian first: the syntax a sender that proposes several is most likely to mean.
    preferred = [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN]
    return tuple(preferred + [uid for uid in listed if uid not in preferred])


ACCEPTED_TRANSFER_SYNTAXES = _accepted()


@dataclass(frozen=True)
class SyntaxTraits:
    """How a dataset in one transfer syntax is laid out, for the structure walk."""

    explicit_vr: bool
    little_endian: bool
    deflated: bool
    encapsulated: bool


def traits_of(transfer_syntax: str) -> SyntaxTraits:
    return SyntaxTraits(explicit_vr=transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN,
                        little_endian=transfer_syntax != EXPLICIT_VR_BIG_ENDIAN,
                        deflated=transfer_syntax in _DEFLATED,
                        encapsulated=transfer_syntax not in _NATIVE and transfer_syntax not in _DEFLATED)


def is_storage_sop_class(uid: str) -> bool:
    """Storage by pynetdicom's or pydicom's name for it, or unknown to both (see the module's note)."""
    if uid in _STORAGE_CLASS_UIDS:
        return True
    service = uid_to_service_class(UID(uid))
    if service is not ServiceClass:
        return service is StorageServiceClass
    entry = UID_dictionary.get(uid)
    if entry is None:
        return True
    return entry[1] == "SOP Class" and "Storage" in entry[0] and "Commitment" not in entry[0]


_STORAGE_CLASS_UIDS = frozenset(_STORAGE_CLASSES.values())
