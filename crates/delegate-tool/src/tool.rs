//! `delegate_task`: the context, the entry points, and the checks before anything runs.

use async_delegation::fence::DropFenced;
use async_delegation::DelegationEngine;
use serde_json::Value;

use crate::args::{check_depth, parse_argument_text, Arguments};
use crate::fence::{self, FencedParent};
use crate::{
    background, control, schema, sync, ChildBackend, DelegateCall, DelegationConfig, ParentAgent,
    ToolError, ToolTexts,
};

/// Everything `delegate_task` needs besides the arguments and the caller: the settings,
/// the engine background calls are dispatched on, the agent implementation, and the
/// texts the model reads.
#[derive(Debug, Clone)]
pub struct DelegateContext<B> {
    /// The `delegation:` settings.
    pub config: DelegationConfig,
    /// Where background calls are dispatched (its queue receives their completions).
    pub engine: DelegationEngine,
    /// Builds and runs children.
    pub backend: B,
    /// Every text of the tool the model reads (the defaults unless replaced).
    pub texts: ToolTexts,
}

impl<B: ChildBackend> DelegateContext<B> {
    /// A context on an explicit engine, with the default texts.
    pub fn new(config: DelegationConfig, engine: DelegationEngine, backend: B) -> Self {
        DelegateContext {
            config,
            engine,
            backend,
            texts: ToolTexts::default(),
        }
    }

    /// The same context telling the model `texts` instead.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use async_delegation::{DelegationEngine, DelegationResult, RunnerError};
    /// # use delegate_tool::*;
    /// # struct Child;
    /// # impl ChildAgent for Child {
    /// #     fn run(&self, _: &ChildTask) -> Result<DelegationResult, RunnerError> { Ok(DelegationResult::default()) }
    /// #     fn interrupt(&self, _: &str) {}
    /// # }
    /// # struct Backend;
    /// # impl ChildBackend for Backend {
    /// #     type Credentials = ();
    /// #     type Child = Child;
    /// #     fn resolve_credentials(&self, _: &dyn ParentAgent, _: &DelegationConfig) -> Result<(), BackendError> { Ok(()) }
    /// #     fn build_child(&self, _: &ChildTask, _: &(), _: &dyn ParentAgent) -> Result<Arc<Child>, BackendError> { Ok(Arc::new(Child)) }
    /// # }
    /// let mut texts = ToolTexts::default();
    /// texts.too_many_tasks =
    ///     "{count} tasks, at most {max} (DelegationConfig::max_concurrent_children).".into();
    /// let queue = process_registry::CompletionQueue::new();
    /// let context = DelegateContext::new(DelegationConfig::default(), DelegationEngine::new(queue), Backend)
    ///     .with_texts(texts);
    /// let out = delegate_task(r#"{"tasks": [{"goal": "a"}, {"goal": "b"}, {"goal": "c"}, {"goal": "d"}]}"#, &Parent::new(0), &context);
    /// assert_eq!(out, r#"{"error":"4 tasks, at most 3 (DelegationConfig::max_concurrent_children)."}"#);
    /// ```
    pub fn with_texts(mut self, texts: ToolTexts) -> Self {
        self.texts = texts;
        self
    }

    /// A context on the process-wide default engine, [`async_delegation::global()`]
    /// (whose completions land on [`process_registry::global()`]'s queue).
    pub fn with_global_engine(config: DelegationConfig, backend: B) -> Self {
        Self::new(config, async_delegation::global().clone(), backend)
    }
}

impl<B> DelegateContext<B> {
    /// The tool definition to hand a function-calling API, with this context's schema
    /// texts and settings ([`tool_schema_with`](crate::tool_schema_with)); with the
    /// default texts and settings it is [`tool_schema`](crate::tool_schema).
    pub fn tool_schema(&self) -> Value {
        schema::tool_schema_with(&self.texts, &self.config)
    }

    /// [`tool_schema`](Self::tool_schema) in the OpenAI-style shape
    /// ([`openai_tool`](crate::openai_tool)).
    pub fn openai_tool(&self) -> Value {
        schema::openai_shape(self.tool_schema())
    }

    /// [`tool_schema`](Self::tool_schema) in the Anthropic-style shape
    /// ([`anthropic_tool`](crate::anthropic_tool)).
    pub fn anthropic_tool(&self) -> Value {
        schema::anthropic_shape(self.tool_schema())
    }
}

/// Runs the `delegate_task` tool on the raw argument text a function-calling API hands
/// over, and returns the tool result as JSON text. Never panics, whatever the input and
/// whatever the agent implementation does.
///
/// The result is one of:
/// - `{"error": "…"}` — a refused call (see [`ToolError`] for every text and the order
///   of the checks: nesting, role, background batch, depth, credentials, tasks, count,
///   goals);
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
///
/// Every call into the [`ChildBackend`], the children and the [`ParentAgent`] is fenced:
/// a panic there (or in the `Display` or `Drop` of an error they return, or in the `Drop`
/// of a child or of the credentials) becomes an error text and never reaches the caller.
/// Every child the call built is closed exactly once: by the tool when the call fails or
/// is refused after building it, by its run otherwise.
pub fn delegate_task<B: ChildBackend>(
    arguments: &str,
    parent: &dyn ParentAgent,
    context: &DelegateContext<B>,
) -> String {
    match parse_argument_text(arguments) {
        Ok(value) => delegate_task_value(&value, parent, context),
        Err(error) => error.to_tool_result_with(&context.texts),
    }
}

/// [`delegate_task`] on already parsed arguments (`null` counts as no arguments).
pub fn delegate_task_value<B: ChildBackend>(
    arguments: &Value,
    parent: &dyn ParentAgent,
    context: &DelegateContext<B>,
) -> String {
    let parent = FencedParent::new(parent, &context.texts);
    // User code is fenced where it is called; this outer fence only keeps a bug of this
    // crate from taking the caller's turn down.
    async_delegation::fence::call(|| run(arguments, parent, context)).unwrap_or_else(|message| {
        ToolError::Internal {
            reason: context.texts.panicked(&message),
        }
        .to_tool_result_with(&context.texts)
    })
}

fn run<B: ChildBackend>(
    arguments: &Value,
    parent: FencedParent<'_>,
    context: &DelegateContext<B>,
) -> String {
    let args = match Arguments::read(arguments) {
        Ok(args) => args,
        Err(error) => return error.to_tool_result_with(&context.texts),
    };
    if let Some((action, arguments)) = args.control() {
        let answered = parent.session_key().and_then(|session_key| {
            control::answer(
                action,
                arguments,
                &session_key,
                &context.engine,
                &context.texts,
            )
        });
        return answered.unwrap_or_else(|error| error.to_tool_result_with(&context.texts));
    }
    match prepare(args, parent, context) {
        Ok((call, credentials)) => {
            if call.background {
                match call.tasks.into_iter().next() {
                    Some(task) => background::run(task, &*credentials, parent, context),
                    None => ToolError::NothingToDo.to_tool_result_with(&context.texts),
                }
            } else {
                sync::run(call, &*credentials, parent, context)
            }
        }
        Err(error) => error.to_tool_result_with(&context.texts),
    }
}

/// Every check before a child is built, in the documented order (see [`ToolError`]).
fn prepare<B: ChildBackend>(
    args: Arguments<'_>,
    parent: FencedParent<'_>,
    context: &DelegateContext<B>,
) -> Result<(DelegateCall, DropFenced<B::Credentials>), ToolError> {
    let depth = parent.delegate_depth()?;
    check_depth(depth, &context.config)?;
    let credentials = fence::resolve_credentials(&context.backend, parent, &context.config)
        .map_err(ToolError::Credentials)?;
    let background = args.background();
    let call = args.into_call(depth, &context.config)?;
    debug_assert!(!background || call.tasks.len() == 1);
    Ok((call, credentials))
}
