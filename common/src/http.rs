//! The HTTP side port of every role: `/metrics` (Prometheus text: the role's metrics, then
//! the process's from [`crate::process`]), `/healthz` (the process
//! is up: `ok`, or `degraded: <why>` while it serves with a fault such as a full disk) and
//! `/readyz` (it can serve: every replica opened, a Raft leader known, every shard node that
//! holds replicas registered; the body adds details such as how far indexing is behind).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// What an HTTP endpoint needs from its role.
pub trait Health: Send + Sync + 'static {
    /// Prometheus text of the role's metrics.
    fn metrics_text(&self) -> String;
    /// `None` when ready, or the reason it is not.
    fn not_ready(&self) -> Option<String>;
    /// Lines `name value` added to a ready answer (for example indexing lag).
    fn ready_detail(&self) -> String {
        String::new()
    }
    /// `Some(why)` while the role serves with a fault (reads work, writes may not).
    fn degraded(&self) -> Option<String> {
        None
    }
}

async fn metrics(State(h): State<Arc<dyn Health>>) -> impl IntoResponse {
    let role = h.metrics_text();
    let body = role.strip_suffix("# EOF\n").unwrap_or(&role);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        format!("{body}{}# EOF\n", crate::process::metrics_text()),
    )
}

async fn healthz(State(h): State<Arc<dyn Health>>) -> String {
    match h.degraded() {
        None => "ok\n".to_string(),
        Some(why) => format!("degraded: {why}\n"),
    }
}

async fn readyz(State(h): State<Arc<dyn Health>>) -> impl IntoResponse {
    match h.not_ready() {
        None => (StatusCode::OK, format!("ready\n{}", h.ready_detail())),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Serve the HTTP endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<dyn Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
