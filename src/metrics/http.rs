//! `GET /metrics` over HTTP/1.1 with hyper: the thin tokio shell around [`Metrics::encode`].
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are closed at accept and
//! counted in `lqagent_metrics_connections_rejected_total`), each one closed after
//! [`CONNECTION_DEADLINE`] whatever it is doing, so a slow or hostile scraper cannot pile up tasks.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Metrics;

/// Most scrape connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest a connection may stay open.
pub(crate) const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// The OpenMetrics text content type prometheus-client's encoder produces.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("metrics.listen {addr}: cannot bind: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind the listener (separate from [`serve`] so start-up fails early and tests can use port 0).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            metrics.scrapes.inc();
            let body = metrics.encode();
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
            );
            if req.method() == Method::GET {
                *resp.body_mut() = Full::new(Bytes::from(body));
            }
        }
        (_, "/metrics") => {
            *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        _ => {
            *resp.status_mut() = StatusCode::NOT_FOUND;
            *resp.body_mut() = Full::new(Bytes::from_static(b"lqagent: try /metrics\n"));
        }
    }
    resp
}

/// Serve `/metrics` on `listener` until `shutdown` completes.
///
/// CANCEL-SAFETY: dropping this future stops accepting; connections in flight are detached
/// tasks that end at their deadline.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.connections_rejected.inc();
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = respond(&metrics, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection error"),
                Err(_) => tracing::debug!(%peer, "metrics connection closed at deadline"),
            }
            drop(permit);
        });
    }
}
