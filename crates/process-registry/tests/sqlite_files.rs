//! The SQLite ledger's file: created when missing, reopened with every row, and — when it
//! is not ours, is damaged, or is newer than this build — refused with a clear error and
//! left byte for byte as it was. A file that cannot be written refuses writes clearly.
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use process_registry::{
    ClaimFilter, CompletionQueue, DeliveryState, Durability, Event, LedgerBackend, LedgerError,
    RowQuery, SqliteLedger, SqliteOptions, WatchOverflow,
};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("sqlite-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn event(message: &str) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(message.to_owned()),
        ..WatchOverflow::default()
    })
}

fn open(path: &Path) -> Result<CompletionQueue, LedgerError> {
    CompletionQueue::builder(SqliteLedger::open(path)?).open()
}

/// Opening `path` fails with `expected` and leaves the file exactly as it was.
fn refused_untouched(path: &Path, expected: impl Fn(&LedgerError) -> bool) -> String {
    let before = std::fs::read(path).unwrap();
    let error = open(path).expect_err("refused");
    assert!(expected(&error), "{error:?}");
    assert_eq!(std::fs::read(path).unwrap(), before, "the file was changed");
    for sidecar in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(sidecar);
        assert!(
            !Path::new(&name).exists() || std::fs::metadata(&name).unwrap().len() == 0,
            "{sidecar} written next to a refused file"
        );
    }
    error.to_string()
}

#[test]
fn a_new_file_becomes_a_ledger_and_keeps_every_row_across_reopens() {
    let dir = Dir::new("reopen");
    let path = dir.file("ledger.sqlite3");
    {
        let queue = open(&path).unwrap();
        queue.put(event("one"));
        queue.put(event("two"));
        let claim = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
        claim.ack().unwrap();
    }
    let queue = open(&path).unwrap();
    let rows = queue.rows(&RowQuery::default()).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].delivery, Some(DeliveryState::Delivered));
    assert_eq!(rows[1].delivery, Some(DeliveryState::Pending));
    assert_eq!(queue.try_take(), Some(event("two")));

    let power = CompletionQueue::builder(
        SqliteLedger::open_with(
            &path,
            SqliteOptions::default().with_durability(Durability::Power),
        )
        .unwrap(),
    )
    .open()
    .unwrap();
    power.put(event("fsynced"));
    assert_eq!(power.try_take(), Some(event("fsynced")));
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_untouched() {
    let dir = Dir::new("text");
    let path = dir.file("notes.txt");
    std::fs::write(&path, "just some notes, not a database\n").unwrap();
    let text = refused_untouched(&path, |e| matches!(e, LedgerError::NotALedger { .. }));
    assert!(text.contains("it is not an SQLite database"), "{text}");
    assert!(text.ends_with("it was left untouched"), "{text}");
}

#[test]
fn another_programs_database_is_refused_untouched() {
    let dir = Dir::new("foreign");
    let path = dir.file("app.db");
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ada');")
            .unwrap();
    }
    let text = refused_untouched(&path, |e| matches!(e, LedgerError::NotALedger { .. }));
    assert!(
        text.contains("an SQLite database of another program"),
        "{text}"
    );
}

#[test]
fn a_ledger_written_by_a_newer_schema_is_refused_untouched() {
    let dir = Dir::new("newer");
    let path = dir.file("ledger.sqlite3");
    drop(open(&path).unwrap());
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("PRAGMA user_version = 7;")
            .unwrap();
    }
    let text = refused_untouched(&path, |e| {
        matches!(
            e,
            LedgerError::NewerSchema {
                found: 7,
                supported: 1,
                ..
            }
        )
    });
    assert!(
        text.contains("schema version 7, newer than the 1 this build knows"),
        "{text}"
    );
}

#[test]
fn a_corrupt_ledger_is_refused_untouched() {
    let dir = Dir::new("corrupt");
    let path = dir.file("ledger.sqlite3");
    {
        let queue = open(&path).unwrap();
        for n in 0..200 {
            queue.put(event(&format!(
                "event number {n} with some text to fill pages"
            )));
        }
    }
    // Checkpoint the WAL into the main file, then damage the pages after the header.
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
            .unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192, "several pages");
    for byte in &mut bytes[4096..] {
        *byte = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let text = refused_untouched(&path, |e| {
        matches!(
            e,
            LedgerError::Corrupt { .. } | LedgerError::NotALedger { .. }
        )
    });
    assert!(text.contains("left untouched"), "{text}");
}

#[test]
fn a_full_ledger_refuses_writes_with_a_clear_error_and_keeps_what_it_has() {
    let dir = Dir::new("full");
    let path = dir.file("ledger.sqlite3");
    let queue = CompletionQueue::builder(
        SqliteLedger::open_with(&path, SqliteOptions::default().with_max_size(64 * 1024)).unwrap(),
    )
    .config(process_registry::LedgerConfig::default().with_retention(std::time::Duration::ZERO))
    .open()
    .unwrap();
    let text = "x".repeat(2000);
    let mut written = 0;
    let error = loop {
        match queue.try_put(event(&text)) {
            Ok(()) => written += 1,
            Err(error) => break error,
        }
        assert!(written < 10_000, "the cap never bit");
    };
    assert!(written > 0);
    assert!(matches!(error, LedgerError::Unwritable { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the completion ledger could not be written: the disk is full (database or disk is full)"
    );
    // `put` keeps what it cannot write in memory instead of dropping it, and what is
    // already written is all there.
    queue.put(event(&format!("kept in memory {text}")));
    assert_eq!(queue.len(), written);
    assert_eq!(queue.drain().len(), written);
    // Once there is room again (here: the delivered rows are pruned), the next sweep
    // writes it.
    std::thread::sleep(std::time::Duration::from_millis(10));
    queue.sweep().unwrap();
    let kept = queue.try_take().expect("written by the sweep");
    assert!(
        matches!(&kept, Event::WatchOverflowTripped(e) if e.message.as_deref().unwrap().starts_with("kept in memory"))
    );
}

/// A look that finds nothing takes no write lock: while another process holds a write
/// transaction on the file, an empty claim (with or without a predicate) and an empty
/// plain take answer "nothing", instead of waiting out the busy timeout and failing with
/// "database is locked".
#[test]
fn an_empty_look_answers_nothing_while_another_process_writes() {
    let dir = Dir::new("empty-look");
    let path = dir.file("ledger.sqlite3");
    let mut options = SqliteOptions::default();
    // Short, so a look that did wait for the lock fails fast (with an error, not a
    // timing: nothing here measures time).
    options.busy_timeout = std::time::Duration::from_millis(50);
    let ledger = std::sync::Arc::new(SqliteLedger::open_with(&path, options).unwrap());
    let queue = CompletionQueue::builder_shared(ledger.clone())
        .open()
        .unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    assert!(queue.claim(&ClaimFilter::any()).unwrap().is_none());
    let with_predicate = ClaimFilter::any().where_event(|_| true);
    assert!(queue.claim(&with_predicate).unwrap().is_none());
    // The plain take's step, asked directly (`try_take` would log an error as `None`).
    let everything = process_registry::CandidateQuery {
        kinds: &[],
        except_kinds: &[],
        sessions: process_registry::SessionMatch::Any,
        restored: false,
        after_seq: 0,
    };
    assert!(ledger.take_next(&everything).unwrap().is_none());
    other.execute_batch("COMMIT").unwrap();
    queue.put(event("after the other write"));
    assert!(queue.claim(&ClaimFilter::any()).unwrap().is_some());
}

/// The log is copied back into the file by the ledger's checkpoint thread, not inside a
/// commit: after writes that pass the wake-up size (1 000 log pages) but stay far below
/// the size at which a commit would checkpoint on its own thread (16 000), the database
/// file itself grows — with SQLite's automatic checkpoints replaced, only the thread
/// could have written it. The log stays bounded as writes go on.
#[test]
fn the_log_is_checkpointed_by_the_ledgers_own_thread() {
    let dir = Dir::new("checkpoint");
    let path = dir.file("ledger.sqlite3");
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let queue = open(&path).unwrap();
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    let before = size(&path);
    // About two pages a row: 1 500 rows pass 1 000 log pages.
    let text = "x".repeat(6000);
    for _ in 0..1_500 {
        queue.try_put(event(&text)).unwrap();
    }
    // A bound, not a timing: the thread was woken by the commit that passed 1 000 pages.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while size(&path) < before + 1000 * 4096 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing checkpointed the log: file {} bytes, log {} bytes",
            size(&path),
            size(&wal)
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for _ in 0..6_000 {
        queue.try_put(event(&text)).unwrap();
    }
    // 7 500 rows are about 15 000 pages; a log that was never reset would hold them all.
    assert!(
        size(&wal) < 12_000 * 4096,
        "the log was not reset: {} bytes",
        size(&wal)
    );
    assert_eq!(queue.len(), 7_500);
}
