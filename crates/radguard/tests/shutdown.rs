//! Graceful shutdown: on SIGTERM radguard stops accepting, lets a running association finish
//! (within `shutdown_grace_secs`), and exits 0.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn sigterm_lets_running_association_finish_and_refuses_new_ones() {
    let scp = StoreScp::start("ARCHIVE");
    let cfg = Config::new()
        .server("shutdown_grace_secs = 20")
        .peer(
            "lab",
            &["PROBE", "RG_SCU"],
            &["127.0.0.1/32"],
            &["echo"],
            &[],
            &[],
        )
        .route("ARCHIVE", scp.port, "ARCHIVE")
        .toml();
    let mut rg = Radguard::start_fresh(&cfg);
    let port = rg.port();

    // The probe echoes, holds the association open for 3 s, then releases it.
    let mut held = probe_spawn(port, "PROBE", "ARCHIVE", &["echo", "--hold", "3"]);
    assert!(
        held.wait_ready(Duration::from_secs(20)),
        "held association not established"
    );

    let t0 = Instant::now();
    rg.signal("TERM");
    // New connections are no longer accepted once the listener is closed.
    assert!(
        wait_until(Duration::from_secs(5), || !can_connect(port)),
        "radguard still accepts connections after SIGTERM"
    );
    // The running association is not cut: it releases normally after its hold.
    let v = held.wait_json(Duration::from_secs(30));
    assert_eq!(
        v["released"], true,
        "held association was not released normally: {v:#}"
    );
    assert_eq!(v["aborted"], false, "held association was aborted: {v:#}");
    assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
    // And radguard exits 0 soon after the last association ended, well before the grace period.
    let status = rg
        .wait_exit(Duration::from_secs(15))
        .expect("radguard did not exit");
    assert!(
        status.success(),
        "radguard exit status {status:?}\n{}",
        rg.log()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        t0.elapsed()
    );
}

#[test]
fn sigterm_cuts_associations_after_the_grace_period() {
    let scp = StoreScp::start("ARCHIVE");
    let cfg = Config::new()
        .server("shutdown_grace_secs = 1")
        .peer("lab", &["PROBE"], &["127.0.0.1/32"], &["echo"], &[], &[])
        .route("ARCHIVE", scp.port, "ARCHIVE")
        .toml();
    let mut rg = Radguard::start_fresh(&cfg);
    let mut held = probe_spawn(rg.port(), "PROBE", "ARCHIVE", &["echo", "--hold", "30"]);
    assert!(
        held.wait_ready(Duration::from_secs(20)),
        "held association not established"
    );
    let t0 = Instant::now();
    rg.signal("TERM");
    let status = rg
        .wait_exit(Duration::from_secs(10))
        .expect("radguard did not exit");
    assert!(
        status.success(),
        "radguard exit status {status:?}\n{}",
        rg.log()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t0.elapsed()
    );
    let v = held.wait_json(Duration::from_secs(40));
    assert_eq!(v["released"], false, "{v:#}");
}
