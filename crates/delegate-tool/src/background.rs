//! A background call: build the child here, detach it from the parent, dispatch it.

use std::sync::Arc;

use async_delegation::{
    Controls, DelegationResult, DelegationSpec, InterruptHook, RunnerError, Steering,
};
use process_registry::Text;
use serde_json::Value;

use crate::fence::{self, FencedParent};
use crate::{BackgroundRun, ChildBackend, ChildTask, DelegateContext, ToolError};

/// Builds, detaches and dispatches one child. A child that was built is closed here when
/// the call fails or is refused, otherwise by its runner after its run.
pub(crate) fn run<B: ChildBackend>(
    task: ChildTask,
    credentials: &B::Credentials,
    parent: FencedParent<'_>,
    context: &DelegateContext<B>,
) -> String {
    let texts = &context.texts;
    // Captured here: the worker thread knows nothing of the conversation being served.
    let session_key = match parent.session_key() {
        Ok(key) => key,
        Err(error) => return error.to_tool_result_with(texts),
    };
    let child = match fence::build_child(&context.backend, &task, credentials, parent) {
        Ok(child) => child,
        Err(reason) => return ToolError::ChildBuild(reason).to_tool_result_with(texts),
    };
    // Detach before dispatch: the child must survive the parent's interrupts, cache
    // eviction and close. A parent that cannot detach it would keep reaching it, so that
    // (like a child that cannot tell its model) counts as a failed build.
    let model = parent
        .unregister_child(&child)
        .and_then(|()| child.model().map_err(|m| texts.panicked(&m)));
    let model = match model {
        Ok(model) => model,
        Err(reason) => {
            child.close();
            return ToolError::ChildBuild(reason).to_tool_result_with(texts);
        }
    };

    let goal = task.goal.clone();
    let spec = delegation_spec(&task, model, session_key);
    let steering = child
        .accepts_steering()
        .then(|| Steering::with_missed_note(&*texts.missed_steer_note));
    let progress = child.reports_progress().then(|| context.engine.progress());
    let run = BackgroundRun::new(steering.clone(), progress.clone());
    // The closures hold fenced handles: the engine drops them on its worker, or on this
    // thread when it refuses the dispatch, and a child's panicking `Drop` must not
    // escape either way.
    let runner_child = child.clone();
    let runner_texts = Arc::new(texts.clone());
    let hook_texts = Arc::clone(&runner_texts);
    let runner = move || -> Result<DelegationResult, RunnerError> {
        // Errors are turned into text here, as for a synchronous child, so a panicking
        // `Display` reads the same in both modes.
        let outcome = runner_child.run_background(&task, &run, &runner_texts);
        runner_child.close();
        outcome.map_err(RunnerError::from)
    };
    let hook_child = child.clone();
    let hook: InterruptHook = Arc::new(move |_reason: &str| {
        hook_child.interrupt(&hook_texts.async_cancel_reason);
    });
    let mut controls = Controls::default().with_interrupt(hook);
    controls.steering = steering;
    controls.progress = progress;
    match context.engine.try_dispatch_with(
        spec,
        runner,
        controls,
        context.config.max_async_children,
    ) {
        Ok(delegation_id) => dispatched_result(&delegation_id, &goal, &texts.background_note),
        Err(error) => {
            // The runner was dropped uncalled: nothing else will close the child.
            child.close();
            ToolError::from(error).to_tool_result_with(texts)
        }
    }
}

/// What the engine restates of a background task: its fields, the child's model and the
/// dispatching session.
pub(crate) fn delegation_spec(
    task: &ChildTask,
    model: Option<String>,
    session_key: String,
) -> DelegationSpec {
    DelegationSpec {
        goal: task.goal.as_str().into(),
        context: task.context.as_deref().map(Text::from),
        toolsets: task
            .toolsets
            .as_ref()
            .map(|toolsets| toolsets.iter().map(Text::from).collect()),
        role: Some(task.role.as_str().into()),
        model: model.map(Text::from),
        session_key: session_key.into(),
        traceparent: None,
    }
}

/// The dispatched result with its keys in the documented order (serde_json's map would
/// sort them).
pub(crate) fn dispatched_result(delegation_id: &str, goal: &str, note: &str) -> String {
    crate::control::ordered_object(&[
        ("status", Value::from("dispatched")),
        ("delegation_id", Value::from(delegation_id)),
        ("goal", Value::from(goal)),
        ("mode", Value::from("background")),
        ("note", Value::from(note)),
    ])
}
