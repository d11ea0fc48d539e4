//! Pooled gRPC channels to other Longbow processes, one per address, shared by every call
//! (cheap clones, many concurrent streams on one HTTP/2 connection), and the JSON DoAction
//! call every role makes on them.
//!
//! Channels connect lazily; an unreachable peer fails the call, never the pool.

use std::collections::HashMap;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Action;
use parking_lot::Mutex;
use tonic::transport::Channel;

/// Largest message exchanged between Longbow processes.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Channels by `host:port`.
#[derive(Default)]
pub struct Channels {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    /// A Flight client to `addr` on the pooled channel.
    pub fn client(&self, addr: &str) -> Result<FlightServiceClient<Channel>, tonic::Status> {
        let mut channels = self.channels.lock();
        let ch = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let ch = Channel::from_shared(format!("http://{addr}"))
                    .map_err(|e| tonic::Status::internal(format!("bad address {addr}: {e}")))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .connect_lazy();
                channels.insert(addr.to_string(), ch.clone());
                ch
            }
        };
        Ok(FlightServiceClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Run DoAction `kind` with a raw `body` on `addr` and return the first result's body,
    /// failing after `timeout`.
    pub async fn action_bytes(
        &self,
        addr: &str,
        kind: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, tonic::Status> {
        let mut client = self.client(addr)?;
        let call = async move {
            let mut stream = client
                .do_action(Action::new(kind, body))
                .await?
                .into_inner();
            stream.message().await?.map(|r| r.body).ok_or_else(|| {
                tonic::Status::unavailable(format!("{addr} sent no reply to {kind}"))
            })
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| {
            tonic::Status::deadline_exceeded(format!(
                "{addr} did not answer {kind} within {timeout:?}"
            ))
        })?
    }

    /// Run DoAction `kind` with a JSON body on `addr` and decode its JSON reply.
    pub async fn action<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        kind: &str,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<T, tonic::Status> {
        let body = serde_json::to_vec(body).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let reply = self.action_bytes(addr, kind, body, timeout).await?;
        serde_json::from_slice(&reply)
            .map_err(|e| tonic::Status::internal(format!("{addr} reply to {kind}: {e}")))
    }
}
