//! The completion queue: one FIFO shared by every producer and consumer, on a ledger.
//!
//! # Design
//!
//! The queue is a handle over a [`LedgerBackend`] (storage primitives: guarded, atomic
//! transitions of rows) and the ledger's rules, written once here for every backend:
//! claims with fencing ids and leases, attempts and backoff, the dead state, restart
//! recovery, and waking. A consumer waiting for a completion sleeps on an
//! [`event_listener`] signal that every write notifies — no poll interval — and wakes at
//! the latest when a backing-off row becomes due. The plain queue API (`put`, `try_take`,
//! `take_timeout`, `drain`) claims and delivers the next row in one step of the store.

mod awaiting;
mod backoff;
mod offload;

pub use awaiting::{Claims, Events};
pub use backoff::spin_then_yield;
pub use offload::OFFLOAD_THREAD_NAME;

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use event_listener::{Event as Signal, Listener};

use crate::ledger::backend::{find_candidate, CANDIDATE_PAGE};
use crate::ledger::backend::{
    ClaimToken, ClaimedRow, Finish, Inserted, LedgerBackend, NewClaim, NewPending, NewRunning,
    PendingRefused,
};
use crate::ledger::claim::ANY;
use crate::ledger::sweeper::Sweeper;
use crate::ledger::unknown_completion;
use crate::metrics::PendingGauge;
use crate::{
    current_instance, Claim, ClaimFilter, Event, LedgerConfig, LedgerError, LedgerRow, Liveness,
    MemoryLedger, ProcessLiveness, RowQuery, RunState, Status,
};

/// A multi-producer, multi-consumer FIFO of [`Event`]s on a completion ledger.
///
/// `CompletionQueue` is a cheap, cloneable handle: every clone refers to the same queue,
/// so one clone can go to each producer thread and another to each consumer.
/// [`CompletionQueue::new`] keeps everything in memory ([`MemoryLedger`]: nothing
/// survives the process); [`CompletionQueue::builder`] opens a queue on any backend, such
/// as the durable `SqliteLedger` (feature `sqlite`).
///
/// Two ways to consume:
///
/// - **Claims** ([`claim`](Self::claim), [`claim_timeout`](Self::claim_timeout)): take
///   the next completion that matches a [`ClaimFilter`] under a lease, then
///   [`ack`](Claim::ack) it once delivered — or defer, release (retried with backoff,
///   dead after the last attempt) or mark it dead. A consumer that crashes mid-delivery
///   loses nothing: its lease runs out and the completion is offered again.
/// - **The plain queue** ([`try_take`](Self::try_take), [`take_timeout`](Self::take_timeout),
///   [`drain`](Self::drain), [`take_where`](Self::take_where)): takes an event for good
///   (restored ones excepted) — a claim and its acknowledgement in one step. [`put`](Self::put) never blocks a
///   memory queue and never drops; an event put back goes to the tail.
///
/// ```
/// use process_registry::{CompletionQueue, Event, WatchOverflow};
///
/// let queue = CompletionQueue::new();
/// let producer = queue.clone();
/// std::thread::spawn(move || producer.put(Event::WatchOverflowTripped(WatchOverflow::default())))
///     .join()
///     .unwrap();
/// assert_eq!(queue.len(), 1);
/// assert!(queue.try_take().is_some());
/// assert!(queue.is_empty());
/// ```
#[derive(Clone)]
pub struct CompletionQueue {
    core: Arc<Core>,
}

impl std::fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionQueue")
            .field("instance", &self.core.instance)
            .field("durable", &self.core.backend.capabilities().durable)
            .finish_non_exhaustive()
    }
}

/// The shared state behind every handle of one queue.
pub(crate) struct Core {
    pub(crate) backend: Arc<dyn LedgerBackend>,
    pub(crate) config: LedgerConfig,
    pub(crate) instance: String,
    liveness: Arc<dyn Liveness>,
    /// Notified on every write that may make a row claimable.
    signal: Signal,
    /// How many [`QueueWait`]s are armed: a write with none to wake skips the signal.
    listeners: AtomicUsize,
    /// Counts the writes that may make a row claimable: what a consumer watches for a
    /// moment before it arms a wait (see `Core::wait_for`).
    writes: AtomicU64,

    /// Events whose write failed, kept in memory and retried by the sweep.
    outbox: Mutex<VecDeque<Event>>,
    sweeper: Mutex<Option<Sweeper>>,
    /// Its share of the `delegation_pending` gauge.
    pub(crate) pending: PendingGauge,
    /// Where the async faces run the store's calls, when they may block (`None`: they run
    /// on the polling thread).
    offload: Option<offload::Offload>,
}

impl Drop for Core {
    fn drop(&mut self) {
        let pending = lock(&self.outbox).len();
        if pending > 0 {
            tracing::error!(
                pending,
                "a completion queue was dropped with events it never managed to write"
            );
        }
        // A memory ledger that only this queue held is gone with its rows.
        let left = if self.counts_alone() {
            self.backend.count_undelivered().unwrap_or(0)
        } else {
            0
        };
        self.pending.close(left);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every section under these locks is a few collection operations with no user code.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Configures and opens a [`CompletionQueue`] on a backend.
pub struct CompletionQueueBuilder {
    backend: Arc<dyn LedgerBackend>,
    config: LedgerConfig,
    instance: String,
    /// `None`: the backend's record of instances if it keeps one, else [`ProcessLiveness`].
    liveness: Option<Arc<dyn Liveness>>,
}

impl std::fmt::Debug for CompletionQueueBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionQueueBuilder")
            .field("config", &self.config)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl CompletionQueueBuilder {
    /// The ledger's rules (default [`LedgerConfig::default`]).
    pub fn config(mut self, config: LedgerConfig) -> Self {
        self.config = config;
        self
    }

    /// This process's instance id, written as the owner of its rows (default
    /// [`current_instance`]: pid, start time and boot id).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// How to tell whether another instance is alive. The default: the backend's own
    /// record of instances when it keeps one (the heartbeats of a fleet's ledger, see
    /// [`LedgerBackend::instance_liveness`]), else [`ProcessLiveness`].
    pub fn liveness(mut self, liveness: impl Liveness) -> Self {
        self.liveness = Some(Arc::new(liveness));
        self
    }

    /// Opens the queue: recovers the rows of instances that died (their running
    /// delegations become `unknown`, their pending completions are restored), then,
    /// for a durable or shared backend, starts the `ledger-sweep` thread that repeats
    /// this every [`sweep_interval`](LedgerConfig::sweep_interval) while the queue lives.
    ///
    /// The open's first housekeeping (expiring restored completions past the horizon,
    /// pruning delivered rows past the retention, recounting the pending gauge) does not
    /// decide it: when the store cannot finish it now, the failure is logged and a later
    /// sweep tries again — the `ledger-sweep` thread's, or, on a backend that gets none,
    /// the next call of [`CompletionQueue::sweep`].
    ///
    /// # Errors
    /// When the recovery cannot read or write the store (or, for a memory ledger another
    /// caller wrote to before, count its rows), or the backend cannot say how to tell
    /// whether an instance is alive ([`LedgerBackend::instance_liveness`]);
    /// [`LedgerError::Unavailable`] when the [`instance`](Self::instance) id is empty (an
    /// empty holder is how a store marks a released ownership lease, and rows need an
    /// owner), or when the `ledger-sweep` thread cannot be started.
    pub fn open(self) -> Result<CompletionQueue, LedgerError> {
        if self.instance.is_empty() {
            return Err(LedgerError::Unavailable {
                reason: "a queue's instance id must not be empty".to_owned(),
            });
        }
        let liveness = match self.liveness {
            Some(liveness) => liveness,
            None => match self.backend.instance_liveness(&self.instance)? {
                Some(liveness) => liveness,
                None => Arc::new(ProcessLiveness),
            },
        };
        let capabilities = self.backend.capabilities();
        let shared = capabilities.durable || capabilities.shared_between_processes;
        let core = Arc::new(Core {
            backend: self.backend,
            config: self.config,
            instance: self.instance,
            liveness,
            signal: Signal::new(),
            listeners: AtomicUsize::new(0),
            writes: AtomicU64::new(0),
            outbox: Mutex::new(VecDeque::new()),
            sweeper: Mutex::new(None),
            pending: PendingGauge::register(shared),
            offload: capabilities.may_block.then(offload::Offload::new),
        });
        if core.counts_alone() {
            // Rows written to the ledger before any queue held it (through the backend
            // itself): this queue is the only one that will ever count them.
            core.pending.add_rows(core.backend.count_undelivered()?);
        }
        // The recovery decides whether this queue may open: a dead owner's runs must get
        // their completions. The housekeeping after it only tidies (an expiry or a prune
        // the store cannot finish now leaves rows for a later sweep, and loses none), so
        // its failure is logged, not returned: the sweep thread, or the next `sweep`,
        // tries again.
        let now = core.backend.now();
        core.recover_dead_owners(now)?;
        if let Err(error) = core.housekeep(now) {
            let retry = if shared {
                "the ledger-sweep thread tries again at its next sweep"
            } else {
                "this backend has no ledger-sweep thread: the next CompletionQueue::sweep tries again"
            };
            tracing::warn!(%error, retry, "the queue opened, but its first housekeeping (expiry, prune, retries) failed");
        }
        let woken = Arc::downgrade(&core);
        core.backend.wake_on_foreign_writes(Box::new(move || {
            woken.upgrade().map(|core| core.wake_all()).is_some()
        }));
        if shared {
            let sweeper = Sweeper::start(Arc::downgrade(&core), core.config.sweep_interval)
                .map_err(|error| LedgerError::Unavailable {
                    reason: format!("could not start the ledger-sweep thread: {error}"),
                })?;
            *lock(&core.sweeper) = Some(sweeper);
        }
        Ok(CompletionQueue { core })
    }
}

impl Default for CompletionQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// A consumer's wait for the next change on a queue, from [`CompletionQueue::listen`].
/// Wait on it blocking, or `.await` it (it is a `Future`, runtime-agnostic).
#[must_use = "a wait does nothing unless waited on"]
pub struct QueueWait {
    listener: event_listener::EventListener,
    _counted: Counted,
}

/// A wait's place in [`Core::listeners`], given back when the wait ends.
struct Counted(Arc<Core>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for QueueWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueWait").finish_non_exhaustive()
    }
}

impl QueueWait {
    /// Blocks until the change.
    pub fn wait(self) {
        self.snooze(None);
        self.listener.wait();
    }

    /// Blocks until the change or `deadline`; `true` when the change came.
    pub fn wait_until(self, deadline: Instant) -> bool {
        self.snooze(Some(deadline));
        self.listener.wait_deadline(deadline).is_some()
    }

    /// [`spin_then_yield`] before the thread parks: a completion that comes while the
    /// consumer is still on its core (a runner that returns at once) is taken without a
    /// sleep and a wake-up. It ends as soon as the queue's signal shows a notification:
    /// this wait's, or another waiter's (which only cuts the spin short), or the deadline.
    fn snooze(&self, deadline: Option<Instant>) {
        let signal = &self._counted.0.signal;
        let mut deadline = backoff::SpinDeadline::new(deadline);
        spin_then_yield(|yielding| signal.is_notified() || (yielding && deadline.passed()));
    }
}

impl std::future::Future for QueueWait {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.listener).poll(cx)
    }
}

/// A completion the ledger committed ([`CompletionQueue::record_completion`]). Dropping
/// it wakes the queue's waiting consumers: hold it past a lock they would want.
#[must_use = "dropping it at once wakes the consumers at once"]
pub struct Committed {
    seq: u64,
    core: Arc<Core>,
}

impl Committed {
    /// Its place in the ledger's order.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl std::fmt::Debug for Committed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committed").field("seq", &self.seq).finish()
    }
}

impl Drop for Committed {
    fn drop(&mut self) {
        self.core.wake_all();
    }
}

/// What the engine keeps of a dispatch it recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchRecord {
    seq: u64,
}

/// What a dispatch recording answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written: keep the record for [`CompletionQueue::record_completion`].
    Dispatch(DispatchRecord),
    /// The id is taken by a row the ledger holds: draw another.
    IdTaken,
}

/// The error of a delegation whose owner died before recording a result.
pub const OWNER_EXITED_ERROR: &str =
    "Delegation owner exited before recording a terminal result; outcome unknown.";

/// Why a restored completion older than the restore horizon is dead instead of replayed.
pub const RESTORE_HORIZON_REASON: &str =
    "restored after a restart more than the restore horizon (48 h by default) after it completed; not replayed";

impl CompletionQueue {
    /// A new, empty queue in memory ([`MemoryLedger`]): nothing survives the process.
    pub fn new() -> Self {
        // A memory ledger cannot fail to recover (it is empty) and starts no thread.
        Self::builder(MemoryLedger::new())
            .open()
            .unwrap_or_else(|_| unreachable_memory_queue())
    }

    /// A builder for a queue on `backend`.
    pub fn builder(backend: impl LedgerBackend) -> CompletionQueueBuilder {
        Self::builder_shared(Arc::new(backend))
    }

    /// A builder for a queue on a backend shared with other queues (tests of restart
    /// recovery open a second queue on the same store).
    pub fn builder_shared(backend: Arc<dyn LedgerBackend>) -> CompletionQueueBuilder {
        CompletionQueueBuilder {
            backend,
            config: LedgerConfig::default(),
            instance: current_instance().to_owned(),
            liveness: None,
        }
    }

    /// The backend this queue runs on.
    pub fn backend(&self) -> &Arc<dyn LedgerBackend> {
        &self.core.backend
    }

    /// The rules this queue applies.
    pub fn config(&self) -> &LedgerConfig {
        &self.core.config
    }

    /// This queue's instance id: the owner written on its rows.
    pub fn instance(&self) -> &str {
        &self.core.instance
    }

    /// Appends `event` at the tail. Never drops it: should the store refuse the write
    /// (a full disk), the event is kept in memory, logged, and written by a later sweep.
    /// Never blocks a memory queue; a durable queue commits the write.
    pub fn put(&self, event: impl Into<Event>) {
        if let Err(PendingRefused { error, event }) = self.core.append_pending(event) {
            tracing::error!(%error, event_type = event.type_name(), "a completion could not be written; kept in memory and retried");
            lock(&self.core.outbox).push_back(*event);
        }
    }

    /// [`put`](Self::put) that reports a failed write instead of keeping the event for a
    /// retry.
    ///
    /// # Errors
    /// When the store refused the write; the event was not queued.
    pub fn try_put(&self, event: impl Into<Event>) -> Result<(), LedgerError> {
        self.core.append_pending(event).map_err(LedgerError::from)
    }

    /// Takes the event at the head, or `None` at once when the queue is empty.
    pub fn try_take(&self) -> Option<Event> {
        self.take_with(&ANY, None)
    }

    /// Takes the event at the head, waiting up to `timeout` for one to arrive (woken by
    /// the event itself, not by polling).
    pub fn take_timeout(&self, timeout: Duration) -> Option<Event> {
        self.take_with(&ANY, Some(timeout))
    }

    /// Number of events waiting (restored ones excepted).
    pub fn len(&self) -> usize {
        self.count(&ANY)
    }

    /// `true` when no event is waiting. It looks for the first one (the store reads one
    /// row), instead of counting them all as [`len`](Self::len) does.
    pub fn is_empty(&self) -> bool {
        self.core
            .backend
            .candidates(&ANY.query(0), 1)
            .map(|first| first.is_empty())
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "looking for a waiting completion failed");
                true
            })
    }

    /// How many completions `filter` could claim now (its `where_event` predicate
    /// included; `0` when the store cannot be read).
    pub fn count(&self, filter: &ClaimFilter) -> usize {
        let counted = if filter.has_predicate() {
            self.core
                .candidates(filter, usize::MAX)
                .map(|candidates| candidates.len())
        } else {
            self.core.backend.count_candidates(&filter.query(0))
        };
        counted.unwrap_or_else(|error| {
            tracing::warn!(%error, "counting waiting completions failed");
            0
        })
    }

    /// Takes every event that was waiting when the call began, in FIFO order.
    ///
    /// Events put while the drain runs stay for the next take, so a drain always ends
    /// even when producers keep putting (or when the caller puts events back).
    pub fn drain(&self) -> Vec<Event> {
        let filter = ClaimFilter::any();
        let waiting = self.count(&filter);
        let mut events = Vec::with_capacity(waiting);
        while events.len() < waiting {
            match self.take_with(&filter, None) {
                Some(event) => events.push(event),
                // Another consumer took the rest.
                None => break,
            }
        }
        events
    }

    /// Takes every waiting event for which `wanted` is true, in FIFO order, leaving the
    /// others where they are.
    ///
    /// It looks only at what was waiting when the call began, so it never blocks and
    /// always ends. This is how a consumer that owns only some events shares the queue
    /// with others, e.g. a CLI loop taking its completions while the parent is idle:
    ///
    /// ```
    /// use process_registry::{AsyncDelegationEvent, CompletionQueue, Event, WatchOverflow};
    ///
    /// let queue = CompletionQueue::new();
    /// queue.put(Event::WatchOverflowTripped(WatchOverflow::default()));
    /// queue.put(AsyncDelegationEvent { delegation_id: Some("deleg_0000000a".into()), ..Default::default() });
    ///
    /// let mine = queue.take_where(Event::is_cli_completion);
    /// assert_eq!(mine.len(), 1);
    /// assert_eq!(queue.len(), 1); // the watch event stays for its owner
    /// ```
    ///
    /// `wanted` is the caller's code: every event is judged before any is taken, so a
    /// panic in it reaches the caller with nothing taken and nothing lost.
    pub fn take_where(&self, mut wanted: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let filter = ClaimFilter::any();
        let candidates = match self.core.candidates(&filter, usize::MAX) {
            Ok(candidates) => candidates,
            Err(error) => {
                tracing::warn!(%error, "reading waiting completions failed");
                return Vec::new();
            }
        };
        let mine: Vec<u64> = candidates
            .into_iter()
            .filter(|candidate| wanted(&candidate.event))
            .map(|candidate| candidate.seq)
            .collect();
        mine.into_iter()
            .filter_map(|seq| self.core.claim_seq(seq, &filter).ok().flatten())
            .filter_map(ack_logged)
            .collect()
    }

    /// `true` when both handles refer to the same queue.
    pub fn same_queue(&self, other: &CompletionQueue) -> bool {
        Arc::ptr_eq(&self.core, &other.core)
    }

    /// Claims the next completion `filter` matches, without waiting.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub fn claim(&self, filter: &ClaimFilter) -> Result<Option<Claim>, LedgerError> {
        self.core.try_claim(filter)
    }

    /// Claims the next completion `filter` matches, waiting up to `timeout` for one.
    /// The wait is woken by a new completion (or a deferral, a release, a requeue,
    /// [`wake_consumers`](Self::wake_consumers)), and ends at the latest when a
    /// backing-off completion becomes due: nothing polls.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub fn claim_timeout(
        &self,
        filter: &ClaimFilter,
        timeout: Duration,
    ) -> Result<Option<Claim>, LedgerError> {
        self.core
            .claim_until(filter, Instant::now().checked_add(timeout))
    }

    /// Wakes every consumer waiting in [`claim_timeout`](Self::claim_timeout) (and the
    /// plain takes) so it looks again — for a change only the consumer's own filter sees,
    /// such as a session's turn ending.
    pub fn wake_consumers(&self) {
        self.core.wake_all();
    }

    /// A wait for the next change that may make a completion claimable (a new
    /// completion, a deferral, a release, a requeue, [`wake_consumers`](Self::wake_consumers)):
    /// arm it, look, then wait on it — so a change between the look and the wait is not
    /// missed. The building block of consumers with their own wake-ups (a router that
    /// also waits for turns to end). Blocking ([`QueueWait::wait`]) or `.await`.
    pub fn listen(&self) -> QueueWait {
        self.core.listen()
    }

    /// When the first completion `filter` matches that cannot be claimed now becomes
    /// claimable: a backoff or a claim's lease running out (`None`: none is waiting for
    /// either). A waiting consumer wakes then at the latest. A hint: it does not apply the
    /// filter's `where_event` predicate, so it may be early, never late.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn next_due(&self, filter: &ClaimFilter) -> Result<Option<Instant>, LedgerError> {
        self.core.next_due(filter)
    }

    /// Rows of the ledger, for inspection: running, pending, claimed, delivered or dead
    /// delegations with their states, attempts and reasons.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn rows(&self, query: &RowQuery) -> Result<Vec<LedgerRow>, LedgerError> {
        self.core.backend.rows(query)
    }

    /// Puts dead row `seq` back to pending with no attempts (an operator's retry).
    /// `false` when it is not dead.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn requeue(&self, seq: u64) -> Result<bool, LedgerError> {
        let requeued = self.core.backend.requeue(seq)?;
        if requeued {
            self.core.pending.add(1);
            self.core.wake_all();
        }
        Ok(requeued)
    }

    /// Puts every dead row back to pending; returns how many.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub fn requeue_dead(&self) -> Result<usize, LedgerError> {
        let dead = self.rows(&RowQuery {
            delivery: Some(crate::DeliveryState::Dead),
            ..RowQuery::default()
        })?;
        let mut requeued = 0;
        for row in dead {
            requeued += usize::from(self.core.backend.requeue(row.seq)?);
        }
        if requeued > 0 {
            self.core.pending.add_rows(requeued as u64);
            self.core.wake_all();
        }
        Ok(requeued)
    }

    /// Runs one sweep now (what the `ledger-sweep` thread does every
    /// [`sweep_interval`](LedgerConfig::sweep_interval)): recovers the rows of instances
    /// that died, expires restored completions past the restore horizon, prunes
    /// delivered rows past the retention, retries failed writes, and wakes consumers.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub fn sweep(&self) -> Result<(), LedgerError> {
        self.core.sweep()
    }

    /// Records a dispatched delegation as running, before its handle is returned. The
    /// engine calls it; `Recorded::IdTaken` asks for another id.
    ///
    /// # Errors
    /// When the store refused the write: the dispatch must be rejected.
    pub fn record_dispatch(
        &self,
        delegation_id: &str,
        session_key: &str,
        skeleton: impl Into<Arc<Event>>,
    ) -> Result<Recorded, LedgerError> {
        let inserted = self.core.backend.insert_running(NewRunning {
            delegation_id,
            session_key,
            owner: &self.core.instance,
            skeleton: skeleton.into(),
        })?;
        Ok(match inserted {
            Inserted::Row(seq) => Recorded::Dispatch(DispatchRecord { seq }),
            Inserted::IdTaken => Recorded::IdTaken,
        })
    }

    /// Records the completion of a dispatched delegation (with its exact wire JSON). The
    /// engine calls it inside the critical section that frees the delegation's slot, so a
    /// consumer that takes the completion and dispatches again always finds the slot free;
    /// waiting consumers are woken when the returned [`Committed`] is dropped — after that
    /// critical section, so none wakes only to wait for it.
    ///
    /// # Errors
    /// When the store refused the write: keep the completion and retry.
    pub fn record_completion(
        &self,
        record: DispatchRecord,
        delegation_id: &str,
        status: impl Into<Status>,
        event: Arc<Event>,
    ) -> Result<Committed, LedgerError> {
        let _ = record;
        let finished = self.core.backend.finish_run(Finish {
            delegation_id,
            expect_owner: Some(&self.core.instance),
            run_state: RunState::Finished(status.into()),
            event: Arc::clone(&event),
            reason: None,
        })?;
        let seq = match finished {
            Some(seq) => seq,
            None => {
                // The running row is gone (recovered as `unknown` by an instance that
                // judged this one dead): the real outcome is still recorded, as its own
                // row, rather than lost.
                tracing::warn!(
                    delegation_id,
                    "no running row for a finished delegation; recording its completion as a new row"
                );
                self.core
                    .backend
                    .insert_pending(NewPending {
                        owner: &self.core.instance,
                        event: Arc::unwrap_or_clone(event),
                    })
                    .map_err(LedgerError::from)?
            }
        };
        Ok(self.committed(seq))
    }

    fn committed(&self, seq: u64) -> Committed {
        self.core.pending.add(1);
        Committed {
            seq,
            core: Arc::clone(&self.core),
        }
    }

    /// Takes back the record of a dispatch that was rejected after all (its worker could
    /// not start): the running row is deleted, so no completion will ever be offered for
    /// it. `false` when the row was no longer running.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn retract_dispatch(
        &self,
        record: DispatchRecord,
        delegation_id: &str,
    ) -> Result<bool, LedgerError> {
        let _ = record;
        self.core
            .backend
            .retract_running(delegation_id, &self.core.instance)
    }

    /// The plain take: the next row claimed and delivered in one step of the store.
    fn take_with(&self, filter: &ClaimFilter, timeout: Option<Duration>) -> Option<Event> {
        let query = filter.query(0);
        let take = || self.core.backend.take_next(&query);
        let taken = match timeout {
            None => take(),
            // One look before the clock is read: an event already waiting needs no deadline.
            Some(timeout) => match take() {
                Ok(None) => self
                    .core
                    .wait_for(filter, Instant::now().checked_add(timeout), take),
                found => found,
            },
        };
        match taken {
            Ok(taken) => taken.map(|row| self.core.taken(row)),
            Err(error) => {
                tracing::warn!(%error, "taking a completion failed");
                None
            }
        }
    }
}

/// Acks a claim of the plain queue API. A store that cannot record the ack still hands
/// the event over (the row's lease runs out and it is offered again, as a possible
/// redelivery: at least once).
fn ack_logged(claim: Claim) -> Option<Event> {
    match claim.ack_taking() {
        (Ok(()), event) => Some(event),
        (Err(crate::SettleError::ClaimLost), _) => None,
        (Err(crate::SettleError::Ledger(error)), event) => {
            tracing::warn!(%error, "acknowledging a taken completion failed; it will be offered again");
            Some(event)
        }
    }
}

#[cold]
fn unreachable_memory_queue() -> CompletionQueue {
    // `MemoryLedger` never returns an error, so `open` cannot fail; should that ever
    // change, a queue without recovery is still a working queue.
    let core = Arc::new(Core {
        backend: Arc::new(MemoryLedger::new()),
        config: LedgerConfig::default(),
        instance: current_instance().to_owned(),
        liveness: Arc::new(ProcessLiveness),
        signal: Signal::new(),
        listeners: AtomicUsize::new(0),
        writes: AtomicU64::new(0),
        outbox: Mutex::new(VecDeque::new()),
        sweeper: Mutex::new(None),
        pending: PendingGauge::register(false),
        offload: None,
    });
    CompletionQueue { core }
}

impl Core {
    /// Arms a wait: counted first, so a write either sees it or is seen by the look that
    /// follows.
    fn listen(self: &Arc<Self>) -> QueueWait {
        self.listeners.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `wake_all`: the look after this sees the write, or the
        // write sees this wait. (A backend may answer a look from an atomic without a
        // lock: the memory ledger does when it is empty.)
        fence(Ordering::SeqCst);
        QueueWait {
            listener: self.signal.listen(),
            _counted: Counted(Arc::clone(self)),
        }
    }

    pub(crate) fn wake_all(&self) {
        // After the write: a consumer that sees the count move looks again and finds it.
        self.writes.fetch_add(1, Ordering::Release);
        // With the `SeqCst` count in `listen`: either this sees the wait, or the wait's
        // look sees the write this follows. The fence is the one `notify` would emit.
        fence(Ordering::SeqCst);
        if self.listeners.load(Ordering::Relaxed) > 0 {
            self.signal.notify_relaxed(usize::MAX);
        }
    }

    fn append_pending(&self, event: impl Into<Event>) -> Result<(), PendingRefused> {
        self.backend.append_pending(NewPending {
            owner: &self.instance,
            event: event.into(),
        })?;
        self.pending.add(1);
        self.wake_all();
        Ok(())
    }

    fn candidates(
        &self,
        filter: &ClaimFilter,
        limit: usize,
    ) -> Result<Vec<crate::Candidate>, LedgerError> {
        let mut found = Vec::new();
        find_candidate(
            &*self.backend,
            &filter.query(0),
            CANDIDATE_PAGE,
            |candidate| {
                if filter.accepts(&candidate.event) {
                    found.push(candidate);
                }
                Ok((found.len() >= limit).then_some(()))
            },
        )?;
        Ok(found)
    }

    /// Makes a claim with a fresh fencing token: `claim` asks the store for it.
    fn claim_with(
        self: &Arc<Self>,
        claim: impl FnOnce(NewClaim<'_>) -> Result<Option<ClaimedRow>, LedgerError>,
    ) -> Result<Option<Claim>, LedgerError> {
        // Unique in this process (every queue shares the counter); with the instance id,
        // unique everywhere.
        static NEXT_CLAIM: AtomicU64 = AtomicU64::new(1);
        let claim_id = NEXT_CLAIM.fetch_add(1, Ordering::Relaxed);
        let new = NewClaim {
            token: ClaimToken {
                id: claim_id,
                owner: &self.instance,
            },
            lease_seconds: self.config.lease.as_secs_f64(),
        };
        Ok(claim(new)?.map(|row| Claim {
            core: Arc::clone(self),
            row,
            claim_id,
            settled: false,
        }))
    }

    /// Claims candidate `seq`, read earlier, if `filter`'s query still matches it.
    fn claim_seq(
        self: &Arc<Self>,
        seq: u64,
        filter: &ClaimFilter,
    ) -> Result<Option<Claim>, LedgerError> {
        self.claim_with(|new| {
            self.backend
                .claim_matching(seq, &filter.query(0), new, None)
        })
    }

    fn try_claim(self: &Arc<Self>, filter: &ClaimFilter) -> Result<Option<Claim>, LedgerError> {
        if let Some(fenced) = filter.fence() {
            return self.try_claim_fenced(filter, fenced);
        }
        let query = filter.query(0);
        match filter.predicate() {
            // Nothing to judge outside the store: one step.
            None => self.claim_with(|new| self.backend.claim_next(&query, new)),
            Some(accepts) => {
                self.claim_with(|new| self.backend.claim_next_accepted(&query, new, accepts))
            }
        }
    }

    /// A claim of a [`ClaimFilter::fenced`] filter: candidates a page at a time, each
    /// judged by the predicate, then claimed under the lease of its scope (passed over
    /// when the scope is not held), or as usual when it has none — either way only if the
    /// filter's query still matches it as it is claimed.
    fn try_claim_fenced(
        self: &Arc<Self>,
        filter: &ClaimFilter,
        fenced: &crate::ledger::claim::Fenced,
    ) -> Result<Option<Claim>, LedgerError> {
        let query = filter.query(0);
        find_candidate(&*self.backend, &query, CANDIDATE_PAGE, |candidate| {
            if !filter.accepts(&candidate.event) {
                return Ok(None);
            }
            let scope = (fenced.scope_of)(&candidate.event);
            let fence = match &scope {
                None => None,
                Some(scope) => match fenced.ownership.epoch(scope) {
                    // Another process's to claim.
                    None => return Ok(None),
                    Some(epoch) => Some(crate::Fence { scope, epoch }),
                },
            };
            self.claim_with(|new| {
                self.backend
                    .claim_matching(candidate.seq, &query, new, fence)
            })
        })
    }

    fn claim_until(
        self: &Arc<Self>,
        filter: &ClaimFilter,
        deadline: Option<Instant>,
    ) -> Result<Option<Claim>, LedgerError> {
        self.wait_for(filter, deadline, || self.try_claim(filter))
    }

    /// Runs `attempt` until it finds something or `deadline` passes, sleeping between
    /// tries until a write wakes the queue or a row `filter` matches comes due.
    fn wait_for<T>(
        self: &Arc<Self>,
        filter: &ClaimFilter,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> Result<Option<T>, LedgerError>,
    ) -> Result<Option<T>, LedgerError> {
        // Once per call, before the first wait is armed: a write that comes while this
        // thread is still on its core (a runner that returns at once) is seen by the
        // write count, and taken without a wait — whose listener is an allocation and a
        // place in the signal's list that every write would then have to notify. Only
        // once: writes that keep coming for others must not keep this thread spinning.
        // It only saves work: what it misses, the armed wait below catches.
        let mut watched = false;
        loop {
            let writes = self.writes.load(Ordering::Acquire);
            if let Some(found) = attempt()? {
                return Ok(Some(found));
            }
            if !watched {
                watched = true;
                let mut spin_deadline = backoff::SpinDeadline::new(deadline);
                let wrote = spin_then_yield(|yielding| {
                    self.writes.load(Ordering::Acquire) != writes
                        || (yielding && spin_deadline.passed())
                });
                if wrote && self.writes.load(Ordering::Acquire) != writes {
                    continue;
                }
            }
            // Armed before the second look: a write between the look and the wait wakes
            // the wait.
            let listener = self.listen();
            if let Some(found) = attempt()? {
                return Ok(Some(found));
            }
            let due = self.next_due(filter)?;
            // A backoff (or lease) that ran out between the look and `next_due` is in
            // neither answer: look once more, or the wait would sleep beside it.
            if let Some(found) = attempt()? {
                return Ok(Some(found));
            }
            let until = match (deadline, due) {
                (Some(deadline), Some(due)) => Some(deadline.min(due)),
                (deadline, due) => deadline.or(due),
            };
            match until {
                None => listener.wait(),
                Some(until) => {
                    if !listener.wait_until(until) && deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        // One last look: a row may have come due at the deadline.
                        return attempt();
                    }
                }
            }
        }
    }

    fn next_due(&self, filter: &ClaimFilter) -> Result<Option<Instant>, LedgerError> {
        Ok(self.backend.next_due(&filter.query(0))?.map(|at| {
            let wait = (at - self.backend.now()).clamp(0.0, 1e9);
            Instant::now() + Duration::from_secs_f64(wait)
        }))
    }

    /// Recovery, expiry, pruning and retries: on every sweep (the open runs the same
    /// two parts, `recover_dead_owners` then `housekeep`, but only the first decides
    /// it). Each step runs whatever the others answered (the
    /// first error is returned): a prune the store cannot finish must not hold back the
    /// recovery of a dead owner's runs, nor the writes it refused before, which are
    /// completions waiting to be recorded.
    pub(crate) fn sweep(&self) -> Result<(), LedgerError> {
        let now = self.backend.now();
        let recovered = self.recover_dead_owners(now);
        let housekept = self.housekeep(now);
        recovered.and(housekept)
    }

    /// The sweep's steps after the recovery: expiry of restored completions past the
    /// horizon, the prune of delivered rows past the retention, the retry of refused
    /// writes, the recount, and a wake-up. Each runs whatever the others answered; the
    /// first error is returned.
    fn housekeep(&self, now: f64) -> Result<(), LedgerError> {
        let mut failed = None;
        let mut step = |done: Result<(), LedgerError>| {
            if let Err(error) = done {
                failed.get_or_insert(error);
            }
        };
        step(
            self.backend
                .expire_pending(
                    now - self.config.restore_horizon.as_secs_f64(),
                    RESTORE_HORIZON_REASON,
                )
                .map(|expired| self.pending.remove_rows(expired)),
        );
        step(
            self.backend
                .prune_delivered(now - self.config.retention.as_secs_f64())
                .map(drop),
        );
        self.retry_outbox();
        if self.pending.is_recounted() {
            step(
                self.backend
                    .count_undelivered()
                    .map(|count| self.pending.recount(count)),
            );
        }
        // Rows other processes wrote arrive without a wake-up: look again.
        self.wake_all();
        failed.map_or(Ok(()), Err)
    }

    /// Records `unknown` the runs of every owner that is no longer alive.
    fn recover_dead_owners(&self, now: f64) -> Result<(), LedgerError> {
        for owner in self.backend.owners()? {
            if owner == self.instance || self.liveness.is_alive(&owner) {
                continue;
            }
            self.recover_owner(&owner, now)?;
        }
        Ok(())
    }

    fn recover_owner(&self, owner: &str, now: f64) -> Result<(), LedgerError> {
        let running = self.backend.rows(&RowQuery {
            running_only: true,
            owner: Some(owner.to_owned()),
            ..RowQuery::default()
        })?;
        for row in running {
            let Some(delegation_id) = row.delegation_id.as_deref() else {
                continue;
            };
            let event = Arc::new(unknown_completion(&row.event, now));
            let finished = self.backend.finish_run(Finish {
                delegation_id,
                expect_owner: Some(owner),
                run_state: RunState::Unknown,
                event,
                reason: Some(OWNER_EXITED_ERROR),
            })?;
            if finished.is_some() {
                self.pending.add(1);
            }
            tracing::warn!(
                delegation_id,
                owner,
                "delegation owner exited before recording a result; recorded as unknown"
            );
        }
        let adopted = self.backend.adopt_orphans(owner)?;
        if adopted > 0 {
            tracing::info!(
                owner,
                adopted,
                "restored the pending completions of an instance that exited"
            );
        }
        Ok(())
    }

    /// `true` for a memory ledger that no other queue or caller holds: this queue's
    /// count is the ledger's whole count, from its open to its drop.
    fn counts_alone(&self) -> bool {
        !self.pending.is_recounted() && Arc::strong_count(&self.backend) == 1
    }

    /// A row the plain queue API took (delivered in the same step): its event.
    pub(crate) fn taken(&self, row: crate::TakenRow) -> Event {
        self.pending.add(-1);
        Arc::unwrap_or_clone(row.event)
    }

    pub(crate) fn retry_outbox(&self) {
        loop {
            let Some(event) = lock(&self.outbox).pop_front() else {
                return;
            };
            if let Err(PendingRefused { error, event }) = self.append_pending(event) {
                tracing::warn!(%error, "a completion kept in memory still cannot be written; retrying later");
                lock(&self.outbox).push_front(*event);
                return;
            }
        }
    }
}
