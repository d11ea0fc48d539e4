//! Longbow coordinator: keeps the catalog (namespaces, shard nodes, placement) in Raft, routes
//! writes to shard primaries, runs scatter-gather searches, and serves the client Flight API.
//!
//! Layering: [`catalog`] (pure state) ← [`raft`] (replication and storage) ← [`node`] (the
//! coordinator: limits, liveness, shard connections) ← request modules ([`namespaces`],
//! [`ingest`], [`search`], [`reads`], [`snapshots`]) ← [`service`] (client Flight API) and [`internal`]
//! (peer and shard-node API). The coordinator never links shard code: it talks to shards
//! over Flight, also inside `longbow local`.

pub mod catalog;
pub mod error;
pub mod hedging;
pub mod ingest;
pub mod internal;
pub mod limits;
pub mod metrics;
pub mod namespaces;
pub mod node;
pub mod raft;
pub mod reads;
pub mod rebalance;
pub mod rebuild;
pub mod replica_sets;
pub mod routing;
pub mod search;
pub mod server;
pub mod service;
pub mod shards;
pub mod snapshots;
pub mod targets;

pub use error::CoordinatorError;
pub use node::{Coordinator, CoordinatorConfig};
