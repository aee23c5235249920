//! The storage primitives a ledger backend provides, and the rows it keeps.
//!
//! Every primitive is one atomic step on the store, guarded by the exact state it moves
//! from: a backend never decides *whether* a transition should happen (that is the
//! ledger's rules, written once in [`CompletionQueue`](crate::CompletionQueue)), only
//! performs it when its guard still holds and reports whether it did. Times are seconds
//! since the Unix epoch on the backend's own clock ([`LedgerBackend::now`]); the rules
//! pass durations (a lease, a backoff), and the backend adds them to its clock, so a
//! networked store computes deadlines on the database's clock.

use std::sync::Arc;

use crate::{Event, LedgerError, Status, Text};

/// What the run of one delegation did: the first of a row's two independent axes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Dispatched; the runner has not finished.
    Running,
    /// The runner finished and its completion was recorded with this status
    /// (`completed`, `error`, `interrupted`, …): a known status costs no allocation.
    Finished(Status),
    /// The process that ran it died before recording a result: the outcome is unknown,
    /// and the child is never re-run.
    Unknown,
}

impl RunState {
    /// `running`, the status, or `unknown`.
    pub fn as_str(&self) -> &str {
        match self {
            RunState::Running => "running",
            RunState::Finished(status) => status.as_str(),
            RunState::Unknown => "unknown",
        }
    }
}

/// Whether anyone accepted a completion: the second axis of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for a consumer (maybe after a backoff).
    Pending,
    /// A consumer holds it under a lease.
    Claimed,
    /// A consumer acknowledged it: delivered.
    Delivered,
    /// Given up on (too many failed attempts, unroutable, too old): kept with its reason
    /// until an operator requeues it.
    Dead,
}

impl DeliveryState {
    /// `pending`, `claimed`, `delivered` or `dead`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Claimed => "claimed",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    /// The state named by [`as_str`](Self::as_str).
    pub fn parse(text: &str) -> Option<DeliveryState> {
        Some(match text {
            "pending" => DeliveryState::Pending,
            "claimed" => DeliveryState::Claimed,
            "delivered" => DeliveryState::Delivered,
            "dead" => DeliveryState::Dead,
            _ => return None,
        })
    }
}

/// One row of the ledger, as inspection shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    /// The ledger's own order: rows are offered in increasing `seq`.
    pub seq: u64,
    /// The idempotency key deliveries carry: the `delegation_id` for delegations, else a
    /// key the ledger made (`event-{seq}`).
    pub key: String,
    /// The delegation this row records, for rows the engine wrote.
    pub delegation_id: Option<String>,
    /// The event's wire type (`async_delegation`, `completion`, `watch_match`, …).
    pub kind: String,
    /// The dispatching session key (`""` for the CLI or for events without one).
    pub session_key: String,
    /// What the run did; `None` for events put on the queue directly (nothing ran).
    pub run_state: Option<RunState>,
    /// Whether it was accepted; `None` while the delegation runs.
    pub delivery: Option<DeliveryState>,
    /// Claims made so far (a deferral gives its attempt back).
    pub attempts: u32,
    /// The last failure, or why the row is dead.
    pub reason: Option<String>,
    /// The process instance that wrote the row (and runs its delegation).
    pub owner: String,
    /// The instance holding the claim, while claimed.
    pub claimed_by: Option<String>,
    /// The row's writer died while it waited: only a consumer that owns its session may
    /// take it.
    pub restored: bool,
    /// An earlier claim may have delivered it without acknowledging.
    pub possible_redelivery: bool,
    /// When the row was written.
    pub created_at: f64,
    /// When the run finished (or the event was put).
    pub completed_at: Option<f64>,
    /// When it was delivered.
    pub delivered_at: Option<f64>,
    /// Not offered before this time (a released row's backoff).
    pub not_before: Option<f64>,
    /// The claim's lease ends at this time.
    pub lease_until: Option<f64>,
    /// The event: the completion, or (while running) the dispatch-time restatement.
    pub event: Arc<Event>,
}

/// The result of inserting a running row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The row was written with this `seq`.
    Row(u64),
    /// A row with this delegation id already exists (any state): draw another id.
    IdTaken,
}

/// A delegation that was just dispatched.
#[derive(Debug, Clone)]
pub struct NewRunning<'a> {
    /// Its id, unique among every row the ledger holds.
    pub delegation_id: &'a str,
    /// The dispatching session key: the skeleton's own (a store may keep either — the
    /// memory ledger reads it off the skeleton, SQLite and PostgreSQL write this one — so
    /// a caller passes the same text).
    pub session_key: &'a str,
    /// The instance that runs it.
    pub owner: &'a str,
    /// The dispatch-time restatement, from which an `unknown` completion is built should
    /// the owner die.
    pub skeleton: Arc<Event>,
}

/// An event put on the queue directly (nothing runs for it): pending at once. Its wire
/// type and session key are read off the event.
#[derive(Debug, Clone)]
pub struct NewPending<'a> {
    /// The instance that put it.
    pub owner: &'a str,
    /// The event, by value: a store keeps it as it likes (the memory ledger moves it
    /// into an `Arc`, SQLite writes its JSON).
    pub event: Event,
}

/// A [`NewPending`] the store could not write, handed back whole with the reason — like
/// the value in [`std::sync::mpsc::SendError`] — so the caller can keep it for a retry.
#[derive(Debug)]
pub struct PendingRefused {
    /// Why.
    pub error: LedgerError,
    /// The event that was not written (boxed: this is the cold path).
    pub event: Box<Event>,
}

impl From<PendingRefused> for LedgerError {
    fn from(refused: PendingRefused) -> Self {
        refused.error
    }
}

/// A row [`LedgerBackend::take_next`] claimed and delivered in one step.
#[derive(Debug, Clone)]
pub struct TakenRow {
    /// The row.
    pub seq: u64,
    /// The completion, held by nothing else any more (the store lets go of it): it
    /// travels as a pointer, and [`Arc::unwrap_or_clone`] moves it out without a copy of
    /// its text.
    pub event: Arc<Event>,
    /// An earlier claim may have delivered it (its lease expired, or its process died).
    pub possible_redelivery: bool,
}

/// Which session keys a claim may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMatch<'a> {
    /// Any (also none).
    Any,
    /// Only the empty key: CLI-origin completions, events without a session.
    Cli,
    /// Only non-empty keys: completions a gateway routes to a chat.
    Routed,
    /// Only these keys.
    Keys(&'a [String]),
}

/// Which rows are candidates for a claim, as far as a store can tell without running
/// user code: claimable now, of these kinds and sessions, restored ones only if asked.
#[derive(Debug, Clone, Copy)]
pub struct CandidateQuery<'a> {
    /// Wire types to take; empty means every type.
    pub kinds: &'a [&'a str],
    /// Wire types never to take.
    pub except_kinds: &'a [&'a str],
    /// Session keys to take.
    pub sessions: SessionMatch<'a>,
    /// Also rows whose writer died ([`LedgerRow::restored`]).
    pub restored: bool,
    /// Only rows with `seq` greater than this (for paging through candidates).
    pub after_seq: u64,
}

impl CandidateQuery<'_> {
    /// Whether a row of wire type `kind`, session `session_key` (empty: none) and
    /// `restored` flag is one this query asks for (its claimability and `seq` aside).
    pub fn wants(&self, kind: &str, session_key: &str, restored: bool) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && !self.except_kinds.contains(&kind)
            && (self.restored || !restored)
            && match self.sessions {
                SessionMatch::Any => true,
                SessionMatch::Cli => session_key.is_empty(),
                SessionMatch::Routed => !session_key.is_empty(),
                SessionMatch::Keys(keys) => keys.iter().any(|k| k == session_key),
            }
    }
}

/// A row that may be claimable.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The row.
    pub seq: u64,
    /// Its event, for the consumer's own filter.
    pub event: Arc<Event>,
}

/// The fencing token of one claim: every transition after the claim names it, and a
/// store applies the transition only while the row is still claimed under exactly this
/// token. `id` is unique within the claiming instance; with `owner` it is unique
/// everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken<'a> {
    /// The claim's number, unique within its instance.
    pub id: u64,
    /// The claiming instance.
    pub owner: &'a str,
}

/// A claim to make.
#[derive(Debug, Clone, Copy)]
pub struct NewClaim<'a> {
    /// The fencing token every later transition of this claim must name.
    pub token: ClaimToken<'a>,
    /// How long the claim lasts, in seconds from the store's now.
    pub lease_seconds: f64,
}

/// A claim the store granted.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    /// The row.
    pub seq: u64,
    /// Its delegation id, when the engine wrote it (then also its idempotency key; else
    /// the key is `event-{seq}`).
    pub delegation_id: Option<Text>,
    /// The completion.
    pub event: Arc<Event>,
    /// Claims made so far, this one included.
    pub attempts: u32,
    /// An earlier claim may have delivered it (its lease expired, or its process died).
    pub possible_redelivery: bool,
    /// The row's writer died while it waited.
    pub restored: bool,
}

/// The ownership a fenced claim is made under ([`LedgerBackend::claim_fenced`]): the
/// claiming instance holds the lease on `scope` at `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    /// What is owned: a name the consumers agree on (a gateway's is `platform:{name}`).
    pub scope: &'a str,
    /// The lease's epoch, as [`LedgerBackend::acquire_scope`] returned it.
    pub epoch: u64,
}

/// A lease on an ownership scope, as the store keeps it ([`LedgerBackend::scope_leases`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeLease {
    /// What is owned.
    pub scope: String,
    /// The instance holding it (empty once released).
    pub holder: String,
    /// Counts the changes of holder: greater after every takeover, never reused.
    pub epoch: u64,
    /// The lease ends then, on the store's clock for leases (a released lease: already
    /// over).
    pub lease_until: f64,
}

/// How a claim ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Settle<'a> {
    /// Delivered.
    Ack,
    /// Not now: back to pending, and the attempt is given back.
    Defer,
    /// A failed attempt: back to pending, offered again after `backoff_seconds`.
    Release {
        /// Seconds from the store's now before it is offered again.
        backoff_seconds: f64,
        /// What failed.
        reason: &'a str,
    },
    /// Given up on.
    Dead {
        /// Why.
        reason: &'a str,
    },
}

/// How a finished run is recorded.
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    /// The delegation.
    pub delegation_id: &'a str,
    /// Only if the row is owned by this instance (recovery of a dead owner's rows).
    pub expect_owner: Option<&'a str>,
    /// `Finished(status)` or `Unknown`.
    pub run_state: RunState,
    /// The completion event.
    pub event: Arc<Event>,
    /// A reason to keep on the row (the `unknown` text).
    pub reason: Option<&'a str>,
}

/// Which rows inspection lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowQuery {
    /// Only rows in this delivery state (`None` and `running_only` false: every row).
    pub delivery: Option<DeliveryState>,
    /// Only running delegations.
    pub running_only: bool,
    /// Only rows written by this instance.
    pub owner: Option<String>,
    /// Only rows of this session.
    pub session_key: Option<String>,
    /// Only the row of this delegation.
    pub delegation_id: Option<String>,
    /// At most this many rows, oldest first (0: no limit).
    pub limit: usize,
}

/// What a backend can do, as data the rules and the conformance suite read (never a
/// check of which backend it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Rows survive the process (and `kill -9`).
    pub durable: bool,
    /// Delivered rows are kept for the retention period (else dropped at once).
    pub retains_delivered: bool,
    /// Other processes may write to the same store (their rows appear without an
    /// in-process wake-up).
    pub shared_between_processes: bool,
    /// A call may wait on something outside the process: a file's lock, a server's round
    /// trip, a disk. The queue's async faces (`next_event`, `next_claim` and their
    /// streams) then run the store's calls on threads of their own (`ledger-offload`)
    /// and await the answer, so the thread that polls them never waits on the store.
    /// Say `true` unless every call is a few in-memory steps.
    pub may_block: bool,
}

/// The storage primitives of a completion ledger.
///
/// A backend stores rows and performs guarded, atomic transitions on them; the ledger's
/// rules (claims, backoff, attempts, leases, restart recovery, retention) are written once
/// above it, in [`CompletionQueue`](crate::CompletionQueue), and every backend passes one
/// conformance suite. Each method is one atomic step; a guarded method returns whether
/// its guard held (`false` / `None`: nothing changed).
///
/// The crate ships [`MemoryLedger`](crate::MemoryLedger) and, with the `sqlite` feature,
/// `SqliteLedger`.
pub trait LedgerBackend: Send + Sync + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Seconds since the Unix epoch on the store's clock.
    fn now(&self) -> f64;

    /// Writes the row of a dispatched delegation (`running`, no delivery state yet).
    ///
    /// # Errors
    /// When the store cannot be written.
    fn insert_running(&self, row: NewRunning<'_>) -> Result<Inserted, LedgerError>;

    /// Writes a row for an event put on the queue directly: pending at once. Returns its
    /// `seq`.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn insert_pending(&self, row: NewPending<'_>) -> Result<u64, PendingRefused>;

    /// [`insert_pending`](Self::insert_pending) for a caller that does not need the
    /// `seq` (the queue's `put`). A store may take the write off its critical path, as
    /// long as the row is visible to every later step of any caller in put order, and to
    /// the emptiness a consumer reads lock-free before it looks (the memory ledger hands
    /// the event to a lock-free inbox that its next locked step drains). Default:
    /// `insert_pending`.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn append_pending(&self, row: NewPending<'_>) -> Result<(), PendingRefused> {
        self.insert_pending(row).map(drop)
    }

    /// Records a finished run: `running` → `finish.run_state`, delivery `pending`, the
    /// event stored, and the row moved to the tail (a new `seq`, greater than every
    /// other): completions are offered in the order they finished. Guard: the row of
    /// `finish.delegation_id` is running (and owned by `finish.expect_owner`, when given).
    /// Returns the row's new `seq` when it moved.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn finish_run(&self, finish: Finish<'_>) -> Result<Option<u64>, LedgerError>;

    /// Deletes the running row of a dispatch that was rejected after it was recorded.
    /// Guard: the row of `delegation_id` is running and owned by `owner`.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn retract_running(&self, delegation_id: &str, owner: &str) -> Result<bool, LedgerError>;

    /// Rows that are claimable now and match `query`, in `seq` order, at most `limit`.
    /// Claimable: pending with its backoff over, or claimed with its lease over.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn candidates(
        &self,
        query: &CandidateQuery<'_>,
        limit: usize,
    ) -> Result<Vec<Candidate>, LedgerError>;

    /// How many rows [`candidates`](Self::candidates) could return.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn count_candidates(&self, query: &CandidateQuery<'_>) -> Result<usize, LedgerError>;

    /// The earliest time a row matching `query` becomes claimable that is not claimable
    /// now: a pending row's backoff or a claimed row's lease running out.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn next_due(&self, query: &CandidateQuery<'_>) -> Result<Option<f64>, LedgerError>;

    /// Claims row `seq`: `claimed`, with the claim's id, owner and lease, attempts + 1.
    /// Guard: the row is claimable now (pending past its backoff, or claimed past its
    /// lease — then the claim is a possible redelivery). `None` when the guard failed.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn claim(&self, seq: u64, claim: NewClaim<'_>) -> Result<Option<ClaimedRow>, LedgerError>;

    /// Claims the first row that is claimable now and matches `query`, as
    /// [`claim`](Self::claim) claims a row; `None` when there is none. What a consumer
    /// whose filter has no predicate calls, so a store can do it in one step (the memory
    /// ledger: one lock). A look that finds nothing should not wait for a write lock.
    /// The default reads a candidate and claims it by
    /// [`claim_matching`](Self::claim_matching) under `query`, until a claim holds.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    fn claim_next(
        &self,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        first_moved(
            query,
            |query| Ok(self.candidates(query, 1)?.pop().map(|first| first.seq)),
            |seq| self.claim_matching(seq, query, claim, None),
        )
    }

    /// [`claim_next`](Self::claim_next) of the first row whose event `accepts` too: what a
    /// consumer whose filter has a predicate calls. `accepts` is the consumer's code: a
    /// store should not call it while it holds a lock of its own (a predicate that reads
    /// the queue would deadlock), and must never call it while it waits for one. The
    /// default reads candidates a page at a time (the first page a single row: usually
    /// the first is the one), asks `accepts` with no lock held, and claims each accepted
    /// one by [`claim_matching`](Self::claim_matching) under `query`, until a claim holds:
    /// a row that stopped matching `query` between the read and the claim (restored
    /// meanwhile, say, for a query that excludes restored rows) is not claimed, and the
    /// next candidate is judged. The memory, SQLite and PostgreSQL ledgers check the
    /// query as they claim; a store that keeps the default `claim_matching` re-checks
    /// only that the row is claimable.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    fn claim_next_accepted(
        &self,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
        accepts: &dyn Fn(&Event) -> bool,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        first_accepted(self, query, accepts, |seq| {
            self.claim_matching(seq, query, claim, None)
        })
    }

    /// [`claim`](Self::claim) of row `seq` (or [`claim_fenced`](Self::claim_fenced), with
    /// a `fence`), guarded also, in the same atomic step, by the row still matching
    /// `query` as [`candidates`](Self::candidates) selects: its kind, session and
    /// restored flag, and `seq` past `query.after_seq`. What a claim of a candidate read
    /// earlier calls (one judged by a predicate outside the store's locks), so that a
    /// row changed since the read is claimed only if the query still takes it. `None`
    /// when a guard failed.
    ///
    /// The default, for stores written before this method, is `claim` (or
    /// `claim_fenced`) alone: it does not check `query`. A store should override it.
    ///
    /// # Errors
    /// When the store cannot be written (with a `fence`: or keeps no ownership leases).
    fn claim_matching(
        &self,
        seq: u64,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
        fence: Option<Fence<'_>>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        let _ = query;
        match fence {
            None => self.claim(seq, claim),
            Some(fence) => self.claim_fenced(seq, claim, fence),
        }
    }

    /// Claims and acknowledges, in one atomic step, the first row matching `query` that is
    /// claimable now: it becomes delivered at once (attempts + 1; a possible redelivery
    /// when it was claimed with its lease over). For consumers whose delivery *is* the
    /// take — the plain queue API.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn take_next(&self, query: &CandidateQuery<'_>) -> Result<Option<TakenRow>, LedgerError>;

    /// Ends the claim `token` of row `seq`. Guard: the row is claimed under that token.
    /// `false` when the claim was lost (it expired and was taken by someone else).
    ///
    /// # Errors
    /// When the store cannot be written.
    fn settle(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        settle: Settle<'_>,
    ) -> Result<bool, LedgerError>;

    /// Extends the claim `token` of row `seq` to `lease_seconds` from now. Guard: the row
    /// is claimed under that token.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn renew(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        lease_seconds: f64,
    ) -> Result<bool, LedgerError>;

    /// Rows matching `query`, oldest first.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn rows(&self, query: &RowQuery) -> Result<Vec<LedgerRow>, LedgerError>;

    /// Every instance that owns a running row, holds a claim, or wrote a pending row not
    /// yet marked restored.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn owners(&self) -> Result<Vec<String>, LedgerError>;

    /// After `owner` died: its claims go back to pending as possible redeliveries, and
    /// every pending row it wrote is marked restored. Returns how many rows changed.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn adopt_orphans(&self, owner: &str) -> Result<u64, LedgerError>;

    /// Restored pending rows that completed before `completed_before` become dead with
    /// `reason` (a live instance's own rows are never expired). Returns how many.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn expire_pending(&self, completed_before: f64, reason: &str) -> Result<u64, LedgerError>;

    /// A dead row goes back to pending with no attempts. Guard: row `seq` is dead.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn requeue(&self, seq: u64) -> Result<bool, LedgerError>;

    /// Deletes delivered rows delivered before `delivered_before`. Returns how many.
    ///
    /// # Errors
    /// When the store cannot be written.
    fn prune_delivered(&self, delivered_before: f64) -> Result<u64, LedgerError>;

    /// Takes or renews the lease on `scope` for `holder`, for `lease_seconds` from now:
    /// granted when no one holds it, when `holder` does (a renewal, even of a lease that
    /// ran out meanwhile: the epoch is kept), or when the holder's lease is over (a
    /// takeover: the epoch grows by one). A takeover, in the same atomic step, puts every
    /// row claimed under an older epoch of `scope` back to pending as a possible
    /// redelivery, so the new owner can claim it at once and the old one can no longer
    /// settle it. Returns the epoch, or `None` while another holder's lease runs. Lease
    /// times are read on one clock for every process (a networked store uses its server's).
    ///
    /// The default keeps no leases: an error.
    ///
    /// # Errors
    /// When the store cannot be written, or keeps no ownership leases.
    fn acquire_scope(
        &self,
        scope: &str,
        holder: &str,
        lease_seconds: f64,
    ) -> Result<Option<u64>, LedgerError> {
        let _ = (scope, holder, lease_seconds);
        Err(no_ownership())
    }

    /// Ends `holder`'s lease on `scope` at `epoch` (a clean hand-over): its claims under
    /// it go back to pending, and the next holder takes it at once. Guard: `holder` holds
    /// it at `epoch`.
    ///
    /// # Errors
    /// When the store cannot be written, or keeps no ownership leases.
    fn release_scope(&self, scope: &str, holder: &str, epoch: u64) -> Result<bool, LedgerError> {
        let _ = (scope, holder, epoch);
        Err(no_ownership())
    }

    /// Every ownership lease, by scope. The default keeps none.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn scope_leases(&self) -> Result<Vec<ScopeLease>, LedgerError> {
        Ok(Vec::new())
    }

    /// [`claim`](Self::claim), fenced by ownership: guard also that the claiming
    /// instance holds `fence.scope` at `fence.epoch` with its lease running. The row
    /// remembers the fence, and while it is claimed [`settle`](Self::settle) and
    /// [`renew`](Self::renew) hold only if that lease still has the same holder and
    /// epoch: once the scope changed hands, a stale owner can neither ack nor renew. A
    /// fenced claim of a candidate read earlier is made by
    /// [`claim_matching`](Self::claim_matching), which checks its query too.
    ///
    /// # Errors
    /// When the store cannot be written, or keeps no ownership leases.
    fn claim_fenced(
        &self,
        seq: u64,
        claim: NewClaim<'_>,
        fence: Fence<'_>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        let _ = (seq, claim, fence);
        Err(no_ownership())
    }

    /// For a store that keeps its own record of live instances — a fleet's heartbeats,
    /// where a process on another machine cannot be checked from this one: registers
    /// `instance` as alive, keeps it so while the returned [`Liveness`](crate::Liveness)
    /// lives, and judges owners by their records. A queue opened without an explicit
    /// liveness uses it. `None` (the default): owners are judged by this machine's
    /// processes ([`ProcessLiveness`](crate::ProcessLiveness)).
    ///
    /// # Errors
    /// When the instance cannot be registered.
    fn instance_liveness(
        &self,
        instance: &str,
    ) -> Result<Option<Arc<dyn crate::Liveness>>, LedgerError> {
        let _ = instance;
        Ok(None)
    }

    /// Asks the store to call `wake` whenever another handle or process may have made a
    /// row claimable, so the queue's waiting consumers look again (a hint: a store may
    /// call it spuriously, and one that misses a change leaves it to the queue's next
    /// sweep). `wake` returns `false` once its queue is gone; the store then forgets it.
    /// The default does nothing: rows other processes write are seen at the sweep.
    fn wake_on_foreign_writes(&self, wake: Box<dyn Fn() -> bool + Send + Sync>) {
        drop(wake);
    }

    /// How many completions wait for delivery: rows pending or claimed, whoever wrote
    /// them (not running, delivered or dead ones). The default reads the rows; a store
    /// that can count them cheaply should.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn count_undelivered(&self) -> Result<u64, LedgerError> {
        let mut count = 0usize;
        for delivery in [DeliveryState::Pending, DeliveryState::Claimed] {
            count += self
                .rows(&RowQuery {
                    delivery: Some(delivery),
                    ..RowQuery::default()
                })?
                .len();
        }
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }
}

/// Claims (`claim`, by `seq`) the first candidate of `query` whose event `accepts`: the
/// candidates read a page at a time (the first page a single row: usually the first is
/// the one), each judged with no lock of the store held, until a claim holds (`None`
/// from `claim`: taken by another consumer since it was read; the next one).
pub(crate) fn first_accepted(
    backend: &(impl LedgerBackend + ?Sized),
    query: &CandidateQuery<'_>,
    accepts: &dyn Fn(&Event) -> bool,
    claim: impl Fn(u64) -> Result<Option<ClaimedRow>, LedgerError>,
) -> Result<Option<ClaimedRow>, LedgerError> {
    find_candidate(backend, query, 1, |candidate| {
        if !accepts(&candidate.event) {
            return Ok(None);
        }
        claim(candidate.seq)
    })
}

/// Pages through `query`'s candidates in `seq` order (the first page `first` rows, the
/// others [`CANDIDATE_PAGE`]), handing each to `visit` until it returns `Some`; `None`
/// once no candidate is left.
pub(crate) fn find_candidate<T>(
    backend: &(impl LedgerBackend + ?Sized),
    query: &CandidateQuery<'_>,
    first: usize,
    mut visit: impl FnMut(Candidate) -> Result<Option<T>, LedgerError>,
) -> Result<Option<T>, LedgerError> {
    let mut query = *query;
    let mut size = first;
    loop {
        let page = backend.candidates(&query, size)?;
        let full = page.len() == size;
        size = CANDIDATE_PAGE;
        for candidate in page {
            query.after_seq = candidate.seq;
            if let Some(found) = visit(candidate)? {
                return Ok(Some(found));
            }
        }
        if !full {
            return Ok(None);
        }
    }
}

/// What a store that keeps no ownership leases answers.
fn no_ownership() -> LedgerError {
    LedgerError::Unavailable {
        reason: "this ledger keeps no ownership leases".to_owned(),
    }
}

/// How many candidates one read of the store returns while looking for a claim.
pub(crate) const CANDIDATE_PAGE: usize = 32;

/// Reads which row comes first (`next`: the first candidate of a query), then moves it
/// by its guard (`moved`: `None` when another consumer moved it first), and looks past
/// it until a move holds or no candidate is left. A look that finds nothing only reads.
pub(crate) fn first_moved<T>(
    query: &CandidateQuery<'_>,
    mut next: impl FnMut(&CandidateQuery<'_>) -> Result<Option<u64>, LedgerError>,
    mut moved: impl FnMut(u64) -> Result<Option<T>, LedgerError>,
) -> Result<Option<T>, LedgerError> {
    let mut query = *query;
    loop {
        let Some(seq) = next(&query)? else {
            return Ok(None);
        };
        if let Some(done) = moved(seq)? {
            return Ok(Some(done));
        }
        query.after_seq = seq;
    }
}
