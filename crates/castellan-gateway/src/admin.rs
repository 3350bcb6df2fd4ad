//! The admin listener: health and Prometheus metrics, kept apart from the
//! agent listener so agents cannot reach it.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::proxy::Gateway;

#[derive(Clone)]
struct AdminState {
    gateway: Arc<Gateway>,
    metrics: PrometheusHandle,
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` completes.
pub async fn serve_admin(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(AdminState { gateway, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    let snapshot = state.gateway.snapshot.load();
    let body = serde_json::json!({
        "status": "ready",
        "connections": snapshot.config.config.connections.len(),
        "agents": snapshot.config.config.agents.len(),
        "active_tokens": snapshot.tokens.len(),
    });
    (StatusCode::OK, axum::Json(body))
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
