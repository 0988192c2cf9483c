#!/usr/bin/env bash
# nsqd CPU per delivered message (docs/BENCHMARKS.md, "nsqd memory and CPU per delivered
# message"). For each round and each binary (alternating): start nsqd on a fresh data dir
# (default --mem-queue-size unless $NSQD_ARGS says otherwise), create the topic and
# $CHANNELS channels, publish 200 B messages for $RUNFOR with nsq_bench writer (everything
# queues; or COUNT=n messages through HTTP /mpub, the same backlog for every binary), then read nsqd's utime+stime from /proc/PID/stat, drain every channel with one
# nsq_bench reader each (in parallel), and read it again. CPU per delivered message =
# (after - before) / (messages published x channels - messages left undelivered). Prints
# one line per run, then the medians (min-max).
# usage: scripts/bench_cpu.sh NSQ_BENCH ROUNDS NAME=NSQD_BINARY[@ENV=VALUE] ...
set -euo pipefail
BENCH=$1; ROUNDS=$2; shift 2
RUNFOR=${RUNFOR:-5s}; CHANNELS=${CHANNELS:-1}; SIZE=${SIZE:-200}
PORT=${PORT:-24552}
NSQD_ARGS=${NSQD_ARGS:-}
HZ=$(getconf CLK_TCK)
COUNT=${COUNT:-}
BATCH=$(mktemp /tmp/memcpu-batch.XXXXXX)
trap 'rm -f "$BATCH"' EXIT
python3 -c "import sys; sys.stdout.write(('m' * $SIZE + '\\n') * 10000)" >"$BATCH"
declare -A NS
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for r in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    name=${spec%%=*}; rest=${spec#*=}; bin=${rest%%@*}; envset=""
    [[ $rest == *@* ]] && envset=${rest#*@}
    data=$(mktemp -d /tmp/memcpu-cpu.XXXXXX)
    # shellcheck disable=SC2086
    env $envset "$bin" --data-path="$data" --tcp-address=127.0.0.1:$PORT \
      --http-address=127.0.0.1:$((PORT+1)) $NSQD_ARGS >"$data.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:$((PORT+1))/ping >/dev/null && break; sleep 0.1; done
    curl -sf -XPOST "http://127.0.0.1:$((PORT+1))/topic/create?topic=cpu" >/dev/null
    for c in $(seq 1 "$CHANNELS"); do
      curl -sf -XPOST "http://127.0.0.1:$((PORT+1))/channel/create?topic=cpu&channel=ch$c" >/dev/null
    done
    if [[ -n $COUNT ]]; then
      # The same backlog for every binary: COUNT messages in HTTP /mpub batches of 10,000.
      for _ in $(seq 1 $((COUNT / 10000))); do
        curl -sf --data-binary @"$BATCH" "http://127.0.0.1:$((PORT+1))/mpub?topic=cpu" >/dev/null
      done
    else
      "$BENCH" writer --nsqd-tcp-address=127.0.0.1:$PORT --topic=cpu --size="$SIZE" \
        --runfor="$RUNFOR" >/dev/null
    fi
    sleep 1
    published=$(curl -s "http://127.0.0.1:$((PORT+1))/stats?format=json&topic=cpu" | \
      python3 -c 'import json,sys; print(json.load(sys.stdin)["topics"][0]["message_count"])')
    before=$(cpu_ticks "$pid")
    readers=()
    for c in $(seq 1 "$CHANNELS"); do
      "$BENCH" reader --nsqd-tcp-address=127.0.0.1:$PORT --topic=cpu --channel=ch$c \
        --size="$SIZE" --runfor=600s --idle=2s >/dev/null &
      readers+=($!)
    done
    wait "${readers[@]}"
    after=$(cpu_ticks "$pid")
    left=$(curl -s "http://127.0.0.1:$((PORT+1))/stats?format=json&topic=cpu" | \
      python3 -c 'import json,sys; print(sum(c["depth"]+c["in_flight_count"] for c in json.load(sys.stdin)["topics"][0]["channels"]))')
    kill "$pid"; wait "$pid" || true
    rm -rf "$data" "$data.log"
    delivered=$((published * CHANNELS - left))
    ns=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$delivered" 'BEGIN {printf "%.0f", t / hz * 1e9 / n}')
    echo "round $r $name published=$published delivered=$delivered channels=$CHANNELS cpu_s=$(awk -v t=$((after - before)) -v hz="$HZ" 'BEGIN {print t / hz}') ns_per_delivered=$ns left=$left"
    NS[$name]="${NS[$name]:-} $ns"
  done
done
med() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " (" a[1] "-" a[NR] ")"}'; }
for spec in "$@"; do
  name=${spec%%=*}
  echo "median $name ns_per_delivered=$(med "${NS[$name]}")"
done
