//! The shard node's Arrow Flight API (see `longbow_common::shard_api` for the shapes).
//!
//! This layer only translates: Flight messages in, calls on [`ShardNode`] / [`Replica`],
//! Flight messages out. It never touches segments or the WAL directly, and every failure
//! leaves as a gRPC status built from the layer's error (bad input is INVALID_ARGUMENT naming
//! the field, never INTERNAL).

mod actions;
mod streams;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::StreamExt;
use longbow_common::in_process::{InProcessShard, SearchFuture};
use longbow_common::shard_api::{SearchCommand, ACTIONS};
use tonic::{Request, Response, Status, Streaming};

use crate::node::ShardNode;
use crate::replica::Replica;

/// Largest gRPC message accepted or sent (one Flight batch).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

pub(crate) use longbow_common::flight::BoxStream;

/// The Flight service of a shard node.
#[derive(Clone)]
pub struct ShardService {
    node: Arc<ShardNode>,
}

impl ShardService {
    /// A service over `node`.
    pub fn new(node: Arc<ShardNode>) -> Self {
        ShardService { node }
    }

    /// The tonic server wrapper with Longbow's message limits.
    pub fn into_server(self) -> FlightServiceServer<ShardService> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn replica(&self, namespace: &str, shard: u32) -> Result<Arc<Replica>, Status> {
        let key = longbow_common::shard_api::ReplicaKey {
            namespace: namespace.to_string(),
            shard,
        };
        Ok(self.node.replica(&key)?)
    }
}

/// Serve `node` on `listener` until `shutdown` resolves.
pub async fn serve(
    node: Arc<ShardNode>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(ShardService::new(node).into_server())
        .serve_with_incoming_shutdown(longbow_common::net::nodelay_incoming(listener), shutdown)
        .await
}

/// The coordinator of `longbow local` searches its shard nodes through this, with the code
/// the DoExchange search runs (the same checks, the same answer).
impl InProcessShard for ShardService {
    fn search(&self, cmd: SearchCommand, queries: RecordBatch) -> SearchFuture {
        let plan = streams::search_plan(self, &cmd);
        Box::pin(async move {
            let (replica, params) = plan?;
            Ok(vec![
                streams::search_batch(replica, params, queries, 0).await?,
            ])
        })
    }
}

fn internal_only(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not served by shard nodes (their API is internal); ask a coordinator"
    ))
}

#[tonic::async_trait]
impl FlightService for ShardService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        longbow_common::flight::echo_handshake(request.into_inner()).await
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(internal_only("ListFlights"))
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(internal_only("GetFlightInfo"))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(internal_only("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(internal_only("GetSchema"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        streams::do_get(self, request.into_inner()).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        streams::do_put(self, request.into_inner()).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        streams::do_exchange(self, request.into_inner()).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let body = actions::handle(self, request.into_inner()).await?;
        Ok(longbow_common::flight::one_result(body))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let items: Vec<Result<ActionType, Status>> = ACTIONS
            .iter()
            .map(|(name, desc)| {
                Ok(ActionType {
                    r#type: name.to_string(),
                    description: desc.to_string(),
                })
            })
            .collect();
        Ok(Response::new(futures::stream::iter(items).boxed()))
    }
}
