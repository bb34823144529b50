//! Verifying a stored chain: [`crate::chain::Verifier`] fed from a store in batches.

use ed25519_dalek::VerifyingKey;

use crate::chain::{Verifier, VerifyReport};
use crate::error::Result;
use crate::store::AuditStore;

/// Rows read per query while verifying.
pub const VERIFY_BATCH: usize = 2000;

/// Walks the chain of `node` from the first record and reports the first fault. With `key`,
/// checkpoint signatures are checked too (without, checkpoints are still compared).
pub fn verify_chain(
    store: &mut dyn AuditStore,
    node: &str,
    key: Option<&VerifyingKey>,
) -> Result<VerifyReport> {
    // A running gateway appends while the chain is read: the head read before the records can
    // be behind them. The records are read again until the head is the same before and after
    // (each append moves records and head in one transaction), so a verdict never compares a
    // head with records from another moment.
    let mut attempts = 0;
    loop {
        let checkpoints = store.checkpoints(node)?;
        let head = store.head(node)?;
        let mut v = Verifier::new(node, checkpoints, key);
        let mut after = 0;
        loop {
            let rows = store.read_after(node, after, VERIFY_BATCH)?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for r in &rows {
                v.push(r);
            }
            if v.failed() {
                break;
            }
        }
        attempts += 1;
        if attempts >= MAX_ATTEMPTS || store.head(node)? == head {
            return Ok(v.finish(head));
        }
    }
}

/// Reads of a chain that a writer keeps moving, before the last one is reported as it is.
const MAX_ATTEMPTS: usize = 5;

/// Verifies the chain of `node`, or every chain in the store when `node` is `None`, one report
/// per chain in the store's order (empty: the store holds no chain).
pub fn verify_store(
    store: &mut dyn AuditStore,
    node: Option<&str>,
    key: Option<&VerifyingKey>,
) -> Result<Vec<VerifyReport>> {
    let nodes = match node {
        Some(n) => vec![n.to_string()],
        None => store.nodes()?,
    };
    nodes
        .iter()
        .map(|n| verify_chain(&mut *store, n, key))
        .collect()
}
