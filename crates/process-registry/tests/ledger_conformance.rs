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
