//! The batch functions `radguard scan` and `radguard sanitize` run, called as a library:
//! folders walked (the output folder skipped), typed results, progress through the callback,
//! typed errors for paths that do not exist.

mod common;

use std::sync::Mutex;

use common::*;
use radguard_media::batch::{self, BatchError, Progress};
use radguard_media::{SanitizeOptions, SanitizeOutcome, ScanOptions, Verdict};

#[test]
fn scan_and_sanitize_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    std::fs::create_dir_all(inputs.join("sub")).unwrap();
    std::fs::write(
        inputs.join("a.dcm"),
        clean_ct("1.2.826.0.1.3680043.9.7433.1.1", &[]),
    )
    .unwrap();
    std::fs::write(inputs.join("sub/b.dcm"), pedicom()).unwrap();

    let events = Mutex::new(Vec::new());
    let s = batch::scan_files(
        std::slice::from_ref(&inputs),
        &ScanOptions::default(),
        2,
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
    let verdicts: Vec<_> = s.reports.iter().map(|r| r.verdict).collect();
    assert_eq!(verdicts, [Verdict::Clean, Verdict::Malicious]);
    assert!(s.reports[1].path.ends_with("sub/b.dcm"));

    // Sanitize into a folder inside the inputs: it is not walked, on this run or the next.
    let out = inputs.join("out");
    for _ in 0..2 {
        let r = batch::sanitize_files(
            std::slice::from_ref(&inputs),
            &out,
            &SanitizeOptions::default(),
            1,
            &|_| (),
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert!(
            matches!(r[0].1, Ok(SanitizeOutcome::Written { .. })),
            "{:?}",
            r[0]
        );
        // The PE/DICOM polyglot is disarmed: its preamble zeroed, the executable dropped.
        match &r[1].1 {
            Ok(SanitizeOutcome::Written { changes, .. }) => assert!(
                changes.iter().any(|c| c.contains("executable")),
                "{changes:?}"
            ),
            o => panic!("{o:?}"),
        }
    }
}

#[test]
fn paths_that_do_not_exist_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let never = |_: Progress| panic!("no progress before the batch starts");
    match batch::scan_files(
        std::slice::from_ref(&missing),
        &ScanOptions::default(),
        1,
        &never,
    ) {
        Err(BatchError::Input { path, .. }) => assert_eq!(path, missing),
        r => panic!("{r:?}"),
    }
    let out = tmp.path().join("out");
    let r = batch::sanitize_files(&[missing], &out, &SanitizeOptions::default(), 1, &never);
    assert!(matches!(r, Err(BatchError::Input { .. })), "{r:?}");
    // The output folder under a file cannot be made.
    let file = tmp.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let r = batch::sanitize_files(
        &[tmp.path().into()],
        &file.join("out"),
        &SanitizeOptions::default(),
        1,
        &never,
    );
    assert!(matches!(r, Err(BatchError::OutDir { .. })), "{r:?}");
}
