//! The ledger conformance suite on every backend this build has: the memory backend
//! first, then SQLite (feature `sqlite`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
#[path = "support/forwarding.rs"]
mod forwarding;

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
    run [
        scope_leases_and_takeover,
        fenced_claims_need_a_live_lease,
        released_scopes_hand_over_at_once,
        fenced_predicate_claims_recheck_the_query,
        fenced_claim_matching_checks_each_condition,
        restores_race_fenced_claims_exactly_once
    ];
    skip [retention = "the memory backend drops delivered rows at once, so memory stays flat"]
);

/// The memory ledger without its own `claim_next`: the trait's default (a candidate read,
/// then a claim) is what a backend that does not override it gets, and must conform too.
/// Its claim under a query (`claim_matching`) is the memory ledger's: the trait's default
/// of that one keeps the old claim, which does not check the query, for stores written
/// before it — the defaults of `claim_next` and `claim_next_accepted` are held here to
/// the suite on top of a store's own.
mod default_steps {
    use std::sync::Arc;

    use process_registry::{LedgerBackend, ManualClock, MemoryLedger};

    pub(crate) struct DefaultSteps(pub(crate) MemoryLedger);

    impl crate::forwarding::Forwarding for DefaultSteps {
        fn inner(&self) -> &dyn LedgerBackend {
            &self.0
        }
    }
    crate::forwarding::forward_ledger!(DefaultSteps, matching);

    pub(crate) fn store() -> crate::MemoryStore {
        let clock = Arc::new(ManualClock::new(1_750_000_000.0));
        let backend: Arc<dyn LedgerBackend> =
            Arc::new(DefaultSteps(MemoryLedger::with_clock(clock.clone())));
        crate::MemoryStore { clock, backend }
    }
}

conformance_suite!(
    memory_default_claim_next, crate::default_steps::store();
    run [];
    skip [
        retention = "the memory backend drops delivered rows at once, so memory stays flat",
        scope_leases_and_takeover = "the trait's defaults keep no ownership leases: refused with an error",
        fenced_claims_need_a_live_lease = "the trait's defaults keep no ownership leases: refused with an error",
        released_scopes_hand_over_at_once = "the trait's defaults keep no ownership leases: refused with an error",
        fenced_predicate_claims_recheck_the_query = "the trait's defaults keep no ownership leases: refused with an error",
        fenced_claim_matching_checks_each_condition = "the trait's defaults keep no ownership leases: refused with an error",
        restores_race_fenced_claims_exactly_once = "the trait's defaults keep no ownership leases: refused with an error"
    ]
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
    skip [
        scope_leases_and_takeover = "the SQLite ledger keeps no ownership leases yet",
        fenced_claims_need_a_live_lease = "the SQLite ledger keeps no ownership leases yet",
        released_scopes_hand_over_at_once = "the SQLite ledger keeps no ownership leases yet",
        fenced_predicate_claims_recheck_the_query = "the SQLite ledger keeps no ownership leases yet",
        fenced_claim_matching_checks_each_condition = "the SQLite ledger keeps no ownership leases yet",
        restores_race_fenced_claims_exactly_once = "the SQLite ledger keeps no ownership leases yet"
    ]
);

#[cfg(feature = "postgres")]
mod pg_support;

#[cfg(feature = "postgres")]
mod postgres_store {
    use std::sync::Arc;

    use process_registry::{LedgerBackend, ManualClock, PostgresLedger};

    use crate::pg_support::{params, Schema};

    /// A fresh schema of its own (tests run in parallel), dropped with the store.
    pub(crate) struct PostgresStore {
        clock: Arc<ManualClock>,
        schema: Schema,
    }

    impl PostgresStore {
        pub(crate) fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            PostgresStore {
                clock: Arc::new(ManualClock::new(1_750_000_000.0)),
                schema: Schema::new("conformance", &n.to_string()),
            }
        }
    }

    impl crate::conformance::Store for PostgresStore {
        fn backend(&self) -> Arc<dyn LedgerBackend> {
            Arc::new(
                PostgresLedger::connect_with_clock(
                    &params(),
                    self.schema.options(1),
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

#[cfg(feature = "postgres")]
conformance_suite!(
    postgres, crate::postgres_store::PostgresStore::new();
    run [
        retention,
        scope_leases_and_takeover,
        fenced_claims_need_a_live_lease,
        released_scopes_hand_over_at_once,
        fenced_predicate_claims_recheck_the_query,
        fenced_claim_matching_checks_each_condition,
        restores_race_fenced_claims_exactly_once
    ];
    skip []
);
