#!/usr/bin/env python3
"""!remember <text> and !recall [user]: one line per user, kept in Rosey's key-value store."""
import json
import sys

queued = []          # events that arrived while we waited for the store
stopping = False     # the host sent shutdown while we waited
last_id = 0


class StoreError(Exception):
    def __init__(self, message, code=""):
        super().__init__(message)
        self.code = code


def send(message):
    sys.stdout.write(json.dumps(message, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def read():
    """The host's next message, or None at end of input (the host is gone)."""
    for line in iter(sys.stdin.readline, ""):
        try:
            message = json.loads(line)
        except ValueError:
            continue  # not JSON: skip it
        if isinstance(message, dict):
            return message
    return None


def request(subject, data):
    """Asks the store and waits for the answer, answering pings and queueing events meanwhile."""
    global last_id, stopping
    last_id += 1
    send({"type": "request", "id": last_id, "subject": subject, "data": data})
    while True:
        message = read()
        if message is None:
            sys.exit(0)  # the host is gone
        kind = message.get("type")
        if kind == "response" and message.get("id") == last_id:
            if "error" in message:
                raise StoreError(message["error"], (message.get("data") or {}).get("code", ""))
            return message["data"]
        if kind == "ping":
            send({"type": "pong", "id": message["id"]})
        elif kind == "event":
            queued.append(message)
        elif kind == "shutdown":
            stopping = True
            raise StoreError("shutting down")


def handle(data):
    user, args = data.get("user", ""), (data.get("args") or "").strip()
    if data.get("command") == "remember":
        if not args:
            return "❌ Usage: !remember <text>"
        request("rosey.db.kv.set", {"key": "note:" + user.lower(), "value": {"text": args, "by": user}})
        return "🧠 Got it, %s" % user
    who = args or user
    answer = request("rosey.db.kv.get", {"key": "note:" + who.lower()})
    if answer["found"]:
        return '🧠 %s said: "%s"' % (answer["value"]["by"], answer["value"]["text"])
    keys, after = [], None
    while True:  # every key under "note:", page by page
        query = {"prefix": "note:", "limit": 100}
        if after is not None:
            query["after"] = after
        page = request("rosey.db.kv.list", query)
        keys += page["keys"]
        after = page["next"]
        if after is None:
            break
    return "🤷 Nothing from %s (I remember %d people)" % (who, len(keys))


def main():
    while not stopping:
        message = queued.pop(0) if queued else read()
        if message is None:
            return  # stdin closed: the host is gone
        kind = message.get("type")
        if kind == "init":
            send({"type": "ready", "name": message["name"], "version": "1.0.0",
                  "commands": ["remember", "recall"], "subscribe": []})
        elif kind == "ping":
            send({"type": "pong", "id": message["id"]})
        elif kind == "shutdown":
            return
        elif kind == "event":
            try:
                reply = handle(message.get("data") or {})
            except StoreError as error:
                if error.code == "value_too_large":
                    reply = "❌ That is too long to remember"
                else:
                    reply = "❌ I cannot remember right now (%s)" % error
            send({"type": "reply", "id": message["id"], "message": reply})
            send({"type": "done", "id": message["id"]})


if __name__ == "__main__":
    main()
