//! Checkpoints off the committing thread.
//!
//! In WAL mode every commit appends pages to the write-ahead log, and SQLite's automatic
//! checkpoint copies them back into the database file (and, at `synchronous=NORMAL`,
//! fsyncs it) inside whichever commit crosses 1 000 pages — a dispatch or an ack that
//! happens to be that commit waits milliseconds. Here the ledger's connection only
//! *notices* the log's size after each commit (SQLite's WAL hook) and wakes one thread,
//! `process-registry-sqlite-checkpoint`, which runs a passive checkpoint on a connection of
//! its own: writers go on appending while it copies.
//!
//! A passive checkpoint beside a steady writer never quite finishes (what is appended while
//! it copies is left for the next one), and the log starts over from its beginning only
//! once everything in it has been copied. So past 4 000 pages a commit checkpoints inline:
//! by then the thread has copied nearly all of it, the commit copies the rest, and the
//! next write restarts the log. When the thread cannot be had (it could not start or could
//! not open the file), commits checkpoint inline at 1 000 pages, as SQLite would.
//!
//! The thread is not joined: dropping the ledger asks it to stop, and it ends after the
//! checkpoint it may be running (a checkpoint is crash-safe; one cut short by the process
//! ending leaves nothing to repair).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

/// Log pages after which the checkpoint thread is woken (SQLite's own default).
const WAKE_AT_PAGES: i32 = 1_000;
/// Log pages after which a commit checkpoints what the thread has left, so that the log
/// can restart.
const INLINE_AT_PAGES: i32 = 4_000;

/// The handle a ledger holds; dropping it stops the thread.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
}

struct Shared {
    /// A checkpoint is wanted; set by the hook without taking the lock when already set.
    wanted: AtomicBool,
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Checkpointer {
    /// Installs the WAL hook on `connection` and starts the thread on its own connection
    /// to `path`. When the thread cannot be had, the hook checkpoints inline at SQLite's
    /// usual size instead, and the ledger works as it would with automatic checkpoints.
    pub(super) fn start(connection: &mut Connection, path: &Path) -> Option<Checkpointer> {
        let shared = Arc::new(Shared {
            wanted: AtomicBool::new(false),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let started = open_own(path).and_then(|own| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("process-registry-sqlite-checkpoint".into())
                .spawn(move || run(&own, &shared))
                .map_err(|error| error.to_string())
        });
        let inline_at = match started {
            Ok(_) => INLINE_AT_PAGES,
            Err(reason) => {
                tracing::warn!(%reason, "no checkpoint thread for the SQLite ledger; commits checkpoint inline");
                WAKE_AT_PAGES
            }
        };
        let hook_shared = Arc::clone(&shared);
        let hooked = connection.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
            if pages >= inline_at {
                // Errors (another checkpoint running, a full disk) only leave the log
                // longer; the next commit tries again. The commit itself has happened.
                let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
            } else if pages >= WAKE_AT_PAGES && !hook_shared.wanted.swap(true, Ordering::AcqRel) {
                let _guard = hook_shared.stopped.lock();
                hook_shared.wake.notify_one();
            }
            Ok(())
        }));
        match hooked {
            Ok(()) => Some(Checkpointer { shared }),
            Err(error) => {
                // SQLite's automatic checkpoints stay in force.
                tracing::warn!(%error, "cannot watch the SQLite ledger's log; automatic checkpoints stay on");
                stop(&shared);
                None
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        stop(&self.shared);
    }
}

fn stop(shared: &Shared) {
    *shared.stopped.lock() = true;
    shared.wake.notify_one();
}

/// A connection of the thread's own, already reading the file as a WAL database (a
/// fresh connection does not know the log exists until it first reads, and would
/// answer every checkpoint with "not in WAL mode").
fn open_own(path: &Path) -> Result<Connection, String> {
    let own = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| error.to_string())?;
    let mode: String = own
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .map_err(|error| error.to_string())?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(own)
    } else {
        Err(format!("the file is in journal mode {mode}, not WAL"))
    }
}

fn run(own: &Connection, shared: &Shared) {
    loop {
        {
            let mut stopped = shared.stopped.lock();
            while !*stopped && !shared.wanted.load(Ordering::Acquire) {
                shared.wake.wait(&mut stopped);
            }
            if *stopped {
                return;
            }
        }
        shared.wanted.store(false, Ordering::Release);
        if let Err(error) = own.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            // Busy (another process checkpoints) or unwritable: the log stays longer and
            // the next wake-up tries again; a persistent failure shows in the commits.
            tracing::debug!(%error, "a background checkpoint of the SQLite ledger did not finish");
        }
    }
}
