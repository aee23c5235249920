//! `MemoryLedger`: the default backend. Nothing survives the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::backend::{
    Candidate, CandidateQuery, Capabilities, ClaimToken, ClaimedRow, DeliveryState, Finish,
    Inserted, LedgerBackend, LedgerRow, NewClaim, NewPending, NewRunning, RowQuery, RunState,
    SessionMatch, Settle,
};
use super::clock::{Clock, SystemClock};
use crate::{Event, LedgerError};

/// The in-memory ledger: rows in a map under one mutex. Nothing survives the process,
/// and a delivered row is dropped at once, so memory stays flat.
///
/// This is what [`CompletionQueue::new`](crate::CompletionQueue::new) runs on.
pub struct MemoryLedger {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryLedger")
            .field("rows", &state.rows.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    next_seq: u64,
    rows: BTreeMap<u64, Row>,
    by_id: HashMap<String, u64>,
    /// Pending and claimed rows: the only ones a claim can take.
    open: BTreeSet<u64>,
    /// The instances seen, shared by their rows (usually one).
    owners: Vec<Arc<str>>,
}

/// A row. Its kind and session key are read off its event; its key is its delegation id
/// or `event-{seq}`: nothing is stored twice.
struct Row {
    delegation_id: Option<String>,
    run_state: Option<RunState>,
    delivery: Option<DeliveryState>,
    attempts: u32,
    reason: Option<String>,
    owner: Arc<str>,
    claim: Option<(u64, Arc<str>)>,
    restored: bool,
    possible_redelivery: bool,
    created_at: f64,
    completed_at: Option<f64>,
    delivered_at: Option<f64>,
    not_before: Option<f64>,
    lease_until: Option<f64>,
    event: Arc<Event>,
}

impl Row {
    fn kind(&self) -> &str {
        self.event.type_name()
    }

    fn session_key(&self) -> &str {
        self.event.session_key().unwrap_or("")
    }

    fn key(&self, seq: u64) -> String {
        match &self.delegation_id {
            Some(id) => id.clone(),
            None => format!("event-{seq}"),
        }
    }

    fn claimed_by(&self) -> Option<&str> {
        self.claim.as_ref().map(|(_, owner)| &**owner)
    }

    /// Whether a claim can take this row now. `now` is read only when a deadline has to
    /// be compared: the common row (pending, no backoff) needs no clock.
    fn claimable(&self, now: &mut impl FnMut() -> f64) -> bool {
        match self.delivery {
            Some(DeliveryState::Pending) => self.not_before.is_none_or(|t| t <= now()),
            Some(DeliveryState::Claimed) => self.lease_until.is_some_and(|t| t <= now()),
            _ => false,
        }
    }

    fn matches(&self, query: &CandidateQuery<'_>) -> bool {
        let kind = self.kind();
        (query.kinds.is_empty() || query.kinds.contains(&kind))
            && !query.except_kinds.contains(&kind)
            && (query.restored || !self.restored)
            && match query.sessions {
                SessionMatch::Any => true,
                SessionMatch::Cli => self.session_key().is_empty(),
                SessionMatch::Routed => !self.session_key().is_empty(),
                SessionMatch::Keys(keys) => keys.iter().any(|k| k == self.session_key()),
            }
    }

    fn to_row(&self, seq: u64) -> LedgerRow {
        LedgerRow {
            seq,
            key: self.key(seq),
            delegation_id: self.delegation_id.clone(),
            kind: self.kind().to_owned(),
            session_key: self.session_key().to_owned(),
            run_state: self.run_state.clone(),
            delivery: self.delivery,
            attempts: self.attempts,
            reason: self.reason.clone(),
            owner: self.owner.to_string(),
            claimed_by: self.claimed_by().map(str::to_owned),
            restored: self.restored,
            possible_redelivery: self.possible_redelivery,
            created_at: self.created_at,
            completed_at: self.completed_at,
            delivered_at: self.delivered_at,
            not_before: self.not_before,
            lease_until: self.lease_until,
            event: Arc::clone(&self.event),
        }
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
        MemoryLedger {
            state: Mutex::new(State::default()),
            clock,
        }
    }

    /// The clock, read at most once and only when asked.
    fn lazy_now(&self) -> impl FnMut() -> f64 + '_ {
        let mut read = None;
        move || *read.get_or_insert_with(|| self.clock.now())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change below is a few field writes with no user code: a poisoned lock
        // still holds consistent rows.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The shared copy of an instance id.
    fn owner(&mut self, owner: &str) -> Arc<str> {
        if let Some(known) = self.owners.iter().find(|known| &***known == owner) {
            return Arc::clone(known);
        }
        let owner: Arc<str> = Arc::from(owner);
        self.owners.push(Arc::clone(&owner));
        owner
    }

    fn insert(&mut self, row: Row) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(id) = &row.delegation_id {
            self.by_id.insert(id.clone(), seq);
        }
        if matches!(
            row.delivery,
            Some(DeliveryState::Pending | DeliveryState::Claimed)
        ) {
            self.open.insert(seq);
        }
        self.rows.insert(seq, row);
        seq
    }

    fn remove(&mut self, seq: u64) {
        if let Some(row) = self.rows.remove(&seq) {
            if let Some(id) = &row.delegation_id {
                self.by_id.remove(id);
            }
        }
        self.open.remove(&seq);
    }
}

impl LedgerBackend for MemoryLedger {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: false,
            retains_delivered: false,
            shared_between_processes: false,
        }
    }

    fn now(&self) -> f64 {
        self.clock.now()
    }

    fn insert_running(&self, new: NewRunning<'_>) -> Result<Inserted, LedgerError> {
        let now = self.now();
        let mut state = self.lock();
        if state.by_id.contains_key(new.delegation_id) {
            return Ok(Inserted::IdTaken);
        }
        let owner = state.owner(new.owner);
        let seq = state.insert(Row {
            delegation_id: Some(new.delegation_id.to_owned()),
            run_state: Some(RunState::Running),
            delivery: None,
            attempts: 0,
            reason: None,
            owner,
            claim: None,
            restored: false,
            possible_redelivery: false,
            created_at: now,
            completed_at: None,
            delivered_at: None,
            not_before: None,
            lease_until: None,
            event: new.skeleton,
        });
        Ok(Inserted::Row(seq))
    }

    fn insert_pending(&self, new: NewPending<'_>) -> Result<u64, LedgerError> {
        let now = self.now();
        let mut state = self.lock();
        let owner = state.owner(new.owner);
        Ok(state.insert(Row {
            delegation_id: None,
            run_state: None,
            delivery: Some(DeliveryState::Pending),
            attempts: 0,
            reason: None,
            owner,
            claim: None,
            restored: false,
            possible_redelivery: false,
            created_at: now,
            completed_at: Some(now),
            delivered_at: None,
            not_before: None,
            lease_until: None,
            event: new.event,
        }))
    }

    fn finish_run(&self, finish: Finish<'_>) -> Result<Option<u64>, LedgerError> {
        let now = self.now();
        let mut state = self.lock();
        let Some(&seq) = state.by_id.get(finish.delegation_id) else {
            return Ok(None);
        };
        let Some(row) = state.rows.get_mut(&seq) else {
            return Ok(None);
        };
        let owner_ok = finish.expect_owner.is_none_or(|owner| &*row.owner == owner);
        if row.run_state != Some(RunState::Running) || !owner_ok {
            return Ok(None);
        }
        row.run_state = Some(finish.run_state.clone());
        row.delivery = Some(DeliveryState::Pending);
        row.event = finish.event;
        row.reason = finish.reason.map(str::to_owned);
        row.completed_at = Some(now);
        // To the tail: offered in the order the runs finished.
        let Some(row) = state.rows.remove(&seq) else {
            return Ok(None);
        };
        Ok(Some(state.insert(row)))
    }

    fn retract_running(&self, delegation_id: &str, owner: &str) -> Result<bool, LedgerError> {
        let mut state = self.lock();
        let Some(&seq) = state.by_id.get(delegation_id) else {
            return Ok(false);
        };
        let running = state
            .rows
            .get(&seq)
            .is_some_and(|row| row.run_state == Some(RunState::Running) && &*row.owner == owner);
        if running {
            state.remove(seq);
        }
        Ok(running)
    }

    fn candidates(
        &self,
        query: &CandidateQuery<'_>,
        limit: usize,
    ) -> Result<Vec<Candidate>, LedgerError> {
        let mut now = self.lazy_now();
        let state = self.lock();
        let start = query.after_seq.saturating_add(1);
        Ok(state
            .open
            .range(start..)
            .filter_map(|seq| state.rows.get(seq).map(|row| (*seq, row)))
            .filter(|(_, row)| row.matches(query) && row.claimable(&mut now))
            .take(limit)
            .map(|(seq, row)| Candidate {
                seq,
                event: Arc::clone(&row.event),
            })
            .collect())
    }

    fn count_candidates(&self, query: &CandidateQuery<'_>) -> Result<usize, LedgerError> {
        let mut now = self.lazy_now();
        let state = self.lock();
        Ok(state
            .open
            .range(query.after_seq.saturating_add(1)..)
            .filter_map(|seq| state.rows.get(seq))
            .filter(|row| row.matches(query) && row.claimable(&mut now))
            .count())
    }

    fn next_due(&self, query: &CandidateQuery<'_>) -> Result<Option<f64>, LedgerError> {
        let now = self.now();
        let state = self.lock();
        Ok(state
            .open
            .iter()
            .filter_map(|seq| state.rows.get(seq))
            .filter(|row| row.matches(query))
            .filter_map(|row| match row.delivery {
                Some(DeliveryState::Pending) => row.not_before,
                Some(DeliveryState::Claimed) => row.lease_until,
                _ => None,
            })
            .filter(|t| *t > now)
            .reduce(f64::min))
    }

    fn claim(&self, seq: u64, claim: NewClaim<'_>) -> Result<Option<ClaimedRow>, LedgerError> {
        let now = self.now();
        let mut state = self.lock();
        let claimer = state.owner(claim.token.owner);
        let Some(row) = state.rows.get_mut(&seq) else {
            return Ok(None);
        };
        if !row.claimable(&mut || now) {
            return Ok(None);
        }
        if row.delivery == Some(DeliveryState::Claimed) {
            // The previous claim's lease ran out undecided: it may have delivered.
            row.possible_redelivery = true;
        }
        row.delivery = Some(DeliveryState::Claimed);
        row.claim = Some((claim.token.id, claimer));
        row.lease_until = Some(now + claim.lease_seconds);
        row.not_before = None;
        row.attempts = row.attempts.saturating_add(1);
        Ok(Some(ClaimedRow {
            seq,
            delegation_id: row.delegation_id.clone(),
            event: Arc::clone(&row.event),
            attempts: row.attempts,
            possible_redelivery: row.possible_redelivery,
            restored: row.restored,
        }))
    }

    fn take_next(&self, query: &CandidateQuery<'_>) -> Result<Option<ClaimedRow>, LedgerError> {
        let mut now = self.lazy_now();
        let mut state = self.lock();
        let start = query.after_seq.saturating_add(1);
        let Some(seq) = state.open.range(start..).copied().find(|seq| {
            state
                .rows
                .get(seq)
                .is_some_and(|row| row.matches(query) && row.claimable(&mut now))
        }) else {
            return Ok(None);
        };
        let Some(row) = state.rows.remove(&seq) else {
            return Ok(None);
        };
        state.open.remove(&seq);
        if let Some(id) = &row.delegation_id {
            state.by_id.remove(id);
        }
        // Not retained: delivered at once, as a taken event always was.
        Ok(Some(ClaimedRow {
            seq,
            possible_redelivery: row.possible_redelivery
                || row.delivery == Some(DeliveryState::Claimed),
            attempts: row.attempts.saturating_add(1),
            restored: row.restored,
            delegation_id: row.delegation_id,
            event: row.event,
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
        let Some(row) = state.rows.get_mut(&seq) else {
            return Ok(false);
        };
        if row.delivery != Some(DeliveryState::Claimed) || !holds(row, token) {
            return Ok(false);
        }
        row.claim = None;
        row.lease_until = None;
        match settle {
            Settle::Ack => {
                // Not retained: a delivered row is gone, as a taken event always was.
                state.remove(seq);
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
                row.not_before = Some(now() + backoff_seconds);
                row.reason = Some(reason.to_owned());
            }
            Settle::Dead { reason } => {
                row.delivery = Some(DeliveryState::Dead);
                row.reason = Some(reason.to_owned());
                state.open.remove(&seq);
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
        match state.rows.get_mut(&seq) {
            Some(row) if row.delivery == Some(DeliveryState::Claimed) && holds(row, token) => {
                row.lease_until = Some(now + lease_seconds);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn rows(&self, query: &RowQuery) -> Result<Vec<LedgerRow>, LedgerError> {
        let state = self.lock();
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        Ok(state
            .rows
            .iter()
            .filter(|(_, row)| {
                (!query.running_only || row.run_state == Some(RunState::Running))
                    && query.delivery.is_none_or(|d| row.delivery == Some(d))
                    && query.owner.as_ref().is_none_or(|o| &*row.owner == o)
                    && query
                        .session_key
                        .as_ref()
                        .is_none_or(|k| row.session_key() == k)
                    && query
                        .delegation_id
                        .as_ref()
                        .is_none_or(|id| row.delegation_id.as_ref() == Some(id))
            })
            .take(limit)
            .map(|(seq, row)| row.to_row(*seq))
            .collect())
    }

    fn owners(&self) -> Result<Vec<String>, LedgerError> {
        let state = self.lock();
        let mut owners = BTreeSet::new();
        for row in state.rows.values() {
            if row.run_state == Some(RunState::Running)
                || (row.delivery == Some(DeliveryState::Pending) && !row.restored)
            {
                owners.insert(row.owner.to_string());
            }
            if let Some(claimer) = row.claimed_by() {
                owners.insert(claimer.to_owned());
            }
        }
        Ok(owners.into_iter().collect())
    }

    fn adopt_orphans(&self, owner: &str) -> Result<u64, LedgerError> {
        let mut state = self.lock();
        let mut changed = 0;
        for row in state.rows.values_mut() {
            let mut touched = false;
            if row.delivery == Some(DeliveryState::Claimed) && row.claimed_by() == Some(owner) {
                row.delivery = Some(DeliveryState::Pending);
                row.claim = None;
                row.lease_until = None;
                row.possible_redelivery = true;
                touched = true;
            }
            if &*row.owner == owner
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
            .rows
            .iter()
            .filter(|(_, row)| {
                row.delivery == Some(DeliveryState::Pending)
                    && row.restored
                    && row.completed_at.is_some_and(|t| t < completed_before)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &expired {
            if let Some(row) = state.rows.get_mut(seq) {
                row.delivery = Some(DeliveryState::Dead);
                row.reason = Some(reason.to_owned());
            }
            state.open.remove(seq);
        }
        Ok(expired.len() as u64)
    }

    fn requeue(&self, seq: u64) -> Result<bool, LedgerError> {
        let mut state = self.lock();
        match state.rows.get_mut(&seq) {
            Some(row) if row.delivery == Some(DeliveryState::Dead) => {
                row.delivery = Some(DeliveryState::Pending);
                row.attempts = 0;
                row.not_before = None;
                state.open.insert(seq);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn prune_delivered(&self, _delivered_before: f64) -> Result<u64, LedgerError> {
        // Delivered rows are dropped at once.
        Ok(0)
    }
}

/// `true` when `row` is claimed under exactly `token`.
fn holds(row: &Row, token: ClaimToken<'_>) -> bool {
    row.claim
        .as_ref()
        .is_some_and(|(id, owner)| *id == token.id && &**owner == token.owner)
}
