//! The client Flight API of ARCHITECTURE §4, served on both the data and the meta port.
//!
//! This layer translates Flight calls into coordinator operations and records RPC metrics;
//! it holds no routing or catalog logic of its own.

mod actions;
mod flights;
mod streams;

use std::sync::Arc;
use std::time::Instant;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::StreamExt;
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
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let started = Instant::now();
        let r = flights::list_flights(&self.coord).await;
        self.observe("ListFlights", started, &r);
        let infos = r?;
        Ok(Response::new(
            futures::stream::iter(infos.into_iter().map(Ok)).boxed(),
        ))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let started = Instant::now();
        let r = flights::get_flight_info(&self.coord, request.into_inner()).await;
        self.observe("GetFlightInfo", started, &r);
        Ok(Response::new(r?))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "PollFlightInfo: every Longbow flight is ready at once; use GetFlightInfo",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let started = Instant::now();
        let r = flights::get_schema(&self.coord, request.into_inner());
        self.observe("GetSchema", started, &r);
        Ok(Response::new(r?))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let started = Instant::now();
        let r = streams::do_get(&self.coord, request.into_inner()).await;
        self.observe("DoGet", started, &r);
        Ok(Response::new(r?))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let started = Instant::now();
        let r = streams::do_put(&self.coord, request.into_inner()).await;
        self.observe("DoPut", started, &r);
        Ok(Response::new(r?))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let started = Instant::now();
        let r = streams::do_exchange(&self.coord, request.into_inner()).await;
        self.observe("DoExchange", started, &r);
        Ok(Response::new(r?))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let started = Instant::now();
        let action = request.into_inner();
        let method = format!(
            "DoAction:{}",
            actions::canonical(&action.r#type).unwrap_or("unknown")
        );
        let r = actions::handle(&self.coord, action).await;
        self.observe(&method, started, &r);
        Ok(longbow_common::flight::one_result(r?))
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
