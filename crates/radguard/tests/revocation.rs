//! Live revocation: every DIMSE request on a running association is judged under the policy in
//! force *now*, so a reload (`radguard reload --data DIR`) that removes a peer reaches the
//! associations that peer already holds. Raw associations over loopback, real upstreams:
//!
//! - a removed peer's next C-STORE is answered 0x0124 (Refused: Not Authorized) with a
//!   `dimse-refused` event and a `not-authorized` alert saying the peer is no longer admitted,
//!   then (`on_revoke = "abort"`, the default) an A-ABORT ends its association; another peer's
//!   association on the same route goes on storing; Orthanc holds nothing of the refused
//!   request; a new association from the removed peer is rejected (1,1,3);
//! - with `on_revoke = "refuse-requests"` every further request (C-STORE, C-ECHO) is refused
//!   0x0124 and the association stays up until the client releases it (answered normally);
//! - a narrowed `store_sop_classes` refuses the class no longer allowed (0x0124, SOP class not
//!   allowed) without ending the association: it is not a revocation;
//! - the same revocation on a vault route (no upstream): the vault index keeps the first
//!   instance only;
//! - a DICOM TLS peer pinned to its client certificate (`cert_sha256`) whose pin a reload moves
//!   to a replacement certificate: the next C-STORE on its running TLS association is refused
//!   0x0124 and aborted; the old certificate is rejected (1,1,3), the new one admitted.
//!
//! The attack: a modality's identity is stolen (or a peer is retired) and its entry removed
//! from the policy (or its certificate pin moved to a new certificate); an association opened
//! before the reload must not keep storing for hours.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::raw::{self, Answer, Conn, Pc, Rq};
use common::tls_peers::{fingerprint, Pki};
use common::*;
use radguard_dicom::dimse::Command;
use serde_json::Value;

/// UID root of this file's instances (hostile.rs uses …1234.7, firewall.rs …1234.8).
const ROOT: &str = "1.2.826.0.1.3680043.10.1234.9";
/// The two modalities: different AE titles, both on 127.0.0.1.
const MOD1: &str = "MOD1";
const MOD2: &str = "MOD2";
/// Presentation context ids (all Implicit VR Little Endian).
const ECHO_CTX: u8 = 1;
const CT_CTX: u8 = 3;
const MR_CTX: u8 = 5;
/// How long an answer may take (every expected answer comes at once).
const ANSWER: Duration = Duration::from_secs(30);
/// How long an event may take to be logged.
const EVENT: Duration = Duration::from_secs(10);
/// Refused: Not Authorized (PS3.7 C.4.2.1.4 / the policy's answer to a withdrawn admission and
/// to a SOP class the peer may not store).
const NOT_AUTHORIZED: u16 = 0x0124;
/// The alert detail a revocation adds (relay and vault alike).
const NO_LONGER_ADMITTED: &str = "no longer admitted by the policy in force";

// ------------------------------------------------------------------------------- config

/// A loopback peer allowed echo and store of `classes`.
fn modality(c: Config, name: &str, ae: &str, classes: &[&str]) -> Config {
    c.peer(
        name,
        &[ae],
        &["127.0.0.1/32"],
        &["echo", "store"],
        classes,
        &[],
    )
}

/// MOD2 always, MOD1 when `with_mod1`, both storing every class; `server` lines; the routes.
fn two_modalities(server: &[&str], with_mod1: bool, routes: &dyn Fn(Config) -> Config) -> String {
    let mut c = Config::new();
    for l in server {
        c = c.server(l);
    }
    if with_mod1 {
        c = modality(c, "mod1", MOD1, &["*"]);
    }
    c = modality(c, "mod2", MOD2, &["*"]);
    routes(c).toml()
}

/// Rewrites the config file, runs `radguard reload --data DIR` and waits for its successful
/// `config-reloaded` event (sent after the new policy is in force).
fn reload(rg: &Radguard, toml: &str) {
    let before = rg.reload_events().len();
    rg.rewrite_config(toml);
    rg.reload_cli().assert_success("radguard reload --data");
    let ev = rg.wait_reload(before);
    assert_eq!(
        ev["ok"],
        true,
        "the reload was refused: {ev:#}\n{}",
        rg.log()
    );
}

// ------------------------------------------------------------------------- raw client

/// An association from `calling` to `called` proposing Verification, CT and MR Image Storage
/// (Implicit VR LE); panics unless all three are accepted.
fn associate(rg: &Radguard, calling: &str, called: &str) -> Conn {
    associate_on(rg, Conn::connect(rg.port()), calling, called)
}

/// [`associate`] on a connection already open (e.g. through a [`TlsBridge`]).
fn associate_on(rg: &Radguard, mut c: Conn, calling: &str, called: &str) -> Conn {
    let ac = c
        .associate(&proposal(calling, called))
        .unwrap_or_else(|a| panic!("{calling} -> {called} not accepted: {a}\n{}", rg.log()));
    for ctx in [ECHO_CTX, CT_CTX, MR_CTX] {
        assert_eq!(
            ac.result(ctx),
            Some(0),
            "{calling} -> {called}: context {ctx} not accepted: {ac:?}"
        );
    }
    c
}

fn proposal(calling: &str, called: &str) -> Rq {
    Rq::new(calling, called).contexts(vec![
        Pc::new(ECHO_CTX, uid::VERIFICATION, &[raw::IMPLICIT_LE]),
        Pc::new(CT_CTX, uid::CT_IMAGE_STORAGE, &[raw::IMPLICIT_LE]),
        Pc::new(MR_CTX, uid::MR_IMAGE_STORAGE, &[raw::IMPLICIT_LE]),
    ])
}

/// A small image data set of `class` (Implicit VR LE, no pixel data).
fn dataset(class: &str, modality: &str, sop: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(raw::element(0x0008, 0x0016, class.as_bytes(), 0));
    d.extend(raw::element(0x0008, 0x0018, sop.as_bytes(), 0));
    d.extend(raw::element(0x0008, 0x0060, modality.as_bytes(), b' '));
    d.extend(raw::element(0x0010, 0x0010, b"REVOKED^TEST", b' '));
    d.extend(raw::element(0x0010, 0x0020, b"R9", b' '));
    d.extend(raw::element(
        0x0020,
        0x000D,
        format!("{ROOT}.0.1").as_bytes(),
        0,
    ));
    d.extend(raw::element(
        0x0020,
        0x000E,
        format!("{ROOT}.0.2").as_bytes(),
        0,
    ));
    d
}

#[derive(Clone, Copy)]
enum Image {
    Ct,
    Mr,
}

/// Sends a C-STORE (command and data set as two P-DATA PDUs in one write, as a modality sends
/// them) and returns the next PDU that comes back.
fn send_store(c: &mut Conn, id: u16, image: Image, sop: &str) -> Answer {
    let (ctx, class, modality) = match image {
        Image::Ct => (CT_CTX, uid::CT_IMAGE_STORAGE, "CT"),
        Image::Mr => (MR_CTX, uid::MR_IMAGE_STORAGE, "MR"),
    };
    let mut bytes = raw::pdata(&[(ctx, raw::CMD_LAST, &raw::store_rq(id, class, sop))]);
    bytes.extend(raw::pdata(&[(
        ctx,
        raw::DATA_LAST,
        &dataset(class, modality, sop),
    )]));
    if let Err(e) = c.send(&bytes) {
        return Answer::Error(format!("send C-STORE {id}: {e}"));
    }
    c.read_pdu(ANSWER)
}

/// Sends a C-ECHO and returns the next PDU.
fn send_echo(c: &mut Conn, id: u16) -> Answer {
    if let Err(e) = c.send(&raw::pdata(&[(ECHO_CTX, raw::CMD_LAST, &raw::echo_rq(id))])) {
        return Answer::Error(format!("send C-ECHO {id}: {e}"));
    }
    c.read_pdu(ANSWER)
}

/// The response in `a` to message `id` of kind `field` (0x8001 C-STORE-RSP, 0x8030
/// C-ECHO-RSP); panics with the log otherwise.
fn response(rg: &Radguard, a: &Answer, id: u16, field: u16) -> Command {
    let cmd = match a {
        Answer::Pdu(b) if b.first() == Some(&0x04) => raw::response_of(b),
        _ => None,
    };
    match cmd {
        Some(c) if c.responded_to == Some(id) && c.field == Some(field) => c,
        _ => panic!(
            "message {id}: expected a response 0x{field:04X}, got {a}\nradguard:\n{}",
            rg.log()
        ),
    }
}

/// Asserts `a` answers C-STORE `id` with `status`.
fn assert_store_status(rg: &Radguard, a: &Answer, id: u16, status: u16) -> Command {
    let c = response(rg, a, id, 0x8001);
    assert_eq!(
        c.status,
        Some(status),
        "C-STORE {id}: {c:?}\nradguard:\n{}",
        rg.log()
    );
    c
}

fn store_ok(rg: &Radguard, c: &mut Conn, id: u16, image: Image, sop: &str) {
    let a = send_store(c, id, image, sop);
    assert_store_status(rg, &a, id, 0);
}

/// A-RELEASE-RQ answered by A-RELEASE-RP.
fn release(rg: &Radguard, mut c: Conn, who: &str) {
    c.send(&raw::RELEASE_RQ).expect("send A-RELEASE-RQ");
    let a = c.read_pdu(ANSWER);
    assert_eq!(
        a.pdu_type(),
        Some(0x06),
        "{who}: A-RELEASE-RQ answered with {a}\nradguard:\n{}",
        rg.log()
    );
}

/// After the refusal: the next PDU is an A-ABORT from the gateway (source 2, reason 0: not
/// specified). The client then closes its side, as the receiver of an A-ABORT does (PS3.8
/// §9.2, action AA-3), and the gateway closes the connection without sending anything else.
/// (The vault waits for that close up to ARTIM, PS3.8 state Sta13; the relay closes at once.)
fn assert_aborted(rg: &Radguard, c: &mut Conn, who: &str) {
    let a = c.read_pdu(ANSWER);
    assert_eq!(
        a.abort(),
        Some((2, 0)),
        "{who}: after the refusal expected an A-ABORT (2, 0), got {a}\nradguard:\n{}",
        rg.log()
    );
    c.shutdown_write();
    let (end, seen) = c.read_until_close(ANSWER);
    assert!(
        seen.is_empty() && end.is_close(),
        "{who}: after the A-ABORT expected the close; got {} then {end}\nradguard:\n{}",
        seen.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        rg.log()
    );
}

/// A new association from `calling` is rejected with A-ASSOCIATE-RJ (1, 1, 3): calling AE not
/// recognized.
fn assert_rejected_now(rg: &Radguard, calling: &str, called: &str) {
    assert_rejected_on(rg, Conn::connect(rg.port()), calling, called);
}

/// [`assert_rejected_now`] on a connection already open.
fn assert_rejected_on(rg: &Radguard, mut c: Conn, calling: &str, called: &str) {
    match c.associate(&proposal(calling, called)) {
        Ok(ac) => panic!(
            "a new association from {calling} was accepted after the reload: {ac:?}\n{}",
            rg.log()
        ),
        Err(a) => assert_eq!(
            a.reject(),
            Some((1, 1, 3)),
            "{calling}: expected A-ASSOCIATE-RJ 1/1/3, got {a}\nradguard:\n{}",
            rg.log()
        ),
    }
}

// ------------------------------------------------------------------------- TLS bridge

/// A DICOM TLS client for the raw helpers: a plain listener on 127.0.0.1 whose every
/// connection is carried over its own TLS connection (radguard-tls's client profile,
/// presenting `client`, verifying the gateway against `ca` as `localhost`) to radguard's TLS
/// listener. Bytes are copied both ways and each side's end is passed on (EOF becomes a TLS
/// close_notify and the reverse), so a [`Conn`] to [`TlsBridge::connect`] speaks DICOM TLS to
/// radguard one PDU at a time, with the certificate presented.
struct TlsBridge {
    port: u16,
    /// Handshake and copy errors (an error at the end of an aborted association is normal),
    /// for failure messages.
    notes: Arc<Mutex<Vec<String>>>,
}

impl TlsBridge {
    fn start(target: u16, ca: &Path, client: &(PathBuf, PathBuf)) -> TlsBridge {
        use radguard_tls::tokio_rustls::TlsConnector;
        let cfg = radguard_tls::client_config(ca, Some((&client.0, &client.1)))
            .expect("TLS client config for the bridge");
        let notes = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&notes);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                    .await
                    .expect("bind the bridge");
                tx.send(listener.local_addr().expect("addr").port()).ok();
                let connector = TlsConnector::from(cfg);
                while let Ok((mut plain, _)) = listener.accept().await {
                    let connector = connector.clone();
                    let log = Arc::clone(&log);
                    tokio::spawn(async move {
                        let note = |e: String| log.lock().unwrap().push(e);
                        let tcp = match tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        {
                            Ok(t) => t,
                            Err(e) => return note(format!("connect to radguard: {e}")),
                        };
                        let _ = tcp.set_nodelay(true);
                        let _ = plain.set_nodelay(true);
                        let name = radguard_tls::server_name("localhost").expect("server name");
                        let mut tls = match connector.connect(name, tcp).await {
                            Ok(t) => t,
                            Err(e) => return note(format!("TLS handshake: {e}")),
                        };
                        if let Err(e) = tokio::io::copy_bidirectional(&mut plain, &mut tls).await {
                            note(format!("copy: {e}"));
                        }
                    });
                }
            });
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the TLS bridge's port");
        TlsBridge { port, notes }
    }

    /// A new raw connection, carried over a new TLS connection to radguard.
    fn connect(&self) -> Conn {
        Conn::connect(self.port)
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }
}

// ------------------------------------------------------------------------------- events

/// Waits for an event matching `pred`; panics with the events and the log.
fn wait_event(rg: &Radguard, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut got = None;
    wait_until(EVENT, || {
        got = rg.events().into_iter().find(|e| pred(e));
        got.is_some()
    });
    got.unwrap_or_else(|| {
        panic!(
            "no {what} event within {EVENT:?}; events:\n{:#?}\nradguard:\n{}",
            rg.events(),
            rg.log()
        )
    })
}

/// The association id of the (one) accepted association of peer `peer`.
fn assoc_of(rg: &Radguard, peer: &str) -> Value {
    wait_event(rg, &format!("association-accepted of {peer}"), |e| {
        e["event"] == "association-accepted" && e["peer"] == peer
    })["assoc"]
        .clone()
}

fn is(e: &Value, event: &str, assoc: &Value) -> bool {
    e["event"] == event && &e["assoc"] == assoc
}

/// The `dimse-refused` event of message `id` on `assoc`, with `status`.
fn wait_refused(rg: &Radguard, assoc: &Value, id: u16, command: &str, status: u16) -> Value {
    wait_event(rg, &format!("dimse-refused {command} {id}"), |e| {
        is(e, "dimse-refused", assoc)
            && e["message_id"] == u64::from(id)
            && e["command"] == command
            && e["status"] == u64::from(status)
    })
}

/// The `not-authorized` alerts of `assoc` whose detail names the revocation.
fn revocation_alerts(rg: &Radguard, assoc: &Value) -> Vec<Value> {
    rg.security_alerts()
        .into_iter()
        .filter(|e| {
            &e["assoc"] == assoc
                && e["kind"] == "not-authorized"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(NO_LONGER_ADMITTED))
        })
        .collect()
}

fn wait_revocation_alerts(rg: &Radguard, assoc: &Value, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let ok = wait_until(EVENT, || {
        got = revocation_alerts(rg, assoc);
        got.len() >= n
    });
    assert!(
        ok,
        "expected {n} not-authorized alert(s) containing {NO_LONGER_ADMITTED:?} for association \
         {assoc}; alerts:\n{:#?}\nradguard:\n{}",
        rg.security_alerts(),
        rg.log()
    );
    got
}

/// The association `assoc` ended with `association-aborted` (blame local, "admission
/// withdrawn") and was never released.
fn wait_revoked_abort(rg: &Radguard, assoc: &Value) {
    let ev = wait_event(rg, "association-aborted", |e| {
        is(e, "association-aborted", assoc)
    });
    assert!(
        ev["blame"] == "local"
            && ev["why"]
                .as_str()
                .is_some_and(|w| w.contains("admission withdrawn")),
        "association-aborted of the revoked association: {ev:#}"
    );
    assert!(
        !rg.events()
            .iter()
            .any(|e| is(e, "association-released", assoc)),
        "the revoked association was also recorded as released:\n{}",
        rg.log()
    );
}

/// The association `assoc` ended with `association-released`, and no abort was recorded for it.
fn wait_released_not_aborted(rg: &Radguard, assoc: &Value) {
    wait_event(rg, "association-released", |e| {
        is(e, "association-released", assoc)
    });
    let aborted: Vec<Value> = rg
        .events()
        .into_iter()
        .filter(|e| is(e, "association-aborted", assoc))
        .collect();
    assert!(
        aborted.is_empty(),
        "association {assoc} was released by the client but also aborted: {aborted:#?}"
    );
}

// ------------------------------------------------------------------------------ oracles

/// Whether storescp kept a file for this SOP instance (`CT.<uid>.dcm`, `MR.<uid>.dcm`).
fn stored_by(files: &[PathBuf], sop: &str) -> bool {
    let needle = format!(".{sop}.dcm");
    files.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(&needle))
    })
}

// -------------------------------------------------------------------------- scenarios

/// SOP Instance UIDs of one scenario: A (MOD1) and B (MOD2), first and second instance.
struct Sops {
    a1: String,
    a2: String,
    b1: String,
    b2: String,
}

impl Sops {
    fn new(test: u32) -> Sops {
        Sops {
            a1: format!("{ROOT}.{test}.1.1"),
            a2: format!("{ROOT}.{test}.1.2"),
            b1: format!("{ROOT}.{test}.2.1"),
            b2: format!("{ROOT}.{test}.2.2"),
        }
    }
}

/// Test 1 and 4: A (MOD1) and B (MOD2) each store one instance; MOD1 is removed by a reload;
/// A's next C-STORE is refused 0x0124 and A is aborted; B stores its second instance and
/// releases; MOD1 cannot associate again.
fn removed_peer_scenario(rg: &Radguard, called: &str, without_mod1: &str, sops: &Sops) {
    let mut a = associate(rg, MOD1, called);
    let mut b = associate(rg, MOD2, called);
    let a_id = assoc_of(rg, "mod1");
    store_ok(rg, &mut a, 1, Image::Ct, &sops.a1);
    store_ok(rg, &mut b, 1, Image::Ct, &sops.b1);

    reload(rg, without_mod1);

    let rsp = send_store(&mut a, 2, Image::Ct, &sops.a2);
    assert_store_status(rg, &rsp, 2, NOT_AUTHORIZED);
    assert_aborted(rg, &mut a, "A (MOD1, removed)");
    wait_refused(rg, &a_id, 2, "CStoreRq", NOT_AUTHORIZED);
    let alerts = wait_revocation_alerts(rg, &a_id, 1);
    assert_eq!(
        alerts.len(),
        1,
        "one refused request, one alert: {alerts:#?}"
    );
    wait_revoked_abort(rg, &a_id);

    store_ok(rg, &mut b, 2, Image::Ct, &sops.b2);
    release(rg, b, "B (MOD2, kept)");

    assert_rejected_now(rg, MOD1, called);
}

// -------------------------------------------------------------------------------- tests

/// A reload removes MOD1: its running association's next C-STORE is refused 0x0124 and
/// aborted, MOD2's association on the same route is untouched, Orthanc never sees the refused
/// instance, MOD1 cannot associate again.
#[test]
fn removed_peer_is_refused_and_aborted_at_its_next_request() {
    let orthanc = Orthanc::start("ORTHANC", &[]);
    let routes = |c: Config| c.route("PACS", orthanc.dicom_port, "ORTHANC");
    let rg = Radguard::start_fresh(&two_modalities(&[], true, &routes));
    let sops = Sops::new(1);
    removed_peer_scenario(&rg, "PACS", &two_modalities(&[], false, &routes), &sops);

    let held = |sop: &str| orthanc.find_instance(sop).is_some();
    let report = format!(
        "A1 {} B1 {} B2 {} A2 {} (count {})",
        held(&sops.a1),
        held(&sops.b1),
        held(&sops.b2),
        held(&sops.a2),
        orthanc.instance_count()
    );
    assert!(
        held(&sops.a1) && held(&sops.b1) && held(&sops.b2) && !held(&sops.a2),
        "Orthanc holds: {report}\nradguard:\n{}\northanc:\n{}",
        rg.log(),
        orthanc.log()
    );
    assert_eq!(orthanc.instance_count(), 3, "Orthanc holds: {report}");
}

/// With `on_revoke = "refuse-requests"` the removed peer's association stays up: two C-STOREs
/// and a C-ECHO are each refused 0x0124, then the client's A-RELEASE-RQ is answered normally.
#[test]
fn on_revoke_refuse_requests_keeps_the_association_and_refuses_each_request() {
    // `--fork`: storescp serves one association at a time otherwise, and A and B run together.
    let scp = StoreScp::start_with("ARCHIVE", &["--fork"]);
    let server = ["on_revoke = \"refuse-requests\""];
    let routes = |c: Config| c.route("ARCHIVE", scp.port, "ARCHIVE");
    let rg = Radguard::start_fresh(&two_modalities(&server, true, &routes));
    let sops = Sops::new(2);
    let a3 = format!("{ROOT}.2.1.3");

    let mut a = associate(&rg, MOD1, "ARCHIVE");
    let mut b = associate(&rg, MOD2, "ARCHIVE");
    let a_id = assoc_of(&rg, "mod1");
    store_ok(&rg, &mut a, 1, Image::Ct, &sops.a1);
    store_ok(&rg, &mut b, 1, Image::Ct, &sops.b1);

    reload(&rg, &two_modalities(&server, false, &routes));

    // Each answer is the next PDU on A: no A-ABORT comes between them.
    let rsp = send_store(&mut a, 2, Image::Ct, &sops.a2);
    assert_store_status(&rg, &rsp, 2, NOT_AUTHORIZED);
    let rsp = send_store(&mut a, 3, Image::Ct, &a3);
    assert_store_status(&rg, &rsp, 3, NOT_AUTHORIZED);
    let rsp = send_echo(&mut a, 4);
    let echo = response(&rg, &rsp, 4, 0x8030);
    assert_eq!(echo.status, Some(NOT_AUTHORIZED), "C-ECHO 4: {echo:?}");
    release(&rg, a, "A (MOD1, removed, refuse-requests)");

    wait_refused(&rg, &a_id, 2, "CStoreRq", NOT_AUTHORIZED);
    wait_refused(&rg, &a_id, 3, "CStoreRq", NOT_AUTHORIZED);
    wait_refused(&rg, &a_id, 4, "CEchoRq", NOT_AUTHORIZED);
    wait_revocation_alerts(&rg, &a_id, 3);
    wait_released_not_aborted(&rg, &a_id);

    store_ok(&rg, &mut b, 2, Image::Ct, &sops.b2);
    release(&rg, b, "B (MOD2, kept)");
    assert_rejected_now(&rg, MOD1, "ARCHIVE");

    let files = scp.files();
    let held = |sop: &str| stored_by(&files, sop);
    assert!(
        held(&sops.a1) && held(&sops.b1) && held(&sops.b2) && !held(&sops.a2) && !held(&a3),
        "storescp holds {files:?}\nradguard:\n{}\nstorescp:\n{}",
        rg.log(),
        scp.log()
    );
    assert_eq!(files.len(), 3, "storescp holds {files:?}");
}

/// A reload narrows the peer's `store_sop_classes` from CT + MR to MR: the CT store on the
/// running association is refused (0x0124, SOP class not allowed), not as a revocation; the
/// association goes on (an MR store and a C-ECHO succeed) and is released normally.
#[test]
fn narrowed_sop_classes_refuse_without_abort() {
    let scp = StoreScp::start("ARCHIVE");
    let config = |classes: &[&str]| {
        modality(Config::new(), "mod1", MOD1, classes)
            .route("ARCHIVE", scp.port, "ARCHIVE")
            .toml()
    };
    let rg = Radguard::start_fresh(&config(&["CTImageStorage", "MRImageStorage"]));
    let (ct1, ct2) = (format!("{ROOT}.3.1.1"), format!("{ROOT}.3.1.2"));
    let (mr1, mr2) = (format!("{ROOT}.3.2.1"), format!("{ROOT}.3.2.2"));

    let mut a = associate(&rg, MOD1, "ARCHIVE");
    let a_id = assoc_of(&rg, "mod1");
    store_ok(&rg, &mut a, 1, Image::Ct, &ct1);
    store_ok(&rg, &mut a, 2, Image::Mr, &mr1);

    reload(&rg, &config(&["MRImageStorage"]));

    let rsp = send_store(&mut a, 3, Image::Ct, &ct2);
    let refused = assert_store_status(&rg, &rsp, 3, NOT_AUTHORIZED);
    assert_eq!(
        refused.error_comment.as_deref(),
        Some("Radguard: SOP class not allowed"),
        "{refused:?}"
    );
    store_ok(&rg, &mut a, 4, Image::Mr, &mr2);
    let rsp = send_echo(&mut a, 5);
    let echo = response(&rg, &rsp, 5, 0x8030);
    assert_eq!(echo.status, Some(0), "C-ECHO 5: {echo:?}");
    release(&rg, a, "A (MOD1, narrowed)");

    let ev = wait_refused(&rg, &a_id, 3, "CStoreRq", NOT_AUTHORIZED);
    assert_eq!(ev["why"], "Radguard: SOP class not allowed", "{ev:#}");
    wait_released_not_aborted(&rg, &a_id);
    let alerts: Vec<Value> = rg
        .security_alerts()
        .into_iter()
        .filter(|e| e["assoc"] == a_id)
        .collect();
    assert!(
        alerts.len() == 1
            && alerts[0]["kind"] == "not-authorized"
            && alerts[0]["detail"]
                .as_str()
                .is_some_and(|d| !d.contains(NO_LONGER_ADMITTED)),
        "one not-authorized alert, not a revocation: {alerts:#?}"
    );

    // New associations see the narrowed policy too: CT rejected (user rejection), MR accepted.
    let mut c = Conn::connect(rg.port());
    let ac = c
        .associate(&proposal(MOD1, "ARCHIVE"))
        .unwrap_or_else(|a| panic!("new association after the narrowing: {a}"));
    assert_eq!(
        (ac.result(CT_CTX), ac.result(MR_CTX)),
        (Some(1), Some(0)),
        "{ac:?}"
    );
    release(&rg, c, "a new MOD1 association");

    let files = scp.files();
    let held = |sop: &str| stored_by(&files, sop);
    assert!(
        held(&ct1) && held(&mr1) && held(&mr2) && !held(&ct2),
        "storescp holds {files:?}\nradguard:\n{}\nstorescp:\n{}",
        rg.log(),
        scp.log()
    );
    assert_eq!(files.len(), 3, "storescp holds {files:?}");
}

/// Test 1 on a vault route (no upstream): refused 0x0124 then A-ABORT; the vault's index holds
/// A's first instance and B's two, never A's second.
#[test]
fn vault_route_revocation() {
    let routes = |c: Config| c.vault_route("VAULT");
    let rg = Radguard::start_fresh(&two_modalities(&[], true, &routes));
    let sops = Sops::new(4);
    removed_peer_scenario(&rg, "VAULT", &two_modalities(&[], false, &routes), &sops);

    let mut want = vec![sops.a1.clone(), sops.b1.clone(), sops.b2.clone()];
    want.sort();
    let index = vault_index(&rg.data_dir);
    assert_eq!(index, want, "vault index\nradguard:\n{}", rg.log());
    let objects = files_under(&rg.data_dir, ".dcm");
    assert_eq!(objects.len(), 3, "vault objects: {objects:?}");
}

/// The TLS test's config: a TLS listener only (the PKI's gateway certificate; client
/// certificates verified against its CA), MOD1 from 127.0.0.1 pinned to the certificate
/// `pinned` by its SHA-256 fingerprint (`cert_sha256`), a route ARCHIVE to storescp.
fn pinned_config(pki: &Pki, pinned: &Path, scp_port: u16) -> String {
    let fp = fingerprint(pinned);
    format!(
        "[server]\ntls_listen = [\"127.0.0.1:0\"]\nae_title = \"RADGUARD\"\n\
         connect_timeout_secs = 5\nartim_timeout_secs = 10\nidle_timeout_secs = 60\n\
         shutdown_grace_secs = 2\n\n[server.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n\n\
         [[peer]]\nname = \"mod1\"\nae_titles = [{MOD1:?}]\naddresses = [\"127.0.0.1/32\"]\n\
         allow = [\"echo\", \"store\"]\nstore_sop_classes = [\"*\"]\ncert_sha256 = [{fp:?}]\n\n\
         [[route]]\ncalled_ae = \"ARCHIVE\"\nupstream = \"127.0.0.1:{scp_port}\"\n\
         upstream_ae = \"ARCHIVE\"\n",
        pki.gateway_cert(),
        pki.gateway_key(),
        pki.ca()
    )
}

/// A DICOM TLS peer pinned to its client certificate (`cert_sha256`) holds an association
/// through radguard's TLS listener (C-ECHO and C-STORE succeed); its certificate is then
/// reported stolen and a reload pins the peer to a replacement certificate instead. The next
/// C-STORE on the running TLS association is refused 0x0124 with a revocation alert, then
/// A-ABORT; storescp never sees that instance; a new TLS association with the old certificate
/// is rejected (1,1,3, condition `cert_sha256`) while the replacement certificate is admitted.
#[test]
fn revoked_certificate_pin_cuts_the_running_tls_association() {
    let pki = Pki::init("revoke-pin", &["mod1"]);
    let stolen = pki.client("mod1");
    let replacement = pki.issue("mod1-new");
    let scp = StoreScp::start_with("ARCHIVE", &["--fork"]);
    let rg = Radguard::start_any(&pinned_config(&pki, &stolen.0, scp.port));
    let port = rg.tls_port();
    let (s1, s2, s3) = (
        format!("{ROOT}.5.1.1"),
        format!("{ROOT}.5.1.2"),
        format!("{ROOT}.5.2.1"),
    );

    let old_tls = TlsBridge::start(port, &pki.ca(), &stolen);
    let mut a = associate_on(&rg, old_tls.connect(), MOD1, "ARCHIVE");
    let a_id = assoc_of(&rg, "mod1");
    let rsp = send_echo(&mut a, 1);
    let echo = response(&rg, &rsp, 1, 0x8030);
    assert_eq!(echo.status, Some(0), "C-ECHO 1: {echo:?}");
    store_ok(&rg, &mut a, 2, Image::Ct, &s1);

    reload(&rg, &pinned_config(&pki, &replacement.0, scp.port));

    let rsp = send_store(&mut a, 3, Image::Ct, &s2);
    assert_store_status(&rg, &rsp, 3, NOT_AUTHORIZED);
    assert_aborted(&rg, &mut a, "MOD1 (certificate no longer pinned)");
    wait_refused(&rg, &a_id, 3, "CStoreRq", NOT_AUTHORIZED);
    let alerts = wait_revocation_alerts(&rg, &a_id, 1);
    assert_eq!(
        alerts.len(),
        1,
        "one refused request, one alert: {alerts:#?}"
    );
    wait_revoked_abort(&rg, &a_id);

    // A new TLS association with the stolen certificate: the handshake succeeds (it still
    // chains to the CA), the association is rejected for the pin.
    let before = rg.security_alerts().len();
    assert_rejected_on(&rg, old_tls.connect(), MOD1, "ARCHIVE");
    let pin_alert = wait_until(EVENT, || {
        rg.security_alerts().get(before..).is_some_and(|new| {
            new.iter().any(|e| {
                e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("(condition: cert_sha256"))
            })
        })
    });
    assert!(
        pin_alert,
        "no security-alert naming the condition cert_sha256; alerts: {:#?}\nbridge: {:?}",
        rg.security_alerts(),
        old_tls.notes()
    );

    // Positive control: the replacement certificate is admitted and stores.
    let new_tls = TlsBridge::start(port, &pki.ca(), &replacement);
    let mut c = associate_on(&rg, new_tls.connect(), MOD1, "ARCHIVE");
    store_ok(&rg, &mut c, 1, Image::Ct, &s3);
    release(&rg, c, "MOD1 with the replacement certificate");

    let files = scp.files();
    let held = |sop: &str| stored_by(&files, sop);
    assert!(
        held(&s1) && held(&s3) && !held(&s2),
        "storescp holds {files:?}\nradguard:\n{}\nstorescp:\n{}",
        rg.log(),
        scp.log()
    );
    assert_eq!(files.len(), 2, "storescp holds {files:?}");
}
