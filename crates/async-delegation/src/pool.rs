//! A small cached pool of named worker threads, started off the caller's path.
//!
//! Spawning an OS thread costs tens of microseconds; handing a job to a parked worker
//! costs a store and a wake-up. So the caller never spawns (after the engine's first
//! dispatch): the pool keeps one **spare** idle worker, and the worker that takes a job
//! while no other is idle starts the next spare itself, before it runs the job. A burst
//! that outruns the spares queues its jobs — they wait only for a thread start, never
//! behind another job — and each worker that starts for one starts the next while jobs
//! wait. There is no upper bound here: the engine's capacity check bounds the jobs in
//! flight.
//!
//! A job goes straight into the slot of the most recently idle worker (a stack, not a
//! shared channel): that worker is the one most likely still running, so a steady stream
//! of jobs keeps one or two workers busy and wakes no parked thread, and the workers left
//! idle are the ones that exit after `keep_alive` — all but the spare, which stays while
//! the pool lives, so an idle engine holds one parked thread. Workers are detached:
//! nothing joins them, so they never keep the process alive, and dropping the pool never
//! waits for a job; once it is dropped, each worker exits when no job is left.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Every worker thread's name starts with this.
pub(crate) const WORKER_NAME_PREFIX: &str = "async-delegate";

/// How long an idle worker (other than the spare) waits for another job before it exits.
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A job: it gets an [`IdleSignal`] it may fire early, once the part of its work that
/// the caller waits on is about to be published.
pub(crate) type Job = Box<dyn FnOnce(IdleSignal) + Send + 'static>;

static NEXT_WORKER: AtomicUsize = AtomicUsize::new(1);

/// One worker's mailbox: the job handed to it, and the thread to wake.
struct Slot {
    job: Mutex<Option<Job>>,
    /// Set with `job`: what a spinning worker watches.
    ready: AtomicBool,
    thread: Thread,
}

impl Slot {
    fn take(&self) -> Option<Job> {
        let job = lock(&self.job).take();
        if job.is_some() {
            self.ready.store(false, Ordering::Release);
        }
        job
    }

    fn put(&self, job: Job) {
        *lock(&self.job) = Some(job);
        self.ready.store(true, Ordering::Release);
    }

    /// Hands a job to the worker and wakes it (a system call only when it is parked).
    fn give(&self, job: Job) {
        self.put(job);
        self.thread.unpark();
    }
}

#[derive(Default)]
struct State {
    /// Idle workers, the most recently idle last.
    idle: Vec<Arc<Slot>>,
    /// Jobs sent while no worker was idle, oldest first.
    waiting: VecDeque<Job>,
    /// Workers alive or being started.
    workers: usize,
    /// Workers being started, not yet idle.
    starting: usize,
    /// The pool was dropped: idle workers exit.
    closed: bool,
    /// Threads started by a submitter (the first worker only).
    #[cfg(test)]
    started_by_submitter: usize,
}

struct Shared {
    state: Mutex<State>,
    /// `state.idle.len()`, written with it under the lock: what a worker starting a job
    /// reads first, so that while a worker is idle it takes no lock to learn that no
    /// spare is needed.
    idle_len: AtomicUsize,
    keep_alive: Duration,
    /// Passes idle workers made through their wait loop (a spinning one makes many).
    #[cfg(test)]
    passes: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every section under these locks is a few collection operations with no user code.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Mirrors the idle stack's length after a change (the lock held).
    fn idle_changed(&self, state: &State) {
        self.idle_len.store(state.idle.len(), Ordering::Relaxed);
    }

    /// Starts a worker when none is idle and none is being started: the spare, or one for
    /// a job that waits. Called by workers before they run a job.
    fn ensure_spare(self: &Arc<Self>) {
        // An idle worker is the spare. Read without the lock: should the last idle one
        // be handed a job meanwhile, that worker runs this check itself before its job
        // (the hand-off through its slot orders the count's update before its read).
        if self.idle_len.load(Ordering::Relaxed) > 0 {
            return;
        }
        {
            let mut state = self.lock();
            // Once the pool is closed, only jobs already accepted still need threads.
            if !state.idle.is_empty()
                || state.starting > 0
                || (state.closed && state.waiting.is_empty())
            {
                return;
            }
            state.starting += 1;
            state.workers += 1;
        }
        if let Err(error) = self.spawn() {
            let mut state = self.lock();
            state.starting -= 1;
            state.workers -= 1;
            drop(state);
            // The waiting jobs are not lost: every worker takes the next one when it
            // finishes its own.
            tracing::error!(%error, "an async delegation worker could not be started; jobs wait for a busy worker");
        }
    }

    /// Starts a worker thread, already counted in `workers` and `starting`: it takes the
    /// oldest waiting job, or goes idle.
    fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(delay) = tests::FAIL_SPAWN_AFTER.with(std::cell::Cell::take) {
            tests::SPAWN_FAILING.store(true, Ordering::Release);
            std::thread::sleep(delay);
            return Err(std::io::Error::other("injected spawn failure"));
        }
        let shared = Arc::clone(self);
        let name = format!(
            "{WORKER_NAME_PREFIX}-{}",
            NEXT_WORKER.fetch_add(1, Ordering::Relaxed)
        );
        std::thread::Builder::new()
            .name(name)
            .spawn(move || worker_main(&shared))
            .map(drop)
    }

    /// A worker turns idle: it gets the oldest waiting job in its slot, or goes on the
    /// idle stack (unless the pool is closed: then it will exit).
    fn settle_idle(&self, slot: &Arc<Slot>, state: &mut State) {
        if let Some(job) = state.waiting.pop_front() {
            // Woken in case the signal was fired on another thread and the worker parks.
            slot.give(job);
        } else if !state.closed {
            state.idle.push(Arc::clone(slot));
            self.idle_changed(state);
        }
    }

    /// An idle worker woken without a job, or whose keep-alive ran out (`expired`): it
    /// exits when the pool is closed, or when it expired and another idle worker remains
    /// (the spare stays); a job that reached its slot meanwhile is run.
    fn leave(&self, slot: &Arc<Slot>, expired: bool) -> Option<Next> {
        let mut state = self.lock();
        if let Some(job) = slot.take() {
            return Some(Next::Run(job));
        }
        let on_stack = state.idle.iter().position(|idle| Arc::ptr_eq(idle, slot));
        let leaving = state.closed || (expired && on_stack.is_some() && state.idle.len() >= 2);
        if !leaving {
            // Still idle — or taken off the stack by a submitter whose job is on its way.
            return None;
        }
        if let Some(at) = on_stack {
            state.idle.remove(at);
            self.idle_changed(&state);
        }
        Some(Next::Exit)
    }
}

/// What a worker does next.
enum Next {
    Run(Job),
    Exit,
}

/// Lets a job announce that its worker is about to be free.
///
/// The job fires it just before it publishes its result, so a caller that reacts to the
/// result by submitting the next job finds this worker idle (a job handed to it then
/// waits in its slot until the current one returns). Dropping the signal unfired fires it.
pub(crate) struct IdleSignal {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    fired: bool,
}

impl IdleSignal {
    /// Marks the worker idle (at most once).
    pub(crate) fn fire(&mut self) {
        if !self.fired {
            self.fired = true;
            let mut state = self.shared.lock();
            self.shared.settle_idle(&self.slot, &mut state);
        }
    }
}

impl Drop for IdleSignal {
    fn drop(&mut self) {
        self.fire();
    }
}

/// The submitting side of the pool. Cheap to share behind the engine's `Arc`.
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        let idle = {
            let mut state = self.shared.lock();
            state.closed = true;
            let idle = std::mem::take(&mut state.idle);
            self.shared.idle_changed(&state);
            idle
        };
        for slot in idle {
            slot.thread.unpark();
        }
    }
}

impl WorkerPool {
    pub(crate) fn new(keep_alive: Duration) -> Self {
        WorkerPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                idle_len: AtomicUsize::new(0),
                keep_alive,
                #[cfg(test)]
                passes: AtomicUsize::new(0),
            }),
        }
    }

    /// Runs `job` on a worker: the most recently idle one when there is one, else the next
    /// one free or started. Only when no worker exists at all (the first job) is a thread
    /// started here.
    ///
    /// # Errors
    /// When no worker existed and the OS refused a new thread; `job` is dropped uncalled.
    pub(crate) fn execute(&self, job: Job) -> std::io::Result<()> {
        let mut state = self.shared.lock();
        if let Some(slot) = state.idle.pop() {
            self.shared.idle_changed(&state);
            drop(state);
            slot.give(job);
            return Ok(());
        }
        if state.workers > 0 {
            // A worker is being started or is busy: it takes the job when it is free.
            state.waiting.push_back(job);
            return Ok(());
        }
        // The first worker is started with the lock held (once per pool): a submitter
        // that came meanwhile and queued its job behind this worker would otherwise be
        // stranded if the start failed.
        state.workers += 1;
        state.starting += 1;
        state.waiting.push_back(job);
        #[cfg(test)]
        {
            state.started_by_submitter += 1;
        }
        let started = self.shared.spawn();
        if started.is_err() {
            // Refused: nobody else queued meanwhile (the lock is held), so the job at the
            // back is this one; it is dropped, uncalled, once the lock is released.
            state.workers -= 1;
            state.starting -= 1;
            let refused = state.waiting.pop_back();
            drop(state);
            drop(refused);
        }
        started
    }
}

fn worker_main(shared: &Arc<Shared>) {
    let slot = Arc::new(Slot {
        job: Mutex::new(None),
        ready: AtomicBool::new(false),
        thread: std::thread::current(),
    });
    {
        let mut state = shared.lock();
        state.starting -= 1;
        shared.settle_idle(&slot, &mut state);
    }
    while let Next::Run(job) = wait(shared, &slot) {
        run_job(shared, &slot, job);
    }
    shared.lock().workers -= 1;
}

/// Waits for the next job in the worker's slot (or the end). The worker first watches
/// its slot through [`process_registry::spin_then_yield`] — the completion queue's own
/// back-off — so a job handed back within microseconds (a consumer reacting to the
/// completion this worker just published, the next of a pipelined stream) costs no park
/// and no wake-up.
fn wait(shared: &Shared, slot: &Arc<Slot>) -> Next {
    process_registry::spin_then_yield(|_| slot.ready.load(Ordering::Acquire));
    // Read once a park is near: a job handed over during the spin needs no clock.
    let mut idle_since = None;
    // Set once the keep-alive ran out while this was the last idle worker (the spare, or
    // one whose job is on its way): from then on it parks until woken, with no timeout —
    // a zero keep-alive must not make the spare spin.
    let mut stays = false;
    loop {
        if let Some(job) = slot.take() {
            return Next::Run(job);
        }
        #[cfg(test)]
        shared.passes.fetch_add(1, Ordering::Relaxed);
        if stays {
            if shared.lock().closed {
                if let Some(next) = shared.leave(slot, false) {
                    return next;
                }
            }
            std::thread::park();
            continue;
        }
        let waited = idle_since.get_or_insert_with(Instant::now).elapsed();
        let expired = waited >= shared.keep_alive;
        if expired || shared.lock().closed {
            match shared.leave(slot, expired) {
                Some(next) => return next,
                None if expired => stays = true,
                None => {}
            }
            continue;
        }
        std::thread::park_timeout(shared.keep_alive - waited);
    }
}

/// Runs one job, the spare started first; the worker is idle once the job returns.
fn run_job(shared: &Arc<Shared>, slot: &Arc<Slot>, job: Job) {
    // The spare is started before the job runs: the next submitter finds it idle.
    shared.ensure_spare();
    let signal = IdleSignal {
        shared: Arc::clone(shared),
        slot: Arc::clone(slot),
        fired: false,
    };
    // Jobs catch their own panics; this is a second fence so a bug can never kill a
    // worker already on the idle stack (a job handed to it would never run). The signal
    // fires when the job drops it, also while unwinding.
    if let Err(message) = crate::fence::call(move || job(signal)) {
        tracing::error!(panic = %message, "an async delegation job panicked outside its own fence");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: Duration = Duration::from_secs(20);

    thread_local! {
        /// Makes this thread's next thread start fail, after the given delay.
        pub(super) static FAIL_SPAWN_AFTER: std::cell::Cell<Option<Duration>> =
            const { std::cell::Cell::new(None) };
    }

    /// Set when an injected failure has begun (read without the pool's lock, which the
    /// failing start holds).
    pub(super) static SPAWN_FAILING: AtomicBool = AtomicBool::new(false);

    #[test]
    fn with_a_zero_keep_alive_the_spare_parks_instead_of_spinning() {
        let pool = WorkerPool::new(Duration::ZERO);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        pool.execute(Box::new(move |_idle: IdleSignal| done_tx.send(()).unwrap()))
            .unwrap();
        done.recv_timeout(GUARD).unwrap();
        until("one worker left", || workers(&pool.shared) == 1);
        let before = pool.shared.passes.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        let passes = pool.shared.passes.load(Ordering::Relaxed) - before;
        // Parked: only spurious wake-ups make a pass (a spinning spare made millions).
        assert!(
            passes < 10,
            "the idle spare went through its wait {passes} times"
        );
        // And it still serves.
        let (done_tx, done) = crossbeam_channel::bounded(1);
        pool.execute(Box::new(move |_idle: IdleSignal| done_tx.send(()).unwrap()))
            .unwrap();
        done.recv_timeout(GUARD).unwrap();
    }

    #[test]
    fn jobs_waiting_when_the_pool_is_dropped_still_get_threads() {
        let pool = WorkerPool::new(Duration::from_secs(60));
        let shared = Arc::clone(&pool.shared);
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        // Back to back: the later ones wait for threads the workers start.
        let names = held_jobs(&pool, 4, &hold);
        drop(pool);
        for _ in 0..4 {
            names
                .recv_timeout(GUARD)
                .expect("every accepted job runs at once, also after the drop");
        }
        drop(release);
        until("no worker left", || workers(&shared) == 0);
    }

    #[test]
    fn a_job_queued_while_the_first_start_fails_still_runs() {
        let pool = Arc::new(WorkerPool::new(Duration::from_secs(60)));
        let first = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                FAIL_SPAWN_AFTER.with(|fail| fail.set(Some(Duration::from_millis(200))));
                pool.execute(Box::new(|_idle: IdleSignal| {})).is_err()
            })
        };
        // While the first start is failing, a second submitter comes.
        until("the first start under way", || {
            SPAWN_FAILING.load(Ordering::Acquire)
        });
        let (done_tx, done) = crossbeam_channel::bounded(1);
        pool.execute(Box::new(move |_idle: IdleSignal| done_tx.send(()).unwrap()))
            .expect("accepted");
        assert!(
            first.join().unwrap(),
            "the first submitter sees its refusal"
        );
        done.recv_timeout(GUARD)
            .expect("the job accepted while the first start failed runs");
        assert_eq!(
            submitter_starts(&pool),
            2,
            "the second submitter started a worker"
        );
    }

    /// Idle workers.
    fn available(pool: &WorkerPool) -> usize {
        pool.shared.lock().idle.len()
    }

    fn workers(shared: &Shared) -> usize {
        shared.lock().workers
    }

    fn submitter_starts(pool: &WorkerPool) -> usize {
        pool.shared.lock().started_by_submitter
    }

    /// Waits (bounded) until `done` holds.
    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + GUARD;
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Submits `n` jobs that each report their thread's name, then hold until `hold`
    /// is dropped.
    fn held_jobs(
        pool: &WorkerPool,
        n: usize,
        hold: &crossbeam_channel::Receiver<()>,
    ) -> crossbeam_channel::Receiver<Option<String>> {
        let (names_tx, names) = crossbeam_channel::unbounded();
        for _ in 0..n {
            pool.execute(held_job(hold, &names_tx)).unwrap();
        }
        names
    }

    /// A job that reports its thread's name, then holds until `hold` is dropped.
    fn held_job(
        hold: &crossbeam_channel::Receiver<()>,
        names: &crossbeam_channel::Sender<Option<String>>,
    ) -> Job {
        let (hold, names) = (hold.clone(), names.clone());
        Box::new(move |_idle: IdleSignal| {
            names
                .send(std::thread::current().name().map(str::to_owned))
                .unwrap();
            let _ = hold.recv_timeout(GUARD);
        })
    }

    #[test]
    fn busy_workers_are_never_shared_and_idle_ones_are_reused() {
        let pool = WorkerPool::new(Duration::from_secs(60));
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        let names = held_jobs(&pool, 3, &hold);
        let first: std::collections::HashSet<_> =
            (0..3).map(|_| names.recv_timeout(GUARD).unwrap()).collect();
        assert_eq!(first.len(), 3, "three busy jobs, three threads");
        assert!(first
            .iter()
            .all(|n| n.as_deref().unwrap().starts_with(WORKER_NAME_PREFIX)));
        drop(release);
        // The three, and the spare started meanwhile.
        until("four idle workers", || available(&pool) >= 4);
        let started = workers(&pool.shared);
        // Three more jobs go to idle workers: no thread is started.
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        let names = held_jobs(&pool, 3, &hold);
        for _ in 0..3 {
            names.recv_timeout(GUARD).unwrap();
        }
        assert_eq!(workers(&pool.shared), started);
        assert_eq!(submitter_starts(&pool), 1, "only the first worker");
        drop(release);
    }

    #[test]
    fn with_every_worker_busy_the_submitter_never_starts_a_thread() {
        let pool = WorkerPool::new(Duration::from_secs(60));
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        // Back to back: most of these find no idle worker (the spares cannot keep up),
        // and every one of them still runs at once, on a thread of its own.
        let names = held_jobs(&pool, 24, &hold);
        let running: std::collections::HashSet<_> = (0..24)
            .map(|_| names.recv_timeout(GUARD).unwrap())
            .collect();
        assert_eq!(running.len(), 24, "24 jobs held at once, 24 threads");
        assert_eq!(submitter_starts(&pool), 1, "only the first worker");
        drop(release);
    }

    #[test]
    fn idle_workers_retire_down_to_the_spare_which_still_serves() {
        let pool = WorkerPool::new(Duration::from_millis(20));
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        let names = held_jobs(&pool, 4, &hold);
        for _ in 0..4 {
            names.recv_timeout(GUARD).unwrap();
        }
        drop(release);
        until("one worker left", || workers(&pool.shared) == 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(workers(&pool.shared), 1, "the spare does not retire");
        assert_eq!(available(&pool), 1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        pool.execute(Box::new(move |_idle: IdleSignal| done_tx.send(()).unwrap()))
            .unwrap();
        done.recv_timeout(GUARD).unwrap();
        assert_eq!(submitter_starts(&pool), 1);
    }

    #[test]
    fn dropping_the_pool_ends_every_worker_after_its_job() {
        let pool = WorkerPool::new(Duration::from_secs(60));
        let shared = Arc::clone(&pool.shared);
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        let names = held_jobs(&pool, 2, &hold);
        for _ in 0..2 {
            names.recv_timeout(GUARD).unwrap();
        }
        until("a spare", || available(&pool) >= 1);
        // Counted before the drop: the idle spare is told to exit by it, and may be gone
        // before a count after it.
        assert!(workers(&shared) >= 3, "two busy and a spare");
        drop(pool);
        drop(release);
        until("no worker left", || workers(&shared) == 0);
    }

    #[test]
    fn a_panicking_job_does_not_lose_its_worker() {
        let pool = WorkerPool::new(Duration::from_secs(60));
        pool.execute(Box::new(|_idle: IdleSignal| panic!("job bug")))
            .unwrap();
        until("idle again", || available(&pool) >= 2);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        pool.execute(Box::new(move |_idle: IdleSignal| done_tx.send(()).unwrap()))
            .unwrap();
        done.recv_timeout(GUARD).unwrap();
    }

    #[test]
    fn early_idle_signal_fires_once() {
        let pool = WorkerPool::new(Duration::from_secs(60));
        let (fired_tx, fired) = crossbeam_channel::bounded(1);
        let (finish, finishing) = crossbeam_channel::bounded::<()>(0);
        pool.execute(Box::new(move |mut idle: IdleSignal| {
            idle.fire();
            idle.fire();
            fired_tx.send(()).unwrap();
            let _ = finishing.recv_timeout(GUARD);
        }))
        .unwrap();
        fired.recv_timeout(GUARD).unwrap();
        // The spare is started before the job runs.
        until("the spare", || available(&pool) == 2);
        drop(finish);
        // The drop at the end of the job must not count it twice.
        let (done_tx, done) = crossbeam_channel::bounded(1);
        pool.execute(Box::new(move |_idle: IdleSignal| done_tx.send(()).unwrap()))
            .unwrap();
        done.recv_timeout(GUARD).unwrap();
        until("idle again", || available(&pool) >= 2);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(available(&pool), 2);
    }

    /// A few yields, a random number of them (no clock): a job's or a submitter's pause.
    fn pause(at_most: u32) {
        for _ in 0..rand::random::<u32>() % at_most {
            std::thread::yield_now();
        }
    }

    /// `n` jobs held until `hold` is dropped, submitted by four threads at once; the
    /// names of the threads running them.
    fn held_jobs_from_four_submitters(
        pool: &Arc<WorkerPool>,
        n: usize,
        hold: &crossbeam_channel::Receiver<()>,
    ) -> std::collections::HashSet<Option<String>> {
        let (names_tx, names) = crossbeam_channel::unbounded();
        let submitters: Vec<_> = (0..4)
            .map(|submitter| {
                let (pool, hold, names_tx) = (Arc::clone(pool), hold.clone(), names_tx.clone());
                std::thread::spawn(move || {
                    for _ in (submitter..n).step_by(4) {
                        pool.execute(held_job(&hold, &names_tx)).unwrap();
                    }
                })
            })
            .collect();
        for submitter in submitters {
            submitter.join().unwrap();
        }
        (0..n)
            .map(|_| {
                names
                    .recv_timeout(GUARD)
                    .expect("every held job runs at once, none waits behind another")
            })
            .collect()
    }

    /// Four submitters send bursts of short jobs (half of them fire their idle signal
    /// early), then hold `n` jobs at once, round after round, with workers retiring
    /// between jobs (a zero keep-alive) and without: every job runs, `n` held jobs run on
    /// `n` threads, a spare is idle while they are held, and no submitter but the first
    /// starts a thread. Last, a burst is cut short by the pool's drop: its jobs still run
    /// and every worker ends.
    #[test]
    fn bursts_from_many_submitters_all_run_and_held_jobs_each_get_a_thread() {
        const JOBS: usize = 300;
        for keep_alive in [Duration::ZERO, Duration::from_secs(60)] {
            let pool = Arc::new(WorkerPool::new(keep_alive));
            let shared = Arc::clone(&pool.shared);
            for round in 0..5 {
                let (done_tx, done) = crossbeam_channel::unbounded();
                let submitters: Vec<_> = (0..4)
                    .map(|_| {
                        let (pool, done_tx) = (Arc::clone(&pool), done_tx.clone());
                        std::thread::spawn(move || {
                            for _ in 0..JOBS {
                                let done_tx = done_tx.clone();
                                let early = rand::random::<bool>();
                                pool.execute(Box::new(move |mut idle: IdleSignal| {
                                    if early {
                                        idle.fire();
                                    }
                                    pause(32);
                                    done_tx.send(()).unwrap();
                                }))
                                .unwrap();
                                // Bursts: most jobs follow back to back.
                                if rand::random::<u8>() < 16 {
                                    pause(64);
                                }
                            }
                        })
                    })
                    .collect();
                for submitter in submitters {
                    submitter.join().unwrap();
                }
                for _ in 0..4 * JOBS {
                    done.recv_timeout(GUARD).expect("every job runs");
                }
                let n = 2 + 5 * round;
                let (release, hold) = crossbeam_channel::bounded::<()>(0);
                let running = held_jobs_from_four_submitters(&pool, n, &hold);
                assert_eq!(running.len(), n, "{n} jobs held at once, {n} threads");
                until("a spare beside the held jobs", || available(&pool) >= 1);
                drop(release);
            }
            assert_eq!(submitter_starts(&pool), 1, "only the first worker");
            // A burst the drop cuts short.
            let (done_tx, done) = crossbeam_channel::unbounded();
            let (release, hold) = crossbeam_channel::bounded::<()>(0);
            for n in 0..64 {
                let (done_tx, hold) = (done_tx.clone(), hold.clone());
                pool.execute(Box::new(move |_idle: IdleSignal| {
                    done_tx.send(()).unwrap();
                    if n % 2 == 0 {
                        let _ = hold.recv_timeout(GUARD);
                    }
                }))
                .unwrap();
            }
            drop(Arc::into_inner(pool).expect("the submitters are done"));
            for _ in 0..64 {
                done.recv_timeout(GUARD)
                    .expect("every accepted job runs, also after the drop");
            }
            drop(release);
            until("no worker left", || workers(&shared) == 0);
        }
    }
}
