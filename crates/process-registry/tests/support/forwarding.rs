//! A ledger that forwards to another: what the tests that wrap a backend to inject faults
//! (refuse a write, hold a call, count calls) share. A wrapper implements [`Forwarding`]
//! — its `inner` backend and the methods it changes — and `forward_ledger!(Wrapper)`
//! writes its `LedgerBackend` impl from that.
//!
//! Only the backend's required methods are forwarded: the trait's provided ones
//! (`claim_next`, `append_pending`, `count_undelivered`, …) keep their defaults, which
//! call the wrapper's own methods, so a fault injected in `claim` or `settle` is seen by
//! every path built on them. `forward_ledger!(Wrapper, scopes)` forwards the ownership
//! methods too (`acquire_scope`, `release_scope`, `scope_leases`, `claim_fenced`),
//! `forward_ledger!(Wrapper, wakes)` also `wake_on_foreign_writes`, and
//! `forward_ledger!(Wrapper, matching)` `claim_matching` (the claim under a query that
//! the default predicate claims are made of); the extras combine, in any order.
#![allow(dead_code, unreachable_pub)]

use process_registry::{
    Candidate, CandidateQuery, Capabilities, ClaimToken, ClaimedRow, Fence, Finish, Inserted,
    LedgerBackend, LedgerError, LedgerRow, NewClaim, NewPending, NewRunning, PendingRefused,
    RowQuery, ScopeLease, Settle, TakenRow,
};

/// The backend a wrapper forwards to, and each method it may change (forwarded unless it
/// does).
pub trait Forwarding: Send + Sync {
    /// The wrapped backend.
    fn inner(&self) -> &dyn LedgerBackend;

    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }
    fn now(&self) -> f64 {
        self.inner().now()
    }
    fn insert_running(&self, row: NewRunning<'_>) -> Result<Inserted, LedgerError> {
        self.inner().insert_running(row)
    }
    fn insert_pending(&self, row: NewPending<'_>) -> Result<u64, PendingRefused> {
        self.inner().insert_pending(row)
    }
    fn finish_run(&self, finish: Finish<'_>) -> Result<Option<u64>, LedgerError> {
        self.inner().finish_run(finish)
    }
    fn retract_running(&self, id: &str, owner: &str) -> Result<bool, LedgerError> {
        self.inner().retract_running(id, owner)
    }
    fn candidates(
        &self,
        query: &CandidateQuery<'_>,
        limit: usize,
    ) -> Result<Vec<Candidate>, LedgerError> {
        self.inner().candidates(query, limit)
    }
    fn count_candidates(&self, query: &CandidateQuery<'_>) -> Result<usize, LedgerError> {
        self.inner().count_candidates(query)
    }
    fn next_due(&self, query: &CandidateQuery<'_>) -> Result<Option<f64>, LedgerError> {
        self.inner().next_due(query)
    }
    fn claim(&self, seq: u64, claim: NewClaim<'_>) -> Result<Option<ClaimedRow>, LedgerError> {
        self.inner().claim(seq, claim)
    }
    fn take_next(&self, query: &CandidateQuery<'_>) -> Result<Option<TakenRow>, LedgerError> {
        self.inner().take_next(query)
    }
    fn settle(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        settle: Settle<'_>,
    ) -> Result<bool, LedgerError> {
        self.inner().settle(seq, token, settle)
    }
    fn renew(&self, seq: u64, token: ClaimToken<'_>, lease: f64) -> Result<bool, LedgerError> {
        self.inner().renew(seq, token, lease)
    }
    fn rows(&self, query: &RowQuery) -> Result<Vec<LedgerRow>, LedgerError> {
        self.inner().rows(query)
    }
    fn owners(&self) -> Result<Vec<String>, LedgerError> {
        self.inner().owners()
    }
    fn adopt_orphans(&self, owner: &str) -> Result<u64, LedgerError> {
        self.inner().adopt_orphans(owner)
    }
    fn expire_pending(&self, before: f64, reason: &str) -> Result<u64, LedgerError> {
        self.inner().expire_pending(before, reason)
    }
    fn requeue(&self, seq: u64) -> Result<bool, LedgerError> {
        self.inner().requeue(seq)
    }
    fn prune_delivered(&self, before: f64) -> Result<u64, LedgerError> {
        self.inner().prune_delivered(before)
    }
    fn acquire_scope(
        &self,
        scope: &str,
        holder: &str,
        lease_seconds: f64,
    ) -> Result<Option<u64>, LedgerError> {
        self.inner().acquire_scope(scope, holder, lease_seconds)
    }
    fn release_scope(&self, scope: &str, holder: &str, epoch: u64) -> Result<bool, LedgerError> {
        self.inner().release_scope(scope, holder, epoch)
    }
    fn scope_leases(&self) -> Result<Vec<ScopeLease>, LedgerError> {
        self.inner().scope_leases()
    }
    fn claim_fenced(
        &self,
        seq: u64,
        claim: NewClaim<'_>,
        fence: Fence<'_>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        self.inner().claim_fenced(seq, claim, fence)
    }
    fn wake_on_foreign_writes(&self, wake: Box<dyn Fn() -> bool + Send + Sync>) {
        self.inner().wake_on_foreign_writes(wake);
    }
    fn claim_matching(
        &self,
        seq: u64,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
        fence: Option<Fence<'_>>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        self.inner().claim_matching(seq, query, claim, fence)
    }
}

/// `impl LedgerBackend for $wrapper` through its [`Forwarding`] methods.
macro_rules! forward_ledger {
    ($wrapper:ty $(, $extra:ident)*) => {
        impl ::process_registry::LedgerBackend for $wrapper {
            fn capabilities(&self) -> ::process_registry::Capabilities {
                $crate::forwarding::Forwarding::capabilities(self)
            }
            fn now(&self) -> f64 {
                $crate::forwarding::Forwarding::now(self)
            }
            fn insert_running(
                &self,
                row: ::process_registry::NewRunning<'_>,
            ) -> Result<::process_registry::Inserted, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::insert_running(self, row)
            }
            fn insert_pending(
                &self,
                row: ::process_registry::NewPending<'_>,
            ) -> Result<u64, ::process_registry::PendingRefused> {
                $crate::forwarding::Forwarding::insert_pending(self, row)
            }
            fn finish_run(
                &self,
                finish: ::process_registry::Finish<'_>,
            ) -> Result<Option<u64>, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::finish_run(self, finish)
            }
            fn retract_running(
                &self,
                id: &str,
                owner: &str,
            ) -> Result<bool, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::retract_running(self, id, owner)
            }
            fn candidates(
                &self,
                query: &::process_registry::CandidateQuery<'_>,
                limit: usize,
            ) -> Result<Vec<::process_registry::Candidate>, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::candidates(self, query, limit)
            }
            fn count_candidates(
                &self,
                query: &::process_registry::CandidateQuery<'_>,
            ) -> Result<usize, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::count_candidates(self, query)
            }
            fn next_due(
                &self,
                query: &::process_registry::CandidateQuery<'_>,
            ) -> Result<Option<f64>, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::next_due(self, query)
            }
            fn claim(
                &self,
                seq: u64,
                claim: ::process_registry::NewClaim<'_>,
            ) -> Result<Option<::process_registry::ClaimedRow>, ::process_registry::LedgerError>
            {
                $crate::forwarding::Forwarding::claim(self, seq, claim)
            }
            fn take_next(
                &self,
                query: &::process_registry::CandidateQuery<'_>,
            ) -> Result<Option<::process_registry::TakenRow>, ::process_registry::LedgerError>
            {
                $crate::forwarding::Forwarding::take_next(self, query)
            }
            fn settle(
                &self,
                seq: u64,
                token: ::process_registry::ClaimToken<'_>,
                settle: ::process_registry::Settle<'_>,
            ) -> Result<bool, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::settle(self, seq, token, settle)
            }
            fn renew(
                &self,
                seq: u64,
                token: ::process_registry::ClaimToken<'_>,
                lease: f64,
            ) -> Result<bool, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::renew(self, seq, token, lease)
            }
            fn rows(
                &self,
                query: &::process_registry::RowQuery,
            ) -> Result<Vec<::process_registry::LedgerRow>, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::rows(self, query)
            }
            fn owners(&self) -> Result<Vec<String>, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::owners(self)
            }
            fn adopt_orphans(&self, owner: &str) -> Result<u64, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::adopt_orphans(self, owner)
            }
            fn expire_pending(
                &self,
                before: f64,
                reason: &str,
            ) -> Result<u64, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::expire_pending(self, before, reason)
            }
            fn requeue(&self, seq: u64) -> Result<bool, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::requeue(self, seq)
            }
            fn prune_delivered(&self, before: f64) -> Result<u64, ::process_registry::LedgerError> {
                $crate::forwarding::Forwarding::prune_delivered(self, before)
            }
            $($crate::forwarding::forward_ledger!(@$extra);)*
        }
    };
    (@scopes) => {
        fn acquire_scope(
            &self,
            scope: &str,
            holder: &str,
            lease_seconds: f64,
        ) -> Result<Option<u64>, ::process_registry::LedgerError> {
            $crate::forwarding::Forwarding::acquire_scope(self, scope, holder, lease_seconds)
        }
        fn release_scope(
            &self,
            scope: &str,
            holder: &str,
            epoch: u64,
        ) -> Result<bool, ::process_registry::LedgerError> {
            $crate::forwarding::Forwarding::release_scope(self, scope, holder, epoch)
        }
        fn scope_leases(
            &self,
        ) -> Result<Vec<::process_registry::ScopeLease>, ::process_registry::LedgerError> {
            $crate::forwarding::Forwarding::scope_leases(self)
        }
        fn claim_fenced(
            &self,
            seq: u64,
            claim: ::process_registry::NewClaim<'_>,
            fence: ::process_registry::Fence<'_>,
        ) -> Result<Option<::process_registry::ClaimedRow>, ::process_registry::LedgerError> {
            $crate::forwarding::Forwarding::claim_fenced(self, seq, claim, fence)
        }
    };
    (@matching) => {
        fn claim_matching(
            &self,
            seq: u64,
            query: &::process_registry::CandidateQuery<'_>,
            claim: ::process_registry::NewClaim<'_>,
            fence: Option<::process_registry::Fence<'_>>,
        ) -> Result<Option<::process_registry::ClaimedRow>, ::process_registry::LedgerError> {
            $crate::forwarding::Forwarding::claim_matching(self, seq, query, claim, fence)
        }
    };
    (@wakes) => {
        fn wake_on_foreign_writes(&self, wake: Box<dyn Fn() -> bool + Send + Sync>) {
            $crate::forwarding::Forwarding::wake_on_foreign_writes(self, wake)
        }
    };
}
pub(crate) use forward_ledger;
