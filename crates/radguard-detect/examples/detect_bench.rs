//! The detectors' throughput on one core: a gateway's event stream (associations from many
//! sources storing series, querying and retrieving, with refused associations from scanners
//! spraying addresses) fed to `Detectors::observe` with the default rules.
//!
//!   cargo run --release -p radguard-detect --example detect_bench [-- EVENTS]
//!
//! Prints events per second and the detections seen (the sprayed refusals fire recon rules).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use radguard_detect::{DetectConfig, Detectors};
use radguard_events::{AssocId, Blame, Event, Identifier, Subject};

/// A small deterministic generator (xorshift), so every run sees the same stream.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn source(rng: &mut Rng, spray: bool) -> SocketAddr {
    let host = if spray {
        rng.next() as u32
    } else {
        0x0A00_0000 | (rng.next() % 64) as u32
    };
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(host)),
        40000 + (rng.next() % 20000) as u16,
    )
}

/// One association's events: requested, accepted, some requests with their responses,
/// released; or a refused association from a sprayed address.
fn association(rng: &mut Rng, id: u64, out: &mut Vec<Event>) {
    let assoc = AssocId(id);
    let spray = rng.next().is_multiple_of(10);
    let src = source(rng, spray);
    let calling = if spray {
        format!("SCAN{}", rng.next() % 100_000)
    } else {
        format!("MOD{}", rng.next() % 64)
    };
    out.push(Event::AssociationRequested {
        assoc,
        source: src,
        calling_ae: calling.clone(),
        called_ae: "PACS".into(),
        implementation_class_uid: "1.2.276.0.7230010.3.0.3.6.7".into(),
        implementation_version: Some("OFFIS_DCMTK_367".into()),
        contexts: 2,
        tls: None,
        user_identity: None,
    });
    if spray {
        out.push(Event::AssociationRefused {
            assoc,
            source: src,
            calling_ae: Some(calling),
            called_ae: Some("PACS".into()),
            result: 1,
            rj_source: 1,
            reason: 3,
            blame: Blame::Peer,
            why: "calling AE title not recognised".into(),
        });
        return;
    }
    out.push(Event::AssociationAccepted {
        assoc,
        peer: calling,
        route: "PACS -> ARCHIVE".into(),
        accepted_contexts: 2,
        rejected_contexts: 0,
        max_pdu_client: 16384,
        max_pdu_upstream: 16384,
        authenticated_user: None,
    });
    for m in 0..(1 + rng.next() % 20) as u16 {
        let find = rng.next().is_multiple_of(8);
        out.push(Event::DimseRequest {
            assoc,
            message_id: m,
            command: if find { "CFindRq" } else { "CStoreRq" }.into(),
            sop_class: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            sop_instance: None,
            move_destination: None,
            subject: Some(Subject {
                accession_number: Some(format!("A{m}")),
                ..Subject::default()
            }),
            identifier: find.then(|| Identifier {
                transfer_syntax: "1.2.840.10008.1.2".into(),
                level: Some("STUDY".into()),
                dataset: Vec::new(),
                truncated: false,
            }),
        });
        out.push(Event::DimseResponse {
            assoc,
            message_id: m,
            command: if find { "CFindRsp" } else { "CStoreRsp" }.into(),
            status: 0,
            from: Blame::Upstream,
            sop_class: None,
            sop_instance: None,
            subject: None,
            sub_operations: None,
            bytes: None,
        });
    }
    out.push(Event::AssociationReleased {
        assoc,
        bytes_from_client: 1 << 20,
        bytes_from_upstream: 1024,
    });
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut events = Vec::with_capacity(total + 64);
    let mut id = 0;
    while events.len() < total {
        id += 1;
        association(&mut rng, id, &mut events);
    }
    let mut detectors = Detectors::new(&DetectConfig::default());
    let t0 = Instant::now();
    let mut fired = 0usize;
    for (i, e) in events.iter().enumerate() {
        // 10,000 events per simulated second of gateway time.
        let now_ms = (i / 10) as u64;
        fired += detectors.observe(now_ms, e).len();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{} events ({} associations) in {:.3} s on one core: {:.0} events/s; {} detections",
        events.len(),
        id,
        secs,
        events.len() as f64 / secs,
        fired
    );
}
