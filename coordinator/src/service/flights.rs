//! ListFlights / GetFlightInfo / GetSchema: each namespace is a flight whose endpoint ticket
//! scans it, so a stock Flight client can go GetFlightInfo → DoGet. ListFlights takes
//! Longbow 0.1's criteria: a JSON condition (or a list of them, all of which must hold) on
//! `name` (`contains`, `=`, `!=`) or `rows` (`= == != > >= < <=`, value a number or a string
//! holding one).

use std::sync::Arc;

use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{Field, Schema};
use futures::StreamExt;
use longbow_common::request::Shape;
use longbow_common::{columns, ContractError, ErrorExt};
use serde::Deserialize;
use tonic::Status;

use crate::catalog::NamespaceMeta;
use crate::namespaces::payload_of;
use crate::node::Coordinator;

fn schema_of(meta: &NamespaceMeta) -> Result<Schema, Status> {
    let payload = payload_of(meta).map_err(|e| e.to_status())?;
    let mut fields = vec![
        Field::new(columns::ID, meta.id_type.data_type(), false),
        Field::new(columns::VECTOR, columns::vector_type(meta.dim), false),
    ];
    fields.extend(payload.fields().iter().cloned());
    Ok(Schema::new(fields))
}

fn namespace_of(desc: &FlightDescriptor) -> Result<String, Status> {
    match desc.path.as_slice() {
        [ns] => Ok(ns.clone()),
        [] if !desc.cmd.is_empty() => {
            #[derive(Deserialize)]
            struct Cmd {
                namespace: String,
            }
            let cmd: Cmd = super::requests::PUT_COMMAND
                .fold_bytes("flight_descriptor.cmd", &desc.cmd)
                .and_then(|f| f.into_typed("flight_descriptor.cmd"))
                .map_err(|e| e.to_status())?;
            Ok(cmd.namespace)
        }
        _ => Err(ContractError::invalid(
            "flight_descriptor",
            "give path [\"<namespace>\"] or cmd {\"namespace\": ...}",
        )
        .to_status()),
    }
}

/// A ListFlights criteria condition.
pub const CRITERIA: Shape = Shape {
    what: "ListFlights criteria condition",
    keys: &["field", "op", "value"],
    aliases: &[("operator", "op")],
};

#[derive(Deserialize)]
struct Condition {
    field: String,
    op: String,
    value: serde_json::Value,
}

/// Which flights a criteria expression admits.
struct Criteria(Vec<Condition>);

impl Criteria {
    fn parse(expression: &[u8]) -> Result<Criteria, ContractError> {
        if expression.iter().all(u8::is_ascii_whitespace) {
            return Ok(Criteria(Vec::new()));
        }
        let v: serde_json::Value = serde_json::from_slice(expression).map_err(|e| {
            ContractError::invalid("criteria.expression", format!("is not JSON: {e}"))
        })?;
        let items = match v {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        };
        let conditions = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("criteria.expression[{i}]");
                let c: Condition = CRITERIA.parse(&path, item)?;
                c.check(&path)?;
                Ok(c)
            })
            .collect::<Result<_, ContractError>>()?;
        Ok(Criteria(conditions))
    }

    fn admits(&self, name: &str, rows: u64) -> bool {
        self.0.iter().all(|c| c.admits(name, rows))
    }

    fn needs_rows(&self) -> bool {
        self.0.iter().any(|c| c.field == "rows")
    }
}

impl Condition {
    fn number(&self) -> Option<f64> {
        match &self.value {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn check(&self, path: &str) -> Result<(), ContractError> {
        let op = self.op.to_ascii_lowercase();
        match self.field.as_str() {
            "name" => {
                if !matches!(op.as_str(), "contains" | "=" | "==" | "!=") {
                    return Err(ContractError::invalid(
                        format!("{path}.op"),
                        "name takes contains, =, == or !=",
                    ));
                }
                if !self.value.is_string() {
                    return Err(ContractError::invalid(
                        format!("{path}.value"),
                        "name needs a string",
                    ));
                }
            }
            "rows" => {
                if !matches!(op.as_str(), "=" | "==" | "!=" | ">" | ">=" | "<" | "<=") {
                    return Err(ContractError::invalid(
                        format!("{path}.op"),
                        "rows takes = == != > >= < <=",
                    ));
                }
                if self.number().is_none() {
                    return Err(ContractError::invalid(
                        format!("{path}.value"),
                        "rows needs a number (or a string holding one)",
                    ));
                }
            }
            other => {
                return Err(ContractError::invalid(
                    format!("{path}.field"),
                    format!(
                        "flights can be selected by name or rows, not {}",
                        longbow_common::error::quote(other)
                    ),
                ))
            }
        }
        Ok(())
    }

    fn admits(&self, name: &str, rows: u64) -> bool {
        let op = self.op.to_ascii_lowercase();
        if self.field == "name" {
            let v = self.value.as_str().unwrap_or_default();
            return match op.as_str() {
                "contains" => name.contains(v),
                "!=" => name != v,
                _ => name == v,
            };
        }
        let (r, v) = (rows as f64, self.number().unwrap_or(f64::NAN));
        match op.as_str() {
            ">" => r > v,
            ">=" => r >= v,
            "<" => r < v,
            "<=" => r <= v,
            "!=" => r != v,
            _ => r == v,
        }
    }
}

async fn info(coord: &Arc<Coordinator>, meta: &NamespaceMeta) -> Result<FlightInfo, Status> {
    let count = coord
        .namespace_stats(&meta.name)
        .await
        .map(|s| s.count as i64)
        .map_err(|e| e.to_status())?;
    info_with_count(meta, count)
}

/// A namespace's FlightInfo with `count` records (-1: unknown, Flight's convention).
fn info_with_count(meta: &NamespaceMeta, count: i64) -> Result<FlightInfo, Status> {
    let schema = schema_of(meta)?;
    let ticket = serde_json::json!({"scan": {"namespace": meta.name}}).to_string();
    FlightInfo::new()
        .try_with_schema(&schema)
        .map_err(|e| Status::internal(e.to_string()))
        .map(|i| {
            i.with_descriptor(FlightDescriptor::new_path(vec![meta.name.clone()]))
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
                .with_total_records(count)
        })
}

/// Namespaces whose row counts a listing asks for at once.
const LISTING_CONCURRENCY: usize = 16;

pub(super) async fn list_flights(
    coord: &Arc<Coordinator>,
    criteria: &[u8],
) -> Result<Vec<FlightInfo>, Status> {
    let criteria = Criteria::parse(criteria).map_err(|e| e.to_status())?;
    let metas: Vec<NamespaceMeta> = coord.namespaces();
    // Namespaces are asked for their counts a few at a time, in catalog order.
    let wanted = metas
        .into_iter()
        .filter(|m| criteria.needs_rows() || criteria.admits(&m.name, 0));
    let answers: Vec<_> = futures::stream::iter(wanted)
        .map(|m| async move {
            let r = info(coord, &m).await;
            (m, r)
        })
        .buffered(LISTING_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::with_capacity(answers.len());
    for (m, r) in answers {
        // One namespace whose shards cannot answer must not hide all the others: it is
        // listed with an unknown count (or left out when the criteria filter on counts).
        let i = match r {
            Ok(i) => i,
            Err(e) if !criteria.needs_rows() => {
                tracing::warn!(namespace = %m.name, error = %e.message(), "listing a namespace without its row count");
                info_with_count(&m, -1)?
            }
            Err(e) => {
                tracing::warn!(namespace = %m.name, error = %e.message(), "leaving a namespace whose row count is unknown out of a listing by rows");
                continue;
            }
        };
        if criteria.admits(&m.name, i.total_records.max(0) as u64) {
            out.push(i);
        }
    }
    Ok(out)
}

pub(super) async fn get_flight_info(
    coord: &Arc<Coordinator>,
    desc: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let ns = namespace_of(&desc)?;
    let meta = coord.namespace_now(&ns).await.map_err(|e| e.to_status())?;
    info(coord, &meta).await
}

pub(super) fn get_schema(
    coord: &Arc<Coordinator>,
    desc: FlightDescriptor,
) -> Result<SchemaResult, Status> {
    let ns = namespace_of(&desc)?;
    let meta = coord.namespace(&ns).map_err(|e| e.to_status())?;
    let schema = schema_of(&meta)?;
    SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow_schema::ArrowError| Status::internal(e.to_string()))
}
