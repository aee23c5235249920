//! Awaiting the queue: the next event or claim as a future, and streams of both.
//!
//! Runtime-agnostic: nothing here needs tokio or any executor. A waiting future is woken by
//! the write it waits for (the same signal the blocking waits use), and a row that comes
//! due later (a released completion's backoff, an expiring lease) by a timer of
//! `futures-timer`, whose one global thread starts on first use. Nothing polls.
//!
//! Every future here is cancel-safe: a completion is taken (or claimed) only in the poll
//! that returns it, so dropping a future that has not returned leaves the queue as it was.
//!
//! Nothing here waits on the store either. The memory ledger is called on the thread that
//! polls (a few in-memory steps); a store whose calls may block ([`Capabilities::may_block`]:
//! SQLite waits on its file's lock, PostgreSQL on the server) is called on the queue's
//! offload threads (`offload.rs`), one look (take or claim, arm, look again) per call, and
//! the future awaits the answer. There `next_event` claims rather than takes, and the
//! claim is acknowledged on the offload thread once the future has the event. Cancel-safety
//! holds there too: a claim made for a future dropped meanwhile is deferred on the offload
//! thread (pending again at once, in its place, its attempt given back), and a store that
//! refuses that still has the row, which its lease brings back.
//!
//! [`Capabilities::may_block`]: crate::Capabilities::may_block

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use futures_timer::Delay;

use super::{Core, QueueWait};
use crate::{Claim, ClaimFilter, CompletionQueue, Event, LedgerError, TakenRow};

impl CompletionQueue {
    /// The event at the head, waiting for one when the queue is empty: the `.await` form
    /// of [`take_timeout`](Self::take_timeout) (wrap it in your runtime's timeout for a
    /// bounded wait). Cancel-safe.
    ///
    /// ```
    /// use process_registry::{CompletionQueue, Event, WatchOverflow};
    ///
    /// let queue = CompletionQueue::new();
    /// let producer = queue.clone();
    /// std::thread::spawn(move || producer.put(Event::WatchOverflowTripped(WatchOverflow::default())));
    /// // Any executor: here the `futures` one; a tokio task awaits it the same way.
    /// let event = futures_executor::block_on(queue.next_event())?;
    /// assert_eq!(event.type_name(), "watch_overflow_tripped");
    /// # Ok::<(), process_registry::LedgerError>(())
    /// ```
    ///
    /// On a store whose calls may block (SQLite, PostgreSQL) the event is claimed off the
    /// polling thread and acknowledged there just after this returns it: a process that
    /// dies in between, or an acknowledgement the store refuses, gets the completion again
    /// once its lease runs out (flagged as a possible redelivery for a claimer) — at least
    /// once, where a sync [`take`](Self::try_take) is one step.
    ///
    /// # Errors
    /// When the store cannot be read or written (never for the memory ledger).
    pub async fn next_event(&self) -> Result<Event, LedgerError> {
        let Some(offload) = &self.core.offload else {
            // A store that never blocks: taken in one step, on this thread.
            let taken = self.core.wait_async(&ClaimFilter::any(), take_next).await?;
            return Ok(self.core.taken(taken));
        };
        // A store that may block: claimed on the offload thread (a claim for a future
        // dropped meanwhile is deferred there), acknowledged there once this has it.
        let found = self
            .core
            .wait_async(&ClaimFilter::any(), claim_next)
            .await?;
        let claim = found.received().ok_or_else(missing)?;
        let event = claim.shared_event();
        offload.detach(move || {
            let key = claim.key().into_owned();
            if let Err(error) = claim.ack() {
                tracing::warn!(%error, %key, "an awaited completion could not be acknowledged; its lease brings it back, flagged as a possible redelivery");
            }
        });
        Ok(Arc::unwrap_or_clone(event))
    }

    /// The next completion `filter` matches, claimed, waiting for one when there is none:
    /// the `.await` form of [`claim_timeout`](Self::claim_timeout). Settle the claim as
    /// with [`claim`](Self::claim). Cancel-safe.
    ///
    /// # Errors
    /// When the store cannot be read or written (never for the memory ledger).
    pub async fn next_claim(&self, filter: &ClaimFilter) -> Result<Claim, LedgerError> {
        let found = self.core.wait_async(filter, claim_next).await?;
        found.received().ok_or_else(missing)
    }

    /// Every event taken from the head as it arrives: a [`Stream`] of
    /// [`next_event`](Self::next_event). It never ends by itself; drop it to stop (an
    /// event is taken only when the stream yields it).
    pub fn events(&self) -> Events {
        Events {
            queue: self.clone(),
            next: None,
        }
    }

    /// Every completion `filter` matches, claimed as it arrives: a [`Stream`] of
    /// [`next_claim`](Self::next_claim). It never ends by itself; drop it to stop.
    pub fn claims(&self, filter: ClaimFilter) -> Claims {
        Claims {
            queue: self.clone(),
            filter: Arc::new(filter),
            next: None,
        }
    }
}

impl Core {
    /// [`wait_for`](Core::wait_for) as a future without a deadline: looks with `attempt`
    /// until it finds something, sleeping (as a future) until a write wakes the queue or a
    /// row `filter` matches comes due. On a store whose calls may block, each look runs on
    /// the queue's offload threads and is awaited.
    async fn wait_async<T: Send + 'static>(
        self: &Arc<Self>,
        filter: &ClaimFilter,
        attempt: Attempt<T>,
    ) -> Result<T, LedgerError> {
        loop {
            let step = match &self.offload {
                None => self.look(filter, attempt)?,
                Some(offload) => {
                    let (core, filter) = (Arc::clone(self), filter.clone());
                    offload
                        .run(move || core.look(&filter, attempt))
                        .await
                        .ok_or_else(|| LedgerError::Unreadable {
                            reason: "the store's call panicked".to_owned(),
                        })??
                }
            };
            match step {
                Step::Found(found) => return Ok(found),
                Step::Wait(listener, None) => listener.await,
                Step::Wait(listener, Some(due)) => {
                    WakeOrDue {
                        listener,
                        due: Delay::new(due.saturating_duration_since(Instant::now())),
                    }
                    .await;
                }
            }
        }
    }

    /// One look, as the blocking wait makes it: `attempt`; then the wait armed and
    /// `attempt` again (a write between the two is in one of them); then when the next row
    /// `filter` matches comes due, and `attempt` once more (a backoff that ran out between
    /// the look and `next_due` is in neither answer).
    fn look<T>(
        self: &Arc<Self>,
        filter: &ClaimFilter,
        attempt: Attempt<T>,
    ) -> Result<Step<T>, LedgerError> {
        if let Some(found) = attempt(self, filter)? {
            return Ok(Step::Found(found));
        }
        let listener = self.listen();
        if let Some(found) = attempt(self, filter)? {
            return Ok(Step::Found(found));
        }
        let due = self.next_due(filter)?;
        if let Some(found) = attempt(self, filter)? {
            return Ok(Step::Found(found));
        }
        Ok(Step::Wait(listener, due))
    }
}

/// A look of the store for what a wait wants.
type Attempt<T> = fn(&Arc<Core>, &ClaimFilter) -> Result<Option<T>, LedgerError>;

/// What one look found: the thing, or the wait to sleep on before the next look (with
/// when a row comes due, if one does).
enum Step<T> {
    Found(T),
    Wait(QueueWait, Option<Instant>),
}

/// A claim a look made for an async consumer, given back if it never reaches one (the
/// future that looked on an offload thread was dropped before it returned it): deferred,
/// pending again at once in its place, its attempt given back (nobody attempted it).
struct Found(Option<Claim>);

impl Found {
    /// The claim, received.
    fn received(mut self) -> Option<Claim> {
        self.0.take()
    }
}

impl Drop for Found {
    fn drop(&mut self) {
        let Some(claim) = self.0.take() else {
            return;
        };
        let key = claim.key().into_owned();
        if let Err(error) = claim.defer() {
            // The lease brings it back anyway.
            tracing::warn!(%error, %key, "a claim made for a dropped future could not be given back");
        }
    }
}

/// The memory ledger's take: one step on the polling thread, never given back.
fn take_next(core: &Arc<Core>, filter: &ClaimFilter) -> Result<Option<TakenRow>, LedgerError> {
    core.backend.take_next(&filter.query(0))
}

fn claim_next(core: &Arc<Core>, filter: &ClaimFilter) -> Result<Option<Found>, LedgerError> {
    Ok(core.try_claim(filter)?.map(|claim| Found(Some(claim))))
}

/// A found value that went missing: cannot happen (a `Found` is built holding it).
fn missing() -> LedgerError {
    LedgerError::Unreadable {
        reason: "a completion found for this consumer went missing".to_owned(),
    }
}

/// Ready when the queue is woken or the timer runs out, whichever is first.
struct WakeOrDue {
    listener: QueueWait,
    due: Delay,
}

impl Future for WakeOrDue {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Pin::new(&mut self.listener).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        Pin::new(&mut self.due).poll(cx)
    }
}

type Next<T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send>>;

/// The [`Stream`] of [`CompletionQueue::events`].
#[must_use = "a stream does nothing unless polled"]
pub struct Events {
    queue: CompletionQueue,
    next: Option<Next<Event>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Stream for Events {
    type Item = Result<Event, LedgerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = this.next.get_or_insert_with(|| {
            let queue = this.queue.clone();
            Box::pin(async move { queue.next_event().await })
        });
        let polled = next.as_mut().poll(cx);
        poll_next_item(&mut this.next, polled)
    }
}

/// The [`Stream`] of [`CompletionQueue::claims`].
#[must_use = "a stream does nothing unless polled"]
pub struct Claims {
    queue: CompletionQueue,
    filter: Arc<ClaimFilter>,
    next: Option<Next<Claim>>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Stream for Claims {
    type Item = Result<Claim, LedgerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = this.next.get_or_insert_with(|| {
            let queue = this.queue.clone();
            let filter = Arc::clone(&this.filter);
            Box::pin(async move { queue.next_claim(&filter).await })
        });
        let polled = next.as_mut().poll(cx);
        poll_next_item(&mut this.next, polled)
    }
}

/// A stream's item once its future is ready (the next poll starts a new one).
fn poll_next_item<T>(
    next: &mut Option<Next<T>>,
    polled: Poll<Result<T, LedgerError>>,
) -> Poll<Option<Result<T, LedgerError>>> {
    match polled {
        Poll::Ready(item) => {
            *next = None;
            Poll::Ready(Some(item))
        }
        Poll::Pending => Poll::Pending,
    }
}
