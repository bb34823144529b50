#!/usr/bin/env python3
"""Writes the scan-protocol and dose guard's test objects with pydicom, from the standard's
modules and templates:

- CT Defined Procedure Protocols (PS3.3 A.83): in range, out of range (tube current),
  unapproved, approved by someone not configured;
- Protocol Approvals (PS3.3 A.86, assertion codes CID 800), one of them expired;
- a protocol whose CTDIvol is stated in the 32 cm body phantom (CID 4052);
- X-Ray Radiation Dose SRs with TID 10011 / 10013 / 10015 content: under the notification
  value, over it with and without a reason and authorizing person, over the alert value, and two
  reports of one study whose accumulated CTDIvol crosses the alert value;
- Modality Worklist answers (C-FIND identifiers): clean and dirty.

Usage: make_guard_objects.py OUT_DIR    (prints the file names written, one per line)
"""

import sys
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_DPP = "1.2.840.10008.5.1.4.1.1.200.1"
APPROVAL = "1.2.840.10008.5.1.4.1.1.200.3"
DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
MWL_FIND = "1.2.840.10008.5.1.4.31"
ROOT = "1.2.826.0.1.3680043.10.1016"


def code(value, scheme, meaning):
    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


def save(ds, path, sop_class):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = getattr(ds, "SOPInstanceUID", generate_uid(ROOT + "."))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def protocol(uid, name, ma, kvp="120", ctdivol=45.0, phantom=None):
    ds = Dataset()
    ds.SOPClassUID = CT_DPP
    ds.SOPInstanceUID = uid
    ds.Modality = "CT"
    ds.Manufacturer = "Radguard test"
    ds.ProtocolName = name
    ds.BodyPartExamined = "HEAD"
    ds.ContentCreatorName = "Tech^Tina"
    ds.PotentialScheduledProtocolCodeSequence = Sequence([code("CTHEAD", "99RAD", "CT head")])
    spec = Dataset()
    spec.KVP = kvp
    spec.XRayTubeCurrentInmA = ma
    spec.ExposureTimeInms = 1000.0
    spec.CTDIvol = ctdivol
    if phantom:
        # CTDI Phantom Type Code Sequence (0018,9346), CID 4052.
        spec.CTDIPhantomTypeCodeSequence = Sequence([code(*phantom)])
    spec.ScanLength = 180
    element = Dataset()
    element.ProtocolElementNumber = 1
    element.ProtocolElementName = "helical"
    element.AcquisitionProtocolElementSpecificationSequence = Sequence([spec])
    ds.AcquisitionProtocolElementSequence = Sequence([element])
    return ds


def approval(subject_uid, who, assertion=("128603", "Approved for use at the institution"),
             expires=None):
    ds = Dataset()
    ds.SOPClassUID = APPROVAL
    ds.SOPInstanceUID = generate_uid(ROOT + ".")
    ds.Modality = "CT"
    subject = Dataset()
    subject.ReferencedSOPClassUID = CT_DPP
    subject.ReferencedSOPInstanceUID = subject_uid
    ds.ApprovalSubjectSequence = Sequence([subject])
    asserter = Dataset()
    asserter.ObserverType = "PSN"
    asserter.PersonName = who
    item = Dataset()
    item.AssertionCodeSequence = Sequence([code(assertion[0], "DCM", assertion[1])])
    item.AssertionUID = generate_uid(ROOT + ".")
    item.AsserterIdentificationSequence = Sequence([asserter])
    item.AssertionDateTime = "20261201120000"
    if expires:
        item.AssertionExpirationDateTime = expires
    ds.ApprovalSequence = Sequence([item])
    return ds


def content(value_type, concept, rel="CONTAINS", **values):
    c = Dataset()
    c.RelationshipType = rel
    c.ValueType = value_type
    c.ConceptNameCodeSequence = Sequence([concept])
    for k, v in values.items():
        setattr(c, k, v)
    return c


def num(concept, value, unit):
    mv = Dataset()
    mv.NumericValue = value
    mv.MeasurementUnitsCodeSequence = Sequence([code(unit, "UCUM", unit)])
    return content("NUM", concept, MeasuredValueSequence=Sequence([mv]))


def dose_check(container_code, meaning, reason, person):
    items = []
    if reason:
        items.append(content("TEXT", code("113907", "DCM", "Reason for Proceeding"),
                             TextValue="large patient, physicist consulted"))
    if person:
        items.append(content("PNAME", code("113870", "DCM", "Person Name"),
                             PersonName="Curie^Marie"))
    return content("CONTAINER", code(container_code, "DCM", meaning), ContinuityOfContent="SEPARATE",
                   ContentSequence=Sequence(items))


def acquisition(ctdivol, dlp, event_uid, checks=()):
    dose = [
        num(code("113830", "DCM", "Mean CTDIvol"), ctdivol, "mGy"),
        num(code("113838", "DCM", "DLP"), dlp, "mGy.cm"),
    ]
    dose.extend(checks)
    ct_dose = content("CONTAINER", code("113829", "DCM", "CT Dose"), ContinuityOfContent="SEPARATE",
                      ContentSequence=Sequence(dose))
    params = content("CONTAINER", code("113822", "DCM", "CT Acquisition Parameters"),
                     ContinuityOfContent="SEPARATE",
                     ContentSequence=Sequence([
                         num(code("113825", "DCM", "Scanning Length"), "180", "mm"),
                     ]))
    return content("CONTAINER", code("113819", "DCM", "CT Acquisition"), ContinuityOfContent="SEPARATE",
                   ContentSequence=Sequence([
                       content("CODE", code("123014", "DCM", "Target Region"),
                               ConceptCodeSequence=Sequence([code("T-D1100", "SRT", "Head")])),
                       content("UIDREF", code("113769", "DCM", "Irradiation Event UID"),
                               UID=event_uid),
                       params,
                       ct_dose,
                   ]))


def dose_report(study_uid, events):
    ds = Dataset()
    ds.SOPClassUID = DOSE_SR
    ds.SOPInstanceUID = generate_uid(ROOT + ".")
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(ROOT + ".")
    ds.Modality = "SR"
    ds.PatientName = "Doe^John"
    ds.PatientID = "GUARD-1"
    ds.PatientAge = "045Y"
    ds.BodyPartExamined = "HEAD"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([code("113701", "DCM", "X-Ray Radiation Dose Report")])
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "10011"
    ds.ContentTemplateSequence = Sequence([template])
    ds.ContentSequence = Sequence(events)
    return ds


def worklist(name, protocol_code, station="CT1"):
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = "GUARD-1"
    ds.PatientAge = "045Y"
    ds.StudyInstanceUID = ROOT + ".7.1"
    ds.AccessionNumber = "A1"
    sps = Dataset()
    sps.Modality = "CT"
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = "20261207"
    sps.ScheduledProcedureStepStartTime = "093000"
    sps.ScheduledProcedureStepDescription = "CT head"
    sps.ScheduledProtocolCodeSequence = Sequence([code(protocol_code, "99RAD", "CT protocol")])
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name, ds, sop_class):
        save(ds, out / name, sop_class)
        written.append(name)

    ok_uid, high_uid, unapproved_uid, wrong_uid = (f"{ROOT}.1.{i}" for i in range(1, 5))
    put("protocol_ok.dcm", protocol(ok_uid, "Head routine", 250.0), CT_DPP)
    put("protocol_high.dcm", protocol(high_uid, "Head perfusion", 900.0), CT_DPP)
    put("protocol_unapproved.dcm", protocol(unapproved_uid, "Head routine 2", 250.0), CT_DPP)
    put("protocol_wrong_approver.dcm", protocol(wrong_uid, "Head routine 3", 250.0), CT_DPP)
    put("approval_ok.dcm", approval(ok_uid, "Curie^Marie"), APPROVAL)
    put("approval_high.dcm", approval(high_uid, "Curie^Marie"), APPROVAL)
    put("approval_wrong.dcm", approval(wrong_uid, "Mallory^Eve"), APPROVAL)
    # An approval that expired (Assertion Expiration DateTime in the past), and a protocol
    # whose CTDIvol is stated in the 32 cm body phantom (CID 4052), approved.
    expired_uid, body_uid = f"{ROOT}.1.5", f"{ROOT}.1.6"
    put("protocol_expired_approval.dcm", protocol(expired_uid, "Head routine 4", 250.0), CT_DPP)
    put("approval_expired.dcm", approval(expired_uid, "Curie^Marie", expires="20200101000000"),
        APPROVAL)
    put("protocol_body_phantom.dcm",
        protocol(body_uid, "Head routine 5", 250.0,
                 phantom=("113691", "DCM", "IEC Body Dosimetry Phantom")), CT_DPP)
    put("approval_body_phantom.dcm", approval(body_uid, "Curie^Marie"), APPROVAL)

    study = f"{ROOT}.2"
    put("dose_under.dcm", dose_report(study + ".1", [acquisition("60", "900", study + ".1.1")]), DOSE_SR)
    put("dose_notification.dcm",
        dose_report(study + ".2", [acquisition("90", "1200", study + ".2.1")]), DOSE_SR)
    put("dose_notification_reasoned.dcm",
        dose_report(study + ".3", [acquisition("90", "1200", study + ".3.1", [
            dose_check("113908", "Dose Check Notification Details", True, True)])]), DOSE_SR)
    put("dose_notification_no_person.dcm",
        dose_report(study + ".4", [acquisition("90", "1200", study + ".4.1", [
            dose_check("113908", "Dose Check Notification Details", True, False)])]), DOSE_SR)
    put("dose_alert.dcm",
        dose_report(study + ".5", [acquisition("1200", "20000", study + ".5.1", [
            dose_check("113908", "Dose Check Notification Details", True, True)])]), DOSE_SR)
    put("dose_study_a.dcm", dose_report(study + ".6", [acquisition("70", "900", study + ".6.1")]) , DOSE_SR)
    # 14 more events of 70 mGy in the same study: 980 mGy alone, 15 x 70 = 1050 mGy > 1000 mGy
    # after dose_study_a.
    put("dose_study_b.dcm", dose_report(study + ".6", [
        acquisition("70", "900", f"{study}.6.{i}") for i in range(2, 16)]), DOSE_SR)

    put("mwl_clean.dcm", worklist("Doe^John", "CTHEAD"), MWL_FIND)
    put("mwl_dirty.dcm", worklist("Doe^John\x07\x1b[2J", "CTPERF"), MWL_FIND)
    put("mwl_long_station.dcm", worklist("Doe^John", "CTHEAD", station="STATION-NAME-TOO-LONG"), MWL_FIND)
    for name in written:
        print(name)


if __name__ == "__main__":
    main()
