//! Reusable visited sets: one mark per node, reset in O(1) by bumping an epoch.

/// Marks which nodes a search has already seen.
pub(crate) struct VisitedSet {
    marks: Vec<u16>,
    epoch: u16,
}

impl VisitedSet {
    /// A set for `capacity` nodes. The zeroed allocation stays lazy until pages are touched.
    pub(crate) fn new(capacity: usize) -> Self {
        VisitedSet {
            marks: vec![0; capacity],
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
        let slot = &mut self.marks[node as usize];
        if *slot == self.epoch {
            false
        } else {
            *slot = self.epoch;
            true
        }
    }
}

/// A pool of visited sets so concurrent searches reuse allocations instead of making new ones.
pub(crate) struct VisitedPool {
    capacity: usize,
    free: parking_lot::Mutex<Vec<VisitedSet>>,
}

impl VisitedPool {
    /// A pool for sets of `capacity` nodes.
    pub(crate) fn new(capacity: usize) -> Self {
        VisitedPool {
            capacity,
            free: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Borrow a cleared set; it returns to the pool when dropped.
    pub(crate) fn get(&self) -> PooledVisited<'_> {
        let mut set = self
            .free
            .lock()
            .pop()
            .unwrap_or_else(|| VisitedSet::new(self.capacity));
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
