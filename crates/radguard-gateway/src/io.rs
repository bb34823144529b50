//! Small I/O helpers shared by the relay and the vault SCP: idle-aware reads, timed writes,
//! PDU-sized fragmentation of command sets, lingering close.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use radguard_dicom::pdu::{encode_pdata, Pdv};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::reader::{Frame, PduReader, ReadError};

/// The read half of a client or upstream connection, plain TCP or TLS.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a client or upstream connection, plain TCP or TLS.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Splits a plain TCP stream into boxed halves (no lock: tokio's owned halves). The read half
/// acknowledges promptly ([`QuickAck`]).
pub fn split_tcp(stream: tokio::net::TcpStream) -> (BoxRead, BoxWrite) {
    let (r, w) = stream.into_split();
    (Box::new(QuickAck(r)), Box::new(w))
}

/// A TCP read half that re-arms TCP_QUICKACK after every read that returned data (Linux; the
/// flag is not sticky). DICOM peers that keep Nagle's algorithm on (Debian's DCMTK by default)
/// write a response in two pieces and then wait for the ACK of the first before sending the
/// second; a delayed ACK (40 ms) on our side would stall every C-STORE round trip that long.
pub struct QuickAck(pub tokio::net::tcp::OwnedReadHalf);

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                let stream: &tokio::net::TcpStream = self.0.as_ref();
                let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
            }
        }
        r
    }
}

/// Last time anything moved on an association, shared by both directions, so that one side
/// waiting while the other streams is not taken for idleness.
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Milliseconds since the activity clock started.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("idle timeout: nothing moved for {0:?}")]
    Idle(Duration),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("write timed out")]
    WriteTimeout,
}

/// Reads the next PDU, giving up only when *neither* direction has moved for `idle`.
pub async fn read_idle<R: AsyncRead + Unpin>(
    reader: &mut PduReader<R>,
    activity: &Activity,
    idle: Duration,
) -> Result<Frame, IoError> {
    loop {
        let quiet = activity.idle_for();
        if quiet >= idle {
            return Err(IoError::Idle(idle));
        }
        if let Ok(r) = timeout(idle - quiet, reader.next()).await {
            activity.touch();
            return Ok(r?);
        }
    }
}

pub async fn write_timed<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), IoError> {
    // Flush too: a TLS stream (tokio-rustls) may keep the last records inside until flushed,
    // and nothing else may be written while the relay waits for the peer's answer.
    let write = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    match timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(IoError::Write(e)),
        Err(_) => Err(IoError::WriteTimeout),
    }
}

/// Appends a whole command set as P-DATA PDUs no longer than `max` (the receiver's maximum).
pub fn push_command(out: &mut Vec<u8>, context_id: u8, command: &[u8], max: u32) {
    let chunk = (max as usize).saturating_sub(6).max(1);
    let mut parts = command.chunks(chunk).peekable();
    if parts.peek().is_none() {
        encode_pdata(
            out,
            &[Pdv {
                context_id,
                is_command: true,
                is_last: true,
                data: &[],
            }],
        );
    }
    while let Some(part) = parts.next() {
        encode_pdata(
            out,
            &[Pdv {
                context_id,
                is_command: true,
                is_last: parts.peek().is_none(),
                data: part,
            }],
        );
    }
}

/// After an A-ASSOCIATE-RJ or A-ABORT (PS3.8 Sta13): wait, bounded by `limit` (ARTIM), for the
/// peer to close the connection, so it reads the last PDU before it sees the close; then close.
pub async fn linger<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: &mut PduReader<R>,
    writer: &mut W,
    limit: Duration,
) {
    let _ = timeout(limit, writer.flush()).await;
    let _ = timeout(limit, async { while reader.next().await.is_ok() {} }).await;
    let _ = timeout(limit, writer.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Regression: bytes written through a buffering writer (as tokio-rustls is) reach the peer
    /// without any further write (a TLS relay hung on the last records of a C-STORE).
    #[tokio::test]
    async fn write_timed_flushes() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = tokio::io::BufWriter::new(a);
        write_timed(&mut w, b"last records", Duration::from_secs(1))
            .await
            .expect("write");
        let mut got = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(1), b.read_exact(&mut got))
            .await
            .expect("the bytes arrive without another write")
            .expect("read");
        assert_eq!(&got, b"last records");
    }
}
