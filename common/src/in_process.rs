//! Shard nodes that run in the coordinator's own process (`longbow local`): the coordinator
//! calls their search directly, without loopback Flight, IPC encoding or an HTTP/2 hop.
//!
//! The trait is the one seam between the two roles: the coordinator only knows it, the shard
//! crate implements it with the very code its Flight DoExchange runs, so a search answers the
//! same (rows, order, errors naming fields) whichever way it arrives. It must never be used
//! for a shard node in another process.

use std::future::Future;
use std::pin::Pin;

use arrow_array::RecordBatch;

use crate::shard_api::SearchCommand;

/// What an in-process shard search answers: the result batches, or the status the shard's
/// Flight API would have ended the call with.
pub type SearchFuture =
    Pin<Box<dyn Future<Output = Result<Vec<RecordBatch>, tonic::Status>> + Send>>;

/// A shard node the coordinator can search in-process.
pub trait InProcessShard: Send + Sync {
    /// Search the replica `cmd` names with the queries in `queries` (a `vector` column, one
    /// query per row), exactly as a DoExchange with `cmd` as its descriptor and one batch.
    fn search(&self, cmd: SearchCommand, queries: RecordBatch) -> SearchFuture;
}
