//! End-to-end tests of the vault against real data sets built and re-read with dicom-object.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use radguard_dicom::types::{status, uids};
use radguard_dicom::Uid;
use radguard_vault::{Problem, StoreOutcome, StoredInstance, Vault};
use sha2::{Digest, Sha256};

const SC_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.7";
const STUDY: &str = "1.2.826.0.1.3680043.2.1125.1";
const SERIES: &str = "1.2.826.0.1.3680043.2.1125.1.2";

fn uid(s: &str) -> Uid {
    Uid::new(s).expect("valid UID")
}

/// A small Secondary Capture data set; `fill` varies the pixel bytes.
fn object(sop_instance: &str, patient_id: &str, pixel_bytes: usize, fill: u8) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    let put = |o: &mut InMemDicomObject, tag, vr, v: PrimitiveValue| {
        o.put(DataElement::new(tag, vr, v));
    };
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, SC_IMAGE.into());
    put(
        &mut obj,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        sop_instance.into(),
    );
    put(&mut obj, tags::PATIENT_NAME, VR::PN, "Doe^Jane".into());
    put(&mut obj, tags::PATIENT_ID, VR::LO, patient_id.into());
    put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, STUDY.into());
    put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, SERIES.into());
    put(&mut obj, tags::ROWS, VR::US, PrimitiveValue::from(1u16));
    put(
        &mut obj,
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from((pixel_bytes / 2) as u16),
    );
    put(
        &mut obj,
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16u16),
    );
    let pixels: Vec<u8> = (0..pixel_bytes)
        .map(|i| (i as u8).wrapping_add(fill))
        .collect();
    put(
        &mut obj,
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(pixels),
    );
    obj
}

fn encode(obj: &InMemDicomObject, implicit: bool) -> Vec<u8> {
    let ts = if implicit {
        IMPLICIT_VR_LITTLE_ENDIAN.erased()
    } else {
        EXPLICIT_VR_LITTLE_ENDIAN.erased()
    };
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &ts).expect("encode");
    out
}

fn dataset(sop_instance: &str, patient_id: &str, pixel_bytes: usize, fill: u8) -> Vec<u8> {
    encode(&object(sop_instance, patient_id, pixel_bytes, fill), false)
}

/// Stores `data` in chunks of `chunk` bytes under `sop_instance`, explicit VR little endian.
fn store_chunked(vault: &Vault, sop_instance: &str, data: &[u8], chunk: usize) -> StoreOutcome {
    let mut p = vault
        .begin(
            &uid(SC_IMAGE),
            &uid(sop_instance),
            &uid(uids::EXPLICIT_VR_LE),
            "CT01",
        )
        .expect("begin");
    for c in data.chunks(chunk.max(1)) {
        p.write_chunk(c).expect("write");
    }
    p.commit().expect("commit")
}

fn store(vault: &Vault, sop_instance: &str, data: &[u8]) -> StoreOutcome {
    store_chunked(vault, sop_instance, data, 16 * 1024)
}

fn stored(outcome: StoreOutcome) -> StoredInstance {
    match outcome {
        StoreOutcome::Stored(i) => i,
        other => panic!("expected Stored, got {other:?}"),
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn store_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let data = dataset("1.2.3.100", "PID-1", 64, 0);
    let outcome = store(&vault, "1.2.3.100", &data);
    assert_eq!(outcome.dimse_status(), status::SUCCESS);
    let inst = stored(outcome);

    assert_eq!(inst.sop_instance_uid, "1.2.3.100");
    assert_eq!(inst.sop_class_uid, SC_IMAGE);
    assert_eq!(inst.transfer_syntax, uids::EXPLICIT_VR_LE);
    assert_eq!(inst.patient_id.as_deref(), Some("PID-1"));
    assert_eq!(inst.study_uid.as_deref(), Some(STUDY));
    assert_eq!(inst.series_uid.as_deref(), Some(SERIES));
    assert_eq!(inst.source_ae.as_deref(), Some("CT01"));
    assert_eq!(inst.parse_warning, None);
    assert!(inst.stored_at.ends_with('Z') && inst.stored_at.contains('T'));

    // Content addressing and layout.
    let bytes = fs::read(&inst.path).expect("read object");
    assert_eq!(bytes.len() as u64, inst.size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), inst.sha256);
    let expected_path = dir
        .path()
        .join("objects")
        .join(&inst.sha256[..2])
        .join(&inst.sha256[2..4])
        .join(format!("{}.dcm", inst.sha256));
    assert_eq!(inst.path, expected_path);
    assert!(
        bytes[..128].iter().all(|&b| b == 0),
        "preamble must be zeros"
    );
    assert_eq!(&bytes[128..132], b"DICM");
    assert!(
        bytes.ends_with(&data),
        "data set stored exactly as received"
    );
    assert!(fs::metadata(&inst.path)
        .expect("stat")
        .permissions()
        .readonly());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&inst.path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o400, "owner read-only: {mode:o}");
    }

    // dicom-object reads it back with the same attributes.
    let file = dicom_object::open_file(&inst.path).expect("open_file");
    let meta = file.meta();
    assert_eq!(meta.media_storage_sop_class_uid(), SC_IMAGE);
    assert_eq!(meta.media_storage_sop_instance_uid(), "1.2.3.100");
    assert_eq!(meta.transfer_syntax(), uids::EXPLICIT_VR_LE);
    assert_eq!(
        meta.implementation_class_uid(),
        uids::IMPLEMENTATION_CLASS_UID
    );
    assert_eq!(meta.implementation_version_name(), Some("RADGUARD_010"));
    assert_eq!(meta.source_application_entity_title(), None);
    let original = object("1.2.3.100", "PID-1", 64, 0);
    for tag in [
        tags::SOP_CLASS_UID,
        tags::SOP_INSTANCE_UID,
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::STUDY_INSTANCE_UID,
        tags::SERIES_INSTANCE_UID,
    ] {
        let a = file
            .element(tag)
            .expect("stored element")
            .to_str()
            .expect("text");
        let b = original
            .element(tag)
            .expect("original")
            .to_str()
            .expect("text");
        // UIDs come back with their even-length NUL pad
        assert_eq!(a.trim_end_matches('\0'), b, "{tag}");
    }
    for tag in [tags::COLUMNS, tags::PIXEL_DATA] {
        let a = file
            .element(tag)
            .expect("stored element")
            .to_bytes()
            .expect("bytes");
        let b = original
            .element(tag)
            .expect("original")
            .to_bytes()
            .expect("bytes");
        assert_eq!(a, b, "{tag}");
    }

    assert_eq!(
        vault.lookup(&uid("1.2.3.100")).expect("lookup"),
        Some(inst.clone())
    );
    assert_eq!(vault.lookup(&uid("1.2.3.999")).expect("lookup"), None);
    assert_eq!(vault.count().expect("count"), 1);
    assert_eq!(vault.list().expect("list"), vec![inst]);
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert_eq!(vault.check().expect("check"), vec![]);
    assert_eq!(vault.verify().expect("verify"), vec![]);
}

#[test]
fn same_data_set_gives_same_file() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let data = dataset("1.2.3.7", "PID", 32, 1);
    let va = Vault::open(a.path()).expect("open");
    let vb = Vault::open(b.path()).expect("open");
    let ia = stored(store(&va, "1.2.3.7", &data));
    // a different sender does not change the bytes
    let mut p = vb
        .begin(
            &uid(SC_IMAGE),
            &uid("1.2.3.7"),
            &uid(uids::EXPLICIT_VR_LE),
            "OTHER_AE",
        )
        .expect("begin");
    p.write_chunk(&data).expect("write");
    let ib = stored(p.commit().expect("commit"));
    assert_eq!(ia.sha256, ib.sha256);
    assert_eq!(
        fs::read(&ia.path).expect("a"),
        fs::read(&ib.path).expect("b")
    );
}

#[test]
fn duplicate_identical_makes_no_second_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let data = dataset("1.2.3.200", "PID-2", 64, 0);
    let first = stored(store(&vault, "1.2.3.200", &data));
    match store(&vault, "1.2.3.200", &data) {
        StoreOutcome::DuplicateIdentical(existing) => assert_eq!(existing, first),
        other => panic!("expected DuplicateIdentical, got {other:?}"),
    }
    assert_eq!(
        files_under(&dir.path().join("objects")),
        vec![first.path.clone()]
    );
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert_eq!(vault.count().expect("count"), 1);
}

#[test]
fn duplicate_different_is_a_conflict_and_keeps_the_original() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let original = dataset("1.2.3.300", "PID-3", 64, 0);
    let first = stored(store(&vault, "1.2.3.300", &original));
    let before = fs::read(&first.path).expect("read");

    let other = dataset("1.2.3.300", "PID-3", 64, 9);
    let outcome = store(&vault, "1.2.3.300", &other);
    assert_eq!(outcome.dimse_status(), status::DUPLICATE_SOP_INSTANCE);
    match outcome {
        StoreOutcome::Conflict {
            existing,
            new_sha256,
        } => {
            assert_eq!(existing, first);
            assert_ne!(new_sha256, first.sha256);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(fs::read(&first.path).expect("read"), before);
    assert_eq!(
        files_under(&dir.path().join("objects")),
        vec![first.path.clone()]
    );
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert_eq!(
        vault.lookup(&uid("1.2.3.300")).expect("lookup"),
        Some(first)
    );
}

#[test]
fn reopen_finds_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut before = Vec::new();
    {
        let vault = Vault::open(dir.path()).expect("open");
        for i in 0..5 {
            let sop = format!("1.2.3.400.{i}");
            before.push(stored(store(
                &vault,
                &sop,
                &dataset(&sop, "PID-4", 32, i as u8),
            )));
        }
    }
    let vault = Vault::open(dir.path()).expect("reopen");
    assert_eq!(vault.count().expect("count"), 5);
    assert_eq!(vault.list().expect("list"), before);
    for inst in &before {
        let found = vault
            .lookup(&uid(&inst.sop_instance_uid))
            .expect("lookup")
            .expect("present");
        assert_eq!(&found, inst);
    }
    // and it keeps working after the restart
    let data = dataset("1.2.3.400.0", "PID-4", 32, 0);
    assert!(matches!(
        store(&vault, "1.2.3.400.0", &data),
        StoreOutcome::DuplicateIdentical(_)
    ));
}

#[test]
fn chunk_sizes_do_not_change_the_hash() {
    let data = dataset("1.2.3.500", "PID-5", 10_001, 3);
    let mut shas = Vec::new();
    for chunk in [1, 3, 7, 1000, 4093, 65_537, data.len()] {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::open(dir.path()).expect("open");
        shas.push(stored(store_chunked(&vault, "1.2.3.500", &data, chunk)).sha256);
    }
    assert!(shas.windows(2).all(|w| w[0] == w[1]), "{shas:?}");
    // Empty chunks are harmless too.
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let mut p = vault
        .begin(
            &uid(SC_IMAGE),
            &uid("1.2.3.500"),
            &uid(uids::EXPLICIT_VR_LE),
            "CT01",
        )
        .expect("begin");
    p.write_chunk(&[]).expect("empty");
    p.write_chunk(&data).expect("write");
    p.write_chunk(&[]).expect("empty");
    assert_eq!(stored(p.commit().expect("commit")).sha256, shas[0]);
}

#[test]
fn large_data_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let data = dataset("1.2.3.600", "PID-6", 3 * 1024 * 1024 + 2, 5);
    assert!(data.len() > 3 * 1024 * 1024);
    let inst = stored(store_chunked(&vault, "1.2.3.600", &data, 16_378));
    assert_eq!(inst.patient_id.as_deref(), Some("PID-6"));
    assert_eq!(inst.parse_warning, None);
    let bytes = fs::read(&inst.path).expect("read");
    assert_eq!(bytes.len() as u64, inst.size);
    assert!(bytes.ends_with(&data));
    let file = dicom_object::open_file(&inst.path).expect("open_file");
    assert_eq!(
        file.element(tags::PIXEL_DATA)
            .expect("pixels")
            .to_bytes()
            .expect("bytes")
            .len(),
        3 * 1024 * 1024 + 2
    );
}

#[test]
fn implicit_vr_is_indexed_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let data = encode(&object("1.2.3.650", "PID-I", 16, 0), true);
    let mut p = vault
        .begin(
            &uid(SC_IMAGE),
            &uid("1.2.3.650"),
            &uid(uids::IMPLICIT_VR_LE),
            "CT01",
        )
        .expect("begin");
    p.write_chunk(&data).expect("write");
    let inst = stored(p.commit().expect("commit"));
    assert_eq!(inst.patient_id.as_deref(), Some("PID-I"));
    assert_eq!(inst.series_uid.as_deref(), Some(SERIES));
    assert_eq!(inst.parse_warning, None);
    let file = dicom_object::open_file(&inst.path).expect("open_file");
    assert_eq!(file.meta().transfer_syntax(), uids::IMPLICIT_VR_LE);
}

#[test]
fn unparseable_data_set_is_still_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let garbage = b"\x08\x00\x18\x00UI\xff\xffnot really a data set".to_vec();
    let inst = stored(store(&vault, "1.2.3.700", &garbage));
    assert!(inst.parse_warning.is_some());
    assert_eq!(inst.patient_id, None);
    assert_eq!(inst.study_uid, None);
    assert_eq!(inst.series_uid, None);
    assert!(fs::read(&inst.path).expect("read").ends_with(&garbage));

    // A valid start cut short in the pixel data is stored and flagged, attributes not trusted.
    let mut truncated = dataset("1.2.3.701", "PID-7", 4096, 0);
    truncated.truncate(truncated.len() - 100);
    let inst = stored(store(&vault, "1.2.3.701", &truncated));
    let warning = inst.parse_warning.clone().expect("warning");
    assert!(warning.contains("truncated"), "{warning}");
    assert_eq!(inst.patient_id, None);

    // An empty data set too.
    let inst = stored(store(&vault, "1.2.3.702", &[]));
    assert!(inst.parse_warning.is_some());

    // The warning survives a restart.
    drop(vault);
    let vault = Vault::open(dir.path()).expect("reopen");
    let again = vault
        .lookup(&uid("1.2.3.701"))
        .expect("lookup")
        .expect("present");
    assert_eq!(again.parse_warning, Some(warning));
}

#[test]
fn mismatched_uid_in_data_set_is_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let data = dataset("1.2.3.800", "PID-8", 16, 0);
    let inst = stored(store(&vault, "1.2.3.801", &data));
    let w = inst.parse_warning.expect("warning");
    assert!(w.contains("1.2.3.800") && w.contains("1.2.3.801"), "{w}");
    // the index attributes are still read: the data set itself parsed
    assert_eq!(inst.patient_id.as_deref(), Some("PID-8"));
}

#[test]
fn concurrent_commits_of_one_uid_have_one_winner() {
    for round in 0..10u8 {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::open(dir.path()).expect("open");
        let sop = "1.2.3.900";
        let threads = 4;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let vault = vault.clone();
                let barrier = Arc::clone(&barrier);
                // Threads 0 and 1 send identical bytes, the others different ones.
                let fill = if t < 2 {
                    round
                } else {
                    round.wrapping_add(t as u8)
                };
                let data = dataset(sop, "PID-9", 4096, fill);
                std::thread::spawn(move || {
                    let mut p = vault
                        .begin(
                            &uid(SC_IMAGE),
                            &uid(sop),
                            &uid(uids::EXPLICIT_VR_LE),
                            "CT01",
                        )
                        .expect("begin");
                    p.write_chunk(&data).expect("write");
                    barrier.wait();
                    p.commit().expect("commit")
                })
            })
            .collect();
        let outcomes: Vec<StoreOutcome> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        let winners: Vec<&StoredInstance> = outcomes
            .iter()
            .filter_map(|o| match o {
                StoreOutcome::Stored(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        let winner = winners[0];
        for o in &outcomes {
            match o {
                StoreOutcome::Stored(_) => {}
                StoreOutcome::DuplicateIdentical(e) => assert_eq!(e, winner),
                StoreOutcome::Conflict {
                    existing,
                    new_sha256,
                } => {
                    assert_eq!(existing, winner);
                    assert_ne!(new_sha256, &winner.sha256);
                }
            }
        }
        assert_eq!(vault.count().expect("count"), 1);
        assert_eq!(
            files_under(&dir.path().join("objects")),
            vec![winner.path.clone()]
        );
        assert!(files_under(&dir.path().join("tmp")).is_empty());
    }
}

#[test]
fn drop_without_commit_aborts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let mut p = vault
        .begin(
            &uid(SC_IMAGE),
            &uid("1.2.3.1000"),
            &uid(uids::EXPLICIT_VR_LE),
            "CT01",
        )
        .expect("begin");
    p.write_chunk(&dataset("1.2.3.1000", "P", 16, 0))
        .expect("write");
    assert_eq!(files_under(&dir.path().join("tmp")).len(), 1);
    drop(p);
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert!(files_under(&dir.path().join("objects")).is_empty());
    assert_eq!(vault.count().expect("count"), 0);
}

#[test]
fn open_removes_stale_temp_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Vault::open(dir.path()).expect("open"));
    fs::write(
        dir.path().join("tmp").join("123-456-0.part"),
        b"half an upload",
    )
    .expect("write");
    let vault = Vault::open(dir.path()).expect("reopen");
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert_eq!(vault.count().expect("count"), 0);
}

#[test]
fn open_reindexes_objects_left_by_a_crash() {
    // Produce a genuine object in one vault, then drop it into another vault's objects/ as if
    // that vault had crashed between the rename and the index commit.
    let src = tempfile::tempdir().expect("tempdir");
    let inst = {
        let v = Vault::open(src.path()).expect("open");
        stored(store(
            &v,
            "1.2.3.1100",
            &dataset("1.2.3.1100", "PID-11", 64, 0),
        ))
    };
    let dst = tempfile::tempdir().expect("tempdir");
    drop(Vault::open(dst.path()).expect("open"));
    let rel = inst.path.strip_prefix(src.path()).expect("under root");
    let orphan = dst.path().join(rel);
    fs::create_dir_all(orphan.parent().expect("shard")).expect("mkdir");
    fs::copy(&inst.path, &orphan).expect("copy");

    let vault = Vault::open(dst.path()).expect("reopen");
    let found = vault
        .lookup(&uid("1.2.3.1100"))
        .expect("lookup")
        .expect("re-indexed");
    assert_eq!(found.sha256, inst.sha256);
    assert_eq!(found.size, inst.size);
    assert_eq!(found.patient_id.as_deref(), Some("PID-11"));
    assert_eq!(found.source_ae, None);
    assert_eq!(found.path, orphan);
    assert_eq!(vault.check().expect("check"), vec![]);
}

#[test]
fn check_reports_missing_and_unindexed_objects_and_duplicates_heal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let data = dataset("1.2.3.1200", "PID-12", 64, 0);
    let inst = stored(store(&vault, "1.2.3.1200", &data));
    fs::remove_file(&inst.path).expect("remove");
    assert_eq!(
        vault.check().expect("check"),
        vec![Problem::MissingObject {
            sop_instance_uid: inst.sop_instance_uid.clone(),
            path: inst.path.clone(),
        }]
    );

    // A stray file and a conflicting copy of an indexed UID are reported, not indexed.
    fs::write(dir.path().join("objects").join("notes.txt"), b"x").expect("write");
    let other = tempfile::tempdir().expect("tempdir");
    let foreign = {
        let v = Vault::open(other.path()).expect("open");
        stored(store(
            &v,
            "1.2.3.1200",
            &dataset("1.2.3.1200", "PID-12", 64, 1),
        ))
    };
    let copy = dir
        .path()
        .join(foreign.path.strip_prefix(other.path()).expect("rel"));
    fs::create_dir_all(copy.parent().expect("shard")).expect("mkdir");
    fs::copy(&foreign.path, &copy).expect("copy");
    drop(vault);
    let vault = Vault::open(dir.path()).expect("reopen");
    let problems = vault.check().expect("check");
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems.contains(&Problem::StrayFile {
        path: dir.path().join("objects").join("notes.txt")
    }));
    assert!(problems
        .iter()
        .any(|p| matches!(p, Problem::UnindexedObject { path, .. } if *path == copy)));

    // Receiving the identical instance again restores the lost file.
    assert!(matches!(
        store(&vault, "1.2.3.1200", &data),
        StoreOutcome::DuplicateIdentical(_)
    ));
    assert!(inst.path.exists());
    assert!(!vault
        .check()
        .expect("check")
        .iter()
        .any(|p| matches!(p, Problem::MissingObject { .. })));
}

#[test]
fn verify_detects_altered_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::open(dir.path()).expect("open");
    let inst = stored(store(
        &vault,
        "1.2.3.1300",
        &dataset("1.2.3.1300", "P", 64, 0),
    ));
    let mut bytes = fs::read(&inst.path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    let mut perms = fs::metadata(&inst.path).expect("stat").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&inst.path, perms).expect("chmod");
    fs::write(&inst.path, &bytes).expect("tamper");
    assert_eq!(vault.check().expect("check"), vec![]);
    let problems = vault.verify().expect("verify");
    assert!(
        matches!(&problems[..], [Problem::HashMismatch { sop_instance_uid, .. }] if sop_instance_uid == "1.2.3.1300"),
        "{problems:?}"
    );
}

/// A reader beside a running gateway: `open_read_only` lists what the writer committed, leaves
/// an upload in progress (its temp file) alone, and cannot store.
#[test]
fn read_only_open_lists_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(
        Vault::open_read_only(dir.path()).is_err(),
        "no vault yet: refused, nothing created"
    );
    assert!(!dir.path().join("index.sqlite").exists());
    let writer = Vault::open(dir.path()).expect("open");
    let first = stored(store(
        &writer,
        "1.2.3.500.1",
        &dataset("1.2.3.500.1", "P", 32, 1),
    ));
    // An upload in progress: its temp file must survive the reader's open.
    let mut pending = writer
        .begin(
            &uid(SC_IMAGE),
            &uid("1.2.3.500.2"),
            &uid(uids::EXPLICIT_VR_LE),
            "CT01",
        )
        .expect("begin");
    pending.write_chunk(b"partial").expect("write");
    let tmp_before = files_under(&dir.path().join("tmp"));
    assert_eq!(tmp_before.len(), 1, "{tmp_before:?}");

    let reader = Vault::open_read_only(dir.path()).expect("open read-only");
    assert_eq!(
        files_under(&dir.path().join("tmp")),
        tmp_before,
        "upload untouched"
    );
    assert_eq!(reader.list().expect("list"), vec![first]);
    assert!(
        reader
            .begin(
                &uid(SC_IMAGE),
                &uid("1.2.3.500.3"),
                &uid(uids::EXPLICIT_VR_LE),
                "CT01",
            )
            .and_then(|mut p| {
                p.write_chunk(&dataset("1.2.3.500.3", "P", 32, 3))?;
                p.commit()
            })
            .is_err(),
        "a read-only vault stores nothing"
    );
    drop(pending);
}
