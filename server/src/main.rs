//! nsqd binary: parse NSQ's flags (and --config), then run the daemon.

use clap::Parser;
use nsqd::options::{normalize_args, validate, with_config_file, Options};

fn main() -> std::process::ExitCode {
    let args = normalize_args(std::env::args());
    let args = match with_config_file(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nsqd: {e}");
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
            "nsqd v{} (nsq-rs {}, NSQ protocol compatible)",
            nsqd::nsqd::NSQ_COMPAT_VERSION,
            nsqd::nsqd::VERSION
        );
        return std::process::ExitCode::SUCCESS;
    }
    if let Err(e) = validate(&opts) {
        eprintln!("nsqd: {e}");
        return std::process::ExitCode::from(1);
    }
    if let Err(e) = nsqd::logging::init(&opts.log_level, &opts.log_prefix) {
        eprintln!("nsqd: {e}");
        return std::process::ExitCode::from(1);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nsqd: cannot start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(nsqd::server::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("nsqd: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
