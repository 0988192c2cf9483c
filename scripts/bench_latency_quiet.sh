#!/bin/bash
# Fixed-rate publish-to-receive latency, 3 rounds (ROUNDS=n) of: default setting at 20k and
# 100k msgs/s; --mem-queue-size=0 at 100k with 1 MiB segments (rolls) and with 100 MiB
# (ONLY_DEFAULT=1 skips these two).
# One build: B=dir with nsqd and nsq_bench. Several builds, alternating within each round:
# BUILDS="name=dir name=dir ..." (each dir's nsqd; the latency tool is $BENCH, default
# $B/nsq_bench or the first build's). Ports PORT and PORT+1 (default 24850).
B=${B:-target/release}; P=${PORT:-24850}; H=$((P + 1))
BUILDS=${BUILDS:-"build=$B"}
first=${BUILDS%% *}; BENCH=${BENCH:-${first#*=}/nsq_bench}
run() {
  local label=$1 dir=$2 rate=$3; shift 3
  D=$(mktemp -d /tmp/lat.XXXX)
  $dir/nsqd --data-path=$D --tcp-address=127.0.0.1:$P --http-address=127.0.0.1:$H --log-level=warn "$@" > $D.log 2>&1 & pid=$!
  for _ in $(seq 100); do curl -sf 127.0.0.1:$H/ping >/dev/null && break; sleep 0.1; done
  out=$($BENCH latency --nsqd-tcp-address=127.0.0.1:$P --rate=$rate --runfor=10s --size=200 2>&1 | grep -v "^$" | tr '\n' ' ')
  segs=$(find $D/topics -name '*.seg' | wc -l)
  kill $pid; wait $pid; rm -rf $D $D.log
  echo "$label segs_left=$segs | $out"
}
for i in $(seq 1 "${ROUNDS:-3}"); do
  for spec in $BUILDS; do
    name=${spec%%=*}; dir=${spec#*=}
    run "r$i $name default-20k" "$dir" 20000
    run "r$i $name default-100k" "$dir" 100000
    if [[ -z ${ONLY_DEFAULT:-} ]]; then
      run "r$i $name mq0-100k-1MiB" "$dir" 100000 --mem-queue-size=0 --max-bytes-per-file=1048576
      run "r$i $name mq0-100k-100MiB" "$dir" 100000 --mem-queue-size=0
    fi
  done
done
