//! The engine: capacity, records, workers, completion events and interrupts.

use std::collections::HashMap;

/// The hasher of the engine's maps: their keys are random id numbers.
type FastHash = foldhash::fast::RandomState;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_listener::Listener as _;

use process_registry::{
    AsyncDelegationEvent, Clock, CompletionQueue, DispatchRecord, Event, Status, SystemClock, Text,
    WireNumber,
};

use crate::fence;
use crate::handle::{DelegationHandle, Watch};
use crate::liveness::{Monitor, StallPhase};

mod admission;
mod completion;
mod retained;
use admission::id_number;
pub(crate) use admission::Admitted;
#[cfg(feature = "tokio")]
pub(crate) use completion::{failure, Ended, FinishedRun};
mod stall;
use crate::pool::{IdleSignal, WorkerPool, DEFAULT_KEEP_ALIVE};
use crate::{
    Controls, DelegationRecord, DelegationResult, DelegationSpec, DispatchError, DispatchOutcome,
    InterruptHook, Progress, RunnerError, StallPolicy, SteerOutcome, Steering,
};

/// Runs subagents in the background and reports each one's end on a completion queue.
///
/// `DelegationEngine` is a cheap, cloneable handle: clones share the same records,
/// workers and queue. See the [crate docs](crate) for the guarantees; in short:
///
/// - [`dispatch`](Self::dispatch) answers at once, accepting or rejecting atomically
///   against `max_async_children`;
/// - every accepted delegation puts exactly one `async_delegation` event on the queue,
///   whether its runner returns, fails, panics or is interrupted;
/// - when that event is observable on the queue, its slot is already free and its record
///   already completed, and once [`active_count`](Self::active_count) stops counting a
///   delegation its event is already on the queue;
/// - runners run on detached worker threads named `async-delegate-N`: neither exiting
///   `main` nor dropping the engine waits for them.
#[derive(Clone)]
pub struct DelegationEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DelegationEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationEngine")
            .field("active", &self.active_count())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    queue: CompletionQueue,
    state: Mutex<State>,
    pool: WorkerPool,
    /// Notified whenever a completion leaves no delegation running.
    drained: event_listener::Event,
    /// The clock of stalls and deadlines.
    clock: Arc<dyn Clock>,
    /// Set while the clock reads a non-finite time (logged once).
    clock_failed: std::sync::atomic::AtomicBool,
    stall: StallPolicy,
    monitor: Monitor,
    metrics: crate::metrics::EngineMetrics,
}

#[derive(Default)]
struct State {
    /// By the id's number ([`id_number`]): an insert costs no allocation.
    running: HashMap<u32, Running, FastHash>,
    /// The last completions, oldest commit first, with their id numbers.
    retained: retained::Retained,
    /// Dispatch order, so `list` is stable.
    next_seq: u64,
    /// Set by [`DelegationEngine::shutdown`]: no more admissions.
    shut_down: bool,
}

struct Running {
    seq: u64,
    dispatched: Dispatched,
    interrupt: Option<InterruptHook>,
    /// Where [`DelegationEngine::steer`] queues text, when the dispatch gave one.
    steering: Option<Steering>,
    /// Where a [`DelegationHandle`] waits for the outcome, when one was asked for.
    watch: Option<Arc<Watch>>,
    /// Set when the stall monitor watches it (progress reports or a deadline).
    watched: Option<Box<Watched>>,
    /// The async runner's task, aborted when the engine finalizes it itself.
    #[cfg(feature = "tokio")]
    abort: Option<tokio::task::AbortHandle>,
}

/// What the stall monitor keeps of a watched delegation.
#[derive(Clone)]
struct Watched {
    progress: Option<Progress>,
    /// When it passes (on the engine's clock), and its length in seconds.
    deadline: Option<(f64, f64)>,
    /// When it was admitted, on the engine's clock: quiet since then without progress.
    admitted_at: f64,
    /// The ledger's row, for the engine's own finalization (set once recorded).
    record: Option<DispatchRecord>,
    /// Unix seconds at dispatch, as its event says.
    dispatched_at: f64,
    /// Set when the monitor interrupted it.
    stall: Option<Stall>,
    /// The monitor is writing its completion.
    finalizing: bool,
}

/// Why and when the monitor interrupted a delegation.
#[derive(Clone, Copy)]
struct Stall {
    interrupted_at: f64,
    quiet: f64,
    threshold: f64,
    phase: StallPhase,
}

/// A retained completed delegation: its dispatch and how it ended.
struct Finished {
    dispatched: Dispatched,
    status: Status,
    model: Option<Text>,
    completed_at: f64,
}

/// A dispatch as the engine, its worker and the ledger share it: the spec restated as the
/// `async_delegation` event it will complete (the ledger's running row; should the
/// process die, the `unknown` completion is built from it). Built once by moving the
/// spec: the caller's dispatch pays no clone of it (the worker copies its fields once, into
/// the completion event).
#[derive(Clone)]
pub(crate) struct Dispatched {
    event: Arc<Event>,
    /// The id's number ([`id_number`]): the engine's key for it.
    number: u32,
}

impl Dispatched {
    /// An empty dispatch, number 0.
    #[cfg(test)]
    fn for_tests() -> Self {
        Dispatched {
            event: Arc::new(Event::AsyncDelegation(AsyncDelegationEvent::default())),
            number: 0,
        }
    }

    /// The dispatch restated as an event.
    fn restate(spec: DelegationSpec, dispatched_at: f64) -> Arc<Event> {
        shared_delegation_event(|event| {
            event.session_key = spec.session_key;
            event.goal = spec.goal;
            event.context = spec.context;
            event.toolsets = spec.toolsets;
            event.role = spec.role;
            event.model = spec.model;
            event.dispatched_at = WireNumber::from_f64(dispatched_at);
            event.traceparent = spec.traceparent;
        })
        .0
    }

    pub(crate) fn spec(&self) -> &AsyncDelegationEvent {
        static NONE: std::sync::LazyLock<AsyncDelegationEvent> =
            std::sync::LazyLock::new(AsyncDelegationEvent::default);
        match &*self.event {
            Event::AsyncDelegation(spec) => spec,
            // Not built by this module: cannot happen.
            _ => &NONE,
        }
    }

    /// The event back, for another id draw (the ledger refused this one).
    fn into_spec(self) -> Arc<Event> {
        self.event
    }

    fn id(&self) -> &str {
        self.spec().delegation_id.as_deref().unwrap_or("")
    }

    /// What [`DelegationEngine::list`] shows of it.
    fn record(
        &self,
        status: Status,
        model: Option<Text>,
        completed_at: Option<f64>,
        accepting_steer: bool,
    ) -> DelegationRecord {
        let spec = self.spec();
        DelegationRecord {
            delegation_id: spec.delegation_id.clone().unwrap_or_default(),
            goal: spec.goal.clone(),
            context: spec.context.clone(),
            toolsets: spec.toolsets.clone(),
            role: spec.role.clone(),
            model,
            session_key: spec.session_key.clone(),
            status,
            dispatched_at: spec.dispatched_at.as_ref().map_or(0.0, WireNumber::as_f64),
            completed_at,
            accepting_steer,
            seconds_since_progress: None,
            in_tool: None,
        }
    }
}

impl DelegationEngine {
    /// An engine whose completion events go to `queue`.
    pub fn new(queue: CompletionQueue) -> Self {
        Self::with_worker_keep_alive(queue, DEFAULT_KEEP_ALIVE)
    }

    /// An engine whose idle worker threads exit after `keep_alive` without work
    /// ([`new`](Self::new) uses 10 s) — all but one: the spare, which stays while the
    /// engine lives so the next dispatch finds a thread. A longer keep-alive saves thread
    /// starts in bursty use; idle workers cost a parked thread each and never keep the
    /// process alive.
    pub fn with_worker_keep_alive(queue: CompletionQueue, keep_alive: Duration) -> Self {
        Self::builder(queue).worker_keep_alive(keep_alive).build()
    }

    /// An engine on `queue` with every setting at its default, to change before
    /// [`build`](EngineBuilder::build).
    ///
    /// ```
    /// use std::time::Duration;
    /// use async_delegation::{DelegationEngine, StallPolicy};
    ///
    /// let engine = DelegationEngine::builder(process_registry::CompletionQueue::new())
    ///     .stall_policy(StallPolicy::default().with_idle(Duration::from_secs(120)))
    ///     .build();
    /// assert_eq!(engine.active_count(), 0);
    /// ```
    pub fn builder(queue: CompletionQueue) -> EngineBuilder {
        EngineBuilder {
            queue,
            keep_alive: DEFAULT_KEEP_ALIVE,
            stall: StallPolicy::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// A fresh [`Progress`] handle on this engine's clock, for a child to report on; give
    /// it to the dispatch with [`Controls::with_progress`].
    pub fn progress(&self) -> Progress {
        Progress::new(Arc::clone(&self.inner.clock))
    }

    /// Runs the stall monitor's check now, on the engine's clock (the monitor thread
    /// runs it by itself when one is due; tests on a
    /// [`ManualClock`](process_registry::ManualClock) call it after moving time).
    /// Interrupts every watched delegation past its threshold or deadline and finalizes
    /// every one still running past its grace; returns how many it acted on.
    pub fn sweep_stalls(&self) -> usize {
        self.inner.sweep().0
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// See [`Inner::completions_settled`].
    pub(crate) fn completions_settled(&self) {
        self.inner.completions_settled();
    }

    /// The queue completion events are put on.
    pub fn completion_queue(&self) -> &CompletionQueue {
        &self.inner.queue
    }

    /// Starts `runner` in the background, unless `max_async_children` delegations are
    /// already running. Never waits for the runner.
    ///
    /// Accepted: returns [`DispatchOutcome::Dispatched`] with a fresh id, and exactly one
    /// `async_delegation` event with that id will be put on the queue when the runner
    /// ends (see the [crate docs](crate) for how the outcome maps to the event).
    /// `interrupt`, if given, is what [`interrupt_all`](Self::interrupt_all),
    /// [`interrupt`](Self::interrupt) and [`interrupt_session`](Self::interrupt_session)
    /// call while the delegation runs; it is dropped (outside every lock) when the
    /// delegation completes.
    ///
    /// Rejected: returns [`DispatchOutcome::Rejected`] with the capacity text of
    /// [`DispatchError::CapacityReached`]; nothing is queued and `runner` is dropped
    /// uncalled. `max_async_children == 0` rejects everything.
    pub fn dispatch<R>(
        &self,
        spec: DelegationSpec,
        runner: R,
        interrupt: Option<InterruptHook>,
        max_async_children: usize,
    ) -> DispatchOutcome
    where
        R: FnOnce() -> Result<DelegationResult, RunnerError> + Send + 'static,
    {
        match self.try_dispatch(spec, runner, interrupt, max_async_children) {
            Ok(delegation_id) => DispatchOutcome::Dispatched { delegation_id },
            Err(error) => DispatchOutcome::Rejected {
                error: error.to_string(),
            },
        }
    }

    /// [`dispatch`](Self::dispatch) with the rejection as a typed error, for callers
    /// that act on the cause. Returns the delegation id.
    ///
    /// # Errors
    /// [`DispatchError::CapacityReached`] at capacity;
    /// [`DispatchError::WorkerUnavailable`] when the OS refused a worker thread (the
    /// delegation is then not accepted: no record, no event).
    pub fn try_dispatch<R>(
        &self,
        spec: DelegationSpec,
        runner: R,
        interrupt: Option<InterruptHook>,
        max_async_children: usize,
    ) -> Result<Text, DispatchError>
    where
        R: FnOnce() -> Result<DelegationResult, RunnerError> + Send + 'static,
    {
        self.start(spec, runner, interrupt.into(), max_async_children, None)
    }

    /// [`try_dispatch`](Self::try_dispatch) with every control of the delegation: its
    /// interrupt hook and its [`Steering`] inbox ([`steer`](Self::steer) queues text
    /// there while it runs; what the child never took comes back in the completion as
    /// `missed_steer`).
    ///
    /// # Errors
    /// As [`try_dispatch`](Self::try_dispatch).
    ///
    /// ```
    /// use async_delegation::{Controls, DelegationEngine, DelegationResult, DelegationSpec, SteerOutcome, Steering};
    ///
    /// let queue = process_registry::CompletionQueue::new();
    /// let engine = DelegationEngine::new(queue.clone());
    /// let (release, wait) = std::sync::mpsc::channel::<()>();
    /// let id = engine.try_dispatch_with(
    ///     DelegationSpec::new("Summarise the logs"),
    ///     move || {
    ///         wait.recv().ok(); // the child never reads its steering
    ///         Ok(DelegationResult::completed("Three errors."))
    ///     },
    ///     Controls::default().with_steering(Steering::new()),
    ///     4,
    /// )?;
    /// assert_eq!(engine.steer(&id, "Only the last hour"), SteerOutcome::Queued);
    /// release.send(()).ok();
    /// let event = queue.take_timeout(std::time::Duration::from_secs(10)).unwrap();
    /// let process_registry::Event::AsyncDelegation(event) = event else { unreachable!() };
    /// assert_eq!(event.missed_steer.as_deref(), Some("Only the last hour"));
    /// assert_eq!(
    ///     event.summary.as_deref(),
    ///     Some("Three errors.\n\n[steer did not land — the subagent finished before it could be delivered: Only the last hour]")
    /// );
    /// assert_eq!(engine.steer(&id, "Too late"), SteerOutcome::NotRunning);
    /// # Ok::<(), async_delegation::DispatchError>(())
    /// ```
    pub fn try_dispatch_with<R>(
        &self,
        spec: DelegationSpec,
        runner: R,
        controls: Controls,
        max_async_children: usize,
    ) -> Result<Text, DispatchError>
    where
        R: FnOnce() -> Result<DelegationResult, RunnerError> + Send + 'static,
    {
        self.start(spec, runner, controls, max_async_children, None)
    }

    /// Queues `text` in a running delegation's [`Steering`] inbox. Any caller that knows
    /// the id may steer: scope it first (the `delegate_task` tool steers only the
    /// delegations of the caller's own session).
    pub fn steer(&self, delegation_id: &str, text: &str) -> SteerOutcome {
        let steering = {
            let state = self.inner.lock_state();
            let Some(running) = id_number(delegation_id).and_then(|n| state.running.get(&n)) else {
                return SteerOutcome::NotRunning;
            };
            running.steering.clone()
        };
        match steering.map(|steering| steering.push(text)) {
            Some(Ok(())) => SteerOutcome::Queued,
            _ => SteerOutcome::Closed,
        }
    }

    /// [`try_dispatch`](Self::try_dispatch) that returns a [`DelegationHandle`]: the id,
    /// the status, the outcome (blocking, with a timeout, or awaited) and cancel. The
    /// completion still goes to the queue as for any dispatch.
    ///
    /// # Errors
    /// As [`try_dispatch`](Self::try_dispatch).
    pub fn dispatch_handle<R>(
        &self,
        spec: DelegationSpec,
        runner: R,
        interrupt: Option<InterruptHook>,
        max_async_children: usize,
    ) -> Result<DelegationHandle, DispatchError>
    where
        R: FnOnce() -> Result<DelegationResult, RunnerError> + Send + 'static,
    {
        let watch = Arc::new(Watch::default());
        let id = self.start(
            spec,
            runner,
            interrupt.into(),
            max_async_children,
            Some(Arc::clone(&watch)),
        )?;
        Ok(DelegationHandle::new(id, self.clone(), watch))
    }

    fn start<R>(
        &self,
        mut spec: DelegationSpec,
        runner: R,
        controls: Controls,
        max_async_children: usize,
        watch: Option<Arc<Watch>>,
    ) -> Result<Text, DispatchError>
    where
        R: FnOnce() -> Result<DelegationResult, RunnerError> + Send + 'static,
    {
        let dispatch = crate::trace::dispatch(&mut spec);
        let _dispatching = dispatch.enter();
        let watched = controls.progress.is_some() || controls.deadline.is_some();
        let admitted = match self
            .inner
            .admit_recorded(spec, controls, max_async_children)
        {
            Ok(admitted) => admitted,
            Err(error) => {
                self.inner.metrics.rejected(&error);
                // The runner is the caller's code; its drop runs after every lock is
                // released and cannot make a refusal a panic.
                drop_fenced(runner);
                return Err(error);
            }
        };
        let Admitted {
            delegation_id,
            dispatched,
            record: ledger_record,
            dispatched_at,
        } = admitted;
        if let Some(watch) = watch {
            self.inner.watch(&delegation_id, watch);
        }
        dispatch.record("delegation_id", delegation_id.as_str());
        let inner = Arc::clone(&self.inner);
        let link = crate::trace::link(&dispatch);
        let job = Box::new(move |idle: IdleSignal| {
            let run = crate::trace::run(link.as_deref(), dispatched.id(), dispatched.spec());
            drop(link);
            inner.run(
                ledger_record,
                &dispatched,
                dispatched_at,
                runner,
                &run,
                idle,
            );
        });
        // A refused thread drops the job (the caller's runner) on this thread: fenced.
        let started = fence::call(|| self.inner.pool.execute(job)).unwrap_or_else(|message| {
            Err(std::io::Error::other(format!(
                "dropping the refused runner panicked: {message}"
            )))
        });
        if let Err(error) = started {
            // Not accepted after all: the runner was never started, so no completion. The
            // ledger's row is finished as an error so nothing reports it running forever.
            let hook = self.inner.unadmit(&delegation_id);
            drop_fenced(hook);
            self.inner.abandon(ledger_record, &delegation_id, &error);
            tracing::warn!(%error, "async delegation worker could not be started");
            let error = DispatchError::WorkerUnavailable(error);
            self.inner.metrics.rejected(&error);
            return Err(error);
        }
        self.inner.metrics.dispatched();
        if watched {
            self.inner.wake_monitor();
        }
        Ok(delegation_id)
    }

    /// Calls the interrupt hook of every running delegation with `reason` and returns
    /// how many were signalled. Hooks run on this thread, outside every lock; a hook
    /// that panics is caught, logged and not counted. Delegations without a hook are
    /// not counted. Each child still ends through its runner, so its completion event
    /// (usually `interrupted`) is still delivered.
    ///
    /// The set of hooks is taken at the call; a runner that returns meanwhile may still
    /// see its hook called once, just after it finished, so hooks must tolerate that.
    pub fn interrupt_all(&self, reason: &str) -> usize {
        let hooks = self.inner.hooks_where(|_| true);
        call_hooks(hooks, reason)
    }

    /// Interrupts one running delegation. `true` when it was running, had a hook, and
    /// the hook returned without panicking.
    pub fn interrupt(&self, delegation_id: &str, reason: &str) -> bool {
        let hooks = self
            .inner
            .hooks_where(|dispatched| dispatched.id() == delegation_id);
        call_hooks(hooks, reason) == 1
    }

    /// Interrupts every running delegation dispatched from `session_key` (`""` selects
    /// the CLI-origin ones) and returns how many were signalled, as
    /// [`interrupt_all`](Self::interrupt_all).
    pub fn interrupt_session(&self, session_key: &str, reason: &str) -> usize {
        let hooks = self
            .inner
            .hooks_where(|dispatched| dispatched.spec().session_key == session_key);
        call_hooks(hooks, reason)
    }

    /// Shuts the engine down: from now on every dispatch is refused
    /// ([`DispatchError::ShutDown`]); every running delegation is interrupted with
    /// `reason`; then this waits up to `grace` for them to finish. Returns how many were
    /// still running when the grace ran out — they are not abandoned: each still ends
    /// through its runner and still yields its one completion. Not for async code: await
    /// [`shutdown_async`](Self::shutdown_async) there.
    pub fn shutdown(&self, reason: &str, grace: Duration) -> usize {
        self.begin_shutdown(reason);
        let deadline = std::time::Instant::now().checked_add(grace);
        loop {
            if self.active_count() == 0 {
                return 0;
            }
            event_listener::listener!(self.inner.drained => drained);
            if self.active_count() == 0 {
                return 0;
            }
            match deadline {
                Some(deadline) => {
                    if drained.wait_deadline(deadline).is_none() {
                        return self.active_count();
                    }
                }
                None => drained.wait(),
            }
        }
    }

    /// [`shutdown`](Self::shutdown), awaited on any executor: the wait holds no thread.
    pub async fn shutdown_async(&self, reason: &str, grace: Duration) -> usize {
        self.begin_shutdown(reason);
        let mut timer = futures_timer::Delay::new(grace);
        loop {
            if self.active_count() == 0 {
                return 0;
            }
            let mut drained = self.inner.drained.listen();
            if self.active_count() == 0 {
                return 0;
            }
            let timed_out = std::future::poll_fn(|cx| {
                use std::future::Future as _;
                if std::pin::Pin::new(&mut drained).poll(cx).is_ready() {
                    return std::task::Poll::Ready(false);
                }
                std::pin::Pin::new(&mut timer).poll(cx).map(|()| true)
            })
            .await;
            if timed_out {
                return self.active_count();
            }
        }
    }

    fn begin_shutdown(&self, reason: &str) {
        self.inner.lock_state().shut_down = true;
        self.interrupt_all(reason);
    }

    /// How many delegations are running (dispatched, runner not yet finished).
    pub fn active_count(&self) -> usize {
        self.inner.lock_state().running.len()
    }

    /// Running delegations in dispatch order, then the retained completed ones, oldest
    /// completion first (at most [`MAX_RETAINED_COMPLETED`](crate::MAX_RETAINED_COMPLETED) of those).
    pub fn list(&self) -> Vec<DelegationRecord> {
        let now = self.inner.clock.now();
        let state = self.inner.lock_state();
        let mut running: Vec<&Running> = state.running.values().collect();
        running.sort_by_key(|running| running.seq);
        running
            .into_iter()
            .map(|running| {
                let spec = running.dispatched.spec();
                let accepting_steer = running.steering.as_ref().is_some_and(Steering::is_open);
                let mut record = running.dispatched.record(
                    DelegationRecord::RUNNING,
                    spec.model.clone(),
                    None,
                    accepting_steer,
                );
                let progress = running.watched.as_ref().and_then(|w| w.progress.as_ref());
                if let Some(progress) = progress {
                    record.seconds_since_progress = Some((now - progress.last_at()).max(0.0));
                    record.in_tool = Some(progress.in_tool());
                }
                record
            })
            .chain(state.retained.records().map(|done| {
                done.dispatched.record(
                    done.status.clone(),
                    done.model.clone(),
                    Some(done.completed_at),
                    false,
                )
            }))
            .collect()
    }
}

impl Inner {
    /// Keeps the task of a running async delegation, for the engine to abort should it
    /// finalize the delegation itself (a task that already ended is not kept).
    #[cfg(feature = "tokio")]
    pub(crate) fn keep_task(&self, delegation_id: &str, abort: tokio::task::AbortHandle) {
        let Some(number) = id_number(delegation_id) else {
            return;
        };
        if let Some(running) = self.lock_state().running.get_mut(&number) {
            running.abort = Some(abort);
        }
    }

    /// Whether a call of the engine's ledger may wait on something outside the process
    /// (a file's lock, a server): an async completion is then recorded off the runtime.
    #[cfg(feature = "tokio")]
    pub(crate) fn ledger_may_block(&self) -> bool {
        self.queue.backend().capabilities().may_block
    }

    /// The engine's registered metrics.
    #[cfg(feature = "tokio")]
    pub(crate) fn metrics(&self) -> &crate::metrics::EngineMetrics {
        &self.metrics
    }

    /// Starts (or wakes) the stall monitor: a watched delegation was just admitted.
    pub(crate) fn wake_monitor(self: &Arc<Self>) {
        self.monitor
            .wake(Arc::downgrade(self), Inner::monitor_sweep);
    }

    /// Waits for a completion being written now: the engine writes a completion to the
    /// ledger and sets its handle's outcome under one hold of its lock, so once the lock
    /// is free, the outcome of every completion a consumer could have taken is set.
    pub(crate) fn completions_settled(&self) {
        drop(self.lock_state());
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // The state is only changed by short sections of this module that cannot panic
        // half-way (no user code runs under the lock), so a poisoned lock still holds
        // consistent data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hooks_where(&self, wanted: impl Fn(&Dispatched) -> bool) -> Vec<InterruptHook> {
        let state = self.lock_state();
        state
            .running
            .values()
            .filter(|running| wanted(&running.dispatched))
            .filter_map(|running| running.interrupt.clone())
            .collect()
    }
}

/// An `async_delegation` event written by `fill` in place, in its shared allocation: the
/// event is large, and a value built on the stack would be copied into it (and on the
/// way). With what `fill` returned (always: the allocation is new and unshared).
fn shared_delegation_event<R>(
    fill: impl FnOnce(&mut AsyncDelegationEvent) -> R,
) -> (Arc<Event>, Option<R>) {
    let mut shared = Arc::new(Event::AsyncDelegation(AsyncDelegationEvent::default()));
    let kept = match Arc::get_mut(&mut shared) {
        Some(Event::AsyncDelegation(event)) => Some(fill(event)),
        _ => None,
    };
    (shared, kept)
}

fn call_hooks(hooks: Vec<InterruptHook>, reason: &str) -> usize {
    let mut signalled = 0;
    for hook in hooks {
        match fence::call(|| hook(reason)) {
            Ok(()) => signalled += 1,
            Err(message) => {
                tracing::warn!(panic = %message, "async delegation interrupt hook panicked");
            }
        }
        // This copy may be the last one (the delegation finished meanwhile): dropping it
        // runs the captured state's `Drop`, user code that must not unwind into the caller.
        drop_fenced(hook);
    }
    signalled
}

/// Drops a value that owns user code (a runner, a hook) so that a panicking `Drop` is
/// logged instead of unwinding into the caller.
fn drop_fenced<T>(value: T) {
    fence::drop_logged(value, "an async delegation's runner or interrupt hook");
}

fn unix_now() -> f64 {
    SystemClock.now()
}

/// Seconds rounded to 2 decimals, as the Python harness's `round(seconds, 2)` does:
/// halves go to the even neighbour (`0.125` → `0.12`).
///
/// ```
/// assert_eq!(async_delegation::round_seconds(0.125), 0.12);
/// assert_eq!(async_delegation::round_seconds(1.005), 1.0);
/// assert_eq!(async_delegation::round_seconds(2.5), 2.5);
/// ```
pub fn round_seconds(seconds: f64) -> f64 {
    (seconds * 100.0).round_ties_even() / 100.0
}

/// How a [`DelegationEngine`] is built: [`DelegationEngine::builder`], then the settings
/// to change, then [`build`](Self::build).
#[must_use]
pub struct EngineBuilder {
    queue: CompletionQueue,
    keep_alive: Duration,
    stall: StallPolicy,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("keep_alive", &self.keep_alive)
            .field("stall", &self.stall)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// How long an idle worker thread waits for work before it exits (all but the spare;
    /// default 10 s, see [`DelegationEngine::with_worker_keep_alive`]).
    pub fn worker_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// When a watched delegation counts as stalled ([`StallPolicy`]).
    pub fn stall_policy(mut self, policy: StallPolicy) -> Self {
        self.stall = policy;
        self
    }

    /// The clock stalls and deadlines are measured on (default the system's; tests move
    /// a [`ManualClock`](process_registry::ManualClock) by hand and call
    /// [`DelegationEngine::sweep_stalls`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The engine.
    pub fn build(self) -> DelegationEngine {
        DelegationEngine {
            inner: Arc::new(Inner {
                queue: self.queue,
                state: Mutex::new(State::default()),
                pool: WorkerPool::new(self.keep_alive),
                drained: event_listener::Event::new(),
                clock: self.clock,
                clock_failed: std::sync::atomic::AtomicBool::new(false),
                stall: self.stall,
                monitor: Monitor::new(),
                metrics: crate::metrics::EngineMetrics::register(),
            }),
        }
    }
}
