//! `delegate_task`: validation, then synchronous runs or a background dispatch.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use async_delegation::{
    panic_message, DelegationEngine, DelegationResult, DelegationSpec, DispatchOutcome,
    InterruptHook, RunnerError,
};
use serde_json::{json, Value};

use crate::args::{check_depth, parse_argument_text, Arguments};
use crate::{
    BackendError, ChildAgent, ChildBackend, ChildTask, DelegateCall, DelegationConfig, ParentAgent,
    ToolError,
};

/// The reason a background child's interrupt hook passes to [`ChildAgent::interrupt`].
pub const ASYNC_CANCEL_REASON: &str = "Async delegation cancelled";

/// The reason a synchronous child gets when its parent was already interrupted when it
/// was registered.
pub const PARENT_INTERRUPTED_REASON: &str = "Parent agent interrupted";

/// The `note` of a dispatched background call (SPEC §5).
pub const BACKGROUND_NOTE: &str = "Subagent is running in the background. You and the user can keep working; the full task source and result will re-enter the conversation as a new message when it finishes. Do not wait or poll — just continue.";

/// Everything `delegate_task` needs besides the arguments and the caller: the settings,
/// the engine background calls are dispatched on, and the agent implementation.
#[derive(Debug, Clone)]
pub struct DelegateContext<B> {
    /// The `delegation:` settings.
    pub config: DelegationConfig,
    /// Where background calls are dispatched (its queue receives their completions).
    pub engine: DelegationEngine,
    /// Builds and runs children.
    pub backend: B,
}

impl<B: ChildBackend> DelegateContext<B> {
    /// A context on an explicit engine.
    pub fn new(config: DelegationConfig, engine: DelegationEngine, backend: B) -> Self {
        DelegateContext {
            config,
            engine,
            backend,
        }
    }

    /// A context on the process-wide default engine, [`async_delegation::global()`]
    /// (whose completions land on [`process_registry::global()`]'s queue).
    pub fn with_global_engine(config: DelegationConfig, backend: B) -> Self {
        Self::new(config, async_delegation::global().clone(), backend)
    }
}

/// Runs the `delegate_task` tool on the raw argument text a function-calling API hands
/// over, and returns the tool result as JSON text. Never panics on any input.
///
/// The result is one of:
/// - `{"error": "…"}` — a refused call (see [`ToolError`] for every text, checked in
///   SPEC §5's order: role, background batch, depth, credentials, tasks, count, goals);
/// - `{"status":"dispatched","delegation_id":…,"goal":…,"mode":"background","note":…}`
///   (keys in this order) — a background call, returned before the child runs; its
///   completion lands on the engine's queue;
/// - `{"results":[…],"total_duration_seconds":…}` — a synchronous call, one result per
///   task sorted by `task_index`, each with `task_index`, `status`, `summary`, `error`,
///   `api_calls`, `duration_seconds`, `model`, `exit_reason` and `truncated`.
///
/// Synchronous children are registered in the parent's active children while they run
/// (so [`Parent::interrupt`](crate::Parent::interrupt) reaches them), a batch in parallel
/// on scoped `delegate-task-{i}` threads; each is unregistered and closed when it ends.
/// A background child is built on this thread, removed from the parent's active
/// children before dispatch, and closed if the engine refuses it.
pub fn delegate_task<B: ChildBackend>(
    arguments: &str,
    parent: &dyn ParentAgent,
    context: &DelegateContext<B>,
) -> String {
    match parse_argument_text(arguments) {
        Ok(value) => delegate_task_value(&value, parent, context),
        Err(error) => error.to_tool_result(),
    }
}

/// [`delegate_task`] on already parsed arguments (`null` counts as no arguments).
pub fn delegate_task_value<B: ChildBackend>(
    arguments: &Value,
    parent: &dyn ParentAgent,
    context: &DelegateContext<B>,
) -> String {
    match prepare(arguments, parent, context) {
        Ok((call, credentials)) => {
            if call.background {
                let task = call.tasks.into_iter().next();
                match task {
                    Some(task) => run_background(task, &credentials, parent, context),
                    None => ToolError::NothingToDo.to_tool_result(),
                }
            } else {
                run_sync(call, &credentials, parent, context)
            }
        }
        Err(error) => error.to_tool_result(),
    }
}

/// SPEC §5 steps 1–7, in order.
fn prepare<B: ChildBackend>(
    arguments: &Value,
    parent: &dyn ParentAgent,
    context: &DelegateContext<B>,
) -> Result<(DelegateCall, B::Credentials), ToolError> {
    let args = Arguments::read(arguments)?;
    let depth = parent.delegate_depth();
    check_depth(depth, &context.config)?;
    let credentials = guarded(|| context.backend.resolve_credentials(parent, &context.config))
        .map_err(|e| ToolError::Credentials(e.to_string()))?;
    let background = args.background();
    let call = args.into_call(depth, &context.config)?;
    debug_assert!(!background || call.tasks.len() == 1);
    Ok((call, credentials))
}

fn run_background<B: ChildBackend>(
    task: ChildTask,
    credentials: &B::Credentials,
    parent: &dyn ParentAgent,
    context: &DelegateContext<B>,
) -> String {
    // Captured here: the worker thread knows nothing of the conversation being served.
    let session_key = parent.session_key();
    let child = match guarded(|| context.backend.build_child(&task, credentials, parent)) {
        Ok(child) => child,
        Err(error) => return ToolError::ChildBuild(error.to_string()).to_tool_result(),
    };
    // Detach before dispatch: the child must survive the parent's interrupts, cache
    // eviction and close.
    let as_dyn: Arc<dyn ChildAgent> = child.clone();
    parent.unregister_child(&as_dyn);
    drop(as_dyn);

    let goal = task.goal.clone();
    let spec = DelegationSpec {
        goal: task.goal.clone(),
        context: task.context.clone(),
        toolsets: task.toolsets.clone(),
        role: Some(task.role.as_str().to_owned()),
        model: child.model(),
        session_key,
    };
    let runner_child = Arc::clone(&child);
    let runner = move || -> Result<DelegationResult, RunnerError> {
        let outcome = run_child(&*runner_child, &task);
        close_child(&*runner_child);
        outcome
    };
    let hook_child = Arc::clone(&child);
    let hook: InterruptHook = Arc::new(move |_reason: &str| {
        hook_child.interrupt(ASYNC_CANCEL_REASON);
    });
    match context
        .engine
        .dispatch(spec, runner, Some(hook), context.config.max_async_children)
    {
        DispatchOutcome::Dispatched { delegation_id } => dispatched_result(&delegation_id, &goal),
        DispatchOutcome::Rejected { error } => {
            // The runner was dropped uncalled: nothing else will close the child.
            close_child(&*child);
            ToolError::Dispatch(error).to_tool_result()
        }
    }
}

/// The dispatched result with its keys in the order SPEC §5 lists them (serde_json's
/// map would sort them).
fn dispatched_result(delegation_id: &str, goal: &str) -> String {
    let quote = |s: &str| Value::String(s.to_owned()).to_string();
    format!(
        "{{\"status\":\"dispatched\",\"delegation_id\":{},\"goal\":{},\"mode\":\"background\",\"note\":{}}}",
        quote(delegation_id),
        quote(goal),
        quote(BACKGROUND_NOTE),
    )
}

fn run_sync<B: ChildBackend>(
    call: DelegateCall,
    credentials: &B::Credentials,
    parent: &dyn ParentAgent,
    context: &DelegateContext<B>,
) -> String {
    let started = Instant::now();
    let mut results: Vec<(usize, Value)> = Vec::with_capacity(call.tasks.len());
    let mut runnable: Vec<(ChildTask, Arc<dyn ChildAgent>)> = Vec::with_capacity(call.tasks.len());
    // Built on this thread, in order, and registered so a parent interrupt reaches them.
    for task in call.tasks {
        match guarded(|| context.backend.build_child(&task, credentials, parent)) {
            Ok(child) => {
                let child: Arc<dyn ChildAgent> = child;
                parent.register_child(Arc::clone(&child));
                // An interrupt that snapshotted the children before this registration
                // would miss this child: forward the flag.
                if parent.is_interrupted() {
                    let _ = catch_unwind(AssertUnwindSafe(|| {
                        child.interrupt(PARENT_INTERRUPTED_REASON);
                    }));
                }
                runnable.push((task, child));
            }
            Err(error) => {
                let text = ToolError::ChildBuild(error.to_string()).to_string();
                results.push((task.task_index, error_result(task.task_index, text, 0.0)));
            }
        }
    }

    if runnable.len() == 1 {
        for (task, child) in runnable {
            results.push((task.task_index, run_sync_child(&task, &child, parent)));
        }
    } else {
        thread::scope(|scope| {
            let mut handles = Vec::with_capacity(runnable.len());
            for (task, child) in &runnable {
                let spawned = thread::Builder::new()
                    .name(format!("delegate-task-{}", task.task_index))
                    .spawn_scoped(scope, move || run_sync_child(task, child, parent));
                match spawned {
                    Ok(handle) => handles.push((task, handle)),
                    Err(error) => {
                        finish_child(child, parent);
                        let text = format!("Could not start a thread for the subagent: {error}");
                        results.push((task.task_index, error_result(task.task_index, text, 0.0)));
                    }
                }
            }
            for (task, handle) in handles {
                let value = match handle.join() {
                    Ok(value) => value,
                    // run_sync_child catches every panic of the child and the parent;
                    // should anything else panic, report it rather than propagate.
                    Err(payload) => {
                        let text = format!("panic: {}", panic_message(payload));
                        error_result(task.task_index, text, 0.0)
                    }
                };
                results.push((task.task_index, value));
            }
        });
    }

    results.sort_by_key(|(index, _)| *index);
    let results: Vec<Value> = results.into_iter().map(|(_, value)| value).collect();
    json!({
        "results": results,
        "total_duration_seconds": round2(started.elapsed().as_secs_f64()),
    })
    .to_string()
}

/// Runs one synchronous child, then unregisters and closes it.
fn run_sync_child(
    task: &ChildTask,
    child: &Arc<dyn ChildAgent>,
    parent: &dyn ParentAgent,
) -> Value {
    let started = Instant::now();
    let outcome = run_child(&**child, task);
    finish_child(child, parent);
    let measured = round2(started.elapsed().as_secs_f64());
    match outcome {
        Ok(result) => task_result(task.task_index, result, measured),
        Err(error) => error_result(task.task_index, error.to_string(), measured),
    }
}

/// Unregisters and closes a child that ran (or never will); panics of the parent's
/// `unregister_child` or the child's `close` are logged, never propagated.
fn finish_child(child: &Arc<dyn ChildAgent>, parent: &dyn ParentAgent) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| parent.unregister_child(child))) {
        tracing::warn!(
            panic = %panic_message(payload),
            "unregistering a subagent from its parent panicked"
        );
    }
    close_child(&**child);
}

/// Calls into the backend with a panic turned into an error (`panic: {message}`), so a
/// faulty backend cannot take the parent's turn down.
fn guarded<T>(call: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result,
        Err(payload) => Err(format!("panic: {}", panic_message(payload)).into()),
    }
}

/// Runs a child with its panics turned into an error (`panic: {message}`).
fn run_child(child: &dyn ChildAgent, task: &ChildTask) -> Result<DelegationResult, RunnerError> {
    match catch_unwind(AssertUnwindSafe(|| child.run(task))) {
        Ok(outcome) => outcome,
        Err(payload) => Err(format!("panic: {}", panic_message(payload)).into()),
    }
}

/// Closes a child; a panicking `close` is logged, never propagated.
fn close_child(child: &dyn ChildAgent) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| child.close())) {
        tracing::warn!(
            panic = %panic_message(payload),
            "subagent close panicked"
        );
    }
}

fn task_result(task_index: usize, result: DelegationResult, measured: f64) -> Value {
    let truncated = result
        .truncated
        .unwrap_or(result.exit_reason.as_deref() == Some("max_iterations"));
    json!({
        "task_index": task_index,
        "status": result.status.unwrap_or_else(|| "completed".to_owned()),
        "summary": result.summary,
        "error": result.error,
        "api_calls": result.api_calls.unwrap_or(0),
        "duration_seconds": result.duration_seconds.filter(|d| d.is_finite()).unwrap_or(measured),
        "model": result.model,
        "exit_reason": result.exit_reason,
        "truncated": truncated,
    })
}

fn error_result(task_index: usize, error: String, measured: f64) -> Value {
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

fn round2(seconds: f64) -> f64 {
    (seconds * 100.0).round() / 100.0
}
