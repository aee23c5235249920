//! `PostgresLedger`: the ledger on a PostgreSQL server, for fleets (feature `postgres`).
//!
//! # Design
//!
//! The same rows and the same guarded transitions as the SQLite backend, in one schema of
//! a PostgreSQL database: every primitive of [`LedgerBackend`] is one statement whose
//! `WHERE` names the state it moves from; the one-step claims and takes pick their row
//! with `FOR UPDATE SKIP LOCKED`, so consumers in many processes never wait on each
//! other's row. Calls run on the handle's connection threads (`connection.rs`): the sync
//! `postgres` client runs a runtime of its own, which must never be a caller's. A
//! trigger notifies the schema's channel whenever a row becomes pending, and a listener
//! thread wakes the queues of this handle (`listener.rs`) — a hint only: a missed
//! notification delays a consumer until the queue's next sweep, it never loses a row.
//! Instances beat (`heartbeat.rs`): each queue's instance holds a lease in
//! `ledger_instances`, in the server's clock, and owners are judged by their leases.
//! The schema is marked as ours and versioned (`ledger_meta`): a schema that holds
//! another program's objects, or one written by a newer version, is refused at open and
//! left as it was.

mod connection;
mod heartbeat;
mod listener;
mod ownership;
mod schema;

use std::fmt::Write as _;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::Row;

use super::backend::{
    Candidate, CandidateQuery, Capabilities, ClaimToken, ClaimedRow, DeliveryState, Fence, Finish,
    Inserted, LedgerBackend, LedgerRow, NewClaim, NewPending, NewRunning, PendingRefused, RowQuery,
    RunState, ScopeLease, SessionMatch, Settle, TakenRow,
};
use super::clock::{Clock, SystemClock};
use super::sql::{self, row_seq, seq_param, to_json, token_id, CLAIMED_COLUMNS, ROW_COLUMNS};
use crate::{Event, LedgerError};
use connection::{Connections, Session};
use heartbeat::Heartbeat;
use listener::Listener;
use schema::check_or_create_schema;

pub use connection::CONNECTION_THREAD_NAME as POSTGRES_CONNECTION_THREAD_NAME;
pub use heartbeat::HEARTBEAT_THREAD_NAME as POSTGRES_HEARTBEAT_THREAD_NAME;
pub use listener::LISTENER_THREAD_NAME as POSTGRES_LISTENER_THREAD_NAME;

/// How many delivered rows one statement of a prune deletes.
const PRUNE_BATCH: i64 = 5_000;

/// Options of [`PostgresLedger::connect_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The schema that holds the ledger's tables (default `delegation_ledger`); created
    /// when missing. Letters, digits and `_`, at most 48 characters, not starting with a
    /// digit. Processes that share a ledger name the same schema.
    pub schema: String,
    /// Connections (and threads) this handle uses for its calls (default 4): calls beyond
    /// that many at once wait for a free one. One more connection listens for
    /// notifications.
    pub connections: usize,
    /// How long an instance counts as alive after its last heartbeat (default 30 s; it
    /// beats every third of that). A worker killed mid-run has its running delegations
    /// recorded `unknown` by the first sweep after its lease ran out.
    pub instance_lease: Duration,
    /// The longest a statement of this handle may run on the server, waiting for a lock
    /// included (default 30 s; the server's `statement_timeout`, set on each of its
    /// connections, rounded up to a millisecond). A statement held past it — behind
    /// another session's lock, say, or the schema's migration by another process at
    /// open — is cancelled, and the call fails with a clear error instead of blocking its
    /// caller; the queue retries a refused write at its sweep. `Duration::ZERO` leaves
    /// the server's own setting; one longer than the server takes (about 24.8 days) is
    /// that longest. A `statement_timeout` in the connection string's `options` wins over
    /// this one. The open's check and migration of the schema is not held to it (it must
    /// finish once begun), and a prune deletes in batches that each fit well within it.
    pub statement_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "delegation_ledger".to_owned(),
            connections: 4,
            instance_lease: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl PostgresOptions {
    /// Sets the schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the instance lease.
    pub fn with_instance_lease(mut self, lease: Duration) -> Self {
        self.instance_lease = lease;
        self
    }

    /// Sets the statement timeout (`Duration::ZERO`: the server's own).
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets the number of connections.
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = connections;
        self
    }
}

/// A completion ledger in a PostgreSQL database, shared by every process that opens the
/// same schema — on one machine or many. Commits are the server's (durable as its
/// `synchronous_commit` says; on by default).
///
/// Each handle runs [`connections`](PostgresOptions::connections) threads named
/// `postgres-ledger` that make its calls, and, once a queue is opened on it, one thread
/// named `postgres-ledger-listen` that wakes the queue's consumers when any process
/// records a completion. A queue opened on it without a liveness of its own registers
/// its instance with a lease ([`instance_lease`](PostgresOptions::instance_lease)) that a
/// `postgres-ledger-heartbeat` thread renews, and judges other owners by their leases —
/// not by this machine's processes, which a fleet's other machines are not: a worker
/// killed anywhere has its running delegations recorded `unknown` by the first sweep
/// after its lease ran out. A call blocks its caller for the server's round trip, as an
/// SQLite commit would; the threads end after the handle (and its queues) are dropped.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use process_registry::{CompletionQueue, PostgresLedger};
///
/// let ledger = PostgresLedger::connect("host=127.0.0.1 user=postgres dbname=test")?;
/// let queue = CompletionQueue::builder(ledger).open()?;
/// # drop(queue);
/// # Ok(())
/// # }
/// ```
pub struct PostgresLedger {
    connections: Arc<Connections>,
    instance_lease: Duration,
    listener: Listener,
    schema: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresLedger {
    /// Connects with the default options. `params` is a libpq-style connection string
    /// (`host=127.0.0.1 user=postgres dbname=test`) or URL (`postgresql://…`).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the string does not parse or the server cannot
    /// be reached; [`LedgerError::NotALedger`] for a schema that holds another program's
    /// objects; [`LedgerError::NewerSchema`] for a ledger written by a newer version; the
    /// schema is left untouched in both cases.
    pub fn connect(params: &str) -> Result<PostgresLedger, LedgerError> {
        Self::connect_with(params, PostgresOptions::default())
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn connect_with(
        params: &str,
        options: PostgresOptions,
    ) -> Result<PostgresLedger, LedgerError> {
        Self::connect_with_clock(params, options, Arc::new(SystemClock))
    }

    /// Connects with `options`, reading time from `clock` (tests).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn connect_with_clock(
        params: &str,
        options: PostgresOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<PostgresLedger, LedgerError> {
        let (schema, instance_lease) = (options.schema, options.instance_lease);
        check_schema_name(&schema)?;
        let config =
            postgres::Config::from_str(params).map_err(|error| LedgerError::Unavailable {
                reason: format!("the connection string does not parse: {error}"),
            })?;
        let config = connection::with_statement_timeout(
            connection::bounded(config),
            options.statement_timeout,
        );
        let connections = Connections::start(options.connections, || {
            Session::new(config.clone(), schema.clone())
        })?;
        let shown = shown(&schema);
        let checked_schema = schema.clone();
        connections.run(move |session| check_or_create_schema(session, &checked_schema, &shown))?;
        Ok(PostgresLedger {
            connections: Arc::new(connections),
            instance_lease,
            listener: Listener::new(config, channel(&schema)),
            schema,
            clock,
        })
    }

    /// The schema that holds the ledger.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Runs `call` on a connection; `what` maps its error.
    fn run<T: Send + 'static>(
        &self,
        what: fn(postgres::Error) -> LedgerError,
        call: impl FnOnce(&mut Session) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, LedgerError> {
        self.connections
            .run(move |session| call(session).map_err(what))
    }
}

/// `"name"`: an identifier (already checked to need no escaping).
pub(crate) fn quoted(identifier: &str) -> String {
    format!("\"{identifier}\"")
}

/// The notification channel of a schema's ledger.
pub(crate) fn channel(schema: &str) -> String {
    format!("ledger_{schema}")
}

fn shown(schema: &str) -> String {
    format!("the PostgreSQL schema {schema}")
}

fn check_schema_name(schema: &str) -> Result<(), LedgerError> {
    let fine = !schema.is_empty()
        && schema.len() <= 48
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if fine {
        Ok(())
    } else {
        Err(LedgerError::Unavailable {
            reason: format!(
                "{schema:?} is not a schema name this ledger uses: letters, digits and '_', \
                 at most 48, not starting with a digit"
            ),
        })
    }
}

/// The error with the server's own words, when it sent some.
pub(crate) fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

fn write_error(error: postgres::Error) -> LedgerError {
    if connection::is_lost(&error) {
        return lost(&error);
    }
    LedgerError::Unwritable {
        reason: describe(&error),
    }
}

fn read_error(error: postgres::Error) -> LedgerError {
    if connection::is_lost(&error) {
        return lost(&error);
    }
    LedgerError::Unreadable {
        reason: describe(&error),
    }
}

fn lost(error: &postgres::Error) -> LedgerError {
    LedgerError::Unavailable {
        reason: format!("the connection to the server was lost: {}", describe(error)),
    }
}

fn from_json(text: &str) -> Result<Event, LedgerError> {
    Event::from_json(text).map_err(|error| LedgerError::Unreadable {
        reason: format!("a row's event does not parse: {error}"),
    })
}

/// Claimable now (`$1`: now). The first condition is implied by the rest and lets the
/// planner read the `ledger_open` partial index.
const CLAIMABLE: &str = "delivery IN ('pending', 'claimed') \
     AND ((delivery = 'pending' AND (not_before IS NULL OR not_before <= $1)) \
     OR (delivery = 'claimed' AND lease_until <= $1))";

/// A parameter moved onto a connection thread.
type Param = Box<dyn ToSql + Sync + Send>;

/// The `WHERE` of a candidate query after `CLAIMABLE`; its parameters are appended to
/// `params` and numbered after them (`$1` is now and `$2` the seq to start after, passed
/// apart: [`with_filter`]).
fn candidate_filter(query: &CandidateQuery<'_>, params: &mut Vec<Param>) -> String {
    let mut sql = String::from(" AND seq > $2");
    let mut any = |sql: &mut String, column: &str, negate: bool, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        params.push(Box::new(items));
        let n = params.len() + 2;
        if negate {
            let _ = write!(sql, " AND NOT ({column} = ANY(${n}))");
        } else {
            let _ = write!(sql, " AND {column} = ANY(${n})");
        }
    };
    let owned = |items: &[&str]| items.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
    any(&mut sql, "kind", false, owned(query.kinds));
    any(&mut sql, "kind", true, owned(query.except_kinds));
    match query.sessions {
        SessionMatch::Any => {}
        SessionMatch::Cli => sql.push_str(" AND session_key = ''"),
        SessionMatch::Routed => sql.push_str(" AND session_key <> ''"),
        SessionMatch::Keys(keys) => {
            if keys.is_empty() {
                sql.push_str(" AND false");
            } else {
                any(&mut sql, "session_key", false, keys.to_vec());
            }
        }
    }
    if !query.restored {
        sql.push_str(" AND NOT restored");
    }
    sql
}

/// `now`, `after`, then the filter's parameters, as the client takes them.
fn with_filter<'a>(
    now: &'a f64,
    after: &'a i64,
    params: &'a [Param],
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut all: Vec<&(dyn ToSql + Sync)> = vec![now, after];
    all.extend(params.iter().map(|p| &**p as &(dyn ToSql + Sync)));
    all
}

fn read_claimed(row: &Row) -> Result<ClaimedRow, LedgerError> {
    let event: String = row.try_get(2).map_err(read_error)?;
    Ok(ClaimedRow {
        seq: row_seq(row.try_get(0).map_err(read_error)?),
        delegation_id: row
            .try_get::<_, Option<String>>(1)
            .map_err(read_error)?
            .map(Into::into),
        event: Arc::new(from_json(&event)?),
        attempts: u32::try_from(row.try_get::<_, i32>(3).map_err(read_error)?).unwrap_or(0),
        possible_redelivery: row.try_get(4).map_err(read_error)?,
        restored: row.try_get(5).map_err(read_error)?,
    })
}

fn read_row(row: &Row) -> Result<LedgerRow, LedgerError> {
    let get = |error| read_error(error);
    let run_state: Option<String> = row.try_get(5).map_err(get)?;
    let status: Option<String> = row.try_get(6).map_err(get)?;
    let delivery: Option<String> = row.try_get(7).map_err(get)?;
    let event: String = row.try_get(19).map_err(get)?;
    Ok(LedgerRow {
        seq: row_seq(row.try_get(0).map_err(get)?),
        key: row.try_get(1).map_err(get)?,
        delegation_id: row.try_get(2).map_err(get)?,
        kind: row.try_get(3).map_err(get)?,
        session_key: row.try_get(4).map_err(get)?,
        run_state: sql::run_state(run_state.as_deref(), status),
        delivery: delivery.as_deref().and_then(DeliveryState::parse),
        attempts: u32::try_from(row.try_get::<_, i32>(8).map_err(get)?).unwrap_or(0),
        reason: row.try_get(9).map_err(get)?,
        owner: row.try_get(10).map_err(get)?,
        claimed_by: row.try_get(11).map_err(get)?,
        restored: row.try_get(12).map_err(get)?,
        possible_redelivery: row.try_get(13).map_err(get)?,
        created_at: row.try_get(14).map_err(get)?,
        completed_at: row.try_get(15).map_err(get)?,
        delivered_at: row.try_get(16).map_err(get)?,
        not_before: row.try_get(17).map_err(get)?,
        lease_until: row.try_get(18).map_err(get)?,
        event: Arc::new(from_json(&event)?),
    })
}

impl PostgresLedger {
    fn write_pending(&self, new: &NewPending<'_>) -> Result<u64, LedgerError> {
        let event = to_json(&new.event)?;
        let (kind, session_key) = (
            new.event.type_name().to_owned(),
            new.event.session_key().unwrap_or("").to_owned(),
        );
        let (owner, now) = (new.owner.to_owned(), self.now());
        let rows = self.run(write_error, move |session| {
            session.query(
                "INSERT INTO ledger_rows (kind, session_key, delivery, owner, created_at, completed_at, event)
                 VALUES ($1, $2, 'pending', $3, $4, $4, $5) RETURNING seq",
                &[&kind, &session_key, &owner, &now, &event],
            )
        })?;
        first_u64(&rows).ok_or_else(|| LedgerError::Unwritable {
            reason: "the insert returned no row".to_owned(),
        })
    }

    /// The one-step move of the first claimable row `query` matches: `set` is the
    /// `SET` list (`params` are its own, numbered from `$3`), `returning` what comes back.
    fn move_first<T: Send + 'static>(
        &self,
        query: &CandidateQuery<'_>,
        set: &str,
        mut params: Vec<Param>,
        returning: &str,
        read: fn(&Row) -> Result<T, LedgerError>,
    ) -> Result<Option<T>, LedgerError> {
        // The SET's parameters come first (from `$3`), the filter's after them.
        let filter = candidate_filter(query, &mut params);
        let sql = format!(
            "UPDATE ledger_rows SET {set}
             WHERE seq = (SELECT seq FROM ledger_rows WHERE {CLAIMABLE}{filter}
                          ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
               AND {CLAIMABLE}
             RETURNING {returning}"
        );
        let (now, after) = (self.now(), seq_param(query.after_seq));
        let rows = self.run(write_error, move |session| {
            session.query(&sql, &with_filter(&now, &after, &params))
        })?;
        rows.first().map(read).transpose()
    }
}

/// The fence of an unfenced claim.
const UNFENCED: [&str; 2] = ["NULL", "NULL"];

/// The `SET` of a claim under a new token and lease (`id`, `owner`, `lease`: its
/// parameters; `$1` is now), fenced by `fence`'s scope and epoch (`NULL`s: unfenced).
fn claim_set(id: &str, owner: &str, lease: &str, fence: [&str; 2]) -> String {
    let [scope, epoch] = fence;
    format!(
        "delivery = 'claimed', claim_id = {id}, claimed_by = {owner}, lease_until = $1::float8 + {lease}::float8,
         not_before = NULL, attempts = attempts + 1, claim_scope = {scope}, claim_epoch = {epoch},
         possible_redelivery = possible_redelivery OR delivery = 'claimed'"
    )
}

/// The first row's first column, a `bigint` (a seq, or a count), as read back.
fn first_u64(rows: &[Row]) -> Option<u64> {
    rows.first()
        .and_then(|row| row.try_get::<_, i64>(0).ok())
        .map(row_seq)
}

impl LedgerBackend for PostgresLedger {
    fn capabilities(&self) -> Capabilities {
        sql::CAPABILITIES
    }

    fn now(&self) -> f64 {
        self.clock.now()
    }

    fn insert_running(&self, new: NewRunning<'_>) -> Result<Inserted, LedgerError> {
        let event = to_json(&new.skeleton)?;
        let (id, kind, session_key, owner) = (
            new.delegation_id.to_owned(),
            new.skeleton.type_name().to_owned(),
            new.session_key.to_owned(),
            new.owner.to_owned(),
        );
        let now = self.now();
        let rows = self.run(write_error, move |session| {
            session.query(
                "INSERT INTO ledger_rows (key, delegation_id, kind, session_key, run_state, owner, created_at, event)
                 VALUES ($1, $1, $2, $3, 'running', $4, $5, $6)
                 ON CONFLICT (delegation_id) DO NOTHING
                 RETURNING seq",
                &[&id, &kind, &session_key, &owner, &now, &event],
            )
        })?;
        Ok(match first_u64(&rows) {
            Some(seq) => Inserted::Row(seq),
            None => Inserted::IdTaken,
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
            RunState::Finished(status) => ("finished", Some(status.as_str().to_owned())),
            RunState::Unknown => ("unknown", Some("unknown".to_owned())),
        };
        let (reason, id) = (
            finish.reason.map(str::to_owned),
            finish.delegation_id.to_owned(),
        );
        let owner = finish.expect_owner.map(str::to_owned);
        let now = self.now();
        let rows = self.run(write_error, move |session| {
            // A new seq: the completion goes to the tail, in completion order.
            session.query(
                "UPDATE ledger_rows
                 SET run_state = $1, status = $2, delivery = 'pending', event = $3, reason = $4, completed_at = $5,
                     seq = nextval(pg_get_serial_sequence('ledger_rows', 'seq'))
                 WHERE delegation_id = $6 AND run_state = 'running' AND ($7::text IS NULL OR owner = $7)
                 RETURNING seq",
                &[&phase, &status, &event, &reason, &now, &id, &owner],
            )
        })?;
        Ok(first_u64(&rows))
    }

    fn retract_running(&self, delegation_id: &str, owner: &str) -> Result<bool, LedgerError> {
        let (id, owner) = (delegation_id.to_owned(), owner.to_owned());
        let changed = self.run(write_error, move |session| {
            session.execute(
                "DELETE FROM ledger_rows WHERE delegation_id = $1 AND run_state = 'running' AND owner = $2",
                &[&id, &owner],
            )
        })?;
        Ok(changed == 1)
    }

    fn candidates(
        &self,
        query: &CandidateQuery<'_>,
        limit: usize,
    ) -> Result<Vec<Candidate>, LedgerError> {
        let mut params = Vec::new();
        let filter = candidate_filter(query, &mut params);
        let sql = format!(
            "SELECT seq, event FROM ledger_rows WHERE {CLAIMABLE}{filter} ORDER BY seq LIMIT {}",
            limit.min(i64::MAX as usize)
        );
        let (now, after) = (self.now(), seq_param(query.after_seq));
        let rows = self.run(read_error, move |session| {
            session.query(&sql, &with_filter(&now, &after, &params))
        })?;
        rows.iter()
            .map(|row| {
                let event: String = row.try_get(1).map_err(read_error)?;
                Ok(Candidate {
                    seq: row_seq(row.try_get(0).map_err(read_error)?),
                    event: Arc::new(from_json(&event)?),
                })
            })
            .collect()
    }

    fn count_candidates(&self, query: &CandidateQuery<'_>) -> Result<usize, LedgerError> {
        let mut params = Vec::new();
        let filter = candidate_filter(query, &mut params);
        let sql = format!("SELECT count(*) FROM ledger_rows WHERE {CLAIMABLE}{filter}");
        let (now, after) = (self.now(), seq_param(query.after_seq));
        let rows = self.run(read_error, move |session| {
            session.query(&sql, &with_filter(&now, &after, &params))
        })?;
        Ok(first_u64(&rows).map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    fn next_due(&self, query: &CandidateQuery<'_>) -> Result<Option<f64>, LedgerError> {
        let mut params = Vec::new();
        let filter = candidate_filter(query, &mut params);
        let sql = format!(
            "SELECT min(CASE delivery WHEN 'pending' THEN not_before ELSE lease_until END)
             FROM ledger_rows
             WHERE delivery IN ('pending', 'claimed')
               AND ((delivery = 'pending' AND not_before > $1) OR (delivery = 'claimed' AND lease_until > $1)){filter}"
        );
        let (now, after) = (self.now(), seq_param(query.after_seq));
        let rows = self.run(read_error, move |session| {
            session.query(&sql, &with_filter(&now, &after, &params))
        })?;
        match rows.first() {
            Some(row) => row.try_get(0).map_err(read_error),
            None => Ok(None),
        }
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
        // One statement guarded by all: claimable now, still matched by `query` (a row
        // changed since it was read is left as it is), and, with a `fence`, the claiming
        // instance holds that lease (`ownership::lease_held`). Its parameters: `$1` now,
        // `$2` the query's `after_seq`, then these, then the filter's.
        let mut params: Vec<Param> = vec![
            Box::new(token_id(claim.token)),
            Box::new(claim.token.owner.to_owned()),
            Box::new(claim.lease_seconds),
            Box::new(seq_param(seq)),
        ];
        let (fenced_by, held) = match fence {
            None => (UNFENCED, String::new()),
            Some(fence) => {
                params.push(Box::new(fence.scope.to_owned()));
                params.push(Box::new(ownership::epoch_param(fence.epoch)));
                (["$7", "$8"], ownership::lease_held("$7", "$4", "$8"))
            }
        };
        let filter = candidate_filter(query, &mut params);
        let sql = format!(
            "UPDATE ledger_rows SET {}
             WHERE seq = $6 AND {CLAIMABLE}{filter}{held}
             RETURNING {CLAIMED_COLUMNS}",
            claim_set("$3", "$4", "$5", fenced_by)
        );
        let (now, after) = (self.now(), seq_param(query.after_seq));
        let rows = self.run(write_error, move |session| {
            session.query(&sql, &with_filter(&now, &after, &params))
        })?;
        rows.first().map(read_claimed).transpose()
    }

    fn claim_next(
        &self,
        query: &CandidateQuery<'_>,
        claim: NewClaim<'_>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        // One statement: the first claimable row, locked (others skip it), then moved by
        // its guard. The filter's parameters follow the three of the SET.
        let params: Vec<Param> = vec![
            Box::new(token_id(claim.token)),
            Box::new(claim.token.owner.to_owned()),
            Box::new(claim.lease_seconds),
        ];
        let set = claim_set("$3", "$4", "$5", UNFENCED);
        self.move_first(query, &set, params, CLAIMED_COLUMNS, read_claimed)
    }

    fn take_next(&self, query: &CandidateQuery<'_>) -> Result<Option<TakenRow>, LedgerError> {
        self.move_first(
            query,
            "delivery = 'delivered', delivered_at = $1, attempts = attempts + 1,
             possible_redelivery = possible_redelivery OR delivery = 'claimed',
             claim_id = NULL, claimed_by = NULL, lease_until = NULL, not_before = NULL",
            Vec::new(),
            "seq, event, possible_redelivery",
            |row| {
                let event: String = row.try_get(1).map_err(read_error)?;
                Ok(TakenRow {
                    seq: row_seq(row.try_get(0).map_err(read_error)?),
                    event: Arc::new(from_json(&event)?),
                    possible_redelivery: row.try_get(2).map_err(read_error)?,
                })
            },
        )
    }

    fn settle(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        settle: Settle<'_>,
    ) -> Result<bool, LedgerError> {
        let guard = format!(
            "claim_id = NULL, claimed_by = NULL, lease_until = NULL, claim_scope = NULL, claim_epoch = NULL
             WHERE seq = $1 AND delivery = 'claimed' AND claim_id = $2 AND claimed_by = $3 AND {}",
            ownership::FENCE_HOLDS
        );
        let mut params: Vec<Param> = vec![
            Box::new(seq_param(seq)),
            Box::new(token_id(token)),
            Box::new(token.owner.to_owned()),
        ];
        let now = self.now();
        let sql = match settle {
            Settle::Ack => {
                params.push(Box::new(now));
                format!("UPDATE ledger_rows SET delivery = 'delivered', delivered_at = $4, {guard}")
            }
            Settle::Defer => format!(
                "UPDATE ledger_rows SET delivery = 'pending', attempts = GREATEST(attempts - 1, 0), {guard}"
            ),
            Settle::Release {
                backoff_seconds,
                reason,
            } => {
                params.push(Box::new(now));
                params.push(Box::new(backoff_seconds));
                params.push(Box::new(reason.to_owned()));
                format!(
                    "UPDATE ledger_rows SET delivery = 'pending', not_before = $4::float8 + $5::float8, reason = $6, {guard}"
                )
            }
            Settle::Dead { reason } => {
                params.push(Box::new(reason.to_owned()));
                format!("UPDATE ledger_rows SET delivery = 'dead', reason = $4, {guard}")
            }
        };
        let changed = self.run(write_error, move |session| {
            let all: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            session.execute(&sql, &all)
        })?;
        Ok(changed == 1)
    }

    fn renew(
        &self,
        seq: u64,
        token: ClaimToken<'_>,
        lease_seconds: f64,
    ) -> Result<bool, LedgerError> {
        let (now, seq, id, owner) = (
            self.now(),
            seq_param(seq),
            token_id(token),
            token.owner.to_owned(),
        );
        let changed = self.run(write_error, move |session| {
            session.execute(
                &format!(
                    "UPDATE ledger_rows SET lease_until = $1::float8 + $2::float8
                     WHERE seq = $3 AND delivery = 'claimed' AND claim_id = $4 AND claimed_by = $5 AND {}",
                    ownership::FENCE_HOLDS
                ),
                &[&now, &lease_seconds, &seq, &id, &owner],
            )
        })?;
        Ok(changed == 1)
    }

    fn rows(&self, query: &RowQuery) -> Result<Vec<LedgerRow>, LedgerError> {
        let (filter, values) = sql::row_filter(query, |n| format!("${n}"));
        let sql = format!("SELECT {ROW_COLUMNS} FROM ledger_rows WHERE true{filter}");
        let rows = self.run(read_error, move |session| {
            let params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            session.query(&sql, &params)
        })?;
        rows.iter().map(read_row).collect()
    }

    fn owners(&self) -> Result<Vec<String>, LedgerError> {
        let rows = self.run(read_error, |session| {
            session.query(
                "SELECT owner FROM ledger_rows WHERE run_state = 'running'
                 UNION SELECT owner FROM ledger_rows
                     WHERE delivery IN ('pending', 'claimed') AND delivery = 'pending' AND NOT restored
                 UNION SELECT claimed_by FROM ledger_rows
                     WHERE delivery IN ('pending', 'claimed') AND delivery = 'claimed' AND claimed_by IS NOT NULL",
                &[],
            )
        })?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(read_error))
            .collect()
    }

    fn adopt_orphans(&self, owner: &str) -> Result<u64, LedgerError> {
        let owner = owner.to_owned();
        self.run(write_error, move |session| {
            let mut transaction = session.client()?.transaction()?;
            // Every row both updates touch, locked first and in `seq` order: two processes
            // recovering two owners that held each other's claims never wait on each
            // other in opposite orders.
            transaction.execute(
                "SELECT seq FROM ledger_rows
                 WHERE (delivery = 'claimed' AND claimed_by = $1)
                    OR (owner = $1 AND delivery IN ('pending', 'claimed') AND NOT restored)
                 ORDER BY seq FOR UPDATE",
                &[&owner],
            )?;
            let reclaimed = transaction.execute(
                "UPDATE ledger_rows SET delivery = 'pending', claim_id = NULL, claimed_by = NULL,
                     lease_until = NULL, possible_redelivery = true
                 WHERE delivery IN ('pending', 'claimed') AND delivery = 'claimed' AND claimed_by = $1",
                &[&owner],
            )?;
            let restored = transaction.execute(
                "UPDATE ledger_rows SET restored = true
                 WHERE owner = $1 AND delivery IN ('pending', 'claimed') AND NOT restored",
                &[&owner],
            )?;
            transaction.commit()?;
            Ok(reclaimed + restored)
        })
    }

    fn expire_pending(&self, completed_before: f64, reason: &str) -> Result<u64, LedgerError> {
        let reason = reason.to_owned();
        self.run(write_error, move |session| {
            session.execute(
                "UPDATE ledger_rows SET delivery = 'dead', reason = $2
                 WHERE delivery IN ('pending', 'claimed') AND delivery = 'pending' AND restored AND completed_at < $1",
                &[&completed_before, &reason],
            )
        })
    }

    fn requeue(&self, seq: u64) -> Result<bool, LedgerError> {
        let seq = seq_param(seq);
        let changed = self.run(write_error, move |session| {
            session.execute(
                "UPDATE ledger_rows SET delivery = 'pending', attempts = 0, not_before = NULL
                 WHERE seq = $1 AND delivery = 'dead'",
                &[&seq],
            )
        })?;
        Ok(changed == 1)
    }

    /// Deletes in batches (at most 5 000 rows, halved each time one is cancelled
    /// by the statement timeout), each its own statement, skipping rows another session
    /// holds: a backlog of any size is pruned within the timeout a batch at a time (one
    /// `DELETE` of it all would be cancelled at every sweep and never finish), and a row
    /// someone has locked waits for the next sweep instead of holding the sweep — and a
    /// queue's open — behind the lock.
    fn prune_delivered(&self, delivered_before: f64) -> Result<u64, LedgerError> {
        let (mut pruned, mut batch) = (0, PRUNE_BATCH);
        loop {
            let deleted = self.connections.run(move |session| {
                let deleted = session.execute(
                    "DELETE FROM ledger_rows WHERE seq IN (
                         SELECT seq FROM ledger_rows
                         WHERE delivery = 'delivered' AND delivered_at < $1
                         LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&delivered_before, &batch],
                );
                // A cancelled batch is told apart (a smaller one is tried).
                Ok(deleted.map_err(|error| (connection::is_cancelled(&error), error)))
            })?;
            match deleted {
                Ok(deleted) if deleted < batch.unsigned_abs() => return Ok(pruned + deleted),
                Ok(deleted) => pruned += deleted,
                Err((true, _)) if batch > 1 => batch /= 2,
                Err((_, error)) => return Err(write_error(error)),
            }
        }
    }

    fn count_undelivered(&self) -> Result<u64, LedgerError> {
        let rows = self.run(read_error, |session| {
            session.query(
                "SELECT count(*) FROM ledger_rows WHERE delivery IN ('pending', 'claimed')",
                &[],
            )
        })?;
        Ok(first_u64(&rows).unwrap_or(0))
    }

    fn acquire_scope(
        &self,
        scope: &str,
        holder: &str,
        lease_seconds: f64,
    ) -> Result<Option<u64>, LedgerError> {
        self.acquire(scope, holder, lease_seconds)
    }

    fn release_scope(&self, scope: &str, holder: &str, epoch: u64) -> Result<bool, LedgerError> {
        self.release(scope, holder, epoch)
    }

    fn scope_leases(&self) -> Result<Vec<ScopeLease>, LedgerError> {
        self.leases()
    }

    fn claim_fenced(
        &self,
        seq: u64,
        claim: NewClaim<'_>,
        fence: Fence<'_>,
    ) -> Result<Option<ClaimedRow>, LedgerError> {
        self.claim_matching(seq, &sql::EVERY_ROW, claim, Some(fence))
    }

    fn wake_on_foreign_writes(&self, wake: Box<dyn Fn() -> bool + Send + Sync>) {
        self.listener.watch(wake);
    }

    fn instance_liveness(
        &self,
        instance: &str,
    ) -> Result<Option<Arc<dyn crate::Liveness>>, LedgerError> {
        let heartbeat =
            Heartbeat::start(Arc::clone(&self.connections), instance, self.instance_lease)?;
        Ok(Some(Arc::new(heartbeat)))
    }
}
