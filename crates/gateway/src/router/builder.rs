//! [`DeliveryRouterBuilder`]: configuring a router and spawning its thread.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use std::time::Duration;

use process_registry::{format_process_notification, CompletionQueue, Event, Ownership};

use super::turns::Turns;
use super::worker::{Origins, Settings, Worker};
use super::{
    Adapter, AsyncPlatformAdapter, DeliveryRouter, NotificationFormatter, PlatformAdapter, Shared,
    DELIVERY_THREAD_NAME,
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
    origins: Origins,
    adapters: HashMap<Platform, Adapter>,
    formatter: NotificationFormatter,
    /// In a fleet: the lease on each platform.
    fleet: Option<Duration>,
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
            origins: Origins::Sync(Arc::new(NoOrigins)),
            adapters: HashMap::new(),
            formatter: Arc::new(format_delivery),
            fleet: None,
        }
    }

    /// One router of a fleet: several gateway processes on one shared ledger (say
    /// PostgreSQL), each serving some platforms. The router holds a lease of `lease` on
    /// each platform it has an adapter for (scope `platform:{name}`, through a
    /// [`process_registry::Ownership`]) and claims a platform's completions only while it
    /// holds its lease, fenced by it: the ledger refuses the ack of a router whose lease
    /// was taken over meanwhile. A router with an adapter for a platform another one
    /// holds is its standby: it takes the platform over within `lease` (plus a third of
    /// it) of the holder's death, and the holder's unacknowledged completions are
    /// offered to it at once, as possible redeliveries. Unroutable completions are any
    /// router's to make dead letters — but not those of a platform a router does not
    /// know while the fleet leases it (another router serves it, or did within a day):
    /// they wait for that platform's router, so routers may know different custom
    /// platforms (a router just started waits for its first read of the leases). A lease
    /// is taken as at least 30 ms and at most a day. The ledger must keep leases
    /// (memory, PostgreSQL).
    pub fn fleet(mut self, lease: Duration) -> Self {
        self.fleet = Some(lease);
        self
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
        self.origins = Origins::Sync(Arc::new(origins));
        self
    }

    /// [`origins`](Self::origins) for an [`AsyncOriginStore`](crate::AsyncOriginStore):
    /// its lookup is awaited before each completion is routed (driven on the delivery
    /// thread by a router started with [`start`](Self::start)).
    pub fn async_origins(mut self, origins: impl crate::AsyncOriginStore + 'static) -> Self {
        self.origins = Origins::Async(Arc::new(origins));
        self
    }

    /// Registers the adapter of `platform` (more can be added later with
    /// [`DeliveryRouter::register_adapter`]). A custom platform with an adapter is known
    /// to the router: [`start`](DeliveryRouterBuilder::start) adds it to the router's
    /// [`platforms`](DeliveryRouterBuilder::platforms), so its completions route without
    /// registering it there as well.
    pub fn adapter(mut self, platform: Platform, adapter: impl PlatformAdapter + 'static) -> Self {
        self.adapters
            .insert(platform, Adapter::Sync(Arc::new(adapter)));
        self
    }

    /// [`adapter`](Self::adapter) for an [`AsyncPlatformAdapter`]: a send that is a
    /// future, acked only when it resolves `Ok`.
    pub fn async_adapter(
        mut self,
        platform: Platform,
        adapter: impl AsyncPlatformAdapter + 'static,
    ) -> Self {
        self.adapters
            .insert(platform, Adapter::Async(Arc::new(adapter)));
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
    /// [`GatewayError::SpawnFailed`] when the thread (or a [`fleet`](Self::fleet)
    /// router's lease thread) cannot be spawned.
    pub fn start(self) -> Result<DeliveryRouter, GatewayError> {
        let queue = self.queue.clone();
        let (shared, worker) = self.into_parts()?;
        let thread = std::thread::Builder::new()
            .name(DELIVERY_THREAD_NAME.to_owned())
            .spawn(move || worker.run())
            .map_err(|e| GatewayError::SpawnFailed(e.to_string()))?;
        Ok(DeliveryRouter {
            shared,
            dead_letters: DeadLetterStore::new(queue),
            thread: Some(thread),
        })
    }

    /// Starts the router as tasks on `runtime` instead of a thread (feature `tokio`): one
    /// task per platform with an adapter — so a slow platform never delays another's
    /// deliveries — and one that makes unroutable completions dead letters. Async
    /// adapters are awaited; sync adapters run on the runtime's blocking threads, and so
    /// do the ledger's claims and settles when its store may block
    /// ([`Capabilities::may_block`](process_registry::Capabilities::may_block): SQLite,
    /// PostgreSQL), so no task waits on the store. Stop it with
    /// [`DeliveryRouter::stop_async`].
    ///
    /// ```
    /// use gateway::{DeliveryRouter, InternalMessage, Platform};
    /// use process_registry::{AsyncDelegationEvent, CompletionQueue};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let queue = CompletionQueue::new();
    /// let (inbox, mut delivered) = tokio::sync::mpsc::unbounded_channel();
    /// let router = DeliveryRouter::builder(queue.clone())
    ///     .async_adapter(Platform::Telegram, move |message: InternalMessage| {
    ///         let inbox = inbox.clone();
    ///         async move {
    ///             // … the platform's HTTP call, awaited: acked only when it succeeded.
    ///             inbox.send(message.text).map_err(|e| e.to_string().into())
    ///         }
    ///     })
    ///     .start_on(&tokio::runtime::Handle::current())?;
    /// queue.put(AsyncDelegationEvent {
    ///     session_key: "agent:main:telegram:dm:12345".into(),
    ///     goal: "Find why CI is flaky".into(),
    ///     summary: Some("A race in test_io.".into()),
    ///     ..AsyncDelegationEvent::default()
    /// });
    /// let text = delivered.recv().await.ok_or("no delivery")?;
    /// assert!(text.contains("A race in test_io."));
    /// router.stop_async().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`GatewayError::SpawnFailed`] when a [`fleet`](Self::fleet) router's lease thread
    /// cannot be started.
    #[cfg(feature = "tokio")]
    pub fn start_on(
        self,
        runtime: &tokio::runtime::Handle,
    ) -> Result<DeliveryRouter, GatewayError> {
        let queue = self.queue.clone();
        let (shared, worker) = self.into_parts()?;
        super::tasks::start(runtime, worker);
        Ok(DeliveryRouter {
            shared,
            dead_letters: DeadLetterStore::new(queue),
            thread: None,
        })
    }

    /// The router's shared state and the worker that delivers for it.
    pub(super) fn into_parts(self) -> Result<(Arc<Shared>, Worker), GatewayError> {
        for platform in self.adapters.keys() {
            self.platforms.know(platform);
        }
        let ownership = self.fleet.map(|lease| {
            let ownership = Ownership::start(&self.queue, lease)
                .map_err(|error| GatewayError::SpawnFailed(error.to_string()))?;
            for platform in self.adapters.keys() {
                ownership.want(super::worker::platform_scope(platform));
            }
            Ok::<_, GatewayError>(ownership)
        });
        let ownership = ownership.transpose()?;
        let shared = Arc::new(Shared {
            turns: Turns::default(),
            adapters: RwLock::new(self.adapters),
            platforms: self.platforms,
            queue: self.queue.clone(),
            ownership,
            stopping: AtomicBool::new(false),
            stopped: event_listener::Event::new(),
            #[cfg(feature = "tokio")]
            tasks: Mutex::new(None),
            unserved: Mutex::new(HashSet::new()),
            delivered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
            released: AtomicU64::new(0),
            metrics: crate::metrics::RouterMetrics::register(),
        });
        let worker = Worker::new(
            Arc::clone(&shared),
            Settings {
                queue: self.queue,
                origins: self.origins,
                formatter: self.formatter,
            },
        );
        Ok((shared, worker))
    }
}
