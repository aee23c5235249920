//! The completed records the engine keeps: the last [`MAX_RETAINED_COMPLETED`], in the
//! ledger's commit order, with their id numbers beside them for the id draw.

use std::collections::VecDeque;

use super::Finished;
use crate::MAX_RETAINED_COMPLETED;

/// The retained completions, oldest first. Their id numbers are kept apart, in the same
/// order, and counted by their low byte: a new id whose byte no retained number has (most
/// of them: at most 50 of 256 counts are set) is known new without a look at the numbers.
/// A completion then costs two counts and two ring pushes, not a hash set's insert and
/// remove, and an id draw one count.
pub(super) struct Retained {
    /// `(commit order, record)`, oldest commit first.
    records: VecDeque<(u64, Finished)>,
    /// `records[i]`'s id number at `numbers[i]`.
    numbers: VecDeque<u32>,
    /// How many of `numbers` have each low byte (at most 51 each: a `u8` holds it).
    by_low_byte: [u8; 256],
}

impl Default for Retained {
    fn default() -> Self {
        Retained {
            records: VecDeque::new(),
            numbers: VecDeque::new(),
            by_low_byte: [0; 256],
        }
    }
}

/// The count a number belongs to.
fn low_byte(number: u32) -> usize {
    (number & 0xff) as usize
}

impl Retained {
    /// Keeps `record` (id number `number`, committed at `order`); returns the oldest
    /// record when that made more than [`MAX_RETAINED_COMPLETED`], to drop outside the
    /// engine's lock.
    pub(super) fn keep(&mut self, order: u64, number: u32, record: Finished) -> Option<Finished> {
        // Usually the newest commit (completions are recorded under the engine's lock):
        // at the back.
        self.by_low_byte[low_byte(number)] += 1;
        if self.records.back().is_none_or(|(done, _)| *done < order) {
            self.records.push_back((order, record));
            self.numbers.push_back(number);
        } else {
            let at = self.records.partition_point(|(done, _)| *done < order);
            self.records.insert(at, (order, record));
            self.numbers.insert(at, number);
        }
        if self.records.len() <= MAX_RETAINED_COMPLETED {
            return None;
        }
        if let Some(evicted) = self.numbers.pop_front() {
            self.by_low_byte[low_byte(evicted)] -= 1;
        }
        self.records.pop_front().map(|(_, evicted)| evicted)
    }

    /// Whether a retained completion has id number `number`.
    pub(super) fn holds(&self, number: u32) -> bool {
        self.by_low_byte[low_byte(number)] > 0 && self.numbers.contains(&number)
    }

    /// The records, oldest commit first.
    pub(super) fn records(&self) -> impl Iterator<Item = &Finished> {
        self.records.iter().map(|(_, record)| record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Dispatched;

    fn record() -> Finished {
        Finished {
            dispatched: Dispatched::for_tests(),
            status: process_registry::Status::Completed,
            model: None,
            completed_at: 0.0,
        }
    }

    /// Numbers sharing low bytes (so counts go above one and back), kept past the limit,
    /// some out of commit order: `holds` answers as a search of the last 50 commits'
    /// numbers (by commit order) does.
    #[test]
    fn holds_what_is_retained_and_nothing_evicted() {
        let mut retained = Retained::default();
        let mut model: Vec<(u64, u32)> = Vec::new();
        let number = |n: u64| u32::try_from(n % 3 + 1 + (n << 8)).unwrap();
        for n in 0..200_u64 {
            // Every fifth commit arrives late: its order is below the last one's.
            let order = if n % 5 == 4 { 2 * n - 3 } else { 2 * n };
            let evicted = retained.keep(order, number(n), record());
            model.push((order, number(n)));
            model.sort_unstable();
            assert_eq!(evicted.is_some(), model.len() > MAX_RETAINED_COMPLETED);
            if model.len() > MAX_RETAINED_COMPLETED {
                model.remove(0);
            }
            for probe in 0..=n + 1 {
                let expected = model.iter().any(|&(_, m)| m == number(probe));
                assert_eq!(
                    retained.holds(number(probe)),
                    expected,
                    "after {n}, probe {probe}"
                );
            }
        }
        assert_eq!(retained.records().count(), MAX_RETAINED_COMPLETED);
    }

    /// Against the code it replaced (a queue by commit order, the newest pushed or
    /// inserted, the oldest evicted): random late commits, some older than every retained
    /// one, and numbers crowded on a few low bytes. After every keep, the records and the
    /// evicted one are the old code's, each number sits beside its record, and every
    /// count is its byte's share of the numbers.
    #[test]
    fn keeps_and_evicts_as_the_queue_it_replaced() {
        let tagged = |number: u32| Finished {
            completed_at: f64::from(number),
            ..record()
        };
        let mut retained = Retained::default();
        let mut old: VecDeque<(u64, u32)> = VecDeque::new();
        let mut next = 1_000_u64;
        for n in 0..5_000_u32 {
            next += 1 + u64::from(rand::random::<u8>() % 4);
            let order = match rand::random::<u8>() % 8 {
                // Late: anywhere in the retained span, or before all of it.
                0 | 1 => next - 1 - u64::from(rand::random::<u8>()),
                _ => next,
            };
            let number = (n << 8) | u32::from(rand::random::<u8>() % 6);
            let evicted = retained.keep(order, number, tagged(number));
            if old.back().is_none_or(|&(done, _)| done < order) {
                old.push_back((order, number));
            } else {
                let at = old.partition_point(|&(done, _)| done < order);
                old.insert(at, (order, number));
            }
            let old_evicted = (old.len() > MAX_RETAINED_COMPLETED)
                .then(|| old.pop_front())
                .flatten();
            assert_eq!(
                evicted.map(|record| record.completed_at),
                old_evicted.map(|(_, number)| f64::from(number))
            );
            let kept: Vec<f64> = retained.records().map(|r| r.completed_at).collect();
            let expected: Vec<f64> = old.iter().map(|&(_, m)| f64::from(m)).collect();
            assert_eq!(kept, expected, "after {n}");
            assert!(retained.numbers.iter().map(|&m| f64::from(m)).eq(kept));
            for byte in 0..256 {
                let share = retained
                    .numbers
                    .iter()
                    .filter(|&&m| low_byte(m) == byte)
                    .count();
                assert_eq!(usize::from(retained.by_low_byte[byte]), share);
            }
            for &(_, m) in &old {
                assert!(retained.holds(m));
            }
        }
    }
}
