//! Formats one of the two blocks the `format` bench measures a number of times, for
//! counting the instructions one format costs (the count does not depend on the machine's
//! load, unlike a timing):
//!
//! ```text
//! cargo build --release -p process-registry --example format_blocks
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/format_blocks 20000 single
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/format_blocks 0 single
//! ```
//!
//! The difference of the two totals (`Collected` in valgrind's output), divided by the
//! formats, is the cost of one: the run with 0 prices the start-up alone. The second
//! argument is `single` (the single-delegation block, the default) or `batch` (the 3-task
//! batch block). Each text is made and dropped, as in the bench.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use process_registry::format_process_notification_in;

#[path = "../benches/format_events/mod.rs"]
mod format_events;

fn main() {
    let mut args = std::env::args().skip(1);
    let formats: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let event = match args.next().as_deref() {
        None | Some("single") => format_events::single(),
        Some("batch") => format_events::batch(),
        Some(other) => {
            eprintln!("unknown mode {other:?}: expected `single` or `batch`");
            std::process::exit(2);
        }
    };
    let (time_zone, now) = (format_events::time_zone(), format_events::now());
    for _ in 0..formats {
        let text = format_process_notification_in(black_box(&event), &time_zone, now);
        black_box(text.expect("a text"));
    }
}
