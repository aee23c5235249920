//! Claims: what a consumer holds while it delivers a completion, and which completions a
//! consumer claims.

use std::fmt;
use std::sync::Arc;

use super::backend::{CandidateQuery, ClaimedRow, SessionMatch, Settle};
use crate::queue::Core;
use crate::{
    AsyncDelegationEvent, Event, ProcessCompletion, SettleError, WatchDisabled, WatchMatch,
    WatchOverflow,
};

type EventPredicate = Arc<dyn Fn(&Event) -> bool + Send + Sync>;
type ScopeOf = Arc<dyn Fn(&Event) -> Option<String> + Send + Sync>;

/// What a [`ClaimFilter::fenced`] filter claims under.
#[derive(Clone)]
pub(crate) struct Fenced {
    pub(crate) ownership: crate::Ownership,
    pub(crate) scope_of: ScopeOf,
}

/// Which completions a consumer claims.
///
/// A consumer claims only what it owns, so consumers never take (and put back) each
/// other's events: the CLI loop its CLI-origin completions, a gateway the completions
/// routed to its chats, a watch drain the watch events. Completions *restored* after a
/// restart (their writer died while they waited) are claimed only by a filter that says
/// [`including_restored`](Self::including_restored): a consumer that can prove it owns
/// their session, never an unfiltered drain.
///
/// ```
/// use process_registry::{AsyncDelegationEvent, ClaimFilter, CompletionQueue};
///
/// let queue = CompletionQueue::new();
/// queue.put(AsyncDelegationEvent { session_key: "agent:main:telegram:dm:1".into(), ..Default::default() });
/// queue.put(AsyncDelegationEvent::default()); // CLI origin
///
/// let claim = queue.claim(&ClaimFilter::cli_completions())?.expect("the CLI's own");
/// assert_eq!(claim.event().session_key(), Some(""));
/// claim.ack()?;
/// assert!(queue.claim(&ClaimFilter::cli_completions())?.is_none(), "the routed one is not the CLI's");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ClaimFilter {
    kinds: Vec<&'static str>,
    except_kinds: Vec<&'static str>,
    sessions: Sessions,
    restored: bool,
    predicate: Option<EventPredicate>,
    fenced: Option<Fenced>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sessions {
    Any,
    Cli,
    Routed,
    Keys(Vec<String>),
}

const WATCH_KINDS: &[&str] = &[
    WatchMatch::TYPE,
    WatchDisabled::TYPE,
    WatchOverflow::TRIPPED,
    WatchOverflow::RELEASED,
];

impl fmt::Debug for ClaimFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimFilter")
            .field("kinds", &self.kinds)
            .field("except_kinds", &self.except_kinds)
            .field("sessions", &self.sessions)
            .field("restored", &self.restored)
            .field("predicate", &self.predicate.is_some())
            .field("fenced", &self.fenced.is_some())
            .finish()
    }
}

impl ClaimFilter {
    /// Every event, of any type and session — except restored ones. What the plain
    /// queue API (`try_take`, `take_timeout`, `drain`, …) takes.
    pub const fn any() -> Self {
        ClaimFilter {
            kinds: Vec::new(),
            except_kinds: Vec::new(),
            sessions: Sessions::Any,
            restored: false,
            predicate: None,
            fenced: None,
        }
    }

    /// `async_delegation` completions dispatched from a CLI session (empty session key),
    /// which no gateway routes: what a CLI loop claims while its parent is idle.
    pub fn cli_completions() -> Self {
        ClaimFilter {
            kinds: vec![AsyncDelegationEvent::TYPE],
            sessions: Sessions::Cli,
            ..Self::any()
        }
    }

    /// Completions that carry a session key — `async_delegation` and process
    /// `completion` events — which a gateway routes back to their chats.
    pub fn routed() -> Self {
        ClaimFilter {
            kinds: vec![AsyncDelegationEvent::TYPE, ProcessCompletion::TYPE],
            sessions: Sessions::Routed,
            ..Self::any()
        }
    }

    /// The watch events (`watch_match`, `watch_disabled`, both overflow events).
    pub fn watch_events() -> Self {
        ClaimFilter {
            kinds: WATCH_KINDS.to_vec(),
            ..Self::any()
        }
    }

    /// Events of these sessions only.
    pub fn sessions<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClaimFilter {
            sessions: Sessions::Keys(keys.into_iter().map(Into::into).collect()),
            ..Self::any()
        }
    }

    /// Only events of these wire types.
    pub fn of_kinds(mut self, kinds: &[&'static str]) -> Self {
        self.kinds = kinds.to_vec();
        self
    }

    /// Never events of these wire types.
    pub fn except_kinds(mut self, kinds: &[&'static str]) -> Self {
        self.except_kinds = kinds.to_vec();
        self
    }

    /// Also claims completions restored after a restart: for a consumer that owns the
    /// sessions it claims (a router serving their platform, a CLI resuming its session).
    pub fn including_restored(mut self) -> Self {
        self.restored = true;
        self
    }

    /// Only events for which `wanted` is true (checked after the other conditions). It is
    /// the caller's code: it must be cheap, and a panic in it reaches the caller (no
    /// event is claimed by a call whose predicate panicked). The stores of this crate ask
    /// it with no lock of theirs held, on candidates they read first, so it may read the
    /// queue (a store of your own may hold a lock while it asks: see
    /// [`LedgerBackend::claim_next_accepted`](crate::LedgerBackend::claim_next_accepted)).
    pub fn where_event(mut self, wanted: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(wanted));
        self
    }

    /// Claims under `ownership`: a completion whose scope (`scope_of`: `None` for one that
    /// belongs to no scope) is held by `ownership` is claimed fenced by that lease
    /// ([`LedgerBackend::claim_fenced`](crate::LedgerBackend::claim_fenced)), one whose
    /// scope is not held is left to its owner, and one of no scope is claimed as usual.
    /// `scope_of` is the caller's code, under the same rules as
    /// [`where_event`](Self::where_event)'s predicate (asked after it). A fenced claim whose
    /// scope changed hands before its decision fails with
    /// [`SettleError::ClaimLost`](crate::SettleError::ClaimLost).
    ///
    /// ```
    /// use std::time::Duration;
    /// use process_registry::{AsyncDelegationEvent, ClaimFilter, CompletionQueue, Event, Ownership};
    ///
    /// let queue = CompletionQueue::new();
    /// let ownership = Ownership::start(&queue, Duration::from_secs(30))?;
    /// ownership.want("platform:telegram");
    /// ownership.renew_now()?;
    /// let platform = |event: &Event| {
    ///     let key = event.session_key()?;
    ///     Some(format!("platform:{}", key.split(':').nth(2)?))
    /// };
    /// let filter = ClaimFilter::routed().fenced(&ownership, platform);
    /// queue.put(AsyncDelegationEvent { session_key: "agent:main:slack:dm:1".into(), ..Default::default() });
    /// assert!(queue.claim(&filter)?.is_none(), "slack is someone else's");
    /// queue.put(AsyncDelegationEvent { session_key: "agent:main:telegram:dm:1".into(), ..Default::default() });
    /// queue.claim(&filter)?.expect("telegram is ours").ack()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fenced(
        mut self,
        ownership: &crate::Ownership,
        scope_of: impl Fn(&Event) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.fenced = Some(Fenced {
            ownership: ownership.clone(),
            scope_of: Arc::new(scope_of),
        });
        self
    }

    /// The ownership a [`fenced`](Self::fenced) filter claims under.
    pub(crate) fn fence(&self) -> Option<&Fenced> {
        self.fenced.as_ref()
    }

    /// `true` when this filter has a [`where_event`](Self::where_event) predicate.
    pub fn has_predicate(&self) -> bool {
        self.predicate.is_some()
    }

    /// `true` when this filter claims restored completions.
    pub fn includes_restored(&self) -> bool {
        self.restored
    }

    pub(crate) fn query(&self, after_seq: u64) -> CandidateQuery<'_> {
        CandidateQuery {
            kinds: &self.kinds,
            except_kinds: &self.except_kinds,
            sessions: match &self.sessions {
                Sessions::Any => SessionMatch::Any,
                Sessions::Cli => SessionMatch::Cli,
                Sessions::Routed => SessionMatch::Routed,
                Sessions::Keys(keys) => SessionMatch::Keys(keys),
            },
            restored: self.restored,
            after_seq,
        }
    }

    /// The [`where_event`](Self::where_event) predicate, if any.
    pub(crate) fn predicate(&self) -> Option<&(dyn Fn(&Event) -> bool + Send + Sync)> {
        self.predicate.as_deref()
    }

    pub(crate) fn accepts(&self, event: &Event) -> bool {
        self.predicate.as_ref().is_none_or(|wanted| wanted(event))
    }
}

/// [`ClaimFilter::any`], built once: what the plain queue API takes with.
pub(crate) static ANY: ClaimFilter = ClaimFilter::any();

impl Default for ClaimFilter {
    fn default() -> Self {
        Self::any()
    }
}

/// How a [`Claim::release`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Offered again after this backoff.
    Retry {
        /// The backoff.
        after: std::time::Duration,
    },
    /// That was the last attempt: the completion is dead, with the reason.
    Dead,
}

/// A completion a consumer holds while it delivers it: exactly one of
/// [`ack`](Self::ack), [`defer`](Self::defer), [`release`](Self::release) or
/// [`dead`](Self::dead) ends it. Dropping it undecided is a release.
///
/// Every decision names the claim (a fencing id): after the lease ran out and someone
/// else claimed the completion, the decision fails with [`SettleError::ClaimLost`].
///
/// Deliver with [`key`](Self::key) as the idempotency key, and tell the receiving end
/// when [`is_possible_redelivery`](Self::is_possible_redelivery): the promise is
/// at-least-once delivery with a stable key — exactly once unless a process dies between
/// delivering and acknowledging.
pub struct Claim {
    pub(crate) core: Arc<Core>,
    pub(crate) row: ClaimedRow,
    pub(crate) claim_id: u64,
    pub(crate) settled: bool,
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("key", &self.key())
            .field("attempt", &self.row.attempts)
            .field("possible_redelivery", &self.row.possible_redelivery)
            .field("restored", &self.row.restored)
            .field("event", &self.row.event.type_name())
            .finish_non_exhaustive()
    }
}

impl Claim {
    /// The completion.
    pub fn event(&self) -> &Event {
        &self.row.event
    }

    /// The completion, shared: the same event the ledger holds for the row, never a copy
    /// (what a consumer keeps past the claim's decision, as a gateway's message does).
    pub fn shared_event(&self) -> Arc<Event> {
        Arc::clone(&self.row.event)
    }

    /// The idempotency key: the `delegation_id` of a delegation, else `event-{seq}`, a
    /// key the ledger made for the event. Stable across redeliveries.
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        match &self.row.delegation_id {
            Some(id) => std::borrow::Cow::Borrowed(id),
            None => std::borrow::Cow::Owned(format!("event-{}", self.row.seq)),
        }
    }

    /// The delegation's id, for completions the engine recorded.
    pub fn delegation_id(&self) -> Option<&str> {
        self.row.delegation_id.as_deref()
    }

    /// This claim's attempt number (1 for the first claim; a deferral gives its attempt
    /// back).
    pub fn attempt(&self) -> u32 {
        self.row.attempts
    }

    /// `true` when an earlier claim may already have delivered this completion (its
    /// lease ran out undecided, or its process died between delivering and acking).
    pub fn is_possible_redelivery(&self) -> bool {
        self.row.possible_redelivery
    }

    /// `true` for a completion restored after a restart (the instance that wrote it died
    /// while it waited). The flag lives in the claim, never in the event.
    pub fn is_restored(&self) -> bool {
        self.row.restored
    }

    /// Delivered: the row becomes `delivered`. Returns the event, shared (a row that is
    /// not retained leaves it to the claim and to whoever shares it:
    /// [`Arc::unwrap_or_clone`] takes it out uncopied when nothing else does).
    ///
    /// # Errors
    /// [`SettleError::ClaimLost`] when the lease ran out and the row was claimed again;
    /// [`SettleError::Ledger`] when the store could not record it (the lease then runs
    /// out and the completion is offered again, as a possible redelivery).
    pub fn ack(mut self) -> Result<Arc<Event>, SettleError> {
        self.settle(Settle::Ack)?;
        // Taken out so this claim holds no reference to it.
        Ok(std::mem::replace(&mut self.row.event, placeholder()))
    }

    /// Acks, and hands the event over whatever the store answered (the plain queue API:
    /// a failed ack leaves the lease to run out, and the completion is offered again).
    pub(crate) fn ack_taking(mut self) -> (Result<(), SettleError>, Event) {
        let settled = self.settle(Settle::Ack);
        let event = std::mem::replace(&mut self.row.event, placeholder());
        (
            settled,
            Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone()),
        )
    }

    /// Not now (the session is busy, its adapter is not registered yet): back to
    /// pending at once, and the attempt is given back.
    ///
    /// # Errors
    /// As [`ack`](Self::ack).
    pub fn defer(mut self) -> Result<(), SettleError> {
        self.settle(Settle::Defer)
    }

    /// A failed attempt: back to pending after a capped exponential backoff — or dead,
    /// when it was the last attempt ([`LedgerConfig::max_attempts`](crate::LedgerConfig)).
    ///
    /// # Errors
    /// As [`ack`](Self::ack).
    pub fn release(mut self, reason: &str) -> Result<Released, SettleError> {
        self.release_inner(reason)
    }

    /// Given up on: the row becomes dead with `reason`, kept until an operator requeues
    /// it.
    ///
    /// # Errors
    /// As [`ack`](Self::ack).
    pub fn dead(mut self, reason: &str) -> Result<(), SettleError> {
        self.settle(Settle::Dead { reason })
    }

    /// Extends the lease by another full lease from now, for a delivery that takes long.
    ///
    /// # Errors
    /// As [`ack`](Self::ack).
    pub fn renew(&self) -> Result<(), SettleError> {
        let lease = self.core.config.lease.as_secs_f64();
        match self.core.backend.renew(self.row.seq, self.token(), lease)? {
            true => Ok(()),
            false => Err(SettleError::ClaimLost),
        }
    }

    fn token(&self) -> crate::ClaimToken<'_> {
        crate::ClaimToken {
            id: self.claim_id,
            owner: &self.core.instance,
        }
    }

    fn release_inner(&mut self, reason: &str) -> Result<Released, SettleError> {
        let attempt = self.row.attempts;
        if attempt >= self.core.config.max_attempts {
            let reason = format!("gave up after {attempt} attempts: {reason}");
            self.settle(Settle::Dead { reason: &reason })?;
            return Ok(Released::Dead);
        }
        let after = self.core.config.backoff(attempt);
        self.settle(Settle::Release {
            backoff_seconds: after.as_secs_f64(),
            reason,
        })?;
        Ok(Released::Retry { after })
    }

    fn settle(&mut self, settle: Settle<'_>) -> Result<(), SettleError> {
        // Decided, whatever the store answers: a failed write leaves the lease to expire.
        self.settled = true;
        let settled = self
            .core
            .backend
            .settle(self.row.seq, self.token(), settle)?;
        if !settled {
            return Err(SettleError::ClaimLost);
        }
        if matches!(settle, Settle::Ack | Settle::Dead { .. }) {
            self.core.pending.add(-1);
        }
        if !matches!(settle, Settle::Ack) {
            // Back to pending (or dead): waiting consumers look again.
            self.core.wake_all();
        }
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            if let Err(error) =
                self.release_inner("the consumer dropped its claim without a decision")
            {
                // The lease brings the completion back anyway.
                tracing::warn!(%error, key = %self.key(), "releasing a dropped claim failed");
            }
        }
    }
}

/// What a settled claim holds in place of the event it handed out.
fn placeholder() -> Arc<Event> {
    static PLACEHOLDER: std::sync::OnceLock<Arc<Event>> = std::sync::OnceLock::new();
    Arc::clone(
        PLACEHOLDER.get_or_init(|| Arc::new(Event::WatchOverflowTripped(WatchOverflow::default()))),
    )
}
