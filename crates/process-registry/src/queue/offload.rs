//! Store calls run off the thread that polls: on a store whose calls may block (a file's
//! lock, a server's round trip), the queue's async faces hand each look to a thread of
//! this pool and await its [`Answer`], so an executor's thread never waits on the store.
//!
//! The pool starts a thread when a call finds none idle, and an idle thread ends after
//! [`KEEP_ALIVE`] (at once when the queue is dropped): as many threads as calls are in
//! flight, none while nothing awaits the queue.
//!
//! An answer nobody receives is never lost: a future dropped before its call's answer came
//! lets the answer be dropped on the pool's thread (a claim's drop releases it there, a
//! taken event's guard puts it back), never on the thread that dropped the future.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The name of the pool's threads.
pub const OFFLOAD_THREAD_NAME: &str = "ledger-offload";

/// How long an idle thread waits for another call before it ends.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A call: its work, which returns what delivers its answer. The pool's thread counts
/// itself free between the two, so a consumer woken by the answer, who at once makes its
/// next call, finds that thread free instead of starting another.
type Job = Box<dyn FnOnce() -> Deliver + Send>;
type Deliver = Box<dyn FnOnce() + Send>;

/// The pool of one queue (started with its first call).
pub(crate) struct Offload {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads not running a call: waiting for one, or about to look for one.
    free: usize,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Held for a few queue operations, never around a job: cannot be poisoned by one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` for a free thread, or starts one for it.
    fn submit(self: &Arc<Self>, job: Job) {
        let mut state = self.lock();
        state.jobs.push_back(job);
        if state.free >= state.jobs.len() {
            drop(state);
            self.work.notify_one();
            return;
        }
        drop(state);
        let shared = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name(OFFLOAD_THREAD_NAME.to_owned())
            .spawn(move || shared.serve());
        if let Err(error) = started {
            // No thread: the call runs here rather than never (this thread waits on the
            // store this once).
            tracing::warn!(%error, "no thread for a ledger call; it runs on the thread that polls");
            let job = self.lock().jobs.pop_back();
            if let Some(job) = job {
                work(job)();
            }
        }
    }

    /// A thread of the pool: runs calls until it was free for the keep-alive, or the pool
    /// closed and no call is left.
    fn serve(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                let deliver = work(job);
                self.lock().free += 1;
                deliver();
                state = self.lock();
                state.free -= 1;
                continue;
            }
            if state.closed {
                return;
            }
            state.free += 1;
            let (next, waited) = self
                .work
                .wait_timeout(state, KEEP_ALIVE)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.free -= 1;
            if waited.timed_out() && state.jobs.is_empty() {
                return;
            }
        }
    }
}

/// Does a job's work; a panic there (a dropped answer's own drop) ends only the job.
fn work(job: Job) -> Deliver {
    std::panic::catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|panic| {
        tracing::error!(panic = %panic_text(&*panic), "a ledger call's clean-up panicked on its offload thread");
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| drop(panic)));
        Box::new(|| ())
    })
}

/// The text of a panic's payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

impl Offload {
    pub(crate) fn new() -> Self {
        Offload {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Runs `call` on a thread of the pool; the answer is awaited (`None`: the call
    /// panicked, which is logged and ends only the call).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Answer<T> {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting(None)),
        });
        let answer = Answer {
            slot: Arc::clone(&slot),
            pool: Arc::clone(&self.shared),
        };
        let pool = Arc::clone(&self.shared);
        self.shared.submit(Box::new(move || {
            let value = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
                Ok(value) => Some(value),
                Err(panic) => {
                    tracing::error!(panic = %panic_text(&*panic), "a ledger call panicked on its offload thread");
                    // A payload whose drop panics too is not let out of the pool's thread.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| drop(panic)));
                    None
                }
            };
            Box::new(move || set(&slot, value, &pool))
        }));
        answer
    }
}

impl Offload {
    /// Runs `call` on a thread of the pool; nobody waits for it.
    pub(crate) fn detach(&self, call: impl FnOnce() + Send + 'static) {
        self.shared.submit(Box::new(move || {
            call();
            Box::new(|| ())
        }));
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

/// Where a call's answer meets its future.
struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

enum SlotState<T> {
    /// No answer yet; the waker of the future's last poll.
    Waiting(Option<Waker>),
    /// Answered and not received (`None`: the call panicked).
    Ready(Option<T>),
    /// Received, or the future is gone.
    Done,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands `value` to the future, or — the future is gone — to the pool, to be dropped
/// there as a call of its own (its drop may call the store: a claim gives itself back).
fn set<T: Send + 'static>(slot: &Slot<T>, value: Option<T>, pool: &Arc<Shared>) {
    let mut state = slot.lock();
    match std::mem::replace(&mut *state, SlotState::Done) {
        SlotState::Waiting(waker) => {
            *state = SlotState::Ready(value);
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        SlotState::Ready(_) | SlotState::Done => {
            drop(state);
            if let Some(value) = value {
                drop_on(pool, value);
            }
        }
    }
}

/// Drops `value` on a thread of the pool.
fn drop_on<T: Send + 'static>(pool: &Arc<Shared>, value: T) {
    pool.submit(Box::new(move || {
        drop(value);
        Box::new(|| ())
    }));
}

/// The answer of a call run on the pool: `None` when the call panicked. Dropped before it
/// resolved, it lets the answer be dropped on the pool when it comes — or, when it came
/// already, hands it there to be dropped.
pub(crate) struct Answer<T: Send + 'static> {
    slot: Arc<Slot<T>>,
    pool: Arc<Shared>,
}

impl<T: Send + 'static> Future for Answer<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.slot.lock();
        match std::mem::replace(&mut *state, SlotState::Done) {
            SlotState::Waiting(_) => {
                *state = SlotState::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            SlotState::Ready(value) => Poll::Ready(value),
            // Polled after it resolved: nothing more comes.
            SlotState::Done => Poll::Ready(None),
        }
    }
}

impl<T: Send + 'static> Drop for Answer<T> {
    fn drop(&mut self) {
        let state = std::mem::replace(&mut *self.slot.lock(), SlotState::Done);
        if let SlotState::Ready(Some(value)) = state {
            // Answered, never received.
            drop_on(&self.pool, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops and the threads they ran on.
    struct Tracked(Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.1
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(name);
        }
    }

    #[test]
    fn an_answer_is_received_by_its_future() {
        let pool = Offload::new();
        let answer = futures_executor::block_on(pool.run(|| 41 + 1));
        assert_eq!(answer, Some(42));
    }

    #[test]
    fn a_call_that_panics_answers_none() {
        let pool = Offload::new();
        let answer: Option<u8> = futures_executor::block_on(pool.run(|| panic!("the store")));
        assert_eq!(answer, None);
        // The thread survived: the next call is answered.
        assert_eq!(futures_executor::block_on(pool.run(|| 7)), Some(7));
    }

    /// Dropped before the answer came, or after it came but before it was received: the
    /// answer is dropped exactly once, on a thread of the pool.
    #[test]
    fn an_answer_nobody_receives_is_dropped_on_the_pool() {
        let pool = Offload::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (gate, wait) = crossbeam_channel::bounded::<()>(0);
        // Before: the call is held until the future is gone.
        let tracked = Tracked(Arc::clone(&drops), Arc::clone(&threads));
        let answer = pool.run(move || {
            let _ = wait.recv();
            tracked
        });
        drop(answer);
        drop(gate);
        // After: the answer is in the slot when the future is dropped.
        let tracked = Tracked(Arc::clone(&drops), Arc::clone(&threads));
        let (done, answered) = crossbeam_channel::bounded::<()>(1);
        let answer = pool.run(move || {
            let _ = done.send(());
            tracked
        });
        answered.recv().unwrap();
        // `set` may still hold the slot's lock: wait until the answer is in it.
        while matches!(&*answer.slot.lock(), SlotState::Waiting(_)) {
            std::thread::yield_now();
        }
        drop(answer);
        while drops.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        let threads = threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(threads, [OFFLOAD_THREAD_NAME, OFFLOAD_THREAD_NAME]);
    }

    /// Calls made one after another, each as soon as the last was answered, run on one
    /// thread: the thread counts itself free before its answer wakes the caller.
    #[test]
    fn calls_one_after_another_reuse_one_thread() {
        let pool = Offload::new();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..200 {
            let thread = futures_executor::block_on(pool.run(|| std::thread::current().id()));
            threads.insert(thread.unwrap());
        }
        assert_eq!(threads.len(), 1);
    }

    /// Calls in flight at once each get a thread: one held call does not hold the others.
    #[test]
    fn a_held_call_does_not_hold_the_next() {
        let pool = Offload::new();
        let (gate, wait) = crossbeam_channel::bounded::<()>(0);
        let held = pool.run(move || wait.recv().is_ok());
        assert_eq!(futures_executor::block_on(pool.run(|| 1)), Some(1));
        drop(gate);
        assert_eq!(futures_executor::block_on(held), Some(false));
    }
}
