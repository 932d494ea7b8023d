//! The stop signal every task watches: a `watch` channel that flips to `true`.

use tokio::sync::watch;

/// Resolves once `shutdown` is `true` (or its sender is gone).
pub async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
