//! The S3 client: request building, signing, sending with retries, and the
//! operations.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_rustls::TlsConnector;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, HOST, RANGE};
use http::{HeaderMap, HeaderName, Method, Request, StatusCode};
use http_body_util::BodyExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::body::Chunks;
use crate::config::{AddressingStyle, S3Config};
use crate::conn::{Pool, connect, tls_connector};
use crate::error::StoreError;
use crate::multipart::MultipartUpload;
use crate::sign::Signer;
use crate::store::{ListEntry, Object, ObjectMeta, ObjectStore, PutOptions};
use crate::time::iso8601;
use crate::xml;

/// RFC 3986 unreserved characters stay; everything else is escaped (SigV4 rules).
const ENCODE_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// As above, but `/` separates key segments and stays.
const ENCODE_KEY: &AsciiSet = &ENCODE_COMPONENT.remove(b'/');

const META_PREFIX: &str = "x-amz-meta-";

/// An S3 client for one bucket, owned by one executor. Cloning shares the
/// connection pool.
#[derive(Clone)]
pub struct S3Client {
    inner: Rc<Inner>,
}

struct Inner {
    config: S3Config,
    signer: Signer,
    tls: Option<TlsConnector>,
    pool: Pool,
    addrs: RefCell<Vec<SocketAddr>>,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("endpoint", &self.inner.config.endpoint)
            .field("bucket", &self.inner.config.bucket)
            .finish()
    }
}

/// One request before signing.
pub(crate) struct Call<'a> {
    pub operation: &'static str,
    pub method: Method,
    /// Object key; `None` addresses the bucket.
    pub key: Option<&'a str>,
    pub query: Vec<(&'static str, String)>,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Vec<Bytes>,
    pub if_absent: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn new(operation: &'static str, method: Method, key: Option<&'a str>) -> Self {
        Self {
            operation,
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            if_absent: false,
        }
    }
    pub(crate) fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }
    pub(crate) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    /// `If-None-Match: *`: the write fails with [`StoreError::Exists`] when
    /// the key is taken.
    pub(crate) fn if_absent(mut self) -> Self {
        self.if_absent = true;
        self.header(http::header::IF_NONE_MATCH, "*")
    }
    pub(crate) fn body(mut self, chunks: Vec<Bytes>) -> Self {
        self.body = chunks;
        self
    }
}

/// A successful response, body read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl S3Client {
    pub fn new(config: S3Config) -> Self {
        let signer = Signer::new(config.credentials.clone(), config.region.clone());
        let tls = config.is_https().then(tls_connector);
        Self {
            inner: Rc::new(Inner {
                config,
                signer,
                tls,
                pool: Pool::default(),
                addrs: RefCell::default(),
            }),
        }
    }

    pub fn config(&self) -> &S3Config {
        &self.inner.config
    }

    pub fn bucket(&self) -> &str {
        &self.inner.config.bucket
    }

    fn url(&self, key: Option<&str>, query: &[(&'static str, String)]) -> (String, String) {
        let c = &self.inner.config;
        let scheme = if c.is_https() { "https" } else { "http" };
        let default_port = if c.is_https() { 443 } else { 80 };
        let port = if c.port() == default_port {
            String::new()
        } else {
            format!(":{}", c.port())
        };
        let (host, mut path) = match c.addressing {
            AddressingStyle::Path => (format!("{}{port}", c.host()), format!("/{}", c.bucket)),
            AddressingStyle::VirtualHosted => {
                (format!("{}.{}{port}", c.bucket, c.host()), String::new())
            }
        };
        if let Some(key) = key {
            path.push('/');
            path.extend(utf8_percent_encode(key, ENCODE_KEY));
        } else if path.is_empty() {
            path.push('/');
        }
        for (i, (k, v)) in query.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str(k);
            path.push('=');
            path.extend(utf8_percent_encode(v, ENCODE_COMPONENT));
        }
        (format!("{scheme}://{host}{path}"), host)
    }

    async fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Some(addrs) = Some(self.inner.addrs.borrow().clone()).filter(|a| !a.is_empty()) {
            return Ok(addrs);
        }
        let target = (
            self.inner.config.host().to_owned(),
            self.inner.config.port(),
        );
        // IP literals resolve without I/O; names go through the blocking resolver
        // on glommio's helper thread so the executor never blocks.
        let addrs: Vec<SocketAddr> = match target
            .0
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) => vec![SocketAddr::new(ip, target.1)],
            Err(_) => glommio::executor()
                .spawn_blocking(move || target.to_socket_addrs().map(Iterator::collect))
                .await
                .map_err(|e| format!("cannot resolve host: {e}"))?,
        };
        if addrs.is_empty() {
            return Err("host resolves to no address".into());
        }
        *self.inner.addrs.borrow_mut() = addrs.clone();
        Ok(addrs)
    }

    /// Sends a call, retrying what is retryable, and returns a 2xx reply or
    /// a typed error.
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Reply, StoreError> {
        let retry = self.inner.config.retry;
        let mut attempt = 0;
        loop {
            let result = self.send_once(&call).await;
            match result {
                Err(e) if e.is_retryable() && attempt + 1 < retry.max_attempts => {
                    let delay = retry.delay(attempt);
                    tracing::debug!(error = %e, attempt, ?delay, "retrying S3 request");
                    glommio::timer::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn send_once(&self, call: &Call<'_>) -> Result<Reply, StoreError> {
        let timeout = self.inner.config.request_timeout;
        let attempt = self.exchange(call);
        let timer = async {
            glommio::timer::sleep(timeout).await;
            Err(StoreError::Timeout {
                operation: call.operation,
                bucket: self.bucket().to_owned(),
                key: call.key.unwrap_or_default().to_owned(),
                seconds: timeout.as_secs_f64(),
            })
        };
        futures_lite::future::or(attempt, timer).await
    }

    async fn exchange(&self, call: &Call<'_>) -> Result<Reply, StoreError> {
        let c = &self.inner.config;
        let (url, host) = self.url(call.key, &call.query);
        let connect_err = |reason: String| StoreError::Connect {
            operation: call.operation,
            endpoint: c.endpoint.to_string(),
            bucket: c.bucket.clone(),
            key: call.key.unwrap_or_default().to_owned(),
            reason,
        };
        let body = Chunks::new(call.body.iter().cloned());
        let mut req = Request::builder().method(call.method.clone()).uri(&url);
        req = req.header(HOST, &host).header(CONTENT_LENGTH, body.len());
        for (k, v) in &call.headers {
            req = req.header(k, v);
        }
        let mut req = req
            .body(body)
            .map_err(|e| StoreError::Config(format!("bad request {url}: {e}")))?;
        self.inner.signer.sign(&mut req, SystemTime::now())?;
        // HTTP/1.1 wants origin-form; the absolute URI was only for signing.
        let origin = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        *req.uri_mut() = origin
            .parse()
            .map_err(|e| StoreError::Config(format!("bad request path: {e}")))?;

        let mut sender = match self.inner.pool.take() {
            Some(s) => s,
            None => {
                let addrs = self.resolve().await.map_err(connect_err)?;
                let tls = self.inner.tls.as_ref().map(|t| (t, c.host()));
                let dial = async {
                    let mut last = String::new();
                    for addr in &addrs {
                        match connect(*addr, tls).await {
                            Ok(s) => return Ok(s),
                            Err(e) => last = format!("{addr}: {e}"),
                        }
                    }
                    Err(last)
                };
                let limit = async {
                    glommio::timer::sleep(c.connect_timeout).await;
                    Err(format!("connect timed out after {:?}", c.connect_timeout))
                };
                futures_lite::future::or(dial, limit)
                    .await
                    .map_err(connect_err)?
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| connect_err(e.to_string()))?
            .to_bytes();
        self.inner.pool.put(sender, c.max_idle_connections);
        if parts.status.is_success() {
            return Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            });
        }
        Err(self.error_for(call, parts.status, &parts.headers, &body))
    }

    fn error_for(
        &self,
        call: &Call<'_>,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> StoreError {
        let c = &self.inner.config;
        let parsed = std::str::from_utf8(body)
            .ok()
            .and_then(xml::error_body)
            .unwrap_or_default();
        let header_id = headers
            .get("x-amz-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let request_id = if parsed.request_id.is_empty() {
            header_id.to_owned()
        } else {
            parsed.request_id.clone()
        };
        let bucket = c.bucket.clone();
        let key = call.key.unwrap_or_default().to_owned();
        let endpoint = c.endpoint.to_string();
        match (status, parsed.code.as_str()) {
            (_, "NoSuchBucket") => StoreError::NoSuchBucket { bucket, endpoint, request_id },
            (_, "NoSuchKey") => StoreError::NotFound { bucket, key },
            (StatusCode::PRECONDITION_FAILED, _) | (_, "PreconditionFailed") if call.if_absent => {
                StoreError::Exists { bucket, key }
            }
            (StatusCode::NOT_FOUND, "") if call.method == Method::HEAD || call.key.is_some() => {
                StoreError::NotFound { bucket, key }
            }
            (_, code @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken")) => {
                StoreError::Credentials {
                    endpoint,
                    access_key_id: c.credentials.access_key_id.clone(),
                    code: code.to_owned(),
                    message: parsed.message,
                    request_id,
                }
            }
            (StatusCode::FORBIDDEN, "") if call.method == Method::HEAD => StoreError::Http {
                operation: call.operation,
                status,
                code: "AccessDenied".into(),
                message: "access denied (HEAD responses carry no detail; check credentials and bucket policy)".into(),
                request_id,
                bucket,
                key,
            },
            _ => StoreError::Http {
                operation: call.operation,
                status,
                message: match (parsed.message.is_empty(), parsed.code.is_empty()) {
                    (false, _) => parsed.message,
                    // An error document without a message: the code says it all.
                    (true, false) => "(no message)".into(),
                    (true, true) => String::from_utf8_lossy(body).chars().take(200).collect(),
                },
                code: if parsed.code.is_empty() { status.canonical_reason().unwrap_or("Error").into() } else { parsed.code },
                request_id,
                bucket,
                key,
            },
        }
    }

    fn bad_response(
        &self,
        operation: &'static str,
        key: &str,
        reason: impl Into<String>,
    ) -> StoreError {
        StoreError::BadResponse {
            operation,
            bucket: self.bucket().to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// Headers every object write carries: user metadata, content type, object lock.
    pub(crate) fn write_headers<'a>(&self, mut call: Call<'a>, opts: &PutOptions) -> Call<'a> {
        for (name, value) in &opts.metadata {
            if let Ok(h) = HeaderName::try_from(format!("{META_PREFIX}{name}")) {
                call = call.header(h, value.clone());
            }
        }
        if let Some(ct) = &opts.content_type {
            call = call.header(CONTENT_TYPE, ct.clone());
        }

        if let Some(lock) = self.inner.config.object_lock {
            call = call
                .header(
                    HeaderName::from_static("x-amz-object-lock-mode"),
                    lock.mode.as_header(),
                )
                .header(
                    HeaderName::from_static("x-amz-object-lock-retain-until-date"),
                    iso8601(SystemTime::now() + opts.retain_for.unwrap_or(lock.retain_for)),
                );
        }
        call
    }

    /// PutObject of one body given as chunks (sent without concatenation).
    pub async fn put_object(
        &self,
        key: &str,
        chunks: Vec<Bytes>,
        opts: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        let size = chunks.iter().map(|c| c.len() as u64).sum();
        let mut call = self.write_headers(Call::new("PutObject", Method::PUT, Some(key)), opts);
        if opts.if_absent {
            call = call.if_absent();
        }
        if self.inner.config.checksums || self.inner.config.object_lock.is_some() {
            // The algorithm is named too, as SDKs do: some servers ask for
            // it, not the checksum, on locked writes.
            call = call
                .header(
                    HeaderName::from_static("x-amz-checksum-crc32c"),
                    crc32c_b64(&chunks),
                )
                .header(
                    HeaderName::from_static("x-amz-sdk-checksum-algorithm"),
                    "CRC32C",
                );
        }
        let reply = self.send(call.body(chunks)).await?;
        Ok(ObjectMeta {
            size,
            etag: etag_of(&reply.headers),
            metadata: opts.metadata.clone(),
            version_id: header_str(&reply.headers, "x-amz-version-id"),
            ..ObjectMeta::default()
        })
    }

    /// Starts a multipart upload; see [`MultipartUpload`].
    pub async fn create_multipart(
        &self,
        key: &str,
        opts: &PutOptions,
    ) -> Result<MultipartUpload, StoreError> {
        let mut call = self.write_headers(
            Call::new("CreateMultipartUpload", Method::POST, Some(key)).query("uploads", ""),
            opts,
        );
        // S3 refuses a locked write without an integrity checksum.
        let checksums = self.inner.config.checksums || self.inner.config.object_lock.is_some();
        if checksums {
            call = call.header(
                HeaderName::from_static("x-amz-checksum-algorithm"),
                "CRC32C",
            );
        }
        let reply = self.send(call).await?;
        let text = String::from_utf8_lossy(&reply.body);
        let id = xml::upload_id(&text).ok_or_else(|| {
            self.bad_response("CreateMultipartUpload", key, "no UploadId in the response")
        })?;
        Ok(MultipartUpload::new(
            self.clone(),
            key.to_owned(),
            id,
            self.inner.config.max_parts_in_flight,
            checksums,
            opts.if_absent,
        ))
    }

    /// CreateBucket (with object lock enabled when this client locks what it
    /// writes); an existing bucket owned by us is not an error.
    pub async fn create_bucket(&self) -> Result<(), StoreError> {
        let mut call = Call::new("CreateBucket", Method::PUT, None);
        if self.inner.config.object_lock.is_some() {
            call = call.header(
                HeaderName::from_static("x-amz-bucket-object-lock-enabled"),
                "true",
            );
        }
        let region = &self.inner.config.region;
        if region != "us-east-1" {
            let body = format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml::escape(region)
            );
            call = call.body(vec![Bytes::from(body)]);
        }
        match self.send(call).await {
            Ok(_) => Ok(()),
            Err(StoreError::Http { code, .. })
                if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// HeadBucket: checks that the bucket exists and the credentials work.
    pub async fn check_bucket(&self) -> Result<(), StoreError> {
        // HEAD answers carry no error body; a one-key listing names the problem.
        let call = Call::new("ListObjectsV2", Method::GET, None)
            .query("list-type", "2")
            .query("max-keys", "1");
        self.send(call).await.map(|_| ())
    }

    /// Whether the bucket has object lock enabled
    /// (GetObjectLockConfiguration).
    pub async fn object_lock_enabled(&self) -> Result<bool, StoreError> {
        let call =
            Call::new("GetObjectLockConfiguration", Method::GET, None).query("object-lock", "");
        match self.send(call).await {
            Ok(reply) => {
                let text = String::from_utf8_lossy(&reply.body);
                let mut enabled = false;
                let _ = xml::walk(&text, |path, t| {
                    if path.last().is_some_and(|l| l == "ObjectLockEnabled") {
                        enabled = t.trim() == "Enabled";
                    }
                });
                Ok(enabled)
            }
            Err(StoreError::Http { code, .. })
                if code == "ObjectLockConfigurationNotFoundError" =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<xml::ListPage, StoreError> {
        let mut call = Call::new("ListObjectsV2", Method::GET, None);
        if let Some(t) = token {
            call = call.query("continuation-token", t);
        }
        call = call.query("list-type", "2").query("prefix", prefix);
        let reply = self.send(call).await?;
        let text = std::str::from_utf8(&reply.body)
            .map_err(|_| self.bad_response("ListObjectsV2", prefix, "listing is not UTF-8"))?;
        xml::list_page(text).map_err(|e| self.bad_response("ListObjectsV2", prefix, e))
    }
}

/// `?versionId=` when a version is asked for.
fn versioned<'a>(call: Call<'a>, version: Option<&str>) -> Call<'a> {
    match version {
        Some(v) => call.query("versionId", v),
        None => call,
    }
}

/// What the headers of a GET or HEAD say (size aside).
fn object_meta(headers: &HeaderMap) -> ObjectMeta {
    ObjectMeta {
        size: 0,
        etag: etag_of(headers),
        metadata: meta_from(headers),
        lock_mode: header_str(headers, "x-amz-object-lock-mode"),
        lock_retain_until: header_str(headers, "x-amz-object-lock-retain-until-date"),
        version_id: header_str(headers, "x-amz-version-id"),
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn etag_of(headers: &HeaderMap) -> String {
    headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}

/// base64 of the big-endian CRC32C of the chunks, for `x-amz-checksum-crc32c`.
pub(crate) fn crc32c_b64(chunks: &[Bytes]) -> String {
    let crc = chunks
        .iter()
        .fold(0, |crc, c| crc32c::crc32c_append(crc, c));
    base64(&crc.to_be_bytes())
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn meta_from(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().strip_prefix(META_PREFIX)?.to_owned(),
                v.to_str().ok()?.to_owned(),
            ))
        })
        .collect()
}

/// Cuts a body given as pieces into parts of `part` bytes (the last one
/// shorter), slicing pieces where a part ends: no byte is copied.
fn split_parts(chunks: Vec<Bytes>, part: usize) -> Vec<Vec<Bytes>> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut room = part;
    for mut chunk in chunks {
        while !chunk.is_empty() {
            let take = chunk.len().min(room);
            current.push(chunk.split_to(take));
            room -= take;
            if room == 0 {
                parts.push(std::mem::take(&mut current));
                room = part;
            }
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

impl ObjectStore for S3Client {
    async fn put_chunks(
        &self,
        key: &str,
        chunks: Vec<Bytes>,
        opts: &PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        let c = &self.inner.config;
        let size: usize = chunks.iter().map(Bytes::len).sum();
        if size <= c.multipart_threshold {
            return self.put_object(key, chunks, opts).await;
        }
        let mut upload = self.create_multipart(key, opts).await?;
        for part in split_parts(chunks, c.part_size.max(5 * 1024 * 1024)) {
            if let Err(e) = upload.push_part(part).await {
                upload.abort().await;
                return Err(e);
            }
        }
        let done = upload.complete().await?;
        Ok(ObjectMeta {
            size: size as u64,
            etag: done.etag,
            metadata: opts.metadata.clone(),
            version_id: done.version_id,
            ..ObjectMeta::default()
        })
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        self.get_version(key, None).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.get_range_version(key, None, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.head_version(key, None).await
    }

    async fn get_version(&self, key: &str, version: Option<&str>) -> Result<Object, StoreError> {
        let reply = self
            .send(versioned(
                Call::new("GetObject", Method::GET, Some(key)),
                version,
            ))
            .await?;
        let mut meta = object_meta(&reply.headers);
        meta.size = reply.body.len() as u64;
        Ok(Object {
            body: reply.body,
            meta,
        })
    }

    async fn get_range_version(
        &self,
        key: &str,
        version: Option<&str>,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let call = versioned(Call::new("GetObject", Method::GET, Some(key)), version)
            .header(RANGE, format!("bytes={}-{}", range.start, range.end - 1));
        let reply = self.send(call).await?;
        let want = (range.end - range.start) as usize;
        match reply.status {
            StatusCode::PARTIAL_CONTENT => Ok(reply.body),
            // A server that ignores Range sends everything; cut it ourselves.
            _ => {
                let start = (range.start as usize).min(reply.body.len());
                Ok(reply
                    .body
                    .slice(start..(start + want).min(reply.body.len())))
            }
        }
    }

    async fn head_version(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        let reply = self
            .send(versioned(
                Call::new("HeadObject", Method::HEAD, Some(key)),
                version,
            ))
            .await?;
        let size = content_length(&reply.headers)
            .ok_or_else(|| self.bad_response("HeadObject", key, "no Content-Length"))?;
        Ok(ObjectMeta {
            size,
            ..object_meta(&reply.headers)
        })
    }

    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta, StoreError> {
        self.copy_version(from, None, to).await
    }

    async fn copy_version(
        &self,
        from: &str,
        version: Option<&str>,
        to: &str,
    ) -> Result<ObjectMeta, StoreError> {
        // The source is `/bucket/key`, the key percent-encoded as in a path.
        let mut source = format!(
            "/{}/{}",
            self.bucket(),
            utf8_percent_encode(from, ENCODE_KEY)
        );
        if let Some(v) = version {
            let _ = write!(source, "?versionId={}", utf8_percent_encode(v, ENCODE_KEY));
        }
        let mut call = self
            .write_headers(
                Call::new("CopyObject", Method::PUT, Some(to)),
                &PutOptions::default(),
            )
            .header(HeaderName::from_static("x-amz-copy-source"), source)
            .header(HeaderName::from_static("x-amz-metadata-directive"), "COPY");
        if self.inner.config.checksums || self.inner.config.object_lock.is_some() {
            // A locked copy needs an integrity checksum like a locked put;
            // S3 computes it over the copy (there is no body to sum here).
            call = call
                .header(
                    HeaderName::from_static("x-amz-checksum-algorithm"),
                    "CRC32C",
                )
                .header(
                    HeaderName::from_static("x-amz-sdk-checksum-algorithm"),
                    "CRC32C",
                );
        }
        // NoSuchKey is about the source, which the call does not name.
        let reply = self.send(call).await.map_err(|e| match e {
            StoreError::NotFound { bucket, .. } => StoreError::NotFound {
                bucket,
                key: match version {
                    Some(v) => format!("{from}?versionId={v}"),
                    None => from.to_owned(),
                },
            },
            e => e,
        })?;
        // CopyObject may answer 200 and still fail: the error is in the body.
        let text = String::from_utf8_lossy(&reply.body);
        if let Some(err) = xml::error_body(&text).filter(|e| !e.code.is_empty()) {
            return Err(StoreError::Http {
                operation: "CopyObject",
                status: reply.status,
                code: err.code,
                message: err.message,
                request_id: err.request_id,
                bucket: self.bucket().to_owned(),
                key: to.to_owned(),
            });
        }
        let version_id = header_str(&reply.headers, "x-amz-version-id");
        self.head_version(to, version_id.as_deref()).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(prefix, token.as_deref()).await?;
            out.extend(page.entries);
            match page.next_token {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        for batch in keys.chunks(1000) {
            let mut body = String::from(
                "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>",
            );
            for k in batch {
                let _ = write!(body, "<Object><Key>{}</Key></Object>", xml::escape(k));
            }
            body.push_str("</Delete>");
            let body = Bytes::from(body);
            // DeleteObjects requires an integrity header: MD5 or a checksum.
            let call = Call::new("DeleteObjects", Method::POST, None)
                .query("delete", "")
                .header(
                    HeaderName::from_static("x-amz-checksum-crc32c"),
                    crc32c_b64(std::slice::from_ref(&body)),
                )
                .header(HeaderName::from_static("content-md5"), base64(&md5(&body)))
                .body(vec![body]);
            let reply = self.send(call).await?;
            let text = String::from_utf8_lossy(&reply.body);
            let errors =
                xml::delete_errors(&text).map_err(|e| self.bad_response("DeleteObjects", "", e))?;
            if let Some((key, code, message)) =
                errors.into_iter().find(|(_, code, _)| code != "NoSuchKey")
            {
                return Err(StoreError::Http {
                    operation: "DeleteObjects",
                    status: StatusCode::OK,
                    code,
                    message,
                    request_id: "-".into(),
                    bucket: self.bucket().to_owned(),
                    key,
                });
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("s3://{} at {}", self.bucket(), self.inner.config.endpoint)
    }
}

/// MD5, for DeleteObjects' mandatory `Content-MD5`.
fn md5(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Credentials;

    #[test]
    fn parts_are_cut_across_pieces_without_copying() {
        let a = Bytes::from(vec![1u8; 7]);
        let b = Bytes::from(vec![2u8; 2]);
        let c = Bytes::from(vec![3u8; 6]);
        let parts = split_parts(vec![a.clone(), b, c.clone()], 5);
        let lens: Vec<Vec<usize>> = parts
            .iter()
            .map(|p| p.iter().map(Bytes::len).collect())
            .collect();
        assert_eq!(lens, [vec![5], vec![2, 2, 1], vec![5]]);
        assert_eq!(parts[0][0].as_ptr(), a.as_ptr());
        assert_eq!(parts[2][0].as_ptr(), c[1..].as_ptr());
        let joined: Vec<u8> = parts.concat().iter().flat_map(|p| p.to_vec()).collect();
        assert_eq!(joined, [[1u8; 7].as_slice(), &[2; 2], &[3; 6]].concat());
        assert!(split_parts(vec![], 5).is_empty());
    }

    #[test]
    fn md5_and_base64_match_known_vectors() {
        assert_eq!(base64(&md5(b"")), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(
            base64(&md5(b"The quick brown fox jumps over the lazy dog")),
            "nhB9nTcrtoJr2B01QqQZ1g=="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn urls_encode_keys_and_queries() {
        let cfg = S3Config::new(
            "http://127.0.0.1:9000",
            "bkt",
            Credentials::new("a", "b", None),
        )
        .unwrap();
        let c = S3Client::new(cfg);
        let (url, host) = c.url(Some("ns/t p/0/seg+1.kfs"), &[("prefix", "a/b c".into())]);
        assert_eq!(host, "127.0.0.1:9000");
        assert_eq!(
            url,
            "http://127.0.0.1:9000/bkt/ns/t%20p/0/seg%2B1.kfs?prefix=a%2Fb%20c"
        );
        let mut cfg = S3Config::new(
            "https://s3.eu-west-1.amazonaws.com",
            "bkt",
            Credentials::new("a", "b", None),
        )
        .unwrap();
        cfg.region = "eu-west-1".into();
        assert_eq!(cfg.addressing, AddressingStyle::VirtualHosted);
        let (url, _) = S3Client::new(cfg).url(None, &[]);
        assert_eq!(url, "https://bkt.s3.eu-west-1.amazonaws.com/");
    }
}
