//! The delivery router: a named background thread that brings completions — of
//! background subagents and of background processes — back to their chats as new turns.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use process_registry::{ClaimFilter, CompletionQueue, DeliveryState, Event, RowQuery};

use crate::{DeadLetterStore, Platform, PlatformRegistry, SessionKey, SessionSource};

mod adapters;
mod builder;
#[cfg(feature = "tokio")]
mod tasks;
mod turns;
mod worker;

pub use adapters::{Adapter, AdapterError, AsyncPlatformAdapter, Delivery, PlatformAdapter};
pub use builder::DeliveryRouterBuilder;
pub use turns::TurnGuard;
use turns::{TurnEnded, TurnToken, Turns};
pub use worker::platform_scope;

/// The name of the router's thread.
pub const DELIVERY_THREAD_NAME: &str = "gateway-delivery";

/// The function that renders a completion's text (see
/// [`DeliveryRouterBuilder::formatter`]).
pub type NotificationFormatter = Arc<dyn Fn(&Event) -> Option<String> + Send + Sync>;

/// A completion on its way to a chat: an *internal* message that the platform adapter
/// turns into a **new** turn of the session (never spliced into a running one).
#[derive(Debug, Clone, PartialEq)]
pub struct InternalMessage {
    /// The dispatching session.
    pub session_key: SessionKey,
    /// Where to deliver it: platform, chat, chat type, thread, user.
    pub source: SessionSource,
    /// The text of the new turn: the router formatter's rendering of `event` (by
    /// default the `[ASYNC DELEGATION COMPLETE — …]` block of a subagent, or the
    /// `[IMPORTANT: Background process …]` block of a process).
    pub text: String,
    /// The message to reply to (the reply anchor), when known: `source.message_id`.
    pub reply_to_message_id: Option<String>,
    /// The completion — an [`Event::AsyncDelegation`], or an [`Event::Completion`] of a
    /// background process — exactly as it was recorded, shared with the completion
    /// ledger rather than copied. Its route is [`source`](Self::source): the router
    /// enriches a delegation's routing from its session key
    /// ([`enrich_async_delegation_routing`](crate::enrich_async_delegation_routing)'s rule)
    /// to find it, without changing the event (a process completion has no routing
    /// fields; its session key and the origin store route it).
    pub event: Arc<Event>,
    /// The idempotency key: the `delegation_id` of a delegation's completion (else a key
    /// the ledger made). Stable across redeliveries: an adapter that remembers the keys
    /// it delivered can drop a repeat.
    pub idempotency_key: String,
    /// `true` when this completion may have been delivered before: an earlier delivery
    /// attempt was not acknowledged (its process died between delivering and acking, or
    /// its claim's lease ran out). The promise is at least once with a stable key —
    /// exactly once unless a process dies between delivering and acking.
    pub possible_redelivery: bool,
}

/// Counters of a router, read with [`DeliveryRouter::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Completions an adapter accepted (acknowledged in the ledger).
    pub delivered: u64,
    /// Completions this router made dead letters: unroutable, no text, or failed their
    /// last delivery attempt.
    pub dead_lettered: u64,
    /// Claims given back because their session's turn began meanwhile (no attempt spent).
    pub deferred: u64,
    /// Failed delivery attempts that will be retried after a backoff.
    pub released: u64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last copies of the adapters, user code: each dropped in its own fence.
        self.drop_adapters();
    }
}

pub(super) struct Shared {
    turns: Turns,
    adapters: RwLock<HashMap<Platform, Adapter>>,
    platforms: PlatformRegistry,
    queue: CompletionQueue,
    /// In a fleet: the leases on the platforms this router serves.
    ownership: Option<process_registry::Ownership>,
    stopping: AtomicBool,
    /// Notified when `stopping` is set: what the router's tasks wait on beside the queue.
    stopped: event_listener::Event,
    /// The router's tasks, when it was started on a runtime.
    #[cfg(feature = "tokio")]
    tasks: Mutex<Option<tasks::TaskSet>>,
    /// Platforms whose waiting completions were already logged.
    unserved: Mutex<HashSet<Platform>>,
    delivered: AtomicU64,
    dead_lettered: AtomicU64,
    deferred: AtomicU64,
    released: AtomicU64,
    metrics: crate::metrics::RouterMetrics,
}

impl Shared {
    /// Lets go of the router's copies of its adapters, each drop in its own fence: the
    /// adapters are user code, and so is their `Drop` (the last copy drops the adapter).
    pub(super) fn drop_adapters(&self) {
        let adapters = std::mem::take(
            &mut *self
                .adapters
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (_, adapter) in adapters {
            async_delegation::fence::drop_logged(adapter, "a platform adapter");
        }
    }

    /// Wakes the router (and every other consumer waiting on the queue) to look again.
    fn wake(&self) {
        self.queue.wake_consumers();
    }

    fn is_busy(&self, session_key: &str) -> bool {
        self.turns.is_busy(session_key)
    }

    /// Ends one open turn; wakes the router when that made the session idle.
    fn end_turn(&self, session_key: &str) -> bool {
        self.turn_ended(self.turns.end(session_key))
    }

    /// Ends a guard's turn if it is still open; wakes the router when that made the
    /// session idle.
    fn end_guarded_turn(&self, session_key: &str, token: TurnToken) -> bool {
        self.turn_ended(self.turns.end_guarded(session_key, token))
    }

    fn turn_ended(&self, ended: TurnEnded) -> bool {
        match ended {
            TurnEnded::NoneOpen => false,
            TurnEnded::StillBusy => true,
            TurnEnded::NowIdle => {
                self.wake();
                true
            }
        }
    }
}

/// The delivery loop of a gateway: claims completions off a [`CompletionQueue`] —
/// `async_delegation` events of background subagents and `completion` events of
/// background processes — routes each, renders it and hands it to the
/// [`PlatformAdapter`] of its platform as an [`InternalMessage`]: a new turn in the chat
/// and thread that dispatched it.
///
/// # What it claims, and what happens to each
///
/// The router **claims** (in the queue's completion ledger, under a lease) the
/// completions it serves: an `async_delegation` event or a process `completion` event
/// with a non-empty session key, whose session has no open turn, routed to a platform
/// it has an adapter for — including completions restored after a restart, since it owns
/// those sessions. It never takes anything else, so it never puts anything back:
/// completions of CLI origin (session key absent or `""`), watch events and unknown
/// events stay for the CLI loop and the watch drain, and a completion for a platform
/// without an adapter stays pending (for another router, or until its adapter is
/// registered). A claimed completion is:
///
/// - **delivered**: routed by its routing enriched from its session key
///   ([`enrich_async_delegation_routing`](crate::enrich_async_delegation_routing)'s rule
///   for a delegation; a process completion has no routing fields) as
///   [`build_process_event_source`](crate::build_process_event_source) routes (a known
///   origin, else those routing fields, else its parsed key), rendered by the formatter
///   and handed to the adapter — the event itself unchanged and shared with the ledger,
///   its route in the message's `source`; an `Ok` acks it (delivered). Each delivery
///   carries the completion's idempotency key and a possible-redelivery flag;
/// - **released** when the adapter fails or panics: retried after a capped exponential
///   backoff, and a dead letter after the last attempt (8 by default);
/// - **deferred** (no attempt spent) when its session's turn began between the claim and
///   the hand-off;
/// - **dead** at once when it cannot be routed, renders no text (or the formatter
///   panics), or its platform has no adapter after all — a dead letter with its
///   [`Unroutable`](crate::Unroutable) reason, in the ledger: listed and requeued through
///   [`dead_letters`](DeliveryRouter::dead_letters). Nothing is dropped.
///
/// The text comes from the formatter: by default a process completion is rendered by
/// [`format_process_notification`](process_registry::format_process_notification) (the
/// gateway formatter renders none for it) and everything else by
/// [`format_gateway_process_notification`](crate::format_gateway_process_notification);
/// see [`formatter`](DeliveryRouterBuilder::formatter).
///
/// The promise: **at-least-once delivery with a stable idempotency key — exactly once
/// unless a process dies between delivering and acking** (the completion is then
/// delivered again, flagged [`possible_redelivery`](InternalMessage::possible_redelivery)).
///
/// # Sharing the queue with the watch drain
///
/// [`drain_gateway_watch_events`](crate::drain_gateway_watch_events) consumes every
/// event that is neither a watch event nor an `async_delegation` event — process
/// completions included, keyed or not; that is its contract, and it is kept. A gateway
/// that runs both the watch drain and this router on one queue may therefore have a
/// process completion consumed by the drain before the router claims it (the drain logs
/// each one it consumes at `debug` level).
///
/// # Waking, not polling
///
/// The router sleeps until something may be claimable: a new completion, a session's
/// last open turn ending, an adapter being registered, a backoff coming due, or a stop.
/// There is no poll interval: a completion put on the queue is claimed at once.
///
/// # Busy sessions
///
/// The router tracks the open turns of each session: open one with
/// [`begin_turn`](DeliveryRouter::begin_turn) and end it with
/// [`end_turn`](DeliveryRouter::end_turn), or hold a [`TurnGuard`] from
/// [`turn`](DeliveryRouter::turn). A session is busy from its first open turn until the
/// **last** one ends, so overlapping turns (say a user message and a tool callback both
/// running) never let a completion into the turn still running. An `end_turn` with no
/// turn open is a no-op. `end_turn` ends the oldest `begin_turn` turn, and a guard's turn
/// only when no `begin_turn` turn is open (a stray end); a guard ends its own turn, and
/// nothing when a stray `end_turn` already ended it — never a turn opened after it. The
/// check happens just before each hand-off; a turn that begins while an adapter call is already under way
/// is not waited for (the adapter only enqueues a new turn, it interrupts nothing).
///
/// # Shutdown contract
///
/// [`stop`](DeliveryRouter::stop) (and dropping the router) signals the thread and joins
/// it. An adapter call in progress is finished first, so `stop` waits for it. The router
/// holds nothing of its own: every completion it has not delivered is still in the
/// ledger (pending, or dead with its reason), for a later router or another process.
/// Stopping never loses an event. The delivery thread lets go of the router's adapters as
/// it ends, each drop fenced: an adapter whose `Drop` panics is logged, and `stop` (or
/// the drop of the router, even from inside an adapter) still returns.
///
/// # Example
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use gateway::{DeliveryRouter, InternalMessage, Platform};
/// use process_registry::{AsyncDelegationEvent, CompletionQueue};
///
/// let queue = CompletionQueue::new();
/// let inbox: Arc<Mutex<Vec<InternalMessage>>> = Arc::default();
/// let telegram_inbox = Arc::clone(&inbox);
/// let router = DeliveryRouter::builder(queue.clone())
///     .adapter(Platform::Telegram, move |message: &InternalMessage| {
///         telegram_inbox.lock().unwrap().push(message.clone());
///         Ok(())
///     })
///     .start()?;
///
/// queue.put(AsyncDelegationEvent {
///     delegation_id: Some("deleg_0000beef".into()),
///     session_key: "agent:main:telegram:dm:12345:678".into(),
///     goal: "Investigate flaky test".into(),
///     status: Some("completed".into()),
///     summary: Some("Found the bug".into()),
///     ..AsyncDelegationEvent::default()
/// });
/// while router.stats().delivered == 0 {
///     std::thread::sleep(std::time::Duration::from_millis(1));
/// }
/// let stats = router.stop();
/// assert_eq!(stats.delivered, 1);
///
/// let inbox = inbox.lock().unwrap();
/// assert_eq!(inbox[0].source.chat_id, "12345");
/// assert_eq!(inbox[0].source.thread_id.as_deref(), Some("678"));
/// assert!(inbox[0].text.starts_with("[ASYNC DELEGATION COMPLETE — deleg_0000beef]"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DeliveryRouter {
    shared: Arc<Shared>,
    dead_letters: DeadLetterStore,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DeliveryRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryRouter")
            .field("stats", &self.stats())
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}

impl DeliveryRouter {
    /// A builder for a router draining `queue`.
    pub fn builder(queue: CompletionQueue) -> DeliveryRouterBuilder {
        DeliveryRouterBuilder::new(queue)
    }

    /// A builder for a router draining the process-wide queue,
    /// [`process_registry::global()`]'s — a convenience for programs with one gateway.
    pub fn builder_for_global_queue() -> DeliveryRouterBuilder {
        Self::builder(process_registry::global().completion_queue().clone())
    }

    /// The queue this router claims from.
    pub fn queue(&self) -> &CompletionQueue {
        &self.shared.queue
    }

    /// The platforms this router knows: the registry it was built with (see
    /// [`DeliveryRouterBuilder::platforms`]), which gains every custom platform given an
    /// adapter.
    pub fn platforms(&self) -> &PlatformRegistry {
        &self.shared.platforms
    }

    /// The dead letters of this router's queue: completions it (or another router on the
    /// same ledger) gave up on, with their reasons, to list and requeue.
    pub fn dead_letters(&self) -> &DeadLetterStore {
        &self.dead_letters
    }

    /// Opens a turn of `session_key`: its completions wait until every open turn of the
    /// session has ended. Returns `true` when the session went from idle to busy, and
    /// `false` when it already had an open turn (this call opened another one, which
    /// needs its own [`end_turn`](DeliveryRouter::end_turn)).
    pub fn begin_turn(&self, session_key: impl Into<String>) -> bool {
        self.shared.turns.begin(session_key.into())
    }

    /// Ends one open turn of `session_key`: the oldest one opened by
    /// [`begin_turn`](DeliveryRouter::begin_turn), or — when only [`TurnGuard`] turns are
    /// open — the oldest guard's turn (that guard's drop then changes nothing). Returns
    /// `true` when the session was mid-turn (a turn was open and has now ended) and
    /// `false` when it had no open turn, in which case nothing changes. The session
    /// becomes idle only when its last open turn ends; then the router is woken to
    /// deliver what it held for it.
    pub fn end_turn(&self, session_key: &str) -> bool {
        self.shared.end_turn(session_key)
    }

    /// Opens a turn of `session_key` that lasts until the returned guard is dropped (or
    /// [`TurnGuard::end`] is called). The guard ends that turn only, and only while it is
    /// open: other open turns of the session keep it busy, and a guard whose turn a
    /// stray [`end_turn`](DeliveryRouter::end_turn) already ended changes nothing when
    /// dropped.
    pub fn turn(&self, session_key: impl Into<String>) -> TurnGuard {
        TurnGuard::begin(Arc::clone(&self.shared), session_key.into())
    }

    /// `true` while `session_key` has an open turn.
    pub fn is_busy(&self, session_key: &str) -> bool {
        self.shared.is_busy(session_key)
    }

    /// Registers (or replaces) the adapter of `platform`; returns the one it replaced.
    /// A custom platform becomes known to the router's
    /// [`platforms`](DeliveryRouter::platforms) (it stays known when its adapter is
    /// removed: its completions are then dead letters for want of an adapter, not of a
    /// platform). Completions waiting for it are delivered now; those that already went
    /// to the dead letters stay there (see [`DeadLetterStore::requeue_all`]).
    pub fn register_adapter(
        &self,
        platform: Platform,
        adapter: impl PlatformAdapter + 'static,
    ) -> Option<Adapter> {
        self.register(platform, Adapter::Sync(Arc::new(adapter)))
    }

    /// [`register_adapter`](Self::register_adapter) for an [`AsyncPlatformAdapter`].
    pub fn register_async_adapter(
        &self,
        platform: Platform,
        adapter: impl AsyncPlatformAdapter + 'static,
    ) -> Option<Adapter> {
        self.register(platform, Adapter::Async(Arc::new(adapter)))
    }

    fn register(&self, platform: Platform, adapter: Adapter) -> Option<Adapter> {
        self.shared.platforms.know(&platform);
        let previous = self
            .shared
            .adapters
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(platform.clone(), adapter);
        if let Some(ownership) = &self.shared.ownership {
            ownership.want(worker::platform_scope(&platform));
        }
        #[cfg(feature = "tokio")]
        tasks::serve(&self.shared, &platform);
        self.shared.wake();
        previous
    }

    /// Removes the adapter of `platform`; returns it.
    pub fn remove_adapter(&self, platform: &Platform) -> Option<Adapter> {
        if let Some(ownership) = &self.shared.ownership {
            ownership.give_up(&worker::platform_scope(platform));
        }
        self.shared
            .adapters
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(platform)
    }

    /// The leases this router holds on its platforms, when it was built for a fleet
    /// ([`DeliveryRouterBuilder::fleet`]).
    pub fn ownership(&self) -> Option<&process_registry::Ownership> {
        self.shared.ownership.as_ref()
    }

    /// The router's counters right now: four atomic reads, cheap enough to poll.
    pub fn stats(&self) -> RouterStats {
        let s = &self.shared;
        RouterStats {
            delivered: s.delivered.load(Ordering::SeqCst),
            dead_lettered: s.dead_lettered.load(Ordering::SeqCst),
            deferred: s.deferred.load(Ordering::SeqCst),
            released: s.released.load(Ordering::SeqCst),
        }
    }

    /// How many completions this router serves are waiting right now: for a busy
    /// session, for a backoff, or for an adapter to be registered.
    ///
    /// It reads the ledger (the pending rows, under the ledger's lock for the memory
    /// backend), so its cost grows with what is pending: call it to report or to wait
    /// for a state in a test, not in a tight loop beside a busy router — poll
    /// [`stats`](Self::stats) for progress.
    pub fn waiting(&self) -> usize {
        waiting(&self.shared)
    }

    /// Stops the router (see the shutdown contract on [`DeliveryRouter`]) and returns
    /// its final counters. What it has not delivered is in the ledger when this returns.
    /// A router started on a runtime is only signalled (its tasks end after the delivery
    /// each is in): await `stop_async` there to wait for them.
    pub fn stop(mut self) -> RouterStats {
        self.shutdown();
        self.stats()
    }

    /// Stops a router started on a runtime and waits for its tasks: each finishes the
    /// delivery it is in, then ends. Returns the final counters; what was not delivered
    /// is in the ledger. (For a router on its thread, the same as [`stop`](Self::stop).)
    #[cfg(feature = "tokio")]
    pub async fn stop_async(mut self) -> RouterStats {
        self.signal_stop();
        for task in tasks::take_all(&self.shared) {
            if let Err(error) = task.await {
                tracing::error!(%error, "a gateway delivery task failed");
            }
        }
        // A router on its thread: joined on a blocking thread, not on this one.
        if let Some(thread) = self
            .thread
            .take()
            .filter(|thread| thread.thread().id() != std::thread::current().id())
        {
            let joined = match tokio::runtime::Handle::try_current() {
                Ok(runtime) => runtime
                    .spawn_blocking(move || thread.join().is_ok())
                    .await
                    .unwrap_or(false),
                Err(_) => thread.join().is_ok(),
            };
            if !joined {
                tracing::error!("the gateway-delivery thread panicked");
            }
        }
        self.shared.drop_adapters();
        self.stats()
    }

    fn signal_stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.stopped.notify(usize::MAX);
        self.shared.wake();
    }

    fn shutdown(&mut self) {
        // A router on a runtime: its tasks see the signal and end by themselves (a
        // synchronous stop cannot wait for them without blocking the runtime).
        self.signal_stop();
        let Some(thread) = self.thread.take() else {
            return;
        };
        if thread.thread().id() == std::thread::current().id() {
            // Dropped from inside an adapter (it held the last handle): the thread
            // cannot join itself. It sees the stop flag once the adapter returns.
            return;
        }
        if thread.join().is_err() {
            tracing::error!("the gateway-delivery thread panicked");
        }
        // The delivery thread let go of the adapters as it ended; if it panicked, here.
        self.shared.drop_adapters();
    }
}

/// The `waiting` count: the routed completions of this router's platforms that are
/// pending — claimable now (a busy session's, an adapterless platform's) or backing off
/// after a failed attempt.
fn waiting(shared: &Shared) -> usize {
    let served = shared.platforms.clone();
    let filter = ClaimFilter::routed()
        .including_restored()
        .where_event(move |event| serves(&served, event));
    // What is claimable now; `count` reads the ledger without copying rows. (`count`
    // and `next_due` judge by the ledger's columns — type, session key, restored — and
    // not by the filter's predicate, so this part also counts a busy session's
    // completion for a platform the router does not know.)
    let claimable = shared.queue.count(&filter);
    // What backs off is not claimable, so `count` leaves it out: read those rows, but
    // only when something is backing off.
    match shared.queue.next_due(&filter) {
        Ok(Some(_)) => {}
        Ok(None) => return claimable,
        Err(error) => {
            tracing::warn!(%error, "counting waiting completions failed");
            return claimable;
        }
    }
    let now = shared.queue.backend().now();
    let pending = RowQuery {
        delivery: Some(DeliveryState::Pending),
        ..RowQuery::default()
    };
    let backing_off = match shared.queue.rows(&pending) {
        Ok(rows) => rows
            .iter()
            .filter(|row| row.not_before.is_some_and(|t| t > now))
            .filter(|row| serves(&shared.platforms, &row.event))
            .count(),
        Err(error) => {
            tracing::warn!(%error, "counting waiting completions failed");
            0
        }
    };
    claimable + backing_off
}

/// `true` for a routed completion whose platform this router knows (the `waiting` count:
/// what is pending for the router's platforms, busy sessions and backoffs included).
fn serves(platforms: &PlatformRegistry, event: &Event) -> bool {
    let Some(session_key) = worker::owned_session_key(event) else {
        return false;
    };
    worker::platform_of(event, session_key).is_some_and(|name| platforms.is_known(&name))
}

impl Drop for DeliveryRouter {
    /// Same as [`DeliveryRouter::stop`].
    fn drop(&mut self) {
        self.shutdown();
    }
}
