//! `SqliteLedger`: the embedded, durable backend (feature `sqlite`).
//!
//! # Design
//!
//! One file, one connection per handle behind a mutex (SQLite serializes writers
//! anyway), WAL journaling so readers never block the writer, and the log's checkpoints
//! on a thread of their own (`checkpoint.rs`). Every primitive of [`LedgerBackend`] is one
//! SQL statement (or one transaction) whose `WHERE` names the exact state it moves from —
//! the one-step claims and takes first read which row is next, so a look that finds
//! nothing takes no write lock, then move it by that guard; the store's clock is this
//! machine's, passed in as a parameter. The file is marked as ours (`application_id`) and
//! versioned (`user_version`): a file that is not SQLite, another program's database, a
//! corrupt one, or one written by a newer schema is refused at open with a clear error
//! and never written to.

mod checkpoint;

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, ToSql};

use super::backend::{
    first_moved, Candidate, CandidateQuery, Capabilities, ClaimToken, ClaimedRow, DeliveryState,
    Fence, Finish, Inserted, LedgerBackend, LedgerRow, NewClaim, NewPending, NewRunning,
    PendingRefused, RowQuery, RunState, SessionMatch, Settle, TakenRow,
};
use super::clock::{Clock, SystemClock};
use super::sql::{self, row_seq, seq_param, to_json, token_id, CLAIMED_COLUMNS, ROW_COLUMNS};
use crate::{Event, LedgerError, Text};
use checkpoint::Checkpointer;

/// `application_id` of a completion ledger file ("BDLG").
const APPLICATION_ID: i64 = 0x4244_4C47;
/// The schema this build writes and reads.
const SCHEMA_VERSION: i64 = 1;
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

const SCHEMA: &str = "
CREATE TABLE ledger_rows (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    key                 TEXT,
    delegation_id       TEXT UNIQUE,
    kind                TEXT NOT NULL,
    session_key         TEXT NOT NULL,
    run_state           TEXT,
    status              TEXT,
    delivery            TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    reason              TEXT,
    owner               TEXT NOT NULL,
    claim_id            INTEGER,
    claimed_by          TEXT,
    restored            INTEGER NOT NULL DEFAULT 0,
    possible_redelivery INTEGER NOT NULL DEFAULT 0,
    created_at          REAL NOT NULL,
    completed_at        REAL,
    delivered_at        REAL,
    not_before          REAL,
    lease_until         REAL,
    event               TEXT NOT NULL
);
CREATE INDEX ledger_open ON ledger_rows (seq) WHERE delivery IN ('pending', 'claimed');
CREATE INDEX ledger_running ON ledger_rows (owner) WHERE run_state = 'running';
CREATE INDEX ledger_delivered ON ledger_rows (delivered_at) WHERE delivery = 'delivered';
";

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives the death of any process using the file (`kill -9`), not a power loss:
    /// WAL with `synchronous=NORMAL`. The default.
    #[default]
    Process,
    /// Survives a power loss too: every commit is fsynced (`synchronous=FULL`).
    Power,
}

/// Options of [`SqliteLedger::open_with`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// How much a commit survives (default [`Durability::Process`]).
    pub durability: Durability,
    /// How long a write waits for another process's write to finish (default 5 s).
    pub busy_timeout: Duration,
    /// The most the file may grow to, in bytes (default: no cap). A write past it fails
    /// as a full disk would: [`LedgerError::Unwritable`].
    pub max_size: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Process,
            busy_timeout: Duration::from_secs(5),
            max_size: None,
        }
    }
}

impl SqliteOptions {
    /// Sets the durability.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Caps the file's size in bytes.
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }
}

/// A completion ledger in one SQLite file (bundled SQLite: nothing to install). Rows
/// survive `kill -9` of any process using the file; with [`Durability::Power`], a power
/// loss too.
///
/// Each open ledger has one thread, `process-registry-sqlite-checkpoint`, that copies the
/// write-ahead log back into the file, so that no commit (a dispatch, an ack) waits for
/// that copy; it ends soon after the ledger is dropped, and is never joined.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use process_registry::{CompletionQueue, Event, SqliteLedger, WatchOverflow};
///
/// let dir = std::env::temp_dir().join(format!("ledger-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("completions.sqlite3");
/// # let _ = std::fs::remove_file(&path);
/// {
///     let queue = CompletionQueue::builder(SqliteLedger::open(&path)?).open()?;
///     queue.put(Event::WatchOverflowTripped(WatchOverflow::default()));
/// }
/// // Another process (or this one, later) finds it there.
/// let queue = CompletionQueue::builder(SqliteLedger::open(&path)?).open()?;
/// assert_eq!(queue.len(), 1);
/// # drop(queue);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct SqliteLedger {
    connection: Mutex<Connection>,
    /// Runs the log's checkpoints on its own thread (`None`: SQLite's automatic ones).
    _checkpointer: Option<Checkpointer>,
    path: PathBuf,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteLedger {
    /// Opens (or creates) the ledger at `path` with the default options.
    ///
    /// # Errors
    /// [`LedgerError::NotALedger`] for a file that is not SQLite or belongs to another
    /// program, [`LedgerError::Corrupt`] for a damaged ledger,
    /// [`LedgerError::NewerSchema`] for one written by a newer version — the file is left
    /// untouched in every case — and [`LedgerError::Unavailable`] when it cannot be
    /// opened at all.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteLedger, LedgerError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the ledger at `path`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteLedger, LedgerError> {
        Self::open_with_clock(path, options, Arc::new(SystemClock))
    }

    /// Opens (or creates) the ledger at `path`, reading time from `clock` (tests).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_clock(
        path: impl AsRef<Path>,
        options: SqliteOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<SqliteLedger, LedgerError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        refuse_non_sqlite(&path, &shown)?;
        let mut connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| LedgerError::Unavailable {
            reason: format!("cannot open {shown}: {error}"),
        })?;
        connection
            .busy_timeout(options.busy_timeout)
            .map_err(|e| open_error(&shown, &e))?;
        check_or_create_schema(&connection, &shown)?;
        let synchronous = match options.durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        };
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous};"
            ))
            .map_err(|e| open_error(&shown, &e))?;
        if let Some(bytes) = options.max_size {
            let page_size: i64 = connection
                .query_row("PRAGMA page_size", [], |row| row.get(0))
                .map_err(|e| open_error(&shown, &e))?;
            let pages = (bytes / u64::try_from(page_size.max(512)).unwrap_or(4096)).max(1);
            connection
                .execute_batch(&format!("PRAGMA max_page_count = {pages};"))
                .map_err(|e| open_error(&shown, &e))?;
        }
        let checkpointer = Checkpointer::start(&mut connection, &path);
        Ok(SqliteLedger {
            connection: Mutex::new(connection),
            _checkpointer: checkpointer,
            path,
            clock,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first row claimable now that `query` matches, read without a write lock.
    fn first_candidate(&self, query: &CandidateQuery<'_>) -> Result<Option<u64>, LedgerError> {
        let (filter, values) = candidate_filter(query);
        let sql =
            format!("SELECT seq FROM ledger_rows WHERE {CLAIMABLE}{filter} ORDER BY seq LIMIT 1");
        let now = self.now();
        let after = seq_param(query.after_seq);
        self.lock()
            .prepare_cached(&sql)
            .and_then(|mut statement| {
                statement
                    .query_row(&*query_params(&now, &after, &values), |row| {
                        row.get::<_, i64>(0)
                    })
                    .optional()
            })
            .map(|seq| seq.map(row_seq))
            .map_err(read_error)
    }

    /// Takes row `seq`, read as a candidate of `query`, if it is claimable now and
    /// `query` still matches it: delivered in the statement that claims it (no lease, no
    /// claim columns). `None` when its guard failed.
    fn take_row(
        &self,
        seq: u64,
        query: &CandidateQuery<'_>,
    ) -> Result<Option<TakenRow>, LedgerError> {
        self.move_candidate(
            seq,
            query,
            |_| {
                "delivery = 'delivered', delivered_at = ?1, attempts = attempts + 1,
                 possible_redelivery = possible_redelivery OR delivery = 'claimed',
                 claim_id = NULL, claimed_by = NULL, lease_until = NULL, not_before = NULL"
                    .to_owned()
            },
            &[],
            "seq, event, possible_redelivery",
            |row| {
                let event: String = row.get(1)?;
                Ok(TakenRow {
                    seq: row_seq(row.get(0)?),
                    event: Arc::new(from_json(&event)?),
                    possible_redelivery: row.get::<_, i64>(2)? != 0,
                })
            },
        )
    }

    /// Moves row `seq`, read as a candidate of `query`, in one statement guarded by both:
    /// it is claimable now and `query` still matches it (a row changed since the read is
    /// left as it is). `set(n)` writes the `SET` list, its own parameters numbered from
    /// `?{n}` in the order of `own` (`?1` is now); `returning` is what `read` reads back.
    /// `None` when a guard failed.
    fn move_candidate<T>(
        &self,
        seq: u64,
        query: &CandidateQuery<'_>,
        set: impl FnOnce(usize) -> String,
        own: &[&dyn ToSql],
        returning: &str,
        read: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, LedgerError> {
        // `?1` now, `?2` the query's `after_seq`, the filter's values, the row's `seq`,
        // then the SET's own.
        let (filter, values) = candidate_filter(query);
        let at = values.len() + 3;
        let sql = format!(
            "UPDATE ledger_rows SET {}
             WHERE seq = ?{at} AND {CLAIMABLE}{filter}
             RETURNING {returning}",
            set(at + 1)
        );
        let now = self.now();
        let (after, seq) = (seq_param(query.after_seq), seq_param(seq));
        let mut params = query_params(&now, &after, &values);
        params.push(&seq);
        params.extend_from_slice(own);
        self.lock()
            .prepare_cached(&sql)
            .and_then(|mut statement| statement.query_row(&*params, read).optional())
            .map_err(write_error)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A connection whose user panicked mid-statement is still a connection: SQLite
        // rolls back an unfinished transaction when the next one starts.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Refuses a file that exists, is not empty and is not an SQLite database — before
/// SQLite could touch it.
fn refuse_non_sqlite(path: &Path, shown: &str) -> Result<(), LedgerError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(LedgerError::Unavailable {
                reason: format!("cannot read {shown}: {error}"),
            })
        }
    };
    let mut header = [0_u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(error) => {
                return Err(LedgerError::Unavailable {
                    reason: format!("cannot read {shown}: {error}"),
                })
            }
        }
    }
    if read == 0 || &header == SQLITE_HEADER {
        return Ok(());
    }
    Err(LedgerError::NotALedger {
        path: shown.to_owned(),
        reason: "it is not an SQLite database".to_owned(),
    })
}

fn check_or_create_schema(connection: &Connection, shown: &str) -> Result<(), LedgerError> {
    let pragma = |name: &str| -> Result<i64, LedgerError> {
        connection
            .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
            .map_err(|e| open_error(shown, &e))
    };
    let tables: i64 = connection
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(|e| open_error(shown, &e))?;
    let application_id = pragma("application_id")?;
    if tables == 0 && application_id == 0 {
        // A new (or empty) file: make it a ledger, in one transaction.
        connection
            .execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {SCHEMA_VERSION};
                 {SCHEMA}
                 COMMIT;"
            ))
            .map_err(|e| open_error(shown, &e))?;
        return Ok(());
    }
    if application_id != APPLICATION_ID {
        return Err(LedgerError::NotALedger {
            path: shown.to_owned(),
            reason: format!(
                "an SQLite database of another program (application id {application_id}, {tables} schema objects)"
            ),
        });
    }
    let version = pragma("user_version")?;
    if version > SCHEMA_VERSION {
        return Err(LedgerError::NewerSchema {
            path: shown.to_owned(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: SCHEMA_VERSION as u32,
        });
    }
    if version < 1 {
        return Err(LedgerError::Corrupt {
            path: shown.to_owned(),
            reason: format!("schema version {version} is not one this crate ever wrote"),
        });
    }
    let check: String = connection
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|e| open_error(shown, &e))?;
    if check != "ok" {
        return Err(LedgerError::Corrupt {
            path: shown.to_owned(),
            reason: check,
        });
    }
    Ok(())
}

fn open_error(shown: &str, error: &rusqlite::Error) -> LedgerError {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => LedgerError::NotALedger {
            path: shown.to_owned(),
            reason: error.to_string(),
        },
        Some(ErrorCode::DatabaseCorrupt) => LedgerError::Corrupt {
            path: shown.to_owned(),
            reason: error.to_string(),
        },
        _ => LedgerError::Unavailable {
            reason: format!("{shown}: {error}"),
        },
    }
}

fn write_error(error: rusqlite::Error) -> LedgerError {
    let reason = match error.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => format!("the ledger file is read-only ({error})"),
        Some(ErrorCode::DiskFull) => format!("the disk is full ({error})"),
        _ => error.to_string(),
    };
    LedgerError::Unwritable { reason }
}

fn read_error(error: rusqlite::Error) -> LedgerError {
    LedgerError::Unreadable {
        reason: error.to_string(),
    }
}

fn from_json(text: &str) -> rusqlite::Result<Event> {
    Event::from_json(text).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    })
}

/// Claimable now. The first condition is implied by the rest and is there for the query
/// planner: it lets SQLite read the `ledger_open` partial index instead of every row,
/// delivered ones included.
const CLAIMABLE: &str = "delivery IN ('pending', 'claimed') \
     AND ((delivery = 'pending' AND (not_before IS NULL OR not_before <= ?1)) \
     OR (delivery = 'claimed' AND lease_until <= ?1))";

/// The `WHERE` of a candidate query after `CLAIMABLE`, and its extra parameters
/// (numbered from `?3`: `?1` is now, `?2` the seq to start after).
fn candidate_filter(query: &CandidateQuery<'_>) -> (String, Vec<String>) {
    let mut sql = String::from(" AND seq > ?2");
    let mut values = Vec::new();
    let mut list =
        |sql: &mut String, column: &str, negate: bool, items: &mut dyn Iterator<Item = String>| {
            let items: Vec<String> = items.collect();
            if items.is_empty() {
                return;
            }
            let _ = write!(
                sql,
                " AND {column} {}IN (",
                if negate { "NOT " } else { "" }
            );
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                values.push(item);
                let _ = write!(sql, "?{}", values.len() + 2);
            }
            sql.push(')');
        };
    list(
        &mut sql,
        "kind",
        false,
        &mut query.kinds.iter().map(|k| (*k).to_owned()),
    );
    list(
        &mut sql,
        "kind",
        true,
        &mut query.except_kinds.iter().map(|k| (*k).to_owned()),
    );
    match query.sessions {
        SessionMatch::Any => {}
        SessionMatch::Cli => sql.push_str(" AND session_key = ''"),
        SessionMatch::Routed => sql.push_str(" AND session_key <> ''"),
        SessionMatch::Keys(keys) => {
            if keys.is_empty() {
                sql.push_str(" AND 0");
            } else {
                list(&mut sql, "session_key", false, &mut keys.iter().cloned());
            }
        }
    }
    if !query.restored {
        sql.push_str(" AND restored = 0");
    }
    (sql, values)
}

fn query_params<'a>(now: &'a f64, after: &'a i64, values: &'a [String]) -> Vec<&'a dyn ToSql> {
    let mut all: Vec<&dyn ToSql> = vec![now, after];
    all.extend(values.iter().map(|v| v as &dyn ToSql));
    all
}

fn read_claimed(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedRow> {
    let event: String = row.get(2)?;
    Ok(ClaimedRow {
        seq: row_seq(row.get(0)?),
        delegation_id: row.get::<_, Option<String>>(1)?.map(Text::from),
        event: Arc::new(from_json(&event)?),
        attempts: u32::try_from(row.get::<_, i64>(3)?).unwrap_or(u32::MAX),
        possible_redelivery: row.get::<_, i64>(4)? != 0,
        restored: row.get::<_, i64>(5)? != 0,
    })
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<LedgerRow> {
    let run_state: Option<String> = row.get(5)?;
    let status: Option<String> = row.get(6)?;
    let delivery: Option<String> = row.get(7)?;
    let event: String = row.get(19)?;
    Ok(LedgerRow {
        seq: row_seq(row.get(0)?),
        key: row.get(1)?,
        delegation_id: row.get(2)?,
        kind: row.get(3)?,
        session_key: row.get(4)?,
        run_state: sql::run_state(run_state.as_deref(), status),
        delivery: delivery.as_deref().and_then(DeliveryState::parse),
        attempts: u32::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
        reason: row.get(9)?,
        owner: row.get(10)?,
        claimed_by: row.get(11)?,
        restored: row.get::<_, i64>(12)? != 0,
        possible_redelivery: row.get::<_, i64>(13)? != 0,
        created_at: row.get(14)?,
        completed_at: row.get(15)?,
        delivered_at: row.get(16)?,
        not_before: row.get(17)?,
        lease_until: row.get(18)?,
        event: Arc::new(from_json(&event)?),
    })
}

impl SqliteLedger {
    fn write_pending(&self, new: &NewPending<'_>) -> Result<u64, LedgerError> {
        let event = to_json(&new.event)?;
        let now = self.now();
        let connection = self.lock();
        connection
            .prepare_cached(
                "INSERT INTO ledger_rows (kind, session_key, delivery, owner, created_at, completed_at, event)
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?4, ?5)",
            )
            .and_then(|mut statement| {
                statement.execute(params![new.event.type_name(), new.event.session_key().unwrap_or(""), new.owner, now, event])
            })
            .map_err(write_error)?;
        Ok(row_seq(connection.last_insert_rowid()))
    }
}

impl LedgerBackend for SqliteLedger {
    fn capabilities(&self) -> Capabilities {
        sql::CAPABILITIES
    }

    fn now(&self) -> f64 {
        self.clock.now()
    }

    fn insert_running(&self, new: NewRunning<'_>) -> Result<Inserted, LedgerError> {
        let event = to_json(&new.skeleton)?;
        let now = self.now();
        let connection = self.lock();
        let changed = connection
            .prepare_cached(
                "INSERT INTO ledger_rows (key, delegation_id, kind, session_key, run_state, owner, created_at, event)
                 VALUES (?1, ?1, ?2, ?3, 'running', ?4, ?5, ?6)
                 ON CONFLICT (delegation_id) DO NOTHING",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    new.delegation_id,
                    new.skeleton.type_name(),
                    new.session_key,
                    new.owner,
                    now,
                    event
                ])
            })
            .map_err(write_error)?;
        Ok(if changed == 0 {
            Inserted::IdTaken
        } else {
            Inserted::Row(row_seq(connection.last_insert_rowid()))
        })
    }

    fn insert_pending(&self, new: NewPending<'_>) -> Result<u64, PendingRefused> {
        self.write_pending(&new).map_err(|error| PendingRefused {
            error,
            event: Box::new(new.event),
        })
    }

    fn finish_run(&self, finish: Finish<'_>) -> Result<Option<u64>, LedgerError> {
        let event = to_json(&finish.event)?;
        let (phase, status) = match &finish.run_state {
            RunState::Running => ("running", None),
            RunState::Finished(status) => ("finished", Some(status.as_str())),
            RunState::Unknown => ("unknown", Some("unknown")),
        };
        let now = self.now();
        self.lock()
            .prepare_cached(
                "UPDATE ledger_rows
                 SET run_state = ?1, status = ?2, delivery = 'pending', event = ?3, reason = ?4, completed_at = ?5,
                     seq = (SELECT max(seq) FROM ledger_rows) + 1
                 WHERE delegation_id = ?6 AND run_state = 'running' AND (?7 IS NULL OR owner = ?7)
                 RETURNING seq",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![phase, status, event, finish.reason, now, finish.delegation_id, finish.expect_owner],
                        |row| row.get::<_, i64>(0),
                    )
                    .optional()
            })
            .map(|seq| seq.map(row_seq))
            .map_err(write_error)
    }

    fn retract_running(&self, delegation_id: &str, owner: &str) -> Result<bool, LedgerError> {
        let changed = self
            .lock()
            .prepare_cached(
                "DELETE FROM ledger_rows WHERE delegation_id = ?1 AND run_state = 'running' AND owner = ?2",
            )
            .and_then(|mut statement| statement.execute(params![delegation_id, owner]))
            .map_err(write_error)?;
        Ok(changed == 1)
    }

    fn candidates(
        &self,
        query: &CandidateQuery<'_>,
        limit: usize,
    ) -> Result<Vec<Candidate>, LedgerError> {
        let (filter, values) = candidate_filter(query);
        let sql = format!(
            "SELECT seq, event FROM ledger_rows WHERE {CLAIMABLE}{filter} ORDER BY seq LIMIT {}",
            limit.min(i64::MAX as usize)
        );
        let now = self.now();
        let after = seq_param(query.after_seq);
        let connection = self.lock();
        let mut statement = connection.prepare_cached(&sql).map_err(read_error)?;
        let rows = statement
            .query_map(&*query_params(&now, &after, &values), |row| {
                let event: String = row.get(1)?;
                Ok(Candidate {
                    seq: row_seq(row.get(0)?),
                    event: Arc::new(from_json(&event)?),
                })
            })
            .map_err(read_error)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(read_error)
    }

    fn count_candidates(&self, query: &CandidateQuery<'_>) -> Result<usize, LedgerError> {
        let (filter, values) = candidate_filter(query);
        let sql = format!("SELECT count(*) FROM ledger_rows WHERE {CLAIMABLE}{filter}");
        let now = self.now();
        let after = seq_param(query.after_seq);
        let connection = self.lock();
        let count: i64 = connection
            .prepare_cached(&sql)
            .and_then(|mut statement| {
                statement.query_row(&*query_params(&now, &after, &values), |row| row.get(0))
            })
            .map_err(read_error)?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    fn next_due(&self, query: &CandidateQuery<'_>) -> Result<Option<f64>, LedgerError> {
        let (filter, values) = candidate_filter(query);
        let sql = format!(
            "SELECT min(CASE delivery WHEN 'pending' THEN not_before ELSE lease_until END)
             FROM ledger_rows
             WHERE delivery IN ('pending', 'claimed')
               AND ((delivery = 'pending' AND not_before > ?1) OR (delivery = 'claimed' AND lease_until > ?1)){filter}"
        );
        let now = self.now();
        let after = seq_param(query.after_seq);
        let connection = self.lock();
        connection
            .prepare_cached(&sql)
            .and_then(|mut statement| {
                statement.query_row(&*query_params(&now, &after, &values), |row| row.get(0))
            })
            .map_err(read_error)
    }

    fn claim(&self, seq: u64, claim: NewClaim<'_>) -> Result<Option<ClaimedRow>, LedgerError> {
        self.claim_matching(seq, &sql::EVERY_ROW, claim, None)
    }

    fn claim_matching(
        &self,
        seq: u64,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
        fence: Option<Fence<'_>>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        if let Some(fence) = fence {
            // This store keeps no ownership leases: the trait's refusal.
            return self.claim_fenced(seq, claim, fence);
        }
        let (id, owner, lease) = (
            token_id(claim.token),
            claim.token.owner,
            claim.lease_seconds,
        );
        self.move_candidate(
            seq,
            query,
            |n| {
                format!(
                    "delivery = 'claimed', claim_id = ?{n}, claimed_by = ?{}, lease_until = ?1 + ?{},
                     not_before = NULL, attempts = attempts + 1,
                     possible_redelivery = possible_redelivery OR delivery = 'claimed'",
                    n + 1,
                    n + 2
                )
            },
            &[&id, &owner, &lease],
            CLAIMED_COLUMNS,
            read_claimed,
        )
    }

    fn claim_next(
        &self,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        // Read first: a look that finds nothing never waits for another process's write
        // lock. Then the guarded claim, under the query (the row may have changed since).
        first_moved(
            query,
            |query| self.first_candidate(query),
            |seq| self.claim_matching(seq, query, claim, None),
        )
    }

    fn take_next(&self, query: &CandidateQuery<'_>) -> Result<Option<TakenRow>, LedgerError> {
        // As `claim_next`: read first, so an empty look takes no write lock.
        first_moved(
            query,
            |query| self.first_candidate(query),
            |seq| self.take_row(seq, query),
        )
    }

    fn settle(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        settle: Settle<'_>,
    ) -> Result<bool, LedgerError> {
        const GUARD: &str = "claim_id = NULL, claimed_by = NULL, lease_until = NULL
             WHERE seq = ?1 AND delivery = 'claimed' AND claim_id = ?2 AND claimed_by = ?3";
        let now = self.now();
        let (seq, connection) = (seq_param(seq), self.lock());
        let (id, owner) = (token_id(token), token.owner);
        let run = |sql: &str, extra: &[&dyn ToSql]| -> rusqlite::Result<usize> {
            let mut all: Vec<&dyn ToSql> = vec![&seq, &id, &owner];
            all.extend_from_slice(extra);
            connection.prepare_cached(sql)?.execute(&*all)
        };
        let changed = match settle {
            Settle::Ack => run(
                &format!("UPDATE ledger_rows SET delivery = 'delivered', delivered_at = ?4, {GUARD}"),
                &[&now],
            ),
            Settle::Defer => run(
                &format!("UPDATE ledger_rows SET delivery = 'pending', attempts = max(attempts - 1, 0), {GUARD}"),
                &[],
            ),
            Settle::Release { backoff_seconds, reason } => run(
                &format!("UPDATE ledger_rows SET delivery = 'pending', not_before = ?4 + ?5, reason = ?6, {GUARD}"),
                &[&now, &backoff_seconds, &reason],
            ),
            Settle::Dead { reason } => run(
                &format!("UPDATE ledger_rows SET delivery = 'dead', reason = ?4, {GUARD}"),
                &[&reason],
            ),
        }
        .map_err(write_error)?;
        Ok(changed == 1)
    }

    fn renew(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        lease_seconds: f64,
    ) -> Result<bool, LedgerError> {
        let now = self.now();
        let changed = self
            .lock()
            .prepare_cached(
                "UPDATE ledger_rows SET lease_until = ?1 + ?2
                 WHERE seq = ?3 AND delivery = 'claimed' AND claim_id = ?4 AND claimed_by = ?5",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    now,
                    lease_seconds,
                    seq_param(seq),
                    token_id(token),
                    token.owner
                ])
            })
            .map_err(write_error)?;
        Ok(changed == 1)
    }

    fn rows(&self, query: &RowQuery) -> Result<Vec<LedgerRow>, LedgerError> {
        let (filter, values) = sql::row_filter(query, |n| format!("?{n}"));
        let sql = format!("SELECT {ROW_COLUMNS} FROM ledger_rows WHERE 1{filter}");
        let connection = self.lock();
        let mut statement = connection.prepare_cached(&sql).map_err(read_error)?;
        let params: Vec<&dyn ToSql> = values.iter().map(|v| v as &dyn ToSql).collect();
        let rows = statement
            .query_map(&*params, read_row)
            .map_err(read_error)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(read_error)
    }

    fn owners(&self) -> Result<Vec<String>, LedgerError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                                "SELECT owner FROM ledger_rows WHERE run_state = 'running'
                 UNION SELECT owner FROM ledger_rows
                     WHERE delivery IN ('pending', 'claimed') AND delivery = 'pending' AND restored = 0
                 UNION SELECT claimed_by FROM ledger_rows
                     WHERE delivery IN ('pending', 'claimed') AND delivery = 'claimed' AND claimed_by IS NOT NULL",
            )
            .map_err(read_error)?;
        let owners = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(read_error)?;
        owners
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(read_error)
    }

    fn adopt_orphans(&self, owner: &str) -> Result<u64, LedgerError> {
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(write_error)?;
        let reclaimed = transaction
            .execute(
                "UPDATE ledger_rows SET delivery = 'pending', claim_id = NULL, claimed_by = NULL,
                     lease_until = NULL, possible_redelivery = 1
                 WHERE delivery IN ('pending', 'claimed') AND delivery = 'claimed' AND claimed_by = ?1",
                params![owner],
            )
            .map_err(write_error)?;
        let restored = transaction
            .execute(
                "UPDATE ledger_rows SET restored = 1
                 WHERE owner = ?1 AND delivery IN ('pending', 'claimed') AND restored = 0",
                params![owner],
            )
            .map_err(write_error)?;
        transaction.commit().map_err(write_error)?;
        Ok((reclaimed + restored) as u64)
    }

    fn expire_pending(&self, completed_before: f64, reason: &str) -> Result<u64, LedgerError> {
        let changed = self
            .lock()
            .prepare_cached(
                "UPDATE ledger_rows SET delivery = 'dead', reason = ?2
                 WHERE delivery IN ('pending', 'claimed') AND delivery = 'pending' AND restored = 1 AND completed_at < ?1",
            )
            .and_then(|mut statement| statement.execute(params![completed_before, reason]))
            .map_err(write_error)?;
        Ok(changed as u64)
    }

    fn requeue(&self, seq: u64) -> Result<bool, LedgerError> {
        let changed = self
            .lock()
            .prepare_cached(
                "UPDATE ledger_rows SET delivery = 'pending', attempts = 0, not_before = NULL
                 WHERE seq = ?1 AND delivery = 'dead'",
            )
            .and_then(|mut statement| statement.execute(params![seq_param(seq)]))
            .map_err(write_error)?;
        Ok(changed == 1)
    }

    fn prune_delivered(&self, delivered_before: f64) -> Result<u64, LedgerError> {
        let changed = self
            .lock()
            .prepare_cached(
                "DELETE FROM ledger_rows WHERE delivery = 'delivered' AND delivered_at < ?1",
            )
            .and_then(|mut statement| statement.execute(params![delivered_before]))
            .map_err(write_error)?;
        Ok(changed as u64)
    }

    fn count_undelivered(&self) -> Result<u64, LedgerError> {
        // Counted on the `ledger_open` index: as cheap as the open rows are few.
        let count: i64 = self
            .lock()
            .prepare_cached(
                "SELECT count(*) FROM ledger_rows WHERE delivery IN ('pending', 'claimed')",
            )
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(read_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
