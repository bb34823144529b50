//! Shared test helpers: building inputs with dicom-object (an independent writer), running
//! the de-identifier, reading outputs back with dicom-object (an independent reader).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use radguard_deid::part10::deidentify_part10;
use radguard_deid::{DeidOption, Deidentifier, Profile, ProfileName, SiteKey, DEFAULT_HEAD_CAP};

pub const KEY: &[u8] = b"radguard-test-key-0123456789abcdef";
pub const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

pub fn key() -> SiteKey {
    SiteKey::from_bytes(KEY).unwrap()
}

pub fn deid(options: &[DeidOption]) -> Arc<Deidentifier> {
    let p = Profile::new(ProfileName::Basic, options.iter().copied()).unwrap();
    Arc::new(Deidentifier::new(p, key()))
}

/// The VR the dictionary gives a tag (ambiguous ones resolved as the codec does).
pub fn dict_vr(tag: Tag) -> VR {
    if tag.group() % 2 == 1 {
        return VR::UN;
    }
    match StandardDataDictionary.by_tag(tag).map(|e| e.vr()) {
        Some(VirtualVr::Exact(v)) => v,
        Some(VirtualVr::Xs) => VR::US,
        Some(_) => VR::OW,
        None => VR::UN,
    }
}

/// A value that identifies, for a VR (text values carry the token ROWTEST, which is also
/// the patient's family name, so cleaning has something to find).
pub fn sample_value(vr: VR, uid_suffix: usize) -> PrimitiveValue {
    match vr {
        VR::AE => "ROWTESTAE".into(),
        VR::AS => "042Y".into(),
        VR::CS => "ROWTEST".into(),
        VR::DA => "20200115".into(),
        VR::DS => "1.5".into(),
        VR::DT => "20200115101010".into(),
        VR::IS => "42".into(),
        VR::LO | VR::LT | VR::SH | VR::ST | VR::UT | VR::UC => "ROWTEST note".into(),
        VR::PN => "ROWTEST^OTHER".into(),
        VR::TM => "101010".into(),
        VR::UI => format!("1.2.826.0.1.3680043.2.1125.99.{uid_suffix}").into(),
        VR::UR => "http://example.com/rowtest".into(),
        VR::FL | VR::OF => PrimitiveValue::F32([1.5f32].as_slice().into()),
        VR::FD | VR::OD => PrimitiveValue::F64([1.5f64].as_slice().into()),
        VR::SL => PrimitiveValue::I32([-5i32].as_slice().into()),
        VR::SS => PrimitiveValue::I16([-5i16].as_slice().into()),
        VR::UL | VR::OL => PrimitiveValue::U32([5u32].as_slice().into()),
        VR::US => PrimitiveValue::U16([5u16].as_slice().into()),
        VR::SV => PrimitiveValue::I64([-5i64].as_slice().into()),
        VR::UV | VR::OV => PrimitiveValue::U64([5u64].as_slice().into()),
        VR::AT => PrimitiveValue::Tags([Tag(0x0010, 0x0010)].as_slice().into()),
        VR::OB | VR::OW | VR::UN => PrimitiveValue::U8([1u8, 2, 3, 4].as_slice().into()),
        VR::SQ => PrimitiveValue::Empty,
    }
}

pub fn sq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

pub fn el(tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v.into())
}

/// Serialize a data set as a Part 10 file (dicom-object's writer).
pub fn to_part10(obj: InMemDicomObject, ts: &str) -> Vec<u8> {
    let f = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
        .unwrap();
    let mut out = Vec::new();
    f.write_all(&mut out).unwrap();
    out
}

/// De-identify Part 10 bytes (the library's file path, i.e. the streaming engine).
pub fn run(deid: &Arc<Deidentifier>, input: &[u8]) -> (Vec<u8>, radguard_deid::Outcome) {
    let mut out = Vec::new();
    let w = deidentify_part10(
        std::io::Cursor::new(input),
        &mut out,
        deid,
        DEFAULT_HEAD_CAP,
    )
    .unwrap();
    (out, w.outcome)
}

/// Read Part 10 bytes with dicom-object.
pub fn read(bytes: &[u8]) -> dicom_object::DefaultDicomObject {
    dicom_object::from_reader(&bytes[128..]).expect("dicom-object reads the output")
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project's venv Python (fails, not skips, when absent).
pub fn python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} missing: run scripts/setup-test-env.sh (pydicom is required by these tests)",
        p.display()
    );
    p
}

pub fn run_python(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python {args:?} failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A temporary folder under target/tmp.
pub fn tmpdir() -> tempfile::TempDir {
    let base = root().join("target/tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("deid-")
        .tempdir_in(base)
        .unwrap()
}
