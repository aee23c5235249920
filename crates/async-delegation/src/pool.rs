//! A small cached pool of named worker threads.
//!
//! Spawning an OS thread costs tens of microseconds; handing a job to a parked worker
//! costs a channel send and a wake-up. The pool keeps workers that finished a job for
//! `keep_alive`, then lets them exit, so a burst of work reuses threads and an idle
//! engine holds none. There is no upper bound here: the engine's capacity check bounds
//! the number of jobs in flight, and the pool never queues a job behind a busy worker.
//!
//! Workers are detached: nothing joins them, so they never keep the process alive and
//! dropping the pool never waits for a job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// Every worker thread's name starts with this.
pub(crate) const WORKER_NAME_PREFIX: &str = "async-delegate";

/// How long an idle worker waits for another job before it exits.
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A job: it gets an [`IdleSignal`] it may fire early, once the part of its work that
/// the caller waits on is about to be published.
pub(crate) type Job = Box<dyn FnOnce(IdleSignal) + Send + 'static>;

static NEXT_WORKER: AtomicUsize = AtomicUsize::new(1);

struct Shared {
    jobs: Receiver<Job>,
    /// Workers waiting for a job that no submitter has claimed yet.
    idle: AtomicUsize,
    keep_alive: Duration,
}

impl Shared {
    /// Takes one unclaimed idle worker, if any.
    fn claim_idle(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Lets a job announce that its worker is about to be free.
///
/// The job fires it just before it publishes its result, so a caller that reacts to the
/// result by submitting the next job finds this worker idle instead of spawning a new
/// thread. Dropping the signal unfired fires it.
pub(crate) struct IdleSignal {
    shared: Arc<Shared>,
    fired: bool,
}

impl IdleSignal {
    /// Marks the worker idle (at most once).
    pub(crate) fn fire(&mut self) {
        if !self.fired {
            self.fired = true;
            self.shared.idle.fetch_add(1, Ordering::AcqRel);
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
    sender: Sender<Job>,
    shared: Arc<Shared>,
}

impl WorkerPool {
    pub(crate) fn new(keep_alive: Duration) -> Self {
        let (sender, jobs) = crossbeam_channel::unbounded();
        WorkerPool {
            sender,
            shared: Arc::new(Shared {
                jobs,
                idle: AtomicUsize::new(0),
                keep_alive,
            }),
        }
    }

    /// Runs `job` on a worker: an idle one when there is one, else a new thread.
    ///
    /// # Errors
    /// When no worker was idle and the OS refused a new thread; `job` is dropped uncalled.
    pub(crate) fn execute(&self, job: Job) -> std::io::Result<()> {
        if self.shared.claim_idle() {
            // A claimed worker is waiting (or about to wait) on the channel, and no
            // worker retires while a claim is outstanding, so the job will be taken.
            // The pool owns a receiver, so the send cannot fail.
            let _ = self.sender.send(job);
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let name = format!(
            "{WORKER_NAME_PREFIX}-{}",
            NEXT_WORKER.fetch_add(1, Ordering::Relaxed)
        );
        std::thread::Builder::new()
            .name(name)
            .spawn(move || worker_loop(shared, job))
            .map(drop)
    }
}

fn run_job(shared: &Arc<Shared>, job: Job) {
    let signal = IdleSignal {
        shared: Arc::clone(shared),
        fired: false,
    };
    // Jobs catch their own panics; this is a second fence so a bug can never kill a
    // worker whose idle count is already published (a claimed job would then wait for
    // a worker that no longer exists). The signal fires while unwinding either way.
    if let Err(message) = crate::fence::call(move || job(signal)) {
        tracing::error!(panic = %message, "an async delegation job panicked outside its own fence");
    }
}

fn worker_loop(shared: Arc<Shared>, first: Job) {
    run_job(&shared, first);
    loop {
        match shared.jobs.recv_timeout(shared.keep_alive) {
            Ok(job) => run_job(&shared, job),
            Err(RecvTimeoutError::Timeout) => {
                // Retire only by taking back our own idle mark. If every mark has been
                // claimed, a job is on its way to some worker: keep serving.
                if shared.claim_idle() {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: Duration = Duration::from_secs(20);

    fn idle(pool: &WorkerPool) -> usize {
        pool.shared.idle.load(Ordering::Acquire)
    }

    #[test]
    fn busy_workers_are_never_shared_and_idle_ones_are_reused() {
        let pool = WorkerPool::new(Duration::from_secs(60));
        let (release, hold) = crossbeam_channel::bounded::<()>(0);
        let (names_tx, names) = crossbeam_channel::unbounded();
        for _ in 0..3 {
            let (hold, names_tx) = (hold.clone(), names_tx.clone());
            pool.execute(Box::new(move |_idle: IdleSignal| {
                names_tx
                    .send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
                let _ = hold.recv_timeout(GUARD);
            }))
            .unwrap();
        }
        let first: std::collections::HashSet<_> =
            (0..3).map(|_| names.recv_timeout(GUARD).unwrap()).collect();
        assert_eq!(first.len(), 3, "three busy jobs, three threads");
        assert!(first
            .iter()
            .all(|n| n.as_deref().unwrap().starts_with(WORKER_NAME_PREFIX)));
        drop(release);
        while idle(&pool) < 3 {
            std::thread::yield_now();
        }
        // Three more jobs go to the three idle workers.
        for _ in 0..3 {
            let names_tx = names_tx.clone();
            pool.execute(Box::new(move |_idle: IdleSignal| {
                names_tx
                    .send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
            }))
            .unwrap();
        }
        for _ in 0..3 {
            assert!(first.contains(&names.recv_timeout(GUARD).unwrap()));
        }
    }

    #[test]
    fn a_panicking_job_does_not_lose_its_worker() {
        let pool = WorkerPool::new(Duration::from_secs(60));
        pool.execute(Box::new(|_idle: IdleSignal| panic!("job bug")))
            .unwrap();
        while idle(&pool) < 1 {
            std::thread::yield_now();
        }
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
        assert_eq!(idle(&pool), 1, "marked idle before the job returned");
        drop(finish);
        // The drop at the end of the job must not count it twice.
        let (done_tx, done) = crossbeam_channel::bounded(1);
        pool.execute(Box::new(move |_idle: IdleSignal| done_tx.send(()).unwrap()))
            .unwrap();
        done.recv_timeout(GUARD).unwrap();
        while idle(&pool) < 1 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(idle(&pool), 1);
    }
}
