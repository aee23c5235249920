//! A synchronous call: build every child here, run them (a batch in parallel), collect
//! the results.

use std::thread;
use std::time::{Duration, Instant};

use async_delegation::DelegationResult;
use serde_json::{json, Value};

use crate::fence::{self, FencedChild, FencedParent};
use crate::texts::fill;
use crate::{ChildBackend, ChildTask, DelegateCall, DelegateContext, ToolError, ToolTexts};

/// Builds, registers and runs every task's child; each child that was built is
/// unregistered and closed exactly once.
pub(crate) fn run<B: ChildBackend>(
    call: DelegateCall,
    credentials: &B::Credentials,
    parent: FencedParent<'_>,
    context: &DelegateContext<B>,
) -> String {
    let started = Instant::now();
    let texts = &context.texts;
    let mut results: Vec<(usize, Value)> = Vec::with_capacity(call.tasks.len());
    let mut runnable: Vec<(ChildTask, FencedChild)> = Vec::with_capacity(call.tasks.len());
    // Built on this thread, in order, and registered so a parent interrupt reaches them.
    for task in call.tasks {
        let child =
            fence::build_child(&context.backend, &task, credentials, parent).and_then(|child| {
                match parent.register_child(&child) {
                    Ok(()) => Ok(child),
                    Err(reason) => {
                        // It may be half registered: undo what can be undone.
                        finish_child(&child, parent);
                        Err(reason)
                    }
                }
            });
        match child {
            Ok(child) => {
                // An interrupt that snapshotted the children before this registration
                // would miss this child: forward the flag.
                if parent.is_interrupted() {
                    child.interrupt(&texts.parent_interrupted_reason);
                }
                runnable.push((task, child));
            }
            Err(reason) => {
                let text = ToolError::ChildBuild(reason).render(texts);
                results.push((task.task_index, error_result(task.task_index, text, 0.0)));
            }
        }
    }

    if runnable.len() == 1 {
        for (task, child) in &runnable {
            results.push((task.task_index, run_child(task, child, parent, texts)));
        }
    } else {
        thread::scope(|scope| {
            let mut handles = Vec::with_capacity(runnable.len());
            for (task, child) in &runnable {
                let spawned = thread::Builder::new()
                    .name(format!("delegate-task-{}", task.task_index))
                    .spawn_scoped(scope, move || run_child(task, child, parent, texts));
                match spawned {
                    Ok(handle) => handles.push((task, handle)),
                    Err(error) => {
                        finish_child(child, parent);
                        let reason = error.to_string();
                        let text = fill(&texts.thread_unavailable, &[("reason", &reason)]);
                        results.push((task.task_index, error_result(task.task_index, text, 0.0)));
                    }
                }
            }
            for (task, handle) in handles {
                let value = match handle.join() {
                    Ok(value) => value,
                    // run_child fences every call into the child and the parent; should
                    // anything else panic, report it rather than propagate.
                    Err(payload) => {
                        let text = texts.panicked(&async_delegation::panic_message(payload));
                        error_result(task.task_index, text, 0.0)
                    }
                };
                results.push((task.task_index, value));
            }
        });
    }
    // The children are dropped here, fenced.
    drop(runnable);

    results.sort_by_key(|(index, _)| *index);
    let results: Vec<Value> = results.into_iter().map(|(_, value)| value).collect();
    json!({
        "results": results,
        "total_duration_seconds": seconds(started.elapsed()),
    })
    .to_string()
}

/// Runs one child, then unregisters and closes it.
fn run_child(
    task: &ChildTask,
    child: &FencedChild,
    parent: FencedParent<'_>,
    texts: &ToolTexts,
) -> Value {
    let started = Instant::now();
    let outcome = child.run(task, texts);
    finish_child(child, parent);
    let measured = seconds(started.elapsed());
    match outcome {
        Ok(result) => task_result(task.task_index, result, measured),
        Err(error) => error_result(task.task_index, error, measured),
    }
}

/// Unregisters and closes a child that ran (or never will); a panicking
/// `unregister_child` is logged, as `close` is.
fn finish_child(child: &FencedChild, parent: FencedParent<'_>) {
    if let Err(reason) = parent.unregister_child(child) {
        tracing::warn!(%reason, "unregistering a subagent from its parent failed");
    }
    child.close();
}

pub(crate) fn task_result(task_index: usize, result: DelegationResult, measured: f64) -> Value {
    let truncated = result
        .truncated
        .unwrap_or(result.exit_reason.as_deref() == Some("max_iterations"));
    json!({
        "task_index": task_index,
        "status": result.status_or_completed(),
        "summary": result.summary,
        "error": result.error,
        "api_calls": result.api_calls.unwrap_or(0),
        "duration_seconds": result.duration_seconds.filter(|d| d.is_finite()).unwrap_or(measured),
        "model": result.model,
        "exit_reason": result.exit_reason,
        "truncated": truncated,
    })
}

pub(crate) fn error_result(task_index: usize, error: String, measured: f64) -> Value {
    json!({
        "task_index": task_index,
        "status": "error",
        "summary": null,
        "error": error,
        "api_calls": 0,
        "duration_seconds": measured,
        "model": null,
        "exit_reason": null,
        "truncated": false,
    })
}

/// A measured duration as results report it: rounded as the engine rounds a background
/// child's, so both modes agree.
pub(crate) fn seconds(elapsed: Duration) -> f64 {
    async_delegation::round_seconds(elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_as_the_engine_rounds_them() {
        for millis in [0, 5, 125, 1_005, 2_500, 2_675, 61_235] {
            let elapsed = Duration::from_millis(millis);
            assert_eq!(
                seconds(elapsed),
                async_delegation::round_seconds(elapsed.as_secs_f64()),
                "{elapsed:?}"
            );
        }
        // Halves go to even, as Python's round(x, 2).
        assert_eq!(seconds(Duration::from_millis(125)), 0.12);
    }
}
