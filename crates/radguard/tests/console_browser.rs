//! The operator console in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/browser/console.js`) against the `radguard` binary in front of a real Orthanc, with
//! the admin listener on a free loopback port and two API tokens (an operator and a viewer,
//! stored as SHA-256 in `[[admin.token]]`).
//!
//! What the browser proves (console.js says it step by step): the login view; two paced C-STORE
//! associations (pynetdicom, held open between instances), one relayed to Orthanc and one to
//! the built-in vault, appear on the overview without a reload, the relayed one's requests and
//! the vault one's bytes grow on the same rows, and the totals' bytes grow; echoscu with a calling AE title no peer has is
//! refused and the refusal with its reason appears live; two scanner-signature detections
//! appear live, the operator acknowledges one and the server records who; the viewer gets no
//! Acknowledge (nor Reload) button and its forced POST is 403; every view renders without a
//! script error or a Content-Security-Policy violation. Screenshots of every view are written
//! to `target/console-screenshots/<view>.png`, or with `RADGUARD_SCREENSHOTS_TO_DOCS=1` to
//! `docs/screenshots/<view>.png` (committed, shown in the README; a test run leaves the source
//! tree as it was).
//!
//! Prerequisite: `scripts/setup-web-test.sh` (Chromium, node, playwright-core), plus what
//! `scripts/setup-test-env.sh` installs (DCMTK, Orthanc, the venv). A missing tool fails the test.

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use sha2::{Digest, Sha256};

const SCU: &str = "RG_MODALITY";
const CALLED: &str = "PACS";
const VAULT_CALLED: &str = "VAULT";
const OPERATOR: &str = "oncall";
const VIEWER: &str = "auditor";
const CHROMIUM: &str = "/usr/bin/chromium";
const HINT: &str = "run `bash scripts/setup-web-test.sh` (as root) first";

/// A token nobody else knows (the test's pid and the clock), and its SHA-256 in hex.
fn token(role: &str) -> (String, String) {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let t = format!("rg-{role}-{}-{nanos:x}", std::process::id());
    let digest = hex::encode(Sha256::digest(t.as_bytes()));
    (t, digest)
}

fn node() -> String {
    let out = Command::new("node").arg("--version").output();
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing: {HINT}"
    );
    "node".into()
}

#[test]
fn console_in_a_real_browser() {
    require_tool(CHROMIUM);
    let node = node();
    let browser_dir = project_root().join("tests/browser");
    assert!(
        browser_dir
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "tests/browser/node_modules/playwright-core is missing: {HINT}"
    );
    let python = venv_python();
    let files = test_data().ct_files();
    assert_eq!(files.len(), 24);

    let orthanc = Orthanc::start("ORTHANC", &[]);
    let admin_port = free_port();
    let (op_token, op_sha) = token("operator");
    let (viewer_token, viewer_sha) = token("viewer");
    let cfg = Config::new()
        .peer(
            "modality",
            &[SCU],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .route(CALLED, orthanc.dicom_port, "ORTHANC")
        .vault_route(VAULT_CALLED);
    let toml = format!(
        "{}\n[audit]\nnode = \"gw-console\"\n\n\
         [[detect.rule]]\nname = \"scanners\"\nkind = \"scanner-signature\"\n\n\
         [[detect.rule]]\nname = \"marker\"\nkind = \"scanner-signature\"\n\
         signatures = [{{ name = \"marker\", calling_ae = \"MARKER\" }}]\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n\
         [[admin.token]]\nname = \"{OPERATOR}\"\nrole = \"operator\"\nsha256 = \"{op_sha}\"\n\n\
         [[admin.token]]\nname = \"{VIEWER}\"\nrole = \"viewer\"\nsha256 = \"{viewer_sha}\"\n",
        cfg.toml()
    );
    let rg = Radguard::start_fresh(&toml);
    assert!(
        wait_port(admin_port, START_TIMEOUT),
        "the admin listener is not on 127.0.0.1:{admin_port}:\n{}",
        rg.log()
    );

    let work = tmp_dir("console-browser");
    let shots = if std::env::var_os("RADGUARD_SCREENSHOTS_TO_DOCS").is_some() {
        project_root().join("docs/screenshots")
    } else {
        target_dir().join("console-screenshots")
    };
    let started = SystemTime::now();
    let files_json = serde_json::to_string(
        &files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut cmd = Command::new(node);
    cmd.current_dir(&browser_dir)
        .arg(browser_dir.join("console.js"))
        .env("RG_URL", format!("http://127.0.0.1:{admin_port}"))
        .env("RG_DICOM_PORT", rg.port().to_string())
        .env("RG_CALLING", SCU)
        .env("RG_CALLED", CALLED)
        .env("RG_VAULT_CALLED", VAULT_CALLED)
        .env("RG_OPERATOR_TOKEN", &op_token)
        .env("RG_OPERATOR_NAME", OPERATOR)
        .env("RG_VIEWER_TOKEN", &viewer_token)
        .env("RG_VIEWER_NAME", VIEWER)
        .env("RG_PYTHON", &python)
        .env("RG_SENDER", browser_dir.join("paced_store.py"))
        .env("RG_FILES", files_json)
        .env("RG_WORK", work.path())
        .env("RG_ECHOSCU", format!("{DCMTK_BIN}/echoscu"))
        .env("RG_SCREENSHOTS", &shots)
        .env("RG_CHROMIUM", CHROMIUM);
    let out = run(&mut cmd, Duration::from_secs(360));
    assert!(
        out.success(),
        "console.js failed:\n{}\n--- radguard ---\n{}",
        out.text(),
        rg.log()
    );
    // The steps the browser went through, in the test's output (shown with --nocapture).
    eprintln!("{}", out.stdout);
    let text = out.text();
    assert!(
        text.contains("console.js: ") && text.contains("PASS"),
        "{text}"
    );

    // What the browser watched really reached the PACS.
    assert!(
        wait_until(Duration::from_secs(30), || orthanc.instance_count() == 24),
        "Orthanc holds {} instances, not 24",
        orthanc.instance_count()
    );
    // Every view was screenshotted by this run.
    for view in [
        "login",
        "overview",
        "peers",
        "alerts",
        "refusals",
        "audit",
        "integrity",
        "vault",
        "config",
    ] {
        let p = shots.join(format!("{view}.png"));
        let fresh = fs::metadata(&p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started);
        assert!(fresh, "{} was not written by this run", p.display());
    }
}
