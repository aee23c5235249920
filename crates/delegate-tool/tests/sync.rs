//! Synchronous runs: children registered while they run, a batch in parallel,
//! results sorted by task index, children unregistered and closed afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use async_delegation::DelegationResult;
use common::{context, parse, FakeBackend, Gate};
use delegate_tool::{delegate_task, DelegationConfig, Parent, PARENT_INTERRUPTED_REASON};
use serde_json::json;

#[test]
fn batch_of_three_runs_in_parallel_and_results_are_sorted_by_index() {
    // Each child waits at a barrier of 3: the call can only return if all three ran at
    // the same time (a sequential implementation would hang until the hang guard and
    // the barrier would then never release; no clock involved).
    let barrier = Arc::new(Barrier::new(3));
    let finish_order = Arc::new(Mutex::new(Vec::new()));
    let (b, order) = (Arc::clone(&barrier), Arc::clone(&finish_order));
    let backend = FakeBackend::new(move |_, task| {
        b.wait();
        order.lock().unwrap().push(task.task_index);
        Ok(DelegationResult {
            api_calls: Some(task.task_index as u64 + 1),
            ..DelegationResult::completed(format!("done: {}", task.goal))
        })
    });
    let (ctx, queue) = context(backend, DelegationConfig::default());
    let parent = Parent::new(0);
    let out = delegate_task(
        r#"{"tasks": [{"goal": "a"}, {"goal": "b"}, {"goal": "c"}]}"#,
        &parent,
        &ctx,
    );
    let value = parse(&out);
    let results = value["results"].as_array().unwrap();
    let indexed: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r["task_index"].as_u64().unwrap(),
                r["summary"].as_str().unwrap().to_owned(),
                r["api_calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        indexed,
        [
            (0, "done: a".to_owned(), 1),
            (1, "done: b".to_owned(), 2),
            (2, "done: c".to_owned(), 3)
        ]
    );
    assert!(value["total_duration_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(finish_order.lock().unwrap().len(), 3);
    for child in ctx.backend.built() {
        let name = child.run_thread.lock().unwrap().clone().unwrap();
        assert_eq!(name, format!("delegate-task-{}", child.task.task_index));
        assert_eq!((child.run_count(), child.close_count()), (1, 1));
    }
    assert_eq!(parent.active_child_count(), 0);
    assert!(
        queue.is_empty() && ctx.engine.active_count() == 0,
        "sync runs never touch the engine"
    );
}

#[test]
fn results_are_sorted_even_when_an_earlier_task_fails_to_build() {
    let mut backend = FakeBackend::instant();
    backend.fail_build_goal = Some("b".into());
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    let out = delegate_task(
        r#"{"tasks": [{"goal": "a"}, {"goal": "b"}, {"goal": "c"}]}"#,
        &Parent::new(0),
        &ctx,
    );
    let value = parse(&out);
    let results = value["results"].as_array().unwrap();
    let statuses: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r["task_index"].as_u64().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [(0, "completed"), (1, "error"), (2, "completed")]);
    assert_eq!(results[1]["error"], "Failed to build the subagent: boom");
    assert_eq!(ctx.backend.built().len(), 2);
}

#[test]
fn single_task_runs_registered_on_the_calling_thread_then_is_unregistered_and_closed() {
    let parent = Parent::new(0);
    let seen = Arc::new(Mutex::new(None));
    let (p, s) = (parent.clone(), Arc::clone(&seen));
    let backend = FakeBackend::new(move |child, _| {
        *s.lock().unwrap() = Some(p.active_child_count());
        assert!(p.has_active_child(&child_dyn(child, &p)));
        Ok(DelegationResult::default())
    });
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    let caller = thread::current().id();
    let out = delegate_task(r#"{"goal": "g", "context": "c"}"#, &parent, &ctx);
    let value = parse(&out);
    assert_eq!(*seen.lock().unwrap(), Some(1), "registered while running");
    let child = ctx.backend.only_child();
    assert_eq!(parent.active_child_count(), 0, "unregistered after");
    assert_eq!(child.close_count(), 1);
    assert_eq!(
        *child.run_thread.lock().unwrap(),
        thread::current().name().map(str::to_owned)
    );
    assert_eq!(thread::current().id(), caller);
    // Defaults: status completed, api_calls 0, measured duration.
    let r = &value["results"][0];
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["api_calls"], 0);
    assert!(r["duration_seconds"].is_f64());
    assert_eq!(r["truncated"], false);
}

/// Finds `child` in `parent` by address (helper for the closure above).
fn child_dyn(child: &common::FakeChild, parent: &Parent) -> Arc<dyn delegate_tool::ChildAgent> {
    parent
        .active_children()
        .into_iter()
        .find(|c| std::ptr::addr_eq(Arc::as_ptr(c), child as *const common::FakeChild))
        .expect("the running child is registered")
}

#[test]
fn parent_interrupt_reaches_running_synchronous_children() {
    let gate = Gate::new();
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let g = Arc::clone(&gate);
    let backend = FakeBackend::new(move |child, task| {
        started_tx.lock().unwrap().send(task.task_index).unwrap();
        if g.wait(child) {
            return Ok(DelegationResult::interrupted(
                child.interrupt_reasons().join(","),
            ));
        }
        Ok(DelegationResult::completed("finished"))
    });
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    let parent = Parent::new(0);
    let out = thread::scope(|s| {
        let call = s.spawn(|| {
            delegate_task(
                r#"{"tasks": [{"goal": "a"}, {"goal": "b"}]}"#,
                &parent,
                &ctx,
            )
        });
        for _ in 0..2 {
            started_rx.recv_timeout(common::HANG_GUARD).unwrap();
        }
        assert_eq!(parent.active_child_count(), 2);
        assert_eq!(parent.interrupt("user pressed stop"), 2);
        call.join().unwrap()
    });
    let value = parse(&out);
    for r in value["results"].as_array().unwrap() {
        assert_eq!(r["status"], "interrupted");
        assert_eq!(r["error"], "user pressed stop");
    }
    assert_eq!(parent.active_child_count(), 0);
    gate.open();
}

#[test]
fn child_built_after_the_parent_was_interrupted_is_interrupted_too() {
    let backend = FakeBackend::new(|child, _| {
        Ok(if child.is_interrupted() {
            DelegationResult::interrupted(child.interrupt_reasons().join(","))
        } else {
            DelegationResult::completed("ran")
        })
    });
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    let parent = Parent::new(0);
    parent.interrupt("stop");
    let value = parse(&delegate_task(r#"{"goal": "g"}"#, &parent, &ctx));
    assert_eq!(value["results"][0]["status"], "interrupted");
    assert_eq!(value["results"][0]["error"], PARENT_INTERRUPTED_REASON);
}

#[test]
fn child_errors_and_panics_become_error_results_and_children_are_still_closed() {
    let backend = FakeBackend::new(|_, task| match task.goal.as_str() {
        "err" => Err("provider said no".into()),
        "panic" => panic!("subagent exploded"),
        _ => Ok(DelegationResult {
            exit_reason: Some("max_iterations".into()),
            duration_seconds: Some(12.5),
            api_calls: Some(50),
            model: Some("big".into()),
            ..DelegationResult::completed("partial")
        }),
    });
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    let parent = Parent::new(0);
    let out = delegate_task(
        r#"{"tasks": [{"goal": "err"}, {"goal": "panic"}, {"goal": "cap"}]}"#,
        &parent,
        &ctx,
    );
    let value = parse(&out);
    let results = value["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "error");
    assert_eq!(results[0]["error"], "provider said no");
    assert_eq!(results[1]["status"], "error");
    assert_eq!(results[1]["error"], "panic: subagent exploded");
    assert_eq!(
        results[2],
        json!({"task_index": 2, "status": "completed", "summary": "partial", "error": null, "api_calls": 50,
               "duration_seconds": 12.5, "model": "big", "exit_reason": "max_iterations", "truncated": true})
    );
    for child in ctx.backend.built() {
        assert_eq!(child.close_count(), 1);
    }
    assert_eq!(parent.active_child_count(), 0);
}

#[test]
fn children_get_depth_iterations_and_are_not_marked_background() {
    let config = DelegationConfig {
        max_spawn_depth: 5,
        max_iterations: 9,
        ..DelegationConfig::default()
    };
    let (ctx, _queue) = context(FakeBackend::instant(), config);
    delegate_task(
        r#"{"goal": "g", "max_iterations": 1000, "background": "no"}"#,
        &Parent::new(2),
        &ctx,
    );
    let child = ctx.backend.only_child();
    assert_eq!(
        (
            child.task.depth,
            child.task.max_iterations,
            child.task.background
        ),
        (3, 9, false)
    );
}

#[test]
fn a_backend_that_registers_on_build_is_not_registered_twice() {
    let parent = Parent::new(0);
    let p = parent.clone();
    let mut backend = FakeBackend::new(move |_, _| {
        assert_eq!(p.active_child_count(), 1);
        Ok(DelegationResult::completed("ok"))
    });
    backend.register_on_build = true;
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    let value = parse(&delegate_task(r#"{"goal": "g"}"#, &parent, &ctx));
    assert_eq!(value["results"][0]["status"], "completed", "{value}");
    assert_eq!(parent.active_child_count(), 0);
}

struct PanickingBackend {
    in_credentials: bool,
}

impl delegate_tool::ChildBackend for PanickingBackend {
    type Credentials = ();
    type Child = common::FakeChild;
    fn resolve_credentials(
        &self,
        _: &dyn delegate_tool::ParentAgent,
        _: &DelegationConfig,
    ) -> Result<(), delegate_tool::BackendError> {
        assert!(!self.in_credentials, "vault offline");
        Ok(())
    }
    fn build_child(
        &self,
        _: &delegate_tool::ChildTask,
        _: &(),
        _: &dyn delegate_tool::ParentAgent,
    ) -> Result<Arc<common::FakeChild>, delegate_tool::BackendError> {
        panic!("builder exploded")
    }
}

#[test]
fn a_panicking_backend_becomes_an_error_not_a_panic() {
    let engine = async_delegation::DelegationEngine::new(process_registry::CompletionQueue::new());
    let parent = Parent::new(0);
    let ctx = delegate_tool::DelegateContext::new(
        DelegationConfig::default(),
        engine.clone(),
        PanickingBackend {
            in_credentials: true,
        },
    );
    let out = delegate_task(r#"{"goal": "g"}"#, &parent, &ctx);
    assert_eq!(common::error_of(&out), "panic: vault offline");

    let ctx = delegate_tool::DelegateContext::new(
        DelegationConfig::default(),
        engine,
        PanickingBackend {
            in_credentials: false,
        },
    );
    let value = parse(&delegate_task(r#"{"goal": "g"}"#, &parent, &ctx));
    assert_eq!(
        value["results"][0]["error"],
        "Failed to build the subagent: panic: builder exploded"
    );
    let out = delegate_task(r#"{"goal": "g", "background": true}"#, &parent, &ctx);
    assert_eq!(
        common::error_of(&out),
        "Failed to build the subagent: panic: builder exploded"
    );
}

#[test]
fn a_child_reporting_nothing_or_an_empty_status_gets_the_engine_defaults() {
    let backend = FakeBackend::new(|_, task| match task.goal.as_str() {
        "empty" => Ok(DelegationResult {
            duration_seconds: Some(1.5),
            ..DelegationResult::with_status("")
        }),
        _ => Ok(DelegationResult {
            duration_seconds: Some(2.0),
            ..DelegationResult::default()
        }),
    });
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    let out = delegate_task(
        r#"{"tasks": [{"goal": "empty"}, {"goal": "nothing"}]}"#,
        &Parent::new(0),
        &ctx,
    );
    let value = parse(&out);
    let results = value["results"].as_array().unwrap();
    assert_eq!(
        results[..],
        [
            json!({"task_index": 0, "status": "completed", "summary": null, "error": null, "api_calls": 0,
                   "duration_seconds": 1.5, "model": null, "exit_reason": null, "truncated": false}),
            json!({"task_index": 1, "status": "completed", "summary": null, "error": null, "api_calls": 0,
                   "duration_seconds": 2.0, "model": null, "exit_reason": null, "truncated": false}),
        ]
    );
}
