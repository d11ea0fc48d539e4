//! Record ids: unsigned 64-bit integers or strings, always kept whole.

use std::fmt;

use arrow_array::{Array, ArrayRef, LargeStringArray, StringArray, StringViewArray, UInt64Array};
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
            "uint64" | "u64" | "int" => Ok(IdType::Uint64),
            "string" | "str" | "utf8" => Ok(IdType::String),
            other => Err(ContractError::invalid(
                field,
                format!("unknown id_type '{other}', expected uint64 or string"),
            )),
        }
    }

    /// The Arrow type used for the `id` column.
    pub fn data_type(self) -> DataType {
        match self {
            IdType::Uint64 => DataType::UInt64,
            IdType::String => DataType::Utf8,
        }
    }

    /// Infer the id type from an Arrow column type.
    pub fn from_data_type(dt: &DataType) -> Result<Self, ContractError> {
        match dt {
            DataType::UInt64
            | DataType::UInt32
            | DataType::UInt16
            | DataType::UInt8
            | DataType::Int64
            | DataType::Int32
            | DataType::Int16
            | DataType::Int8 => Ok(IdType::Uint64),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(IdType::String),
            other => Err(ContractError::invalid(
                "id",
                format!("column type {other} is not an id type (use UInt64 or Utf8)"),
            )),
        }
    }
}

/// One record id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdValue {
    /// An integer id.
    U64(u64),
    /// A string id.
    Str(Box<str>),
}

impl fmt::Display for IdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdValue::U64(v) => write!(f, "{v}"),
            IdValue::Str(s) => write!(f, "{s:?}"),
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
        match (id_type, v) {
            (IdType::Uint64, serde_json::Value::Number(n)) => n
                .as_u64()
                .map(IdValue::U64)
                .ok_or_else(|| ContractError::invalid(field, format!("{n} is not a uint64 id"))),
            (IdType::Uint64, other) => Err(ContractError::invalid(
                field,
                format!("expected a uint64 id, got {}", json_kind(other)),
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
/// Integer columns of any width are accepted for `uint64` namespaces (negative values are
/// rejected); string columns of any layout for `string` namespaces. Nulls are rejected.
pub fn ids_from_array(array: &dyn Array, id_type: IdType) -> Result<Vec<IdValue>, ContractError> {
    if array.null_count() > 0 {
        let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
        return Err(ContractError::invalid(
            format!("id[{row}]"),
            "ids must not be null",
        ));
    }
    let found = IdType::from_data_type(array.data_type())?;
    if found != id_type {
        return Err(ContractError::invalid(
            "id",
            format!(
                "column type {} does not match the namespace id_type {}",
                array.data_type(),
                match id_type {
                    IdType::Uint64 => "uint64",
                    IdType::String => "string",
                }
            ),
        ));
    }
    match id_type {
        IdType::Uint64 => {
            if let Some(a) = array.as_any().downcast_ref::<UInt64Array>() {
                return Ok(a.values().iter().map(|&v| IdValue::U64(v)).collect());
            }
            let cast = arrow_cast_to_u64(array)?;
            Ok(cast.into_iter().map(IdValue::U64).collect())
        }
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

fn arrow_cast_to_u64(array: &dyn Array) -> Result<Vec<u64>, ContractError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    macro_rules! signed {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            a.values()
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    u64::try_from(v).map_err(|_| {
                        ContractError::invalid(format!("id[{i}]"), format!("{v} is negative"))
                    })
                })
                .collect()
        }};
    }
    match array.data_type() {
        DataType::UInt32 => Ok(array
            .as_primitive::<UInt32Type>()
            .values()
            .iter()
            .map(|&v| v as u64)
            .collect()),
        DataType::UInt16 => Ok(array
            .as_primitive::<UInt16Type>()
            .values()
            .iter()
            .map(|&v| v as u64)
            .collect()),
        DataType::UInt8 => Ok(array
            .as_primitive::<UInt8Type>()
            .values()
            .iter()
            .map(|&v| v as u64)
            .collect()),
        DataType::Int64 => signed!(Int64Type),
        DataType::Int32 => signed!(Int32Type),
        DataType::Int16 => signed!(Int16Type),
        DataType::Int8 => signed!(Int8Type),
        other => Err(ContractError::invalid(
            "id",
            format!("unsupported id column type {other}"),
        )),
    }
}

/// Build an Arrow `id` column from ids of one type.
pub fn ids_to_array<'a>(ids: impl IntoIterator<Item = &'a IdValue>, id_type: IdType) -> ArrayRef {
    match id_type {
        IdType::Uint64 => std::sync::Arc::new(UInt64Array::from_iter_values(ids.into_iter().map(
            |id| match id {
                IdValue::U64(v) => *v,
                // Replicas only ever store ids of their own type (checked on write).
                IdValue::Str(_) => 0,
            },
        ))),
        IdType::String => std::sync::Arc::new(StringArray::from_iter_values(ids.into_iter().map(
            |id| match id {
                IdValue::Str(s) => s.to_string(),
                IdValue::U64(v) => v.to_string(),
            },
        ))),
    }
}
