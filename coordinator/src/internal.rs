//! The coordinator's internal port: Raft RPCs from peer coordinators, and shard-node
//! registration and heartbeats. Clients never use it.

use std::sync::Arc;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use longbow_common::cluster_api::{
    Heartbeat, HeartbeatReply, RegisterShard, Registered, ACTION_HEARTBEAT, ACTION_REGISTER,
};
use longbow_common::replication_api::{InSyncChange, ACTION_UPDATE_IN_SYNC};
use longbow_common::ErrorExt;
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::{CatalogCommand, CatalogResponse};
use crate::error::CoordinatorError;
use crate::node::Coordinator;
use crate::raft::forward::{
    LeaderReply, MembershipChange, ACTION_MEMBERSHIP, ACTION_READ_INDEX, ACTION_WRITE,
};
use crate::raft::identity::{Envelope, Sent};
use crate::raft::network::{ACTION_APPEND, ACTION_SNAPSHOT, ACTION_VOTE};

pub(crate) use longbow_common::flight::BoxStream;

/// The internal Flight service.
#[derive(Clone)]
pub struct InternalService {
    coord: Arc<Coordinator>,
}

impl InternalService {
    /// A service over `coord`.
    pub fn new(coord: Arc<Coordinator>) -> Self {
        InternalService { coord }
    }

    /// The tonic server wrapper.
    pub fn into_server(self) -> FlightServiceServer<InternalService> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// The Raft request in `action`'s body if it is for this coordinator of this group.
    fn admit<T: serde::de::DeserializeOwned>(
        &self,
        action: &Action,
        sent: Sent,
    ) -> Result<T, Status> {
        let env: Envelope<T> = serde_json::from_slice(&action.body).map_err(|e| {
            Status::invalid_argument(format!("invalid {} body: {e}", action.r#type))
        })?;
        self.coord
            .group
            .identity
            .admit(env, sent)
            .map_err(|e| e.to_status())
    }

    async fn handle(&self, action: Action) -> Result<Vec<u8>, Status> {
        let body = action.body.as_ref();
        let bad = |e: serde_json::Error| {
            Status::invalid_argument(format!("invalid {} body: {e}", action.r#type))
        };
        let json = |v: &dyn erased::Json| v.to_vec().map_err(|e| Status::internal(e.to_string()));
        let raft = &self.coord.group.raft;
        match action.r#type.as_str() {
            ACTION_APPEND => {
                let req = self.admit(&action, Sent::ByLeader)?;
                json(&raft.append_entries(req).await)
            }
            ACTION_VOTE => {
                let req = self.admit(&action, Sent::ByPeer)?;
                json(&raft.vote(req).await)
            }
            ACTION_SNAPSHOT => {
                let req = self.admit(&action, Sent::ByLeader)?;
                json(&raft.install_snapshot(req).await)
            }
            ACTION_WRITE => {
                let cmd: CatalogCommand = self.admit(&action, Sent::ByPeer)?;
                let done = self.coord.group.propose_here(&cmd).await;
                json(&LeaderReply::from(done.map_err(|e| e.to_status())?))
            }
            ACTION_READ_INDEX => {
                let () = self.admit(&action, Sent::ByPeer)?;
                let done = self.coord.group.read_index_here().await;
                json(&LeaderReply::from(done.map_err(|e| e.to_status())?))
            }
            ACTION_MEMBERSHIP => {
                let change: MembershipChange = self.admit(&action, Sent::ByPeer)?;
                let timeout = self.coord.config.request_timeout;
                let done = self.coord.group.change_members_here(&change, timeout).await;
                json(&LeaderReply::from(done.map_err(|e| e.to_status())?))
            }
            ACTION_REGISTER => {
                let req: RegisterShard = serde_json::from_slice(body).map_err(bad)?;
                self.refuse_identity_in_use(&req)?;
                let cmd = CatalogCommand::RegisterShardNode {
                    node_key: req.node_key,
                    address: req.address,
                };
                match self
                    .coord
                    .group
                    .write(cmd)
                    .await
                    .map_err(|e| e.to_status())?
                {
                    CatalogResponse::Node(node_id) => {
                        self.coord.heartbeat(node_id, None);
                        json(&Registered { node_id })
                    }
                    other => Err(CoordinatorError::Internal(format!(
                        "unexpected catalog reply {other:?}"
                    ))
                    .to_status()),
                }
            }
            ACTION_HEARTBEAT => {
                let req: Heartbeat = serde_json::from_slice(body).map_err(bad)?;
                let known = self
                    .coord
                    .group
                    .catalog
                    .read()
                    .nodes
                    .get(&req.node_id)
                    .map(|n| n.node_key.clone());
                match known {
                    None => {
                        return Err(Status::not_found(format!(
                            "shard node {} is not registered",
                            req.node_id
                        )))
                    }
                    Some(key) if !req.node_key.is_empty() && key != req.node_key => {
                        return Err(Status::already_exists(format!(
                            "shard node {} is registered with another identity",
                            req.node_id
                        )))
                    }
                    Some(_) => {}
                }
                self.coord.heartbeat(req.node_id, Some(req.replicas));
                let (membership_index, member, others) = self.coord.group.others();
                json(&HeartbeatReply {
                    membership_index,
                    member,
                    others,
                })
            }
            ACTION_UPDATE_IN_SYNC => {
                let req: InSyncChange = serde_json::from_slice(body).map_err(bad)?;
                let cfg = self
                    .coord
                    .update_in_sync(&req)
                    .await
                    .map_err(|e| e.to_status())?;
                json(&cfg)
            }
            other => Err(Status::unimplemented(format!(
                "unknown internal action '{other}'"
            ))),
        }
    }
}

impl InternalService {
    /// A node identity held by a live node at another address is refused: a copy of a data
    /// directory started elsewhere must not take the node's replicas over.
    fn refuse_identity_in_use(&self, req: &RegisterShard) -> Result<(), Status> {
        let holder = self
            .coord
            .group
            .catalog
            .read()
            .nodes
            .values()
            .find(|n| n.node_key == req.node_key)
            .cloned();
        match holder {
            Some(n) if n.address != req.address && self.coord.is_live(n.id) => {
                tracing::warn!(node = n.id, live_at = %n.address, claimed_by = %req.address, "refused a second process claiming a live node's identity");
                Err(CoordinatorError::IdentityInUse(format!(
                    "shard node {} with this identity is live at {}; a second process may not claim it (copy of its data directory?)",
                    n.id, n.address
                ))
                .to_status())
            }
            _ => Ok(()),
        }
    }
}

mod erased {
    /// Object-safe JSON encoding, so one closure can serialise any reply type.
    pub trait Json {
        fn to_vec(&self) -> serde_json::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec(self)
        }
    }
}

fn internal_only() -> Status {
    Status::unimplemented(
        "this is a coordinator's internal port; clients use the data and meta ports",
    )
}

#[tonic::async_trait]
impl FlightService for InternalService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(internal_only())
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(internal_only())
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(internal_only())
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(internal_only())
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(internal_only())
    }
    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        Err(internal_only())
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(internal_only())
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(internal_only())
    }
    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let body = self.handle(request.into_inner()).await?;
        Ok(longbow_common::flight::one_result(body))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(internal_only())
    }
}
