//! The scrub against a real vault: intact objects pass, each kind of tampering is found once,
//! the rate limit holds, and the cursor survives a restart.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use radguard_dicom::types::uids;
use radguard_dicom::Uid;
use radguard_vault::scrub::{FindingKind, ScrubConfig, Scrubber, Step, STATE_FILE};
use radguard_vault::{StoreOutcome, StoredInstance, Vault};

const SC_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.7";

fn uid(s: &str) -> Uid {
    Uid::new(s).expect("valid UID")
}

fn dataset(sop_instance: &str, pixel_bytes: usize) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(SC_IMAGE),
    ));
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop_instance),
    ));
    obj.put(DataElement::new(
        tags::PATIENT_ID,
        VR::LO,
        PrimitiveValue::from("P1"),
    ));
    let pixels: Vec<u8> = (0..pixel_bytes).map(|i| (i % 251) as u8).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(pixels),
    ));
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("encode");
    out
}

fn store(vault: &Vault, sop_instance: &str, pixel_bytes: usize) -> StoredInstance {
    let mut p = vault
        .begin(
            &uid(SC_IMAGE),
            &uid(sop_instance),
            &uid(uids::EXPLICIT_VR_LE),
            "CT01",
        )
        .expect("begin");
    p.write_chunk(&dataset(sop_instance, pixel_bytes))
        .expect("write");
    match p.commit().expect("commit") {
        StoreOutcome::Stored(i) => i,
        other => panic!("{other:?}"),
    }
}

/// Overwrites a stored (read-only) object.
fn overwrite(path: &std::path::Path, bytes: &[u8]) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(path, bytes).expect("overwrite");
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Runs steps until the pass completes: every finding, and the pass's figures.
fn full_pass(
    s: &mut Scrubber,
) -> (
    Vec<radguard_vault::scrub::Finding>,
    radguard_vault::scrub::PassSummary,
) {
    let stop = AtomicBool::new(false);
    let mut all = Vec::new();
    for _ in 0..10_000 {
        match s.step(&stop).expect("step") {
            Step::Checked(f) => all.extend(f),
            Step::PassComplete(f, summary) => {
                all.extend(f);
                return (all, summary);
            }
            Step::Stopped => panic!("stopped"),
        }
    }
    panic!("no pass end");
}

#[test]
fn clean_vault_passes_without_findings() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path()).unwrap();
    for i in 0..5 {
        store(&vault, &format!("1.2.3.{i}"), 4096);
    }
    let mut s = Scrubber::new(vault, 1 << 30);
    let (findings, summary) = full_pass(&mut s);
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(summary.objects, 5);
    assert!(summary.bytes > 5 * 4096);
    assert_eq!(s.cursor(), 0, "a new pass starts from the beginning");
}

#[test]
fn each_kind_of_tampering_is_found_once() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path()).unwrap();
    let flipped = store(&vault, "1.2.3.1", 8192);
    let encrypted = store(&vault, "1.2.3.2", 8192);
    let deleted = store(&vault, "1.2.3.3", 8192);
    let intact = store(&vault, "1.2.3.4", 8192);
    let mut bytes = fs::read(&flipped.path).unwrap();
    let n = bytes.len();
    for b in bytes.iter_mut().skip(n - 64) {
        *b ^= 0xFF;
    }
    overwrite(&flipped.path, &bytes);
    overwrite(&encrypted.path, &noise(n, 7));
    fs::remove_file(&deleted.path).unwrap();
    // A planted file (a ransom note), old enough not to be a commit in progress.
    let note = dir.path().join("objects/README-DECRYPT.txt");
    fs::write(&note, b"pay").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&note)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let mut s = Scrubber::new(vault.clone(), 1 << 30);
    let (findings, summary) = full_pass(&mut s);
    let kind_of = |sha: &str| {
        findings
            .iter()
            .find(|f| f.sha256 == sha)
            .map(|f| f.kind.name())
    };
    assert_eq!(kind_of(&flipped.sha256), Some("changed"), "{findings:?}");
    assert_eq!(
        kind_of(&encrypted.sha256),
        Some("encrypted-looking"),
        "{findings:?}"
    );
    assert_eq!(kind_of(&deleted.sha256), Some("missing"), "{findings:?}");
    assert_eq!(kind_of(&intact.sha256), None);
    assert!(findings
        .iter()
        .any(|f| f.kind == FindingKind::Unindexed && f.path == note));
    assert_eq!(findings.len(), 4, "{findings:?}");
    assert_eq!(summary.findings, 4);
    let f = findings
        .iter()
        .find(|f| f.sha256 == flipped.sha256)
        .unwrap();
    assert_eq!(f.sop_instance_uid.as_deref(), Some("1.2.3.1"));
    assert!(f.detail().contains(&flipped.sha256));
    // A second pass does not raise them again.
    let (again, _) = full_pass(&mut s);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn rate_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path()).unwrap();
    for i in 0..4 {
        store(&vault, &format!("1.2.3.{i}"), 256 * 1024);
    }
    // 1 MiB of objects at 512 KiB/s: at least ~1.5 s (the bucket starts empty).
    let mut s = Scrubber::new(vault, 512 * 1024);
    let t = Instant::now();
    let (_, summary) = full_pass(&mut s);
    assert!(summary.bytes >= 4 * 256 * 1024);
    assert!(
        t.elapsed().as_secs_f64() >= 1.5,
        "{} bytes in {:?}",
        summary.bytes,
        t.elapsed()
    );
}

#[test]
fn cursor_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path()).unwrap();
    for i in 0..6 {
        store(&vault, &format!("1.2.3.{i}"), 1024);
    }
    let stop = AtomicBool::new(false);
    let mut s = Scrubber::new(vault.clone(), 1 << 30);
    for _ in 0..3 {
        assert!(matches!(s.step(&stop).unwrap(), Step::Checked(_)));
    }
    let cursor = s.cursor();
    assert!(cursor > 0);
    // Stopped: the cursor is saved.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(s.step(&stop).unwrap(), Step::Stopped);
    drop(s);
    let state = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
    assert!(state.contains(&format!("cursor {cursor}")), "{state}");
    // A new scrubber (a restart) resumes after the third object: three more, then the end.
    let mut s = Scrubber::new(vault, 1 << 30);
    assert_eq!(s.cursor(), cursor);
    let (_, summary) = full_pass(&mut s);
    assert_eq!(
        summary.objects, 6,
        "the pass counts what was done before the restart"
    );
}

#[test]
fn config_section() {
    let c = ScrubConfig::from_document("", "f.toml").unwrap();
    assert_eq!(c, ScrubConfig::default());
    assert!(c.enabled);
    let c = ScrubConfig::from_document(
        "[scrub]\nenabled = false\nrate_bytes_per_sec = 1048576\ninterval_secs = 5\nransomware_threshold = 3\nransomware_window_secs = 60\n",
        "f.toml",
    )
    .unwrap();
    assert!(!c.enabled);
    assert_eq!(c.rate_bytes_per_sec, 1 << 20);
    let e = ScrubConfig::from_document(
        "[scrub]\nrate_bytes_per_sec = 10\ninterval_secs = 0\n",
        "f.toml",
    )
    .unwrap_err();
    let lines: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("f.toml:2:"), "{lines:?}");
    assert!(lines[0].contains("scrub.rate_bytes_per_sec"), "{lines:?}");
    assert!(lines[1].starts_with("f.toml:3:"), "{lines:?}");
    let e = ScrubConfig::from_document("[scrub]\nrate = 1\n", "f.toml").unwrap_err();
    assert!(e.errors[0].to_string().starts_with("f.toml:2:"), "{e:?}");
}

#[test]
fn second_opinion_is_asked_about_intact_objects() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path()).unwrap();
    let a = store(&vault, "1.2.3.1", 1024);
    let b = store(&vault, "1.2.3.2", 1024);
    overwrite(
        &b.path,
        &noise(fs::metadata(&b.path).unwrap().len() as usize, 3),
    );
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let mut s = Scrubber::new(vault, 1 << 30).with_second_opinion(Box::new(move |inst| {
        seen.lock().unwrap().push(inst.sop_instance_uid.clone());
        (inst.sop_instance_uid == "1.2.3.1").then(|| "pixels differ".to_string())
    }));
    let (findings, _) = full_pass(&mut s);
    // Only the intact object is asked about; the changed one is already a finding.
    assert_eq!(*asked.lock().unwrap(), vec!["1.2.3.1".to_string()]);
    let f = findings
        .iter()
        .find(|f| f.sha256 == a.sha256)
        .expect("ledger finding");
    assert_eq!(f.kind.name(), "ledger-mismatch");
    assert!(f.kind.is_tampering());
    assert!(f.detail().contains("pixels differ"), "{}", f.detail());
    assert_eq!(findings.len(), 2, "{findings:?}");
}
