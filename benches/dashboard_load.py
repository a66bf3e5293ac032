#!/usr/bin/env python3
"""Load script: the dashboard's `/api/metrics` under HTTP load, and the bot's command path meanwhile.

Targets (dashboard issue): with 50 plugins loaded, `GET /api/metrics` answers ≥ 20,000 requests/s with
p99 < 2 ms on a 2-core machine, and the bot's command path p99 does not change while the dashboard is
under load (both measured in the same run).

Usage (release build, from the repository root):
    cargo build --release -p rosey-bin -p rosey-dice-roller
    python3 benches/dashboard_load.py [path/to/rosey] [-t THREADS] [-c CONNECTIONS] [--delay-ms MS]
                                      [--pin] [--gzip] [--control]

It starts `rosey run` on the console (in-process bus, SQLite in a temp dir, the dashboard on a free port
of 127.0.0.1) with 50 copies of the dice-roller (`rosey-dice-roller`, found next to `rosey`). Phase A
(10 s) times chat commands (`alice: !roll 1d6`, `bob: !flip`) at 50 a second, each from the line written
on stdin to the answer read on stdout. Phase B (15 s) times the same commands while `wrk` loads
`/api/metrics` over loopback. It prints HTTP requests/s and latency, command p50/p99/max in both phases,
the CPU used by rosey, its plugins, wrk and the whole machine, how long the threads on the command
path waited for a CPU (`/proc/<pid>/task/*/schedstat`), and rosey's peak RSS.

wrk saturates the server unless `--delay-ms` paces each connection (about connections / delay requests
a second). `--pin` runs wrk on CPU 0 and rosey (with its plugins) on CPU 1; `--gzip` asks for
compressed answers, as a browser does; `--control` points wrk at a second, idle `rosey run` instead,
to tell what the machine's contention costs the command path from what the node's own dashboard does.
Needs `wrk` (`apt-get install -y wrk`). Local processes only; it stops by itself in about 30 s.

The dice-roller answers only the commands it was built with (`roll`, `flip`; the SDK dispatches on the
command word), so `dice-00` owns those two and the 49 others own a command each that nobody sends
(`roll01`…`roll49`). All 50 run, are probed with `!roll 1d20` at start (the probe goes straight to the
instance) and are sampled and listed by the dashboard; the commands timed all go through `dice-00`.
"""
import argparse
import json
import re
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGINS = 50
BASELINE_SECS = 10
LOAD_SECS = 15
PROBE_INTERVAL = 0.02  # 50 commands a second
PROBES = [("alice: !roll 1d6", "🎲 ["), ("bob: !flip", "🪙 ")]
READY_DEADLINE = 10
ANSWER_TIMEOUT = 5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# wrk's own percentiles, in microseconds, as one JSON line at the end of its output.
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "p50": %d, "p90": %d, "p99": %d,'
    .. ' "p999": %d, "max": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, e.connect, e.read, e.write,
    e.status, e.timeout))
end
"""
# With --delay-ms: each connection waits that long after an answer before its next request, which
# paces the load at about connections / (delay + latency) requests a second instead of saturating.
WRK_DELAY_LUA = """
delay = function()
  return %d
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plugin_dir(root, dice):
    with open(os.path.join(ROOT, "plugins", "dice-roller", "plugin.toml")) as f:
        manifest = f.read()
    plugins = os.path.join(root, "plugins")
    for n in range(PLUGINS):
        name = "dice-%02d" % n
        commands = '["roll", "flip"]' if n == 0 else '["roll%02d"]' % n
        text = (manifest.replace('name = "dice-roller"', 'name = "%s"' % name)
                .replace('exec = ["rosey-dice-roller"]', "exec = [%s]" % json.dumps(dice)))
        # The command list: on one line, or over several (tables with `description` and `usage`).
        text = re.sub(r"^commands = \[[^\n#]*\][^\n]*$|^commands = \[[^\n]*\n(?s:.*?)^\]",
                      "commands = %s" % commands, text, count=1, flags=re.M)
        assert name in text and dice in text and commands in text, "plugins/dice-roller/plugin.toml changed"
        os.makedirs(os.path.join(plugins, name))
        with open(os.path.join(plugins, name, "plugin.toml"), "w") as f:
            f.write(text)
    return plugins


def cpu_seconds(pid):
    """User + system CPU of one process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_table():
    """{pid: (parent pid, user + system CPU seconds)} of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
            except (OSError, ValueError, IndexError):
                pass  # gone meanwhile
    return table


def below(table, root):
    """The pids of every process below `root` in `table`."""
    def under(pid):
        while pid in table:
            pid = table[pid][0]
            if pid == root:
                return True
        return False

    return [pid for pid in table if under(pid)]


def descendants_cpu_seconds(root):
    """User + system CPU of every process below `root` (the plugins and their supervisors)."""
    table = process_table()
    return sum(table[pid][1] for pid in below(table, root))


def run_queue_seconds(pids):
    """Time the threads of `pids` have spent runnable but waiting for a CPU (`schedstat`), summed."""
    total = 0
    for pid in pids:
        try:
            for task in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/schedstat" % (pid, task)) as f:
                    total += int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            pass  # gone meanwhile, or no schedstat in this kernel
    return total / 1e9


def machine_cpu_seconds():
    """(busy, all) CPU seconds of the whole machine so far, every core summed."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / CLOCK_TICKS, sum(ticks) / CLOCK_TICKS


def peak_rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class Console:
    """Rosey's console: commands written on stdin, answers read off stdout in this thread."""

    def __init__(self, host):
        self.host = host
        self.fd = host.stdout.fileno()
        self.buffer = b""

    def line(self, deadline):
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError("no answer from rosey")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("rosey closed its stdout")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def ask(self, command, expect):
        """Seconds from writing `command` to reading its answer (`rosey: ...` containing `expect`)."""
        start = time.monotonic()
        self.host.stdin.write((command + "\n").encode())
        self.host.stdin.flush()
        deadline = start + ANSWER_TIMEOUT
        while True:
            line = self.line(deadline)
            if line.startswith("rosey: ") and expect in line:
                return time.monotonic() - start


def time_commands(console, until):
    """Commands at a steady 50 a second, one at a time, until `until()` is true; their times in ms."""
    times = []
    next_at = time.monotonic()
    while not until():
        command, expect = PROBES[len(times) % len(PROBES)]
        times.append(console.ask(command, expect) * 1000)
        next_at += PROBE_INTERVAL
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()
    return times


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(len(ordered) * p / 100.0)) - 1))]


def start_rosey(command, root, name, plugins):
    """`rosey run` on the console with `plugins`, its dashboard on a free port; (process, base URL,
    stderr file)."""
    port = free_port()
    os.makedirs(os.path.join(root, name))
    config = os.path.join(root, name, "config.json")
    with open(config, "w") as f:
        json.dump({
            "plugin_dir": plugins,
            "dashboard": {"host": "127.0.0.1", "port": port},
            "database": {"url": "sqlite://%s/rosey.db" % os.path.join(root, name)},
            "logging": {"file": None, "level": "warn"},
        }, f)
    stderr_path = os.path.join(root, name, "stderr.log")
    with open(stderr_path, "w") as stderr:
        # stdin stays open: the console stops reading (and `rosey run` ends) at the end of its input.
        process = subprocess.Popen(command + ["run", "--config", config], cwd=os.path.join(root, name),
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
    return process, "http://127.0.0.1:%d" % port, stderr_path


def wait_ready(base, host):
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        if host.poll() is not None:
            sys.exit("rosey exited with %s before it was ready" % host.returncode)
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return time.monotonic() - (deadline - READY_DEADLINE)
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("rosey not ready within %d s" % READY_DEADLINE)


def run(args):
    rosey = os.path.abspath(args.rosey)
    dice = os.path.join(os.path.dirname(rosey), "rosey-dice-roller")
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is missing: apt-get install -y wrk")
    for path in (rosey, dice):
        if not os.access(path, os.X_OK):
            sys.exit("%s is missing: cargo build --release -p rosey-bin -p rosey-dice-roller" % path)
    pin_rosey = ["taskset", "-c", "1"] if args.pin else []
    pin_wrk = ["taskset", "-c", "0"] if args.pin else []
    with tempfile.TemporaryDirectory() as root:
        lua = os.path.join(root, "report.lua")
        with open(lua, "w") as f:
            f.write(WRK_LUA + (WRK_DELAY_LUA % args.delay_ms if args.delay_ms else ""))
        plugins = plugin_dir(root, dice)
        host, base, stderr_path = start_rosey(pin_rosey + [rosey], root, "node", plugins)
        hosts = [host]
        wrk_process = None
        try:
            ready_secs = wait_ready(base, host)
            target = base + "/api/metrics"
            if args.control:
                control, control_base, _ = start_rosey(pin_rosey + [rosey], root, "control", plugins)
                hosts.append(control)
                wait_ready(control_base, control)
                target = control_base + "/api/metrics"
            console = Console(host)
            start = time.monotonic()
            with urllib.request.urlopen(base + "/api/metrics", timeout=5) as answer:
                body = answer.read()
            first_ms = (time.monotonic() - start) * 1000
            metrics = json.loads(body)
            running = metrics["system"]["plugins_running"]
            if running != PLUGINS:
                sys.exit("%d of %d plugins running" % (running, PLUGINS))
            for command, expect in PROBES:  # warm-up
                console.ask(command, expect)
            answering = next(p["pid"] for p in metrics["plugins"] if p["name"] == "dice-00")
            watched = {"this script": [os.getpid()],
                       "dice-00": [answering] + below(process_table(), answering),
                       "rosey (all its threads, HTTP included)": [host.pid]}

            def waits():
                return {name: run_queue_seconds(pids) for name, pids in watched.items()}

            # Phase A: the command path alone.
            cpu_a = (cpu_seconds(host.pid), descendants_cpu_seconds(host.pid), time.monotonic())
            waits_a = waits()
            end = time.monotonic() + BASELINE_SECS
            baseline = time_commands(console, lambda: time.monotonic() >= end)
            waits_a = {name: seconds - waits_a[name] for name, seconds in waits().items()}
            cpu_a = [(now - then) for now, then in
                     zip((cpu_seconds(host.pid), descendants_cpu_seconds(host.pid), time.monotonic()), cpu_a)]

            # Phase A asked nothing of the dashboard for 10 s: this request waits for a new snapshot.
            start = time.monotonic()
            with urllib.request.urlopen(base + "/api/metrics", timeout=5) as answer:
                answer.read()
            stale_ms = (time.monotonic() - start) * 1000

            # Phase B: the same while wrk loads /api/metrics.
            command = pin_wrk + [wrk, "-t%d" % args.threads, "-c%d" % args.connections,
                                 "-d%ds" % LOAD_SECS, "--latency", "-s", lua]
            if args.gzip:
                command += ["-H", "Accept-Encoding: gzip"]
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            self_before = resource.getrusage(resource.RUSAGE_SELF)
            machine_before = machine_cpu_seconds()
            cpu_b = (cpu_seconds(host.pid), descendants_cpu_seconds(host.pid), time.monotonic())
            control_before = cpu_seconds(hosts[-1].pid) if args.control else 0.0
            waits_b = waits()
            wrk_process = subprocess.Popen(command + [target], stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)
            loaded = time_commands(console, lambda: wrk_process.poll() is not None)
            waits_b = {name: seconds - waits_b[name] for name, seconds in waits().items()}
            wrk_output = wrk_process.communicate(timeout=LOAD_SECS + 10)[0]
            cpu_b = [(now - then) for now, then in
                     zip((cpu_seconds(host.pid), descendants_cpu_seconds(host.pid), time.monotonic()), cpu_b)]
            control_cpu = cpu_seconds(hosts[-1].pid) - control_before if args.control else 0.0
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            self_after = resource.getrusage(resource.RUSAGE_SELF)
            machine_after = machine_cpu_seconds()
            self_cpu = (self_after.ru_utime + self_after.ru_stime
                        - self_before.ru_utime - self_before.ru_stime)
            wrk_cpu = (children_after.ru_utime + children_after.ru_stime
                       - children_before.ru_utime - children_before.ru_stime)
            rss = peak_rss_mb(host.pid)
            with urllib.request.urlopen(base + "/api/metrics", timeout=5) as answer:
                after = json.load(answer)
        finally:
            if wrk_process is not None and wrk_process.poll() is None:
                wrk_process.kill()
                wrk_process.wait()
            for process in hosts:
                process.send_signal(signal.SIGTERM)
            for process in hosts:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        with open(stderr_path) as f:
            # The 50 copies of the dice-roller say their name is `dice-roller`: expected, left out.
            warnings = [line.rstrip() for line in f
                        if line.strip() and "plugin reports another name" not in line]

    result = next((l for l in wrk_output.splitlines() if l.startswith("RESULT ")), None)
    if result is None:
        sys.exit("wrk said:\n" + wrk_output)
    http = json.loads(result[len("RESULT "):])
    errors = {k: http[k] for k in ("connect", "read", "write", "status", "timeout") if http[k]}
    rate = http["requests"] / (http["duration_us"] / 1e6)

    def share(seconds, wall):
        return "%.1f %%" % (seconds / wall * 100)

    def pacing():
        return ", %d ms between requests on each connection" % args.delay_ms if args.delay_ms else ""

    print("rosey %s, %d plugins, ready in %.1f s, first /api/metrics %.1f ms (%d bytes), after 10 s "
          "without requests %.1f ms, %s"
          % (rosey, PLUGINS, ready_secs, first_ms, len(body), stale_ms,
             "pinned: wrk on CPU 0, rosey and plugins on CPU 1" if args.pin else "not pinned"))
    print("wrk -t%d -c%d -d%ds%s%s%s: %d requests, %.0f requests/s, %.1f MB/s, p50 %.3f ms, p90 %.3f ms, "
          "p99 %.3f ms, p99.9 %.3f ms, max %.3f ms, errors %s"
          % (args.threads, args.connections, LOAD_SECS, " (Accept-Encoding: gzip)" if args.gzip else "",
             pacing(), " against a second rosey (control)" if args.control else "",
             http["requests"], rate, http["bytes"] / (http["duration_us"] / 1e6) / 1e6, http["p50"] / 1000,
             http["p90"] / 1000, http["p99"] / 1000, http["p999"] / 1000, http["max"] / 1000,
             errors or "none"))
    print("CPU in % of one core; plugins = the 50 plugin processes and their supervisors")
    print("| phase | commands | p50 | p99 | max | rosey CPU | plugins CPU | wrk CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for name, times, (host_cpu, plugins_cpu, wall), client in (
            ("A: commands alone", baseline, cpu_a, "—"),
            ("B: under HTTP load", loaded, cpu_b, share(wrk_cpu, cpu_b[2]))):
        print("| %s | %d | %.2f ms | %.2f ms | %.2f ms | %s | %s | %s |"
              % (name, len(times), percentile(times, 50), percentile(times, 99), max(times),
                 share(host_cpu, wall), share(plugins_cpu, wall), client))
    busy, total = (after - before for after, before in zip(machine_after, machine_before))
    others = max(0.0, busy - (cpu_b[0] + cpu_b[1] + wrk_cpu + self_cpu + control_cpu))
    if args.control:
        print("phase B: the second rosey (the one under load) used %s of a core" % share(control_cpu, cpu_b[2]))
    print("phase B: this script (command timing) used %s of a core; the machine's %d cores were %.0f %% "
          "busy, %.0f %% of them with work not counted above (kernel, other processes)"
          % (share(self_cpu, cpu_b[2]), os.cpu_count(), busy / total * 100, others / total * 100))
    print("waiting for a CPU (run queue, schedstat) per command, A → B: %s"
          % ", ".join("%s %.0f → %.0f µs" % (name, waits_a[name] / len(baseline) * 1e6,
                                             waits_b[name] / len(loaded) * 1e6) for name in waits_a))
    print("rosey peak RSS %.1f MB; events counted by the dashboard afterwards: %d; plugins running: %d"
          % (rss, after["system"]["total_events"], after["system"]["plugins_running"]))
    if warnings:
        print("rosey's stderr (%d lines), first ones:" % len(warnings))
        for line in warnings[:5]:
            print("  " + line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rosey", nargs="?", default=os.path.join(ROOT, "target", "release", "rosey"))
    parser.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("-c", "--connections", type=int, default=4, help="wrk connections (default 4)")
    parser.add_argument("--pin", action="store_true", help="wrk on CPU 0, rosey and its plugins on CPU 1")
    parser.add_argument("--gzip", action="store_true", help="send Accept-Encoding: gzip")
    parser.add_argument("--control", action="store_true",
                        help="load a second rosey's dashboard instead: what the machine's contention alone costs")
    parser.add_argument("--delay-ms", type=int, default=0,
                        help="pause of each connection between requests (default 0: saturate)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
