//! Golden JSON for every event type (whole objects compared), round trips, and the
//! behaviour of the flattened `routing` + `extra` fields.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use process_registry::{
    AsyncDelegationEvent, BatchTaskResult, Event, ExtraFields, ProcessCompletion, Routing,
    UnknownEvent, WatchDisabled, WatchMatch, WatchOverflow, WireNumber,
};
use serde_json::{json, Value};

fn s<T: for<'a> From<&'a str>>(text: &str) -> Option<T> {
    Some(T::from(text))
}

fn int(n: i64) -> Option<WireNumber> {
    Some(WireNumber::from(n))
}

fn float(x: f64) -> Option<WireNumber> {
    WireNumber::from_f64(x)
}

fn extra(value: Value) -> ExtraFields {
    let Value::Object(object) = value else {
        panic!("not an object: {value}");
    };
    let mut extra = ExtraFields::new();
    for (key, value) in object {
        extra.insert(key, value);
    }
    extra
}

fn unknown(value: Value) -> UnknownEvent {
    UnknownEvent::from_value(value).unwrap()
}

/// Serializes, checks the whole JSON object, parses it back and checks the event.
fn assert_golden(event: Event, golden: Value) {
    let wire = serde_json::to_value(&event).unwrap();
    assert_eq!(wire, golden);
    assert_eq!(event.to_value(), golden);
    let parsed: Event = serde_json::from_value(golden.clone()).unwrap();
    assert_eq!(parsed, event);
    // And through text, as it travels between processes.
    let text = serde_json::to_string(&event).unwrap();
    assert!(text.starts_with(r#"{"type":""#), "type first: {text}");
    let reparsed: Event = serde_json::from_str(&text).unwrap();
    assert_eq!(reparsed, event);
}

/// Parses wire JSON and serializes it again: the same object must come out.
fn assert_round_trip(wire: Value) {
    let event = Event::from_value(wire.clone()).unwrap();
    assert_eq!(event.to_value(), wire);
    let text = serde_json::to_string(&wire).unwrap();
    let event: Event = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&event).unwrap(), wire);
}

fn single_delegation() -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some("deleg_0a1b2c3d".into()),
        session_key: "agent:main:telegram:dm:12345:678".into(),
        goal: "Investigate flaky test".into(),
        context: s("repo /tmp/p"),
        toolsets: Some(["terminal".into(), "web".into()].into()),
        role: s("leaf"),
        model: s("m"),
        status: s("completed"),
        summary: s("Found the bug"),
        error: None,
        api_calls: int(4),
        duration_seconds: float(12.0),
        dispatched_at: float(1000.0),
        completed_at: float(1012.5),
        exit_reason: s("completed"),
        ..Default::default()
    }
}

#[test]
fn async_delegation_single_golden() {
    assert_golden(
        Event::AsyncDelegation(single_delegation()),
        json!({
            "type": "async_delegation",
            "delegation_id": "deleg_0a1b2c3d",
            "session_key": "agent:main:telegram:dm:12345:678",
            "goal": "Investigate flaky test",
            "context": "repo /tmp/p",
            "toolsets": ["terminal", "web"],
            "role": "leaf",
            "model": "m",
            "status": "completed",
            "summary": "Found the bug",
            "error": null,
            "api_calls": 4,
            "duration_seconds": 12.0,
            "dispatched_at": 1000.0,
            "completed_at": 1012.5,
            "exit_reason": "completed",
        }),
    );
}

#[test]
fn async_delegation_enriched_golden() {
    let mut event = single_delegation();
    event.routing = Some(Box::new(Routing {
        platform: s("telegram"),
        chat_type: s("dm"),
        chat_id: s("12345"),
        thread_id: s("678"),
        ..Default::default()
    }));
    let mut golden = Event::AsyncDelegation(single_delegation()).to_value();
    let fields = golden.as_object_mut().unwrap();
    fields.insert("platform".into(), json!("telegram"));
    fields.insert("chat_type".into(), json!("dm"));
    fields.insert("chat_id".into(), json!("12345"));
    fields.insert("thread_id".into(), json!("678"));
    assert_golden(Event::AsyncDelegation(event), golden);
}

#[test]
fn async_delegation_batch_golden() {
    let event = AsyncDelegationEvent {
        delegation_id: Some("deleg_ba7c0001".into()),
        session_key: String::new().into(),
        goal: "Fix lint; Run tests".into(),
        role: s("leaf"),
        model: s("m"),
        status: s("completed"),
        api_calls: int(5),
        duration_seconds: float(7.25),
        dispatched_at: float(1000.0),
        completed_at: float(1007.25),
        is_batch: true,
        goals: Some(vec!["Fix lint".into(), "Run tests".into()]),
        results: Some(vec![
            BatchTaskResult {
                task_index: process_registry::WireNumber::from(0_u64),
                status: s("completed"),
                summary: s("clean"),
                api_calls: int(2),
                duration_seconds: float(3.0),
                exit_reason: s("completed"),
                truncated: Some(false),
                ..Default::default()
            },
            BatchTaskResult {
                task_index: process_registry::WireNumber::from(1_u64),
                status: s("failed"),
                error: s("hung"),
                api_calls: int(3),
                duration_seconds: int(7),
                exit_reason: s("max_iterations"),
                truncated: Some(true),
                ..Default::default()
            },
        ]),
        total_duration_seconds: float(7.25),
        ..Default::default()
    };
    assert_golden(
        Event::AsyncDelegation(event),
        json!({
            "type": "async_delegation",
            "delegation_id": "deleg_ba7c0001",
            "session_key": "",
            "goal": "Fix lint; Run tests",
            "context": null,
            "toolsets": null,
            "role": "leaf",
            "model": "m",
            "status": "completed",
            "summary": null,
            "error": null,
            "api_calls": 5,
            "duration_seconds": 7.25,
            "dispatched_at": 1000.0,
            "completed_at": 1007.25,
            "exit_reason": null,
            "is_batch": true,
            "goals": ["Fix lint", "Run tests"],
            "results": [
                {"task_index": 0, "status": "completed", "summary": "clean", "error": null,
                 "api_calls": 2, "duration_seconds": 3.0, "exit_reason": "completed",
                 "truncated": false},
                {"task_index": 1, "status": "failed", "summary": null, "error": "hung",
                 "api_calls": 3, "duration_seconds": 7, "exit_reason": "max_iterations",
                 "truncated": true},
            ],
            "total_duration_seconds": 7.25,
        }),
    );
}

#[test]
fn completion_golden() {
    let event = ProcessCompletion {
        session_id: s("proc_1"),
        session_key: s("agent:main:discord:group:c1"),
        command: s("pytest -q"),
        exit_code: int(-15),
        completion_reason: s("killed"),
        termination_source: s("the user"),
        output: s("3 passed"),
        ..Default::default()
    };
    assert_golden(
        Event::Completion(event),
        json!({
            "type": "completion",
            "session_id": "proc_1",
            "session_key": "agent:main:discord:group:c1",
            "command": "pytest -q",
            "exit_code": -15,
            "completion_reason": "killed",
            "termination_source": "the user",
            "output": "3 passed",
        }),
    );
}

#[test]
fn watch_match_golden() {
    let event = WatchMatch {
        session_id: s("proc_1"),
        session_key: s("agent:main:telegram:dm:1"),
        command: s("tail -f log"),
        pattern: s("ERROR"),
        output: s("ERROR disk full"),
        suppressed: Some(process_registry::WireNumber::from(2)),
        routing: Some(Box::new(Routing {
            platform: s("telegram"),
            chat_id: s("1"),
            user_id: s("u1"),
            user_name: s("Ada"),
            thread_id: s("9"),
            message_id: s("m7"),
            chat_type: None,
        })),
        ..Default::default()
    };
    assert_golden(
        Event::WatchMatch(event),
        json!({
            "type": "watch_match",
            "session_id": "proc_1",
            "session_key": "agent:main:telegram:dm:1",
            "command": "tail -f log",
            "pattern": "ERROR",
            "output": "ERROR disk full",
            "suppressed": 2,
            "platform": "telegram",
            "chat_id": "1",
            "user_id": "u1",
            "user_name": "Ada",
            "thread_id": "9",
            "message_id": "m7",
        }),
    );
}

#[test]
fn watch_disabled_golden() {
    let event = WatchDisabled {
        session_id: s("proc_1"),
        session_key: s("agent:main:slack:channel:C1"),
        command: s("tail -f log"),
        suppressed: Some(process_registry::WireNumber::from(10)),
        message: s("Watch disabled."),
        routing: Some(Box::new(Routing {
            platform: s("slack"),
            chat_id: s("C1"),
            ..Default::default()
        })),
        ..Default::default()
    };
    assert_golden(
        Event::WatchDisabled(event),
        json!({
            "type": "watch_disabled",
            "session_id": "proc_1",
            "session_key": "agent:main:slack:channel:C1",
            "command": "tail -f log",
            "suppressed": 10,
            "message": "Watch disabled.",
            "platform": "slack",
            "chat_id": "C1",
        }),
    );
}

#[test]
fn watch_overflow_golden() {
    assert_golden(
        Event::WatchOverflowTripped(WatchOverflow {
            message: s("Too many matches."),
            ..Default::default()
        }),
        json!({"type": "watch_overflow_tripped", "message": "Too many matches."}),
    );
    assert_golden(
        Event::WatchOverflowReleased(WatchOverflow {
            message: s("Matches resume."),
            suppressed: Some(process_registry::WireNumber::from(41)),
            ..Default::default()
        }),
        json!({"type": "watch_overflow_released", "message": "Matches resume.", "suppressed": 41}),
    );
}

#[test]
fn unknown_types_round_trip_unchanged() {
    let wire = json!({
        "type": "from_the_future",
        "nested": {"a": [1, 2.0, "x", null, true]},
        "big": 18446744073709551615u64,
        "negative": -3,
        "float": 0.1,
    });
    let event = Event::from_value(wire.clone()).unwrap();
    assert_eq!(event, Event::Other(unknown(wire.clone())));
    assert_eq!(event.type_name(), "from_the_future");
    assert_round_trip(wire);
    // A non-string tag is not a type this crate knows: kept verbatim, never an error.
    assert_round_trip(json!({"type": 7, "session_id": "proc_1"}));
    assert_round_trip(json!({"type": ["x"]}));
}

#[test]
fn untyped_object_is_a_completion() {
    for wire in [
        json!({"session_id": "proc_7", "command": "make", "exit_code": 0, "output": "ok"}),
        json!({"type": null, "session_id": "proc_7", "command": "make", "exit_code": 0, "output": "ok"}),
    ] {
        let event = Event::from_value(wire).unwrap();
        assert_eq!(
            event,
            Event::Completion(ProcessCompletion {
                session_id: s("proc_7"),
                command: s("make"),
                exit_code: int(0),
                output: s("ok"),
                ..Default::default()
            })
        );
        assert_eq!(event.type_name(), "completion");
    }
}

#[test]
fn every_known_type_round_trips() {
    let cases = [
        // What the engine produces (every single-task field present).
        json!({"type": "async_delegation", "delegation_id": "deleg_00000001", "session_key": "",
               "goal": "g", "context": null, "toolsets": null, "role": "leaf", "model": null,
               "status": "interrupted", "summary": null, "error": "Async delegation cancelled",
               "api_calls": 0, "duration_seconds": 0.5, "dispatched_at": 1.5,
               "completed_at": 2.0, "exit_reason": null}),
        json!({"type": "async_delegation", "delegation_id": "deleg_00000002", "session_key": "k",
               "goal": "g", "context": "c", "toolsets": ["a"], "role": "orchestrator",
               "model": "m", "status": "completed", "summary": "s", "error": null,
               "api_calls": 1, "duration_seconds": 3, "dispatched_at": 10.0,
               "completed_at": 13.0, "exit_reason": "max_iterations", "truncated": true,
               "is_batch": true, "goals": ["g"],
               "results": [{"task_index": 0, "goal": "own", "status": "completed",
                            "summary": "s", "error": null, "api_calls": 1,
                            "duration_seconds": 3, "exit_reason": "max_iterations",
                            "truncated": true, "model": "m", "tool_trace": [1, 2]}],
               "total_duration_seconds": 3.25, "platform": "telegram", "chat_type": "dm",
               "chat_id": "1", "thread_id": "2"}),
        json!({"type": "completion", "session_id": "p", "session_key": "", "command": "c",
               "exit_code": 143, "completion_reason": "exited", "termination_source": null,
               "output": ""}),
        json!({"type": "watch_match", "session_id": "p", "session_key": "k", "command": "c",
               "pattern": "x", "output": "x", "suppressed": 0, "platform": "discord",
               "chat_id": "9", "user_id": "u", "user_name": "n", "thread_id": "t",
               "message_id": "m"}),
        json!({"type": "watch_disabled", "session_id": "p", "session_key": "k", "command": "c",
               "suppressed": 5, "message": "off"}),
        json!({"type": "watch_overflow_tripped", "message": "on"}),
        json!({"type": "watch_overflow_released", "message": "off", "suppressed": 3}),
    ];
    for wire in cases {
        assert_round_trip(wire);
    }
}

#[test]
fn flatten_keeps_unknown_fields_and_splits_routing_from_extra() {
    let wire = json!({
        "type": "watch_match",
        "session_id": "proc_1",
        "session_key": null,
        "command": "c",
        "pattern": "p",
        "output": "o",
        "suppressed": 1,
        "platform": "telegram",
        "chat_id": "42",
        "producer": 3,
        "seq": 17,
        "ratio": 0.5,
        "whole": 2.0,
        "nested": {"k": [1, 1.0]},
    });
    let Event::WatchMatch(event) = Event::from_value(wire.clone()).unwrap() else {
        panic!("not a watch_match");
    };
    assert_eq!(
        *event.routing(),
        Routing {
            platform: s("telegram"),
            chat_id: s("42"),
            ..Default::default()
        }
    );
    // Routing fields go to `routing` only, never also to `extra`.
    assert_eq!(
        event.extra.keys().collect::<Vec<_>>(),
        ["nested", "producer", "ratio", "seq", "whole"],
        "in the order they came (a `Value` object sorts its keys)"
    );
    // Numbers keep int versus float, as their exact text.
    let text = |key: &str| event.extra.get(key).unwrap().get().to_owned();
    assert_eq!(text("seq"), "17");
    assert_eq!(text("whole"), "2.0");
    assert_eq!(text("nested"), r#"{"k":[1,1.0]}"#);
    assert_eq!(
        event.extra,
        extra(json!({
            "producer": 3, "seq": 17, "ratio": 0.5, "whole": 2.0, "nested": {"k": [1, 1.0]},
        }))
    );
    assert_round_trip(wire);
}

#[test]
fn absent_routing_fields_are_omitted() {
    let mut event = single_delegation();
    event.routing_mut().platform = s("telegram");
    let wire = Event::AsyncDelegation(event).to_value();
    let fields = wire.as_object().unwrap();
    assert!(fields.contains_key("platform"));
    for absent in [
        "chat_type",
        "chat_id",
        "user_id",
        "user_name",
        "thread_id",
        "message_id",
    ] {
        assert!(!fields.contains_key(absent), "{absent} should be omitted");
    }
    // Batch-only and optional fields are omitted on a single event too.
    for absent in [
        "is_batch",
        "goals",
        "results",
        "total_duration_seconds",
        "truncated",
    ] {
        assert!(!fields.contains_key(absent), "{absent} should be omitted");
    }
}

#[test]
fn numbers_keep_int_versus_float() {
    let wire = json!({
        "type": "async_delegation", "delegation_id": "d", "session_key": "", "goal": "g",
        "context": null, "toolsets": null, "role": null, "model": null, "status": null,
        "summary": null, "error": null, "api_calls": 3.0, "duration_seconds": 17,
        "dispatched_at": 1.25, "completed_at": 2.5, "exit_reason": null,
        "total_duration_seconds": 12.0,
    });
    let Event::AsyncDelegation(event) = Event::from_value(wire.clone()).unwrap() else {
        panic!("not an async_delegation");
    };
    assert!(!event.api_calls.as_ref().unwrap().is_integer());
    assert!(event.duration_seconds.as_ref().unwrap().is_integer());
    let text = serde_json::to_string(&Event::AsyncDelegation(event)).unwrap();
    assert!(text.contains(r#""api_calls":3.0"#), "{text}");
    assert!(text.contains(r#""duration_seconds":17,"#), "{text}");
    assert!(text.contains(r#""total_duration_seconds":12.0"#), "{text}");
    assert_round_trip(wire);
}

#[test]
fn null_reads_like_absent_for_plain_fields() {
    let event = Event::from_value(json!({
        "type": "async_delegation", "delegation_id": null, "session_key": null,
        "goal": null, "is_batch": null, "results": [{"task_index": null}],
    }))
    .unwrap();
    let Event::AsyncDelegation(event) = event else {
        panic!("not an async_delegation");
    };
    assert_eq!(event.session_key, "");
    assert_eq!(event.goal, "");
    assert!(!event.is_batch);
    assert_eq!(
        event.results.unwrap()[0].task_index,
        process_registry::WireNumber::from(0_u8)
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let not_object = Event::from_value(json!([1, 2])).unwrap_err();
    assert_eq!(
        not_object.to_string(),
        "an event must be a JSON object, got array"
    );
    let wrong_type =
        Event::from_value(json!({"type": "async_delegation", "api_calls": "seven"})).unwrap_err();
    assert!(
        wrong_type.to_string().contains("invalid type"),
        "{wrong_type}"
    );
    let via_serde = serde_json::from_str::<Event>("\"text\"").unwrap_err();
    assert!(via_serde.to_string().contains("got string"), "{via_serde}");
}

#[test]
fn accessors() {
    let delegation = Event::AsyncDelegation(single_delegation());
    assert_eq!(
        delegation.session_key(),
        Some("agent:main:telegram:dm:12345:678")
    );
    assert!(delegation.is_async_delegation() && !delegation.is_watch_event());
    let watch = Event::from(WatchMatch {
        session_key: s("k"),
        ..Default::default()
    });
    assert_eq!(watch.session_key(), Some("k"));
    assert!(watch.is_watch_event() && !watch.is_async_delegation());
    let overflow = Event::WatchOverflowReleased(WatchOverflow::default());
    assert_eq!(overflow.session_key(), None);
    assert!(overflow.is_watch_event());
    let other = Event::Other(unknown(json!({"type": "x", "session_key": "sk"})));
    assert_eq!(other.session_key(), Some("sk"));
    assert_eq!(Event::Other(unknown(json!({}))).type_name(), "");
    assert_eq!(Event::Other(unknown(json!({"type": 3}))).type_name(), "");
    assert!(UnknownEvent::from_value(json!([])).is_err());
}

#[test]
fn serialized_text_is_in_the_wire_field_order() {
    let mut event = single_delegation();
    event.routing_mut().platform = s("telegram");
    event.extra.insert("zz_extra", json!(1));
    assert_eq!(
        serde_json::to_string(&Event::AsyncDelegation(event)).unwrap(),
        concat!(
            r#"{"type":"async_delegation","delegation_id":"deleg_0a1b2c3d","#,
            r#""session_key":"agent:main:telegram:dm:12345:678","goal":"Investigate flaky test","#,
            r#""context":"repo /tmp/p","toolsets":["terminal","web"],"role":"leaf","model":"m","#,
            r#""status":"completed","summary":"Found the bug","error":null,"api_calls":4,"#,
            r#""duration_seconds":12.0,"dispatched_at":1000.0,"completed_at":1012.5,"#,
            r#""exit_reason":"completed","platform":"telegram","zz_extra":1}"#
        )
    );
    assert_eq!(
        serde_json::to_string(&Event::WatchOverflowReleased(WatchOverflow {
            message: s("m"),
            suppressed: Some(process_registry::WireNumber::from(1)),
            ..Default::default()
        }))
        .unwrap(),
        r#"{"type":"watch_overflow_released","message":"m","suppressed":1}"#
    );
}

#[test]
fn floats_from_text_are_exact() {
    // Unknown events keep their text; known fields parse floats correctly rounded (the
    // default serde_json parser can be one ULP off on long inputs like the first one).
    let text = r#"{"type":"from_the_future","x":-1.2135660175827595e-275,"y":0.30000000000000004}"#;
    let event: Event = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_string(&event).unwrap(), text);
    let Event::Other(object) = event else {
        panic!("not kept verbatim");
    };
    assert_eq!(
        object.get("x").unwrap().as_f64(),
        Some(-1.2135660175827595e-275)
    );
    let completion = r#"{"type":"completion","session_id":null,"session_key":null,"command":null,"exit_code":-1.2135660175827595e-275,"completion_reason":null,"termination_source":null,"output":null}"#;
    let event: Event = serde_json::from_str(completion).unwrap();
    assert_eq!(serde_json::to_string(&event).unwrap(), completion);
}

#[test]
fn routing_is_boxed_apart_read_empty_when_unset_and_absent_on_the_wire() {
    // No routing field on the wire: no routing at all.
    let Event::AsyncDelegation(mut event) = Event::from_value(json!({
        "type": "async_delegation", "delegation_id": "deleg_0000000a", "goal": "g",
    }))
    .unwrap() else {
        panic!("not an async_delegation");
    };
    assert!(event.routing.is_none());
    assert!(event.routing().is_empty());
    // Set through routing_mut(): made on demand, written flat.
    event.routing_mut().chat_id = s("42");
    assert_eq!(event.routing().chat_id.as_deref(), Some("42"));
    let wire = Event::AsyncDelegation(event.clone()).to_value();
    assert_eq!(wire["chat_id"], json!("42"));
    assert!(wire.get("routing").is_none());
    let Event::AsyncDelegation(back) = Event::from_value(wire).unwrap() else {
        panic!("not an async_delegation");
    };
    assert_eq!(back, event);
    // An empty routing set by hand writes nothing, like none.
    let mut empty = AsyncDelegationEvent::default();
    let _ = empty.routing_mut();
    assert_eq!(
        Event::AsyncDelegation(empty).to_value(),
        Event::AsyncDelegation(AsyncDelegationEvent::default()).to_value()
    );
    // Watch events carry theirs the same way.
    let mut watch = WatchMatch::default();
    assert!(watch.routing().is_empty());
    watch.routing_mut().platform = s("telegram");
    assert_eq!(
        watch.routing.as_deref().and_then(|r| r.platform.as_deref()),
        Some("telegram")
    );
}
