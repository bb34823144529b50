//! The listener: accepts connections, enforces the caps, runs one task per connection and
//! drains them on shutdown.
//!
//! Three budgets, so that a flood of connections that never become associations cannot
//! take the room of peers that do:
//! - `max_connections`: every open connection holds one from accept to close (TLS handshake,
//!   A-ASSOCIATE-RQ, association, closing linger);
//! - `max_associations`: taken only once the policy admitted the association, given back
//!   before the closing linger;
//! - `max_associations_per_peer`: connections from one source address.
//!
//! A connection over a cap is answered A-ASSOCIATE-RJ 2/3/2 after its request is read (bounded
//! by `rejecting`; beyond that it is closed without an answer).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use radguard_dicom::pdu::{reject_bytes, PduType, MAX_ASSOCIATION_PDU};
use radguard_events::{AssocId, Blame, Event};
use radguard_policy::ServerSettings;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use crate::io::{linger, write_timed};
use crate::reader::PduReader;
use crate::shared::Shared;

/// A bound listener: plain DICOM, or DICOM over TLS.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: bool,
}

/// The listen backlog. The standard library's 128 overflows under a connection burst, and the
/// kernel then drops SYNs of good peers too (they retry after a second); the kernel clamps
/// this to `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds every configured listener, plain then TLS (so the caller can print the real ports
/// before serving).
pub async fn bind(settings: &ServerSettings) -> std::io::Result<Vec<Listener>> {
    let plain = settings.listen.iter().map(|a| (a, false));
    let tls = settings.tls_listen.iter().map(|a| (a, true));
    plain
        .chain(tls)
        .map(|(addr, tls)| {
            Ok(Listener {
                tcp: listen(*addr)?,
                tls,
            })
        })
        .collect()
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` resolves, then stops accepting and gives running associations
/// `shutdown_grace` to finish before they are cut.
pub async fn serve(
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut acceptors = JoinSet::new();
    let tasks = Arc::new(Mutex::new(JoinSet::new()));
    for l in listeners {
        if let Ok(addr) = l.tcp.local_addr() {
            shared.bus.emit(Event::Listening {
                addr,
                ae_title: shared.settings.ae_title.to_string(),
            });
        }
        acceptors.spawn(accept_loop(
            shared.clone(),
            l,
            stop_rx.clone(),
            tasks.clone(),
        ));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while acceptors.join_next().await.is_some() {}
    let running = shared.running();
    shared.bus.emit(Event::ShutdownStarted { running });
    let mut set = match tasks.lock() {
        Ok(mut g) => std::mem::take(&mut *g),
        Err(_) => JoinSet::new(),
    };
    let grace = shared.settings.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} }).await;
    let aborted = if drained.is_err() {
        let n = set.len();
        set.abort_all();
        while set.join_next().await.is_some() {}
        n
    } else {
        0
    };
    shared.bus.emit(Event::ShutdownFinished { aborted });
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: Listener,
    mut stop: watch::Receiver<bool>,
    tasks: Arc<Mutex<JoinSet<()>>>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = listener.tcp.accept() => a,
        };
        let (stream, source) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = listener.tls;
        let id = shared.next_id();
        let slot = shared.take_peer_slot(source.ip());
        let permit = shared.connections.clone().try_acquire_owned().ok();
        match (slot, permit) {
            (Some(slot), Some(permit)) => {
                let s = shared.clone();
                let fut = async move {
                    crate::assoc::run(s, id, stream, source, tls, permit, slot).await;
                };
                if let Ok(mut set) = tasks.lock() {
                    // Reap finished tasks so the set does not grow without bound.
                    while set.try_join_next().is_some() {}
                    set.spawn(fut);
                }
            }
            (slot, permit) => {
                let why = if permit.is_none() {
                    "connection limit reached"
                } else {
                    "per-peer association limit reached"
                };
                drop(slot);
                if tls {
                    // No DICOM answer without a TLS handshake, and a flood must not buy
                    // handshakes: close at once.
                    shared.bus.emit(Event::AssociationRefused {
                        assoc: id,
                        source,
                        calling_ae: None,
                        called_ae: None,
                        result: 0,
                        rj_source: 0,
                        reason: 0,
                        blame: Blame::Local,
                        why: format!("{why}; TLS connection closed"),
                    });
                } else {
                    refuse_over_limit(shared.clone(), id, stream, source, why);
                }
            }
        }
    }
}

/// Answers a connection over the caps with A-ASSOCIATE-RJ 2/3/2 (transient, local limit
/// exceeded) after reading its request; beyond a bound, connections are just closed.
fn refuse_over_limit(
    shared: Arc<Shared>,
    id: AssocId,
    stream: TcpStream,
    source: SocketAddr,
    why: &'static str,
) {
    let Ok(permit) = shared.rejecting.clone().try_acquire_owned() else {
        shared.bus.emit(Event::AssociationRefused {
            assoc: id,
            source,
            calling_ae: None,
            called_ae: None,
            result: 0,
            rj_source: 0,
            reason: 0,
            blame: Blame::Local,
            why: format!("{why}; connection closed without answer (too many refusals in flight)"),
        });
        return;
    };
    tokio::spawn(async move {
        let _permit: OwnedSemaphorePermit = permit;
        let short = shared.settings.artim_timeout.min(Duration::from_secs(2));
        let (rd, mut wr) = stream.into_split();
        let mut reader = PduReader::new(rd, MAX_ASSOCIATION_PDU);
        let first = tokio::time::timeout(short, reader.next()).await;
        if let Ok(Ok(frame)) = &first {
            if frame.ty == PduType::Abort {
                // PS3.8 Sta2 + A-ABORT (AA-2): close, send nothing.
                shared.bus.emit(Event::AssociationAborted {
                    assoc: id,
                    blame: Blame::Peer,
                    why: format!("{why}; A-ABORT before any A-ASSOCIATE-RQ: closed"),
                });
                return;
            }
        }
        let _ = write_timed(&mut wr, &reject_bytes(2, 3, 2), short).await;
        shared.bus.emit(Event::AssociationRefused {
            assoc: id,
            source,
            calling_ae: None,
            called_ae: None,
            result: 2,
            rj_source: 3,
            reason: 2,
            blame: Blame::Local,
            why: why.to_string(),
        });
        linger(&mut reader, &mut wr, short).await;
    });
}
