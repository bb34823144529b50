//! `Follower` (what `radguard audit tail --follow` polls with) and `verify_store` over a SQLite
//! store: each appended record is returned once, chains created while following included.

mod common;

use common::Backend;
use radguard_audit::chain::{seal_all, ChainHead};
use radguard_audit::record::{AuditEvent, AuditRecord, RecordKind};
use radguard_audit::store::{AuditStore, Filter, FoundRow};
use radguard_audit::{verify_store, Follower};

fn alerts(from: i64, n: i64) -> Vec<AuditRecord> {
    (from..from + n)
        .map(|t| {
            AuditRecord::draft(
                t,
                Some(t as u64),
                None,
                AuditEvent::SecurityAlert {
                    alert: "not-authorized".into(),
                    detail: "x".into(),
                    rule: None,
                },
            )
        })
        .collect()
}

/// Appends `n` records to `node` after its current head.
fn append(s: &mut dyn AuditStore, node: &str, from: i64, n: i64) {
    let head = s.head(node).unwrap().unwrap_or(ChainHead::GENESIS);
    let (sealed, _) = seal_all(node, &head, alerts(from, n)).unwrap();
    s.append(node, &head, &sealed, None).unwrap();
}

fn seqs(rows: &[FoundRow]) -> Vec<(String, u64)> {
    rows.iter().map(|r| (r.node.clone(), r.seq)).collect()
}

#[test]
fn follower_returns_each_new_record_once() {
    let b = Backend::sqlite();
    let mut s = b.open();
    append(s.as_mut(), "gw1", 1000, 3);
    let mut f = Follower::new(s.as_mut(), None).unwrap();
    // What was there before following began is not returned.
    assert!(f.poll(s.as_mut(), &Filter::default()).unwrap().is_empty());
    append(s.as_mut(), "gw1", 2000, 2);
    append(s.as_mut(), "gw2", 2000, 1);
    let got = seqs(&f.poll(s.as_mut(), &Filter::default()).unwrap());
    assert_eq!(
        got,
        [("gw1".into(), 4), ("gw1".into(), 5), ("gw2".into(), 1)]
    );
    assert!(f.poll(s.as_mut(), &Filter::default()).unwrap().is_empty());
    // The filter applies. A record it skips is not marked read: the cursor moves past the
    // records a poll returns (`tail --follow` polls with the same filter every time).
    append(s.as_mut(), "gw1", 3000, 1);
    let only_stored = Filter {
        kinds: vec![RecordKind::InstanceStored],
        ..Filter::default()
    };
    assert!(f.poll(s.as_mut(), &only_stored).unwrap().is_empty());
    append(s.as_mut(), "gw1", 4000, 1);
    assert!(f.poll(s.as_mut(), &only_stored).unwrap().is_empty());
    assert_eq!(
        seqs(&f.poll(s.as_mut(), &Filter::default()).unwrap()),
        [("gw1".into(), 6), ("gw1".into(), 7)]
    );
    // One chain only.
    let mut only = Follower::new(s.as_mut(), Some("gw2".into())).unwrap();
    append(s.as_mut(), "gw1", 5000, 1);
    append(s.as_mut(), "gw2", 5000, 1);
    assert_eq!(
        seqs(&only.poll(s.as_mut(), &Filter::default()).unwrap()),
        [("gw2".into(), 2)]
    );
}

#[test]
fn verify_store_reports_every_chain_or_one() {
    let b = Backend::sqlite();
    let mut s = b.open();
    assert!(verify_store(s.as_mut(), None, None).unwrap().is_empty());
    append(s.as_mut(), "gw1", 1000, 3);
    append(s.as_mut(), "gw2", 1000, 2);
    let all = verify_store(s.as_mut(), None, None).unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.node.as_str(), r.records, r.ok()))
            .collect::<Vec<_>>(),
        [("gw1", 3, true), ("gw2", 2, true)]
    );
    let one = verify_store(s.as_mut(), Some("gw2"), None).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].node, "gw2");
}
