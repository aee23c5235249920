//! The wire format: every event that travels on the completion queue.
//!
//! Field names are the reference implementation's, so a Python component and a Rust
//! component can exchange events as JSON. Every struct keeps the fields it does not know
//! in `extra`, and an event whose `"type"` is unknown is kept verbatim in
//! [`Event::Other`], so nothing a newer producer adds is ever dropped.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// A JSON object: the representation of unknown fields and unknown events.
pub type JsonObject = Map<String, Value>;

/// One event on the completion queue.
///
/// On the wire an event is a JSON object tagged by `"type"`. An object without a
/// `"type"` is a legacy process [`Completion`](Event::Completion); an object with a type
/// this crate does not know deserializes to [`Event::Other`] and serializes back
/// unchanged.
///
/// Serializing writes `"type"` first, then the struct's fields in the reference's order,
/// then its `extra` fields. Parsing moves `"type"` out of the object, so `extra` never
/// holds it; code that fills `extra` by hand must not add a `"type"` key either.
///
/// ```
/// use process_registry::Event;
///
/// let event: Event = serde_json::from_str(r#"{"type":"watch_overflow_tripped","message":"too chatty"}"#)?;
/// assert_eq!(event.type_name(), "watch_overflow_tripped");
///
/// let future: Event = serde_json::from_str(r#"{"type":"from_the_future","x":1}"#)?;
/// assert_eq!(serde_json::to_string(&future)?, r#"{"type":"from_the_future","x":1}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
// The variants stay unboxed: crates above construct and match them directly, and an
// event is moved a handful of times in its life (put, take, format), so the size is cheap.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `async_delegation`: a background subagent (or a fan-out batch) finished.
    AsyncDelegation(AsyncDelegationEvent),
    /// `completion`: a background process exited.
    Completion(ProcessCompletion),
    /// `watch_match`: a watched process printed a line matching its pattern.
    WatchMatch(WatchMatch),
    /// `watch_disabled`: watching a process was switched off.
    WatchDisabled(WatchDisabled),
    /// `watch_overflow_tripped`: watch notifications are being rate limited.
    WatchOverflowTripped(WatchOverflow),
    /// `watch_overflow_released`: the watch rate limit was lifted.
    WatchOverflowReleased(WatchOverflow),
    /// An event whose `"type"` this crate does not know, kept verbatim (the `"type"`
    /// field included) so it round-trips unchanged.
    Other(JsonObject),
}

impl Event {
    /// The wire tag: `"async_delegation"`, `"completion"`, `"watch_match"`, … or the
    /// unknown event's own `"type"` (empty when it has none that is a string).
    pub fn type_name(&self) -> &str {
        match self {
            Event::AsyncDelegation(_) => AsyncDelegationEvent::TYPE,
            Event::Completion(_) => ProcessCompletion::TYPE,
            Event::WatchMatch(_) => WatchMatch::TYPE,
            Event::WatchDisabled(_) => WatchDisabled::TYPE,
            Event::WatchOverflowTripped(_) => WatchOverflow::TRIPPED,
            Event::WatchOverflowReleased(_) => WatchOverflow::RELEASED,
            Event::Other(object) => object.get("type").and_then(Value::as_str).unwrap_or(""),
        }
    }

    /// The dispatching session key, when the event carries one.
    pub fn session_key(&self) -> Option<&str> {
        match self {
            Event::AsyncDelegation(e) => Some(&e.session_key),
            Event::Completion(e) => e.session_key.as_deref(),
            Event::WatchMatch(e) => e.session_key.as_deref(),
            Event::WatchDisabled(e) => e.session_key.as_deref(),
            Event::WatchOverflowTripped(_) | Event::WatchOverflowReleased(_) => None,
            Event::Other(object) => object.get("session_key").and_then(Value::as_str),
        }
    }

    /// `true` for the `async_delegation` events a gateway routes back to a chat.
    pub fn is_async_delegation(&self) -> bool {
        matches!(self, Event::AsyncDelegation(_))
    }

    /// `true` for an `async_delegation` event dispatched from a CLI session (empty
    /// `session_key`): no gateway routes it; the CLI loop that drives the parent drains it.
    pub fn is_cli_completion(&self) -> bool {
        matches!(self, Event::AsyncDelegation(event) if event.session_key.is_empty())
    }

    /// `true` for the watch events (`watch_match`, `watch_disabled` and both overflow
    /// events) that a gateway delivers from its watch drain.
    pub fn is_watch_event(&self) -> bool {
        matches!(
            self,
            Event::WatchMatch(_)
                | Event::WatchDisabled(_)
                | Event::WatchOverflowTripped(_)
                | Event::WatchOverflowReleased(_)
        )
    }

    /// Parses an event from a JSON value (see [`Event`] for the tagging rules).
    ///
    /// # Errors
    /// When the value is not an object, or a known event type has a field of the wrong
    /// JSON type (for example `"api_calls": "seven"`).
    pub fn from_value(value: Value) -> Result<Event, serde_json::Error> {
        let Value::Object(object) = value else {
            return Err(serde_json::Error::custom(format!(
                "an event must be a JSON object, got {}",
                json_kind(&value)
            )));
        };
        let tag = match object.get("type") {
            None | Some(Value::Null) => ProcessCompletion::TYPE.to_owned(),
            Some(Value::String(tag)) => tag.clone(),
            // A non-string tag is nothing we know: keep the object verbatim.
            Some(_) => return Ok(Event::Other(object)),
        };
        let typed = |object: JsonObject| {
            let mut object = object;
            object.remove("type");
            Value::Object(object)
        };
        Ok(match tag.as_str() {
            AsyncDelegationEvent::TYPE => {
                Event::AsyncDelegation(serde_json::from_value(typed(object))?)
            }
            ProcessCompletion::TYPE => Event::Completion(serde_json::from_value(typed(object))?),
            WatchMatch::TYPE => Event::WatchMatch(serde_json::from_value(typed(object))?),
            WatchDisabled::TYPE => Event::WatchDisabled(serde_json::from_value(typed(object))?),
            WatchOverflow::TRIPPED => {
                Event::WatchOverflowTripped(serde_json::from_value(typed(object))?)
            }
            WatchOverflow::RELEASED => {
                Event::WatchOverflowReleased(serde_json::from_value(typed(object))?)
            }
            _ => Event::Other(object),
        })
    }

    /// The event as a JSON value (a [`Value::Object`] holding `"type"` and every field).
    ///
    /// A `Value` object keeps its keys sorted; serializing the event itself (for example
    /// with `serde_json::to_string`) writes `"type"` first and then the fields in their
    /// wire order.
    pub fn to_value(&self) -> Value {
        fn tagged<T: Serialize>(tag: &str, body: &T) -> Value {
            let mut object = JsonObject::new();
            object.insert("type".to_owned(), Value::String(tag.to_owned()));
            // Our event structs only hold strings, numbers, bools, lists and maps with
            // string keys, so serializing them to a `Value` cannot fail.
            if let Ok(Value::Object(fields)) = serde_json::to_value(body) {
                object.extend(fields);
            }
            Value::Object(object)
        }
        match self {
            Event::AsyncDelegation(e) => tagged(AsyncDelegationEvent::TYPE, e),
            Event::Completion(e) => tagged(ProcessCompletion::TYPE, e),
            Event::WatchMatch(e) => tagged(WatchMatch::TYPE, e),
            Event::WatchDisabled(e) => tagged(WatchDisabled::TYPE, e),
            Event::WatchOverflowTripped(e) => tagged(WatchOverflow::TRIPPED, e),
            Event::WatchOverflowReleased(e) => tagged(WatchOverflow::RELEASED, e),
            Event::Other(object) => Value::Object(object.clone()),
        }
    }
}

/// An event body behind its `"type"` tag, serialized straight to the output: `"type"`
/// first, then the fields in declaration order (the reference's order), with no
/// intermediate `Value`.
#[derive(Serialize)]
struct Tagged<'a, T> {
    #[serde(rename = "type")]
    tag: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn tagged<S: Serializer, T: Serialize>(
            serializer: S,
            tag: &str,
            body: &T,
        ) -> Result<S::Ok, S::Error> {
            Tagged { tag, body }.serialize(serializer)
        }
        match self {
            Event::AsyncDelegation(e) => tagged(serializer, AsyncDelegationEvent::TYPE, e),
            Event::Completion(e) => tagged(serializer, ProcessCompletion::TYPE, e),
            Event::WatchMatch(e) => tagged(serializer, WatchMatch::TYPE, e),
            Event::WatchDisabled(e) => tagged(serializer, WatchDisabled::TYPE, e),
            Event::WatchOverflowTripped(e) => tagged(serializer, WatchOverflow::TRIPPED, e),
            Event::WatchOverflowReleased(e) => tagged(serializer, WatchOverflow::RELEASED, e),
            Event::Other(object) => object.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Event::from_value(value).map_err(D::Error::custom)
    }
}

impl From<AsyncDelegationEvent> for Event {
    fn from(event: AsyncDelegationEvent) -> Self {
        Event::AsyncDelegation(event)
    }
}

impl From<ProcessCompletion> for Event {
    fn from(event: ProcessCompletion) -> Self {
        Event::Completion(event)
    }
}

impl From<WatchMatch> for Event {
    fn from(event: WatchMatch) -> Self {
        Event::WatchMatch(event)
    }
}

impl From<WatchDisabled> for Event {
    fn from(event: WatchDisabled) -> Self {
        Event::WatchDisabled(event)
    }
}

/// The JSON kind of a value, as named in error messages: `object`, `array`, `string`,
/// `number`, `boolean` or `null`.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where an event should be delivered, as a gateway knows it.
///
/// An `async_delegation` event gains `platform`, `chat_type`, `chat_id` and maybe
/// `thread_id` when a gateway enriches it from its session key; watch events carry the
/// chat and user they came from. Absent fields are omitted on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Platform name, e.g. `telegram`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Chat type: `dm`, `group`, `channel`, `thread`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_type: Option<String>,
    /// The chat's id on its platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    /// The user who started the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// That user's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Thread (topic) inside the chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The message to reply to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl Routing {
    /// `true` when no routing field is set.
    pub fn is_empty(&self) -> bool {
        self == &Routing::default()
    }
}

/// `async_delegation`: a background subagent finished (single task), or a background
/// fan-out finished (`is_batch: true`, with `goals` and per-task `results`).
///
/// The dispatch-time spec (`goal`, `context`, `toolsets`, `role`, `model`,
/// `session_key`) is restated so the text built from this event is self-contained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AsyncDelegationEvent {
    /// `deleg_` + 8 lowercase hex digits.
    #[serde(default, deserialize_with = "null_as_default")]
    pub delegation_id: String,
    /// The dispatching gateway session key; `""` means CLI origin (unrouted).
    #[serde(default, deserialize_with = "null_as_default")]
    pub session_key: String,
    /// The task's goal, verbatim.
    #[serde(default, deserialize_with = "null_as_default")]
    pub goal: String,
    /// Context the parent gave the subagent.
    #[serde(default)]
    pub context: Option<String>,
    /// Toolsets the subagent had.
    #[serde(default)]
    pub toolsets: Option<Vec<String>>,
    /// `leaf` or `orchestrator`.
    #[serde(default)]
    pub role: Option<String>,
    /// The model that ran the task.
    #[serde(default)]
    pub model: Option<String>,
    /// Open string: `completed`, `success`, `error`, `failed`, `interrupted`, `timeout`,
    /// `stalled`, `unknown`, `cancelled`, …
    #[serde(default)]
    pub status: Option<String>,
    /// What the subagent reported.
    #[serde(default)]
    pub summary: Option<String>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Model API calls the subagent made (an integer on the wire).
    #[serde(default)]
    pub api_calls: Option<Number>,
    /// Run time in seconds, printed exactly as it came on the wire.
    #[serde(default)]
    pub duration_seconds: Option<Number>,
    /// Unix seconds when the delegation was dispatched.
    #[serde(default)]
    pub dispatched_at: Option<f64>,
    /// Unix seconds when it completed.
    #[serde(default)]
    pub completed_at: Option<f64>,
    /// Why the subagent loop stopped, e.g. `completed` or `max_iterations`.
    #[serde(default)]
    pub exit_reason: Option<String>,
    /// Set by producers that know the summary was cut short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// `true` for a fan-out batch.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub is_batch: bool,
    /// Batch only: the goal of every task, by task index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goals: Option<Vec<String>>,
    /// Batch only: one result per task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<BatchTaskResult>>,
    /// Batch only: wall time of the whole fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration_seconds: Option<Number>,
    /// Filled in by gateway enrichment.
    #[serde(flatten)]
    pub routing: Routing,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl AsyncDelegationEvent {
    /// The wire tag.
    pub const TYPE: &'static str = "async_delegation";
}

/// One task's outcome inside a batch [`AsyncDelegationEvent`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchTaskResult {
    /// Zero-based index of the task in the batch.
    #[serde(default, deserialize_with = "null_as_default")]
    pub task_index: u64,
    /// The task's own goal, used when the batch's `goals` has no entry for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// Outcome, as for a single delegation.
    #[serde(default)]
    pub status: Option<String>,
    /// What the subagent reported.
    #[serde(default)]
    pub summary: Option<String>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Model API calls.
    #[serde(default)]
    pub api_calls: Option<Number>,
    /// Run time in seconds.
    #[serde(default)]
    pub duration_seconds: Option<Number>,
    /// Why the subagent loop stopped.
    #[serde(default)]
    pub exit_reason: Option<String>,
    /// The task hit its iteration cap.
    #[serde(default)]
    pub truncated: Option<bool>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// `completion`: a background process exited. Also what an untyped (legacy) event is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessCompletion {
    /// The process session, e.g. `proc_1`.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The dispatching gateway session key.
    #[serde(default)]
    pub session_key: Option<String>,
    /// The command line.
    #[serde(default)]
    pub command: Option<String>,
    /// Exit code, printed exactly as it came on the wire.
    #[serde(default)]
    pub exit_code: Option<Number>,
    /// `exited`, `killed`, `lost` or `failed_start`.
    #[serde(default)]
    pub completion_reason: Option<String>,
    /// Who killed it, for `killed`.
    #[serde(default)]
    pub termination_source: Option<String>,
    /// The tail of its output.
    #[serde(default)]
    pub output: Option<String>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl ProcessCompletion {
    /// The wire tag.
    pub const TYPE: &'static str = "completion";
}

/// `watch_match`: a watched background process printed a matching line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchMatch {
    /// The process session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The dispatching gateway session key.
    #[serde(default)]
    pub session_key: Option<String>,
    /// The command line.
    #[serde(default)]
    pub command: Option<String>,
    /// The watch pattern that matched.
    #[serde(default)]
    pub pattern: Option<String>,
    /// The matching output.
    #[serde(default)]
    pub output: Option<String>,
    /// Earlier matches dropped by the rate limit.
    #[serde(default)]
    pub suppressed: Option<u64>,
    /// The chat and user to notify.
    #[serde(flatten)]
    pub routing: Routing,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl WatchMatch {
    /// The wire tag.
    pub const TYPE: &'static str = "watch_match";
}

/// `watch_disabled`: watching a process was switched off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchDisabled {
    /// The process session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The dispatching gateway session key.
    #[serde(default)]
    pub session_key: Option<String>,
    /// The command line.
    #[serde(default)]
    pub command: Option<String>,
    /// Matches dropped by the rate limit.
    #[serde(default)]
    pub suppressed: Option<u64>,
    /// Human-readable explanation, rendered verbatim.
    #[serde(default)]
    pub message: Option<String>,
    /// The chat and user to notify.
    #[serde(flatten)]
    pub routing: Routing,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl WatchDisabled {
    /// The wire tag.
    pub const TYPE: &'static str = "watch_disabled";
}

/// `watch_overflow_tripped` / `watch_overflow_released`: the watch rate limit changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchOverflow {
    /// Human-readable explanation, rendered verbatim.
    #[serde(default)]
    pub message: Option<String>,
    /// Matches dropped while the limit was on (sent with `released`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl WatchOverflow {
    /// The wire tag of [`Event::WatchOverflowTripped`].
    pub const TRIPPED: &'static str = "watch_overflow_tripped";
    /// The wire tag of [`Event::WatchOverflowReleased`].
    pub const RELEASED: &'static str = "watch_overflow_released";
}

/// Reads `null` like an absent field: a Python producer writes `None` where this crate
/// has a plain value with a default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn is_false(value: &bool) -> bool {
    !*value
}
