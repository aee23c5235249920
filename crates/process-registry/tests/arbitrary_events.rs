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
    if let Event::Other(unknown) = &event {
        assert_eq!(unknown.to_value(), value);
        assert_eq!(unknown.as_json(), serde_json::to_string(&value).unwrap());
    }
    let wire = event.to_value();
    assert_eq!(Event::from_value(wire.clone()).unwrap(), event);
    let text = serde_json::to_string(&event).unwrap();
    assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    let rendered = format_process_notification_in(&event, &TimeZone::UTC, now);
    assert_eq!(rendered.is_none(), matches!(event, Event::Other(_)));
}

/// JSON text as producers write it: keys in any order, Python's `", "` / `": "` spacing or
/// none, and integers beyond 64 bits.
fn json_text(depth: u32) -> BoxedStrategy<String> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "-?[1-9][0-9]{19,40}",
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::to_string(&f).unwrap()),
    ];
    let scalar = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        number,
        ".{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    if depth == 0 {
        return scalar.boxed();
    }
    let inner = json_text(depth - 1);
    prop_oneof![
        2 => scalar,
        1 => (prop::collection::vec(inner.clone(), 0..4), any::<bool>())
            .prop_map(|(items, spaced)| format!("[{}]", items.join(if spaced { ", " } else { "," }))),
        1 => (prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6), any::<bool>())
            .prop_map(|(members, spaced)| object_text(&members, spaced)),
    ]
    .boxed()
}

fn object_text(members: &[(&str, String)], spaced: bool) -> String {
    let (comma, colon) = if spaced { (", ", ": ") } else { (",", ":") };
    let members: Vec<String> = members
        .iter()
        .map(|(key, value)| format!("{}{colon}{value}", serde_json::to_string(key).unwrap()))
        .collect();
    format!("{{{}}}", members.join(comma))
}

fn event_text() -> impl Strategy<Value = String> {
    (
        prop::option::of(prop::sample::select(TYPES)),
        prop::collection::vec((prop::sample::select(FIELDS), json_text(2)), 0..12),
        any::<bool>(),
    )
        .prop_map(|(tag, mut members, spaced)| {
            if let Some(tag) = tag {
                members.insert(0, ("type", serde_json::to_string(tag).unwrap()));
            }
            object_text(&members, spaced)
        })
}

/// Text in, text out: a parsed event writes text that parses to the same event and is
/// then a fixed point; an unknown event comes back byte for byte.
fn check_text(text: &str) {
    let Ok(event) = serde_json::from_str::<Event>(text) else {
        return;
    };
    let written = serde_json::to_string(&event).unwrap();
    if matches!(event, Event::Other(_)) {
        assert_eq!(written, text);
    }
    let again: Event = serde_json::from_str(&written).unwrap();
    assert_eq!(again, event);
    assert_eq!(serde_json::to_string(&again).unwrap(), written);
    let now = Timestamp::from_second(1_700_000_000).unwrap();
    let _ = format_process_notification_in(&event, &TimeZone::UTC, now);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn event_text_round_trips_exactly(text in event_text()) {
        check_text(&text);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json()) {
        check(value);
    }

    #[test]
    fn event_shaped_objects_round_trip_and_format(value in event_like()) {
        check(value);
    }
}
