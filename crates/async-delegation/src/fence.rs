//! Fences around user code: the one place every crate of the workspace turns a panic in
//! someone else's code into a value.
//!
//! Every call into user code (a runner, a hook, a child backend, an adapter, a
//! formatter), every `Display` of a user error and every drop of a user value goes
//! through these functions. They never let a panic unwind into the caller, and never
//! drop a panic payload or a user error while another panic unwinds (which would abort
//! the process): a payload is dropped inside its own fence, and an error is formatted by
//! reference and dropped separately.

use std::any::Any;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The text of a caught panic, taking ownership of its payload.
///
/// A `&str` or `String` payload (what `panic!` produces) gives its message; anything else
/// gives `a non-string panic payload`. The payload is dropped inside a fence of its own,
/// so a payload whose `Drop` panics cannot escape: fencing user code stays total.
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("subagent exploded")).unwrap_err();
/// assert_eq!(async_delegation::panic_message(payload), "subagent exploded");
/// ```
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let message = if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-string panic payload".to_owned()
    };
    // The payload's own drop may panic (with a payload whose drop may panic, …): each
    // level is dropped in a fence, and a fence's payload is forgotten if even that fails.
    if let Err(inner) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        forget_payload(inner);
    }
    message
}

/// Drops a panic payload that came out of dropping another one; a further panic is
/// forgotten (leaked) rather than risked: nothing of it is user data we still need.
fn forget_payload(payload: Box<dyn Any + Send>) {
    if let Err(inner) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(inner);
    }
}

/// Runs `code`; a panic becomes `Err` with its message ([`panic_message`]).
///
/// Unwind safety is asserted: callers only read their own values after a panic, and
/// treat the user value that panicked as failed.
///
/// ```
/// use async_delegation::fence;
///
/// assert_eq!(fence::call(|| 2 + 2), Ok(4));
/// assert_eq!(fence::call(|| -> i32 { panic!("adapter bug") }), Err("adapter bug".to_owned()));
/// ```
pub fn call<T>(code: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(code)).map_err(panic_message)
}

/// Drops `value` inside a fence. `Some(message)` when its `Drop` panicked (the panic
/// went no further).
///
/// Drop values one at a time: a panic while dropping one part of a value unwinds through
/// the drop of its other parts, and a second panic there aborts the process. This
/// function cannot prevent that inside a single user value.
pub fn drop_quietly<T>(value: T) -> Option<String> {
    call(move || drop(value)).err()
}

/// [`drop_quietly`], logging a panicking `Drop` as a warning about `what`.
pub fn drop_logged<T>(value: T, what: &str) {
    if let Some(message) = drop_quietly(value) {
        tracing::warn!(panic = %message, "dropping {what} panicked");
    }
}

/// The `Display` text of a user error (or any user value), fenced: `Err` with the panic's
/// message when its `Display` panicked. The value is only borrowed — drop it separately,
/// with [`drop_quietly`], so a panicking `Display` and a panicking `Drop` never meet.
///
/// ```
/// use async_delegation::fence;
///
/// let error: Box<dyn std::error::Error> = "provider said no".into();
/// assert_eq!(fence::display(&error), Ok("provider said no".to_owned()));
/// assert_eq!(fence::drop_quietly(error), None);
/// ```
pub fn display(value: &(impl Display + ?Sized)) -> Result<String, String> {
    call(|| value.to_string())
}

/// The text of a user error, then the error dropped, both fenced: the error's `Display`,
/// or `panic while formatting the error: {message}` when it panicked. A panicking `Drop`
/// is logged.
pub fn error_text<E: Display + ?Sized>(error: Box<E>) -> String {
    let text = display(&*error)
        .unwrap_or_else(|message| format!("panic while formatting the error: {message}"));
    drop_logged(error, "an error");
    text
}

/// Owns a user value and drops it inside a fence, wherever its owner goes out of scope
/// (also inside closures handed to other threads, which may drop them anywhere).
///
/// ```
/// use async_delegation::fence::DropFenced;
///
/// struct Bomb;
/// impl Drop for Bomb {
///     fn drop(&mut self) { panic!("user state exploded on drop") }
/// }
/// let guarded = DropFenced::new(Bomb, "the example's state");
/// drop(guarded); // logged, not propagated
/// ```
pub struct DropFenced<T> {
    value: Option<T>,
    what: &'static str,
}

impl<T> DropFenced<T> {
    /// Wraps `value`; `what` names it in the log line of a panicking drop.
    pub fn new(value: T, what: &'static str) -> Self {
        DropFenced {
            value: Some(value),
            what,
        }
    }

    /// Unwraps the value (its drop is then the caller's again).
    pub fn into_inner(mut self) -> T {
        match self.value.take() {
            Some(value) => value,
            None => unreachable!("a DropFenced value is only taken once"),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for DropFenced<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DropFenced").field(&self.value).finish()
    }
}

impl<T> std::ops::Deref for DropFenced<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.value {
            Some(value) => value,
            None => unreachable!("a DropFenced value is only taken by its drop"),
        }
    }
}

impl<T: Clone> Clone for DropFenced<T> {
    fn clone(&self) -> Self {
        DropFenced::new(T::clone(self), self.what)
    }
}

impl<T> Drop for DropFenced<T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            drop_logged(value, self.what);
        }
    }
}

/// Wraps a user future so that it is polled and dropped inside fences: a panic while
/// polling ends it with `Err(message)` (the future is then dropped, fenced too), and a
/// panic while dropping it is logged as `what`. Runtime-agnostic.
///
/// ```
/// use async_delegation::fence;
///
/// let outcome = futures_executor::block_on(fence::future(async { panic!("adapter bug") }, "an adapter"));
/// # let _: &Result<(), String> = &outcome;
/// assert_eq!(outcome, Err("adapter bug".to_owned()));
/// ```
pub fn future<F: std::future::Future>(future: F, what: &'static str) -> Fenced<F> {
    Fenced {
        future: Some(Box::pin(future)),
        what,
    }
}

/// The future of [`future`]: the wrapped future's output, or the message of its panic.
#[must_use = "a future does nothing unless awaited"]
pub struct Fenced<F> {
    future: Option<std::pin::Pin<Box<F>>>,
    what: &'static str,
}

impl<F> std::fmt::Debug for Fenced<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fenced")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl<F: std::future::Future> std::future::Future for Fenced<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let what = self.what;
        let Some(future) = self.future.as_mut() else {
            return Poll::Ready(Err("polled after it finished".to_owned()));
        };
        match call(|| future.as_mut().poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                drop_logged(self.future.take(), what);
                Poll::Ready(Ok(output))
            }
            Err(message) => {
                drop_logged(self.future.take(), what);
                Poll::Ready(Err(message))
            }
        }
    }
}

impl<F> Drop for Fenced<F> {
    fn drop(&mut self) {
        drop_logged(self.future.take(), self.what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bomb(&'static str);

    impl Drop for Bomb {
        fn drop(&mut self) {
            std::panic::panic_any(Bomb(self.0));
        }
    }

    #[test]
    fn payloads_whose_drop_panics_recursively_are_contained() {
        let payload = catch_unwind(|| std::panic::panic_any(Bomb("deep"))).unwrap_err();
        assert_eq!(panic_message(payload), "a non-string panic payload");
        assert_eq!(
            drop_quietly(Bomb("in drop")),
            Some("a non-string panic payload".to_owned())
        );
    }

    #[test]
    fn an_error_whose_display_and_drop_both_panic_is_text() {
        struct Hostile;
        impl std::fmt::Display for Hostile {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                panic!("display exploded")
            }
        }
        impl Drop for Hostile {
            fn drop(&mut self) {
                panic!("drop exploded")
            }
        }
        assert_eq!(
            error_text(Box::new(Hostile)),
            "panic while formatting the error: display exploded"
        );
    }
}
