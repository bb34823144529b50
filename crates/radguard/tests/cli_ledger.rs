//! `radguard verify` and `radguard ledger …` end to end, the real binary: instances are recorded
//! as the gateway does (data set streamed through a
//! Fingerprinter in P-DATA-sized chunks, appended to the ledger, stored in a real vault), then
//! copies are verified: benign re-encodings by DCMTK and pydicom, CT-GAN-like tampering,
//! lossy re-encoding, never-logged instances. Also the auditor commands and offline checks.

#[path = "../../radguard-ledger/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cli::{LedgerArgs, LedgerCommand, VerifyArgs};
use common::*;
use radguard_dicom::Uid;
use radguard_ledger::fingerprint::part10_data_set;
use radguard_ledger::{Fingerprinter, Ledger, LedgerEntry, Timestamp};
use radguard_vault::{StoreOutcome, Vault};
use serde_json::Value;

/// The command lines of `radguard verify` and `radguard ledger …`, run as the real binary.
mod cli {
    use std::path::PathBuf;
    use std::process::Command;

    /// Exit code: every file verified, nothing altered.
    pub const EXIT_OK: i32 = 0;
    /// Exit code: at least one file is altered.
    pub const EXIT_ALTERED: i32 = 1;
    /// Exit code: errors (unreadable files, a ledger that does not check out, bad arguments).
    pub const EXIT_ERROR: i32 = 2;

    /// `radguard verify` arguments.
    pub struct VerifyArgs {
        pub paths: Vec<PathBuf>,
        pub ledgers: Vec<PathBuf>,
        pub keys: Vec<String>,
        pub vault: Option<PathBuf>,
        pub json: bool,
        pub jobs: Option<usize>,
    }

    /// `radguard ledger …` arguments.
    pub struct LedgerArgs {
        pub command: LedgerCommand,
    }

    pub enum LedgerCommand {
        Checkpoint {
            ledger: PathBuf,
        },
        Prove {
            ledger: PathBuf,
            uid: Option<String>,
            index: Option<u64>,
            file: Option<PathBuf>,
        },
        Consistency {
            ledger: PathBuf,
            from: Option<PathBuf>,
            from_size: Option<u64>,
        },
        Check {
            bundle: PathBuf,
            key: String,
            file: Option<PathBuf>,
            old_checkpoint: Option<PathBuf>,
            json: bool,
        },
        Record {
            ledger: PathBuf,
            origin: Option<String>,
            gateway_id: String,
            paths: Vec<PathBuf>,
        },
        ExportKey {
            ledger: PathBuf,
        },
    }

    fn path(p: &std::path::Path) -> String {
        p.display().to_string()
    }

    /// Runs the binary; its stdout goes to `out` (stderr is passed through for the test log).
    fn run(argv: Vec<String>, out: &mut Vec<u8>) -> i32 {
        let o = Command::new(env!("CARGO_BIN_EXE_radguard"))
            .args(&argv)
            .output()
            .expect("run radguard");
        eprint!("{}", String::from_utf8_lossy(&o.stderr));
        out.extend_from_slice(&o.stdout);
        o.status.code().expect("exit code")
    }

    pub fn run_verify_with(args: &VerifyArgs, out: &mut Vec<u8>) -> i32 {
        let mut argv = vec!["verify".to_string()];
        for l in &args.ledgers {
            argv.extend(["--ledger".into(), path(l)]);
        }
        for k in &args.keys {
            argv.extend(["--key".into(), k.clone()]);
        }
        if let Some(v) = &args.vault {
            argv.extend(["--vault".into(), path(v)]);
        }
        if args.json {
            argv.push("--json".into());
        }
        if let Some(j) = args.jobs {
            argv.extend(["-j".into(), j.to_string()]);
        }
        argv.push("--".into());
        argv.extend(args.paths.iter().map(|p| path(p)));
        run(argv, out)
    }

    pub fn run_ledger_with(args: &LedgerArgs, out: &mut Vec<u8>) -> i32 {
        let mut argv = vec!["ledger".to_string()];
        let opt = |argv: &mut Vec<String>, flag: &str, v: Option<String>| {
            if let Some(v) = v {
                argv.extend([flag.to_string(), v]);
            }
        };
        match &args.command {
            LedgerCommand::Checkpoint { ledger } => {
                argv.extend(["checkpoint".into(), "--ledger".into(), path(ledger)]);
            }
            LedgerCommand::ExportKey { ledger } => {
                argv.extend(["export-key".into(), "--ledger".into(), path(ledger)]);
            }
            LedgerCommand::Prove {
                ledger,
                uid,
                index,
                file,
            } => {
                argv.extend(["prove".into(), "--ledger".into(), path(ledger)]);
                opt(&mut argv, "--uid", uid.clone());
                opt(&mut argv, "--index", index.map(|i| i.to_string()));
                opt(&mut argv, "--file", file.as_deref().map(path));
            }
            LedgerCommand::Consistency {
                ledger,
                from,
                from_size,
            } => {
                argv.extend(["consistency".into(), "--ledger".into(), path(ledger)]);
                opt(&mut argv, "--from", from.as_deref().map(path));
                opt(&mut argv, "--from-size", from_size.map(|n| n.to_string()));
            }
            LedgerCommand::Check {
                bundle,
                key,
                file,
                old_checkpoint,
                json,
            } => {
                argv.extend(["check".into(), path(bundle), "--key".into(), key.clone()]);
                opt(&mut argv, "--file", file.as_deref().map(path));
                opt(
                    &mut argv,
                    "--old-checkpoint",
                    old_checkpoint.as_deref().map(path),
                );
                if *json {
                    argv.push("--json".into());
                }
            }
            LedgerCommand::Record {
                ledger,
                origin,
                gateway_id,
                paths,
            } => {
                argv.extend(["record".into(), "--ledger".into(), path(ledger)]);
                opt(&mut argv, "--origin", origin.clone());
                argv.extend(["--gateway-id".into(), gateway_id.clone(), "--".into()]);
                argv.extend(paths.iter().map(|p| path(p)));
            }
        }
        run(argv, out)
    }
}

const ORIGIN: &str = "radguard.test/ledger/ct-gw1";
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ledger: PathBuf,
    vault: PathBuf,
    /// The originals as the scanner sent them: signed 16-bit, 6 slices.
    ct: Vec<PathBuf>,
    /// Unsigned 12-bit, 2 slices (lossy JPEG needs ≤ 12 bits).
    ct12: Vec<PathBuf>,
}

/// What the gateway does for a C-STORE on an origin route.
fn record(ledger: &Ledger, vault: &Vault, file: &Path, assoc: &str) {
    let bytes = std::fs::read(file).expect("read");
    let (ts, start) = part10_data_set(&bytes).expect("part 10");
    let data_set = &bytes[start..];
    let mut fp = Fingerprinter::new(&ts).expect("transfer syntax");
    let uid = {
        let f = radguard_ledger::fingerprint_file(file).expect("fingerprint");
        f.sop_instance_uid.expect("uid")
    };
    let mut pending = vault
        .begin(
            &Uid::new(CT_IMAGE_STORAGE).expect("uid"),
            &Uid::new(&uid).expect("uid"),
            &Uid::new(&ts).expect("uid"),
            "CT01",
        )
        .expect("vault");
    // P-DATA-sized pieces, as the relay sees them.
    for chunk in data_set.chunks(16_372) {
        fp.feed(chunk);
        pending.write_chunk(chunk).expect("vault write");
    }
    let fingerprint = fp.finish().expect("fingerprint");
    let out = ledger
        .append(LedgerEntry {
            fingerprint,
            sop_instance_uid: uid,
            time: Timestamp::now(),
            gateway_id: "ct-gw1".into(),
            assoc_id: assoc.into(),
        })
        .expect("append");
    assert!(out.appended && out.conflict.is_none());
    assert!(matches!(
        pending.commit().expect("commit"),
        StoreOutcome::Stored(_)
    ));
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let ct = series(
            &root.join("scanner/ct"),
            &["--slices", "6", "--rows", "64", "--cols", "64"],
        );
        let ct12 = series(
            &root.join("scanner/ct12"),
            &[
                "--slices",
                "2",
                "--rows",
                "48",
                "--cols",
                "48",
                "--bits-stored",
                "12",
                "--signed",
                "0",
                "--seed",
                "5",
            ],
        );
        let ledger_dir = root.join("data/ledger");
        let vault_dir = root.join("data/vault");
        let ledger = Ledger::open(&ledger_dir, ORIGIN).expect("ledger");
        let vault = Vault::open(&vault_dir).expect("vault");
        for (i, f) in ct.iter().chain(&ct12).enumerate() {
            record(&ledger, &vault, f, &format!("assoc-{}", i / 4));
        }
        Site {
            _dir: dir,
            root,
            ledger: ledger_dir,
            vault: vault_dir,
            ct,
            ct12,
        }
    })
}

fn scratch(name: &str) -> PathBuf {
    let d = site().root.join("copies").join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn verify_args(paths: Vec<PathBuf>) -> VerifyArgs {
    VerifyArgs {
        paths,
        ledgers: vec![site().ledger.clone()],
        keys: Vec::new(),
        vault: Some(site().vault.clone()),
        json: true,
        jobs: Some(2),
    }
}

/// Runs `verify --json`: (exit code, results by file name).
fn verify(args: &VerifyArgs) -> (i32, Vec<Value>) {
    let mut out = Vec::new();
    let code = cli::run_verify_with(args, &mut out);
    let doc: Value = serde_json::from_slice(&out).expect("JSON output");
    let results = doc["results"].as_array().expect("results").clone();
    (code, results)
}

fn verdicts(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["verdict"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn originals_verify_unchanged_with_a_checked_proof() {
    let s = site();
    let (code, results) = verify(&verify_args(vec![s.root.join("scanner")]));
    assert_eq!(code, cli::EXIT_OK);
    assert_eq!(results.len(), 8);
    for r in &results {
        assert_eq!(r["verdict"], "unchanged", "{r}");
        assert_eq!(r["ledger"]["origin"], ORIGIN);
        assert_eq!(r["ledger"]["checkpoint_size"], 8);
        assert_eq!(r["ledger"]["gateway_id"], "ct-gw1");
    }
    // Text output names the entry and the checkpoint.
    let mut args = verify_args(vec![s.ct[0].clone()]);
    args.json = false;
    let mut out = Vec::new();
    assert_eq!(cli::run_verify_with(&args, &mut out), cli::EXIT_OK);
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.starts_with("unchanged "), "{text}");
    assert!(
        text.contains("entry 0 in radguard.test/ledger/ct-gw1 (proven in checkpoint 8)"),
        "{text}"
    );
}

#[test]
fn benign_reencodings_verify_unchanged() {
    let s = site();
    let conversions: &[(&str, &str, &[&str])] = &[
        ("implicit", "dcmconv", &["+ti"]),
        ("rle", "dcmcrle", &[]),
        ("jpegls", "dcmcjpls", &[]),
        ("jpeg-sv1", "dcmcjpeg", &["+e1"]),
        ("deflated", "dcmconv", &["+td"]),
    ];
    let mut dirs = Vec::new();
    for (label, tool, args) in conversions {
        let dir = scratch(&format!("benign-{label}"));
        for (i, src) in s.ct.iter().chain(&s.ct12).enumerate() {
            dcmtk(tool, args, src, &dir.join(format!("copy{i}.dcm")));
        }
        dirs.push(dir);
    }
    let dir = scratch("benign-pydicom");
    for (i, src) in s.ct.iter().enumerate() {
        ctdata_paths(
            &["rewrite", "--private"],
            &[src, &dir.join(format!("rewritten{i}.dcm"))],
        );
    }
    dirs.push(dir);
    let (code, results) = verify(&verify_args(dirs));
    assert_eq!(results.len(), conversions.len() * 8 + 6);
    for r in &results {
        assert_eq!(r["verdict"], "unchanged", "{r}");
    }
    assert_eq!(code, cli::EXIT_OK);
}

#[test]
fn ct_gan_tampering_is_altered_with_the_region_or_attribute() {
    let s = site();
    let dir = scratch("tampered");
    // Raise a 24×24 region by 300 HU in three adjacent slices (an injected nodule).
    let mut paths = Vec::new();
    for i in 1..=3 {
        let out = dir.join(format!("raised{i}.dcm"));
        ctdata_paths(
            &[
                "tamper", "--mode", "raise", "--x", "20", "--y", "16", "--size", "24", "--delta",
                "300",
            ],
            &[&s.ct[i], &out],
        );
        paths.push(out);
    }
    // Flatten a region (a removed nodule) and change the Patient ID.
    let flat = dir.join("flattened.dcm");
    ctdata_paths(
        &[
            "tamper", "--mode", "flatten", "--x", "30", "--y", "30", "--size", "24",
        ],
        &[&s.ct[4], &flat],
    );
    let pid = dir.join("pid.dcm");
    ctdata_paths(&["tamper", "--mode", "patient-id"], &[&s.ct[5], &pid]);
    paths.extend([flat, pid, s.ct[0].clone()]);

    let (code, results) = verify(&verify_args(paths));
    assert_eq!(code, cli::EXIT_ALTERED);
    assert_eq!(
        verdicts(&results),
        [
            "altered",
            "altered",
            "altered",
            "altered",
            "altered",
            "unchanged"
        ]
    );
    for r in &results[..3] {
        assert_eq!(r["pixels_differ"], true, "{r}");
        assert!(r.get("changed_attributes").is_none(), "{r}");
        let regions = r["regions"]
            .as_array()
            .expect("regions from the vault original");
        assert_eq!(regions.len(), 1, "{r}");
        let g = &regions[0];
        assert_eq!(
            (
                &g["frame"],
                &g["x_min"],
                &g["y_min"],
                &g["x_max"],
                &g["y_max"]
            ),
            (
                &Value::from(1),
                &Value::from(20),
                &Value::from(16),
                &Value::from(43),
                &Value::from(39)
            ),
            "{r}"
        );
        assert_eq!(g["changed_pixels"], 576);
        assert_eq!(g["max_abs_diff"], 300);
    }
    let flat = &results[3];
    let g = &flat["regions"][0];
    for (k, lo, hi) in [
        ("x_min", 30, 53),
        ("x_max", 30, 53),
        ("y_min", 30, 53),
        ("y_max", 30, 53),
    ] {
        let v = g[k].as_u64().expect("number");
        assert!((lo..=hi).contains(&v), "{k} = {v}: {flat}");
    }
    assert!(g["changed_pixels"].as_u64().expect("n") > 500, "{flat}");
    let pid = &results[4];
    assert_eq!(pid["changed_attributes"], serde_json::json!(["PatientID"]));
    assert_eq!(pid["pixels_differ"], false);

    // Without the vault: still altered, no regions.
    let mut args = verify_args(vec![dir.join("raised1.dcm")]);
    args.vault = None;
    let (code, results) = verify(&args);
    assert_eq!(code, cli::EXIT_ALTERED);
    assert_eq!(results[0]["pixels_differ"], true);
    assert!(results[0].get("regions").is_none());
}

#[test]
fn lossy_unknown_and_unreadable() {
    let s = site();
    let dir = scratch("lossy");
    let lossy = dir.join("lossy.dcm");
    dcmtk("dcmcjpeg", &["+ee", "+un"], &s.ct12[0], &lossy);
    let other = series(&scratch("never-logged"), &["--slices", "1", "--seed", "77"]);
    let junk = dir.join("junk.dcm");
    let mut bytes = std::fs::read(&s.ct[0]).expect("read");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&junk, bytes).expect("write");
    let (code, results) = verify(&verify_args(vec![lossy, other[0].clone(), junk]));
    assert_eq!(verdicts(&results), ["lossy-reencoded", "unknown", "error"]);
    assert_eq!(code, cli::EXIT_ERROR, "errors but nothing altered");
    assert!(results[0]["detail"]
        .as_str()
        .expect("detail")
        .contains("lossy"));
}

#[test]
fn a_pinned_key_from_elsewhere_refuses_the_ledger() {
    let s = site();
    let stranger = radguard_ledger::note::SignerKey::from_seed(ORIGIN, [1; 32]).expect("key");
    let mut args = verify_args(vec![s.ct[0].clone()]);
    args.keys = vec![stranger.verifier().to_string()];
    let mut out = Vec::new();
    assert_eq!(cli::run_verify_with(&args, &mut out), cli::EXIT_ERROR);
    // The right key, given as a file, works.
    args.keys = vec![s.ledger.join("verifier.key").display().to_string()];
    let (code, results) = verify(&args);
    assert_eq!(
        (code, verdicts(&results)),
        (cli::EXIT_OK, vec!["unchanged".to_string()])
    );
}

fn ledger_cmd(command: LedgerCommand) -> (i32, String) {
    let mut out = Vec::new();
    let code = cli::run_ledger_with(&LedgerArgs { command }, &mut out);
    (code, String::from_utf8(out).expect("utf-8"))
}

#[test]
fn auditors_check_proofs_offline_with_the_public_key() {
    let s = site();
    let dir = scratch("audit");
    let (code, key) = ledger_cmd(LedgerCommand::ExportKey {
        ledger: s.ledger.clone(),
    });
    assert_eq!(code, 0);
    let key = key.trim().to_string();
    assert!(key.starts_with(&format!("{ORIGIN}+")));

    // Inclusion: prove slice 3 by its file, check it offline against the file.
    let (code, bundle) = ledger_cmd(LedgerCommand::Prove {
        ledger: s.ledger.clone(),
        uid: None,
        index: None,
        file: Some(s.ct[2].clone()),
    });
    assert_eq!(code, 0);
    let bundle_path = dir.join("inclusion.json");
    std::fs::write(&bundle_path, &bundle).expect("write");
    let check = |bundle: &Path, file: Option<PathBuf>| {
        ledger_cmd(LedgerCommand::Check {
            bundle: bundle.to_path_buf(),
            key: key.clone(),
            file,
            old_checkpoint: None,
            json: false,
        })
    };
    let (code, text) = check(&bundle_path, Some(s.ct[2].clone()));
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK entry 2 "), "{text}");
    // The bundle does not vouch for another file, or a tampered one.
    let tampered = dir.join("pid.dcm");
    ctdata_paths(&["tamper", "--mode", "patient-id"], &[&s.ct[2], &tampered]);
    assert_eq!(check(&bundle_path, Some(tampered)).0, cli::EXIT_ALTERED);
    assert_eq!(
        check(&bundle_path, Some(s.ct[3].clone())).0,
        cli::EXIT_ALTERED
    );
    // Tampered bundles are rejected.
    let v: Value = serde_json::from_str(&bundle).expect("json");
    let mut forged = v.clone();
    forged["index"] = Value::from(3);
    let forged_path = dir.join("forged-index.json");
    std::fs::write(&forged_path, forged.to_string()).expect("write");
    assert_eq!(check(&forged_path, None).0, cli::EXIT_ALTERED);
    let mut forged = v.clone();
    let first = forged["proof"][0].as_str().expect("hash").to_string();
    forged["proof"][0] = Value::from(first.replacen(&first[..4], "AAAA", 1));
    std::fs::write(&forged_path, forged.to_string()).expect("write");
    assert_eq!(check(&forged_path, None).0, cli::EXIT_ALTERED);
    let mut forged = v;
    forged["checkpoint"] = Value::from(
        forged["checkpoint"]
            .as_str()
            .expect("note")
            .replacen("\n8\n", "\n9\n", 1),
    );
    std::fs::write(&forged_path, forged.to_string()).expect("write");
    assert_eq!(check(&forged_path, None).0, cli::EXIT_ALTERED);

    // Consistency: a checkpoint now, more appends, then the proof that the log only grew.
    let scratch_ledger = dir.join("ledger-copy");
    let l = Ledger::open(&scratch_ledger, "radguard.test/ledger/audit").expect("ledger");
    let vault = Vault::open(&dir.join("vault-copy")).expect("vault");
    for f in &s.ct[..3] {
        record(&l, &vault, f, "a1");
    }
    drop(l);
    let (code, old) = ledger_cmd(LedgerCommand::Checkpoint {
        ledger: scratch_ledger.clone(),
    });
    assert_eq!(code, 0);
    let old_path = dir.join("old.checkpoint");
    std::fs::write(&old_path, &old).expect("write");
    let l = Ledger::open_existing(&scratch_ledger).expect("ledger");
    for f in &s.ct[3..] {
        record(&l, &vault, f, "a2");
    }
    drop(l);
    let (code, bundle) = ledger_cmd(LedgerCommand::Consistency {
        ledger: scratch_ledger.clone(),
        from: Some(old_path.clone()),
        from_size: None,
    });
    assert_eq!(code, 0);
    let audit_key = std::fs::read_to_string(scratch_ledger.join("verifier.key")).expect("key");
    let cons = dir.join("consistency.json");
    std::fs::write(&cons, &bundle).expect("write");
    let (code, text) = ledger_cmd(LedgerCommand::Check {
        bundle: cons.clone(),
        key: audit_key.trim().to_string(),
        file: None,
        old_checkpoint: Some(old_path),
        json: false,
    });
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("at tree size 6 extends the checkpoint at tree size 3"),
        "{text}"
    );
    // The same request by size finds the issued checkpoint.
    let (code, _) = ledger_cmd(LedgerCommand::Consistency {
        ledger: scratch_ledger,
        from: None,
        from_size: Some(3),
    });
    assert_eq!(code, 0);
    // A bundle checked with the wrong log's key is invalid.
    let (code, _) = ledger_cmd(LedgerCommand::Check {
        bundle: cons,
        key,
        file: None,
        old_checkpoint: None,
        json: true,
    });
    assert_eq!(code, cli::EXIT_ALTERED);
}

#[test]
fn record_imports_originals_and_reports_conflicts() {
    let dir = scratch("record");
    let originals = series(&dir.join("originals"), &["--slices", "2", "--seed", "91"]);
    let ledger = dir.join("ledger");
    let record = |paths: Vec<PathBuf>, origin: Option<&str>| {
        ledger_cmd(LedgerCommand::Record {
            ledger: ledger.clone(),
            origin: origin.map(str::to_string),
            gateway_id: "import".into(),
            paths,
        })
    };
    let (code, text) = record(
        vec![dir.join("originals")],
        Some("radguard.test/ledger/import"),
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("2 recorded, 0 already logged, 0 conflicts, 0 errors; log size 2"),
        "{text}"
    );
    // Again: nothing new. A tampered copy of a recorded UID: a conflict, exit 1.
    let tampered = dir.join("tampered.dcm");
    ctdata_paths(&["tamper", "--mode", "raise"], &[&originals[0], &tampered]);
    let (code, text) = record(vec![originals[1].clone(), tampered.clone()], None);
    assert_eq!(code, cli::EXIT_ALTERED, "{text}");
    assert!(
        text.contains("0 recorded, 1 already logged, 1 conflicts, 0 errors; log size 2"),
        "{text}"
    );
    let mut args = verify_args(vec![dir.join("originals"), tampered]);
    args.ledgers = vec![ledger];
    args.vault = None;
    let (code, results) = verify(&args);
    assert_eq!(code, cli::EXIT_ALTERED);
    assert_eq!(verdicts(&results), ["unchanged", "unchanged", "altered"]);
}
