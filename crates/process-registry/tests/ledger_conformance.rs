//! The ledger conformance suite on every backend this build has: the memory backend
//! first, then SQLite (feature `sqlite`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::sync::Arc;

use process_registry::{LedgerBackend, ManualClock, MemoryLedger};

/// One memory ledger: every `backend()` is the same store, as a restarted process
/// would see a durable one.
struct MemoryStore {
    clock: Arc<ManualClock>,
    backend: Arc<dyn LedgerBackend>,
}

impl MemoryStore {
    fn new() -> Self {
        let clock = Arc::new(ManualClock::new(1_750_000_000.0));
        let backend: Arc<dyn LedgerBackend> = Arc::new(MemoryLedger::with_clock(clock.clone()));
        MemoryStore { clock, backend }
    }
}

impl conformance::Store for MemoryStore {
    fn backend(&self) -> Arc<dyn LedgerBackend> {
        Arc::clone(&self.backend)
    }

    fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }
}

conformance_suite!(
    memory, crate::MemoryStore::new();
    run [];
    skip [retention = "the memory backend drops delivered rows at once, so memory stays flat"]
);

#[cfg(feature = "sqlite")]
mod sqlite_store {
    use std::path::PathBuf;
    use std::sync::Arc;

    use process_registry::{LedgerBackend, ManualClock, SqliteLedger, SqliteOptions};

    /// A fresh ledger file in its own directory, removed when the store is dropped.
    pub(crate) struct SqliteStore {
        clock: Arc<ManualClock>,
        dir: PathBuf,
        path: PathBuf,
    }

    impl SqliteStore {
        pub(crate) fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let dir =
                std::env::temp_dir().join(format!("ledger-conformance-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("ledger.sqlite3");
            SqliteStore {
                clock: Arc::new(ManualClock::new(1_750_000_000.0)),
                dir,
                path,
            }
        }
    }

    impl Drop for SqliteStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl crate::conformance::Store for SqliteStore {
        fn backend(&self) -> Arc<dyn LedgerBackend> {
            Arc::new(
                SqliteLedger::open_with_clock(
                    &self.path,
                    SqliteOptions::default(),
                    self.clock.clone(),
                )
                .unwrap(),
            )
        }

        fn clock(&self) -> &Arc<ManualClock> {
            &self.clock
        }
    }
}

#[cfg(feature = "sqlite")]
conformance_suite!(
    sqlite, crate::sqlite_store::SqliteStore::new();
    run [retention];
    skip []
);
