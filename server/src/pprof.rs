//! `/debug/pprof`: profiles of the running nsqd in pprof's format, behind NSQ's paths (NSQ
//! serves Go's net/http/pprof on nsqd's HTTP port), readable with `go tool pprof` or
//! `pprof`:
//!
//! - `/debug/pprof/profile?seconds=N`: a CPU profile sampled for N seconds (default 30,
//!   at most [`MAX_CPU_SECONDS`]) by the `pprof` crate (SIGPROF sampling, 100 Hz). One at a
//!   time: a second request while one runs is refused with 409.
//! - `/debug/pprof/heap`: the live heap, sampled by jemalloc's profiler (nsqd's allocator
//!   when built with the default `jemalloc` feature; one sample per 512 KiB allocated) and
//!   turned into pprof by `jemalloc_pprof`.
//! - `/debug/pprof/` (and `/debug/pprof`): an index of the above; `/debug/pprof/cmdline`.
//!
//! Go-runtime profiles (goroutine, block, mutex, threadcreate, trace) have no equivalent
//! here and answer 404 saying so. Both profiles are gzip'd protobuf, as Go serves them.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// jemalloc's options for nsqd (exported as `_rjem_malloc_conf` by main.rs). Freed pages
/// go back to the OS after 1 s (`dirty_decay_ms`, jemalloc's default is 10 s) and are not
/// kept as "muzzy" pages in between (`muzzy_decay_ms:0`): with 16 KiB bodies this cut the
/// peak RSS of two publish + drain rounds from 507 to 359 MiB (medians) and kept the RSS
/// 10 s after each drain at 45-48 MiB (docs/BENCHMARKS.md, "nsqd memory with 16 KiB and
/// 200 B bodies ..."). Heap profiling stays on: its sampler made no clear difference.
/// Two arenas (`narenas:2`; jemalloc's default is 4 per CPU, 8 here) because each arena
/// keeps its own freed-but-not-yet-returned pages: over a 2M x 200 B publish + drain the
/// peak RSS went from 46-52 MiB to 35-36 MiB (31-33 with one arena), publish and drain
/// rates within the noise (docs/BENCHMARKS.md, branch `meta`).
pub const JEMALLOC_CONF: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19,\
background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2\0";

/// The longest CPU profile one request may ask for.
pub const MAX_CPU_SECONDS: u64 = 300;
/// Go's default duration for /debug/pprof/profile.
const DEFAULT_CPU_SECONDS: u64 = 30;
/// Samples per second, as Go's runtime/pprof.
const CPU_FREQUENCY_HZ: i32 = 100;

/// Set while a CPU profile is being taken (the sampler is process-wide).
static CPU_PROFILE_RUNNING: AtomicBool = AtomicBool::new(false);

/// Clears [`CPU_PROFILE_RUNNING`] however the profile ends.
struct CpuSlot;

impl CpuSlot {
    fn take() -> Option<CpuSlot> {
        CPU_PROFILE_RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| CpuSlot)
    }
}

impl Drop for CpuSlot {
    fn drop(&mut self) {
        CPU_PROFILE_RUNNING.store(false, Ordering::Release);
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn profile_response(gz: Vec<u8>, name: &str) -> Response {
    let mut r = (StatusCode::OK, gz).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `seconds` from the query: absent = Go's 30; anything but 1..=MAX_CPU_SECONDS is refused.
pub fn parse_seconds(query: Option<&str>) -> Result<u64, String> {
    let raw = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "seconds")
        .map(|(_, v)| v);
    let Some(raw) = raw else {
        return Ok(DEFAULT_CPU_SECONDS);
    };
    match raw.parse::<u64>() {
        Ok(n) if (1..=MAX_CPU_SECONDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "seconds must be a whole number from 1 to {MAX_CPU_SECONDS} (got {raw:?})"
        )),
    }
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)?;
    enc.finish()
}

/// Sample the whole process for `seconds` and encode the profile (blocking: run it off
/// the async workers).
fn cpu_profile(seconds: u64) -> Result<Vec<u8>, String> {
    use ::pprof::protos::Message;
    let guard = ::pprof::ProfilerGuardBuilder::default()
        .frequency(CPU_FREQUENCY_HZ)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| format!("could not start the CPU profiler: {e}"))?;
    std::thread::sleep(Duration::from_secs(seconds));
    let report = guard
        .report()
        .build()
        .map_err(|e| format!("could not build the CPU profile: {e}"))?;
    drop(guard);
    let profile = report
        .pprof()
        .map_err(|e| format!("could not encode the CPU profile: {e}"))?;
    let mut raw = Vec::new();
    profile
        .encode(&mut raw)
        .map_err(|e| format!("could not encode the CPU profile: {e}"))?;
    gzip(&raw).map_err(|e| format!("could not compress the CPU profile: {e}"))
}

/// `GET /debug/pprof/profile?seconds=N`.
pub async fn profile(RawQuery(q): RawQuery) -> Response {
    let seconds = match parse_seconds(q.as_deref()) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some(slot) = CpuSlot::take() else {
        return text(
            StatusCode::CONFLICT,
            "a CPU profile is already being taken; try again when it has finished\n",
        );
    };
    tracing::info!(seconds, "CPU profile started");
    let result = tokio::task::spawn_blocking(move || {
        let r = cpu_profile(seconds);
        drop(slot);
        r
    })
    .await;
    match result {
        Ok(Ok(gz)) => profile_response(gz, "profile"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "CPU profile failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CPU profile task failed: {e}\n"),
        ),
    }
}

/// `GET /debug/pprof/heap`.
pub async fn heap() -> Response {
    match heap_profile().await {
        Ok(gz) => profile_response(gz, "heap"),
        Err((status, e)) => text(status, format!("{e}\n")),
    }
}

#[cfg(feature = "jemalloc")]
async fn heap_profile() -> Result<Vec<u8>, (StatusCode, String)> {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return Err((
            StatusCode::NOT_FOUND,
            "heap profiling is not available: jemalloc's profiler is off in this process".into(),
        ));
    };
    let mut ctl = ctl.lock().await;
    if !ctl.activated() {
        return Err((
            StatusCode::NOT_FOUND,
            "heap profiling is not active (jemalloc prof_active is false)".into(),
        ));
    }
    // Dumping walks jemalloc's sample table and writes a temporary file: off the workers.
    tokio::task::block_in_place(|| ctl.dump_pprof()).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not dump the heap profile: {e}"),
        )
    })
}

#[cfg(not(feature = "jemalloc"))]
async fn heap_profile() -> Result<Vec<u8>, (StatusCode, String)> {
    Err((
        StatusCode::NOT_FOUND,
        "heap profiling needs nsqd built with the `jemalloc` feature (the default)".into(),
    ))
}

/// `GET /debug/pprof/` (and `/debug/pprof`): what can be asked for.
pub async fn index() -> Response {
    let mut r = (
        StatusCode::OK,
        format!(
            "<!doctype html><html><head><title>/debug/pprof/</title></head><body>\
             <h1>/debug/pprof/</h1><p>Profiles of this nsqd in pprof format (gzip'd protobuf), \
             for <code>go tool pprof</code> or <code>pprof</code>.</p><table>\
             <tr><td><a href=\"profile?seconds={DEFAULT_CPU_SECONDS}\">profile</a></td>\
             <td>CPU profile; <code>?seconds=N</code> (1 to {MAX_CPU_SECONDS}, default \
             {DEFAULT_CPU_SECONDS}), one at a time</td></tr>\
             <tr><td><a href=\"heap\">heap</a></td><td>live heap, sampled by jemalloc</td></tr>\
             <tr><td><a href=\"cmdline\">cmdline</a></td><td>the command line</td></tr>\
             </table></body></html>"
        ),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// `GET /debug/pprof/cmdline`: the arguments, NUL-separated, as Go answers.
pub async fn cmdline() -> Response {
    let args: Vec<String> = std::env::args().collect();
    text(StatusCode::OK, args.join("\0"))
}

/// Any other `/debug/pprof/NAME`: Go-runtime profiles have no equivalent in nsq-rs.
pub async fn other(Path(name): Path<String>) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "unknown profile {name:?}: nsqd serves profile (CPU), heap and cmdline \
             (Go runtime profiles such as goroutine or block have no equivalent here)\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(parse_seconds(None), Ok(30));
        assert_eq!(parse_seconds(Some("debug=1")), Ok(30));
        assert_eq!(parse_seconds(Some("seconds=2")), Ok(2));
        assert_eq!(parse_seconds(Some("x=1&seconds=300")), Ok(300));
        for bad in [
            "seconds=0",
            "seconds=301",
            "seconds=-1",
            "seconds=1.5",
            "seconds=",
        ] {
            assert!(parse_seconds(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_cpu_profile_at_a_time() {
        let first = CpuSlot::take().expect("free at start");
        assert!(CpuSlot::take().is_none());
        drop(first);
        assert!(CpuSlot::take().is_some());
    }
}
