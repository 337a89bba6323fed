//! One HTTP/1.1 exchange with a broker's REST API, on the calling glommio
//! executor: what the CLIs (`kafscale mirror`, `kafscale restore`) and a
//! broker asking its peers share.

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};

/// The bootstrap admin token a broker writes in its data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// The bearer token the CLIs send to `target` (`HOST:PORT`):
/// `KAFSCALE_HTTP_TOKEN`, else the file `KAFSCALE_HTTP_TOKEN_FILE`, else,
/// for a broker on this machine (a loopback target), its bootstrap token in
/// `data_dir` (or `KAFSCALE_DATA_DIR`, or `./data`, the broker's default)
/// when that file exists; none otherwise.
pub fn cli_token(
    data_dir: Option<&std::path::Path>,
    target: &str,
) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var("KAFSCALE_HTTP_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_owned()));
    }
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let local = matches!(host, "localhost" | "[::1]") || host.starts_with("127.");
    let (path, named) = match std::env::var_os("KAFSCALE_HTTP_TOKEN_FILE") {
        Some(p) => (std::path::PathBuf::from(p), true),
        None if !local => return Ok(None),
        None => {
            let dir = data_dir
                .map(std::path::Path::to_path_buf)
                .unwrap_or_else(|| {
                    std::env::var_os("KAFSCALE_DATA_DIR")
                        .map_or_else(|| "./data".into(), Into::into)
                });
            (dir.join(TOKEN_FILE), false)
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => Ok(None),
        Err(e) => Err(anyhow!(
            "cannot read the bearer token in {}: {e}",
            path.display()
        )),
    }
}

/// Sends `method path` with a JSON `body` (empty for none) to `target`
/// (`HOST:PORT`), with the bearer `token` if any, and returns the status
/// and the whole answer. Errors are one sentence naming the target. Name
/// resolution runs on the executor's blocking pool.
pub async fn round_trip(
    target: &str,
    method: Method,
    path: &str,
    body: Bytes,
    token: Option<&str>,
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
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, target)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
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

/// A broker's REST API as the CLIs call it: `--http http://HOST:PORT`.
#[derive(Debug)]
pub struct Http {
    host: String,
    token: Option<String>,
}

impl Http {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--http {url}: expected http://HOST:PORT"))?;
        let host = rest.trim_end_matches('/').to_owned();
        let token = cli_token(None, &host)?;
        Ok(Self { host, token })
    }

    /// Sends a request; a non-2xx answer is an error with the API's message.
    pub fn call<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let body = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let (host, m, p) = (self.host.clone(), method.clone(), path.to_owned());
        let token = self.token.clone();
        let (status, bytes) = kafscale_shard::block_on(move || async move {
            crate::rest_client::round_trip(&host, m, &p, body, token.as_deref()).await
        })?
        .map_err(|e| anyhow!("{e}"))?;
        if !status.is_success() {
            bail!("{}", crate::rest_client::error_message(&bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!("{method} {path}: the broker's answer is not what this CLI expects")
        })
    }
}
