//! off-hours (configured hours, learned weekly profile) and bulk-retrieve's bytes and learned
//! baseline, on event sequences with the caller's clocks (no sockets, no system clock).

use std::net::SocketAddr;

use radguard_detect::*;
use radguard_events::{AssocId, Blame, Event, SubOperations};

const SEC: u64 = 1000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2024-01-01 00:00 UTC, a Monday.
const MONDAY: i64 = 1_704_067_200_000;

fn detectors(toml: &str) -> Detectors {
    let cfg = DetectConfig::from_document(toml, "t.toml").unwrap();
    Detectors::new(&cfg)
}

fn at(mono_ms: u64, unix_ms: i64) -> Now {
    Now {
        mono_ms,
        wall: Some(Wall::utc(unix_ms)),
    }
}

fn requested(id: u64, source: &str) -> Event {
    Event::AssociationRequested {
        assoc: AssocId(id),
        source: source.parse::<SocketAddr>().unwrap(),
        calling_ae: "WS1".into(),
        called_ae: "RADGUARD".into(),
        implementation_class_uid: "1.2.3".into(),
        implementation_version: None,
        contexts: 1,
        tls: None,
        user_identity: None,
    }
}

fn accepted(id: u64, peer: &str) -> Event {
    Event::AssociationAccepted {
        assoc: AssocId(id),
        peer: peer.into(),
        route: "pacs".into(),
        accepted_contexts: 1,
        rejected_contexts: 0,
        max_pdu_client: 16384,
        max_pdu_upstream: 16384,
        authenticated_user: None,
    }
}

/// One admitted association of `peer` at `unix_ms`: what fired.
fn associate(d: &mut Detectors, id: u64, peer: &str, unix_ms: i64) -> Vec<Detection> {
    let now = at(id, unix_ms);
    let mut out = d.observe_at(now, &requested(id, "10.9.0.1:4000"));
    out.extend(d.observe_at(now, &accepted(id, peer)));
    out
}

fn get_suboperation(id: u64, bytes: Option<u64>) -> Event {
    Event::DimseResponse {
        assoc: AssocId(id),
        message_id: 7,
        command: "CStoreRsp".into(),
        status: 0,
        from: Blame::Peer,
        sop_class: None,
        sop_instance: None,
        subject: None,
        sub_operations: None,
        bytes,
    }
}

fn move_response(id: u64, msg: u16, completed: u16) -> Event {
    Event::DimseResponse {
        assoc: AssocId(id),
        message_id: msg,
        command: "CMoveRsp".into(),
        status: 0,
        from: Blame::Upstream,
        sop_class: None,
        sop_instance: None,
        subject: None,
        sub_operations: Some(SubOperations {
            remaining: None,
            completed: Some(completed),
            failed: Some(0),
            warning: Some(0),
        }),
        bytes: None,
    }
}

// ------------------------------------------------------------------ off-hours, configured

const HOURS: &str = r#"
[[detect.rule]]
name = "night"
kind = "off-hours"
hours = ["Mon-Fri 07:00-19:00", "Sat 08:00-12:00"]
peers = ["ct1", "ws1"]
"#;

#[test]
fn configured_hours_fire_outside_once_per_peer_and_hour() {
    let mut d = detectors(HOURS);
    // Tuesday 10:15 and Saturday 11:59: inside.
    assert!(associate(&mut d, 1, "ct1", MONDAY + DAY + 10 * HOUR + 15 * 60_000).is_empty());
    assert!(associate(&mut d, 2, "ct1", MONDAY + 5 * DAY + 12 * HOUR - 60_000).is_empty());
    // Saturday 12:00: outside.
    let out = associate(&mut d, 3, "ct1", MONDAY + 5 * DAY + 12 * HOUR);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].rule, "night");
    assert_eq!(out[0].kind, RuleKind::OffHours);
    assert_eq!(out[0].peer.as_deref(), Some("ct1"));
    assert_eq!(
        out[0].evidence,
        Evidence::OffHours {
            weekday: "Sat".into(),
            hour: 12,
            basis: OffHoursBasis::Hours {
                hours: vec!["Mon-Fri 07:00-19:00".into(), "Sat 08:00-12:00".into()]
            }
        }
    );
    assert_eq!(
        out[0].summary(),
        "rule night (off-hours) peer ct1 from 10.9.0.1 \"WS1\" -> \"RADGUARD\": off-hours \
         association Sat 12:00-13:00 local, outside Mon-Fri 07:00-19:00, Sat 08:00-12:00; \
         response alert"
    );
    // The same hour again: no second alert; the next hour: one more; another peer: its own.
    assert!(associate(&mut d, 4, "ct1", MONDAY + 5 * DAY + 12 * HOUR + 59 * 60_000).is_empty());
    assert_eq!(
        associate(&mut d, 5, "ct1", MONDAY + 5 * DAY + 13 * HOUR).len(),
        1
    );
    assert_eq!(
        associate(&mut d, 6, "ws1", MONDAY + 5 * DAY + 13 * HOUR).len(),
        1
    );
    // A peer the rule does not name: never.
    assert!(associate(&mut d, 7, "pacs2", MONDAY + 6 * DAY + 3 * HOUR).is_empty());
    // Without a wall clock the rule cannot judge: nothing.
    d.observe(100, &requested(8, "10.9.0.1:4000"));
    assert!(d.observe(100, &accepted(8, "ws1")).is_empty());
}

#[test]
fn local_time_is_the_callers_offset() {
    let mut d = detectors(HOURS);
    // 06:30 UTC Monday is 07:30 at UTC+1: inside.
    let now = Now {
        mono_ms: 0,
        wall: Some(Wall {
            unix_ms: MONDAY + 6 * HOUR + 30 * 60_000,
            utc_offset_secs: 3600,
        }),
    };
    d.observe_at(now, &requested(1, "10.9.0.1:1"));
    assert!(d.observe_at(now, &accepted(1, "ct1")).is_empty());
    // ... and 06:30 at UTC+0: outside.
    assert_eq!(
        associate(&mut d, 2, "ct1", MONDAY + 6 * HOUR + 30 * 60_000).len(),
        1
    );
}

#[test]
fn bad_hours_are_placed_errors() {
    let src = r#"[[detect.rule]]
name = "night"
kind = "off-hours"
hours = ["Mon-Fri 07:00-19:00", "Sat 8:00-12:00", "Funday 01:00-02:00"]
threshold = 2
"#;
    let e = DetectConfig::from_document(src, "f.toml").unwrap_err();
    let lines: Vec<String> = e.errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("f.toml:4:33: field `detect.rule[0].hours[1]`")
            && lines[0].contains("bad time \"8:00\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("f.toml:4:51: field `detect.rule[0].hours[2]`")
            && lines[1].contains("unknown day \"Funday\""),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("f.toml:5:13:") && lines[2].contains("learned profile only"),
        "{}",
        lines[2]
    );
    // Keys of other kinds are refused.
    let e = DetectConfig::from_document(
        "[[detect.rule]]\nname = \"x\"\nkind = \"recon-idle\"\nhours = [\"Mon 01:00-02:00\"]\nlearning_days = 3\n",
        "f.toml",
    )
    .unwrap_err();
    assert_eq!(e.errors().len(), 2, "{e}");
    assert!(e
        .to_string()
        .contains("hours does not apply to a rule of kind recon-idle"));
    let e = DetectConfig::from_document(
        "[[detect.rule]]\nname = \"x\"\nkind = \"off-hours\"\nlearning_days = 0\n",
        "f.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("must be 1 to 366 days"), "{e}");
}

// ------------------------------------------------------------------ off-hours, learned

const LEARNED: &str = r#"
[[detect.rule]]
name = "profile"
kind = "off-hours"
learning_days = 7
"#;

#[test]
fn learned_profile_is_quiet_while_learning_then_fires_on_unseen_slots_only() {
    let mut d = detectors(LEARNED);
    // Eight days of a day shift: Monday to Friday 08:00 and 14:00. Nothing fires while
    // learning, even at 03:00 (the learning period is not over).
    let mut id = 0;
    for day in 0..8 {
        for h in [8, 14] {
            id += 1;
            if day % 7 < 5 {
                assert!(associate(&mut d, id, "ct1", MONDAY + day * DAY + h * HOUR).is_empty());
            }
        }
    }
    assert!(associate(&mut d, 100, "ct1", MONDAY + 6 * DAY + 3 * HOUR).is_empty());
    // Day 9 (a Tuesday), 08:30: a slot seen; 03:10 Wednesday: seen once (day 6 was a Sunday
    // 03:00, another slot), so unseen: fires once, with the evidence.
    assert!(associate(
        &mut d,
        101,
        "ct1",
        MONDAY + 8 * DAY + 8 * HOUR + 30 * 60_000
    )
    .is_empty());
    let out = associate(
        &mut d,
        102,
        "ct1",
        MONDAY + 9 * DAY + 3 * HOUR + 10 * 60_000,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0].evidence,
        Evidence::OffHours {
            weekday: "Wed".into(),
            hour: 3,
            basis: OffHoursBasis::Profile {
                seen: 0,
                days: 8,
                threshold: 1
            }
        }
    );
    assert!(
        out[0]
            .summary()
            .contains("off-hours association Wed 03:00-04:00 local, 0 associations in this hour over 8 days (threshold 1)"),
        "{}",
        out[0].summary()
    );
    // Sunday 03:00 was seen while learning: quiet.
    assert!(associate(&mut d, 103, "ct1", MONDAY + 13 * DAY + 3 * HOUR).is_empty());
    // Another peer is still learning.
    assert!(associate(&mut d, 104, "ws9", MONDAY + 9 * DAY + 3 * HOUR).is_empty());
}

#[test]
fn learned_history_from_the_trail_counts_and_ends_the_learning_period() {
    let mut d = detectors(LEARNED);
    assert_eq!(d.profile_learning_days(), Some(7));
    // What the trail says: ten days of 09:00 associations.
    for day in 0..10 {
        d.learn_association("ct1", Wall::utc(MONDAY + day * DAY + 9 * HOUR));
    }
    let now = MONDAY + 14 * DAY; // a Monday again
    assert!(associate(&mut d, 1, "ct1", now + 9 * HOUR + 5 * 60_000).is_empty());
    let out = associate(&mut d, 2, "ct1", now + 10 * HOUR);
    assert_eq!(out.len(), 1);
    // One per peer per slot: the second association in the same hour is quiet.
    assert!(associate(&mut d, 3, "ct1", now + 10 * HOUR + 30 * 60_000).is_empty());
    // With threshold 3, a slot seen twice still fires.
    let mut d = detectors(
        "[[detect.rule]]\nname = \"p\"\nkind = \"off-hours\"\nlearning_days = 1\nthreshold = 3\n",
    );
    d.learn_association("ct1", Wall::utc(MONDAY + 9 * HOUR));
    d.learn_association("ct1", Wall::utc(MONDAY + 7 * DAY + 9 * HOUR));
    let out = associate(&mut d, 1, "ct1", MONDAY + 14 * DAY + 9 * HOUR);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        out[0].evidence,
        Evidence::OffHours {
            basis: OffHoursBasis::Profile {
                seen: 2,
                threshold: 3,
                ..
            },
            ..
        }
    ));
}

#[test]
fn profiles_stay_bounded_with_a_hundred_thousand_peers() {
    let mut d = detectors(
        "[detect]\nmax_sources = 1000\n\n[[detect.rule]]\nname = \"p\"\nkind = \"off-hours\"\n",
    );
    for i in 0..100_000u64 {
        d.learn_association(&format!("peer-{i}"), Wall::utc(MONDAY + i as i64 * 1000));
        if i % 10 == 0 {
            associate(&mut d, i, &format!("x-{i}"), MONDAY + i as i64);
        }
    }
    let (assocs, largest) = d.table_sizes();
    assert!(largest <= 1000, "{largest}");
    assert!(assocs <= DetectConfig::default().max_associations);
}

#[test]
fn the_default_rules_include_a_learned_profile_that_is_quiet_at_first() {
    let mut d = Detectors::new(&DetectConfig::default());
    let off: Vec<&Rule> = d.rules().filter(|r| r.kind == RuleKind::OffHours).collect();
    assert_eq!(off.len(), 1);
    assert!(off[0].hours.is_empty());
    assert_eq!(off[0].learning_days, 14);
    // Any hour, any day during the first 14 days: nothing.
    for i in 0..(13 * 24) {
        let out = associate(&mut d, i as u64, "ct1", MONDAY + i * HOUR + 7);
        assert!(out.is_empty(), "{out:?}");
    }
}

// ------------------------------------------------------------------ bulk-retrieve bytes

#[test]
fn bulk_retrieve_fires_on_bytes_with_the_exact_count() {
    let mut d = detectors(
        "[[detect.rule]]\nname = \"bulk\"\nkind = \"bulk-retrieve\"\nthreshold = 1000\nmax_bytes = 10000\nwindow_secs = 60\n",
    );
    d.observe(0, &requested(1, "10.9.0.1:1"));
    d.observe(0, &accepted(1, "ws1"));
    for i in 0..3 {
        assert!(d.observe(i, &get_suboperation(1, Some(3000))).is_empty());
    }
    let out = d.observe(4, &get_suboperation(1, Some(1001)));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].evidence,
        Evidence::Count {
            counted: Counted::BytesRetrieved,
            count: 10_001,
            threshold: 10_000,
            window_secs: 60,
            level: None
        }
    );
    assert!(out[0]
        .summary()
        .contains("10001 bytes retrieved in 60 s (threshold 10000)"));
    // Once per window; the window slides out after 60 s.
    assert!(d.observe(5, &get_suboperation(1, Some(50_000))).is_empty());
    assert!(d
        .observe(61 * SEC, &get_suboperation(1, Some(9_999)))
        .is_empty());
    assert_eq!(d.observe(62 * SEC, &get_suboperation(1, Some(1))).len(), 1);
    // C-MOVE: instances only, never bytes.
    let mut d = detectors(
        "[[detect.rule]]\nname = \"bulk\"\nkind = \"bulk-retrieve\"\nthreshold = 10\nmax_bytes = 1\n",
    );
    d.observe(0, &requested(2, "10.9.0.2:1"));
    d.observe(0, &accepted(2, "ws2"));
    let out = d.observe(1, &move_response(2, 1, 10));
    assert_eq!(out.len(), 1);
    assert!(matches!(
        out[0].evidence,
        Evidence::Count {
            counted: Counted::InstancesRetrieved,
            count: 10,
            ..
        }
    ));
}

// ------------------------------------------------------------------ bulk-retrieve learned

const BASELINE: &str = r#"
[[detect.rule]]
name = "bulk"
kind = "bulk-retrieve"
threshold = 5
window_secs = 60
baseline = "learned"
learning_days = 2
"#;

/// `n` C-GET sub-operations of `bytes` each at mono `t` (seconds) and wall `unix_ms`.
fn gets(d: &mut Detectors, n: u64, bytes: u64, t: u64, unix_ms: i64) -> Vec<Detection> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend(d.observe_at(at(t * SEC + i, unix_ms), &get_suboperation(1, Some(bytes))));
    }
    out
}

#[test]
fn learned_baseline_raises_the_limit_after_the_learning_period() {
    let mut d = detectors(BASELINE);
    d.observe_at(at(0, MONDAY), &requested(1, "10.9.0.1:1"));
    d.observe_at(at(0, MONDAY), &accepted(1, "ws1"));
    // Learning: a window of 20 instances (over the configured 5: that alert is the configured
    // one) and a peak of 20 × 100 bytes.
    let out = gets(&mut d, 20, 100, 0, MONDAY);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        out[0].evidence,
        Evidence::Count { threshold: 5, .. }
    ));
    assert!(d.baselines_changed());
    assert!(!d.baselines_changed());
    let saved = d.baselines();
    assert_eq!(
        saved.peaks,
        vec![LearnedPeak {
            rule: "bulk".into(),
            peer: "ws1".into(),
            since_ms: MONDAY,
            instances: 20,
            bytes: 2000,
        }]
    );
    // After two days: 59 instances in a window stay under 3 × 20; the 60th fires with the
    // learned evidence. Peaks no longer grow.
    let later = MONDAY + 2 * DAY;
    assert!(gets(&mut d, 59, 10, 1000, later).is_empty());
    let out = gets(&mut d, 1, 10, 1001, later);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0].evidence,
        Evidence::OverBaseline {
            counted: Counted::InstancesRetrieved,
            count: 60,
            limit: 60,
            peak: 20,
            factor: 3,
            window_secs: 60
        }
    );
    assert!(out[0]
        .summary()
        .contains("60 instances retrieved in 60 s (learned baseline: 3 x peak 20 = 60)"));
    assert!(!d.baselines_changed());
    assert_eq!(d.baselines(), saved);
    // Bytes too: the learned byte peak (2000) × 3 = 6000, without any max_bytes.
    let out = gets(&mut d, 1, 6000, 2000, later);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(
        out[0].evidence,
        Evidence::OverBaseline {
            counted: Counted::BytesRetrieved,
            count: 6000,
            limit: 6000,
            peak: 2000,
            ..
        }
    ));
}

#[test]
fn learned_baseline_survives_a_restart_through_the_saved_state() {
    let mut first = detectors(BASELINE);
    first.observe_at(at(0, MONDAY), &requested(1, "10.9.0.1:1"));
    first.observe_at(at(0, MONDAY), &accepted(1, "ws1"));
    gets(&mut first, 4, 1, 0, MONDAY);
    let saved = first.baselines();
    let json = serde_json::to_string(&saved).unwrap();
    // A new process: without the state the peer starts learning again and the configured
    // threshold (5) fires.
    let mut fresh = detectors(BASELINE);
    fresh.observe_at(at(0, MONDAY + 3 * DAY), &requested(1, "10.9.0.1:1"));
    fresh.observe_at(at(0, MONDAY + 3 * DAY), &accepted(1, "ws1"));
    let out = gets(&mut fresh, 5, 1, 0, MONDAY + 3 * DAY);
    assert_eq!(out.len(), 1, "{out:#?}");
    // With it, the learned peak 4 holds: the limit is 3 × 4 = 12.
    let mut second = detectors(BASELINE);
    second.restore_baselines(&serde_json::from_str(&json).unwrap());
    second.observe_at(at(0, MONDAY + 3 * DAY), &requested(1, "10.9.0.1:1"));
    second.observe_at(at(0, MONDAY + 3 * DAY), &accepted(1, "ws1"));
    assert!(gets(&mut second, 11, 1, 0, MONDAY + 3 * DAY).is_empty());
    // The 12th instance (and 12th byte: the byte peak was 4 too) fire, each once.
    let out = gets(&mut second, 1, 1, 1, MONDAY + 3 * DAY);
    assert_eq!(out.len(), 2, "{out:#?}");
    for (d, counted) in out
        .iter()
        .zip([Counted::InstancesRetrieved, Counted::BytesRetrieved])
    {
        assert_eq!(
            d.evidence,
            Evidence::OverBaseline {
                counted,
                count: 12,
                limit: 12,
                peak: 4,
                factor: 3,
                window_secs: 60
            }
        );
    }
    // Restored state from another rule name is ignored.
    let mut other = detectors(&BASELINE.replace("\"bulk\"", "\"other\""));
    other.restore_baselines(&saved);
    assert!(other.baselines().peaks.is_empty());
}

#[test]
fn learning_period_not_over_keeps_the_configured_limit() {
    let mut d = detectors(BASELINE);
    d.observe_at(at(0, MONDAY), &requested(1, "10.9.0.1:1"));
    d.observe_at(at(0, MONDAY), &accepted(1, "ws1"));
    assert!(gets(&mut d, 2, 1, 0, MONDAY).is_empty());
    // A day later (learning_days = 2): 5 in a window fires at the configured threshold.
    let out = gets(&mut d, 5, 1, 100, MONDAY + DAY);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        out[0].evidence,
        Evidence::Count {
            counted: Counted::InstancesRetrieved,
            count: 5,
            threshold: 5,
            ..
        }
    ));
    // factor without baseline = "learned" is refused.
    let e = DetectConfig::from_document(
        "[[detect.rule]]\nname = \"b\"\nkind = \"bulk-retrieve\"\nfactor = 2\n",
        "f.toml",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("factor is for baseline = \"learned\" only"),
        "{e}"
    );
}
