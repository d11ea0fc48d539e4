//! Longbow's shared vocabulary: the wire contract between clients, coordinators and shard
//! nodes, the namespace model types, the JSON filter language and the error-to-status mapping.
//!
//! This crate depends on no other Longbow crate and must never contain shard or coordinator
//! logic: it only says what travels on the wire and how to read it.

pub mod channels;
pub mod cluster_api;
pub mod columns;
pub mod dirlock;
pub mod disk;
pub mod error;
pub mod filter;
pub mod flight;
pub mod http;
pub mod ids;
pub mod in_process;
pub mod model;
pub mod net;
pub mod payload_schema;
pub mod process;
pub mod put_pipeline;
pub mod replication_api;
pub mod request;
pub mod shard_api;
pub mod vectors;

pub use error::{ContractError, ErrorExt, StatusCode};
pub use filter::Filter;
pub use ids::{IdType, IdValue};
pub use model::{IndexParams, Metric};
