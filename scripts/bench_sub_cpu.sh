#!/usr/bin/env bash
# SUB with NSQ's procedure, with the CPU of both sides: NSQ's bench_writer for 10 s (no
# channel yet), then bench_reader --runfor=5s --rdy=2500; prints the writer's and the
# reader's ops/s, the reader's user/sys CPU seconds and nsqd's CPU seconds over the read.
# usage: scripts/bench_sub_cpu.sh NSQD [nsqd flags...]   (REF: NSQ's binaries, PORT)
set -u
REF=${REF:-$(cd "$(dirname "$0")/../.." && pwd)/shared/reference/nsq-v1.3.0}
PORT=${PORT:-25700}
NSQD=$1; shift
D=$(mktemp -d /tmp/subp.XXXX)
$NSQD --data-path=$D --tcp-address=127.0.0.1:$PORT --http-address=127.0.0.1:$((PORT+1)) --log-level=warn "$@" >$D.log 2>&1 &
P=$!
for i in $(seq 100); do curl -sf 127.0.0.1:$((PORT+1))/ping >/dev/null && break; sleep 0.05; done
$REF/bench_writer --nsqd-tcp-address=127.0.0.1:$PORT --runfor=10s --size=200 --batch-size=200 2>&1 | grep -o '[0-9.]*ops/s'
sync
c0=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' /proc/$P/stat)
T0=$(date +%s.%N)
out=$( { /usr/bin/time -f "client_user=%U client_sys=%S" $REF/bench_reader --nsqd-tcp-address=127.0.0.1:$PORT --runfor=5s --size=200 --rdy=${RDY:-2500} ; } 2>&1 )
c1=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' /proc/$P/stat)
echo "$out" | grep -o '[0-9.]*ops/s\|client_.*'
echo "server_cpu_s=$(echo "($c1-$c0)/100" | bc -l | cut -c1-5)"
kill $P; wait $P; rm -rf $D $D.log
