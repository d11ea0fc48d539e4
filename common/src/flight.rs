//! Reading streaming Flight requests (DoPut, DoExchange) the same way on every role.
//!
//! Client bytes are untrusted: every IPC message is checked against its body before Arrow
//! decodes it, and the decoder runs behind a panic guard, so malformed data becomes
//! INVALID_ARGUMENT and never takes down the task (or process) serving the call.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use arrow_array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;

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
) -> Result<(FlightDescriptor, RequestBatches), Status> {
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
    let all = futures::stream::iter(head)
        .chain(rest)
        .map(|item| item.and_then(check_message));
    Ok((
        desc,
        RequestBatches {
            inner: Some(FlightRecordBatchStream::new_from_flight_data(all)),
        },
    ))
}

/// Check what the Arrow IPC decoder trusts in one message: its header is a valid IPC message,
/// and every buffer and node of a record or dictionary batch lies within the body that came
/// with it (the decoder slices the body by these numbers and panics when they point past it).
pub fn check_message(data: FlightData) -> Result<FlightData, FlightError> {
    if data.data_header.is_empty() {
        return Ok(data);
    }
    let bad = |why: String| FlightError::DecodeError(format!("data_header: {why}"));
    let message = arrow_ipc::root_as_message(&data.data_header)
        .map_err(|e| bad(format!("not an Arrow IPC message ({e})")))?;
    let batch = match message.header_type() {
        arrow_ipc::MessageHeader::RecordBatch => message.header_as_record_batch(),
        arrow_ipc::MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    let Some(batch) = batch else {
        return Ok(data);
    };
    let body = data.data_body.len() as i64;
    if batch.length() < 0 {
        return Err(bad(format!("negative row count {}", batch.length())));
    }
    for (i, b) in batch.buffers().into_iter().flatten().enumerate() {
        let (offset, length) = (b.offset(), b.length());
        let inside =
            offset >= 0 && length >= 0 && offset.checked_add(length).is_some_and(|end| end <= body);
        if !inside {
            return Err(bad(format!(
                "buffer {i} (offset {offset}, length {length}) lies outside the {body}-byte data_body"
            )));
        }
    }
    for (i, n) in batch.nodes().into_iter().flatten().enumerate() {
        if n.length() < 0 || n.null_count() < 0 || n.null_count() > n.length() {
            return Err(bad(format!(
                "field node {i} has length {} and null count {}",
                n.length(),
                n.null_count()
            )));
        }
    }
    Ok(data)
}

static DECODER_PANICS: AtomicU64 = AtomicU64::new(0);

/// Panics of the Arrow IPC decoder that [`RequestBatches`] caught in this process (each one
/// refused a malformed request; exported as `longbow_flight_decoder_panics_total`).
pub fn decoder_panics() -> u64 {
    DECODER_PANICS.load(Ordering::Relaxed)
}

/// The decoded record batches of a client's request stream (see [`open_stream`]).
///
/// The Arrow IPC decoder panics, rather than failing, on some malformed messages.
/// [`check_message`] rules out the known ones before decoding; should the decoder still
/// panic, the panic is caught here, the stream ends with a decode error (INVALID_ARGUMENT
/// through [`stream_error`]) and the decoder is never polled again.
pub struct RequestBatches {
    inner: Option<FlightRecordBatchStream>,
}

impl Stream for RequestBatches {
    type Item = Result<RecordBatch, FlightError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // Unwind safety: after a panic the decoder is dropped unobserved, never polled again.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll_next_unpin(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                self.inner = None;
                DECODER_PANICS.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "the Arrow IPC decoder panicked on a client's message; refusing it"
                );
                Poll::Ready(Some(Err(FlightError::DecodeError(
                    "malformed Arrow IPC message".into(),
                ))))
            }
        }
    }
}
