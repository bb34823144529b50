//! Records/s of the audit writer: synthetic C-STORE associations through a real EventBus into
//! the writer, timed from the first emit until the writer has committed everything.
//!
//! `cargo run --release -p radguard-audit --example audit_bench -- STORE [ASSOCIATIONS]`
//! where STORE is a SQLite path or `postgresql:host=... #schema=NAME` (see `--store`).

use std::time::Instant;

use radguard_audit::{AuditWriter, StoreSpec, WriterOptions};
use radguard_events::{AssocId, Blame, Event, EventBus};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(spec) = args.get(1).map(|s| StoreSpec::parse(s).expect("store")) else {
        eprintln!("usage: audit_bench STORE [ASSOCIATIONS]");
        std::process::exit(2);
    };
    let assocs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = spec.open_async().await.expect("open store");
        let bus = EventBus::new(1 << 16);
        let node = format!("bench-{}", std::process::id());
        let mut opt = WriterOptions::new(node);
        let dir = std::env::temp_dir().join(format!("radguard-audit-bench-{}", std::process::id()));
        opt.key = Some(std::sync::Arc::new(
            radguard_audit::checkpoint::AuditKey::load_or_create(&dir.join("k")).expect("key"),
        ));
        let h = AuditWriter::spawn(store, bus.subscribe(), opt);
        let start = Instant::now();
        for id in 0..assocs {
            let a = AssocId(id);
            bus.emit(Event::AssociationRequested {
                assoc: a,
                source: "127.0.0.1:5000".parse().expect("addr"),
                calling_ae: "BENCH".into(),
                called_ae: "PACS".into(),
                implementation_class_uid: "1.2.3".into(),
                implementation_version: None,
                contexts: 1,
            tls: None,
            user_identity: None,
            });
            bus.emit(Event::DimseRequest {
                assoc: a,
                message_id: 1,
                command: "CEchoRq".into(),
                sop_class: Some("1.2.840.10008.1.1".into()),
                sop_instance: None,
                move_destination: None,
            subject: None,
            identifier: None,
            });
            bus.emit(Event::DimseResponse {
                assoc: a,
                message_id: 1,
                command: "CEchoRsp".into(),
                status: 0,
                from: Blame::Upstream,
                sop_class: None,
                sop_instance: None,
                subject: None,
                sub_operations: None,
                bytes: None,
            });
            bus.emit(Event::AssociationReleased { assoc: a, bytes_from_client: 0, bytes_from_upstream: 0 });
            if id % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let stats = h.shutdown().await.expect("writer");
        let secs = start.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "records={} transactions={} checkpoints={} lost_events={} seconds={secs:.3} records_per_s={:.0}",
            stats.records,
            stats.transactions,
            stats.checkpoints,
            stats.lost_events,
            stats.records as f64 / secs
        );
    });
}
