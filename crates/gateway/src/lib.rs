//! Gateway routing (guide written with the router).

mod dead_letter;
mod error;
mod format;
mod platform;
mod router;
mod routing;
mod session_key;
mod source;
mod watch;

pub use dead_letter::{DeadLetter, DeadLetterStore};
pub use error::{GatewayError, Unroutable};
pub use format::format_gateway_process_notification;
pub use platform::{CustomPlatform, Platform, PlatformRegistry};
pub use router::{
    AdapterError, DeliveryRouter, DeliveryRouterBuilder, InternalMessage, NotificationFormatter,
    PlatformAdapter, RouterStats, TurnGuard, DEFAULT_POLL_INTERVAL, DEFAULT_REQUEUE_BACKOFF,
    DELIVERY_THREAD_NAME,
};
pub use routing::{
    build_process_event_source, enrich_async_delegation_routing, enrich_event_routing,
    InMemoryOriginStore, NoOrigins, OriginStore,
};
pub use session_key::{ParsedSessionKey, SessionKey, SessionKeyOptions};
pub use source::{SessionSource, CHAT_TYPE_DM};
pub use watch::drain_gateway_watch_events;
