//! Arbitrary wire input: parsing never panics, a parsed event re-serializes to a fixed
//! point, and the formatter never panics on anything that parses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::tz::TimeZone;
use jiff::Timestamp;
use process_registry::{format_process_notification_in, Event};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-1e4f64..2e9).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const TYPES: &[&str] = &[
    "async_delegation",
    "completion",
    "watch_match",
    "watch_disabled",
    "watch_overflow_tripped",
    "watch_overflow_released",
    "something_else",
];

const FIELDS: &[&str] = &[
    "delegation_id",
    "session_key",
    "goal",
    "context",
    "toolsets",
    "role",
    "model",
    "status",
    "summary",
    "error",
    "api_calls",
    "duration_seconds",
    "dispatched_at",
    "completed_at",
    "exit_reason",
    "truncated",
    "is_batch",
    "goals",
    "results",
    "total_duration_seconds",
    "session_id",
    "command",
    "exit_code",
    "completion_reason",
    "termination_source",
    "output",
    "pattern",
    "suppressed",
    "message",
    "platform",
    "chat_id",
    "thread_id",
    "task_index",
    "unknown_field",
];

/// Values that are often the right type for a field, sometimes not.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => scalar(),
        1 => prop::collection::vec(".{0,8}".prop_map(Value::String), 0..3).prop_map(Value::Array),
        1 => prop::collection::vec(
            prop::collection::btree_map(
                prop::sample::select(vec!["task_index", "status", "summary", "error",
                    "api_calls", "duration_seconds", "exit_reason", "truncated", "goal"]),
                scalar(),
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            0..4,
        )
        .prop_map(Value::Array),
        1 => json(),
    ]
}

fn event_like() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(TYPES)),
        prop::collection::btree_map(prop::sample::select(FIELDS), field_value(), 0..12),
    )
        .prop_map(|(tag, fields)| {
            let mut object: Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(tag) = tag {
                object.insert("type".into(), Value::String(tag.into()));
            }
            Value::Object(object)
        })
}

fn check(value: Value) {
    let Ok(event) = Event::from_value(value.clone()) else {
        return;
    };
    if let Event::Other(object) = &event {
        assert_eq!(&Value::Object(object.clone()), &value);
    }
    let wire = event.to_value();
    assert_eq!(Event::from_value(wire.clone()).unwrap(), event);
    let text = serde_json::to_string(&event).unwrap();
    assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    let rendered = format_process_notification_in(&event, &TimeZone::UTC, now);
    assert_eq!(rendered.is_none(), matches!(event, Event::Other(_)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_json_never_panics(value in json()) {
        check(value);
    }

    #[test]
    fn event_shaped_objects_round_trip_and_format(value in event_like()) {
        check(value);
    }
}
