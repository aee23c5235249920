//! Exact JSON for what this crate does not interpret — unknown fields of known events and
//! events of unknown type — and the field reader the event types deserialize with.
//!
//! # Design
//!
//! A `serde_json::Map` sorts its keys and a `serde_json::Value` holds at most 64-bit
//! integers, so a value that went through them does not come back as it came. Turning on
//! serde_json's `preserve_order` or `arbitrary_precision` features would fix that for us
//! and change `serde_json` for every crate in the user's program (the second one is known
//! to break `#[serde(flatten)]` and untagged enums elsewhere). Instead, what this crate
//! does not interpret is kept as the exact text it came as ([`RawValue`], serde_json's
//! `raw_value` feature, which changes nothing for anyone else), and the event types read
//! their known fields one by one from the raw members of the object ([`Fields`]) instead of
//! through `#[serde(flatten)]`, which would buffer every value and lose the text.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeOwned, Error as _, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// The fields of a known event that this crate does not define, in the order they came,
/// each value kept as its exact JSON text (numbers of any size, nested key order and
/// spacing included). They are written back after the event's own fields.
///
/// Keys must not name a field of the event they belong to (nor `type`): parsing never puts
/// such a key here, and one inserted by hand would be written twice.
///
/// ```
/// use process_registry::{Event, ProcessCompletion};
/// use serde_json::json;
///
/// let event: Event = serde_json::from_str(
///     r#"{"type":"completion","session_id":"p","zeta":1,"alpha":{"y":18446744073709551616,"x":2}}"#,
/// )?;
/// let Event::Completion(mut completion) = event else { unreachable!() };
/// assert_eq!(completion.extra.keys().collect::<Vec<_>>(), ["zeta", "alpha"]);
/// assert_eq!(completion.extra.get("alpha").map(|raw| raw.get()), Some(r#"{"y":18446744073709551616,"x":2}"#));
/// assert_eq!(completion.extra.value("zeta"), Some(json!(1)));
///
/// completion.extra.insert("added", json!([true]));
/// assert!(serde_json::to_string(&completion)?.ends_with(r#""zeta":1,"alpha":{"y":18446744073709551616,"x":2},"added":[true]}"#));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct ExtraFields {
    entries: Vec<(String, Box<RawValue>)>,
}

impl ExtraFields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The exact JSON text of the field `key`.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, raw)| &**raw)
    }

    /// The field `key` parsed as a [`Value`] (which holds integers of at most 64 bits:
    /// use [`get`](Self::get) for the exact text).
    pub fn value(&self, key: &str) -> Option<Value> {
        self.get(key)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    /// `true` when the field `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets the field `key` to `value`: in place when it exists, else at the end.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        // A `Value` always serializes (string keys, finite numbers): the `Err` arm is
        // unreachable, and has nothing it could insert.
        if let Ok(raw) = serde_json::value::to_raw_value(&value) {
            self.insert_raw(key, raw);
        }
    }

    /// Sets the field `key` to an exact JSON text: in place when it exists, else at the
    /// end.
    pub fn insert_raw(&mut self, key: impl Into<String>, raw: Box<RawValue>) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = raw,
            None => self.entries.push((key, raw)),
        }
    }

    /// Removes the field `key` and returns its text.
    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(index).1)
    }

    /// The field names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The fields and their exact JSON texts, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.entries.iter().map(|(k, raw)| (k.as_str(), &**raw))
    }
}

impl PartialEq for ExtraFields {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|((ka, va), (kb, vb))| ka == kb && va.get() == vb.get())
    }
}

impl fmt::Debug for ExtraFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, raw)| (k, raw.get())))
            .finish()
    }
}

impl Serialize for ExtraFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (key, raw) in &self.entries {
            map.serialize_entry(key, raw)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ExtraFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Fields::deserialize(deserializer)?.into_extra())
    }
}

/// An event whose `"type"` this crate does not know (or is not a string), kept as the
/// exact JSON text it came as: it is written back byte for byte.
///
/// ```
/// use process_registry::Event;
///
/// let wire = r#"{"type": "from_the_future", "z": 18446744073709551616, "a": {"y": 1, "x": 2}}"#;
/// let event: Event = serde_json::from_str(wire)?;
/// let Event::Other(unknown) = &event else { unreachable!() };
/// assert_eq!(unknown.type_name(), "from_the_future");
/// assert_eq!(unknown.as_json(), wire);
/// assert_eq!(serde_json::to_string(&event)?, wire);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone)]
pub struct UnknownEvent {
    raw: Box<RawValue>,
    type_name: String,
    session_key: Option<String>,
}

impl UnknownEvent {
    /// An unknown event from a JSON object.
    ///
    /// # Errors
    /// When `value` is not an object.
    pub fn from_value(value: Value) -> Result<UnknownEvent, serde_json::Error> {
        if !value.is_object() {
            return Err(serde_json::Error::custom(format_args!(
                "an event must be a JSON object, got {}",
                crate::json_kind(&value)
            )));
        }
        let raw = serde_json::value::to_raw_value(&value)?;
        let fields: Fields = serde_json::from_str(raw.get())?;
        Ok(UnknownEvent::new(raw, &fields))
    }

    /// Wraps the exact text of an object whose members are `fields`.
    pub(crate) fn new(raw: Box<RawValue>, fields: &Fields) -> UnknownEvent {
        UnknownEvent {
            type_name: fields.peek_str("type").unwrap_or_default(),
            session_key: fields.peek_str("session_key"),
            raw,
        }
    }

    /// The event's `"type"`, or `""` when it has none that is a string.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The event's `"session_key"`, when it has one that is a string.
    pub fn session_key(&self) -> Option<&str> {
        self.session_key.as_deref()
    }

    /// The exact JSON text of the event, `"type"` included.
    pub fn as_json(&self) -> &str {
        self.raw.get()
    }

    /// The field `key` parsed as a [`Value`].
    pub fn get(&self, key: &str) -> Option<Value> {
        let mut fields: Fields = serde_json::from_str(self.raw.get()).ok()?;
        fields
            .take_raw(key)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    /// The event as a [`Value`] (keys sorted, integers of at most 64 bits).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.raw.get()).unwrap_or(Value::Null)
    }
}

impl PartialEq for UnknownEvent {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get()
    }
}

impl fmt::Debug for UnknownEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UnknownEvent")
            .field(&self.raw.get())
            .finish()
    }
}

impl Serialize for UnknownEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

/// The members of one JSON object, in wire order, each value as its exact text; known
/// fields are taken out one by one and the rest become [`ExtraFields`].
///
/// A key given twice keeps its first position and its last value, as Python's
/// `json.loads` does.
pub(crate) struct Fields {
    entries: Vec<(String, Option<Box<RawValue>>)>,
    index: HashMap<String, usize>,
}

impl Fields {
    /// Removes the member `key` and returns its text.
    pub(crate) fn take_raw(&mut self, key: &str) -> Option<Box<RawValue>> {
        let position = *self.index.get(key)?;
        self.entries.get_mut(position)?.1.take()
    }

    /// The member `key` when it is a string (without removing it).
    pub(crate) fn peek_str(&self, key: &str) -> Option<String> {
        let position = *self.index.get(key)?;
        let raw = self.entries.get(position)?.1.as_ref()?;
        serde_json::from_str::<String>(raw.get()).ok()
    }

    /// `true` when the member `key` is present and not `null`.
    pub(crate) fn has_value(&self, key: &str) -> bool {
        self.index
            .get(key)
            .and_then(|&position| self.entries.get(position))
            .and_then(|(_, raw)| raw.as_ref())
            .is_some_and(|raw| raw.get() != "null")
    }

    /// Removes the member `key` and parses it; absent and `null` are `None`.
    ///
    /// # Errors
    /// When the value does not parse as a `T`; the message names the field.
    pub(crate) fn take<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
    ) -> Result<Option<T>, serde_json::Error> {
        let Some(raw) = self.take_raw(key) else {
            return Ok(None);
        };
        serde_json::from_str::<Option<T>>(raw.get())
            .map_err(|error| serde_json::Error::custom(format_args!("field `{key}`: {error}")))
    }

    /// What was not taken, in wire order.
    pub(crate) fn into_extra(self) -> ExtraFields {
        ExtraFields {
            entries: self
                .entries
                .into_iter()
                .filter_map(|(key, raw)| raw.map(|raw| (key, raw)))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Fields {
                    entries: Vec::with_capacity(map.size_hint().unwrap_or(16)),
                    index: HashMap::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    let raw = map.next_value::<Box<RawValue>>()?;
                    match fields.index.get(&key) {
                        Some(&position) => fields.entries[position].1 = Some(raw),
                        None => {
                            fields.index.insert(key.clone(), fields.entries.len());
                            fields.entries.push((key, Some(raw)));
                        }
                    }
                }
                Ok(fields)
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// The JSON kind of the value whose text is `raw`, as [`crate::json_kind`] names it.
pub(crate) fn raw_kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}
