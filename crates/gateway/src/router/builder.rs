//! [`DeliveryRouterBuilder`]: configuring a router and spawning its thread.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use process_registry::{format_process_notification, CompletionQueue, Event};

use super::turns::Turns;
use super::worker::{Settings, Worker};
use super::{DeliveryRouter, NotificationFormatter, PlatformAdapter, Shared, DELIVERY_THREAD_NAME};
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
    formatter: NotificationFormatter,
}

impl std::fmt::Debug for DeliveryRouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryRouterBuilder")
            .field("platforms", &self.platforms)
            .field("adapters", &self.adapters.keys().collect::<Vec<_>>())
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
            formatter: Arc::new(format_delivery),
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

    /// Render completions with `formatter` instead of the default — which renders a
    /// process `completion` with
    /// [`format_process_notification`](process_registry::format_process_notification)
    /// and every other event with [`format_gateway_process_notification`]. The formatter
    /// receives every event the router owns, process completions included; since the
    /// gateway formatter renders none for those, a formatter built on it (say
    /// [`format_gateway_process_notification_in`](crate::format_gateway_process_notification_in)
    /// with a pinned time zone) should render [`Event::Completion`] with the general
    /// formatter. Called on the router thread, holding no lock; returning `None` makes
    /// the completion a dead letter.
    pub fn formatter(
        mut self,
        formatter: impl Fn(&Event) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.formatter = Arc::new(formatter);
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
        let shared = Arc::new(Shared {
            turns: Turns::default(),
            adapters: RwLock::new(self.adapters),
            platforms: self.platforms,
            queue: self.queue.clone(),
            stopping: AtomicBool::new(false),
            unserved: Mutex::new(HashSet::new()),
            delivered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            released: AtomicU64::new(0),
        });
        let worker = Worker::new(
            Arc::clone(&shared),
            Settings {
                queue: self.queue.clone(),
                origins: self.origins,
                formatter: self.formatter,
            },
        );
        let thread = std::thread::Builder::new()
            .name(DELIVERY_THREAD_NAME.to_owned())
            .spawn(move || worker.run())
            .map_err(|e| GatewayError::SpawnFailed(e.to_string()))?;
        Ok(DeliveryRouter {
            shared,
            dead_letters: DeadLetterStore::new(self.queue),
            thread: Some(thread),
        })
    }
}
