//! `/metrics` (Prometheus text) and `/healthz` on the metrics listener,
//! served by hyper on shard 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use glommio::net::TcpListener;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use super::metrics::Metrics;

pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    kafscale_shard::listen(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr} (--metrics-listen): {e}"))
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                continue;
            }
        };
        let metrics = metrics.clone();
        glommio::spawn_local(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => (StatusCode::OK, metrics.render()),
                        "/healthz" if metrics.draining.load(Relaxed) == 1 => {
                            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned())
                        }
                        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
                        _ => (
                            StatusCode::NOT_FOUND,
                            "not found: try /metrics or /healthz\n".to_owned(),
                        ),
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                }
            });
            let io = kafscale_shard::HyperIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        })
        .detach();
    }
}
