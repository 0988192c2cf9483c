//! `/debug/pprof` on nsqd: the index, a CPU profile taken while nsqd works (gzip'd pprof
//! protobuf with samples), a second CPU profile refused while one runs, `seconds` bounded,
//! and the heap profile from jemalloc (gzip'd pprof with samples).

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nsq_blackbox_tests::{http_get, http_post, wait_until, Nsqd};
use pprof::protos::Message;

/// Gunzip a profile (checking the gzip magic first) and decode it as a pprof Profile.
fn decode_profile(body: &[u8]) -> pprof::protos::Profile {
    assert!(body.len() > 2, "empty profile");
    assert_eq!(&body[..2], &[0x1f, 0x8b], "not gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut raw)
        .expect("gunzip");
    pprof::protos::Profile::decode(raw.as_slice()).expect("a pprof Profile")
}

fn string_of(p: &pprof::protos::Profile, i: i64) -> &str {
    p.string_table
        .get(usize::try_from(i).unwrap_or(usize::MAX))
        .map(String::as_str)
        .unwrap_or("")
}

/// Keep nsqd busy (HTTP publishes) until `stop`, so the CPU profile has samples.
fn load(http: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let body = vec![b'x'; 4096];
        let mut n = 0u64;
        // Bounded: at most 60 s of publishing even if `stop` never comes.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            if let Ok((200, _)) = http_post(http, "/pub?topic=profiled", &body) {
                n += 1;
            }
        }
        n
    })
}

#[test]
fn index_lists_the_profiles() {
    let n = Nsqd::start(&[]).unwrap();
    for path in ["/debug/pprof/", "/debug/pprof"] {
        let (st, body) = http_get(n.http, path).unwrap();
        assert_eq!(st, 200);
        let page = String::from_utf8(body).unwrap();
        assert!(page.contains("profile?seconds="), "{page}");
        assert!(page.contains("heap"), "{page}");
    }
    let (st, body) = http_get(n.http, "/debug/pprof/cmdline").unwrap();
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("--data-path="));
    let (st, body) = http_get(n.http, "/debug/pprof/goroutine").unwrap();
    assert_eq!(st, 404);
    assert!(String::from_utf8_lossy(&body).contains("no equivalent"));
}

#[test]
fn cpu_profile_has_samples_and_runs_one_at_a_time() {
    let n = Nsqd::start(&[]).unwrap();
    for bad in ["0", "301", "x", "-2"] {
        let (st, body) = http_get(n.http, &format!("/debug/pprof/profile?seconds={bad}")).unwrap();
        assert_eq!(st, 400, "seconds={bad}");
        assert!(String::from_utf8_lossy(&body).contains("seconds must be"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = load(n.http, stop.clone());
    let http = n.http;
    let profiler =
        std::thread::spawn(move || http_get(http, "/debug/pprof/profile?seconds=4").unwrap());
    // Once nsqd says it has started, a second one is refused while the first runs.
    assert!(wait_until(Duration::from_secs(15), || n
        .daemon
        .log_text()
        .contains("CPU profile started")));
    let (st, body) = http_get(n.http, "/debug/pprof/profile?seconds=1").unwrap();
    assert_eq!(st, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("already being taken"));
    let (st, body) = profiler.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    assert!(published > 0);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let p = decode_profile(&body);
    assert!(!p.sample.is_empty(), "no samples in the CPU profile");
    assert!(p.sample.iter().any(|s| s.value.iter().any(|v| *v > 0)));
    assert!(!p.location.is_empty() && !p.function.is_empty());
    let types: Vec<&str> = p.sample_type.iter().map(|t| string_of(&p, t.ty)).collect();
    assert!(
        types.contains(&"cpu") || types.contains(&"samples"),
        "{types:?}"
    );
    // Once done, the next one is served again.
    let (st, _) = http_get(n.http, "/debug/pprof/profile?seconds=1").unwrap();
    assert_eq!(st, 200);
}

#[test]
fn heap_profile_from_jemalloc_has_samples() {
    let n = Nsqd::start(&["--mem-queue-size=100000"]).unwrap();
    // Allocate: ~40 MiB of queued messages kept in memory, well above jemalloc's 512 KiB
    // sampling interval.
    let body = vec![b'h'; 64 * 1024];
    for _ in 0..640 {
        let (st, _) = http_post(n.http, "/pub?topic=heap", &body).unwrap();
        assert_eq!(st, 200);
    }
    let (st, body) = http_get(n.http, "/debug/pprof/heap").unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let p = decode_profile(&body);
    assert!(!p.sample.is_empty(), "no samples in the heap profile");
    let types: Vec<&str> = p.sample_type.iter().map(|t| string_of(&p, t.ty)).collect();
    assert!(types.iter().any(|t| t.ends_with("space")), "{types:?}");
    let bytes: i64 = p.sample.iter().filter_map(|s| s.value.last()).sum();
    assert!(bytes > 1 << 20, "heap profile shows only {bytes} bytes");
}
