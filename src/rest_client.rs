//! One HTTP/1.1 exchange with a broker's REST API, on the calling glommio
//! executor: what the CLIs (`kafscale mirror`, `kafscale restore`) and a
//! broker asking its peers share.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};

/// Sends `method path` with a JSON `body` (empty for none) to `target`
/// (`HOST:PORT`) and returns the status and the whole answer. Errors are one
/// sentence naming the target. Name resolution runs on the executor's
/// blocking pool.
pub async fn round_trip(
    target: &str,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let t = target.to_owned();
    let addr = glommio::executor()
        .spawn_blocking(move || {
            use std::net::ToSocketAddrs;
            t.to_socket_addrs().ok().and_then(|mut a| a.next())
        })
        .await
        .ok_or_else(|| format!("cannot resolve {target}"))?;
    let stream = glommio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to http://{target}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(kafscale_shard::HyperIo::new(stream))
            .await
            .map_err(|e| format!("http://{target}: {e}"))?;
    glommio::spawn_local(async move {
        let _ignored = conn.await;
    })
    .detach();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, target)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| format!("http://{target}{path}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("http://{target}{path}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("http://{target}{path}: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

/// The `error` sentence of a REST error answer, else the body as text.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}
