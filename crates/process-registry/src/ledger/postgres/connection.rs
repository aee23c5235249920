//! The connection threads: each owns one `postgres::Client` and runs the ledger's calls,
//! so no caller ever runs the client's own runtime (a caller on a tokio worker thread
//! would otherwise panic: the sync client cannot block inside a runtime) — a caller
//! waits on a reply channel, as it would on a lock.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement};

use crate::LedgerError;

/// The name of the connection threads.
pub const CONNECTION_THREAD_NAME: &str = "postgres-ledger";

/// A call run on a connection thread.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// One connection, as a connection thread holds it: reconnected when it was lost, with
/// its prepared statements.
pub(crate) struct Session {
    config: Config,
    schema: String,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Session {
    pub(crate) fn new(config: Config, schema: String) -> Session {
        Session {
            config,
            schema,
            client: None,
            statements: HashMap::new(),
        }
    }

    /// The connection, made (again) when there is none or it was closed.
    pub(crate) fn client(&mut self) -> Result<&mut Client, postgres::Error> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                // Statements belong to the connection they were prepared on.
                self.statements.clear();
                let mut client = self.config.connect(NoTls)?;
                client.batch_execute(&format!(
                    "SET search_path TO {}",
                    super::quoted(&self.schema)
                ))?;
                client
            }
        };
        Ok(self.client.insert(client))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        // A lost connection clears the statements when it is made again.
        self.client()?;
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client()?.prepare(sql)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Runs a statement (prepared once per connection, and kept) and returns its rows.
    pub(crate) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        self.retried(|session| {
            let statement = session.statement(sql)?;
            session.client()?.query(&statement, params)
        })
    }

    /// Runs a statement (prepared once per connection) and returns how many rows it
    /// changed.
    pub(crate) fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        self.retried(|session| {
            let statement = session.statement(sql)?;
            session.client()?.execute(&statement, params)
        })
    }

    /// Runs `call` once more on a new connection when the server says it ended this
    /// one (a restart, a failover, an idle-connection killer): the client learns of it
    /// only from the call that fails, and the server ran nothing of that call (it had
    /// ended the session before, or aborted the statement with it). A connection lost
    /// without the server's word (a broken socket) is not retried: a write may have
    /// committed.
    fn retried<T>(
        &mut self,
        mut call: impl FnMut(&mut Session) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        match call(self) {
            Err(error) if ended_by_server(&error) => {
                self.client = None;
                call(self)
            }
            done => done,
        }
    }
}

/// Bounds every wait on the network: a server that does not answer a connect is an
/// error after 10 s (unless the connection string sets its own timeout), and one that
/// stops acknowledging what is sent — or, idle, stops answering keepalives — closes the
/// connection after about 30 s, so a call fails instead of hanging.
pub(crate) fn bounded(mut config: Config) -> Config {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(15))
        .tcp_user_timeout(Duration::from_secs(30));
    config
}

/// Sets the server's `statement_timeout` for every session made from `config`, before
/// the connection string's own `options` (a setting there is applied after, and wins).
pub(crate) fn with_statement_timeout(mut config: Config, timeout: Duration) -> Config {
    if timeout.is_zero() {
        return config;
    }
    // Rounded up: a timeout shorter than a millisecond is not the server's "none"; and
    // at most what the server's `int` setting holds (a longer one refuses the session).
    let millis = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128);
    let ours = format!("-c statement_timeout={millis}");
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{ours} {theirs}"),
        _ => ours,
    };
    config.options(&options);
    config
}

/// `true` when the server ended the session (SQLSTATE `57P..`: an administrator's
/// shutdown or termination, a crash, a dropped database, an idle-session timeout). A
/// cancelled statement (`57014`, a statement timeout among them) leaves the session
/// usable and is not retried: it would wait as long again.
fn ended_by_server(error: &postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| db.code().code().starts_with("57P"))
}

/// `true` when the server cancelled the statement (`57014`: its statement timeout, or a
/// `pg_cancel_backend`); the session is still usable.
pub(crate) fn is_cancelled(error: &postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| db.code().code() == "57014")
}

/// `true` when the connection is gone: ended by the server, or closed under the client.
pub(crate) fn is_lost(error: &postgres::Error) -> bool {
    error.is_closed() || ended_by_server(error)
}

/// The connection threads of one ledger handle. Dropping it ends them (after the call
/// each is running).
pub(crate) struct Connections {
    jobs: Sender<Job>,
}

impl Connections {
    /// Starts `count` threads, each with its own session.
    pub(crate) fn start(
        count: usize,
        session: impl Fn() -> Session,
    ) -> Result<Connections, LedgerError> {
        let (jobs, queued) = crossbeam_channel::unbounded::<Job>();
        for _ in 0..count.max(1) {
            let queued: Receiver<Job> = queued.clone();
            let mut session = session();
            std::thread::Builder::new()
                .name(CONNECTION_THREAD_NAME.to_owned())
                .spawn(move || {
                    for job in queued {
                        // A call that panics loses its reply (its caller sees an error);
                        // the thread and its connection go on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut session)));
                    }
                })
                .map_err(|error| LedgerError::Unavailable {
                    reason: format!("could not start a {CONNECTION_THREAD_NAME} thread: {error}"),
                })?;
        }
        Ok(Connections { jobs })
    }

    /// Runs `call` on a connection thread and waits for its answer.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut Session) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.jobs
            .send(Box::new(move |session: &mut Session| {
                let _ = reply.send(call(session));
            }))
            .map_err(|_| LedgerError::Unavailable {
                reason: "the ledger's connection threads are gone".to_owned(),
            })?;
        answer.recv().unwrap_or_else(|_| {
            Err(LedgerError::Unavailable {
                reason: "a call on the ledger's connection panicked".to_owned(),
            })
        })
    }
}
