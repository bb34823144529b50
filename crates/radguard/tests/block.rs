//! Responses enforced, through the `radguard` binary with real peers: a rule with
//! `response = "block"` fires (a scanner signature matched by a marker echoscu) while the same
//! source holds a running association (pynetdicom holding it open): that association is cut
//! (A-ABORT), new associations from the source get A-ASSOCIATE-RJ 2/1/1, the audit trail holds
//! the block, `radguard block list --json` shows it, it survives a restart, and
//! `radguard block remove` ends it (audited; echo works again). A throttle by calling AE
//! refuses that AE past its rate (2/3/2) and no other; a block by calling AE leaves the other
//! AEs of the same address alone and expires by itself (audited). An operator's `radguard block
//! add` reaches the running gateway: it cuts and refuses that AE title until removed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::audit_e2e::*;
use common::*;
use serde_json::Value;

const NODE: &str = "gw-block";

fn toml_with(rule: &str) -> String {
    let cfg = Config::new()
        .peer(
            "lab",
            &["PROBE", "MARKER", "OTHER"],
            &["127.0.0.1/32"],
            &["echo"],
            &[],
            &[],
        )
        .vault_route("RADGUARD");
    format!(
        "{}\n[audit]\nnode = {NODE:?}\n\n[[detect.rule]]\nname = \"marker\"\nkind = \"scanner-signature\"\n\
         signatures = [{{ name = \"marker\", calling_ae = \"MARKER\" }}]\n{rule}\n",
        cfg.toml()
    )
}

fn block_cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(Radguard::exe());
    cmd.arg("block").args(args);
    run(&mut cmd, Duration::from_secs(30))
}

/// Waits for an event named `name` whose fields satisfy `f`; returns it.
fn wait_event(rg: &Radguard, name: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    let ok = wait_until(Duration::from_secs(30), || {
        found = rg.events().into_iter().find(|e| e["event"] == name && f(e));
        found.is_some()
    });
    assert!(ok, "no {name} event; log:\n{}", rg.log());
    found.expect("found")
}

fn wait_audited(rg: &Radguard, alert: &str) {
    let store = sqlite_store(&rg.data_dir);
    let needle = format!("\"{alert}\"");
    let rows = wait_trail(&store, NODE, Duration::from_secs(30), |rows| {
        rows.iter()
            .any(|r| r.kind() == "security-alert" && r.entry.contains(&needle))
    });
    assert!(
        rows.is_some(),
        "audit trail lacks {alert}; log:\n{}",
        rg.log()
    );
}

fn echo(rg: &Radguard, calling: &str) -> Value {
    probe(rg.port(), calling, "RADGUARD", &["echo"])
}

#[test]
fn a_block_cuts_the_running_association_refuses_new_ones_persists_and_is_removable() {
    let data = tmp_dir("rg-data");
    let toml = toml_with("response = \"block\"\nblock_secs = 600\n");
    let rg = Radguard::start(&toml, data.path());
    assert_accepted(&echo(&rg, "PROBE"));
    let mut holder = probe_spawn(rg.port(), "PROBE", "RADGUARD", &["echo", "--hold", "60"]);
    assert!(
        holder.wait_ready(Duration::from_secs(20)),
        "holder not established"
    );
    // The marker fires the rule: block by address (the default), the holder's address too.
    let _ = echoscu(rg.port(), "MARKER", "RADGUARD");
    let added = wait_event(&rg, "block-added", |_| true);
    assert_eq!(added["subject"], "address=127.0.0.1", "{added}");
    assert_eq!(added["action"], "block", "{added}");
    assert_eq!(added["rule"], "marker", "{added}");
    assert!(added["cut"].as_u64().unwrap() >= 1, "{added}");
    // The running association was cut: A-ABORT seen by the client, recorded by the gateway.
    let v = holder.wait_json(Duration::from_secs(30));
    assert_eq!(v["aborted"], true, "{v:#}");
    assert!(!v["abort"].is_null(), "no A-ABORT PDU received: {v:#}");
    let aborted = wait_event(&rg, "association-aborted", |e| {
        e["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("cut: blocked by rule marker"))
    });
    assert_eq!(aborted["blame"], "local", "{aborted}");
    // New associations from the source: rejected-transient, service-user, no reason given.
    assert_rejected(&echo(&rg, "PROBE"), 2, 1, 1);
    wait_event(&rg, "association-refused", |e| {
        e["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("blocked by rule marker"))
    });
    wait_audited(&rg, "block-added");
    let listed = block_cli(&["list", "--json", "--data", rg.data_dir.to_str().unwrap()]);
    listed.assert_success("block list");
    let rows: Vec<Value> = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{}", listed.text());
    assert_eq!(rows[0]["subject"], "address=127.0.0.1");
    assert_eq!(rows[0]["rule"], "marker");
    assert!(rows[0]["remaining_secs"].as_u64().unwrap() > 500);

    // Persisted: stopped and started again on the same data, still blocked.
    let status = rg.stop();
    assert!(status.success(), "{status:?}");
    let rg = Radguard::start(&toml, data.path());
    assert_rejected(&echo(&rg, "PROBE"), 2, 1, 1);

    // Removed by the operator: reported by the gateway, audited, echo works again.
    let id = rows[0]["id"].as_u64().unwrap().to_string();
    let out = block_cli(&["remove", &id, "--data", rg.data_dir.to_str().unwrap()]);
    out.assert_success("block remove");
    let removed = wait_event(&rg, "block-removed", |_| true);
    assert_eq!(removed["subject"], "address=127.0.0.1", "{removed}");
    assert!(
        removed["by"].as_str().unwrap().starts_with("operator"),
        "{removed}"
    );
    wait_audited(&rg, "block-removed");
    assert_accepted(&echo(&rg, "PROBE"));
    // Nothing left to remove: exit 1 with a clear message.
    let again = block_cli(&["remove", &id, "--data", rg.data_dir.to_str().unwrap()]);
    assert_eq!(again.code, Some(1), "{}", again.text());
    assert!(
        again.stderr.contains("no block matches"),
        "{}",
        again.text()
    );
}

#[test]
fn a_throttle_refuses_its_subject_past_the_rate_and_nobody_else() {
    let rg = Radguard::start_fresh(&toml_with(
        "response = \"throttle\"\nthrottle_per_minute = 2\nblock_by = \"calling-ae\"\n",
    ));
    let _ = echoscu(rg.port(), "MARKER", "RADGUARD");
    let added = wait_event(&rg, "block-added", |_| true);
    assert_eq!(added["subject"], "calling-ae=MARKER", "{added}");
    assert_eq!(added["action"], "throttle 2/min", "{added}");
    assert_accepted(&echo(&rg, "MARKER"));
    assert_accepted(&echo(&rg, "MARKER"));
    // Past the rate: rejected-transient, service-provider, local limit exceeded.
    assert_rejected(&echo(&rg, "MARKER"), 2, 3, 2);
    wait_event(&rg, "association-refused", |e| {
        e["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("throttled by rule marker"))
    });
    // Another AE from the same address is not throttled.
    for _ in 0..3 {
        assert_accepted(&echo(&rg, "OTHER"));
    }
}

#[test]
fn a_block_by_calling_ae_spares_other_aes_and_expires_by_itself() {
    let rg = Radguard::start_fresh(&toml_with(
        "response = \"block\"\nblock_secs = 3\nblock_by = \"calling-ae\"\n",
    ));
    let _ = echoscu(rg.port(), "MARKER", "RADGUARD");
    let added = wait_event(&rg, "block-added", |_| true);
    assert_eq!(added["subject"], "calling-ae=MARKER", "{added}");
    assert_rejected(&echo(&rg, "MARKER"), 2, 1, 1);
    assert_accepted(&echo(&rg, "OTHER"));
    // The end comes by itself, reported and audited.
    let expired = wait_event(&rg, "block-expired", |_| true);
    assert_eq!(expired["subject"], "calling-ae=MARKER", "{expired}");
    wait_audited(&rg, "block-expired");
    assert_accepted(&echo(&rg, "MARKER"));
}

#[test]
fn an_operator_block_cuts_its_running_association_and_refuses_the_ae_until_removed() {
    let rg = Radguard::start_fresh(&toml_with(""));
    let mut holder = probe_spawn(rg.port(), "OTHER", "RADGUARD", &["echo", "--hold", "60"]);
    assert!(
        holder.wait_ready(Duration::from_secs(20)),
        "holder not established"
    );
    let data = rg.data_dir.to_str().unwrap().to_string();
    let out = block_cli(&[
        "add",
        "--calling-ae",
        "OTHER",
        "--for",
        "10m",
        "--reason",
        "stolen workstation",
        "--data",
        &data,
    ]);
    out.assert_success("block add");
    assert!(out.stdout.contains("calling-ae=OTHER"), "{}", out.text());
    // The running gateway was told: the block is reported with the association it cut.
    let added = wait_event(&rg, "block-added", |_| true);
    assert_eq!(added["subject"], "calling-ae=OTHER", "{added}");
    assert_eq!(added["rule"], "operator", "{added}");
    assert_eq!(added["cut"], 1, "{added}");
    let v = holder.wait_json(Duration::from_secs(30));
    assert_eq!(v["aborted"], true, "{v:#}");
    assert_rejected(&echo(&rg, "OTHER"), 2, 1, 1);
    // Only that AE title: another from the same address still works.
    assert_accepted(&echo(&rg, "PROBE"));
    wait_audited(&rg, "block-added");
    let out = block_cli(&["remove", "calling-ae=OTHER", "--data", &data]);
    out.assert_success("block remove by subject");
    wait_event(&rg, "block-removed", |_| true);
    assert_accepted(&echo(&rg, "OTHER"));
}
