//! What the router delivers through: platform adapters, sync or async.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::InternalMessage;

/// The error an adapter returns; its text ends up in the dead letter.
pub type AdapterError = Box<dyn std::error::Error + Send + Sync>;

/// A chat platform's delivery end: how the router hands a completion to Telegram,
/// Discord, Slack, … Registered per [`Platform`](crate::Platform).
///
/// `deliver` is a user callback: the router calls it holding no lock, one message at a
/// time per platform (on the `gateway-delivery` thread; on a blocking thread of the
/// runtime for a router started with `start_on`). It should enqueue the message as a new
/// turn of `message.session_key` and return once the platform has accepted it: `Ok` acks
/// the completion in the ledger (delivered), an `Err` (or a panic, which the router
/// catches) is a failed attempt, retried with backoff until the last attempt makes it a
/// dead letter.
///
/// Closures `Fn(&InternalMessage) -> Result<(), AdapterError>` are adapters.
pub trait PlatformAdapter: Send + Sync {
    /// Delivers one completion.
    ///
    /// # Errors
    /// Whatever kept the platform from accepting it; the text is kept in the dead letter.
    fn deliver(&self, message: &InternalMessage) -> Result<(), AdapterError>;
}

impl<F> PlatformAdapter for F
where
    F: Fn(&InternalMessage) -> Result<(), AdapterError> + Send + Sync,
{
    fn deliver(&self, message: &InternalMessage) -> Result<(), AdapterError> {
        self(message)
    }
}

/// An async delivery in progress: what [`AsyncPlatformAdapter::deliver`] returns.
pub type Delivery = Pin<Box<dyn Future<Output = Result<(), AdapterError>> + Send + 'static>>;

/// A platform adapter whose send is a future — an HTTP call to the platform's API
/// awaited to its end. The completion is acked only when the future resolves `Ok`: the
/// real send succeeded. An `Err`, a panic while it is polled, or a future dropped
/// unfinished (the router stopped) is a failed attempt, retried with backoff.
///
/// A router started on a tokio runtime (`DeliveryRouterBuilder::start_on`, feature
/// `tokio`) awaits each platform's deliveries on a task of its own, so a slow platform
/// never delays another's; the thread router ([`start`](super::DeliveryRouterBuilder::start))
/// drives the future to its end on its delivery thread.
///
/// Closures `Fn(InternalMessage) -> impl Future<Output = Result<(), AdapterError>>` are
/// async adapters (the message is theirs to move into the future).
pub trait AsyncPlatformAdapter: Send + Sync {
    /// Delivers one completion.
    fn deliver(&self, message: InternalMessage) -> Delivery;
}

impl<F, Fut> AsyncPlatformAdapter for F
where
    F: Fn(InternalMessage) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), AdapterError>> + Send + 'static,
{
    fn deliver(&self, message: InternalMessage) -> Delivery {
        Box::pin(self(message))
    }
}

/// A registered adapter, as [`register_adapter`](super::DeliveryRouter::register_adapter)
/// and [`remove_adapter`](super::DeliveryRouter::remove_adapter) hand back the one they
/// replaced or removed.
#[derive(Clone)]
pub enum Adapter {
    /// A [`PlatformAdapter`].
    Sync(Arc<dyn PlatformAdapter>),
    /// An [`AsyncPlatformAdapter`].
    Async(Arc<dyn AsyncPlatformAdapter>),
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Adapter::Sync(_) => "Adapter::Sync(..)",
            Adapter::Async(_) => "Adapter::Async(..)",
        })
    }
}

/// Drives `future` to its end on this thread (the thread router's way to run an async
/// adapter): parks between polls, woken by the future's waker.
pub(super) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
