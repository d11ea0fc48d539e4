//! ListFlights / GetFlightInfo / GetSchema: each namespace is a flight whose endpoint ticket
//! scans it, so a stock Flight client can go GetFlightInfo → DoGet.

use std::sync::Arc;

use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{Field, Schema};
use longbow_common::{columns, ErrorExt};
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
        _ => match serde_json::from_slice::<serde_json::Value>(&desc.cmd).ok().and_then(|v| {
            ["namespace", "dataset", "name"].iter().find_map(|k| v.get(k).and_then(|n| n.as_str()).map(String::from))
        }) {
            Some(ns) => Ok(ns),
            None => Err(Status::invalid_argument("invalid flight_descriptor: give path [\"<namespace>\"] or cmd {\"namespace\": ...}")),
        },
    }
}

async fn info(coord: &Arc<Coordinator>, meta: &NamespaceMeta) -> Result<FlightInfo, Status> {
    let schema = schema_of(meta)?;
    let count = coord
        .namespace_stats(&meta.name)
        .await
        .map(|s| s.count as i64)
        .map_err(|e| e.to_status())?;
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

pub(super) async fn list_flights(coord: &Arc<Coordinator>) -> Result<Vec<FlightInfo>, Status> {
    let metas: Vec<NamespaceMeta> = coord
        .group
        .catalog
        .read()
        .namespaces
        .values()
        .cloned()
        .collect();
    let mut out = Vec::with_capacity(metas.len());
    for m in &metas {
        out.push(info(coord, m).await?);
    }
    Ok(out)
}

pub(super) async fn get_flight_info(
    coord: &Arc<Coordinator>,
    desc: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let ns = namespace_of(&desc)?;
    let meta = coord.namespace(&ns).map_err(|e| e.to_status())?;
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
