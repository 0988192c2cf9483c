//! nsqadmin binary: parse NSQ's flags (and --config), then run.

use clap::Parser;
use nsqadmin::options::{config_spec, normalize_args, validate, Options};

fn main() -> std::process::ExitCode {
    let args = normalize_args(std::env::args());
    let (args, warnings) = match protocol::cli::with_config_file(args, &config_spec()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nsqadmin: {e}");
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
            "nsqadmin v{} (nsq-rs {})",
            nsqadmin::NSQ_COMPAT_VERSION,
            env!("CARGO_PKG_VERSION")
        );
        return std::process::ExitCode::SUCCESS;
    }
    if let Err(e) = validate(&opts) {
        eprintln!("nsqadmin: {e}");
        return std::process::ExitCode::from(1);
    }
    if let Err(e) = nsqadmin::logging::init(&opts.log_level, &opts.log_prefix) {
        eprintln!("nsqadmin: {e}");
        return std::process::ExitCode::from(1);
    }
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
            eprintln!("nsqadmin: cannot start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(nsqadmin::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("nsqadmin: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
