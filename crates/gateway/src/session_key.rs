//! Session keys: building them from a source, and parsing a route back out of them.

use std::borrow::Cow;
use std::fmt;

use crate::{GatewayError, SessionSource, CHAT_TYPE_DM};

/// The namespace of the default profile.
const MAIN: &str = "main";

/// The chat type whose part 5 is read as a thread id, beside `dm`.
const CHAT_TYPE_THREAD: &str = "thread";

/// Part 0 of a plain key: its segments are written as they are, exactly as the Python
/// harness writes every key.
const PLAIN: &str = "agent";

/// Part 0 of an escaped key, built only when some segment holds the `:` separator: its
/// segments are written with `%` as `%25` and `:` as `%3A`, and only such keys are
/// decoded when parsed.
const ESCAPED: &str = "agent%";

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
/// A key comes in one of two forms, told apart by its first part. A **plain** key
/// (`agent:…`) has its segments written as they are — every key the Python harness
/// builds, and every key built here when no segment holds `:`. An **escaped** key
/// (`agent%:…`) is built only when some id (say a Matrix room `!abc:matrix.org`) holds
/// the `:` separator: each segment is written with `%` as `%25` and `:` as `%3A`. A plain
/// key is never decoded, so a reference key parses exactly as it always did, URL-encoded
/// ids included; a reader that knows only plain keys rejects an escaped one (its first
/// part is not `agent`) rather than misroute it.
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

/// The key of `segments` (everything after part 0): plain when no segment holds `:`,
/// escaped otherwise.
fn join(segments: &[&str]) -> String {
    let escaped = segments.iter().any(|segment| segment.contains(':'));
    let length: usize = segments.iter().map(|segment| segment.len() + 1).sum();
    let mut key = String::with_capacity(ESCAPED.len() + length);
    key.push_str(if escaped { ESCAPED } else { PLAIN });
    for segment in segments {
        key.push(':');
        if escaped {
            push_escaped(&mut key, segment);
        } else {
            key.push_str(segment);
        }
    }
    key
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
    ///   (`agent:{ns}:{platform}:dm`). An empty chat type is `dm`.
    /// - other chat types: `agent:{ns}:{platform}:{chat_type}[:{chat_id}][:{thread_id}][:{user}]`
    ///   where user = `user_id_alt` or `user_id`, appended when
    ///   [`group_sessions_per_user`](SessionKeyOptions::group_sessions_per_user) is on —
    ///   except in a thread (a thread id is set, or the chat type is `thread`) unless
    ///   [`thread_sessions_per_user`](SessionKeyOptions::thread_sessions_per_user) is on.
    /// - In a `thread` key, part 5 is read as the thread id, so a user is never written
    ///   there: when only one of chat id and thread id is present, an empty part (no
    ///   thread) goes before the user — `agent:{ns}:slack:thread:C1::U7`.
    /// - `{ns}` is `main`, or the profile name for a non-default profile.
    ///
    /// Empty optional fields count as absent.
    ///
    /// # Escaping
    ///
    /// When no segment (namespace, platform, chat type, ids) holds `:`, the key is plain:
    /// every segment written as it is, `%` included — byte for byte the key the Python
    /// harness builds. When some segment holds `:`, the key is escaped: its first part is
    /// `agent%` instead of `agent`, and every segment is written with `%` as `%25` and `:`
    /// as `%3A` (nothing else changes). Either way [`SessionKey::parse`] gives every id
    /// back unchanged.
    ///
    /// ```
    /// use gateway::{Platform, SessionKey, SessionKeyOptions, SessionSource};
    ///
    /// let room = SessionSource::new(Platform::Matrix, "!abc:matrix.org");
    /// let key = SessionKey::build(&room, &SessionKeyOptions::default());
    /// assert_eq!(key.as_str(), "agent%:main:matrix:dm:!abc%3Amatrix.org");
    /// assert_eq!(key.route()?.chat_id, "!abc:matrix.org");
    ///
    /// let hook = SessionSource::new(Platform::Webhook, "https%3A%2F%2Fexample.com");
    /// let key = SessionKey::build(&hook, &SessionKeyOptions::default());
    /// assert_eq!(key.as_str(), "agent:main:webhook:dm:https%3A%2F%2Fexample.com");
    /// assert_eq!(key.route()?.chat_id, "https%3A%2F%2Fexample.com");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(source: &SessionSource, options: &SessionKeyOptions) -> SessionKey {
        let profile = present(&options.profile).or(present(&source.profile));
        let namespace = match profile {
            None | Some(MAIN) | Some("default") => MAIN,
            Some(profile) => profile,
        };
        let chat_type = match source.chat_type.as_str() {
            // An empty chat type would build a key that does not parse.
            "" => CHAT_TYPE_DM,
            chat_type => chat_type,
        };
        let chat_id = Some(source.chat_id.as_str()).filter(|id| !id.is_empty());
        let thread_id = present(&source.thread_id);

        let mut segments = Vec::with_capacity(7);
        segments.extend([namespace, source.platform.as_str(), chat_type]);
        segments.extend([chat_id, thread_id].into_iter().flatten());
        if chat_type != CHAT_TYPE_DM {
            let in_thread = thread_id.is_some() || chat_type == CHAT_TYPE_THREAD;
            let per_user =
                options.group_sessions_per_user && (!in_thread || options.thread_sessions_per_user);
            let user = present(&source.user_id_alt).or(present(&source.user_id));
            if let Some(user) = user.filter(|_| per_user) {
                // Part 5 of a `thread` key is its thread id: with a single id before
                // the user, an empty part (no thread) keeps the user out of it.
                if chat_type == CHAT_TYPE_THREAD && segments.len() == 4 {
                    segments.push("");
                }
                segments.push(user);
            }
        }
        SessionKey(join(&segments))
    }

    /// Reads the route out of a session key.
    ///
    /// The key splits on `:` into at least 5 parts: `agent` (or `agent%`, see below),
    /// the namespace (`main` or a non-empty profile name), platform, chat type, chat id.
    /// Part 5 is the thread id **only** for `dm` and `thread` keys (for other chat types
    /// it may be a user); an empty part 5 is no thread. The platform is not checked
    /// against a registry here.
    ///
    /// A plain key (part 0 `agent`) is read as it is split: nothing is decoded, so every
    /// key an implementation that never escapes builds (the Python harness) parses
    /// exactly as it always did — ids holding `%3A` or `%25`, such as URL-encoded webhook
    /// ids, included. An escaped key (part 0 `agent%`, built by [`SessionKey::build`] when
    /// an id holds `:`) has each part decoded after the split: `%3A` (or `%3a`) reads as
    /// `:` and `%25` as `%`, in one left-to-right pass; every other `%` sequence is kept as
    /// it is.
    ///
    /// # Errors
    /// [`GatewayError::InvalidSessionKey`] with the reason: empty (a CLI session), fewer
    /// than 5 parts, part 0 neither `agent` nor `agent%`, empty namespace, or an empty
    /// platform, chat type or chat id.
    pub fn parse(key: &str) -> Result<ParsedSessionKey, GatewayError> {
        let mut parts = KeyParts::split(key).map_err(|reason| GatewayError::InvalidSessionKey {
            key: key.to_owned(),
            reason,
        })?;
        let namespace = parts.text(parts.namespace);
        let chat_type = parts.text(parts.chat_type).into_owned();
        let thread_id = match chat_type.as_str() {
            CHAT_TYPE_DM | CHAT_TYPE_THREAD => parts
                .rest
                .next()
                .filter(|t| !t.is_empty())
                .map(|t| parts.text(t).into_owned()),
            _ => None,
        };
        Ok(ParsedSessionKey {
            profile: (namespace != MAIN).then(|| namespace.into_owned()),
            platform: parts.text(parts.platform).into_owned(),
            chat_type,
            chat_id: parts.text(parts.chat_id).into_owned(),
            thread_id,
        })
    }

    /// The platform part of a valid key (decoded), without building the rest: what the
    /// router checks for every candidate. `None` where [`parse`](Self::parse) fails.
    pub(crate) fn platform_of(key: &str) -> Option<Cow<'_, str>> {
        let parts = KeyParts::split(key).ok()?;
        Some(parts.text(parts.platform))
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

/// A key split into its parts, borrowed and still encoded; the rules of
/// [`SessionKey::parse`] checked.
struct KeyParts<'a> {
    escaped: bool,
    namespace: &'a str,
    platform: &'a str,
    chat_type: &'a str,
    chat_id: &'a str,
    rest: Segments<'a>,
}

/// The `:`-separated segments of a key: `str::split(':')`, by a plain byte scan (a key's
/// segments are short, and the general searcher's set-up per segment costs more than the
/// scan).
struct Segments<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.bytes().position(|b| b == b':') {
            Some(at) => {
                // `:` is ASCII: both sides of it are character boundaries.
                self.rest = Some(&rest[at + 1..]);
                Some(&rest[..at])
            }
            None => self.rest.take(),
        }
    }
}

impl<'a> KeyParts<'a> {
    fn split(key: &'a str) -> Result<KeyParts<'a>, &'static str> {
        if key.is_empty() {
            return Err("the key is empty (a CLI session)");
        }
        let mut parts = Segments { rest: Some(key) };
        let (Some(prefix), Some(namespace), Some(platform), Some(chat_type), Some(chat_id)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err("fewer than 5 ':'-separated parts");
        };
        let escaped = match prefix {
            PLAIN => false,
            ESCAPED => true,
            _ => return Err("it does not start with \"agent\""),
        };
        if namespace.is_empty() {
            return Err("the profile namespace is empty");
        }
        if platform.is_empty() {
            return Err("the platform is empty");
        }
        if chat_type.is_empty() {
            return Err("the chat type is empty");
        }
        if chat_id.is_empty() {
            return Err("the chat id is empty");
        }
        Ok(KeyParts {
            escaped,
            namespace,
            platform,
            chat_type,
            chat_id,
            rest: parts,
        })
    }

    /// A part as text: decoded in an escaped key.
    fn text(&self, part: &'a str) -> Cow<'a, str> {
        if self.escaped {
            decode(part)
        } else {
            Cow::Borrowed(part)
        }
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
                "an empty chat type is a dm",
                tg("12345").with_chat_type("").with_user_id("u1"),
                default.clone(),
                "agent:main:telegram:dm:12345",
            ),
            (
                "a per-user thread without a thread id: an empty thread part",
                SessionSource::new(Platform::Slack, "C1")
                    .with_chat_type("thread")
                    .with_user_id("U7"),
                opts(true, true),
                "agent:main:slack:thread:C1::U7",
            ),
            (
                "a per-user thread without a chat id: an empty thread part",
                SessionSource::new(Platform::Slack, "")
                    .with_chat_type("thread")
                    .with_thread_id("T1")
                    .with_user_id("U7"),
                opts(true, true),
                "agent:main:slack:thread:T1::U7",
            ),
            (
                "a per-user thread with only a user: the user is the chat",
                SessionSource::new(Platform::Slack, "")
                    .with_chat_type("thread")
                    .with_user_id("U7"),
                opts(true, true),
                "agent:main:slack:thread:U7",
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
                "agent%:main:matrix:thread:!a%3Ab::@u%3Ab",
                route("matrix", "thread", "!a:b", None),
            ),
            (
                "agent:main:slack:thread:C1::U7",
                route("slack", "thread", "C1", None),
            ),
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
            (
                "agent%:main:telegram:dm",
                "fewer than 5 ':'-separated parts",
            ),
            (
                "agent%%:main:telegram:dm:1",
                "it does not start with \"agent\"",
            ),
            (
                "agent%3A:main:telegram:dm:1",
                "it does not start with \"agent\"",
            ),
            ("agent%::telegram:dm:1", "the profile namespace is empty"),
            ("agent%:main:telegram:dm:", "the chat id is empty"),
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
                "agent%:main:matrix:dm:!abc%3Amatrix.org",
                "!abc:matrix.org",
                None,
            ),
            (
                "matrix room dm with a thread event id",
                SessionSource::new(Platform::Matrix, "!abc:matrix.org")
                    .with_thread_id("$ev:matrix.org"),
                default.clone(),
                "agent%:main:matrix:dm:!abc%3Amatrix.org:$ev%3Amatrix.org",
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
                "agent%:main:matrix:thread:!abc%3Amatrix.org:$ev%3Amatrix.org:@bob%3Amatrix.org",
                "!abc:matrix.org",
                Some("$ev:matrix.org"),
            ),
            (
                "matrix group, per-user",
                SessionSource::new(Platform::Matrix, "!abc:matrix.org")
                    .with_chat_type("group")
                    .with_user_id("@bob:matrix.org"),
                default.clone(),
                "agent%:main:matrix:group:!abc%3Amatrix.org:@bob%3Amatrix.org",
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
                "a literal percent without a separator is written as it is",
                SessionSource::new(Platform::Telegram, "100%"),
                default.clone(),
                "agent:main:telegram:dm:100%",
                "100%",
                None,
            ),
            (
                "a literal escape sequence without a separator is written as it is",
                SessionSource::new(Platform::Telegram, "a%3Ab%25c").with_thread_id("%3a"),
                default.clone(),
                "agent:main:telegram:dm:a%3Ab%25c:%3a",
                "a%3Ab%25c",
                Some("%3a"),
            ),
            (
                "beside a separator, every percent of every segment is escaped",
                SessionSource::new(Platform::Telegram, "50%:off").with_thread_id("%3a"),
                default.clone(),
                "agent%:main:telegram:dm:50%25%3Aoff:%253a",
                "50%:off",
                Some("%3a"),
            ),
            (
                "a url-encoded webhook id is written as it is",
                SessionSource::new(Platform::Webhook, "https%3A%2F%2Fexample.com%2Fhooks%2F42"),
                default.clone(),
                "agent:main:webhook:dm:https%3A%2F%2Fexample.com%2Fhooks%2F42",
                "https%3A%2F%2Fexample.com%2Fhooks%2F42",
                None,
            ),
            (
                "a thread without a thread id keeps the user out of the thread part",
                SessionSource::new(Platform::Slack, "C1")
                    .with_chat_type("thread")
                    .with_user_id("U7"),
                opts(true, true),
                "agent:main:slack:thread:C1::U7",
                "C1",
                None,
            ),
            (
                "a profile and a chat type with the separator",
                SessionSource::new(Platform::Discord, "c1")
                    .with_chat_type("voice:stage")
                    .with_profile("team:a"),
                opts(false, false),
                "agent%:team%3Aa:discord:voice%3Astage:c1",
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
        let profile = SessionKey::parse("agent%:team%3Aa:discord:voice%3Astage:c1").unwrap();
        assert_eq!(profile.profile.as_deref(), Some("team:a"));
    }

    #[test]
    fn only_escaped_keys_are_decoded_and_only_the_two_escapes() {
        let parsed =
            SessionKey::parse("agent%:main:matrix:dm:!abc%3amatrix.org:%2525%41%zz%").unwrap();
        assert_eq!(
            parsed.chat_id, "!abc:matrix.org",
            "lowercase %3a decodes too"
        );
        assert_eq!(
            parsed.thread_id.as_deref(),
            Some("%25%41%zz%"),
            "%25 decodes once; every other % sequence is left alone"
        );
        // Plain keys (the Python harness never escapes) are never decoded, however much
        // they look like escapes.
        let legacy = SessionKey::parse("agent:main:telegram:dm:%41%2:50%").unwrap();
        assert_eq!(legacy.chat_id, "%41%2");
        assert_eq!(legacy.thread_id.as_deref(), Some("50%"));
        let url = SessionKey::parse("agent:main:webhook:dm:a%3Ab%25c:%3a").unwrap();
        assert_eq!(
            (url.chat_id.as_str(), url.thread_id.as_deref()),
            ("a%3Ab%25c", Some("%3a"))
        );
    }

    /// The parser as it was before escaping, and as the Python harness parses: every key
    /// whose part 0 is not `agent%` must still parse exactly like this (and it rejects
    /// every escaped key).
    fn unescaped_parse(key: &str) -> Result<ParsedSessionKey, GatewayError> {
        let invalid = |reason: &'static str| GatewayError::InvalidSessionKey {
            key: key.to_owned(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("the key is empty (a CLI session)"));
        }
        let mut parts = Segments { rest: Some(key) };
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

    /// The segments (after `agent`) of the key the Python harness builds for `source`:
    /// the same shape, an empty chat type as it is, and a user in a `thread` key wherever
    /// it falls. Also whether a user was appended.
    fn reference_segments<'s>(
        source: &'s SessionSource,
        options: &'s SessionKeyOptions,
    ) -> (Vec<&'s str>, bool) {
        let profile = present(&options.profile).or(present(&source.profile));
        let namespace = match profile {
            None | Some(MAIN) | Some("default") => MAIN,
            Some(profile) => profile,
        };
        let mut segments = vec![namespace, source.platform.as_str(), &source.chat_type];
        let chat_id = Some(source.chat_id.as_str()).filter(|id| !id.is_empty());
        let thread_id = present(&source.thread_id);
        segments.extend([chat_id, thread_id].into_iter().flatten());
        let mut user_appended = false;
        if source.chat_type != CHAT_TYPE_DM {
            let in_thread = thread_id.is_some() || source.chat_type == CHAT_TYPE_THREAD;
            if options.group_sessions_per_user && (!in_thread || options.thread_sessions_per_user) {
                if let Some(user) = present(&source.user_id_alt).or(present(&source.user_id)) {
                    segments.push(user);
                    user_appended = true;
                }
            }
        }
        (segments, user_appended)
    }

    /// Text in the shape of a key's tail: separators, escape sequences, other `%`
    /// sequences, dots, anything printable.
    const KEY_TAIL: &str = "(%3A|%3a|%25|%2|%4F|%|:|[a-z0-9.!]|\\PC){0,40}";

    /// Keys in the shape of session keys, with `%` sequences everywhere.
    const KEY_SHAPED: &str = "(agent|agent%|agent%25|Agent|cron)?:\
        (main|w%4Frk|team%3Aa|%25|[^:]{0,4}):(telegram|matrix|%3A|[^:]{0,4}):\
        (dm|thread|group|d%6D|%3a|[^:]{0,4}):(%3A|%3a|%25|%2|%|[a-z0-9.!]){0,8}\
        (:(%3A|%3a|%25|%2|%|[a-z0-9.!]){0,8}){0,3}";

    /// Any key, biased towards keys that start `agent:` and hold `%` sequences.
    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            any::<String>().prop_map(|tail| format!("agent:{tail}")),
            KEY_TAIL.prop_map(|tail| format!("agent:{tail}")),
            KEY_TAIL.prop_map(|tail| format!("agent%:{tail}")),
            KEY_SHAPED,
        ]
    }

    /// Ids without the separator (they may hold `%` and escape sequences).
    fn id_without_separator() -> impl Strategy<Value = String> {
        prop_oneof![
            "(%3A|%3a|%25|%2|%|\\.|[a-zA-Z0-9!$@_]|[^:\\s]){0,10}",
            Just(String::new()),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_agrees_with_the_parts(key in any_key()) {
            if let Ok(parsed) = SessionKey::parse(&key) {
                let parts: Vec<&str> = key.split(':').collect();
                prop_assert!(parts.len() >= 5);
                let escaped = parts[0] == ESCAPED;
                prop_assert!(escaped || parts[0] == PLAIN);
                let text = |part: &str| if escaped { decode(part).into_owned() } else { part.to_owned() };
                prop_assert_eq!(text(parts[2]), parsed.platform);
                prop_assert_eq!(text(parts[3]), parsed.chat_type);
                prop_assert_eq!(text(parts[4]), parsed.chat_id);
            }
        }

        /// The router's shortcut reads the platform exactly as `parse` does, and fails
        /// exactly where it fails.
        #[test]
        fn the_platform_shortcut_agrees_with_parse(key in any_key()) {
            prop_assert_eq!(
                SessionKey::platform_of(&key).map(Cow::into_owned),
                SessionKey::parse(&key).ok().map(|parsed| parsed.platform)
            );
        }

        /// "Keys built by the reference (which never escapes) must still parse exactly
        /// as today": every key that does not start with `agent%` — every key starting
        /// `agent:` among them, `%3A`, `%25` and any other `%` sequence included —
        /// parses exactly as the old, never-decoding parser parsed it.
        #[test]
        fn every_key_not_marked_escaped_parses_exactly_as_before(key in any_key()) {
            prop_assume!(key.split(':').next() != Some(ESCAPED));
            prop_assert_eq!(SessionKey::parse(&key), unescaped_parse(&key));
        }

        /// A key is escaped only when a segment holds `:`; otherwise it is byte for byte
        /// the key the Python harness builds — but for the deliberate difference in
        /// `thread` keys, which keep a user out of the thread part. An escaped key is
        /// refused by a reader that knows only plain keys.
        #[test]
        fn a_key_is_the_reference_key_unless_a_segment_holds_the_separator(
            chat_type in prop_oneof![
                Just("dm".to_owned()),
                Just("thread".to_owned()),
                Just("group".to_owned()),
                non_empty_id(),
            ],
            chat_id in prop_oneof![any_id(), id_without_separator()],
            thread_id in prop_oneof![any_id(), id_without_separator()],
            user_id in proptest::option::of(prop_oneof![any_id(), id_without_separator()]),
            profile in proptest::option::of(prop_oneof![any_id(), id_without_separator()]),
            group_per_user in any::<bool>(),
            thread_per_user in any::<bool>(),
        ) {
            let options = opts(group_per_user, thread_per_user);
            for platform in Platform::BUILT_IN {
                let source =
                    source(platform, &chat_type, &chat_id, &thread_id, &user_id, &profile);
                let key = SessionKey::build(&source, &options);
                let (mut segments, user_appended) = reference_segments(&source, &options);
                if segments.iter().any(|segment| segment.contains(':')) {
                    prop_assert!(key.as_str().starts_with("agent%:"), "{}", key);
                    prop_assert!(unescaped_parse(key.as_str()).is_err(), "{}", key);
                    continue;
                }
                if chat_type == CHAT_TYPE_THREAD && user_appended && segments.len() == 5 {
                    segments.insert(4, "");
                }
                prop_assert_eq!(key.as_str(), format!("agent:{}", segments.join(":")));
            }
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
            thread_id in any_id(),
            user_id in proptest::option::of(any_id()),
            profile in any_profile(),
            group_per_user in any::<bool>(),
            thread_per_user in any::<bool>(),
        ) {
            let thread = Some(thread_id.clone()).filter(|t| !t.is_empty());
            let user = user_id.as_ref().is_some_and(|u| !u.is_empty())
                && group_per_user
                && thread_per_user;
            // A user after a missing thread id sits after an empty thread part.
            let expected_parts = 5 + usize::from(thread.is_some() || user) + usize::from(user);
            for platform in Platform::BUILT_IN {
                let source = source(platform, "thread", &chat_id, &thread_id, &user_id, &profile);
                let key = SessionKey::build(&source, &opts(group_per_user, thread_per_user));
                prop_assert_eq!(parts(&key), expected_parts, "{}", key);
                let parsed = SessionKey::parse(key.as_str()).unwrap();
                prop_assert_eq!(parsed, ParsedSessionKey {
                    profile: expected_profile(profile.clone()),
                    platform: platform.as_str().to_owned(),
                    chat_type: "thread".to_owned(),
                    chat_id: chat_id.clone(),
                    thread_id: thread.clone(),
                });
            }
        }

        /// As in a dm, a thread without a chat id gives back its thread id as the chat —
        /// and never a user as the thread.
        #[test]
        fn a_thread_without_a_chat_id_gives_back_its_thread_as_the_chat(
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
                let source = source(platform, "thread", "", &thread_id, &user_id, &profile);
                let key = SessionKey::build(&source, &opts(group_per_user, thread_per_user));
                prop_assert_eq!(parts(&key), 5 + 2 * usize::from(user), "{}", key);
                let parsed = SessionKey::parse(key.as_str()).unwrap();
                prop_assert_eq!(parsed, ParsedSessionKey {
                    profile: expected_profile(profile.clone()),
                    platform: platform.as_str().to_owned(),
                    chat_type: "thread".to_owned(),
                    chat_id: thread_id.clone(),
                    thread_id: None,
                });
            }
        }

        /// An empty chat type builds the key of a `dm`, which parses.
        #[test]
        fn an_empty_chat_type_builds_a_dm_key(
            chat_id in non_empty_id(),
            thread_id in any_id(),
            user_id in proptest::option::of(any_id()),
        ) {
            let empty = source(&Platform::Telegram, "", &chat_id, &thread_id, &user_id, &None);
            let dm = source(&Platform::Telegram, "dm", &chat_id, &thread_id, &user_id, &None);
            let options = SessionKeyOptions::default();
            let key = SessionKey::build(&empty, &options);
            prop_assert_eq!(&key, &SessionKey::build(&dm, &options));
            let parsed = key.route().unwrap();
            prop_assert_eq!(parsed.chat_type, "dm");
            prop_assert_eq!(parsed.chat_id, chat_id);
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
