#!/usr/bin/env bash
# nsqd's resident memory with and without jemalloc (docs/BENCHMARKS.md, "nsqd memory").
# For each round and each binary (alternating): start nsqd on a fresh data dir, publish
# 16 KiB messages for $RUNFOR with nsq_bench (the channel exists, so everything queues),
# drain them with nsq_bench reader, then read VmHWM (peak RSS) and, 10 s after the drain,
# VmRSS (idle). REPEAT=n does n publish+drain rounds in the same nsqd (idle after each is
# printed; peak is over all of them); SIZE sets the body size (default 16384); PORT the
# TCP port (HTTP is PORT+1). Prints one line per run, then the medians.
# usage: scripts/bench_rss.sh NSQ_BENCH ROUNDS NAME=NSQD_BINARY[@ENV=VALUE] ...
set -euo pipefail
BENCH=$1; ROUNDS=$2; shift 2
RUNFOR=${RUNFOR:-10s}; SIZE=${SIZE:-16384}; REPEAT=${REPEAT:-1}
PORT=${PORT:-24350}
declare -A PEAK IDLE
for r in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    name=${spec%%=*}; rest=${spec#*=}; bin=${rest%%@*}; envset=""
    [[ $rest == *@* ]] && envset=${rest#*@}
    data=$(mktemp -d /tmp/rss-bench.XXXXXX)
    env $envset "$bin" --data-path="$data" --tcp-address=127.0.0.1:$PORT \
      --http-address=127.0.0.1:$((PORT+1)) --mem-queue-size=10000 >"$data.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:$((PORT+1))/ping >/dev/null && break; sleep 0.1; done
    curl -sf -XPOST "http://127.0.0.1:$((PORT+1))/topic/create?topic=rss" >/dev/null
    curl -sf -XPOST "http://127.0.0.1:$((PORT+1))/channel/create?topic=rss&channel=ch" >/dev/null
    idles=""
    for _ in $(seq 1 "$REPEAT"); do
      "$BENCH" writer --nsqd-tcp-address=127.0.0.1:$PORT --topic=rss --size="$SIZE" \
        --batch-size=20 --runfor="$RUNFOR" >/dev/null
      "$BENCH" reader --nsqd-tcp-address=127.0.0.1:$PORT --topic=rss --channel=ch \
        --size="$SIZE" --runfor=600s --idle=2s >/dev/null
      peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
      sleep 10
      idle=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
      idles="$idles $idle"
    done
    depth=$(curl -s "http://127.0.0.1:$((PORT+1))/stats?format=json&topic=rss" | \
      python3 -c 'import json,sys; t=json.load(sys.stdin)["topics"]; print(t[0]["channels"][0]["depth"] if t else -1)')
    kill "$pid"; wait "$pid" || true
    rm -rf "$data" "$data.log"
    echo "round $r $name peak_rss_kib=$peak idle_rss_kib=$idle idle_after_each_kib=[$idles ] channel_depth_after=$depth"
    PEAK[$name]="${PEAK[$name]:-} $peak"; IDLE[$name]="${IDLE[$name]:-} $idle"
  done
done
med() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " (" a[1] "-" a[NR] ")"}'; }
for spec in "$@"; do
  name=${spec%%=*}
  echo "median $name peak_rss_kib=$(med "${PEAK[$name]}") idle_rss_kib=$(med "${IDLE[$name]}")"
done
