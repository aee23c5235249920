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
//! The store is called on the thread that polls: the memory ledger never blocks it; a
//! SQLite ledger's read or commit takes tens of microseconds (and, while another process
//! holds the file's write lock, waits up to its busy timeout).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use futures_timer::Delay;

use super::{Core, QueueWait};
use crate::{Claim, ClaimFilter, CompletionQueue, Event, LedgerError};

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
    /// # Errors
    /// When the store cannot be read or written (never for the memory ledger).
    pub async fn next_event(&self) -> Result<Event, LedgerError> {
        let filter = ClaimFilter::any();
        let query = filter.query(0);
        let taken = self
            .core
            .wait_async(&filter, || self.core.backend.take_next(&query))
            .await?;
        Ok(self.core.taken(taken))
    }

    /// The next completion `filter` matches, claimed, waiting for one when there is none:
    /// the `.await` form of [`claim_timeout`](Self::claim_timeout). Settle the claim as
    /// with [`claim`](Self::claim). Cancel-safe.
    ///
    /// # Errors
    /// When the store cannot be read or written (never for the memory ledger).
    pub async fn next_claim(&self, filter: &ClaimFilter) -> Result<Claim, LedgerError> {
        self.core
            .wait_async(filter, || self.core.try_claim(filter))
            .await
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
    /// [`wait_for`](Core::wait_for) as a future without a deadline: runs `attempt` until
    /// it finds something, sleeping (as a future) until a write wakes the queue or a row
    /// `filter` matches comes due.
    async fn wait_async<T>(
        self: &Arc<Self>,
        filter: &ClaimFilter,
        mut attempt: impl FnMut() -> Result<Option<T>, LedgerError>,
    ) -> Result<T, LedgerError> {
        loop {
            if let Some(found) = attempt()? {
                return Ok(found);
            }
            // Armed before the second look, as in the blocking wait.
            let listener = self.listen();
            if let Some(found) = attempt()? {
                return Ok(found);
            }
            let due = self.next_due(filter)?;
            // A backoff that ran out between the look and `next_due` is in neither answer.
            if let Some(found) = attempt()? {
                return Ok(found);
            }
            match due {
                None => listener.await,
                Some(due) => {
                    WakeOrDue {
                        listener,
                        due: Delay::new(due.saturating_duration_since(Instant::now())),
                    }
                    .await;
                }
            }
        }
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
