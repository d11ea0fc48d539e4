//! Longbow shard node: hosts replicas of namespace shards and answers nearest-neighbour
//! queries over them.
//!
//! Layering, bottom up: [`distance`] kernels → [`segment`] (vector arena + HNSW graph) →
//! [`replica`] (segments + ids + payload + tombstones, made durable by the [`wal`]) →
//! [`node`] (the set of replicas in a data directory) → [`service`] (the Flight API).
//! Each layer only calls the one below it.

pub mod distance;
pub mod segment;
pub mod synth;
