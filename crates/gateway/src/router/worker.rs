//! The `gateway-delivery` thread: claims the completions this router serves, routes and
//! renders each, and hands it to its adapter — then acks, defers, releases or marks it
//! dead in the completion ledger.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_delegation::fence;
use process_registry::{Claim, ClaimFilter, CompletionQueue, Event, Released, Routing};

use super::{Adapter, AdapterError, InternalMessage, NotificationFormatter, Shared};
use crate::metrics::Outcome;
use crate::routing::{enriched_routing, resolve_source, Known};
use crate::{OriginStore, Platform, SessionKey, SessionSource, Unroutable};

/// The session key of an event the router owns: an `async_delegation` or a process
/// `completion` with a non-empty session key. Everything else — CLI-origin completions
/// (no key, or `""`), watch events, unknown events — is someone else's, and the router
/// never claims it.
pub(super) fn owned_session_key(event: &Event) -> Option<&str> {
    let session_key = match event {
        Event::AsyncDelegation(e) => e.session_key.as_str(),
        Event::Completion(e) => e.session_key.as_deref()?,
        _ => return None,
    };
    (!session_key.is_empty()).then_some(session_key)
}

/// The platform a completion would be delivered on, as far as the event and its key
/// tell (`None`: neither names one). Cheap: checked for every candidate.
pub(super) fn platform_of<'a>(event: &'a Event, session_key: &'a str) -> Option<Cow<'a, str>> {
    if let Event::AsyncDelegation(e) = event {
        if let Some(platform) = e.routing().platform.as_deref().filter(|p| !p.is_empty()) {
            return Some(Cow::Borrowed(platform));
        }
    }
    SessionKey::platform_of(session_key)
}

/// What one look for work judges completions by: the sessions that were busy and the
/// platforms that had an adapter when the look began.
///
/// A look pages through the ledger. Judged by the live state, a turn ending (or an
/// adapter being registered) between two pages would let a session's later completion,
/// on the next page, be claimed before its earlier ones, skipped as busy (or unserved)
/// on the page before: delivered out of order. Judged by one view, a look sees each
/// session one way. Whatever changes after the view is taken wakes the router (its wait
/// is armed before), and the next look sees it.
#[derive(Debug, Default)]
pub(super) struct View {
    pub(super) busy: HashSet<String>,
    pub(super) served: HashSet<Platform>,
}

impl View {
    /// In a fleet, a platform is served only while this router holds its lease.
    pub(super) fn take(shared: &Shared) -> View {
        let owned = |platform: &Platform| {
            shared
                .ownership
                .as_ref()
                .is_none_or(|ownership| ownership.epoch(&platform_scope(platform)).is_some())
        };
        View {
            busy: shared.turns.busy_sessions(),
            served: shared
                .adapters
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .filter(|platform| owned(platform))
                .cloned()
                .collect(),
        }
    }
}

/// The ownership scope of a platform in a fleet: `platform:{name}`.
pub fn platform_scope(platform: &Platform) -> String {
    scope_named(platform.as_str())
}

/// The ownership scope of the platform named `name` (normalized).
fn scope_named(name: &str) -> String {
    format!("platform:{name}")
}

/// The scope a completion belongs to: its platform's, when it names a known one — or one
/// this router does not know but the fleet leases (another router serves it, or did:
/// the completion waits for it). `None`: unroutable, claimed by any router of the fleet
/// to be a dead letter.
fn scope_of(shared: &Shared, event: &Event) -> Option<String> {
    match target(shared, event, |_| false) {
        Target::Platform(platform) => Some(platform_scope(&platform)),
        Target::Unroutable => leased_elsewhere(shared, event),
        Target::NotNow => None,
    }
}

/// The scope of the platform `event` names, when this router does not know it but some
/// router of the fleet has leased it — or when the fleet's leases are not read yet (a
/// router just started waits for that first read, woken by it, rather than make another
/// router's completion a dead letter).
fn leased_elsewhere(shared: &Shared, event: &Event) -> Option<String> {
    let ownership = shared.ownership.as_ref()?;
    let session_key = owned_session_key(event)?;
    let name = platform_of(event, session_key)?;
    let scope = scope_named(&crate::platform::normalize(&name));
    (!ownership.leases_read() || ownership.is_leased(&scope)).then_some(scope)
}

/// Where a completion would go, as far as claiming it is concerned.
pub(super) enum Target {
    /// Not a routed completion, or its session has an open turn: not now.
    NotNow,
    /// Not routable at all (no platform in its key, or one nobody knows): claimed, to be
    /// a dead letter with its reason.
    Unroutable,
    /// A known platform: claimed by whoever serves it (left pending when nobody does).
    Platform(Platform),
}

/// Where `event` would go, its session judged busy by `is_busy`.
pub(super) fn target(shared: &Shared, event: &Event, is_busy: impl Fn(&str) -> bool) -> Target {
    let Some(session_key) = owned_session_key(event) else {
        return Target::NotNow;
    };
    if is_busy(session_key) {
        return Target::NotNow;
    }
    let Some(name) = platform_of(event, session_key) else {
        return Target::Unroutable;
    };
    match shared.platforms.parse(&name) {
        Ok(platform) => Target::Platform(platform),
        Err(_) => Target::Unroutable,
    }
}

/// `true` for a completion this router should claim now (as `view` sees it): its session
/// has no open turn, and it is routable to a platform with an adapter — or not routable
/// at all (the router claims it to make it a dead letter with its reason). A completion
/// for a known platform without an adapter is left pending, for another router or for
/// when its adapter is registered.
fn claimable(shared: &Shared, view: &View, event: &Event) -> bool {
    match target(shared, event, |key| view.busy.contains(key)) {
        Target::NotNow => false,
        Target::Unroutable => true,
        Target::Platform(platform) => {
            let served = view.served.contains(&platform);
            if !served {
                shared.warn_unserved(&platform);
            }
            served
        }
    }
}

/// Claims the next completion `filter` takes, judged by a fresh [`View`] taken just
/// before (so a turn that ends during the look cannot let a session's later completion be
/// claimed before an earlier one that the same look judged busy); counts consecutive
/// failures. What the thread router and the task router look with.
pub(super) fn look(
    shared: &Shared,
    queue: &CompletionQueue,
    filter: &ClaimFilter,
    view: &Mutex<View>,
    failures: &mut u32,
) -> Look {
    *view.lock().unwrap_or_else(PoisonError::into_inner) = View::take(shared);
    match queue.claim(filter) {
        Ok(Some(claim)) => {
            *failures = 0;
            Look::Claimed(claim)
        }
        Ok(None) => {
            *failures = 0;
            Look::Nothing
        }
        Err(error) => {
            *failures += 1;
            tracing::warn!(%error, failures = *failures, "the gateway could not claim completions; retrying");
            Look::Failed
        }
    }
}

/// A router's claim filter, judging each completion with `judge` by the [`View`] a look
/// takes before it claims (the view is returned to be refreshed per look). The router
/// owns the sessions of the platforms it serves: restored completions of those sessions
/// are its to deliver too.
pub(super) fn judged_filter(
    shared: &Arc<Shared>,
    judge: impl Fn(&Shared, &View, &Event) -> bool + Send + Sync + 'static,
) -> (ClaimFilter, Arc<Mutex<View>>) {
    let judging = Arc::clone(shared);
    let view = Arc::new(Mutex::new(View::default()));
    let judged_by = Arc::clone(&view);
    let filter = ClaimFilter::routed()
        .including_restored()
        .where_event(move |event| {
            let view = judged_by.lock().unwrap_or_else(PoisonError::into_inner);
            judge(&judging, &view, event)
        });
    let filter = match &shared.ownership {
        // Claimed under the platform's lease: a router that lost it can no longer ack.
        Some(ownership) => {
            let scoping = Arc::clone(shared);
            filter.fenced(ownership, move |event| scope_of(&scoping, event))
        }
        None => filter,
    };
    (filter, view)
}

/// What a [`DeliveryRouterBuilder`](super::DeliveryRouterBuilder) hands its thread.
pub(super) struct Settings {
    pub(super) queue: CompletionQueue,
    pub(super) origins: Origins,
    pub(super) formatter: NotificationFormatter,
}

/// What the thread router's loop does after a look.
enum Then {
    /// A completion was handled: look again at once.
    LookAgain,
    /// The ledger failed: wait this long (or for a change) before the next look.
    RetryAfter(Duration),
    /// Nothing to claim.
    Wait,
}

/// What one look for work did.
pub(super) enum Look {
    /// Claimed a completion, to be handled.
    Claimed(Claim),
    /// Nothing to claim now.
    Nothing,
    /// The ledger could not be read or written.
    Failed,
}

/// The state owned by the `gateway-delivery` thread.
pub(super) struct Worker {
    shared: Arc<Shared>,
    queue: CompletionQueue,
    origins: Origins,
    formatter: NotificationFormatter,
    filter: ClaimFilter,
    /// The view the filter judges by, taken anew for every look.
    view: Arc<Mutex<View>>,
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>, settings: Settings) -> Self {
        let Settings {
            queue,
            origins,
            formatter,
        } = settings;
        let (filter, view) = judged_filter(&shared, claimable);
        Worker {
            shared,
            queue,
            origins,
            formatter,
            filter,
            view,
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    #[cfg(feature = "tokio")]
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    #[cfg(feature = "tokio")]
    pub(super) fn queue(&self) -> &CompletionQueue {
        &self.queue
    }

    pub(super) fn run(self) {
        let mut failures = 0_u32;
        loop {
            // Armed before looking: a completion, a turn's end, a new adapter or a stop
            // that comes between the look and the wait ends the wait.
            let wait = self.queue.listen();
            if self.stopping() {
                self.shared.drop_adapters();
                return;
            }
            match self.look_and_handle(&mut failures) {
                Then::LookAgain => continue,
                Then::RetryAfter(retry) => {
                    let _ = wait.wait_until(Instant::now() + retry);
                    continue;
                }
                Then::Wait => {}
            }
            let due = match self.queue.next_due(&self.filter) {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "the gateway could not read the ledger; retrying");
                    let _ = wait.wait_until(Instant::now() + retry_after(1));
                    continue;
                }
            };
            // A backoff that ran out between the claim and `next_due` is in neither: it
            // was not claimable yet, it is no longer backing off, and no write will come
            // to wake this thread for it. Look once more: whatever still backs off is in
            // `due`, whatever came due before `next_due` is claimable now.
            match self.look_and_handle(&mut failures) {
                Then::LookAgain => continue,
                Then::RetryAfter(retry) => {
                    let _ = wait.wait_until(Instant::now() + retry);
                    continue;
                }
                Then::Wait => {}
            }
            match due {
                Some(due) => {
                    let _ = wait.wait_until(due);
                }
                None => wait.wait(),
            }
        }
    }

    /// One look, and the completion it claimed handled.
    fn look_and_handle(&self, failures: &mut u32) -> Then {
        match look(
            &self.shared,
            &self.queue,
            &self.filter,
            &self.view,
            failures,
        ) {
            Look::Claimed(claim) => {
                self.handle(claim);
                Then::LookAgain
            }
            Look::Failed => Then::RetryAfter(retry_after(*failures)),
            Look::Nothing => Then::Wait,
        }
    }

    /// Routes, renders and delivers one claimed completion, and settles the claim.
    fn handle(&self, claim: Claim) {
        let span = claim_span(&self.shared, &claim);
        let _claimed = span.enter();
        let Some(Ready {
            claim,
            message,
            adapter,
        }) = self.prepare(claim)
        else {
            return;
        };
        // No lock is held here: the adapter is a user callback, and so are its error's
        // `Display` and drop, and its own drop when it was replaced or removed during the
        // call (this clone is then the last). Each is fenced on its own.
        match &adapter {
            Adapter::Sync(sync) => {
                let delivery = delivery_span(&message);
                let outcome = delivery.in_scope(|| fence::call(|| sync.deliver(&message)));
                fence::drop_logged(adapter, "a replaced adapter");
                self.conclude(claim, &Sent::borrowed(&message), outcome);
            }
            Adapter::Async(send) => {
                let sent = Sent::owned(&message);
                let delivery = delivery_span(&message);
                // Driven to its end on this thread: the thread router delivers one
                // message at a time, whatever the adapter.
                let outcome = delivery.in_scope(|| {
                    fence::call(|| send.deliver(message)).and_then(|delivery| {
                        super::adapters::block_on(fence::future(delivery, "an adapter's delivery"))
                    })
                });
                fence::drop_logged(adapter, "a replaced adapter");
                self.conclude(claim, &sent.view(), outcome);
            }
        }
    }

    /// `true` when the origin store is an [`AsyncOriginStore`](crate::AsyncOriginStore).
    #[cfg(feature = "tokio")]
    pub(super) fn origins_are_async(&self) -> bool {
        matches!(self.origins, Origins::Async(_))
    }

    /// The async origin store's lookup for this claim's session (`None`: the store is
    /// synchronous and is asked while routing, the completion has no session to ask
    /// about, or the store panicked when asked — then the key alone routes it).
    pub(super) fn async_origin_lookup(
        &self,
        claim: &Claim,
    ) -> Option<impl std::future::Future<Output = Option<SessionSource>>> {
        let Origins::Async(store) = &self.origins else {
            return None;
        };
        let session_key = owned_session_key(claim.event()).filter(|key| !key.is_empty())?;
        let lookup = fence::call(|| store.origin(session_key)).map_err(origin_store_panicked);
        let lookup = lookup.ok()?;
        // Polled and dropped in a fence: a panic there is an answer of "unknown".
        Some(async move {
            fence::future(lookup, "an origin lookup")
                .await
                .unwrap_or_else(|message| {
                    origin_store_panicked(message);
                    None
                })
        })
    }

    /// Routes and renders one claimed completion (see [`prepare_with`](Self::prepare_with)),
    /// asking the origin store on this thread.
    pub(super) fn prepare(&self, claim: Claim) -> Option<Ready> {
        match &self.origins {
            Origins::Sync(store) => {
                let store = Arc::clone(store);
                self.prepare_with(claim, store.as_ref())
            }
            Origins::Async(_) => {
                let known = self
                    .async_origin_lookup(&claim)
                    .and_then(super::adapters::block_on);
                self.prepare_with(claim, &Known(known))
            }
        }
    }

    /// Routes and renders one claimed completion, asking `origins`: the message for its
    /// adapter, or — when it cannot or must not go now — `None`, the claim settled
    /// (deferred, or dead with its reason).
    pub(super) fn prepare_with(&self, claim: Claim, origins: &dyn OriginStore) -> Option<Ready> {
        // Shared with the ledger's row, never copied: the message carries the completion
        // as it was recorded, and its route is the message's `source`.
        let event = claim.shared_event();
        let Some(session_key) = owned_session_key(&event).map(str::to_owned) else {
            // The filter only claims owned completions.
            return self.dead(
                claim,
                &event,
                Unroutable::NothingToDeliver {
                    event_type: event.type_name().to_owned(),
                },
            );
        };
        if self.stopping() || self.shared.is_busy(&session_key) {
            // A turn began (or a stop came) since the claim: not now, and no attempt spent.
            return self.defer(claim);
        }
        // Routed by its enriched routing (computed apart: the recorded event is shared,
        // not copied); a process completion has no routing fields, so its key and the
        // origin store route it.
        let routing = match &*event {
            Event::AsyncDelegation(e) => enriched_routing(e),
            _ => Routing::default(),
        };
        // The origin store is user code: a panic in it costs this completion only. What
        // it returns is ours (a `SessionSource` or an `Unroutable`), so nothing of it
        // needs a fenced drop.
        let routed =
            fence::call(|| resolve_source(&session_key, routing, origins, &self.shared.platforms));
        let source = match routed {
            Ok(Ok(source)) => source,
            Ok(Err(reason)) => return self.dead(claim, &event, reason),
            Err(message) => {
                let reason = Unroutable::OriginStorePanicked {
                    session_key,
                    message,
                };
                return self.dead(claim, &event, reason);
            }
        };
        // The formatter is user code: a panic in it costs this completion only. Its
        // message is computed by the fence, before anything is logged.
        let text = match fence::call(|| (self.formatter)(&event)) {
            Ok(Some(text)) => text,
            Ok(None) => {
                let event_type = event.type_name().to_owned();
                return self.dead(claim, &event, Unroutable::NothingToDeliver { event_type });
            }
            Err(message) => {
                return self.dead(claim, &event, Unroutable::FormatterPanicked { message })
            }
        };
        let Some(adapter) = self.shared.adapter(&source.platform) else {
            let reason = Unroutable::NoAdapter(source.platform.clone());
            return self.dead(claim, &event, reason);
        };
        let message = InternalMessage {
            session_key: SessionKey::new(session_key),
            reply_to_message_id: source.message_id.clone(),
            source,
            text,
            event,
            idempotency_key: claim.key().into_owned(),
            possible_redelivery: claim.is_possible_redelivery(),
        };
        Some(Ready {
            claim,
            message,
            adapter,
        })
    }

    /// Settles a claim after its adapter's attempt: acked when it was accepted, released
    /// (retried with backoff, dead after the last attempt) when it failed or panicked.
    /// The error is formatted by reference and dropped apart, so a panicking `Display`
    /// never drops it while unwinding, and every panic payload is dropped inside a fence.
    pub(super) fn conclude(
        &self,
        claim: Claim,
        sent: &Sent<'_>,
        outcome: Result<Result<(), AdapterError>, String>,
    ) {
        let platform = sent.platform.clone();
        let error = match outcome {
            Ok(Ok(())) => return self.delivered(claim, sent),
            Ok(Err(error)) => error,
            Err(panic) => {
                let reason = Unroutable::AdapterPanicked {
                    platform,
                    message: panic,
                };
                return self.release(claim, sent.session_key, reason);
            }
        };
        let text = fence::display(&error);
        fence::drop_logged(error, "an adapter error");
        let reason = match text {
            Ok(error) => Unroutable::AdapterFailed { platform, error },
            // A `Display` that panics is the adapter's panic, as in the call itself.
            Err(message) => Unroutable::AdapterPanicked { platform, message },
        };
        self.release(claim, sent.session_key, reason);
    }

    fn delivered(&self, claim: Claim, sent: &Sent<'_>) {
        record_outcome("delivered");
        self.shared
            .metrics
            .settled(Outcome::Delivered, claim.event());
        match claim.ack() {
            Ok(_) => {
                self.shared.delivered.fetch_add(1, Ordering::SeqCst);
                tracing::debug!(
                    session_key = sent.session_key,
                    key = sent.key,
                    platform = sent.platform.as_str(),
                    event_type = sent.event_type,
                    "delivered a completion"
                );
            }
            // Delivered, but the ledger did not take the ack: the completion comes back
            // once its lease runs out, flagged as a possible redelivery (at least once).
            Err(error) => {
                self.shared.delivered.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(%error, key = sent.key, "a delivered completion could not be acknowledged; it may be delivered again");
            }
        }
    }

    fn defer(&self, claim: Claim) -> Option<Ready> {
        record_outcome("deferred");
        self.shared
            .metrics
            .settled(Outcome::Deferred, claim.event());
        let key = claim.key().into_owned();
        match claim.defer() {
            Ok(()) => {
                self.shared.deferred.fetch_add(1, Ordering::SeqCst);
            }
            Err(error) => {
                tracing::warn!(%error, key, "deferring a completion failed; its lease brings it back");
            }
        }
        None
    }

    /// A failed attempt: retried with backoff, dead after the last attempt.
    fn release(&self, claim: Claim, session_key: &str, reason: Unroutable) {
        let text = reason.to_string();
        let key = claim.key().into_owned();
        let event = claim.shared_event();
        match claim.release(&text) {
            Ok(Released::Retry { after }) => {
                record_outcome("released");
                self.shared.metrics.settled(Outcome::Released, &event);
                self.shared.released.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(
                    session_key,
                    key,
                    reason = %text,
                    retry_in = ?after,
                    "a completion could not be delivered; it will be retried"
                );
            }
            Ok(Released::Dead) => {
                record_outcome("dead");
                self.shared.metrics.settled(Outcome::Dead, &event);
                self.shared.dead_lettered.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(
                    session_key,
                    key,
                    reason = %text,
                    "a completion failed its last delivery attempt; kept as a dead letter"
                );
            }
            Err(error) => {
                tracing::warn!(%error, key, "releasing a completion failed; its lease brings it back");
            }
        }
    }

    /// Given up on at once (no route, no text, no adapter): a dead letter with its reason.
    fn dead(&self, claim: Claim, event: &Event, reason: Unroutable) -> Option<Ready> {
        let text = reason.to_string();
        let key = claim.key().into_owned();
        record_outcome("dead");
        self.shared.metrics.settled(Outcome::Dead, event);
        match claim.dead(&text) {
            Ok(()) => {
                self.shared.dead_lettered.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(
                    session_key = event.session_key().unwrap_or(""),
                    event_type = event.type_name(),
                    key,
                    reason = %text,
                    "undeliverable completion kept as a dead letter"
                );
            }
            Err(error) => {
                tracing::warn!(%error, key, "marking a completion dead failed; its lease brings it back");
            }
        }
        None
    }
}

/// Says that an async origin store panicked: the completion is routed by its key.
fn origin_store_panicked(message: String) {
    tracing::warn!(panic = %message, "the origin store panicked; routing by the session key");
}

/// The router's origin store: asked while routing, or awaited before.
#[derive(Clone)]
pub(super) enum Origins {
    Sync(Arc<dyn OriginStore>),
    Async(Arc<dyn crate::AsyncOriginStore>),
}

/// A completion ready for its adapter: the claim, the message, the adapter.
pub(super) struct Ready {
    pub(super) claim: Claim,
    pub(super) message: InternalMessage,
    pub(super) adapter: Adapter,
}

/// What settling a delivery attempt needs of its message: borrowed from it, or (when an
/// async adapter took the message) from a [`SentOwned`] kept apart.
pub(super) struct Sent<'a> {
    session_key: &'a str,
    key: &'a str,
    platform: &'a Platform,
    event_type: &'a str,
}

impl<'a> Sent<'a> {
    pub(super) fn borrowed(message: &'a InternalMessage) -> Self {
        Sent {
            session_key: message.session_key.as_str(),
            key: &message.idempotency_key,
            platform: &message.source.platform,
            event_type: message.event.type_name(),
        }
    }

    pub(super) fn owned(message: &InternalMessage) -> SentOwned {
        SentOwned {
            session_key: message.session_key.as_str().to_owned(),
            key: message.idempotency_key.clone(),
            platform: message.source.platform.clone(),
            event_type: message.event.type_name().to_owned(),
        }
    }
}

/// [`Sent`] kept apart from a message handed to an async adapter.
pub(super) struct SentOwned {
    session_key: String,
    key: String,
    platform: Platform,
    event_type: String,
}

impl SentOwned {
    pub(super) fn view(&self) -> Sent<'_> {
        Sent {
            session_key: &self.session_key,
            key: &self.key,
            platform: &self.platform,
            event_type: &self.event_type,
        }
    }
}

/// The pause after `failures` consecutive failures to read the ledger: 10 ms doubling,
/// at most 5 s.
/// A claim was taken: its queue wait is measured, and its span made — from the claim to
/// its settling: `outcome` is recorded when the claim is settled (`delivered`,
/// `deferred`, `released`, `dead`).
pub(super) fn claim_span(shared: &Shared, claim: &Claim) -> tracing::Span {
    let event = claim.event();
    shared.metrics.claimed(event);
    let (delegation_id, traceparent) = match event {
        Event::AsyncDelegation(event) => {
            (event.delegation_id.as_deref(), event.traceparent.as_deref())
        }
        _ => (None, None),
    };
    tracing::info_span!(
        "delegation.claim",
        delegation_id,
        session_key = event.session_key().unwrap_or(""),
        traceparent,
        attempt = claim.attempt(),
        possible_redelivery = claim.is_possible_redelivery(),
        outcome = tracing::field::Empty,
    )
}

/// The span of one adapter call, inside its claim's.
pub(super) fn delivery_span(message: &InternalMessage) -> tracing::Span {
    tracing::info_span!(
        "delegation.delivery",
        platform = message.source.platform.as_str(),
        chat_id = message.source.chat_id.as_str(),
    )
}

/// How the claim being handled (the current span's) was settled.
fn record_outcome(outcome: &'static str) {
    tracing::Span::current().record("outcome", outcome);
}

pub(super) fn retry_after(failures: u32) -> Duration {
    Duration::from_millis(10)
        .saturating_mul(1 << failures.min(9))
        .min(Duration::from_secs(5))
}

impl Shared {
    pub(super) fn adapter(&self, platform: &Platform) -> Option<Adapter> {
        self.adapters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(platform)
            .cloned()
    }

    /// Says once per platform that its completions wait for an adapter.
    pub(super) fn warn_unserved(&self, platform: &Platform) {
        let adapted = self
            .adapters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(platform);
        if adapted {
            // A fleet's platform that another router owns now.
            return;
        }
        let first = self
            .unserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(platform.clone());
        if first {
            tracing::info!(
                platform = platform.as_str(),
                "completions for this platform wait for its adapter to be registered"
            );
        }
    }
}
