#!/usr/bin/env bash
# NSQ 1.3 and nsq-rs side by side (issue 13; issue 12's p99 across segment rolls).
#
# usage: scripts/bench_vs_nsq.sh [SCENARIO...]     (default: all, in the order below)
#   a  PUB 200 B, NSQ's bench_writer and nsq_bench writer, --mem-queue-size default and 0
#      (+ h: disk bytes per message after bench_writer's run)
#   b  SUB one channel with NSQ's procedure (bench_reader after bench_writer), same runs as a,
#      server CPU per delivered message from /proc/PID/stat around the read
#   c  fan-out 4 channels: nsq_bench reader --channels 4 over a backlog, server CPU and msgs/s
#   d  16 KiB publish + drain, 3 rounds in one server life: msgs/s, MB/s, peak and idle RSS
#   e  peak RSS over a publish + drain of $E_COUNT 200 B messages (default 10M); servers
#      $E_KINDS (default "nsq ours"; "nsq old ours" adds the build $OLD)
#   f  latency at fixed rates (20k, 100k msgs/s default setting; 100k at --mem-queue-size=0
#      with 1 MiB segments, also against the pre-roll-work build $OLD when it exists)
#   g  restart with a 10M backlog after SIGTERM and after kill -9 ($G_HOW, default
#      "term kill"); shutdown and restart with 2,000 topics (G_TOPICS=0 skips it); servers
#      $G_KINDS (default "nsq ours"); G_COLD=1 drops the page cache (as root) between the
#      stop and the restart, so the restart reads the backlog's files from the disk
# (a and b share runs, so "a" runs both; h comes out of a.)
#
# Each scenario alternates NSQ and nsq-rs, $PAIRS pairs (default 3), a fresh data dir per
# server life, on 127.0.0.1:$PORT (TCP) and $PORT+1 (HTTP), default 24450. Every run prints
# one "RESULT <scenario> <server> key=value ..." line; the end prints, per scenario and
# metric, "median (min-max)" for each server and the ratio ours/NSQ.
# Needs: a release build (cargo build --release -p nsqd -p nsq-tools), python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
REF=${REF:-/work/shared/reference/nsq-v1.3.0}
TARGET=${CARGO_TARGET_DIR:-target}
OURS=${OURS:-$TARGET/release/nsqd}
BENCH=${BENCH:-$TARGET/release/nsq_bench}
OLD=${OLD:-/tmp/bench-old/nsqd}
PAIRS=${PAIRS:-3}
PORT=${PORT:-24450}
RUNFOR=${RUNFOR:-10s}
READFOR=${READFOR:-5s}
E_COUNT=${E_COUNT:-10000000}
G_COUNT=${G_COUNT:-10000000}
TMPBASE=${TMPBASE:-/tmp}
OUT=${OUT:-$TMPBASE/bench_vs_nsq.$$.results}
TCP=127.0.0.1:$PORT
HTTP=127.0.0.1:$((PORT + 1))
: >"$OUT"

for b in "$REF/nsqd" "$REF/bench_writer" "$REF/bench_reader" "$OURS" "$BENCH"; do
  [[ -x $b ]] || { echo "missing $b" >&2; exit 1; }
done

bin_of() {
  case $1 in
    nsq) echo "$REF/nsqd" ;;
    ours) echo "$OURS" ;;
    old) echo "$OLD" ;;
  esac
}

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
result() { echo "RESULT $*" | tee -a "$OUT"; }

PID=""
DATA=""
# start_server KIND [DATA_DIR] [nsqd flags...]: fresh data dir unless one is given
start_server() {
  local kind=$1; shift
  if [[ ${1:-} == /* ]]; then DATA=$1; shift; else DATA=$(mktemp -d "$TMPBASE/bvn.XXXXXX"); fi
  "$(bin_of "$kind")" --data-path="$DATA" --tcp-address="$TCP" --http-address="$HTTP" \
    --log-level=warn "$@" >>"$DATA.log" 2>&1 &
  PID=$!
  for _ in $(seq 300); do
    curl -sf "http://$HTTP/ping" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "$kind did not answer /ping; log:" >&2; cat "$DATA.log" >&2; exit 1
}
stop_server() {
  [[ -n $PID ]] && { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  PID=""
}
clean() { rm -rf "$DATA" "$DATA.log"; DATA=""; }
trap 'stop_server; [[ -n $DATA ]] && clean; true' EXIT
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
post() { curl -sf -XPOST "http://$HTTP$1" >/dev/null; }
# field after a label in a line, e.g. num "= 123 msgs/s" -> value before "msgs/s"
before() { grep -o "[0-9.]* $1" <<<"$2" | head -1 | awk '{print $1}'; }
# bench_* (Go) lines: "duration: 10.0s - 12.3mb/s - 64000.0ops/s - 15.6us/op"
go_ops() { grep -o '[0-9.]*ops/s' <<<"$1" | head -1 | sed 's/ops\/s//'; }
go_secs() {
  local d; d=$(grep -o 'duration: [^ ]*' <<<"$1" | head -1 | awk '{print $2}')
  python3 -c 'import re,sys
d=sys.argv[1]; t=0.0
for v,u in re.findall(r"([0-9.]+)(ms|µs|us|ns|h|m|s)", d):
    t+=float(v)*{"h":3600,"m":60,"s":1,"ms":1e-3,"us":1e-6,"µs":1e-6,"ns":1e-9}[u]
print(t)' "$d"
}

# a + b + h: NSQ's bench procedure, then nsq_bench writer on a fresh server
scenario_a() {
  for mq in 10000 0; do
    for pair in $(seq "$PAIRS"); do
      for kind in nsq ours; do
        log "a/b mq=$mq pair $pair $kind"
        start_server "$kind" --mem-queue-size=$mq
        w=$("$REF/bench_writer" --nsqd-tcp-address="$TCP" --runfor="$RUNFOR" --size=200 --batch-size=200 2>&1)
        ops=$(go_ops "$w"); secs=$(go_secs "$w")
        n=$(python3 -c "print(round($ops*$secs))")
        sync
        bytes=$(du -sb "$DATA" | awk '{print $1}')
        result "a.pub.bench_writer.mq$mq $kind msgs_per_s=$ops"
        result "h.disk_bytes_per_msg.mq$mq $kind bytes_per_msg=$(python3 -c "print(round($bytes/max($n,1),1))") msgs=$n"
        c0=$(cpu_ticks "$PID")
        r=$("$REF/bench_reader" --nsqd-tcp-address="$TCP" --runfor="$READFOR" --size=200 --rdy=2500 2>&1)
        c1=$(cpu_ticks "$PID")
        rops=$(go_ops "$r"); rsecs=$(go_secs "$r")
        rn=$(python3 -c "print(round($rops*$rsecs))")
        result "b.sub.bench_reader.mq$mq $kind msgs_per_s=$rops server_cpu_us_per_msg=$(python3 -c "print(round(($c1-$c0)/100*1e6/max($rn,1),3))") delivered=$rn"
        stop_server; clean
        start_server "$kind" --mem-queue-size=$mq
        w=$("$BENCH" writer --nsqd-tcp-address="$TCP" --runfor="$RUNFOR" --size=200 --batch-size=200 --server-pid="$PID")
        result "a.pub.nsq_bench.mq$mq $kind msgs_per_s=$(before 'msgs/s' "$w") server_cpu_us_per_msg=$(before 'us/msg' "$w")"
        stop_server; clean
      done
    done
  done
}
scenario_b() { scenario_a; }
scenario_h() { scenario_a; }

# c: fan-out over 4 channels, same backlog for both servers
scenario_c() {
  local count=${C_COUNT:-2000000}
  for mq in ${C_MQ:-10000}; do
    for pair in $(seq "$PAIRS"); do
      for kind in nsq ours; do
        log "c mq=$mq pair $pair $kind"
        start_server "$kind" --mem-queue-size=$mq
        post "/topic/create?topic=sub_bench"
        for i in 0 1 2 3; do post "/channel/create?topic=sub_bench&channel=ch$i"; done
        "$BENCH" writer --nsqd-tcp-address="$TCP" --runfor=120s --count="$count" --size=200 --batch-size=200 >/dev/null
        r=$("$BENCH" reader --nsqd-tcp-address="$TCP" --channels=4 --concurrency=1 --runfor=300s --idle=2s --size=200 --server-pid="$PID")
        total=$(grep 'conns' <<<"$r")
        result "c.fanout4.mq$mq $kind msgs_per_s=$(before 'msgs/s' "$total") server_cpu_us_per_msg=$(before 'us/msg' "$r") delivered=$(before 'msgs in' "$total")"
        stop_server; clean
      done
    done
  done
}

# d: 16 KiB bodies, 3 write/drain rounds in one server life
scenario_d() {
  for pair in $(seq "$PAIRS"); do
    for kind in nsq ours; do
      log "d pair $pair $kind"
      start_server "$kind"
      post "/topic/create?topic=big"
      post "/channel/create?topic=big&channel=ch"
      for round in 1 2 3; do
        w=$("$BENCH" writer --nsqd-tcp-address="$TCP" --topic=big --runfor="${D_RUNFOR:-5s}" --size=16384 --batch-size=20 --server-pid="$PID" --sample-rss=50ms)
        r=$("$BENCH" reader --nsqd-tcp-address="$TCP" --topic=big --channel=ch --runfor=120s --idle=2s --size=16384 --server-pid="$PID" --sample-rss=50ms --rss-after=10s)
        peak=$(grep -o 'sampled peak VmRSS [0-9]*' <<<"$w"$'\n'"$r" | awk '{print $4}' | sort -n | tail -1)
        idle=$(grep -o 'VmRSS [0-9]* KiB [0-9]*s after' <<<"$r" | awk '{print $2}')
        result "d.16k.round$round $kind msgs_per_s=$(before 'msgs/s' "$w") MB_per_s=$(before 'MB/s' "$w") peak_rss_mib=$((peak / 1024)) idle_rss_10s_mib=$((idle / 1024))"
      done
      stop_server; clean
    done
  done
}

# e: peak RSS (VmHWM of a fresh server) over a publish + drain of E_COUNT messages
scenario_e() {
  for pair in $(seq "$PAIRS"); do
    for kind in ${E_KINDS:-nsq ours}; do
      log "e pair $pair $kind ($E_COUNT msgs)"
      start_server "$kind"
      post "/topic/create?topic=sub_bench"
      post "/channel/create?topic=sub_bench&channel=ch"
      "$BENCH" writer --nsqd-tcp-address="$TCP" --runfor=600s --count="$E_COUNT" --size=200 --batch-size=200 >/dev/null
      r=$("$BENCH" reader --nsqd-tcp-address="$TCP" --runfor=600s --idle=2s --size=200)
      result "e.peak_rss.$E_COUNT $kind peak_rss_mib=$(($(kib "$PID" VmHWM) / 1024)) delivered=$(before 'msgs in' "$r")"
      stop_server; clean
    done
  done
}

latency_run() { # kind label flags...
  local kind=$1 label=$2 rate=$3; shift 3
  start_server "$kind" "$@"
  l=$("$BENCH" latency --nsqd-tcp-address="$TCP" --topic=lat --channel=lat --rate="$rate" --runfor="${F_RUNFOR:-10s}" --size=200 --server-pid="$PID")
  p99=$(grep -o 'p99 [0-9.]* us' <<<"$l" | awk '{print $2}')
  max=$(grep -o 'max [0-9.]* us' <<<"$l" | awk '{print $2}')
  p50=$(grep -o 'p50 [0-9.]* us' <<<"$l" | awk '{print $2}')
  result "$label $kind p50_us=$p50 p99_us=$p99 max_us=$max achieved_msgs_per_s=$(before 'msgs/s,' "$l") late=$(grep -o "late [0-9]*" <<<"$l" | awk "{print \$2}") lost=$(grep -o 'lost [0-9]*' <<<"$l" | awk '{print $2}')"
  stop_server; clean
}

# f: publish-to-receive latency at fixed rates
scenario_f() {
  local kinds="nsq ours"
  for pair in $(seq "$PAIRS"); do
    for rate in 20000 100000; do
      for kind in $kinds; do
        log "f rate=$rate pair $pair $kind"
        latency_run "$kind" "f.latency.$rate.mqdefault" "$rate"
      done
    done
    local roll="nsq ours"
    [[ -x $OLD ]] && roll="nsq ours old"
    for kind in $roll; do
      log "f roll pair $pair $kind"
      latency_run "$kind" "f.latency.100000.mq0.roll1MiB" 100000 --mem-queue-size=0 --max-bytes-per-file=1048576
    done
  done
}

# g: restart with a backlog, shutdown and restart with 2,000 topics
scenario_g() {
  for pair in $(seq "$PAIRS"); do
    for how in ${G_HOW:-term kill}; do
      for kind in ${G_KINDS:-nsq ours}; do
        log "g restart after $how pair $pair $kind ($G_COUNT msgs)"
        start_server "$kind"
        post "/topic/create?topic=sub_bench"
        post "/channel/create?topic=sub_bench&channel=ch"
        "$BENCH" writer --nsqd-tcp-address="$TCP" --runfor=600s --count="$G_COUNT" --size=200 --batch-size=200 >/dev/null
        local t0; t0=$(date +%s%N)
        if [[ $how == term ]]; then kill -TERM "$PID"; else kill -9 "$PID"; fi
        wait "$PID" 2>/dev/null || true
        local stop_ms=$((($(date +%s%N) - t0) / 1000000)); PID=""
        if [[ -n ${G_COLD:-} ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
        s=$("$BENCH" startup --http-address="$HTTP" --nsqd-tcp-address="$TCP" --topic=sub_bench --channel=ch --stop=term \
          -- "$(bin_of "$kind")" --data-path="$DATA" --tcp-address="$TCP" --http-address="$HTTP" --log-level=warn)
        result "g.restart_after_$how${G_COLD:+.cold}.$G_COUNT $kind ping_ms=$(grep -o 'ping_ms=[0-9.]*' <<<"$s" | cut -d= -f2) first_msg_ms=$(grep -o 'first_msg_ms=[0-9.]*' <<<"$s" | cut -d= -f2) stop_before_ms=$stop_ms"
        clean
      done
    done
    [[ ${G_TOPICS:-1} == 0 ]] && continue
    for kind in ${G_KINDS:-nsq ours}; do
      log "g 2000 topics pair $pair $kind"
      DATA=$(mktemp -d "$TMPBASE/bvn.XXXXXX")
      local cmd=("$(bin_of "$kind")" --data-path="$DATA" --tcp-address="$TCP" --http-address="$HTTP" --log-level=warn)
      s1=$("$BENCH" startup --http-address="$HTTP" --nsqd-tcp-address="$TCP" --populate-topics=2000 --populate-messages=10 --stop=term --timeout=300s -- "${cmd[@]}")
      s2=$("$BENCH" startup --http-address="$HTTP" --nsqd-tcp-address="$TCP" --stop=term --timeout=300s -- "${cmd[@]}")
      result "g.topics2000 $kind shutdown_ms=$(grep -o 'stop_ms=[0-9.]*' <<<"$s1" | cut -d= -f2) restart_ping_ms=$(grep -o 'ping_ms=[0-9.]*' <<<"$s2" | cut -d= -f2) disk_mib=$(($(du -sb "$DATA" | awk '{print $1}') / 1048576))"
      clean
    done
  done
}

summary() {
  python3 - "$OUT" <<'EOF'
import sys, statistics, collections
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) < 4 or p[0] != "RESULT":
        continue
    scen, kind = p[1], p[2]
    for kv in p[3:]:
        k, _, v = kv.partition("=")
        try:
            vals[(scen, k, kind)].append(float(v))
        except ValueError:
            pass
def fmt(x):
    return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
keys = sorted({(s, k) for (s, k, _) in vals})
print("SUMMARY scenario metric | nsq median (min-max) | ours median (min-max) | ratio ours/nsq | old median (min-max)")
for s, k in keys:
    cells, med = [], {}
    for kind in ("nsq", "ours", "old"):
        v = vals.get((s, k, kind))
        if v:
            med[kind] = statistics.median(v)
            cells.append(f"{fmt(med[kind])} ({fmt(min(v))}-{fmt(max(v))}) n={len(v)}")
        else:
            cells.append("-")
    ratio = f"{med['ours'] / med['nsq']:.2f}" if med.get("nsq") and "ours" in med else "-"
    print(f"SUMMARY {s} {k} | {cells[0]} | {cells[1]} | {ratio} | {cells[2]}")
EOF
}

scenarios=("$@")
[[ ${#scenarios[@]} -eq 0 ]] && scenarios=(f a c g d e)
log "results in $OUT; nsqd $OURS ($(git rev-parse --short HEAD 2>/dev/null || echo '?')), pairs $PAIRS"
done_a=""
for s in "${scenarios[@]}"; do
  case $s in
    a|b|h) [[ -n $done_a ]] && continue; done_a=1; scenario_a ;;
    c|d|e|f|g) "scenario_$s" ;;
    *) echo "unknown scenario $s (a b c d e f g h)" >&2; exit 2 ;;
  esac
done
summary
