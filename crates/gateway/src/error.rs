//! The crate's error enum and the reasons an event cannot be routed.

use crate::Platform;

/// What can go wrong when calling the gateway's API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The name is neither a built-in platform nor registered in the registry used.
    #[error("unknown platform {name:?}: not a built-in platform and not registered")]
    UnknownPlatform {
        /// The name as given.
        name: String,
    },
    /// A run-time platform name that cannot be used.
    #[error("invalid platform name {name:?}: {reason}")]
    InvalidPlatformName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A string that is not a routable session key (see [`SessionKey::parse`](crate::SessionKey::parse)).
    #[error("invalid session key {key:?}: {reason}")]
    InvalidSessionKey {
        /// The key as given.
        key: String,
        /// Why it does not parse.
        reason: &'static str,
    },
    /// The delivery router's thread could not be spawned.
    #[error("could not start the gateway-delivery thread: {0}")]
    SpawnFailed(String),
}

/// Why an event could not be delivered to a chat. Every unroutable completion is kept in
/// the [`DeadLetterStore`](crate::DeadLetterStore) with one of these, and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    /// Neither the origin store, the event nor its session key name a platform.
    #[error("no platform: no known origin for session key {session_key:?}, no platform on the event, and the key does not parse")]
    MissingPlatform {
        /// The event's session key.
        session_key: String,
    },
    /// No chat type could be found for the route.
    #[error("no chat type: no known origin for session key {session_key:?}, no chat_type on the event, and the key does not parse")]
    MissingChatType {
        /// The event's session key.
        session_key: String,
    },
    /// No chat id could be found for the route.
    #[error("no chat id: no known origin for session key {session_key:?}, no chat_id on the event, and the key does not parse")]
    MissingChatId {
        /// The event's session key.
        session_key: String,
    },
    /// The route names a platform this gateway does not know.
    #[error("unknown platform {platform:?} for session key {session_key:?}")]
    UnknownPlatform {
        /// The platform name found.
        platform: String,
        /// The event's session key.
        session_key: String,
    },
    /// The platform is known but no adapter is registered for it.
    #[error("no adapter registered for platform {0}")]
    NoAdapter(Platform),
    /// The adapter refused the message.
    #[error("the {platform} adapter failed: {error}")]
    AdapterFailed {
        /// The route's platform.
        platform: Platform,
        /// The adapter's error, as text.
        error: String,
    },
    /// The adapter panicked; the router caught it and carried on.
    #[error("the {platform} adapter panicked: {message}")]
    AdapterPanicked {
        /// The route's platform.
        platform: Platform,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The completion formatter panicked; the router caught it and carried on.
    #[error("the completion formatter panicked: {message}")]
    FormatterPanicked {
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The origin store panicked while looking the session up; the router caught it and
    /// carried on.
    #[error("the origin store panicked for session key {session_key:?}: {message}")]
    OriginStorePanicked {
        /// The completion's session key.
        session_key: String,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The router's formatter rendered no text for this event (a custom formatter
    /// returned `None`, or the gateway formatter was asked for an event type it does
    /// not render).
    #[error("the gateway renders no text for {event_type:?} events")]
    NothingToDeliver {
        /// The event's wire type.
        event_type: String,
    },
}
