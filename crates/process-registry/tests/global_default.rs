//! The process-wide default registry. Its own test binary: it is the only test here that
//! touches `global()`, so nothing else can observe or disturb its queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::thread;

use process_registry::{global, Event, WatchOverflow};

#[test]
fn global_registry_is_one_shared_queue_created_on_first_use() {
    let first = global();
    assert!(std::ptr::eq(first, global()));
    assert!(first
        .completion_queue()
        .same_queue(global().completion_queue()));
    assert!(first.completion_queue().is_empty());

    // Producers on other threads reach the same queue through `global()`.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            thread::Builder::new()
                .name(format!("global-producer-{i}"))
                .spawn(move || {
                    global()
                        .completion_queue()
                        .put(Event::WatchOverflowTripped(WatchOverflow {
                            message: Some(format!("from {i}")),
                            ..Default::default()
                        }));
                })
                .unwrap()
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let mut messages: Vec<String> = global()
        .completion_queue()
        .drain()
        .into_iter()
        .map(|event| match event {
            Event::WatchOverflowTripped(e) => e.message.unwrap(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    messages.sort();
    assert_eq!(messages, ["from 0", "from 1", "from 2", "from 3"]);
    assert!(global().completion_queue().is_empty());
}
