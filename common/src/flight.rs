//! Reading streaming Flight requests (DoPut, DoExchange) the same way on every role.

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use std::pin::Pin;

use arrow_flight::{FlightData, FlightDescriptor, HandshakeRequest, HandshakeResponse};
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Response, Status, Streaming};

/// The boxed response stream every Longbow Flight service returns.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A DoAction response of one result carrying `body`.
pub fn one_result(body: Vec<u8>) -> Response<BoxStream<arrow_flight::Result>> {
    let result = arrow_flight::Result { body: body.into() };
    Response::new(Box::pin(futures::stream::once(async { Ok(result) })))
}

/// Answer a Handshake by echoing the client's payload (no authentication yet).
pub async fn echo_handshake(
    mut stream: Streaming<HandshakeRequest>,
) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
    let payload = match stream.message().await? {
        Some(h) => h.payload,
        None => Default::default(),
    };
    let reply = HandshakeResponse {
        protocol_version: 0,
        payload,
    };
    Ok(Response::new(Box::pin(futures::stream::once(async {
        Ok(reply)
    }))))
}

/// Map an error of a client's request stream: an oversized message is back-pressure
/// (RESOURCE_EXHAUSTED), undecodable data is INVALID_ARGUMENT, transport errors pass through.
pub fn stream_error(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) if s.code() == tonic::Code::OutOfRange => {
            Status::resource_exhausted(format!(
                "message too large: {} (split the data into smaller batches)",
                s.message()
            ))
        }
        FlightError::Tonic(s) => *s,
        other => Status::invalid_argument(format!("invalid Arrow data: {other}")),
    }
}

/// Read the first message of a request stream (it must carry the descriptor) and decode
/// the whole stream as record batches. `what` names the call in errors.
pub async fn open_stream(
    mut stream: Streaming<FlightData>,
    what: &str,
) -> Result<(FlightDescriptor, FlightRecordBatchStream), Status> {
    let first = match stream.message().await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(Status::invalid_argument(format!(
                "{what}: the stream is empty"
            )))
        }
        Err(s) => return Err(stream_error(FlightError::Tonic(Box::new(s)))),
    };
    let desc = first.flight_descriptor.clone().ok_or_else(|| {
        Status::invalid_argument(format!(
            "invalid flight_descriptor: {what} needs a descriptor on its first message"
        ))
    })?;
    let rest = stream.map_err(|s| FlightError::Tonic(Box::new(s)));
    // Some clients (pyarrow's DoExchange) send the descriptor alone in the first message.
    let head = if first.data_header.is_empty() && first.data_body.is_empty() {
        None
    } else {
        Some(Ok(first))
    };
    let all = futures::stream::iter(head).chain(rest);
    Ok((desc, FlightRecordBatchStream::new_from_flight_data(all)))
}
