//! The client connection: both halves of the accepted socket (plain TCP, or TLS after the
//! handshake), and the only ways the gateway ends it on its own: [`ClientConn::abort`]
//! (A-ABORT), [`ClientConn::reject`] (A-ASSOCIATE-RJ), [`ClientConn::close`] (the closing
//! linger PS3.8 asks for).

use std::net::SocketAddr;
use std::time::Duration;

use radguard_dicom::pdu::{abort_bytes, reject_bytes, AbortReason};
use radguard_events::{AlertKind, AssocId, Blame, Event, TlsFacts};
use radguard_policy::CertFacts;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::io::{linger, split_tcp, write_timed, BoxRead, BoxWrite, IoError};
use crate::reader::PduReader;
use crate::shared::Shared;

/// The smallest Maximum Length the gateway works with (PS3.8 sets no floor; dicom-ul and DCMTK
/// use 1 KiB-ish minima too).
pub const MIN_PDU: u32 = 1024;

/// The client side of an accepted TCP connection.
pub struct ClientConn {
    pub id: AssocId,
    pub source: SocketAddr,
    pub reader: PduReader<BoxRead>,
    pub writer: BoxWrite,
    /// The verified client certificate (TLS listeners).
    pub cert: Option<CertFacts>,
    /// The TLS session, for the events (TLS listeners).
    pub tls: Option<TlsFacts>,
    /// One of the `max_associations` slots, taken once the policy admitted the association and
    /// given back as soon as it ends (before the closing linger), so that connections still
    /// negotiating or being closed never crowd admitted peers out.
    pub assoc_permit: Option<OwnedSemaphorePermit>,
}

impl ClientConn {
    /// The connection of an accepted socket: on a TLS listener after the handshake (under the
    /// ARTIM timer). A failed handshake has no DICOM answer: it is recorded (blame: peer) and
    /// `None` returned.
    pub async fn accept(
        shared: &Shared,
        id: AssocId,
        stream: TcpStream,
        source: SocketAddr,
        tls: bool,
    ) -> Option<ClientConn> {
        let (rd, writer, cert, tls) = if tls {
            tls_accept(shared, id, stream, source).await?
        } else {
            let (rd, wr) = split_tcp(stream);
            (rd, wr, None, None)
        };
        Some(ClientConn {
            id,
            source,
            reader: PduReader::new(rd, shared.settings.max_pdu_length),
            writer,
            cert,
            tls,
            assoc_permit: None,
        })
    }

    /// Writes `bytes` to the client (flushed), at most `limit`.
    pub async fn send(&mut self, bytes: &[u8], limit: Duration) -> Result<(), IoError> {
        write_timed(&mut self.writer, bytes, limit).await
    }

    /// Gives the association slot back and closes: waits (at most `limit`) for the peer to
    /// close first, as PS3.8 asks after an A-ABORT or A-ASSOCIATE-RJ.
    pub async fn close(&mut self, limit: Duration) {
        self.assoc_permit = None;
        linger(&mut self.reader, &mut self.writer, limit).await;
    }

    /// Sends an A-ABORT (provider, `reason`), records why, and closes.
    pub async fn abort(&mut self, shared: &Shared, reason: AbortReason, blame: Blame, why: String) {
        let artim = shared.settings.artim_timeout;
        let _ = self.send(&abort_bytes(reason), artim).await;
        if blame == Blame::Peer {
            shared.bus.emit(Event::SecurityAlert {
                assoc: Some(self.id),
                kind: AlertKind::ProtocolViolation,
                source: Some(self.source),
                detail: why.clone(),
            });
        }
        shared.bus.emit(Event::AssociationAborted {
            assoc: self.id,
            blame,
            why,
        });
        self.close(artim).await;
    }

    /// Sends an A-ASSOCIATE-RJ (result, source, reason), records it, and closes.
    pub async fn reject(
        &mut self,
        shared: &Shared,
        triple: (u8, u8, u8),
        (calling, called): (Option<&str>, Option<&str>),
        blame: Blame,
        why: String,
    ) {
        let artim = shared.settings.artim_timeout;
        let _ = self
            .send(&reject_bytes(triple.0, triple.1, triple.2), artim)
            .await;
        shared.bus.emit(Event::AssociationRefused {
            assoc: self.id,
            source: self.source,
            calling_ae: calling.map(str::to_string),
            called_ae: called.map(str::to_string),
            result: triple.0,
            rj_source: triple.1,
            reason: triple.2,
            blame,
            why,
        });
        self.close(artim).await;
    }
}

type Accepted = (BoxRead, BoxWrite, Option<CertFacts>, Option<TlsFacts>);

/// The TLS handshake on a `tls_listen` connection, under the ARTIM timer.
async fn tls_accept(
    shared: &Shared,
    id: AssocId,
    stream: TcpStream,
    source: SocketAddr,
) -> Option<Accepted> {
    let Some(cfg) = shared.tls.borrow().server.clone() else {
        shared.bus.emit(Event::AssociationAborted {
            assoc: id,
            blame: Blame::Local,
            why: "TLS listener without a server TLS configuration".into(),
        });
        return None;
    };
    let acceptor = radguard_tls::tokio_rustls::TlsAcceptor::from(cfg);
    let fail = |why: String| {
        shared.bus.emit(Event::SecurityAlert {
            assoc: Some(id),
            kind: AlertKind::PeerNotRecognized,
            source: Some(source),
            detail: why.clone(),
        });
        shared.bus.emit(Event::AssociationAborted {
            assoc: id,
            blame: Blame::Peer,
            why,
        });
    };
    let stream =
        match tokio::time::timeout(shared.settings.artim_timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                fail(format!("TLS handshake failed: {e}"));
                return None;
            }
            Err(_) => {
                fail("TLS handshake not finished within ARTIM".into());
                return None;
            }
        };
    let common = stream.get_ref().1;
    let facts = match radguard_tls::peer_cert_facts(common) {
        Ok(f) => f,
        Err(e) => {
            fail(format!("client certificate unreadable: {e}"));
            return None;
        }
    };
    let session = radguard_tls::session_info(common);
    let tls_facts = TlsFacts {
        protocol: session
            .as_ref()
            .map(|s| s.protocol.to_string())
            .unwrap_or_default(),
        cipher_suite: session
            .as_ref()
            .map(|s| s.cipher_suite.to_string())
            .unwrap_or_default(),
        peer_subject: facts.as_ref().map(|f| f.subject.clone()),
        peer_cert_sha256: facts.as_ref().map(|f| f.sha256_hex.clone()),
    };
    let cert = facts.map(|f| CertFacts {
        sha256_hex: f.sha256_hex,
        subject_cn: f.subject_cn,
        sans: f.sans,
    });
    let (r, w) = tokio::io::split(stream);
    Some((Box::new(r), Box::new(w), cert, Some(tls_facts)))
}
