#!/usr/bin/env python3
"""Hostile: `shout` writes one stderr line of 40 KiB: 16 KiB of `a`, then 24 KiB of `b`."""
import json
import sys


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


for raw in sys.stdin:
    msg = json.loads(raw)
    if msg["type"] == "init":
        send({"type": "ready", "name": msg["name"], "version": "1.0.0", "commands": [], "subscribe": []})
    elif msg["type"] == "ping":
        send({"type": "pong", "id": msg["id"]})
    elif msg["type"] == "shutdown":
        sys.exit(0)
    elif msg["type"] == "event":
        sys.stderr.write("a" * 16384 + "b" * 24576 + "\n")
        sys.stderr.flush()
        send({"type": "reply", "id": msg["id"], "message": "shouted"})
        send({"type": "done", "id": msg["id"]})
