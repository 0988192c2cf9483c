#!/usr/bin/env bash
# Bytes on disk per message and PUB rate (docs/BENCHMARKS.md, "Record header v2").
# For each round and each binary (alternating): start nsqd with --mem-queue-size=0 on a
# fresh data dir, create the topic (no channel: every message goes to disk), publish
# $SIZE-byte messages for $RUNFOR with nsq_bench writer, read the topic's message count,
# stop nsqd, and measure the topic's files: nsq-rs segments (*.seg) and its whole topic
# directory (summaries included); NSQ's diskqueue data files (*.diskqueue.NNNNNN.dat).
# Prints one line per run, then the medians.
# usage: scripts/bench_disk.sh NSQ_BENCH ROUNDS NAME=NSQD_BINARY ...
set -euo pipefail
BENCH=$1; ROUNDS=$2; shift 2
RUNFOR=${RUNFOR:-10s}; SIZE=${SIZE:-200}; BATCH=${BATCH:-200}
PORT=${PORT:-24750}
declare -A RATE PERMSG
for r in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    name=${spec%%=*}; bin=${spec#*=}
    data=$(mktemp -d /tmp/disk-bench.XXXXXX)
    "$bin" --data-path="$data" --tcp-address=127.0.0.1:$PORT \
      --http-address=127.0.0.1:$((PORT+1)) --mem-queue-size=0 >"$data.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:$((PORT+1))/ping >/dev/null && break; sleep 0.1; done
    curl -sf -XPOST "http://127.0.0.1:$((PORT+1))/topic/create?topic=disk" >/dev/null
    out=$("$BENCH" writer --nsqd-tcp-address=127.0.0.1:$PORT --topic=disk --size="$SIZE" \
      --batch-size="$BATCH" --runfor="$RUNFOR")
    rate=$(sed -n 's/.* = \([0-9]*\) msgs\/s.*/\1/p' <<<"$out")
    count=$(curl -s "http://127.0.0.1:$((PORT+1))/stats?format=json&topic=disk" | \
      python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("data",d); print(d["topics"][0]["message_count"])')
    kill "$pid"; wait "$pid" || true
    if [ -d "$data/topics" ]; then
      bytes=$(find "$data/topics" -name '*.seg' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
      all=$(du -sb "$data/topics" | cut -f1)
    else
      bytes=$(find "$data" -name '*.diskqueue.[0-9]*.dat' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
      all=$bytes
    fi
    per=$(awk -v b="$bytes" -v n="$count" 'BEGIN {printf "%.2f", b/n}')
    perall=$(awk -v b="$all" -v n="$count" 'BEGIN {printf "%.2f", b/n}')
    rm -rf "$data" "$data.log"
    echo "round $r $name msgs=$count pub_msgs_per_s=$rate data_bytes=$bytes bytes_per_msg=$per topic_dir_bytes_per_msg=$perall"
    RATE[$name]="${RATE[$name]:-} $rate"; PERMSG[$name]="${PERMSG[$name]:-} $per"
  done
done
med() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for spec in "$@"; do
  name=${spec%%=*}
  echo "median $name pub_msgs_per_s=$(med "${RATE[$name]}") bytes_per_msg=$(med "${PERMSG[$name]}")"
done
