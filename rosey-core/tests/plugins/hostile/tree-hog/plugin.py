#!/usr/bin/env python3
"""Hostile: `spawn <mb>` forks a child that forks a grandchild holding <mb> MB; the plugin itself
stays small. Replies "<child pid> <grandchild pid>" as the grandchild starts to fill its memory."""
import json
import os
import sys
import time


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
        mb = int((msg["data"].get("args") or "spawn 300").split()[-1])
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            grandchild = os.fork()
            if grandchild == 0:
                os.write(write, b"%d\n" % os.getpid())
                hoard = bytearray(mb * 1024 * 1024)
                for i in range(0, len(hoard), 4096):
                    hoard[i] = 1
                while True:
                    time.sleep(3600)
            while True:
                time.sleep(3600)
        line = b""
        while not line.endswith(b"\n"):
            line += os.read(read, 64)
        send({"type": "reply", "id": msg["id"], "message": "%d %d" % (child, int(line))})
        send({"type": "done", "id": msg["id"]})
