//! Record ids: unsigned or signed 64-bit integers, or strings, always kept whole.
//!
//! An integer id column of any width is accepted for either integer id type as long as every
//! value fits; a JSON id may be a number or, for integer namespaces, a string holding one
//! (Longbow 0.1 clients send ids as strings).

use std::fmt;

use arrow_array::{
    Array, ArrayRef, Int64Array, LargeStringArray, StringArray, StringViewArray, UInt64Array,
};
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use crate::ContractError;

/// The id type of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum IdType {
    /// Unsigned 64-bit integer ids (Arrow `UInt64`).
    #[default]
    Uint64,
    /// Signed 64-bit integer ids (Arrow `Int64`; Longbow 0.1 clients send negative ids).
    Int64,
    /// UTF-8 string ids (Arrow `Utf8`).
    String,
}

impl TryFrom<String> for IdType {
    type Error = ContractError;
    fn try_from(s: String) -> Result<Self, ContractError> {
        IdType::parse("id_type", &s)
    }
}

impl IdType {
    /// Parse the wire name (`uint64` or `string`).
    pub fn parse(field: &str, s: &str) -> Result<Self, ContractError> {
        match s.to_ascii_lowercase().as_str() {
            "uint64" | "u64" => Ok(IdType::Uint64),
            "int64" | "i64" | "int" => Ok(IdType::Int64),
            "string" | "str" | "utf8" => Ok(IdType::String),
            other => Err(ContractError::invalid(
                field,
                format!(
                    "unknown id_type {}, expected uint64, int64 or string",
                    crate::error::quote(other)
                ),
            )),
        }
    }

    /// The Arrow type used for the `id` column.
    pub fn data_type(self) -> DataType {
        match self {
            IdType::Uint64 => DataType::UInt64,
            IdType::Int64 => DataType::Int64,
            IdType::String => DataType::Utf8,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdType::Uint64 => "uint64",
            IdType::Int64 => "int64",
            IdType::String => "string",
        }
    }

    /// Infer the id type from an Arrow column type.
    pub fn from_data_type(dt: &DataType) -> Result<Self, ContractError> {
        match dt {
            DataType::UInt64 | DataType::UInt32 | DataType::UInt16 | DataType::UInt8 => {
                Ok(IdType::Uint64)
            }
            DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => {
                Ok(IdType::Int64)
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(IdType::String),
            other => Err(ContractError::invalid(
                "id",
                format!("column type {other} is not an id type (use UInt64, Int64 or Utf8)"),
            )),
        }
    }

    fn is_integer(self) -> bool {
        matches!(self, IdType::Uint64 | IdType::Int64)
    }
}

/// One record id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdValue {
    /// An unsigned integer id.
    U64(u64),
    /// A signed integer id.
    I64(i64),
    /// A string id.
    Str(Box<str>),
}

impl fmt::Display for IdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdValue::U64(v) => write!(f, "{v}"),
            IdValue::I64(v) => write!(f, "{v}"),
            IdValue::Str(s) => write!(f, "{}", crate::error::quote(s)),
        }
    }
}

impl IdValue {
    /// Read an id from JSON for a namespace of `id_type`; `field` names it in errors.
    pub fn from_json(
        field: &str,
        v: &serde_json::Value,
        id_type: IdType,
    ) -> Result<Self, ContractError> {
        let not_integer = |what: &str| {
            ContractError::invalid(field, format!("{what} is not a {} id", id_type.as_str()))
        };
        match (id_type, v) {
            (IdType::Uint64, serde_json::Value::Number(n)) => n
                .as_u64()
                .map(IdValue::U64)
                .ok_or_else(|| not_integer(&n.to_string())),
            (IdType::Int64, serde_json::Value::Number(n)) => n
                .as_i64()
                .map(IdValue::I64)
                .ok_or_else(|| not_integer(&n.to_string())),
            (IdType::Uint64, serde_json::Value::String(s)) => s
                .trim()
                .parse()
                .map(IdValue::U64)
                .map_err(|_| not_integer(&crate::error::quote(s))),
            (IdType::Int64, serde_json::Value::String(s)) => s
                .trim()
                .parse()
                .map(IdValue::I64)
                .map_err(|_| not_integer(&crate::error::quote(s))),
            (IdType::Uint64 | IdType::Int64, other) => Err(ContractError::invalid(
                field,
                format!(
                    "expected a {} id, got {}",
                    id_type.as_str(),
                    json_kind(other)
                ),
            )),
            (IdType::String, serde_json::Value::String(s)) => Ok(IdValue::Str(s.as_str().into())),
            (IdType::String, other) => Err(ContractError::invalid(
                field,
                format!("expected a string id, got {}", json_kind(other)),
            )),
        }
    }

    /// The id as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            IdValue::U64(v) => serde_json::Value::from(*v),
            IdValue::I64(v) => serde_json::Value::from(*v),
            IdValue::Str(s) => serde_json::Value::from(s.as_ref()),
        }
    }
}

/// Short name of a JSON value's kind, for error messages.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Read every id of an Arrow `id` column for a namespace of `id_type`.
///
/// Integer columns of any width are accepted for integer namespaces when every value fits
/// (a negative id in a `uint64` namespace is refused, naming its row); string columns of any
/// layout for `string` namespaces. Nulls are rejected.
pub fn ids_from_array(array: &dyn Array, id_type: IdType) -> Result<Vec<IdValue>, ContractError> {
    if array.null_count() > 0 {
        let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
        return Err(ContractError::invalid(
            format!("id[{row}]"),
            "ids must not be null",
        ));
    }
    let found = IdType::from_data_type(array.data_type())?;
    if found.is_integer() != id_type.is_integer() {
        return Err(ContractError::invalid(
            "id",
            format!(
                "column type {} does not match the namespace id_type {}",
                array.data_type(),
                id_type.as_str()
            ),
        ));
    }
    match id_type {
        IdType::Uint64 => Ok(integers(array)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                u64::try_from(v).map(IdValue::U64).map_err(|_| {
                    ContractError::invalid(format!("id[{i}]"), format!("{v} is negative"))
                })
            })
            .collect::<Result<_, _>>()?),
        IdType::Int64 => Ok(integers(array)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                i64::try_from(v).map(IdValue::I64).map_err(|_| {
                    ContractError::invalid(
                        format!("id[{i}]"),
                        format!("{v} does not fit an int64 id"),
                    )
                })
            })
            .collect::<Result<_, _>>()?),
        IdType::String => {
            let any = array.as_any();
            if let Some(a) = any.downcast_ref::<StringArray>() {
                Ok(a.iter()
                    .map(|s| IdValue::Str(s.unwrap_or_default().into()))
                    .collect())
            } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
                Ok(a.iter()
                    .map(|s| IdValue::Str(s.unwrap_or_default().into()))
                    .collect())
            } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
                Ok(a.iter()
                    .map(|s| IdValue::Str(s.unwrap_or_default().into()))
                    .collect())
            } else {
                Err(ContractError::invalid("id", "unsupported string layout"))
            }
        }
    }
}

/// Every value of an integer column, widened to `i128` so both id types can check the range.
fn integers(array: &dyn Array) -> Result<Vec<i128>, ContractError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    macro_rules! widen {
        ($t:ty) => {
            array
                .as_primitive::<$t>()
                .values()
                .iter()
                .map(|&v| v as i128)
                .collect()
        };
    }
    Ok(match array.data_type() {
        DataType::UInt64 => widen!(UInt64Type),
        DataType::UInt32 => widen!(UInt32Type),
        DataType::UInt16 => widen!(UInt16Type),
        DataType::UInt8 => widen!(UInt8Type),
        DataType::Int64 => widen!(Int64Type),
        DataType::Int32 => widen!(Int32Type),
        DataType::Int16 => widen!(Int16Type),
        DataType::Int8 => widen!(Int8Type),
        other => {
            return Err(ContractError::invalid(
                "id",
                format!("unsupported id column type {other}"),
            ))
        }
    })
}

/// Build an Arrow `id` column from ids of one type.
pub fn ids_to_array<'a>(ids: impl IntoIterator<Item = &'a IdValue>, id_type: IdType) -> ArrayRef {
    // Replicas only ever store ids of their own type (checked on write), so the fallback
    // arms below are never taken for stored ids.
    match id_type {
        IdType::Uint64 => std::sync::Arc::new(UInt64Array::from_iter_values(ids.into_iter().map(
            |id| match id {
                IdValue::U64(v) => *v,
                IdValue::I64(v) => *v as u64,
                IdValue::Str(_) => 0,
            },
        ))),
        IdType::Int64 => std::sync::Arc::new(Int64Array::from_iter_values(ids.into_iter().map(
            |id| match id {
                IdValue::I64(v) => *v,
                IdValue::U64(v) => *v as i64,
                IdValue::Str(_) => 0,
            },
        ))),
        IdType::String => std::sync::Arc::new(StringArray::from_iter_values(ids.into_iter().map(
            |id| match id {
                IdValue::Str(s) => s.to_string(),
                IdValue::U64(v) => v.to_string(),
                IdValue::I64(v) => v.to_string(),
            },
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, Int64Array};

    #[test]
    fn negative_ids_need_an_int64_namespace() {
        let a = Int64Array::from(vec![-5, 7]);
        let ids = ids_from_array(&a, IdType::Int64).expect("int64");
        assert_eq!(ids, vec![IdValue::I64(-5), IdValue::I64(7)]);
        let err = ids_from_array(&a, IdType::Uint64).expect_err("negative");
        assert!(err.to_string().contains("id[0]"), "{err}");
        let narrow = Int32Array::from(vec![3]);
        assert_eq!(
            ids_from_array(&narrow, IdType::Uint64).expect("fits"),
            vec![IdValue::U64(3)]
        );
        let big = UInt64Array::from(vec![u64::MAX]);
        assert!(ids_from_array(&big, IdType::Int64).is_err());
    }

    #[test]
    fn json_ids_may_be_strings_for_integer_namespaces() {
        let v = serde_json::json!("-12");
        assert_eq!(
            IdValue::from_json("id", &v, IdType::Int64).expect("int64"),
            IdValue::I64(-12)
        );
        assert!(IdValue::from_json("id", &v, IdType::Uint64).is_err());
        assert_eq!(
            IdValue::from_json("id", &serde_json::json!("12"), IdType::Uint64).expect("u64"),
            IdValue::U64(12)
        );
        assert!(IdValue::from_json("id", &serde_json::json!(5), IdType::String).is_err());
    }
}
