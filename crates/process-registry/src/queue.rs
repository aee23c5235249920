//! The completion queue: one FIFO shared by every producer and consumer.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::Event;

/// A multi-producer, multi-consumer FIFO of [`Event`]s.
///
/// `CompletionQueue` is a cheap, cloneable handle: every clone refers to the same queue,
/// so one clone can go to each producer thread and another to the consumer. It is
/// unbounded: [`put`](CompletionQueue::put) never blocks and never drops an event.
///
/// Consumers take with [`try_take`](CompletionQueue::try_take) (never blocks),
/// [`take_timeout`](CompletionQueue::take_timeout) or [`drain`](CompletionQueue::drain),
/// and may hand an event back with [`put`](CompletionQueue::put): it goes to the tail.
///
/// ```
/// use process_registry::{CompletionQueue, Event, WatchOverflow};
///
/// let queue = CompletionQueue::new();
/// let producer = queue.clone();
/// std::thread::spawn(move || producer.put(Event::WatchOverflowTripped(WatchOverflow::default())))
///     .join()
///     .unwrap();
/// assert_eq!(queue.len(), 1);
/// assert!(queue.try_take().is_some());
/// assert!(queue.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct CompletionQueue {
    sender: Sender<Event>,
    receiver: Receiver<Event>,
}

impl Default for CompletionQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl CompletionQueue {
    /// Creates a new, empty queue.
    pub fn new() -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        CompletionQueue { sender, receiver }
    }

    /// Appends `event` at the tail. Never blocks, never drops.
    pub fn put(&self, event: impl Into<Event>) {
        // The handle owns a receiver, so the channel can never be disconnected while
        // `self` exists: the send cannot fail.
        let _ = self.sender.send(event.into());
    }

    /// Takes the event at the head, or `None` at once when the queue is empty.
    pub fn try_take(&self) -> Option<Event> {
        // `Disconnected` cannot happen while `self` holds a sender.
        self.receiver.try_recv().ok()
    }

    /// Takes the event at the head, waiting up to `timeout` for one to arrive.
    pub fn take_timeout(&self, timeout: Duration) -> Option<Event> {
        self.receiver.recv_timeout(timeout).ok()
    }

    /// Number of events waiting.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    /// `true` when no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    /// Takes every event that was waiting when the call began, in FIFO order.
    ///
    /// Events put while the drain runs stay for the next take, so a drain always ends
    /// even when producers keep putting (or when the caller puts events back).
    pub fn drain(&self) -> Vec<Event> {
        let waiting = self.receiver.len();
        let mut events = Vec::with_capacity(waiting);
        for _ in 0..waiting {
            match self.receiver.try_recv() {
                Ok(event) => events.push(event),
                // Another consumer took the rest.
                Err(_) => break,
            }
        }
        events
    }

    /// Takes every waiting event for which `wanted` is true, in FIFO order, and puts the
    /// others back at the tail, in their order.
    ///
    /// Like [`drain`](CompletionQueue::drain) it looks only at what was waiting when the
    /// call began, so it never blocks and always ends. This is how a consumer that owns
    /// only some events shares the queue with others, e.g. a CLI loop taking its
    /// completions while the parent is idle:
    ///
    /// ```
    /// use process_registry::{AsyncDelegationEvent, CompletionQueue, Event, WatchOverflow};
    ///
    /// let queue = CompletionQueue::new();
    /// queue.put(Event::WatchOverflowTripped(WatchOverflow::default()));
    /// queue.put(AsyncDelegationEvent { delegation_id: Some("deleg_0000000a".into()), ..Default::default() });
    ///
    /// let mine = queue.take_where(Event::is_cli_completion);
    /// assert_eq!(mine.len(), 1);
    /// assert_eq!(queue.len(), 1); // the watch event stays for its owner
    /// ```
    ///
    /// `wanted` is the caller's code: should it panic, every event the call took off the
    /// queue is put back at the tail, in order, before the panic goes on to the caller —
    /// no event is ever lost to it.
    pub fn take_where(&self, mut wanted: impl FnMut(&Event) -> bool) -> Vec<Event> {
        // Every decision is made while the events are still owned by the guard, whose
        // drop (also while unwinding) puts them all back.
        let guard = PutBackOnDrop {
            queue: self,
            events: self.drain(),
        };
        let decisions: Vec<bool> = guard.events.iter().map(&mut wanted).collect();
        let events = guard.disarm();
        let mut taken = Vec::with_capacity(decisions.iter().filter(|&&d| d).count());
        for (event, mine) in events.into_iter().zip(decisions) {
            if mine {
                taken.push(event);
            } else {
                self.put(event);
            }
        }
        taken
    }

    /// `true` when both handles refer to the same queue.
    pub fn same_queue(&self, other: &CompletionQueue) -> bool {
        self.sender.same_channel(&other.sender)
    }
}

/// Events taken off a queue that go back on it, in order, unless the holder keeps them.
struct PutBackOnDrop<'a> {
    queue: &'a CompletionQueue,
    events: Vec<Event>,
}

impl PutBackOnDrop<'_> {
    /// The events, no longer put back.
    fn disarm(mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

impl Drop for PutBackOnDrop<'_> {
    fn drop(&mut self) {
        for event in self.events.drain(..) {
            self.queue.put(event);
        }
    }
}
