//! Syslog export to a real rsyslog (Debian `rsyslog` + `rsyslog-gnutls`), started by the tests
//! on loopback ports with its own config: TLS through the gtls driver with mutual
//! authentication (certificates made here with rcgen), and UDP. The tests parse what rsyslog
//! wrote (a JSON template of the RFC 5424 fields it parsed).

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{a5, sync, Backend};
use radguard_audit::atna::{message_for, AtnaSource};
use radguard_audit::chain::{seal_all, ChainHead};
use radguard_audit::record::{AuditEvent, AuditRecord, Peer, QueryData};
use radguard_audit::syslog::{
    ExporterHandle, ExporterOptions, SyslogExporter, SyslogTransport, TlsTarget,
};
use radguard_audit::{AuditWriter, WriterOptions};
use radguard_events::{AlertKind, AssocId, Event, EventBus};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private rsyslogd with its config, certificates and output in a temp folder.
struct Rsyslog {
    dir: tempfile::TempDir,
    tcp: u16,
    udp: u16,
    child: Option<Child>,
}

fn write_certs(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "radguard test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    for (name, eku) in [
        ("server", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name
            .push(DnType::CommonName, format!("radguard test {name}"));
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

impl Rsyslog {
    fn start() -> Self {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "rsyslogd missing: run `bash scripts/setup-radguard-audit.sh` (Debian rsyslog, rsyslog-gnutls)"
        );
        let dir = tempfile::tempdir().unwrap();
        write_certs(dir.path());
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let (tcp, udp) = (free_port(), free_udp_port());
        let d = dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{d}/work" maxMessageSize="256k"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{d}/ca.pem"
       DefaultNetstreamDriverCertFile="{d}/server.pem"
       DefaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid")
input(type="imtcp" port="{tcp}" address="127.0.0.1")
module(load="imudp")
input(type="imudp" port="{udp}" address="127.0.0.1")
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
        std::fs::write(dir.path().join("rsyslog.conf"), conf).unwrap();
        let check = Command::new(RSYSLOGD)
            .args(["-N1", "-f"])
            .arg(dir.path().join("rsyslog.conf"))
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "rsyslog config rejected: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let mut r = Rsyslog {
            dir,
            tcp,
            udp,
            child: None,
        };
        r.resume();
        r
    }

    fn resume(&mut self) {
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.path().join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.path().join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.tcp)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen on {}",
                self.tcp
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait: rsyslog closes its connections and flushes its output.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    fn tls_target(&self) -> TlsTarget {
        let d = self.dir.path();
        TlsTarget {
            address: format!("127.0.0.1:{}", self.tcp),
            server_name: "localhost".into(),
            ca_file: d.join("ca.pem"),
            client_cert: Some(d.join("client.pem")),
            client_key: Some(d.join("client.key")),
        }
    }

    fn output(&self) -> PathBuf {
        self.dir.path().join("out.jsonl")
    }

    /// What rsyslog wrote so far.
    fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(self.output()).unwrap_or_default();
        // Only whole lines: rsyslog may be writing the last one while it is read.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                let sd = v["sd"].as_str().unwrap_or_default().to_string();
                let seq = sd
                    .split("sequenceId=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no sequenceId in {sd:?}"));
                Received {
                    seq,
                    hostname: v["hostname"].as_str().unwrap_or_default().into(),
                    app: v["app"].as_str().unwrap_or_default().into(),
                    msgid: v["msgid"].as_str().unwrap_or_default().into(),
                    input: v["input"].as_str().unwrap_or_default().into(),
                    msg: v["msg"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_start_matches('\u{feff}')
                        .trim_start()
                        .into(),
                }
            })
            .collect()
    }

    fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.received();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
struct Received {
    seq: u64,
    hostname: String,
    app: String,
    msgid: String,
    input: String,
    msg: String,
}

fn alert(bus: &EventBus, i: u64) {
    bus.emit(Event::SecurityAlert {
        assoc: Some(AssocId(i)),
        kind: AlertKind::NotAuthorized,
        source: Some(format!("127.0.0.{}:4000", 1 + i % 100).parse().unwrap()),
        detail: format!("C-MOVE refused #{i}"),
    });
}

/// The seqs of the node's records that have an A.5 message, in order.
fn expected_seqs(b: &Backend) -> Vec<u64> {
    let mut s = b.open();
    let rows = sync(|| s.read_after("gw", 0, 1_000_000).unwrap());
    rows.iter()
        .filter(|r| {
            let rec: AuditRecord = serde_json::from_str(&r.entry).unwrap();
            message_for(&rec, &AtnaSource::new("gw")).is_some()
        })
        .map(|r| r.seq)
        .collect()
}

fn exporter(
    b: &Backend,
    transport: SyslogTransport,
    wake: Option<tokio::sync::watch::Receiver<radguard_audit::Health>>,
) -> ExporterHandle {
    let mut o = ExporterOptions::new("gw", transport);
    o.poll = Duration::from_millis(100);
    o.retry_min = Duration::from_millis(50);
    o.retry_max = Duration::from_millis(300);
    SyslogExporter::spawn(b.open(), o, wake).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_receiver_down_for_500_records_gets_each_once_in_order() {
    let mut rs = sync(Rsyslog::start);
    let b = Backend::sqlite();
    let bus = EventBus::new(8192);
    let w = AuditWriter::spawn(b.open(), bus.subscribe(), WriterOptions::new("gw"));
    let ex = exporter(&b, SyslogTransport::Tls(rs.tls_target()), Some(w.health()));
    for i in 0..20 {
        common::emit_assoc(&bus, i, 2);
    }
    for i in 0..10 {
        alert(&bus, i);
    }
    let mut st = ex.status();
    let first = tokio::time::timeout(Duration::from_secs(20), st.wait_for(|s| s.sent >= 51))
        .await
        .is_ok();
    assert!(first, "status {:?}", st.borrow().clone());
    let got = sync(|| rs.wait_for(51, 10));
    // 1 audit-started + 20 x (begin, transferred) + 10 alerts = 51 messages.
    assert_eq!(got.len(), 51, "{:?}", got.last());
    // Receiver down; 500 records (each with a message) pile up in the store.
    sync(|| rs.stop());
    for i in 100..600 {
        alert(&bus, i);
    }
    let mut h = w.health();
    tokio::time::timeout(
        Duration::from_secs(20),
        h.wait_for(|x| x.head_seq >= 1 + 20 * 9 + 10 + 500),
    )
    .await
    .unwrap()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sync(|| rs.received().len()),
        51,
        "nothing can arrive while the receiver is down"
    );
    assert_eq!(st.borrow().sent, 51);
    // Receiver back: everything arrives, in order, once.
    sync(|| rs.resume());
    let got = sync(|| rs.wait_for(551, 30));
    // A restart of the exporter (graceful) must not resend anything.
    ex.shutdown().await.unwrap();
    let ex2 = exporter(&b, SyslogTransport::Tls(rs.tls_target()), Some(w.health()));
    for i in 1000..1005 {
        alert(&bus, i);
    }
    let got2 = sync(|| rs.wait_for(556, 20));
    ex2.shutdown().await.unwrap();
    w.shutdown().await.unwrap();
    let want = expected_seqs(&b);
    let seqs: Vec<u64> = got2.iter().map(|r| r.seq).collect();
    assert_eq!(got.len(), 551);
    assert_eq!(seqs.len(), 556, "each message once");
    assert_eq!(
        seqs,
        want[..556].to_vec(),
        "in chain order, none missing, none twice"
    );
    for r in &got2 {
        assert_eq!(
            (r.hostname.as_str(), r.app.as_str(), r.msgid.as_str()),
            ("gw", "radguard", "IHE+RFC-3881")
        );
        assert_eq!(r.input, "imtcp");
    }
    // What rsyslog received is valid A.5 XML.
    for r in got2.iter().step_by(37) {
        a5::xmllint(&r.msg).unwrap_or_else(|e| panic!("{e}\n{}", r.msg));
        assert!(a5::errors(&r.msg).is_empty(), "{:?}", a5::errors(&r.msg));
    }
    assert!(got2
        .iter()
        .any(|r| r.msg.contains("csd-code=\"110104\"") && r.msg.contains("PAT")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_carries_messages_over_32_kib_intact() {
    let rs = sync(Rsyslog::start);
    let b = Backend::sqlite();
    let dataset: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let rec = AuditRecord::draft(
        1_700_000_000_000,
        Some(1),
        Some(Peer {
            address: Some("127.0.0.9:4000".into()),
            calling_ae: Some("FINDSCU".into()),
            called_ae: Some("PACS".into()),
            ..Peer::default()
        }),
        AuditEvent::DimseRequest {
            message_id: 1,
            command: "CFindRq".into(),
            sop_class: Some("1.2.840.10008.5.1.4.1.2.2.1".into()),
            sop_instance: None,
            move_destination: None,
            study_uid: None,
            patient: None,
            query: Some(QueryData {
                level: Some("STUDY".into()),
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                dataset_base64: base64::engine::general_purpose::STANDARD.encode(&dataset),
            }),
        },
    );
    let (sealed, _) = seal_all("gw", &ChainHead::GENESIS, vec![rec]).unwrap();
    let mut s = b.open();
    sync(|| s.append("gw", &ChainHead::GENESIS, &sealed, None).unwrap());
    let ex = exporter(&b, SyslogTransport::Tls(rs.tls_target()), None);
    let got = sync(|| rs.wait_for(1, 20));
    ex.shutdown().await.unwrap();
    assert_eq!(got.len(), 1);
    let xml = &got[0].msg;
    assert!(xml.len() > 50_000, "message of {} bytes", xml.len());
    let doc = roxmltree::Document::parse(xml).unwrap();
    let q = doc
        .descendants()
        .find(|n| n.has_tag_name("ParticipantObjectQuery"))
        .unwrap();
    let back = base64::engine::general_purpose::STANDARD
        .decode(q.text().unwrap())
        .unwrap();
    assert_eq!(back, dataset, "query data set arrived intact");
    a5::xmllint(xml).unwrap();
    assert!(a5::check(xml).is_empty(), "{:?}", a5::check(xml));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_delivery() {
    let rs = sync(Rsyslog::start);
    let b = Backend::sqlite();
    let bus = EventBus::new(1024);
    let w = AuditWriter::spawn(b.open(), bus.subscribe(), WriterOptions::new("gw"));
    let ex = exporter(
        &b,
        SyslogTransport::Udp {
            address: format!("127.0.0.1:{}", rs.udp),
        },
        Some(w.health()),
    );
    for i in 0..20 {
        alert(&bus, i);
    }
    let got = sync(|| rs.wait_for(21, 20));
    ex.shutdown().await.unwrap();
    w.shutdown().await.unwrap();
    assert_eq!(got.len(), 21, "audit-started + 20 alerts");
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<u64>>());
    assert!(got.iter().all(|r| r.input == "imudp"));
    assert!(got[5].msg.contains("csd-code=\"110132\""), "{}", got[5].msg);
}
