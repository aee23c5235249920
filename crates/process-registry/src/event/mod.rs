//! The wire format: every event that travels on the completion queue.
//!
//! Field names are those of the Python agent harness this workspace reimplements, so a
//! Python component and a Rust component can exchange events as JSON. Every struct keeps
//! the fields it does not know in `extra` ([`ExtraFields`]), and an event whose `"type"`
//! is unknown is kept verbatim in [`Event::Other`] ([`UnknownEvent`]), so nothing a newer
//! producer adds is ever dropped or changed.

mod delegation;
mod process;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

pub use delegation::{AsyncDelegationEvent, BatchTaskResult, Routing, StallReport};
pub use process::{ProcessCompletion, WatchDisabled, WatchMatch, WatchOverflow};

use crate::raw::{raw_kind, Fields};
use crate::UnknownEvent;

/// One event on the completion queue.
///
/// On the wire an event is a JSON object tagged by `"type"`. An object without a
/// `"type"` (or with `"type": null`) is a legacy process
/// [`Completion`](Event::Completion); an object with a type this crate does not know —
/// or a `"type"` that is not a string — is an [`Event::Other`] and serializes back byte
/// for byte.
///
/// Serializing writes `"type"` first, then the struct's fields in their wire order, then
/// its `extra` fields in the order they came. Numbers keep their value and kind
/// ([`WireNumber`](crate::WireNumber)): integers of any size, floats as the double they
/// denote.
///
/// `Event` is a JSON type: it deserializes from any `serde_json` source (text, bytes, a
/// reader, a `serde_json::Value`), not through other serde formats or serde's buffering
/// (`#[serde(flatten)]`, untagged enums), which cannot hand over a value's exact text.
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
    /// An event whose `"type"` this crate does not know, kept as its exact text (the
    /// `"type"` field included) so it round-trips unchanged.
    Other(UnknownEvent),
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
            Event::Other(event) => event.type_name(),
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
            Event::Other(event) => event.session_key(),
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

    /// Parses an event from JSON text, keeping every number and every unknown field as
    /// it came (see [`Event`] for the tagging rules). The same as
    /// `serde_json::from_str::<Event>`.
    ///
    /// # Errors
    /// When the text is not JSON, is not an object, or a known event type has a field of
    /// the wrong JSON type (for example `"api_calls": "seven"`); the message names the
    /// field.
    pub fn from_json(text: &str) -> Result<Event, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Parses an event from a JSON value (see [`Event`] for the tagging rules). A
    /// `Value` holds integers of at most 64 bits and sorts object keys: read text with
    /// [`from_json`](Self::from_json) to keep both as they came.
    ///
    /// # Errors
    /// As [`from_json`](Self::from_json).
    pub fn from_value(value: Value) -> Result<Event, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// The event as a JSON value (a [`Value::Object`] holding `"type"` and every field).
    ///
    /// A `Value` object keeps its keys sorted and its integers within 64 bits;
    /// serializing the event itself (for example with `serde_json::to_string`) writes
    /// `"type"` first, the fields in their wire order, and every number as it came.
    pub fn to_value(&self) -> Value {
        // Our event types only hold strings, numbers, bools, lists and maps with string
        // keys, so serializing them to a `Value` cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Builds the event from the exact text of a JSON value.
    fn from_raw(raw: Box<RawValue>) -> Result<Event, serde_json::Error> {
        let kind = raw_kind(&raw);
        if kind != "object" {
            return Err(serde_json::Error::custom(format_args!(
                "an event must be a JSON object, got {kind}"
            )));
        }
        let mut fields: Fields = serde_json::from_str(raw.get())?;
        let tag = if fields.has_value("type") {
            match fields.peek_str("type") {
                Some(tag) => tag,
                // A non-string tag is nothing we know: keep the object verbatim.
                None => return Ok(Event::Other(UnknownEvent::new(raw, &fields))),
            }
        } else {
            ProcessCompletion::TYPE.to_owned()
        };
        let known = matches!(
            tag.as_str(),
            AsyncDelegationEvent::TYPE
                | ProcessCompletion::TYPE
                | WatchMatch::TYPE
                | WatchDisabled::TYPE
                | WatchOverflow::TRIPPED
                | WatchOverflow::RELEASED
        );
        if !known {
            return Ok(Event::Other(UnknownEvent::new(raw, &fields)));
        }
        fields.take_raw("type");
        Ok(match tag.as_str() {
            AsyncDelegationEvent::TYPE => {
                Event::AsyncDelegation(AsyncDelegationEvent::from_fields(fields)?)
            }
            WatchMatch::TYPE => Event::WatchMatch(WatchMatch::from_fields(fields)?),
            WatchDisabled::TYPE => Event::WatchDisabled(WatchDisabled::from_fields(fields)?),
            WatchOverflow::TRIPPED => {
                Event::WatchOverflowTripped(WatchOverflow::from_fields(fields)?)
            }
            WatchOverflow::RELEASED => {
                Event::WatchOverflowReleased(WatchOverflow::from_fields(fields)?)
            }
            _ => Event::Completion(ProcessCompletion::from_fields(fields)?),
        })
    }
}

/// An event body behind its `"type"` tag, serialized straight to the output: `"type"`
/// first, then the fields in declaration order (the wire order), with no intermediate
/// `Value`.
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
            Event::Other(event) => event.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Event::from_raw(raw).map_err(D::Error::custom)
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

impl From<UnknownEvent> for Event {
    fn from(event: UnknownEvent) -> Self {
        Event::Other(event)
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

/// Implements `Deserialize` for an event type through its `from_fields`: the object's
/// members are read with their exact text, known ones into the fields, the rest into
/// `extra`.
macro_rules! deserialize_from_fields {
    ($($t:ty),+ $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                let fields = crate::raw::Fields::deserialize(deserializer)?;
                <$t>::from_fields(fields).map_err(D::Error::custom)
            }
        }
    )+};
}
pub(crate) use deserialize_from_fields;

fn is_false(value: &bool) -> bool {
    !*value
}
