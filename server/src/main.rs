//! nsqd binary: parse NSQ's flags (and --config), then run the daemon.

use clap::{CommandFactory, FromArgMatches};
use nsqd::options::{normalize_args, startup_warnings, validate, with_config_file, Options};

/// jemalloc as nsqd's allocator, for its heap profiler (/debug/pprof/heap; see pprof.rs).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once when it starts: heap profiling on, one sample per 512 KiB
/// allocated (2^19; cheap enough to leave on), and a background thread that returns freed
/// memory to the OS after `dirty_decay_ms` (1 s) even when nsqd is idle. `_RJEM_MALLOC_CONF` in
/// the environment overrides them.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals, unsafe_code)]
// SAFETY: jemalloc reads this NUL-terminated byte string once at start-up; it is never
// written and the name is the one jemalloc (tikv-jemalloc-sys, prefixed) looks up.
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = nsqd::pprof::JEMALLOC_CONF;

fn main() -> std::process::ExitCode {
    let args = normalize_args(std::env::args());
    let (args, mut warnings) = match with_config_file(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nsqd: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let parsed = Options::command()
        .try_get_matches_from(args)
        .and_then(|m| Options::from_arg_matches(&m).map(|o| (o, m)));
    let (opts, matches) = match parsed {
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
    if let Err(e) = edge::log::init(&opts.log_level, &opts.log_prefix, "sled=warn,hyper=warn") {
        eprintln!("nsqd: {e}");
        return std::process::ExitCode::from(1);
    }
    warnings.extend(startup_warnings(&opts, |id| {
        matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    }));
    tracing::info!(
        "nsqd v{} (nsq-rs {})",
        nsqd::nsqd::NSQ_COMPAT_VERSION,
        nsqd::nsqd::VERSION
    );
    tracing::info!("ID: {}", opts.node_id);
    for w in &warnings {
        tracing::warn!("{w}");
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
