#!/usr/bin/env python3
"""Load script: the whole bot's start → ready time, host memory and idle CPU, on a real `rosey run`.

Targets (issue 15, item 6): start → ready with SQLite, dashboard, metrics, admin and the two bundled
plugins < 300 ms; host RSS with 10 plugins and 1 h of history < 30 MB; idle CPU of the whole bot
< 0.1 % of one core.

Usage (release build, from the repository root):
    cargo build --release -p rosey-bin -p rosey-dice-roller -p rosey-8ball
    python3 benches/bot.py [path/to/rosey] [--runs 20] [--rss-minutes 3] [--idle-seconds 60]

Every bot runs in its own temporary directory with the configuration `{"owner": "alice",
"dashboard": {"port": <free port>}}` (plus the metrics keys named below) and everything else at its
embedded default: console connector (stdin kept open and silent), in-process bus, SQLite in
`rosey.db`, plugins from `plugins/`, log file `logs/rosey.log`, metrics on. The plugin folders hold
copies of the bundled `plugin.toml`s; their binaries are found next to `rosey`.

1. start → ready: from just before exec to the `rosey ready` line read on stderr, `--runs` times on a
   fresh database (created and migrated at start) and `--runs` times on an existing one (a week of
   saved metrics tiers for the three plugins, 10 000 audit rows, 20 000 plugin events, 1 000 keys).
   The phases come from the log lines' own timestamps. Each bot is stopped with SIGTERM.
2. memory: 10 copies of the dice-roller (`dice-0`…`dice-9`) plus the admin plugin, the database
   seeded with one hour of saved minute and quarter buckets per plugin (what the collector loads at
   start), `metrics.poll_interval` 1 and `metrics.history_duration` 720: a raw ring of 720 samples
   per plugin, the size an hour fills at the default 5 s, filled five times as fast. Host RSS is
   sampled every 10 s for `--rss-minutes`; at the end VmRSS, VmHWM, smaps_rollup and the children,
   and two estimates of the RSS with the ring full. With `--rss-minutes 13` or more the ring is
   full (720 s) and the RSS printed is the hour's own.
3. idle CPU: utime+stime of the `rosey` process (and of its plugin children, separately) over
   `--idle-seconds` from /proc/<pid>/stat, starting 5 s after ready, no chat, no dashboard client:
   the default-config bot of step 1 (poll 5 s), the same with the 10 copies, and the 10-plugin bot
   of step 2 (poll 1 s), all three at once (each one's own CPU time is counted, and all are idle).
   The living threads' /proc/<pid>/task/*/schedstat gives the same in nanoseconds, by thread name.

Loopback only (the dashboard listens on 127.0.0.1); it stops every process it started and removes
its directories. The default run takes about 3 minutes.
"""
import argparse
import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
OWNER = "alice"
ADMIN = "admin"
SERIES = ["cpu_percent", "memory_mb", "uptime_seconds", "event_count", "crash_count",
          "events_per_second", "latency_p95_seconds"]
# Collector memory from benches/metrics.rs (RESULTS.md, Metrics): 1 h of 10 plugins is 0.95 MB, of
# which the raw ring is 720 samples × 112 B per plugin; the ring grows 16 samples at a time.
SAMPLE_BYTES = 112
RAW_RING = 720
RING_GROWTH = 16
IDLE_DELAY = 5.0
# Log lines that end the phases of a start: process and logging up, database opened and migrated,
# plugins running and the collector's history loaded (the dashboard comes right after), ready.
PHASES = ["starting rosey", "storage opened", "dashboard serving", "rosey ready"]


# ---------------------------------------------------------------------------------------- /proc


def read(path):
    with open(path) as f:
        return f.read()


def stat_fields(pid):
    """/proc/<pid>/stat after the command name: fields[0] is field 3 (state) of proc(5)."""
    data = read("/proc/%d/stat" % pid)
    return data[data.rindex(")") + 2:].split()


def cpu_seconds(pid):
    """utime + stime of a process (all its threads, living and exited), seconds."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid):
    values = {}
    for line in read("/proc/%d/status" % pid).splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            values[key] = int(parts[0])
    return values


def rollup_kb(pid):
    values = {}
    for line in read("/proc/%d/smaps_rollup" % pid).splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0])
    return values


def smaps_breakdown(pid, exe):
    """Resident kB by kind of mapping (the binary, shared libraries, heap, anonymous, stacks), and
    the resident kB of each anonymous mapping."""
    kinds, anonymous = {}, []
    kind = None
    for line in read("/proc/%d/smaps" % pid).splitlines():
        head = line.split()
        if not head:
            continue
        if not head[0].endswith(":") or "-" in head[0]:
            name = " ".join(head[5:]) if len(head) > 5 else ""
            if name == exe or name.endswith("/" + os.path.basename(exe)):
                kind = "the rosey binary (text, data)"
            elif name == "[heap]":
                kind = "[heap] (main arena)"
            elif name.startswith("[stack"):
                kind = "main stack"
            elif name == "":
                kind = "anonymous (thread arenas, thread stacks, large allocations)"
            elif name.startswith("["):
                kind = "kernel ([vdso], [vvar])"
            else:
                kind = "shared libraries and other files"
        elif head[0] == "Rss:" and kind is not None:
            kinds[kind] = kinds.get(kind, 0) + int(head[1])
            if kind.startswith("anonymous"):
                anonymous.append(int(head[1]))
    return kinds, sorted(anonymous, reverse=True)


def threads(pid):
    """{tid: (name, ns on CPU, times scheduled)} of the living threads of pid."""
    result = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            name = read("/proc/%d/task/%s/comm" % (pid, tid)).strip()
            ns, _, runs = read("/proc/%d/task/%s/schedstat" % (pid, tid)).split()[:3]
        except OSError:
            continue
        result[tid] = (name, int(ns), int(runs))
    return result


def descendants(pid):
    """Every process below pid, as {pid: depth} (1 = child)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [(pid, 0)]
    while todo:
        parent, depth = todo.pop()
        for child in children.get(parent, []):
            found[child] = depth + 1
            todo.append((child, depth + 1))
    return found


def describe(pid):
    try:
        argv = read("/proc/%d/cmdline" % pid).split("\0")
        return os.path.basename(argv[0]) or read("/proc/%d/comm" % pid).strip()
    except OSError:
        return "?"


def loadavg():
    return " ".join(read("/proc/loadavg").split()[:3])


# ------------------------------------------------------------------------------------ the bot


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_bundled_plugins(root):
    plugins = os.path.join(root, "plugins")
    for name in ["dice-roller", "8ball"]:
        os.makedirs(os.path.join(plugins, name))
        shutil.copy(os.path.join(ROOT, "plugins", name, "plugin.toml"), os.path.join(plugins, name))
    return ["dice-roller", "8ball"]


def dice_copies(root, count):
    """`count` dice-roller folders with their own names and commands (roll0/flip0, …). The binary
    still calls its commands roll and flip (routing follows the manifest, and nothing is asked
    here), so the copies have no health probe: `!roll0 1d20` would find no handler."""
    text = read(os.path.join(ROOT, "plugins", "dice-roller", "plugin.toml"))
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("[health]", "probe =")))
    names = []
    for i in range(count):
        name = "dice-%d" % i
        manifest = (text.replace('name = "dice-roller"', 'name = "%s"' % name)
                    .replace('{ name = "roll"', '{ name = "roll%d"' % i)
                    .replace('{ name = "flip"', '{ name = "flip%d"' % i))
        os.makedirs(os.path.join(root, "plugins", name))
        with open(os.path.join(root, "plugins", name, "plugin.toml"), "w") as f:
            f.write(manifest)
        names.append(name)
    return names


def write_config(root, metrics=None):
    config = {"owner": OWNER, "dashboard": {"port": free_port()}}
    if metrics:
        config["metrics"] = metrics
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(config, f)
    return config


def log_time(line):
    """The wall-clock time of a tracing line (`2026-11-30T19:50:00.123456Z  INFO …`), or None."""
    stamp = line.split(" ", 1)[0]
    if not stamp.endswith("Z"):
        return None
    try:
        return datetime.strptime(stamp[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


class Bot:
    """One `rosey run` in `root`, its stderr read line by line with arrival times."""

    def __init__(self, rosey, root):
        self.root = root
        self.lines = queue.Queue()
        self.log = []
        self.wall_exec = time.time()
        self.exec_at = time.monotonic()
        self.proc = subprocess.Popen(
            [rosey, "run", "--config", os.path.join(root, "config.json")], cwd=root,
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            bufsize=1)
        self.pid = self.proc.pid
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put((time.monotonic(), line.rstrip("\n")))
        self.lines.put((time.monotonic(), None))

    def wait_for(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("no %r within %d s; log:\n%s" % (text, timeout, "\n".join(self.log)))
            if line is None:
                raise RuntimeError("rosey exited (%s) before %r; log:\n%s"
                                   % (self.proc.wait(), text, "\n".join(self.log)))
            self.log.append(line)
            if text in line:
                return at, line

    def wait_ready(self):
        at, line = self.wait_for("rosey ready")
        if "failed=0" not in line:
            raise RuntimeError("not every plugin runs: " + line)
        self.ready_at = at
        return at - self.exec_at

    def phases(self):
        """Milliseconds from exec to the first log line with each message, by the lines' clocks."""
        marks = {}
        for line in self.log:
            t = log_time(line)
            if t is None:
                continue
            for message in PHASES:
                if message in line and message not in marks:
                    marks[message] = (t - self.wall_exec) * 1000
        return marks

    def stop(self):
        """SIGTERM, then wait; returns how long the bot took to exit, seconds."""
        if self.proc.poll() is None:
            start = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("rosey did not stop within 30 s of SIGTERM")
            finally:
                self.proc.stdin.close()
            took = time.monotonic() - start
        else:
            self.proc.stdin.close()
            took = 0.0
        self._drain()
        return took

    def _drain(self):
        """Moves the lines logged until exit into `log`."""
        while True:
            try:
                _, line = self.lines.get(timeout=5)
            except queue.Empty:
                return
            if line is None:
                return
            self.log.append(line)


# ------------------------------------------------------------------------------- the database


def create_database(rosey, root):
    """Runs the bot once so that it creates and migrates rosey.db, then stops it."""
    bot = Bot(rosey, root)
    try:
        bot.wait_ready()
    finally:
        bot.stop()


def saved_tiers(now_ms, minutes, quarters, samples_per_minute):
    """A `history:<plugin>` value as the collector saves it: closed minute and quarter buckets
    ending before `now_ms`, quiet plugin figures."""
    def bucket(start, samples, uptime):
        stats = [[0.05, 0.0, 0.4, samples], [2.1, 2.0, 2.2, samples],
                 [uptime, uptime, uptime, samples], [0, 0, 0, samples], [0, 0, 0, samples],
                 [0, 0, 0, samples], None]
        return [start, samples, stats]

    minute_ms, quarter_ms = 60_000, 900_000
    last_minute = now_ms - now_ms % minute_ms - minute_ms
    last_quarter = now_ms - now_ms % quarter_ms - quarter_ms
    minute = [bucket(last_minute - i * minute_ms, samples_per_minute, 3600.0 * 24 * 7 - i * 60)
              for i in reversed(range(minutes))]
    quarter = [bucket(last_quarter - i * quarter_ms, samples_per_minute * 15, 3600.0 * 24 * 7 - i * 900)
               for i in reversed(range(quarters))]
    return json.dumps({"v": 1, "series": SERIES,
                       "minute": {"bucket_ms": minute_ms, "buckets": minute},
                       "quarter": {"bucket_ms": quarter_ms, "buckets": quarter}},
                      separators=(",", ":"))


def seed(root, plugins, minutes, quarters, records=0):
    """Writes saved metrics tiers for `plugins` into rosey.db and, with `records`, that many audit
    rows, twice as many plugin events and a tenth as many keys, spread over the last week."""
    now_us = int(time.time() * 1_000_000)
    db = sqlite3.connect(os.path.join(root, "rosey.db"))
    with db:
        for plugin in plugins:
            db.execute("INSERT OR REPLACE INTO kv (plugin, key, value, updated_at_us) VALUES (?, ?, ?, ?)",
                       ("rosey.metrics", "history:" + plugin,
                        saved_tiers(now_us // 1000, minutes, quarters, 12), now_us))
        week_us = 7 * 86_400 * 1_000_000
        db.executemany(
            "INSERT INTO audit_log (time_us, node, actor, actor_rank, command, arguments, outcome, detail)"
            " VALUES (?, 'bench', ?, 3.0, 'status', '', 'ok', NULL)",
            ((now_us - week_us + i * (week_us // max(records, 1)), OWNER) for i in range(records)))
        db.executemany(
            "INSERT INTO plugin_events (time_us, node, plugin, kind, version, reason, duration_seconds)"
            " VALUES (?, 'bench', ?, ?, '1.0.0', NULL, NULL)",
            ((now_us - week_us + i * (week_us // max(2 * records, 1)), plugins[i % len(plugins)],
              "started" if i % 2 == 0 else "stopped") for i in range(2 * records)))
        db.executemany(
            "INSERT OR REPLACE INTO kv (plugin, key, value, updated_at_us) VALUES ('quotes', ?, ?, ?)",
            (("quote:%d" % i, json.dumps({"text": "quote number %d " % i + "x" * 80}), now_us)
             for i in range(records // 10)))
    db.close()


# ------------------------------------------------------------------------------ measurements


def percentile(values, p):
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # nearest rank, 1-based
    return ordered[int(rank) - 1]


def start_runs(rosey, base, runs, existing):
    """`runs` start → ready times (ms) and phase marks, on a fresh or an existing database."""
    times, phases, stops = [], [], []
    root = tempfile.mkdtemp(prefix="existing-" if existing else "fresh-", dir=base)
    plugins = copy_bundled_plugins(root)
    if existing:
        write_config(root)
        create_database(rosey, root)
        seed(root, plugins + [ADMIN], minutes=1440, quarters=672, records=10_000)
    warnings, loaded = set(), None
    for run in range(runs):
        if not existing:
            for name in os.listdir(root):
                if name.startswith("rosey.db"):
                    os.remove(os.path.join(root, name))
        port = write_config(root)["dashboard"]["port"]
        bot = Bot(rosey, root)
        try:
            times.append(bot.wait_ready() * 1000)
            phases.append(bot.phases())
            if existing and run == runs - 1:
                # Proof that the saved week was loaded (asked after the timing).
                loaded = api_points(port, "dice-roller", "7d")
        finally:
            stops.append(bot.stop())
        warnings.update(line.split(": ", 1)[-1] for line in bot.log if " WARN " in line or " ERROR " in line)
    shutil.rmtree(root)
    for warning in sorted(warnings):
        print("warning logged during the start runs: " + warning, file=sys.stderr)
    return times, phases, stops, loaded


def task_ns(pid):
    """CPU time of the living threads of pid, nanoseconds (schedstat: finer than stat's ticks, but
    a thread that exits takes its time with it)."""
    return sum(ns for _, ns, _ in threads(pid).values())


class Window:
    """CPU of a process and of its children between two instants."""

    def __init__(self, pid):
        self.pid = pid
        self.t0 = time.monotonic()
        self.host0 = (cpu_seconds(pid), task_ns(pid))
        self.threads0 = threads(pid)
        self.children0 = {child: (cpu_seconds(child), task_ns(child)) for child in descendants(pid)}

    def close(self):
        elapsed = time.monotonic() - self.t0
        host = (cpu_seconds(self.pid) - self.host0[0], (task_ns(self.pid) - self.host0[1]) / 1e9)
        by_name = {}
        for tid, (name, ns, runs) in threads(self.pid).items():
            if tid in self.threads0:
                _, ns0, runs0 = self.threads0[tid]
                total = by_name.setdefault(name, [0, 0, 0])
                total[0] += ns - ns0
                total[1] += runs - runs0
                total[2] += 1
        children = [0.0, 0.0]
        for child, (ticks, ns) in self.children0.items():
            try:
                children[0] += cpu_seconds(child) - ticks
                children[1] += (task_ns(child) - ns) / 1e9
            except OSError:
                pass
        return {"seconds": elapsed, "host": host, "children": children, "threads": by_name,
                "n_children": len(self.children0), "n_threads": len(self.threads0)}


def memory(pid):
    status = status_kb(pid)
    rollup = rollup_kb(pid)
    return {"rss": status["VmRSS"], "hwm": status["VmHWM"], "anon": status.get("RssAnon", 0),
            "file": status.get("RssFile", 0), "pss": rollup.get("Pss", 0),
            "private": rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)}


def children_memory(pid):
    rows = []
    for child, depth in sorted(descendants(pid).items()):
        try:
            m = memory(child)
        except (OSError, KeyError):
            continue
        rows.append((child, depth, describe(child), m))
    return rows


def api_points(port, plugin, window):
    url = "http://127.0.0.1:%d/api/plugin/%s?window=%s" % (port, plugin, window)
    with urllib.request.urlopen(url, timeout=10) as answer:
        return len(json.load(answer)["history"])


# ----------------------------------------------------------------------------------- report


def mb(kb):
    return kb / 1024.0


def report_start(label, times, phases, stops, _loaded):
    median = [statistics.median(p[m] for p in phases if m in p) for m in PHASES]
    print("| %s | %.1f ms | %.1f ms | %.1f ms | %s ms | %.0f ms |" % (
        label, statistics.median(times), percentile(times, 95), max(times),
        " / ".join("%.1f" % m for m in median), statistics.median(stops) * 1000))


def report_idle(label, window):
    seconds = window["seconds"]
    (host_stat, host_ns), (kids_stat, kids_ns) = window["host"], window["children"]
    print("| %s | %.1f s | **%.3f %%** (%.2f s) | %.4f %% (%.1f ms, %d threads) | %.3f %% | "
          "%.4f %% (%d processes) |" % (
              label, seconds, 100 * host_stat / seconds, host_stat, 100 * host_ns / seconds,
              host_ns * 1000, window["n_threads"], 100 * kids_stat / seconds, 100 * kids_ns / seconds,
              window["n_children"]))


def report_threads(label, window):
    seconds = window["seconds"]
    print("\n%s, host threads over the window (schedstat; living at both ends):\n" % label)
    print("| thread name | threads | CPU | share of one core | times scheduled per second |")
    print("|---|---|---|---|---|")
    rows = sorted(window["threads"].items(), key=lambda kv: -kv[1][0])
    for name, (ns, runs, count) in rows:
        print("| `%s` | %d | %.1f ms | %.4f %% | %.1f |" % (
            name, count, ns / 1e6, 100 * ns / 1e9 / seconds, runs / seconds))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rosey", nargs="?", default=os.path.join(ROOT, "target", "release", "rosey"))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rss-minutes", type=float, default=3.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    rosey = os.path.abspath(args.rosey)
    plugin_binaries = [os.path.join(os.path.dirname(rosey), b) for b in ["rosey-dice-roller", "rosey-8ball"]]
    for binary in [rosey] + plugin_binaries:
        if not os.access(binary, os.X_OK):
            sys.exit("%s is missing: cargo build --release -p rosey-bin -p rosey-dice-roller "
                     "-p rosey-8ball" % binary)
    started = time.monotonic()
    print("%s, %d CPUs, load average %s, %s" % (
        datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), os.cpu_count(), loadavg(), rosey))
    base = tempfile.mkdtemp(prefix="rosey-bot-bench-")
    bots = []
    try:
        # 1. start → ready
        fresh = start_runs(rosey, base, args.runs, existing=False)
        existing = start_runs(rosey, base, args.runs, existing=True)
        print("\nstart → ready, %d runs each (phases: median ms from exec to the first line of "
              "%s, by the log's clock):\n" % (args.runs, " / ".join("`%s`" % p for p in PHASES)))
        print("| database | p50 | p95 | max | phases (p50) | SIGTERM → exit (p50) |")
        print("|---|---|---|---|---|---|")
        report_start("fresh (created and migrated at start)", *fresh)
        report_start("existing (a week of saved tiers, 10 000 audit rows, 20 000 events, 1 000 keys)",
                     *existing)
        print("\nOn the existing database the dice-roller's 7 d history had %d quarter buckets "
              "(the API, after the last run's ready)." % existing[3])

        # 2 and 3. The 10-plugin bot (poll 1 s) and the default-config bot (poll 5 s), side by side.
        many = tempfile.mkdtemp(prefix="ten-", dir=base)
        names = dice_copies(many, 10)
        metrics = {"poll_interval": 1, "history_duration": RAW_RING}
        write_config(many, metrics)
        create_database(rosey, many)
        seed(many, names + [ADMIN], minutes=60, quarters=4)
        port = write_config(many, metrics)["dashboard"]["port"]
        ten = Bot(rosey, many)
        bots.append(ten)
        ten.wait_ready()
        timeline = [(0.0, memory(ten.pid)["rss"])]

        plain = tempfile.mkdtemp(prefix="default-", dir=base)
        copy_bundled_plugins(plain)
        write_config(plain)
        default = Bot(rosey, plain)
        bots.append(default)
        default.wait_ready()
        many5 = tempfile.mkdtemp(prefix="ten-default-", dir=base)
        dice_copies(many5, 10)
        write_config(many5)
        ten5 = Bot(rosey, many5)
        bots.append(ten5)
        ten5.wait_ready()
        idle_bots = [
            ("default config: dice-roller, 8ball, admin, dashboard, SQLite, metrics poll 5 s", default),
            ("the same with 10 dice-roller copies instead of the two plugins", ten5),
            ("10 copies, metrics poll 1 s (the memory run)", ten),
        ]
        time.sleep(IDLE_DELAY)

        def sample_until(deadline):
            while time.monotonic() < deadline:
                time.sleep(max(0.0, min(10.0, deadline - time.monotonic())))
                timeline.append((time.monotonic() - ten.ready_at, memory(ten.pid)["rss"]))

        windows = [Window(bot.pid) for _, bot in idle_bots]
        sample_until(windows[0].t0 + args.idle_seconds)
        closed = [w.close() for w in windows]
        for bot in [default, ten5]:
            bot.stop()
            bots.remove(bot)
        sample_until(ten.ready_at + args.rss_minutes * 60)
        polled = time.monotonic() - ten.ready_at
        final = memory(ten.pid)
        kinds, anonymous = smaps_breakdown(ten.pid, rosey)
        kids = children_memory(ten.pid)
        # Asked after the memory was read: the answers allocate in the host.
        points = {w: api_points(port, "dice-0", w) for w in ["5m", "1h", "7d"]}

        print("\nidle CPU, no chat, %.0f s from %.0f s after ready, percent of one core: utime+stime "
              "of /proc/<pid>/stat (%d ticks a second) and the sum of the living threads' "
              "/proc/<pid>/task/*/schedstat (ns):\n" % (args.idle_seconds, IDLE_DELAY, CLK_TCK))
        print("| bot | window | host, stat | host, schedstat | children, stat | children, schedstat |")
        print("|---|---|---|---|---|---|")
        for (label, _), window in zip(idle_bots, closed):
            report_idle(label, window)
        for (label, _), window in zip(idle_bots, closed):
            report_threads(label, window)

        # The collector polls every second from its start, just before ready.
        samples = min(int(polled) + 1, RAW_RING)
        allocated = min(RAW_RING, -(-samples // RING_GROWTH) * RING_GROWTH)
        plugins = len(names) + 1
        missing_kb = (RAW_RING - allocated) * SAMPLE_BYTES * plugins / 1024.0
        print("\nhost memory, 10 plugins + admin, 1 h of saved tiers loaded, poll 1 s, %.1f min "
              "after ready (dice-0 per the API: %d raw samples in the last 5 min, %d minute buckets "
              "in the last hour, %d quarter buckets in 7 days):\n"
              % (polled / 60, points["5m"], points["1h"], points["7d"]))
        print("| measure | value |")
        print("|---|---|")
        print("| VmRSS at ready | %.2f MB |" % mb(timeline[0][1]))
        print("| VmRSS after %.1f min | **%.2f MB** (anon %.2f, file %.2f; PSS %.2f, private %.2f) |" % (
            polled / 60, mb(final["rss"]), mb(final["anon"]), mb(final["file"]), mb(final["pss"]),
            mb(final["private"])))
        print("| VmHWM | %.2f MB |" % mb(final["hwm"]))
        print("| raw ring not yet filled: (%d − %d allocated) samples × %d B × %d plugins | %.2f MB |" % (
            RAW_RING, allocated, SAMPLE_BYTES, plugins, missing_kb / 1024))
        print("| estimate for a full hour: VmRSS + the unfilled ring | **%.2f MB** |"
              % mb(final["rss"] + missing_kb))
        # The same from what RSS did: its growth per poll since the start-up settled, times the
        # polls still to come before the ring is full.
        early_t, early_kb = next(((t, kb) for t, kb in timeline if t >= 15), timeline[0])
        per_poll = (final["rss"] - early_kb) / max(polled - early_t, 1.0)
        print("| estimate from the growth measured since %.0f s after ready (%.2f kB a poll) × %d "
              "polls to come | %.2f MB |" % (early_t, per_poll, RAW_RING - samples,
                                            mb(final["rss"] + per_poll * (RAW_RING - samples))))
        print("\nVmRSS over time (s after ready: MB): " + ", ".join(
            "%.0f: %.2f" % (t, mb(kb)) for t, kb in timeline))
        print("\nhost resident memory by mapping (smaps):\n")
        print("| mapping | resident |")
        print("|---|---|")
        for kind, kb in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print("| %s | %.2f MB |" % (kind, mb(kb)))
        print("\nlargest anonymous mappings, resident kB: %s (of %d)" % (
            ", ".join(str(kb) for kb in anonymous[:6]), len(anonymous)))
        print("\nchildren (depth 1: the launchers, forks of the host; depth 2: the plugins):\n")
        print("| pid | depth | program | RSS | PSS | private |")
        print("|---|---|---|---|---|---|")
        for child, depth, name, m in kids:
            print("| %d | %d | %s | %.2f MB | %.2f MB | %.2f MB |" % (
                child, depth, name, mb(m["rss"]), mb(m["pss"]), mb(m["private"])))
        print("| | | **total** | %.2f MB | %.2f MB | %.2f MB |" % tuple(
            mb(sum(m[k] for *_, m in kids)) for k in ["rss", "pss", "private"]))
        ten.stop()
        bots.remove(ten)
    finally:
        for bot in bots:
            try:
                bot.stop()
            except RuntimeError as error:
                print("warning: %s" % error, file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)
    print("\nwhole script: %.0f s, load average at the end %s" % (time.monotonic() - started, loadavg()))


if __name__ == "__main__":
    main()
