//! The HTTP side: liveness, readiness, cache health and Prometheus metrics. Handlers are
//! thin: they read shared state that the rest of the worker keeps current.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::cache::ConfigCache;
use crate::telemetry::Telemetry;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Set once the cache is warm and the consumer is about to start.
    pub ready: Arc<AtomicBool>,
    /// The NATS clients (consuming, publishing), once connected; ready only while every
    /// one of them is connected.
    pub nats: Arc<std::sync::OnceLock<Vec<async_nats::Client>>>,
    pub cache: Arc<ConfigCache>,
    pub registry: prometheus::Registry,
    pub source: String,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/health/cache", get(cache))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(s): State<HttpState>) -> Response {
    let connected = s.nats.get().is_some_and(|clients| {
        clients
            .iter()
            .all(|c| c.connection_state() == async_nats::connection::State::Connected)
    });
    let ready = s.ready.load(Relaxed);
    let body = serde_json::json!({ "ready": ready && connected, "cache_warm": ready, "nats_connected": connected });
    let code = if ready && connected {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn cache(State(s): State<HttpState>) -> Response {
    let mut body = serde_json::to_value(s.cache.health()).unwrap_or_default();
    body["source"] = s.source.clone().into();
    Json(body).into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Telemetry::render(&s.registry),
    )
        .into_response()
}

/// Binds `addr` (fails fast if taken) and serves until `stop` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP server to {addr}"))?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(addr = %bound, "HTTP server listening");
    Ok((bound, handle))
}
