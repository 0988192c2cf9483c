//! Structured logs with tracing: `--log-level` picks the filter (changeable at runtime
//! through PUT /config/log_level) and lines look like NSQ's: `--log-prefix`, the local time,
//! then `INFO:` / `WARNING:` / `ERROR:` / `DEBUG:`. No colour codes unless stderr is a
//! terminal.

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
        // Names, or NSQ's numeric levels as config files may give them (1 = debug).
        "debug" | "1" => "debug",
        "info" | "2" => "info",
        "warn" | "warning" | "3" => "warn",
        "error" | "fatal" | "4" | "5" => "error",
        other => return Err(format!("invalid log level {other:?}")),
    };
    Ok(EnvFilter::new(format!("{l},sled=warn,hyper=warn")))
}

/// NSQ's log line: `<prefix><local date and time> LEVEL: message key=value...`, e.g.
/// `[nsqd] 2026/12/01 12:11:53.244946 INFO: TCP: listening on ...`.
pub struct NsqFormat {
    pub prefix: String,
}

impl<S, N> FormatEvent<S, N> for NsqFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            _ => "DEBUG",
        };
        write!(
            writer,
            "{}{} {}: ",
            self.prefix,
            chrono::Local::now().format("%Y/%m/%d %H:%M:%S%.6f"),
            level
        )?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
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
        .event_format(NsqFormat {
            prefix: prefix.to_string(),
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
