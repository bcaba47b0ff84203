#!/usr/bin/env python3
"""What a process's memory in use grew by between two moments, by call
stack, from a heaptrack recording (heaptrack -p PID, Debian's heaptrack).

    heaptrack -o /tmp/w -p <worker pid>        # attach after the warm-up
    ...                                        # the load, then stop nginx
    bench/heaptrack_diff.py /tmp/w.zst 30 270  # seconds after attaching

heaptrack_print's "leaked" is what was never freed by the time the
process exited, and an nginx worker frees its pools when it exits; what
matters for a worker whose RSS rises is what it holds at one moment
that it did not hold at an earlier one.  The recording's allocations and
frees are replayed up to each moment, and the difference in bytes in
use is summed per allocation site (the innermost --depth frames).

Reads the zstd-compressed text format heaptrack writes (zstd on PATH).
"""

import argparse
import collections
import subprocess


def replay(path, moments_ms):
    """in-use counts per allocation info at each moment, and the tables
    needed to name their stacks."""
    strings, ips, traces, allocs = [None], [None], [None], []
    live = collections.Counter()
    snaps, pending = {}, sorted(moments_ms)
    proc = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE,
                            text=True, bufsize=1 << 20)
    for line in proc.stdout:
        kind = line[0]
        if kind == "+":
            live[int(line[2:], 16)] += 1
        elif kind == "-":
            live[int(line[2:], 16)] -= 1
        elif kind == "c":
            now = int(line[2:], 16)
            while pending and now >= pending[0]:
                snaps[pending.pop(0)] = live.copy()
        elif kind == "a":
            _, size, trace = line.split()
            allocs.append((int(size, 16), int(trace, 16)))
        elif kind == "s":
            strings.append(line[2:].rstrip("\n").partition(" ")[2])
        elif kind == "i":
            cols = line.split()[1:]
            ips.append(strings[int(cols[2], 16)] if len(cols) > 2
                       else hex(int(cols[0], 16)))
        elif kind == "t":
            _, ip, parent = line.split()
            traces.append((int(ip, 16), int(parent, 16)))
    proc.wait()
    for m in pending:
        snaps[m] = live.copy()
    return snaps, allocs, ips, traces


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recording")
    p.add_argument("start", type=float, help="seconds after attaching")
    p.add_argument("end", type=float, help="seconds after attaching")
    p.add_argument("--depth", type=int, default=7)
    p.add_argument("--top", type=int, default=20)
    a = p.parse_args()

    t0, t1 = int(a.start * 1000), int(a.end * 1000)
    snaps, allocs, ips, traces = replay(a.recording, [t0, t1])

    def stack(trace):
        out = []
        while trace and len(out) < a.depth:
            ip, trace = traces[trace]
            out.append(ips[ip])
        return " < ".join(out)

    def in_use(snap):
        return sum(allocs[i][0] * n for i, n in snap.items())

    before, after = snaps[t0], snaps[t1]
    grew = collections.Counter()
    for i in set(before) | set(after):
        delta = (after[i] - before[i]) * allocs[i][0]
        if delta:
            grew[stack(allocs[i][1])] += delta

    print(f"in use at {a.start:g}s: {in_use(before)} B, at {a.end:g}s: "
          f"{in_use(after)} B (allocations made before attaching are not "
          f"seen)")
    print(f"grew most ({a.depth} frames, innermost first):")
    for where, delta in grew.most_common(a.top):
        print(f"{delta:+10d}  {where}")
    print("shrank most:")
    for where, delta in sorted(grew.items(), key=lambda x: x[1])[:5]:
        if delta < 0:
            print(f"{delta:+10d}  {where}")


if __name__ == "__main__":
    main()
