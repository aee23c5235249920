//! Routing: enriching events from their session key, and the source to deliver to.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use process_registry::{AsyncDelegationEvent, Event, Routing};

use crate::{ParsedSessionKey, PlatformRegistry, SessionKey, SessionSource, Unroutable};

/// Adds the route to an `async_delegation` event, in place, from its session key.
///
/// If the event already has a platform it is left alone. Otherwise its session key is
/// parsed ([`SessionKey::parse`]); when that fails — the CLI's empty key included —
/// nothing is added. Else `platform`, `chat_type` and `chat_id` are set, and `thread_id`
/// only when the key has one. Returns `true` when fields were added.
///
/// ```
/// use gateway::enrich_async_delegation_routing;
/// use process_registry::AsyncDelegationEvent;
///
/// let mut event = AsyncDelegationEvent {
///     session_key: "agent:main:telegram:dm:12345:678".into(),
///     ..AsyncDelegationEvent::default()
/// };
/// assert!(enrich_async_delegation_routing(&mut event));
/// assert_eq!(event.routing().platform.as_deref(), Some("telegram"));
/// assert_eq!(event.routing().chat_id.as_deref(), Some("12345"));
/// assert_eq!(event.routing().thread_id.as_deref(), Some("678"));
/// ```
pub fn enrich_async_delegation_routing(event: &mut AsyncDelegationEvent) -> bool {
    let Some(route) = route_to_add(event.routing(), &event.session_key) else {
        return false;
    };
    add_route(event.routing_mut(), route);
    true
}

/// [`enrich_async_delegation_routing`] on a routing of its own: what the router routes a
/// delegation by, without copying (or changing) the rest of the recorded event.
pub(crate) fn enriched_routing(event: &AsyncDelegationEvent) -> Routing {
    let mut routing = event.routing().clone();
    if let Some(route) = route_to_add(&routing, &event.session_key) {
        add_route(&mut routing, route);
    }
    routing
}

/// Enrichment's rule: the route `session_key` names, unless `routing` has a platform.
fn route_to_add(routing: &Routing, session_key: &str) -> Option<ParsedSessionKey> {
    if has_value(&routing.platform) {
        return None;
    }
    SessionKey::parse(session_key).ok()
}

/// Fills `routing` from a parsed session key.
fn add_route(routing: &mut Routing, route: ParsedSessionKey) {
    routing.platform = Some(route.platform);
    routing.chat_type = Some(route.chat_type);
    routing.chat_id = Some(route.chat_id);
    if route.thread_id.is_some() {
        routing.thread_id = route.thread_id;
    }
}

/// [`enrich_async_delegation_routing`] for any event: enriches an
/// [`Event::AsyncDelegation`], leaves every other event unchanged (returns `false`).
pub fn enrich_event_routing(event: &mut Event) -> bool {
    match event {
        Event::AsyncDelegation(event) => enrich_async_delegation_routing(event),
        _ => false,
    }
}

fn has_value(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.is_empty())
}

/// Known origins of sessions: the session store and recent-source cache of a gateway.
///
/// [`build_process_event_source`] asks it first, so a session whose origin is known is
/// delivered exactly where its last message came from (with the chat name, user alt ids,
/// scope… that a session key cannot carry). Implementations must be cheap and must not
/// call back into the router.
pub trait OriginStore: Send + Sync {
    /// The source of the session `session_key`, when known.
    fn origin(&self, session_key: &str) -> Option<SessionSource>;
}

/// The lookup in progress of an [`AsyncOriginStore`].
pub type OriginLookup =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<SessionSource>> + Send>>;

/// An [`OriginStore`] whose lookup is a future (a session store in a database, read
/// without blocking). The router awaits it before it routes a completion (on a runtime;
/// the thread router drives it on its thread); a panic while it is polled costs that
/// completion only, as in an [`OriginStore`].
pub trait AsyncOriginStore: Send + Sync {
    /// The source of the session `session_key`, when known.
    fn origin(&self, session_key: &str) -> OriginLookup;
}

/// An origin already looked up: what routing reads once an [`AsyncOriginStore`] answered.
pub(crate) struct Known(pub(crate) Option<SessionSource>);

impl OriginStore for Known {
    fn origin(&self, _session_key: &str) -> Option<SessionSource> {
        self.0.clone()
    }
}

/// An [`OriginStore`] that knows nothing: routes come from the events and their keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOrigins;

impl OriginStore for NoOrigins {
    fn origin(&self, _session_key: &str) -> Option<SessionSource> {
        None
    }
}

/// A simple in-memory [`OriginStore`]: a cloneable handle over a map from session key
/// to the latest source seen for it.
///
/// ```
/// use gateway::{InMemoryOriginStore, OriginStore, Platform, SessionSource};
///
/// let origins = InMemoryOriginStore::new();
/// origins.record("agent:main:slack:channel:C1:U1", SessionSource::new(Platform::Slack, "C1").with_chat_type("channel"));
/// assert_eq!(origins.origin("agent:main:slack:channel:C1:U1").map(|s| s.chat_id), Some("C1".to_owned()));
/// assert!(origins.origin("agent:main:slack:channel:C2:U1").is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryOriginStore {
    origins: Arc<RwLock<HashMap<String, SessionSource>>>,
}

impl InMemoryOriginStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records (or replaces) the origin of `session_key`.
    pub fn record(&self, session_key: impl Into<String>, source: SessionSource) {
        self.origins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session_key.into(), source);
    }

    /// Forgets the origin of `session_key`; returns it when it was known.
    pub fn forget(&self, session_key: &str) -> Option<SessionSource> {
        self.origins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(session_key)
    }

    /// Number of known origins.
    pub fn len(&self) -> usize {
        self.origins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// `true` when no origin is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl OriginStore for InMemoryOriginStore {
    fn origin(&self, session_key: &str) -> Option<SessionSource> {
        self.origins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(session_key)
            .cloned()
    }
}

impl<T: OriginStore + ?Sized> OriginStore for Arc<T> {
    fn origin(&self, session_key: &str) -> Option<SessionSource> {
        (**self).origin(session_key)
    }
}

fn event_routing(event: &Event) -> Option<&Routing> {
    match event {
        Event::AsyncDelegation(e) => Some(e.routing()),
        Event::WatchMatch(e) => Some(e.routing()),
        Event::WatchDisabled(e) => Some(e.routing()),
        _ => None,
    }
}

/// Builds the [`SessionSource`] an event is delivered to.
///
/// 1. A known origin for the event's session key (from `origins`), when there is one.
/// 2. Else the event's own `platform`, `chat_type` and `chat_id`; any of the three the
///    event lacks is taken from its parsed session key (the last resort).
///
/// `thread_id`, `user_id`, `user_name` and `message_id` (the reply anchor) come from the
/// event; on an origin-based source, the origin's value stays where the event has none.
/// The platform name is parsed with `platforms` (trimmed and lowercased, as
/// [`Platform::builtin`](crate::Platform::builtin) does).
///
/// # Errors
/// The reason, never a silent `None`: [`Unroutable::MissingPlatform`],
/// [`Unroutable::MissingChatType`] or [`Unroutable::MissingChatId`] when no step
/// supplies it (a CLI-origin event without routing fields ends here), and
/// [`Unroutable::UnknownPlatform`] when `platforms` does not know the name.
///
/// ```
/// use gateway::{build_process_event_source, enrich_event_routing, NoOrigins, Platform, PlatformRegistry};
/// use process_registry::{AsyncDelegationEvent, Event};
///
/// let mut event = Event::from(AsyncDelegationEvent {
///     session_key: "agent:main:discord:thread:c1:t9".into(),
///     ..AsyncDelegationEvent::default()
/// });
/// enrich_event_routing(&mut event);
/// let source = build_process_event_source(&event, &NoOrigins, &PlatformRegistry::new())?;
/// assert_eq!(source.platform, Platform::Discord);
/// assert_eq!((source.chat_type.as_str(), source.chat_id.as_str()), ("thread", "c1"));
/// assert_eq!(source.thread_id.as_deref(), Some("t9"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn build_process_event_source(
    event: &Event,
    origins: &dyn OriginStore,
    platforms: &PlatformRegistry,
) -> Result<SessionSource, Unroutable> {
    let routing = event_routing(event).cloned().unwrap_or_default();
    resolve_source(
        event.session_key().unwrap_or(""),
        routing,
        origins,
        platforms,
    )
}

/// [`build_process_event_source`] from an event's parts: its session key and its routing,
/// taken by value (the source is built from its strings, not from copies of them).
pub(crate) fn resolve_source(
    session_key: &str,
    routing: Routing,
    origins: &dyn OriginStore,
    platforms: &PlatformRegistry,
) -> Result<SessionSource, Unroutable> {
    let origin = if session_key.is_empty() {
        None
    } else {
        origins.origin(session_key)
    };
    let Routing {
        platform,
        chat_type,
        chat_id,
        user_id,
        user_name,
        thread_id,
        message_id,
    } = routing;
    let (user_id, user_name, message_id) = (value(user_id), value(user_name), value(message_id));
    if let Some(mut source) = origin {
        overlay(&mut source.thread_id, value(thread_id));
        overlay(&mut source.user_id, user_id);
        overlay(&mut source.user_name, user_name);
        overlay(&mut source.message_id, message_id);
        return Ok(source);
    }

    let mut platform = value(platform);
    let mut chat_type = value(chat_type);
    let mut chat_id = value(chat_id);
    let mut thread_id = value(thread_id);
    if platform.is_none() || chat_type.is_none() || chat_id.is_none() {
        if let Ok(route) = SessionKey::parse(session_key) {
            platform = platform.or(Some(route.platform));
            chat_type = chat_type.or(Some(route.chat_type));
            chat_id = chat_id.or(Some(route.chat_id));
            thread_id = thread_id.or(route.thread_id);
        }
    }
    let key = || session_key.to_owned();
    let platform_name =
        platform.ok_or_else(|| Unroutable::MissingPlatform { session_key: key() })?;
    let chat_type = chat_type.ok_or_else(|| Unroutable::MissingChatType { session_key: key() })?;
    let chat_id = chat_id.ok_or_else(|| Unroutable::MissingChatId { session_key: key() })?;
    let platform = platforms
        .parse(&platform_name)
        .map_err(|_| Unroutable::UnknownPlatform {
            platform: platform_name,
            session_key: key(),
        })?;
    let mut source = SessionSource::new(platform, chat_id).with_chat_type(chat_type);
    source.thread_id = thread_id;
    source.user_id = user_id;
    source.user_name = user_name;
    source.message_id = message_id;
    Ok(source)
}

/// A field's value, when it has a non-empty one.
fn value(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn overlay(target: &mut Option<String>, from_event: Option<String>) {
    if let Some(v) = from_event {
        *target = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Platform;
    use process_registry::{WatchMatch, WatchOverflow};

    fn async_event(session_key: &str) -> AsyncDelegationEvent {
        AsyncDelegationEvent {
            delegation_id: Some("deleg_0000abcd".into()),
            session_key: session_key.into(),
            goal: "g".into(),
            ..AsyncDelegationEvent::default()
        }
    }

    #[test]
    fn enrichment_leaves_an_existing_platform_alone() {
        let mut event = async_event("agent:main:telegram:dm:12345:678");
        event.routing_mut().platform = Some("slack".into());
        assert!(!enrich_async_delegation_routing(&mut event));
        assert_eq!(
            *event.routing(),
            Routing {
                platform: Some("slack".into()),
                ..Routing::default()
            }
        );
    }

    #[test]
    fn enrichment_adds_thread_only_when_the_key_has_one() {
        let mut event = async_event("agent:main:telegram:group:chat1:user99");
        assert!(enrich_async_delegation_routing(&mut event));
        assert_eq!(
            *event.routing(),
            Routing {
                platform: Some("telegram".into()),
                chat_type: Some("group".into()),
                chat_id: Some("chat1".into()),
                ..Routing::default()
            }
        );
        let json = serde_json::to_value(Event::from(event)).unwrap();
        assert!(json.get("thread_id").is_none());
    }

    #[test]
    fn enrichment_of_unparsable_keys_adds_nothing() {
        for key in ["", "agent:main:telegram", "cron:main:telegram:dm:1"] {
            let mut event = async_event(key);
            assert!(!enrich_async_delegation_routing(&mut event), "{key:?}");
            assert!(event.routing.is_none(), "{key:?}");
        }
        let mut other = Event::WatchOverflowTripped(WatchOverflow::default());
        assert!(!enrich_event_routing(&mut other));
    }

    #[test]
    fn origin_wins_and_event_fields_overlay_it() {
        let key = "agent:main:telegram:dm:12345:678";
        let origins = InMemoryOriginStore::new();
        let mut origin = SessionSource::new(Platform::Telegram, "12345")
            .with_user_id("u-origin")
            .with_message_id("m-origin");
        origin.chat_name = Some("Alice".into());
        origins.record(key, origin);
        let mut event = async_event(key);
        event.routing_mut().thread_id = Some("678".into());
        event.routing_mut().message_id = Some("m-event".into());
        let source =
            build_process_event_source(&event.into(), &origins, &PlatformRegistry::new()).unwrap();
        assert_eq!(source.chat_name.as_deref(), Some("Alice"));
        assert_eq!(source.thread_id.as_deref(), Some("678"));
        assert_eq!(source.user_id.as_deref(), Some("u-origin"));
        assert_eq!(source.message_id.as_deref(), Some("m-event"));
        assert_eq!(origins.len(), 1);
        assert!(origins.forget(key).is_some());
        assert!(origins.is_empty());
    }

    #[test]
    fn event_fields_win_over_the_key_and_the_key_fills_gaps() {
        // A watch event carries platform and chat id but no chat type.
        let event = Event::WatchMatch(WatchMatch {
            session_key: Some("agent:main:discord:group:g1:u1".into()),
            routing: Some(Box::new(Routing {
                platform: Some("Discord".into()),
                chat_id: Some("g2".into()),
                user_id: Some("u1".into()),
                user_name: Some("bob".into()),
                ..Routing::default()
            })),
            ..WatchMatch::default()
        });
        let source =
            build_process_event_source(&event, &NoOrigins, &PlatformRegistry::new()).unwrap();
        assert_eq!(source.platform, Platform::Discord);
        assert_eq!(source.chat_type, "group");
        assert_eq!(source.chat_id, "g2");
        assert_eq!(source.user_id.as_deref(), Some("u1"));
        assert_eq!(source.user_name.as_deref(), Some("bob"));
        assert_eq!(source.thread_id, None);
    }

    #[test]
    fn unroutable_events_say_why() {
        let platforms = PlatformRegistry::new();
        let cli = Event::from(async_event(""));
        assert_eq!(
            build_process_event_source(&cli, &NoOrigins, &platforms),
            Err(Unroutable::MissingPlatform {
                session_key: String::new()
            })
        );
        let mut no_type = async_event("");
        no_type.routing_mut().platform = Some("telegram".into());
        no_type.routing_mut().chat_id = Some("1".into());
        assert_eq!(
            build_process_event_source(&no_type.into(), &NoOrigins, &platforms),
            Err(Unroutable::MissingChatType {
                session_key: String::new()
            })
        );
        let mut no_chat = async_event("");
        no_chat.routing_mut().platform = Some("telegram".into());
        no_chat.routing_mut().chat_type = Some("dm".into());
        assert_eq!(
            build_process_event_source(&no_chat.into(), &NoOrigins, &platforms),
            Err(Unroutable::MissingChatId {
                session_key: String::new()
            })
        );
        let unknown = Event::from(async_event("agent:main:myspace:dm:1"));
        let err = build_process_event_source(&unknown, &NoOrigins, &platforms).unwrap_err();
        assert_eq!(
            err,
            Unroutable::UnknownPlatform {
                platform: "myspace".into(),
                session_key: "agent:main:myspace:dm:1".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown platform \"myspace\" for session key \"agent:main:myspace:dm:1\""
        );
        platforms.register("myspace").unwrap();
        let source = build_process_event_source(&unknown, &NoOrigins, &platforms).unwrap();
        assert_eq!(source.platform.as_str(), "myspace");
    }
}
