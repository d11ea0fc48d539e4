//! Strict JSON request bodies: every action body, ticket and command of the wire contract is
//! read through a [`Shape`], which lists the keys it accepts and their aliases.
//!
//! Reading a body through its shape folds each alias into its canonical key (both given with
//! the same value is fine; with different values it is an error naming both), refuses any
//! key the shape does not list (the error names the key and lists the accepted ones), and
//! then deserializes, naming the dotted path of a field of the wrong type. A key that is
//! silently ignored is a wrong answer waiting to happen, so nothing here ever ignores one.
//!
//! This module only reads JSON; what a field means is the caller's business.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::quote;
use crate::ids::json_kind;
use crate::ContractError;

/// The keys one JSON object of the wire contract may carry.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// What the object is, for error messages (`"CreateNamespace body"`).
    pub what: &'static str,
    /// Canonical keys.
    pub keys: &'static [&'static str],
    /// `(alias, canonical key)` pairs.
    pub aliases: &'static [(&'static str, &'static str)],
}

/// A body read through a [`Shape`]: canonical keys only, plus which aliases were used (a
/// Longbow 0.1 spelling such as `dataset` selects that dialect's result shape).
#[derive(Debug, Clone, Default)]
pub struct Folded {
    /// The object with every alias folded into its canonical key.
    pub map: Map<String, Value>,
    /// The aliases the caller spelled.
    pub aliases_used: Vec<&'static str>,
}

impl Folded {
    /// Whether the caller spelled `alias`.
    pub fn used(&self, alias: &str) -> bool {
        self.aliases_used.contains(&alias)
    }

    /// Deserialize the folded object; `path` prefixes field names in errors.
    pub fn into_typed<T: DeserializeOwned>(self, path: &str) -> Result<T, ContractError> {
        typed(path, Value::Object(self.map))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Deserialize `v`, naming the dotted path of the first field that does not fit.
pub fn typed<T: DeserializeOwned>(path: &str, v: Value) -> Result<T, ContractError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.path().to_string();
        let field = match (path.is_empty(), inner.as_str()) {
            (true, ".") => "body".to_string(),
            (false, ".") => path.to_string(),
            (_, p) => join(path, p),
        };
        ContractError::invalid(field, e.into_inner())
    })
}

impl Shape {
    /// Parse `body` (JSON text; empty means `{}`) and fold it.
    pub fn fold_bytes(&self, path: &str, body: &[u8]) -> Result<Folded, ContractError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Folded::default());
        }
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            ContractError::invalid(
                if path.is_empty() { "body" } else { path },
                format!("{} is not valid JSON: {e}", self.what),
            )
        })?;
        self.fold(path, v)
    }

    /// Fold a JSON value (`null` means `{}`): aliases into canonical keys, unknown keys refused.
    pub fn fold(&self, path: &str, v: Value) -> Result<Folded, ContractError> {
        let map = match v {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                return Err(ContractError::invalid(
                    if path.is_empty() { "body" } else { path },
                    format!(
                        "{} must be a JSON object, got {}",
                        self.what,
                        json_kind(&other)
                    ),
                ))
            }
        };
        let mut out = Folded::default();
        // The spelling each canonical key was first given as.
        let mut spelled: Vec<(String, String)> = Vec::new();
        for (key, value) in map {
            let canonical = if self.keys.contains(&key.as_str()) {
                key.clone()
            } else if let Some((alias, canon)) = self.aliases.iter().find(|(a, _)| *a == key) {
                out.aliases_used.push(alias);
                canon.to_string()
            } else {
                return Err(ContractError::invalid(
                    join(path, &bounded_key(&key)),
                    format!("unknown key in {}; {}", self.what, self.accepted()),
                ));
            };
            match out.map.get(&canonical) {
                Some(prev) if *prev != value => {
                    let first = spelled
                        .iter()
                        .find(|(c, _)| *c == canonical)
                        .map_or(canonical.as_str(), |(_, k)| k.as_str());
                    return Err(ContractError::invalid(
                        join(path, &canonical),
                        format!(
                            "given as '{first}' and as '{key}' with different values; give one"
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    spelled.push((canonical.clone(), key));
                    out.map.insert(canonical, value);
                }
            }
        }
        Ok(out)
    }

    /// Fold and deserialize in one step.
    pub fn parse<T: DeserializeOwned>(&self, path: &str, v: Value) -> Result<T, ContractError> {
        self.fold(path, v)?.into_typed(path)
    }

    /// The accepted keys, for error messages.
    pub fn accepted(&self) -> String {
        let mut s = format!("accepted keys: {}", self.keys.join(", "));
        if !self.aliases.is_empty() {
            let a: Vec<String> = self
                .aliases
                .iter()
                .map(|(alias, canon)| format!("{alias} for {canon}"))
                .collect();
            s.push_str(&format!(" (aliases: {})", a.join(", ")));
        }
        s
    }
}

/// A key as it may appear in an error's field path: short keys whole, long ones cut.
fn bounded_key(key: &str) -> String {
    let q = quote(key);
    if q.len() == key.len() + 2 {
        key.to_string()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    const SHAPE: Shape = Shape {
        what: "test body",
        keys: &["namespace", "k"],
        aliases: &[("dataset", "namespace"), ("name", "namespace")],
    };

    #[derive(Deserialize, Debug)]
    struct Body {
        namespace: String,
        #[serde(default)]
        k: Option<usize>,
    }

    #[test]
    fn aliases_fold_into_the_canonical_key() {
        let f = SHAPE.fold("", json!({"dataset": "a", "k": 3})).expect("ok");
        assert!(f.used("dataset"));
        let b: Body = f.into_typed("").expect("typed");
        assert_eq!((b.namespace.as_str(), b.k), ("a", Some(3)));
    }

    #[test]
    fn alias_and_key_with_the_same_value_are_one() {
        let b: Body = SHAPE
            .parse("", json!({"dataset": "a", "namespace": "a"}))
            .expect("same value is fine");
        assert_eq!(b.namespace, "a");
    }

    #[test]
    fn alias_and_key_with_different_values_name_both() {
        let err = SHAPE
            .parse::<Body>("", json!({"dataset": "a", "namespace": "b"}))
            .expect_err("conflict");
        let msg = err.to_string();
        assert!(
            msg.contains("namespace") && msg.contains("dataset"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_accepted_ones() {
        let err = SHAPE
            .parse::<Body>("search", json!({"namespace": "a", "filters": []}))
            .expect_err("unknown");
        let msg = err.to_string();
        assert!(msg.contains("search.filters"), "{msg}");
        assert!(msg.contains("accepted keys: namespace, k"), "{msg}");
        assert!(msg.contains("dataset for namespace"), "{msg}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = SHAPE
            .parse::<Body>("", json!({"namespace": "a", "k": "ten"}))
            .expect_err("type");
        assert!(err.to_string().starts_with("invalid k:"), "{err}");
    }

    #[test]
    fn a_huge_unknown_key_is_quoted_bounded() {
        let key = "z".repeat(5000);
        let err = SHAPE.fold("", json!({ key: 1 })).expect_err("unknown");
        assert!(err.to_string().len() < 400, "{err}");
    }
}
