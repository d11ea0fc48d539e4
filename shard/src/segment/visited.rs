//! Reusable visited sets: one mark per node, reset in O(1) by bumping an epoch.

/// Marks which nodes a search has already seen.
pub(crate) struct VisitedSet {
    marks: Vec<u16>,
    epoch: u16,
}

impl VisitedSet {
    /// An empty set. It grows to the highest node it marks: a segment reserves room for a
    /// million rows, and a set sized (and, on an epoch wrap, cleared) to that reservation
    /// made 2 MiB resident per set however few rows the segment held (found by the soak
    /// harness as shard RSS rising in 2 MiB steps while index memory stayed flat).
    pub(crate) fn new() -> Self {
        VisitedSet {
            marks: Vec::new(),
            epoch: 0,
        }
    }

    /// Forget every mark.
    pub(crate) fn clear(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// Mark `node`; returns true if it was not marked before.
    #[inline(always)]
    pub(crate) fn insert(&mut self, node: u32) -> bool {
        let i = node as usize;
        if i >= self.marks.len() {
            self.grow(i);
        }
        let slot = &mut self.marks[i];
        if *slot == self.epoch {
            false
        } else {
            *slot = self.epoch;
            true
        }
    }

    /// Room for node `i`: at least double, so growing costs O(1) per mark.
    #[cold]
    fn grow(&mut self, i: usize) {
        let len = (i + 1).max(self.marks.len() * 2).max(1024);
        self.marks.resize(len, 0);
    }
}

/// A pool of visited sets so concurrent searches reuse allocations instead of making new ones.
pub(crate) struct VisitedPool {
    free: parking_lot::Mutex<Vec<VisitedSet>>,
}

impl VisitedPool {
    /// An empty pool.
    pub(crate) fn new() -> Self {
        VisitedPool {
            free: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Borrow a cleared set; it returns to the pool when dropped.
    pub(crate) fn get(&self) -> PooledVisited<'_> {
        let mut set = self.free.lock().pop().unwrap_or_else(VisitedSet::new);
        set.clear();
        PooledVisited {
            pool: self,
            set: Some(set),
        }
    }
}

/// A visited set on loan from a [`VisitedPool`].
pub(crate) struct PooledVisited<'a> {
    pool: &'a VisitedPool,
    set: Option<VisitedSet>,
}

impl std::ops::Deref for PooledVisited<'_> {
    type Target = VisitedSet;
    fn deref(&self) -> &VisitedSet {
        // Invariant: `set` is Some until drop.
        self.set.as_ref().expect("visited set present until drop")
    }
}

impl std::ops::DerefMut for PooledVisited<'_> {
    fn deref_mut(&mut self) -> &mut VisitedSet {
        self.set.as_mut().expect("visited set present until drop")
    }
}

impl Drop for PooledVisited<'_> {
    fn drop(&mut self) {
        if let Some(set) = self.set.take() {
            self.pool.free.lock().push(set);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_marks_only_up_to_the_highest_node_it_saw() {
        let pool = VisitedPool::new();
        let mut v = pool.get();
        assert!(v.insert(10) && !v.insert(10));
        assert!(v.marks.len() <= 1024, "{}", v.marks.len());
        assert!(v.insert(5_000) && !v.insert(5_000));
        assert!(v.marks.len() < 16_384, "{}", v.marks.len());
        v.clear();
        assert!(v.insert(10), "cleared");
    }

    #[test]
    fn marks_survive_epoch_wraps() {
        let mut v = VisitedSet::new();
        for _ in 0..70_000 {
            v.clear();
            assert!(v.insert(3));
            assert!(!v.insert(3));
        }
    }
}
