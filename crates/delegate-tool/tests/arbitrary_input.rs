//! `delegate_task` never panics and always answers valid JSON, whatever the model sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_delegation::DelegationResult;
use common::{context, FakeBackend};
use delegate_tool::{delegate_task, delegate_task_value, DelegationConfig, Parent};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "leaf",
            "orchestrator",
            "true",
            "ON",
            "1",
            "",
            "  ",
            "[]",
            "[{\"goal\":\"x\"}]",
            "[1,2]",
            "{"
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Mostly the tool's own argument names, so generated calls get deep into validation.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["goal", "context", "toolsets", "tasks", "role", "background", "max_iterations"])
            .prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

/// Calls shaped like the tool's arguments, with each field sometimes right and sometimes
/// arbitrary, so generated calls reach every validation step and both run paths.
fn arb_call() -> impl Strategy<Value = Value> {
    let goal = prop_oneof![3 => "[a-z ]{0,10}".prop_map(Value::String), 1 => arb_json()];
    let task = prop_oneof![
        4 => (goal.clone(), proptest::option::of(arb_json())).prop_map(|(goal, context)| {
            let mut task = Map::new();
            task.insert("goal".into(), goal);
            if let Some(context) = context {
                task.insert("context".into(), context);
            }
            Value::Object(task)
        }),
        1 => arb_json(),
    ];
    let tasks = prop_oneof![
        2 => prop::collection::vec(task.clone(), 0..5).prop_map(Value::Array),
        1 => prop::collection::vec(task, 0..5).prop_map(|list| Value::String(Value::Array(list).to_string())),
        1 => arb_json(),
    ];
    let background = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec!["1", "true", "Yes", "on", "off", "no", ""])
            .prop_map(|s| Value::String(s.to_owned())),
        arb_json(),
    ];
    (
        proptest::option::of(goal),
        proptest::option::of(tasks),
        proptest::option::of(background),
        proptest::option::of(arb_json()),
        proptest::option::of(arb_json()),
    )
        .prop_map(|(goal, tasks, background, role, toolsets)| {
            let mut call = Map::new();
            for (name, value) in [
                ("goal", goal),
                ("tasks", tasks),
                ("background", background),
                ("role", role),
                ("toolsets", toolsets),
            ] {
                if let Some(value) = value {
                    call.insert(name.to_owned(), value);
                }
            }
            Value::Object(call)
        })
}

fn check(out: &str) {
    let value: Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let map = value.as_object().expect("an object");
    assert!(
        map.contains_key("error")
            || map.contains_key("status")
            || map.contains_key("results")
            || map.contains_key("action"),
        "{out}"
    );
    if let Some(error) = map.get("error") {
        assert!(error.is_string(), "{out}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_arguments_never_panic(
        args in prop_oneof![3 => arb_call(), 1 => arb_json()],
        depth in prop_oneof![4 => Just(0u32), 1 => 1u32..3],
    ) {
        let backend = FakeBackend::new(|_, task| Ok(DelegationResult::completed(task.goal.clone())));
        let config = DelegationConfig { max_async_children: 64, ..DelegationConfig::default() };
        let (ctx, queue) = context(backend, config);
        let parent = Parent::new(depth);
        check(&delegate_task_value(&args, &parent, &ctx));
        check(&delegate_task(&args.to_string(), &parent, &ctx));
        // Also the arguments' object as a JSON string inside `tasks`.
        let wrapped = serde_json::json!({"tasks": args.to_string(), "background": true});
        check(&delegate_task_value(&wrapped, &parent, &ctx));
        drop(queue.drain());
    }

    #[test]
    fn control_actions_on_arbitrary_input_never_panic(
        action in prop_oneof![
            3 => prop::sample::select(vec!["list", "steer", "stop", "spawn", " STOP ", "Steer", "", "kill"])
                .prop_map(|s| Value::String(s.to_owned())),
            1 => arb_json(),
        ],
        target in 0usize..4,
        junk_id in arb_json(),
        message in prop_oneof![2 => ".{0,16}".prop_map(Value::String), 1 => arb_json()],
        rest in arb_call(),
    ) {
        let gate = common::Gate::new();
        let held = std::sync::Arc::clone(&gate);
        // Background children wait for the gate; a synchronous call runs through.
        let mut backend = FakeBackend::new(move |child, task| {
            if task.background {
                held.wait(child);
            }
            Ok(DelegationResult::completed(child.take_steer().join(" ")))
        });
        backend.steerable = true;
        let (ctx, queue) = context(backend, DelegationConfig::default());
        let ours = Parent::new(0).with_session_key("agent:main:telegram:dm:1");
        let theirs = Parent::new(0).with_session_key("agent:main:slack:dm:2");
        let spawn = |parent: &Parent| {
            let out = delegate_task(r#"{"goal": "g", "background": true}"#, parent, &ctx);
            serde_json::from_str::<Value>(&out).unwrap()["delegation_id"].clone()
        };
        let (own_id, foreign_id) = (spawn(&ours), spawn(&theirs));
        let subagent_id = match target {
            0 => own_id,
            1 => foreign_id,
            2 => junk_id,
            _ => Value::Null,
        };
        let mut args = match rest {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        args.insert("action".into(), action);
        args.insert("subagent_id".into(), subagent_id);
        args.insert("message".into(), message);
        let args = Value::Object(args);
        check(&delegate_task_value(&args, &ours, &ctx));
        check(&delegate_task(&args.to_string(), &theirs, &ctx));
        // Whatever was asked, every delegation still ends in exactly one completion.
        gate.open();
        common::wait_until(|| ctx.engine.active_count() == 0);
        let ended = queue.drain();
        let ids: std::collections::BTreeSet<_> = ended
            .iter()
            .filter_map(|event| match event {
                process_registry::Event::AsyncDelegation(event) => event.delegation_id.clone(),
                _ => None,
            })
            .collect();
        prop_assert_eq!(ids.len(), ended.len(), "one completion per delegation");
        prop_assert!(ended.len() >= 2);
    }

    #[test]
    fn arbitrary_text_arguments_never_panic(text in ".{0,64}") {
        let (ctx, _queue) = context(FakeBackend::instant(), DelegationConfig::default());
        check(&delegate_task(&text, &Parent::new(0), &ctx));
    }
}

/// `levels` arrays nested in one another around `null`, built without recursion.
fn nested_arrays(levels: usize) -> Value {
    let mut value = Value::Null;
    for _ in 0..levels {
        value = Value::Array(vec![value]);
    }
    value
}

/// `levels` objects nested in one another around `null`, built without recursion.
fn nested_objects(levels: usize) -> Value {
    let mut value = Value::Null;
    for _ in 0..levels {
        let mut map = Map::new();
        map.insert("k".to_owned(), value);
        value = Value::Object(map);
    }
    value
}

/// An object of these fields (`json!` would copy the values recursively).
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// Takes a value apart without recursion (`Value`'s own drop recurses).
fn dismantle(value: Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

const TOO_DEEP: &str =
    r#"{"error":"delegate_task arguments are nested too deeply (more than 128 levels)."}"#;

#[test]
fn deeply_nested_arguments_are_refused_without_recursion() {
    let (ctx, queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let parent = Parent::new(0);
    let deep = 100_000;
    let calls = [
        object([("goal", "g".into()), ("context", nested_arrays(deep))]),
        object([("goal", "g".into()), ("context", nested_objects(deep))]),
        object([
            (
                "tasks",
                Value::Array(vec![object([
                    ("goal", "g".into()),
                    ("context", nested_arrays(deep)),
                ])]),
            ),
            ("background", true.into()),
        ]),
        object([("goal", "g".into()), ("unknown", nested_objects(deep))]),
        nested_arrays(deep),
    ];
    for arguments in calls {
        assert_eq!(delegate_task_value(&arguments, &parent, &ctx), TOO_DEEP);
        assert_eq!(
            delegate_tool::validate_arguments(&arguments, 0, &DelegationConfig::default()),
            Err(delegate_tool::ToolError::ArgumentsTooDeep { max: 128 })
        );
        dismantle(arguments);
    }
    assert!(ctx.backend.built().is_empty() && queue.is_empty());
}

/// The limit is the one serde_json's parser applies to text: what parses as text is
/// accepted as a value, what it refuses is refused as a value, with the same text.
#[test]
fn nesting_limit_is_the_text_parsers() {
    let (ctx, _queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let parent = Parent::new(0);
    for containers in [126, 127, 128, 129] {
        // The arguments object plus `containers - 1` arrays.
        let arguments = object([
            ("goal", "g".into()),
            ("context", nested_arrays(containers - 1)),
        ]);
        let text = arguments.to_string();
        let parses = serde_json::from_str::<Value>(&text).map(dismantle).is_ok();
        let out = delegate_task_value(&arguments, &parent, &ctx);
        assert_eq!(out == TOO_DEEP, !parses, "{containers}: {out}");
        let from_text = delegate_task(&text, &parent, &ctx);
        if parses {
            // Both ran (their measured durations may differ).
            assert!(out.starts_with(r#"{"results":"#), "{containers}: {out}");
            assert!(
                from_text.starts_with(r#"{"results":"#),
                "{containers}: {from_text}"
            );
        } else {
            assert_eq!(from_text, TOO_DEEP, "{containers}");
        }
        dismantle(arguments);
    }
}
