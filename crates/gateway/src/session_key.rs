//! Session keys: building them from a source, and parsing a route back out of them.

use std::fmt;

use crate::{GatewayError, SessionSource, CHAT_TYPE_DM};

/// The namespace of the default profile.
const MAIN: &str = "main";

/// How [`SessionKey::build`] isolates users.
///
/// The defaults are the contract's: per-user group sessions on, per-user thread sessions
/// off, the default profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeyOptions {
    /// In group-like chats (anything but `dm`), give each user their own session by
    /// appending `user_id_alt` (or `user_id`). Default `true`.
    pub group_sessions_per_user: bool,
    /// Also do so inside threads (a source with a thread id, or chat type `thread`).
    /// Default `false`: a thread is one shared session.
    pub thread_sessions_per_user: bool,
    /// The profile namespace. `None` uses the source's `profile`; a profile that is
    /// absent, empty, `main` or `default` is the default namespace `main`.
    pub profile: Option<String>,
}

impl Default for SessionKeyOptions {
    fn default() -> Self {
        SessionKeyOptions {
            group_sessions_per_user: true,
            thread_sessions_per_user: false,
            profile: None,
        }
    }
}

/// A gateway session key, e.g. `agent:main:telegram:dm:12345:678`.
///
/// Build one from a [`SessionSource`] with [`SessionKey::build`]; read the route back
/// with [`SessionKey::parse`]. A key is an opaque identifier for everything else: the
/// empty key is a CLI session, and [`SessionKey::new`] wraps any string.
///
/// ```
/// use gateway::{Platform, SessionKey, SessionKeyOptions, SessionSource};
///
/// let source = SessionSource::new(Platform::Telegram, "12345").with_thread_id("678");
/// let key = SessionKey::build(&source, &SessionKeyOptions::default());
/// assert_eq!(key.as_str(), "agent:main:telegram:dm:12345:678");
///
/// let route = SessionKey::parse("agent:main:telegram:group:chat1:user99")?;
/// assert_eq!((route.platform.as_str(), route.chat_type.as_str(), route.chat_id.as_str()), ("telegram", "group", "chat1"));
/// assert_eq!(route.thread_id, None, "part 5 of a group key is a user, not a thread");
/// assert!(SessionKey::parse("cron:main:telegram:dm:123").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SessionKey(String);

/// The route read out of a session key by [`SessionKey::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSessionKey {
    /// The profile namespace; `None` for the default namespace `main`.
    pub profile: Option<String>,
    /// The platform name as written in the key (not validated against a registry).
    pub platform: String,
    /// The chat type.
    pub chat_type: String,
    /// The chat id.
    pub chat_id: String,
    /// The thread id: part 5 of a `dm` or `thread` key, when present and non-empty.
    pub thread_id: Option<String>,
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

impl SessionKey {
    /// Wraps a string as a session key, unchecked (keys are opaque identifiers).
    pub fn new(key: impl Into<String>) -> Self {
        SessionKey(key.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// `true` for the empty key of a CLI session (unrouted).
    pub fn is_cli(&self) -> bool {
        self.0.is_empty()
    }

    /// Builds the key of the session `source` belongs to.
    ///
    /// - `dm`: `agent:{ns}:{platform}:dm:{chat_id}[:{thread_id}]`; without a chat id, the
    ///   thread id alone (`agent:{ns}:{platform}:dm:{thread_id}`) or nothing
    ///   (`agent:{ns}:{platform}:dm`).
    /// - other chat types: `agent:{ns}:{platform}:{chat_type}[:{chat_id}][:{thread_id}][:{user}]`
    ///   where user = `user_id_alt` or `user_id`, appended when
    ///   [`group_sessions_per_user`](SessionKeyOptions::group_sessions_per_user) is on —
    ///   except in a thread (a thread id is set, or the chat type is `thread`) unless
    ///   [`thread_sessions_per_user`](SessionKeyOptions::thread_sessions_per_user) is on.
    /// - `{ns}` is `main`, or the profile name for a non-default profile.
    ///
    /// Empty optional fields count as absent. Ids are used verbatim: an id containing `:`
    /// builds a key whose parse reads different parts.
    pub fn build(source: &SessionSource, options: &SessionKeyOptions) -> SessionKey {
        let profile = present(&options.profile).or(present(&source.profile));
        let namespace = match profile {
            None | Some(MAIN) | Some("default") => MAIN,
            Some(profile) => profile,
        };
        let platform = source.platform.as_str();
        let chat_id = Some(source.chat_id.as_str()).filter(|id| !id.is_empty());
        let thread_id = present(&source.thread_id);

        let mut key = String::with_capacity(64);
        key.push_str("agent:");
        key.push_str(namespace);
        key.push(':');
        key.push_str(platform);
        key.push(':');
        if source.chat_type == CHAT_TYPE_DM {
            key.push_str(CHAT_TYPE_DM);
            for part in [chat_id, thread_id].into_iter().flatten() {
                key.push(':');
                key.push_str(part);
            }
            return SessionKey(key);
        }
        key.push_str(&source.chat_type);
        for part in [chat_id, thread_id].into_iter().flatten() {
            key.push(':');
            key.push_str(part);
        }
        let in_thread = thread_id.is_some() || source.chat_type == "thread";
        let per_user =
            options.group_sessions_per_user && (!in_thread || options.thread_sessions_per_user);
        if per_user {
            if let Some(user) = present(&source.user_id_alt).or(present(&source.user_id)) {
                key.push(':');
                key.push_str(user);
            }
        }
        SessionKey(key)
    }

    /// Reads the route out of a session key.
    ///
    /// The key splits on `:` into at least 5 parts: `agent`, the namespace (`main` or a
    /// non-empty profile name), platform, chat type, chat id. Part 5 is the thread id
    /// **only** for `dm` and `thread` keys (for other chat types it may be a user).
    /// The platform is not checked against a registry here.
    ///
    /// # Errors
    /// [`GatewayError::InvalidSessionKey`] with the reason: empty (a CLI session), fewer
    /// than 5 parts, no `agent` prefix, empty namespace, or an empty platform, chat type
    /// or chat id.
    pub fn parse(key: &str) -> Result<ParsedSessionKey, GatewayError> {
        let invalid = |reason: &'static str| GatewayError::InvalidSessionKey {
            key: key.to_owned(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("the key is empty (a CLI session)"));
        }
        let mut parts = key.split(':');
        let (Some(prefix), Some(namespace), Some(platform), Some(chat_type), Some(chat_id)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid("fewer than 5 ':'-separated parts"));
        };
        if prefix != "agent" {
            return Err(invalid("it does not start with \"agent\""));
        }
        if namespace.is_empty() {
            return Err(invalid("the profile namespace is empty"));
        }
        if platform.is_empty() {
            return Err(invalid("the platform is empty"));
        }
        if chat_type.is_empty() {
            return Err(invalid("the chat type is empty"));
        }
        if chat_id.is_empty() {
            return Err(invalid("the chat id is empty"));
        }
        let thread_id = match chat_type {
            "dm" | "thread" => parts.next().filter(|t| !t.is_empty()).map(str::to_owned),
            _ => None,
        };
        Ok(ParsedSessionKey {
            profile: (namespace != MAIN).then(|| namespace.to_owned()),
            platform: platform.to_owned(),
            chat_type: chat_type.to_owned(),
            chat_id: chat_id.to_owned(),
            thread_id,
        })
    }

    /// [`SessionKey::parse`] of this key.
    ///
    /// # Errors
    /// As [`SessionKey::parse`].
    pub fn route(&self) -> Result<ParsedSessionKey, GatewayError> {
        SessionKey::parse(&self.0)
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SessionKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<String> for SessionKey {
    fn from(key: String) -> Self {
        SessionKey(key)
    }
}

impl From<&str> for SessionKey {
    fn from(key: &str) -> Self {
        SessionKey(key.to_owned())
    }
}

impl From<SessionKey> for String {
    fn from(key: SessionKey) -> Self {
        key.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Platform;
    use proptest::prelude::*;

    fn opts(group: bool, thread: bool) -> SessionKeyOptions {
        SessionKeyOptions {
            group_sessions_per_user: group,
            thread_sessions_per_user: thread,
            profile: None,
        }
    }

    #[test]
    fn build_table() {
        let tg = |chat: &str| SessionSource::new(Platform::Telegram, chat);
        let default = SessionKeyOptions::default();
        let cases: Vec<(&str, SessionSource, SessionKeyOptions, &str)> = vec![
            (
                "dm",
                tg("12345"),
                default.clone(),
                "agent:main:telegram:dm:12345",
            ),
            (
                "dm with thread",
                tg("12345").with_thread_id("678"),
                default.clone(),
                "agent:main:telegram:dm:12345:678",
            ),
            (
                "dm ignores the user",
                tg("12345").with_user_id("u1"),
                default.clone(),
                "agent:main:telegram:dm:12345",
            ),
            (
                "dm without chat id, thread alone",
                tg("").with_thread_id("678"),
                default.clone(),
                "agent:main:telegram:dm:678",
            ),
            (
                "dm without chat id or thread",
                tg(""),
                default.clone(),
                "agent:main:telegram:dm",
            ),
            (
                "group, per-user on (default)",
                tg("chat1").with_chat_type("group").with_user_id("user99"),
                default.clone(),
                "agent:main:telegram:group:chat1:user99",
            ),
            (
                "group, per-user off",
                tg("chat1").with_chat_type("group").with_user_id("user99"),
                opts(false, false),
                "agent:main:telegram:group:chat1",
            ),
            (
                "group without a user",
                tg("chat1").with_chat_type("group"),
                default.clone(),
                "agent:main:telegram:group:chat1",
            ),
            (
                "user_id_alt preferred",
                tg("chat1")
                    .with_chat_type("group")
                    .with_user_id("user99")
                    .with_user_id_alt("alt7"),
                default.clone(),
                "agent:main:telegram:group:chat1:alt7",
            ),
            (
                "empty user_id_alt falls back to user_id",
                tg("chat1")
                    .with_chat_type("group")
                    .with_user_id("user99")
                    .with_user_id_alt(""),
                default.clone(),
                "agent:main:telegram:group:chat1:user99",
            ),
            (
                "shared thread in a group (per-user threads off)",
                tg("chat1")
                    .with_chat_type("group")
                    .with_thread_id("t5")
                    .with_user_id("user99"),
                default.clone(),
                "agent:main:telegram:group:chat1:t5",
            ),
            (
                "per-user thread",
                tg("chat1")
                    .with_chat_type("group")
                    .with_thread_id("t5")
                    .with_user_id("user99"),
                opts(true, true),
                "agent:main:telegram:group:chat1:t5:user99",
            ),
            (
                "per-user thread needs per-user groups",
                tg("chat1")
                    .with_chat_type("group")
                    .with_thread_id("t5")
                    .with_user_id("user99"),
                opts(false, true),
                "agent:main:telegram:group:chat1:t5",
            ),
            (
                "thread chat type is shared",
                SessionSource::new(Platform::Discord, "c1")
                    .with_chat_type("thread")
                    .with_thread_id("t9")
                    .with_user_id("u1"),
                default.clone(),
                "agent:main:discord:thread:c1:t9",
            ),
            (
                "channel",
                SessionSource::new(Platform::Slack, "C024BE91L")
                    .with_chat_type("channel")
                    .with_user_id("U1"),
                default.clone(),
                "agent:main:slack:channel:C024BE91L:U1",
            ),
            (
                "group without chat id",
                SessionSource::new(Platform::Slack, "")
                    .with_chat_type("group")
                    .with_user_id("U1"),
                default.clone(),
                "agent:main:slack:group:U1",
            ),
            (
                "profile from the source",
                tg("12345").with_profile("work"),
                default.clone(),
                "agent:work:telegram:dm:12345",
            ),
            (
                "profile from the options wins",
                tg("12345").with_profile("work"),
                SessionKeyOptions {
                    profile: Some("home".into()),
                    ..SessionKeyOptions::default()
                },
                "agent:home:telegram:dm:12345",
            ),
            (
                "default profile is main",
                tg("12345").with_profile("default"),
                default.clone(),
                "agent:main:telegram:dm:12345",
            ),
            (
                "empty profile is main",
                tg("12345").with_profile(""),
                default.clone(),
                "agent:main:telegram:dm:12345",
            ),
        ];
        for (name, source, options, expected) in cases {
            assert_eq!(
                SessionKey::build(&source, &options).as_str(),
                expected,
                "{name}"
            );
        }
    }

    fn route(
        platform: &str,
        chat_type: &str,
        chat_id: &str,
        thread: Option<&str>,
    ) -> ParsedSessionKey {
        ParsedSessionKey {
            profile: None,
            platform: platform.into(),
            chat_type: chat_type.into(),
            chat_id: chat_id.into(),
            thread_id: thread.map(Into::into),
        }
    }

    #[test]
    fn parse_table() {
        let ok_cases = [
            (
                "agent:main:telegram:dm:12345:678",
                route("telegram", "dm", "12345", Some("678")),
            ),
            (
                "agent:main:telegram:dm:12345",
                route("telegram", "dm", "12345", None),
            ),
            (
                "agent:main:telegram:group:chat1:user99",
                route("telegram", "group", "chat1", None),
            ),
            (
                "agent:main:telegram:group:chat1:t5:user99",
                route("telegram", "group", "chat1", None),
            ),
            (
                "agent:main:slack:channel:C1:U1",
                route("slack", "channel", "C1", None),
            ),
            (
                "agent:main:discord:thread:c1:t9",
                route("discord", "thread", "c1", Some("t9")),
            ),
            (
                "agent:main:discord:thread:c1",
                route("discord", "thread", "c1", None),
            ),
            (
                "agent:main:telegram:dm:12345:",
                route("telegram", "dm", "12345", None),
            ),
            ("agent:main:myspace:dm:1", route("myspace", "dm", "1", None)),
            (
                "agent:work:telegram:dm:12345:678",
                ParsedSessionKey {
                    profile: Some("work".into()),
                    ..route("telegram", "dm", "12345", Some("678"))
                },
            ),
        ];
        for (key, expected) in ok_cases {
            assert_eq!(SessionKey::parse(key), Ok(expected), "{key}");
        }
        let err_cases = [
            ("", "the key is empty (a CLI session)"),
            ("agent:main:telegram", "fewer than 5 ':'-separated parts"),
            ("agent:main:telegram:dm", "fewer than 5 ':'-separated parts"),
            (
                "cron:main:telegram:dm:123",
                "it does not start with \"agent\"",
            ),
            (
                "Agent:main:telegram:dm:123",
                "it does not start with \"agent\"",
            ),
            ("agent::telegram:dm:123", "the profile namespace is empty"),
            ("agent:main::dm:123", "the platform is empty"),
            ("agent:main:telegram::123", "the chat type is empty"),
            ("agent:main:telegram:dm:", "the chat id is empty"),
        ];
        for (key, reason) in err_cases {
            assert_eq!(
                SessionKey::parse(key),
                Err(GatewayError::InvalidSessionKey {
                    key: key.into(),
                    reason
                }),
                "{key:?}"
            );
        }
    }

    #[test]
    fn session_key_value_helpers() {
        let key = SessionKey::from("agent:main:telegram:dm:1");
        assert_eq!(key.to_string(), "agent:main:telegram:dm:1");
        assert_eq!(key.route().unwrap().chat_id, "1");
        assert!(SessionKey::default().is_cli());
        assert!(!key.is_cli());
        assert_eq!(String::from(key.clone()), key.into_string());
    }

    fn id() -> impl Strategy<Value = String> {
        "[^:]{1,12}"
    }

    fn platform() -> impl Strategy<Value = Platform> {
        proptest::sample::select(Platform::BUILT_IN.to_vec())
    }

    fn chat_type() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("dm".to_owned()),
            Just("group".to_owned()),
            Just("channel".to_owned()),
            Just("thread".to_owned()),
            "[a-z_]{1,8}",
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_agrees_with_the_parts(key in "[a-z:]{0,30}|agent:[^:]{0,6}:[^:]{0,6}:[^:]{0,6}:.{0,12}") {
            if let Ok(parsed) = SessionKey::parse(&key) {
                let parts: Vec<&str> = key.split(':').collect();
                prop_assert!(parts.len() >= 5);
                prop_assert_eq!(parts[0], "agent");
                prop_assert_eq!(parts[2], parsed.platform.as_str());
                prop_assert_eq!(parts[3], parsed.chat_type.as_str());
                prop_assert_eq!(parts[4], parsed.chat_id.as_str());
            }
        }

        #[test]
        fn built_keys_parse_back(
            platform in platform(),
            chat_type in chat_type(),
            chat_id in id(),
            thread_id in id(),
            has_thread in any::<bool>(),
            user_id in proptest::option::of(id()),
            user_id_alt in proptest::option::of(id()),
            profile in proptest::option::of("[a-z]{1,8}"),
            group_per_user in any::<bool>(),
            thread_per_user in any::<bool>(),
        ) {
            // A `thread` chat needs its thread id: without one, a per-user key's user
            // part would sit where the thread id is read.
            let has_thread = has_thread || chat_type == "thread";
            let mut source = SessionSource::new(platform.clone(), chat_id.clone()).with_chat_type(chat_type.clone());
            source.thread_id = has_thread.then(|| thread_id.clone());
            source.user_id = user_id;
            source.user_id_alt = user_id_alt;
            source.profile = profile.clone();
            let options = opts(group_per_user, thread_per_user);
            let key = SessionKey::build(&source, &options);
            let parsed = SessionKey::parse(key.as_str()).unwrap();
            prop_assert_eq!(parsed.platform.as_str(), platform.as_str());
            prop_assert_eq!(&parsed.chat_type, &chat_type);
            prop_assert_eq!(&parsed.chat_id, &chat_id);
            if chat_type == "dm" || chat_type == "thread" {
                prop_assert_eq!(parsed.thread_id, source.thread_id);
            } else {
                prop_assert_eq!(parsed.thread_id, None);
            }
            let expected_profile = profile.filter(|p| p != "main" && p != "default");
            prop_assert_eq!(parsed.profile, expected_profile);
        }
    }
}
