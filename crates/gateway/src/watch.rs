//! The gateway's watch drain.

use process_registry::{CompletionQueue, Event};

/// Drains the watch events off `queue` without blocking.
///
/// Takes every event that was waiting when the call began and returns the
/// `watch_match`, `watch_disabled` and overflow events in arrival order. Every
/// `async_delegation` event is put back at the tail, in order, **after** the loop — so
/// the drain always terminates, even when the queue holds nothing but async events.
/// Other events (process completions, with or without a session key, and unknown types)
/// are consumed and logged at `debug` level. A keyed process completion reaches its
/// chat through the [`DeliveryRouter`](crate::DeliveryRouter) instead — so a gateway
/// that runs this drain and the router on one queue may have the drain consume a
/// process completion before the router sees it. That is this drain's contract.
///
/// ```
/// use gateway::drain_gateway_watch_events;
/// use process_registry::{AsyncDelegationEvent, CompletionQueue, Event, WatchMatch};
///
/// let queue = CompletionQueue::new();
/// let async_event = Event::from(AsyncDelegationEvent::default());
/// let watch_event = Event::from(WatchMatch::default());
/// queue.put(async_event.clone());
/// queue.put(watch_event.clone());
///
/// assert_eq!(drain_gateway_watch_events(&queue), vec![watch_event]);
/// assert_eq!(queue.drain(), vec![async_event]);
/// ```
pub fn drain_gateway_watch_events(queue: &CompletionQueue) -> Vec<Event> {
    let mut watch_events = Vec::new();
    let mut async_events = Vec::new();
    for event in queue.drain() {
        if event.is_watch_event() {
            watch_events.push(event);
        } else if event.is_async_delegation() {
            async_events.push(event);
        } else {
            tracing::debug!(
                event_type = event.type_name(),
                "watch drain consumed an event the gateway delivers elsewhere"
            );
        }
    }
    for event in async_events {
        queue.put(event);
    }
    watch_events
}

#[cfg(test)]
mod tests {
    use super::*;
    use process_registry::{AsyncDelegationEvent, ProcessCompletion, WatchDisabled, WatchOverflow};

    fn deleg(n: u32) -> Event {
        AsyncDelegationEvent {
            delegation_id: Some(format!("deleg_{n:08x}").into()),
            ..AsyncDelegationEvent::default()
        }
        .into()
    }

    #[test]
    fn keeps_arrival_order_requeues_async_in_order_and_consumes_the_rest() {
        let queue = CompletionQueue::new();
        let watch = [
            Event::from(process_registry::WatchMatch::default()),
            Event::from(WatchDisabled::default()),
            Event::WatchOverflowTripped(WatchOverflow::default()),
            Event::WatchOverflowReleased(WatchOverflow::default()),
        ];
        queue.put(deleg(1));
        queue.put(watch[0].clone());
        queue.put(Event::from(ProcessCompletion::default()));
        queue.put(deleg(2));
        // A process completion with a session key is consumed too.
        queue.put(Event::from(ProcessCompletion {
            session_key: Some("agent:main:telegram:dm:42".into()),
            ..ProcessCompletion::default()
        }));
        queue.put(watch[1].clone());
        queue.put(watch[2].clone());
        queue.put(deleg(3));
        queue.put(watch[3].clone());
        assert_eq!(drain_gateway_watch_events(&queue), watch.to_vec());
        assert_eq!(queue.drain(), vec![deleg(1), deleg(2), deleg(3)]);
    }

    #[test]
    fn terminates_on_a_queue_of_only_async_events() {
        let queue = CompletionQueue::new();
        for n in 0..100 {
            queue.put(deleg(n));
        }
        assert!(drain_gateway_watch_events(&queue).is_empty());
        assert_eq!(queue.drain(), (0..100).map(deleg).collect::<Vec<_>>());
        assert!(drain_gateway_watch_events(&queue).is_empty());
    }
}
