use std::net::IpAddr;

use radguard_block::{
    Action, BlockList, Facts, Origin, Selector, Store, StoreError, Subject, DEFAULT_MAX_ENTRIES,
};

const CERT: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn facts<'a>(addr: &str, ae: &'a str, cert: Option<&'a str>) -> Facts<'a> {
    Facts {
        ip: ip(addr),
        calling_ae: ae,
        cert_sha256: cert,
    }
}

fn block(l: &mut BlockList, s: Subject, now: u64, until: u64) -> u64 {
    l.add(
        s,
        Action::Block,
        "r",
        "why",
        Origin::Detection,
        now,
        until,
        true,
    )
    .entry
    .id
}

#[test]
fn each_subject_kind_matches_only_its_own() {
    let mut l = BlockList::new();
    block(&mut l, Subject::Address(ip("10.0.0.1")), 0, 1000);
    block(&mut l, Subject::calling_ae("EVIL").unwrap(), 0, 1000);
    block(&mut l, Subject::certificate(CERT).unwrap(), 0, 1000);
    // Address: any AE from it; the same AE from elsewhere is another subject.
    assert!(l.matching(&facts("10.0.0.1", "GOOD", None), 1).is_some());
    assert!(l.matching(&facts("10.0.0.2", "GOOD", None), 1).is_none());
    // Calling AE, compared without padding.
    let e = l.matching(&facts("10.0.0.2", "EVIL  ", None), 1).unwrap();
    assert_eq!(e.subject, Subject::CallingAe("EVIL".into()));
    // Certificate, whatever the hex case.
    let upper = CERT.to_ascii_uppercase();
    let e = l
        .matching(&facts("10.0.0.3", "GOOD", Some(&upper)), 1)
        .unwrap();
    assert_eq!(e.subject.kind(), "certificate");
    assert!(l.matching(&facts("10.0.0.3", "GOOD", None), 1).is_none());
}

#[test]
fn a_block_comes_before_a_throttle() {
    let mut l = BlockList::new();
    let a = Subject::Address(ip("10.0.0.1"));
    l.add(
        a.clone(),
        Action::Throttle { per_minute: 6 },
        "t",
        "",
        Origin::Detection,
        0,
        1000,
        true,
    );
    let e = l.matching(&facts("10.0.0.1", "X", None), 1).unwrap();
    assert_eq!(e.action, Action::Throttle { per_minute: 6 });
    block(&mut l, Subject::calling_ae("X").unwrap(), 0, 1000);
    let e = l.matching(&facts("10.0.0.1", "X", None), 1).unwrap();
    assert_eq!(e.action, Action::Block);
}

#[test]
fn the_same_subject_and_action_extends_instead_of_duplicating() {
    let mut l = BlockList::new();
    let a = Subject::Address(ip("10.0.0.1"));
    let id = block(&mut l, a.clone(), 0, 1000);
    let added = l.add(
        a.clone(),
        Action::Block,
        "r2",
        "again",
        Origin::Detection,
        500,
        3000,
        true,
    );
    assert!(added.extended);
    assert_eq!(added.entry.id, id);
    assert_eq!(added.entry.until_unix_ms, 3000);
    assert_eq!(added.entry.since_unix_ms, 0);
    // An earlier end does not shorten it.
    let added = l.add(
        a.clone(),
        Action::Block,
        "r",
        "",
        Origin::Detection,
        600,
        2000,
        true,
    );
    assert_eq!(added.entry.until_unix_ms, 3000);
    assert_eq!(l.len(), 1);
    // A throttle of the same subject is another entry.
    let t = l.add(
        a,
        Action::Throttle { per_minute: 1 },
        "t",
        "",
        Origin::Detection,
        0,
        10,
        true,
    );
    assert!(!t.extended);
    assert_eq!(l.len(), 2);
}

#[test]
fn entries_expire_at_their_end() {
    let mut l = BlockList::new();
    block(&mut l, Subject::Address(ip("10.0.0.1")), 0, 1000);
    block(&mut l, Subject::Address(ip("10.0.0.2")), 0, 5000);
    assert_eq!(l.next_expiry(), Some(1000));
    // Not in force at its end even before the timer ran.
    assert!(l.matching(&facts("10.0.0.1", "X", None), 1000).is_none());
    assert!(l.expire(999).is_empty());
    let gone = l.expire(1000);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].subject, Subject::Address(ip("10.0.0.1")));
    assert_eq!(l.next_expiry(), Some(5000));
    assert!(l.matching(&facts("10.0.0.2", "X", None), 1000).is_some());
}

#[test]
fn the_bound_evicts_the_oldest_detection_entry_and_says_so() {
    let mut l = BlockList::with_max(3);
    let op = l.add(
        Subject::Address(ip("10.0.0.9")),
        Action::Block,
        "operator",
        "",
        Origin::Operator,
        0,
        u64::MAX,
        true,
    );
    let first = block(&mut l, Subject::Address(ip("10.0.0.1")), 1, 1000);
    block(&mut l, Subject::Address(ip("10.0.0.2")), 2, 1000);
    let added = l.add(
        Subject::Address(ip("10.0.0.3")),
        Action::Block,
        "r",
        "",
        Origin::Detection,
        3,
        1000,
        true,
    );
    assert_eq!(added.evicted.as_ref().map(|e| e.id), Some(first));
    assert_eq!(l.len(), 3);
    assert!(l.get(op.entry.id).is_some(), "operator entries go last");
    // Spraying addresses never grows it.
    for i in 0..1000u32 {
        let a = IpAddr::from(i.to_be_bytes());
        let r = l.add(
            Subject::Address(a),
            Action::Block,
            "r",
            "",
            Origin::Detection,
            4,
            9,
            true,
        );
        assert!(r.evicted.is_some());
    }
    assert_eq!(l.len(), 3);
    assert!(l.get(op.entry.id).is_some());
    assert_eq!(BlockList::new().len(), 0);
    assert_eq!(DEFAULT_MAX_ENTRIES, 65_536);
}

#[test]
fn removal_by_id_or_subject_and_tombstones() {
    let mut l = BlockList::new();
    let a = Subject::Address(ip("10.0.0.1"));
    let id = block(&mut l, a.clone(), 0, 1000);
    l.add(
        a.clone(),
        Action::Throttle { per_minute: 2 },
        "t",
        "",
        Origin::Detection,
        0,
        1000,
        true,
    );
    let marked = l.mark_removed(&Selector::Id(id), "alice", 5);
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0].removed.as_ref().unwrap().by, "alice");
    // A tombstone matches nothing and is not selected again.
    assert_eq!(
        l.matching(&facts("10.0.0.1", "X", None), 6).unwrap().action,
        Action::Throttle { per_minute: 2 }
    );
    assert!(l.mark_removed(&Selector::Id(id), "bob", 6).is_empty());
    let taken = l.take_removed();
    assert_eq!(taken.len(), 1);
    assert!(l.get(id).is_none());
    assert_eq!(l.remove(&Selector::Subject(a)).len(), 1);
    assert!(l.is_empty());
    assert_eq!("7".parse::<Selector>().unwrap(), Selector::Id(7));
    assert_eq!(
        "10.0.0.1".parse::<Selector>().unwrap(),
        Selector::Subject(Subject::Address(ip("10.0.0.1")))
    );
    assert_eq!(
        "calling-ae=EVIL".parse::<Selector>().unwrap(),
        Selector::Subject(Subject::CallingAe("EVIL".into()))
    );
    assert!("nonsense".parse::<Selector>().is_err());
    assert!("certificate=12".parse::<Subject>().is_err());
    assert!("calling-ae=TOO-LONG-FOR-AN-AE-TITLE"
        .parse::<Subject>()
        .is_err());
}

#[test]
fn the_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_dir(dir.path());
    assert!(store.load().unwrap().is_empty(), "no file: an empty list");
    let ((), written) = store
        .update(|l| {
            block(l, Subject::Address(ip("10.0.0.1")), 1, 1000);
            l.add(
                Subject::certificate(CERT).unwrap(),
                Action::Throttle { per_minute: 6 },
                "t",
                "reason",
                Origin::Operator,
                2,
                2000,
                false,
            );
            ((), true)
        })
        .unwrap();
    let read = store.load().unwrap();
    assert_eq!(read, written);
    assert_eq!(read.len(), 2);
    let text = std::fs::read_to_string(store.path()).unwrap();
    assert!(text.contains("\"per_minute\": 6"), "{text}");
    // Ids are never reused, even after the entries are gone.
    let (id, _) = store
        .update(|l| {
            l.remove(&Selector::Id(1));
            l.remove(&Selector::Id(2));
            (block(l, Subject::Address(ip("10.0.0.5")), 3, 4), true)
        })
        .unwrap();
    assert_eq!(id, 3);
}

#[test]
fn concurrent_cli_and_gateway_changes_are_both_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let gateway = {
        let path = path.clone();
        std::thread::spawn(move || {
            let store = Store::in_dir(&path);
            for i in 0..50u32 {
                let a = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
                store
                    .update(|l| (block(l, Subject::Address(a), 0, 1000), true))
                    .unwrap();
            }
        })
    };
    let cli = std::thread::spawn(move || {
        let store = Store::in_dir(&path);
        for i in 0..50u32 {
            let ae = format!("OP{i}");
            store
                .update(|l| {
                    let s = Subject::calling_ae(&ae).unwrap();
                    (
                        l.add(
                            s,
                            Action::Block,
                            "operator",
                            "",
                            Origin::Operator,
                            0,
                            9,
                            false,
                        ),
                        true,
                    )
                })
                .unwrap();
        }
    });
    gateway.join().unwrap();
    cli.join().unwrap();
    let l = Store::in_dir(dir.path()).load().unwrap();
    assert_eq!(l.len(), 100, "no change lost");
    let mut ids: Vec<u64> = l.entries().map(|e| e.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 100, "no id given twice");
}

#[test]
fn a_corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::in_dir(dir.path());
    std::fs::write(store.path(), "{\"version\":1,\n\"next_id\": \"x\"}").unwrap();
    let e = store.load().unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { line: 2, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("blocks.json:2:"), "{msg}");
    assert!(msg.contains("not a block list"), "{msg}");
    // An update does not overwrite what it could not read.
    assert!(store.update(|_| ((), true)).is_err());
    assert!(std::fs::read_to_string(store.path())
        .unwrap()
        .contains("\"x\""));
}

#[test]
fn operator_changes_wait_for_the_gateway_to_report_them() {
    let mut l = BlockList::new();
    l.add(
        Subject::Address(ip("10.0.0.1")),
        Action::Block,
        "operator",
        "",
        Origin::Operator,
        0,
        10,
        false,
    );
    let news = l.take_unannounced();
    assert_eq!(news.len(), 1);
    assert!(l.take_unannounced().is_empty(), "reported once");
}
