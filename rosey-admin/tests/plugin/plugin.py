#!/usr/bin/env python3
"""The smallest plugin the admin tests need (protocol v1, stdlib only): `ready` with the version given
by `--version V` (so a reload can be seen to change it), `pong` to every `ping`, and every event
answered with that version."""
import json
import sys

args = sys.argv[1:]
version = args[args.index("--version") + 1] if "--version" in args else "1.0.0"


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    kind = message.get("type")
    if kind == "init":
        send({"type": "ready", "name": message["name"], "version": version, "commands": [],
              "subscribe": []})
    elif kind == "ping":
        send({"type": "pong", "id": message["id"]})
    elif kind == "event":
        send({"type": "reply", "id": message["id"], "message": version})
        send({"type": "done", "id": message["id"]})
    elif kind == "shutdown":
        break
