//! A deadline for any future on a glommio executor.

use std::future::Future;
use std::time::Duration;

/// `fut`'s output, or `None` when `limit` passes first. The timer is only
/// armed if `fut` is not ready when first polled.
pub async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
