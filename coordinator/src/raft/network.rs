//! Raft RPCs between coordinators, carried as Flight `DoAction` calls on the internal port
//! (`raft.append`, `raft.vote`, `raft.snapshot`) with JSON bodies, each in an
//! [`super::identity::Envelope`] naming the group and the coordinator it is for. The serving side is in
//! [`crate::internal`].

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Action;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use std::sync::Arc;

use super::identity::GroupIdentity;
use super::TypeConfig;

/// Action names of the Raft RPCs.
pub const ACTION_APPEND: &str = "raft.append";
/// Vote RPC.
pub const ACTION_VOTE: &str = "raft.vote";
/// Snapshot RPC.
pub const ACTION_SNAPSHOT: &str = "raft.snapshot";

/// Creates connections to peer coordinators.
#[derive(Debug, Clone)]
pub struct Network {
    identity: Arc<GroupIdentity>,
}

impl Network {
    /// Connections whose messages carry `identity`.
    pub fn new(identity: Arc<GroupIdentity>) -> Self {
        Network { identity }
    }
}

/// A connection to one peer.
pub struct Connection {
    identity: Arc<GroupIdentity>,
    target: u64,
    addr: String,
    client: Option<FlightServiceClient<Channel>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            identity: self.identity.clone(),
            target,
            addr: node.addr.clone(),
            client: None,
        }
    }
}

impl Connection {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E>(
        &mut self,
        action: &str,
        req: &Req,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Some(c) => c,
            None => {
                let ch = Channel::from_shared(format!("http://{}", self.addr))
                    .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?
                    .connect_lazy();
                self.client.insert(FlightServiceClient::new(ch))
            }
        };
        let body = serde_json::to_vec(&self.identity.envelope(self.target, req))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut stream = client
            .do_action(Action::new(action, body))
            .await
            .map_err(|s| RPCError::Unreachable(Unreachable::new(&s)))?
            .into_inner();
        let reply = stream
            .message()
            .await
            .map_err(|s| RPCError::Network(NetworkError::new(&s)))?
            .ok_or_else(|| {
                RPCError::Network(NetworkError::new(&std::io::Error::other(
                    "empty Raft reply",
                )))
            })?;
        let result: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&reply.body)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(ACTION_APPEND, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(ACTION_SNAPSHOT, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(ACTION_VOTE, &rpc).await
    }
}
