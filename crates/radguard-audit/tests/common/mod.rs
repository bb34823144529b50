//! Shared test support: the two store backends, synthetic gateway events, the PS3.15 A.5 checks.
#![allow(dead_code)]

pub mod a5;

use std::sync::atomic::{AtomicU64, Ordering};

use radguard_audit::store::{AuditStore, PgStore, SqliteStore};
use radguard_events::{AssocId, Blame, Event, EventBus, Subject};

/// The test PostgreSQL server (scripts/setup-radguard-audit.sh starts it).
pub fn pg_conn() -> String {
    std::env::var("RADGUARD_TEST_PG").unwrap_or_else(|_| {
        "host=127.0.0.1 port=55432 user=radguard password=radguard dbname=radguard_test".into()
    })
}

/// Runs blocking store code from a test, on or off a (multi-thread) Tokio runtime.
pub fn sync<T>(f: impl FnOnce() -> T) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A store under test: a SQLite file in a temp folder, or a fresh schema in the test database.
pub enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    },
    Pg {
        conn: String,
        schema: String,
    },
}

impl Backend {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        Backend::Sqlite { _dir: dir, path }
    }

    /// A fresh schema; fails the test with instructions when the server is not there.
    pub fn pg(test: &str) -> Self {
        sync(|| Self::pg_now(test))
    }

    fn pg_now(test: &str) -> Self {
        let conn = pg_conn();
        let schema = format!(
            "t_{}_{}_{}",
            test,
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL test server unreachable at {conn:?}: {e}\n\
                 run `bash scripts/setup-radguard-audit.sh` (as root) or set RADGUARD_TEST_PG"
            )
        });
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .unwrap();
        Backend::Pg { conn, schema }
    }

    pub fn open(&self) -> Box<dyn AuditStore> {
        sync(|| self.open_now())
    }

    fn open_now(&self) -> Box<dyn AuditStore> {
        match self {
            Backend::Sqlite { path, .. } => Box::new(SqliteStore::open(path).unwrap()),
            Backend::Pg { conn, schema } => Box::new(PgStore::connect(conn, Some(schema)).unwrap()),
        }
    }

    /// Runs raw SQL against the store's tables (to tamper with them).
    pub fn exec(&self, sql: &str) {
        sync(|| self.exec_now(sql))
    }

    fn exec_now(&self, sql: &str) {
        match self {
            Backend::Sqlite { path, .. } => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Backend::Pg { conn, schema } => {
                let mut c = postgres::Client::connect(conn, postgres::NoTls).unwrap();
                c.batch_execute(&format!("SET search_path TO {schema}; {sql}"))
                    .unwrap();
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Pg { conn, schema } = self {
            let (conn, schema) = (conn.clone(), schema.clone());
            // Off any async worker: the sync client runs its own runtime.
            let _ = std::thread::spawn(move || {
                if let Ok(mut c) = postgres::Client::connect(&conn, postgres::NoTls) {
                    let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                }
            })
            .join();
        }
    }
}

/// Emits one association: request, accept, `stores` C-STOREs answered with success, release.
/// Returns the number of events emitted.
pub fn emit_assoc(bus: &EventBus, id: u64, stores: u16) -> usize {
    let assoc = AssocId(id);
    bus.emit(Event::AssociationRequested {
        assoc,
        source: format!("127.0.0.{}:{}", 1 + id % 200, 40000 + id % 20000)
            .parse()
            .unwrap(),
        calling_ae: format!("MOD{}", id % 7),
        called_ae: "ARCHIVE".into(),
        implementation_class_uid: "1.2.276.0.7230010.3.0.3.6.7".into(),
        implementation_version: Some("OFFIS_DCMTK_367".into()),
        contexts: 2,
        tls: None,
        user_identity: None,
    });
    bus.emit(Event::AssociationAccepted {
        assoc,
        peer: format!("modality-{}", id % 7),
        route: "pacs".into(),
        accepted_contexts: 2,
        rejected_contexts: 0,
        max_pdu_client: 16384,
        max_pdu_upstream: 16384,
        authenticated_user: None,
    });
    for m in 1..=stores {
        bus.emit(Event::DimseRequest {
            assoc,
            message_id: m,
            command: "CStoreRq".into(),
            sop_class: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            sop_instance: Some(format!("1.2.826.0.1.3680043.9.{id}.{m}")),
            move_destination: None,
            subject: None,
            identifier: None,
        });
        bus.emit(Event::DimseResponse {
            assoc,
            message_id: m,
            command: "CStoreRsp".into(),
            status: 0,
            from: Blame::Upstream,
            sop_class: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            sop_instance: Some(format!("1.2.826.0.1.3680043.9.{id}.{m}")),
            subject: Some(Subject {
                patient_id: Some(format!("PAT{}", id % 5)),
                patient_name: Some("Doe^John".into()),
                study_uid: Some(format!("1.2.826.0.1.3680043.9.{id}")),
                ..Subject::default()
            }),
            sub_operations: None,
            bytes: None,
        });
    }
    bus.emit(Event::AssociationReleased {
        assoc,
        bytes_from_client: 1000,
        bytes_from_upstream: 100,
    });
    3 + 2 * stores as usize
}
