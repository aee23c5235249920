//! The listener: one connection that `LISTEN`s on the schema's channel and wakes the
//! queues opened on this handle whenever any process makes a row pending. A hint only:
//! after a lost connection it wakes them once (notifications may have been missed
//! meanwhile), and the queue's sweep looks again anyway.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator as _;
use postgres::{Config, NoTls};

/// The name of the listener thread.
pub const LISTENER_THREAD_NAME: &str = "postgres-ledger-listen";

/// How long the listener waits for a notification before it checks that its ledger
/// still exists (the only thing it looks at on a timer; it never reads the ledger).
const ALIVE_CHECK: Duration = Duration::from_secs(2);
/// The longest a queue's open waits for the listener's first `LISTEN`.
const FIRST_LISTEN_GUARD: Duration = Duration::from_secs(10);
/// The longest wait between two attempts to connect again.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// The wake-ups of the queues on one handle: each says `false` once its queue is gone.
type Watchers = Mutex<Vec<Box<dyn Fn() -> bool + Send + Sync>>>;

pub(crate) struct Listener {
    config: Config,
    channel: String,
    watchers: Arc<Watchers>,
    started: Mutex<bool>,
}

impl Listener {
    pub(crate) fn new(config: Config, channel: String) -> Listener {
        Listener {
            config,
            channel,
            watchers: Arc::new(Mutex::new(Vec::new())),
            started: Mutex::new(false),
        }
    }

    /// Adds a queue's wake-up; the first one starts the thread.
    pub(crate) fn watch(&self, wake: Box<dyn Fn() -> bool + Send + Sync>) {
        lock(&self.watchers).push(wake);
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        if *started {
            return;
        }
        let (config, channel, watchers) = (
            self.config.clone(),
            self.channel.clone(),
            Arc::downgrade(&self.watchers),
        );
        let (ready, listening) = crossbeam_channel::bounded(1);
        match std::thread::Builder::new()
            .name(LISTENER_THREAD_NAME.to_owned())
            .spawn(move || listen(&config, &channel, &watchers, ready))
        {
            Ok(_) => {
                *started = true;
                // A queue opened on this handle hears every notification sent after its
                // open returns: wait for the first `LISTEN` (or its failure, or a guard).
                let _ = listening.recv_timeout(FIRST_LISTEN_GUARD);
            }
            Err(error) => tracing::warn!(
                %error,
                "could not start the ledger's listener; other processes' completions are seen at each sweep"
            ),
        }
    }
}

fn lock(
    watchers: &Watchers,
) -> std::sync::MutexGuard<'_, Vec<Box<dyn Fn() -> bool + Send + Sync>>> {
    watchers.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes every live queue and forgets the gone ones; `false` when the ledger is gone.
fn wake(watchers: &Weak<Watchers>) -> bool {
    let Some(watchers) = watchers.upgrade() else {
        return false;
    };
    lock(&watchers).retain(|wake| wake());
    true
}

/// The listener thread; `ready` is told once the first attempt to listen is over.
fn listen(
    config: &Config,
    channel: &str,
    watchers: &Weak<Watchers>,
    ready: crossbeam_channel::Sender<()>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let mut client = match config.connect(NoTls).and_then(|mut client| {
            client.batch_execute(&format!("LISTEN \"{channel}\""))?;
            Ok(client)
        }) {
            Ok(client) => client,
            Err(error) => {
                let _ = ready.try_send(());
                tracing::warn!(%error, "the ledger's listener cannot connect; trying again");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RECONNECT_MAX);
                if watchers.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let _ = ready.try_send(());
        // Notifications sent while this connection was not listening are lost: look.
        if !first && !wake(watchers) {
            return;
        }
        first = false;
        let mut notifications = client.notifications();
        loop {
            // A new timeout iterator for every wait: one never re-arms its timer once it
            // ran out, so each later wait would return at once without reading the
            // socket — the listener would spin, deaf to notifications and to the loss of
            // its connection.
            match notifications.timeout_iter(ALIVE_CHECK).next() {
                Ok(Some(_)) => {
                    if !wake(watchers) {
                        return;
                    }
                }
                // The wait ran out: is the ledger still there?
                Ok(None) => {
                    if watchers.strong_count() == 0 {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "the ledger's listener lost its connection; connecting again");
                    break;
                }
            }
        }
    }
}
