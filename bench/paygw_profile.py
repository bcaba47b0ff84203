#!/usr/bin/env python3
"""paygw profile: where the nginx workers' CPU goes; started by
`bench/run.sh --profile` (make bench-profile) once the stack is up.

Two scenarios of the bench, create (bank_card, at the C acquirer stand-in)
and GET (of payments cached in Redis), each a warm-up and one throughput
run, while `perf record -g` samples only the nginx workers (cpu-clock,
--perf-freq Hz) over the middle of the run.  The report gives, per
scenario, the rate and the workers' CPU per request (perf's sampling
costs a little of it), the workers' CPU by binary, and the top symbols by
self time (`perf report --no-children`), with their percentages of the
workers' samples.  The raw data stays in bench/run/logs/perf-*.data.
"""

import os
import re
import signal
import subprocess

import paygw_bench as pb


def perf_lines(data, sort, limit):
    """perf report's entries: [(percent, text)] by self time, the first
    LIMIT (0: all)."""
    r = subprocess.run(["perf", "report", "-i", data, "--stdio",
                        "--no-children", "-g", "none", "--sort", sort,
                        "--percent-limit", "0"],
                       capture_output=True, text=True)
    rows, total = [], ""
    for line in r.stdout.splitlines():
        m = re.match(r"#\s*Samples:\s*(.*)", line)
        if m and not total:
            total = m.group(1)
        m = re.match(r"\s*([0-9.]+)%\s+(.*\S)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2)))
    return total, rows[:limit] if limit else rows


def section(a, r, data):
    out = []
    c = r["sampled"]["cpu"]
    rps = r["sampled"]["requests"] / r["sampled"]["secs"]
    workers = sorted(k for k in c if k.startswith("nginx w"))
    wcpu = sum(c[k] for k in workers)
    out.append(f"== {r['label'].strip()}  -c{r['conns']}: {r['rps']:.0f} "
               f"req/s, p99 {r['p99_us'] / 1000:.2f} ms, non2xx "
               f"{int(r['non2xx'])}, other {int(r['unexpected'])}")
    out.append(f"   nginx workers: {wcpu:.0f}% of one core together = "
               f"{wcpu * 1e4 / rps:.1f} CPU us per request (perf running)")
    if not os.path.exists(data):
        out.append("   no perf data (perf record failed?)")
        return out
    total, dsos = perf_lines(data, "dso", 12)
    out.append(f"   perf samples of the workers: {total}")
    out.append("   by binary (self):")
    for pct, text in dsos:
        out.append(f"   {pct:6.2f}%  {text}")
    _, syms = perf_lines(data, "dso,sym", 0)
    out.append(f"   top {min(a.top, len(syms))} symbols (self, "
               f"--no-children):")
    for pct, text in syms[:a.top]:
        out.append(f"   {pct:6.2f}%  {text}")
    # the kernel's share is mostly the sockets (and, on a busy box, the
    # scheduler); what the worker itself runs is in user space
    user = [(pct, text) for pct, text in syms
            if not text.startswith("[kernel")][:a.top]
    out.append(f"   top {len(user)} user-space symbols (nginx, the module, "
               f"libraries; same percentages):")
    for pct, text in user:
        out.append(f"   {pct:6.2f}%  {text}")
    return out


def main():
    p = pb.parser()
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--perf-freq", type=int, default=999)
    a = p.parse_args()
    a.perf, a.perf_workers = 1, True
    a.conn_list = [a.conns]

    signal.signal(signal.SIGTERM, pb.on_signal)
    signal.signal(signal.SIGINT, pb.on_signal)

    b = pb.Bench(a)
    b.background = b.quiet("start")
    b.check = b.functional_check()
    host = b.host

    b.scenario("create", "create  POST /v1/payments", a.port, 201,
               make=lambda _: pb.signed_create(host, b.nonces, b.bnos),
               warm_rate=12000)

    nos, fails = pb.seed_payments(a.port, a.seed, b.nonces, b.bnos)
    if not nos:
        raise RuntimeError("no payment could be created for the GETs")
    if fails:
        b.notes.append(f"seeding: {len(fails)} of {a.seed} creates failed")

    b.scenario("get", "get     GET /v1/payments/{no}", a.port, 200,
               make=lambda i: pb.signed_get(host, b.nonces,
                                            nos[i % len(nos)]),
               warm_rate=50000)

    out = [a.header + f"; other processes' CPU before the runs: "
           f"{b.background:.0f}% of one core",
           f"perf record -g -e cpu-clock -F {a.perf_freq} -p <the nginx "
           f"workers> over the middle {a.duration}s throughput run of each "
           f"scenario; percentages are of the workers' samples", ""]
    for r in b.results:
        data = os.path.join(a.log_dir, f"perf-{r['name']}-c{r['conns']}.data")
        out += section(a, r, data)
        out.append("")
    out.append("functional check: " + b.check)
    for n in b.notes:
        out.append("note: " + n)
    text = "\n".join(out) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print()
    print(text, end="")


if __name__ == "__main__":
    main()
