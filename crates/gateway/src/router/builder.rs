//! [`DeliveryRouterBuilder`]: configuring a router and spawning its thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use process_registry::{format_process_notification, CompletionQueue, Event};

use super::turns::Turns;
use super::worker::{Settings, Worker};
use super::{
    DeliveryRouter, NotificationFormatter, PlatformAdapter, Shared, DEFAULT_POLL_INTERVAL,
    DEFAULT_REQUEUE_BACKOFF, DELIVERY_THREAD_NAME,
};
use crate::{
    format_gateway_process_notification, DeadLetterStore, GatewayError, NoOrigins, OriginStore,
    Platform, PlatformRegistry,
};

/// The router's default formatter: a process completion is rendered by the general
/// [`format_process_notification`] (the gateway formatter deliberately renders none for
/// it), every other event by [`format_gateway_process_notification`].
fn format_delivery(event: &Event) -> Option<String> {
    match event {
        Event::Completion(_) => format_process_notification(event),
        _ => format_gateway_process_notification(event),
    }
}

/// Configures and starts a [`DeliveryRouter`].
pub struct DeliveryRouterBuilder {
    queue: CompletionQueue,
    platforms: PlatformRegistry,
    origins: Arc<dyn OriginStore>,
    adapters: HashMap<Platform, Arc<dyn PlatformAdapter>>,
    dead_letters: DeadLetterStore,
    formatter: NotificationFormatter,
    poll_interval: Duration,
    requeue_backoff: Duration,
}

impl std::fmt::Debug for DeliveryRouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryRouterBuilder")
            .field("platforms", &self.platforms)
            .field("adapters", &self.adapters.keys().collect::<Vec<_>>())
            .field("poll_interval", &self.poll_interval)
            .field("requeue_backoff", &self.requeue_backoff)
            .finish_non_exhaustive()
    }
}

impl DeliveryRouterBuilder {
    /// The defaults; see [`DeliveryRouter::builder`].
    pub(super) fn new(queue: CompletionQueue) -> Self {
        DeliveryRouterBuilder {
            queue,
            platforms: PlatformRegistry::new(),
            origins: Arc::new(NoOrigins),
            adapters: HashMap::new(),
            dead_letters: DeadLetterStore::new(),
            formatter: Arc::new(format_delivery),
            poll_interval: DEFAULT_POLL_INTERVAL,
            requeue_backoff: DEFAULT_REQUEUE_BACKOFF,
        }
    }

    /// The platforms the router knows (default: a new registry with the built-ins only).
    /// Pass the gateway's registry when it has run-time platforms. Every custom platform
    /// given an [`adapter`](DeliveryRouterBuilder::adapter) is added to it when the
    /// router starts (before or after this call alike), so a registry passed here gains
    /// those platforms.
    pub fn platforms(mut self, platforms: PlatformRegistry) -> Self {
        self.platforms = platforms;
        self
    }

    /// Known session origins, asked first for every route (default: [`NoOrigins`]).
    pub fn origins(mut self, origins: impl OriginStore + 'static) -> Self {
        self.origins = Arc::new(origins);
        self
    }

    /// Registers the adapter of `platform` (more can be added later with
    /// [`DeliveryRouter::register_adapter`]). A custom platform with an adapter is known
    /// to the router: [`start`](DeliveryRouterBuilder::start) adds it to the router's
    /// [`platforms`](DeliveryRouterBuilder::platforms), so its completions route without
    /// registering it there as well.
    pub fn adapter(mut self, platform: Platform, adapter: impl PlatformAdapter + 'static) -> Self {
        self.adapters.insert(platform, Arc::new(adapter));
        self
    }

    /// Use this dead-letter store (default: a new one), e.g. to share it between routers.
    pub fn dead_letters(mut self, dead_letters: DeadLetterStore) -> Self {
        self.dead_letters = dead_letters;
        self
    }

    /// Render completions with `formatter` instead of the default — which renders a
    /// process `completion` with
    /// [`format_process_notification`](process_registry::format_process_notification)
    /// and every other event with [`format_gateway_process_notification`]. The formatter
    /// receives every event the router owns, process completions included; since the
    /// gateway formatter renders none for those, a formatter built on it (say
    /// [`format_gateway_process_notification_in`](crate::format_gateway_process_notification_in)
    /// with a pinned time zone) should render [`Event::Completion`] with the general
    /// formatter. Called on the router thread, holding no lock; returning `None` sends
    /// the completion to the dead-letter store.
    pub fn formatter(
        mut self,
        formatter: impl Fn(&Event) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.formatter = Arc::new(formatter);
        self
    }

    /// How long the router waits on an empty queue before looking at its own state
    /// again (default [`DEFAULT_POLL_INTERVAL`]). It bounds how long [`stop`](DeliveryRouter::stop)
    /// and a turn's end take to be noticed while the queue is empty. Zero is raised to
    /// one millisecond.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long the router pauses after a pass that only put events back on the queue
    /// (CLI-origin completions and other events it does not own), so it never spins on
    /// them (default [`DEFAULT_REQUEUE_BACKOFF`]). A turn's end, a new adapter and
    /// [`stop`](DeliveryRouter::stop) cut the pause short; a new completion on the queue
    /// waits for the end of it. Zero is raised to one millisecond.
    pub fn requeue_backoff(mut self, backoff: Duration) -> Self {
        self.requeue_backoff = backoff.max(Duration::from_millis(1));
        self
    }

    /// Spawns the `gateway-delivery` thread and returns the running router.
    ///
    /// # Errors
    /// [`GatewayError::SpawnFailed`] when the thread cannot be spawned.
    pub fn start(self) -> Result<DeliveryRouter, GatewayError> {
        for platform in self.adapters.keys() {
            self.platforms.know(platform);
        }
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            turns: Turns::default(),
            adapters: RwLock::new(self.adapters),
            stopping: AtomicBool::new(false),
            wake,
            delivered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            put_back: AtomicU64::new(0),
            requeued_on_stop: AtomicU64::new(0),
        });
        let worker = Worker::new(
            Arc::clone(&shared),
            wake_rx,
            Settings {
                queue: self.queue.clone(),
                platforms: self.platforms.clone(),
                origins: self.origins,
                dead_letters: self.dead_letters.clone(),
                formatter: self.formatter,
                poll_interval: self.poll_interval,
                requeue_backoff: self.requeue_backoff,
            },
        );
        let thread = std::thread::Builder::new()
            .name(DELIVERY_THREAD_NAME.to_owned())
            .spawn(move || worker.run())
            .map_err(|e| GatewayError::SpawnFailed(e.to_string()))?;
        Ok(DeliveryRouter {
            shared,
            queue: self.queue,
            platforms: self.platforms,
            dead_letters: self.dead_letters,
            thread: Some(thread),
        })
    }
}
