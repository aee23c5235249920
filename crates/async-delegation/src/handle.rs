//! A dispatch's handle: its id, its status, its outcome (blocking, with a timeout, or
//! awaited), and cancel.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use event_listener::{listener, Event as Signal, EventListener, Listener};
use process_registry::{AsyncDelegationEvent, Event, Text};

use crate::{DelegationEngine, DelegationRecord};

/// Where a handle waits for its delegation's completion: set once, by the engine, after
/// the completion is recorded and the slot freed.
#[derive(Default)]
pub(crate) struct Watch {
    outcome: OnceLock<Arc<Event>>,
    done: Signal,
    /// The engine is writing a completion (under its lock): until the outcome is set, a
    /// handle that finds none waits for that lock.
    completing: AtomicBool,
}

impl Watch {
    /// The engine is about to write a completion, under its lock.
    pub(crate) fn completing(&self) {
        self.completing.store(true, Ordering::Release);
    }

    /// Records the outcome (under the engine's lock, with the slot's release).
    pub(crate) fn store(&self, event: Arc<Event>) {
        let _ = self.outcome.set(event);
    }

    /// Wakes every waiter (outside the lock).
    pub(crate) fn notify(&self) {
        self.done.notify(usize::MAX);
    }

    fn get(&self) -> Option<&AsyncDelegationEvent> {
        match &**self.outcome.get()? {
            Event::AsyncDelegation(event) => Some(event),
            // The engine only completes with its own events.
            _ => None,
        }
    }
}

/// A dispatched delegation, from [`DelegationEngine::dispatch_handle`] (or, with the
/// `tokio` feature, `DelegationEngine::dispatch_async`).
///
/// The completion still goes to the queue, and from there re-enters the conversation as a
/// new turn: the handle is for the code that dispatched — to show a status, to wait for a
/// result when it chooses to (as a model's "wait for agent" tool would), or to cancel.
/// Dropping it changes nothing about the delegation. Cheap to clone.
///
/// ```
/// use std::time::Duration;
///
/// use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
/// use process_registry::CompletionQueue;
///
/// let engine = DelegationEngine::new(CompletionQueue::new());
/// let handle = engine.dispatch_handle(
///     DelegationSpec::new("Count the lines"),
///     || Ok(DelegationResult::completed("1 234 lines.")),
///     None,
///     3,
/// )?;
/// let outcome = handle.wait_timeout(Duration::from_secs(10)).ok_or("still running")?;
/// assert_eq!(outcome.summary.as_deref(), Some("1 234 lines."));
/// assert_eq!(handle.status(), "completed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DelegationHandle {
    id: Text,
    engine: DelegationEngine,
    watch: Arc<Watch>,
}

impl std::fmt::Debug for DelegationHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationHandle")
            .field("id", &self.id)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl DelegationHandle {
    pub(crate) fn new(id: Text, engine: DelegationEngine, watch: Arc<Watch>) -> Self {
        DelegationHandle { id, engine, watch }
    }

    /// The delegation id (`deleg_` + 8 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// [`DelegationRecord::RUNNING`] until the completion is recorded, then its status
    /// (`completed`, `error`, `interrupted`, …).
    pub fn status(&self) -> &str {
        match self.settled() {
            Some(outcome) => outcome.status.as_deref().unwrap_or("completed"),
            None => DelegationRecord::RUNNING.as_str(),
        }
    }

    /// The completion, once recorded (`None` while running): the same event the queue
    /// got.
    pub fn outcome(&self) -> Option<&AsyncDelegationEvent> {
        self.settled()
    }

    /// The outcome, as anything else can tell it: a consumer may take the completion
    /// from the ledger the moment it is written, before the engine has set the outcome
    /// (both happen under the engine's lock); when none is set yet but a write has
    /// begun, the lock is waited for once, and looked at again. (A delegation still
    /// running costs no lock.)
    fn settled(&self) -> Option<&AsyncDelegationEvent> {
        if let Some(outcome) = self.watch.get() {
            return Some(outcome);
        }
        if !self.watch.completing.load(Ordering::Acquire) {
            return None;
        }
        self.engine.completions_settled();
        self.watch.get()
    }

    /// Blocks until the completion is recorded. Not for async code: await
    /// [`finished`](Self::finished) there.
    pub fn wait(&self) -> &AsyncDelegationEvent {
        loop {
            // Without a deadline the wait ends only with the outcome.
            if let Some(outcome) = self.wait_until(None) {
                return outcome;
            }
        }
    }

    /// [`wait`](Self::wait) for at most `timeout`; `None` when it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<&AsyncDelegationEvent> {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Option<&AsyncDelegationEvent> {
        loop {
            if let Some(outcome) = self.watch.get() {
                return Some(outcome);
            }
            listener!(self.watch.done => done);
            if let Some(outcome) = self.watch.get() {
                return Some(outcome);
            }
            match deadline {
                Some(deadline) => {
                    if done.wait_deadline(deadline).is_none() {
                        return self.settled();
                    }
                }
                None => done.wait(),
            }
        }
    }

    /// The completion, awaited (on any executor; wrap it in your runtime's timeout for a
    /// bounded wait). Cancel-safe.
    pub fn finished(&self) -> Finished<'_> {
        Finished {
            handle: self,
            listener: None,
        }
    }

    /// [`finished`](Self::finished) for at most `timeout`, on any executor (its timer is
    /// `futures-timer`'s, so no runtime's timer is needed); `None` when it is still
    /// running. Cancel-safe.
    pub async fn finished_within(&self, timeout: Duration) -> Option<&AsyncDelegationEvent> {
        let mut finished = self.finished();
        let mut timer = futures_timer::Delay::new(timeout);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(outcome) = Pin::new(&mut finished).poll(cx) {
                return Poll::Ready(Some(outcome));
            }
            Pin::new(&mut timer).poll(cx).map(|()| None)
        })
        .await
    }

    /// Interrupts the delegation with `reason` (through its interrupt hook, or its
    /// cancellation token for an async runner). `true` when it was running and was
    /// signalled; its completion still comes, usually `interrupted`.
    pub fn cancel(&self, reason: &str) -> bool {
        self.engine.interrupt(&self.id, reason)
    }
}

/// The future of [`DelegationHandle::finished`].
#[must_use = "a future does nothing unless awaited"]
pub struct Finished<'a> {
    handle: &'a DelegationHandle,
    listener: Option<EventListener>,
}

impl std::fmt::Debug for Finished<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finished")
            .field("id", &self.handle.id)
            .finish_non_exhaustive()
    }
}

impl<'a> Future for Finished<'a> {
    type Output = &'a AsyncDelegationEvent;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let handle: &'a DelegationHandle = self.handle;
        let watch: &'a Watch = &handle.watch;
        loop {
            if let Some(outcome) = watch.get() {
                return Poll::Ready(outcome);
            }
            match &mut self.listener {
                None => self.listener = Some(watch.done.listen()),
                Some(listener) => {
                    if Pin::new(listener).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.listener = None;
                }
            }
        }
    }
}
