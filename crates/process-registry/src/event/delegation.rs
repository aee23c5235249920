//! `async_delegation` events: a background subagent (or fan-out) finished.

use std::sync::Arc;

use serde::Serialize;

use super::{deserialize_from_fields, is_false};
use super::{WatchDisabled, WatchMatch};
use crate::raw::Fields;
use crate::{ExtraFields, Status, Text, WireNumber};

/// Where an event should be delivered, as a gateway knows it.
///
/// An `async_delegation` event gains `platform`, `chat_type`, `chat_id` and maybe
/// `thread_id` when a gateway enriches it from its session key; watch events carry the
/// chat and user they came from. Absent fields are omitted on the wire.
///
/// An event holds its routing boxed apart (`Option<Box<Routing>>`, `None` when the wire
/// had none of its fields), since most events have none: read it with the event's
/// `routing()` (an empty `Routing` when unset) and set it with `routing_mut()`.
///
/// ```
/// use process_registry::AsyncDelegationEvent;
///
/// let mut event = AsyncDelegationEvent::default();
/// assert!(event.routing().is_empty() && event.routing.is_none());
/// event.routing_mut().platform = Some("telegram".into());
/// assert_eq!(event.routing().platform.as_deref(), Some("telegram"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Routing {
    /// Platform name, e.g. `telegram`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Chat type: `dm`, `group`, `channel`, `thread`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_type: Option<String>,
    /// The chat's id on its platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    /// The user who started the work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// That user's display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Thread (topic) inside the chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The message to reply to, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl Routing {
    /// `true` when no routing field is set.
    pub fn is_empty(&self) -> bool {
        self == &Routing::default()
    }

    /// Takes the routing members out of an object's fields: `None` when it has none.
    pub(crate) fn take_from(f: &mut Fields) -> Result<Option<Box<Routing>>, serde_json::Error> {
        let routing = Routing::take_fields(f)?;
        Ok((!routing.is_empty()).then(|| Box::new(routing)))
    }

    fn take_fields(f: &mut Fields) -> Result<Routing, serde_json::Error> {
        Ok(Routing {
            platform: f.take("platform")?,
            chat_type: f.take("chat_type")?,
            chat_id: f.take("chat_id")?,
            user_id: f.take("user_id")?,
            user_name: f.take("user_name")?,
            thread_id: f.take("thread_id")?,
            message_id: f.take("message_id")?,
        })
    }

    fn from_fields(mut f: Fields) -> Result<Routing, serde_json::Error> {
        Routing::take_fields(&mut f)
    }
}

/// `PartialEq` for an event with boxed-apart parts, comparing those by what they say: an
/// empty box (`Some(Box::default())`, which writes nothing) equals none, so an event
/// equals its own round trip through the wire and through every store. Every field is
/// named, so a field added to the struct and not here fails to compile.
macro_rules! eq_by_content {
    ($event:ident { $($field:ident),+ } boxed { $($boxed:ident => $read:expr),+ }) => {
        impl PartialEq for $event {
            fn eq(&self, other: &Self) -> bool {
                let $event { $($field: _,)+ $($boxed: _,)+ } = self;
                $(self.$field == other.$field &&)+ $($read(self) == $read(other))&&+
            }
        }
    };
}

eq_by_content!(AsyncDelegationEvent {
    delegation_id, session_key, goal, context, toolsets, role, model, status, summary, error,
    api_calls, duration_seconds, dispatched_at, completed_at, exit_reason, truncated,
    missed_steer, traceparent, is_batch, goals, results, total_duration_seconds, extra
} boxed {
    routing => AsyncDelegationEvent::routing,
    stall => stall_of
});

/// An event's stall report, when it says anything (an empty one writes nothing).
fn stall_of(event: &AsyncDelegationEvent) -> Option<&StallReport> {
    event
        .stall
        .as_deref()
        .filter(|stall| **stall != StallReport::default())
}
eq_by_content!(WatchMatch {
    session_id, session_key, command, pattern, output, suppressed, extra
} boxed {
    routing => WatchMatch::routing
});
eq_by_content!(WatchDisabled {
    session_id, session_key, command, suppressed, message, extra
} boxed {
    routing => WatchDisabled::routing
});

/// No routing: what `routing()` reads on an event that has none.
static NO_ROUTING: Routing = Routing {
    platform: None,
    chat_type: None,
    chat_id: None,
    user_id: None,
    user_name: None,
    thread_id: None,
    message_id: None,
};

/// `routing()` and `routing_mut()` for the events that carry a [`Routing`].
macro_rules! routing_access {
    ($($event:ty),+) => {$(
        impl $event {
            /// Where the event should be delivered: its routing, or an empty one.
            pub fn routing(&self) -> &Routing {
                self.routing.as_deref().unwrap_or(&NO_ROUTING)
            }

            /// Its routing to set, made (empty) when it had none.
            pub fn routing_mut(&mut self) -> &mut Routing {
                self.routing.get_or_insert_default()
            }
        }
    )+};
}
routing_access!(AsyncDelegationEvent, WatchMatch, WatchDisabled);

/// `async_delegation`: a background subagent finished (single task), or a background
/// fan-out finished (a batch: `is_batch: true` or a `results` list, with `goals` and
/// per-task `results`).
///
/// The dispatch-time spec (`goal`, `context`, `toolsets`, `role`, `model`,
/// `session_key`) is restated so the text built from this event is self-contained.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AsyncDelegationEvent {
    /// `deleg_` + 8 lowercase hex digits. `None` when the producer sent none (absent or
    /// `null`, written back as `null` and rendered `unknown`); an empty string is kept
    /// as it is.
    pub delegation_id: Option<Text>,
    /// The dispatching gateway session key; `""` means CLI origin (unrouted).
    pub session_key: Text,
    /// The task's goal, verbatim.
    pub goal: Text,
    /// Context the parent gave the subagent.
    pub context: Option<Text>,
    /// Toolsets the subagent had. Shared: the completion restates the dispatch's list
    /// without copying it.
    pub toolsets: Option<Arc<[Text]>>,
    /// `leaf` or `orchestrator`.
    pub role: Option<Text>,
    /// The model that ran the task.
    pub model: Option<Text>,
    /// Open string: `completed`, `success`, `error`, `failed`, `interrupted`, `timeout`,
    /// `stalled`, `unknown`, `cancelled`, …
    pub status: Option<Status>,
    /// What the subagent reported.
    pub summary: Option<Text>,
    /// Why it failed, when it did.
    pub error: Option<Text>,
    /// Model API calls the subagent made (an integer on the wire).
    pub api_calls: Option<WireNumber>,
    /// Run time in seconds, printed exactly as it came on the wire.
    pub duration_seconds: Option<WireNumber>,
    /// Unix seconds when the delegation was dispatched.
    pub dispatched_at: Option<WireNumber>,
    /// Unix seconds when it completed.
    pub completed_at: Option<WireNumber>,
    /// Why the subagent loop stopped, e.g. `completed` or `max_iterations`.
    pub exit_reason: Option<Text>,
    /// Set by producers that know the summary was cut short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Steering text queued for the subagent that it never read: it finished first. The
    /// summary then ends with a note that says so (see `async_delegation::Steering`).
    /// Several texts are joined by a line break, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed_steer: Option<Text>,
    /// The W3C trace context (`00-{trace id}-{span id}-{flags}`) the delegation was
    /// dispatched in, so the trace continues wherever its completion is handled (another
    /// process, after a restart). Kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<Text>,
    /// Set when the engine finalized the delegation itself because it stopped making
    /// progress or ran past its deadline (its four wire fields, written flat; boxed apart
    /// because almost no completion has them).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub stall: Option<Box<StallReport>>,
    /// `true` for a fan-out batch.
    #[serde(skip_serializing_if = "is_false")]
    pub is_batch: bool,
    /// Batch only: the goal of every task, by task index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goals: Option<Vec<Text>>,
    /// Batch only: one result per task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<BatchTaskResult>>,
    /// Batch only: wall time of the whole fan-out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_duration_seconds: Option<WireNumber>,
    /// Filled in by gateway enrichment; boxed apart, since most completions have none
    /// (read it with [`routing`](Self::routing), set it with
    /// [`routing_mut`](Self::routing_mut)).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Box<Routing>>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// How the engine finalized a delegation that stopped making progress (status
/// `stalled`) or ran past its deadline (`timeout`): the wire fields
/// `stalled_after_quiet_seconds`, `stall_threshold_seconds`, `stall_phase`,
/// `stall_grace_seconds`, each omitted when absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StallReport {
    /// How long it had made no progress when it was interrupted, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_after_quiet_seconds: Option<WireNumber>,
    /// The quiet (or deadline) threshold it crossed, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_threshold_seconds: Option<WireNumber>,
    /// `idle`, `in_tool` (inside a tool call), or `deadline` (its deadline passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_phase: Option<Text>,
    /// How long it was given to end by itself after the interrupt, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_grace_seconds: Option<WireNumber>,
}

impl StallReport {
    /// The report's fields, when the event has any of them.
    fn take_from(f: &mut Fields) -> Result<Option<Box<StallReport>>, serde_json::Error> {
        let report = StallReport {
            stalled_after_quiet_seconds: f.take("stalled_after_quiet_seconds")?,
            stall_threshold_seconds: f.take("stall_threshold_seconds")?,
            stall_phase: f.take("stall_phase")?,
            stall_grace_seconds: f.take("stall_grace_seconds")?,
        };
        Ok((report != StallReport::default()).then(|| Box::new(report)))
    }
}

impl AsyncDelegationEvent {
    /// The wire tag.
    pub const TYPE: &'static str = "async_delegation";

    /// `true` when the event renders as a batch: `is_batch` is set, or it carries a
    /// `results` list (even an empty one).
    pub fn renders_as_batch(&self) -> bool {
        self.is_batch || self.results.is_some()
    }

    pub(crate) fn from_fields(mut f: Fields) -> Result<Self, serde_json::Error> {
        Ok(AsyncDelegationEvent {
            delegation_id: f.take("delegation_id")?,
            session_key: f.take("session_key")?.unwrap_or_default(),
            goal: f.take("goal")?.unwrap_or_default(),
            context: f.take("context")?,
            toolsets: f.take("toolsets")?,
            role: f.take("role")?,
            model: f.take("model")?,
            status: f.take("status")?,
            summary: f.take("summary")?,
            error: f.take("error")?,
            api_calls: f.take("api_calls")?,
            duration_seconds: f.take("duration_seconds")?,
            dispatched_at: f.take("dispatched_at")?,
            completed_at: f.take("completed_at")?,
            exit_reason: f.take("exit_reason")?,
            truncated: f.take("truncated")?,
            missed_steer: f.take("missed_steer")?,
            traceparent: f.take("traceparent")?,
            stall: StallReport::take_from(&mut f)?,
            is_batch: f.take("is_batch")?.unwrap_or_default(),
            goals: f.take("goals")?,
            results: f.take("results")?,
            total_duration_seconds: f.take("total_duration_seconds")?,
            routing: Routing::take_from(&mut f)?,
            extra: f.into_extra(),
        })
    }
}

/// One task's outcome inside a batch [`AsyncDelegationEvent`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchTaskResult {
    /// Zero-based index of the task in the batch (an integer on the wire).
    pub task_index: WireNumber,
    /// The task's own goal, used when the batch's `goals` has no entry for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<Text>,
    /// Outcome, as for a single delegation.
    pub status: Option<Status>,
    /// What the subagent reported.
    pub summary: Option<Text>,
    /// Why it failed, when it did.
    pub error: Option<Text>,
    /// Model API calls.
    pub api_calls: Option<WireNumber>,
    /// Run time in seconds.
    pub duration_seconds: Option<WireNumber>,
    /// Why the subagent loop stopped.
    pub exit_reason: Option<Text>,
    /// The task hit its iteration cap.
    pub truncated: Option<bool>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl BatchTaskResult {
    fn from_fields(mut f: Fields) -> Result<Self, serde_json::Error> {
        Ok(BatchTaskResult {
            task_index: f.take("task_index")?.unwrap_or_default(),
            goal: f.take("goal")?,
            status: f.take("status")?,
            summary: f.take("summary")?,
            error: f.take("error")?,
            api_calls: f.take("api_calls")?,
            duration_seconds: f.take("duration_seconds")?,
            exit_reason: f.take("exit_reason")?,
            truncated: f.take("truncated")?,
            extra: f.into_extra(),
        })
    }
}

deserialize_from_fields!(Routing, AsyncDelegationEvent, BatchTaskResult);
