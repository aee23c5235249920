//! The `gateway-delivery` thread: the loop that takes completions off the queue, holds
//! them for busy sessions and hands them to adapters.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use async_delegation::fence;
use crossbeam_channel::Receiver;
use process_registry::{CompletionQueue, Event, Routing};

use super::{InternalMessage, NotificationFormatter, Shared};
use crate::routing::resolve_source;
use crate::{
    enrich_event_routing, DeadLetterStore, OriginStore, PlatformRegistry, SessionKey,
    SessionSource, Unroutable,
};

/// A completion taken off the queue and routed, waiting for its session.
struct Held {
    seq: u64,
    session_key: String,
    source: SessionSource,
    event: Event,
}

/// The session key of an event the router owns: an `async_delegation` or a process
/// `completion` with a non-empty session key. Everything else — CLI-origin completions
/// (no key, or `""`), watch events, unknown events — is someone else's.
fn owned_session_key(event: &Event) -> Option<&str> {
    let session_key = match event {
        Event::AsyncDelegation(e) => e.session_key.as_str(),
        Event::Completion(e) => e.session_key.as_deref()?,
        _ => return None,
    };
    (!session_key.is_empty()).then_some(session_key)
}

/// What a [`DeliveryRouterBuilder`](super::DeliveryRouterBuilder) hands its thread.
pub(super) struct Settings {
    pub(super) queue: CompletionQueue,
    pub(super) platforms: PlatformRegistry,
    pub(super) origins: Arc<dyn OriginStore>,
    pub(super) dead_letters: DeadLetterStore,
    pub(super) formatter: NotificationFormatter,
    pub(super) poll_interval: Duration,
    pub(super) requeue_backoff: Duration,
}

/// The state owned by the `gateway-delivery` thread.
pub(super) struct Worker {
    shared: Arc<Shared>,
    queue: CompletionQueue,
    platforms: PlatformRegistry,
    origins: Arc<dyn OriginStore>,
    dead_letters: DeadLetterStore,
    formatter: NotificationFormatter,
    poll_interval: Duration,
    requeue_backoff: Duration,
    wake_rx: Receiver<()>,
    /// Completions held for busy sessions, per session in arrival order.
    pending: HashMap<String, VecDeque<Held>>,
    /// Events taken but not looked at when a stop arrived (seq, event).
    leftover: Vec<(u64, Event)>,
    seq: u64,
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>, wake_rx: Receiver<()>, settings: Settings) -> Self {
        let Settings {
            queue,
            platforms,
            origins,
            dead_letters,
            formatter,
            poll_interval,
            requeue_backoff,
        } = settings;
        Worker {
            shared,
            queue,
            platforms,
            origins,
            dead_letters,
            formatter,
            poll_interval,
            requeue_backoff,
            wake_rx,
            pending: HashMap::new(),
            leftover: Vec::new(),
            seq: 0,
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    pub(super) fn run(mut self) {
        loop {
            // Wake-ups that arrived while the router was busy are stale: this pass looks
            // at everything anyway. `stop` raises its flag before waking, so a consumed
            // stop wake-up is still seen here.
            while self.wake_rx.try_recv().is_ok() {}
            if self.stopping() {
                break;
            }
            let mut progressed = self.flush_idle_sessions();
            if self.stopping() {
                break;
            }
            let mut batch = self.queue.drain();
            if batch.is_empty() {
                match self.queue.take_timeout(self.poll_interval) {
                    Some(event) => batch.push(event),
                    None => continue,
                }
            }
            let mut not_ours = Vec::new();
            for event in batch {
                self.seq += 1;
                if self.stopping() {
                    // Taken but not looked at: goes back on the queue with the held ones.
                    self.leftover.push((self.seq, event));
                    continue;
                }
                match owned_session_key(&event) {
                    Some(session_key) => {
                        let session_key = session_key.to_owned();
                        self.accept(session_key, event);
                        progressed = true;
                    }
                    None => not_ours.push(event),
                }
            }
            let put_back_only = !not_ours.is_empty() && !progressed;
            self.shared
                .put_back
                .fetch_add(not_ours.len() as u64, Ordering::SeqCst);
            for event in not_ours {
                self.queue.put(event);
            }
            if put_back_only && !self.stopping() {
                // Everything on the queue belongs to someone else: pause instead of
                // taking the same events again at once. A turn's end, a new adapter or
                // stop cut the pause short.
                let _ = self.wake_rx.recv_timeout(self.requeue_backoff);
            }
        }
        self.requeue_everything_held();
    }

    /// Enriches, routes and delivers (or holds) one owned completion.
    fn accept(&mut self, session_key: String, mut event: Event) {
        // An async-delegation completion gains its route from its key; a process
        // completion has no routing fields, so its key and the origin store route it.
        enrich_event_routing(&mut event);
        let no_routing = Routing::default();
        let routing = match &event {
            Event::AsyncDelegation(e) => &e.routing,
            _ => &no_routing,
        };
        // The origin store is user code: a panic in it costs this completion only. What
        // it returns is ours (a `SessionSource` or an `Unroutable`), so nothing of it
        // needs a fenced drop.
        let routed = fence::call(|| {
            resolve_source(
                &session_key,
                routing,
                self.origins.as_ref(),
                &self.platforms,
            )
        });
        let source = match routed {
            Ok(Ok(source)) => source,
            Ok(Err(reason)) => return self.dead_letter(event, reason),
            Err(message) => {
                return self.dead_letter(
                    event,
                    Unroutable::OriginStorePanicked {
                        session_key,
                        message,
                    },
                );
            }
        };
        let held = Held {
            seq: self.seq,
            session_key,
            source,
            event,
        };
        if self.pending.contains_key(&held.session_key) || self.shared.is_busy(&held.session_key) {
            self.pending
                .entry(held.session_key.clone())
                .or_default()
                .push_back(held);
            self.shared.pending.fetch_add(1, Ordering::SeqCst);
        } else {
            self.deliver(held);
        }
    }

    /// Delivers what is held for sessions whose last open turn has ended. Returns `true`
    /// when it delivered anything.
    fn flush_idle_sessions(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let idle = self.shared.turns.idle(self.pending.keys());
        let mut progressed = false;
        for session_key in idle {
            while !self.stopping() && !self.shared.is_busy(&session_key) {
                let Some(queue) = self.pending.get_mut(&session_key) else {
                    break;
                };
                let Some(held) = queue.pop_front() else {
                    self.pending.remove(&session_key);
                    break;
                };
                if queue.is_empty() {
                    self.pending.remove(&session_key);
                }
                self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                self.deliver(held);
                progressed = true;
            }
        }
        progressed
    }

    fn deliver(&mut self, held: Held) {
        let Held {
            session_key,
            source,
            event,
            ..
        } = held;
        // The formatter is user code: a panic in it costs this completion only. Its
        // message is computed by the fence, before anything is logged.
        let text = match fence::call(|| (self.formatter)(&event)) {
            Ok(Some(text)) => text,
            Ok(None) => {
                let event_type = event.type_name().to_owned();
                return self.dead_letter(event, Unroutable::NothingToDeliver { event_type });
            }
            Err(message) => {
                return self.dead_letter(event, Unroutable::FormatterPanicked { message });
            }
        };
        let adapter = self
            .shared
            .adapters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&source.platform)
            .cloned();
        let Some(adapter) = adapter else {
            let platform = source.platform.clone();
            return self.dead_letter(event, Unroutable::NoAdapter(platform));
        };
        let message = InternalMessage {
            session_key: SessionKey::new(session_key),
            reply_to_message_id: source.message_id.clone(),
            source,
            text,
            event,
        };
        // No lock is held here: the adapter is a user callback, and so are its error's
        // `Display` and drop, and its own drop when it was replaced or removed during the
        // call (this clone is then the last). Each is fenced on its own: the error is
        // formatted by reference and dropped apart, so a panicking `Display` never drops
        // it while unwinding, and every panic payload is dropped inside a fence.
        let outcome = fence::call(|| adapter.deliver(&message));
        fence::drop_logged(adapter, "a replaced adapter");
        let platform = message.source.platform.clone();
        let error = match outcome {
            Ok(Ok(())) => {
                self.shared.delivered.fetch_add(1, Ordering::SeqCst);
                tracing::debug!(
                    session_key = message.session_key.as_str(),
                    platform = platform.as_str(),
                    event_type = message.event.type_name(),
                    "delivered a completion"
                );
                return;
            }
            Ok(Err(error)) => error,
            Err(message_text) => {
                return self.dead_letter(
                    message.event,
                    Unroutable::AdapterPanicked {
                        platform,
                        message: message_text,
                    },
                );
            }
        };
        let text = fence::display(&error);
        fence::drop_logged(error, "an adapter error");
        let reason = match text {
            Ok(error) => Unroutable::AdapterFailed { platform, error },
            // A `Display` that panics is the adapter's panic, as in the call itself.
            Err(message) => Unroutable::AdapterPanicked { platform, message },
        };
        self.dead_letter(message.event, reason);
    }

    fn dead_letter(&mut self, event: Event, reason: Unroutable) {
        tracing::warn!(
            session_key = event.session_key().unwrap_or(""),
            event_type = event.type_name(),
            reason = %reason,
            "undeliverable completion kept in the dead-letter store"
        );
        self.dead_letters.record(event, reason);
        self.shared.dead_lettered.fetch_add(1, Ordering::SeqCst);
    }

    /// The shutdown half of the contract: everything held goes back on the queue,
    /// oldest first.
    fn requeue_everything_held(&mut self) {
        let mut held: Vec<(u64, Event)> = self
            .pending
            .drain()
            .flat_map(|(_, queue)| queue.into_iter().map(|h| (h.seq, h.event)))
            .collect();
        held.append(&mut self.leftover);
        held.sort_by_key(|(seq, _)| *seq);
        self.shared.pending.store(0, Ordering::SeqCst);
        self.shared
            .requeued_on_stop
            .fetch_add(held.len() as u64, Ordering::SeqCst);
        for (_, event) in held {
            self.queue.put(event);
        }
    }
}
