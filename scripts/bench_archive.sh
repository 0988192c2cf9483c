#!/bin/bash
# Replay from disk and nsq_to_file direct-vs-TCP, release build of the archive branch.
set -u
R=/work/wt-archive/target/release
B=/tmp/archive_bench
D=$B/data
H=127.0.0.1:24251
rm -rf $D $B/out*; mkdir -p $D
$R/nsqd --tcp-address=127.0.0.1:24250 --http-address=$H --https-address=127.0.0.1:24252 \
  --data-path=$D --log-level=warn --retention-time=24h --mem-queue-size=0 > $B/nsqd.log 2>&1 &
NSQD=$!
sleep 1
curl -s -XPOST "$H/topic/create?topic=sub_bench" >/dev/null
curl -s -XPOST "$H/channel/create?topic=sub_bench&channel=ch" >/dev/null
$R/nsq_bench writer --nsqd-tcp-address=127.0.0.1:24250 --runfor=${RUNFOR:-8s} --size=200 --batch-size=200 2>&1 | tail -2
curl -s "$H/stats?format=json&topic=sub_bench" | python3 -c 'import json,sys; t=json.load(sys.stdin)["topics"][0]; print("stored:", t["message_count"], "disk_bytes:", t.get("disk_bytes"))'
echo "== live drain (not measured)"
$R/nsq_bench reader --nsqd-tcp-address=127.0.0.1:24250 --rdy=2500 --runfor=300s --size=200 2>&1 | tail -1
for i in 1 2 3; do
  echo "== replay $i: rewind to earliest"
  curl -s -XPOST "$H/channel/rewind?topic=sub_bench&channel=ch&to=earliest"; echo
  $R/nsq_bench reader --nsqd-tcp-address=127.0.0.1:24250 --rdy=2500 --runfor=300s --size=200 2>&1 | tail -1
done
# nsq_to_file: a second topic, the same data read both ways.
$R/nsq_bench writer --nsqd-tcp-address=127.0.0.1:24250 --topic=arch_bench --runfor=${ARCH_RUNFOR:-2s} --size=200 --batch-size=200 2>&1 | tail -1
N=$(curl -s "$H/stats?format=json&topic=arch_bench" | python3 -c 'import json,sys; print(json.load(sys.stdin)["topics"][0]["message_count"])')
echo "arch_bench messages: $N"
now() { date +%s.%N; }
for i in 1 2 3; do
  rm -rf $B/out*
  s=$(now)
  $R/nsq_to_file --data-path=$D --topic=arch_bench --channel=direct$i --output-dir=$B/outd \
     --exit-at-end --max-in-flight=2500 --log-level=warn
  e=$(now)
  lines=$(cat $B/outd/* | wc -l)
  echo "direct $i: $lines lines in $(echo "$e - $s" | bc) s = $(echo "$lines / ($e - $s)" | bc) msgs/s"
  rm -rf $B/out*
  curl -s -XPOST "$H/channel/create?topic=arch_bench&channel=tcp$i&start=earliest" >/dev/null
  s=$(now)
  $R/nsq_to_file --nsqd-tcp-address=127.0.0.1:24250 --topic=arch_bench --channel=tcp$i \
     --output-dir=$B/outt --max-in-flight=2500 --log-level=warn &
  P=$!
  while true; do
    st=$(curl -s "$H/stats?format=json&topic=arch_bench&channel=tcp$i" | python3 -c 'import json,sys; c=json.load(sys.stdin)["topics"][0]["channels"][0]; print(c["depth"]+c["in_flight_count"])')
    [ "$st" = "0" ] && break
    sleep 0.05
  done
  e=$(now)
  kill -TERM $P; wait $P
  lines=$(cat $B/outt/* | wc -l)
  echo "tcp $i: $lines lines in $(echo "$e - $s" | bc) s = $(echo "$lines / ($e - $s)" | bc) msgs/s"
  curl -s -XPOST "$H/channel/delete?topic=arch_bench&channel=tcp$i" >/dev/null
  $R/nsq_to_file --data-path=$D --topic=arch_bench --channel=direct$i --unregister >/dev/null
done
kill -TERM $NSQD; wait $NSQD
