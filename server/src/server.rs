//! Listeners, background timers, lookupd registration, signals and orderly shutdown.
//!
//! Shutdown (SIGINT/SIGTERM): stop accepting, tell every connection task to finish (a
//! watch channel), wait for them (bounded), then flush and fsync the engine — logs and
//! cursors — so a restart resumes exactly where this run stopped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::lookup::{Lookup, LookupOptions};
use crate::nsqd::{Nsqd, NsqdRegistrations, NSQ_COMPAT_VERSION};
use crate::options::Options;

/// How often in-flight timeouts and deferred messages are checked.
const TIMER_SCAN: Duration = Duration::from_millis(50);

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let tcp_addr = opts.tcp_socket_addr().map_err(anyhow::Error::msg)?;
    let http_addr = opts.http_socket_addr().map_err(anyhow::Error::msg)?;
    let data_dir = opts.data_dir();
    let nsqd = tokio::task::spawn_blocking(move || Nsqd::new(opts))
        .await
        .context("opening data directory")?
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;

    let tcp = TcpListener::bind(tcp_addr)
        .await
        .with_context(|| format!("listen on TCP {tcp_addr}"))?;
    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("listen on HTTP {http_addr}"))?;
    let tcp_local = tcp.local_addr()?;
    let http_local = http.local_addr()?;
    let _ = nsqd.tcp_addr.set(tcp_local);
    let _ = nsqd.http_addr.set(http_local);
    // As in NSQ: the HTTPS listener runs when TLS is configured and --https-address is set.
    let https = match (&nsqd.tls, nsqd.opts().https_address.as_str()) {
        (Some(tls), addr) if !addr.is_empty() => {
            let a = crate::options::resolve(addr).map_err(anyhow::Error::msg)?;
            let l = TcpListener::bind(a)
                .await
                .with_context(|| format!("listen on HTTPS {a}"))?;
            let _ = nsqd.https_addr.set(l.local_addr()?);
            Some((l, crate::tls::https_config(tls)))
        }
        _ => None,
    };
    // NSQ's startup lines, which operators' scripts and log searches look for.
    tracing::info!("NSQ: data directory {}", data_dir.display());
    tracing::info!("TCP: listening on {tcp_local}");
    tracing::info!("HTTP: listening on {http_local}");
    if let Some(h) = nsqd.https_addr.get() {
        tracing::info!("HTTPS: listening on {h}");
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let https_task = https.map(|(l, cfg)| {
        tokio::spawn(crate::https::serve(
            l,
            cfg,
            crate::http::router_for(nsqd.clone(), true),
            shutdown_rx.clone(),
        ))
    });

    let opts = nsqd.opts();
    let lookup = Lookup::spawn(
        LookupOptions {
            addresses: opts.lookupd_tcp_addresses.clone(),
            broadcast_address: opts.broadcast_address.clone(),
            tcp_port: if opts.broadcast_tcp_port > 0 {
                opts.broadcast_tcp_port
            } else {
                tcp_local.port()
            },
            http_port: if opts.broadcast_http_port > 0 {
                opts.broadcast_http_port
            } else {
                http_local.port()
            },
            hostname: edge::hostname(),
            version: NSQ_COMPAT_VERSION.to_string(),
        },
        Arc::new(NsqdRegistrations(Arc::downgrade(&nsqd))),
        shutdown_rx.clone(),
    );
    let _ = nsqd.lookup.set(lookup);

    // Connection tasks each hold a sender; when all are dropped, recv() returns None.
    let (conn_done_tx, mut conn_done_rx) = mpsc::channel::<()>(1);
    let accept = tokio::spawn(accept_loop(
        nsqd.clone(),
        tcp,
        shutdown_rx.clone(),
        conn_done_tx,
    ));

    let mut http_shutdown = shutdown_rx.clone();
    let app = crate::http::router(nsqd.clone());
    let http_task = tokio::spawn(async move {
        let r = axum::serve(
            http,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = http_shutdown.wait_for(|v| *v).await;
        })
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    let timers = {
        let nsqd = nsqd.clone();
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TIMER_SCAN);
            loop {
                tokio::select! {
                    _ = tick.tick() => nsqd.scan_timers(),
                    _ = stop.changed() => return,
                }
            }
        })
    };

    let statsd = (!nsqd.opts().statsd_address.is_empty())
        .then(|| tokio::spawn(crate::statsd::run(nsqd.clone(), shutdown_rx.clone())));

    edge::signal::shutdown_signal().await;
    tracing::info!("shutting down");
    nsqd.exiting
        .store(true, std::sync::atomic::Ordering::Release);
    let _ = shutdown_tx.send(true);
    let _ = accept.await;
    // Bounded wait for connections to finish their current command and close.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn_done_rx.recv()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    if let Some(t) = https_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = timers.await;
    if let Some(s) = statsd {
        let _ = s.await;
    }
    let closing = nsqd.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .context("closing engine")?
        .context("flushing data to disk")?;
    tracing::info!("bye");
    Ok(())
}

async fn accept_loop(
    nsqd: Arc<Nsqd>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let for_conns = shutdown.clone();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, remote)) => {
                    let nsqd = nsqd.clone();
                    let rx = for_conns.clone();
                    let done = done.clone();
                    // Connects and disconnects at INFO, as NSQ logs them.
                    tracing::info!("TCP: new client({remote})");
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                    tokio::spawn(async move {
                        crate::protocol_v2::serve(nsqd, stream, remote, rx).await;
                        tracing::info!("TCP: client({remote}) closed");
                        drop(done);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}
