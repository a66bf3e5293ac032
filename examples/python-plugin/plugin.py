#!/usr/bin/env python3
"""A Rosey plugin in plain Python, written from docs/PROTOCOL.md alone (no SDK, stdlib only).

!greet [name]  ->  👋 Hello, <name or the user>!

Each greeting also counts in a metric of the plugin's own (docs/PROTOCOL.md, "Plugin metrics"), which
Rosey exposes as rosey_custom_greetings_total{plugin="python-greeter",target="self"|"other"}.
"""
import json
import sys


def send(message):
    # One JSON object per line, flushed at once: the host is waiting for it.
    sys.stdout.write(json.dumps(message, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def handle_event(event):
    data = event.get("data") or {}
    if data.get("command") == "greet":
        other = (data.get("args") or "").strip()
        name = other or data.get("user") or "stranger"
        send({"type": "reply", "id": event["id"], "message": "👋 Hello, %s!" % name})
        # A counter: the value is added. Labels with few values only: each value is a new series.
        send({"type": "metric", "name": "greetings_total", "kind": "counter", "value": 1,
              "labels": {"target": "other" if other else "self"}})
        send({"type": "done", "id": event["id"]})
    else:
        send({"type": "done", "id": event["id"], "error": "unexpected subject " + event.get("subject", "")})


def main():
    for line in sys.stdin:  # the loop ends when the host closes stdin: exit then
        try:
            message = json.loads(line)
        except ValueError:
            send({"type": "log", "level": "warn", "message": "ignored a line that is not JSON"})
            continue
        kind = message.get("type")
        if kind == "init":
            send({"type": "ready", "name": message["name"], "version": "1.0.0",
                  "commands": ["greet"], "subscribe": []})
        elif kind == "event":
            handle_event(message)
        elif kind == "ping":
            send({"type": "pong", "id": message["id"]})
        elif kind == "shutdown":
            return
        # Any other type is ignored: newer hosts may send messages this plugin does not know.


if __name__ == "__main__":
    main()
