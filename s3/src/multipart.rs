//! Streaming multipart upload with a bounded number of parts in flight.
//!
//! The caller pushes parts as it fills them (each part is a list of `Bytes`
//! chunks, sent without concatenation). At most `max_in_flight` parts are
//! being uploaded at once; `push_part` waits for the oldest to finish before
//! starting another, so memory stays at `max_in_flight` parts.

use std::collections::VecDeque;
use std::fmt::Write as _;

use bytes::Bytes;
use glommio::Task;
use http::{HeaderName, Method};

use crate::client::{Call, S3Client, crc32c_b64};
use crate::error::StoreError;
use crate::xml;

type PartResult = Result<CompletedPart, StoreError>;

#[derive(Debug, Clone)]
struct CompletedPart {
    number: u32,
    etag: String,
    checksum: Option<String>,
}

/// An upload in progress. Call [`MultipartUpload::complete`] or
/// [`MultipartUpload::abort`]; dropping it leaves the upload to the bucket's
/// lifecycle rule.
pub struct MultipartUpload {
    client: S3Client,
    key: String,
    upload_id: String,
    next_part: u32,
    max_in_flight: usize,
    checksums: bool,
    /// Complete with `If-None-Match: *`.
    if_absent: bool,
    in_flight: VecDeque<Task<PartResult>>,
    done: Vec<CompletedPart>,
}

impl std::fmt::Debug for MultipartUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultipartUpload")
            .field("key", &self.key)
            .field("upload_id", &self.upload_id)
            .field("next_part", &self.next_part)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

/// A completed multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub etag: String,
    /// `x-amz-version-id` in a versioned bucket.
    pub version_id: Option<String>,
}

impl MultipartUpload {
    pub(crate) fn new(
        client: S3Client,
        key: String,
        upload_id: String,
        max_in_flight: usize,
        checksums: bool,
        if_absent: bool,
    ) -> Self {
        Self {
            client,
            key,
            upload_id,
            next_part: 1,
            max_in_flight: max_in_flight.max(1),
            checksums,
            if_absent,
            in_flight: VecDeque::new(),
            done: Vec::new(),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// Parts currently being uploaded.
    pub fn parts_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Starts uploading the next part (every part but the last must be at
    /// least 5 MiB). Waits first if `max_in_flight` parts are already going.
    pub async fn push_part(&mut self, chunks: Vec<Bytes>) -> Result<(), StoreError> {
        while self.in_flight.len() >= self.max_in_flight {
            self.finish_oldest().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let client = self.client.clone();
        let key = self.key.clone();
        let upload_id = self.upload_id.clone();
        let checksums = self.checksums;
        let task = glommio::spawn_local(async move {
            let mut call = Call::new("UploadPart", Method::PUT, Some(&key))
                .query("partNumber", number.to_string())
                .query("uploadId", upload_id);
            let checksum = checksums.then(|| crc32c_b64(&chunks));
            if let Some(sum) = &checksum {
                call = call
                    .header(
                        HeaderName::from_static("x-amz-checksum-crc32c"),
                        sum.clone(),
                    )
                    .header(
                        HeaderName::from_static("x-amz-sdk-checksum-algorithm"),
                        "CRC32C",
                    );
            }
            let reply = client.send(call.body(chunks)).await?;
            let etag = reply
                .headers
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            Ok(CompletedPart {
                number,
                etag,
                checksum,
            })
        });
        self.in_flight.push_back(task);
        Ok(())
    }

    async fn finish_oldest(&mut self) -> Result<(), StoreError> {
        if let Some(task) = self.in_flight.pop_front() {
            self.done.push(task.await?);
        }
        Ok(())
    }

    /// Waits for every part and completes the upload. On failure the upload
    /// is aborted.
    pub async fn complete(mut self) -> Result<Completed, StoreError> {
        while !self.in_flight.is_empty() {
            if let Err(e) = self.finish_oldest().await {
                self.abort().await;
                return Err(e);
            }
        }
        self.done.sort_by_key(|p| p.number);
        let mut body = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for p in &self.done {
            let _ = write!(
                body,
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>",
                p.number,
                xml::escape(&p.etag)
            );
            if let Some(sum) = &p.checksum {
                let _ = write!(body, "<ChecksumCRC32C>{sum}</ChecksumCRC32C>");
            }
            body.push_str("</Part>");
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut call = Call::new("CompleteMultipartUpload", Method::POST, Some(&self.key))
            .query("uploadId", self.upload_id.clone())
            .body(vec![Bytes::from(body)]);
        if self.if_absent {
            call = call.if_absent();
        }
        let reply = self.client.send(call).await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.abort().await;
                return Err(e);
            }
        };
        // CompleteMultipartUpload can fail with 200 OK and an <Error> body.
        let text = String::from_utf8_lossy(&reply.body);
        if let Some(err) = xml::error_body(&text) {
            self.abort().await;
            if self.if_absent && err.code == "PreconditionFailed" {
                return Err(StoreError::Exists {
                    bucket: self.client.bucket().to_owned(),
                    key: self.key.clone(),
                });
            }
            return Err(StoreError::Http {
                operation: "CompleteMultipartUpload",
                status: reply.status,
                code: err.code,
                message: err.message,
                request_id: err.request_id,
                bucket: self.client.bucket().to_owned(),
                key: self.key.clone(),
            });
        }
        let mut etag = String::new();
        let _ = xml::walk(&text, |p, t| {
            if p.last().is_some_and(|l| l == "ETag") {
                etag = t.trim_matches('"').to_owned();
            }
        });
        let version_id = reply
            .headers
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Completed { etag, version_id })
    }

    /// Cancels the parts in flight and aborts the upload. Best effort: a failed
    /// abort is logged (the bucket's lifecycle rule cleans up).
    pub async fn abort(&mut self) {
        self.in_flight.clear();
        let call = Call::new("AbortMultipartUpload", Method::DELETE, Some(&self.key))
            .query("uploadId", self.upload_id.clone());
        if let Err(e) = self.client.send(call).await {
            tracing::warn!(key = %self.key, error = %e, "could not abort multipart upload");
        }
    }
}
