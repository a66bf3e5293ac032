#!/usr/bin/env python3
"""Load script: how fast a calm plugin answers while a hostile one floods a real `rosey run`.

Target (issue 10): under every flood the other plugins answer within 100 ms, and the host stays under
64 MB (the memory bound is also checked by the CLI tests in rosey-bin/tests/cli/floods.rs).

Usage (release build, from the repository root):
    cargo build --release -p rosey-bin && python3 benches/floods.py [path/to/rosey]

It starts `rosey run` on the console with two copies of the host tests' testbed plugin (`calm`,
`hostile`), sends one flood command to `hostile`, and meanwhile asks `calm` to echo 50 times, one after
another, timing each answer on stdout. It prints p50/p99/max per flood and the host's peak RSS. Local
processes only; it stops by itself.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time
import queue

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROSEY = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "rosey")
TESTBED = os.path.join(ROOT, "rosey-core", "tests", "plugins", "testbed.py")
FLOODS = [
    "big-replies 400 1000",
    "requests 1000000",
    "log-flood 300000",
    "flood-stderr 100",
    "flood-stdout 100",
]
PROBES = 50


def plugin_dir(root):
    plugins = os.path.join(root, "plugins")
    for name in ["calm", "hostile"]:
        os.makedirs(os.path.join(plugins, name))
        with open(os.path.join(plugins, name, "plugin.toml"), "w") as f:
            f.write('name = "%s"\nversion = "1.0.0"\nexec = ["python3", "%s"]\ncommands = ["%s"]\n'
                    "[timeouts]\nevent_secs = 60\n" % (name, TESTBED, name))
    return plugins


def peak_rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_flood(flood):
    with tempfile.TemporaryDirectory() as root:
        config = os.path.join(root, "config.json")
        with open(config, "w") as f:
            f.write('{"plugin_dir": "%s", "logging": {"file": null, "level": "warn"}}' % plugin_dir(root))
        host = subprocess.Popen([ROSEY, "run", "--config", config], cwd=root, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l.rstrip("\n")) for l in host.stdout], daemon=True).start()

        def ask(plugin, word, timeout=60):
            start = time.monotonic()
            host.stdin.write("bob: !%s echo %s\n" % (plugin, word))
            host.stdin.flush()
            while True:
                line = lines.get(timeout=timeout)
                if line == "rosey: " + word:
                    return time.monotonic() - start

        try:
            ask("calm", "up")
            ask("hostile", "up")
            host.stdin.write("mallory: !hostile %s\n" % flood)
            host.stdin.flush()
            times = sorted(ask("calm", "p%d" % i) for i in range(PROBES))
            ask("hostile", "after", timeout=300)
            rss = peak_rss_mb(host.pid)
        finally:
            host.kill()
            host.wait()
        ms = [t * 1000 for t in times]
        return ms[len(ms) // 2], ms[int(len(ms) * 0.99) - 1], ms[-1], rss


def main():
    print("| flood | calm p50 | calm p99 | calm max | host peak RSS |")
    print("|---|---|---|---|---|")
    for flood in FLOODS:
        p50, p99, worst, rss = run_flood(flood)
        print("| `%s` | %.1f ms | %.1f ms | %.1f ms | %.1f MB |" % (flood, p50, p99, worst, rss))


if __name__ == "__main__":
    main()
