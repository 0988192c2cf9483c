//! nsqlookupd: the directory nsqd instances register with and consumers ask where a topic
//! is produced. Split as NSQ splits it: [`options`] (flags), [`tcp`] (protocol V1 for nsqd),
//! [`http`] (the API for consumers, tools and nsqadmin), [`db`] (the registration DB), and
//! here the daemon itself.

#![forbid(unsafe_code)]

pub mod db;
pub mod http;
pub mod metrics;
pub mod options;
mod tcp;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;

use db::Db;

pub use http::router;
pub use options::{config_spec, parse_duration, Options};

pub const NSQ_COMPAT_VERSION: &str = "1.3.0";

pub struct Lookupd {
    pub opts: Options,
    pub db: Mutex<Db>,
    next_id: AtomicU64,
    pub tcp_addr: std::sync::OnceLock<SocketAddr>,
    pub http_addr: std::sync::OnceLock<SocketAddr>,
}

type Shared = Arc<Lookupd>;

/// Run until SIGINT/SIGTERM.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let tcp = TcpListener::bind(options::resolve(&opts.tcp_address)?)
        .await
        .with_context(|| format!("listen on {}", opts.tcp_address))?;
    let http = TcpListener::bind(options::resolve(&opts.http_address)?)
        .await
        .with_context(|| format!("listen on {}", opts.http_address))?;
    let l = Arc::new(Lookupd {
        opts,
        db: Mutex::new(Db::default()),
        next_id: AtomicU64::new(1),
        tcp_addr: Default::default(),
        http_addr: Default::default(),
    });
    let _ = l.tcp_addr.set(tcp.local_addr()?);
    let _ = l.http_addr.set(http.local_addr()?);
    tracing::info!("TCP: listening on {}", tcp.local_addr()?);
    tracing::info!("HTTP: listening on {}", http.local_addr()?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let accept = {
        let l = l.clone();
        let mut stop = stop_rx.clone();
        let conns = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = tcp.accept() => match r {
                        Ok((s, remote)) => { tokio::spawn(tcp::serve_tcp(l.clone(), s, remote, conns.clone())); }
                        Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; }
                    },
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let mut http_stop = stop_rx.clone();
    let app = router(l.clone());
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(
            http,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = http_stop.changed().await;
        })
        .await;
    });
    edge::signal::shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = accept.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    Ok(())
}
