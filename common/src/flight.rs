//! Reading streaming Flight requests (DoPut, DoExchange) the same way on every role.

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};
use tonic::{Status, Streaming};

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
