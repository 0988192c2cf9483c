//! nsqlookupd's log lines in NSQ's layout: `--log-prefix`, local time, `LEVEL:`, message,
//! e.g. `[nsqlookupd] 2026/12/01 12:11:52.939558 INFO: ...`. No colour codes unless stderr
//! is a terminal.

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct NsqFormat {
    prefix: String,
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

/// Install the global subscriber with NSQ's level names (debug, info, warn, error, fatal).
pub fn init(level: &str, prefix: &str) -> Result<(), String> {
    let level = match level.to_ascii_lowercase().as_str() {
        // Names, or NSQ's numeric levels as config files may give them (1 = debug).
        "debug" | "1" => "debug",
        "info" | "2" => "info",
        "warn" | "warning" | "3" => "warn",
        "error" | "fatal" | "4" | "5" => "error",
        other => return Err(format!("invalid --log-level {other:?}")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .event_format(NsqFormat {
            prefix: prefix.to_string(),
        })
        .try_init();
    Ok(())
}
