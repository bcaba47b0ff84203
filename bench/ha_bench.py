#!/usr/bin/env python3
"""BENCH_HA=1 bash bench/run.sh (make bench-ha): creates/s and GETs/s of
paygw on single servers and on the clusters, back to back in one run.

Two nginx instances with the same configuration (nginx.conf.example as
bench/run.sh renders it) and the same workers, simulator and acquirer
stand-in: "single" on one Redis and one MariaDB, "ha" on a Redis Cluster
(3 masters + 3 replicas, paygw_redis_cluster on, every node a seed) and a
3-node Galera cluster (writes to one node, the others failover=).  All
backends run during every measured run; only one nginx gets load at a
time.  The runs alternate (single, ha, ha, single per scenario and round)
so that a machine whose load drifts during the run favours neither side.

Per run: wrk's req/s and latency, the CPU of every process of the stack
(nginx workers, all Redis nodes, all MariaDB nodes, the acquirer, wrk,
other processes, idle) and the backend work per request (Redis commands
on masters and on replicas, MariaDB statements on the writer and on the
other nodes, Galera write sets and bytes), which is what explains the
cost.  Nothing is asserted.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paygw_bench as pb        # noqa: E402


def log(msg):
    print(f"bench-ha: {msg}", flush=True)


class Procs(pb.Procs):
    """pb.Procs with any number of Redis and MariaDB processes."""

    def __init__(self, nginx_pid, fixed):
        self.master = nginx_pid
        self.fixed = fixed


class StackBench(pb.Bench):
    """One stack (single or ha): pb.Bench's scenarios (warm-up, pre-signed
    requests, wrk, re-run when the requests ran out), sampled over all
    of the stack's backends."""

    def __init__(self, a, name, st, shared):
        sa = argparse.Namespace(**vars(a))
        sa.port, sa.baseline_port = st["port"], st["baseline_port"]
        sa.redis_port = st["redis_ports"][0]
        sa.mysql_defaults = st["mysql_defaults"][0]
        sa.nginx_pid = st["nginx_pid"]
        sa.mysql_pid, sa.redis_pid = st["mysql_pids"][0], st["redis_pids"][0]
        sa.sim_pid = shared.get("sim(node)", 0)
        sa.req_dir = os.path.join(a.req_dir, name)
        super().__init__(sa)
        self.stack = name
        self.st = st
        fixed = dict(shared)
        for i, pid in enumerate(st["redis_pids"], 1):
            fixed[f"redis{i}"] = pid
        for i, pid in enumerate(st["mysql_pids"], 1):
            fixed[f"mariadbd{i}"] = pid
        self.procs = Procs(st["nginx_pid"], fixed)
        self.mysql_all = [self.mysql_status] + [
            pb.MysqlStatus(d) for d in st["mysql_defaults"][1:]]

    def backend_counters(self):
        return {"redis": [pb.redis_info(p) for p in self.st["redis_ports"]],
                "mysql": [m() for m in self.mysql_all]}

    def sampler(self, top_file=None, perf_file=None):
        a = self.a

        def run(proc):
            warm = min(a.settle, max(0.5, a.duration / 4))
            time.sleep(warm)
            extra = {"wrk": proc.pid}
            n0 = pb.nginx_requests(a.baseline_port)
            b0 = self.backend_counters()
            s0 = self.procs.snapshot(extra)
            time.sleep(max(1.0, a.duration - warm - 1.0))
            n1 = pb.nginx_requests(a.baseline_port)
            b1 = self.backend_counters()
            s1 = self.procs.snapshot(extra)
            return {"cpu": pb.cpu_delta(s0, s1), "b": (b0, b1),
                    "secs": s1["_t"] - s0["_t"], "requests": n1 - n0 - 3}
        return run


def per_request(r):
    """Backend work per request from the counters of one run."""
    s = r["sampled"]
    reqs = max(1, s["requests"])
    b0, b1 = s["b"]

    def d(x0, x1, k):
        return (x1.get(k, 0) - x0.get(k, 0)) / reqs
    out = {"redis_master": 0.0, "redis_replica": 0.0, "redis_conns": 0.0,
           "my_writer": 0.0, "my_others": 0.0, "wsrep_sets": 0.0,
           "wsrep_bytes": 0.0}
    for x0, x1 in zip(b0["redis"], b1["redis"]):
        role = "redis_replica" if x1.get("connected_slaves", 0) == 0 and \
            x1.get("master_repl_offset", 0) and "master_last_io_seconds_ago" in x1 \
            else "redis_master"
        out[role] += d(x0, x1, "total_commands_processed")
        out["redis_conns"] += d(x0, x1, "total_connections_received")
    qs = [d(x0, x1, "Questions") for x0, x1 in zip(b0["mysql"], b1["mysql"])]
    w = max(range(len(qs)), key=lambda i: qs[i])
    out["my_writer"] = qs[w]
    out["my_others"] = sum(qs) - qs[w]
    for x0, x1 in zip(b0["mysql"], b1["mysql"]):
        out["wsrep_sets"] += d(x0, x1, "wsrep_replicated")
        out["wsrep_bytes"] += d(x0, x1, "wsrep_replicated_bytes")
    return out


def report(a, header, benches, order):
    res = {b.stack: b.results for b in benches}
    lines = [header, ""]
    lines.append(f"{'scenario':<8} {'stack':<7} {'round':>5} {'req/s':>8} "
                 f"{'p50 ms':>7} {'p99 ms':>7} {'non2xx':>6} {'other':>5} "
                 f"{'sockerr':>7} {'other CPU':>9}")
    for scen, stack, k in order:
        r = [x for x in res[stack] if x["name"] == f"{scen}{k}"][0]
        lines.append(
            f"{scen:<8} {stack:<7} {k:>5} {r['rps']:>8.0f} "
            f"{r['p50_us'] / 1000:>7.2f} {r['p99_us'] / 1000:>7.2f} "
            f"{int(r['non2xx']):>6} {int(r['unexpected']):>5} "
            f"{r['sock_errors']:>7} {r['sampled']['cpu']['other']:>8.0f}%"
            + ("  EXHAUSTED(invalid)" if r["exhausted"] else ""))
    lines.append("")
    lines.append("ratio ha / single, per scenario (sum of the rounds' "
                 "req/s):")
    for scen in ("create", "get"):
        s = sum(x["rps"] for x in res["single"] if x["name"].startswith(scen))
        h = sum(x["rps"] for x in res["ha"] if x["name"].startswith(scen))
        if s:
            lines.append(f"  {scen:<7} single {s / a.rounds:>7.0f}/s  ha "
                         f"{h / a.rounds:>7.0f}/s  ha/single {h / s:.2f} "
                         f"({100 * (h / s - 1):+.0f} %)")

    lines.append("")
    groups = ["nginx", "redis", "mariadbd", "acquirer", "sim(node)", "wrk",
              "idle stack", "other", "idle"]
    lines.append(f"CPU, % of one core ({os.cpu_count()} cores = "
                 f"{100 * (os.cpu_count() or 1)}%), and CPU microseconds "
                 f"per request (redis, mariadbd: all nodes together; idle "
                 f"stack: the other stack's nginx and backends, idle; "
                 f"other: every other process on the machine):")
    lines.append(f"{'run':<16}" + "".join(f"{g:>11}" for g in groups))
    for scen, stack, k in order:
        r = [x for x in res[stack] if x["name"] == f"{scen}{k}"][0]
        c = r["sampled"]["cpu"]
        g = {n: 0.0 for n in groups}
        for name, v in c.items():
            if name.startswith("_"):
                continue
            for n in groups:
                if name == n or (name.startswith(n) and n in
                                 ("nginx", "redis", "mariadbd",
                                  "idle stack")):
                    g[n] += v
                    break
        rps = max(1.0, r["sampled"]["requests"] / r["sampled"]["secs"])
        lines.append(f"{scen + ' ' + stack + str(k):<16}" + "".join(
            f"{g[n]:>10.0f}%" for n in groups))
        lines.append(f"{'  us/req':<16}" + "".join(
            (f"{g[n] * 1e4 / rps:>11.0f}" if n != "idle" else f"{'':>11}")
            for n in groups))

    lines.append("")
    lines.append("Backend work per request (counter deltas over the sampled "
                 "window / requests nginx counted in it):")
    for scen, stack, k in order:
        r = [x for x in res[stack] if x["name"] == f"{scen}{k}"][0]
        p = per_request(r)
        lines.append(
            f"  {scen + ' ' + stack + str(k):<14} Redis commands: masters "
            f"{p['redis_master']:.2f}, replicas {p['redis_replica']:.2f} "
            f"(new conns {p['redis_conns']:.3f}); MariaDB statements: "
            f"writer {p['my_writer']:.2f}, other nodes {p['my_others']:.2f}"
            + (f"; Galera write sets {p['wsrep_sets']:.2f} "
               f"({p['wsrep_bytes']:.0f} bytes)" if stack == "ha" else ""))
    for b in benches:
        for n in b.notes:
            lines.append(f"note ({b.stack}): {n}")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stacks", required=True,
                   help="JSON: {single: {...}, ha: {...}, shared: {...}}")
    p.add_argument("--lua", required=True)
    p.add_argument("--req-dir", required=True)
    p.add_argument("--log-dir", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--headroom", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quiet-wait", type=float, default=15)
    p.add_argument("--quiet-max", type=float, default=25)
    p.add_argument("--header", default="")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    a.conn_list = [a.conns]
    a.perf = 0
    a.acquirer_pid = 0
    with open(a.stacks) as f:
        stacks = json.load(f)
    shared = {k: v for k, v in stacks["shared"].items() if v}

    benches = {n: StackBench(a, n, stacks[n], shared)
               for n in ("single", "ha")}
    # the other stack's processes (idle meanwhile) are counted on their
    # own, not as "other"
    for n, o in (("single", "ha"), ("ha", "single")):
        fixed = benches[n].procs.fixed
        fixed["idle stack nginx"] = stacks[o]["nginx_pid"]
        for k in pb.children(stacks[o]["nginx_pid"]):
            fixed[f"idle stack nginx {k}"] = k
        for i, pid in enumerate(stacks[o]["redis_pids"] + stacks[o]["mysql_pids"]):
            fixed[f"idle stack {i}"] = pid
    for b in benches.values():
        b.check = b.functional_check()
        log(f"{b.stack}: {b.check}")

    nos = {}
    for n, b in benches.items():
        t0 = time.monotonic()
        nos[n], fails = pb.seed_payments(b.a.port, a.seed, b.nonces, b.bnos)
        log(f"{n}: seeded {len(nos[n])} payments for GETs in "
            f"{time.monotonic() - t0:.1f}s ({len(fails)} failed)")
        if not nos[n]:
            raise RuntimeError(f"{n}: no payment could be created")

    order = []
    for k in range(1, a.rounds + 1):
        pair = ("single", "ha") if k % 2 else ("ha", "single")
        for scen in ("create", "get"):
            for n in pair:
                order.append((scen, n, k))
    for scen, n, k in order:
        b = benches[n]
        host = b.host
        if scen == "create":
            def make(_, b=b, host=host):
                return pb.signed_create(host, b.nonces, b.bnos)
            b.scenario(f"create{k}", f"create {n} #{k}", b.a.port, 201,
                       make=make, warm_rate=3000)
        else:
            def make(i, b=b, host=host, ns=nos[n]):
                return pb.signed_get(host, b.nonces, ns[i % len(ns)])
            b.scenario(f"get{k}", f"get {n} #{k}", b.a.port, 200,
                       make=make, warm_rate=20000)

    text = report(a, a.header, list(benches.values()), order)
    with open(a.out, "w") as f:
        f.write(text)
    print()
    print(text, end="")


if __name__ == "__main__":
    main()
