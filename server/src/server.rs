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
use tokio::task::JoinHandle;

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
    let listeners = Listeners::bind(&nsqd, tcp_addr, http_addr).await?;
    // NSQ's startup lines, which operators' scripts and log searches look for.
    tracing::info!("NSQ: data directory {}", data_dir.display());
    tracing::info!("TCP: listening on {}", listeners.tcp_local);
    tracing::info!("HTTP: listening on {}", listeners.http_local);
    if let Some(h) = nsqd.https_addr.get() {
        tracing::info!("HTTPS: listening on {h}");
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let lookup = spawn_lookup(&nsqd, &listeners, shutdown_rx.clone());
    let _ = nsqd.lookup.set(lookup);
    let tasks = Tasks::spawn(&nsqd, listeners, &shutdown_rx);

    edge::signal::shutdown_signal().await;
    tracing::info!("shutting down");
    nsqd.exiting
        .store(true, std::sync::atomic::Ordering::Release);
    let _ = shutdown_tx.send(true);
    tasks.wait().await;
    let closing = nsqd.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .context("closing engine")?
        .context("flushing data to disk")?;
    tracing::info!("bye");
    Ok(())
}

/// The bound listeners; their addresses are also recorded in [`Nsqd`].
struct Listeners {
    tcp: TcpListener,
    http: TcpListener,
    tcp_local: std::net::SocketAddr,
    http_local: std::net::SocketAddr,
    https: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
}

impl Listeners {
    async fn bind(
        nsqd: &Arc<Nsqd>,
        tcp_addr: std::net::SocketAddr,
        http_addr: std::net::SocketAddr,
    ) -> anyhow::Result<Listeners> {
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
        Ok(Listeners {
            tcp,
            http,
            tcp_local,
            http_local,
            https,
        })
    }
}

/// Registration with every `--lookupd-tcp-address`, with the ports nsqd is reachable on.
fn spawn_lookup(nsqd: &Arc<Nsqd>, l: &Listeners, shutdown: watch::Receiver<bool>) -> Lookup {
    let opts = nsqd.opts();
    Lookup::spawn(
        LookupOptions {
            addresses: opts.lookupd_tcp_addresses.clone(),
            broadcast_address: opts.broadcast_address.clone(),
            tcp_port: if opts.broadcast_tcp_port > 0 {
                opts.broadcast_tcp_port
            } else {
                l.tcp_local.port()
            },
            http_port: if opts.broadcast_http_port > 0 {
                opts.broadcast_http_port
            } else {
                l.http_local.port()
            },
            hostname: edge::hostname(),
            version: NSQ_COMPAT_VERSION.to_string(),
        },
        Arc::new(NsqdRegistrations(Arc::downgrade(nsqd))),
        shutdown,
    )
}

/// The daemon's long-running tasks, all stopped by the shutdown watch.
struct Tasks {
    accept: JoinHandle<()>,
    /// Closed (recv gives None) when every connection task has ended.
    conns_done: mpsc::Receiver<()>,
    http: JoinHandle<()>,
    https: Option<JoinHandle<()>>,
    timers: JoinHandle<()>,
    statsd: Option<JoinHandle<()>>,
}

impl Tasks {
    fn spawn(nsqd: &Arc<Nsqd>, l: Listeners, shutdown: &watch::Receiver<bool>) -> Tasks {
        let https = l.https.map(|(listener, cfg)| {
            tokio::spawn(crate::https::serve(
                listener,
                cfg,
                crate::http::router_for(nsqd.clone(), true),
                shutdown.clone(),
            ))
        });
        // Connection tasks each hold a sender; when all are dropped, recv() returns None.
        let (conn_done_tx, conns_done) = mpsc::channel::<()>(1);
        let accept = tokio::spawn(accept_loop(
            nsqd.clone(),
            l.tcp,
            shutdown.clone(),
            conn_done_tx,
        ));
        let mut http_shutdown = shutdown.clone();
        let app = crate::http::router(nsqd.clone());
        let http_listener = l.http;
        let http = tokio::spawn(async move {
            let r = axum::serve(
                http_listener,
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
            let mut stop = shutdown.clone();
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
            .then(|| tokio::spawn(crate::statsd::run(nsqd.clone(), shutdown.clone())));
        Tasks {
            accept,
            conns_done,
            http,
            https,
            timers,
            statsd,
        }
    }

    /// After the shutdown watch fired: wait for the tasks, bounded where a client may hold
    /// things up (connections finishing their current command, HTTP requests in flight).
    async fn wait(mut self) {
        let _ = self.accept.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conns_done.recv()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.http).await;
        if let Some(t) = self.https {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = self.timers.await;
        if let Some(s) = self.statsd {
            let _ = s.await;
        }
    }
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
