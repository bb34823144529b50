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

/// Clears the immutable flag (`chattr -i`) of every file and folder under `dir`, so that a
/// test's temporary folder holding a vault can be removed. Best effort: errors are ignored.
pub fn unlock_tree(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            unlock_tree(&p);
        }
        let _ = radguard_vault::lock::clear_immutable(&p);
    }
    let _ = radguard_vault::lock::clear_immutable(dir);
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

/// Starts `/usr/bin/<tool> args...` (TCP_NODELAY=1, as [`dcmtk`]) in the background, its
/// output in `log_dir/<tool>.{out,err}`: for a client a test pauses (`signal("STOP")` /
/// `signal("CONT")`) at a point it chooses, or watches while it runs.
pub fn dcmtk_spawn<S: AsRef<std::ffi::OsStr>>(tool: &str, args: &[S], log_dir: &Path) -> Proc {
    let exe = require_tool(&format!("{DCMTK_BIN}/{tool}"));
    let mut cmd = Command::new(exe);
    cmd.args(args).env("TCP_NODELAY", "1");
    Proc::spawn(tool, &mut cmd, log_dir, false)
}

/// The options every DCMTK client of these tests gets: `-v -aet CALLING -aec CALLED` and
/// bounded network timeouts; the tool's own options and the peer follow.
pub fn dcmtk_client_args(calling: &str, called: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-v".into(), "-aet".into(), calling.into()];
    args.extend(["-aec".into(), called.into()]);
    args.extend(DCMTK_NET_TIMEOUTS.iter().map(OsString::from));
    args
}

fn dcmtk_client(tool: &str, calling: &str, called: &str, rest: &[OsString]) -> Output {
    let mut args = dcmtk_client_args(calling, called);
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

/// `storescu OPTIONS... 127.0.0.1 PORT FILES...` with extra DCMTK options (e.g. `-xd` to
/// propose Deflated Explicit VR Little Endian).
pub fn storescu_with(
    port: u16,
    calling: &str,
    called: &str,
    options: &[&str],
    paths: &[PathBuf],
) -> Output {
    let mut rest: Vec<OsString> = options.iter().map(OsString::from).collect();
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
        Radguard::start_with_env(config_toml, data_dir, &[])
    }

    /// [`Radguard::start`] with extra environment variables for the process (e.g. `TZ`).
    pub fn start_with_env(config_toml: &str, data_dir: &Path, env: &[(&str, &str)]) -> Radguard {
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
        Radguard::spawn(&[], &args, data_dir, Some(cfg), tmp, env)
    }

    /// [`Radguard::start`] run through `prefix` (a program that execs the rest, e.g.
    /// `setpriv --bounding-set -linux_immutable`): radguard keeps its pid.
    pub fn start_via(prefix: &[&str], config_toml: &str, data_dir: &Path) -> Radguard {
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
        Radguard::spawn(prefix, &args, data_dir, Some(cfg), tmp, &[])
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
        Radguard::spawn(&[], args, data_dir, None, tmp_dir("radguard"), &[])
    }

    fn spawn(
        prefix: &[&str],
        args: &[OsString],
        data_dir: &Path,
        cfg: Option<PathBuf>,
        tmp: TempDir,
        env: &[(&str, &str)],
    ) -> Radguard {
        fs::create_dir_all(data_dir).expect("create radguard data dir");
        let err = tmp.path().join("radguard.err");
        let out_copy = tmp.path().join("radguard.out");
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(Radguard::exe());
                c
            }
            None => Command::new(Radguard::exe()),
        };
        cmd.args(args)
            .envs(env.iter().copied())
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
        // Vault objects are immutable where the gateway can lock them (`[vault] immutable`
        // defaults to "auto" and tests run as root): released so the data folder can be removed.
        unlock_tree(&self.data_dir.join("vault"));
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

    /// Sends `signal` (`STOP`, `CONT`, …) to storescp: a stopped receiver answers no C-STORE,
    /// so a sender waiting for its response (a C-MOVE's sub-operations) holds where it is.
    pub fn signal(&self, signal: &str) {
        self.proc.signal(signal)
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

/// The SOP Instance UIDs in a gateway's vault index (`DATA/vault/index.sqlite`, opened
/// read-only while the gateway runs), sorted.
pub fn vault_index(data: &Path) -> Vec<String> {
    let db = data.join("vault").join("index.sqlite");
    let mut cmd = Command::new(venv_python());
    cmd.args([
        "-c",
        "import sqlite3, sys\n\
         c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
         for (u,) in c.execute('SELECT sop_instance_uid FROM instances ORDER BY 1'):\n    print(u)\n",
    ])
    .arg(&db);
    let out = run(&mut cmd, Duration::from_secs(60));
    out.assert_success("read the vault index");
    out.stdout.lines().map(|l| l.trim().to_string()).collect()
}

/// A scripted pynetdicom peer from `tests/py/` (e.g. `bad_find_scp.py`, `bad_get_scp.py`) on
/// 127.0.0.1 with `--aet AET --port 0`: it prints `<script>: listening on 127.0.0.1:PORT` and then
/// one line per step on stdout, which tests wait for.
pub struct ScriptedScp {
    pub port: u16,
    out: PathBuf,
    pub proc: Proc,
    _tmp: TempDir,
}

impl ScriptedScp {
    pub fn start(script: &str, aet: &str, extra: &[&str]) -> ScriptedScp {
        let tmp = tmp_dir(script.trim_end_matches(".py"));
        let mut cmd = Command::new(venv_python());
        cmd.arg(py_script(script))
            .args(["--aet", aet, "--port", "0"])
            .args(extra);
        let mut proc = Proc::spawn(script, &mut cmd, tmp.path(), false);
        let out = tmp.path().join(format!("{script}.out"));
        let prefix = format!("{script}: listening on 127.0.0.1:");
        let mut port = None;
        wait_until(START_TIMEOUT, || {
            port = std::fs::read_to_string(&out).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(prefix.as_str())?.trim().parse::<u16>().ok())
            });
            port.is_some() || proc.exited().is_some()
        });
        let Some(port) = port else {
            panic!("{script} did not report its port:\n{}", proc.log());
        };
        ScriptedScp {
            port,
            out,
            proc,
            _tmp: tmp,
        }
    }

    /// Its step log (stdout).
    pub fn steps(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Its step log from byte `from` on (what it logged after an earlier `steps().len()`).
    pub fn steps_since(&self, from: usize) -> String {
        self.steps().get(from..).unwrap_or_default().to_string()
    }

    /// Waits for `needle` in the step log after byte `from`.
    pub fn wait_step_since(&self, from: usize, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.steps_since(from).contains(needle))
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

    /// Orthanc's storage folder (attachments are `AB/CD/<uuid>` under it).
    pub fn storage_dir(&self) -> Option<PathBuf> {
        self.tmp
            .as_ref()
            .map(|t| t.path().join(format!("db-{}", self.dicom_port)))
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

// ------------------------------------------------------------------ hostile peers (issue 7)

impl Config {
    /// [`Config::toml`] with some of the base `[server]` values replaced, e.g.
    /// `&[("artim_timeout_secs", "2")]` (a key that is not in the base section is appended to
    /// it; use [`Config::server`] for those instead).
    pub fn toml_with(&self, overrides: &[(&str, &str)]) -> String {
        let base = self.toml();
        let mut out = String::with_capacity(base.len() + 64);
        let mut in_server = false;
        let mut done: Vec<&str> = Vec::new();
        for line in base.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                if in_server {
                    for (k, v) in overrides.iter().filter(|(k, _)| !done.contains(k)) {
                        let _ = writeln!(out, "{k} = {v}");
                    }
                }
                in_server = t == "[server]";
            }
            let key = t.split('=').next().unwrap_or("").trim();
            match overrides.iter().find(|(k, _)| in_server && *k == key) {
                Some((k, v)) => {
                    let _ = writeln!(out, "{k} = {v}");
                    done.push(k);
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Radguard {
    /// The process id of radguard (for /proc figures).
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// (VmRSS, VmHWM) in KiB from /proc/PID/status.
    pub fn memory_kib(&self) -> (u64, u64) {
        proc_memory_kib(self.pid())
    }

    /// The events radguard logged so far (the JSON of every `radguard::event` log line).
    pub fn events(&self) -> Vec<Value> {
        parse_events(&self.log())
    }

    /// The detection events logged so far.
    pub fn detections(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "detection")
            .collect()
    }

    /// Waits (30 s at most) until the log holds a detection whose detail contains `needle`;
    /// returns all the detections then.
    pub fn wait_detection(&self, needle: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let ok = wait_until(Duration::from_secs(30), || {
            all = self.detections();
            all.iter()
                .any(|e| e["detail"].as_str().is_some_and(|d| d.contains(needle)))
        });
        assert!(ok, "no detection {needle:?}; log:\n{}", self.log());
        all
    }
}

/// (VmRSS, VmHWM) in KiB of process `pid`; (0, 0) if it is gone.
pub fn proc_memory_kib(pid: u32) -> (u64, u64) {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The JSON objects of the event log lines in radguard's log: the JSON log format (a test's
/// stderr is a file, so JSON is the default), or tracing-subscriber's default text format
/// (`... event={"event":"association-aborted",...}`) a test may still have.
pub fn parse_events(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.contains("radguard::event"))
        .filter_map(|l| {
            // Text format: the event JSON is the last {...} of the line; JSON format: the
            // `fields.event` object.
            let v: Value = match serde_json::from_str::<Value>(l) {
                Ok(outer) => {
                    let inner = outer["fields"]["event"].clone();
                    inner.is_object().then_some(inner)?
                }
                Err(_) => {
                    let start = l.find("event={")? + "event=".len();
                    let end = l.rfind('}')?;
                    serde_json::from_str(l.get(start..=end)?).ok()?
                }
            };
            Some(v)
        })
        .collect()
}

/// Raw DICOM upper-layer bytes for hostile-peer tests: PDUs built by hand (so that every field
/// can be wrong), a blocking client with bounded reads, and readable descriptions of answers.
/// One association accepted and ended without any DIMSE request, as a connect-and-idle probe
/// does: released (A-RELEASE-RQ/RP) or aborted (A-ABORT) by the client.
pub fn idle_association(port: u16, calling: &str, called: &str, abort: bool) {
    let mut c = raw::Conn::connect(port);
    let ac = c
        .associate(&raw::Rq::new(calling, called))
        .unwrap_or_else(|a| panic!("the idle association was not accepted: {a}"));
    assert!(!ac.accepted().is_empty(), "no context accepted: {ac:?}");
    if abort {
        c.send(&raw::USER_ABORT).expect("send A-ABORT");
        let (end, _) = c.read_until_close(Duration::from_secs(10));
        assert!(end.is_close(), "after A-ABORT: {end}");
    } else {
        c.send(&raw::RELEASE_RQ).expect("send A-RELEASE-RQ");
        let rp = c.read_pdu(Duration::from_secs(10));
        assert_eq!(rp.pdu_type(), Some(0x06), "after A-RELEASE-RQ: {rp}");
    }
}

pub mod raw {
    use std::fmt;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

    use radguard_dicom::dimse::Command;

    pub const APP_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
    pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
    pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
    pub const IMPL_CLASS: &str = "1.2.826.0.1.3680043.10.1234.7";
    /// A-ABORT from the service user (source 0, reason 0).
    pub const USER_ABORT: [u8; 10] = [0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    pub const RELEASE_RQ: [u8; 10] = [0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0];

    /// A PDU: type, reserved byte, 32-bit big-endian length, body.
    pub fn pdu(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty, 0];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// An association item: type, reserved, 16-bit big-endian length, body.
    pub fn item(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty, 0];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// A 16-byte AE title field (space padded; longer input is cut).
    pub fn ae_field(ae: &[u8]) -> [u8; 16] {
        let mut f = [b' '; 16];
        for (d, s) in f.iter_mut().zip(ae) {
            *d = *s;
        }
        f
    }

    /// One proposed presentation context.
    #[derive(Clone, Debug)]
    pub struct Pc {
        pub id: u8,
        pub abstract_syntax: Vec<u8>,
        pub transfer_syntaxes: Vec<Vec<u8>>,
    }

    impl Pc {
        pub fn new(id: u8, abstract_syntax: &str, ts: &[&str]) -> Pc {
            Pc {
                id,
                abstract_syntax: abstract_syntax.as_bytes().to_vec(),
                transfer_syntaxes: ts.iter().map(|t| t.as_bytes().to_vec()).collect(),
            }
        }
        pub fn encode(&self) -> Vec<u8> {
            let mut body = vec![self.id, 0, 0, 0];
            body.extend(item(0x30, &self.abstract_syntax));
            for t in &self.transfer_syntaxes {
                body.extend(item(0x40, t));
            }
            item(0x20, &body)
        }
    }

    /// User information sub-items: Maximum Length (0x51), Implementation Class UID (0x52),
    /// then `extra` raw bytes.
    pub fn user_info(max_length: Option<u32>, impl_class: Option<&str>, extra: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if let Some(m) = max_length {
            body.extend(item(0x51, &m.to_be_bytes()));
        }
        if let Some(c) = impl_class {
            body.extend(item(0x52, c.as_bytes()));
        }
        body.extend_from_slice(extra);
        item(0x50, &body)
    }

    /// An A-ASSOCIATE-RQ whose every field can be set.
    #[derive(Clone, Debug)]
    pub struct Rq {
        pub protocol_version: u16,
        pub called: [u8; 16],
        pub calling: [u8; 16],
        pub app_context: Vec<u8>,
        pub contexts: Vec<Pc>,
        /// The whole user information item (type 0x50), or none at all.
        pub user_info: Option<Vec<u8>>,
    }

    impl Rq {
        /// Version 1, Verification on context 1 and CT Image Storage on context 3 (Implicit
        /// and Explicit VR Little Endian), Maximum Length 16384, an Implementation Class UID.
        pub fn new(calling: &str, called: &str) -> Rq {
            Rq {
                protocol_version: 1,
                called: ae_field(called.as_bytes()),
                calling: ae_field(calling.as_bytes()),
                app_context: APP_CONTEXT.as_bytes().to_vec(),
                contexts: vec![
                    Pc::new(1, "1.2.840.10008.1.1", &[IMPLICIT_LE]),
                    // Implicit VR Little Endian only: `ct_dataset` is encoded so, and an SCP that
                    // prefers Explicit VR (DCMTK's storescp does) would otherwise receive a data
                    // set in another transfer syntax than the one it accepted.
                    Pc::new(3, "1.2.840.10008.5.1.4.1.1.2", &[IMPLICIT_LE]),
                ],
                user_info: Some(user_info(Some(16384), Some(IMPL_CLASS), &[])),
            }
        }
        pub fn contexts(mut self, pcs: Vec<Pc>) -> Rq {
            self.contexts = pcs;
            self
        }
        pub fn body(&self) -> Vec<u8> {
            let mut b = Vec::with_capacity(256);
            b.extend_from_slice(&self.protocol_version.to_be_bytes());
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&self.called);
            b.extend_from_slice(&self.calling);
            b.extend_from_slice(&[0; 32]);
            b.extend(item(0x10, &self.app_context));
            for pc in &self.contexts {
                b.extend(pc.encode());
            }
            if let Some(u) = &self.user_info {
                b.extend_from_slice(u);
            }
            b
        }
        pub fn encode(&self) -> Vec<u8> {
            pdu(0x01, &self.body())
        }
    }

    /// A P-DATA-TF PDU with the given PDVs: (context id, message control header, data).
    pub fn pdata(pdvs: &[(u8, u8, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (ctx, control, data) in pdvs {
            body.extend_from_slice(&((data.len() + 2) as u32).to_be_bytes());
            body.push(*ctx);
            body.push(*control);
            body.extend_from_slice(data);
        }
        pdu(0x04, &body)
    }

    /// Message control header values.
    pub const CMD_LAST: u8 = 0x03;
    pub const CMD_MORE: u8 = 0x01;
    pub const DATA_LAST: u8 = 0x02;
    pub const DATA_MORE: u8 = 0x00;

    /// An Implicit VR Little Endian element (value padded to even length with `pad`).
    pub fn element(group: u16, elem: u16, value: &[u8], pad: u8) -> Vec<u8> {
        let mut v = value.to_vec();
        if v.len() % 2 == 1 {
            v.push(pad);
        }
        let mut out = Vec::with_capacity(8 + v.len());
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend(v);
        out
    }

    /// A command element value.
    pub enum Cv<'a> {
        Us(u16),
        Ui(&'a str),
        Ae(&'a str),
        Raw(&'a [u8]),
    }

    /// A command set: (0000,0000) group length first, then the elements in the given order.
    pub fn command(elems: &[(u16, Cv<'_>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (e, v) in elems {
            body.extend(match v {
                Cv::Us(x) => element(0, *e, &x.to_le_bytes(), 0),
                Cv::Ui(s) => element(0, *e, s.as_bytes(), 0),
                Cv::Ae(s) => element(0, *e, s.as_bytes(), b' '),
                Cv::Raw(b) => element(0, *e, b, 0),
            });
        }
        let mut out = element(0, 0, &(body.len() as u32).to_le_bytes(), 0);
        out.extend(body);
        out
    }

    pub const VERIFICATION: &str = "1.2.840.10008.1.1";
    pub const CT_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

    /// C-ECHO-RQ command set.
    pub fn echo_rq(message_id: u16) -> Vec<u8> {
        command(&[
            (0x0002, Cv::Ui(VERIFICATION)),
            (0x0100, Cv::Us(0x0030)),
            (0x0110, Cv::Us(message_id)),
            (0x0800, Cv::Us(0x0101)),
        ])
    }

    /// C-STORE-RQ command set (a data set follows).
    pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
        command(&[
            (0x0002, Cv::Ui(sop_class)),
            (0x0100, Cv::Us(0x0001)),
            (0x0110, Cv::Us(message_id)),
            (0x0700, Cv::Us(0)),
            (0x0800, Cv::Us(0)),
            (0x1000, Cv::Ui(sop_instance)),
        ])
    }

    /// A small CT data set in Implicit VR Little Endian (no pixel data).
    pub fn ct_dataset(sop_instance: &str) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend(element(0x0008, 0x0016, CT_STORAGE.as_bytes(), 0));
        d.extend(element(0x0008, 0x0018, sop_instance.as_bytes(), 0));
        d.extend(element(0x0008, 0x0060, b"CT", b' '));
        d.extend(element(0x0010, 0x0010, b"HOSTILE^TEST", b' '));
        d.extend(element(0x0010, 0x0020, b"H7", b' '));
        d.extend(element(
            0x0020,
            0x000D,
            b"1.2.826.0.1.3680043.10.1234.7.1",
            0,
        ));
        d.extend(element(
            0x0020,
            0x000E,
            b"1.2.826.0.1.3680043.10.1234.7.2",
            0,
        ));
        d
    }

    /// What came back from the gateway.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Answer {
        /// A whole PDU (header included).
        Pdu(Vec<u8>),
        /// The connection was closed (EOF) before any byte of a PDU.
        Closed,
        /// The connection was closed in the middle of a PDU.
        ClosedMidPdu(usize),
        /// Connection reset.
        Reset,
        /// Nothing within the time limit.
        Timeout,
        /// Another I/O error.
        Error(String),
    }

    impl Answer {
        pub fn pdu_type(&self) -> Option<u8> {
            match self {
                Answer::Pdu(b) => b.first().copied(),
                _ => None,
            }
        }
        /// (source, reason) of an A-ABORT.
        pub fn abort(&self) -> Option<(u8, u8)> {
            match self {
                Answer::Pdu(b) if b.len() == 10 && b[0] == 0x07 => Some((b[8], b[9])),
                _ => None,
            }
        }
        /// (result, source, reason) of an A-ASSOCIATE-RJ.
        pub fn reject(&self) -> Option<(u8, u8, u8)> {
            match self {
                Answer::Pdu(b) if b.len() == 10 && b[0] == 0x03 => Some((b[7], b[8], b[9])),
                _ => None,
            }
        }
        /// The end of the connection, cleanly or not.
        pub fn is_close(&self) -> bool {
            matches!(
                self,
                Answer::Closed | Answer::Reset | Answer::ClosedMidPdu(_)
            )
        }
    }

    impl fmt::Display for Answer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Answer::Pdu(b) => match b.first() {
                    Some(0x07) if b.len() == 10 => {
                        write!(f, "A-ABORT source {} reason {}", b[8], b[9])
                    }
                    Some(0x03) if b.len() == 10 => {
                        write!(f, "A-ASSOCIATE-RJ {}/{}/{}", b[7], b[8], b[9])
                    }
                    Some(0x02) => match parse_ac(b) {
                        Some(ac) => write!(
                            f,
                            "A-ASSOCIATE-AC ({} contexts, {} accepted, max length {:?})",
                            ac.results.len(),
                            ac.accepted().len(),
                            ac.max_length
                        ),
                        None => write!(f, "A-ASSOCIATE-AC (undecodable, {} bytes)", b.len()),
                    },
                    Some(0x06) => write!(f, "A-RELEASE-RP"),
                    Some(0x05) => write!(f, "A-RELEASE-RQ"),
                    Some(0x04) => match response_of(b) {
                        Some(c) => write!(
                            f,
                            "P-DATA: {} status 0x{:04X}",
                            rsp_name(c.field),
                            c.status.unwrap_or(0xFFFF)
                        ),
                        None => write!(f, "P-DATA ({} bytes)", b.len()),
                    },
                    Some(t) => write!(f, "PDU type 0x{t:02X} ({} bytes)", b.len()),
                    None => write!(f, "empty"),
                },
                Answer::Closed => write!(f, "connection closed"),
                Answer::ClosedMidPdu(n) => write!(f, "connection closed after {n} bytes of a PDU"),
                Answer::Reset => write!(f, "connection reset"),
                Answer::Timeout => write!(f, "no answer (timeout)"),
                Answer::Error(e) => write!(f, "I/O error: {e}"),
            }
        }
    }

    fn rsp_name(field: Option<u16>) -> String {
        match field {
            Some(0x8001) => "C-STORE-RSP".into(),
            Some(0x8030) => "C-ECHO-RSP".into(),
            Some(0x8020) => "C-FIND-RSP".into(),
            Some(0x8021) => "C-MOVE-RSP".into(),
            Some(0x8010) => "C-GET-RSP".into(),
            Some(v) => format!("command 0x{v:04X}"),
            None => "command without field".into(),
        }
    }

    /// The command set of a P-DATA PDU holding one whole command (single PDV), decoded.
    pub fn response_of(pdu_bytes: &[u8]) -> Option<Command> {
        let body = pdu_bytes.get(6..)?;
        let items = radguard_dicom::pdu::pdvs(body).ok()?;
        let mut cmd = Vec::new();
        for p in items.iter().filter(|p| p.is_command) {
            cmd.extend_from_slice(p.data);
        }
        Command::decode(&cmd).ok()
    }

    /// The parts of an A-ASSOCIATE-AC the tests look at.
    #[derive(Clone, Debug)]
    pub struct Ac {
        pub max_length: Option<u32>,
        /// (context id, result, transfer syntax)
        pub results: Vec<(u8, u8, String)>,
    }

    impl Ac {
        pub fn accepted(&self) -> Vec<u8> {
            self.results
                .iter()
                .filter(|r| r.1 == 0)
                .map(|r| r.0)
                .collect()
        }
        pub fn result(&self, id: u8) -> Option<u8> {
            self.results.iter().find(|r| r.0 == id).map(|r| r.1)
        }
    }

    /// Decodes an A-ASSOCIATE-AC with dicom-ul (an independent decoder).
    pub fn parse_ac(bytes: &[u8]) -> Option<Ac> {
        use dicom_ul::pdu::{
            read_pdu, Pdu, PresentationContextResultReason as R, UserVariableItem,
        };
        let Ok(Some(Pdu::AssociationAC(ac))) =
            read_pdu(bytes, dicom_ul::pdu::MAXIMUM_PDU_SIZE, false)
        else {
            return None;
        };
        let max_length = ac.user_variables.iter().find_map(|v| match v {
            UserVariableItem::MaxLength(m) => Some(*m),
            _ => None,
        });
        let results = ac
            .presentation_contexts
            .iter()
            .map(|r| {
                let code = match r.reason {
                    R::Acceptance => 0,
                    R::UserRejection => 1,
                    R::NoReason => 2,
                    R::AbstractSyntaxNotSupported => 3,
                    R::TransferSyntaxesNotSupported => 4,
                };
                (
                    r.id,
                    code,
                    r.transfer_syntax.trim_end_matches('\0').to_string(),
                )
            })
            .collect();
        Some(Ac {
            max_length,
            results,
        })
    }

    /// A blocking raw client.
    pub struct Conn {
        pub stream: TcpStream,
        /// Bytes received and not yet returned.
        buf: Vec<u8>,
    }

    impl Conn {
        pub fn connect(port: u16) -> Conn {
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect to radguard on {addr}: {e}"));
            Conn::from_stream(s)
        }

        /// Connects from `source` (bind before connect), e.g. 127.0.0.2.
        pub fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<Conn> {
            Ok(Conn::from_stream(connect_from(source, port)?))
        }

        pub fn from_stream(s: TcpStream) -> Conn {
            let _ = s.set_nodelay(true);
            let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
            Conn {
                stream: s,
                buf: Vec::new(),
            }
        }

        /// Writes all of `bytes`; an error is returned, not a panic (the gateway may have
        /// closed already, which is an answer too).
        pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.stream.write_all(bytes)?;
            self.stream.flush()
        }

        /// Closes the sending half (the gateway sees EOF).
        pub fn shutdown_write(&self) {
            let _ = self.stream.shutdown(Shutdown::Write);
        }

        fn fill(&mut self, need: usize, deadline: Instant) -> Result<(), Answer> {
            let mut chunk = [0u8; 64 * 1024];
            while self.buf.len() < need {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Answer::Timeout);
                }
                let _ = self.stream.set_read_timeout(Some(deadline - now));
                match self.stream.read(&mut chunk) {
                    Ok(0) => {
                        return Err(if self.buf.is_empty() {
                            Answer::Closed
                        } else {
                            Answer::ClosedMidPdu(self.buf.len())
                        })
                    }
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return Err(Answer::Timeout)
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err(Answer::Reset),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(Answer::Error(e.to_string())),
                }
            }
            Ok(())
        }

        /// Reads the next PDU (at most 1 MiB), or says why there is none.
        pub fn read_pdu(&mut self, timeout: Duration) -> Answer {
            let deadline = Instant::now() + timeout;
            if let Err(a) = self.fill(6, deadline) {
                return a;
            }
            let len =
                u32::from_be_bytes([self.buf[2], self.buf[3], self.buf[4], self.buf[5]]) as usize;
            if len > (1 << 20) {
                return Answer::Error(format!("the gateway announced a PDU of {len} bytes"));
            }
            if let Err(a) = self.fill(6 + len, deadline) {
                return a;
            }
            Answer::Pdu(self.buf.drain(..6 + len).collect())
        }

        /// Waits for the end of the connection (reading and dropping anything that comes);
        /// returns what ended it and the PDUs seen on the way.
        pub fn read_until_close(&mut self, timeout: Duration) -> (Answer, Vec<Answer>) {
            let deadline = Instant::now() + timeout;
            let mut seen = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.read_pdu(left) {
                    a @ Answer::Pdu(_) => seen.push(a),
                    other => return (other, seen),
                }
            }
        }

        /// Sends `rq` and returns the A-ASSOCIATE-AC, or the answer that came instead.
        pub fn associate(&mut self, rq: &Rq) -> Result<Ac, Answer> {
            if let Err(e) = self.send(&rq.encode()) {
                return Err(Answer::Error(format!("send A-ASSOCIATE-RQ: {e}")));
            }
            let a = self.read_pdu(Duration::from_secs(15));
            match a.pdu_type() {
                Some(0x02) => match &a {
                    Answer::Pdu(b) => parse_ac(b).ok_or(a.clone()),
                    _ => Err(a),
                },
                _ => Err(a),
            }
        }
    }

    /// A std TcpStream to 127.0.0.1:`port` whose local address is `source` (bind before
    /// connect, through tokio's socket builder: std has no bind-then-connect).
    pub fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::from((source, 0)))?;
            let s = tokio::time::timeout(
                Duration::from_secs(5),
                sock.connect(SocketAddr::from(([127, 0, 0, 1], port))),
            )
            .await
            .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "connect timed out"))??;
            let s = s.into_std()?;
            s.set_nonblocking(false)?;
            Ok(s)
        })
    }
}

// ========================================================== DICOM TLS and peer identity (issue 3)
// One block, appended whole: helpers of tests/tls.rs. Everything lives in `tls_peers`.

/// DICOM TLS test helpers: a quick-start PKI made by `radguard tls init`, extra certificates made
/// with the `openssl` CLI (expired client, RSA gateway), TLS options for DCMTK and the probe,
/// radguard with TLS listeners, reloads, Orthanc with DICOM TLS, `openssl s_client`, JWTs.
pub mod tls_peers {
    use super::*;

    pub const OPENSSL_BIN: &str = "/usr/bin/openssl";

    // --------------------------------------------------------------------------------- PKI

    /// A PKI made by `radguard tls init DIR --client NAME... --json` (CA, gateway certificate
    /// for localhost/127.0.0.1/::1, client certificates), plus extras made with `openssl`.
    pub struct Pki {
        pub dir: PathBuf,
        /// The `--json` summary `radguard tls init` printed.
        pub summary: Value,
        tmp: Option<TempDir>,
    }

    impl Pki {
        /// `radguard tls init <tmp>/pki --client NAME...`.
        pub fn init(label: &str, clients: &[&str]) -> Pki {
            let tmp = tmp_dir(&format!("pki-{label}"));
            let dir = tmp.path().join("pki");
            let mut cmd = Command::new(Radguard::exe());
            cmd.args(["tls", "init"]).arg(&dir);
            for c in clients {
                cmd.args(["--client", c]);
            }
            cmd.arg("--json");
            let out = run(&mut cmd, CLIENT_TIMEOUT);
            out.assert_success("radguard tls init");
            let summary: Value = serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("radguard tls init --json: {e}\n{}", out.text()));
            Pki {
                dir,
                summary,
                tmp: Some(tmp),
            }
        }

        pub fn ca(&self) -> PathBuf {
            self.dir.join("ca.pem")
        }
        pub fn ca_key(&self) -> PathBuf {
            self.dir.join("ca-key.pem")
        }
        pub fn gateway_cert(&self) -> PathBuf {
            self.dir.join("gateway.pem")
        }
        pub fn gateway_key(&self) -> PathBuf {
            self.dir.join("gateway-key.pem")
        }
        /// (certificate, key) of a client made by `init` or [`Pki::issue`].
        pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
            let cert = self.dir.join(format!("client-{name}.pem"));
            let key = self.dir.join(format!("client-{name}-key.pem"));
            assert!(cert.is_file(), "{} is missing", cert.display());
            (cert, key)
        }

        /// `radguard tls issue DIR NAME`.
        pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
            let mut cmd = Command::new(Radguard::exe());
            cmd.args(["tls", "issue"]).arg(&self.dir).arg(name);
            run(&mut cmd, CLIENT_TIMEOUT).assert_success("radguard tls issue");
            self.client(name)
        }

        /// A client certificate signed by this CA with CN `name` that expired long ago
        /// (2020-01-01 .. 2020-02-01), made with `openssl ca`.
        pub fn expired_client(&self, name: &str) -> (PathBuf, PathBuf) {
            let ext = format!(
                "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = clientAuth\nsubjectAltName = DNS:{name}\n"
            );
            self.openssl_sign(
                name,
                &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                &ext,
                ("20200101000000Z", "20200201000000Z"),
            )
        }

        /// An RSA-2048 server certificate (CN localhost, SAN localhost + 127.0.0.1, valid now)
        /// signed by this CA: lets the profile test offer RSA key exchange suites to a server
        /// whose key could do them.
        pub fn rsa_gateway(&self) -> (PathBuf, PathBuf) {
            let ext = "basicConstraints = critical,CA:FALSE\n\
                       keyUsage = critical,digitalSignature,keyEncipherment\n\
                       extendedKeyUsage = serverAuth,clientAuth\n\
                       subjectAltName = DNS:localhost,IP:127.0.0.1\n";
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let start = asn1_time(now.saturating_sub(3600));
            let end = asn1_time(now + 30 * 86400);
            self.openssl_sign("localhost", &["-newkey", "rsa:2048"], ext, (&start, &end))
        }

        /// `openssl req` a key + CSR with CN `cn`, then `openssl ca` it with this CA, the given
        /// extensions and validity; returns (cert, key) in DIR/extra/.
        fn openssl_sign(
            &self,
            cn: &str,
            newkey: &[&str],
            extensions: &str,
            (start, end): (&str, &str),
        ) -> (PathBuf, PathBuf) {
            require_tool(OPENSSL_BIN);
            let extra = self.dir.join("extra");
            let work = extra.join(format!("ca-{cn}-{start}"));
            fs::create_dir_all(&work).unwrap();
            let key = extra.join(format!("{cn}-{start}-key.pem"));
            let csr = work.join("req.csr");
            let cert = extra.join(format!("{cn}-{start}.pem"));
            fs::write(work.join("index.txt"), "").unwrap();
            let cnf = work.join("ca.cnf");
            fs::write(
                &cnf,
                format!(
                    "[ca]\ndefault_ca = rg\n[rg]\ndatabase = {}\nnew_certs_dir = {}\n\
                     rand_serial = yes\ndefault_md = sha256\npolicy = pol\nunique_subject = no\n\
                     copy_extensions = none\nx509_extensions = ext\n[pol]\ncommonName = supplied\n\
                     [ext]\n{extensions}",
                    work.join("index.txt").display(),
                    work.display()
                ),
            )
            .unwrap();
            let mut req = Command::new(OPENSSL_BIN);
            req.arg("req")
                .args(["-new", "-nodes"])
                .args(newkey)
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr)
                .args(["-subj", &format!("/CN={cn}")]);
            run(&mut req, CLIENT_TIMEOUT).assert_success("openssl req");
            let mut ca = Command::new(OPENSSL_BIN);
            ca.args(["ca", "-batch", "-notext", "-config"])
                .arg(&cnf)
                .arg("-cert")
                .arg(self.ca())
                .arg("-keyfile")
                .arg(self.ca_key())
                .args(["-startdate", start, "-enddate", end])
                .arg("-in")
                .arg(&csr)
                .arg("-out")
                .arg(&cert);
            run(&mut ca, CLIENT_TIMEOUT).assert_success("openssl ca");
            (cert, key)
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            keep_on_failure(&mut self.tmp);
        }
    }

    /// `YYYYMMDDHHMMSSZ` (ASN.1 GeneralizedTime, as `openssl ca -startdate` takes it) of a Unix
    /// time.
    pub fn asn1_time(unix: u64) -> String {
        let days = (unix / 86400) as i64;
        let secs = unix % 86400;
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}{m:02}{d:02}{:02}{:02}{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }

    /// `radguard tls fingerprint --json CERT` → the SHA-256 fingerprint (hex).
    pub fn fingerprint(cert: &Path) -> String {
        let mut cmd = Command::new(Radguard::exe());
        cmd.args(["tls", "fingerprint", "--json"]).arg(cert);
        let out = run(&mut cmd, CLIENT_TIMEOUT);
        out.assert_success("radguard tls fingerprint");
        let v: Value = serde_json::from_str(&out.stdout).expect("fingerprint --json");
        v[0]["sha256_hex"]
            .as_str()
            .unwrap_or_else(|| panic!("no sha256_hex in {v}"))
            .to_string()
    }

    /// `printf 'PASSCODE\n' | radguard passwd --user NAME` → the `[[user]]` table it prints.
    pub fn passwd_user(name: &str, passcode: &str) -> String {
        let mut child = Command::new(Radguard::exe())
            .args(["passwd", "--user", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run radguard passwd");
        {
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{passcode}").expect("write the passcode");
        }
        let out = child.wait_with_output().expect("radguard passwd");
        assert!(
            out.status.success(),
            "radguard passwd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        assert!(
            text.contains("[[user]]") && text.contains("$argon2id$"),
            "radguard passwd --user printed no [[user]] table: {text}"
        );
        text
    }

    // ---------------------------------------------------------------- DCMTK and probe TLS

    /// DCMTK's TLS options: `+tls KEY CERT -pw +cf CA` (PEM; the peer's certificate is
    /// required and verified against CA, DCMTK's default).
    pub fn dcmtk_tls(key: &Path, cert: &Path, ca: &Path) -> Vec<OsString> {
        vec![
            "+tls".into(),
            key.into(),
            cert.into(),
            "-pw".into(),
            "+cf".into(),
            ca.into(),
        ]
    }

    /// `echoscu -v -aet CALLING -aec CALLED TLS... 127.0.0.1 PORT` (TCP_NODELAY=1).
    pub fn echoscu_tls(port: u16, calling: &str, called: &str, tls: &[OsString]) -> Output {
        let mut rest = tls.to_vec();
        rest.extend(["127.0.0.1".into(), port.to_string().into()]);
        dcmtk_client("echoscu", calling, called, &rest)
    }

    /// `storescu -v -aet CALLING -aec CALLED TLS... [+sd] 127.0.0.1 PORT PATHS...`, one
    /// association.
    pub fn storescu_tls(
        port: u16,
        calling: &str,
        called: &str,
        tls: &[OsString],
        paths: &[PathBuf],
    ) -> Output {
        let mut rest = tls.to_vec();
        if paths.iter().any(|p| p.is_dir()) {
            rest.push("+sd".into());
        }
        rest.extend(["127.0.0.1".into(), port.to_string().into()]);
        rest.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
        dcmtk_client("storescu", calling, called, &rest)
    }

    /// dicom_probe.py options for TLS: `--tls-ca CA --tls-cert CERT --tls-key KEY`.
    pub fn probe_tls(ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            ca.display().to_string(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]
    }

    /// Runs the probe with `opts` (common options) and then `command` (e.g. `["echo"]`).
    pub fn probe_with(
        port: u16,
        calling: &str,
        called: &str,
        opts: &[String],
        command: &[&str],
    ) -> Value {
        let mut rest: Vec<&str> = opts.iter().map(String::as_str).collect();
        rest.extend_from_slice(command);
        probe(port, calling, called, &rest)
    }

    // ------------------------------------------------------------------------- radguard

    /// Parses `radguard: listening on dicom-tls://IP:PORT as AE X`.
    pub fn parse_listening_tls(line: &str) -> Option<SocketAddr> {
        let rest = line
            .trim()
            .strip_prefix("radguard: listening on dicom-tls://")?;
        rest.split_whitespace().next()?.parse().ok()
    }

    impl Radguard {
        /// Like [`Radguard::start_fresh`], for configs with TLS listeners only, plain ones or
        /// both: returns once every listener line is printed (the `radguard: data in` line
        /// follows them). `ports` holds the plain ones, [`Radguard::tls_ports`] the TLS ones.
        pub fn start_any(config_toml: &str) -> Radguard {
            let data = tmp_dir("rg-data");
            let tmp = tmp_dir("radguard");
            let cfg = tmp.path().join("radguard.toml");
            fs::write(&cfg, config_toml).expect("write radguard.toml");
            let err = tmp.path().join("radguard.err");
            let out_copy = tmp.path().join("radguard.out");
            let mut cmd = Command::new(Radguard::exe());
            cmd.arg("serve")
                .arg("--config")
                .arg(&cfg)
                .arg("--data")
                .arg(data.path())
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(fs::File::create(&err).expect("create radguard.err"));
            let mut proc =
                Proc::spawn_raw("radguard", &mut cmd, vec![out_copy.clone(), err], false);
            let stdout = Arc::new(Mutex::new(Vec::new()));
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
            let ready = |l: &Arc<Mutex<Vec<String>>>| {
                l.lock()
                    .unwrap()
                    .iter()
                    .any(|s| s.starts_with("radguard: data in "))
            };
            let ok = wait_until(START_TIMEOUT, || ready(&stdout) || proc.exited().is_some());
            if !ok || !ready(&stdout) {
                let status = proc.exited();
                panic!(
                    "radguard did not print its listeners within {START_TIMEOUT:?} (exit \
                     status: {status:?})\n--- config ---\n{config_toml}\n{}",
                    proc.log()
                );
            }
            let ports = stdout
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| parse_listening(l))
                .map(|a| a.port())
                .collect();
            Radguard {
                ports,
                data_dir: data.path().to_path_buf(),
                config_path: Some(cfg),
                proc,
                stdout,
                tmp: Some(tmp),
                data_tmp: Some(data),
            }
        }

        /// Ports of the `dicom-tls://` listeners, in order.
        pub fn tls_ports(&self) -> Vec<u16> {
            self.stdout_lines()
                .iter()
                .filter_map(|l| parse_listening_tls(l))
                .map(|a| a.port())
                .collect()
        }

        /// The first TLS listener's port.
        pub fn tls_port(&self) -> u16 {
            *self
                .tls_ports()
                .first()
                .unwrap_or_else(|| panic!("radguard has no TLS listener:\n{}", self.log()))
        }

        /// Replaces the config file radguard was started with (takes effect on reload).
        pub fn rewrite_config(&self, toml: &str) {
            let p = self
                .config_path
                .as_ref()
                .expect("radguard runs without --config");
            fs::write(p, toml).expect("rewrite radguard.toml");
        }

        /// `config-reloaded` events logged so far.
        pub fn reload_events(&self) -> Vec<Value> {
            self.events()
                .into_iter()
                .filter(|e| e["event"] == "config-reloaded")
                .collect()
        }

        /// Waits for the pid file (written once serving), then `radguard reload --data DIR`.
        pub fn reload_cli(&self) -> Output {
            let pid = self.data_dir.join("radguard.pid");
            assert!(
                wait_until(START_TIMEOUT, || pid.is_file()),
                "{} never appeared",
                pid.display()
            );
            let mut cmd = Command::new(Radguard::exe());
            cmd.arg("reload").arg("--data").arg(&self.data_dir);
            run(&mut cmd, CLIENT_TIMEOUT)
        }

        /// After a SIGHUP or `radguard reload`: waits for config-reloaded event number
        /// `before + 1` and returns it.
        pub fn wait_reload(&self, before: usize) -> Value {
            let mut got = None;
            let ok = wait_until(Duration::from_secs(20), || {
                got = self.reload_events().get(before).cloned();
                got.is_some()
            });
            assert!(
                ok,
                "no config-reloaded event after the reload:\n{}",
                self.log()
            );
            got.unwrap()
        }

        /// `security-alert` events logged so far.
        pub fn security_alerts(&self) -> Vec<Value> {
            self.events()
                .into_iter()
                .filter(|e| e["event"] == "security-alert")
                .collect()
        }

        /// Waits (up to 10 s) for a security alert whose detail contains `needle`.
        pub fn wait_alert(&self, needle: &str) -> Value {
            let mut got = None;
            let ok = wait_until(Duration::from_secs(10), || {
                got = self
                    .security_alerts()
                    .into_iter()
                    .find(|e| e["detail"].as_str().is_some_and(|d| d.contains(needle)));
                got.is_some()
            });
            assert!(
                ok,
                "no security-alert with {needle:?} in its detail; alerts: {:#?}",
                self.security_alerts()
            );
            got.unwrap()
        }
    }

    // -------------------------------------------------------------------------- Orthanc

    impl Orthanc {
        /// [`Orthanc::start`] with extra configuration keys (e.g. DicomTlsEnabled ...) merged
        /// into its JSON configuration.
        pub fn start_extra(aet: &str, extra: &Value) -> Orthanc {
            let exe = require_tool(ORTHANC_BIN);
            let tmp = tmp_dir("orthanc");
            let mut last_log = String::new();
            for _ in 0..3 {
                let (dicom_port, http_port) = (free_port(), free_port());
                let storage = tmp.path().join(format!("db-{dicom_port}"));
                fs::create_dir_all(&storage).unwrap();
                let mut cfg = serde_json::json!({
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
                    "DicomThreadsCount": 4,
                    "DicomScpTimeout": 30,
                    "UnknownSopClassAccepted": false,
                    "OverwriteInstances": false,
                    "StableAge": 60,
                });
                if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
                    for (k, v) in e {
                        c.insert(k.clone(), v.clone());
                    }
                }
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
    }

    // ----------------------------------------------------------------------- openssl CLI

    /// `openssl s_client -connect 127.0.0.1:PORT ARGS...` with stdin closed (it ends after the
    /// handshake), bounded by 20 s.
    pub fn s_client(port: u16, args: &[&str]) -> Output {
        let exe = require_tool(OPENSSL_BIN);
        let mut cmd = Command::new(exe);
        cmd.arg("s_client")
            .arg("-connect")
            .arg(format!("127.0.0.1:{port}"))
            .args(args);
        run(&mut cmd, Duration::from_secs(20))
    }

    /// The protocol and cipher `openssl s_client` reports as negotiated (`New, TLSv1.3,
    /// Cipher is X`), or None when no session was established.
    pub fn s_client_session(out: &Output) -> Option<(String, String)> {
        out.stdout.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("New, ")?;
            let (proto, cipher) = rest.split_once(", Cipher is ")?;
            (proto != "(NONE)" && cipher != "(NONE)")
                .then(|| (proto.trim().to_string(), cipher.trim().to_string()))
        })
    }

    // ----------------------------------------------------------------------------- JWT

    /// An Ed25519 key pair made with `openssl genpkey` in `dir`: (private PEM, public PEM).
    pub fn ed25519_keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let exe = require_tool(OPENSSL_BIN);
        let private = dir.join(format!("{name}.pem"));
        let public = dir.join(format!("{name}.pub.pem"));
        let mut gen = Command::new(&exe);
        gen.args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&private);
        run(&mut gen, CLIENT_TIMEOUT).assert_success("openssl genpkey ed25519");
        let mut pubout = Command::new(&exe);
        pubout
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public);
        run(&mut pubout, CLIENT_TIMEOUT).assert_success("openssl pkey -pubout");
        (private, public)
    }

    /// base64url without padding (RFC 7515).
    pub fn b64url(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let emit = chunk.len() + 1;
            for i in 0..emit {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// A compact JWS (EdDSA) of `claims`, header `{"alg":"EdDSA","typ":"JWT","kid":KID}`,
    /// signed with `openssl pkeyutl -sign -rawin` (Ed25519 signs the message itself).
    pub fn jwt_eddsa(private_key: &Path, kid: &str, claims: &Value) -> String {
        let exe = require_tool(OPENSSL_BIN);
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let tmp = tmp_dir("jwt");
        let msg = tmp.path().join("msg");
        let sig = tmp.path().join("sig");
        fs::write(&msg, &input).unwrap();
        let mut cmd = Command::new(exe);
        cmd.args(["pkeyutl", "-sign", "-rawin", "-inkey"])
            .arg(private_key)
            .arg("-in")
            .arg(&msg)
            .arg("-out")
            .arg(&sig);
        run(&mut cmd, CLIENT_TIMEOUT).assert_success("openssl pkeyutl -sign");
        let sig = fs::read(&sig).unwrap();
        assert_eq!(sig.len(), 64, "an Ed25519 signature has 64 bytes");
        format!("{input}.{}", b64url(&sig))
    }

    /// Seconds since the Unix epoch.
    pub fn unix_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }
}

// ------------------------------------------------------------- audit trail end to end (issue 4)

/// Support for the audit-trail tests (`tests/audit.rs`): the `radguard audit` CLI, reading a
/// store through `radguard_audit`, a private PostgreSQL schema per test, raw SQL against a store
/// (to tamper with it), a real rsyslogd receiving RFC 5425 (TLS) with mutual authentication, and
/// PS3.15 A.5 message checks (xmllint against the crate's RELAX NG schema; the fields read with
/// Python's ElementTree).
///
/// Prerequisite besides `setup-test-env.sh`: `scripts/setup-radguard-audit.sh` (rsyslog +
/// rsyslog-gnutls, libxml2-utils, the PostgreSQL test cluster on 127.0.0.1:55432). A missing
/// piece makes the test fail with a message saying so.
pub mod audit_e2e {
    use super::*;

    use radguard_audit::atna::{message_for, AtnaSource};
    use radguard_audit::record::AuditRecord;
    use radguard_audit::StoreSpec;

    pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
    pub const PSQL: &str = "/usr/bin/psql";
    pub const XMLLINT: &str = "/usr/bin/xmllint";
    const AUDIT_HINT: &str = "run `bash scripts/setup-radguard-audit.sh` (as root) first";

    /// Panics with the audit setup hint if `path` is not an executable file.
    pub fn require_audit_tool(path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        assert!(p.is_file(), "required tool {path} is missing: {AUDIT_HINT}");
        p
    }

    /// The PostgreSQL test server (the default of the radguard-audit tests too).
    pub fn pg_conn() -> String {
        std::env::var("RADGUARD_TEST_PG").unwrap_or_else(|_| {
            "host=127.0.0.1 port=55432 user=radguard password=radguard dbname=radguard_test".into()
        })
    }

    /// `radguard audit ARGS...` (exit 0 ok, 1 verify found a fault, 2 usage/store error).
    pub fn audit_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
        let mut cmd = Command::new(Radguard::exe());
        cmd.arg("audit").args(args);
        run(&mut cmd, CLIENT_TIMEOUT)
    }

    /// `radguard audit verify --store STORE --json [EXTRA...]`: (exit code, the JSON report).
    pub fn audit_verify(store: &str, extra: &[&str]) -> (Option<i32>, Value, Output) {
        let mut args = vec!["verify", "--store", store, "--json"];
        args.extend_from_slice(extra);
        let out = audit_cli(&args);
        let v = out
            .stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .unwrap_or(Value::Null);
        (out.code, v, out)
    }

    /// The SQLite store of a data folder (the default `[audit]`).
    pub fn sqlite_store(data_dir: &Path) -> String {
        data_dir.join("audit.sqlite").display().to_string()
    }

    /// One stored record: the entry verbatim and parsed.
    #[derive(Debug, Clone)]
    pub struct TrailRow {
        pub seq: u64,
        pub entry: String,
        pub record: AuditRecord,
    }

    impl TrailRow {
        /// The record kind (`association-accepted`, `instances-transferred`, ...).
        pub fn kind(&self) -> String {
            self.record.kind().to_string()
        }
    }

    /// Every record of chain `node` in `store` (a SQLite path or `postgresql:...#schema=S`), in
    /// chain order, read through the crate's own store code.
    pub fn read_trail(store: &str, node: &str) -> Vec<TrailRow> {
        let spec = StoreSpec::parse(store).unwrap_or_else(|e| panic!("store {store}: {e}"));
        let mut st = spec
            .open()
            .unwrap_or_else(|e| panic!("open audit store {store}: {e}"));
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let rows = st
                .read_after(node, after, 5000)
                .unwrap_or_else(|e| panic!("read audit store {store}: {e}"));
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for r in rows {
                let record: AuditRecord = serde_json::from_str(&r.entry)
                    .unwrap_or_else(|e| panic!("record {} does not parse: {e}", r.seq));
                out.push(TrailRow {
                    seq: r.seq,
                    entry: r.entry,
                    record,
                });
            }
        }
        out
    }

    /// The seqs of the records that have a PS3.15 A.5 message (what the syslog export sends).
    pub fn message_seqs(rows: &[TrailRow], node: &str) -> Vec<u64> {
        let src = AtnaSource::new(node);
        rows.iter()
            .filter(|r| message_for(&r.record, &src).is_some())
            .map(|r| r.seq)
            .collect()
    }

    /// Re-reads the chain every 20 ms until `f` accepts its records (Some(them)) or `timeout`
    /// passes (None).
    pub fn wait_trail(
        store: &str,
        node: &str,
        timeout: Duration,
        mut f: impl FnMut(&[TrailRow]) -> bool,
    ) -> Option<Vec<TrailRow>> {
        let mut rows = Vec::new();
        let ok = wait_until(timeout, || {
            rows = read_trail(store, node);
            f(&rows)
        });
        ok.then_some(rows)
    }

    /// `psql -d CONN -c SQL` (ON_ERROR_STOP, unaligned tuples only).
    pub fn psql(conn: &str, sql: &str) -> Output {
        let exe = require_audit_tool(PSQL);
        let mut cmd = Command::new(exe);
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-tA",
            "-d",
            conn,
            "-c",
            sql,
        ]);
        run(&mut cmd, Duration::from_secs(60))
    }

    /// A schema of its own in the PostgreSQL test database, dropped on drop.
    pub struct PgSchema {
        pub conn: String,
        pub name: String,
    }

    impl PgSchema {
        /// A fresh schema `rg_e2e_<label>_<pid>_<n>`; fails the test when the server is not there.
        pub fn new(label: &str) -> PgSchema {
            static N: AtomicU32 = AtomicU32::new(0);
            let conn = pg_conn();
            let name = format!(
                "rg_e2e_{label}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let out = psql(&conn, &format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
            assert!(
                out.success(),
                "PostgreSQL test server unreachable ({conn}): {AUDIT_HINT} or set \
                 RADGUARD_TEST_PG\n{}",
                out.text()
            );
            PgSchema { conn, name }
        }

        /// The connection string with `application_name` set to the schema name (so the
        /// gateway's sessions can be found in pg_stat_activity).
        pub fn gateway_conn(&self) -> String {
            format!("{} application_name={}", self.conn, self.name)
        }

        /// The store as the CLI names it.
        pub fn spec(&self) -> String {
            format!("postgresql:{}#schema={}", self.conn, self.name)
        }

        /// An `[audit]` table selecting this schema.
        pub fn audit_toml(&self, node: &str, extra: &str) -> String {
            format!(
                "\n[audit]\nnode = {node:?}\nstore = \"postgresql\"\npostgresql = {:?}\n\
                 postgresql_schema = {:?}\n{extra}",
                self.gateway_conn(),
                self.name
            )
        }

        /// Runs `sql` with the schema as search path; panics on failure.
        pub fn exec(&self, sql: &str) -> String {
            let out = psql(
                &self.conn,
                &format!("SET search_path TO {}; {sql}", self.name),
            );
            assert!(out.success(), "SQL failed: {sql}\n{}", out.text());
            out.stdout
        }

        /// Ends every session the gateway opened (as a database restart or failover would).
        pub fn terminate_gateway_sessions(&self) -> usize {
            let out = self.exec(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = '{}'",
                self.name
            ));
            out.trim().parse().unwrap_or(0)
        }
    }

    impl Drop for PgSchema {
        fn drop(&mut self) {
            let _ = psql(
                &self.conn,
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
            );
        }
    }

    /// Runs SQL against a SQLite file (Python's sqlite3 module from the test venv).
    pub fn sqlite_exec(path: &Path, sql: &str) -> Output {
        let mut cmd = Command::new(venv_python());
        cmd.args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.executescript(sys.argv[2])\n\
             c.commit()\n\
             c.close()\n",
        ])
        .arg(path)
        .arg(sql);
        run(&mut cmd, Duration::from_secs(60))
    }

    /// One attribute of a DICOM file (pydicom), as text.
    pub fn dicom_attr(file: &Path, keyword: &str) -> String {
        let mut cmd = Command::new(venv_python());
        cmd.args([
            "-c",
            "import sys, pydicom\n\
             ds = pydicom.dcmread(sys.argv[1], stop_before_pixels=True)\n\
             print(str(ds.get(sys.argv[2], '')))\n",
        ])
        .arg(file)
        .arg(keyword);
        let out = run(&mut cmd, CLIENT_TIMEOUT);
        out.assert_success("read a DICOM attribute");
        out.stdout.trim().to_string()
    }

    /// A private rsyslogd: TLS through the gtls driver on a loopback port, mutual
    /// authentication (certificates from `radguard_tls::init_quickstart`: its gateway
    /// certificate serves rsyslog, the client certificate `radguard` is the gateway's, and
    /// rsyslog admits only that name: `x509/name`), and every message written as one JSON line
    /// of the RFC 5424 fields rsyslog parsed.
    pub struct Rsyslog {
        pub port: u16,
        pub certs: PathBuf,
        dir: Option<TempDir>,
        proc: Option<Proc>,
        starts: u32,
    }

    /// One message as rsyslog parsed it.
    #[derive(Debug, Clone)]
    pub struct Received {
        /// `sequenceId` of the `[meta]` structured data: the record's seq.
        pub seq: u64,
        pub hostname: String,
        pub app: String,
        pub msgid: String,
        pub pri: String,
        pub input: String,
        pub sd: String,
        /// The MSG part (the A.5 XML), BOM and leading space removed.
        pub msg: String,
    }

    impl Rsyslog {
        pub fn start() -> Rsyslog {
            require_audit_tool(RSYSLOGD);
            let tmp = tmp_dir("rsyslog");
            let dir = tmp.path().to_path_buf();
            let certs = dir.join("pki");
            radguard_tls::init_quickstart(&certs, &[], &["radguard".to_string()])
                .expect("make test certificates");
            fs::create_dir_all(dir.join("work")).unwrap();
            let mut r = Rsyslog {
                port: 0,
                certs,
                dir: Some(tmp),
                proc: None,
                starts: 0,
            };
            r.resume();
            r
        }

        fn dir(&self) -> &Path {
            self.dir.as_ref().map(|d| d.path()).expect("rsyslog dir")
        }

        fn write_conf(&self, port: u16) -> PathBuf {
            let d = self.dir().display();
            let c = self.certs.display();
            let conf = format!(
                r#"global(workDirectory="{d}/work" maxMessageSize="256k"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{c}/ca.pem"
       DefaultNetstreamDriverCertFile="{c}/gateway.pem"
       DefaultNetstreamDriverKeyFile="{c}/gateway-key.pem")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/name" PermittedPeer=["radguard"])
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="rgjson" type="list" option.jsonf="on") {{
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="input" name="inputname" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
action(type="omfile" file="{d}/out.jsonl" template="rgjson")
"#
            );
            let path = self.dir().join("rsyslog.conf");
            fs::write(&path, conf).expect("write rsyslog.conf");
            path
        }

        /// Starts rsyslogd (again, on the same port after [`Rsyslog::stop`]).
        pub fn resume(&mut self) {
            assert!(self.proc.is_none(), "rsyslogd is already running");
            let mut last = String::new();
            for _ in 0..3 {
                let port = if self.port == 0 {
                    free_port()
                } else {
                    self.port
                };
                let conf = self.write_conf(port);
                let check = run(
                    Command::new(RSYSLOGD).args(["-N1", "-f"]).arg(&conf),
                    Duration::from_secs(30),
                );
                assert!(
                    check.success(),
                    "rsyslog config rejected:\n{}",
                    check.text()
                );
                self.starts += 1;
                let mut cmd = Command::new(RSYSLOGD);
                cmd.args(["-n", "-f"])
                    .arg(&conf)
                    .arg("-i")
                    .arg(self.dir().join("rsyslog.pid"));
                let mut p = Proc::spawn(
                    &format!("rsyslogd-{}", self.starts),
                    &mut cmd,
                    self.dir(),
                    false,
                );
                if wait_until(START_TIMEOUT, || is_listening(port) || p.exited().is_some())
                    && p.exited().is_none()
                {
                    self.port = port;
                    self.proc = Some(p);
                    return;
                }
                last = p.log();
                p.kill();
                if self.port != 0 {
                    // Restart on a fixed port: retry the same one (TIME_WAIT, slow exit).
                    thread::sleep(Duration::from_millis(500));
                }
            }
            panic!("rsyslogd did not listen (3 attempts):\n{last}");
        }

        /// SIGTERM and wait: rsyslog closes its connections and flushes its output.
        pub fn stop(&mut self) {
            if let Some(mut p) = self.proc.take() {
                p.terminate(Duration::from_secs(15));
            }
        }

        /// A `[[audit.syslog]]` table sending to this receiver over TLS with a client
        /// certificate.
        pub fn syslog_toml(&self) -> String {
            let c = &self.certs;
            format!(
                "\n[[audit.syslog]]\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\n\
                 ca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
                self.port,
                c.join("ca.pem").display().to_string(),
                c.join("client-radguard.pem").display().to_string(),
                c.join("client-radguard-key.pem").display().to_string(),
            )
        }

        /// Everything rsyslog wrote so far.
        pub fn received(&self) -> Vec<Received> {
            let text = fs::read_to_string(self.dir().join("out.jsonl")).unwrap_or_default();
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                        panic!("rsyslog wrote a line that is not JSON ({e}): {l}")
                    });
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                    let sd = s("sd");
                    let seq = sd
                        .split("sequenceId=\"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("no sequenceId in {sd:?}"));
                    Received {
                        seq,
                        hostname: s("hostname"),
                        app: s("app"),
                        msgid: s("msgid"),
                        pri: s("pri"),
                        input: s("input"),
                        sd,
                        msg: s("msg")
                            .trim_start_matches('\u{feff}')
                            .trim_start()
                            .to_string(),
                    }
                })
                .collect()
        }

        /// Waits until at least `n` messages arrived (or `timeout`); returns what arrived.
        pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
            let mut got = Vec::new();
            wait_until(timeout, || {
                got = self.received();
                got.len() >= n
            });
            got
        }

        pub fn log(&self) -> String {
            self.proc.as_ref().map(Proc::log).unwrap_or_default()
        }
    }

    impl Drop for Rsyslog {
        fn drop(&mut self) {
            if let Some(mut p) = self.proc.take() {
                p.kill();
            }
            keep_on_failure(&mut self.dir);
        }
    }

    /// `radguard serve` started with extra environment variables (e.g. `RADGUARD_LOG=trace`),
    /// which [`Radguard`] does not set. stdout and stderr go to files ([`Proc::log`]).
    pub struct RadguardEnv {
        pub proc: Proc,
        pub port: u16,
        tmp: Option<TempDir>,
    }

    impl RadguardEnv {
        pub fn start(config_toml: &str, data_dir: &Path, env: &[(&str, &str)]) -> RadguardEnv {
            let tmp = tmp_dir("radguard-env");
            let cfg = tmp.path().join("radguard.toml");
            fs::write(&cfg, config_toml).expect("write radguard.toml");
            fs::create_dir_all(data_dir).expect("create radguard data dir");
            let mut cmd = Command::new(Radguard::exe());
            cmd.arg("serve")
                .arg("--config")
                .arg(&cfg)
                .arg("--data")
                .arg(data_dir)
                .envs(env.iter().copied());
            let mut proc = Proc::spawn("radguard", &mut cmd, tmp.path(), false);
            let out = tmp.path().join("radguard.out");
            let mut port = None;
            wait_until(START_TIMEOUT, || {
                port = fs::read_to_string(&out)
                    .ok()
                    .and_then(|s| s.lines().find_map(parse_listening))
                    .map(|a| a.port());
                port.is_some() || proc.exited().is_some()
            });
            let Some(port) = port else {
                panic!("radguard did not start listening:\n{}", proc.log());
            };
            RadguardEnv {
                proc,
                port,
                tmp: Some(tmp),
            }
        }

        /// SIGTERM, wait up to 15 s; returns the exit status.
        pub fn stop(&mut self) -> ExitStatus {
            self.proc.terminate(Duration::from_secs(15))
        }

        /// Everything radguard wrote on stdout and stderr.
        pub fn log(&self) -> String {
            self.proc.log()
        }
    }

    impl Drop for RadguardEnv {
        fn drop(&mut self) {
            keep_on_failure(&mut self.tmp);
        }
    }

    /// The crate's RELAX NG transcription of the PS3.15 A.5.1 schema.
    pub fn a5_schema() -> PathBuf {
        project_root().join("crates/radguard-audit/schema/dicom-audit-message.rng")
    }

    /// Validates every message against the A.5.1 schema with xmllint; Err lists the failures.
    pub fn a5_validate(xmls: &[&str]) -> Result<(), String> {
        let lint = require_audit_tool(XMLLINT);
        let tmp = tmp_dir("a5");
        let mut files = Vec::new();
        for (i, x) in xmls.iter().enumerate() {
            let p = tmp.path().join(format!("m{i:05}.xml"));
            fs::write(&p, x).unwrap();
            files.push(p);
        }
        let mut errors = String::new();
        for chunk in files.chunks(200) {
            let mut cmd = Command::new(&lint);
            cmd.args(["--noout", "--relaxng"])
                .arg(a5_schema())
                .args(chunk);
            let out = run(&mut cmd, CLIENT_TIMEOUT);
            if !out.success() {
                errors.push_str(&out.stderr);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// What the tests read from an A.5 message (parsed by Python's ElementTree, an XML parser
    /// independent of the one that wrote it), one JSON object per message:
    /// `{event_id, action, outcome, type_codes, source_id, participants: [{user_id,
    /// alt_user_id, requestor, nap_id, nap_type, roles}], objects: [{id, type, role, id_type,
    /// name, query, details, sop_classes: [{uid, n, instances}]}]}` (codes as
    /// `{code, scheme, text}`).
    pub fn a5_fields(xmls: &[&str]) -> Vec<Value> {
        const PY: &str = r#"
import json, sys, xml.etree.ElementTree as ET
def code(e):
    return None if e is None else {"code": e.get("csd-code"), "scheme": e.get("codeSystemName"), "text": e.get("originalText")}
out = []
for x in json.load(sys.stdin):
    r = ET.fromstring(x.encode("utf-8"))
    ev = r.find("EventIdentification")
    out.append({
        "event_id": code(ev.find("EventID")),
        "action": ev.get("EventActionCode"),
        "outcome": ev.get("EventOutcomeIndicator"),
        "time": ev.get("EventDateTime"),
        "type_codes": [code(t) for t in ev.findall("EventTypeCode")],
        "source_id": r.find("AuditSourceIdentification").get("AuditSourceID"),
        "participants": [{
            "user_id": a.get("UserID"), "alt_user_id": a.get("AlternativeUserID"),
            "requestor": a.get("UserIsRequestor"), "nap_id": a.get("NetworkAccessPointID"),
            "nap_type": a.get("NetworkAccessPointTypeCode"),
            "roles": [code(c) for c in a.findall("RoleIDCode")]} for a in r.findall("ActiveParticipant")],
        "objects": [{
            "id": o.get("ParticipantObjectID"), "type": o.get("ParticipantObjectTypeCode"),
            "role": o.get("ParticipantObjectTypeCodeRole"),
            "id_type": code(o.find("ParticipantObjectIDTypeCode")),
            "name": o.findtext("ParticipantObjectName"),
            "query": o.findtext("ParticipantObjectQuery"),
            "details": {d.get("type"): d.get("value") for d in o.findall("ParticipantObjectDetail")},
            "sop_classes": [{"uid": c.get("UID"), "n": c.get("NumberOfInstances"),
                             "instances": [i.get("UID") for i in c.findall("Instance")]}
                            for c in o.iter("SOPClass")]} for o in r.findall("ParticipantObjectIdentification")],
    })
json.dump(out, sys.stdout)
"#;
        let tmp = tmp_dir("a5json");
        let input = tmp.path().join("in.json");
        fs::write(&input, serde_json::to_vec(xmls).unwrap()).unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("exec \"$0\" -c \"$1\" < \"$2\"")
            .arg(venv_python())
            .arg(PY)
            .arg(&input);
        let out = run(&mut cmd, CLIENT_TIMEOUT);
        out.assert_success("parse A.5 messages with ElementTree");
        serde_json::from_str(&out.stdout).expect("A.5 fields JSON")
    }
}

// ================================================================ data-set firewall (firewall.rs)

impl Config {
    /// [`Config::route`] with extra lines in the `[[route]]` table, e.g.
    /// `&["firewall = \"strict\""]`.
    pub fn route_with(
        mut self,
        called_ae: &str,
        port: u16,
        upstream_ae: &str,
        extra_lines: &[&str],
    ) -> Config {
        let mut s = format!(
            "[[route]]\ncalled_ae = {called_ae:?}\nupstream = \"127.0.0.1:{port}\"\nupstream_ae = {upstream_ae:?}\n"
        );
        for l in extra_lines {
            s.push_str(l);
            s.push('\n');
        }
        self.sections.push(s);
        self
    }
    /// [`Config::vault_route`] with extra lines in the `[[route]]` table.
    pub fn vault_route_with(mut self, called_ae: &str, extra_lines: &[&str]) -> Config {
        let mut s = format!("[[route]]\ncalled_ae = {called_ae:?}\nvault = true\n");
        for l in extra_lines {
            s.push_str(l);
            s.push('\n');
        }
        self.sections.push(s);
        self
    }
}
