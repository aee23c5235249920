//! Turning a caught panic into text, for every layer that fences user code.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The text of a caught panic, taking ownership of its payload.
///
/// A `&str` or `String` payload (what `panic!` produces) gives its message; anything else
/// gives `a non-string panic payload`. The payload is dropped inside a fence of its own,
/// so a payload whose `Drop` panics cannot escape: fencing user code stays total.
///
/// The engine uses it to build the `panic: {message}` error of a crashed runner; the
/// layers above use it for the user code they fence (child backends, adapters).
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
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    message
}
