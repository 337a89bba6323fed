//! Shared by the S3 tests: the servers `scripts/test` started.
#![allow(dead_code)]

use std::future::Future;

use kafscale_s3::{Credentials, RetryPolicy, S3Client, S3Config};

/// The S3 endpoint from `scripts/test`, or `None` (test skipped) when run
/// outside it. Inside the rig a missing endpoint is a failure.
pub fn endpoint() -> Option<String> {
    match std::env::var("KAFSCALE_TEST_S3_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) if std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_some() => {
            panic!("KAFSCALE_TEST_S3_ENDPOINT is not set but KAFSCALE_TEST_REQUIRE_SERVERS is")
        }
        Err(_) => {
            eprintln!("skipped: no S3 server (run scripts/test)");
            None
        }
    }
}

pub fn credentials() -> Credentials {
    let get = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    Credentials::new(
        get("KAFSCALE_TEST_S3_ACCESS_KEY"),
        get("KAFSCALE_TEST_S3_SECRET_KEY"),
        None,
    )
}

/// A config for a fresh bucket named after the test.
pub fn config(endpoint: &str, test: &str) -> S3Config {
    let bucket = format!("t-{}-{}", test.replace('_', "-"), rand::random::<u32>());
    let mut c = S3Config::new(endpoint, bucket, credentials()).expect("config");
    c.retry = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    c
}

/// Runs `f` on a glommio executor with a client for a new bucket.
pub fn with_bucket<T, F, Fut>(test: &str, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(S3Client) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let endpoint = endpoint()?;
    let cfg = config(&endpoint, test);
    Some(
        kafscale_shard::block_on(move || async move {
            let client = S3Client::new(cfg);
            client.create_bucket().await.expect("create bucket");
            f(client).await
        })
        .expect("executor"),
    )
}

/// Non-repeating bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut x: u64 = rand::random::<u64>() | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    v
}
