//! Orderly shutdown starts on the first SIGINT or SIGTERM, in every binary.

/// Resolves on the first SIGINT or SIGTERM (on Ctrl-C alone if the handlers cannot be
/// installed).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut i), Ok(mut t)) => {
            tokio::select! {
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
