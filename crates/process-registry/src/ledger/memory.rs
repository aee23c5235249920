//! `MemoryLedger`: the default backend. Nothing survives the process.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, MutexGuard};

use super::backend::{
    Candidate, CandidateQuery, Capabilities, ClaimToken, ClaimedRow, DeliveryState, Fence, Finish,
    Inserted, LedgerBackend, LedgerRow, NewClaim, NewPending, NewRunning, PendingRefused, RowQuery,
    RunState, ScopeLease, Settle, TakenRow,
};
use super::clock::{Clock, SystemClock};
use super::fifo::Fifo;
use crate::{Event, LedgerError, Text};

/// A delegation id, shared by its map key and its row: finishing a run or claiming a
/// row copies no text.
type Id = Text;

/// The hasher of the ledger's maps (their keys are ids: short, mostly random text).
type FastHash = foldhash::fast::RandomState;

/// The in-memory ledger: rows under one mutex, the claimable ones in a FIFO. Nothing
/// survives the process, and a delivered row is dropped at once, so memory stays flat.
///
/// An event put on the queue does not take the mutex: it goes to a lock-free inbox, in
/// put order, which the next step under the mutex (any step) moves to the FIFO's tail
/// first, numbering its rows then — so a producer never waits for, nor bounces the lock
/// of, a consumer.
///
/// This is what [`CompletionQueue::new`](crate::CompletionQueue::new) runs on.
pub struct MemoryLedger {
    locked: Locked,
    /// Events put by the instance that owns [`State::owners`]' first entry, not yet
    /// rows.
    inbox: Inbox,
    /// That instance (the queue's own, in practice), once known: a put from any other
    /// takes the mutex.
    first_owner: OnceLock<Box<str>>,
    /// Set once, before the first put is sent: a ledger that only runs delegations (the
    /// engine's completions never pass the inbox) does not look at the inbox at every
    /// locked step.
    inbox_used: AtomicBool,
    clock: Arc<dyn Clock>,
}

/// What the steps under the mutex write, on cache lines of its own: a producer reads
/// the ledger's other fields on every put, and would otherwise fetch them again after
/// every step of a consumer.
#[repr(align(128))]
struct Locked {
    state: Mutex<State>,
    /// How many rows are open, published at every unlock and before rows leave the inbox:
    /// a consumer looking at an empty ledger (a spinning or woken one) need not take the
    /// lock ([`MemoryLedger::none_open`]).
    open_rows: AtomicUsize,
    /// Whether the last take found a put in the inbox (a hint, written under the lock):
    /// while takers keep finding puts there, they receive without looking at the inbox
    /// first, a look that reads the line producers write at every put.
    inbox_busy: AtomicBool,
}

/// Puts waiting to become rows: an unbounded lock-free channel (a linked list of
/// blocks), sent to by producers and received from only under the ledger's mutex.
struct Inbox {
    sender: Sender<Put>,
    receiver: Receiver<Put>,
}

/// An event put, with when.
struct Put {
    event: Arc<Event>,
    at: f64,
}

/// The owner of the inbox's puts: the first instance interned.
const FIRST_OWNER: Owner = 0;

/// The lock on a [`MemoryLedger`]'s rows; publishes the open count when released.
struct Guard<'a> {
    state: MutexGuard<'a, State>,
    open_rows: &'a AtomicUsize,
}

impl std::ops::Deref for Guard<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let open = self.state.open.len();
        self.open_rows.store(open, Ordering::Release);
    }
}

impl std::fmt::Debug for MemoryLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryLedger")
            .field("open", &state.open.len())
            .field("running", &state.running().count())
            .field("dead", &state.parked.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    next_seq: u64,
    /// Pending and claimed rows — the only ones a claim can take — in `seq` order, as a
    /// FIFO: a row is put at the back and can be taken from anywhere; it stays where it
    /// was written ([`Fifo`]).
    open: Fifo<Row>,
    /// Dead rows.
    parked: BTreeMap<u64, Row>,
    /// Every delegation id the ledger holds: `Some` while it runs (no row yet), `None`
    /// once its row is written. One map for both, so a dispatch costs one small insert
    /// (the caller waits for it) and a finished run one lookup.
    ids: HashMap<Id, Option<Running>, FastHash>,
    /// The instances seen (usually one), named by their index in rows.
    owners: Vec<Box<str>>,
    /// Ownership leases, by scope.
    leases: BTreeMap<String, Lease>,
}

/// An ownership lease ([`LedgerBackend::acquire_scope`]).
struct Lease {
    /// `None` once released.
    holder: Option<Owner>,
    epoch: u64,
    lease_until: f64,
}

/// A delegation that runs: what its row is until it finishes.
struct Running {
    /// Its id (the map's key, shared): the row's, once it finishes.
    id: Id,
    seq: u64,
    owner: Owner,
    created_at: f64,
    skeleton: Arc<Event>,
}

impl Running {
    fn to_row(&self, owners: &[Box<str>]) -> LedgerRow {
        LedgerRow {
            seq: self.seq,
            key: self.id.to_string(),
            delegation_id: Some(self.id.to_string()),
            kind: self.skeleton.type_name().to_owned(),
            session_key: self.skeleton.session_key().unwrap_or("").to_owned(),
            run_state: Some(RunState::Running),
            delivery: None,
            attempts: 0,
            reason: None,
            owner: owner_name(owners, self.owner).to_owned(),
            claimed_by: None,
            restored: false,
            possible_redelivery: false,
            created_at: self.created_at,
            completed_at: None,
            delivered_at: None,
            not_before: None,
            lease_until: None,
            event: Arc::clone(&self.skeleton),
        }
    }
}

/// The id of a new running row: shared with its skeleton's `delegation_id` when that is
/// the same text (the engine's always is), so the dispatch allocates no copy of it.
fn shared_id(new: &NewRunning<'_>) -> Id {
    match &*new.skeleton {
        Event::AsyncDelegation(event) => event
            .delegation_id
            .as_ref()
            .filter(|id| id.as_str() == new.delegation_id)
            .cloned(),
        _ => None,
    }
    .unwrap_or_else(|| Id::from(new.delegation_id))
}

fn owner_name(owners: &[Box<str>], owner: Owner) -> &str {
    owners.get(owner as usize).map_or("", |name| &**name)
}

/// An instance id, as an index into [`State::owners`].
type Owner = u32;

/// A row. Its kind and session key are read off its event; its key is its delegation id
/// or `event-{seq}`: nothing is stored twice. What an event put and taken plainly never
/// needs is boxed apart ([`More`]), and the event is shared, so a row is a few words:
/// cheap to build in the FIFO, to move, and to hand out.
struct Row {
    /// The event, moved into its `Arc` by the producer (outside the lock) or shared
    /// already (the engine's completions): a candidate, a claim and a take pass the
    /// pointer. `None` once taken out of a row that is being emptied.
    event: Option<Arc<Event>>,
    /// The delegation an engine's row belongs to.
    delegation_id: Option<Id>,
    /// How the run ended, for an engine's row.
    run_state: Option<RunState>,
    delivery: Option<DeliveryState>,
    attempts: u32,
    owner: Owner,
    restored: bool,
    possible_redelivery: bool,
    created_at: f64,
    completed_at: Option<f64>,
    more: Option<Box<More>>,
}

/// The fields of a claim, a backoff or a reason.
#[derive(Default)]
struct More {
    reason: Option<String>,
    claim: Option<(u64, Owner)>,
    /// The ownership the claim was made under: scope and epoch.
    fence: Option<(Box<str>, u64)>,
    not_before: Option<f64>,
    lease_until: Option<f64>,
}

impl Row {
    fn kind(&self) -> &str {
        self.event.as_deref().map_or("", Event::type_name)
    }

    fn session_key(&self) -> &str {
        self.event
            .as_deref()
            .and_then(Event::session_key)
            .unwrap_or("")
    }

    fn key(&self, seq: u64) -> String {
        match self.delegation_id() {
            Some(id) => id.to_string(),
            None => format!("event-{seq}"),
        }
    }

    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }

    fn delegation_id(&self) -> Option<&Id> {
        self.delegation_id.as_ref()
    }

    fn run_state(&self) -> Option<&RunState> {
        self.run_state.as_ref()
    }

    fn reason(&self) -> Option<&String> {
        self.more.as_ref()?.reason.as_ref()
    }

    fn claim(&self) -> Option<(u64, Owner)> {
        self.more.as_ref()?.claim
    }

    fn not_before(&self) -> Option<f64> {
        self.more.as_ref()?.not_before
    }

    fn lease_until(&self) -> Option<f64> {
        self.more.as_ref()?.lease_until
    }

    /// Ends the row's claim (if any): no claim, no lease.
    fn clear_claim(&mut self) {
        if let Some(more) = &mut self.more {
            more.claim = None;
            more.fence = None;
            more.lease_until = None;
        }
    }

    /// The claim goes back to pending undecided: whoever claims it next may deliver it
    /// again.
    fn reclaim(&mut self) {
        self.delivery = Some(DeliveryState::Pending);
        self.clear_claim();
        self.possible_redelivery = true;
    }

    fn fence(&self) -> Option<(&str, u64)> {
        let (scope, epoch) = self.more.as_ref()?.fence.as_ref()?;
        Some((scope, *epoch))
    }

    fn claimed_by(&self) -> Option<Owner> {
        self.claim().map(|(_, owner)| owner)
    }

    /// Whether a claim can take this row now. `now` is read only when a deadline has to
    /// be compared: the common row (pending, no backoff) needs no clock.
    fn claimable(&self, now: &mut impl FnMut() -> f64) -> bool {
        match self.delivery {
            Some(DeliveryState::Pending) => self.not_before().is_none_or(|t| t <= now()),
            Some(DeliveryState::Claimed) => self.lease_until().is_some_and(|t| t <= now()),
            _ => false,
        }
    }

    /// Claims this row, which the caller found claimable at `now`.
    fn take_claim(
        &mut self,
        seq: u64,
        claimer: Owner,
        claim: &NewClaim<'_>,
        now: f64,
    ) -> Option<ClaimedRow> {
        let event = self.event.clone()?;
        if self.delivery == Some(DeliveryState::Claimed) {
            // The previous claim's lease ran out undecided: it may have delivered.
            self.possible_redelivery = true;
        }
        self.delivery = Some(DeliveryState::Claimed);
        let more = self.more();
        more.claim = Some((claim.token.id, claimer));
        more.fence = None;
        more.lease_until = Some(now + claim.lease_seconds);
        more.not_before = None;
        self.attempts = self.attempts.saturating_add(1);
        Some(ClaimedRow {
            seq,
            delegation_id: self.delegation_id.clone(),
            event,
            attempts: self.attempts,
            possible_redelivery: self.possible_redelivery,
            restored: self.restored,
        })
    }

    fn matches(&self, query: &CandidateQuery<'_>) -> bool {
        query.wants(self.kind(), self.session_key(), self.restored)
    }

    fn to_row(&self, seq: u64, owners: &[Box<str>]) -> Option<LedgerRow> {
        let name = |owner: Owner| owner_name(owners, owner);
        Some(LedgerRow {
            seq,
            key: self.key(seq),
            delegation_id: self.delegation_id().map(|id| id.to_string()),
            kind: self.kind().to_owned(),
            session_key: self.session_key().to_owned(),
            run_state: self.run_state().cloned(),
            delivery: self.delivery,
            attempts: self.attempts,
            reason: self.reason().cloned(),
            owner: name(self.owner).to_owned(),
            claimed_by: self.claimed_by().map(|owner| name(owner).to_owned()),
            restored: self.restored,
            possible_redelivery: self.possible_redelivery,
            created_at: self.created_at,
            completed_at: self.completed_at,
            // Never retained.
            delivered_at: None,
            not_before: self.not_before(),
            lease_until: self.lease_until(),
            event: self.event.clone()?,
        })
    }
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLedger {
    /// An empty ledger on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty ledger on `clock` (tests move time by hand).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        MemoryLedger {
            locked: Locked {
                state: Mutex::new(State::default()),
                open_rows: AtomicUsize::new(0),
                inbox_busy: AtomicBool::new(false),
            },
            inbox: Inbox { sender, receiver },
            first_owner: OnceLock::new(),
            inbox_used: AtomicBool::new(false),
            clock,
        }
    }

    /// The clock, read at most once and only when asked.
    fn lazy_now(&self) -> impl FnMut() -> f64 + '_ {
        let mut read = None;
        move || *read.get_or_insert_with(|| self.clock.now())
    }

    /// The mutex, with the puts waiting in the inbox moved into the FIFO ([`Self::drain`]).
    fn lock(&self) -> Guard<'_> {
        let mut guard = self.lock_undrained();
        self.drain(&mut guard);
        guard
    }

    /// The mutex, the inbox left as it is.
    fn lock_undrained(&self) -> Guard<'_> {
        Guard {
            state: self.locked.state.lock(),
            open_rows: &self.locked.open_rows,
        }
    }

    /// Moves the puts in the inbox when the step began to the FIFO's tail — every put
    /// that returned before it — and no more: producers never wait for the lock, so a
    /// drain that also took the puts sent while it ran would end only when they pause.
    /// Later puts stay in the inbox, where a look still sees them.
    fn drain(&self, state: &mut Guard<'_>) {
        // The common cases, without a receive's fence.
        if self.inbox_empty() {
            return;
        }
        for _ in 0..self.inbox.receiver.len() {
            let Some(put) = self.receive(state) else {
                break;
            };
            state.append(put.event, FIRST_OWNER, put.at);
        }
    }

    /// The inbox's first put, counted as open before it leaves the inbox: a look
    /// without the lock sees it in one place or the other (see `none_open`; the guard
    /// corrects the count when it is released). The channel's own receive reads only
    /// its head while producers are a block ahead, so a consumer keeping up with them
    /// does not pull the line they write at every put.
    fn receive(&self, state: &Guard<'_>) -> Option<Put> {
        self.locked
            .open_rows
            .store(state.open.len() + 1, Ordering::Release);
        self.inbox.receiver.try_recv().ok()
    }

    /// When no row is open, the head of the order is the inbox's first put: taken from
    /// there, as it was put, if `query` wants it (else it joins the FIFO, which the caller
    /// then drains and searches as usual).
    fn take_put(&self, state: &mut Guard<'_>, query: &CandidateQuery<'_>) -> Option<TakenRow> {
        if state.open.len() > 0 || query.after_seq > state.next_seq {
            return None;
        }
        // It may join the FIFO.
        let put = self.receive(state);
        self.locked
            .inbox_busy
            .store(put.is_some(), Ordering::Relaxed);
        let put = put?;
        let wanted = query.wants(
            put.event.type_name(),
            put.event.session_key().unwrap_or(""),
            false,
        );
        if !wanted {
            state.append(put.event, FIRST_OWNER, put.at);
            return None;
        }
        state.next_seq += 1;
        Some(TakenRow {
            seq: state.next_seq,
            event: put.event,
            possible_redelivery: false,
        })
    }

    /// `true` when no row is open and none waits in the inbox, read without the lock. A
    /// consumer's look that sees this is ordered against a write it misses by the
    /// queue's wake-up protocol (a `SeqCst` fence on both sides; a put's write is its
    /// send, a `SeqCst` step of the channel). The inbox is read first: when a drain has
    /// emptied it (a `SeqCst` step this load reads from), the count the drain published
    /// before is visible to the load after.
    fn none_open(&self) -> bool {
        self.inbox_empty() && self.locked.open_rows.load(Ordering::Acquire) == 0
    }

    /// `true` when no put waits in the inbox. The flag is set before a put's send: a
    /// look ordered after the send (by the wake-up protocol's fences, or a put that
    /// returned before) sees it set, and then looks at the channel.
    fn inbox_empty(&self) -> bool {
        !self.inbox_used.load(Ordering::Acquire) || self.inbox.receiver.is_empty()
    }

    /// Interns `owner` under the lock, remembering the first one for the inbox.
    fn owner(&self, state: &mut State, owner: &str) -> Owner {
        let index = state.owner(owner);
        if index == FIRST_OWNER && self.first_owner.get().is_none() {
            // Only ever the first entry's name: a lost race sets the same text.
            let _ = self.first_owner.set(Box::from(owner));
        }
        index
    }

    /// Claims row `seq` if it is claimable now (and still matches `query`, when given) —
    /// under `fence` when given, which the claimer must hold at its epoch with the lease
    /// running (the row then remembers it).
    fn claim_row(
        &self,
        seq: u64,
        claim: &NewClaim<'_>,
        fence: Option<Fence<'_>>,
        query: Option<&CandidateQuery<'_>>,
    ) -> Option<ClaimedRow> {
        let now = self.now();
        let mut state = self.lock();
        let claimer = self.owner(&mut state, claim.token.owner);
        if let Some(fence) = fence {
            let held = state.leases.get(fence.scope).is_some_and(|lease| {
                lease.holder == Some(claimer)
                    && lease.epoch == fence.epoch
                    && lease.lease_until > now
            });
            if !held {
                return None;
            }
        }
        let row = state.get_mut(seq)?;
        let unwanted = |query: &CandidateQuery<'_>| seq <= query.after_seq || !row.matches(query);
        if !row.claimable(&mut || now) || query.is_some_and(unwanted) {
            return None;
        }
        let claimed = row.take_claim(seq, claimer, claim, now)?;
        if let Some(fence) = fence {
            row.more().fence = Some((Box::from(fence.scope), fence.epoch));
        }
        Some(claimed)
    }

    /// Claims the first claimable row that matches `query`, in one step under the lock.
    fn claim_first(
        &self,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        if self.none_open() {
            return Ok(None);
        }
        let now = self.now();
        let mut state = self.lock();
        let claimer = self.owner(&mut state, claim.token.owner);
        let start = state.open_start(query.after_seq);
        let found = state
            .open
            .iter_from(start)
            .find(|(_, _, row)| {
                row.matches(query) && row.claimable(&mut || now) && row.event.is_some()
            })
            .map(|(index, _, _)| index);
        let Some((seq, row)) = found.and_then(|index| state.open.at_mut(index)) else {
            return Ok(None);
        };
        Ok(row.take_claim(seq, claimer, &claim, now))
    }
}

impl State {
    /// The running delegations (no row yet).
    fn running(&self) -> impl Iterator<Item = &Running> {
        self.ids.values().flatten()
    }

    /// Claims of `scope` made under another epoch than `epoch` go back to pending.
    fn reclaim_stale(&mut self, scope: &str, epoch: u64) {
        for row in self.open.rows_mut() {
            let stale = row.delivery == Some(DeliveryState::Claimed)
                && row
                    .fence()
                    .is_some_and(|(of, at)| of == scope && at != epoch);
            if stale {
                row.reclaim();
            }
        }
    }

    /// The index of an instance id, added when new.
    fn owner(&mut self, owner: &str) -> Owner {
        if let Some(known) = self.known_owner(owner) {
            return known;
        }
        self.owners.push(Box::from(owner));
        Owner::try_from(self.owners.len() - 1).unwrap_or(Owner::MAX)
    }

    /// A pending row at the FIFO's tail, with the next `seq`, built in its slot.
    fn append(&mut self, event: Arc<Event>, owner: Owner, now: f64) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.open.push_back_with(seq, || Row {
            event: Some(event),
            delivery: Some(DeliveryState::Pending),
            attempts: 0,
            owner,
            restored: false,
            possible_redelivery: false,
            created_at: now,
            completed_at: Some(now),
            delegation_id: None,
            run_state: None,
            more: None,
        });
        seq
    }

    /// The index of an instance id seen before.
    fn known_owner(&self, owner: &str) -> Option<Owner> {
        let index = self.owners.iter().position(|known| &**known == owner)?;
        Owner::try_from(index).ok()
    }

    /// Where open row `seq` is in the FIFO.
    fn open_index(&self, seq: u64) -> Option<usize> {
        self.open.index_of(seq)
    }

    /// The index in the FIFO of the first row after `after_seq`.
    fn open_start(&self, after_seq: u64) -> usize {
        self.open.start_after(after_seq)
    }

    /// The open rows after `after_seq`, in order, with their index in the FIFO.
    fn open_rows_at(&self, after_seq: u64) -> impl Iterator<Item = (usize, u64, &Row)> {
        self.open.iter_from(self.open_start(after_seq))
    }

    /// The open rows after `after_seq`, in order.
    fn open_rows(&self, after_seq: u64) -> impl Iterator<Item = (u64, &Row)> {
        self.open_rows_at(after_seq).map(|(_, seq, row)| (seq, row))
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut Row> {
        match self.open_index(seq) {
            Some(index) => self.open.at_mut(index).map(|(_, row)| row),
            None => self.parked.get_mut(&seq),
        }
    }

    /// Takes the open row at `index` out of the FIFO.
    fn take_open(&mut self, index: usize) -> Option<Row> {
        self.open.take(index)
    }

    /// Empties the slot at `index` in place, handing its row to `take` first — which
    /// moves out what it keeps — so the row itself is never moved.
    fn take_open_with<R>(
        &mut self,
        index: usize,
        take: impl FnOnce(&mut Row) -> Option<R>,
    ) -> Option<R> {
        let ids = &mut self.ids;
        self.open.take_with(index, |row| {
            if let Some(id) = row.delegation_id() {
                ids.remove(id);
            }
            take(row)
        })
    }

    /// Removes row `seq`, open or parked, with its id.
    fn remove(&mut self, seq: u64) -> Option<Row> {
        let row = match self.open_index(seq) {
            Some(index) => self.take_open(index),
            None => self.parked.remove(&seq),
        }?;
        if let Some(id) = row.delegation_id() {
            self.ids.remove(id);
        }
        Some(row)
    }

    /// Drops row `seq`, open or parked, with its id — an open one in place (a row is
    /// large).
    fn discard(&mut self, seq: u64) {
        match self.open_index(seq) {
            Some(index) => {
                self.take_open_with(index, |_| Some(()));
            }
            None => {
                self.remove(seq);
            }
        }
    }

    /// Moves open row `seq` to the parked rows (it died).
    fn park(&mut self, seq: u64) {
        if let Some(row) = self.open_index(seq).and_then(|index| self.take_open(index)) {
            self.parked.insert(seq, row);
        }
    }

    /// Moves parked row `seq` back into the FIFO, at its place.
    fn unpark(&mut self, seq: u64) {
        if let Some(row) = self.parked.remove(&seq) {
            self.open.insert(seq, row);
        }
    }

    /// Every row, in `seq` order.
    fn all_rows(&self) -> Vec<(u64, &Row)> {
        let mut all: Vec<(u64, &Row)> = self
            .open_rows(0)
            .chain(self.parked.iter().map(|(seq, row)| (*seq, row)))
            .collect();
        all.sort_unstable_by_key(|(seq, _)| *seq);
        all
    }
}

impl LedgerBackend for MemoryLedger {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: false,
            retains_delivered: false,
            shared_between_processes: false,
            may_block: false,
        }
    }

    fn now(&self) -> f64 {
        self.clock.now()
    }

    fn insert_running(&self, new: NewRunning<'_>) -> Result<Inserted, LedgerError> {
        let now = self.clock.recent();
        let mut state = self.lock();
        let owner = self.owner(&mut state, new.owner);
        let seq = state.next_seq + 1;
        let id = shared_id(&new);
        // One lookup: the id is hashed once, whether it is taken or not.
        match state.ids.entry(Id::clone(&id)) {
            Entry::Occupied(_) => return Ok(Inserted::IdTaken),
            Entry::Vacant(slot) => slot.insert(Some(Running {
                id,
                seq,
                owner,
                created_at: now,
                skeleton: new.skeleton,
            })),
        };
        state.next_seq = seq;
        Ok(Inserted::Row(seq))
    }

    fn insert_pending(&self, new: NewPending<'_>) -> Result<u64, PendingRefused> {
        let now = self.clock.recent();
        let mut state = self.lock();
        let owner = self.owner(&mut state, new.owner);
        // Pending, with no id: straight to the FIFO's tail (after the inbox's puts).
        Ok(state.append(Arc::new(new.event), owner, now))
    }

    fn append_pending(&self, new: NewPending<'_>) -> Result<(), PendingRefused> {
        if self
            .first_owner
            .get()
            .is_some_and(|first| **first == *new.owner)
        {
            if !self.inbox_used.load(Ordering::Relaxed) {
                self.inbox_used.store(true, Ordering::Release);
            }
            let put = Put {
                event: Arc::new(new.event),
                at: self.clock.recent(),
            };
            // The receiver lives as long as the sender: both are this ledger's.
            if let Err(unsent) = self.inbox.sender.send(put) {
                let put = unsent.into_inner();
                self.lock().append(put.event, FIRST_OWNER, put.at);
            }
            return Ok(());
        }
        self.insert_pending(new).map(drop)
    }

    fn finish_run(&self, finish: Finish<'_>) -> Result<Option<u64>, LedgerError> {
        let now = self.clock.recent();
        let mut state = self.lock();
        let expected = finish.expect_owner.map(|owner| state.known_owner(owner));
        let Some(entry) = state.ids.get_mut(finish.delegation_id) else {
            return Ok(None);
        };
        // Not running (its row is written), or not this instance's run: left as it was.
        let ours = entry
            .as_ref()
            .is_some_and(|running| expected.is_none_or(|owner| owner == Some(running.owner)));
        let Some(running) = entry.take_if(|_| ours) else {
            return Ok(None);
        };
        // To the tail: offered in the order the runs finished, built in its slot.
        state.next_seq += 1;
        let seq = state.next_seq;
        let delegation_id = running.id;
        state.open.push_back_with(seq, || Row {
            event: Some(finish.event),
            delivery: Some(DeliveryState::Pending),
            attempts: 0,
            owner: running.owner,
            restored: false,
            possible_redelivery: false,
            created_at: running.created_at,
            completed_at: Some(now),
            delegation_id: Some(delegation_id),
            run_state: Some(finish.run_state),
            more: finish.reason.map(|reason| {
                Box::new(More {
                    reason: Some(reason.to_owned()),
                    ..More::default()
                })
            }),
        });
        Ok(Some(seq))
    }

    fn retract_running(&self, delegation_id: &str, owner: &str) -> Result<bool, LedgerError> {
        let mut state = self.lock();
        let owner = state.known_owner(owner);
        let ours = matches!(
            state.ids.get(delegation_id),
            Some(Some(running)) if Some(running.owner) == owner
        );
        if ours {
            state.ids.remove(delegation_id);
        }
        Ok(ours)
    }

    fn candidates(
        &self,
        query: &CandidateQuery<'_>,
        limit: usize,
    ) -> Result<Vec<Candidate>, LedgerError> {
        if self.none_open() {
            return Ok(Vec::new());
        }
        let mut now = self.lazy_now();
        let mut state = self.lock();
        let start = state.open_start(query.after_seq);
        let mut found = Vec::new();
        for index in start..state.open.end() {
            let Some((seq, row)) = state.open.at_mut(index) else {
                continue;
            };
            if found.len() == limit {
                break;
            }
            if !(row.matches(query) && row.claimable(&mut now)) {
                continue;
            }
            if let Some(event) = row.event.clone() {
                found.push(Candidate { seq, event });
            }
        }
        Ok(found)
    }

    fn count_candidates(&self, query: &CandidateQuery<'_>) -> Result<usize, LedgerError> {
        let mut now = self.lazy_now();
        let state = self.lock();
        Ok(state
            .open_rows(query.after_seq)
            .filter(|(_, row)| row.matches(query) && row.claimable(&mut now))
            .count())
    }

    fn next_due(&self, query: &CandidateQuery<'_>) -> Result<Option<f64>, LedgerError> {
        // No open row, nothing to come due: a row written after this look wakes the
        // waiter that asked (its wait is armed before).
        if self.none_open() {
            return Ok(None);
        }
        let now = self.now();
        let state = self.lock();
        Ok(state
            .open_rows(0)
            .map(|(_, row)| row)
            .filter(|row| row.matches(query))
            .filter_map(|row| match row.delivery {
                Some(DeliveryState::Pending) => row.not_before(),
                Some(DeliveryState::Claimed) => row.lease_until(),
                _ => None,
            })
            .filter(|t| *t > now)
            .reduce(f64::min))
    }

    fn claim(&self, seq: u64, claim: NewClaim<'_>) -> Result<Option<ClaimedRow>, LedgerError> {
        Ok(self.claim_row(seq, &claim, None, None))
    }

    fn claim_next(
        &self,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        self.claim_first(query, claim)
    }

    fn claim_matching(
        &self,
        seq: u64,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
        fence: Option<Fence<'_>>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        // What the trait's `claim_next_accepted` claims each accepted candidate with: its
        // predicate, the consumer's code, was asked with no lock of this ledger held (a
        // predicate that reads the queue, or a handle waiting for a completion's write,
        // would deadlock under it); the query is checked again under the lock that claims
        // (a sweep may have restored the row meanwhile).
        Ok(self.claim_row(seq, &claim, fence, Some(query)))
    }

    fn take_next(&self, query: &CandidateQuery<'_>) -> Result<Option<TakenRow>, LedgerError> {
        // While puts keep coming, no look at the inbox without the lock (`none_open`):
        // it reads the line producers write at every put. The lock is the takers' own.
        if self.locked.open_rows.load(Ordering::Acquire) == 0 {
            if !self.locked.inbox_busy.load(Ordering::Relaxed) && self.none_open() {
                return Ok(None);
            }
            let mut state = self.lock_undrained();
            if let Some(taken) = self.take_put(&mut state, query) {
                // Not retained, and never a row: put, then taken whole.
                return Ok(Some(taken));
            }
            // (A put may wait that `take_put` left, for a query past the last `seq`.)
            if state.open.len() == 0 && self.inbox_empty() {
                return Ok(None);
            }
        }
        let mut now = self.lazy_now();
        let mut state = self.lock();
        let Some((index, seq)) = state
            .open_rows_at(query.after_seq)
            .find(|(_, _, row)| row.matches(query) && row.claimable(&mut now))
            .map(|(index, seq, _)| (index, seq))
        else {
            return Ok(None);
        };
        // Not retained: delivered at once, as a taken event always was.
        Ok(state.take_open_with(index, |row| {
            let possible_redelivery =
                row.possible_redelivery || row.delivery == Some(DeliveryState::Claimed);
            let event = row.event.take()?;
            Some(TakenRow {
                seq,
                event,
                possible_redelivery,
            })
        }))
    }

    fn settle(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        settle: Settle<'_>,
    ) -> Result<bool, LedgerError> {
        let mut now = self.lazy_now();
        let mut state = self.lock();
        let holder = state.known_owner(token.owner);
        let Some(row) = state.claimed_mut(seq, token, holder) else {
            return Ok(false);
        };
        row.clear_claim();
        match settle {
            Settle::Ack => {
                // Not retained: a delivered row is gone, as a taken event always was.
                state.discard(seq);
            }
            Settle::Defer => {
                row.delivery = Some(DeliveryState::Pending);
                row.attempts = row.attempts.saturating_sub(1);
            }
            Settle::Release {
                backoff_seconds,
                reason,
            } => {
                row.delivery = Some(DeliveryState::Pending);
                let more = row.more();
                more.not_before = Some(now() + backoff_seconds);
                more.reason = Some(reason.to_owned());
            }
            Settle::Dead { reason } => {
                row.delivery = Some(DeliveryState::Dead);
                row.more().reason = Some(reason.to_owned());
                state.park(seq);
            }
        }
        Ok(true)
    }

    fn renew(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        lease_seconds: f64,
    ) -> Result<bool, LedgerError> {
        let now = self.now();
        let mut state = self.lock();
        let holder = state.known_owner(token.owner);
        match state.claimed_mut(seq, token, holder) {
            Some(row) => {
                row.more().lease_until = Some(now + lease_seconds);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn rows(&self, query: &RowQuery) -> Result<Vec<LedgerRow>, LedgerError> {
        let state = self.lock();
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let owners = &state.owners;
        let mut rows: Vec<LedgerRow> = state
            .running()
            .map(|running| running.to_row(owners))
            .collect();
        if !query.running_only {
            rows.extend(
                state
                    .all_rows()
                    .into_iter()
                    .filter_map(|(seq, row)| row.to_row(seq, owners)),
            );
        }
        rows.sort_unstable_by_key(|row| row.seq);
        Ok(rows
            .into_iter()
            .filter(|row| {
                query.delivery.is_none_or(|d| row.delivery == Some(d))
                    && query.owner.as_ref().is_none_or(|o| row.owner == *o)
                    && query
                        .session_key
                        .as_ref()
                        .is_none_or(|k| row.session_key == *k)
                    && query
                        .delegation_id
                        .as_ref()
                        .is_none_or(|id| row.delegation_id.as_ref() == Some(id))
            })
            .take(limit)
            .collect())
    }

    fn owners(&self) -> Result<Vec<String>, LedgerError> {
        let state = self.lock();
        let mut owners: BTreeSet<Owner> = state.running().map(|running| running.owner).collect();
        for row in state
            .open_rows(0)
            .map(|(_, row)| row)
            .chain(state.parked.values())
        {
            if row.delivery == Some(DeliveryState::Pending) && !row.restored {
                owners.insert(row.owner);
            }
            if let Some(claimer) = row.claimed_by() {
                owners.insert(claimer);
            }
        }
        Ok(owners
            .into_iter()
            .filter_map(|owner| state.owners.get(owner as usize))
            .map(|name| name.to_string())
            .collect())
    }

    fn adopt_orphans(&self, owner: &str) -> Result<u64, LedgerError> {
        let mut state = self.lock();
        let Some(owner) = state.known_owner(owner) else {
            return Ok(0);
        };
        let mut changed = 0;
        // Only open rows are pending or claimed.
        for row in state.open.rows_mut() {
            let mut touched = false;
            if row.delivery == Some(DeliveryState::Claimed) && row.claimed_by() == Some(owner) {
                row.reclaim();
                touched = true;
            }
            if row.owner == owner
                && matches!(
                    row.delivery,
                    Some(DeliveryState::Pending | DeliveryState::Claimed)
                )
                && !row.restored
            {
                row.restored = true;
                touched = true;
            }
            changed += u64::from(touched);
        }
        Ok(changed)
    }

    fn expire_pending(&self, completed_before: f64, reason: &str) -> Result<u64, LedgerError> {
        let mut state = self.lock();
        let expired: Vec<u64> = state
            .open_rows(0)
            .filter(|(_, row)| {
                row.delivery == Some(DeliveryState::Pending)
                    && row.restored
                    && row.completed_at.is_some_and(|t| t < completed_before)
            })
            .map(|(seq, _)| seq)
            .collect();
        for &seq in &expired {
            if let Some(row) = state.get_mut(seq) {
                row.delivery = Some(DeliveryState::Dead);
                row.more().reason = Some(reason.to_owned());
            }
            state.park(seq);
        }
        Ok(expired.len() as u64)
    }

    fn requeue(&self, seq: u64) -> Result<bool, LedgerError> {
        let mut state = self.lock();
        match state.parked.get_mut(&seq) {
            Some(row) if row.delivery == Some(DeliveryState::Dead) => {
                row.delivery = Some(DeliveryState::Pending);
                row.attempts = 0;
                if let Some(more) = &mut row.more {
                    more.not_before = None;
                }
                state.unpark(seq);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn prune_delivered(&self, _delivered_before: f64) -> Result<u64, LedgerError> {
        // Delivered rows are dropped at once.
        Ok(0)
    }

    fn count_undelivered(&self) -> Result<u64, LedgerError> {
        Ok(u64::try_from(self.lock().open.len()).unwrap_or(u64::MAX))
    }

    fn acquire_scope(
        &self,
        scope: &str,
        holder: &str,
        lease_seconds: f64,
    ) -> Result<Option<u64>, LedgerError> {
        let now = self.now();
        let mut guard = self.lock();
        let me = self.owner(&mut guard, holder);
        let state = &mut *guard;
        let until = now + lease_seconds;
        let Some(lease) = state.leases.get_mut(scope) else {
            state.leases.insert(
                scope.to_owned(),
                Lease {
                    holder: Some(me),
                    epoch: 1,
                    lease_until: until,
                },
            );
            return Ok(Some(1));
        };
        if lease.holder == Some(me) {
            lease.lease_until = until;
            return Ok(Some(lease.epoch));
        }
        if lease.holder.is_some() && lease.lease_until > now {
            return Ok(None);
        }
        lease.holder = Some(me);
        lease.epoch += 1;
        lease.lease_until = until;
        let epoch = lease.epoch;
        state.reclaim_stale(scope, epoch);
        Ok(Some(epoch))
    }

    fn release_scope(&self, scope: &str, holder: &str, epoch: u64) -> Result<bool, LedgerError> {
        let now = self.now();
        let mut guard = self.lock();
        let me = guard.known_owner(holder);
        let state = &mut *guard;
        match state.leases.get_mut(scope) {
            Some(lease) if me.is_some() && lease.holder == me && lease.epoch == epoch => {
                lease.holder = None;
                // Over now: when it was released, so a fleet can forget it in time.
                lease.lease_until = lease.lease_until.min(now);
                // Every claim under it, this epoch's too: the next holder's at once.
                state.reclaim_stale(scope, u64::MAX);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn scope_leases(&self) -> Result<Vec<ScopeLease>, LedgerError> {
        let state = self.lock();
        Ok(state
            .leases
            .iter()
            .map(|(scope, lease)| ScopeLease {
                scope: scope.clone(),
                holder: lease
                    .holder
                    .map_or("", |holder| owner_name(&state.owners, holder))
                    .to_owned(),
                epoch: lease.epoch,
                lease_until: lease.lease_until,
            })
            .collect())
    }

    fn claim_fenced(
        &self,
        seq: u64,
        claim: NewClaim<'_>,
        fence: Fence<'_>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        Ok(self.claim_row(seq, &claim, Some(fence), None))
    }
}

/// `true` when `row` is claimed under exactly `token`, whose instance is `holder`.
fn holds(row: &Row, token: ClaimToken<'_>, holder: Option<Owner>) -> bool {
    row.delivery == Some(DeliveryState::Claimed)
        && row
            .claim()
            .is_some_and(|(id, owner)| id == token.id && Some(owner) == holder)
}

/// `true` unless `row`'s claim was fenced by a lease of `leases` that has changed hands
/// since.
fn fence_holds(leases: &BTreeMap<String, Lease>, row: &Row) -> bool {
    let Some((scope, epoch)) = row.fence() else {
        return true;
    };
    leases.get(scope).is_some_and(|lease| {
        lease.epoch == epoch && lease.holder.is_some() && lease.holder == row.claimed_by()
    })
}

impl State {
    /// Row `seq`, when it is claimed under exactly `token` (of instance `holder`) and the
    /// ownership it was claimed under, if any, has not changed hands (one look-up).
    fn claimed_mut(
        &mut self,
        seq: u64,
        token: ClaimToken<'_>,
        holder: Option<Owner>,
    ) -> Option<&mut Row> {
        let index = self.open.index_of(seq)?;
        let leases = &self.leases;
        let (_, row) = self.open.at_mut(index)?;
        (holds(row, token, holder) && fence_holds(leases, row)).then_some(row)
    }
}
