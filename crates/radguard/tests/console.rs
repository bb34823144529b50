//! The operator console's server end to end, through the `radguard` binary with real peers:
//! radguard in front of DCMTK storescp (slowed with `--sleep-after`, so a storescu's
//! association runs for seconds): the API shows the running association (C-STORE, its request
//! count growing), a refused AE title appears in /refusals with its A-ASSOCIATE-RJ code and
//! reason, /metrics counts exactly the associations and requests sent, `promtool check metrics`
//! accepts the text and a real Prometheus scrapes it. Access control: a non-loopback console
//! without TLS and tokens does not start; no token → 401; a viewer → 403 on every change;
//! a cross-site Origin and a missing CSRF token → 403; the CSP and the other security headers on
//! every response; acknowledging an alert, removing a block, a reload and reading the audit
//! trail are in the audit trail (Security Alert 110113, Audit Log Used 110101). Over TLS (the
//! quick-start PKI, checked by `openssl s_client`) the session cookie is `Secure`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::audit_e2e::*;
use common::*;
use radguard_audit::atna::{message_for, AtnaSource};
use serde_json::Value;

const SCU: &str = "RG_SCU";
const NODE: &str = "gw-console";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";
const OPERATOR_TOKEN: &str = "operator-token-0123456789abcdef";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A gateway in front of `scp_port` with the console on `admin_port`; `admin_extra` lines go
/// into `[admin]` (tokens and so on).
fn gateway_toml(scp_port: u16, admin_port: u16, admin_extra: &str) -> String {
    let cfg = Config::new()
        .peer(
            "lab",
            &[SCU],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .route("RADGUARD", scp_port, "STORESCP");
    format!(
        "{}\n[audit]\nnode = {NODE:?}\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{admin_extra}",
        cfg.toml()
    )
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

/// GET `path` on the console: (status, headers' lowercase names and values, body).
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    request("GET", port, path, headers, None)
}

fn request(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let mut r = agent().request(method, &format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        r = r.set(k, v);
    }
    let resp = match body {
        Some(b) => r.set("Content-Type", "application/json").send_string(b),
        None => r.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let hs = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or_default().to_string();
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    let body = resp.into_string().unwrap_or_default();
    (status, hs, body)
}

fn get_json(port: u16, path: &str, headers: &[(&str, &str)]) -> Value {
    let (status, _, body) = get(port, path, headers);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The value of the sample `name{labels}` (labels exactly as written) in a scrape.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn file_size_sum(files: &[std::path::PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

#[test]
fn console_shows_running_association_refusals_and_metrics_scraped_by_prometheus() {
    // The destination sleeps 1 s after each C-STORE: the association runs for seconds.
    let scp = StoreScp::start_with("STORESCP", &["--sleep-after", "1"]);
    let admin_port = free_port();
    let rg = Radguard::start_fresh(&gateway_toml(scp.port, admin_port, ""));
    assert!(
        rg.stdout_lines()
            .iter()
            .any(|l| l.contains(&format!("console on http://127.0.0.1:{admin_port}/"))),
        "{}",
        rg.log()
    );
    let files: Vec<_> = test_data().ct_files().into_iter().take(4).collect();
    assert_eq!(files.len(), 4);
    // The event stream, opened before the association: its `association` event names it.
    let sse = std::thread::spawn(move || {
        let resp = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build()
            .get(&format!("http://127.0.0.1:{admin_port}/api/v1/events"))
            .call()
            .expect("GET /api/v1/events");
        assert!(resp.content_type().starts_with("text/event-stream"));
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(resp.into_reader()));
        let mut event = String::new();
        while let Some(Ok(l)) = lines.next() {
            if let Some(e) = l.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(d) = l.strip_prefix("data: ") {
                if event == "association" && d.contains(SCU) {
                    return serde_json::from_str::<Value>(d).unwrap();
                }
            }
        }
        panic!("the event stream ended without an association event");
    });
    let sender = {
        let port = rg.port();
        let files = files.clone();
        std::thread::spawn(move || storescu(port, SCU, "RADGUARD", &files))
    };
    // While it runs: the association is listed with its peer, route and last operation, and
    // its request count grows.
    let mut first = 0;
    let mut seen = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        let a = get_json(admin_port, "/api/v1/associations", &[]);
        if let Some(x) = a
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["calling_ae"] == SCU && x["requests"].as_u64() >= Some(1))
        {
            first = x["requests"].as_u64().unwrap();
            seen = x.clone();
            true
        } else {
            false
        }
    });
    assert!(
        ok,
        "no running association in the console; log:\n{}",
        rg.log()
    );
    assert_eq!(seen["peer"], "lab", "{seen}");
    assert_eq!(seen["operation"], "C-STORE", "{seen}");
    assert_eq!(seen["called_ae"], "RADGUARD", "{seen}");
    let route = seen["route"].as_str().unwrap().to_string();
    assert!(route.contains("STORESCP"), "{seen}");
    let id = seen["id"].clone();
    let grew = wait_until(Duration::from_secs(30), || {
        let a = get_json(admin_port, "/api/v1/associations", &[]);
        a.as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id && x["requests"].as_u64() > Some(first))
    });
    assert!(grew, "the request count did not grow; log:\n{}", rg.log());
    // Its bytes grow while it runs too (the relay's progress after each stored instance), not
    // only at release.
    let mut bytes = 0;
    let ok = wait_until(Duration::from_secs(30), || {
        let a = get_json(admin_port, "/api/v1/associations", &[]);
        a.as_array().unwrap().iter().any(|x| {
            x["id"] == id && {
                bytes = x["bytes_from_client"].as_u64().unwrap_or(0);
                bytes > 0
            }
        })
    });
    assert!(
        ok,
        "no bytes while the association runs; log:\n{}",
        rg.log()
    );
    let more = wait_until(Duration::from_secs(30), || {
        let a = get_json(admin_port, "/api/v1/associations", &[]);
        a.as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id && x["bytes_from_client"].as_u64().is_some_and(|b| b > bytes))
    });
    assert!(
        more,
        "the bytes did not grow while it ran; log:\n{}",
        rg.log()
    );
    // The overview lists it too.
    let ov = get_json(admin_port, "/api/v1/overview", &[]);
    assert!(
        ov["associations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id),
        "{ov}"
    );
    sender
        .join()
        .unwrap()
        .assert_success("storescu through radguard to a slow storescp");
    let ev = sse.join().unwrap();
    assert_eq!(ev["id"], id, "{ev}");
    assert_eq!(ev["peer"], "lab", "{ev}");
    // Ended: gone from the list; its bytes (the relay's totals at release) in the totals.
    let released = rg
        .events()
        .into_iter()
        .find(|e| e["event"] == "association-released")
        .expect("association-released in the log");
    let from_client = released["bytes_from_client"].as_u64().unwrap();
    let from_upstream = released["bytes_from_upstream"].as_u64().unwrap();
    // The data sets (the files without their preamble and meta header) and the commands.
    let sent = file_size_sum(&files);
    assert!(
        from_client > sent / 2 && from_client < sent * 2,
        "{released} vs {sent}"
    );
    let mut totals = Value::Null;
    let ended = wait_until(Duration::from_secs(30), || {
        let ov = get_json(admin_port, "/api/v1/overview", &[]);
        totals = ov["totals"].clone();
        ov["associations"].as_array().unwrap().is_empty()
    });
    assert!(ended, "totals {totals}; log:\n{}", rg.log());
    assert_eq!(totals["associations"], 1, "{totals}");
    assert_eq!(totals["bytes_from_clients"], from_client, "{totals}");
    assert_eq!(totals["bytes_from_upstreams"], from_upstream, "{totals}");

    // A refused AE title: in /refusals with the A-ASSOCIATE-RJ code and the policy's words.
    assert!(!echoscu(rg.port(), "INTRUDER", "RADGUARD").success());
    let mut refusals = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        refusals = get_json(admin_port, "/api/v1/refusals", &[]);
        refusals
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["calling_ae"] == "INTRUDER")
    });
    assert!(ok, "{refusals}");
    let r = refusals
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["calling_ae"] == "INTRUDER")
        .unwrap();
    assert_eq!(r["kind"], "association", "{r}");
    assert!(
        r["code"]
            .as_str()
            .unwrap()
            .starts_with("A-ASSOCIATE-RJ 1/1/3"),
        "{r}"
    );
    assert!(!r["why"].as_str().unwrap().is_empty(), "{r}");
    assert!(
        r["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{r}"
    );
    // The unknown peer's refusal is a security alert too.
    let alerts = get_json(admin_port, "/api/v1/alerts", &[]);
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "peer-not-recognized"),
        "{alerts}"
    );

    // /metrics: what was sent, exactly.
    let (status, hs, text) = get(admin_port, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(header(&hs, "content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let esc_route = route.replace('\\', "\\\\").replace('"', "\\\"");
    let accepted = format!(
        "radguard_associations_total{{peer=\"lab\",route=\"{esc_route}\",result=\"released\"}}"
    );
    assert_eq!(sample(&text, &accepted), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "radguard_associations_total{peer=\"unknown\",route=\"none\",result=\"refused\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "radguard_dimse_requests_total{peer=\"lab\",operation=\"C-STORE\",status=\"success\"}"
        ),
        Some(files.len() as f64),
        "{text}"
    );
    let bytes = |dir: &str| {
        sample(
            &text,
            &format!("radguard_bytes_total{{route=\"{esc_route}\",direction=\"{dir}\"}}"),
        )
    };
    assert_eq!(bytes("from_client"), Some(from_client as f64), "{text}");
    assert_eq!(bytes("from_upstream"), Some(from_upstream as f64), "{text}");
    assert_eq!(
        sample(&text, "radguard_association_duration_seconds_count"),
        Some(1.0),
        "{text}"
    );
    // Four C-STOREs, 1 s of sleep after each: not in the 1 s bucket.
    assert_eq!(
        sample(
            &text,
            "radguard_association_duration_seconds_bucket{le=\"1\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "radguard_associations_running"), Some(0.0));
    assert!(
        sample(&text, "radguard_build_info{version=\"0.1.0\"}").is_some(),
        "{text}"
    );
    assert!(text.contains("# TYPE radguard_association_duration_seconds histogram"));

    // promtool: the exposition format and the naming conventions.
    let promtool = require_tool("/usr/bin/promtool");
    let mut c = Command::new(&promtool);
    c.args(["check", "metrics"])
        .stdin(std::process::Stdio::piped());
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes the console and answers a query for the counter.
    let prom = require_tool("/usr/bin/prometheus");
    let dir = tmp_dir("prometheus");
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: radguard\n    \
             static_configs:\n      - targets: ['127.0.0.1:{admin_port}']\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let p = Proc::spawn(
        "prometheus",
        Command::new(&prom)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
        dir.path(),
        false,
    );
    let mut result = Value::Null;
    let ok = wait_until(Duration::from_secs(60), || {
        let Ok((200, body)) = http_get(
            prom_port,
            "/api/v1/query?query=radguard_associations_total%7Bpeer%3D%22lab%22%7D",
        ) else {
            return false;
        };
        result = serde_json::from_slice(&body).unwrap_or(Value::Null);
        result["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    assert!(
        ok,
        "prometheus did not scrape the console: {result}\n{}",
        p.log()
    );
    let r = &result["data"]["result"][0];
    assert_eq!(r["metric"]["result"], "released", "{result}");
    assert_eq!(r["value"][1], "1", "{result}");
    drop(p);
    drop(scp);
}

#[test]
fn exposed_console_without_tls_and_tokens_refuses_to_start() {
    let admin_port = free_port();
    let toml = gateway_toml(free_port(), admin_port, "").replace(
        &format!("127.0.0.1:{admin_port}"),
        &format!("0.0.0.0:{admin_port}"),
    );
    let dir = tmp_dir("exposed");
    let cfg = dir.path().join("radguard.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = run(
        Command::new(Radguard::exe())
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .arg("--data")
            .arg(dir.path().join("data")),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(1), "{}", out.text());
    let text = out.all();
    assert!(text.contains("field `admin.listen`"), "{text}");
    assert!(text.contains("is not a loopback address"), "{text}");
    assert!(
        text.contains("tls_cert, tls_key and at least one [[admin.token]]"),
        "{text}"
    );
    assert!(!is_listening(admin_port));
}

fn tokens_toml() -> String {
    format!(
        "[[admin.token]]\nname = \"vera\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\n\
         [[admin.token]]\nname = \"otto\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
        sha256_hex(VIEWER_TOKEN),
        sha256_hex(OPERATOR_TOKEN)
    )
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// Adds a block with `radguard block add` (the gateway is told by SIGUSR1); returns its id
/// once the console lists it.
fn add_block(rg: &Radguard, admin_port: u16, address: &str) -> u64 {
    let out = run(
        Command::new(Radguard::exe())
            .args([
                "block",
                "add",
                "--address",
                address,
                "--for",
                "1h",
                "--data",
            ])
            .arg(&rg.data_dir),
        Duration::from_secs(30),
    );
    assert!(out.success(), "{}", out.all());
    let auth = bearer(OPERATOR_TOKEN);
    let mut id = None;
    assert!(wait_until(Duration::from_secs(30), || {
        let b = get_json(admin_port, "/api/v1/blocks", &[("Authorization", &auth)]);
        id = b.as_array().unwrap().iter().find_map(|e| {
            (e["subject"] == format!("address={address}") && e["removed"].is_null())
                .then(|| e["id"].as_u64().unwrap())
        });
        id.is_some()
    }));
    id.unwrap()
}

#[test]
fn console_access_control_and_audited_actions() {
    let scp = StoreScp::start("STORESCP");
    let admin_port = free_port();
    let rg = Radguard::start_fresh(&gateway_toml(scp.port, admin_port, &tokens_toml()));
    let viewer = bearer(VIEWER_TOKEN);
    let operator = bearer(OPERATOR_TOKEN);

    // No token: 401 with a JSON error, on the API and /metrics; the security headers are on
    // every response, the refusals too.
    for path in [
        "/api/v1/overview",
        "/api/v1/me",
        "/metrics",
        "/api/v1/events",
    ] {
        let (status, hs, body) = get(admin_port, path, &[]);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("\"error\""), "{body}");
        assert_eq!(header(&hs, "x-content-type-options"), Some("nosniff"));
    }
    let (status, hs, _) = get(admin_port, "/", &[]);
    assert_eq!(status, 200);
    let csp = header(&hs, "content-security-policy").expect("a CSP header");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&hs, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&hs, "cache-control"), Some("no-store"));
    // A wrong token: 401.
    let (status, _, _) = get(
        admin_port,
        "/api/v1/overview",
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(status, 401);

    // A viewer reads, and is refused every change.
    let me = get_json(admin_port, "/api/v1/me", &[("Authorization", &viewer)]);
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("vera"), Some("viewer"))
    );
    let (status, _, text) = get(admin_port, "/metrics", &[("Authorization", &viewer)]);
    assert_eq!(status, 200, "{text}");
    // An alert to acknowledge: an unknown calling AE title.
    assert!(!echoscu(rg.port(), "INTRUDER", "RADGUARD").success());
    let mut alert_id = 0;
    assert!(wait_until(Duration::from_secs(30), || {
        let a = get_json(admin_port, "/api/v1/alerts", &[("Authorization", &viewer)]);
        a.as_array().unwrap().iter().any(|x| {
            alert_id = x["id"].as_u64().unwrap();
            x["rule"] == "peer-not-recognized"
        })
    }));
    let block_id = add_block(&rg, admin_port, "10.9.9.9");
    let ack = format!("/api/v1/alerts/{alert_id}/ack");
    let unblock = format!("/api/v1/blocks/{block_id}");
    for (method, path) in [
        ("POST", ack.as_str()),
        ("DELETE", unblock.as_str()),
        ("POST", "/api/v1/reload"),
    ] {
        let (status, _, body) = request(
            method,
            admin_port,
            path,
            &[("Authorization", &viewer)],
            None,
        );
        assert_eq!(status, 403, "viewer {method} {path}: {body}");
    }
    let a = get_json(admin_port, "/api/v1/alerts", &[("Authorization", &viewer)]);
    let x = a
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == alert_id)
        .unwrap();
    assert!(x["acknowledged"].is_null(), "{x}");

    // An operator by bearer token: a cross-site Origin is refused; its own origin is not.
    let origin = format!("http://127.0.0.1:{admin_port}");
    let (status, _, body) = request(
        "POST",
        admin_port,
        &ack,
        &[
            ("Authorization", &operator),
            ("Origin", "http://evil.example"),
        ],
        None,
    );
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = request(
        "POST",
        admin_port,
        &ack,
        &[("Authorization", &operator), ("Origin", &origin)],
        None,
    );
    assert_eq!(status, 204, "{body}");
    let a = get_json(
        admin_port,
        "/api/v1/alerts",
        &[("Authorization", &operator)],
    );
    let x = a
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == alert_id)
        .unwrap();
    assert_eq!(x["acknowledged"]["by"], "otto", "{x}");

    // An operator by session cookie: no CSRF token → 403; with it → the change is made.
    let (status, hs, body) = request(
        "POST",
        admin_port,
        "/api/v1/login",
        &[],
        Some(&format!("{{\"token\": \"{OPERATOR_TOKEN}\"}}")),
    );
    assert_eq!(status, 204, "{body}");
    let set_cookie = header(&hs, "set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("radguard_session="), "{cookie}");
    let me = get_json(admin_port, "/api/v1/me", &[("Cookie", &cookie)]);
    assert_eq!(me["user"], "otto");
    let csrf = me["csrf"].as_str().unwrap().to_string();
    assert!(csrf.len() >= 32, "{me}");
    let (status, _, body) = request("DELETE", admin_port, &unblock, &[("Cookie", &cookie)], None);
    assert_eq!(status, 403, "no CSRF token: {body}");
    let (status, _, body) = request(
        "DELETE",
        admin_port,
        &unblock,
        &[("Cookie", &cookie), ("X-CSRF-Token", "0000")],
        None,
    );
    assert_eq!(status, 403, "a wrong CSRF token: {body}");
    let (status, _, body) = request(
        "DELETE",
        admin_port,
        &unblock,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = request(
        "POST",
        admin_port,
        "/api/v1/reload",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // The config in force, not the file: an edit that fails stays out of /config.
    let cfg_path = rg.config_path.clone().unwrap();
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    let shown = get_json(admin_port, "/api/v1/config", &[("Authorization", &viewer)]);
    assert_eq!(shown["text"], good.as_str());
    std::fs::write(
        &cfg_path,
        format!(
            "{good}
[server.bogus]
edited = true
"
        ),
    )
    .unwrap();
    let (status, _, body) = request(
        "POST",
        admin_port,
        "/api/v1/reload",
        &[("Authorization", &operator)],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("refused"), "{v}");
    let shown = get_json(admin_port, "/api/v1/config", &[("Authorization", &viewer)]);
    assert_eq!(shown["text"], good.as_str());
    std::fs::write(&cfg_path, &good).unwrap();
    // A failed login and a read of the audit trail.
    let (status, _, _) = request(
        "POST",
        admin_port,
        "/api/v1/login",
        &[],
        Some("{\"token\": \"guess-guess-guess\"}"),
    );
    assert_eq!(status, 401);
    let recs = get_json(
        admin_port,
        "/api/v1/audit?kind=security-alert&limit=50",
        &[("Authorization", &viewer)],
    );
    assert!(recs["records"].as_array().is_some(), "{recs}");

    // Every action is in the audit trail, with its A.5 message.
    let store = sqlite_store(&rg.data_dir);
    let needles = [
        "console-alert-acknowledged",
        "console-block-removed",
        "console-config-reload",
        "console-login-failed",
    ];
    let rows = wait_trail(&store, NODE, Duration::from_secs(30), |rows| {
        needles.iter().all(|n| {
            rows.iter()
                .any(|r| r.kind() == "security-alert" && r.entry.contains(n))
        }) && rows.iter().any(|r| r.kind() == "audit-log-used")
            && rows.iter().any(|r| {
                r.kind() == "security-alert" && r.entry.contains("removed by console user otto")
            })
    })
    .unwrap_or_else(|| {
        panic!(
            "audit trail lacks the console's actions; log:\n{}",
            rg.log()
        )
    });
    let src = AtnaSource::new(NODE);
    let mut xmls = Vec::new();
    for n in needles {
        let row = rows
            .iter()
            .find(|r| r.kind() == "security-alert" && r.entry.contains(n))
            .unwrap();
        let xml = message_for(&row.record, &src)
            .expect("an A.5 message")
            .to_xml();
        assert!(xml.contains("110113"), "{xml}");
        xmls.push(xml);
    }
    let removal = xmls.get(1).unwrap();
    assert!(removal.contains("110129"), "{removal}");
    assert!(xmls[0].contains("otto"), "{}", xmls[0]);
    let used = rows.iter().find(|r| r.kind() == "audit-log-used").unwrap();
    assert!(used.entry.contains("vera"), "{}", used.entry);
    let xml = message_for(&used.record, &src)
        .expect("an A.5 message")
        .to_xml();
    assert!(xml.contains("110101"), "{xml}");
    assert!(xml.contains("vera"), "{xml}");
    xmls.push(xml);
    let refs: Vec<&str> = xmls.iter().map(String::as_str).collect();
    a5_validate(&refs).unwrap_or_else(|e| panic!("A.5 schema: {e}"));
    drop(scp);
}

/// One HTTP/1.0 request over TLS with `openssl s_client` (verifying the console's certificate
/// against `ca`): the raw response.
fn https_raw(port: u16, ca: &Path, request: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(require_tool(tls_peers::OPENSSL_BIN))
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(ca)
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    // The console closes an HTTP/1.0 connection after its response; s_client then ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_client did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn console_over_tls_with_secure_session_cookie() {
    let pki = tls_peers::Pki::init("console", &[]);
    let scp = StoreScp::start("STORESCP");
    let admin_port = free_port();
    let extra = format!(
        "tls_cert = {:?}\ntls_key = {:?}\n\n{}",
        pki.gateway_cert().display().to_string(),
        pki.gateway_key().display().to_string(),
        tokens_toml()
    );
    let rg = Radguard::start_fresh(&gateway_toml(scp.port, admin_port, &extra));
    assert!(
        rg.stdout_lines()
            .iter()
            .any(|l| l.contains(&format!("console on https://127.0.0.1:{admin_port}/"))),
        "{}",
        rg.log()
    );
    let me = https_raw(
        admin_port,
        &pki.ca(),
        &format!(
            "GET /api/v1/me HTTP/1.0\r\nHost: localhost:{admin_port}\r\nAuthorization: Bearer {VIEWER_TOKEN}\r\n\r\n"
        ),
    );
    assert!(me.contains(" 200 OK"), "{me}");
    assert!(me.contains("\"user\":\"vera\""), "{me}");
    let body = format!("{{\"token\": \"{OPERATOR_TOKEN}\"}}");
    let login = https_raw(
        admin_port,
        &pki.ca(),
        &format!(
            "POST /api/v1/login HTTP/1.0\r\nHost: localhost:{admin_port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(login.contains(" 204 No Content"), "{login}");
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {login}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    // Plain HTTP on the TLS port gets no answer.
    assert!(http_get(admin_port, "/api/v1/me").map_or(true, |(s, _)| s != 200));
    drop(scp);
}
