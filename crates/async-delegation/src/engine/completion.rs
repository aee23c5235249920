//! Completion: a runner's result made the delegation's one completion event, recorded
//! with its slot freed, then published.

use std::sync::Arc;
use std::time::Duration;

use process_registry::{AsyncDelegationEvent, DispatchRecord, Event, Status, Text, WireNumber};

use super::{
    drop_fenced, round_seconds, shared_delegation_event, unix_now, Dispatched, Finished, Inner,
    Running, State,
};
use crate::handle::Watch;
use crate::pool::IdleSignal;
use crate::{fence, DelegationResult, InterruptHook, RunnerError, Steering};

impl Inner {
    /// The worker side of one delegation: run, build the event, record it, free the
    /// slot, offer it.
    pub(super) fn run<R>(
        self: &Arc<Self>,
        ledger_record: DispatchRecord,
        dispatched: &Dispatched,
        dispatched_at: f64,
        runner: R,
        span: &tracing::Span,
        mut idle: IdleSignal,
    ) where
        R: FnOnce() -> Result<DelegationResult, RunnerError>,
    {
        let _running = span.enter();
        // The error's `Display` and drop are user code too: formatted by reference and
        // dropped separately, each in its own fence, so the two can never panic at once.
        let outcome = fence::call(|| match runner() {
            Ok(result) => result,
            Err(error) => failure(fence::error_text(error)),
        });
        let result = outcome.unwrap_or_else(|message| failure(format!("panic: {message}")));
        let delegation_id = dispatched.id();
        let finished = self.finished(dispatched, dispatched_at, result);
        let completion = crate::trace::completion(delegation_id, finished.status.as_str(), false);
        let _completing = completion.enter();
        // Whoever reacts to this event may dispatch again at once: let it find this
        // worker idle rather than start a thread.
        idle.fire();
        let ended = self.complete(ledger_record, delegation_id, finished);
        if ended.is_discarded() {
            tracing::warn!(
                delegation_id,
                "a runner returned after the engine finalized its delegation (stalled or past its deadline); its result is discarded"
            );
        }
        ended.publish();
    }

    /// The completion event of a runner's result, with what the engine keeps of it.
    pub(crate) fn finished(
        &self,
        dispatched: &Dispatched,
        dispatched_at: f64,
        result: DelegationResult,
    ) -> FinishedRun {
        let completed_at = unix_now();
        let (shared, kept) = shared_delegation_event(|event| {
            fill_completion_event(
                event,
                dispatched.spec(),
                result,
                dispatched_at,
                completed_at,
            );
            (
                event.status.clone().unwrap_or(Status::Completed),
                event.model.clone(),
            )
        });
        let (status, model) = kept.unwrap_or((Status::Completed, None));
        FinishedRun {
            number: dispatched.number,
            status,
            model,
            completed_at,
            event: shared,
        }
    }

    /// Records the completion in the ledger and frees the slot, in one critical section:
    /// once the completion is visible to any consumer its slot is free (a consumer that
    /// takes it and dispatches again waits for this lock, then finds the slot free), and
    /// the slot is freed only once the completion is recorded. A store that refuses the
    /// write is retried with backoff (logged), outside the lock, with the slot held: a
    /// failing disk slows dispatch down instead of losing completions. Returns the hook,
    /// to be dropped outside the lock.
    pub(crate) fn complete(
        self: &Arc<Self>,
        record: DispatchRecord,
        delegation_id: &str,
        mut finished: FinishedRun,
    ) -> Ended {
        let mut backoff = Duration::from_millis(10);
        let mut failures = 0_u32;
        loop {
            match self.try_complete(record, delegation_id, &mut finished) {
                Ok(ended) => {
                    if failures > 0 {
                        tracing::info!(
                            delegation_id,
                            failures,
                            "the completion was recorded after the ledger recovered"
                        );
                    }
                    return ended;
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::error!(%error, delegation_id, failures, "a completion could not be recorded; keeping it and retrying");
                    }
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One attempt of [`complete`](Self::complete): never sleeps. On success the status and
    /// model have moved into the retained record; drop `finished` before publishing, so
    /// the consumer that takes the event finds it unshared (no copy).
    pub(crate) fn try_complete(
        self: &Arc<Self>,
        record: DispatchRecord,
        delegation_id: &str,
        finished: &mut FinishedRun,
    ) -> Result<Ended, process_registry::LedgerError> {
        #[cfg(feature = "tokio")]
        let abort;
        let (committed, hook, watch, evicted, drained) = {
            let mut state = self.lock_state();
            let Some(running) = state.running.get_mut(&finished.number) else {
                // Finalized already (by the stall monitor, or by the runner that beat
                // it): one completion per delegation.
                return Ok(Ended::discarded());
            };
            let steering = running.steering.clone();
            if let Some(steering) = &steering {
                note_missed_steer(&mut finished.event, steering);
            }
            if let Some(watch) = &running.watch {
                // From here a consumer may take the completion before the outcome below
                // is set: the handle waits for this lock then.
                watch.completing();
            }
            let committed = self.queue.record_completion(
                record,
                delegation_id,
                finished.status.clone(),
                Arc::clone(&finished.event),
            )?;
            if let Some(steering) = &steering {
                // Reported by this completion, now recorded.
                steering.forget_pending();
            }
            #[cfg(feature = "tokio")]
            {
                abort = state
                    .running
                    .get_mut(&finished.number)
                    .and_then(|running| running.abort.take());
            }
            let (hook, watch, evicted) = release_slot(
                &mut state,
                finished.number,
                committed.seq(),
                std::mem::replace(&mut finished.status, Status::Completed),
                finished.model.take(),
                finished.completed_at,
            );
            // A handle's outcome is set with the slot: whoever sees the slot free (a
            // consumer of the completion, a shutdown) sees the handle's outcome too.
            if let Some(watch) = &watch {
                watch.store(Arc::clone(&finished.event));
            }
            (committed, hook, watch, evicted, state.running.is_empty())
        };
        // The lock is released: consumers woken now find the slot free.
        self.metrics.completed(&finished.event);
        Ok(Ended {
            committed: Some(committed),
            hook,
            watch,
            drained: drained.then(|| Arc::clone(self)),
            evicted,
            #[cfg(feature = "tokio")]
            abort,
        })
    }
}

/// Frees the slot and keeps the completed record (at most
/// [`MAX_RETAINED_COMPLETED`](crate::MAX_RETAINED_COMPLETED)),
/// in the ledger's commit order; returns the hook and the record it evicted, to drop
/// outside the lock.
fn release_slot(
    state: &mut State,
    number: u32,
    order: u64,
    status: Status,
    model: Option<Text>,
    completed_at: f64,
) -> (Option<InterruptHook>, Option<Arc<Watch>>, Option<Finished>) {
    let Some(Running {
        dispatched,
        interrupt,
        watch,
        ..
    }) = state.running.remove(&number)
    else {
        return (None, None, None);
    };
    let record = Finished {
        dispatched,
        status,
        model,
        completed_at,
    };
    let evicted = state.retained.keep(order, number, record);
    (interrupt, watch, evicted)
}

/// A runner's outcome as the engine records it.
pub(crate) struct FinishedRun {
    /// The id's number, carried from the dispatch: the slot is found without parsing.
    pub(super) number: u32,
    pub(super) status: Status,
    pub(super) model: Option<Text>,
    pub(super) completed_at: f64,
    pub(super) event: Arc<Event>,
}

impl FinishedRun {
    /// The status it completes with.
    #[cfg(feature = "tokio")]
    pub(crate) fn status_str(&self) -> &str {
        self.status.as_str()
    }
}

/// A recorded completion, with what is left to do outside every lock.
pub(crate) struct Ended {
    /// `None`: the delegation was finalized before, this completion is discarded.
    committed: Option<process_registry::Committed>,
    hook: Option<InterruptHook>,
    watch: Option<Arc<Watch>>,
    /// The engine, when this completion left nothing running (a shutdown may wait).
    drained: Option<Arc<Inner>>,
    /// The retained record this one pushed out, freed after the wake-ups.
    evicted: Option<Finished>,
    /// The async runner's task (dropping this does not abort it).
    #[cfg(feature = "tokio")]
    abort: Option<tokio::task::AbortHandle>,
}

impl Ended {
    fn discarded() -> Self {
        Ended {
            committed: None,
            hook: None,
            watch: None,
            drained: None,
            evicted: None,
            #[cfg(feature = "tokio")]
            abort: None,
        }
    }

    /// Aborts the async runner's task, if there is one: the engine recorded the
    /// delegation's completion itself, so its future is dropped (closing what it holds)
    /// rather than left pending on the runtime.
    #[cfg(feature = "tokio")]
    pub(crate) fn abort_runner(&mut self) {
        if let Some(abort) = self.abort.take() {
            abort.abort();
        }
    }

    /// `true` when the delegation had been finalized before: nothing was recorded.
    pub(crate) fn is_discarded(&self) -> bool {
        self.committed.is_none()
    }

    /// Wakes the queue's consumers, a waiting handle and a waiting shutdown, and drops
    /// the interrupt hook (user code: its captures' drop is fenced).
    pub(crate) fn publish(self) {
        let Ended {
            committed,
            hook,
            watch,
            drained,
            evicted,
            ..
        } = self;
        drop(committed);
        if let Some(watch) = watch {
            watch.notify();
        }
        drop_fenced(hook);
        if let Some(inner) = drained {
            inner.drained.notify(usize::MAX);
        }
        drop(evicted);
    }
}

/// The completion with the steering its child never took (the inbox closed, under the
/// state lock): the text as `missed_steer` and named in the summary's note. The text stays
/// in the inbox until this completion is recorded (then forgotten), so a completion whose
/// write fails cannot take it along: it is reported by exactly the completion that is
/// recorded. A completion noted before (its write failed, it is retried) is left as it
/// is.
fn note_missed_steer(event: &mut Arc<Event>, steering: &Steering) {
    let missed = steering.close_keeping();
    if missed.is_empty() {
        return;
    }
    if let Event::AsyncDelegation(noted) = &**event {
        if noted.missed_steer.is_some() {
            return;
        }
    }
    let missed = missed
        .iter()
        .map(Text::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    if let Event::AsyncDelegation(event) = Arc::make_mut(event) {
        event.summary = Some(steering.note_missed(event.summary.as_deref(), &missed));
        event.missed_steer = Some(Text::from(missed));
    }
}

/// The result recorded for a runner that failed or panicked.
pub(crate) fn failure(error: String) -> DelegationResult {
    DelegationResult {
        status: Some("error".into()),
        error: Some(error.into()),
        ..DelegationResult::default()
    }
}

/// Writes the wire event into `event` (a default one): the dispatch-time spec verbatim
/// plus the outcome.
fn fill_completion_event(
    event: &mut AsyncDelegationEvent,
    spec: &AsyncDelegationEvent,
    result: DelegationResult,
    dispatched_at: f64,
    completed_at: f64,
) {
    // A duration with no JSON form (NaN, infinite) is replaced by the measured one.
    let duration = match result
        .duration_seconds
        .filter(|seconds| seconds.is_finite())
    {
        Some(seconds) => seconds,
        None => round_seconds((completed_at - dispatched_at).max(0.0)),
    };
    // The result's own text when it has one (moved, not copied).
    let status = match result.status {
        Some(status) if !status.is_empty() => status,
        _ => Status::Completed,
    };
    // The id the dispatch drew (admission always sets it), shared.
    event.delegation_id = spec.delegation_id.clone();
    event.session_key = spec.session_key.clone();
    event.goal = spec.goal.clone();
    event.context = spec.context.clone();
    event.toolsets = spec.toolsets.clone();
    event.role = spec.role.clone();
    // Unset or empty means the spec's model, as the Python harness's `or` reads it.
    event.model = result
        .model
        .filter(|model| !model.is_empty())
        .or_else(|| spec.model.clone());
    // Unset or empty means completed; consumers of the Python harness never see an
    // empty status.
    event.status = Some(status);
    event.summary = result.summary;
    event.error = result.error;
    // Always a number: a Python consumer's formatter prints `None` for a null.
    event.api_calls = Some(WireNumber::from(result.api_calls.unwrap_or(0)));
    event.duration_seconds = WireNumber::from_f64(duration);
    event.dispatched_at = WireNumber::from_f64(dispatched_at);
    event.completed_at = WireNumber::from_f64(completed_at);
    event.exit_reason = result.exit_reason;
    event.truncated = result.truncated;
    event.missed_steer = result.missed_steer;
    event.traceparent = spec.traceparent.clone();
}
