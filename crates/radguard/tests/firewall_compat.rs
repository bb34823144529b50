//! The data-set firewall against real data and a real malformed upstream.
//!
//! 1. Compatibility: every file of the grammar corpus (`scripts/make-grammar-corpus.sh`:
//!    generated data, pydicom's sample files, DCMTK re-encodings in every transfer syntax the
//!    project handles) and of `common::test_data()` is sent by DCMTK storescu, one association
//!    per file, once straight to a storescp (the baseline: what storescu can send and the exact
//!    bytes it sends) and once through a relay route at the default firewall level (`safe`) to a
//!    second storescp. Every file storescu could send must get success through the gateway and
//!    arrive with the SOP Instance UID sent and the same data set bytes as the baseline. Files
//!    storescu itself cannot send are skipped with storescu's reason; deliberately malformed
//!    corpus files are listed in [`DELIBERATELY_MALFORMED`] with the check that must refuse them.
//! 2. A C-FIND upstream (`tests/py/bad_find_scp.py`) whose second pending answer repeats an
//!    element: the client gets the first answer, then 0xC000 with the firewall's Error Comment,
//!    never the malformed identifier nor the third answer; the upstream gets a C-CANCEL-RQ.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use radguard_dicom::limits::Limits;
use radguard_dicom::part10;
use radguard_dicom::ts::TransferSyntax;
use radguard_dicom::validate::{Level, Validator};
use serde_json::Value;

/// The calling AE title of every client here.
const CLIENT: &str = "FW_SCU";

/// Corpus files whose data set, as storescu sends it, really violates PS3.5 in a way `safe`
/// refuses by design: (path in the corpus, the check that refuses them, why). They are still
/// sent; each must be refused with exactly this check (0xC000 from the gateway and a
/// malformed-data-set alert naming it). One that passes makes the test fail: remove it here.
/// Nothing else may be refused: a refusal of a valid file is a firewall bug, not an entry here.
const DELIBERATELY_MALFORMED: &[(&str, &str, &str)] = &[
    // pydicom's deliberately broken file: rtdose.dcm with (0028,0008) Number of Frames the IS
    // value "1A", from which no parser can tell how many frames the pixel data holds. (Its
    // Referenced SOP Instance UID with a leading-zero component, shared with rtdose.dcm, is a
    // deviation `safe` tolerates.)
    (
        "pydicom/badVR.dcm",
        "image-attribute",
        "(0028,0008) Number of Frames \"1A\" is not a number",
    ),
];

// ------------------------------------------------------------------------------- the corpus

/// The grammar corpus, built once per test binary into `target/grammar-corpus` (the script is
/// idempotent and serialises concurrent runs; crates/radguard-dicom/tests/differential.rs
/// builds the same directory).
fn corpus() -> &'static (PathBuf, Vec<String>) {
    static CORPUS: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    CORPUS.get_or_init(|| {
        for tool in ["dcmconv", "dcmcrle", "dcmcjpeg", "dcmcjpls", "dcmdump"] {
            require_tool(&format!("{DCMTK_BIN}/{tool}"));
        }
        let dir = target_dir().join("grammar-corpus");
        let mut cmd = Command::new("bash");
        cmd.arg(project_root().join("scripts/make-grammar-corpus.sh"))
            .arg(&dir)
            .env("RADGUARD_TEST_PYTHON", venv_python());
        let out = run(&mut cmd, Duration::from_secs(900));
        assert!(
            out.success(),
            "scripts/make-grammar-corpus.sh failed:\n{}",
            out.text()
        );
        let list = fs::read_to_string(dir.join("FILES.txt")).expect("FILES.txt");
        let files: Vec<String> = list.lines().map(str::to_string).collect();
        assert!(files.len() > 100, "corpus too small: {} files", files.len());
        (dir, files)
    })
}

/// What DCMTK (so storescu) reads in a file: meta SOP class/instance and transfer syntax, the
/// data set's SOP class/instance.
#[derive(Debug, Default, Clone)]
struct Facts {
    meta_sop_class: Option<String>,
    meta_sop_instance: Option<String>,
    transfer_syntax: Option<String>,
    sop_class: Option<String>,
    sop_instance: Option<String>,
}

impl Facts {
    /// The SOP class storescu proposes (it looks in the meta header first).
    fn storescu_sop_class(&self) -> Option<&str> {
        self.meta_sop_class.as_deref().or(self.sop_class.as_deref())
    }
}

fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// One `dcmdump` run over all files: `+F` names each file, `+P` prints the searched tags.
fn dcmtk_facts(files: &[PathBuf]) -> Vec<Facts> {
    let mut args: Vec<std::ffi::OsString> = ["-q", "-Un", "+F"].iter().map(Into::into).collect();
    for tag in [
        "0002,0002",
        "0002,0003",
        "0002,0010",
        "0008,0016",
        "0008,0018",
    ] {
        args.push("+P".into());
        args.push(tag.into());
    }
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    // dcmdump exits non-zero when some file cannot be read; those simply have no facts.
    let out = dcmtk("dcmdump", &args);
    assert!(!out.timed_out, "dcmdump timed out:\n{}", out.text());
    let mut facts = vec![Facts::default(); files.len()];
    let mut current: Option<usize> = None;
    for line in out.stdout.lines() {
        if let Some(rest) = line.strip_prefix("# dcmdump (") {
            // "# dcmdump (3/309): PATH"
            current = rest
                .split('/')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1));
            continue;
        }
        let Some(i) = current else { continue };
        let value = match (line.find('['), line.find(']')) {
            (Some(a), Some(b)) if b > a => line[a + 1..b].trim_end_matches(['\0', ' ']).to_string(),
            _ => continue,
        };
        if !is_uid(&value) {
            continue;
        }
        let f = &mut facts[i];
        let slot = match line.get(..11) {
            Some("(0002,0002)") => &mut f.meta_sop_class,
            Some("(0002,0003)") => &mut f.meta_sop_instance,
            Some("(0002,0010)") => &mut f.transfer_syntax,
            Some("(0008,0016)") => &mut f.sop_class,
            Some("(0008,0018)") => &mut f.sop_instance,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    facts
}

/// A storescp association profile (`-xf FILE Accept`) accepting every SOP class of the corpus
/// in every transfer syntax of the corpus (storescp's `+xa` lacks e.g. JPEG Lossless process 14).
fn storescp_config(facts: &[Facts]) -> String {
    let mut ts: BTreeSet<&str> = [
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.2",
    ]
    .into_iter()
    .collect();
    let mut classes: BTreeSet<&str> = BTreeSet::new();
    for f in facts {
        ts.extend(f.transfer_syntax.as_deref());
        classes.extend(f.meta_sop_class.as_deref());
        classes.extend(f.sop_class.as_deref());
    }
    classes.insert(uid::VERIFICATION);
    let mut s = String::from("[[TransferSyntaxes]]\n[Any]\n");
    for (i, t) in ts.iter().enumerate() {
        let _ = writeln!(s, "TransferSyntax{} = {t}", i + 1);
    }
    s.push_str("[[PresentationContexts]]\n[Accept]\n");
    for (i, c) in classes.iter().enumerate() {
        let _ = writeln!(s, "PresentationContext{} = {c}\\Any", i + 1);
    }
    s.push_str("[[Profiles]]\n[Accept]\nPresentationContexts = Accept\n");
    s
}

/// storescu options for one file: exactly its SOP class in exactly its transfer syntax (a
/// generated `-xf` profile; so nothing is converted) when the meta says both, else `-R`
/// (the SOP class storescu finds, uncompressed transfer syntaxes: files without meta).
fn storescu_options(f: &Facts, cfg_dir: &Path, i: usize) -> Vec<String> {
    match (f.storescu_sop_class(), f.transfer_syntax.as_deref()) {
        (Some(class), Some(ts)) => {
            let cfg = cfg_dir.join(format!("send-{i:04}.cfg"));
            let text = format!(
                "[[TransferSyntaxes]]\n[File]\nTransferSyntax1 = {ts}\n\
                 [[PresentationContexts]]\n[Send]\nPresentationContext1 = {class}\\File\n\
                 [[Profiles]]\n[Send]\nPresentationContexts = Send\n"
            );
            fs::write(&cfg, text).expect("write storescu profile");
            vec!["-xf".into(), cfg.display().to_string(), "Send".into()]
        }
        _ => vec!["-R".into()],
    }
}

// --------------------------------------------------------------------------- file helpers

/// The data set bytes of a Part 10 file (after its meta group) and its meta.
fn dataset_of(file: &Path) -> Result<(part10::FileMeta, Vec<u8>), String> {
    let bytes = fs::read(file).map_err(|e| format!("read {}: {e}", file.display()))?;
    let head = part10::read_head(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let data = bytes.get(head.data_start..).unwrap_or_default().to_vec();
    Ok((head.meta, data))
}

/// What the firewall's checks say, offline, about a received file at level `safe`.
fn offline_verdict(file: &Path) -> String {
    let (meta, data) = match dataset_of(file) {
        Ok(x) => x,
        Err(e) => return format!("offline check impossible: {e}"),
    };
    let Some(ts_uid) = meta.transfer_syntax_uid else {
        return "offline check impossible: no transfer syntax in the meta".into();
    };
    let ts = match TransferSyntax::from_uid(&ts_uid) {
        Ok(t) => t,
        Err(e) => return format!("offline check impossible: transfer syntax {ts_uid}: {e}"),
    };
    let outcome = |level: Level| {
        let mut v = Validator::new(&ts, Limits::GATEWAY, level);
        v.feed(&data);
        v.finish()
    };
    // `safe` stops at its first refusal; `log` lists every deviation (bounded).
    let refusal = outcome(Level::Safe).refusal;
    let found: Vec<String> = outcome(Level::Log)
        .found
        .iter()
        .map(ToString::to_string)
        .collect();
    match refusal {
        Some(r) => format!("offline (safe): REFUSED: {r}; every deviation: {found:?}"),
        None if found.is_empty() => "offline (safe): passes, nothing found".into(),
        None => format!("offline (safe): passes, tolerated: {found:?}"),
    }
}

/// "Converting transfer syntax: A -> B" with A != B: storescu re-encoded the data set.
fn converted_by_storescu(out: &Output) -> Option<String> {
    out.all().lines().find_map(|l| {
        let rest = l.split("Converting transfer syntax: ").nth(1)?;
        let (a, b) = rest.split_once(" -> ")?;
        (a.trim() != b.trim()).then(|| rest.trim().to_string())
    })
}

/// The files of `dir` not in `seen` (and adds them to it).
fn new_files(dir: &Path, seen: &mut BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let now = files_under(dir, "");
    let fresh: Vec<PathBuf> = now.iter().filter(|p| !seen.contains(*p)).cloned().collect();
    seen.extend(fresh.iter().cloned());
    fresh
}

/// storescu's own account of a run: its errors, warnings and store responses.
fn storescu_summary(out: &Output) -> String {
    let all = out.all();
    let lines: Vec<&str> = all
        .lines()
        .filter(|l| {
            l.starts_with("F:")
                || l.starts_with("E:")
                || l.starts_with("W:")
                || l.contains("Store Response")
                || l.contains("Converting transfer syntax")
        })
        .collect();
    format!("exit {:?}: {}", out.code, lines.join(" | "))
}

/// radguard's stderr (the event log) — its path from the headers of `Radguard::log`.
fn radguard_err_path(rg: &Radguard) -> PathBuf {
    rg.log()
        .lines()
        .find_map(|l| {
            l.strip_prefix("--- ")
                .and_then(|r| r.strip_suffix(" ---"))
                .filter(|p| p.ends_with("radguard.err"))
                .map(PathBuf::from)
        })
        .expect("radguard.err in the log headers")
}

fn file_len(p: &Path) -> usize {
    fs::metadata(p).map(|m| m.len() as usize).unwrap_or(0)
}

/// Events radguard logged after byte `from` of its stderr.
fn events_since(err: &Path, from: usize) -> Vec<Value> {
    let bytes = fs::read(err).unwrap_or_default();
    let tail = String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).into_owned();
    parse_events(&tail)
}

fn malformed_alerts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "security-alert" && e["kind"] == "malformed-data-set")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The gateway's account of a run: malformed-data-set alerts, refusals, aborts.
fn gateway_summary(events: &[Value]) -> String {
    let mut parts = Vec::new();
    for e in events {
        match e["event"].as_str() {
            Some("security-alert") => parts.push(format!(
                "security-alert {}: {}",
                e["kind"].as_str().unwrap_or("?"),
                e["detail"].as_str().unwrap_or("?")
            )),
            Some("dimse-refused") => parts.push(format!(
                "dimse-refused status {} ({})",
                e["status"],
                e["why"].as_str().unwrap_or("?")
            )),
            Some(k) if k.contains("abort") => parts.push(format!("{k}: {e}")),
            _ => {}
        }
    }
    if parts.is_empty() {
        "no alert, refusal or abort".into()
    } else {
        parts.join(" | ")
    }
}

// ------------------------------------------------------------------------------ test 1

enum Outcome {
    /// storescu could not send it even straight to storescp: its reason.
    Skipped(String),
    Passed,
    /// Listed in DELIBERATELY_MALFORMED and refused as listed.
    RefusedAsListed(String),
    Failed(String),
}

#[test]
fn every_corpus_file_storescu_can_send_passes_the_safe_firewall() {
    let started = Instant::now();
    let (corpus_dir, corpus_files) = corpus();
    let data = test_data();

    // Labels (for the report) and paths: the corpus, then the test data.
    let mut items: Vec<(String, PathBuf)> = corpus_files
        .iter()
        .map(|rel| (rel.clone(), corpus_dir.join(rel)))
        .collect();
    for p in files_under(&data.dir, ".dcm") {
        let rel = p
            .strip_prefix(&data.dir)
            .unwrap_or(&p)
            .display()
            .to_string();
        items.push((format!("test-data/{rel}"), p));
    }
    for (listed, _, _) in DELIBERATELY_MALFORMED {
        assert!(
            items.iter().any(|(l, _)| l == listed),
            "DELIBERATELY_MALFORMED lists {listed}, which is not in the corpus"
        );
    }
    let paths: Vec<PathBuf> = items.iter().map(|(_, p)| p.clone()).collect();
    let facts = dcmtk_facts(&paths);

    let tmp = tmp_dir("fw-compat");
    let scp_cfg = tmp.path().join("storescp.cfg");
    fs::write(&scp_cfg, storescp_config(&facts)).expect("write storescp.cfg");
    let scp_args = ["-xf", scp_cfg.to_str().unwrap(), "Accept", "+uf"];
    let direct = StoreScp::start_with("DIRECT", &scp_args);
    let relayed = StoreScp::start_with("ARCHIVE", &scp_args);
    let cfg = Config::new().open_peer("lab", &[CLIENT], &["RECV"]).route(
        "ARCHIVE",
        relayed.port,
        "ARCHIVE",
    );
    let rg = Radguard::start_fresh(&cfg.toml());
    let err_log = radguard_err_path(&rg);

    let mut seen_direct = BTreeSet::new();
    let mut seen_relayed = BTreeSet::new();
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    let mut converted = Vec::new();
    let mut relay_time = Duration::ZERO;

    for (i, ((label, path), f)) in items.iter().zip(&facts).enumerate() {
        let opts = storescu_options(f, tmp.path(), i);
        let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
        let listed = DELIBERATELY_MALFORMED.iter().find(|(l, _, _)| l == label);

        // Baseline: straight to storescp.
        let out = storescu_with(
            direct.port,
            CLIENT,
            "DIRECT",
            &opts,
            std::slice::from_ref(path),
        );
        let got = new_files(&direct.dir, &mut seen_direct);
        if !out.success() || got.len() != 1 {
            let why = format!(
                "{}; storescp wrote {} file(s)",
                storescu_summary(&out),
                got.len()
            );
            // storescu got as far as an answer: storescp (not storescu) did not take it, which
            // is a broken baseline, not a file storescu cannot send.
            let outcome = if out.all().contains("Received Store Response") {
                Outcome::Failed(format!("straight to storescp (no gateway): {why}"))
            } else {
                Outcome::Skipped(why)
            };
            outcomes.push((label.clone(), outcome));
            continue;
        }
        let baseline = got[0].clone();
        if let Some(how) = converted_by_storescu(&out) {
            converted.push(format!("{label} ({how})"));
        }

        // Through the gateway.
        let from = file_len(&err_log);
        let t = Instant::now();
        let out = storescu_with(
            rg.port(),
            CLIENT,
            "ARCHIVE",
            &opts,
            std::slice::from_ref(path),
        );
        relay_time += t.elapsed();
        let got = new_files(&relayed.dir, &mut seen_relayed);
        let success = out.success() && out.all().contains("Received Store Response (Success)");
        let mut problem = None;
        if !success || got.len() != 1 {
            problem = Some(format!(
                "storescu: {}; upstream storescp wrote {} file(s)",
                storescu_summary(&out),
                got.len()
            ));
        } else {
            match (dataset_of(&baseline), dataset_of(&got[0])) {
                (Ok((base_meta, a)), Ok((meta, b))) => {
                    let uid = meta.media_storage_sop_instance_uid.clone();
                    let known = [&f.meta_sop_instance, &f.sop_instance];
                    if uid != base_meta.media_storage_sop_instance_uid
                        || !known.iter().any(|k| k.is_some() && **k == uid)
                    {
                        problem = Some(format!(
                            "arrived as SOP Instance {uid:?}; straight to storescp it arrived \
                             as {:?}; the file says {known:?}",
                            base_meta.media_storage_sop_instance_uid
                        ));
                    } else if a != b {
                        let at = a.iter().zip(&b).position(|(x, y)| x != y);
                        problem = Some(format!(
                            "arrived with other data set bytes than straight to storescp ({} \
                             vs {} bytes, first difference at {at:?})",
                            b.len(),
                            a.len()
                        ));
                    }
                }
                (a, b) => {
                    problem = Some(format!(
                        "cannot read the received files: {:?} / {:?}",
                        a.err(),
                        b.err()
                    ))
                }
            }
        }

        let outcome = match (listed, problem) {
            (None, None) => Outcome::Passed,
            (Some((_, check, why)), None) => Outcome::Failed(format!(
                "listed in DELIBERATELY_MALFORMED ({check}: {why}) but it passed the firewall \
                 and arrived: remove it from the list"
            )),
            (Some((_, check, _)), Some(p)) => {
                // A refusal: wait for its alert (emitted before the client's answer, but read
                // from a log file).
                let needle = format!("{check} check failed");
                let mut events = events_since(&err_log, from);
                wait_until(Duration::from_secs(5), || {
                    events = events_since(&err_log, from);
                    malformed_alerts(&events)
                        .iter()
                        .any(|d| d.contains(&needle))
                });
                // storescu -v names the status class only ("Error: CannotUnderstand"); the
                // gateway's dimse-refused event has the status and the Error Comment.
                let comment = format!("Radguard firewall: {check} at byte");
                let c000 = out.all().contains("CannotUnderstand")
                    && events.iter().any(|e| {
                        e["event"] == "dimse-refused"
                            && e["status"] == 0xC000
                            && e["why"].as_str().is_some_and(|w| w.contains(&comment))
                    });
                if malformed_alerts(&events)
                    .iter()
                    .any(|d| d.contains(&needle))
                    && c000
                {
                    Outcome::RefusedAsListed(gateway_summary(&events))
                } else {
                    Outcome::Failed(format!(
                        "listed as refused by {check}, but: {p}\n      gateway: {}\n      {}",
                        gateway_summary(&events),
                        offline_verdict(&baseline)
                    ))
                }
            }
            (None, Some(p)) => {
                let mut events = events_since(&err_log, from);
                wait_until(Duration::from_secs(2), || {
                    events = events_since(&err_log, from);
                    !malformed_alerts(&events).is_empty()
                });
                Outcome::Failed(format!(
                    "{p}\n      gateway: {}\n      {}",
                    gateway_summary(&events),
                    offline_verdict(&baseline)
                ))
            }
        };
        outcomes.push((label.clone(), outcome));
    }

    // The report.
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
    let passed = count(&|o| matches!(o, Outcome::Passed));
    let refused = count(&|o| matches!(o, Outcome::RefusedAsListed(_)));
    let skipped = count(&|o| matches!(o, Outcome::Skipped(_)));
    let failed = count(&|o| matches!(o, Outcome::Failed(_)));
    let mut report = format!(
        "firewall compatibility (safe): {} files: {passed} passed, {refused} refused as listed \
         (deliberately malformed), {skipped} skipped (storescu cannot send them), {failed} \
         FAILED; {} sent converted by storescu (no meta); {:.1} s in all, {:.1} s of it through \
         the gateway\n",
        outcomes.len(),
        converted.len(),
        started.elapsed().as_secs_f64(),
        relay_time.as_secs_f64()
    );
    for (label, o) in &outcomes {
        match o {
            Outcome::Skipped(why) => {
                let _ = writeln!(report, "  skipped  {label}: {why}");
            }
            Outcome::RefusedAsListed(g) => {
                let _ = writeln!(report, "  refused  {label}: {g}");
            }
            Outcome::Failed(why) => {
                let _ = writeln!(report, "  FAILED   {label}: {why}");
            }
            Outcome::Passed => {}
        }
    }
    for label in &converted {
        let _ = writeln!(
            report,
            "  converted by storescu (sent in another TS): {label}"
        );
    }
    eprintln!("{report}");

    // The project's own files (generated data, DCMTK re-encodings, test data) are well-formed
    // and in syntaxes storescu proposes: none of them may be skipped, or the baseline is broken.
    let own_skipped: Vec<&String> = outcomes
        .iter()
        .filter(|(l, o)| {
            matches!(o, Outcome::Skipped(_))
                && (l.starts_with("generated/")
                    || l.starts_with("dcmtk/")
                    || l.starts_with("test-data/"))
        })
        .map(|(l, _)| l)
        .collect();
    assert!(
        own_skipped.is_empty(),
        "storescu could not send the project's own files {own_skipped:?} even straight to \
         storescp (the baseline is broken, not the gateway):\n{report}"
    );
    assert_eq!(
        failed, 0,
        "{failed} file(s) did not pass the firewall as they should:\n{report}"
    );
    assert!(passed > 0, "nothing passed:\n{report}");
}

// ------------------------------------------------------------------------------ test 2

/// tests/py/bad_find_scp.py on 127.0.0.1 (port chosen by the OS and printed).
fn bad_find_scp(extra: &[&str]) -> ScriptedScp {
    ScriptedScp::start("bad_find_scp.py", "BADFIND", extra)
}

/// `findscu -d` (debug: prints every response's DIMSE status and Error Comment) for Study Root,
/// STUDY level, asking for Patient ID and Study Instance UID.
fn findscu_debug(port: u16, called: &str) -> Output {
    let args: Vec<String> = [
        "-d",
        "-aet",
        CLIENT,
        "-aec",
        called,
        "-to",
        "15",
        "-ta",
        "15",
        "-td",
        "60",
        "-S",
        "-k",
        "0008,0052=STUDY",
        "-k",
        "PatientID",
        "-k",
        "StudyInstanceUID",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([port.to_string()])
    .collect();
    dcmtk("findscu", &args)
}

/// The DIMSE statuses of the responses findscu -d received, in order (e.g. "0xff00").
fn find_statuses(out: &Output) -> Vec<String> {
    out.all()
        .lines()
        .filter_map(|l| {
            let rest = l.split("DIMSE Status").nth(1)?;
            let v = rest.trim_start().strip_prefix(':')?.trim_start();
            Some(v.split(':').next()?.trim().to_ascii_lowercase())
        })
        .collect()
}

/// The script really puts the repeated element on the wire: findscu straight to it gets three
/// pending answers and DCMTK's parser says it found (0010,0020) twice in the second.
#[test]
fn bad_find_scp_sends_a_repeated_element() {
    let scp = bad_find_scp(&["--cancel-wait", "0"]);
    let out = findscu_debug(scp.port, "BADFIND");
    assert!(!out.timed_out, "{}", out.text());
    assert_eq!(
        find_statuses(&out),
        ["0xff00", "0xff00", "0xff00", "0x0000"],
        "three pending answers and success expected:\n{}",
        out.text()
    );
    let all = out.all();
    assert!(
        all.contains("Element (0010,0020) found twice"),
        "DCMTK did not see the repeated Patient ID:\n{}",
        out.text()
    );
    for id in ["RG-FIND-1", "RG-FIND-2", "RG-FIND-3"] {
        assert!(all.contains(id), "{id} missing:\n{}", out.text());
    }
    assert!(scp.steps().contains("no C-CANCEL-RQ"), "{}", scp.proc.log());
}

#[test]
fn malformed_find_answer_from_upstream_is_dropped_with_c000_and_c_cancel() {
    // The upstream takes a second after the cancel to end the query: the client, answered at
    // once by the gateway, releases meanwhile, and the gateway must hold that release until
    // the upstream's final answer (PS3.7: no release with an operation outstanding).
    let scp = bad_find_scp(&["--verbose", "--final-delay", "1"]);
    let cfg = Config::new()
        .open_peer("lab", &[CLIENT], &["RECV"])
        .route("BADFIND", scp.port, "BADFIND");
    let rg = Radguard::start_fresh(&cfg.toml());

    let out = findscu_debug(rg.port(), "BADFIND");
    assert!(!out.timed_out, "findscu timed out:\n{}", out.text());
    let all = out.all();
    let statuses = find_statuses(&out);
    let context = || {
        format!(
            "{}\n--- bad_find_scp.py ---\n{}\n--- radguard events ---\n{:#?}",
            out.text(),
            scp.proc.log(),
            rg.events()
        )
    };

    // The first answer, unchanged; then the gateway's failure for the malformed second one.
    assert_eq!(
        statuses,
        ["0xff00", "0xc000"],
        "findscu should get the first pending answer, then 0xC000:\n{}",
        context()
    );
    assert!(
        all.contains("RG-FIND-1"),
        "first answer missing:\n{}",
        context()
    );
    // "duplicate at byte 32": (0008,0052) "STUDY " (14 bytes) and (0010,0020) "RG-FIND-2 "
    // (18 bytes) come first, in either little endian syntax.
    assert!(
        all.contains("Radguard firewall: duplicate at byte 32"),
        "Error Comment (0000,0902) 'Radguard firewall: duplicate at byte 32' missing:\n{}",
        context()
    );
    // Never the malformed identifier nor anything after it.
    for id in ["RG-FIND-2", "RG-FIND-3"] {
        assert!(!all.contains(id), "{id} reached the client:\n{}", context());
    }
    assert!(
        !all.contains("found twice"),
        "the repeated element reached the client:\n{}",
        context()
    );

    // The alert.
    let alert = rg.wait_alert("duplicate check failed at byte 32");
    assert_eq!(alert["kind"], "malformed-data-set", "{alert:#}");

    // The upstream was told to stop: C-CANCEL-RQ for the C-FIND's message id. The script then
    // sends its third answer and the final success anyway: the gateway dropped both (above).
    let steps = scp.steps();
    let msg_id = steps
        .lines()
        .find_map(|l| {
            l.strip_prefix("bad_find_scp.py: C-FIND-RQ message id ")?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("the C-FIND never reached the upstream:\n{}", context()));
    assert!(
        scp.wait_step_since(
            0,
            &format!("C-CANCEL-RQ received for message id {msg_id} ["),
            Duration::from_secs(15)
        ),
        "the upstream saw no C-CANCEL-RQ:\n{}",
        context()
    );
    assert!(
        scp.steps().contains("sent pending 3 (valid)"),
        "the upstream did not send its third answer (nothing to drop):\n{}",
        context()
    );
    // The client's association is still in order: findscu released it normally, and the
    // release went through to the upstream.
    assert_eq!(
        out.code,
        Some(0),
        "findscu did not end normally (its release failed?):\n{}",
        context()
    );
    assert!(
        scp.wait_step_since(0, "association released", Duration::from_secs(10)),
        "the upstream association was not released:\n{}",
        context()
    );
    let steps = scp.steps();
    let at = |needle: &str| {
        steps
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the upstream's log:\n{}", context()))
    };
    assert!(
        at("sending final success") < at("A-RELEASE-RQ received"),
        "the release reached the upstream before its final answer to the cancelled query:\n{}",
        context()
    );
}
