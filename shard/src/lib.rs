//! Longbow shard node: hosts replicas of namespace shards and answers nearest-neighbour
//! queries over them.
//!
//! Layering, bottom up: [`distance`] kernels → [`segment`] (vector arena + HNSW graph) →
//! [`replica`] (segments + ids + payload + tombstones, made durable by the [`wal`]) →
//! [`replication`] (replica sets: a primary's backups, epochs, catch-up; the only shard code
//! that calls other nodes) → [`node`] (the set of replicas in a data directory) →
//! [`service`] (the Flight API).
//! [`storage`] holds the files of sealed segments and the manifest; the replica decides when
//! to write them; [`workers`] are the shared thread pools every replica's jobs run on, and
//! [`cpu_pools`] the rayon pools searches and indexing fan out on.
//! Each layer only calls the one below it.

pub mod bitset;
pub mod cpu_pools;
pub mod distance;
pub mod error;
pub mod fault;
pub mod membership;
pub mod node;
pub mod payload;
pub mod replica;
pub mod replication;
pub mod segment;
pub mod service;
pub mod storage;
pub mod synth;
pub mod wal;
pub mod workers;

pub use error::ShardError;
pub use node::{NodeConfig, ShardNode, WorkerThreads};
