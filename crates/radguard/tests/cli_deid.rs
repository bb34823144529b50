//! Real data through the CLI: pydicom's sample files and a generated CT series go through
//! `radguard deid` (the real binary); outputs are read by DCMTK's dcmdump and by pydicom; pixel data is
//! unchanged; UIDs are consistent across a series and across two runs; `--check` finds the
//! PHI in the originals and none in the outputs; bad inputs are quarantined with a reason
//! and never half-written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dicom_core::header::HasLength;
use radguard_deid::SiteKey;

/// Exit status of `radguard deid`: everything written (--check: nothing found).
const EXIT_OK: i32 = 0;
/// Something quarantined (--check: residue found or a file unreadable).
const EXIT_FINDINGS: i32 = 1;
/// Usage error.
const EXIT_USAGE: i32 = 2;

const KEY: &[u8] = b"radguard-test-key-0123456789abcdef";
const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

fn site_key() -> SiteKey {
    SiteKey::from_bytes(KEY).unwrap()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project's venv Python (fails, not skips, when absent).
fn python() -> PathBuf {
    let p = root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} missing: run scripts/setup-test-env.sh (pydicom is required by these tests)",
        p.display()
    );
    p
}

fn run_python(args: &[&str]) -> String {
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
fn tmpdir() -> tempfile::TempDir {
    let base = root().join("target/tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("cli-deid-")
        .tempdir_in(base)
        .unwrap()
}

/// Read Part 10 bytes with dicom-object.
fn read(bytes: &[u8]) -> dicom_object::DefaultDicomObject {
    dicom_object::from_reader(&bytes[128..]).expect("dicom-object reads the output")
}

/// `radguard deid --no-progress -j 2 ARGS...`.
fn run_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_radguard"))
        .args(["deid", "--no-progress", "-j", "2"])
        .args(args)
        .output()
        .expect("run radguard deid")
}

/// The exit status of `radguard deid ARGS...`.
fn cli(args: &[&str]) -> i32 {
    let out = run_cli(args);
    out.status.code().unwrap_or_else(|| {
        panic!(
            "radguard deid {args:?} killed by a signal: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn write_key(dir: &Path) -> PathBuf {
    let k = dir.join("site.key");
    std::fs::write(&k, format!("{}\n", String::from_utf8_lossy(KEY))).unwrap();
    k
}

fn pydicom_test_files() -> PathBuf {
    let out = run_python(&[
        "-c",
        "import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))",
    ]);
    let p = PathBuf::from(out.trim());
    let n = std::fs::read_dir(&p)
        .unwrap_or_else(|e| panic!("pydicom's test files at {}: {e}", p.display()))
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "dcm"))
        })
        .count();
    assert!(
        n >= 20,
        "pydicom's sample files missing in {} ({n})",
        p.display()
    );
    p
}

fn dcmdump() -> PathBuf {
    let p = PathBuf::from("/usr/bin/dcmdump");
    assert!(
        p.exists(),
        "/usr/bin/dcmdump missing: run scripts/setup-test-env.sh (DCMTK)"
    );
    p
}

fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn json_files(dir: &Path) -> Vec<serde_json::Value> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    v.sort_by_key(|x: &serde_json::Value| x.to_string());
    v
}

/// Pair each output with its original through the report's input SHA-256.
fn pairs(inputs: &[PathBuf], out: &Path) -> Vec<(PathBuf, PathBuf)> {
    use sha2::Digest;
    let by_sha: BTreeMap<String, PathBuf> = inputs
        .iter()
        .map(|p| {
            (
                hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap())),
                p.clone(),
            )
        })
        .collect();
    json_files(&out.join("reports"))
        .iter()
        .map(|r| {
            let sha = r["input_sha256"].as_str().unwrap();
            (by_sha[sha].clone(), out.join(r["output"].as_str().unwrap()))
        })
        .collect()
}

fn no_partials(dir: &Path) {
    for d in [
        dir.to_path_buf(),
        dir.join("reports"),
        dir.join("quarantine"),
    ] {
        for e in std::fs::read_dir(&d).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.ends_with(".partial"), "half-written file left: {n}");
        }
    }
}

#[test]
fn pydicom_samples_through_the_cli() {
    let samples = pydicom_test_files();
    let tmp = tmpdir();
    let key = write_key(tmp.path());
    let (o1, o2) = (tmp.path().join("out1"), tmp.path().join("out2"));
    let args = |o: &Path| {
        vec![
            samples.to_str().unwrap().to_string(),
            "--out".into(),
            o.to_str().unwrap().to_string(),
            "--key-file".into(),
            key.to_str().unwrap().to_string(),
        ]
    };
    let a1 = args(&o1);
    let status = cli(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        status, EXIT_FINDINGS,
        "pydicom's samples include files that must be quarantined"
    );
    let a2 = args(&o2);
    cli(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    no_partials(&o1);

    // Two runs with the same key: byte-identical outputs under the same names (except where
    // pydicom's samples hold one instance in several encodings: the first one written wins
    // the name and the others are quarantined as duplicates, in either run's order).
    let (f1, f2) = (outputs(&o1), outputs(&o2));
    assert!(f1.len() >= 25, "only {} outputs", f1.len());
    let dup_names = |o: &Path| -> BTreeSet<String> {
        json_files(&o.join("quarantine"))
            .iter()
            .filter_map(|r| {
                let why = r["reason"].as_str().unwrap();
                why.contains("same SOP Instance UID")
                    .then(|| why.split_whitespace().last().unwrap().to_string())
            })
            .collect()
    };
    let dups: BTreeSet<String> = dup_names(&o1).union(&dup_names(&o2)).cloned().collect();
    assert_eq!(f1.keys().collect::<Vec<_>>(), f2.keys().collect::<Vec<_>>());
    for (name, bytes) in &f1 {
        if !dups.contains(name) {
            assert!(f2[name] == *bytes, "{name} differs between two runs");
        }
    }
    for name in f1.keys() {
        let stem = name
            .strip_suffix(".dcm")
            .unwrap_or_else(|| panic!("{name}"));
        let by_uid = stem.starts_with("2.25.");
        let by_sha = stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(by_uid || by_sha, "{name}");
    }

    // Quarantine: files without a Part 10 header, burned-in classes, each with a reason.
    let q = json_files(&o1.join("quarantine"));
    let reason = |file: &str| -> String {
        q.iter()
            .find(|r| r["input"].as_str().unwrap().ends_with(&format!("/{file}")))
            .map(|r| r["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{file} not quarantined"))
    };
    assert!(reason("ExplVR_LitEndNoMeta.dcm").contains("not a DICOM Part 10"));
    assert!(
        reason("examples_palette.dcm").contains("burned-in"),
        "{}",
        reason("examples_palette.dcm")
    );
    assert!(
        reason("SC_rgb_rle.dcm").contains("Secondary Capture"),
        "{}",
        reason("SC_rgb_rle.dcm")
    );
    assert!(reason("MR_truncated.dcm").contains("ended inside the pixel data"));
    for r in &q {
        assert!(!r["reason"].as_str().unwrap().is_empty());
    }
    let all = radguard_deid::batch::collect_inputs(std::slice::from_ref(&samples), None).unwrap();
    // Every input is accounted for: quarantined by path, or written (by content hash).
    let written_shas: BTreeSet<String> = json_files(&o1.join("reports"))
        .iter()
        .map(|r| r["input_sha256"].as_str().unwrap().to_string())
        .collect();
    let quarantined: BTreeSet<String> = q
        .iter()
        .map(|r| r["input"].as_str().unwrap().to_string())
        .collect();
    for input in &all {
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(std::fs::read(input).unwrap()));
        assert!(
            quarantined.contains(&input.display().to_string()) || written_shas.contains(&sha),
            "{} neither written nor quarantined",
            input.display()
        );
    }

    // DCMTK reads every output without errors.
    for name in f1.keys() {
        let out = Command::new(dcmdump())
            .arg("-q")
            .arg(o1.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("E: "),
            "dcmdump {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // pydicom: markers, names, UIDs, identical pixel data, for every output.
    let p = pairs(&all, &o1);
    assert_eq!(p.len(), f1.len());
    let list = tmp.path().join("pairs.json");
    std::fs::write(&list, serde_json::to_vec(&p).unwrap()).unwrap();
    let script = root().join("crates/radguard-deid/tests/py/verify_outputs.py");
    let r = run_python(&[script.to_str().unwrap(), list.to_str().unwrap()]);
    assert!(r.contains(&format!("verified: {}", p.len())), "{r}");

    // The residual-PHI check: nothing in the outputs, judged against the originals.
    let written: Vec<&PathBuf> = p.iter().map(|(a, _)| a).collect();
    let ws: Vec<String> = written
        .iter()
        .map(|w| w.to_str().unwrap().to_string())
        .collect();
    // Each output against its own original (the union of all samples' patients would make
    // names like TEST or FIRST match manufacturer strings).
    for (orig, out) in &p {
        let check = [
            "--check",
            out.to_str().unwrap(),
            "--against",
            orig.to_str().unwrap(),
        ];
        assert_eq!(
            cli(&check),
            EXIT_OK,
            "residual PHI in {} (from {})",
            out.display(),
            orig.display()
        );
    }
    // ... and PHI in the originals that were written.
    let mut check = vec!["--check"];
    check.extend(ws.iter().map(String::as_str));
    assert_eq!(cli(&check), EXIT_FINDINGS, "no PHI found in the originals");
}

#[test]
fn ct_series_consistency_and_check() {
    let tmp = tmpdir();
    let key = write_key(tmp.path());
    let series = tmp.path().join("series");
    let gen = root().join("crates/radguard-deid/tests/py/gen_series.py");
    run_python(&[gen.to_str().unwrap(), series.to_str().unwrap(), "12"]);
    let out = tmp.path().join("out");
    let k = key.to_str().unwrap();
    let (s, o) = (series.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(
        cli(&[
            s,
            "--out",
            o,
            "--key-file",
            k,
            "--option",
            "retain-long-modified-dates"
        ]),
        EXIT_OK
    );
    let files = outputs(&out);
    assert_eq!(files.len(), 12);
    let mut studies = BTreeSet::new();
    let mut seriess = BTreeSet::new();
    let mut frames = BTreeSet::new();
    let mut sops = BTreeSet::new();
    let mut dates = BTreeSet::new();
    for (name, bytes) in &files {
        let obj = read(bytes);
        let t = |g: u16, e: u16| {
            obj.element(dicom_core::Tag(g, e))
                .map(|x| {
                    x.to_str()
                        .unwrap()
                        .trim_end_matches(['\0', ' '])
                        .to_string()
                })
                .unwrap_or_default()
        };
        studies.insert(t(0x0020, 0x000D));
        seriess.insert(t(0x0020, 0x000E));
        frames.insert(t(0x0020, 0x0052));
        sops.insert(t(0x0008, 0x0018));
        dates.insert(t(0x0008, 0x0020));
        assert_eq!(format!("{}.dcm", t(0x0008, 0x0018)), *name);
        assert_eq!(t(0x0010, 0x0020), site_key().patient_id(b"PAT-889911"));
        assert_eq!(t(0x0028, 0x0303), "MODIFIED");
        // The referenced previous slice maps to that slice's new UID.
        let refd = obj
            .element(dicom_core::Tag(0x0008, 0x1140))
            .unwrap()
            .items()
            .unwrap()[0]
            .element(dicom_core::Tag(0x0008, 0x1155))
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string();
        assert!(refd.starts_with("2.25."));
        assert!(
            obj.element(dicom_core::Tag(0x0029, 0x0010)).is_err(),
            "private creator left"
        );
        assert!(obj
            .element(dicom_core::Tag(0x0010, 0x0030))
            .unwrap()
            .is_empty());
    }
    assert_eq!(studies.len(), 1);
    assert_eq!(seriess.len(), 1);
    assert_eq!(frames.len(), 1);
    assert_eq!(sops.len(), 12);
    assert_eq!(dates.len(), 1);
    assert!(!dates.contains("20240301"));
    // Every referenced UID is one of the series' new SOP Instance UIDs.
    for bytes in files.values() {
        let obj = read(bytes);
        let refd = obj
            .element(dicom_core::Tag(0x0008, 0x1140))
            .unwrap()
            .items()
            .unwrap()[0]
            .element(dicom_core::Tag(0x0008, 0x1155))
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string();
        assert!(sops.contains(&refd), "dangling reference {refd}");
    }
    // --check: the originals carry PHI (free text too); the outputs carry none.
    assert_eq!(cli(&["--check", s]), EXIT_FINDINGS);
    assert_eq!(cli(&["--check", o, "--against", s]), EXIT_OK);
    let orig = radguard_deid::part10::read_file(&series.join("slice0000.dcm"))
        .unwrap()
        .1;
    let p = radguard_deid::Profile::new(radguard_deid::ProfileName::Basic, []).unwrap();
    let f = radguard_deid::check::check_dataset(&orig, &p, None);
    let kinds: BTreeSet<_> = f.iter().map(|x| format!("{:?}", x.kind)).collect();
    for k in [
        "NotEmptied",
        "NotRemoved",
        "PrivateAttribute",
        "IdentifierInText",
        "NotMarked",
    ] {
        assert!(kinds.contains(k), "{k} not found in {kinds:?}");
    }
    assert!(f.iter().any(|x| x.path == "(0008,1030)"
        && x.kind == radguard_deid::check::FindingKind::IdentifierInText));
}

/// Explicit VR little endian element bytes.
fn ex(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], v: &[u8]) {
    out.extend_from_slice(&g.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"SQ" | b"OB" | b"UN" | b"UT" | b"OW") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(v);
}

fn ex_undef(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2]) {
    out.extend_from_slice(&g.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&[0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
}

fn delim(out: &mut Vec<u8>, e: u16, len: u32) {
    out.extend_from_slice(&0xFFFEu16.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn file_with(body: &[u8], sop: &str) -> Vec<u8> {
    let mut f = radguard_dicom::part10::write_head(CT_IMAGE, sop, EXPLICIT_LE);
    f.extend_from_slice(body);
    f
}

fn head(sop: &str) -> Vec<u8> {
    let mut b = Vec::new();
    ex(
        &mut b,
        0x0008,
        0x0016,
        b"UI",
        b"1.2.840.10008.5.1.4.1.1.2\0",
    );
    let mut s = sop.as_bytes().to_vec();
    if s.len() % 2 == 1 {
        s.push(0);
    }
    ex(&mut b, 0x0008, 0x0018, b"UI", &s);
    ex(&mut b, 0x0009, 0x0010, b"LO", b"VENDOR X");
    b
}

#[test]
fn bad_inputs_are_quarantined_never_half_written() {
    let tmp = tmpdir();
    let key = write_key(tmp.path());
    let inputs = tmp.path().join("in");
    std::fs::create_dir(&inputs).unwrap();

    // Well-formed private sequence with undefined lengths (items too): de-identified.
    let mut ok = head("1.2.3.100");
    ex_undef(&mut ok, 0x0009, 0x1010, b"SQ");
    delim(&mut ok, 0xE000, 0xFFFF_FFFF);
    ex(&mut ok, 0x0010, 0x0010, b"PN", b"HIDDEN^NAME ");
    delim(&mut ok, 0xE00D, 0);
    delim(&mut ok, 0xE0DD, 0);
    ex(&mut ok, 0x0010, 0x0010, b"PN", b"DOE^JOHN");
    std::fs::write(
        inputs.join("private-undefined-ok.dcm"),
        file_with(&ok, "1.2.3.100"),
    )
    .unwrap();

    // The same private sequence never closed (its item delimiter missing): truncated.
    let mut bad = head("1.2.3.101");
    ex_undef(&mut bad, 0x0009, 0x1010, b"SQ");
    delim(&mut bad, 0xE000, 0xFFFF_FFFF);
    ex(&mut bad, 0x0010, 0x0010, b"PN", b"HIDDEN^NAME ");
    std::fs::write(
        inputs.join("private-undefined-broken.dcm"),
        file_with(&bad, "1.2.3.101"),
    )
    .unwrap();

    // A nested item whose length overruns its sequence ((0040,A730) Content Sequence: after
    // head()'s private creator, so that the elements are in order and only the overrun is
    // wrong).
    let mut nested = head("1.2.3.102");
    ex(&mut nested, 0x0040, 0xA730, b"SQ", &{
        let mut s = Vec::new();
        delim(&mut s, 0xE000, 400);
        ex(&mut s, 0x0008, 0x1155, b"UI", b"1.2.3\0");
        s
    });
    std::fs::write(
        inputs.join("nested-item-overrun.dcm"),
        file_with(&nested, "1.2.3.102"),
    )
    .unwrap();

    // An unknown VR.
    let mut vr = head("1.2.3.103");
    ex(&mut vr, 0x0010, 0x0010, b"QQ", b"DOE^JOHN");
    std::fs::write(inputs.join("unknown-vr.dcm"), file_with(&vr, "1.2.3.103")).unwrap();

    // Not DICOM at all, and a DICOMDIR.
    std::fs::write(inputs.join("notes.txt"), b"patient John Doe").unwrap();
    std::fs::write(
        inputs.join("DICOMDIR"),
        file_with(&head("1.2.3.104"), "1.2.3.104"),
    )
    .unwrap();

    let out = tmp.path().join("out");
    let status = cli(&[
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ]);
    assert_eq!(status, EXIT_FINDINGS);
    no_partials(&out);
    let files = outputs(&out);
    assert_eq!(
        files.len(),
        1,
        "only the well-formed file is written: {:?}",
        files.keys()
    );
    let obj = read(files.values().next().unwrap());
    assert!(
        obj.element(dicom_core::Tag(0x0009, 0x1010)).is_err(),
        "private sequence removed"
    );
    assert!(
        obj.element(dicom_core::Tag(0x0009, 0x0010)).is_err(),
        "private creator removed"
    );
    let q = json_files(&out.join("quarantine"));
    let reason = |file: &str| -> String {
        q.iter()
            .find(|r| r["input"].as_str().unwrap().ends_with(&format!("/{file}")))
            .map(|r| r["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{file} not quarantined: {q:?}"))
    };
    assert!(
        reason("private-undefined-broken.dcm").contains("ends inside an element"),
        "{}",
        reason("private-undefined-broken.dcm")
    );
    assert!(
        reason("nested-item-overrun.dcm").contains("malformed"),
        "{}",
        reason("nested-item-overrun.dcm")
    );
    assert!(
        reason("unknown-vr.dcm").contains("unknown VR"),
        "{}",
        reason("unknown-vr.dcm")
    );
    assert!(reason("notes.txt").contains("not a DICOM Part 10"));
    assert!(reason("DICOMDIR").contains("DICOMDIR"));
    assert_eq!(q.len(), 5);
}

#[test]
fn never_writes_outside_the_output_folder() {
    let tmp = tmpdir();
    let key = write_key(tmp.path());
    let inputs = tmp.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    // With Retain UIDs a hostile SOP Instance UID survives; it must not become a path.
    let evil = "../../evil";
    let mut b = head(evil);
    ex(&mut b, 0x0010, 0x0010, b"PN", b"DOE^JOHN");
    std::fs::write(inputs.join("evil.dcm"), file_with(&b, evil)).unwrap();
    let out = tmp.path().join("out");
    // The output folder inside the input folder is not walked.
    let nested_out = inputs.join("out");
    for o in [&out, &nested_out] {
        let status = cli(&[
            inputs.to_str().unwrap(),
            "--out",
            o.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
            "--option",
            "retain-uids",
        ]);
        assert_eq!(status, EXIT_OK);
        let files = outputs(o);
        assert_eq!(files.len(), 1);
        let name = files.keys().next().unwrap();
        assert!(
            name.len() == 68 && name.ends_with(".dcm"),
            "named by SHA-256: {name}"
        );
    }
    assert!(!tmp.path().join("evil").exists());
    assert!(!tmp.path().join("evil.dcm").exists());
    // A second run over the input folder (which now holds out/) still sees one input.
    let status = cli(&[
        inputs.to_str().unwrap(),
        "--out",
        nested_out.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
        "--option",
        "retain-uids",
        "--json",
    ]);
    assert_eq!(status, EXIT_OK);
    assert_eq!(outputs(&nested_out).len(), 1);
}

#[test]
fn usage_errors() {
    let tmp = tmpdir();
    let out = tmp.path().join("o");
    // No key file: refused before anything is written.
    let r = run_cli(&["x", "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(EXIT_USAGE));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("--key-file"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!out.exists());
    let short = tmp.path().join("short.key");
    std::fs::write(&short, "short").unwrap();
    assert_eq!(
        cli(&[
            "/nonexistent",
            "--out",
            out.to_str().unwrap(),
            "--key-file",
            short.to_str().unwrap()
        ]),
        EXIT_USAGE
    );
    let key = write_key(tmp.path());
    assert_eq!(
        cli(&[
            tmp.path().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
            "--option",
            "clean-pixel-data"
        ]),
        EXIT_USAGE
    );
    assert!(!out.join("reports").exists() || outputs(&out).is_empty());
}
