//! `sanitize` over the generated corpus and pydicom's files; outputs checked by scan, DCMTK
#![allow(clippy::vec_init_then_push)]
//! `dcmdump` and pydicom (tests/py/check_sanitized.py).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use radguard_media::{
    sanitize_file, scan_path, SanitizeOptions, SanitizeOutcome, ScanOptions, Verdict,
};
use sha2::{Digest, Sha256};

fn sha(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn corpus(dir: &Path) -> BTreeMap<&'static str, PathBuf> {
    let inst = "1.2.826.0.1.3680043.9.7433.1.";
    let mut files: Vec<(&'static str, Vec<u8>)> = Vec::new();
    files.push(("clean", clean_ct(&format!("{inst}1"), &[])));
    let mut overlay_extra = vec![
        el(0x0009, 0x0010, b"LO", b"ACME 1.0"),
        el(0x0009, 0x1001, b"LO", b"keep me?"),
        el(0x0011, 0x0010, b"LO", b"SAFE CREATOR"),
        el(0x0011, 0x1001, b"LO", b"safe value"),
        el(0x6000, 0x0010, b"US", &us(16)),
        el(0x6000, 0x0011, b"US", &us(16)),
        el(0x6000, 0x3000, b"OW", &[0u8; 32]),
    ];
    overlay_extra.push(seq_undefined(
        0x0008,
        0x1140,
        &[el(0x0008, 0x1150, b"UI", b"1.2.3")],
    ));
    files.push((
        "private-overlay",
        clean_ct(&format!("{inst}2"), &overlay_extra),
    ));
    files.push(("pedicom", pedicom()));
    let mut pre = [0u8; 128];
    pre[..64].copy_from_slice(&elf_header());
    files.push(("elf", clean_ct_with_preamble(&format!("{inst}4"), &[], pre)));
    let mut t = clean_ct(&format!("{inst}5"), &[]);
    t.extend(pe_image(0x80));
    files.push(("trailing-pe", t));
    let mut m = clean_ct(&format!("{inst}6"), &[]);
    let v = u32::from_le_bytes(m[140..144].try_into().unwrap()) + 10;
    m[140..144].copy_from_slice(&v.to_le_bytes());
    files.push(("bad-meta", m));
    let mut pre = [0u8; 128];
    pre[..4].copy_from_slice(b"II*\0");
    files.push((
        "tiff",
        clean_ct_with_preamble(&format!("{inst}7"), &[], pre),
    ));
    let mut ds = ct_header(&format!("{inst}8"));
    ds.extend(pixel_module(16, 16));
    ds.push(el(0x7FE0, 0x0010, b"OW", &pixels(512, 8)));
    files.push((
        "deflated",
        deflated_file(&assemble(ds), &format!("{inst}8")),
    ));
    let mut private_pe = vec![
        el(0x0009, 0x0010, b"LO", b"ACME 1.0"),
        el(0x0009, 0x1001, b"OB", &pe_image(0x80)),
    ];
    private_pe.push(seq_undefined(
        0x0009,
        0x1002,
        &[el(0x0009, 0x1003, b"UN", &elf_header())],
    ));
    files.push(("private-pe", clean_ct(&format!("{inst}9"), &private_pe)));
    // Unfixable ones.
    files.push(("pdf-pe", encapsulated_pdf(&pdf_with(&pe_image(0x80)))));
    let mut ds = ct_header(&format!("{inst}11"));
    ds.push(el(0x0009, 0x0010, b"LO", b"BOMB"));
    ds.push(el(0x0009, 0x1001, b"OB", &vec![0u8; 64 << 20]));
    files.push(("bomb", deflated_file(&assemble(ds), &format!("{inst}11"))));
    let mut ds = ct_header(&format!("{inst}12"));
    ds.push(el_len(0x0009, 0x1001, b"OB", 0xFFFF_FFF0, &pixels(64, 1)));
    files.push((
        "length",
        part10(
            &[0; 128],
            EXPLICIT_LE,
            CT,
            &format!("{inst}12"),
            &assemble(ds),
        ),
    ));
    files.push(("text", b"just a README on the CD\n".to_vec()));
    files.push(("DICOMDIR", dicomdir(&["DICOM\\IM1"])));
    files
        .into_iter()
        .map(|(name, bytes)| {
            // Hostile-looking input names must not matter.
            let p = dir.join(format!("..{name}..dcm"));
            std::fs::write(&p, bytes).unwrap();
            (name, p)
        })
        .collect()
}

fn run_checker(pairs: &[(PathBuf, PathBuf, &str)]) {
    let tsv = tempfile::NamedTempFile::new().unwrap();
    let text: String = pairs
        .iter()
        .map(|(a, b, f)| format!("{}\t{}\t{}\n", a.display(), b.display(), f))
        .collect();
    std::fs::write(tsv.path(), text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/check_sanitized.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(tsv.path())
        .output()
        .expect("run the pydicom checker");
    assert!(
        out.status.success(),
        "pydicom checker failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dcmdump_ok(p: &Path) {
    let out = Command::new("dcmdump")
        .arg("-q")
        .arg(p)
        .output()
        .expect("DCMTK dcmdump must be installed (Debian package dcmtk)");
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("E: "),
        "dcmdump fails on {}: {}",
        p.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn all_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn sanitize_generated_corpus() {
    let input = tempfile::tempdir().unwrap();
    let outdir = tempfile::tempdir().unwrap();
    let files = corpus(input.path());
    let before: BTreeMap<_, _> = files.values().map(|p| (p.clone(), sha(p))).collect();
    let opts = SanitizeOptions::default();
    let mut outcomes = BTreeMap::new();
    for (name, p) in &files {
        outcomes.insert(*name, sanitize_file(p, outdir.path(), &opts).unwrap());
    }
    let written = [
        "clean",
        "private-overlay",
        "pedicom",
        "elf",
        "trailing-pe",
        "bad-meta",
        "tiff",
        "deflated",
        "private-pe",
    ];
    let quarantined = ["pdf-pe", "bomb", "length", "text"];
    let mut pairs = Vec::new();
    for name in written {
        match &outcomes[name] {
            SanitizeOutcome::Written { output, .. } => {
                let r = scan_path(output, &ScanOptions::default());
                assert_eq!(r.verdict, Verdict::Clean, "{name}: {:?}", r.findings);
                dcmdump_ok(output);
                pairs.push((files[name].clone(), output.clone(), ""));
            }
            o => panic!("{name}: expected written, got {o:?}"),
        }
    }
    for name in quarantined {
        match &outcomes[name] {
            SanitizeOutcome::Quarantined {
                copy, reason_file, ..
            } => {
                assert_eq!(sha(copy), before[&files[name]]);
                let reason = std::fs::read_to_string(reason_file).unwrap();
                assert!(reason.contains("reasons:"), "{reason}");
            }
            o => panic!("{name}: expected quarantined, got {o:?}"),
        }
    }
    assert!(matches!(
        outcomes["DICOMDIR"],
        SanitizeOutcome::Skipped { .. }
    ));
    // PEDICOM: the private element the DOS header pointed into is gone.
    if let SanitizeOutcome::Written { changes, .. } = &outcomes["pedicom"] {
        assert!(
            changes.iter().any(|c| c.contains("(0009,1010)")),
            "{changes:?}"
        );
        assert!(changes.iter().any(|c| c.contains("preamble zeroed")));
    }
    // Inputs untouched; every output inside the output folder, named by UID or hash.
    for (p, h) in &before {
        assert_eq!(&sha(p), h, "input {} changed", p.display());
    }
    let root = outdir.path().canonicalize().unwrap();
    for f in all_files_under(outdir.path()) {
        assert!(f.canonicalize().unwrap().starts_with(&root));
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let stem = name.split('.').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
            "{name}"
        );
        assert!(!stem.is_empty(), "{name}");
    }
    // Running again: duplicates, nothing overwritten.
    let again = sanitize_file(&files["clean"], outdir.path(), &opts).unwrap();
    assert!(matches!(
        again,
        SanitizeOutcome::Written {
            duplicate: true,
            ..
        }
    ));
    run_checker(&pairs);
}

#[test]
fn sanitize_options_drop_private_overlays_documents() {
    let input = tempfile::tempdir().unwrap();
    let outdir = tempfile::tempdir().unwrap();
    let files = corpus(input.path());
    let opts = SanitizeOptions {
        drop_private: true,
        keep_private_creators: vec!["SAFE CREATOR".into()],
        drop_overlays: true,
        drop_encapsulated_documents: true,
        ..SanitizeOptions::default()
    };
    let o = sanitize_file(&files["private-overlay"], outdir.path(), &opts).unwrap();
    let SanitizeOutcome::Written {
        output, changes, ..
    } = o
    else {
        panic!("{o:?}")
    };
    let obj = dicom_object::open_file(&output).unwrap();
    // One Implementation Class UID for everything the product writes.
    assert_eq!(
        obj.meta().implementation_class_uid(),
        radguard_dicom::part10::IMPLEMENTATION_CLASS_UID
    );
    use dicom_core::Tag;
    assert!(obj.get(Tag(0x0009, 0x1001)).is_none());
    assert!(obj.get(Tag(0x0011, 0x1001)).is_some(), "{changes:?}");
    assert!(obj.get(Tag(0x6000, 0x3000)).is_none());
    run_checker(&[(files["private-overlay"].clone(), output, "no-overlays")]);

    let clean_pdf = input.path().join("pdf");
    std::fs::write(&clean_pdf, encapsulated_pdf(&pdf_with(b"hello"))).unwrap();
    let o = sanitize_file(&clean_pdf, outdir.path(), &opts).unwrap();
    assert!(matches!(o, SanitizeOutcome::Quarantined { .. }), "{o:?}");
    let o = sanitize_file(&clean_pdf, outdir.path(), &SanitizeOptions::default()).unwrap();
    assert!(matches!(o, SanitizeOutcome::Written { .. }), "{o:?}");
}

#[test]
fn sanitize_refuses_symlinked_quarantine() {
    let input = tempfile::tempdir().unwrap();
    let outdir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(elsewhere.path(), outdir.path().join("quarantine")).unwrap();
    let p = input.path().join("x");
    std::fs::write(&p, b"not dicom").unwrap();
    let r = sanitize_file(&p, outdir.path(), &SanitizeOptions::default());
    #[cfg(unix)]
    assert!(r.is_err(), "{r:?}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn sanitize_every_pydicom_file() {
    let files = pydicom_files();
    assert!(
        files.len() >= 50,
        "found only {} pydicom files",
        files.len()
    );
    let outdir = tempfile::tempdir().unwrap();
    let opts = SanitizeOptions::default();
    let mut pairs = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &files {
        let before = sha(f);
        match sanitize_file(f, outdir.path(), &opts).unwrap() {
            SanitizeOutcome::Written {
                output, duplicate, ..
            } => {
                *counts.entry("written").or_default() += 1;
                if !duplicate {
                    let r = scan_path(&output, &ScanOptions::default());
                    assert_eq!(
                        r.verdict,
                        Verdict::Clean,
                        "{}: {:?}",
                        f.display(),
                        r.findings
                    );
                    dcmdump_ok(&output);
                    pairs.push((f.clone(), output, ""));
                }
            }
            SanitizeOutcome::Quarantined { .. } => *counts.entry("quarantined").or_default() += 1,
            SanitizeOutcome::Skipped { .. } => *counts.entry("skipped").or_default() += 1,
        }
        assert_eq!(sha(f), before);
    }
    eprintln!("pydicom sanitize: {counts:?}");
    assert!(
        counts.get("written").copied().unwrap_or(0) >= files.len() / 2,
        "{counts:?}"
    );
    run_checker(&pairs);
}
