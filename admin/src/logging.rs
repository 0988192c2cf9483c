//! Logs with tracing: `--log-level` picks the filter (changeable at runtime through
//! PUT /config/log_level) and `--log-prefix` starts every line, as NSQ's logs do.

use std::sync::OnceLock;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, EnvFilter};

type ReloadHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

static RELOAD: OnceLock<ReloadHandle> = OnceLock::new();

/// NSQ's level names mapped onto tracing's (`fatal` has no equivalent: it means `error`).
fn filter_for(level: &str) -> Result<EnvFilter, String> {
    let l = match level.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" => "error",
        other => return Err(format!("invalid log level {other:?}")),
    };
    Ok(EnvFilter::new(format!("{l},hyper=warn,reqwest=warn")))
}

struct Prefixed<F> {
    prefix: String,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(&self.prefix)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Install the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(level: &str, prefix: &str) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = reload::Layer::new(filter_for(level)?);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .event_format(Prefixed {
            prefix: prefix.to_string(),
            inner: tracing_subscriber::fmt::format().with_target(false),
        });
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = RELOAD.set(handle);
    }
    Ok(())
}

pub fn set_level(level: &str) -> Result<(), String> {
    let f = filter_for(level)?;
    match RELOAD.get() {
        Some(h) => h.reload(f).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}
