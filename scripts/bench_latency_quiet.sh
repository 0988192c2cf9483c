#!/bin/bash
# Fixed-rate publish-to-receive latency, ROUNDS rounds (default 3) of: default setting at 20k
# and 100k msgs/s; --mem-queue-size=0 at 100k with 1 MiB segments (rolls) and with 100 MiB.
# One build: B=dir with nsqd and nsq_bench. Several builds, alternating within each round:
# BUILDS="name=dir name=dir ..." (each dir's nsqd; the latency tool is $BENCH, default the
# first build's nsq_bench). Ports PORT (or P) and PORT+1 (default 24850). SCENARIOS picks a
# subset of: default-20k default-100k mq0-100k-1MiB mq0-100k-100MiB (ONLY_DEFAULT=1 is the
# first two). DATA_PREFIX sets where the data directories go (default /tmp/lat).
B=${B:-target/release}; P=${PORT:-${P:-24850}}; H=$((P + 1))
BUILDS=${BUILDS:-"build=$B"}
first=${BUILDS%% *}; BENCH=${BENCH:-${first#*=}/nsq_bench}
if [[ -n ${ONLY_DEFAULT:-} ]]; then SCENARIOS=${SCENARIOS:-"default-20k default-100k"}; fi
SCENARIOS=${SCENARIOS:-"default-20k default-100k mq0-100k-1MiB mq0-100k-100MiB"}
run() {
  local label=$1 scenario=$2 dir=$3 rate=$4; shift 4
  [[ " $SCENARIOS " == *" $scenario "* ]] || return 0
  D=$(mktemp -d "${DATA_PREFIX:-/tmp/lat}.XXXX")
  $dir/nsqd --data-path=$D --tcp-address=127.0.0.1:$P --http-address=127.0.0.1:$H --log-level=warn "$@" > $D.log 2>&1 & pid=$!
  for _ in $(seq 100); do curl -sf 127.0.0.1:$H/ping >/dev/null && break; sleep 0.1; done
  out=$($BENCH latency --nsqd-tcp-address=127.0.0.1:$P --rate=$rate --runfor=10s --size=200 2>&1 | grep -v "^$" | tr '\n' ' ')
  segs=$(find $D/topics -name '*.seg' | wc -l)
  kill $pid; wait $pid; rm -rf $D $D.log
  echo "$label $scenario segs_left=$segs | $out"
}
for i in $(seq 1 "${ROUNDS:-3}"); do
  for spec in $BUILDS; do
    name=${spec%%=*}; dir=${spec#*=}
    run "r$i $name" default-20k "$dir" 20000
    run "r$i $name" default-100k "$dir" 100000
    run "r$i $name" mq0-100k-1MiB "$dir" 100000 --mem-queue-size=0 --max-bytes-per-file=1048576
    run "r$i $name" mq0-100k-100MiB "$dir" 100000 --mem-queue-size=0
  done
done
