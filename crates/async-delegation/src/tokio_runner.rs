//! Async runners on a tokio runtime (feature `tokio`).
//!
//! A runner may be a future: [`DelegationEngine::dispatch_async`] spawns it on the runtime
//! the caller hands in (no worker thread), with a [`Cancellation`] that the interrupt
//! functions cancel. The same capacity counts sync and async delegations, and the same one
//! completion comes whatever the future does: it returns (its result), errors (`error`
//! with the error's text), panics (`error`, `panic: {message}`), or is dropped before it
//! finishes because its runtime shut down (`interrupted`, with
//! [`RUNTIME_SHUT_DOWN_ERROR`]).
//!
//! The completion is recorded on the task when the ledger never blocks (the memory
//! ledger), and on the runtime's blocking threads when it may
//! ([`Capabilities::may_block`](process_registry::Capabilities::may_block): SQLite,
//! PostgreSQL), so the write never holds a runtime thread. The dispatch's own record is
//! written by `dispatch_async` itself, on the calling thread, before it returns.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::engine::{failure, Admitted, FinishedRun, Inner};
use crate::fence;
use crate::handle::{DelegationHandle, Watch};
use crate::{
    Controls, DelegationEngine, DelegationResult, DelegationSpec, DispatchError, InterruptHook,
    RunnerError,
};

/// The `error` of an async delegation whose future was dropped before it finished (its
/// runtime shut down); its status is `interrupted`.
pub const RUNTIME_SHUT_DOWN_ERROR: &str = "runtime shut down before the subagent finished";

/// An async runner's cancellation: a [`CancellationToken`] that
/// [`DelegationEngine::interrupt`] (and `interrupt_all`, `interrupt_session`,
/// [`DelegationHandle::cancel`]) cancels, with the reason of the first interrupt kept.
///
/// The runner decides what cancellation means: typically it stops its model calls and
/// returns a result with status `interrupted` and what it has so far.
#[derive(Clone, Debug, Default)]
pub struct Cancellation {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl Cancellation {
    /// A cancellation on `token`: cancelled when the token is (by whoever holds it), or
    /// by [`cancel`](Self::cancel). The engine makes one per async delegation; a caller
    /// running a child itself (a synchronous `delegate_task` call) makes its own.
    pub fn new(token: CancellationToken) -> Self {
        Cancellation {
            token,
            reason: Arc::default(),
        }
    }

    /// The token: hand it (or a child of it) to whatever the runner awaits.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Resolves when the delegation is interrupted.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// `true` once the delegation was interrupted.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The first interrupt's reason (a later interrupt does not replace it).
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    /// Cancels with `reason` (kept only if it is the first).
    pub fn cancel(&self, reason: &str) {
        let _ = self.reason.set(reason.to_owned());
        self.token.cancel();
    }
}

impl DelegationEngine {
    /// Starts `runner`'s future on `runtime`, unless `max_async_children` delegations
    /// (sync or async) are already running, and returns its [`DelegationHandle`]. Never
    /// blocks: nothing waits for the future, and no thread is started.
    ///
    /// `runner` is called here, on the caller's thread, with the delegation's
    /// [`Cancellation`]; the future it returns runs on `runtime`. Exactly one completion
    /// goes to the queue, as described in the [module docs](crate#async-runners).
    ///
    /// ```
    /// use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
    /// use process_registry::CompletionQueue;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = DelegationEngine::new(CompletionQueue::new());
    /// let handle = engine.dispatch_async(
    ///     DelegationSpec::new("Summarise the logs"),
    ///     &tokio::runtime::Handle::current(),
    ///     |cancel| async move {
    ///         tokio::select! {
    ///             // … an LLM call here, awaited …
    ///             summary = async { "Three errors." } => Ok(DelegationResult::completed(summary)),
    ///             () = cancel.cancelled() => Ok(DelegationResult::interrupted("stopped early")),
    ///         }
    ///     },
    ///     3,
    /// )?;
    /// assert_eq!(handle.finished().await.summary.as_deref(), Some("Three errors."));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`DispatchError::CapacityReached`] at capacity, [`DispatchError::ShutDown`] after
    /// [`shutdown`](DelegationEngine::shutdown), [`DispatchError::LedgerUnavailable`] when
    /// the ledger cannot record the dispatch; `runner` is then dropped uncalled.
    pub fn dispatch_async<F, Fut>(
        &self,
        spec: DelegationSpec,
        runtime: &tokio::runtime::Handle,
        runner: F,
        max_async_children: usize,
    ) -> Result<DelegationHandle, DispatchError>
    where
        F: FnOnce(Cancellation) -> Fut + Send + 'static,
        Fut: Future<Output = Result<DelegationResult, RunnerError>> + Send + 'static,
    {
        self.dispatch_async_with(
            spec,
            runtime,
            runner,
            Controls::default(),
            max_async_children,
        )
    }

    /// [`dispatch_async`](Self::dispatch_async) with the delegation's other
    /// [`Controls`]: a [`Steering`](crate::Steering) inbox ([`steer`](Self::steer)), a
    /// [`Progress`](crate::Progress) or a deadline (the stall monitor watches it, and
    /// cancels its [`Cancellation`] when it stalls), and an interrupt hook called after the
    /// cancellation.
    ///
    /// # Errors
    /// As [`dispatch_async`](Self::dispatch_async).
    pub fn dispatch_async_with<F, Fut>(
        &self,
        mut spec: DelegationSpec,
        runtime: &tokio::runtime::Handle,
        runner: F,
        mut controls: Controls,
        max_async_children: usize,
    ) -> Result<DelegationHandle, DispatchError>
    where
        F: FnOnce(Cancellation) -> Fut + Send + 'static,
        Fut: Future<Output = Result<DelegationResult, RunnerError>> + Send + 'static,
    {
        let dispatch = crate::trace::dispatch(&mut spec);
        let _dispatching = dispatch.enter();
        let cancellation = Cancellation::default();
        let signal = cancellation.clone();
        let also = controls.interrupt.take();
        let hook: InterruptHook = Arc::new(move |reason: &str| {
            signal.cancel(reason);
            // The caller's hook is its own code: a panic there does not undo the
            // cancellation that landed (the interrupt counts as signalled).
            if let Some(also) = &also {
                if let Err(message) = fence::call(|| also(reason)) {
                    tracing::warn!(panic = %message, "an async delegation's interrupt hook panicked");
                }
            }
        });
        controls.interrupt = Some(hook);
        let watched = controls.progress.is_some() || controls.deadline.is_some();
        let admitted = match self
            .inner()
            .admit_recorded(spec, controls, max_async_children)
        {
            Ok(admitted) => admitted,
            Err(error) => {
                self.inner().metrics().rejected(&error);
                fence::drop_logged(runner, "a refused async runner");
                return Err(error);
            }
        };
        self.inner().metrics().dispatched();
        let watch = Arc::new(Watch::default());
        self.inner()
            .watch(admitted.delegation_id(), Arc::clone(&watch));
        let handle = DelegationHandle::new(
            admitted.delegation_id().clone(),
            self.clone(),
            Arc::clone(&watch),
        );
        dispatch.record("delegation_id", admitted.delegation_id().as_str());
        let span = crate::trace::run(
            Some(&dispatch),
            admitted.delegation_id(),
            admitted.dispatched().spec(),
        );
        let mut run = Run {
            inner: Arc::clone(self.inner()),
            admitted: Some(admitted),
            result: None,
        };
        // Building the future is the caller's code too: a panic there is this
        // delegation's `panic:` completion, not the caller's. Built, polled and finished
        // inside the run's span.
        let _building = span.enter();
        let future = match fence::call(|| runner(cancellation)) {
            Ok(future) => future,
            Err(message) => {
                run.finish(failure(format!("panic: {message}")));
                return Ok(handle);
            }
        };
        // Fields drop in order: should the task be dropped unfinished, the runner's future
        // goes first, then `run` records the completion.
        let mut task = Task {
            future: fence::future(future, "an async runner's future"),
            run,
        };
        // Should the runtime already be shut down, tokio drops the task unpolled, and with
        // it `run`, which records the `interrupted` completion.
        let running = async move {
            let outcome = (&mut task.future).await;
            let result = match outcome {
                Ok(Ok(result)) => result,
                Ok(Err(error)) => failure(fence::error_text(error)),
                Err(message) => failure(format!("panic: {message}")),
            };
            if !task.run.inner.ledger_may_block() {
                task.run.finish(result);
                return;
            }
            // The ledger's write may wait on its store: on the runtime's blocking threads,
            // not this one. The result goes with the run, so a runtime that shuts down
            // before the write runs still records it (when the run is dropped).
            let mut run = task.run.take(result);
            // In the run's span, as on the task.
            let span = tracing::Span::current();
            let recorded = tokio::task::spawn_blocking(move || span.in_scope(|| run.finish_kept()));
            let _ = recorded.await;
        };
        let task = runtime.spawn(tracing::Instrument::instrument(running, span.clone()));
        if watched {
            // Only a watched delegation can be finalized by the engine.
            self.inner().keep_task(handle.id(), task.abort_handle());
        }
        drop(task);
        if watched {
            self.inner().wake_monitor();
        }
        Ok(handle)
    }
}

/// What the spawned task owns, in drop order.
struct Task<F> {
    future: fence::Fenced<F>,
    run: Run,
}

/// An admitted async delegation until its completion is recorded: finished with its
/// result, or — dropped unfinished — with the result it keeps, else (its runtime shut
/// down before the runner returned) with [`RUNTIME_SHUT_DOWN_ERROR`].
struct Run {
    inner: Arc<Inner>,
    admitted: Option<Admitted>,
    /// The runner's result, kept for a write made elsewhere.
    result: Option<DelegationResult>,
}

impl Run {
    /// This run, moved out with the result it is to record (what is left records
    /// nothing).
    fn take(&mut self, result: DelegationResult) -> Run {
        Run {
            inner: Arc::clone(&self.inner),
            admitted: self.admitted.take(),
            result: Some(result),
        }
    }

    /// Records the result it keeps.
    fn finish_kept(&mut self) {
        if let Some(result) = self.result.take() {
            self.finish(result);
        }
    }

    fn finish(&mut self, result: DelegationResult) {
        let Some(admitted) = self.admitted.take() else {
            return;
        };
        let mut finished =
            self.inner
                .finished(admitted.dispatched(), admitted.dispatched_at(), result);
        let completion =
            crate::trace::completion(admitted.delegation_id(), finished.status_str(), false);
        let _completing = completion.enter();
        match self
            .inner
            .try_complete(admitted.record(), admitted.delegation_id(), &mut finished)
        {
            Ok(ended) => {
                drop(finished);
                warn_if_discarded(&ended, admitted.delegation_id());
                ended.publish();
            }
            // The store refused it: the retries sleep, so they go to a thread of their
            // own rather than hold a runtime thread (the slot stays held meanwhile).
            Err(_) => retry_on_a_thread(Arc::clone(&self.inner), admitted, finished),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(result) = self.result.take() {
            self.finish(result);
        }
        if self.admitted.is_some() {
            self.finish(DelegationResult {
                status: Some("interrupted".into()),
                error: Some(RUNTIME_SHUT_DOWN_ERROR.into()),
                ..DelegationResult::default()
            });
        }
    }
}

fn retry_on_a_thread(inner: Arc<Inner>, admitted: Admitted, finished: FinishedRun) {
    // Shared with the thread, so that a thread that cannot start leaves it here.
    let work = Arc::new(std::sync::Mutex::new(Some((admitted, finished))));
    let retry = {
        let inner = Arc::clone(&inner);
        let work = Arc::clone(&work);
        move || retry_now(&inner, &work)
    };
    let spawned = std::thread::Builder::new()
        .name("async-delegate-retry".into())
        .spawn(retry);
    if let Err(error) = spawned {
        // No thread either: retry on this one (it blocks it, in a process out of threads
        // with a failing store) rather than lose the completion.
        tracing::error!(%error, "no thread to retry recording an async completion; retrying on this one");
        retry_now(&inner, &work);
    }
}

type Pending = std::sync::Mutex<Option<(Admitted, FinishedRun)>>;

fn retry_now(inner: &Arc<Inner>, work: &Pending) {
    let taken = work
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some((admitted, finished)) = taken {
        let ended = inner.complete(admitted.record(), admitted.delegation_id(), finished);
        warn_if_discarded(&ended, admitted.delegation_id());
        ended.publish();
    }
}

/// A runner's completion that came after the engine finalized the delegation: logged, as
/// it is discarded.
fn warn_if_discarded(ended: &crate::engine::Ended, delegation_id: &str) {
    if ended.is_discarded() {
        tracing::warn!(
            delegation_id,
            "an async runner ended after the engine finalized its delegation (stalled or past its deadline); its result is discarded"
        );
    }
}
