#!/usr/bin/env python3
"""A test plugin whose version is read from a file at each start, so a reload can change it.

Usage: versioned.py <version file> <command>. Answers `!<command>` with `pong <version>`.
"""
import json
import sys

VERSION = open(sys.argv[1]).read().strip()
COMMAND = sys.argv[2]


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    message = json.loads(line)
    kind = message.get("type")
    if kind == "init":
        send({"type": "ready", "name": message["name"], "version": VERSION,
              "commands": [COMMAND], "subscribe": []})
    elif kind == "event":
        send({"type": "reply", "id": message["id"], "message": "pong " + VERSION})
        send({"type": "done", "id": message["id"]})
    elif kind == "ping":
        send({"type": "pong", "id": message["id"]})
    elif kind == "shutdown":
        break
