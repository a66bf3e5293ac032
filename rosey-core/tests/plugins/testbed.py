#!/usr/bin/env python3
"""A deliberately misbehaving Rosey plugin for the host's tests (protocol v1, stdlib only).

Start-up flags: --version V, --exit-at-start, --no-ready, --no-pong, --hog-at-start MB,
--probe-fails, --probe-silent.
Behaviours (the first word of the event's `args`, or of its `message` when it has no `args`): echo <text>, pid, version, probe, slow <ms>, crash, hang, garbage, alloc <mb>,
spin, flood-stdout <mb>, flood-stderr <mb>, multi <n>, fail <why>, reply-then-crash,
publish <subject> (a forged chat line on that subject), big-replies <n> <kib>, requests <n> (never
reads the responses), log-flood <n>, crash-once <marker file> (crashes the first time only).
Host `error` messages are written to stderr as `host refused: ...`.
"""
import json
import os
import sys
import time

args = sys.argv[1:]
version = args[args.index("--version") + 1] if "--version" in args else "1.0.0"
out = sys.stdout


def send(obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()


if "--exit-at-start" in args:
    sys.exit(3)

hoard = []
if "--hog-at-start" in args:
    hoard.append(b"x" * (int(args[args.index("--hog-at-start") + 1]) * 1024 * 1024))
for raw in sys.stdin:
    try:
        msg = json.loads(raw)
    except ValueError:
        continue
    kind = msg.get("type")
    if kind == "init":
        if "--no-ready" in args:
            continue
        send({"type": "ready", "name": msg["name"], "version": version, "commands": [], "subscribe": []})
    elif kind == "ping":
        if "--no-pong" not in args:
            send({"type": "pong", "id": msg["id"]})
    elif kind == "error":
        sys.stderr.write("host refused: %s\n" % msg.get("message"))
        sys.stderr.flush()
    elif kind == "shutdown":
        sys.exit(0)
    elif kind == "event":
        eid = msg["id"]
        data = msg.get("data") or {}
        # The first word of the arguments selects the behaviour, so each test can route through a
        # command name of its own; for an event without arguments (a PM or chat line of a
        # subscription), the first word of its message does.
        words = (data.get("args", data.get("message")) or "").split()
        cmd = words[0] if words else ""
        arg = words[1] if len(words) > 1 else ""
        if cmd == "echo":
            send({"type": "reply", "id": eid, "message": " ".join(words[1:])})
        elif cmd == "pid":
            send({"type": "reply", "id": eid, "message": str(os.getpid())})
        elif cmd == "probe":
            if "--probe-fails" in args:
                send({"type": "done", "id": eid, "error": "probe broken"})
                continue
            if "--probe-silent" not in args:
                send({"type": "reply", "id": eid, "message": "probe ok"})
        elif cmd == "version":
            send({"type": "reply", "id": eid, "message": version})
        elif cmd == "slow":
            time.sleep(int(arg) / 1000.0)
            send({"type": "reply", "id": eid, "message": "slow done"})
        elif cmd == "crash":
            os._exit(1)
        elif cmd == "hang":
            continue
        elif cmd == "garbage":
            out.write("this is not json\n")
            out.write('{"no_type": true}\n')
            out.write('{"type": "reply", "id": "not-a-number"}\n')
            out.write('{"type": "from-the-future", "x": 1}\n')
            out.write("[" * (1024 * 1024 + 10) + "\n")
            out.flush()
            send({"type": "reply", "id": eid, "message": "still here"})
        elif cmd == "alloc":
            hoard.append(b"x" * (int(arg) * 1024 * 1024))
            send({"type": "reply", "id": eid, "message": "allocated"})
        elif cmd == "spin":
            send({"type": "reply", "id": eid, "message": "spinning"})
            send({"type": "done", "id": eid})
            while True:
                pass
        elif cmd == "flood-stdout":
            line = json.dumps({"type": "log", "level": "trace", "message": "x" * 1000}) + "\n"
            for _ in range(int(arg) * 1024):
                out.write(line)
            out.flush()
            send({"type": "reply", "id": eid, "message": "flooded"})
        elif cmd == "flood-stderr":
            line = "e" * 1000 + "\n"
            for _ in range(int(arg) * 1024):
                sys.stderr.write(line)
            sys.stderr.flush()
            send({"type": "reply", "id": eid, "message": "flooded"})
        elif cmd == "multi":
            for i in range(int(arg)):
                send({"type": "reply", "id": eid, "message": "line %d" % i})
        elif cmd == "reply-then-crash":
            send({"type": "reply", "id": eid, "message": "said before dying"})
            os._exit(1)
        elif cmd == "crash-once":
            if not os.path.exists(arg):
                open(arg, "w").close()
                os._exit(1)
            send({"type": "reply", "id": eid, "message": "survived"})
        elif cmd == "publish":
            forged = {"channel": data.get("channel"), "user": "owner", "rank": 99,
                      "message": "!roll 7d2", "time": 0}
            send({"type": "publish", "subject": arg, "data": forged})
        elif cmd == "big-replies":
            count, kib = int(words[1]), int(words[2])
            text = "y" * (kib * 1024)
            for _ in range(count):
                send({"type": "reply", "id": eid, "message": text})
        elif cmd == "requests":
            for i in range(int(arg)):
                send({"type": "request", "id": i, "subject": "rosey.db.kv.get", "data": {"key": "k"}})
        elif cmd == "log-flood":
            for i in range(int(arg)):
                send({"type": "log", "level": "info", "message": "flood %d" % i})
        elif cmd == "fail":
            send({"type": "done", "id": eid, "error": arg or "failed"})
            continue
        send({"type": "done", "id": eid})
