//! Logs as NSQ writes them: `<prefix><local date and time> LEVEL: message key=value...`,
//! e.g. `[nsqd] 2026/12/01 12:11:53.244946 INFO: TCP: listening on ...`, to stderr, with no
//! colour codes unless stderr is a terminal. Levels take NSQ's names (debug, info, warn,
//! error, fatal) or its numbers (1 to 5); the level can change at runtime
//! (PUT /config/log_level).

use std::sync::OnceLock;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, EnvFilter};

type ReloadHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// The installed filter's handle and the per-crate directives it always carries.
static RELOAD: OnceLock<(ReloadHandle, String)> = OnceLock::new();

/// NSQ's level (name or number) as tracing's level name; `fatal` has no equivalent in
/// tracing and means `error`.
pub fn tracing_level(level: &str) -> Result<&'static str, String> {
    Ok(match level.to_ascii_lowercase().as_str() {
        "debug" | "1" => "debug",
        "info" | "2" => "info",
        "warn" | "warning" | "3" => "warn",
        "error" | "fatal" | "4" | "5" => "error",
        other => return Err(format!("invalid log level {other:?}")),
    })
}

/// NSQ's numeric level (1 debug, 2 info, 3 warn, 4 error, 5 fatal), as nsqd reports
/// `log_level` in /config; anything unknown reads as info.
pub fn nsq_level_code(level: &str) -> i64 {
    match level.to_ascii_lowercase().as_str() {
        "debug" | "1" => 1,
        "warn" | "warning" | "3" => 3,
        "error" | "4" => 4,
        "fatal" | "5" => 5,
        _ => 2,
    }
}

fn filter(level: &str, quiet: &str) -> Result<EnvFilter, String> {
    let l = tracing_level(level)?;
    Ok(if quiet.is_empty() {
        EnvFilter::new(l)
    } else {
        EnvFilter::new(format!("{l},{quiet}"))
    })
}

/// NSQ's log line layout (see the module docs).
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

/// Install the global subscriber: `level` as NSQ names it, every line starting with
/// `prefix`, and `quiet` extra filter directives that hold chatty dependencies down
/// whatever the level (e.g. `"hyper=warn"`; may be empty). A bad level is an error; a
/// second call does nothing.
pub fn init(level: &str, prefix: &str, quiet: &str) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = reload::Layer::new(filter(level, quiet)?);
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
        let _ = RELOAD.set((handle, quiet.to_string()));
    }
    Ok(())
}

/// Change the level of the subscriber [`init`] installed (a no-op before `init`).
pub fn set_level(level: &str) -> Result<(), String> {
    match RELOAD.get() {
        Some((h, quiet)) => h.reload(filter(level, quiet)?).map_err(|e| e.to_string()),
        None => tracing_level(level).map(|_| ()),
    }
}

/// `[name] `: the prefix NSQ's tools use, from the program's own file name.
pub fn program_prefix() -> String {
    let name = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    format!("[{name}] ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsq_level_names_and_numbers() {
        assert_eq!(tracing_level("DEBUG"), Ok("debug"));
        assert_eq!(tracing_level("2"), Ok("info"));
        assert_eq!(tracing_level("warning"), Ok("warn"));
        assert_eq!(tracing_level("fatal"), Ok("error"));
        assert_eq!(tracing_level("5"), Ok("error"));
        assert_eq!(
            tracing_level("loud"),
            Err("invalid log level \"loud\"".to_string())
        );
        assert_eq!(nsq_level_code("debug"), 1);
        assert_eq!(nsq_level_code("INFO"), 2);
        assert_eq!(nsq_level_code("fatal"), 5);
        assert!(filter("info", "hyper=warn").is_ok());
        assert!(set_level("nope").is_err());
    }
}
