//! Cancel-safe PDU reader: bytes are buffered in the reader, so a read that is interrupted by a
//! timer can be resumed without losing stream position (the mini-redis `Connection` pattern).

use bytes::BytesMut;
use radguard_dicom::pdu::{FrameError, PduHeader, PduType, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncReadExt};

/// One whole PDU: its type and its bytes, header included.
#[derive(Debug)]
pub struct Frame {
    pub ty: PduType,
    pub bytes: BytesMut,
}

impl Frame {
    pub fn body(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or(&[])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a PDU")]
    Truncated,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// How much room each read asks for once associated: several PDUs per system call when the
/// peer streams.
const READ_CHUNK: usize = 256 * 1024;
/// ... and before: an A-ASSOCIATE-RQ is a few hundred bytes, and thousands of connections that
/// never associate should not each reserve a streaming buffer.
const NEGOTIATION_CHUNK: usize = 4 * 1024;

pub struct PduReader<R> {
    inner: R,
    buf: BytesMut,
    /// The maximum P-DATA-TF length this side accepts (what the gateway announced).
    max_pdata: u32,
    /// Room asked for per read: [`NEGOTIATION_CHUNK`] until [`Self::set_max_pdata`].
    chunk: usize,
}

impl<R: AsyncRead + Unpin> PduReader<R> {
    pub fn new(inner: R, max_pdata: u32) -> Self {
        PduReader {
            inner,
            buf: BytesMut::with_capacity(NEGOTIATION_CHUNK),
            max_pdata,
            chunk: NEGOTIATION_CHUNK,
        }
    }

    /// Sets the negotiated maximum once associated (and switches to streaming-sized reads).
    pub fn set_max_pdata(&mut self, max: u32) {
        self.max_pdata = max;
        self.chunk = READ_CHUNK;
    }

    /// Reads the next PDU. Cancel-safe. The header is checked (type, length against the limit)
    /// before the body is read or any room is reserved for it.
    pub async fn next(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(head) = self.buf.first_chunk::<HEADER_LEN>() {
                let header = PduHeader::parse(head);
                let ty = header.check(self.max_pdata)?;
                let total = HEADER_LEN + header.length as usize;
                if self.buf.len() >= total {
                    let bytes = self.buf.split_to(total);
                    return Ok(Frame { ty, bytes });
                }
                self.buf.reserve((total - self.buf.len()).max(self.chunk));
            } else {
                self.buf.reserve(self.chunk);
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    ReadError::Closed
                } else {
                    ReadError::Truncated
                });
            }
        }
    }

    /// Returns the next PDU if it is already wholly buffered (no I/O), so a caller can batch
    /// several PDUs into one write.
    pub fn try_next(&mut self) -> Option<Result<Frame, ReadError>> {
        let head = self.buf.first_chunk::<HEADER_LEN>()?;
        let header = PduHeader::parse(head);
        let ty = match header.check(self.max_pdata) {
            Ok(t) => t,
            Err(e) => return Some(Err(e.into())),
        };
        let total = HEADER_LEN + header.length as usize;
        if self.buf.len() < total {
            return None;
        }
        Some(Ok(Frame {
            ty,
            bytes: self.buf.split_to(total),
        }))
    }

    /// Bytes received but not yet returned as a PDU.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}
