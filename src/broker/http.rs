//! `/metrics` (Prometheus text), `/healthz` and the REST API (`/v1/...`,
//! see [`super::rest`]) on the HTTP listener, served by hyper on shard 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use glommio::net::TcpListener;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};

use super::metrics::Metrics;
use super::rest::{self, Api};

pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    kafscale_shard::listen(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr} (--metrics-listen): {e}"))
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, api: Rc<Api>) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                continue;
            }
        };
        let (metrics, api) = (metrics.clone(), api.clone());
        glommio::spawn_local(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (metrics, api) = (metrics.clone(), api.clone());
                async move {
                    let (status, body, json) = answer(req, &metrics, &api).await;
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    let kind = if json {
                        "application/json"
                    } else {
                        "text/plain; version=0.0.4"
                    };
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        kind.parse().expect("a valid header value"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let io = kafscale_shard::HyperIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        })
        .detach();
    }
}

/// Status, body and whether it is JSON.
async fn answer(
    req: Request<hyper::body::Incoming>,
    metrics: &Metrics,
    api: &Api,
) -> (StatusCode, String, bool) {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/metrics" => (StatusCode::OK, metrics.render(), false),
        "/healthz" if metrics.draining.load(Relaxed) == 1 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining\n".to_owned(),
            false,
        ),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned(), false),
        p if p.starts_with("/v1/") => {
            let method = req.method().clone();
            let body = match Limited::new(req.into_body(), rest::MAX_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let msg = serde_json::json!({
                        "error": format!("cannot read the request body (at most {} bytes): {e}", rest::MAX_BODY)
                    });
                    return (StatusCode::PAYLOAD_TOO_LARGE, format!("{msg}\n"), true);
                }
            };
            let (status, body) = api.handle(&method, p, body).await;
            (status, body, true)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /v1/openapi.json\n".to_owned(),
            false,
        ),
    }
}
