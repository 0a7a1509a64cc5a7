"""A/B of two fastconv checkouts in one session: timings, or results bit for bit.

    python bench/bench_ab.py BEFORE AFTER                      # every case of bench_ops.py
    python bench/bench_ab.py BEFORE AFTER resnet stem --repeats 11 --threads 1
    python bench/bench_ab.py BEFORE AFTER --json ab.json
    python bench/bench_ab.py --bits BEFORE AFTER               # bench cases + edge cases
    python bench/bench_ab.py --bits BEFORE AFTER edge tiny     # some of them

BEFORE and AFTER are checkouts built in place (``python setup.py build_ext --inplace``). Each
runs in its own long-lived worker (bench/_ab_worker.py) started with that checkout alone on
PYTHONPATH, a temporary directory as its current directory and the same environment (thread
settings included); the worker reports the fastconv it imported, and the run stops unless it
is the checkout's own. The worker calls only fastconv's public functions, so any two
revisions since 0f2fc12 can be compared.

Timing: for every case of fastconv.benchmark (CONV_CASES and POOL_CASES, the ones both sides
define alike) and each of its ops (conv2d and conv2d_backward, or the pooling op and its
backward), called exactly as benchmark.py calls them on the same seeded inputs, the two workers
take turns: a block of BEFORE (after a pause of SETTLE seconds so that the other side's idle
OpenMP threads stop spinning on the shared cores, one untimed call, then --per-block timed
calls), then a block of AFTER, the order alternating every round; rounds repeat until
--repeats rounds and --min-seconds have passed. The table gives the median per call of each
side over all its calls and their ratio after/before (below 1: AFTER is faster), then the
ratios of each round's two block medians (taken seconds apart at most, so a change in the
machine's load between rounds cancels out of them): their median and quartiles, marked with
``*`` where both quartiles lie on one side of 1; and ``min a/b``, the ratio of the two sides'
fastest calls (the least disturbed by other processes). The header and summary give the load
average: on a shared machine other processes' threads take the cores from the workers' (a
two-thread parallel region waits for a thread that is not running), the main source of noise.
With BEFORE = AFTER the spread of after/before around 1 is the tool's noise floor. The workers
inherit this process's environment: ``OMP_WAIT_POLICY=passive python bench/bench_ab.py ...``
times both sides with sleeping instead of spinning OpenMP threads (the header lists every
OMP_*, FASTCONV_* and BLAS setting the two share).

--bits: the bench cases and EDGE_CASES of _ab_worker.py (strides, dilations, padding modes,
groups, depthwise up to 16384 channels, pointwise, the path thresholds, NaN/inf inputs,
pooling and padding edge geometries) in float32 and float64, on 1 and 2 threads: every public
result (conv2d, conv2d_backward's three gradients, with and without ``need``, max pooling with
and without indices, average pooling, both backwards, pad2d and its backward) must have the
same shape, dtype, C-contiguity and bytes (NaN patterns and signed zeros included) in both;
an op that
raises must raise the same exception type in both. Each difference is printed with the
largest absolute difference there; the exit status is 1 if any. The two workers compute at
the same time, with OMP_WAIT_POLICY=PASSIVE unless it is set (results do not depend on it; on
a loaded machine spinning barriers made a tiny two-thread call take 100 ms).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.machinery
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import _ab_worker
from _ab_worker import EDGE_CASES, bench_case

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ab_worker.py")
# as fastconv.benchmark.SETTLE_SECONDS (the parent never imports fastconv)
SETTLE_SECONDS = 0.2
ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_", "FASTCONV_", "OPENBLAS_", "MKL_", "ATEN_", "ONEDNN_")


# ---------------------------------------------------------------- checkouts and workers
def checkout_info(path):
    """The commit of checkout ``path`` (git rev-parse) and whether its tracked files differ
    from it; raises SystemExit when it is not a checkout built in place."""
    root = os.path.realpath(path)
    package = os.path.join(root, "fastconv")
    if not os.path.isdir(package):
        raise SystemExit(f"{path}: no fastconv/ folder: not a fastconv checkout")
    built = [name for name in os.listdir(package)
             if any(name.endswith(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES)]
    if not built:
        raise SystemExit(f"{path}: fastconv/ has no compiled extensions; build it in place "
                         f"(cd {path} && python setup.py build_ext --inplace -j 2)")
    info = {"path": root, "commit": "unknown", "dirty": None, "stale": []}
    try:
        info["commit"] = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], check=True,
                                        capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "-C", root, "status", "--porcelain",
                                 "--untracked-files=no"], check=True, capture_output=True,
                                text=True).stdout
        info["dirty"] = bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    # tracked sources edited after the build: the timings would be of older code
    built_at = min(os.path.getmtime(os.path.join(package, name)) for name in built)
    try:
        tracked = subprocess.run(["git", "-C", root, "ls-files", "src", "setup.py"],
                                 check=True, capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        tracked = []
    info["stale"] = sorted(name for name in tracked if os.path.exists(os.path.join(root, name))
                           and os.path.getmtime(os.path.join(root, name)) > built_at)
    return info


def describe(info):
    dirty = {True: " (dirty)", False: "", None: " (dirty: unknown)"}[info["dirty"]]
    return f"{info['commit'][:12]}{dirty} {info['path']}"


class Worker:
    """One checkout's worker process: requests in, replies out (see _ab_worker.main)."""

    def __init__(self, label, checkout, env, workdir):
        self.label = label
        env = dict(env, PYTHONPATH=checkout)
        self.process = subprocess.Popen([sys.executable, "-u", WORKER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, cwd=workdir, env=env)
        self.info = self._reply()
        expected = os.path.join(checkout, "fastconv", "__init__.py")
        if self.info["file"] != expected or any(
                not path.startswith(os.path.join(checkout, "fastconv") + os.sep)
                for path in self.info["extensions"].values()):
            self.close()
            raise SystemExit(f"{label}: the worker imported {self.info['file']} "
                             f"({self.info['extensions']}), not {expected}")

    def _reply(self):
        message = _ab_worker.receive(self.process.stdout)
        if message is None:
            raise SystemExit(f"{self.label}: the worker exited (status {self.process.wait()})")
        status, value = message
        if status != "ok":
            raise RuntimeError(f"{self.label}: the worker failed:\n{value}")
        return value

    def ask(self, command, args):
        self.post(command, args)
        return self._reply()

    def post(self, command, args):
        _ab_worker.send(self.process.stdin, (command, args))

    def reply(self):
        return self._reply()

    def close(self):
        if self.process.poll() is None:
            try:
                _ab_worker.send(self.process.stdin, ("quit", None))
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def start_workers(before, after, threads, workdir, passive=False):
    env = dict(os.environ)
    # the same thread settings in both; nothing of ours on the path but the checkout
    env["OMP_NUM_THREADS"] = str(threads)
    if passive:
        # --bits: idle OpenMP threads sleep instead of spinning. The results do not depend on
        # it, and on a loaded machine a spinning barrier costs a time slice per parallel
        # region (a tiny 2-thread conv2d_backward measured 100 ms instead of 0.1 ms).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.pop("PYTHONPATH", None)
    workers = []
    try:
        for label, checkout in (("before", before), ("after", after)):
            path = os.path.join(workdir, label)
            os.makedirs(path, exist_ok=True)
            workers.append(Worker(label, checkout["path"], env, path))
    except BaseException:
        for worker in workers:
            worker.close()
        raise
    return workers, {key: value for key, value in sorted(env.items())
                     if key.startswith(ENV_PREFIXES)}


def config_summary(config):
    """The lines of show_config() that name the kernels in use."""
    keys = ("threads ", "GEMM", "direct kernels", "pooling kernels", "ISA")
    return "; ".join(" ".join(line.split()) for line in config.splitlines()
                     if line.strip().startswith(keys))


def load_average():
    """The machine's load (other processes' threads compete with the workers' for the cores)."""
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except (AttributeError, OSError):  # pragma: no cover - not on Unix
        return "load average unknown"


def print_header(out, mode, before, after, workers, env, extra):
    print(f"bench_ab {mode}: {datetime.datetime.now().isoformat(timespec='seconds')}, "
          f"{platform.node()}, python {platform.python_version()}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, {load_average()}", file=out)
    for label, checkout, worker in (("before", before, workers[0]),
                                    ("after ", after, workers[1])):
        print(f"  {label}: {describe(checkout)}  fastconv {worker.info['version']} "
              f"from {worker.info['file']}", file=out)
        print(f"          {config_summary(worker.info['config'])}", file=out)
        if checkout["stale"]:
            print(f"          WARNING: edited after its build: {', '.join(checkout['stale'])}",
                  file=out)
    print(f"  env (both): {' '.join(f'{k}={v}' for k, v in env.items()) or '-'}", file=out)
    print(f"  {extra}", file=out, flush=True)


# ---------------------------------------------------------------- cases
def bench_cases(workers, out):
    """name -> case dict: the cases of fastconv.benchmark that both sides define alike."""
    tables = [worker.info["cases"] for worker in workers]
    cases = {}
    for table in ("conv", "pool"):
        before, after = tables[0][table], tables[1][table]
        for name in list(after) + [name for name in before if name not in after]:
            if name in before and name in after and before[name] == after[name]:
                cases[name] = bench_case(table, name, after[name])
            else:
                print(f"  note: case {name!r} is not the same in both "
                      f"(before {before.get(name)}, after {after.get(name)}): left out",
                      file=out)
    return cases


def select(names, available, aliases, parser):
    if not names:
        return list(available)
    chosen = []
    for name in names:
        group = aliases.get(name)
        if group is not None:
            chosen += [n for n in group if n not in chosen]
        elif name in available:
            if name not in chosen:
                chosen.append(name)
        else:
            parser.error(f"unknown case {name!r}; choose from {', '.join(aliases)}, "
                         f"{', '.join(available)}")
    return chosen


# ---------------------------------------------------------------- timing
def time_case(workers, name, case, dtype, args):
    """Per op: the median per call of each side over all its timed calls, and the ratios
    after/before of each round's two block medians (blocks run back to back, so a change in
    the machine's load between rounds cancels out of them)."""
    digests = [worker.ask("prepare", (name, name, case, dtype)) for worker in workers]
    if digests[0] != digests[1]:
        raise RuntimeError(f"{name}: the two workers made different inputs")
    ops = {"conv": ("conv2d", "conv2d_backward"), "max": ("max_pool2d", "max_pool2d_backward"),
           "avg": ("avg_pool2d", "avg_pool2d_backward")}[case["kind"]]
    results = {}
    for op in ops:
        times = ([], [])
        round_ratios = []
        start = time.perf_counter()
        rounds = 0
        while rounds < args.repeats or (time.perf_counter() - start < args.min_seconds
                                        and rounds < 10 * args.repeats):
            order = (0, 1) if rounds % 2 == 0 else (1, 0)
            blocks = [None, None]
            for side in order:
                time.sleep(args.settle)
                blocks[side] = workers[side].ask("block", (name, op, args.per_block))
                times[side].extend(blocks[side])
            round_ratios.append(statistics.median(blocks[1]) / statistics.median(blocks[0]))
            rounds += 1
        results[op] = (times, round_ratios)
    return results


def quartiles(values):
    """(first quartile, third quartile); for one value, that value twice."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def run_timing(args, parser, before, after, out):
    with tempfile.TemporaryDirectory(prefix="bench_ab-") as workdir:
        workers, env = start_workers(before, after, args.threads, workdir)
        try:
            for worker in workers:
                worker.ask("threads", args.threads)
            cases = bench_cases(workers, out)
            names = select(args.cases, cases, {}, parser)
            print_header(out, "timing", before, after, workers, env,
                         f"{args.dtype}, {args.threads} threads, median of {args.per_block} "
                         f"calls x {args.repeats}+ rounds (>= {args.min_seconds} s per op), "
                         f"blocks interleaved after {args.settle} s pauses, order alternating")
            head = (f"{'case':<11}{'op':<21}{'before ms':>11}{'after ms':>11}"
                    f"{'after/before':>14}{'rounds: median':>16}{'quartiles':>14}"
                    f"{'min a/b':>9}")
            print(head, file=out)
            print("-" * len(head), file=out, flush=True)
            rows = []
            for name in names:
                for op, (times, round_ratios) in time_case(
                        workers, name, cases[name], args.dtype, args).items():
                    t_before, t_after = (statistics.median(t) for t in times)
                    q1, q3 = quartiles(round_ratios)
                    row = {"case": name, "op": op, "before_ms": t_before * 1e3,
                           "after_ms": t_after * 1e3, "after_over_before": t_after / t_before,
                           "rounds": len(round_ratios), "round_ratios": round_ratios,
                           "round_ratio_median": statistics.median(round_ratios),
                           "round_ratio_q1": q1, "round_ratio_q3": q3,
                           "min_after_over_before": min(times[1]) / min(times[0]),
                           "before_seconds": times[0], "after_seconds": times[1]}
                    rows.append(row)
                    print(f"{name:<11}{op:<21}{row['before_ms']:>11.3f}{row['after_ms']:>11.3f}"
                          f"{row['after_over_before']:>14.3f}{row['round_ratio_median']:>16.3f}"
                          f"{q1:>8.3f}-{q3:.3f}{row['min_after_over_before']:>9.3f}"
                          + ("  *" if q1 > 1 or q3 < 1 else ""), file=out, flush=True)
        finally:
            for worker in workers:
                worker.close()
    ratios = [row["after_over_before"] for row in rows]
    summary = {}
    if ratios:
        summary = {"geomean": math.exp(statistics.fmean(math.log(r) for r in ratios)),
                   "min": min(ratios), "max": max(ratios),
                   "median": statistics.median(ratios),
                   "outside_quartiles": [f"{row['case']} {row['op']}" for row in rows
                                         if row["round_ratio_q1"] > 1
                                         or row["round_ratio_q3"] < 1]}
        mins = [row["min_after_over_before"] for row in rows]
        summary["min_ratio"] = {"geomean": math.exp(statistics.fmean(math.log(r) for r in mins)),
                                "min": min(mins), "max": max(mins)}
        print(f"after/before over {len(ratios)} ops: geometric mean {summary['geomean']:.3f}, "
              f"median {summary['median']:.3f}, min {summary['min']:.3f}, "
              f"max {summary['max']:.3f}; * = both quartiles of the round ratios on one side "
              f"of 1: {len(summary['outside_quartiles'])} of {len(ratios)}; at the end: "
              f"{load_average()}", file=out)
        print(f"min a/b (fastest call of each side): geometric mean "
              f"{summary['min_ratio']['geomean']:.3f}, min {summary['min_ratio']['min']:.3f}, "
              f"max {summary['min_ratio']['max']:.3f}", file=out)
    if args.json:
        report = {"mode": "timing", "before": before, "after": after, "env": env,
                  "workers": [w.info for w in workers], "rows": rows, "summary": summary,
                  "config": {"threads": args.threads, "dtype": args.dtype,
                             "repeats": args.repeats, "per_block": args.per_block,
                             "min_seconds": args.min_seconds, "settle": args.settle}}
        write_json(args.json, report, out)
    return 0


# ---------------------------------------------------------------- bits
def compare(a, b):
    """None if ``a`` and ``b`` are the same result bit for bit, else a description."""
    a_error = isinstance(a, tuple) and len(a) == 3 and a[0] == "error"
    b_error = isinstance(b, tuple) and len(b) == 3 and b[0] == "error"
    if a_error or b_error:
        if a_error and b_error and a[1] == b[1]:
            return None
        what = lambda r: (f"raises {r[1]}: {r[2]}" if isinstance(r, tuple) and r[0] == "error"
                          else f"returns {type(r).__name__}")
        return f"before {what(a)}; after {what(b)}"
    if a is None or b is None:
        return None if a is None and b is None else f"before {a!r:.40}, after {b!r:.40}"
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"before {a.dtype}{a.shape}, after {b.dtype}{b.shape}"
    if a.flags.c_contiguous != b.flags.c_contiguous:
        return (f"layout: before C-contiguous={a.flags.c_contiguous}, after "
                f"{b.flags.c_contiguous} (values not compared)")
    ac, bc = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if ac.tobytes() == bc.tobytes():
        return None
    if a.dtype.kind == "f":
        bits = np.dtype(f"u{a.dtype.itemsize}")
        differ = ac.view(bits) != bc.view(bits)
        a64, b64 = ac.astype(np.float64), bc.astype(np.float64)
        nan_mismatch = int(np.count_nonzero(np.isnan(a64) != np.isnan(b64)))
        finite = np.isfinite(a64) & np.isfinite(b64)
        diff = np.where(finite, np.abs(a64 - b64), 0.0)
        where = np.unravel_index(int(np.argmax(diff)), a.shape) if a.size else ()
        scale = float(np.max(np.abs(a64[finite]))) if finite.any() else 0.0
        inf_mismatch = int(np.count_nonzero(
            (np.isinf(a64) | np.isinf(b64)) & ~(a64 == b64)))
        return (f"{int(np.count_nonzero(differ))} of {a.size} elements differ; max abs diff "
                f"{float(diff.max()):.3g} at {tuple(int(i) for i in where)} (max |before| "
                f"{scale:.3g}); NaN placement differs at {nan_mismatch}, inf at "
                f"{inf_mismatch}")
    differ = ac != bc
    diff = np.abs(ac.astype(np.int64) - bc.astype(np.int64)) if a.dtype.kind in "iub" else None
    return (f"{int(np.count_nonzero(differ))} of {a.size} elements differ"
            + (f"; max abs diff {int(diff.max())}" if diff is not None else ""))


def run_bits(args, parser, before, after, out):
    thread_counts = [args.threads] if args.threads_given else [1, 2]
    dtypes = [args.dtype] if args.dtype_given else ["float32", "float64"]
    failures = []
    checked = arrays = 0
    with tempfile.TemporaryDirectory(prefix="bench_ab-") as workdir:
        workers, env = start_workers(before, after, max(thread_counts), workdir, passive=True)
        try:
            cases = bench_cases(workers, out)
            available = dict(cases, **EDGE_CASES)
            names = select(args.cases, available,
                           {"bench": list(cases), "edge": list(EDGE_CASES)}, parser)
            print_header(out, "--bits", before, after, workers, env,
                         f"{len(names)} cases x {'/'.join(dtypes)} x "
                         f"{'/'.join(map(str, thread_counts))} threads (fastconv.threads)")
            start = time.perf_counter()
            for name in names:
                for dtype in dtypes:
                    for threads in thread_counts:
                        # both compute at once: the results do not depend on timing
                        for worker in workers:
                            worker.post("check", (name, available[name], dtype, threads))
                        (digest_a, results_a), (digest_b, results_b) = [
                            worker.reply() for worker in workers]
                        label = f"{name} {dtype} {threads}t"
                        checked += 1
                        if digest_a != digest_b:
                            failures.append((label, "inputs", "the workers made different "
                                             "inputs (forward output shapes differ?)"))
                        for op in sorted(set(results_a) | set(results_b)):
                            if op not in results_a or op not in results_b:
                                failures.append((label, op, "computed by one side only"))
                                continue
                            arrays += 1
                            problem = compare(results_a[op], results_b[op])
                            if problem:
                                failures.append((label, op, problem))
                                print(f"DIFFERS {label:<28} {op:<34} {problem}", file=out,
                                      flush=True)
                            elif args.verbose:
                                print(f"same    {label:<28} {op}", file=out, flush=True)
            seconds = time.perf_counter() - start
        finally:
            for worker in workers:
                worker.close()
    print(f"{checked} case runs, {arrays} results compared in {seconds:.1f} s: "
          + (f"{len(failures)} differ" if failures else "all identical bit for bit"),
          file=out)
    if args.json:
        write_json(args.json, {"mode": "bits", "before": before, "after": after, "env": env,
                               "workers": [w.info for w in workers], "cases": names,
                               "dtypes": dtypes, "threads": thread_counts,
                               "results_compared": arrays,
                               "differences": [{"case": label, "op": op, "problem": problem}
                                               for label, op, problem in failures]}, out)
    return 1 if failures else 0


def write_json(path, report, out):
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2, default=str)
    print(f"wrote {path}", file=out)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="A/B two fastconv checkouts built in place: timings of bench_ops.py's "
                    "cases (default) or results bit for bit (--bits).")
    parser.add_argument("before", help="checkout of the 'before' side, built in place")
    parser.add_argument("after", help="checkout of the 'after' side, built in place")
    parser.add_argument("cases", nargs="*",
                        help="case names (default: all; with --bits also 'bench', 'edge' "
                             "and the edge cases' names)")
    parser.add_argument("--bits", action="store_true",
                        help="compare results bit for bit instead of timing")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="thread count (timing: default 2; --bits: default 1 and 2)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None,
                        help="timing: default float32; --bits: default both")
    parser.add_argument("--repeats", type=positive_int, default=7,
                        help="rounds of blocks per op (default 7)")
    parser.add_argument("--per-block", type=positive_int, default=5,
                        help="timed calls per block (default 5)")
    parser.add_argument("--min-seconds", type=non_negative_float, default=0.3,
                        help="keep adding rounds (up to 10x --repeats) until an op has "
                             "taken this long (default 0.3)")
    parser.add_argument("--settle", type=non_negative_float, default=SETTLE_SECONDS,
                        help=f"pause before each block, seconds (default {SETTLE_SECONDS})")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="--bits: list identical results too")
    args = parser.parse_args(argv)
    args.threads_given, args.dtype_given = args.threads is not None, args.dtype is not None
    args.threads = args.threads or 2
    args.dtype = args.dtype or "float32"
    before, after = checkout_info(args.before), checkout_info(args.after)
    out = sys.stdout
    if args.bits:
        return run_bits(args, parser, before, after, out)
    return run_timing(args, parser, before, after, out)


if __name__ == "__main__":
    sys.exit(main())
