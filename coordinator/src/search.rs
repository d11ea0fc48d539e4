//! Scatter-gather search: validate against the namespace, fan out to one replica per shard
//! with bounded concurrency and a deadline, then k-way merge the per-shard results (each
//! sorted by `(query_id, distance)`) into the k nearest per query.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::catalog::NamespaceMeta;
use crate::error::{CoordinatorError, Result};
use crate::namespaces::payload_of;
use crate::node::{Coordinator, ShardTarget};
use crate::targets::Consistency;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{Field, Schema, SchemaRef};
use futures::future::BoxFuture;
use futures::StreamExt;
use longbow_common::model::{validate_ef, validate_k};
use longbow_common::shard_api::SearchCommand;
use longbow_common::{columns, ContractError, Filter};

/// Schema metadata key set to `"true"` when some shards did not answer.
pub const PARTIAL_METADATA_KEY: &str = "longbow.partial";

/// Which payload columns a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Columns {
    /// These, in this order.
    List(Vec<String>),
    /// Every payload column of the namespace (`"*"`).
    All,
}

impl Columns {
    /// Read `columns` from JSON: a list of names, or `"*"`.
    pub fn from_json(
        field: &str,
        v: Option<&serde_json::Value>,
    ) -> std::result::Result<Option<Columns>, ContractError> {
        match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if s == "*" => Ok(Some(Columns::All)),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    other => Err(ContractError::invalid(
                        format!("{field}[{i}]"),
                        format!(
                            "expected a column name, got {}",
                            longbow_common::ids::json_kind(other)
                        ),
                    )),
                })
                .collect::<std::result::Result<_, _>>()
                .map(|names| Some(Columns::List(names))),
            Some(other) => Err(ContractError::invalid(
                field,
                format!(
                    "expected a list of column names or \"*\", got {}",
                    longbow_common::ids::json_kind(other)
                ),
            )),
        }
    }

    /// The names these columns stand for in `meta`.
    pub fn resolve(&self, meta: &NamespaceMeta) -> Vec<String> {
        match self {
            Columns::List(names) => names.clone(),
            Columns::All => crate::reads::all_columns(meta),
        }
    }
}

/// A search request (DoExchange command, DoGet `search` ticket, `VectorSearch` body).
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// Namespace.
    pub namespace: String,
    /// Neighbours per query.
    pub k: usize,
    /// Beam width (namespace default when absent).
    pub ef: Option<usize>,
    /// Filter.
    pub filter: Option<serde_json::Value>,
    /// Payload columns to return (none when absent).
    pub columns: Option<Columns>,
    /// Return vectors.
    pub include_vectors: bool,
    /// Answer from the shards that respond, flagging the result, instead of failing.
    pub allow_partial: bool,
    /// Which replicas may answer.
    pub consistency: Consistency,
}

/// Parse a filter and check every field it names is `id` or a payload column of `meta`.
pub fn check_filter(
    meta: &NamespaceMeta,
    filter: Option<&serde_json::Value>,
) -> Result<Option<Filter>> {
    let Some(f) = filter else {
        return Ok(None);
    };
    let parsed = Filter::parse("filter", f)?;
    let payload = payload_of(meta)?;
    for field in parsed.fields() {
        if field != columns::ID && payload.field(field).is_none() {
            return Err(ContractError::invalid(
                format!("filter field {}", longbow_common::error::quote(field)),
                format!(
                    "is neither id nor a payload column of namespace '{}'",
                    meta.name
                ),
            )
            .into());
        }
    }
    Ok(Some(parsed))
}

/// A validated search, ready to fan out.
pub struct PreparedSearch {
    meta: NamespaceMeta,
    cmd: SearchCommand,
    schema: SchemaRef,
    allow_partial: bool,
    consistency: Consistency,
}

impl PreparedSearch {
    /// The result schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Coordinator {
    /// Validate a search against its namespace.
    pub async fn prepare_search_now(&self, req: &SearchRequest) -> Result<PreparedSearch> {
        self.catch_up_for(&req.namespace).await?;
        self.prepare_search(req)
    }

    /// Plan a search from this coordinator's catalog as it stands (see
    /// [`Coordinator::prepare_search_now`]).
    pub fn prepare_search(&self, req: &SearchRequest) -> Result<PreparedSearch> {
        let meta = self.namespace(&req.namespace)?;
        validate_k(req.k)?;
        let ef = req.ef.unwrap_or(meta.index.ef_search);
        validate_ef(ef)?;
        let payload = payload_of(&meta)?;
        check_filter(&meta, req.filter.as_ref())?;
        let names = req
            .columns
            .as_ref()
            .map(|c| c.resolve(&meta))
            .unwrap_or_default();
        let mut extra = Vec::new();
        for c in &names {
            let f = payload.field(c).ok_or_else(|| {
                ContractError::invalid(
                    format!("columns[{}]", longbow_common::error::quote(c)),
                    format!("is not a payload column of namespace '{}'", meta.name),
                )
            })?;
            let shown = columns::search_column_name(c);
            if extra.iter().any(|e: &Field| e.name() == shown.as_ref()) {
                return Err(ContractError::invalid(
                    format!("columns[{}]", longbow_common::error::quote(c)),
                    format!("is requested twice (search results name it '{shown}')"),
                )
                .into());
            }
            extra.push(f.clone().with_name(shown.into_owned()));
        }
        if req.include_vectors {
            extra.push(Field::new(
                columns::VECTOR,
                columns::vector_type(meta.dim),
                false,
            ));
        }
        let schema = columns::search_result_schema(meta.id_type, extra);
        let cmd = SearchCommand {
            op: "search".into(),
            namespace: meta.name.clone(),
            shard: 0,
            k: req.k,
            ef: Some(ef),
            filter: req.filter.clone(),
            columns: names,
            include_vectors: req.include_vectors,
            allow_missing_columns: true,
        };
        Ok(PreparedSearch {
            meta,
            cmd,
            schema,
            allow_partial: req.allow_partial,
            consistency: req.consistency,
        })
    }

    /// Search a batch of queries (`vector` column). `query_id_base` is added to row numbers.
    pub async fn search(
        &self,
        p: &PreparedSearch,
        queries: &RecordBatch,
        query_id_base: u32,
    ) -> Result<RecordBatch> {
        if p.meta.is_declared() {
            // No write has reached it yet: there is nothing to find.
            return Ok(RecordBatch::new_empty(p.schema.clone()));
        }
        let (_, raw) = longbow_common::vectors::vector_column(queries)?.ok_or_else(|| {
            ContractError::invalid("vector", "column is missing from the query batch")
        })?;
        // Dimension, nulls and NaN are checked here, once, before any shard is asked.
        let (_, vector) =
            longbow_common::vectors::canonical_vectors(raw.as_ref(), Some(p.meta.dim))?;
        let only_vectors = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                columns::VECTOR,
                vector.data_type().clone(),
                true,
            )])),
            vec![vector.clone()],
        )
        .map_err(|e| ContractError::invalid("vector", e))?;
        let calls = (0..p.meta.shards).map(|shard| {
            let q = only_vectors.clone();
            async move {
                let cmd = SearchCommand {
                    shard,
                    ..p.cmd.clone()
                };
                let call = |to: ShardTarget| -> BoxFuture<'_, Result<Vec<RecordBatch>>> {
                    let (cmd, q) = (&cmd, q.clone());
                    Box::pin(async move {
                        let search = self.bounded(self.shards.search(&to, cmd, q));
                        self.unless_dead(&to.clone(), search).await
                    })
                };
                self.search_replica(&p.meta, shard, p.consistency, &call)
                    .await
            }
        });
        let results: Vec<Result<Vec<RecordBatch>>> = futures::stream::iter(calls)
            .buffered(self.config.max_fanout.max(1))
            .collect()
            .await;
        let mut parts = Vec::new();
        let mut missing = 0;
        for r in results {
            match r {
                Ok(batches) => parts.extend(batches),
                Err(e) if p.allow_partial && e_retryable(&e) => missing += 1,
                Err(e) => return Err(e),
            }
        }
        let merged = merge(&p.schema, &parts, p.cmd.k, query_id_base)?;
        self.metrics
            .search_queries
            .inc_by(queries.num_rows() as u64);
        if missing > 0 {
            let mut md = merged.schema().metadata().clone();
            md.insert(PARTIAL_METADATA_KEY.to_string(), "true".to_string());
            md.insert("longbow.missing_shards".to_string(), missing.to_string());
            let schema = Arc::new(merged.schema().as_ref().clone().with_metadata(md));
            return merged
                .with_schema(schema)
                .map_err(|e| CoordinatorError::Internal(e.to_string()));
        }
        Ok(merged)
    }
}

fn e_retryable(e: &CoordinatorError) -> bool {
    use longbow_common::ErrorExt;
    e.retryable()
}

#[derive(PartialEq)]
struct Head {
    qid: u32,
    dist: f32,
    part: usize,
    row: usize,
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    // Reversed: BinaryHeap is a max-heap and we pop the smallest (qid, dist).
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .qid
            .cmp(&self.qid)
            .then(other.dist.total_cmp(&self.dist))
            .then(other.part.cmp(&self.part))
    }
}

/// K-way merge of per-shard results, each sorted by `(query_id, distance)`, keeping the `k`
/// nearest per query. Columns missing from a shard (all-null) are cast to the result type.
pub fn merge(
    schema: &SchemaRef,
    parts: &[RecordBatch],
    k: usize,
    query_id_base: u32,
) -> Result<RecordBatch> {
    let internal = |e: arrow_schema::ArrowError| {
        CoordinatorError::Internal(format!("merging shard results: {e}"))
    };
    let mut cursors: Vec<(&[u32], &[f32])> = Vec::with_capacity(parts.len());
    for b in parts {
        let qid = b
            .column_by_name(columns::QUERY_ID)
            .ok_or_else(|| CoordinatorError::Internal("shard result lacks query_id".into()))?;
        let dist = b
            .column_by_name(columns::DISTANCE)
            .ok_or_else(|| CoordinatorError::Internal("shard result lacks distance".into()))?;
        cursors.push((
            qid.as_primitive::<UInt32Type>().values(),
            dist.as_primitive::<Float32Type>().values(),
        ));
    }
    let mut heap = BinaryHeap::new();
    for (part, (q, d)) in cursors.iter().enumerate() {
        if !q.is_empty() {
            heap.push(Head {
                qid: q[0],
                dist: d[0],
                part,
                row: 0,
            });
        }
    }
    let mut picked: Vec<(usize, usize)> = Vec::new();
    let mut qids: Vec<u32> = Vec::new();
    let (mut cur_q, mut taken) = (u32::MAX, 0usize);
    while let Some(h) = heap.pop() {
        if h.qid != cur_q {
            cur_q = h.qid;
            taken = 0;
        }
        if taken < k {
            picked.push((h.part, h.row));
            qids.push(query_id_base + h.qid);
            taken += 1;
        }
        let (q, d) = cursors[h.part];
        let next = h.row + 1;
        if next < q.len() {
            heap.push(Head {
                qid: q[next],
                dist: d[next],
                part: h.part,
                row: next,
            });
        }
    }
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(qids))];
    for field in schema.fields().iter().skip(1) {
        let cols: Vec<ArrayRef> = parts
            .iter()
            .map(|b| match b.column_by_name(field.name()) {
                Some(c) if c.data_type() == field.data_type() => Ok(c.clone()),
                Some(c) => arrow_cast::cast(c, field.data_type()),
                None => Ok(arrow_array::new_null_array(field.data_type(), b.num_rows())),
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(internal)?;
        let refs: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
        let out = if refs.is_empty() {
            arrow_array::new_empty_array(field.data_type())
        } else {
            arrow_select::interleave::interleave(&refs, &picked).map_err(internal)?
        };
        arrays.push(out);
    }
    RecordBatch::try_new(schema.clone(), arrays).map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float32Array, UInt64Array};

    fn part(rows: &[(u32, u64, f32)]) -> RecordBatch {
        let schema = columns::search_result_schema(longbow_common::IdType::Uint64, []);
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt32Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(UInt64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Float32Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(Float32Array::from(
                    rows.iter().map(|r| 1.0 / (1.0 + r.2)).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn k_way_merge_keeps_the_k_nearest_per_query_in_order() {
        // Three shards, two queries, known distances.
        let a = part(&[(0, 1, 0.1), (0, 2, 0.5), (1, 3, 0.2)]);
        let b = part(&[(0, 4, 0.3), (1, 5, 0.1), (1, 6, 0.9)]);
        let c = part(&[(0, 7, 0.05), (1, 8, 0.15), (1, 9, 0.16)]);
        let schema = columns::search_result_schema(longbow_common::IdType::Uint64, []);
        let out = merge(&schema, &[a, b, c], 3, 10).expect("merge");
        let qid = out.column(0).as_primitive::<UInt32Type>().values().to_vec();
        let ids = out
            .column(1)
            .as_primitive::<arrow_array::types::UInt64Type>()
            .values()
            .to_vec();
        assert_eq!(qid, vec![10, 10, 10, 11, 11, 11]);
        assert_eq!(ids, vec![7, 1, 4, 5, 8, 9]);
    }
}
