//! `SessionSource`: where a message came from, and so where an answer goes.

use crate::Platform;

/// The chat type of a direct conversation, and the default.
pub const CHAT_TYPE_DM: &str = "dm";

/// Where a message came from on a chat platform — and so where a reply is delivered.
///
/// `chat_type` is an open string: `dm` (the default), `group`, `channel`, `thread` or
/// anything a platform uses. Optional fields set to an empty string are treated as
/// absent when building a session key. `chat_id` is a plain string; an empty one means
/// "no chat id" (only meaningful for `dm`).
///
/// ```
/// use gateway::{Platform, SessionSource};
///
/// let source = SessionSource::new(Platform::Telegram, "12345").with_thread_id("678");
/// assert_eq!(source.chat_type, "dm");
/// assert_eq!(source.thread_id.as_deref(), Some("678"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSource {
    /// The platform.
    pub platform: Platform,
    /// The chat's id on the platform.
    pub chat_id: String,
    /// The chat's display name.
    pub chat_name: Option<String>,
    /// `dm` (default), `group`, `channel`, `thread`, or any string.
    pub chat_type: String,
    /// The user who sent the message.
    pub user_id: Option<String>,
    /// That user's display name.
    pub user_name: Option<String>,
    /// Thread (topic) inside the chat.
    pub thread_id: Option<String>,
    /// The chat's topic.
    pub chat_topic: Option<String>,
    /// An alternative, more stable user id; preferred over `user_id` in session keys.
    pub user_id_alt: Option<String>,
    /// An alternative chat id.
    pub chat_id_alt: Option<String>,
    /// A platform-specific scope (workspace, guild, …).
    pub scope_id: Option<String>,
    /// The parent chat of a thread or sub-chat.
    pub parent_chat_id: Option<String>,
    /// The message to reply to, when known.
    pub message_id: Option<String>,
    /// The agent profile serving this chat; `None` is the default profile (`main`).
    pub profile: Option<String>,
}

impl SessionSource {
    /// A `dm` source on `platform` with `chat_id` and nothing else.
    pub fn new(platform: Platform, chat_id: impl Into<String>) -> Self {
        SessionSource {
            platform,
            chat_id: chat_id.into(),
            chat_name: None,
            chat_type: CHAT_TYPE_DM.to_owned(),
            user_id: None,
            user_name: None,
            thread_id: None,
            chat_topic: None,
            user_id_alt: None,
            chat_id_alt: None,
            scope_id: None,
            parent_chat_id: None,
            message_id: None,
            profile: None,
        }
    }

    /// Sets the chat type.
    pub fn with_chat_type(mut self, chat_type: impl Into<String>) -> Self {
        self.chat_type = chat_type.into();
        self
    }

    /// Sets the thread id.
    pub fn with_thread_id(mut self, thread_id: impl Into<String>) -> Self {
        self.thread_id = Some(thread_id.into());
        self
    }

    /// Sets the user id.
    pub fn with_user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the alternative user id (preferred over `user_id` in session keys).
    pub fn with_user_id_alt(mut self, user_id_alt: impl Into<String>) -> Self {
        self.user_id_alt = Some(user_id_alt.into());
        self
    }

    /// Sets the user's display name.
    pub fn with_user_name(mut self, user_name: impl Into<String>) -> Self {
        self.user_name = Some(user_name.into());
        self
    }

    /// Sets the message to reply to.
    pub fn with_message_id(mut self, message_id: impl Into<String>) -> Self {
        self.message_id = Some(message_id.into());
        self
    }

    /// Sets the agent profile.
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }
}
