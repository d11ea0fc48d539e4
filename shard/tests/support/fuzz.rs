//! Shared by the wire fuzz tests of the shard (`shard/tests/wire_fuzz.rs`) and of
//! `longbow local` (`tests/wire_fuzz.rs`), which include this file by path: the loop that
//! sends damaged calls and the rules their answers must follow.

use std::time::Duration;

use arrow_flight::{FlightClient, FlightData};
use futures::TryStreamExt;
use longbow_shard::synth::{self, Rng};

/// Longest any one call may take before it counts as a hang.
pub const CALL_LIMIT: Duration = Duration::from_secs(20);

/// `name` from the environment, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Send `cases` damaged copies of each of `put` (DoPut) and `exchange` (DoExchange), in turn.
/// Every call must finish within [`CALL_LIMIT`] and every refusal must be a contract error.
/// Returns how many damaged puts were accepted and how many exchanges answered.
pub async fn send_damaged_calls(
    c: &mut FlightClient,
    put: &[FlightData],
    exchange: &[FlightData],
    cases: usize,
    seed: u64,
) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let (mut put_ok, mut exchange_ok) = (0, 0);
    for case in 0..cases {
        let msgs = synth::damage_messages(put, &mut rng);
        let call = async {
            let replies = c
                .do_put(futures::stream::iter(msgs.into_iter().map(Ok)))
                .await?;
            replies.try_collect::<Vec<_>>().await
        };
        match tokio::time::timeout(CALL_LIMIT, call).await {
            Err(_) => panic!("damaged DoPut {case} hung"),
            Ok(Ok(_)) => put_ok += 1,
            Ok(Err(e)) => check_refusal("DoPut", case, e),
        }
        let msgs = synth::damage_messages(exchange, &mut rng);
        let call = async {
            let replies = c
                .do_exchange(futures::stream::iter(msgs.into_iter().map(Ok)))
                .await?;
            replies.try_collect::<Vec<_>>().await
        };
        match tokio::time::timeout(CALL_LIMIT, call).await {
            Err(_) => panic!("damaged DoExchange {case} hung"),
            Ok(Ok(_)) => exchange_ok += 1,
            Ok(Err(e)) => check_refusal("DoExchange", case, e),
        }
    }
    eprintln!(
        "{cases} damaged puts ({put_ok} accepted) and {cases} damaged exchanges ({exchange_ok} answered)"
    );
    (put_ok, exchange_ok)
}

/// A refused damaged call must carry a contract error: a handler that died would surface as
/// a reset stream (UNKNOWN, INTERNAL or CANCELLED) instead. Damage to a descriptor can name
/// a namespace that does not exist or is not a valid name.
fn check_refusal(call: &str, case: usize, e: arrow_flight::error::FlightError) {
    let st = match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => panic!("damaged {call} {case}: not a gRPC status: {other}"),
    };
    assert!(
        matches!(
            st.code(),
            tonic::Code::InvalidArgument | tonic::Code::NotFound
        ),
        "damaged {call} {case}: {st:?}"
    );
}
