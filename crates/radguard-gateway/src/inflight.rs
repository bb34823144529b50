//! What a hold route's relay keeps of the C-STOREs it forwards until the upstream answers
//! them: DIMSE cannot ask a client to send a data set again, so an instance partly or wholly
//! forwarded when the upstream is lost (PS3.8 §7.4 A-P-ABORT, §7.3 A-ABORT, the transport
//! gone) is held from these bytes instead (the client gets success once the vault and the
//! hold queue have it). Memory up to a bound per instance, then a file in the data folder;
//! released when the upstream answers. Plain refuse routes keep nothing.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use radguard_dicom::CommandField;

/// A data set kept in memory up to this many bytes; past it the rest goes to a file.
pub const MEMORY_BOUND: usize = 4 * 1024 * 1024;
/// The folder (under the vault's root) for data sets past [`MEMORY_BOUND`]; emptied at start.
pub const SPILL_DIR: &str = "inflight";
/// Spilled bytes are read back in pieces of this size.
const READ_BACK: usize = 256 * 1024;

/// Unique spill file names within the process (with the process id: several gateways may
/// share nothing, but a restarted one must not meet a stale name).
static SPILLS: AtomicU64 = AtomicU64::new(0);

/// Which C-STORE a data set belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreId {
    pub context_id: u8,
    pub message_id: u16,
    pub sop_class: String,
    pub sop_instance: String,
}

struct Spill {
    path: PathBuf,
    file: File,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One C-STORE's data set as the client sent it so far.
pub struct Buffered {
    pub id: StoreId,
    mem: Vec<u8>,
    bound: usize,
    dir: PathBuf,
    spill: Option<Spill>,
    /// Why the bytes could not be kept (the spill file failed): the instance cannot be held.
    pub failed: Option<String>,
    /// Its last fragment came.
    pub complete: bool,
}

impl Buffered {
    pub fn new(id: StoreId, bound: usize, dir: &Path) -> Self {
        Buffered {
            id,
            mem: Vec::new(),
            bound,
            dir: dir.to_path_buf(),
            spill: None,
            failed: None,
            complete: false,
        }
    }

    /// Keeps `data`: in memory while under the bound, then appended to the spill file.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.spill.is_none() && self.mem.len().saturating_add(data.len()) <= self.bound {
            self.mem.extend_from_slice(data);
            return;
        }
        if let Err(e) = self.spill_write(data) {
            self.failed = Some(format!("keeping the data set: {e}"));
            self.mem = Vec::new();
            self.spill = None;
        }
    }

    fn spill_write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.spill.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let n = SPILLS.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!("{}-{n}.part", std::process::id()));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            self.spill = Some(Spill { path, file });
        }
        match self.spill.as_mut() {
            Some(s) => s.file.write_all(data),
            None => Ok(()),
        }
    }

    /// Bytes kept in memory (the spill file holds the rest).
    pub fn in_memory(&self) -> usize {
        self.mem.len()
    }

    /// Whether part of the data set is in a file.
    pub fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// The data set back, in order, in pieces.
    pub fn read_back(self) -> std::io::Result<ReadBack> {
        let Buffered { mem, spill, .. } = self;
        let mut spill = spill;
        if let Some(s) = spill.as_mut() {
            s.file.flush()?;
            s.file.seek(SeekFrom::Start(0))?;
        }
        Ok(ReadBack {
            first: Some(mem),
            file: spill,
        })
    }
}

/// A kept data set read back: the memory part, then the file's in pieces.
pub struct ReadBack {
    first: Option<Vec<u8>>,
    file: Option<Spill>,
}

impl ReadBack {
    /// The next piece; `None` at the end.
    pub fn next_piece(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if let Some(m) = self.first.take() {
            if !m.is_empty() {
                return Ok(Some(m));
            }
        }
        let Some(s) = self.file.as_mut() else {
            return Ok(None);
        };
        let mut buf = vec![0u8; READ_BACK];
        let n = s.file.read(&mut buf)?;
        if n == 0 {
            self.file = None;
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(buf))
    }
}

/// A query or retrieve relayed upstream and not finally answered: answered by the gateway
/// if the upstream is lost.
#[derive(Debug, Clone)]
pub struct Pending {
    pub context_id: u8,
    pub message_id: u16,
    pub field: CommandField,
    pub sop_class: Option<String>,
}

/// Per association on a hold route: whether the upstream was lost, and what is forwarded and
/// not yet answered. Shared by the relay's two directions (one lock).
#[derive(Default)]
pub struct Inflight {
    state: Mutex<State>,
    lost: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    lost: Option<String>,
    /// Whole C-STOREs forwarded, in order, awaiting the upstream's answer.
    stores: VecDeque<Buffered>,
    others: Vec<Pending>,
}

impl Inflight {
    /// The upstream is lost (`why`); the client's side takes over at its next step.
    pub fn signal_lost(&self, why: String) {
        if let Ok(mut s) = self.state.lock() {
            s.lost.get_or_insert(why);
        }
        self.lost.notify_one();
    }

    /// Why the upstream was lost, once it was.
    pub fn lost(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.lost.clone())
    }

    /// Resolves once the upstream was lost (cancel-safe).
    pub async fn wait_lost(&self) {
        loop {
            let notified = self.lost.notified();
            if self.lost().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// A C-STORE wholly forwarded: kept until its answer.
    pub fn forwarded(&self, b: Buffered) {
        if let Ok(mut s) = self.state.lock() {
            s.stores.push_back(b);
        }
    }

    /// A query or retrieve forwarded.
    pub fn pending(&self, p: Pending) {
        if let Ok(mut s) = self.state.lock() {
            s.others.push(p);
        }
    }

    /// The upstream answered `message_id` (`last`: a final answer, not a pending one): what
    /// was kept for it is released. `false` once the upstream was lost: the gateway answers
    /// instead, and this answer must not reach the client.
    pub fn answered(&self, message_id: u16, last: bool) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.lost.is_some() {
            return false;
        }
        s.stores.retain(|b| b.id.message_id != message_id);
        if last {
            s.others.retain(|p| p.message_id != message_id);
        }
        true
    }

    /// Everything forwarded and not answered, for the takeover.
    pub fn take(&self) -> (Vec<Buffered>, Vec<Pending>) {
        match self.state.lock() {
            Ok(mut s) => (
                std::mem::take(&mut s.stores).into(),
                std::mem::take(&mut s.others),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }
}

/// Removes spill files a previous run left (a kill -9 mid-association): called before any
/// association starts.
pub fn clean(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> StoreId {
        StoreId {
            context_id: 1,
            message_id: 7,
            sop_class: "1.2".into(),
            sop_instance: "1.2.3".into(),
        }
    }

    fn all(b: Buffered) -> Vec<u8> {
        let mut r = b.read_back().unwrap();
        let mut out = Vec::new();
        while let Some(p) = r.next_piece().unwrap() {
            out.extend(p);
        }
        out
    }

    #[test]
    fn under_the_bound_stays_in_memory() {
        let dir = std::env::temp_dir().join(format!("rg-inflight-a-{}", std::process::id()));
        let mut b = Buffered::new(id(), 100, &dir);
        b.push(b"hello ");
        b.push(b"world");
        assert!(!b.spilled());
        assert_eq!(all(b), b"hello world");
        assert!(!dir.exists(), "no file under the bound");
    }

    #[test]
    fn past_the_bound_spills_and_reads_back_in_order_then_removes_the_file() {
        let dir = std::env::temp_dir().join(format!("rg-inflight-b-{}", std::process::id()));
        let mut b = Buffered::new(id(), 10, &dir);
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(16_000) {
            b.push(c);
        }
        assert!(b.spilled());
        assert!(b.in_memory() <= 10);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert_eq!(all(b), data);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "file removed");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn answered_releases_and_take_returns_the_rest_in_order() {
        let dir = std::env::temp_dir();
        let f = Inflight::default();
        for m in [1u16, 2, 3] {
            let mut i = id();
            i.message_id = m;
            f.forwarded(Buffered::new(i, 10, &dir));
        }
        assert!(f.answered(2, true));
        let (stores, _) = f.take();
        let ids: Vec<u16> = stores.iter().map(|b| b.id.message_id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert!(f.lost().is_none());
        f.signal_lost("gone".into());
        f.signal_lost("again".into());
        assert_eq!(f.lost().as_deref(), Some("gone"));
        assert!(
            !f.answered(1, true),
            "an answer after the loss is the gateway's"
        );
    }
}
