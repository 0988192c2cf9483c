//! nsqlookupd binary: parse NSQ's flags (and --config), then run.

use clap::Parser;
use nsqlookupd::Options;

fn main() -> std::process::ExitCode {
    // Go-style single-dash long flags (-tcp-address=...) work as with NSQ's binaries.
    let args = protocol::cli::normalize_args(std::env::args());
    let (args, mut warnings) =
        match protocol::cli::with_config_file(args, &nsqlookupd::config_spec()) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("nsqlookupd: {e}");
                return std::process::ExitCode::from(1);
            }
        };
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
    if let Err(e) = edge::log::init(&opts.log_level, &opts.log_prefix, "") {
        eprintln!("nsqlookupd: {e}");
        return std::process::ExitCode::from(1);
    }
    if opts.verbose.is_some() {
        warnings.push("--verbose is deprecated and has no effect; use --log-level".into());
    }
    tracing::info!(
        "nsqlookupd v{} (nsq-rs {})",
        nsqlookupd::NSQ_COMPAT_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    for w in &warnings {
        tracing::warn!("{w}");
    }
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
