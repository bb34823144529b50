//! Upstream failures: the client must learn about them quickly and must never be told an
//! instance was stored (0x0000) when the upstream did not store it.

mod common;

use common::*;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn gateway_to(port: u16, upstream_ae: &str) -> Radguard {
    let cfg = Config::new()
        .peer(
            "lab",
            &["PROBE", "RG_SCU"],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .route("UPSTREAM", port, upstream_ae);
    Radguard::start_fresh(&cfg.toml())
}

/// Every instance the client was told was stored (0x0000) really is in `recv_dir`.
fn assert_success_means_stored(v: &serde_json::Value, recv_dir: &std::path::Path) {
    let stored: Vec<String> = files_under(recv_dir, ".dcm")
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for r in v["results"].as_array().unwrap() {
        if r["status"] == 0 {
            let uid = r["sop_instance_uid"].as_str().unwrap();
            assert!(
                stored.iter().any(|s| s == uid),
                "0x0000 for {uid}, which the upstream does not have\n{v:#}"
            );
        }
    }
}

#[test]
fn closed_upstream_port_is_transient_rejection_2_3_1() {
    let closed = free_port();
    let rg = gateway_to(closed, "NOBODY");
    let t = Instant::now();
    let v = probe(rg.port(), "PROBE", "UPSTREAM", &["echo"]);
    assert_rejected(&v, 2, 3, 1);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn silent_upstream_is_refused_within_connect_timeout() {
    // accepts TCP, never answers the A-ASSOCIATE-RQ (config: connect_timeout_secs = 5)
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let rg = gateway_to(silent.local_addr().unwrap().port(), "SILENT");
    let t = Instant::now();
    let v = probe(rg.port(), "PROBE", "UPSTREAM", &["--timeout", "30", "echo"]);
    assert_ne!(v["association"], "accepted", "{v:#}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}\n{v:#}",
        t.elapsed()
    );
    drop(silent);
}

#[test]
fn upstream_dying_mid_transfer_never_yields_success() {
    let d = test_data();
    // each CT slice is ~132 KB: scp.py dies in the middle of the 5th
    let mut py = PyScp::start("PYSCP", &["--die-after-bytes", "600000"]);
    let rg = gateway_to(py.port, "PYSCP");
    let v = probe_store(rg.port(), "PROBE", "UPSTREAM", &[], &d.ct_files());
    assert_accepted(&v);
    assert!(
        wait_until(Duration::from_secs(5), || py.exited().is_some()),
        "scp.py did not die"
    );
    let st = statuses(&v);
    let ok = st.iter().filter(|s| **s == Some(0)).count();
    assert!(
        ok < st.len(),
        "all 24 reported stored although the upstream died:\n{v:#}"
    );
    assert!(
        v["aborted"] == true || st.iter().any(|s| s.is_some_and(|s| s != 0)),
        "the client must see an abort or a failure status:\n{v:#}"
    );
    assert_success_means_stored(&v, &py.dir);
}

#[test]
fn upstream_dying_mid_transfer_storescu() {
    let d = test_data();
    let py = PyScp::start("PYSCP", &["--die-after-bytes", "600000"]);
    let rg = gateway_to(py.port, "PYSCP");
    let out = storescu(rg.port(), "RG_SCU", "UPSTREAM", &[d.ct_dir()]);
    assert!(!out.timed_out, "{}", out.text());
    let failed = !out.success() || out.all().contains("E:");
    assert!(failed, "storescu must report a failure:\n{}", out.text());
    assert!(py.files().len() < 24);
}

#[test]
fn upstream_aborting_on_store_is_an_abort_for_the_client() {
    let d = test_data();
    let py = PyScp::start("PYSCP", &["--abort-on-store"]);
    let rg = gateway_to(py.port, "PYSCP");
    let files: Vec<PathBuf> = d.ct_files()[..3].to_vec();
    let v = probe_store(rg.port(), "PROBE", "UPSTREAM", &[], &files);
    assert_accepted(&v);
    assert!(statuses(&v).iter().all(|s| *s != Some(0)), "{v:#}");
    assert_eq!(v["aborted"], true, "{v:#}");
    assert!(py.files().is_empty());
}
