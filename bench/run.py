#!/usr/bin/env python3
"""chatd's benchmark: start chatd on one core, drive it with bench/loadgen.c.

    python3 bench/run.py                      # every workload
    python3 bench/run.py fanout mailbox       # some of them
    python3 bench/run.py fanout --profile py-spy   # and profile the server
    python3 bench/run.py mailbox --repeat 5 --against /tmp/base   # before/after
    python3 bench/run.py ws-fanout ws-idle --repeat 3   # WebSocket beside TCP

Each run starts a fresh server (twistd, pinned to core 0 with taskset where
it exists) and the load generator (pinned to core 1), then prints ONE JSON
line of figures, with the server's peak RSS (VmHWM) added. Every run is
bounded by a hard timeout. See bench/README.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SOURCE = BENCH / "loadgen.c"
# Out of git: build/ is ignored.
BUILD = ROOT / "build" / "bench"

# Each run: the workload, the load generator's arguments, a hard timeout (s).
RUNS: dict[str, list[tuple[list[str], float]]] = {
    # CLIENTS SENDERS MESSAGES(each) WINDOW
    "fanout": [
        (["100", "1", "20000", "64"], 120),
        (["1000", "1", "2000", "64"], 120),
        (["1000", "4", "500", "16"], 120),
    ],
    # CLIENTS ROUNDS
    "mailbox": [(["50", "50"], 60), (["50", "500"], 120)],
    # CLIENTS
    "idle": [(["10000"], 180)],
    # The same over the WebSocket of --web, beside the TCP figures above.
    "ws-fanout": [(["1000", "1", "2000", "64"], 120)],
    "ws-idle": [(["10000"], 240)],
    # CLIENTS
    "join": [(["1000"], 120), (["5000"], 300)],
    # LINE SENDERS BINARY MESSAGES(each) WINDOW
    "cross": [(["500", "4", "500", "500", "64"], 120)],
}


def open_limits(tree: Path) -> list[str]:
    """The options that lift C{tree}'s limits, from its own bench/open_limits.py."""
    path = tree / "bench" / "open_limits.py"
    namespace: dict[str, object] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return list(namespace["OPEN_LIMITS"])  # type: ignore[call-overload]


def raise_nofile() -> None:
    """Let this process and its children open 10,000+ sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build() -> Path:
    binary = BUILD / "loadgen"
    if not binary.exists() or binary.stat().st_mtime < SOURCE.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(binary), str(SOURCE)], check=True
        )
    return binary


def pinned(core: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core), *argv]
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def cpu_pressure() -> float | None:
    """How much of the last 10 s runnable tasks waited for a CPU: the noise."""
    try:
        first = Path("/proc/pressure/cpu").read_text().split()
    except OSError:
        return None
    return float(first[1].split("=")[1])


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until chatd accepts on C{port}; exit, naming its log, if it cannot."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"chatd did not start; see {log}")
            time.sleep(0.05)


class Server:
    """chatd under twistd, listening on one loopback port."""

    def __init__(self, workdir: Path, profile: str | None, tree: Path,
                 extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.log = workdir / "twistd.log"
        self.stats = workdir / "cprofile.stats"
        twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        argv = [*twistd, "-n", "--pidfile=", "--logfile", str(self.log)]
        if profile == "cprofile":
            argv += ["--profile", str(self.stats), "--profiler", "cprofile", "--savestats"]
        # The default listen queue (50) is too short for thousands of connects.
        endpoint = f"tcp:{self.port}:interface=127.0.0.1:backlog=1024"
        argv += ["chatd", "--port", endpoint, *open_limits(tree), *(extra or [])]
        self.web_port = None
        if (tree / "chatd" / "websocket.py").exists():
            # A tree with the web page serves it here: the ws- workloads' port.
            self.web_port = free_port()
            argv += ["--web", f"tcp:{self.web_port}:interface=127.0.0.1:backlog=1024"]
        env = dict(os.environ, PYTHONPATH=str(tree))
        self.proc = subprocess.Popen(
            pinned(0, argv), env=env, cwd=workdir, preexec_fn=raise_nofile
        )
        wait_listening(self.proc, self.port, self.log)
        self.spy: subprocess.Popen[bytes] | None = None
        if profile == "py-spy":
            self.spy_out = workdir / "py-spy.txt"
            self.spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(self.proc.pid), "--format", "raw",
                 "--rate", "200", "--output", str(self.spy_out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(1)

    def peak_kb(self) -> int:
        return vm_kb(self.proc.pid, "VmHWM")

    def stop(self) -> None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            self.spy.wait(60)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def top_cprofile(path: Path, lines: int) -> str:
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(lines)
    text = out.getvalue()
    return text[text.index("   ncalls"):] if "   ncalls" in text else text


def top_pyspy(path: Path, lines: int) -> str:
    """Self time per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        # "function (file.py:LINE)": count each function once, whatever the line.
        leaf = stack.rsplit(";", 1)[-1].rsplit(":", 1)[0] + ")"
        own[leaf] = own.get(leaf, 0) + n
    rows = sorted(own.items(), key=lambda kv: -kv[1])[:lines]
    return "\n".join(f"{100 * n / total:5.1f}%  {name}" for name, n in rows)


def run_one(loadgen: Path, workload: str, args: list[str], timeout: float,
            profile: str | None, top: int, tree: Path, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="chatd-bench-") as tmp:
        server = Server(Path(tmp), profile, tree, extra)
        try:
            port = server.port
            if workload.startswith("ws-"):
                if server.web_port is None:
                    return {"workload": workload, "error": f"{tree} serves no WebSocket"}
                port = server.web_port
            argv = [str(loadgen), workload, str(port), str(server.proc.pid),
                    str(timeout), *args]
            try:
                done = subprocess.run(pinned(1, argv), capture_output=True, text=True,
                                      timeout=timeout + 15, preexec_fn=raise_nofile)
                out = done.stdout.strip().splitlines()
                figures = json.loads(out[-1]) if out else {"error": done.stderr[-300:]}
            except subprocess.TimeoutExpired:
                figures = {"workload": workload, "error": "hard timeout"}
            figures["server_peak_rss_kb"] = server.peak_kb()
            figures["machine_cpu_pressure_pct"] = cpu_pressure()
        finally:
            server.stop()
        if profile == "cprofile" and server.stats.exists():
            print(top_cprofile(server.stats, top), file=sys.stderr)
        elif profile == "py-spy" and server.spy_out.exists():
            print(top_pyspy(server.spy_out, top), file=sys.stderr)
    return figures


def headline(figures: dict) -> float | None:
    """A run's main figure: its rate, or for idle its bytes per connection."""
    for key, value in figures.items():
        if key.endswith("_per_s") or key == "bytes_per_connection":
            return float(value)
    return None


def compare(workload: str, args: list[str], runs: dict[str, list[dict]]) -> dict:
    """The medians of one run's main figure under each tree, and their ratio."""
    medians = {}
    for label, figures in runs.items():
        values = [v for v in map(headline, figures) if v is not None]
        medians[label] = statistics.median(values) if values else None
    this, base = medians.get("this"), medians.get("against")
    return {"compare": workload, "args": args, "median_against": base, "median_this": this,
            "ratio": round(this / base, 3) if this and base else None}


def per_cpu(runs: dict[str, list[dict]]) -> dict:
    """Medians of work per server CPU second, and their ratio: on a busy
    machine, where the server gets a varying share of its core, the steadier figure."""
    medians = {}
    for label, figures in runs.items():
        values = [v for f in figures for k, v in f.items() if k.endswith("_per_server_cpu_s")]
        medians[label] = statistics.median(values) if values else None
    this, base = medians.get("this"), medians.get("against")
    if not this or not base:
        return {}
    return {"per_cpu_median_tcp": base, "per_cpu_median_ws": this,
            "per_cpu_ratio": round(this / base, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*", choices=[*RUNS, []], metavar="workload",
                        help=f"any of {', '.join(RUNS)} (default: all)")
    parser.add_argument("--profile", choices=["cprofile", "py-spy"],
                        help="profile the server; its top functions go to stderr")
    parser.add_argument("--top", type=int, default=15, help="profile lines to show")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each workload")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the chatd source tree to run (default: this one)")
    parser.add_argument("--against", type=Path, metavar="TREE",
                        help="another chatd tree, run turn about with --tree; each run "
                             "is tagged, and a last line per workload gives the medians "
                             "of both and their ratio")
    parser.add_argument("--chatd-args", default="", metavar="ARGS",
                        help="more options for the server of --tree, one string: "
                             "--chatd-args='--metrics tcp:0:interface=127.0.0.1'")
    parser.add_argument("--against-args", default="", metavar="ARGS",
                        help="more options for the server of --against")
    options = parser.parse_args()
    extra = {"this": shlex.split(options.chatd_args),
             "against": shlex.split(options.against_args)}
    trees = {"this": options.tree.resolve()}
    if options.against is not None:
        # The other tree runs first in each pair, so neither always goes first
        # into a machine that is warming up or getting busier.
        trees = {"against": options.against.resolve(), **trees}
    raise_nofile()
    loadgen = build()
    for workload in options.workloads or RUNS:
        # A WebSocket workload runs turn about with its TCP twin, same arguments.
        kinds = [workload[3:], workload] if workload.startswith("ws-") else [workload]
        for args, timeout in RUNS[workload]:
            runs = {kind: {label: [] for label in trees} for kind in kinds}
            for _ in range(options.repeat):
                for kind in kinds:
                    for label, tree in trees.items():
                        figures = run_one(loadgen, kind, args, timeout, options.profile,
                                          options.top, tree, extra[label])
                        if extra[label]:
                            figures["chatd_args"] = extra[label]
                        if options.against is not None:
                            figures["tree"] = label
                        runs[kind][label].append(figures)
                        print(json.dumps(figures), flush=True)
            if options.against is not None:
                for kind in kinds:
                    print(json.dumps(compare(kind, args, runs[kind])), flush=True)
            if len(kinds) == 2:
                tcp, ws = kinds
                beside = {"against": runs[tcp]["this"], "this": runs[ws]["this"]}
                line = compare(f"{ws} / {tcp}", args, beside)
                line["median_tcp"] = line.pop("median_against")
                line["median_ws"] = line.pop("median_this")
                line.update(per_cpu(beside))
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
