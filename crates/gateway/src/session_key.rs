//! Session keys: building them from a source, and parsing a route back out of them.

use std::borrow::Cow;
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

/// Appends `segment` to `key` with its `%` written `%25` and its `:` written `%3A`, so
/// the segment can hold any text and still be exactly one `:`-separated part.
fn push_escaped(key: &mut String, segment: &str) {
    let mut rest = segment;
    while let Some(at) = rest.find([':', '%']) {
        key.push_str(&rest[..at]);
        key.push_str(if rest.as_bytes()[at] == b':' {
            "%3A"
        } else {
            "%25"
        });
        rest = &rest[at + 1..];
    }
    key.push_str(rest);
}

/// Undoes [`push_escaped`]: `%3A` and `%3a` read as `:`, `%25` as `%`, left to right in
/// one pass. Every other `%` is kept as it is, so a segment without those three
/// sequences comes back unchanged (borrowed, when it holds no `%` at all).
fn decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let mut decoded = String::with_capacity(segment.len());
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        decoded.push_str(&rest[..at]);
        let (character, consumed) = match rest.as_bytes()[at + 1..] {
            [b'3', b'A' | b'a', ..] => (':', 3),
            [b'2', b'5', ..] => ('%', 3),
            _ => ('%', 1),
        };
        decoded.push(character);
        rest = &rest[at + consumed..];
    }
    decoded.push_str(rest);
    Cow::Owned(decoded)
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
    /// Empty optional fields count as absent.
    ///
    /// # Escaping
    ///
    /// Each segment (namespace, platform, chat type and every id) is written with `%`
    /// as `%25` and `:` as `%3A`, and nothing else changed, so an id may hold any text —
    /// a Matrix room `!abc:matrix.org` is written `!abc%3Amatrix.org` — and
    /// [`SessionKey::parse`] gives it back unchanged. An id without `:` or `%` is written
    /// verbatim, so such keys are exactly the unescaped keys other implementations
    /// build.
    ///
    /// ```
    /// use gateway::{Platform, SessionKey, SessionKeyOptions, SessionSource};
    ///
    /// let room = SessionSource::new(Platform::Matrix, "!abc:matrix.org");
    /// let key = SessionKey::build(&room, &SessionKeyOptions::default());
    /// assert_eq!(key.as_str(), "agent:main:matrix:dm:!abc%3Amatrix.org");
    /// assert_eq!(key.route()?.chat_id, "!abc:matrix.org");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        key.push_str("agent");
        let mut push = |segment: &str| {
            key.push(':');
            push_escaped(&mut key, segment);
        };
        push(namespace);
        push(platform);
        if source.chat_type == CHAT_TYPE_DM {
            push(CHAT_TYPE_DM);
            for part in [chat_id, thread_id].into_iter().flatten() {
                push(part);
            }
            return SessionKey(key);
        }
        push(&source.chat_type);
        for part in [chat_id, thread_id].into_iter().flatten() {
            push(part);
        }
        let in_thread = thread_id.is_some() || source.chat_type == "thread";
        let per_user =
            options.group_sessions_per_user && (!in_thread || options.thread_sessions_per_user);
        if per_user {
            if let Some(user) = present(&source.user_id_alt).or(present(&source.user_id)) {
                push(user);
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
    /// Each part is then decoded: `%3A` (or `%3a`) reads as `:` and `%25` as `%`, in one
    /// left-to-right pass; every other `%` sequence is kept as it is. So a key built by
    /// [`SessionKey::build`] gives back every id unchanged, and a key without those three
    /// sequences parses exactly as a plain split on `:` would — which is every key an
    /// implementation that never escapes builds, except one caveat: an unescaped key
    /// whose id literally contains `%3A`, `%3a` or `%25` now reads that id decoded.
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
        let namespace = decode(namespace);
        let chat_type = decode(chat_type);
        let thread_id = match &*chat_type {
            "dm" | "thread" => parts
                .next()
                .filter(|t| !t.is_empty())
                .map(|t| decode(t).into_owned()),
            _ => None,
        };
        Ok(ParsedSessionKey {
            profile: (namespace != MAIN).then(|| namespace.into_owned()),
            platform: decode(platform).into_owned(),
            chat_type: chat_type.into_owned(),
            chat_id: decode(chat_id).into_owned(),
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

    #[test]
    fn ids_with_the_separator_or_the_escape_character_round_trip() {
        let default = SessionKeyOptions::default();
        // (name, source, options, built key, parsed chat id, parsed thread id)
        type Case = (
            &'static str,
            SessionSource,
            SessionKeyOptions,
            &'static str,
            &'static str,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "matrix room dm",
                SessionSource::new(Platform::Matrix, "!abc:matrix.org"),
                default.clone(),
                "agent:main:matrix:dm:!abc%3Amatrix.org",
                "!abc:matrix.org",
                None,
            ),
            (
                "matrix room dm with a thread event id",
                SessionSource::new(Platform::Matrix, "!abc:matrix.org")
                    .with_thread_id("$ev:matrix.org"),
                default.clone(),
                "agent:main:matrix:dm:!abc%3Amatrix.org:$ev%3Amatrix.org",
                "!abc:matrix.org",
                Some("$ev:matrix.org"),
            ),
            (
                "matrix thread, per-user user id with a server part",
                SessionSource::new(Platform::Matrix, "!abc:matrix.org")
                    .with_chat_type("thread")
                    .with_thread_id("$ev:matrix.org")
                    .with_user_id("@bob:matrix.org"),
                opts(true, true),
                "agent:main:matrix:thread:!abc%3Amatrix.org:$ev%3Amatrix.org:@bob%3Amatrix.org",
                "!abc:matrix.org",
                Some("$ev:matrix.org"),
            ),
            (
                "matrix group, per-user",
                SessionSource::new(Platform::Matrix, "!abc:matrix.org")
                    .with_chat_type("group")
                    .with_user_id("@bob:matrix.org"),
                default.clone(),
                "agent:main:matrix:group:!abc%3Amatrix.org:@bob%3Amatrix.org",
                "!abc:matrix.org",
                None,
            ),
            (
                "slack thread ts keeps its dot",
                SessionSource::new(Platform::Slack, "C024BE91L")
                    .with_chat_type("thread")
                    .with_thread_id("1700000000.123456")
                    .with_user_id("U1"),
                default.clone(),
                "agent:main:slack:thread:C024BE91L:1700000000.123456",
                "C024BE91L",
                Some("1700000000.123456"),
            ),
            (
                "slack dm in a thread",
                SessionSource::new(Platform::Slack, "D1").with_thread_id("1700000000.123456"),
                default.clone(),
                "agent:main:slack:dm:D1:1700000000.123456",
                "D1",
                Some("1700000000.123456"),
            ),
            (
                "a literal percent is escaped",
                SessionSource::new(Platform::Telegram, "100%"),
                default.clone(),
                "agent:main:telegram:dm:100%25",
                "100%",
                None,
            ),
            (
                "a literal escape sequence survives",
                SessionSource::new(Platform::Telegram, "a%3Ab%25c").with_thread_id("%3a"),
                default.clone(),
                "agent:main:telegram:dm:a%253Ab%2525c:%253a",
                "a%3Ab%25c",
                Some("%3a"),
            ),
            (
                "a profile and a chat type with the separator",
                SessionSource::new(Platform::Discord, "c1")
                    .with_chat_type("voice:stage")
                    .with_profile("team:a"),
                opts(false, false),
                "agent:team%3Aa:discord:voice%3Astage:c1",
                "c1",
                None,
            ),
        ];
        for (name, source, options, key, chat_id, thread_id) in cases {
            let built = SessionKey::build(&source, &options);
            assert_eq!(built.as_str(), key, "{name}");
            let parsed = SessionKey::parse(key).unwrap();
            assert_eq!(parsed.platform, source.platform.as_str(), "{name}");
            assert_eq!(parsed.chat_type, source.chat_type, "{name}");
            assert_eq!(parsed.chat_id, chat_id, "{name}");
            assert_eq!(parsed.thread_id.as_deref(), thread_id, "{name}");
        }
        let profile = SessionKey::parse("agent:team%3Aa:discord:voice%3Astage:c1").unwrap();
        assert_eq!(profile.profile.as_deref(), Some("team:a"));
    }

    #[test]
    fn parse_decodes_only_the_two_escapes() {
        let parsed =
            SessionKey::parse("agent:main:matrix:dm:!abc%3amatrix.org:%2525%41%zz%").unwrap();
        assert_eq!(
            parsed.chat_id, "!abc:matrix.org",
            "lowercase %3a decodes too"
        );
        assert_eq!(
            parsed.thread_id.as_deref(),
            Some("%25%41%zz%"),
            "%25 decodes once; every other % sequence is left alone"
        );
        // Unescaped keys (the Python harness never escapes) parse exactly as before,
        // however much they look like escapes.
        let legacy = SessionKey::parse("agent:main:telegram:dm:%41%2:50%").unwrap();
        assert_eq!(legacy.chat_id, "%41%2");
        assert_eq!(legacy.thread_id.as_deref(), Some("50%"));
    }

    /// The parser as it was before escaping: every key without `%3A`, `%3a` or `%25`
    /// must still parse exactly like this.
    fn unescaped_parse(key: &str) -> Result<ParsedSessionKey, GatewayError> {
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

    /// Arbitrary ids, biased towards the characters that matter: the separator, the
    /// escape character, ready-made escape sequences, dots, and empty.
    fn any_id() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(%3A|%3a|%25|%2|%|:|\\.|[a-zA-Z0-9!$@_]|\\PC){0,10}",
            Just(String::new()),
        ]
    }

    fn non_empty_id() -> impl Strategy<Value = String> {
        any_id().prop_filter("non-empty", |id| !id.is_empty())
    }

    fn any_profile() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(any_id())
    }

    fn expected_profile(profile: Option<String>) -> Option<String> {
        profile.filter(|p| !p.is_empty() && p != MAIN && p != "default")
    }

    fn parts(key: &SessionKey) -> usize {
        key.as_str().split(':').count()
    }

    /// Chat types that are neither `dm` nor `thread`: group-like chats.
    fn group_like_chat_type() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("group".to_owned()),
            Just("channel".to_owned()),
            non_empty_id().prop_filter("group-like", |t| t != "dm" && t != "thread"),
        ]
    }

    fn source(
        platform: &Platform,
        chat_type: &str,
        chat_id: &str,
        thread_id: &str,
        user_id: &Option<String>,
        profile: &Option<String>,
    ) -> SessionSource {
        let mut source = SessionSource::new(platform.clone(), chat_id).with_chat_type(chat_type);
        source.thread_id = Some(thread_id.to_owned());
        source.user_id = user_id.clone();
        source.profile = profile.clone();
        source
    }

    fn unescaped_chat_type() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("dm".to_owned()),
            Just("thread".to_owned()),
            "[^:%]{0,6}"
        ]
    }

    /// Keys whose ids hold `%` sequences other than the two escapes (filtered below).
    const OTHER_PERCENT_SEQUENCES: &str =
        "agent:(main|w%4Frk):(telegram|matrix):(dm|thread|group):\
        ([a-z0-9%.!]|%4|%3|%2){0,10}(:([a-z0-9%.!]|%4|%3|%2){0,6}){0,3}";

    proptest! {
        #[test]
        fn parse_never_panics_and_agrees_with_the_parts(
            key in "[a-z:%3A25]{0,30}|agent:[^:]{0,6}:[^:]{0,6}:[^:]{0,6}:.{0,12}",
        ) {
            if let Ok(parsed) = SessionKey::parse(&key) {
                let parts: Vec<&str> = key.split(':').collect();
                prop_assert!(parts.len() >= 5);
                prop_assert_eq!(parts[0], "agent");
                prop_assert_eq!(decode(parts[2]), parsed.platform);
                prop_assert_eq!(decode(parts[3]), parsed.chat_type);
                prop_assert_eq!(decode(parts[4]), parsed.chat_id);
            }
        }

        #[test]
        fn keys_without_escapes_parse_exactly_as_before(
            segments in proptest::collection::vec("[^:%]{0,8}", 0..9),
            head in proptest::option::of(("[^:%]{1,6}", "[^:%]{1,8}", unescaped_chat_type())),
        ) {
            let mut all = Vec::new();
            if let Some((namespace, platform, chat_type)) = head {
                all.extend(["agent".to_owned(), namespace, platform, chat_type]);
            }
            all.extend(segments);
            let key = all.join(":");
            prop_assert_eq!(SessionKey::parse(&key), unescaped_parse(&key));
        }

        #[test]
        fn keys_with_other_percent_sequences_parse_exactly_as_before(
            key in OTHER_PERCENT_SEQUENCES,
        ) {
            prop_assume!(!key.contains("%3A") && !key.contains("%3a") && !key.contains("%25"));
            prop_assert_eq!(SessionKey::parse(&key), unescaped_parse(&key));
        }

        #[test]
        fn a_dm_gives_back_its_chat_and_thread(
            chat_id in non_empty_id(),
            thread_id in any_id(),
            user_id in proptest::option::of(any_id()),
            profile in any_profile(),
            group_per_user in any::<bool>(),
            thread_per_user in any::<bool>(),
        ) {
            let thread = Some(thread_id.clone()).filter(|t| !t.is_empty());
            for platform in Platform::BUILT_IN {
                let source = source(platform, "dm", &chat_id, &thread_id, &user_id, &profile);
                let key = SessionKey::build(&source, &opts(group_per_user, thread_per_user));
                prop_assert_eq!(parts(&key), 5 + usize::from(thread.is_some()), "{}", key);
                let parsed = SessionKey::parse(key.as_str()).unwrap();
                prop_assert_eq!(parsed, ParsedSessionKey {
                    profile: expected_profile(profile.clone()),
                    platform: platform.as_str().to_owned(),
                    chat_type: "dm".to_owned(),
                    chat_id: chat_id.clone(),
                    thread_id: thread.clone(),
                });
            }
        }

        #[test]
        fn a_dm_without_a_chat_id_gives_back_its_thread_as_the_chat(
            thread_id in non_empty_id(),
            user_id in proptest::option::of(any_id()),
            profile in any_profile(),
        ) {
            for platform in Platform::BUILT_IN {
                let source = source(platform, "dm", "", &thread_id, &user_id, &profile);
                let key = SessionKey::build(&source, &SessionKeyOptions::default());
                prop_assert_eq!(parts(&key), 5, "{}", key);
                let parsed = SessionKey::parse(key.as_str()).unwrap();
                prop_assert_eq!(parsed, ParsedSessionKey {
                    profile: expected_profile(profile.clone()),
                    platform: platform.as_str().to_owned(),
                    chat_type: "dm".to_owned(),
                    chat_id: thread_id.clone(),
                    thread_id: None,
                });
            }
        }

        #[test]
        fn a_thread_gives_back_its_chat_and_thread(
            chat_id in non_empty_id(),
            thread_id in non_empty_id(),
            user_id in proptest::option::of(any_id()),
            profile in any_profile(),
            group_per_user in any::<bool>(),
            thread_per_user in any::<bool>(),
        ) {
            let user = user_id.as_ref().is_some_and(|u| !u.is_empty())
                && group_per_user
                && thread_per_user;
            for platform in Platform::BUILT_IN {
                let source = source(platform, "thread", &chat_id, &thread_id, &user_id, &profile);
                let key = SessionKey::build(&source, &opts(group_per_user, thread_per_user));
                prop_assert_eq!(parts(&key), 6 + usize::from(user), "{}", key);
                let parsed = SessionKey::parse(key.as_str()).unwrap();
                prop_assert_eq!(parsed, ParsedSessionKey {
                    profile: expected_profile(profile.clone()),
                    platform: platform.as_str().to_owned(),
                    chat_type: "thread".to_owned(),
                    chat_id: chat_id.clone(),
                    thread_id: Some(thread_id.clone()),
                });
            }
        }

        /// Group and channel keys, with and without per-user sessions: the chat comes
        /// back, and no thread (part 5 of such a key may be a user).
        #[test]
        fn a_group_like_chat_gives_back_its_chat_and_type(
            chat_type in group_like_chat_type(),
            chat_id in non_empty_id(),
            thread_id in any_id(),
            user_id in proptest::option::of(any_id()),
            profile in any_profile(),
            group_per_user in any::<bool>(),
            thread_per_user in any::<bool>(),
        ) {
            let thread = !thread_id.is_empty();
            let user = user_id.as_ref().is_some_and(|u| !u.is_empty())
                && group_per_user
                && (!thread || thread_per_user);
            for platform in Platform::BUILT_IN {
                let source =
                    source(platform, &chat_type, &chat_id, &thread_id, &user_id, &profile);
                let key = SessionKey::build(&source, &opts(group_per_user, thread_per_user));
                let expected_parts = 5 + usize::from(thread) + usize::from(user);
                prop_assert_eq!(parts(&key), expected_parts, "{}", key);
                let parsed = SessionKey::parse(key.as_str()).unwrap();
                prop_assert_eq!(parsed, ParsedSessionKey {
                    profile: expected_profile(profile.clone()),
                    platform: platform.as_str().to_owned(),
                    chat_type: chat_type.clone(),
                    chat_id: chat_id.clone(),
                    thread_id: None,
                });
            }
        }

        /// A per-user group key without chat or thread id carries the user in the chat
        /// id slot: user ids round-trip too.
        #[test]
        fn a_per_user_group_without_chat_or_thread_gives_back_its_user(
            chat_type in group_like_chat_type(),
            user_id in non_empty_id(),
            user_id_alt in proptest::option::of(any_id()),
        ) {
            let user = user_id_alt.clone().filter(|u| !u.is_empty()).unwrap_or(user_id.clone());
            for platform in Platform::BUILT_IN {
                let user_id = Some(user_id.clone());
                let mut source = source(platform, &chat_type, "", "", &user_id, &None);
                source.user_id_alt = user_id_alt.clone();
                let key = SessionKey::build(&source, &SessionKeyOptions::default());
                prop_assert_eq!(parts(&key), 5, "{}", key);
                let parsed = SessionKey::parse(key.as_str()).unwrap();
                prop_assert_eq!(&parsed.chat_type, &chat_type);
                prop_assert_eq!(&parsed.chat_id, &user);
            }
        }
    }
}
