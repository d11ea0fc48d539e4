//! The JSON filter language of the wire contract, parsed into a typed tree.
//!
//! Forms accepted:
//! - `{"field": "price", "op": "<", "value": 10}` (also `"operator"` for `"op"`);
//! - `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}`;
//! - Longbow's list form `[{"field", "operator", "value"}, ...]`, meaning AND;
//! - Longbow's group form `{"logic": "and" | "or", "filters": [...]}`.
//!
//! Ops, case-insensitive: `= != < <= > >= in not_in contains is_null` (plus the aliases
//! `== eq <> ne neq lt lte le gt gte ge`, `not in` and `nin` for `not_in`, `like` for
//! `contains`, `is_not_null`). The field `id` is the record id. A string value compared with a
//! numeric column is read as a number (`"100"` on an int64 column is 100). This module only
//! parses; evaluating against stored payload is the shard's job. Every error names the JSON
//! path of the offending element.

use serde_json::Value;

use crate::ids::json_kind;
use crate::ContractError;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A literal in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// A non-integral number.
    Float(f64),
    /// A string (also used for timestamps and dates in RFC 3339 / ISO 8601 form).
    Str(String),
}

/// A parsed filter tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every child must match (an empty list matches everything).
    And(Vec<Filter>),
    /// At least one child must match (an empty list matches nothing).
    Or(Vec<Filter>),
    /// The child must not match.
    Not(Box<Filter>),
    /// `field op value`. A null or missing value never compares true.
    Compare {
        /// Payload column name.
        field: String,
        /// Operator.
        op: CompareOp,
        /// Right-hand side.
        value: Literal,
    },
    /// `field in [values]` (or `not_in` when `negated`; a null value matches neither).
    In {
        /// Payload column name.
        field: String,
        /// Candidate values.
        values: Vec<Literal>,
        /// `not_in` instead of `in`.
        negated: bool,
    },
    /// The string column contains the substring.
    Contains {
        /// Payload column name.
        field: String,
        /// Substring to look for.
        value: String,
    },
    /// The value is null or the column is missing (`is_not_null` when `negated`).
    IsNull {
        /// Payload column name.
        field: String,
        /// `is_not_null` instead of `is_null`.
        negated: bool,
    },
}

/// Deepest nesting accepted, so a hostile filter cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

impl Filter {
    /// Parse a filter from its JSON form. `path` is the name of the field holding it
    /// (usually `"filter"`), used in error messages.
    pub fn parse(path: &str, v: &Value) -> Result<Filter, ContractError> {
        parse_node(path, v, 0)
    }

    /// Parse a filter from JSON text.
    pub fn parse_str(path: &str, text: &str) -> Result<Filter, ContractError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ContractError::invalid(path, format!("malformed JSON: {e}")))?;
        Filter::parse(path, &v)
    }

    /// Every payload field the filter mentions.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Filter::And(c) | Filter::Or(c) => c.iter().for_each(|f| f.collect_fields(out)),
            Filter::Not(c) => c.collect_fields(out),
            Filter::Compare { field, .. }
            | Filter::In { field, .. }
            | Filter::Contains { field, .. }
            | Filter::IsNull { field, .. } => out.push(field),
        }
    }
}

fn parse_node(path: &str, v: &Value, depth: usize) -> Result<Filter, ContractError> {
    if depth > MAX_DEPTH {
        return Err(ContractError::invalid(
            path,
            format!("nested deeper than {MAX_DEPTH}"),
        ));
    }
    match v {
        Value::Array(items) => {
            let children = items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_node(&format!("{path}[{i}]"), item, depth + 1))
                .collect::<Result<_, _>>()?;
            Ok(Filter::And(children))
        }
        Value::Object(map) => {
            for key in ["and", "or"] {
                if let Some(children) = map.get(key) {
                    if map.len() != 1 {
                        return Err(ContractError::invalid(
                            path,
                            format!("'{key}' must be the only key of its object"),
                        ));
                    }
                    let parsed = parse_children(&format!("{path}.{key}"), children, depth)?;
                    return Ok(if key == "and" {
                        Filter::And(parsed)
                    } else {
                        Filter::Or(parsed)
                    });
                }
            }
            if let Some(children) = map.get("filters") {
                return parse_group(path, map, children, depth);
            }
            if let Some(child) = map.get("not") {
                if map.len() != 1 {
                    return Err(ContractError::invalid(path, "'not' must be the only key"));
                }
                let inner = parse_node(&format!("{path}.not"), child, depth + 1)?;
                return Ok(Filter::Not(Box::new(inner)));
            }
            parse_condition(path, map)
        }
        other => Err(ContractError::invalid(
            path,
            format!("expected an object or an array, got {}", json_kind(other)),
        )),
    }
}

/// The filters of an `and`, `or` or `filters` array at `path`.
fn parse_children(
    path: &str,
    children: &Value,
    depth: usize,
) -> Result<Vec<Filter>, ContractError> {
    let Value::Array(items) = children else {
        return Err(ContractError::invalid(path, "expected an array"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_node(&format!("{path}[{i}]"), item, depth + 1))
        .collect()
}

/// Longbow's `{"logic": "and" | "or", "filters": [...]}` (no `logic` means and).
fn parse_group(
    path: &str,
    map: &serde_json::Map<String, Value>,
    children: &Value,
    depth: usize,
) -> Result<Filter, ContractError> {
    if let Some(extra) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "logic" | "filters"))
    {
        return Err(ContractError::invalid(
            format!("{path}.{}", crate::error::quote(extra)),
            "unknown key beside 'filters' (expected only 'logic')",
        ));
    }
    let or = match map.get("logic") {
        None => false,
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "and" => false,
            "or" => true,
            other => {
                return Err(ContractError::invalid(
                    format!("{path}.logic"),
                    format!(
                        "expected \"and\" or \"or\", got {}",
                        crate::error::quote(other)
                    ),
                ))
            }
        },
        Some(other) => {
            return Err(ContractError::invalid(
                format!("{path}.logic"),
                format!("expected a string, got {}", json_kind(other)),
            ))
        }
    };
    let parsed = parse_children(&format!("{path}.filters"), children, depth)?;
    Ok(if or {
        Filter::Or(parsed)
    } else {
        Filter::And(parsed)
    })
}

fn parse_condition(
    path: &str,
    map: &serde_json::Map<String, Value>,
) -> Result<Filter, ContractError> {
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "field" | "op" | "operator" | "value" | "values"
        ) {
            return Err(ContractError::invalid(
                format!("{path}.{key}"),
                "unknown key (expected field, op, value, or and/or/not, or logic/filters)",
            ));
        }
    }
    let field = match map.get("field") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(ContractError::invalid(
                format!("{path}.field"),
                format!("expected a non-empty string, got {}", json_kind(other)),
            ))
        }
        None => {
            return Err(ContractError::invalid(
                format!("{path}.field"),
                "is missing",
            ))
        }
    };
    let (op_key, op) = match (map.get("op"), map.get("operator")) {
        (Some(op), None) => ("op", op),
        (None, Some(op)) => ("operator", op),
        (Some(_), Some(_)) => {
            return Err(ContractError::invalid(
                path,
                "give either 'op' or 'operator', not both",
            ))
        }
        (None, None) => return Err(ContractError::invalid(format!("{path}.op"), "is missing")),
    };
    let op_path = format!("{path}.{op_key}");
    let Value::String(op) = op else {
        return Err(ContractError::invalid(op_path, "expected a string"));
    };
    let value = map.get("value").or_else(|| map.get("values"));
    let value_path = format!("{path}.value");
    let need_value = || -> Result<&Value, ContractError> {
        value.ok_or_else(|| ContractError::invalid(value_path.clone(), "is missing"))
    };
    let compare = |op: CompareOp| -> Result<Filter, ContractError> {
        Ok(Filter::Compare {
            field: field.clone(),
            op,
            value: literal(&value_path, need_value()?)?,
        })
    };
    match op.to_ascii_lowercase().as_str() {
        "=" | "==" | "eq" => compare(CompareOp::Eq),
        "!=" | "<>" | "ne" | "neq" => compare(CompareOp::Ne),
        "<" | "lt" => compare(CompareOp::Lt),
        "<=" | "le" | "lte" => compare(CompareOp::Le),
        ">" | "gt" => compare(CompareOp::Gt),
        ">=" | "ge" | "gte" => compare(CompareOp::Ge),
        op @ ("in" | "not_in" | "not in" | "notin" | "nin") => {
            let Value::Array(items) = need_value()? else {
                return Err(ContractError::invalid(
                    value_path,
                    "expected an array for in/not_in",
                ));
            };
            let values = items
                .iter()
                .enumerate()
                .map(|(i, item)| literal(&format!("{value_path}[{i}]"), item))
                .collect::<Result<_, _>>()?;
            Ok(Filter::In {
                field,
                values,
                negated: op != "in",
            })
        }
        "contains" | "like" => match need_value()? {
            Value::String(s) => Ok(Filter::Contains {
                field,
                value: s.clone(),
            }),
            other => Err(ContractError::invalid(
                value_path,
                format!("contains needs a string, got {}", json_kind(other)),
            )),
        },
        "is_null" | "isnull" => {
            let negated = match value {
                None | Some(Value::Bool(true)) => false,
                Some(Value::Bool(false)) => true,
                Some(other) => {
                    return Err(ContractError::invalid(
                        value_path,
                        format!(
                            "is_null takes an optional boolean, got {}",
                            json_kind(other)
                        ),
                    ))
                }
            };
            Ok(Filter::IsNull { field, negated })
        }
        "is_not_null" | "not_null" => Ok(Filter::IsNull {
            field,
            negated: true,
        }),
        other => Err(ContractError::invalid(
            op_path,
            format!(
                "unknown operator {} (expected = != < <= > >= in not_in contains is_null)",
                crate::error::quote(other)
            ),
        )),
    }
}

fn literal(path: &str, v: &Value) -> Result<Literal, ContractError> {
    match v {
        Value::Bool(b) => Ok(Literal::Bool(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Literal::Int(i))
            } else if let Some(u) = n.as_u64() {
                Ok(Literal::UInt(u))
            } else {
                let f = n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
                    ContractError::invalid(path, format!("{n} is not a finite number"))
                })?;
                Ok(Literal::Float(f))
            }
        }
        Value::String(s) => Ok(Literal::Str(s.clone())),
        other => Err(ContractError::invalid(
            path,
            format!(
                "expected a boolean, number or string, got {}",
                json_kind(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_tree_parses() {
        let f = Filter::parse(
            "filter",
            &json!({"and": [
                {"field": "price", "op": "<", "value": 10},
                {"or": [{"field": "tag", "op": "in", "value": ["a", "b"]},
                        {"not": {"field": "name", "op": "is_null"}}]}
            ]}),
        )
        .expect("valid");
        assert_eq!(f.fields(), vec!["price", "tag", "name"]);
    }

    #[test]
    fn list_form_means_and() {
        let f = Filter::parse(
            "filter",
            &json!([{"field": "a", "operator": "eq", "value": 1},
                    {"field": "b", "operator": ">=", "value": 2.5}]),
        )
        .expect("valid");
        assert!(matches!(f, Filter::And(ref c) if c.len() == 2));
    }

    #[test]
    fn errors_name_the_path() {
        let err = Filter::parse(
            "filter",
            &json!({"and": [{"field": "a", "op": "~", "value": 1}]}),
        )
        .expect_err("bad op");
        assert!(err.to_string().contains("filter.and[0].op"), "{err}");
        let err = Filter::parse("filter", &json!({"field": "a", "op": "in", "value": 3}))
            .expect_err("in needs array");
        assert!(err.to_string().contains("filter.value"), "{err}");
        let err = Filter::parse("filter", &json!({"op": "="})).expect_err("no field");
        assert!(err.to_string().contains("filter.field"), "{err}");
    }

    #[test]
    fn longbow_group_form_and_operator_spellings() {
        let f = Filter::parse(
            "filters",
            &json!([{"logic": "OR", "filters": [
                {"field": "a", "operator": "NOT IN", "value": [1, 2]},
                {"field": "b", "op": "Like", "value": "x"},
                {"field": "id", "op": "ge", "value": "10"}
            ]}]),
        )
        .expect("valid");
        let Filter::And(outer) = &f else {
            panic!("list form is and: {f:?}")
        };
        let Filter::Or(inner) = &outer[0] else {
            panic!("logic or: {f:?}")
        };
        assert!(matches!(inner[0], Filter::In { negated: true, .. }));
        assert!(matches!(inner[1], Filter::Contains { .. }));
        assert_eq!(f.fields(), vec!["a", "b", "id"]);
        let err = Filter::parse("f", &json!({"logic": "xor", "filters": []})).expect_err("bad");
        assert!(err.to_string().contains("f.logic"), "{err}");
    }

    #[test]
    fn depth_is_bounded() {
        let mut v = json!({"field": "a", "op": "=", "value": 1});
        for _ in 0..100 {
            v = json!({ "not": v });
        }
        assert!(Filter::parse("filter", &v).is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            prop_oneof![
                Just("field"),
                Just("op"),
                Just("value"),
                Just("="),
                Just("in"),
                Just("and"),
                Just("price")
            ]
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("field"),
                        Just("op"),
                        Just("operator"),
                        Just("value"),
                        Just("and"),
                        Just("or"),
                        Just("not"),
                        Just("x")
                    ]
                    .prop_map(String::from),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Any JSON either parses or yields an error naming a path under `filter`; never a panic.
        #[test]
        fn arbitrary_json_never_panics(v in json()) {
            match Filter::parse("filter", &v) {
                Ok(_) => {}
                Err(ContractError::InvalidField { field, .. }) => prop_assert!(field.starts_with("filter"), "{field}"),
            }
        }
    }
}
