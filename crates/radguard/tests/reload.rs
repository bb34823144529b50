//! Reload (`radguard reload`, SIGHUP) of what a running gateway cannot apply: a config that
//! changes listeners, caps, timeouts, `on_revoke`, `[audit]` or `[ledger]` is refused whole,
//! naming the keys, and the policy in force stays.
//! And `radguard config check` checks what `serve` and a reload take, `[ledger]` included.

mod common;

use common::*;

fn config(max_associations: u32, peer_ae: &str) -> String {
    Config::new()
        .server(&format!("max_associations = {max_associations}"))
        .peer("p", &[peer_ae], &["127.0.0.1/32"], &["echo"], &[], &[])
        .vault_route("RADGUARD")
        .toml()
}

#[test]
fn reload_changing_a_restart_key_is_refused_whole_and_names_it() {
    let rg = Radguard::start_fresh(&config(64, "ECHO1"));
    echoscu(rg.port(), "ECHO1", "RADGUARD").assert_success("echo before the reload");
    // The peer renamed (a policy change a reload applies) together with a cap (which it cannot).
    rg.rewrite_config(&config(32, "ECHO2"));
    let before = rg.reload_events().len();
    rg.reload_cli().assert_success("radguard reload");
    let ev = rg.wait_reload(before);
    assert_eq!(ev["ok"], false, "{ev:#}");
    let detail = ev["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("server.max_associations") && detail.contains("only a restart applies"),
        "{ev:#}"
    );
    // Refused whole: the old peer is still admitted, the new one is not.
    echoscu(rg.port(), "ECHO1", "RADGUARD").assert_success("echo by the old peer");
    assert!(
        !echoscu(rg.port(), "ECHO2", "RADGUARD").success(),
        "the renamed peer was admitted although the reload was refused:\n{}",
        rg.log()
    );
    // The same change without the cap is applied.
    rg.rewrite_config(&config(64, "ECHO2"));
    let before = rg.reload_events().len();
    rg.reload_cli().assert_success("radguard reload");
    let ev = rg.wait_reload(before);
    assert_eq!(ev["ok"], true, "{ev:#}");
    echoscu(rg.port(), "ECHO2", "RADGUARD").assert_success("echo by the renamed peer");
}

/// `radguard config check` checks everything `serve` takes, `[ledger]` included: an unknown key
/// there is an error (exit 1) naming the section and the key, as `serve` would refuse it.
#[test]
fn config_check_validates_the_ledger_table() {
    let dir = tmp_dir("config-check");
    let good = dir.path().join("good.toml");
    let bad = dir.path().join("bad.toml");
    let base = config(64, "ECHO1");
    std::fs::write(
        &good,
        format!("{base}\n[ledger]\norigin = \"example.org/radguard\"\n"),
    )
    .unwrap();
    std::fs::write(
        &bad,
        format!("{base}\n[ledger]\norigins = \"example.org/radguard\"\n"),
    )
    .unwrap();
    let check = |file: &std::path::Path| {
        let mut cmd = std::process::Command::new(Radguard::exe());
        cmd.arg("config").arg("check").arg(file);
        run(&mut cmd, std::time::Duration::from_secs(30))
    };
    let ok = check(&good);
    assert_eq!(ok.code, Some(0), "{}", ok.text());
    let out = check(&bad);
    assert_eq!(out.code, Some(1), "{}", out.text());
    let text = out.text();
    // Placed like every other config error: FILE:LINE:COL, the key path.
    let line = std::fs::read_to_string(&bad)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("origins"))
        .unwrap()
        + 1;
    let want = format!("{}:{line}:1: field `ledger.origins`", bad.display());
    assert!(
        text.contains(&want),
        "the error should be placed at {want}: {text}"
    );
}
