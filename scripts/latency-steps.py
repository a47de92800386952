#!/usr/bin/env python3
"""Where a job's time goes in the mesh latency bench, step by step, from the coordinator's trace log.

    ICN_PROBE=1 ICN_PROBE_LOG=icn_mesh_coordinator=trace,icn_mesh_core::store=debug \\
        cargo bench -p icn-mesh-coordinator --bench mesh -- latency --quick
    scripts/latency-steps.py [/tmp/coord.log]

The coordinator logs each client request, message to and from executors, verification, final
report and flush (with ICN_PROBE the bench writes that log to /tmp/coord.log). This pairs them up
per job (the latency bench runs one job at a time) and prints p50 / p90 / p99 of each step in µs,
plus the redb commits and checkpoints the log shows. The first 30 jobs are skipped (warm-up).
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"\S+T(\d+):(\d+):([\d.]+)Z\s+\S+\s+\S+ (.*)")


def events(path):
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if m:
            t = (int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))) * 1e6
            yield t, m.group(4)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/coord.log"
    jobs, job = [], None
    commits, checkpoints = [], []
    for t, e in events(path):
        if e.startswith("redb commit of"):
            commits.append(float(re.search(r"took ([\d.]+)", e).group(1)) * (1000 if "ms" in e else 1))
        elif e.startswith("checkpoint took"):
            checkpoints.append(e)
        if e == "request read":
            job = {"read": t, "bids": [], "verified": []}
            jobs.append(job)
            continue
        if job is None:
            continue
        if e == "submitted":
            job["sub"] = t
        elif e == "from executor: bid":
            job["bids"].append(t)
        elif e == "verified" and "award" not in job:
            job["verified"].append(t)
        elif e == "to executor: award":
            job["award"] = t
        elif e == "from executor: result":
            job["result"] = t
        elif e == "verified" and "result" in job and "result verified" not in job:
            job["result verified"] = t
        elif e == "final":
            job["final"] = t
    steps = defaultdict(list)
    for j in jobs[30:]:
        try:
            last_bid = len(j["bids"]) - 1
            row = {
                "intake (request read -> submitted)": j["sub"] - j["read"],
                "submitted -> first bid": j["bids"][0] - j["sub"],
                "first -> last bid": j["bids"][-1] - j["bids"][0],
                "last bid verified": j["verified"][last_bid] - j["bids"][-1],
                "verified -> award sent": j["award"] - j["verified"][last_bid],
                "award -> result": j["result"] - j["award"],
                "result verified": j["result verified"] - j["result"],
                "verified -> final report queued": j["final"] - j["result verified"],
                "total, request read -> final report queued": j["final"] - j["read"],
            }
        except (KeyError, IndexError):
            continue
        for k, v in row.items():
            steps[k].append(v)
    print(f"{'step (µs)':42} {'p50':>7} {'p90':>7} {'p99':>7}   jobs")
    for k, v in steps.items():
        v.sort()
        q = lambda f: v[min(len(v) - 1, int(len(v) * f))]
        print(f"{k:42} {statistics.median(v):7.0f} {q(0.9):7.0f} {q(0.99):7.0f}   {len(v)}")
    if commits:
        commits.sort()
        print(f"redb commits: {len(commits)}, p50 {commits[len(commits) // 2]:.0f} µs, max {commits[-1]:.0f} µs")
    print(f"checkpoints: {len(checkpoints)}")


if __name__ == "__main__":
    main()
