//! The block list: subjects (a source address, a calling AE title or a client certificate) the
//! gateway refuses ([`Action::Block`]) or limits ([`Action::Throttle`]) until a given time.
//!
//! - [`BlockList`] is pure data and logic: [`BlockList::add`] (the same subject and action
//!   extends the entry, no duplicate), [`BlockList::matching`] (blocks before throttles; one
//!   hash lookup per subject kind, so the gateway's check at establishment stays cheap),
//!   [`BlockList::expire`], removal by id or subject. It is bounded ([`DEFAULT_MAX_ENTRIES`]):
//!   past the bound the oldest entry a detection made is evicted first (then the oldest
//!   operator entry), and the eviction is returned so that the caller audits it — an attacker
//!   who makes rules fire from many addresses cannot grow it, nor make an entry vanish silently.
//! - [`Store`] keeps it in `<data>/blocks.json`: every change is read-modify-write under an
//!   exclusive lock (`flock` on `<data>/blocks.lock`), written to a temporary file, fsynced and
//!   renamed over the old one, so `radguard block` and a running gateway never lose each other's
//!   changes and a crash leaves the old or the new file, never half of one.
//! - Changes the gateway has not reported yet travel in the file: an entry an operator added
//!   has `announced = false` until the gateway emits its event ([`BlockList::take_unannounced`]);
//!   an entry an operator removed stays as a tombstone (`removed`) until the gateway emits the
//!   removal and drops it ([`BlockList::take_removed`]). So a change made while the gateway is
//!   stopped is audited when it starts.
//!
//! Times are milliseconds since the Unix epoch, given by the caller. No PHI: the reason is the
//! detection's summary (counts, AE titles, addresses).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

mod list;
mod store;

pub use list::{
    Action, Added, BlockList, Entry, Facts, Origin, Removed, Selector, Subject, SubjectError,
    DEFAULT_MAX_ENTRIES,
};
pub use store::{Store, StoreError, FILE_NAME, LOCK_NAME};
