"""Compatibility checks with pynsq (the official Python client) against a running nsqd.

Usage: pynsq_check.py MODE --tcp HOST:PORT [--count N] [--topic T] [--cafile PEM]

Each mode publishes with nsq.Writer, consumes with nsq.Reader, and exits 0 only if what
was received is exactly what the mode expects. Everything is bounded by --timeout.
"""

import argparse
import collections
import functools
import ssl
import sys
import time

import nsq
import tornado.ioloop

RESULT = {"ok": False, "why": "timed out"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def finish(ok, why=""):
    RESULT["ok"] = ok
    RESULT["why"] = why
    tornado.ioloop.IOLoop.current().stop()


def publish_all(writer, topic, bodies, done, batch=50):
    """PUB the first few one by one, MPUB the rest in batches; call done() when all acked."""
    pending = {"n": 0, "failed": None}
    chunks = [[b] for b in bodies[:10]]
    rest = bodies[10:]
    chunks += [rest[i:i + batch] for i in range(0, len(rest), batch)]

    def on_resp(conn, data):
        if isinstance(data, nsq.Error):
            pending["failed"] = data
            log("publish error", data)
            # Retry after a moment: the writer may not be connected yet.
            return
        pending["n"] -= 1
        if pending["n"] == 0:
            done()

    def go():
        if not writer.conns:
            tornado.ioloop.IOLoop.current().call_later(0.05, go)
            return
        pending["n"] = len(chunks)
        for c in chunks:
            if len(c) == 1:
                writer.pub(topic, c[0], callback=on_resp)
            else:
                writer.mpub(topic, c, callback=on_resp)

    go()


def conn_kwargs(args):
    kw = {}
    if args.mode == "snappy":
        kw["snappy"] = True
    if args.mode == "deflate":
        kw["deflate"] = True
        kw["deflate_level"] = 6
    if args.mode == "tls":
        kw["tls_v1"] = True
        kw["tls_options"] = {"cert_reqs": ssl.CERT_NONE} if not args.cafile else {
            "cert_reqs": ssl.CERT_REQUIRED, "ca_certs": args.cafile}
    return kw


def mode_exactly_once(args):
    """N messages published, each received exactly once on one channel (modes: exactly_once,
    snappy, deflate, tls)."""
    kw = conn_kwargs(args)
    bodies = [("msg-%d" % i).encode() for i in range(args.count)]
    seen = collections.Counter()

    def handler(message):
        seen[message.body] += 1
        if len(seen) == len(bodies):
            # Wait a little for duplicates before judging.
            tornado.ioloop.IOLoop.current().call_later(0.5, check)
        return True

    def check():
        dupes = [b for b, c in seen.items() if c > 1]
        missing = set(bodies) - set(seen)
        if dupes or missing:
            finish(False, "dupes=%d missing=%d" % (len(dupes), len(missing)))
        else:
            finish(True)

    writer = nsq.Writer([args.tcp], **kw)
    publish_all(writer, args.topic, bodies, lambda: log("published", len(bodies)))
    nsq.Reader(topic=args.topic, channel="c", nsqd_tcp_addresses=[args.tcp],
               message_handler=handler, max_in_flight=100, **kw)


def mode_requeue(args):
    """Every message is requeued on its first attempt and finished on the second, which must
    carry attempts == 2."""
    bodies = [("rq-%d" % i).encode() for i in range(args.count)]
    attempts = collections.defaultdict(list)

    def handler(message):
        message.enable_async()
        attempts[message.body].append(message.attempts)
        if message.attempts == 1:
            message.requeue(backoff=False, delay=0)
        else:
            message.finish()
        done = [b for b in bodies if len(attempts[b]) >= 2]
        if len(done) == len(bodies):
            tornado.ioloop.IOLoop.current().call_later(0.5, check)

    def check():
        bad = {b: a for b, a in attempts.items() if a != [1, 2]}
        finish(not bad, "unexpected attempts: %r" % list(bad.items())[:5])

    writer = nsq.Writer([args.tcp])
    publish_all(writer, args.topic, bodies, lambda: None)
    nsq.Reader(topic=args.topic, channel="c", nsqd_tcp_addresses=[args.tcp],
               message_handler=handler, max_in_flight=10)


def mode_timeout(args):
    """The first delivery is never answered; nsqd must redeliver it after msg_timeout with
    attempts incremented."""
    bodies = [("to-%d" % i).encode() for i in range(args.count)]
    attempts = collections.defaultdict(list)
    first_seen = {}

    def handler(message):
        message.enable_async()
        attempts[message.body].append(message.attempts)
        if message.attempts == 1:
            first_seen[message.body] = time.time()
            return  # never FIN: let it time out
        message.finish()
        if all(len(attempts[b]) >= 2 for b in bodies):
            tornado.ioloop.IOLoop.current().call_later(0.3, check)

    def check():
        bad = {b: a for b, a in attempts.items() if a != [1, 2]}
        finish(not bad, "unexpected attempts: %r" % list(bad.items())[:5])

    writer = nsq.Writer([args.tcp])
    publish_all(writer, args.topic, bodies, lambda: None)
    nsq.Reader(topic=args.topic, channel="c", nsqd_tcp_addresses=[args.tcp],
               message_handler=handler, max_in_flight=args.count, msg_timeout=1)  # seconds in pynsq


def mode_two_channels(args):
    """Two channels on one topic each receive every message (multicast)."""
    bodies = [("mc-%d" % i).encode() for i in range(args.count)]
    seen = {"a": collections.Counter(), "b": collections.Counter()}

    def make(ch):
        def handler(message):
            seen[ch][message.body] += 1
            if all(len(s) == len(bodies) for s in seen.values()):
                tornado.ioloop.IOLoop.current().call_later(0.5, check)
            return True
        return handler

    def check():
        for ch, s in seen.items():
            if set(s) != set(bodies) or any(c > 1 for c in s.values()):
                return finish(False, "channel %s got %d distinct, %d total" % (ch, len(s), sum(s.values())))
        finish(True)

    # Create both channels before publishing so both see every message.
    for ch in ("a", "b"):
        nsq.Reader(topic=args.topic, channel=ch, nsqd_tcp_addresses=[args.tcp],
                   message_handler=make(ch), max_in_flight=50)
    writer = nsq.Writer([args.tcp])
    tornado.ioloop.IOLoop.current().call_later(
        1.0, lambda: publish_all(writer, args.topic, bodies, lambda: None))


def mode_two_readers(args):
    """Two readers on one channel split the stream: together exactly every message once,
    and each gets a share."""
    bodies = [("sp-%d" % i).encode() for i in range(args.count)]
    seen = collections.Counter()
    per_reader = collections.Counter()

    def make(name):
        def handler(message):
            seen[message.body] += 1
            per_reader[name] += 1
            if len(seen) == len(bodies):
                tornado.ioloop.IOLoop.current().call_later(0.5, check)
            return True
        return handler

    def check():
        dupes = sum(1 for c in seen.values() if c > 1)
        if set(seen) != set(bodies) or dupes:
            return finish(False, "distinct=%d dupes=%d" % (len(seen), dupes))
        if per_reader["r1"] == 0 or per_reader["r2"] == 0:
            return finish(False, "one reader got nothing: %r" % dict(per_reader))
        log("split", dict(per_reader))
        finish(True)

    for name in ("r1", "r2"):
        nsq.Reader(topic=args.topic, channel="c", nsqd_tcp_addresses=[args.tcp],
                   message_handler=make(name), max_in_flight=5)
    writer = nsq.Writer([args.tcp])
    tornado.ioloop.IOLoop.current().call_later(
        1.0, lambda: publish_all(writer, args.topic, bodies, lambda: None))


def mode_publish(args):
    """Only publish N messages (acknowledged), then exit: for restart tests."""
    bodies = [("p-%d" % i).encode() for i in range(args.count)]
    writer = nsq.Writer([args.tcp])
    publish_all(writer, args.topic, bodies, lambda: finish(True))


def mode_consume(args):
    """Only consume until N distinct messages (prefix p-) arrived: for restart tests."""
    want = set(("p-%d" % i).encode() for i in range(args.count))
    seen = set()

    def handler(message):
        seen.add(message.body)
        if want <= seen:
            tornado.ioloop.IOLoop.current().call_later(0.2, lambda: finish(True))
        return True

    nsq.Reader(topic=args.topic, channel="c", nsqd_tcp_addresses=[args.tcp],
               message_handler=handler, max_in_flight=200)

    def report():
        log("consumed %d of %d" % (len(want & seen), len(want)))
    tornado.ioloop.IOLoop.current().call_later(args.timeout - 1, report)


def mode_lookup_reader(args):
    """A Reader given only lookupd HTTP addresses consumes lk-0 .. lk-(count-1), which are
    spread over several nsqd (some of which may join later)."""
    want = set(("lk-%d" % i).encode() for i in range(args.count))
    seen = set()

    def handler(message):
        seen.add(message.body)
        if want <= seen:
            tornado.ioloop.IOLoop.current().call_later(0.2, lambda: finish(True))
        return True

    nsq.Reader(topic=args.topic, channel="c", lookupd_http_addresses=args.lookupd,
               lookupd_poll_interval=1, message_handler=handler, max_in_flight=50)

    def report():
        log("consumed %d of %d" % (len(want & seen), len(want)))
    tornado.ioloop.IOLoop.current().call_later(args.timeout - 1, report)


def mode_replay(args):
    """With a connected Reader: publish and consume batch A, then batch B; rewind the channel
    over HTTP to a time between them; the Reader must get exactly batch B again, once each,
    and nothing of A."""
    import json
    import urllib.request

    a = [("a-%d" % i).encode() for i in range(args.count)]
    b = [("b-%d" % i).encode() for i in range(args.count)]
    state = {"phase": "a", "seen": collections.Counter(), "replayed": collections.Counter()}
    writer = nsq.Writer([args.tcp])
    loop = tornado.ioloop.IOLoop.current()

    def handler(message):
        if state["phase"] == "replay":
            state["replayed"][message.body] += 1
        else:
            state["seen"][message.body] += 1
        return True

    nsq.Reader(topic=args.topic, channel="c", nsqd_tcp_addresses=[args.tcp],
               message_handler=handler, max_in_flight=100)

    def wait_for(cond, then):
        if cond():
            then()
        else:
            loop.call_later(0.05, lambda: wait_for(cond, then))

    def rewind():
        state["phase"] = "replay"
        url = "http://%s/channel/rewind?topic=%s&channel=c&to=%d" % (args.http, args.topic, state["t"])
        resp = json.loads(urllib.request.urlopen(urllib.request.Request(url, method="POST")).read())
        log("rewound:", resp)
        wait_for(lambda: sum(state["replayed"].values()) >= len(b), lambda: loop.call_later(1.0, check))

    def check():
        r = state["replayed"]
        if set(r) != set(b):
            return finish(False, "replayed %d distinct, %d of A" % (len(r), sum(1 for k in r if k in set(a))))
        if any(v != 1 for v in r.values()):
            return finish(False, "some replayed more than once")
        finish(True)

    def publish_b():
        state["t"] = int(time.time() * 1000)
        time.sleep(0.05)
        publish_all(writer, args.topic, b, lambda: wait_for(
            lambda: all(state["seen"][x] >= 1 for x in b), rewind))

    def after_a():
        time.sleep(0.05)
        publish_b()

    def start():
        publish_all(writer, args.topic, a, lambda: wait_for(
            lambda: all(state["seen"][x] >= 1 for x in a), after_a))
    loop.call_later(0.5, start)


MODES = {
    "replay": mode_replay,
    "lookup_reader": mode_lookup_reader,
    "exactly_once": mode_exactly_once,
    "snappy": mode_exactly_once,
    "deflate": mode_exactly_once,
    "tls": mode_exactly_once,
    "requeue": mode_requeue,
    "timeout": mode_timeout,
    "two_channels": mode_two_channels,
    "two_readers": mode_two_readers,
    "publish": mode_publish,
    "consume": mode_consume,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--tcp", required=True)
    p.add_argument("--topic", default="pynsq_test")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--cafile", default="")
    p.add_argument("--http", default="", help="nsqd HTTP address (replay mode)")
    p.add_argument("--lookupd", action="append", default=[], help="lookupd HTTP address (repeatable)")
    args = p.parse_args()
    loop = tornado.ioloop.IOLoop.current()
    loop.call_later(args.timeout, functools.partial(finish, False, "timed out after %ss" % args.timeout))
    loop.add_callback(MODES[args.mode], args)
    loop.start()
    if RESULT["ok"]:
        print("OK")
        sys.exit(0)
    print("FAIL: %s" % RESULT["why"])
    sys.exit(1)


if __name__ == "__main__":
    main()
