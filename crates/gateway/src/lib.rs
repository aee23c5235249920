//! Chat routing for background delegation: platforms, session keys, routing enrichment,
//! the gateway formatter, the watch drain and the delivery router.
//!
//! New to the crates? [The guide](crate::guide) (`docs/guide.md` in the repository) walks
//! from "I have an agent" to "my agent delegates in the background": plugging an agent in,
//! registering the tool with OpenAI- and Anthropic-style APIs, bringing results back as new
//! turns, testing.
//!
//! A gateway serves many chats (Telegram DMs and topics, Discord threads, Slack
//! channels, …) with one agent process. When a background subagent finishes, its
//! `async_delegation` completion lands on the shared
//! [`CompletionQueue`](process_registry::CompletionQueue) carrying the *session key* of
//! the chat that dispatched it. This crate brings it back there as a new turn — and
//! does the same for the `completion` of a background process started from a chat.
//!
//! # Guide
//!
//! - **Platforms.** [`Platform`] has the built-in platforms as variants; plugins add
//!   others at run time in a [`PlatformRegistry`] (a cloneable handle;
//!   [`PlatformRegistry::global`] is a process-wide default). Every name is normalized
//!   one way — trimmed, then lowercased with full Unicode rules — for built-ins and
//!   run-time platforms alike, so no spelling of a built-in registers a look-alike; a
//!   run-time name is made of letters, digits, `_`, `-` and `.` only, so no invisible
//!   character makes one either. An unknown name is [`GatewayError::UnknownPlatform`].
//! - **Session keys.** [`SessionKey::build`] turns a [`SessionSource`] into
//!   `agent:main:telegram:dm:12345:678`-style keys ([`SessionKeyOptions`]: per-user group
//!   sessions on by default, per-user thread sessions off, a profile namespace);
//!   [`SessionKey::parse`] reads the route back (the thread id only from `dm` and
//!   `thread` keys). A key whose segments hold no `:` is plain, written exactly as the
//!   Python harness writes it and never decoded. Ids may contain the `:` separator
//!   (Matrix rooms such as `!abc:matrix.org`): such a key is escaped — it starts
//!   `agent%:` and writes `:` as `%3A` and `%` as `%25` in every segment — and only such
//!   keys are decoded, so every id comes back unchanged and every reference key parses
//!   as it always did.
//! - **Enrichment.** [`enrich_async_delegation_routing`] adds `platform`, `chat_type`,
//!   `chat_id` (and `thread_id`) to a completion from its key; CLI-origin events (key
//!   `""`) stay unrouted.
//! - **Event source.** [`build_process_event_source`] picks the [`SessionSource`] to
//!   deliver to: a known origin ([`OriginStore`], e.g. [`InMemoryOriginStore`]), else the
//!   event's routing fields, else its parsed key — or an [`Unroutable`] reason.
//! - **Formatter and watch drain.** [`format_gateway_process_notification`] renders the
//!   text of watch events and async-delegation completions (`None` for process
//!   completions); [`drain_gateway_watch_events`] takes the watch events off the queue,
//!   leaves the async completions there and consumes everything else — process
//!   completions included, so a gateway running it beside the router on one queue may
//!   lose keyed process completions to it, as its contract says.
//! - **Delivery router.** [`DeliveryRouter`] runs a named `gateway-delivery` thread that
//!   drains completions (async-delegation ones and keyed process completions, the latter
//!   rendered by [`format_process_notification`](process_registry::format_process_notification)),
//!   waits for busy sessions ([`DeliveryRouter::begin_turn`] /
//!   [`end_turn`](DeliveryRouter::end_turn) / [`turn`](DeliveryRouter::turn); a session
//!   stays busy until the last of its open turns ends, and a guard ends only its own), hands each
//!   to the [`PlatformAdapter`] of its platform, keeps what it cannot deliver in a
//!   [`DeadLetterStore`], leaves CLI-origin events on the queue, and on
//!   [`stop`](DeliveryRouter::stop) puts back everything it still holds.
//! - **Async adapters and the router as tasks.** An [`AsyncPlatformAdapter`] sends with a
//!   future (the platform's HTTP call), and its completion is acked only when that future
//!   resolves `Ok`. With the `tokio` feature, `DeliveryRouterBuilder::start_on` runs the
//!   router as tasks on a runtime you pass — one per platform, so a slow platform never
//!   delays another's deliveries — and `DeliveryRouter::stop_async` waits for them; sync
//!   adapters then run on the runtime's blocking threads, and so do the ledger's calls on
//!   a store that may block (SQLite, PostgreSQL). The thread router drives async
//!   adapters on its own thread.
//!
//! ```
//! # #[cfg(not(feature = "tokio"))] fn main() {}
//! # #[cfg(feature = "tokio")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gateway::{DeliveryRouter, InternalMessage, Platform};
//! use process_registry::{AsyncDelegationEvent, CompletionQueue};
//!
//! let queue = CompletionQueue::new();
//! let (sent, mut telegram) = tokio::sync::mpsc::unbounded_channel();
//! let router = DeliveryRouter::builder(queue.clone())
//!     .async_adapter(Platform::Telegram, move |message: InternalMessage| {
//!         let sent = sent.clone();
//!         // The platform's API call, awaited; `Ok` acks the completion.
//!         async move { sent.send(message.text).map_err(|e| e.to_string().into()) }
//!     })
//!     .start_on(&tokio::runtime::Handle::current())?;
//! queue.put(AsyncDelegationEvent {
//!     session_key: "agent:main:telegram:dm:12345".into(),
//!     goal: "Find why CI is flaky".into(),
//!     summary: Some("A race in test_io.".into()),
//!     ..AsyncDelegationEvent::default()
//! });
//! assert!(telegram.recv().await.ok_or("no delivery")?.contains("A race in test_io."));
//! router.stop_async().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Fleets
//!
//! Several gateway processes share one ledger (PostgreSQL) with routers built
//! [`fleet`](DeliveryRouterBuilder::fleet): each holds a lease on every platform it has
//! an adapter for ([`platform_scope`]) and delivers a platform's completions only while it
//! holds it; a gateway with the same platforms stands by and takes them over within a
//! lease of the owner's death, getting what the dead one had claimed as possible
//! redeliveries, while the dead one's acks are refused. The repository's `fleet` example
//! runs two gateways and two workers as processes and kills one gateway.
//!
//! # Tracing
//!
//! The router continues each delegation's trace (`async_delegation`'s crate docs list the
//! engine's spans) with two `INFO` spans per claimed completion:
//!
//! | span | fields |
//! | --- | --- |
//! | `delegation.claim` | `delegation_id`, `session_key`, `traceparent` (the event's), `attempt`, `possible_redelivery`, and `outcome` once the claim is settled: `delivered`, `deferred`, `released` (retried later) or `dead` |
//! | `delegation.delivery` | `platform`, `chat_id` — inside the claim's span, around the adapter's call (the adapter's own spans nest inside it) |
//!
//! # The operator's view
//!
//! [`agents_view`] answers "where did my result go?": the engine's running delegations
//! (age, progress), the ledger's completions waiting for their chat and its dead letters
//! (attempts, reason), as an [`AgentsView`] — and [`AgentsView::render`] writes it as the
//! short text of a chat command such as `/agents`.
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade: no-ops until the program
//! installs a recorder (this crate never does). Names are constants in [`metrics`](mod@metrics);
//! the engine's side (dispatched, rejected, completed by status, running, run time) is
//! `async_delegation::metrics`; the `delegation_pending` gauge (completions waiting for
//! delivery) is the queue's, `process_registry::metrics`.
//!
//! | name | kind | unit |
//! | --- | --- | --- |
//! | `delegation_delivered_total` | counter | completions an adapter accepted |
//! | `delegation_deferred_total` | counter | claims put back for a busy session (no attempt spent) |
//! | `delegation_released_total` | counter | failed attempts, retried later |
//! | `delegation_dead_total` | counter | completions given up on |
//! | `delegation_time_to_delivery_seconds` | histogram | seconds, completion to delivery |
//! | `delegation_queue_wait_seconds` | histogram | seconds, completion to claim (for a busy session, until its turn ended) |
//!
//! # Features
//!
//! | feature | adds |
//! | --- | --- |
//! | `tokio` | `DeliveryRouterBuilder::start_on`, `DeliveryRouter::stop_async`: the router as tasks on a tokio runtime (and `delegate-tool`'s `tokio` feature) |
//!
//! Everything is a value passed in: a queue, a registry, an origin store. The process-wide
//! defaults ([`PlatformRegistry::global`], [`DeliveryRouter::builder_for_global_queue`])
//! are conveniences at the top of a program.
//!
//! # Example
//!
//! (`cargo run --example gateway_router -p gateway` runs a larger one: three platforms,
//! a busy session, a CLI-origin and an unroutable completion.)
//!
//! ```
//! use std::sync::mpsc;
//! use std::time::Duration;
//!
//! use gateway::{
//!     DeliveryRouter, InternalMessage, Platform, SessionKey, SessionKeyOptions, SessionSource,
//! };
//! use process_registry::{AsyncDelegationEvent, CompletionQueue};
//!
//! // A Telegram topic dispatches a background task; its session key goes with it.
//! let source = SessionSource::new(Platform::Telegram, "12345").with_thread_id("678");
//! let session_key = SessionKey::build(&source, &SessionKeyOptions::default());
//! assert_eq!(session_key.as_str(), "agent:main:telegram:dm:12345:678");
//!
//! // The gateway's delivery loop, with a Telegram adapter that forwards new turns.
//! let queue = CompletionQueue::new();
//! let (turns, new_turns) = mpsc::channel::<InternalMessage>();
//! let turns = std::sync::Mutex::new(turns);
//! let router = DeliveryRouter::builder(queue.clone())
//!     .adapter(Platform::Telegram, move |message: &InternalMessage| {
//!         turns.lock().map_err(|_| "poisoned")?.send(message.clone())?;
//!         Ok(())
//!     })
//!     .start()?;
//!
//! // The user is mid-turn when the subagent finishes: the completion waits.
//! let turn = router.turn(session_key.as_str());
//! queue.put(AsyncDelegationEvent {
//!     delegation_id: Some("deleg_1a2b3c4d".into()),
//!     session_key: session_key.as_str().into(),
//!     goal: "Investigate flaky test".into(),
//!     status: Some("completed".into()),
//!     summary: Some("Found the bug in test_foo".into()),
//!     ..AsyncDelegationEvent::default()
//! });
//! assert!(new_turns.recv_timeout(Duration::from_millis(50)).is_err());
//!
//! // The turn ends: the completion arrives as a new turn in the same chat and topic.
//! turn.end();
//! let message = new_turns.recv_timeout(Duration::from_secs(30))?;
//! assert_eq!(message.source.chat_id, "12345");
//! assert_eq!(message.source.thread_id.as_deref(), Some("678"));
//! assert!(message.text.contains("Found the bug in test_foo"));
//!
//! router.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// The guide: from "I have an agent" to "my agent delegates in the background"
/// (`docs/guide.md` in the repository; its code blocks run as this crate's doc tests).
#[doc = include_str!("../../../docs/guide.md")]
pub mod guide {}

mod dead_letter;
mod error;
mod format;
pub mod metrics;
mod operator;
mod platform;
mod router;
mod routing;
mod session_key;
mod source;
mod watch;

pub use dead_letter::{DeadLetter, DeadLetterStore};
pub use error::{GatewayError, Unroutable};
pub use format::{format_gateway_process_notification, format_gateway_process_notification_in};
pub use operator::{
    agents_view, AgentsView, RunningAgent, WaitingCompletion, RENDERED_PER_SECTION,
};
pub use platform::{CustomPlatform, Platform, PlatformRegistry};
pub use router::{
    platform_scope, Adapter, AdapterError, AsyncPlatformAdapter, Delivery, DeliveryRouter,
    DeliveryRouterBuilder, InternalMessage, NotificationFormatter, PlatformAdapter, RouterStats,
    TurnGuard, DELIVERY_THREAD_NAME,
};
pub use routing::{
    build_process_event_source, enrich_async_delegation_routing, enrich_event_routing,
    AsyncOriginStore, InMemoryOriginStore, NoOrigins, OriginLookup, OriginStore,
};
pub use session_key::{ParsedSessionKey, SessionKey, SessionKeyOptions};
pub use source::{SessionSource, CHAT_TYPE_DM};
pub use watch::drain_gateway_watch_events;
