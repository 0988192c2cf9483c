//! nsqlookupd binary: parse NSQ's flags, then run.

use clap::Parser;
use nsqlookupd::Options;

fn main() -> std::process::ExitCode {
    // Accept Go-style single-dash long flags (-tcp-address=...) like NSQ's binaries.
    let args: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.starts_with('-') && !a.starts_with("--") && a.len() > 2 {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect();
    let opts = match Options::try_parse_from(args) {
        Ok(o) => o,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    if opts.version {
        println!(
            "nsqlookupd v{} (nsq-rs {})",
            nsqlookupd::NSQ_COMPAT_VERSION,
            env!("CARGO_PKG_VERSION")
        );
        return std::process::ExitCode::SUCCESS;
    }
    let level = match opts.log_level.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" => "error",
        other => {
            eprintln!("nsqlookupd: invalid --log-level {other:?}");
            return std::process::ExitCode::from(1);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nsqlookupd: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(nsqlookupd::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nsqlookupd: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
