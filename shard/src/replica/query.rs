//! Reads of a replica: k-NN search over every segment (graph, or exact scan for selective
//! filters), get by ids, filtered scans, and assembling the Arrow results.
//!
//! Everything here runs under the replica's read lock and never mutates state.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow_schema::{Field, Schema};
use longbow_common::ids::ids_to_array;
use longbow_common::vectors::Vectors;
use longbow_common::{columns, ContractError, Filter, IdValue};
use rayon::prelude::*;

use super::state::ReplicaState;
use crate::bitset::Bitset;
use crate::error::Result;
use crate::payload::filter::matching_rows;
use crate::payload::gather;
use crate::segment::Candidate;

/// What a search asks for.
#[derive(Debug, Clone)]
pub struct SearchParams {
    /// Neighbours per query.
    pub k: usize,
    /// Beam width.
    pub ef: usize,
    /// Optional filter.
    pub filter: Option<Filter>,
    /// Payload columns to return.
    pub columns: Vec<String>,
    /// Return vectors too.
    pub include_vectors: bool,
    /// Unknown columns come back all-null instead of failing.
    pub allow_missing_columns: bool,
}

/// Which columns a get or scan returns.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    /// Payload columns; every known column when `None`.
    pub columns: Option<Vec<String>>,
    /// Return vectors too.
    pub include_vectors: bool,
    /// Unknown columns come back all-null instead of failing.
    pub allow_missing_columns: bool,
}

/// How one segment is searched for a request.
enum Plan {
    /// Graph search; accept live rows only.
    Graph,
    /// Graph search; accept rows in the bitset (filter ∧ live).
    FilteredGraph(Bitset),
    /// Exact scan of the rows in the bitset.
    Exact(Bitset),
}

/// Whether a filter admitting `allowed` of `len` rows should be answered by exact scan.
///
/// An exact scan costs `allowed` distance computations. A filtered graph walk costs about
/// `ef * m0` computations for an unfiltered search, inflated by `len / allowed` because only
/// that fraction of visited nodes may enter the result. The scan wins when
/// `allowed² <= ef * m0 * len`; it is also exact, so recall cannot drop on selective filters.
pub fn prefer_exact(allowed: usize, len: usize, ef: usize, m0: usize) -> bool {
    (allowed as u128) * (allowed as u128) <= (ef as u128) * (m0 as u128) * (len as u128)
}

fn live_filtered(state: &ReplicaState, filter: &Filter) -> Result<Vec<Bitset>> {
    state
        .segments
        .iter()
        .map(|seg| {
            let len = seg.index.len();
            let mut m = matching_rows(filter, &seg.payload, len, &seg.ids, state.info.id_type)?;
            for t in seg.tombstones.iter() {
                m.clear(t);
            }
            Ok(m)
        })
        .collect()
}

/// Ids of live rows matching `filter` (used by delete by filter).
pub fn resolve_filter(state: &ReplicaState, filter: &Filter) -> Result<Vec<IdValue>> {
    let masks = live_filtered(state, filter)?;
    Ok(state
        .segments
        .iter()
        .zip(masks)
        .flat_map(|(seg, m)| m.iter().map(|o| seg.ids[o].clone()).collect::<Vec<_>>())
        .collect())
}

fn check_columns(
    state: &ReplicaState,
    names: &[String],
    allow_missing: bool,
) -> Result<Vec<Field>> {
    names
        .iter()
        .map(|n| {
            if allow_missing && state.schema.field(n).is_none() {
                return Ok(Field::new(n, arrow_schema::DataType::Null, true));
            }
            state.schema.field(n).cloned().ok_or_else(|| {
                ContractError::invalid(
                    format!("columns[{n}]"),
                    "is not a payload column of this namespace",
                )
                .into()
            })
        })
        .collect()
}

/// Search every query (rows of `queries`, already normalised for cosine). Returns one batch of
/// `query_id, id, distance, score, columns..., [vector]` sorted by `(query_id, distance)`.
pub fn search(
    state: &ReplicaState,
    queries: &Vectors,
    p: &SearchParams,
    query_id_base: u32,
) -> Result<RecordBatch> {
    let fields = check_columns(state, &p.columns, p.allow_missing_columns)?;
    let m0 = state.info.index.m * 2;
    let plans: Vec<Plan> = match &p.filter {
        None => state.segments.iter().map(|_| Plan::Graph).collect(),
        Some(f) => live_filtered(state, f)?
            .into_iter()
            .zip(&state.segments)
            .map(|(mask, seg)| {
                if prefer_exact(mask.count(), seg.index.len(), p.ef.max(p.k), m0) {
                    Plan::Exact(mask)
                } else {
                    Plan::FilteredGraph(mask)
                }
            })
            .collect(),
    };
    let per_query: Vec<Vec<(usize, Candidate)>> = (0..queries.rows())
        .into_par_iter()
        .map(|qi| {
            let q = queries.row(qi);
            let mut best: Vec<(usize, Candidate)> = Vec::new();
            for (si, (seg, plan)) in state.segments.iter().zip(&plans).enumerate() {
                let found = match plan {
                    Plan::Graph => seg.index.search(q, p.k, p.ef, &|o| seg.live(o)),
                    Plan::FilteredGraph(mask) => {
                        seg.index.search(q, p.k, p.ef, &|o| mask.get(o as usize))
                    }
                    Plan::Exact(mask) => seg.index.exact(q, p.k, mask.iter().map(|o| o as u32)),
                };
                best.extend(found.into_iter().map(|c| (si, c)));
            }
            best.sort_by_key(|a| a.1);
            best.truncate(p.k);
            best
        })
        .collect();
    let mut qids = Vec::new();
    let mut rows = Vec::new();
    let mut dists = Vec::new();
    let metric = state.info.metric;
    for (qi, hits) in per_query.iter().enumerate() {
        for (si, c) in hits {
            qids.push(query_id_base + qi as u32);
            rows.push((*si, c.node));
            dists.push(metric.wire_distance(c.dist));
        }
    }
    let scores: Vec<f32> = dists.iter().map(|&d| metric.score(d)).collect();
    let mut out_fields = columns::search_result_fields(state.info.id_type);
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(qids)),
        ids_of(state, &rows),
        Arc::new(Float32Array::from(dists)),
        Arc::new(Float32Array::from(scores)),
    ];
    append_columns(
        state,
        &rows,
        &fields,
        p.include_vectors,
        &mut out_fields,
        &mut arrays,
    )?;
    // Payload columns named like a result column are returned under `payload.<name>`.
    let fixed = columns::search_result_fields(state.info.id_type).len();
    for f in out_fields.iter_mut().skip(fixed).take(fields.len()) {
        if let std::borrow::Cow::Owned(name) = columns::search_column_name(f.name()) {
            *f = f.clone().with_name(name);
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(out_fields)),
        arrays,
    )?)
}

fn ids_of(state: &ReplicaState, rows: &[(usize, u32)]) -> ArrayRef {
    ids_to_array(
        rows.iter()
            .map(|&(s, o)| &state.segments[s].ids[o as usize]),
        state.info.id_type,
    )
}

fn append_columns(
    state: &ReplicaState,
    rows: &[(usize, u32)],
    fields: &[Field],
    include_vectors: bool,
    out_fields: &mut Vec<Field>,
    arrays: &mut Vec<ArrayRef>,
) -> Result<()> {
    let stores: Vec<_> = state.segments.iter().map(|s| &s.payload).collect();
    for f in fields {
        arrays.push(gather(&stores, rows, f)?);
        out_fields.push(f.clone());
    }
    if include_vectors {
        let dim = state.info.dim;
        let mut flat = Vec::with_capacity(rows.len() * dim);
        for &(s, o) in rows {
            flat.extend_from_slice(state.segments[s].index.vector(o));
        }
        let item = Arc::new(Field::new("item", arrow_schema::DataType::Float32, false));
        let list = FixedSizeListArray::try_new(
            item,
            dim as i32,
            Arc::new(Float32Array::from(flat)),
            None,
        )?;
        arrays.push(Arc::new(list));
        out_fields.push(Field::new(
            columns::VECTOR,
            columns::vector_type(dim),
            false,
        ));
    }
    Ok(())
}

/// Build a record batch (`id`, columns, optional `vector`) for the given rows.
fn records(state: &ReplicaState, rows: &[(usize, u32)], p: &Projection) -> Result<RecordBatch> {
    let include_vectors = p.include_vectors;
    let fields = match &p.columns {
        Some(names) => check_columns(state, names, p.allow_missing_columns)?,
        None => state.schema.fields().to_vec(),
    };
    let mut out_fields = vec![Field::new(
        columns::ID,
        state.info.id_type.data_type(),
        false,
    )];
    let mut arrays = vec![ids_of(state, rows)];
    append_columns(
        state,
        rows,
        &fields,
        include_vectors,
        &mut out_fields,
        &mut arrays,
    )?;
    let opts = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(out_fields)),
        arrays,
        &opts,
    )?)
}

/// Records for `ids` (ids not present are skipped), in request order.
pub fn get(state: &ReplicaState, ids: &[IdValue], p: &Projection) -> Result<RecordBatch> {
    let rows: Vec<(usize, u32)> = ids
        .iter()
        .filter_map(|id| state.ids.get(id))
        .filter_map(|l| Some((state.slot(l.seg)?, l.off)))
        .collect();
    records(state, &rows, p)
}

/// Live records matching `filter` (all when `None`), at most `limit`, in batches of
/// `batch_rows`.
pub fn scan(
    state: &ReplicaState,
    filter: Option<&Filter>,
    p: &Projection,
    limit: usize,
    batch_rows: usize,
) -> Result<Vec<RecordBatch>> {
    let mut rows: Vec<(usize, u32)> = Vec::new();
    match filter {
        Some(f) => {
            for (si, mask) in live_filtered(state, f)?.into_iter().enumerate() {
                rows.extend(
                    mask.iter()
                        .take(limit - rows.len().min(limit))
                        .map(|o| (si, o as u32)),
                );
            }
        }
        None => {
            for (si, seg) in state.segments.iter().enumerate() {
                let live = (0..seg.index.len() as u32).filter(|&o| seg.live(o));
                rows.extend(live.take(limit - rows.len().min(limit)).map(|o| (si, o)));
            }
        }
    }
    rows.truncate(limit);
    if rows.is_empty() {
        return Ok(vec![records(state, &[], p)?]);
    }
    rows.chunks(batch_rows.max(1))
        .map(|c| records(state, c, p))
        .collect()
}
