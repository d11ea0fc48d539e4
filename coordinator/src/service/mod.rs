//! The client Flight API of ARCHITECTURE §4, served on both the data and the meta port.
//!
//! This layer translates Flight calls into coordinator operations and records RPC metrics;
//! it holds no routing or catalog logic of its own. Every error it sends, whether a call fails
//! at once or a stream fails midway, carries Longbow's error metadata
//! (`x-longbow-error-code`, `x-longbow-retryable`, see `longbow_common::error`). A call
//! asking for a linearizable catalog read (header `x-longbow-read-consistency`) waits for it
//! first ([`consistency`]).

mod actions;
pub mod consistency;
mod coordinators;
mod exchange;
mod flights;
mod longbow;
mod nodes;
pub mod requests;
mod snapshots;
mod streams;

pub use actions::ACTIONS;

use std::sync::Arc;
use std::time::Instant;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{StreamExt, TryStreamExt};
use longbow_common::error::with_error_metadata;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Coordinator;

/// Largest gRPC message accepted from clients.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

pub(crate) use longbow_common::flight::BoxStream;

/// The client-facing Flight service.
#[derive(Clone)]
pub struct ClientService {
    coord: Arc<Coordinator>,
}

impl ClientService {
    /// A service over `coord`.
    pub fn new(coord: Arc<Coordinator>) -> Self {
        ClientService { coord }
    }

    /// The tonic server wrapper with Longbow's message limits.
    pub fn into_server(self) -> FlightServiceServer<ClientService> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn observe<T>(&self, method: &str, started: Instant, r: &Result<T, Status>) {
        let code = match r {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.coord.metrics.rpc(method, started, code);
    }
}

/// A call's answer with Longbow's error metadata on its error.
fn answer<T>(r: Result<T, Status>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(with_error_metadata)
}

/// A streamed answer whose errors, at once or midway, carry Longbow's error metadata.
fn streamed<T: Send + 'static>(
    r: Result<BoxStream<T>, Status>,
) -> Result<Response<BoxStream<T>>, Status> {
    answer(r.map(|s| s.map_err(with_error_metadata).boxed()))
}

#[tonic::async_trait]
impl FlightService for ClientService {
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
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let started = Instant::now();
        if let Err(e) = consistency::before_call(&self.coord, request.metadata()).await {
            return answer(Err(e));
        }
        let r = flights::list_flights(&self.coord, &request.into_inner().expression).await;
        self.observe("ListFlights", started, &r);
        streamed(r.map(|infos| futures::stream::iter(infos.into_iter().map(Ok)).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let started = Instant::now();
        if let Err(e) = consistency::before_call(&self.coord, request.metadata()).await {
            return answer(Err(e));
        }
        let r = flights::get_flight_info(&self.coord, request.into_inner()).await;
        self.observe("GetFlightInfo", started, &r);
        answer(r)
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        answer(Err(Status::unimplemented(
            "PollFlightInfo: every Longbow flight is ready at once; use GetFlightInfo",
        )))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let started = Instant::now();
        if let Err(e) = consistency::before_call(&self.coord, request.metadata()).await {
            return answer(Err(e));
        }
        let r = flights::get_schema(&self.coord, request.into_inner());
        self.observe("GetSchema", started, &r);
        answer(r)
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let started = Instant::now();
        if let Err(e) = consistency::before_call(&self.coord, request.metadata()).await {
            return answer(Err(e));
        }
        let r = streams::do_get(&self.coord, request.into_inner()).await;
        self.observe("DoGet", started, &r);
        streamed(r)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let started = Instant::now();
        if let Err(e) = consistency::before_call(&self.coord, request.metadata()).await {
            return answer(Err(e));
        }
        let r = streams::do_put(&self.coord, request.into_inner()).await;
        self.observe("DoPut", started, &r);
        streamed(r)
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let started = Instant::now();
        if let Err(e) = consistency::before_call(&self.coord, request.metadata()).await {
            return answer(Err(e));
        }
        let r = streams::do_exchange(&self.coord, request.into_inner()).await;
        self.observe("DoExchange", started, &r);
        streamed(r)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let started = Instant::now();
        if let Err(e) = consistency::before_call(&self.coord, request.metadata()).await {
            return answer(Err(e));
        }
        let action = request.into_inner();
        let method = format!(
            "DoAction:{}",
            actions::canonical(&action.r#type).unwrap_or("unknown")
        );
        let r = actions::handle(&self.coord, action).await;
        self.observe(&method, started, &r);
        streamed(r.map(|bodies| {
            let results = bodies
                .into_iter()
                .map(|body| Ok(arrow_flight::Result { body: body.into() }));
            futures::stream::iter(results).boxed()
        }))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let items: Vec<Result<ActionType, Status>> = actions::ACTIONS
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
