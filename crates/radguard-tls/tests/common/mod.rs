//! Shared helpers: a one-shot TLS server on a loopback port and a client, both tokio-rustls.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use radguard_tls::rustls::{ClientConfig, ServerConfig};
use radguard_tls::tokio_rustls::{TlsAcceptor, TlsConnector};
use radguard_tls::{peer_cert_facts, server_name, session_info, PeerCertFacts, SessionInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the server saw of one connection.
#[derive(Debug)]
pub struct Seen {
    pub result: Result<(Option<PeerCertFacts>, SessionInfo), String>,
}

/// A server that accepts connections until dropped, completes the handshake, writes `hello`
/// and closes; every handshake outcome is sent on the returned channel.
pub async fn server(config: Arc<ServerConfig>) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = match acceptor.accept(tcp).await {
                    Err(e) => Err(e.to_string()),
                    Ok(mut tls) => {
                        let (_, conn) = tls.get_ref();
                        let facts = peer_cert_facts(conn).map_err(|e| e.to_string());
                        let info = session_info(conn).ok_or_else(|| "no session info".into());
                        let _ = tls.write_all(b"hello").await;
                        let _ = tls.shutdown().await;
                        facts.and_then(|f| info.map(|i| (f, i)))
                    }
                };
                let _ = tx.send(Seen { result });
            });
        }
    });
    (addr, rx)
}

/// Connects, handshakes as `name`, reads until the server closes. `Ok` only when the handshake
/// completed *and* the server's `hello` arrived (in TLS 1.3 a refused client certificate shows
/// only after the client's handshake has finished).
pub async fn client(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> Result<SessionInfo, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(config);
    let name = server_name(name).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
    if got != b"hello" {
        return Err(format!("unexpected data {got:?}"));
    }
    session_info(tls.get_ref().1).ok_or_else(|| "no session info".into())
}

/// The server's view of the next connection (with a timeout, so a hang fails the test).
pub async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("server outcome within 10 s")
        .expect("server alive")
}

/// Quick-start files by name.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, clients: &[&str]) -> Pki {
        let clients: Vec<String> = clients.iter().map(|s| s.to_string()).collect();
        radguard_tls::init_quickstart(dir, &[], &clients).expect("quick start");
        Pki {
            dir: dir.to_path_buf(),
        }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn gw_cert(&self) -> PathBuf {
        self.dir.join("gateway.pem")
    }
    pub fn gw_key(&self) -> PathBuf {
        self.dir.join("gateway-key.pem")
    }
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("client-{name}.pem"))
    }
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("client-{name}-key.pem"))
    }
}
