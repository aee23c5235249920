//! The async tool (feature `tokio`): [`delegate_task_async`], children whose build and run
//! are futures, a per-call [`CallContext`], and a typed [`ToolOutput`] beside the text.
//!
//! Nothing here blocks the runtime, on either flavour: a synchronous call awaits its child
//! (a batch's children concurrently, on the calling task — no threads), and a background
//! call dispatches the child's run onto the runtime with
//! [`DelegationEngine::dispatch_async`](async_delegation::DelegationEngine::dispatch_async).
//! Who is calling — the session key, the delegation depth, the call's cancellation — is
//! passed in per call, so concurrent turns of one agent never share mutable state.
//!
//! Every call into the backend and the children is fenced as in the sync tool: a panic
//! while building, running (polled) or dropping a child, or in the `Display` of an error
//! it returns, becomes an error text; every child built is closed exactly once.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use async_delegation::fence::{self as engine_fence, DropFenced};
use async_delegation::{
    Cancellation, Controls, DelegationHandle, DelegationResult, RunnerError, Steering,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::args::{check_depth, parse_argument_text, Arguments};
use crate::control;
use crate::sync::{error_result, seconds, task_result};
use crate::{
    BackendError, BackgroundRun, ChildTask, DelegateCall, DelegateContext, DelegationConfig,
    ToolError, ToolTexts,
};

/// A child's run in progress: what [`AsyncChildAgent::run`] returns.
pub type ChildRun = Pin<Box<dyn Future<Output = Result<DelegationResult, RunnerError>> + Send>>;

/// A child being built: what [`AsyncChildBackend::build_child`] returns.
pub type ChildBuild<C> = Pin<Box<dyn Future<Output = Result<Arc<C>, BackendError>> + Send>>;

/// A subagent whose run is a future (an LLM call loop, awaited).
pub trait AsyncChildAgent: Send + Sync + 'static {
    /// Runs `task`. `cancel` is cancelled when the call is (a synchronous call's
    /// [`CallContext::cancel`]) or the delegation is interrupted (background); the child
    /// should then stop and return what it has, with status `interrupted`.
    fn run(self: Arc<Self>, task: ChildTask, cancel: Cancellation) -> ChildRun;

    /// Called once after the run (or when the call gives the child up): release what it
    /// holds.
    fn close(&self) {}

    /// The model it runs on, when known (reported in results and completions).
    fn model(&self) -> Option<String> {
        None
    }

    /// Whether it reads steering text, as [`ChildAgent::accepts_steering`](crate::ChildAgent::accepts_steering).
    fn accepts_steering(&self) -> bool {
        false
    }

    /// Whether it reports progress, as [`ChildAgent::reports_progress`](crate::ChildAgent::reports_progress):
    /// the engine's stall monitor then watches it, and cancels its [`Cancellation`] when
    /// it stalls.
    fn reports_progress(&self) -> bool {
        false
    }

    /// [`run`](Self::run) for a background child, with what it accepts and reports, as
    /// [`ChildAgent::run_background`](crate::ChildAgent::run_background). The default
    /// runs [`run`](Self::run).
    fn run_background(
        self: Arc<Self>,
        task: ChildTask,
        cancel: Cancellation,
        run: BackgroundRun,
    ) -> ChildRun {
        let _ = run;
        self.run(task, cancel)
    }
}

/// Plugs an async agent implementation into [`delegate_task_async`].
pub trait AsyncChildBackend: Send + Sync {
    /// What building a child needs (an API key, a client), resolved once per call.
    type Credentials: Send + Sync;
    /// The children it builds.
    type Child: AsyncChildAgent;

    /// Resolves the credentials for this call's children.
    ///
    /// # Errors
    /// Why there are none; the call is refused with this text.
    fn resolve_credentials(
        &self,
        call: &CallContext,
        config: &DelegationConfig,
    ) -> Result<Self::Credentials, BackendError>;

    /// Builds the child of one task.
    fn build_child(
        &self,
        task: &ChildTask,
        credentials: &Self::Credentials,
        call: &CallContext,
    ) -> ChildBuild<Self::Child>;
}

/// Who is calling, passed in per call instead of kept on the parent: the session the
/// call serves (its background completions come back there), the caller's delegation
/// depth, and a token that cancels the call's synchronous children.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The session key of the conversation the call serves (`""` for a CLI).
    pub session_key: String,
    /// The caller's delegation depth (0 for a top-level agent).
    pub depth: u32,
    /// Cancels the call's synchronous children (a background child has its own, through
    /// the engine's interrupts and its [`DelegationHandle`]).
    pub cancel: CancellationToken,
    /// The runtime background children run on (default: the one current when the
    /// context was made).
    pub runtime: Option<tokio::runtime::Handle>,
}

impl CallContext {
    /// A top-level call serving `session_key`, on the current runtime (if any).
    pub fn new(session_key: impl Into<String>) -> Self {
        CallContext {
            session_key: session_key.into(),
            depth: 0,
            cancel: CancellationToken::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The caller's delegation depth.
    pub fn with_depth(mut self, depth: u32) -> Self {
        self.depth = depth;
        self
    }

    /// The token that cancels this call's synchronous children.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The runtime background children run on.
    pub fn with_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }
}

/// What [`delegate_task_async`] did: the text the model reads, and the same outcome typed.
#[derive(Debug)]
pub struct ToolOutput {
    /// The tool result, exactly as the sync tool writes it.
    pub text: String,
    /// What happened.
    pub outcome: ToolOutcome,
}

/// The typed outcome of a call.
#[derive(Debug)]
pub enum ToolOutcome {
    /// A background child was dispatched: its handle.
    Dispatched(DelegationHandle),
    /// A synchronous call ran: one report per task, by `task_index`.
    Ran(Vec<TaskReport>),
    /// Refused before anything ran, with its cause.
    Rejected(ToolError),
    /// A control action (`list`, `steer`, `stop`) was answered; the text says how.
    Answered,
}

/// One task of a synchronous call.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// Its position in the batch.
    pub task_index: usize,
    /// The child's result, or the error text of a child that failed to build, errored or
    /// panicked.
    pub result: Result<DelegationResult, String>,
    /// Seconds it took (the child's own figure when it gave one).
    pub duration_seconds: f64,
}

impl<B: AsyncChildBackend> DelegateContext<B> {
    /// A context for [`delegate_task_async`] on an explicit engine, with the default texts.
    pub fn new_async(
        config: DelegationConfig,
        engine: async_delegation::DelegationEngine,
        backend: B,
    ) -> Self {
        DelegateContext {
            config,
            engine,
            backend,
            texts: ToolTexts::default(),
        }
    }
}

/// `delegate_task` for async agents: the same arguments, checks, texts and JSON results as
/// [`delegate_task`](crate::delegate_task), with children that are futures, and the
/// outcome typed beside the text. Never blocks the runtime.
///
/// See the [crate docs](crate#async-agents) for an example.
pub async fn delegate_task_async<B: AsyncChildBackend>(
    arguments: &str,
    call: &CallContext,
    context: &DelegateContext<B>,
) -> ToolOutput {
    let texts = &context.texts;
    let prepared = parse_argument_text(arguments).and_then(|value| {
        let args = Arguments::read(&value)?;
        if let Some((action, arguments)) = args.control() {
            let engine = &context.engine;
            return control::answer(action, arguments, &call.session_key, engine, texts)
                .map(Prepared::Answered);
        }
        check_depth(call.depth, &context.config)?;
        let credentials = match engine_fence::call(|| {
            context
                .backend
                .resolve_credentials(call, &context.config)
                .map_err(|error| engine_fence::error_text(Box::new(error)))
        }) {
            Ok(Ok(credentials)) => DropFenced::new(credentials, "the subagent credentials"),
            Ok(Err(reason)) => return Err(ToolError::Credentials(reason)),
            Err(message) => return Err(ToolError::Credentials(texts.panicked(&message))),
        };
        let call = args.into_call(call.depth, &context.config)?;
        Ok(Prepared::Call(call, credentials))
    });
    let (delegate_call, credentials) = match prepared {
        Ok(Prepared::Call(call, credentials)) => (call, credentials),
        Ok(Prepared::Answered(text)) => {
            return ToolOutput {
                text,
                outcome: ToolOutcome::Answered,
            }
        }
        Err(error) => return rejected(error, texts),
    };
    if delegate_call.background {
        let Some(task) = delegate_call.tasks.into_iter().next() else {
            return rejected(ToolError::NothingToDo, texts);
        };
        background(task, &*credentials, call, context).await
    } else {
        run_now(delegate_call, &*credentials, call, context).await
    }
}

/// A call past its checks: a spawn to run, or a control action's answer.
enum Prepared<C> {
    Call(DelegateCall, DropFenced<C>),
    Answered(String),
}

fn rejected(error: ToolError, texts: &ToolTexts) -> ToolOutput {
    ToolOutput {
        text: error.to_tool_result_with(texts),
        outcome: ToolOutcome::Rejected(error),
    }
}

/// Builds `task`'s child: fenced (the call, the future's polls and drop, the error's text).
async fn build<B: AsyncChildBackend>(
    task: &ChildTask,
    credentials: &B::Credentials,
    call: &CallContext,
    context: &DelegateContext<B>,
) -> Result<Arc<B::Child>, String> {
    let texts = &context.texts;
    let building = engine_fence::call(|| context.backend.build_child(task, credentials, call))
        .map_err(|message| texts.panicked(&message))?;
    match engine_fence::future(building, "a subagent being built").await {
        Ok(Ok(child)) => Ok(child),
        Ok(Err(error)) => Err(engine_fence::error_text(Box::new(error))),
        Err(message) => Err(texts.panicked(&message)),
    }
}

/// A child that is closed when this is dropped: after its run, or when the future
/// holding it is dropped unfinished (the call was dropped, the runtime shut down) — so a
/// child that was built is closed exactly once however its run ends.
struct Closing<C: AsyncChildAgent>(Option<Arc<C>>);

impl<C: AsyncChildAgent> Closing<C> {
    /// Runs the child on `task`, fenced (building its run, polling and dropping it), then
    /// closes it: a panic is its `panic: …` error, as an error of the run.
    async fn run(
        self,
        task: ChildTask,
        cancel: Cancellation,
        texts: ToolTexts,
    ) -> Result<DelegationResult, RunnerError> {
        self.run_with(texts, |child| child.run(task, cancel)).await
    }

    /// [`run`](Self::run) through [`AsyncChildAgent::run_background`].
    async fn run_background(
        self,
        task: ChildTask,
        cancel: Cancellation,
        run: BackgroundRun,
        texts: ToolTexts,
    ) -> Result<DelegationResult, RunnerError> {
        self.run_with(texts, |child| child.run_background(task, cancel, run))
            .await
    }

    async fn run_with(
        self,
        texts: ToolTexts,
        start: impl FnOnce(Arc<C>) -> ChildRun,
    ) -> Result<DelegationResult, RunnerError> {
        let running = match &self.0 {
            Some(child) => engine_fence::call(|| start(Arc::clone(child))),
            None => Err("the subagent is gone".to_owned()),
        };
        let outcome = match running {
            Ok(run) => match engine_fence::future(run, "a subagent's run").await {
                Ok(outcome) => outcome,
                Err(message) => Err(texts.panicked(&message).into()),
            },
            Err(message) => Err(texts.panicked(&message).into()),
        };
        drop(self);
        outcome
    }
}

impl<C: AsyncChildAgent> Drop for Closing<C> {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            close(child);
        }
    }
}

/// Calls `close`, then lets go of this copy of the child; both fenced.
fn close<C: AsyncChildAgent>(child: Arc<C>) {
    if let Err(message) = engine_fence::call(|| child.close()) {
        tracing::warn!(panic = %message, "closing a subagent panicked");
    }
    engine_fence::drop_logged(child, "a subagent");
}

async fn background<B: AsyncChildBackend>(
    task: ChildTask,
    credentials: &B::Credentials,
    call: &CallContext,
    context: &DelegateContext<B>,
) -> ToolOutput {
    let texts = &context.texts;
    let child = match build(&task, credentials, call, context).await {
        Ok(child) => child,
        Err(reason) => return rejected(ToolError::ChildBuild(reason), texts),
    };
    let model = match engine_fence::call(|| child.model()) {
        Ok(model) => model,
        Err(message) => {
            close(child);
            return rejected(ToolError::ChildBuild(texts.panicked(&message)), texts);
        }
    };
    let Some(runtime) = call.runtime.clone() else {
        close(child);
        let error =
            ToolError::Dispatch("no tokio runtime to run the background subagent on".into());
        return rejected(error, texts);
    };
    let goal = task.goal.clone();
    let spec = crate::background::delegation_spec(&task, model, call.session_key.clone());
    let steering = crate::fence::ask("accepts_steering", || child.accepts_steering())
        .then(|| Steering::with_missed_note(&*texts.missed_steer_note));
    let progress = crate::fence::ask("reports_progress", || child.reports_progress())
        .then(|| context.engine.progress());
    let run = BackgroundRun::new(steering.clone(), progress.clone());
    let mut controls = Controls::default();
    controls.steering = steering;
    controls.progress = progress;
    let runner_child = Closing(Some(Arc::clone(&child)));
    let runner_texts = texts.clone();
    let dispatched = context.engine.dispatch_async_with(
        spec,
        &runtime,
        move |cancel| runner_child.run_background(task, cancel, run, runner_texts),
        controls,
        context.config.max_async_children,
    );
    match dispatched {
        Ok(handle) => {
            // The runner holds the child now; this copy goes (fenced).
            engine_fence::drop_logged(child, "a subagent");
            ToolOutput {
                text: crate::background::dispatched_result(
                    handle.id(),
                    &goal,
                    &texts.background_note,
                ),
                outcome: ToolOutcome::Dispatched(handle),
            }
        }
        Err(error) => {
            // The runner was dropped uncalled, and with it its `Closing`, which closed the
            // child; this is the last copy.
            engine_fence::drop_logged(child, "a subagent");
            rejected(ToolError::from(error), texts)
        }
    }
}

async fn run_now<B: AsyncChildBackend>(
    delegate_call: DelegateCall,
    credentials: &B::Credentials,
    call: &CallContext,
    context: &DelegateContext<B>,
) -> ToolOutput {
    let started = Instant::now();
    let texts = &context.texts;
    let mut reports: Vec<TaskReport> = Vec::with_capacity(delegate_call.tasks.len());
    let mut runs: Vec<Pin<Box<dyn Future<Output = TaskReport> + Send>>> =
        Vec::with_capacity(delegate_call.tasks.len());
    // Built in order, as the sync tool builds them; each run starts when all are built.
    for task in delegate_call.tasks {
        let index = task.task_index;
        match build(&task, credentials, call, context).await {
            Ok(child) => {
                let cancel = Cancellation::new(call.cancel.child_token());
                let texts = texts.clone();
                let child = Closing(Some(child));
                let run = async move {
                    let begun = Instant::now();
                    let result = child
                        .run(task, cancel, texts)
                        .await
                        .map_err(engine_fence::error_text);
                    let measured = seconds(begun.elapsed());
                    let duration_seconds = match &result {
                        Ok(result) => result
                            .duration_seconds
                            .filter(|d| d.is_finite())
                            .unwrap_or(measured),
                        Err(_) => measured,
                    };
                    TaskReport {
                        task_index: index,
                        result,
                        duration_seconds,
                    }
                };
                runs.push(Box::pin(run));
            }
            Err(reason) => reports.push(TaskReport {
                task_index: index,
                result: Err(ToolError::ChildBuild(reason).render(texts)),
                duration_seconds: 0.0,
            }),
        }
    }
    reports.extend(join_all(runs).await);
    reports.sort_by_key(|report| report.task_index);
    let results: Vec<Value> = reports
        .iter()
        .map(|report| match &report.result {
            Ok(result) => task_result(report.task_index, result.clone(), report.duration_seconds),
            Err(error) => error_result(report.task_index, error.clone(), report.duration_seconds),
        })
        .collect();
    let text = json!({
        "results": results,
        "total_duration_seconds": seconds(started.elapsed()),
    })
    .to_string();
    ToolOutput {
        text,
        outcome: ToolOutcome::Ran(reports),
    }
}

/// Polls every future on this task until all are done (a batch's children run
/// concurrently without a thread each); outputs in completion order.
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send>>>) -> Vec<T> {
    let mut done = Vec::with_capacity(futures.len());
    poll_fn(|cx| {
        let mut index = 0;
        while index < futures.len() {
            match futures[index].as_mut().poll(cx) {
                Poll::Ready(output) => {
                    done.push(output);
                    drop(futures.swap_remove(index));
                }
                Poll::Pending => index += 1,
            }
        }
        if futures.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done
}
