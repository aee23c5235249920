//! Events of background processes: completions and output watches.

use serde::Serialize;

use super::deserialize_from_fields;
use crate::raw::Fields;
use crate::{ExtraFields, Routing, WireNumber};

/// `completion`: a background process exited. Also what an untyped (legacy) event is.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessCompletion {
    /// The process session, e.g. `proc_1`.
    pub session_id: Option<String>,
    /// The dispatching gateway session key.
    pub session_key: Option<String>,
    /// The command line.
    pub command: Option<String>,
    /// Exit code, printed exactly as it came on the wire.
    pub exit_code: Option<WireNumber>,
    /// `exited`, `killed`, `lost` or `failed_start`.
    pub completion_reason: Option<String>,
    /// Who killed it, for `killed`.
    pub termination_source: Option<String>,
    /// The tail of its output.
    pub output: Option<String>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl ProcessCompletion {
    /// The wire tag.
    pub const TYPE: &'static str = "completion";

    pub(crate) fn from_fields(mut f: Fields) -> Result<Self, serde_json::Error> {
        Ok(ProcessCompletion {
            session_id: f.take("session_id")?,
            session_key: f.take("session_key")?,
            command: f.take("command")?,
            exit_code: f.take("exit_code")?,
            completion_reason: f.take("completion_reason")?,
            termination_source: f.take("termination_source")?,
            output: f.take("output")?,
            extra: f.into_extra(),
        })
    }
}

/// `watch_match`: a watched background process printed a matching line.
/// Compared by content: an empty `routing` box equals none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchMatch {
    /// The process session.
    pub session_id: Option<String>,
    /// The dispatching gateway session key.
    pub session_key: Option<String>,
    /// The command line.
    pub command: Option<String>,
    /// The watch pattern that matched.
    pub pattern: Option<String>,
    /// The matching output.
    pub output: Option<String>,
    /// Earlier matches dropped by the rate limit.
    pub suppressed: Option<WireNumber>,
    /// The chat and user to notify; boxed apart (read it with `routing()`, set it with
    /// `routing_mut()`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Box<Routing>>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl WatchMatch {
    /// The wire tag.
    pub const TYPE: &'static str = "watch_match";

    pub(crate) fn from_fields(mut f: Fields) -> Result<Self, serde_json::Error> {
        Ok(WatchMatch {
            session_id: f.take("session_id")?,
            session_key: f.take("session_key")?,
            command: f.take("command")?,
            pattern: f.take("pattern")?,
            output: f.take("output")?,
            suppressed: f.take("suppressed")?,
            routing: Routing::take_from(&mut f)?,
            extra: f.into_extra(),
        })
    }
}

/// `watch_disabled`: watching a process was switched off.
/// Compared by content: an empty `routing` box equals none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchDisabled {
    /// The process session.
    pub session_id: Option<String>,
    /// The dispatching gateway session key.
    pub session_key: Option<String>,
    /// The command line.
    pub command: Option<String>,
    /// Matches dropped by the rate limit.
    pub suppressed: Option<WireNumber>,
    /// Human-readable explanation, rendered verbatim.
    pub message: Option<String>,
    /// The chat and user to notify; boxed apart (read it with `routing()`, set it with
    /// `routing_mut()`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Box<Routing>>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl WatchDisabled {
    /// The wire tag.
    pub const TYPE: &'static str = "watch_disabled";

    pub(crate) fn from_fields(mut f: Fields) -> Result<Self, serde_json::Error> {
        Ok(WatchDisabled {
            session_id: f.take("session_id")?,
            session_key: f.take("session_key")?,
            command: f.take("command")?,
            suppressed: f.take("suppressed")?,
            message: f.take("message")?,
            routing: Routing::take_from(&mut f)?,
            extra: f.into_extra(),
        })
    }
}

/// `watch_overflow_tripped` / `watch_overflow_released`: the watch rate limit changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WatchOverflow {
    /// Human-readable explanation, rendered verbatim.
    pub message: Option<String>,
    /// Matches dropped while the limit was on (sent with `released`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<WireNumber>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl WatchOverflow {
    /// The wire tag of [`Event::WatchOverflowTripped`](crate::Event::WatchOverflowTripped).
    pub const TRIPPED: &'static str = "watch_overflow_tripped";
    /// The wire tag of [`Event::WatchOverflowReleased`](crate::Event::WatchOverflowReleased).
    pub const RELEASED: &'static str = "watch_overflow_released";

    pub(crate) fn from_fields(mut f: Fields) -> Result<Self, serde_json::Error> {
        Ok(WatchOverflow {
            message: f.take("message")?,
            suppressed: f.take("suppressed")?,
            extra: f.into_extra(),
        })
    }
}

deserialize_from_fields!(ProcessCompletion, WatchMatch, WatchDisabled, WatchOverflow);
