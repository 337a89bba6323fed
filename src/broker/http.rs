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

use super::http_auth::{Gate, Refused};
use super::metrics::Metrics;
use super::rest::{self, Api};

pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    kafscale_shard::listen(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr} (--metrics-listen): {e}"))
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, api: Rc<Api>, gate: Rc<Gate>) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                continue;
            }
        };
        let (metrics, api, gate) = (metrics.clone(), api.clone(), gate.clone());
        let host: Rc<str> = stream
            .peer_addr()
            .map_or_else(|_| String::new(), |a| crate::auth::acl::host_of(a.ip()))
            .into();
        glommio::spawn_local(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (metrics, api, gate, host) =
                    (metrics.clone(), api.clone(), gate.clone(), host.clone());
                async move {
                    let (status, body, json) = answer(req, &metrics, &api, &gate, &host).await;
                    let unauthorized = status == StatusCode::UNAUTHORIZED;
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
                    if unauthorized {
                        resp.headers_mut().insert(
                            hyper::header::WWW_AUTHENTICATE,
                            hyper::header::HeaderValue::from_static("Bearer"),
                        );
                    }
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
    gate: &Gate,
    host: &str,
) -> (StatusCode, String, bool) {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match gate.check(&method, &path, authorization).await {
        Ok(p) => p,
        Err(Refused {
            principal,
            status,
            why,
        }) => {
            crate::audit::record(&crate::audit::Event {
                principal: &principal,
                host,
                action: &format!("{method} {path}"),
                target: &path,
                outcome: &format!("refused: {why}"),
            });
            let msg = serde_json::json!({ "error": why });
            return (status, format!("{msg}\n"), true);
        }
    };
    match path.as_str() {
        "/metrics" => (StatusCode::OK, metrics.render(), false),
        "/healthz" if metrics.draining.load(Relaxed) == 1 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining\n".to_owned(),
            false,
        ),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned(), false),
        p if p.starts_with("/v1/") => {
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
            let changes = method != hyper::Method::GET;
            // What a POST names (a user, a job, a token), for the audit trail.
            let named = changes
                .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .flatten()
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned));
            let (status, answer) = api.handle(&method, p, body).await;
            if changes {
                let outcome = if status.is_success() {
                    "ok".to_owned()
                } else {
                    format!(
                        "refused: {status}: {}",
                        crate::rest_client::error_message(answer.as_bytes())
                    )
                };
                crate::audit::record(&crate::audit::Event {
                    principal: &principal,
                    host,
                    action: &format!("{method} {p}"),
                    target: named.as_deref().unwrap_or(p),
                    outcome: &outcome,
                });
            }
            (status, answer, true)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /v1/openapi.json\n".to_owned(),
            false,
        ),
    }
}
