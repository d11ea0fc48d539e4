//! Evaluating a parsed [`Filter`] against payload chunks with Arrow compute kernels.
//!
//! Semantics: a comparison against a null value, or a column a chunk does not have, is false;
//! `not` inverts (so `not(price < 10)` matches rows without a price); `is_null` matches
//! both nulls and missing columns. Integers compare exactly (as Int64 or UInt64), mixed
//! integer/float comparisons as Float64. Timestamps and dates accept RFC 3339 / ISO 8601
//! strings or raw integers in the column's own unit. A string compared with a numeric column
//! is read as a number (Longbow 0.1 clients send `"100"` for 100). The field `id` is the
//! record id: its column is attached to each chunk only when a filter names it.

use std::sync::Arc;

use arrow_arith::boolean::{and, is_not_null, is_null, not, or};
use arrow_array::types::{Date32Type, Date64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Datum, Float64Array, Int64Array, RecordBatch, Scalar,
    StringArray, UInt64Array,
};
use arrow_cast::cast::cast;
use arrow_cast::parse::Parser;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use longbow_common::filter::{CompareOp, Literal};
use longbow_common::ids::ids_to_array;
use longbow_common::{columns, ContractError, Filter, IdType, IdValue};

use crate::bitset::Bitset;
use crate::payload::PayloadStore;

type EvalResult = Result<BooleanArray, ContractError>;

/// The rows (by segment offset) of `store` that match `filter`, limited to `0..len`. `ids`
/// holds the segment's ids by offset (read only when the filter names `id`).
pub fn matching_rows(
    filter: &Filter,
    store: &PayloadStore,
    len: usize,
    ids: &[IdValue],
    id_type: IdType,
) -> Result<Bitset, ContractError> {
    let mut out = Bitset::with_len(len);
    let by_id = filter.fields().contains(&columns::ID);
    for (start, batch) in store.chunks() {
        let mask = if by_id {
            let first = (*start as usize).min(ids.len());
            let last = (first + batch.num_rows()).min(ids.len());
            let with_ids = with_id_column(batch, &ids[first..last], id_type)?;
            eval(filter, &with_ids)?
        } else {
            eval(filter, batch)?
        };
        for i in mask.values().set_indices() {
            let off = *start as usize + i;
            if off < len {
                out.set(off);
            }
        }
    }
    Ok(out)
}

/// A chunk with the `id` column added (payload columns can never be called `id`).
fn with_id_column(
    batch: &RecordBatch,
    ids: &[IdValue],
    id_type: IdType,
) -> Result<RecordBatch, ContractError> {
    if ids.len() != batch.num_rows() {
        return Err(ContractError::invalid(
            "filter",
            "ids and payload of a segment disagree in length",
        ));
    }
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(columns::ID, id_type.data_type(), false));
    let mut arrays = batch.columns().to_vec();
    arrays.push(ids_to_array(ids, id_type));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(internal)
}

/// Evaluate `filter` over one chunk. The result has no nulls.
pub fn eval(filter: &Filter, batch: &RecordBatch) -> EvalResult {
    let rows = batch.num_rows();
    match filter {
        Filter::And(children) => {
            let mut acc = BooleanArray::from(vec![true; rows]);
            for c in children {
                acc = and(&acc, &eval(c, batch)?).map_err(internal)?;
            }
            Ok(acc)
        }
        Filter::Or(children) => {
            let mut acc = BooleanArray::from(vec![false; rows]);
            for c in children {
                acc = or(&acc, &eval(c, batch)?).map_err(internal)?;
            }
            Ok(acc)
        }
        Filter::Not(child) => not(&eval(child, batch)?).map_err(internal),
        Filter::IsNull { field, negated } => match batch.column_by_name(field) {
            None => Ok(BooleanArray::from(vec![!negated; rows])),
            Some(col) if *negated => is_not_null(col).map_err(internal),
            Some(col) => is_null(col).map_err(internal),
        },
        Filter::Compare { field, op, value } => match batch.column_by_name(field) {
            None => Ok(BooleanArray::from(vec![false; rows])),
            Some(col) => compare(field, col, *op, value),
        },
        Filter::In {
            field,
            values,
            negated,
        } => match batch.column_by_name(field) {
            None => Ok(BooleanArray::from(vec![false; rows])),
            Some(col) => {
                let mut acc = BooleanArray::from(vec![false; rows]);
                for v in values {
                    acc = or(&acc, &compare(field, col, CompareOp::Eq, v)?).map_err(internal)?;
                }
                if *negated {
                    let present = is_not_null(col).map_err(internal)?;
                    acc = and(&not(&acc).map_err(internal)?, &present).map_err(internal)?;
                }
                Ok(acc)
            }
        },
        Filter::Contains { field, value } => match batch.column_by_name(field) {
            None => Ok(BooleanArray::from(vec![false; rows])),
            Some(col) => {
                if col.data_type() != &DataType::Utf8 {
                    return Err(type_error(
                        field,
                        col.data_type(),
                        "contains needs a string column",
                    ));
                }
                let needle = Scalar::new(StringArray::from(vec![value.as_str()]));
                let m = arrow_string::like::contains(col, &needle).map_err(internal)?;
                Ok(nulls_false(m))
            }
        },
    }
}

fn internal(e: arrow_schema::ArrowError) -> ContractError {
    ContractError::invalid("filter", e)
}

fn type_error(field: &str, dt: &DataType, why: &str) -> ContractError {
    ContractError::invalid(
        format!("filter field '{field}'"),
        format!("column type {dt}: {why}"),
    )
}

fn nulls_false(mask: BooleanArray) -> BooleanArray {
    if mask.null_count() == 0 {
        mask
    } else {
        arrow_select::filter::prep_null_mask_filter(&mask)
    }
}

fn compare(field: &str, col: &ArrayRef, op: CompareOp, lit: &Literal) -> EvalResult {
    let (lhs, rhs) = coerce(field, col, lit)?;
    let f = match op {
        CompareOp::Eq => arrow_ord::cmp::eq,
        CompareOp::Ne => arrow_ord::cmp::neq,
        CompareOp::Lt => arrow_ord::cmp::lt,
        CompareOp::Le => arrow_ord::cmp::lt_eq,
        CompareOp::Gt => arrow_ord::cmp::gt,
        CompareOp::Ge => arrow_ord::cmp::gt_eq,
    };
    let m = f(&lhs, rhs.as_ref()).map_err(internal)?;
    Ok(nulls_false(m))
}

fn scalar_i64(v: i64) -> Box<dyn Datum> {
    Box::new(Scalar::new(Int64Array::from(vec![v])))
}
fn scalar_u64(v: u64) -> Box<dyn Datum> {
    Box::new(Scalar::new(UInt64Array::from(vec![v])))
}
fn scalar_f64(v: f64) -> Box<dyn Datum> {
    Box::new(Scalar::new(Float64Array::from(vec![v])))
}

fn cast_to(col: &ArrayRef, dt: &DataType) -> Result<ArrayRef, ContractError> {
    if col.data_type() == dt {
        return Ok(col.clone());
    }
    cast(col, dt).map_err(internal)
}

/// Bring a column and a literal to one comparable type.
fn coerce(
    field: &str,
    col: &ArrayRef,
    lit: &Literal,
) -> Result<(ArrayRef, Box<dyn Datum>), ContractError> {
    let dt = col.data_type();
    let mismatch = |what: &str| type_error(field, dt, &format!("cannot compare with {what}"));
    if let (true, Literal::Str(s)) = (dt.is_integer() || dt.is_floating(), lit) {
        let number = numeric_literal(s).ok_or_else(|| {
            type_error(
                field,
                dt,
                &format!(
                    "cannot compare with {} (not a number)",
                    longbow_common::error::quote(s)
                ),
            )
        })?;
        return coerce(field, col, &number);
    }
    if dt.is_integer() {
        return match lit {
            Literal::Int(v) if *dt == DataType::UInt64 && *v >= 0 => {
                Ok((col.clone(), scalar_u64(*v as u64)))
            }
            Literal::Int(v) if *dt != DataType::UInt64 => {
                Ok((cast_to(col, &DataType::Int64)?, scalar_i64(*v)))
            }
            Literal::UInt(v) if *dt == DataType::UInt64 => Ok((col.clone(), scalar_u64(*v))),
            Literal::Int(v) => Ok((cast_to(col, &DataType::Float64)?, scalar_f64(*v as f64))),
            Literal::UInt(v) => Ok((cast_to(col, &DataType::Float64)?, scalar_f64(*v as f64))),
            Literal::Float(v) => Ok((cast_to(col, &DataType::Float64)?, scalar_f64(*v))),
            Literal::Bool(_) => Err(mismatch("a boolean")),
            Literal::Str(_) => Err(mismatch("a string")),
        };
    }
    if dt.is_floating() {
        let v = match lit {
            Literal::Int(v) => *v as f64,
            Literal::UInt(v) => *v as f64,
            Literal::Float(v) => *v,
            Literal::Bool(_) => return Err(mismatch("a boolean")),
            Literal::Str(_) => return Err(mismatch("a string")),
        };
        return Ok((cast_to(col, &DataType::Float64)?, scalar_f64(v)));
    }
    match dt {
        DataType::Utf8 => match lit {
            Literal::Str(s) => Ok((
                col.clone(),
                Box::new(Scalar::new(StringArray::from(vec![s.as_str()]))),
            )),
            _ => Err(mismatch("a non-string value")),
        },
        DataType::Boolean => match lit {
            Literal::Bool(b) => Ok((
                col.clone(),
                Box::new(Scalar::new(BooleanArray::from(vec![*b]))),
            )),
            _ => Err(mismatch("a non-boolean value")),
        },
        DataType::Timestamp(unit, _) => {
            let raw = match lit {
                Literal::Int(v) => *v,
                Literal::Str(s) => {
                    let nanos = arrow_cast::parse::string_to_timestamp_nanos(s).map_err(|e| {
                        ContractError::invalid(
                            format!("filter field '{field}'"),
                            format!("'{s}' is not a timestamp: {e}"),
                        )
                    })?;
                    match unit {
                        TimeUnit::Second => nanos.div_euclid(1_000_000_000),
                        TimeUnit::Millisecond => nanos.div_euclid(1_000_000),
                        TimeUnit::Microsecond => nanos.div_euclid(1_000),
                        TimeUnit::Nanosecond => nanos,
                    }
                }
                _ => {
                    return Err(mismatch(
                        "this value (use an integer or an RFC 3339 string)",
                    ))
                }
            };
            Ok((cast_to(col, &DataType::Int64)?, scalar_i64(raw)))
        }
        DataType::Date32 | DataType::Date64 => {
            let raw = match lit {
                Literal::Int(v) => *v,
                Literal::Str(s) => {
                    let parsed = if *dt == DataType::Date32 {
                        Date32Type::parse(s).map(i64::from)
                    } else {
                        Date64Type::parse(s)
                    };
                    parsed.ok_or_else(|| {
                        ContractError::invalid(
                            format!("filter field '{field}'"),
                            format!("'{s}' is not a date (YYYY-MM-DD)"),
                        )
                    })?
                }
                _ => return Err(mismatch("this value (use an integer or YYYY-MM-DD)")),
            };
            let as_int = if *dt == DataType::Date32 {
                DataType::Int32
            } else {
                DataType::Int64
            };
            let ints = cast_to(col, &as_int)?;
            Ok((cast_to(&ints, &DataType::Int64)?, scalar_i64(raw)))
        }
        other => Err(type_error(
            field,
            other,
            "filters support integers, floats, strings, booleans, timestamps and dates",
        )),
    }
}

/// A string holding a number, as the literal that number would be in JSON.
fn numeric_literal(s: &str) -> Option<Literal> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(Literal::Int(i));
    }
    if let Ok(u) = s.parse::<u64>() {
        return Some(Literal::UInt(u));
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Literal::Float)
}

/// A shared handle to a parsed filter.
pub type SharedFilter = Arc<Filter>;

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, TimestampMillisecondArray};
    use arrow_schema::{Field, Schema};
    use serde_json::json;

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("price", DataType::Int32, true),
                Field::new("name", DataType::Utf8, true),
                Field::new("ok", DataType::Boolean, true),
                Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            ])),
            vec![
                Arc::new(Int32Array::from(vec![Some(5), Some(15), None, Some(10)])),
                Arc::new(StringArray::from(vec![
                    Some("apple pie"),
                    Some("banana"),
                    Some("cherry"),
                    None,
                ])),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    Some(true),
                    None,
                ])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(0),
                    Some(86_400_000),
                    None,
                    Some(1),
                ])),
            ],
        )
        .expect("batch")
    }

    fn run(f: serde_json::Value) -> Vec<bool> {
        let filter = Filter::parse("filter", &f).expect("parse");
        let m = eval(&filter, &batch()).expect("eval");
        m.iter().map(|v| v.expect("no nulls")).collect()
    }

    #[test]
    fn comparisons_and_null_semantics() {
        assert_eq!(
            run(json!({"field": "price", "op": "<", "value": 10})),
            [true, false, false, false]
        );
        assert_eq!(
            run(json!({"field": "price", "op": "<=", "value": 10.0})),
            [true, false, false, true]
        );
        assert_eq!(
            run(json!({"field": "price", "op": "!=", "value": 5})),
            [false, true, false, true]
        );
        assert_eq!(
            run(json!({"not": {"field": "price", "op": "<", "value": 10}})),
            [false, true, true, true]
        );
        assert_eq!(
            run(json!({"field": "price", "op": "is_null"})),
            [false, false, true, false]
        );
        assert_eq!(run(json!({"field": "missing", "op": "is_null"})), [true; 4]);
        assert_eq!(
            run(json!({"field": "missing", "op": "=", "value": 1})),
            [false; 4]
        );
    }

    #[test]
    fn strings_booleans_sets_and_trees() {
        assert_eq!(
            run(json!({"field": "name", "op": "contains", "value": "an"})),
            [false, true, false, false]
        );
        assert_eq!(
            run(json!({"field": "name", "op": "in", "value": ["banana", "cherry"]})),
            [false, true, true, false]
        );
        assert_eq!(
            run(json!({"field": "name", "op": "not_in", "value": ["banana"]})),
            [true, false, true, false]
        );
        assert_eq!(
            run(json!({"field": "ok", "op": "=", "value": true})),
            [true, false, true, false]
        );
        assert_eq!(
            run(
                json!({"or": [{"field": "ok", "op": "=", "value": false}, {"field": "price", "op": ">=", "value": 10}]})
            ),
            [false, true, false, true]
        );
        assert_eq!(run(json!({"and": []})), [true; 4]);
    }

    #[test]
    fn timestamps_accept_rfc3339_and_raw_units() {
        assert_eq!(
            run(json!({"field": "at", "op": ">=", "value": "1970-01-02T00:00:00Z"})),
            [false, true, false, false]
        );
        assert_eq!(
            run(json!({"field": "at", "op": "<", "value": 2})),
            [true, false, false, true]
        );
    }

    #[test]
    fn type_mismatch_names_the_field() {
        let filter = Filter::parse(
            "filter",
            &json!({"field": "price", "op": "=", "value": "x"}),
        )
        .expect("parse");
        let err = eval(&filter, &batch()).expect_err("mismatch");
        assert!(err.to_string().contains("'price'"), "{err}");
    }
}
