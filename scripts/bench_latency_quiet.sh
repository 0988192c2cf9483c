#!/bin/bash
# Fixed-rate publish-to-receive latency of one nsqd build (B=dir with nsqd and nsq_bench), 3 rounds of:
# default setting at 20k and 100k msgs/s; --mem-queue-size=0 at 100k with 1 MiB segments (rolls) and with 100 MiB.
# P sets the TCP port (HTTP is P+1); DATA_PREFIX the data directories (default /tmp/lat); ROUNDS the number of rounds (default 3); SCENARIOS a
# subset of the scenario labels to run (default all: default-20k default-100k mq0-100k-1MiB
# mq0-100k-100MiB).
B=${B:-target/release}; P=${P:-24850}; H=$((P+1)); ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"default-20k default-100k mq0-100k-1MiB mq0-100k-100MiB"}
run() {
  local label=$1 rate=$2; shift 2
  [[ " $SCENARIOS " == *" ${label#* } "* ]] || return 0
  D=$(mktemp -d "${DATA_PREFIX:-/tmp/lat}.XXXX")
  $B/nsqd --data-path=$D --tcp-address=127.0.0.1:$P --http-address=127.0.0.1:$H --log-level=warn "$@" > $D.log 2>&1 & pid=$!
  for _ in $(seq 100); do curl -sf 127.0.0.1:$H/ping >/dev/null && break; sleep 0.1; done
  out=$($B/nsq_bench latency --nsqd-tcp-address=127.0.0.1:$P --rate=$rate --runfor=10s --size=200 2>&1 | grep -v "^$" | tr '\n' ' ')
  segs=$(find $D/topics -name '*.seg' | wc -l)
  kill $pid; wait $pid; rm -rf $D $D.log
  echo "$label segs_left=$segs | $out"
}
for i in $(seq 1 "$ROUNDS"); do
  run "r$i default-20k" 20000
  run "r$i default-100k" 100000
  run "r$i mq0-100k-1MiB" 100000 --mem-queue-size=0 --max-bytes-per-file=1048576
  run "r$i mq0-100k-100MiB" 100000 --mem-queue-size=0
done
