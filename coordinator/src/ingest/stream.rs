//! One client's ingest stream: each batch is checked and split in arrival order, its parts
//! join their shards' lanes, and the batch is acknowledged once every part is durable.
//!
//! Batches overlap: while one batch's parts wait for their shards, the next is checked and
//! sent. The stream never acknowledges a batch before every part of it is durable, and a
//! failed batch reports what it stored ([`CoordinatorError::PartialWrite`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use tokio::sync::oneshot;

use super::lane::{Lane, PartOutcome};
use crate::error::{CoordinatorError, Result};
use crate::node::Coordinator;

/// The ingest of one client stream into one namespace.
pub struct IngestStream {
    coord: Arc<Coordinator>,
    namespace: String,
    lanes: HashMap<u32, Lane>,
}

/// A batch handed to its lanes, not yet known to be durable.
pub struct BatchWrite {
    coord: Arc<Coordinator>,
    rows: u64,
    parts: Vec<oneshot::Receiver<PartOutcome>>,
}

impl IngestStream {
    /// A stream of batches into namespace `namespace`.
    pub fn new(coord: Arc<Coordinator>, namespace: String) -> IngestStream {
        IngestStream {
            coord,
            namespace,
            lanes: HashMap::new(),
        }
    }

    /// Check `batch` and queue its parts after those of the batches submitted before it. A
    /// refused batch (bad input, a catalog change that failed) changes nothing.
    pub async fn submit(&mut self, batch: RecordBatch) -> Result<BatchWrite> {
        let routed = self.coord.route_batch(&self.namespace, batch).await?;
        let mut parts = Vec::with_capacity(routed.parts.len());
        for (shard, part) in routed.parts {
            let lane = self
                .lanes
                .entry(shard)
                .or_insert_with(|| Lane::spawn(self.coord.clone(), self.namespace.clone(), shard));
            parts.push(lane.write(part).await);
        }
        Ok(BatchWrite {
            coord: self.coord.clone(),
            rows: routed.rows,
            parts,
        })
    }
}

impl BatchWrite {
    /// The batch's row count once every part is durable, or an error saying what was stored.
    pub async fn durable(self) -> Result<u64> {
        let outcomes = futures::future::join_all(self.parts).await;
        let mut stored = 0;
        // A part's own error says more than "an earlier part failed": report it first.
        let mut own = None;
        let mut earlier = None;
        for outcome in outcomes {
            match outcome {
                Ok(Ok(())) => stored += 1,
                Ok(Err(f)) if f.earlier => {
                    earlier.get_or_insert(f.error);
                }
                Ok(Err(f)) => {
                    own.get_or_insert(f.error);
                }
                Err(_) => {
                    own.get_or_insert(CoordinatorError::Internal(
                        "a shard lane stopped before answering".into(),
                    ));
                }
            }
        }
        match own.or(earlier) {
            None => {
                self.coord.metrics.ingest_rows.inc_by(self.rows);
                Ok(self.rows)
            }
            Some(failed) if stored == 0 => Err(failed),
            Some(failed) => Err(CoordinatorError::PartialWrite {
                stored,
                failed: Box::new(failed),
            }),
        }
    }
}
