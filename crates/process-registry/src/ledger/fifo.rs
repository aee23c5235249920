//! The memory ledger's open rows: a FIFO in `seq` order whose rows live in a slab.
//!
//! The FIFO holds only `(seq, slot)` pairs; a row is written once into its slot and read
//! or dropped there, never moved with the queue (a row holds its event inline, so a move
//! is a large copy). A row taken from anywhere leaves a hole in the order, which goes when
//! it reaches an end, or when holes are half the order. Freed slots are reused last in,
//! first out, so a queue that stays short keeps writing into the same, cache-warm memory,
//! and no allocation is made or freed per row once the slab has grown (a burst of
//! allocations freed together would hand whole heap pages back to the system).

use std::collections::VecDeque;

/// The slot of a hole in the order.
const HOLE: u32 = u32::MAX;

/// Open rows of type `T`, in `seq` order (see the module docs).
#[derive(Debug)]
pub(crate) struct Fifo<T> {
    order: VecDeque<(u64, u32)>,
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    holes: usize,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo {
            order: VecDeque::new(),
            slots: Vec::new(),
            free: Vec::new(),
            holes: 0,
        }
    }
}

impl<T> Fifo<T> {
    /// How many rows it holds.
    pub(crate) fn len(&self) -> usize {
        self.order.len() - self.holes
    }

    /// One past the last index of the order (holes included).
    pub(crate) fn end(&self) -> usize {
        self.order.len()
    }

    /// A free slot holding the row `make` builds (built in its place: a row is large).
    #[inline(always)]
    fn slot_for(&mut self, make: impl FnOnce() -> T) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                if let Some(place) = self.slots.get_mut(slot as usize) {
                    *place = Some(make());
                }
                slot
            }
            None => {
                // More than `u32::MAX - 1` open rows cannot be held in memory anyway.
                let slot = u32::try_from(self.slots.len()).unwrap_or(HOLE - 1);
                self.slots.push(Some(make()));
                slot
            }
        }
    }

    /// Adds the row `make` builds at the back (`seq` above every other).
    #[inline(always)]
    pub(crate) fn push_back_with(&mut self, seq: u64, make: impl FnOnce() -> T) {
        let slot = self.slot_for(make);
        self.order.push_back((seq, slot));
    }

    /// Adds `row` at its place in `seq` order.
    pub(crate) fn insert(&mut self, seq: u64, row: T) {
        let slot = self.slot_for(|| row);
        let index = self.order.partition_point(|(other, _)| *other < seq);
        match self.order.get_mut(index) {
            // The hole this row left when it was taken out: filled again, so the order
            // never holds one seq twice (a search could land on the hole).
            Some((at, place)) if *at == seq && *place == HOLE => {
                *place = slot;
                self.holes -= 1;
            }
            _ => self.order.insert(index, (seq, slot)),
        }
    }

    /// Where row `seq` is in the order (`None`: not held).
    pub(crate) fn index_of(&self, seq: u64) -> Option<usize> {
        // Most rows are settled at the head: no search.
        let index = match self.order.front() {
            Some((head, _)) if *head == seq => 0,
            _ => self
                .order
                .binary_search_by_key(&seq, |(seq, _)| *seq)
                .ok()?,
        };
        (self.order[index].1 != HOLE).then_some(index)
    }

    /// The index of the first row after `after_seq`.
    pub(crate) fn start_after(&self, after_seq: u64) -> usize {
        match self.order.front() {
            // Most looks start before the head: no search.
            Some((head, _)) if *head > after_seq => 0,
            _ => self.order.partition_point(|(seq, _)| *seq <= after_seq),
        }
    }

    /// The row at `index` of the order, with its `seq` (`None` for a hole).
    pub(crate) fn at(&self, index: usize) -> Option<(u64, &T)> {
        let (seq, slot) = *self.order.get(index)?;
        Some((seq, self.slots.get(slot as usize)?.as_ref()?))
    }

    /// [`at`](Self::at), mutably.
    pub(crate) fn at_mut(&mut self, index: usize) -> Option<(u64, &mut T)> {
        let (seq, slot) = *self.order.get(index)?;
        Some((seq, self.slots.get_mut(slot as usize)?.as_mut()?))
    }

    /// The rows from index `start` on, in order, with their index and `seq`.
    pub(crate) fn iter_from(&self, start: usize) -> impl Iterator<Item = (usize, u64, &T)> {
        (start..self.order.len())
            .filter_map(|index| self.at(index).map(|(seq, row)| (index, seq, row)))
    }

    /// Every row, in no particular order.
    pub(crate) fn rows_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten()
    }

    /// Takes the row at `index` out, handing it to `take` first — which moves out what it
    /// keeps — and dropping the rest in place.
    pub(crate) fn take_with<R>(
        &mut self,
        index: usize,
        take: impl FnOnce(&mut T) -> Option<R>,
    ) -> Option<R> {
        let slot = self.order.get(index)?.1;
        let place = self.slots.get_mut(slot as usize)?;
        let kept = take(place.as_mut()?);
        *place = None;
        self.leave_hole(index, slot);
        kept
    }

    /// Takes the row at `index` out whole.
    pub(crate) fn take(&mut self, index: usize) -> Option<T> {
        let slot = self.order.get(index)?.1;
        let row = self.slots.get_mut(slot as usize)?.take()?;
        self.leave_hole(index, slot);
        Some(row)
    }

    /// Frees `slot` (emptied) and makes its place in the order, `index`, a hole.
    fn leave_hole(&mut self, index: usize, slot: u32) {
        self.free.push(slot);
        self.order[index].1 = HOLE;
        self.holes += 1;
        self.close_holes();
    }

    /// Drops the holes at either end, and all of them once they are half the order.
    fn close_holes(&mut self) {
        while matches!(self.order.front(), Some((_, HOLE))) {
            self.order.pop_front();
            self.holes -= 1;
        }
        while matches!(self.order.back(), Some((_, HOLE))) {
            self.order.pop_back();
            self.holes -= 1;
        }
        if self.holes > 64 && self.holes * 2 > self.order.len() {
            self.order.retain(|(_, slot)| *slot != HOLE);
            self.holes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(fifo: &Fifo<String>) -> Vec<(u64, String)> {
        fifo.iter_from(0)
            .map(|(_, seq, row)| (seq, row.clone()))
            .collect()
    }

    #[test]
    fn keeps_seq_order_through_holes_and_reuses_slots() {
        let mut fifo = Fifo::default();
        for seq in 1..=5 {
            fifo.push_back_with(seq, || format!("r{seq}"));
        }
        let third = fifo.index_of(3).unwrap();
        assert_eq!(fifo.take(third).as_deref(), Some("r3"));
        assert_eq!(fifo.index_of(3), None, "a hole is not a row");
        assert_eq!(fifo.len(), 4);
        fifo.push_back_with(6, || "r6".into());
        assert_eq!(fifo.slots.len(), 5, "the freed slot is reused");
        fifo.insert(3, "r3 again".into());
        assert_eq!(
            seqs(&fifo),
            [
                (1, "r1"),
                (2, "r2"),
                (3, "r3 again"),
                (4, "r4"),
                (5, "r5"),
                (6, "r6")
            ]
            .map(|(seq, row)| (seq, row.to_owned()))
        );
        assert_eq!(fifo.start_after(3), fifo.index_of(4).unwrap());
        let kept = fifo.take_with(0, |row| Some(row.len()));
        assert_eq!(kept, Some(2));
        assert_eq!(fifo.index_of(2), Some(0), "the head's hole went at once");
    }

    #[test]
    fn a_row_put_back_where_it_left_a_hole_is_found_by_its_seq() {
        for n in 3..40 {
            for middle in 2..n {
                let mut fifo = Fifo::default();
                for seq in 1..=n {
                    fifo.push_back_with(seq, || seq.to_string());
                }
                let row = fifo.take(fifo.index_of(middle).unwrap()).unwrap();
                fifo.insert(middle, row);
                let index = fifo.index_of(middle);
                assert!(index.is_some(), "n {n}, seq {middle}: lost");
                assert_eq!(fifo.len(), n as usize);
                assert_eq!(fifo.end(), n as usize, "no seq twice");
                let seqs: Vec<u64> = fifo.iter_from(0).map(|(_, seq, _)| seq).collect();
                assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn holes_are_compacted_and_the_last_freed_slot_is_the_next_used() {
        let mut fifo = Fifo::default();
        for seq in 1..=300 {
            fifo.push_back_with(seq, || seq.to_string());
        }
        // Every row but the first and the last: holes in the middle only.
        for seq in 2..300 {
            let index = fifo.index_of(seq).unwrap();
            assert!(fifo.take(index).is_some());
        }
        assert_eq!(fifo.len(), 2);
        assert!(fifo.end() < 300, "compacted once holes were half");
        assert_eq!(seqs(&fifo), [(1, "1".to_owned()), (300, "300".to_owned())]);
        for seq in [1, 300] {
            let index = fifo.index_of(seq).unwrap();
            fifo.take(index);
        }
        assert_eq!((fifo.len(), fifo.end()), (0, 0));
        let last_freed = *fifo.free.last().unwrap();
        fifo.push_back_with(301, || "301".into());
        assert_eq!(
            fifo.order.front(),
            Some(&(301, last_freed)),
            "warm memory first"
        );
        assert_eq!(fifo.slots.len(), 300, "no new slot");
        assert_eq!(fifo.rows_mut().count(), 1);
    }
}
