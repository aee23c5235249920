//! Instance heartbeats: a fleet's liveness. Each queue on the ledger registers its
//! instance in `ledger_instances` with a lease, renewed by a thread of its own; an owner
//! is alive while its lease runs. Leases are read and written in the server's clock, so
//! the machines' clocks never have to agree.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::connection::Connections;
use super::describe;
use crate::{LedgerError, Liveness};

/// The name of the heartbeat threads.
pub const HEARTBEAT_THREAD_NAME: &str = "postgres-ledger-heartbeat";

/// Renews (or makes) `instance`'s lease: `lease` seconds from the server's now.
const RENEW: &str = "INSERT INTO ledger_instances (instance, lease_until, started_at)
     VALUES ($1, extract(epoch FROM clock_timestamp()) + $2::float8, extract(epoch FROM clock_timestamp()))
     ON CONFLICT (instance) DO UPDATE SET lease_until = EXCLUDED.lease_until";

/// `true` while the instance's lease runs; no row when it never registered.
const ALIVE: &str = "SELECT lease_until > extract(epoch FROM clock_timestamp())
     FROM ledger_instances WHERE instance = $1";

/// Owners judged by their leases, for as long as this instance's own lease is renewed.
pub(crate) struct Heartbeat {
    connections: Arc<Connections>,
    /// Dropped with the heartbeat: the renewing thread stops at once.
    _stop: Sender<()>,
}

impl Heartbeat {
    /// Registers `instance` (its lease starts now) and starts renewing it every third of
    /// `lease`.
    pub(crate) fn start(
        connections: Arc<Connections>,
        instance: &str,
        lease: Duration,
    ) -> Result<Heartbeat, LedgerError> {
        let seconds = lease.as_secs_f64();
        let renew = move |connections: &Connections, instance: String| {
            connections.run(move |session| {
                session
                    .execute(RENEW, &[&instance, &seconds])
                    .map_err(|error| LedgerError::Unwritable {
                        reason: format!("the instance's heartbeat: {}", describe(&error)),
                    })
            })
        };
        renew(&connections, instance.to_owned())?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (renewing, owner) = (Arc::clone(&connections), instance.to_owned());
        std::thread::Builder::new()
            .name(HEARTBEAT_THREAD_NAME.to_owned())
            .spawn(move || loop {
                match stopped.recv_timeout(lease / 3) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                if let Err(error) = renew(&renewing, owner.clone()) {
                    // The next beat tries again; the lease covers two missed ones.
                    tracing::warn!(%error, instance = %owner, "renewing the instance's lease failed");
                }
            })
            .map_err(|error| LedgerError::Unavailable {
                reason: format!("could not start the {HEARTBEAT_THREAD_NAME} thread: {error}"),
            })?;
        Ok(Heartbeat {
            connections,
            _stop: stop,
        })
    }
}

impl Liveness for Heartbeat {
    /// Alive while its lease runs. An instance that never registered (a queue given its
    /// own liveness) and an unreadable ledger count as alive: nothing is recovered rather
    /// than something alive.
    fn is_alive(&self, instance: &str) -> bool {
        let owner = instance.to_owned();
        let alive = self.connections.run(move |session| {
            session
                .query(ALIVE, &[&owner])
                .map_err(|error| LedgerError::Unreadable {
                    reason: describe(&error),
                })
        });
        match alive {
            Ok(rows) => rows
                .first()
                .and_then(|row| row.try_get::<_, bool>(0).ok())
                .unwrap_or(true),
            Err(error) => {
                tracing::warn!(%error, instance, "reading an instance's lease failed; counted alive");
                true
            }
        }
    }
}
