//! Namespace model types: the distance metric and the HNSW index parameters.

use serde::{Deserialize, Serialize};

use crate::ContractError;

/// How distance between two vectors is measured. Smaller distance is always nearer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Metric {
    /// Euclidean distance (reported as the true distance, ranked by its square).
    #[default]
    L2,
    /// `1 - cos(a, b)`; vectors are normalised once when written.
    Cosine,
    /// `-dot(a, b)`.
    Dot,
}

impl TryFrom<String> for Metric {
    type Error = ContractError;
    fn try_from(s: String) -> Result<Self, ContractError> {
        Metric::parse("metric", &s)
    }
}

impl Metric {
    /// Parse the wire name (`l2`, `cosine`, `dot`; a few common aliases are accepted).
    pub fn parse(field: &str, s: &str) -> Result<Self, ContractError> {
        match s.to_ascii_lowercase().as_str() {
            "l2" | "euclidean" => Ok(Metric::L2),
            "cosine" | "cos" => Ok(Metric::Cosine),
            "dot" | "ip" | "inner_product" | "dot_product" => Ok(Metric::Dot),
            other => Err(ContractError::invalid(
                field,
                format!(
                    "unknown metric {}, expected one of l2 (euclidean), cosine, dot (dot_product)",
                    crate::error::quote(other)
                ),
            )),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
        }
    }

    /// Convert the internal ranking value (squared L2, or negated inner product) to the
    /// distance reported on the wire.
    pub fn wire_distance(self, internal: f32) -> f32 {
        match self {
            Metric::L2 => internal.max(0.0).sqrt(),
            Metric::Cosine => 1.0 + internal,
            Metric::Dot => internal,
        }
    }

    /// The score reported on the wire (larger is nearer) for a wire distance.
    pub fn score(self, distance: f32) -> f32 {
        match self {
            Metric::L2 => 1.0 / (1.0 + distance),
            Metric::Cosine => 1.0 - distance,
            Metric::Dot => -distance,
        }
    }
}

/// HNSW parameters of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexParams {
    /// Maximum neighbours per node on upper layers (layer 0 keeps `2 * m`).
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Default candidate list size while searching (a query may override it).
    pub ef_search: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        IndexParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

/// Largest `m` accepted (layer 0 then holds 256 neighbours per node).
pub const MAX_M: usize = 128;
/// Largest `ef` / `ef_construction` accepted.
pub const MAX_EF: usize = 10_000;
/// Largest vector dimension accepted.
pub const MAX_DIM: usize = 65_536;
/// Largest `k` accepted by a search.
pub const MAX_K: usize = 10_000;

impl IndexParams {
    /// Check the parameters are within the supported ranges.
    pub fn validate(&self) -> Result<(), ContractError> {
        if !(2..=MAX_M).contains(&self.m) {
            return Err(ContractError::invalid(
                "index.m",
                format!("must be in 2..={MAX_M}"),
            ));
        }
        if !(1..=MAX_EF).contains(&self.ef_construction) {
            return Err(ContractError::invalid(
                "index.ef_construction",
                format!("must be in 1..={MAX_EF}"),
            ));
        }
        if !(1..=MAX_EF).contains(&self.ef_search) {
            return Err(ContractError::invalid(
                "index.ef_search",
                format!("must be in 1..={MAX_EF}"),
            ));
        }
        Ok(())
    }
}

/// Validate a vector dimension.
pub fn validate_dim(field: &str, dim: usize) -> Result<(), ContractError> {
    if dim == 0 || dim > MAX_DIM {
        return Err(ContractError::invalid(
            field,
            format!("must be in 1..={MAX_DIM}, got {dim}"),
        ));
    }
    Ok(())
}

/// Validate a search's `k`.
pub fn validate_k(k: usize) -> Result<(), ContractError> {
    if k == 0 || k > MAX_K {
        return Err(ContractError::invalid(
            "k",
            format!("must be in 1..={MAX_K}, got {k}"),
        ));
    }
    Ok(())
}

/// Validate a search's `ef` override.
pub fn validate_ef(ef: usize) -> Result<(), ContractError> {
    if ef == 0 || ef > MAX_EF {
        return Err(ContractError::invalid(
            "ef",
            format!("must be in 1..={MAX_EF}, got {ef}"),
        ));
    }
    Ok(())
}

/// Check a namespace name: safe as a directory name, readable in URLs and logs.
pub fn validate_namespace(field: &str, name: &str) -> Result<(), ContractError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ContractError::invalid(
            field,
            format!(
                "{} must be 1-128 characters of A-Z a-z 0-9 _ - . and not start with '.'",
                crate::error::quote(name)
            ),
        ))
    }
}
