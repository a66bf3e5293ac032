#!/usr/bin/env python3
"""Load script: commands per second with one, two and three `rosey run` nodes on one NATS server.

Issue 17, item 5: "commands per second with one, two and three nodes on this machine (the shape
matters more than the figure on 2 cores)". Failover time is measured by the test
`rosey-bin/tests/cli/cluster.rs` (a SIGKILLed holder is replaced within the lease's ttl, 5 s).

Usage (release build, from the repository root):
    cargo build --release -p rosey-bin -p rosey-dice-roller
    python3 benches/cluster.py [path/to/rosey] [--commands 3000] [--runs 3]

For each node count N (1, 2, 3): a throwaway `nats-server -js` on a free port of 127.0.0.1, N nodes
`rosey run` (console connector, node names n1…nN, the Rust dice-roller only, dashboard, metrics and
admin off, logs to stderr only), each in its own temporary directory. The first node's console is
fed `--commands` lines `u<i>: !roll 1d6` as fast as its stdin takes them; every command is routed by
one node's router (queue group) and answered by one node's dice-roller (queue group), and the answer
is printed by every node's console; the time from the first line written to the last answer read on
the first node's stdout gives commands per second. Each N is run `--runs` times (fresh servers) and
the median is printed. Loopback only; every process is stopped and every directory removed.
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nats(workdir):
    port = free_port()
    proc = subprocess.Popen(
        ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", os.path.join(workdir, "js")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("nats-server did not start")


def start_node(rosey, workdir, name, nats_url):
    d = os.path.join(workdir, name)
    plugins = os.path.join(d, "plugins", "dice-roller")
    os.makedirs(plugins)
    shutil.copy(os.path.join(ROOT, "plugins", "dice-roller", "plugin.toml"), plugins)
    config = os.path.join(d, "config.json")
    with open(config, "w") as f:
        f.write('{"nats_url": "%s", "node": {"name": "%s"}, "logging": {"file": null},'
                ' "dashboard": {"enabled": false}, "metrics": {"enabled": false}}' % (nats_url, name))
    proc = subprocess.Popen([rosey, "run", "--config", config], cwd=d, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    for line in proc.stderr:
        if "rosey ready" in line:
            break
    else:
        sys.exit(f"{name} did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc


def run_once(rosey, nodes, commands):
    workdir = tempfile.mkdtemp(prefix="rosey-cluster-bench-")
    nats, url = start_nats(workdir)
    procs = []
    try:
        procs = [start_node(rosey, workdir, f"n{i + 1}", url) for i in range(nodes)]
        time.sleep(1.5)  # let the nodes meet (heartbeats), outside the measured span
        first = procs[0]
        answers = [0]
        done = threading.Event()

        def read():
            for line in first.stdout:
                if "🎲" in line:
                    answers[0] += 1
                    if answers[0] >= commands:
                        done.set()
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        began = time.perf_counter()
        for i in range(commands):
            first.stdin.write(f"u{i % 50}: !roll 1d6\n")
        first.stdin.flush()
        if not done.wait(timeout=300):
            sys.exit(f"only {answers[0]} of {commands} answers with {nodes} nodes")
        return commands / (time.perf_counter() - began)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        nats.terminate()
        nats.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rosey", nargs="?", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "rosey"))
    parser.add_argument("--commands", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"rosey: {args.rosey}; {args.commands} commands per run, median of {args.runs} runs")
    for nodes in (1, 2, 3):
        rates = [run_once(args.rosey, nodes, args.commands) for _ in range(args.runs)]
        print(f"{nodes} node(s): {statistics.median(rates):8.0f} commands/s "
              f"(runs: {', '.join(f'{r:.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
