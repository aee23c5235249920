//! Gateway routing (guide written with the router).

mod error;
mod platform;
mod routing;
mod session_key;
mod source;
mod watch;

pub use error::{GatewayError, Unroutable};
pub use platform::{CustomPlatform, Platform, PlatformRegistry};
pub use routing::{
    build_process_event_source, enrich_async_delegation_routing, enrich_event_routing,
    InMemoryOriginStore, NoOrigins, OriginStore,
};
pub use session_key::{ParsedSessionKey, SessionKey, SessionKeyOptions};
pub use source::{SessionSource, CHAT_TYPE_DM};
pub use watch::drain_gateway_watch_events;
