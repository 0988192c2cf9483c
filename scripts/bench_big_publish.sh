#!/usr/bin/env bash
# 16 KiB publish (issue 13): for each round and each nsqd binary, alternating: a fresh data
# directory, topic `big` and channel `ch` created, then `nsq_bench writer --size=16384
# --batch-size=20 --runfor=5s` (2 connections); prints msgs/s, nsqd CPU us/msg and VmHWM.
# usage: scripts/bench_big_publish.sh ROUNDS name=NSQD ...   (BENCH: nsq_bench, PORT;
# DROP_CACHES=1: sync and drop the page cache before each run, as root, so every run starts
# with the same free memory instead of reclaiming what the one before left; SIZE, BATCH,
# RUNFOR: message size (16384), MPUB batch (20) and run length (5s); FLAGS: more nsqd flags,
# e.g. --mem-queue-size=0)
R=$1; shift
PORT=${PORT:-25600}; BENCH=${BENCH:-target/release/nsq_bench}
SIZE=${SIZE:-16384}; BATCH=${BATCH:-20}; RUNFOR=${RUNFOR:-5s}
# ROTATE=1: round i starts with the i-th build (the run right after NSQ's measured slower,
# whichever build it was: the order must not favour one).
builds=("$@")
for i in $(seq $R); do
order=("${builds[@]}")
if [[ -n ${ROTATE:-} ]]; then k=$(( (i - 1) % ${#builds[@]} )); order=("${builds[@]:k}" "${builds[@]:0:k}"); fi
for nb in "${order[@]}"; do n=${nb%%=*}; b=${nb#*=}
if [[ -n ${DROP_CACHES:-} ]]; then sync; echo 1 > /proc/sys/vm/drop_caches; fi
D=$(mktemp -d /tmp/big16.XXXX)
$b --data-path=$D --tcp-address=127.0.0.1:$PORT --http-address=127.0.0.1:$((PORT+1)) --log-level=warn ${FLAGS:-} >$D.log 2>&1 &
P=$!
for j in $(seq 100); do curl -sf 127.0.0.1:$((PORT+1))/ping >/dev/null && break; sleep 0.05; done
curl -sf -XPOST "127.0.0.1:$((PORT+1))/topic/create?topic=big" >/dev/null && curl -sf -XPOST "127.0.0.1:$((PORT+1))/channel/create?topic=big&channel=ch" >/dev/null || { kill $P; echo "could not create the topic and channel" >&2; exit 1; }
out=$($BENCH writer --nsqd-tcp-address=127.0.0.1:$PORT --topic=big --runfor=$RUNFOR --size=$SIZE --batch-size=$BATCH --server-pid=$P 2>&1)
hwm=$(awk '/VmHWM/{print $2}' /proc/$P/status)
echo "$n $(grep -o '[0-9.]* msgs/s\|[0-9.]* us/msg' <<<"$out" | tr '\n' ' ') hwm_kib=$hwm"
kill $P; wait $P; rm -rf $D $D.log
done; done
