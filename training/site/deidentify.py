"""De-identification of the site's images: DICOM PS3.15 Annex E, Basic Application Level Confidentiality
Profile (Table E.1-1), with the Retain Longitudinal Temporal Information with Modified Dates Option when
dates are shifted.

- Every attribute of the profile's table gets its action: X remove, Z empty, D dummy, U new UID. Where the
  table leaves a choice (X/Z, Z/D, X/D, X/Z/D) the choice that keeps the dataset valid without a value is
  taken: Z when Z is offered, else X; Patient ID takes the D of its Z/D, a keyed pseudonym, so that the
  images of one patient stay recognisable as one. Sequences named by the table are emptied or removed; the
  rest are walked item by item with the same rules.
- Beyond the table, by value representation, so that attributes the table does not name (or that a newer
  edition added) cannot carry identity through: person names are removed, instance UIDs remapped, dates
  shifted or removed, public attributes unknown to the dictionary removed; private attributes and the
  overlay and curve groups (60xx, 50xx: bitmaps may hold text) are removed.
- UIDs map through a keyed hash (HMAC-SHA256 with the site's secret key, `deid.key` in the store folder)
  to "2.25." UUIDs: the same original UID gives the same new UID within and across runs, so references
  between series and instances stay consistent and a second export of a study matches the first.
- Dates: shifted by a per-patient offset derived from the same key (intervals between a patient's studies
  are kept), or removed. Times stay (whole-day shifts do not change them) unless dates are removed.
- Kept for training: pixel data and the image pixel module, modality, view position and codes, laterality,
  body part, photometric interpretation, window and rescale. Series Description, Image Comments and
  Acquisition Device Processing Description are cleaned (Clean Descriptors Option) down to the view words
  the engine reads (`engine.preprocess`: "PA", "LATERAL", ...), so images are chosen exactly as before.
- Clean Descriptors and Clean Structured Content beyond the table (`descriptors.py`): other free text keeps
  only allow-listed words, coded strings only listed values, codes only what pydicom's code dictionary
  vouches for (or a keyed stand-in value and listed words); URLs (UR) are removed.
- Clean Pixel Data for what the encoding carries (`pixels.py`): JPEG/JPEG 2000 comment and application
  segments removed without re-encoding (checked by decoding), bits outside Bits Stored zeroed; instances
  where that cannot be done are refused (`PixelCleaningError`).
- Dates: DA and DT ranges ("20240302-20240309") and multi-valued dates are shifted in every part.
- The options applied are recorded in Patient Identity Removed, De-identification Method and its Code
  Sequence (CID 7050).

Nothing here is written to disk except the key; the caller writes what `Deidentifier.instance` returns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import logging
import os
import re
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID_dictionary

from dicom_node.durable import fsync_dir, write_synced_temp
from engine.preprocess import FRONTAL_WORDS, LATERAL_WORDS, UNDECIDED_WORDS
from training.site.descriptors import (
    CODE_KEYWORDS,
    FREE_TEXT_VRS,
    clean_code_item,
    clean_coded_string,
    descriptor_words,
    is_code_item,
)
from training.site.pixels import clean_pixel_data

log = logging.getLogger(__name__)

KEY_NAME = "deid.key"
DATE_MODES = ("shift", "remove")
# Whole days, into the past: at least a year, so that no shifted date is near its original.
SHIFT_DAYS = (365, 3650)
PROFILE_NAME = "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile"

# DICOM PS3.15 Table E.1-1 (2024b), Basic Profile column, by keyword. Attributes of the command group and
# the repeating overlay/curve groups are handled separately (see `_removed_group`).
PROFILE_TABLE: dict[str, str] = {
    "X": """
        AcquisitionComments AcquisitionProtocolDescription ActualHumanPerformersSequence
        AdditionalPatientHistory AddressTrial AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence
        AdmittingDiagnosesDescription AdmittingTime Allergies AnnotationGroupDescription ApprovalStatusDateTime
        Arbitrary AssertionExpirationDateTime AuthorObserverSequence BeamDescription BolusDescription
        BranchOfService CalibrationDate CalibrationTime CameraOwnerName CassetteID CertifiedTimestamp
        ClinicalTrialProtocolEthicsCommitteeApprovalNumber ClinicalTrialSeriesDescription ClinicalTrialSeriesID
        ClinicalTrialTimePointDescription CommentsOnRadiationDose CommentsOnThePerformedProcedureStep
        CompensatorDescription ConfidentialityConstraintOnPatientDataDescription
        ConsultingPhysicianIdentificationSequence ContainerComponentID ContainerDescription
        ContentCreatorIdentificationCodeSequence ContrastBolusStartTime ContrastBolusStopTime
        ContributionDateTime ContributionDescription CountryOfResidence CreationDate CreationTime
        CurrentObserverTrial CurrentPatientLocation CurveDate CurveTime CustodialOrganizationSequence
        DataSetTrailingPadding DateOfDocumentOrVerbalTransactionTrial DateOfInstallation DateOfLastCalibration
        DateOfManufacture DateOfSecondaryCapture DateTimeOfLastCalibration DecompositionDescription
        DerivationDescription DeviceDescription DeviceSettingDescription DigitalSignaturesSequence DischargeDate
        DischargeDiagnosisDescription DischargeTime DisplacementReferenceLabel DistributionAddress
        DistributionName DoseReferenceDescription EntityDescription EntityName
        EquipmentFrameOfReferenceDescription EthicsCommitteeApprovalEffectivenessEndDate
        EthicsCommitteeApprovalEffectivenessStartDate EthnicGroup ExpectedCompletionDateTime
        FilterLookupTableDescription FindingsGroupRecordingDateTrial FindingsGroupRecordingTimeTrial
        FixationDeviceDescription FractionGroupDescription FrameComments GPSAltitude GPSAltitudeRef
        GPSAreaInformation GPSDOP GPSDateStamp GPSDestBearing GPSDestBearingRef GPSDestDistance
        GPSDestDistanceRef GPSDestLatitude GPSDestLatitudeRef GPSDestLongitude GPSDestLongitudeRef
        GPSDifferential GPSImgDirection GPSImgDirectionRef GPSLatitude GPSLatitudeRef GPSLongitude
        GPSLongitudeRef GPSMapDatum GPSMeasureMode GPSProcessingMethod GPSSatellites GPSSpeed GPSSpeedRef
        GPSStatus GPSTimeStamp GPSTrack GPSTrackRef GPSVersionID GantryID GeneratorID HL7DocumentEffectiveTime
        HumanPerformerName HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments
        ImagePresentationComments ImagingServiceRequestComments Impressions InstanceCoercionDateTime
        InstanceOriginStatus InstitutionAddress InstitutionalDepartmentName
        InstitutionalDepartmentTypeCodeSequence InsurancePlanIdentification IntendedFractionStartTime
        IntendedRecipientsOfResultsIdentificationSequence InterpretationApprovalDate InterpretationApprovalTime
        InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription InterpretationID
        InterpretationIDIssuer InterpretationRecordedDate InterpretationRecordedTime InterpretationRecorder
        InterpretationText InterpretationTranscriber InterpretationTranscriptionDate
        InterpretationTranscriptionTime InterventionDrugStartTime InterventionDrugStopTime
        IssueDateOfImagingServiceRequest IssueTimeOfImagingServiceRequest IssuerOfAdmissionID
        IssuerOfAdmissionIDSequence IssuerOfClinicalTrialProtocolID IssuerOfClinicalTrialSeriesID
        IssuerOfClinicalTrialSiteID IssuerOfClinicalTrialSubjectID IssuerOfClinicalTrialSubjectReadingID
        IssuerOfClinicalTrialTimePointID IssuerOfPatientID IssuerOfServiceEpisodeID
        IssuerOfServiceEpisodeIDSequence LastMenstrualDate LensMake LensModel LensSerialNumber LensSpecification
        LongDeviceDescription MAC MakerNote MedicalAlerts MedicalRecordLocator MilitaryRank
        ModifiedAttributesSequence ModifiedImageDate ModifiedImageDescription ModifiedImageTime
        ModifyingDeviceID MultienergyAcquisitionDescription NameOfPhysiciansReadingStudy
        NamesOfIntendedRecipientsOfResults NetworkID NonconformingDataElementValue
        NonconformingModifiedAttributesSequence ObservationDateTrial ObservationStartDateTime
        ObservationTimeTrial Occupation OrderCallbackPhoneNumber OrderCallbackTelecomInformation OrderEnteredBy
        OrderEntererLocation OriginalAttributesSequence Originator OtherClinicalTrialProtocolIDsSequence
        OtherPatientIDs OtherPatientIDsSequence OtherPatientNames OverlayDate OverlayTime ParticipantSequence
        PatientAddress PatientAge PatientBirthName PatientBirthTime PatientComments PatientInstitutionResidence
        PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
        PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientSetupPhotoDescription
        PatientSize PatientState PatientTelecomInformation PatientTelephoneNumbers PatientTransportArrangements
        PatientTreatmentPreparationMethodDescription PatientTreatmentPreparationProcedureParameterDescription
        PatientWeight PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepEndDate
        PerformedProcedureStepEndDateTime PerformedProcedureStepEndTime PerformedProcedureStepID
        PerformedProcedureStepStartDate PerformedProcedureStepStartDateTime PerformedProcedureStepStartTime
        PerformedStationAETitle PerformedStationGeographicLocationCodeSequence PerformedStationName
        PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence PerformingPhysicianName
        PersonAddress PersonTelecomInformation PersonTelephoneNumbers PhysicianApprovingInterpretation
        PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
        PlateID PositionAcquisitionTemplateDescription PositionAcquisitionTemplateName PreMedication
        PregnancyStatus PrescriptionDescription PresentationCreationDate PresentationCreationTime
        PriorTreatmentDoseDescription ProcedureStepCancellationDateTime ProductExpirationDateTime
        PyramidDescription PyramidLabel ROICreatorSequence ROIDateTime ROIDescription ROIGenerationDescription
        ROIInterpreterSequence ROIObservationDateTime ROIObservationDescription ROIObservationLabel
        RTPlanDescription RTPlanName RadiopharmaceuticalStartDateTime RadiopharmaceuticalStartTime
        RadiopharmaceuticalStopDateTime RadiopharmaceuticalStopTime ReasonForOmissionDescription
        ReasonForRequestedProcedureCodeSequence ReasonForStudy ReasonForTheImagingServiceRequest
        ReasonForTheRequestedProcedure ReasonForVisit ReasonForVisitCodeSequence ReceivingAE
        ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence ReferencedPatientPhotoSequence
        ReferencedPatientSequence ReferencedSOPInstanceMACSequence ReferringPhysicianAddress
        ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RegionOfResidence
        RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments RequestedProcedureID
        RequestedProcedureLocation RequestedSeriesDescription RequestingAE RequestingPhysician RequestingService
        RespiratoryMotionCompensationTechniqueDescription ResponsibleOrganization ResponsiblePerson
        ResultsComments ResultsDistributionListSequence ResultsID ResultsIDIssuer RetrieveAETitle
        SOPAuthorizationDateTime ScheduledAdmissionDate ScheduledAdmissionTime ScheduledDischargeDate
        ScheduledDischargeTime ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
        ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
        ScheduledProcedureStepDescription ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
        ScheduledProcedureStepExpirationDateTime ScheduledProcedureStepID ScheduledProcedureStepLocation
        ScheduledProcedureStepModificationDateTime ScheduledProcedureStepStartDate
        ScheduledProcedureStepStartDateTime ScheduledProcedureStepStartTime ScheduledStationAETitle
        ScheduledStationGeographicLocationCodeSequence ScheduledStationName ScheduledStationNameCodeSequence
        ScheduledStudyLocation ScheduledStudyLocationAETitle ScheduledStudyStartDate ScheduledStudyStartTime
        ScheduledStudyStopDate ScheduledStudyStopTime SeriesDescription ServiceEpisodeDescription
        ServiceEpisodeID SetupTechniqueDescription ShieldingDeviceDescription SlideIdentifier SmokingStatus
        SourceManufacturer SpecialNeeds SpecimenAccessionNumber SpecimenDetailedDescription
        SpecimenShortDescription StationAETitle StructureSetDescription StructureSetName StudyArrivalDate
        StudyArrivalTime StudyComments StudyCompletionDate StudyCompletionTime StudyDescription StudyIDIssuer
        StudyReadDate StudyReadTime StudyVerifiedDate StudyVerifiedTime SubstanceAdministrationDateTime
        TelephoneNumberTrial TemplateLocalVersion TemplateVersion TextComments TextString
        TimeOfDocumentCreationOrVerbalTransactionTrial TimeOfLastCalibration TimeOfSecondaryCapture
        TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle TransducerIdentificationSequence
        TreatmentSites UDISequence UniqueDeviceIdentifier VerbalSourceIdentifierCodeSequenceTrial
        VerbalSourceTrial VisitComments WaveformFilterDescription XRayDetectorLabel
    """,
    "Z": """
        AccessionNumber CalibrationDateTime ClinicalTrialCoordinatingCenterName ClinicalTrialProtocolName
        ClinicalTrialSiteID ClinicalTrialSiteName ClinicalTrialTimePointID
        ConceptualVolumeCombinationDescription ConceptualVolumeDescription ConsultingPhysicianName
        DeviceAlternateIdentifier FillerOrderNumberImagingServiceRequest FractionationNotes
        IssuerOfTheContainerIdentifierSequence IssuerOfTheSpecimenIdentifierSequence
        ManufacturerDeviceIdentifier ParticipationDateTime PatientBirthDate PatientName PatientSex
        PlacerOrderNumberImagingServiceRequest PrescriptionNotes PrescriptionNotesSequence ROIInterpreter
        ROIName RTAccessoryDeviceSlotID RTAccessoryHolderSlotID RTPhysicianIntentNarrative
        RadiationGenerationModeDescription ReasonForSuperseding ReferringPhysicianName ReviewDate ReviewTime
        SourceOfPreviousValues SpecimenPreparationSequence StructureSetDate StructureSetTime StudyDate StudyID
        StudyTime TreatmentTechniqueNotes VerifyingObserverIdentificationCodeSequence
    """,
    "D": """
        AcquisitionFieldOfViewLabel AnnotationGroupLabel AnnotationGroupUID AssertionDateTime
        AttributeModificationDateTime BeamHoldTransitionDateTime CertificateOfSigner
        ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID ClinicalTrialSponsorName
        ClinicalTrialSubjectID ClinicalTrialSubjectReadingID ContainerIdentifier ContentSequence
        ContextGroupLocalVersion ContextGroupVersion Date DateTime DecayCorrectionDateTime DestinationAE
        DeviceLabel DigitalSignatureDateTime EffectiveDateTime EncapsulatedDocument EntityLabel EntityLongLabel
        ExclusionStartDateTime FlowIdentifier FlowIdentifierSequence FrameAcquisitionDateTime
        FrameOriginTimestamp FrameReferenceDateTime FunctionalSyncPulse GraphicAnnotationSequence
        HangingProtocolCreationDateTime ImpedanceMeasurementDateTime InformationIssueDateTime InterlockDateTime
        InterlockDescription InterlockOriginDescription ModifyingSystem OverrideDateTime
        PersonIdentificationCodeSequence PersonName RTPlanLabel RTPrescriptionLabel RTToleranceSetLabel
        RadiationDoseIdentificationLabel RadiationDoseInVivoMeasurementLabel RadiationGenerationModeLabel
        ReasonForTheAttributeModification RecordedRTControlPointDateTime ReferencedDateTime SafePositionExitDate
        SafePositionExitTime SafePositionReturnDate SafePositionReturnTime SelectorAEValue SelectorASValue
        SelectorDAValue SelectorDTValue SelectorLOValue SelectorLTValue SelectorOBValue SelectorPNValue
        SelectorSHValue SelectorSTValue SelectorTMValue SelectorUNValue SelectorURValue SelectorUTValue
        SourceEndDateTime SourceIdentifier SourceStartDateTime SourceStrengthReferenceDate
        SourceStrengthReferenceTime SpecimenIdentifier StructureSetLabel Time TreatmentControlPointDate
        TreatmentControlPointTime TreatmentPositionGroupLabel TreatmentToleranceViolationDateTime
        TreatmentToleranceViolationDescription UserContentLabel UserContentLongLabel VerificationDateTime
        VerifyingObserverName VerifyingObserverSequence VerifyingOrganization XRayDetectorID XRaySourceID
    """,
    "U": """
        AcquisitionUID ConcatenationUID ConceptualVolumeUID ConstituentConceptualVolumeUID DeviceUID
        DigitalSignatureUID DimensionOrganizationUID DoseReferenceUID DosimetricObjectiveUID
        FailedSOPInstanceUIDList FiducialUID FrameOfReferenceUID InstanceCreatorUID IrradiationEventUID
        LargePaletteColorLookupTableUID ManufacturerDeviceClassUID MediaStorageSOPInstanceUID MultiplexGroupUID
        ObservationSubjectUIDTrial ObservationUID PaletteColorLookupTableUID PatientSetupUID
        PresentationDisplayCollectionUID PresentationSequenceCollectionUID PyramidUID RTTreatmentPhaseUID
        ReferencedConceptualVolumeUID ReferencedDoseReferenceUID ReferencedDosimetricObjectiveUID
        ReferencedFiducialsUID ReferencedFrameOfReferenceUID
        ReferencedGeneralPurposeScheduledProcedureStepTransactionUID ReferencedObservationUIDTrial
        ReferencedSOPInstanceUID ReferencedSOPInstanceUIDInFile ReferencedTreatmentPositionGroupUID
        RelatedFrameOfReferenceUID SOPInstanceUID SeriesInstanceUID SourceConceptualVolumeUID
        SourceFrameOfReferenceUID SpecimenUID StorageMediaFileSetUID StudyInstanceUID
        SynchronizationFrameOfReferenceUID TargetUID TemplateExtensionCreatorUID
        TemplateExtensionOrganizationUID TrackingUID TransactionUID TreatmentPositionGroupUID
        TreatmentSessionUID UID
    """,
    "X/Z": """
        AcquisitionContextSequence AcquisitionDate AcquisitionTime BarcodeValue LabelText PatientSexNeutered
        ReferencedStudySequence RequestedProcedureDescription ReviewerName SourceSerialNumber
        TreatmentMachineName
    """,
    "Z/D": """
        ContentCreatorName ContentDate ContentTime ContrastBolusAgent InstructionPerformedDateTime PatientID
    """,
    "X/D": """
        AcquisitionDeviceProcessingDescription DateOfLastDetectorCalibration DetectorID EndAcquisitionDateTime
        FirstTreatmentDate InstanceCreationDate IntendedPhaseEndDate IntendedPhaseStartDate
        MostRecentTreatmentDate ObservationDateTime OperatorIdentificationSequence ProtocolName RTPlanDate
        RTPlanTime RTTreatmentApproachLabel SeriesDate SeriesTime StartAcquisitionDateTime
        TimeOfLastDetectorCalibration TreatmentDate TreatmentSite TreatmentTime
    """,
    "X/Z/D": """
        AcquisitionDateTime DeviceSerialNumber InstanceCreationTime InstitutionCodeSequence InstitutionName
        OperatorsName ReferencedPerformedProcedureStepSequence StationName
    """,
    "X/Z/U*": """
        ReferencedImageSequence SourceImageSequence
    """,
}

# Stricter than the table: issuer sequences carry the names of institutions, calendar dates of birth and
# death are dates of birth and death.
EXTRA_REMOVALS = ("IssuerOfAccessionNumberSequence", "IssuerOfPatientIDQualifiersSequence",
                  "PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar",
                  "PatientAlternativeCalendar")
# Never shifted: a birth date or time identifies even when moved by a few years.
NEVER_SHIFTED = frozenset({"PatientBirthDate", "PatientBirthTime"})
# Cleaned to the view words the engine reads instead of removed (Clean Descriptors Option).
VIEW_DESCRIPTORS = frozenset({"SeriesDescription", "ImageComments", "AcquisitionDeviceProcessingDescription"})
VIEW_WORDS = FRONTAL_WORDS | LATERAL_WORDS | UNDECIDED_WORDS
# Set by the de-identification itself.
MARKERS = frozenset({"PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
                     "LongitudinalTemporalInformationModified"})
DUMMY_TEXT = "ANONYMIZED"
# DICOM CID 7050 "De-identification Method".
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
CLEAN_DESCRIPTORS_CODE = ("113105", "Clean Descriptors Option")
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
CLEAN_STRUCTURED_CODE = ("113104", "Clean Structured Content Option")

# What was done to an attribute, as the removal log names it.
REMOVED, EMPTIED, DUMMY, NEW_UID, SHIFTED, CLEANED, PSEUDONYM = "X", "Z", "D", "U", "M", "C", "P"
WORDS, CODED, CODE = "W", "S", "K"
ACTION_MEANINGS = {REMOVED: "removed", EMPTIED: "emptied", DUMMY: "replaced by a dummy value",
                   NEW_UID: "UID replaced (keyed, consistent)", SHIFTED: "date shifted (per patient)",
                   CLEANED: "reduced to view words", PSEUDONYM: "replaced by a keyed pseudonym",
                   WORDS: "reduced to allow-listed words", CODED: "unlisted coded-string values removed",
                   CODE: "code rebuilt (dictionary meaning, or keyed stand-in value and listed words)"}
_KEEP, _WALK = "keep", "walk"
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_NUMBER_VRS = frozenset({"DS", "FD", "FL", "IS", "SL", "SS", "SV", "UL", "US", "UV"})
_DATE_VRS = frozenset({"DA", "DT"})


class DeidentificationError(Exception):
    """The de-identification cannot run (unusable key file, bad option)."""


def _table_actions() -> dict[str, str]:
    actions = {keyword: action for action, keywords in PROFILE_TABLE.items() for keyword in keywords.split()}
    actions.update({keyword: "X" for keyword in EXTRA_REMOVALS})
    return actions


PROFILE_ACTIONS = _table_actions()


# -- the key -------------------------------------------------------------------------------------------
def load_or_create_key(store_root: Path) -> bytes:
    """The site's secret de-identification key, `<store>/deid.key`; created (0600) on first use.

    Losing or replacing it changes every UID, pseudonym, date offset and split of later exports.
    """
    path = Path(store_root) / KEY_NAME
    if not path.exists():
        _create_key(path)
    try:
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DeidentificationError(f"the de-identification key {path} is unreadable ({exc}); restore it from a "
                                    "backup (a new key would change every de-identified UID)") from None
    if len(key) < 16:
        raise DeidentificationError(f"the de-identification key {path} is too short; restore it from a backup")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; it should be mode 0600", path)
    return key


def _create_key(path: Path) -> None:
    temp = write_synced_temp(path, [secrets.token_hex(32).encode("ascii") + b"\n"], mode=0o600)
    try:
        os.chmod(temp, 0o600)
        os.link(temp, path)  # unlike rename, never replaces a key another process created meanwhile
    except FileExistsError:
        pass
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def key_id(key: bytes) -> str:
    """A fingerprint naming the key in summaries (tells whether two exports used the same key)."""
    return hashlib.sha256(b"raddraft deid key id\0" + key).hexdigest()[:16]


# -- the removal log -----------------------------------------------------------------------------------
@dataclass
class RemovalLog:
    """What was done, per attribute keyword and action; never any original value."""

    actions: defaultdict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    private_attributes: int = 0
    instances: int = 0
    pixel_side_data: Counter = field(default_factory=Counter)

    def record(self, keyword: str, action: str) -> None:
        self.actions[keyword][action] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "legend": ACTION_MEANINGS,
            "attributes": {k: dict(sorted(v.items())) for k, v in sorted(self.actions.items())},
            "private_attributes_removed": self.private_attributes,
            "instances": self.instances,
            "pixel_side_data_removed": dict(sorted(self.pixel_side_data.items())),
        }


# -- patients and the de-identifier --------------------------------------------------------------------
@dataclass(frozen=True)
class Patient:
    """A patient as the output knows them: a keyed pseudonym, a date offset and a split draw."""

    pseudonym: str
    date_offset_days: int
    split_draw: float  # uniform in [0, 1): decides the patient's split (see `split.assign_splits`)


@dataclass
class Deidentifier:
    key: bytes
    dates: str = "shift"
    log: RemovalLog = field(default_factory=RemovalLog)

    def __post_init__(self) -> None:
        if self.dates not in DATE_MODES:
            raise DeidentificationError(f"dates must be one of {', '.join(DATE_MODES)}, got {self.dates!r}")

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def patient(self, patient_key: str) -> Patient:
        """`patient_key`: the original Patient ID (or a stand-in when there is none)."""
        low, high = SHIFT_DAYS
        offset = int.from_bytes(self._digest("date-shift", patient_key)[:8], "big") % (high - low + 1) + low
        draw = int.from_bytes(self._digest("split", patient_key)[:8], "big") / 2.0 ** 64
        return Patient(pseudonym="RDP" + self._digest("patient", patient_key).hex()[:16].upper(),
                       date_offset_days=-offset, split_draw=draw)

    def uid(self, original: str) -> str:
        """The new UID of `original`: "2.25." + a UUID (RFC 9562 version 8) from the keyed hash."""
        number = int.from_bytes(self._digest("uid", original.strip())[:16], "big")
        number = (number & ~(0xF << 76)) | (0x8 << 76)  # version 8: custom
        number = (number & ~(0x3 << 62)) | (0x2 << 62)  # RFC variant
        return f"2.25.{number}"

    # -- one instance ----------------------------------------------------------------------------------
    def instance(self, ds: Dataset, patient: Patient, burned_in_kept: bool = False) -> bytes:
        """The de-identified Part 10 bytes of `ds` (a full dataset, changed in place). Pixel data keeps its
        transfer syntax and its decoded values; only side data the encoding carries goes (`pixels.py`).
        Raises `PixelCleaningError` when that cannot be done without re-encoding. `burned_in_kept`: the
        image is known or feared to hold burned-in text and was kept on request (no Clean Pixel Data
        Option is claimed then)."""
        transfer_syntax = ds.file_meta.TransferSyntaxUID
        for removed in clean_pixel_data(ds):
            self.log.pixel_side_data[removed] += 1
        self._clean(ds, patient)
        self._mark(ds, clean_pixels=not burned_in_kept)
        ds.file_meta = _file_meta(ds, transfer_syntax)
        ds.preamble = None
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        self.log.instances += 1
        return buffer.getvalue()

    def _clean(self, ds: Dataset, patient: Patient) -> bool:
        """Apply the rules to every element of `ds` and its sequences; False when `ds` is a code item of
        which nothing may stay (its sequence drops it)."""
        code_item = is_code_item(ds)
        if code_item:
            if not clean_code_item(ds, self._code_stand_in):
                self.log.record("code item", REMOVED)
                return False
            self.log.record("code item", CODE)
        for tag in list(ds.keys()):
            if tag.is_private:
                del ds[tag]
                self.log.private_attributes += 1
                continue
            if tag.element == 0 or _removed_group(tag.group):
                if tag.element != 0:
                    self.log.record(f"({tag.group & 0xFF00:04X},xxxx) overlay/curve", REMOVED)
                del ds[tag]
                continue
            elem = ds[tag]
            if code_item and elem.keyword in CODE_KEYWORDS:
                continue
            name = elem.keyword or f"({tag.group:04X},{tag.element:04X})"
            action = self._action(elem)
            if action == _WALK:
                self._walk(elem, name, patient)
                continue
            if action == _KEEP:
                continue
            applied = self._apply(ds, elem, action, patient)
            if applied != _KEEP:
                self.log.record(name, applied)
        return True

    def _walk(self, elem: DataElement, name: str, patient: Patient) -> None:
        items = list(elem.value or ())
        kept = [item for item in items if self._clean(item, patient)]
        if len(kept) != len(items):
            elem.value = Sequence(kept)

    def _code_stand_in(self, original: str) -> str:
        """A code value that cannot be vouched for becomes a keyed hash: equal codes stay equal."""
        return "RD" + self._digest("code", original).hex()[:12].upper()

    def _action(self, elem: DataElement) -> str:
        keyword, vr = elem.keyword, elem.VR
        if not keyword:
            return REMOVED  # a public attribute this dictionary does not know: cannot be judged safe
        if keyword in MARKERS:
            return _KEEP
        if keyword == "PatientID":
            return PSEUDONYM
        if keyword in VIEW_DESCRIPTORS:
            return CLEANED
        if vr in _DATE_VRS or vr == "TM":
            return self._date_action(keyword, vr)
        table = PROFILE_ACTIONS.get(keyword)
        if table is not None:
            return _resolve(table, vr)
        if vr == "PN":
            return REMOVED
        if vr == "UI":
            return _uid_action(keyword, elem.value)
        if vr == "SQ":
            return _WALK
        if vr in ("UR", "AE", "AS", "UN"):
            return REMOVED  # URLs name hosts and hold UIDs; titles name machines; unknown bytes cannot be judged
        if vr in FREE_TEXT_VRS:
            return WORDS
        return CODED if vr == "CS" else _KEEP

    def _date_action(self, keyword: str, vr: str) -> str:
        table = PROFILE_ACTIONS.get(keyword)
        if self.dates == "shift" and keyword not in NEVER_SHIFTED:
            return SHIFTED if vr in _DATE_VRS else _KEEP
        if table is None:
            return REMOVED
        resolved = _resolve(table, vr)
        return EMPTIED if resolved == DUMMY else resolved

    def _apply(self, ds: Dataset, elem: DataElement, action: str, patient: Patient) -> str:
        if action == REMOVED:
            del ds[elem.tag]
        elif action == EMPTIED:
            elem.value = Sequence() if elem.VR == "SQ" else None
        elif action == DUMMY:
            return self._dummy(ds, elem)
        elif action == NEW_UID:
            elem.value = _map_values(elem.value, self.uid)
        elif action == PSEUDONYM:
            elem.value = patient.pseudonym
        elif action == CLEANED:
            words = _view_words(elem.value)
            if not words:
                del ds[elem.tag]
                return REMOVED
            elem.value = words
        elif action == WORDS:
            words = descriptor_words(elem.value)
            if not words:
                del ds[elem.tag]
                return REMOVED
            if words == " ".join(str(v) for v in _listed(elem.value)):
                return _KEEP
            elem.value = words
        elif action == CODED:
            values = [str(v) for v in _listed(elem.value)]
            kept = clean_coded_string(elem.keyword, elem.value)
            if kept == values:
                return _KEEP
            if not kept:
                del ds[elem.tag]
                return REMOVED
            elem.value = kept if len(kept) > 1 else kept[0]
        elif action == SHIFTED:
            try:
                elem.value = _map_values(elem.value, lambda v: _shift(v, patient.date_offset_days, elem.VR))
            except ValueError:  # not a date we can read: cannot be shifted, so it goes
                del ds[elem.tag]
                return REMOVED
        return action

    def _dummy(self, ds: Dataset, elem: DataElement) -> str:
        if elem.VR in _TEXT_VRS:
            elem.value = DUMMY_TEXT
            return DUMMY
        if elem.VR in _NUMBER_VRS:
            elem.value = 0
            return DUMMY
        elem.value = Sequence() if elem.VR == "SQ" else None
        return EMPTIED

    def _mark(self, ds: Dataset, clean_pixels: bool) -> None:
        shifted = self.dates == "shift"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = [
            "PS3.15 E.1 Basic Profile (RadDraft site dataset)",
            "UIDs and Patient ID replaced with a site key",
            "dates shifted per patient" if shifted else "dates removed",
            "private attributes removed",
            "descriptors and codes reduced to allow-listed words",
        ] + (["pixel side data removed; burned-in risk excluded"] if clean_pixels else [])
        codes = [BASIC_PROFILE_CODE] + ([MODIFIED_DATES_CODE] if shifted else []) \
            + ([CLEAN_PIXEL_CODE] if clean_pixels else []) + [CLEAN_STRUCTURED_CODE, CLEAN_DESCRIPTORS_CODE]
        ds.DeidentificationMethodCodeSequence = Sequence([_code(value, meaning) for value, meaning in codes])
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if shifted else "REMOVED"


def _resolve(table_action: str, vr: str) -> str:
    """The action taken for a table entry: Z where Z is offered, else X; UIDs inside X/Z/U* sequences
    are replaced (the sequence is walked)."""
    if table_action == "X/Z/U*":
        return _WALK if vr == "SQ" else NEW_UID
    options = table_action.split("/")
    if len(options) > 1:
        return EMPTIED if "Z" in options else REMOVED
    if table_action == "D" and vr == "UI":
        return NEW_UID
    return table_action


def _uid_action(keyword: str, value: object) -> str:
    """Class UIDs and the standard's own UIDs name kinds of things, not instances: they stay."""
    values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    standard = all(str(v) in UID_dictionary for v in values if v)
    return _KEEP if keyword.endswith("ClassUID") or standard else NEW_UID


def _removed_group(group: int) -> bool:
    return 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF


def _map_values(value: object, change) -> object:
    if value is None or value == "":
        return value
    if isinstance(value, (list, tuple, MultiValue)):
        return [change(str(v)) if str(v) else v for v in value]
    return change(str(value))


_DT_PART = r"\d{4,14}(?:\.\d{1,6})?(?:[+-]\d{4})?"
_DT_RANGE = re.compile(rf"({_DT_PART})?-({_DT_PART})?")


def _shift(value: str, days: int, vr: str = "DA") -> str:
    """Shift a DA "YYYYMMDD" or the date part of a DT "YYYYMMDD[HHMMSS...]", and both ends of a range
    ("A-B", "A-", "-B"); partial dates are refused."""
    value = value.strip()
    if "-" in value and (vr == "DA" or not re.fullmatch(_DT_PART, value)):
        if vr == "DA":
            start, _, end = value.partition("-")
        else:
            match = _DT_RANGE.fullmatch(value)
            if match is None:
                raise ValueError("not a DT range")
            start, end = match.groups(default="")
        if not start and not end:
            raise ValueError("an empty range")
        return "-".join(_shift_one(part, days) if part else "" for part in (start, end))
    return _shift_one(value, days)


def _shift_one(value: str, days: int) -> str:
    value = value.strip()
    if len(value) < 8 or not value[:8].isdigit():
        raise ValueError(f"not a full date: {len(value)} characters")
    try:
        shifted = dt.datetime.strptime(value[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    except OverflowError as exc:
        raise ValueError(str(exc)) from None
    return shifted.strftime("%Y%m%d") + value[8:]


def _listed(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _view_words(value: object) -> str:
    text = "\\".join(str(v) for v in value) if isinstance(value, (list, tuple, MultiValue)) else str(value or "")
    return " ".join(word for word in re.split(r"[^A-Z0-9]+", text.upper()) if word in VIEW_WORDS)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    """A new file meta group: the old one may name the sending application (Source AE Title and more)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta
