#!/usr/bin/env python3
"""Hostile: `spawn` starts a child in the plugin's process group and a double-forked setsid()
escapee (whose parent exits at once), both ignoring SIGTERM and SIGHUP and sleeping forever.
Replies "<plugin pid> <group child pid> <escapee pid>"."""
import json
import os
import signal
import sys
import time


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def linger():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.close(0)
    os.close(1)
    while True:
        time.sleep(3600)


for raw in sys.stdin:
    msg = json.loads(raw)
    if msg["type"] == "init":
        send({"type": "ready", "name": msg["name"], "version": "1.0.0", "commands": [], "subscribe": []})
    elif msg["type"] == "ping":
        send({"type": "pong", "id": msg["id"]})
    elif msg["type"] == "shutdown":
        sys.exit(0)
    elif msg["type"] == "event":
        group_child = os.fork()
        if group_child == 0:
            linger()
        read, write = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.setsid()
            escapee = os.fork()
            if escapee == 0:
                linger()
            os.write(write, b"%d\n" % escapee)
            os._exit(0)
        os.waitpid(middle, 0)
        line = b""
        while not line.endswith(b"\n"):
            line += os.read(read, 64)
        send({"type": "reply", "id": msg["id"], "message": "%d %d %d" % (os.getpid(), group_child, int(line))})
        send({"type": "done", "id": msg["id"]})
