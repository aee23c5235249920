//! What a `delegate_task` call costs the parent's turn: argument parsing and validation,
//! a background call end to end (returning the handle), and a synchronous batch.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, RunnerError};
use criterion::{criterion_group, criterion_main, Criterion};
use delegate_tool::{
    delegate_task, validate_arguments, BackendError, ChildAgent, ChildBackend, ChildTask,
    DelegateContext, DelegationConfig, Parent, ParentAgent,
};
use process_registry::CompletionQueue;
use serde_json::Value;

const TYPICAL: &str = r#"{"goal": "Find every call site of parse_config and list the ones that ignore its error", "context": "Rust workspace at /work/main; the function lives in crates/config/src/lib.rs. Skip tests.", "toolsets": ["terminal", "file"], "role": "leaf", "background": "true", "max_iterations": 30}"#;

struct Trivial;
impl ChildAgent for Trivial {
    fn run(&self, task: &ChildTask) -> Result<DelegationResult, RunnerError> {
        Ok(DelegationResult::completed(task.goal.clone()))
    }
    fn interrupt(&self, _reason: &str) {}
}

struct TrivialBackend;
impl ChildBackend for TrivialBackend {
    type Credentials = ();
    type Child = Trivial;
    fn resolve_credentials(
        &self,
        _: &dyn ParentAgent,
        _: &DelegationConfig,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    fn build_child(
        &self,
        _: &ChildTask,
        _: &(),
        _: &dyn ParentAgent,
    ) -> Result<Arc<Trivial>, BackendError> {
        Ok(Arc::new(Trivial))
    }
}

fn parse_and_validate(c: &mut Criterion) {
    let config = DelegationConfig::default();
    c.bench_function("validate/typical_call_from_text", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_str(black_box(TYPICAL)).unwrap();
            validate_arguments(&value, 0, &config).unwrap()
        })
    });
    let value: Value = serde_json::from_str(TYPICAL).unwrap();
    c.bench_function("validate/typical_call_parsed", |b| {
        b.iter(|| validate_arguments(black_box(&value), 0, &config).unwrap())
    });
}

fn background_call(c: &mut Criterion) {
    let queue = CompletionQueue::new();
    let context = DelegateContext::new(
        DelegationConfig::default(),
        DelegationEngine::new(queue.clone()),
        TrivialBackend,
    );
    let parent = Parent::new(0).with_session_key("agent:main:telegram:dm:12345");
    // Only the call is timed; each completion is taken (untimed) before the next call,
    // so the engine's worker is idle and reused, as between two turns.
    c.bench_function("delegate_task/background_call", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let out = delegate_task(black_box(TYPICAL), &parent, &context);
                total += started.elapsed();
                debug_assert!(out.starts_with(r#"{"status":"dispatched""#));
                queue
                    .take_timeout(Duration::from_secs(10))
                    .expect("a completion");
            }
            total
        })
    });
}

fn sync_batch(c: &mut Criterion) {
    let queue = CompletionQueue::new();
    let context = DelegateContext::new(
        DelegationConfig::default(),
        DelegationEngine::new(queue),
        TrivialBackend,
    );
    let parent = Parent::new(0);
    let args = r#"{"tasks": [{"goal": "a"}, {"goal": "b"}, {"goal": "c"}]}"#;
    c.bench_function("delegate_task/sync_batch_of_3_trivial", |b| {
        b.iter(|| delegate_task(black_box(args), &parent, &context))
    });
}

criterion_group!(benches, parse_and_validate, background_call, sync_batch);
criterion_main!(benches);
