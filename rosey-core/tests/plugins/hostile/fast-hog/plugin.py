#!/usr/bin/env python3
"""Hostile: `alloc` grabs 8 MB chunks up to 1 GB, writing its peak resident size (VmHWM, kB) to the
file `peak` in its working directory after each chunk; when the kernel refuses memory it writes
`refused` there and exits 1."""
import json
import sys


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def note(text):
    with open("peak", "a") as f:
        f.write(text + "\n")


def peak_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return line.split()[1]
    return "0"


for raw in sys.stdin:
    msg = json.loads(raw)
    if msg["type"] == "init":
        send({"type": "ready", "name": msg["name"], "version": "1.0.0", "commands": [], "subscribe": []})
    elif msg["type"] == "ping":
        send({"type": "pong", "id": msg["id"]})
    elif msg["type"] == "event":
        hoard = []
        try:
            for _ in range(128):
                hoard.append(b"x" * (8 * 1024 * 1024))
                note(peak_kb())
        except MemoryError:
            hoard = None
            note("refused " + peak_kb())
            sys.exit(1)
        send({"type": "reply", "id": msg["id"], "message": "allocated 1 GB"})
        send({"type": "done", "id": msg["id"]})
