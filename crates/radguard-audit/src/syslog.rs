//! Syslog export: RFC 5424 messages carrying the PS3.15 A.5 XML, over TLS (RFC 5425, octet
//! counting) or UDP (RFC 5426), delivered in chain order from a cursor kept in the store.
//!
//! The exporter reads records after its cursor, sends their messages (records without an A.5
//! message are skipped), and only then advances the cursor, one batch at a time. While the
//! receiver is down, records simply wait in the store; when it returns they go out in order.
//! Before each batch the exporter checks that the receiver has not closed the connection (a
//! write into a connection the peer already closed would otherwise "succeed" and be lost). A
//! graceful restart resends nothing; after a crash at most the batch in flight is sent again —
//! each message carries `[meta sequenceId="<seq>"]` and the node as HOSTNAME, so the receiver
//! can drop such duplicates. Over UDP nothing confirms delivery: what is sent while the receiver
//! is down is lost (use TLS for the audit trail of record).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::atna::{message_for, AtnaMessage, AtnaSource};
use crate::error::{AuditError, Result};
use crate::record::AuditRecord;
use crate::store::AuditStore;
use crate::time::rfc3339_ms;
use crate::writer::Health;

/// MSGID of IHE ATNA messages in the DICOM (RFC 3881-derived) format.
pub const MSGID: &str = "IHE+RFC-3881";

/// Facility 10: security/authorization (authpriv).
pub const FACILITY_AUTHPRIV: u8 = 10;

/// The RFC 5424 header fields that do not vary per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogFormat {
    /// HOSTNAME: the node name (identifies the chain).
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    pub facility: u8,
}

impl SyslogFormat {
    pub fn new(hostname: impl Into<String>) -> Self {
        SyslogFormat {
            hostname: hostname.into(),
            app_name: "radguard".into(),
            procid: std::process::id().to_string(),
            facility: FACILITY_AUTHPRIV,
        }
    }
}

/// An RFC 5424 header field: printable US-ASCII only, at most `max` characters, `-` if empty.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// The severity of a message: 3 (error) for serious and major failures, 4 (warning) for
/// security alerts and minor failures, 5 (notice) otherwise.
pub fn severity(m: &AtnaMessage) -> u8 {
    match m.outcome {
        8 | 12 => 3,
        4 => 4,
        _ if m.event_id.code == "110113" => 4,
        _ => 5,
    }
}

/// One RFC 5424 message (without transport framing). MSG is the XML, UTF-8 with a BOM.
pub fn format_5424(fmt: &SyslogFormat, time_ms: i64, severity: u8, seq: u64, xml: &str) -> String {
    let pri = u16::from(fmt.facility.min(23)) * 8 + u16::from(severity.min(7));
    // RFC 5424 7.3.1: sequenceId is 1..2147483647 and wraps.
    let sequence_id = (seq.saturating_sub(1) % 2_147_483_647) + 1;
    format!(
        "<{pri}>1 {} {} {} {} {MSGID} [meta sequenceId=\"{sequence_id}\"][origin software=\"radguard\" swVersion=\"{}\"] \u{FEFF}{xml}",
        rfc3339_ms(time_ms),
        header_field(&fmt.hostname, 255),
        header_field(&fmt.app_name, 48),
        header_field(&fmt.procid, 128),
        env!("CARGO_PKG_VERSION"),
    )
}

/// RFC 5425 (and RFC 6587) octet-counting framing: `MSG-LEN SP SYSLOG-MSG`.
pub fn octet_frame(msg: &str) -> Vec<u8> {
    let mut v = format!("{} ", msg.len()).into_bytes();
    v.extend_from_slice(msg.as_bytes());
    v
}

/// A TLS receiver (RFC 5425; IANA port 6514).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTarget {
    /// `host:port`.
    pub address: String,
    /// The name the receiver's certificate must carry (DNS name or IP address).
    pub server_name: String,
    /// PEM CA certificates that may sign the receiver's certificate.
    pub ca_file: PathBuf,
    /// PEM certificate chain and key of this gateway (mutual TLS, as ATNA requires).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Where the exporter sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTransport {
    Tls(TlsTarget),
    /// RFC 5426, `host:port` (IANA port 514).
    Udp {
        address: String,
    },
}

fn syslog_err(what: &str, e: impl std::fmt::Display) -> AuditError {
    AuditError::Syslog(format!("{what}: {e}"))
}

impl TlsTarget {
    /// Builds the client configuration (ring provider, TLS 1.2 and 1.3, webpki verification).
    pub fn connector(&self) -> Result<TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&self.ca_file)
            .map_err(|e| syslog_err(&format!("CA file {}", self.ca_file.display()), e))?;
        for c in certs {
            let c = c.map_err(|e| syslog_err(&format!("CA file {}", self.ca_file.display()), e))?;
            roots
                .add(c)
                .map_err(|e| syslog_err(&format!("CA file {}", self.ca_file.display()), e))?;
        }
        if roots.is_empty() {
            return Err(AuditError::Syslog(format!(
                "CA file {} holds no certificate",
                self.ca_file.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| syslog_err("TLS", e))?
            .with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| syslog_err(&format!("client certificate {}", cert.display()), e))?
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| {
                        syslog_err(&format!("client certificate {}", cert.display()), e)
                    })?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| syslog_err(&format!("client key {}", key.display()), e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| syslog_err("client certificate", e))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(AuditError::Config(
                    "syslog TLS: give both client_cert and client_key, or neither".into(),
                ))
            }
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// Exporter settings.
#[derive(Debug, Clone)]
pub struct ExporterOptions {
    /// The chain to export.
    pub node: String,
    /// Name of the delivery cursor in the store (one per receiver).
    pub sink: String,
    pub transport: SyslogTransport,
    pub format: SyslogFormat,
    pub source: AtnaSource,
    /// Records per batch (cursor update).
    pub batch: usize,
    /// How often to look for new records when not woken by the writer.
    pub poll: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    /// Largest UDP datagram; longer messages are truncated (RFC 5426 3.2).
    pub udp_max: usize,
}

impl ExporterOptions {
    pub fn new(node: impl Into<String>, transport: SyslogTransport) -> Self {
        let node = node.into();
        ExporterOptions {
            sink: "syslog".into(),
            format: SyslogFormat::new(node.clone()),
            source: AtnaSource::new(node.clone()),
            node,
            transport,
            batch: 256,
            poll: Duration::from_secs(1),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            udp_max: 65_000,
        }
    }
}

/// The exporter's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportStatus {
    /// Last seq whose message (if any) was delivered and recorded in the cursor.
    pub delivered_seq: u64,
    /// Messages sent since start.
    pub sent: u64,
    pub connected: bool,
    pub last_error: Option<String>,
    pub stopped: bool,
}

/// Handle on a running exporter.
pub struct ExporterHandle {
    status: watch::Receiver<ExportStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<ExportStatus>>,
}

impl ExporterHandle {
    pub fn status(&self) -> watch::Receiver<ExportStatus> {
        self.status.clone()
    }

    /// Finishes the batch in flight, records the cursor, and stops.
    pub async fn shutdown(mut self) -> Result<ExportStatus> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task
            .await
            .map_err(|e| AuditError::Task(e.to_string()))?
    }

    /// Stops at once (simulated crash).
    pub fn abort(self) {
        self.task.abort();
    }
}

enum Conn {
    Tls(Box<TlsStream<TcpStream>>),
    Udp(UdpSocket),
}

/// Spawns exporters.
pub struct SyslogExporter;

impl SyslogExporter {
    /// Starts exporting `options.node` from `store` (its own connection, not the writer's).
    /// `wake`, the writer's health watch, makes new records go out at once instead of at the
    /// next poll. Fails at once on an unusable TLS configuration.
    pub fn spawn(
        store: Box<dyn AuditStore>,
        options: ExporterOptions,
        wake: Option<watch::Receiver<Health>>,
    ) -> Result<ExporterHandle> {
        let connector = match &options.transport {
            SyslogTransport::Tls(t) => Some(t.connector()?),
            SyslogTransport::Udp { .. } => None,
        };
        let (status_tx, status_rx) = watch::channel(ExportStatus::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(store, options, connector, wake, status_tx, stop_rx));
        Ok(ExporterHandle {
            status: status_rx,
            stop: Some(stop_tx),
            task,
        })
    }
}

async fn on_store<T: Send + 'static>(
    store: &mut Option<Box<dyn AuditStore>>,
    f: impl FnOnce(&mut dyn AuditStore) -> Result<T> + Send + 'static,
) -> Result<T> {
    let s = store
        .take()
        .ok_or_else(|| AuditError::Task("store lost".into()))?;
    let (s, r) = tokio::task::spawn_blocking(move || {
        let mut s = s;
        let r = f(s.as_mut());
        (s, r)
    })
    .await
    .map_err(|e| AuditError::Task(e.to_string()))?;
    *store = Some(s);
    r
}

async fn connect(opt: &ExporterOptions, connector: Option<&TlsConnector>) -> Result<Conn> {
    match (&opt.transport, connector) {
        (SyslogTransport::Tls(t), Some(c)) => {
            let tcp = tokio::time::timeout(opt.connect_timeout, TcpStream::connect(&t.address))
                .await
                .map_err(|_| AuditError::Syslog(format!("connect {}: timed out", t.address)))?
                .map_err(|e| syslog_err(&format!("connect {}", t.address), e))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(t.server_name.clone())
                .map_err(|e| syslog_err(&format!("server name {:?}", t.server_name), e))?;
            let tls = tokio::time::timeout(opt.connect_timeout, c.connect(name, tcp))
                .await
                .map_err(|_| {
                    AuditError::Syslog(format!("TLS handshake with {}: timed out", t.address))
                })?
                .map_err(|e| syslog_err(&format!("TLS handshake with {}", t.address), e))?;
            Ok(Conn::Tls(Box::new(tls)))
        }
        (SyslogTransport::Udp { address }, _) => {
            let target: std::net::SocketAddr = tokio::net::lookup_host(address)
                .await
                .map_err(|e| syslog_err(&format!("resolve {address}"), e))?
                .next()
                .ok_or_else(|| AuditError::Syslog(format!("resolve {address}: no address")))?;
            let bind = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let sock = UdpSocket::bind(bind)
                .await
                .map_err(|e| syslog_err("UDP socket", e))?;
            sock.connect(target)
                .await
                .map_err(|e| syslog_err(&format!("UDP connect {address}"), e))?;
            Ok(Conn::Udp(sock))
        }
        (SyslogTransport::Tls(_), None) => Err(AuditError::Syslog("no TLS connector".into())),
    }
}

/// False if the receiver closed the connection (or sent something unexpected that failed).
async fn still_open(conn: &mut Conn) -> bool {
    match conn {
        Conn::Udp(_) => true,
        Conn::Tls(s) => {
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::ZERO, s.read(&mut buf)).await {
                Err(_) => true,     // nothing to read: open
                Ok(Ok(0)) => false, // EOF / close_notify
                Ok(Ok(_)) => true,  // receivers do not talk; ignore
                Ok(Err(_)) => false,
            }
        }
    }
}

async fn send(conn: &mut Conn, frames: &[String], opt: &ExporterOptions) -> Result<()> {
    match conn {
        Conn::Tls(s) => {
            let mut buf = Vec::new();
            for f in frames {
                buf.extend_from_slice(&octet_frame(f));
            }
            tokio::time::timeout(opt.write_timeout, async {
                s.write_all(&buf).await?;
                s.flush().await
            })
            .await
            .map_err(|_| AuditError::Syslog("write timed out".into()))?
            .map_err(|e| syslog_err("write", e))
        }
        Conn::Udp(sock) => {
            for f in frames {
                let bytes = f.as_bytes();
                let bytes = match bytes.get(..opt.udp_max) {
                    Some(head) if head.len() < bytes.len() => {
                        tracing::warn!(target: "radguard::audit", len = bytes.len(), max = opt.udp_max, "syslog message truncated for UDP");
                        head
                    }
                    _ => bytes,
                };
                sock.send(bytes)
                    .await
                    .map_err(|e| syslog_err("UDP send", e))?;
            }
            Ok(())
        }
    }
}

/// Waits `d`; true if asked to stop meanwhile.
async fn pause(d: Duration, stop: &mut oneshot::Receiver<()>, stopping: &mut bool) -> bool {
    if *stopping {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop => { *stopping = true; true }
    }
}

async fn run(
    store: Box<dyn AuditStore>,
    opt: ExporterOptions,
    connector: Option<TlsConnector>,
    mut wake: Option<watch::Receiver<Health>>,
    status: watch::Sender<ExportStatus>,
    mut stop: oneshot::Receiver<()>,
) -> Result<ExportStatus> {
    let mut store = Some(store);
    let (node, sink) = (opt.node.clone(), opt.sink.clone());
    let mut backoff = opt.retry_min;
    let mut stopping = false;
    let mut cursor = loop {
        let (n, s) = (node.clone(), sink.clone());
        match on_store(&mut store, move |st| st.cursor(&n, &s)).await {
            Ok(c) => break c,
            Err(e) => {
                status.send_modify(|st| st.last_error = Some(e.to_string()));
                if pause(backoff, &mut stop, &mut stopping).await {
                    status.send_modify(|st| st.stopped = true);
                    return Err(e);
                }
                backoff = (backoff * 2).min(opt.retry_max);
            }
        }
    };
    status.send_modify(|st| st.delivered_seq = cursor);
    let mut conn: Option<Conn> = None;
    loop {
        if stopping {
            break;
        }
        let (n, batch) = (node.clone(), opt.batch.max(1));
        let rows = match on_store(&mut store, move |st| st.read_after(&n, cursor, batch)).await {
            Ok(r) => r,
            Err(e) => {
                status.send_modify(|st| st.last_error = Some(e.to_string()));
                if pause(backoff, &mut stop, &mut stopping).await {
                    break;
                }
                backoff = (backoff * 2).min(opt.retry_max);
                continue;
            }
        };
        let Some(last_seq) = rows.last().map(|r| r.seq) else {
            // Nothing new: wait for the writer, the poll interval, or stop.
            tokio::select! {
                _ = &mut stop => stopping = true,
                _ = tokio::time::sleep(opt.poll) => {}
                changed = async {
                    match wake.as_mut() {
                        Some(w) => w.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if !changed {
                        wake = None;
                    }
                }
            }
            continue;
        };
        let mut frames = Vec::with_capacity(rows.len());
        for row in &rows {
            match serde_json::from_str::<AuditRecord>(&row.entry) {
                Ok(rec) => {
                    if let Some(m) = message_for(&rec, &opt.source) {
                        frames.push(format_5424(
                            &opt.format,
                            rec.time_ms,
                            severity(&m),
                            rec.seq,
                            &m.to_xml(),
                        ));
                    }
                }
                Err(e) => {
                    tracing::error!(target: "radguard::audit", seq = row.seq, error = %e, "unreadable audit record not exported (run radguard audit verify)")
                }
            }
        }
        if !frames.is_empty() {
            if let Some(c) = conn.as_mut() {
                if !still_open(c).await {
                    conn = None;
                }
            }
            if conn.is_none() {
                match connect(&opt, connector.as_ref()).await {
                    Ok(c) => {
                        conn = Some(c);
                        backoff = opt.retry_min;
                        status.send_modify(|st| {
                            st.connected = true;
                            st.last_error = None;
                        });
                    }
                    Err(e) => {
                        status.send_modify(|st| {
                            st.connected = false;
                            st.last_error = Some(e.to_string());
                        });
                        if pause(backoff, &mut stop, &mut stopping).await {
                            break;
                        }
                        backoff = (backoff * 2).min(opt.retry_max);
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            if let Err(e) = send(c, &frames, &opt).await {
                conn = None;
                status.send_modify(|st| {
                    st.connected = false;
                    st.last_error = Some(e.to_string());
                });
                if pause(backoff, &mut stop, &mut stopping).await {
                    break;
                }
                backoff = (backoff * 2).min(opt.retry_max);
                continue;
            }
        }
        let (n, s) = (node.clone(), sink.clone());
        if let Err(e) = on_store(&mut store, move |st| st.set_cursor(&n, &s, last_seq)).await {
            // Sent but not recorded: a restart would resend this batch.
            status.send_modify(|st| st.last_error = Some(e.to_string()));
            if pause(backoff, &mut stop, &mut stopping).await {
                break;
            }
            continue;
        }
        cursor = last_seq;
        let sent = frames.len() as u64;
        status.send_modify(|st| {
            st.delivered_seq = cursor;
            st.sent += sent;
        });
        // Let a stop request in without waiting for the next idle moment.
        if let Ok(()) | Err(oneshot::error::TryRecvError::Closed) = stop.try_recv() {
            stopping = true;
        }
    }
    if let Some(Conn::Tls(mut s)) = conn {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.shutdown()).await;
    }
    status.send_modify(|st| st.stopped = true);
    Ok(status.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_framing() {
        let f = SyslogFormat {
            hostname: "gw 1".into(),
            app_name: "radguard".into(),
            procid: "42".into(),
            facility: FACILITY_AUTHPRIV,
        };
        let m = format_5424(&f, 1_700_000_000_000, 5, 7, "<x/>");
        assert_eq!(
            m,
            format!(
                "<85>1 2023-11-14T22:13:20.000Z gw1 radguard 42 IHE+RFC-3881 [meta sequenceId=\"7\"][origin software=\"radguard\" swVersion=\"{}\"] \u{FEFF}<x/>",
                env!("CARGO_PKG_VERSION")
            )
        );
        let framed = octet_frame(&m);
        let (len, rest) = std::str::from_utf8(&framed)
            .unwrap()
            .split_once(' ')
            .unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
        assert_eq!(rest.len(), m.len(), "length counts octets (BOM is 3)");
    }

    #[test]
    fn sequence_ids_wrap_within_range() {
        let f = SyslogFormat::new("gw");
        let m = format_5424(&f, 0, 5, 2_147_483_648, "x");
        assert!(m.contains("sequenceId=\"1\""), "{m}");
        let m = format_5424(&f, 0, 5, 2_147_483_647, "x");
        assert!(m.contains("sequenceId=\"2147483647\""), "{m}");
    }

    #[test]
    fn empty_header_fields_are_nil() {
        let f = SyslogFormat {
            hostname: "".into(),
            app_name: "\u{e9}".into(),
            procid: "1".into(),
            facility: 4,
        };
        let m = format_5424(&f, 0, 3, 1, "x");
        assert!(
            m.starts_with("<35>1 1970-01-01T00:00:00.000Z - - 1 "),
            "{m}"
        );
    }
}
