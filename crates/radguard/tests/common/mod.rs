//! Real-peer integration test harness: test data, free ports, child processes that die with
//! the test, the `radguard` binary under test, DCMTK / Orthanc / pynetdicom peers and clients.
//!
//! Prerequisite: `scripts/setup-test-env.sh` (DCMTK in /usr/bin, Orthanc in /usr/sbin, the
//! Python venv in `<root>/.venv`). A missing tool makes the test FAIL with a message saying so;
//! nothing is skipped silently. Every wait is bounded; every test gets its own temporary
//! directories and ports, so tests run in parallel.
//!
//! Environment knobs: `RADGUARD_KEEP_TMP=1` keeps the temporary directories of failed tests;
//! `RADGUARD_TEST_PYTHON` overrides the venv interpreter.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

/// Where the tests expect DCMTK's command line tools (never the venv's pynetdicom scripts).
pub const DCMTK_BIN: &str = "/usr/bin";
pub const ORTHANC_BIN: &str = "/usr/sbin/Orthanc";
/// Upper bound for one client run (echoscu, storescu, probe, ...).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a peer or radguard to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

const SETUP_HINT: &str = "run `bash scripts/setup-test-env.sh` (as root) first";

// ------------------------------------------------------------------------------------ paths

/// The workspace root (the directory whose Cargo.toml has `[workspace]`).
pub fn project_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        loop {
            let toml = p.join("Cargo.toml");
            if fs::read_to_string(&toml).is_ok_and(|s| s.contains("[workspace]")) {
                return p;
            }
            assert!(
                p.pop(),
                "no workspace Cargo.toml above {}",
                env!("CARGO_MANIFEST_DIR")
            );
        }
    })
    .clone()
}

/// Cargo's target directory (parent of `CARGO_TARGET_TMPDIR`).
pub fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or(tmp)
}

/// A fresh temporary directory under `target/tmp`, removed on drop (kept when the test panics
/// and `RADGUARD_KEEP_TMP=1`; see [`keep_on_failure`]).
pub fn tmp_dir(label: &str) -> TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(&base).expect("create CARGO_TARGET_TMPDIR");
    tempfile::Builder::new()
        .prefix(&format!("rg-{label}-"))
        .tempdir_in(&base)
        .expect("create temporary directory")
}

/// Call from a `Drop` of something owning `dir`: keeps the directory if the thread panics and
/// `RADGUARD_KEEP_TMP=1`.
fn keep_on_failure(dir: &mut Option<TempDir>) {
    if thread::panicking() && std::env::var_os("RADGUARD_KEEP_TMP").is_some_and(|v| v == "1") {
        if let Some(d) = dir.take() {
            eprintln!("[harness] keeping {}", d.keep().display());
        }
    }
}

/// Panics with a clear message if `path` is not an executable file.
pub fn require_tool(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(p.is_file(), "required tool {path} is missing: {SETUP_HINT}");
    p
}

/// The venv interpreter with pydicom / pynetdicom (never put on PATH: it shadows DCMTK).
pub fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("RADGUARD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let p = project_root().join(".venv/bin/python");
    assert!(p.is_file(), "{} is missing: {SETUP_HINT}", p.display());
    p
}

pub fn py_script(name: &str) -> PathBuf {
    let p = project_root().join("tests/py").join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

// -------------------------------------------------------------------------------- test data

/// The generated data set (`tests/data/make_data.py`) and its MANIFEST.json.
pub struct TestData {
    pub dir: PathBuf,
    pub manifest: Value,
}

/// Generates the test data once per test binary into `target/test-data` (the script itself
/// skips work when the data is up to date and serialises concurrent runs with a lock file).
pub fn test_data() -> &'static TestData {
    static DATA: OnceLock<TestData> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = target_dir().join("test-data");
        let script = project_root().join("tests/data/make_data.py");
        let mut cmd = Command::new(venv_python());
        cmd.arg(&script).arg(&dir);
        let out = run(&mut cmd, Duration::from_secs(300));
        assert!(out.success(), "make_data.py failed:\n{}", out.text());
        let text = fs::read_to_string(dir.join("MANIFEST.json")).expect("read MANIFEST.json");
        let manifest = serde_json::from_str(&text).expect("parse MANIFEST.json");
        TestData { dir, manifest }
    })
}

impl TestData {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    /// The 24-slice CT series (one study/series, Explicit VR LE).
    pub fn ct_dir(&self) -> PathBuf {
        self.dir.join("ct")
    }
    pub fn ct_files(&self) -> Vec<PathBuf> {
        self.files_with_role("ct-series")
    }
    pub fn mr_files(&self) -> Vec<PathBuf> {
        self.files_with_role("mr")
    }
    pub fn sc_file(&self) -> PathBuf {
        self.path("sc/SC_RGB_0001.dcm")
    }
    /// Encapsulated PDF Storage (1.2.840.10008.5.1.4.1.1.104.1).
    pub fn pdf_file(&self) -> PathBuf {
        self.path("pdf/PDF_0001.dcm")
    }
    /// A CT in Implicit VR Little Endian.
    pub fn implicit_file(&self) -> PathBuf {
        self.path("implicit/CT_IMPLICIT.dcm")
    }
    /// Same SOP Instance UID as `ct/CT_0001.dcm`, different pixel data.
    pub fn conflict_file(&self) -> PathBuf {
        self.path("conflict/CT_0001_CONFLICT.dcm")
    }
    pub fn ct_patient_id(&self) -> String {
        self.manifest["ct"]["patient_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    pub fn ct_study_uid(&self) -> String {
        self.manifest["ct"]["study_instance_uid"]
            .as_str()
            .unwrap()
            .to_string()
    }
    pub fn mr_patient_id(&self) -> String {
        self.manifest["mr"]["patient_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    /// The manifest entry of a file (`rel` as in MANIFEST.json, e.g. "ct/CT_0001.dcm").
    pub fn entry(&self, rel: &str) -> &Value {
        self.files()
            .iter()
            .find(|f| f["path"] == rel)
            .unwrap_or_else(|| panic!("{rel} is not in MANIFEST.json"))
    }
    pub fn sop_instance_uid(&self, rel: &str) -> String {
        self.entry(rel)["sop_instance_uid"]
            .as_str()
            .unwrap()
            .to_string()
    }
    fn files(&self) -> &Vec<Value> {
        self.manifest["files"]
            .as_array()
            .expect("MANIFEST.json: files")
    }
    fn files_with_role(&self, role: &str) -> Vec<PathBuf> {
        self.files()
            .iter()
            .filter(|f| f["role"] == role)
            .map(|f| self.path(f["path"].as_str().unwrap()))
            .collect()
    }
}

// ------------------------------------------------------------------------------------ ports

/// A TCP port that is currently free on 0.0.0.0 and 127.0.0.1, chosen below the Linux
/// ephemeral range (so outgoing connections do not grab it) and never twice per process.
/// Peers that cannot take "port 0" use this; the starters retry if the port got taken anyway.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static SEED: OnceLock<u32> = OnceLock::new();
    const LOW: u32 = 20000;
    const SPAN: u32 = 12000;
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        (std::process::id().wrapping_mul(7919) ^ nanos) % SPAN
    });
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (seed + n) % SPAN) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free TCP port found in {LOW}..{}", LOW + SPAN)
}

/// True when something listens on TCP `port` (any address), read from /proc/net/tcp{,6}
/// so that waiting does not open connections the peer would have to deal with.
pub fn is_listening(port: u16) -> bool {
    let needle = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|s| {
            s.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&needle) && cols[3] == "0A"
            })
        })
    })
}

/// Waits until `port` is listening; false on timeout.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || is_listening(port))
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Can a TCP connection be made to 127.0.0.1:`port` right now?
pub fn can_connect(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

// ------------------------------------------------------------------------- child processes

/// A child process that is killed (with its process group when it has one) when dropped.
/// Its stdout/stderr go to files; if the test is panicking, their tails are printed.
pub struct Proc {
    pub name: String,
    child: Child,
    group: bool,
    logs: Vec<PathBuf>,
}

impl Proc {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr into `log_dir/<name>.{out,err}`
    /// (unless the caller already set them). `group`: own process group, killed as a whole.
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path, group: bool) -> Proc {
        let out = log_dir.join(format!("{name}.out"));
        let err = log_dir.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("create log"))
            .stderr(fs::File::create(&err).expect("create log"));
        Proc::spawn_raw(name, cmd, vec![out, err], group)
    }

    /// Spawns `cmd` as configured by the caller; `logs` are printed on failure.
    pub fn spawn_raw(name: &str, cmd: &mut Command, logs: Vec<PathBuf>, group: bool) -> Proc {
        if group {
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Proc {
            name: name.to_string(),
            child,
            group,
            logs,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// None while running, the exit status once it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` ("TERM", "KILL", ...) to the process (or its group).
    pub fn signal(&self, signal: &str) {
        let target = if self.group {
            format!("-{}", self.child.id())
        } else {
            self.child.id().to_string()
        };
        let _ = Command::new("/bin/sh")
            .args([
                "-c",
                "kill -s \"$0\" -- \"$1\" 2>/dev/null",
                signal,
                &target,
            ])
            .status();
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        if let Some(st) = self.exited() {
            return st;
        }
        self.signal("TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = self.exited() {
                if self.group {
                    self.signal("KILL"); // stragglers (e.g. forked children)
                }
                return st;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill()
    }

    /// SIGKILL (the whole group if it has one) and reap.
    pub fn kill(&mut self) -> ExitStatus {
        if self.group {
            self.signal("KILL");
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait for child")
    }

    /// Everything the process wrote to its log files so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        for p in &self.logs {
            if let Ok(t) = fs::read_to_string(p) {
                let _ = writeln!(s, "--- {} ---\n{t}", p.display());
            }
        }
        s
    }

    fn print_tail(&self) {
        for p in &self.logs {
            if let Ok(t) = fs::read_to_string(p) {
                let lines: Vec<&str> = t.lines().collect();
                let from = lines.len().saturating_sub(60);
                eprintln!(
                    "[harness] --- {} ({}) last lines ---",
                    self.name,
                    p.display()
                );
                for l in &lines[from..] {
                    eprintln!("[harness] {l}");
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if thread::panicking() {
            self.print_tail();
        }
        self.kill();
    }
}

/// The result of running a client program to completion.
#[derive(Debug)]
pub struct Output {
    pub program: String,
    /// Exit code; None when killed by a signal (including our timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
    /// Program, exit status, stdout and stderr as one string for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "$ {} -> exit {:?}{} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.program,
            self.code,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what} failed:\n{}", self.text());
        self
    }
    /// DCMTK findscu -v: number of "Find Response: N (Pending)" lines (= matches).
    pub fn find_matches(&self) -> usize {
        let all = format!("{}\n{}", self.stdout, self.stderr);
        all.lines()
            .filter(|l| l.contains("Find Response:") && l.contains("(Pending)"))
            .count()
    }
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion (stdin /dev/null), killing it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let program = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for client") {
            break st;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for client");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    Output {
        program,
        code: status.code(),
        stdout,
        stderr,
        timed_out,
        elapsed: start.elapsed(),
    }
}

// ---------------------------------------------------------------------------- DCMTK clients

/// Runs `/usr/bin/<tool> args...` with TCP_NODELAY=1 (Debian's DCMTK leaves Nagle on otherwise,
/// which costs ~40 ms per round trip) and a timeout.
pub fn dcmtk<S: AsRef<std::ffi::OsStr>>(tool: &str, args: &[S]) -> Output {
    let exe = require_tool(&format!("{DCMTK_BIN}/{tool}"));
    let mut cmd = Command::new(exe);
    cmd.args(args).env("TCP_NODELAY", "1");
    run(&mut cmd, CLIENT_TIMEOUT)
}

const DCMTK_NET_TIMEOUTS: [&str; 6] = ["-to", "15", "-ta", "15", "-td", "60"];

fn dcmtk_client(tool: &str, calling: &str, called: &str, rest: &[OsString]) -> Output {
    let mut args: Vec<OsString> = vec!["-v".into(), "-aet".into(), calling.into()];
    args.extend(["-aec".into(), called.into()]);
    args.extend(DCMTK_NET_TIMEOUTS.iter().map(OsString::from));
    args.extend(rest.iter().cloned());
    dcmtk(tool, &args)
}

/// `echoscu -aet CALLING -aec CALLED 127.0.0.1 PORT`
pub fn echoscu(port: u16, calling: &str, called: &str) -> Output {
    dcmtk_client(
        "echoscu",
        calling,
        called,
        &["127.0.0.1".into(), port.to_string().into()],
    )
}

/// `storescu ... [+sd] 127.0.0.1 PORT PATHS...` — all files in ONE association; `+sd` (scan
/// directories) is added when a path is a directory.
pub fn storescu(port: u16, calling: &str, called: &str, paths: &[PathBuf]) -> Output {
    let mut rest: Vec<OsString> = Vec::new();
    if paths.iter().any(|p| p.is_dir()) {
        rest.push("+sd".into());
    }
    rest.extend(["127.0.0.1".into(), port.to_string().into()]);
    rest.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
    dcmtk_client("storescu", calling, called, &rest)
}

/// `findscu -S -k 0008,0052=STUDY -k KEY... 127.0.0.1 PORT` (Study Root); see
/// [`Output::find_matches`].
pub fn findscu(port: u16, calling: &str, called: &str, keys: &[&str]) -> Output {
    let mut rest: Vec<OsString> = vec!["-S".into(), "-k".into(), "0008,0052=STUDY".into()];
    for k in keys {
        rest.extend(["-k".into(), OsString::from(k)]);
    }
    rest.extend(["127.0.0.1".into(), port.to_string().into()]);
    dcmtk_client("findscu", calling, called, &rest)
}

/// `movescu -S -aem DEST -k 0008,0052=STUDY -k KEY... 127.0.0.1 PORT` (Study Root).
pub fn movescu(port: u16, calling: &str, called: &str, dest: &str, keys: &[&str]) -> Output {
    let mut rest: Vec<OsString> = vec!["-S".into(), "-aem".into(), dest.into()];
    rest.extend(["-k".into(), "0008,0052=STUDY".into()]);
    for k in keys {
        rest.extend(["-k".into(), OsString::from(k)]);
    }
    rest.extend(["127.0.0.1".into(), port.to_string().into()]);
    dcmtk_client("movescu", calling, called, &rest)
}

// ------------------------------------------------------------------- pynetdicom: probe etc.

/// Runs `tests/py/dicom_probe.py --port PORT --calling-ae CALLING --called-ae CALLED REST...`
/// and returns its JSON (see the script's docstring for the fields).
pub fn probe(port: u16, calling: &str, called: &str, rest: &[&str]) -> Value {
    let mut args: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--calling-ae".into(),
        calling.into(),
        "--called-ae".into(),
        called.into(),
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    probe_args(&args)
}

/// Runs dicom_probe.py with exactly `args`.
pub fn probe_args<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Value {
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("dicom_probe.py")).args(args);
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    parse_probe(&out)
}

fn parse_probe(out: &Output) -> Value {
    assert!(!out.timed_out, "dicom_probe.py timed out:\n{}", out.text());
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    match line.map(serde_json::from_str::<Value>) {
        Some(Ok(v)) if out.code == Some(0) => v,
        _ => panic!(
            "dicom_probe.py did not print its JSON result:\n{}",
            out.text()
        ),
    }
}

/// `dicom_probe.py ... [OPTS...] store FILES...` (one association).
pub fn probe_store(
    port: u16,
    calling: &str,
    called: &str,
    opts: &[&str],
    files: &[PathBuf],
) -> Value {
    let mut args: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    args.push("store".into());
    args.extend(files.iter().map(|p| p.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    probe(port, calling, called, &refs)
}

/// A probe running in the background (e.g. `echo --hold 10` holding an association open).
pub struct ProbeProc {
    proc: Proc,
    out: PathBuf,
    pub ready_file: PathBuf,
    _dir: TempDir,
}

/// Starts dicom_probe.py in the background with `--ready-file`; see [`ProbeProc::wait_ready`].
pub fn probe_spawn(port: u16, calling: &str, called: &str, rest: &[&str]) -> ProbeProc {
    let dir = tmp_dir("probe");
    let ready = dir.path().join("ready");
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("dicom_probe.py"))
        .args([
            "--port",
            &port.to_string(),
            "--calling-ae",
            calling,
            "--called-ae",
            called,
        ])
        .arg("--ready-file")
        .arg(&ready)
        .args(rest);
    let proc = Proc::spawn("probe", &mut cmd, dir.path(), false);
    ProbeProc {
        proc,
        out: dir.path().join("probe.out"),
        ready_file: ready,
        _dir: dir,
    }
}

impl ProbeProc {
    /// Waits until the association is established (true) or the probe ended / timed out.
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        let ready = self.ready_file.clone();
        wait_until(timeout, || ready.exists() || self.proc.exited().is_some()) && ready.exists()
    }
    /// Waits for the probe to end and returns its JSON.
    pub fn wait_json(mut self, timeout: Duration) -> Value {
        let ended = wait_until(timeout, || self.proc.exited().is_some());
        assert!(
            ended,
            "background dicom_probe.py did not end within {timeout:?}:\n{}",
            self.proc.log()
        );
        let code = self.proc.exited().and_then(|s| s.code());
        let out = Output {
            program: "dicom_probe.py (background)".into(),
            code,
            stdout: fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: self.proc.log(),
            timed_out: false,
            elapsed: Duration::ZERO,
        };
        parse_probe(&out)
    }
}

/// Asserts the probe's association was rejected with exactly (result, source, reason).
pub fn assert_rejected(v: &Value, result: i64, source: i64, reason: i64) {
    assert_eq!(
        v["association"], "rejected",
        "expected an A-ASSOCIATE-RJ, got:\n{v:#}"
    );
    let r = &v["rejection"];
    assert_eq!(
        (
            r["result"].as_i64(),
            r["source"].as_i64(),
            r["reason"].as_i64()
        ),
        (Some(result), Some(source), Some(reason)),
        "A-ASSOCIATE-RJ (result, source, reason) differs:\n{v:#}"
    );
}

pub fn assert_accepted(v: &Value) {
    assert_eq!(
        v["association"], "accepted",
        "expected an accepted association, got:\n{v:#}"
    );
}

/// The presentation context result the AC gave for `abstract_syntax` (0 = acceptance,
/// 1 = user rejection, 2 = no reason, 3 = abstract syntax not supported, 4 = TS not supported);
/// None when the AC did not mention it.
pub fn context_result(v: &Value, abstract_syntax: &str) -> Option<i64> {
    ["accepted", "rejected"].iter().find_map(|k| {
        v["contexts"][k]
            .as_array()?
            .iter()
            .find(|c| c["abstract_syntax"] == abstract_syntax)
            .and_then(|c| c["result"].as_i64())
    })
}

/// The DIMSE statuses the probe received (None = no response).
pub fn statuses(v: &Value) -> Vec<Option<i64>> {
    v["statuses"]
        .as_array()
        .map(|a| a.iter().map(Value::as_i64).collect())
        .unwrap_or_default()
}

// -------------------------------------------------------------------------- data comparison

/// compare.py: data sets of two files identical (file meta ignored)?
pub fn assert_same_dataset(a: &Path, b: &Path) {
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("compare.py")).arg(a).arg(b);
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    assert!(out.success(), "data sets differ:\n{}", out.text());
}

/// compare_dirs.py: every instance under `sent` arrived identical under `recv`, nothing else.
pub fn assert_same_dirs(sent: &Path, recv: &Path) {
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("compare_dirs.py")).arg(sent).arg(recv);
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    assert!(
        out.success(),
        "received instances differ from the sent ones:\n{}",
        out.text()
    );
}

/// Every file of `sent` arrived identical in `recv` (matched by SOP Instance UID);
/// `allow_extra`: `recv` may hold other instances too.
pub fn assert_received(sent: &[PathBuf], recv: &Path, allow_extra: bool) {
    let tmp = tmp_dir("sent");
    for (i, f) in sent.iter().enumerate() {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::os::unix::fs::symlink(f, tmp.path().join(format!("{i:04}_{name}"))).expect("symlink");
    }
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("compare_dirs.py"))
        .arg(tmp.path())
        .arg(recv);
    if allow_extra {
        cmd.arg("--allow-extra");
    }
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    assert!(
        out.success(),
        "received instances differ from the sent ones:\n{}",
        out.text()
    );
}

/// Regular files under `dir` (recursively) whose name ends with `suffix` ("" = all), sorted;
/// hidden files (temporary names) are ignored.
pub fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && name.ends_with(suffix) => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

// -------------------------------------------------------------------------- radguard config

/// Builds a radguard TOML config (docs/config.md) for tests: listen on 127.0.0.1:0, short
/// timeouts, plus the peers and routes added.
#[derive(Default, Clone)]
pub struct Config {
    server: Vec<String>,
    sections: Vec<String>,
}

fn toml_list(items: &[&str]) -> String {
    let q: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", q.join(", "))
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }
    /// An extra `[server]` line, e.g. `"max_associations_per_peer = 2"`.
    pub fn server(mut self, line: &str) -> Config {
        self.server.push(line.to_string());
        self
    }
    /// A `[[peer]]`; `store_sop_classes` is written only when `allow` has store/get and
    /// `move_destinations` only when it has move.
    pub fn peer(
        mut self,
        name: &str,
        ae_titles: &[&str],
        addresses: &[&str],
        allow: &[&str],
        store_sop_classes: &[&str],
        move_destinations: &[&str],
    ) -> Config {
        let mut s = format!(
            "[[peer]]\nname = {name:?}\nae_titles = {}\naddresses = {}\nallow = {}\n",
            toml_list(ae_titles),
            toml_list(addresses),
            toml_list(allow)
        );
        if allow.iter().any(|a| *a == "store" || *a == "get") {
            let _ = writeln!(s, "store_sop_classes = {}", toml_list(store_sop_classes));
        }
        if allow.contains(&"move") {
            let _ = writeln!(s, "move_destinations = {}", toml_list(move_destinations));
        }
        self.sections.push(s);
        self
    }
    /// A loopback peer allowed everything: echo, store, find, move, get; every storage SOP
    /// class; the given move destinations.
    pub fn open_peer(self, name: &str, ae_titles: &[&str], move_destinations: &[&str]) -> Config {
        self.peer(
            name,
            ae_titles,
            &["127.0.0.1/32"],
            &["echo", "store", "find", "move", "get"],
            &["*"],
            move_destinations,
        )
    }
    /// A `[[route]]` called AE -> 127.0.0.1:port with the upstream's AE title.
    pub fn route(mut self, called_ae: &str, port: u16, upstream_ae: &str) -> Config {
        self.sections.push(format!(
            "[[route]]\ncalled_ae = {called_ae:?}\nupstream = \"127.0.0.1:{port}\"\nupstream_ae = {upstream_ae:?}\n"
        ));
        self
    }
    /// A `[[route]]` called AE -> the built-in vault.
    pub fn vault_route(mut self, called_ae: &str) -> Config {
        self.sections.push(format!(
            "[[route]]\ncalled_ae = {called_ae:?}\nvault = true\n"
        ));
        self
    }
    pub fn toml(&self) -> String {
        // Defaults for tests; a `server(...)` line with the same key replaces the default.
        let defaults = [
            "listen = [\"127.0.0.1:0\"]",
            "ae_title = \"RADGUARD\"",
            "connect_timeout_secs = 5",
            "artim_timeout_secs = 10",
            "idle_timeout_secs = 60",
            "shutdown_grace_secs = 2",
        ];
        let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
        let mut s = String::from("[server]\n");
        for d in defaults {
            if !self.server.iter().any(|l| key(l) == key(d)) {
                s.push_str(d);
                s.push('\n');
            }
        }
        for l in &self.server {
            s.push_str(l);
            s.push('\n');
        }
        for sec in &self.sections {
            s.push('\n');
            s.push_str(sec);
        }
        s
    }
}

// --------------------------------------------------------------------------------- radguard

/// The `radguard` binary under test.
pub struct Radguard {
    /// Ports of the `radguard: listening on dicom://127.0.0.1:PORT` lines, in order.
    pub ports: Vec<u16>,
    pub data_dir: PathBuf,
    pub config_path: Option<PathBuf>,
    proc: Proc,
    stdout: Arc<Mutex<Vec<String>>>,
    tmp: Option<TempDir>,
    data_tmp: Option<TempDir>,
}

/// Parses `radguard: listening on dicom://127.0.0.1:PORT` (anything after the address,
/// separated by whitespace, e.g. ` as AE RADGUARD`, is ignored).
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = line
        .trim()
        .strip_prefix("radguard: listening on dicom://")?;
    rest.split_whitespace().next()?.parse().ok()
}

impl Radguard {
    pub fn exe() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_radguard"))
    }

    /// `radguard serve --config <tmp>/radguard.toml --data DATA_DIR`; returns once the first
    /// listening line was printed (panics with the logs if that takes over 30 s or it exits).
    pub fn start(config_toml: &str, data_dir: &Path) -> Radguard {
        let tmp = tmp_dir("radguard");
        let cfg = tmp.path().join("radguard.toml");
        fs::write(&cfg, config_toml).expect("write radguard.toml");
        let args: Vec<OsString> = vec![
            "serve".into(),
            "--config".into(),
            cfg.clone().into(),
            "--data".into(),
            data_dir.into(),
        ];
        Radguard::spawn(&args, data_dir, Some(cfg), tmp)
    }

    /// Like [`Radguard::start`] with a fresh data directory owned (and removed) by the result.
    pub fn start_fresh(config_toml: &str) -> Radguard {
        let data = tmp_dir("rg-data");
        let mut rg = Radguard::start(config_toml, data.path());
        rg.data_tmp = Some(data);
        rg
    }

    /// `radguard ARGS...` (e.g. `serve --data DIR` with the embedded default config).
    pub fn start_args(args: &[OsString], data_dir: &Path) -> Radguard {
        Radguard::spawn(args, data_dir, None, tmp_dir("radguard"))
    }

    fn spawn(args: &[OsString], data_dir: &Path, cfg: Option<PathBuf>, tmp: TempDir) -> Radguard {
        fs::create_dir_all(data_dir).expect("create radguard data dir");
        let err = tmp.path().join("radguard.err");
        let out_copy = tmp.path().join("radguard.out");
        let mut cmd = Command::new(Radguard::exe());
        cmd.args(args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&err).expect("create radguard.err"));
        let mut proc = Proc::spawn_raw("radguard", &mut cmd, vec![out_copy.clone(), err], false);
        let stdout = Arc::new(Mutex::new(Vec::new()));
        // Drain stdout for the whole life of the process (a full pipe would block radguard).
        let pipe = proc.child.stdout.take().unwrap();
        let lines = Arc::clone(&stdout);
        thread::spawn(move || {
            let mut copy = fs::File::create(out_copy).ok();
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                lines.lock().unwrap().push(line);
            }
        });
        let listening = |lines: &Arc<Mutex<Vec<String>>>| -> Vec<u16> {
            lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| parse_listening(l))
                .map(|a| a.port())
                .collect()
        };
        let ok = wait_until(START_TIMEOUT, || {
            !listening(&stdout).is_empty() || proc.exited().is_some()
        });
        let ports = listening(&stdout);
        if !ok || ports.is_empty() {
            let status = proc.exited();
            let log = proc.log();
            panic!(
                "radguard did not print 'radguard: listening on dicom://127.0.0.1:PORT' within \
                 {START_TIMEOUT:?} (exit status: {status:?}); args {args:?}\n{log}"
            );
        }
        Radguard {
            ports,
            data_dir: data_dir.to_path_buf(),
            config_path: cfg,
            proc,
            stdout,
            tmp: Some(tmp),
            data_tmp: None,
        }
    }

    /// The first listener's port.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Lines radguard printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// stdout + stderr so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// SIGTERM, wait up to 15 s (then SIGKILL); returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.proc.terminate(Duration::from_secs(15))
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        self.proc.exited().is_none()
    }

    /// Sends a signal by name (`TERM`, `HUP`, …).
    pub fn signal(&self, signal: &str) {
        self.proc.signal(signal)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.proc.exited().is_some());
        self.proc.exited()
    }
}

impl Drop for Radguard {
    fn drop(&mut self) {
        keep_on_failure(&mut self.tmp);
        keep_on_failure(&mut self.data_tmp);
    }
}

// ------------------------------------------------------------------------------------ peers

/// Starts a peer on a free port, retrying with another port if it exits early (port race).
fn start_on_free_port(
    name: &str,
    log_dir: &Path,
    mut make: impl FnMut(u16) -> Command,
    group: bool,
) -> (Proc, u16) {
    let mut last_log = String::new();
    for _ in 0..3 {
        let port = free_port();
        let mut cmd = make(port);
        let mut proc = Proc::spawn(name, &mut cmd, log_dir, group);
        if wait_until(START_TIMEOUT, || {
            is_listening(port) || proc.exited().is_some()
        }) && proc.exited().is_none()
        {
            return (proc, port);
        }
        last_log = proc.log();
        proc.kill();
    }
    panic!("{name} did not start listening (3 attempts):\n{last_log}")
}

/// DCMTK storescp writing what it receives to its own directory (`+B`: bit preserving,
/// `-fe .dcm`), with `-v` so its log shows every association.
pub struct StoreScp {
    pub port: u16,
    pub aet: String,
    pub dir: PathBuf,
    proc: Proc,
    tmp: Option<TempDir>,
}

impl StoreScp {
    pub fn start(aet: &str) -> StoreScp {
        StoreScp::start_with(aet, &[])
    }

    /// With extra storescp options (before the port).
    pub fn start_with(aet: &str, extra: &[&str]) -> StoreScp {
        let exe = require_tool(&format!("{DCMTK_BIN}/storescp"));
        let tmp = tmp_dir("storescp");
        let dir = tmp.path().join("recv");
        fs::create_dir_all(&dir).unwrap();
        let (proc, port) = start_on_free_port(
            "storescp",
            tmp.path(),
            |port| {
                let mut c = Command::new(&exe);
                c.env("TCP_NODELAY", "1")
                    .args(["-v", "-aet", aet, "-od"])
                    .arg(&dir)
                    .args(["+B", "-fe", ".dcm", "-ta", "30", "-td", "60"])
                    .args(extra)
                    .arg(port.to_string());
                c
            },
            false,
        );
        StoreScp {
            port,
            aet: aet.into(),
            dir,
            proc,
            tmp: Some(tmp),
        }
    }

    /// Received files.
    pub fn files(&self) -> Vec<PathBuf> {
        files_under(&self.dir, "")
    }

    /// Number of associations storescp has received (its `-v` log).
    pub fn associations(&self) -> usize {
        self.proc.log().matches("Association Received").count()
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        keep_on_failure(&mut self.tmp);
    }
}

/// tests/py/scp.py: pynetdicom Storage + Verification SCP on 127.0.0.1 (port 0 = chosen by the
/// OS and printed), storing `<SOPInstanceUID>.dcm` as received.
pub struct PyScp {
    pub port: u16,
    pub aet: String,
    pub dir: PathBuf,
    proc: Proc,
    tmp: Option<TempDir>,
}

impl PyScp {
    /// `extra`: e.g. `["--die-after-bytes", "300000"]`, `["--abort-on-store"]`.
    pub fn start(aet: &str, extra: &[&str]) -> PyScp {
        let tmp = tmp_dir("pyscp");
        let dir = tmp.path().join("recv");
        let mut cmd = Command::new(venv_python());
        cmd.arg(py_script("scp.py"))
            .args(["--aet", aet, "--port", "0", "--out"])
            .arg(&dir)
            .args(extra);
        let mut proc = Proc::spawn("scp.py", &mut cmd, tmp.path(), false);
        let out = tmp.path().join("scp.py.out");
        let mut port = None;
        wait_until(START_TIMEOUT, || {
            port = fs::read_to_string(&out).ok().and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("scp.py: listening on 127.0.0.1:")?
                        .trim()
                        .parse::<u16>()
                        .ok()
                })
            });
            port.is_some() || proc.exited().is_some()
        });
        let Some(port) = port else {
            panic!("scp.py did not report its port:\n{}", proc.log());
        };
        PyScp {
            port,
            aet: aet.into(),
            dir,
            proc,
            tmp: Some(tmp),
        }
    }

    pub fn files(&self) -> Vec<PathBuf> {
        files_under(&self.dir, ".dcm")
    }

    /// None while running; its exit status once it has ended (e.g. after --die-after-bytes).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.exited()
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

impl Drop for PyScp {
    fn drop(&mut self) {
        keep_on_failure(&mut self.tmp);
    }
}

/// DCMTK dcmqrscp (an image archive with Q/R SCP): one AE with a storage area, and a move
/// destination table. Runs in fork mode in its own process group (killed as a group).
pub struct DcmQrScp {
    pub port: u16,
    pub aet: String,
    pub db: PathBuf,
    proc: Proc,
    tmp: Option<TempDir>,
}

impl DcmQrScp {
    /// `move_destinations`: (AE title, port on 127.0.0.1) of the receivers C-MOVE may send to.
    pub fn start(aet: &str, move_destinations: &[(&str, u16)]) -> DcmQrScp {
        let exe = require_tool(&format!("{DCMTK_BIN}/dcmqrscp"));
        let tmp = tmp_dir("dcmqrscp");
        let db = tmp.path().join("db");
        fs::create_dir_all(&db).unwrap();
        let cfg = tmp.path().join("dcmqrscp.cfg");
        let (proc, port) = start_on_free_port(
            "dcmqrscp",
            tmp.path(),
            |port| {
                let mut hosts = String::new();
                for (i, (ae, p)) in move_destinations.iter().enumerate() {
                    let _ = writeln!(hosts, "dest{i} = ({ae}, 127.0.0.1, {p})");
                }
                let text = format!(
                    "NetworkTCPPort  = {port}\nMaxPDUSize      = 16384\nMaxAssociations = 16\n\n\
                     HostTable BEGIN\n{hosts}HostTable END\n\n\
                     VendorTable BEGIN\nVendorTable END\n\n\
                     AETable BEGIN\n{aet} {} RW (200, 1024mb) ANY\nAETable END\n",
                    db.display()
                );
                fs::write(&cfg, text).expect("write dcmqrscp.cfg");
                let mut c = Command::new(&exe);
                c.env("TCP_NODELAY", "1")
                    .args(["-v", "-c"])
                    .arg(&cfg)
                    .args(["-dhl", "-ta", "30", "-td", "60"])
                    .arg(port.to_string());
                c
            },
            true,
        );
        DcmQrScp {
            port,
            aet: aet.into(),
            db,
            proc,
            tmp: Some(tmp),
        }
    }

    /// Loads `paths` into the archive with storescu, directly (not through radguard).
    pub fn load(&self, paths: &[PathBuf]) {
        storescu(self.port, "LOADER", &self.aet, paths)
            .assert_success("storescu -> dcmqrscp (load)");
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

impl Drop for DcmQrScp {
    fn drop(&mut self) {
        keep_on_failure(&mut self.tmp);
    }
}

/// Orthanc with its own storage, index, DICOM port and HTTP port (loopback-only REST).
pub struct Orthanc {
    pub dicom_port: u16,
    pub http_port: u16,
    pub aet: String,
    proc: Proc,
    tmp: Option<TempDir>,
}

impl Orthanc {
    /// `modalities`: (AE title, port on 127.0.0.1) it may send to (C-MOVE destinations).
    pub fn start(aet: &str, modalities: &[(&str, u16)]) -> Orthanc {
        let exe = require_tool(ORTHANC_BIN);
        let tmp = tmp_dir("orthanc");
        let mut last_log = String::new();
        for _ in 0..3 {
            let (dicom_port, http_port) = (free_port(), free_port());
            let storage = tmp.path().join(format!("db-{dicom_port}"));
            fs::create_dir_all(&storage).unwrap();
            let mods: serde_json::Map<String, Value> = modalities
                .iter()
                .map(|(ae, p)| (ae.to_lowercase(), serde_json::json!([ae, "127.0.0.1", p])))
                .collect();
            let cfg = serde_json::json!({
                "Name": format!("RG-TEST-{aet}"),
                "StorageDirectory": storage,
                "IndexDirectory": storage,
                "StorageCompression": false,
                "Plugins": [],
                "ConcurrentJobs": 2,
                "SaveJobs": false,
                "HttpServerEnabled": true,
                "HttpPort": http_port,
                "HttpThreadsCount": 4,
                "RemoteAccessAllowed": false,
                "AuthenticationEnabled": false,
                "WebDavEnabled": false,
                "DicomServerEnabled": true,
                "DicomAet": aet,
                "DicomPort": dicom_port,
                "DicomCheckCalledAet": false,
                "DicomAlwaysAllowEcho": true,
                "DicomAlwaysAllowStore": true,
                "DicomAlwaysAllowFind": true,
                "DicomAlwaysAllowMove": true,
                "DicomAlwaysAllowGet": true,
                "DicomThreadsCount": 4,
                "DicomScuTimeout": 10,
                "DicomScpTimeout": 30,
                "UnknownSopClassAccepted": false,
                "OverwriteInstances": false,
                "StableAge": 60,
                "DicomModalities": mods,
            });
            let cfg_path = tmp.path().join("orthanc.json");
            fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
            let mut cmd = Command::new(&exe);
            cmd.env("TCP_NODELAY", "1").arg(&cfg_path);
            let mut proc = Proc::spawn("orthanc", &mut cmd, tmp.path(), false);
            let up = wait_until(START_TIMEOUT, || {
                proc.exited().is_some()
                    || (is_listening(dicom_port)
                        && http_get(http_port, "/system").is_ok_and(|(st, _)| st == 200))
            });
            if up && proc.exited().is_none() {
                return Orthanc {
                    dicom_port,
                    http_port,
                    aet: aet.into(),
                    proc,
                    tmp: Some(tmp),
                };
            }
            last_log = proc.log();
            proc.kill();
        }
        panic!("Orthanc did not start (3 attempts):\n{last_log}")
    }

    /// GET http://127.0.0.1:HTTP_PORT/path -> (status, body); panics on I/O errors.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(self.http_port, path).unwrap_or_else(|e| panic!("GET {path} from Orthanc: {e}"))
    }

    /// GET and parse JSON; panics unless 200.
    pub fn get_json(&self, path: &str) -> Value {
        let (st, body) = self.get(path);
        assert_eq!(
            st,
            200,
            "GET {path}: HTTP {st}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: bad JSON: {e}"))
    }

    /// Number of stored instances (`/statistics` CountInstances).
    pub fn instance_count(&self) -> u64 {
        self.get_json("/statistics")["CountInstances"]
            .as_u64()
            .expect("CountInstances")
    }

    /// Orthanc IDs of all instances.
    pub fn instance_ids(&self) -> Vec<String> {
        let v = self.get_json("/instances");
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    /// The Orthanc ID of the instance with this SOP Instance UID, if stored.
    pub fn find_instance(&self, sop_instance_uid: &str) -> Option<String> {
        self.instance_ids().into_iter().find(|id| {
            let tags = self.get_json(&format!("/instances/{id}"));
            tags["MainDicomTags"]["SOPInstanceUID"] == sop_instance_uid
        })
    }

    /// Downloads the stored Part-10 file of instance `id` to `to`.
    pub fn download(&self, id: &str, to: &Path) {
        let (st, body) = self.get(&format!("/instances/{id}/file"));
        assert_eq!(st, 200, "GET /instances/{id}/file: HTTP {st}");
        fs::write(to, body).expect("write downloaded instance");
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        keep_on_failure(&mut self.tmp);
    }
}

/// Minimal HTTP/1.0 GET over a std TcpStream (for Orthanc's loopback REST API).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of HTTP headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP status line: {head}")))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// SOP class UIDs used in assertions.
pub mod uid {
    pub const VERIFICATION: &str = "1.2.840.10008.1.1";
    pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
    pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
    pub const ENCAPSULATED_PDF_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.104.1";
    pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
}
