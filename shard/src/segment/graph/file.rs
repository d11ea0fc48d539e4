//! The on-disk form of a sealed segment's graph, and loading it back without relinking.
//!
//! ```text
//! magic "LBHNSW01" | m: u32 | ef_construction: u32 | seed: u64 | nodes: u32 | entry: u64
//! | has_dups: u32 | layer 0: nodes × (1 + m0) u32 | dup_next: nodes × u32
//! | uppers: count: u32, then per node with upper layers: node: u32, level × (1 + m) u32
//! ```
//! Everything is little-endian. The layer of a node is derived from `(seed, node)`, so it
//! is not stored; a loaded graph is bit-identical to the one written. Only a graph that is
//! no longer being linked may be written (the caller's sealed, fully indexed segment).

use std::sync::atomic::Ordering;

use super::{Graph, NO_ENTRY};

const MAGIC: &[u8; 8] = b"LBHNSW01";

/// Why a graph file cannot be loaded.
pub(crate) type FileError = String;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Reads little-endian words from a byte slice, failing (never panicking) past its end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FileError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("graph file ends early (at byte {})", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, FileError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FileError> {
        let lo = self.u32()? as u64;
        let hi = self.u32()? as u64;
        Ok(lo | (hi << 32))
    }

    /// Store `dst.len()` words into atomics, checking each is a valid node offset.
    fn atomics(
        &mut self,
        dst: &[std::sync::atomic::AtomicU32],
        check: impl Fn(usize, u32) -> bool,
    ) -> Result<(), FileError> {
        let bytes = self.take(dst.len() * 4)?;
        for (i, (slot, b)) in dst.iter().zip(bytes.chunks_exact(4)).enumerate() {
            let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if !check(i, v) {
                return Err(format!(
                    "graph file has an invalid word {v} at list slot {i}"
                ));
            }
            slot.store(v, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Graph {
    /// Serialise the lists of the first `nodes` nodes.
    pub(crate) fn encode(&self, nodes: usize) -> Vec<u8> {
        let w0 = 1 + self.m0;
        let mut out = Vec::with_capacity(64 + nodes * (w0 + 1) * 4);
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, self.m as u32);
        put_u32(&mut out, self.ef_construction as u32);
        out.extend_from_slice(&self.seed.to_le_bytes());
        put_u32(&mut out, nodes as u32);
        out.extend_from_slice(&self.entry.load(Ordering::Acquire).to_le_bytes());
        put_u32(&mut out, self.has_dups.load(Ordering::Acquire) as u32);
        for a in &self.level0.as_slice()[..nodes * w0] {
            put_u32(&mut out, a.load(Ordering::Relaxed));
        }
        for a in &self.dup_next.as_slice()[..nodes] {
            put_u32(&mut out, a.load(Ordering::Relaxed));
        }
        let with_upper: Vec<u32> = (0..nodes as u32)
            .filter(|&n| self.upper.as_slice()[n as usize].load(Ordering::Acquire) != 0)
            .collect();
        put_u32(&mut out, with_upper.len() as u32);
        for n in with_upper {
            put_u32(&mut out, n);
            for level in 1..=self.level_of(n) {
                for a in self.list(n, level) {
                    put_u32(&mut out, a.load(Ordering::Relaxed));
                }
            }
        }
        out
    }

    /// Load a graph written by [`Graph::encode`] for exactly `nodes` nodes, with room for
    /// `capacity`. Every stored offset is checked against `nodes`, so a damaged file fails
    /// here instead of sending a search out of bounds.
    pub(crate) fn decode(buf: &[u8], nodes: usize, capacity: usize) -> Result<Graph, FileError> {
        let mut r = Reader { buf, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err("not a Longbow graph file (bad magic)".into());
        }
        let m = r.u32()? as usize;
        let ef_construction = r.u32()? as usize;
        let seed = r.u64()?;
        let stored = r.u32()? as usize;
        if stored != nodes || !(2..=1024).contains(&m) || capacity < nodes {
            return Err(format!(
                "graph file is for {stored} nodes with m = {m}; expected {nodes} nodes"
            ));
        }
        let graph = Graph::new(capacity, m, ef_construction, seed).map_err(|e| e.to_string())?;
        let entry = r.u64()?;
        if entry != NO_ENTRY && (entry & 0xFFFF_FFFF) as usize >= nodes {
            return Err(format!(
                "graph file has an entry point {entry:#x} beyond {nodes}"
            ));
        }
        graph.entry.store(entry, Ordering::Release);
        graph.has_dups.store(r.u32()? != 0, Ordering::Release);
        let w0 = 1 + graph.m0;
        graph.level0.grew_to(nodes * w0);
        let (m0, mu) = (graph.m0 as u32, graph.m as u32);
        // Slot 0 of each list is its length, the others neighbour offsets.
        let list_word = |max: u32| {
            move |i: usize, v: u32| {
                if i.is_multiple_of(1 + max as usize) {
                    v <= max
                } else {
                    (v as usize) < nodes
                }
            }
        };
        r.atomics(&graph.level0.as_slice()[..nodes * w0], list_word(m0))?;
        r.atomics(&graph.dup_next.as_slice()[..nodes], |_, v| {
            v as usize <= nodes
        })?;
        let count = r.u32()? as usize;
        for _ in 0..count {
            let n = r.u32()?;
            if n as usize >= nodes {
                return Err(format!(
                    "graph file lists upper layers of node {n} beyond {nodes}"
                ));
            }
            let levels = graph.level_of(n);
            graph.alloc_upper(n, levels);
            for level in 1..=levels {
                r.atomics(graph.list(n, level), list_word(mu))?;
            }
        }
        if r.pos != buf.len() {
            return Err(format!(
                "graph file has {} trailing bytes",
                buf.len() - r.pos
            ));
        }
        Ok(graph)
    }
}
