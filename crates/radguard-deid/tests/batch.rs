//! The batch functions `radguard deid` runs, called as a library: typed results, progress
//! through the callback, reports and quarantine records on disk, typed errors before anything
//! is written. (The command itself, its output and exit status: crates/radguard/tests/cli_deid.rs.)

mod common;

use std::sync::Mutex;

use common::*;
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use radguard_deid::batch::{self, BatchError, FileStatus, Progress};
use radguard_deid::{BurnedInPolicy, DeidSpec, ProfileName};

fn spec(key_file: std::path::PathBuf) -> DeidSpec {
    DeidSpec {
        profile: ProfileName::Basic,
        options: Vec::new(),
        key_file,
        safe_private_file: None,
        burned_in: BurnedInPolicy::Refuse,
        max_head_mib: None,
    }
}

fn ct(sop: &str) -> Vec<u8> {
    to_part10(
        InMemDicomObject::from_element_iter([
            el(Tag(0x0008, 0x0016), VR::UI, CT_IMAGE),
            el(Tag(0x0008, 0x0018), VR::UI, sop),
            el(Tag(0x0010, 0x0010), VR::PN, "DOE^JOHN"),
            el(Tag(0x0010, 0x0020), VR::LO, "PAT-889911"),
        ]),
        EXPLICIT_LE,
    )
}

#[test]
fn deidentify_and_check_files() {
    let tmp = tmpdir();
    let key = tmp.path().join("site.key");
    std::fs::write(&key, KEY).unwrap();
    let inputs = tmp.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("ct.dcm"), ct("1.2.3.4.5")).unwrap();
    std::fs::write(inputs.join("notes.txt"), b"patient John Doe").unwrap();
    let out = tmp.path().join("out");

    let events = Mutex::new(Vec::new());
    let b = batch::deidentify_files(
        &spec(key.clone()),
        std::slice::from_ref(&inputs),
        &out,
        1,
        &|p| events.lock().unwrap().push(p),
    )
    .unwrap();
    assert_eq!(
        events.into_inner().unwrap(),
        [
            Progress::Started { files: 2 },
            Progress::FileDone,
            Progress::FileDone
        ]
    );
    assert_eq!(b.out, out.canonicalize().unwrap());
    assert_eq!(b.files.len(), 2);
    assert_eq!(b.quarantined(), 1);
    // Input order: ct.dcm, then notes.txt.
    let (ct_line, notes) = (&b.files[0], &b.files[1]);
    assert_eq!(ct_line.status, FileStatus::Written);
    assert!(ct_line.changes.unwrap() > 0);
    assert!(ct_line.warning.is_none());
    let written = std::path::PathBuf::from(ct_line.output.as_deref().unwrap());
    assert!(written.starts_with(&b.out) && written.exists());
    assert_eq!(notes.status, FileStatus::Quarantined);
    assert!(notes
        .reason
        .as_deref()
        .unwrap()
        .contains("not a DICOM Part 10"));
    assert_eq!(std::fs::read_dir(out.join("reports")).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_dir(out.join("quarantine")).unwrap().count(),
        1
    );
    // The JSON line shape of `radguard deid --json` (the warning is not part of it).
    let v = serde_json::to_value(ct_line).unwrap();
    assert_eq!(v["status"], "written");
    assert!(v.get("warning").is_none());

    // The residual-PHI check: PHI in the original, none in the output (judged against the
    // original); the JSON reports in out/ are not DICOM and are skipped.
    let c = batch::check_files(
        std::slice::from_ref(&inputs),
        ProfileName::Basic,
        &[],
        &[],
        1,
        &|_| (),
    )
    .unwrap();
    assert_eq!((c.lines.len(), c.skipped), (1, 1));
    assert!(!c.lines[0].findings.is_empty());
    let c = batch::check_files(
        std::slice::from_ref(&out),
        ProfileName::Basic,
        &[],
        std::slice::from_ref(&inputs),
        1,
        &|_| (),
    )
    .unwrap();
    assert_eq!((c.lines.len(), c.skipped), (1, 2));
    assert!(c.lines[0].findings.is_empty(), "{:?}", c.lines[0].findings);
    assert!(c.lines[0].error.is_none());
}

#[test]
fn errors_come_before_anything_is_written() {
    let tmp = tmpdir();
    let out = tmp.path().join("out");
    let never = |_: Progress| panic!("no progress before the batch starts");
    // A key that is too short: refused before the output folder is made.
    let short = tmp.path().join("short.key");
    std::fs::write(&short, "short").unwrap();
    let e =
        batch::deidentify_files(&spec(short), &[tmp.path().into()], &out, 1, &never).unwrap_err();
    assert!(matches!(e, BatchError::Spec(_)), "{e:?}");
    assert!(!out.exists());
    // An input that does not exist.
    let key = tmp.path().join("site.key");
    std::fs::write(&key, KEY).unwrap();
    let missing = tmp.path().join("missing");
    let e = batch::deidentify_files(&spec(key), std::slice::from_ref(&missing), &out, 1, &never)
        .unwrap_err();
    match e {
        BatchError::Input { path, .. } => assert_eq!(path, missing),
        e => panic!("{e:?}"),
    }
    let e = batch::check_files(&[missing], ProfileName::Basic, &[], &[], 1, &never).unwrap_err();
    assert!(matches!(e, BatchError::Input { .. }), "{e:?}");
    // An option that is refused.
    let e = batch::check_files(
        &[tmp.path().into()],
        ProfileName::Basic,
        &[radguard_deid::DeidOption::CleanPixelData],
        &[],
        1,
        &never,
    )
    .unwrap_err();
    assert!(matches!(e, BatchError::Profile(_)), "{e:?}");
}
