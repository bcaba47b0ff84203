#!/usr/bin/env python3
"""paygw soak: a long mixed load while the nginx processes' memory is
sampled; started by `bench/run.sh --soak` (make bench-soak) once the stack
is up.

The load: creates (bank_card, with a notify_url to the bench's local
webhook receiver; delivery on), GETs of payments and refunds of 1 minor
unit, interleaved in one stream of pre-signed requests (--soak-mix, by
count), sent by wrk in segments of --soak-segment seconds.  A signed
request is valid for +-300 s and only once, so each segment gets fresh
requests, written while the previous segment runs.  GETs and refunds go to
a pool of payments created (with the notify_url) before the load starts,
so refunds deliver webhooks too and change cached payments under the GETs.

Every --soak-interval seconds VmRSS, RssAnon and RssShmem of the nginx
master and of every worker are read from /proc/<pid>/status, and the size
and resident part of the [heap] mapping (malloc's brk heap) from
/proc/<pid>/smaps: a heap whose extent keeps growing while its resident
part does not is fragmentation spreading the churn, not a leak.  The report
gives start, after the warm-up, end and max per process, the least-squares
slope over the last minutes of every sample and of each minute's lowest
sample (the floor: requests in flight lift single samples, a leak lifts
the floor), the memory 10 s after the load and after malloc_trim(0) in
each worker (through gdb, when installed).  A floor rising faster than
--soak-max-slope kB/min is GROWS; a process that grew more than
--soak-max-growth kB after the warm-up and then stayed is a plateau.
After each segment the load pauses --soak-rest seconds for one more
sample, at rest: no request in flight and a trim since, so what it shows
is what the worker keeps; its verdict uses the same bounds.
Measurement only: the exit status does not depend on the verdict.
"""

import json
import os
import re
import secrets
import signal
import threading
import time

import paygw_bench as pb

RSS_FIELDS = ("VmRSS", "RssAnon", "RssShmem")


def mem_kb(pid):
    """{VmRSS, RssAnon, RssShmem, HeapSize, HeapRss} in kB, or None (the
    process is gone)."""
    got = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in RSS_FIELDS:
                    got[k] = int(v.split()[0])
        got.update(heap_kb(pid))
    except OSError:
        return None
    return got


def heap_kb(pid):
    """the [heap] mapping's Size and Rss in kB (0 when it has none)."""
    size = rss = 0
    in_heap = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 6)
            if first and "-" in first[0] and len(first) >= 5:
                in_heap = len(first) >= 6 and first[5].strip() == "[heap]"
            elif in_heap and first[0] == "Size:":
                size += int(first[1])
            elif in_heap and first[0] == "Rss:":
                rss += int(first[1])
    return {"HeapSize": size, "HeapRss": rss}


HEAP_RE = re.compile(r'^paygw_worker_heap_bytes\{worker="(\d+)",'
                     r'state="(\w+)"\} (\d+)$', re.M)


BACKLOG_RE = re.compile(r'^paygw_webhook_backlog (\d+)$', re.M)


def malloc_heap(port):
    """({worker label: {state: kB}} from paygw_worker_heap_bytes (each
    worker's mallinfo2 after its last trim), or {} (no paygw_zone, trim
    off, not glibc); the webhook backlog the last delivery round counted,
    or None), from one /metrics read."""
    text = pb.local_get(port, "/metrics")
    if text is None:
        return {}, None
    got = {}
    for w, state, v in HEAP_RE.findall(text):
        got.setdefault(f"worker {w}", {})[state] = int(v) // 1024
    backlog = BACKLOG_RE.search(text)
    return got, int(backlog.group(1)) if backlog else None


def mysql_port(defaults):
    """the port in the bench's MariaDB defaults file, or None."""
    try:
        with open(defaults) as f:
            for line in f:
                k, _, v = line.partition("=")
                if k.strip() == "port":
                    return int(v)
    except (OSError, ValueError):
        pass
    return None


def connections_to(pids, port):
    """{pid: TCP connections open to 127.0.0.1:port} (a worker's MySQL
    pool: each connection holds its buffers and the connector's stack)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[2].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except OSError:
            pass
    got = {}
    for pid in pids:
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    n += 1
        except OSError:
            continue
        got[pid] = n
    return got


def signed_refund(host, nonces, payment_no, refund_no):
    path = f"/v1/payments/{payment_no}/refunds"
    body = json.dumps({"refund_no": refund_no, "amount": 1,
                       "reason": "soak"}, separators=(",", ":")).encode()
    ts = int(time.time())
    hdrs = [("Authorization", pb.authorization("POST", path, body, ts,
                                               nonces.next())),
            ("Idempotency-Key", "idem-" + refund_no),
            ("Content-Type", "application/json")]
    return pb.raw_request(host, "POST", path, hdrs, body)


def least_squares(points):
    """the least-squares slope of [(x, y)] in y per unit of x, or None
    when x never changes."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def slope_kb_min(points):
    """least-squares slope of [(seconds, kB)] in kB per minute."""
    per_s = least_squares(points)
    return 0.0 if per_s is None else 60.0 * per_s


def minute_floors(points, end_t, tail_s):
    """the lowest of [(seconds, kB)] in each minute of the last tail_s
    seconds before end_t, as [(seconds before end_t, kB)]: requests in
    flight lift single samples, memory kept lifts the floors."""
    floors = {}
    for t, v in points:
        if t >= end_t - tail_s:
            k = int((end_t - t) // 60)
            floors[k] = min(floors.get(k, v), v)
    return [(-60.0 * k, v) for k, v in floors.items()]


class Soak:
    def __init__(self, a):
        self.a = a
        self.procs = pb.Procs(a)
        self.nonces = pb.Nonces()
        self.bnos = pb.BusinessNos()
        self.host = f"127.0.0.1:{a.port}"
        self.refund_prefix = "R-" + secrets.token_hex(4) + "-"
        self.nrefunds = 0
        # a dict per sample: t, stub_status requests and writing, mem
        # {pid: mem_kb()}, malloc {worker label: {state: kB}}, the webhook
        # backlog, mysql {pid: connections to MariaDB}
        self.samples = []
        self.malloc_idle = {}
        self.mysql_port = mysql_port(a.mysql_defaults)
        self.idle, self.trimmed = {}, {}
        self.backlog_idle = None
        self.late = None        # (RSS, malloc, MySQL connections), later
        self.connects_before = self.connects_after = None
        self.segments = []      # wrk results
        self.notes = []
        self.stop = threading.Event()
        mix = [int(x) for x in a.soak_mix.split(":")]
        if len(mix) != 3 or min(mix) < 0 or sum(mix) == 0:
            raise SystemExit("--soak-mix is creates:gets:refunds, e.g. 3:6:1")
        # one round of the mix, each kind spread evenly over it
        kinds = [((j + 0.5) / n, kind) for kind, n in
                 zip(("create", "get", "refund"), mix) for j in range(n)]
        self.pattern = [kind for _, kind in sorted(kinds)]
        self.cursor = 0         # next pool payment to GET or refund

    # ---- requests ----------------------------------------------------------

    def make(self, i):
        kind = self.pattern[i % len(self.pattern)]
        if kind == "create":
            return pb.signed_create(self.host, self.nonces, self.bnos,
                                    notify_url=self.hook_url)
        no = self.pool[self.cursor % len(self.pool)]
        self.cursor += 1
        if kind == "get":
            return pb.signed_get(self.host, self.nonces, no)
        self.nrefunds += 1
        return signed_refund(self.host, self.nonces, no,
                             f"{self.refund_prefix}{self.nrefunds}")

    def gen(self, k, total):
        prefix = os.path.join(self.a.req_dir, f"soak{k % 2}")
        t0 = time.monotonic()
        n = pb.write_requests(prefix, self.a.threads, total, self.make)
        return prefix, n, time.monotonic() - t0

    # ---- memory sampling ---------------------------------------------------

    def sample(self, t0, rest=False):
        pids = [self.procs.master] + self.procs.workers()
        try:
            st = pb.nginx_status(self.a.baseline_port)
        except OSError:
            st = {"requests": None, "writing": None}
        t = time.monotonic() - t0
        mem = {p: mem_kb(p) for p in pids}
        heap, backlog = malloc_heap(self.a.port)
        self.samples.append({
            "t": t, "rest": rest,
            "requests": st["requests"], "writing": st["writing"],
            "mem": mem, "malloc": heap, "backlog": backlog,
            "mysql": (connections_to(pids[1:], self.mysql_port)
                      if self.mysql_port else {})})

    def sampler(self, t0):
        k = 0
        while not self.stop.is_set():
            self.sample(t0)
            k += 1
            self.stop.wait(max(0.0, t0 + k * self.a.soak_interval
                               - time.monotonic()))

    # ---- the run -----------------------------------------------------------

    def run(self):
        a = self.a
        self.hook_url = f"http://127.0.0.1:{a.webhook_port}/hook/ok"
        pb.log(f"soak: creating a pool of {a.seed} payments (notify_url "
               f"to the local receiver) for GETs and refunds")
        self.pool, fails = self.seed(a.seed)
        if fails:
            self.notes.append(f"pool: {len(fails)} of {a.seed} creates "
                              f"failed, e.g. {fails[0][0]} {fails[0][1]!r}")
        if not self.pool:
            raise RuntimeError("no payment could be created for the pool")

        rate = a.soak_rate
        seg = a.soak_segment
        prefix, n, gsecs = self.gen(0, self.size(rate, seg))
        self.connects_before = self.connects()
        t0 = time.monotonic()
        sam = threading.Thread(target=self.sampler, args=(t0,), daemon=True)
        sam.start()
        k = 0
        try:
            while True:
                left = a.soak_seconds - (time.monotonic() - t0)
                if left < 1:
                    break
                dur = int(min(seg, max(1, round(left))))
                nxt = {}

                def ahead(kk=k + 1, r=rate):
                    nxt["v"] = self.gen(kk, self.size(r, seg))
                # the next segment's requests, signed while this one runs
                th = threading.Thread(target=ahead, daemon=True)
                ts = time.monotonic() - t0
                th.start()
                r = pb.run_wrk(a, a.port, a.soak_conns, dur, prefix,
                               "201,200")
                th.join()
                if a.soak_rest > 0:
                    # no request in flight, a trim since: what stays is
                    # what the worker keeps (see rest_lines)
                    time.sleep(a.soak_rest)
                    self.sample(t0, rest=True)
                r.update(t=ts, dur=dur, loaded=n, gen_secs=gsecs)
                self.segments.append(r)
                pb.log(f"soak t={ts:5.0f}s segment {k}: {r['rps']:.0f} "
                       f"req/s non-2xx {int(r['non2xx'])} other "
                       f"{int(r['unexpected'])} sockerr {r['sock_errors']}"
                       f"{' EXHAUSTED' if r['exhausted'] else ''}; "
                       + self.rss_line())
                for s in r.get("samples", []):
                    pb.log(f"  sample answer: {s}")
                rate = max(rate, r["rps"])
                if r["exhausted"]:
                    rate = max(rate, n / dur) * 2
                prefix, n, gsecs = nxt["v"]
                k += 1
        finally:
            self.stop.set()
            sam.join()
            self.sample(t0)
        self.total_secs = time.monotonic() - t0
        self.connects_after = self.connects()
        self.after_load()

    def after_load(self):
        """idle, then malloc_trim(0) in every worker: memory that malloc
        keeps on its free lists goes back then, memory in use stays."""
        a = self.a
        time.sleep(a.soak_idle)
        self.idle = {p: mem_kb(p) for p in self.procs.workers()}
        self.malloc_idle, self.backlog_idle = malloc_heap(a.port)
        if a.soak_idle_long > a.soak_idle:
            # past idle_timeout, the pool has closed what the load opened
            time.sleep(a.soak_idle_long - a.soak_idle)
            self.late = ({p: mem_kb(p) for p in self.idle},
                         malloc_heap(a.port)[0],
                         connections_to(list(self.idle), self.mysql_port)
                         if self.mysql_port else {})
        self.trimmed = {}
        if not a.soak_trim or not pb.shutil.which("gdb"):
            return
        for p in self.idle:
            try:
                r = pb.subprocess.run(
                    ["gdb", "-p", str(p), "-batch", "-nx", "-ex",
                     "call (int) malloc_trim(0)"],
                    capture_output=True, text=True, timeout=120)
                ok = "$1 = " in r.stdout
            except (OSError, pb.subprocess.TimeoutExpired):
                ok = False
            self.trimmed[p] = mem_kb(p) if ok else None

    def seed(self, n):
        """pool payments with the notify_url (refunds deliver webhooks)."""
        nos, fails = [], []
        for i in range(n):
            st, body = pb.api_call(self.a.port, "POST", "/v1/payments",
                                   pb.create_body(self.bnos.next(),
                                                  notify_url=self.hook_url),
                                   f"pool-{self.bnos.prefix}{i}",
                                   self.nonces)
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            if st == 201 and doc.get("payment_no"):
                nos.append(doc["payment_no"])
            else:
                fails.append((st, body[:300]))
        return nos, fails

    def size(self, rate, seg):
        return int(rate * seg * self.a.headroom) + self.a.soak_conns * 8 + 500

    def rss_line(self):
        if not self.samples:
            return ""
        mem = self.samples[-1]["mem"]
        return "VmRSS kB " + " ".join(
            f"{p}:{m['VmRSS']}" for p, m in mem.items() if m)

    # ---- the report ----------------------------------------------------------

    def raw(self):
        """the samples behind the report: t s, stub_status requests and
        Writing, per pid RSS fields, per worker label malloc (kB), the
        webhook backlog and per pid MySQL connections."""
        rows = [dict(x, t=round(x["t"], 2),
                     mem={str(p): m for p, m in x["mem"].items() if m},
                     mysql={str(p): c for p, c in x["mysql"].items()})
                for x in self.samples]
        return {"master": self.procs.master, "samples": rows,
                "idle": {str(p): m for p, m in self.idle.items()},
                "malloc_idle": self.malloc_idle,
                "trimmed": {str(p): m for p, m in self.trimmed.items()},
                "late": None if not self.late else {
                    "rss": {str(p): m for p, m in self.late[0].items()},
                    "malloc": self.late[1],
                    "mysql": {str(p): c for p, c in self.late[2].items()}}}

    def sql(self, query):
        try:
            return pb.subprocess.run(
                ["mariadb", f"--defaults-file={self.a.mysql_defaults}",
                 "-N", "-B", "paygw", "-e", query],
                capture_output=True, text=True, check=True).stdout.split("\n")
        except (OSError, pb.subprocess.CalledProcessError):
            return []

    def pending(self):
        return self.sql("SELECT status, COUNT(*) FROM outbox_events "
                        "GROUP BY status")

    def connects(self):
        """MariaDB's count of connection attempts so far, or None: the
        pool's churn over the load is its difference (a new connection
        costs a handshake, prepares and fresh buffers)."""
        for line in self.sql("SHOW GLOBAL STATUS LIKE 'Connections'"):
            k, _, v = line.partition("\t")
            if k == "Connections" and v.isdigit():
                return int(v)
        return None

    def report(self, header):
        a = self.a
        # the sampler and the rest samples are taken by two threads
        self.samples.sort(key=lambda x: x["t"])
        out = [header, ""]
        segs = self.segments
        reqs = int(sum(r["requests"] for r in segs))
        busy = sum(r["duration_us"] for r in segs) / 1e6
        non2xx = sum(int(r["non2xx"]) for r in segs)
        other = sum(int(r["unexpected"]) for r in segs)
        sock = sum(r["sock_errors"] for r in segs)
        exh = sum(1 for r in segs if r["exhausted"])
        out.append(f"load: creates (notify_url -> local receiver, delivery "
                   f"on) : GETs : refunds of 1 = {a.soak_mix} by count, wrk "
                   f"-t{a.threads} -c{a.soak_conns}, {len(segs)} segments "
                   f"of <= {a.soak_segment}s with freshly signed requests; "
                   f"pool of {len(self.pool)} payments")
        out.append(f"ran {self.total_secs:.0f}s (wrk busy {busy:.0f}s): "
                   f"{reqs} requests, {reqs / busy if busy else 0:.0f} req/s"
                   f" while running; non2xx {non2xx}, other {other}, "
                   f"sockerr {sock}, segments that ran out of requests "
                   f"{exh}")
        rates = [r["rps"] for r in segs]
        if rates:
            out.append(f"  req/s per segment: min {min(rates):.0f} max "
                       f"{max(rates):.0f}")
        if None not in (self.connects_before, self.connects_after):
            out.append(f"MySQL connections opened during the load (MariaDB "
                       f"Connections, all clients; the bench's own queries "
                       f"included): "
                       f"{self.connects_after - self.connects_before}")
        ev = [x for x in self.pending() if x]
        out.append("outbox events by status at the end: "
                   + (", ".join(x.replace("\t", " ") for x in ev) or "?"))
        out.append("")

        # who is who: the master, then the workers by first appearance
        names = {self.procs.master: "master"}
        for x in self.samples:
            for p in x["mem"]:
                if p not in names:
                    names[p] = f"w{len(names)}"
        pids = list(names)

        # a row per ~10 s; the verdicts below use every sample
        step = max(1, round(10 / a.soak_interval))
        labels = sorted({w for x in self.samples for w in x["malloc"]})
        out.append(f"memory samples every {a.soak_interval:g}s (a row per "
                   f"{step * a.soak_interval:g}s shown), kB (VmRSS / "
                   f"RssAnon; VmRSS includes the shared zones a process "
                   f"touched, RssShmem); malloc in use per worker label "
                   f"(paygw_worker_heap_bytes); Writing = requests in "
                   f"progress (stub_status); backlog = webhook events due, as "
                   f"the last delivery round counted them "
                   f"(paygw_webhook_backlog); my = the worker's MySQL "
                   f"connections:")
        out.append(f"{'t s':>6} {'requests':>9}" + "".join(
            f" {names[p] + ' ' + str(p):>18}" for p in pids)
            + "".join(f" {'use ' + w.split()[-1]:>7}" for w in labels)
            + f" {'Writing':>7} {'backlog':>7}"
            + "".join(f" {'my ' + names[p]:>6}" for p in pids[1:]))
        base = self.samples[0]["requests"] if self.samples else 0
        for i, x in enumerate(self.samples):
            if i % step and i != len(self.samples) - 1:
                continue
            cells = []
            for p in pids:
                m = x["mem"].get(p)
                cells.append(f" {m['VmRSS']:>9}/{m['RssAnon']:<8}" if m
                             else f" {'-':>18}")
            for w in labels:
                v = (x["malloc"].get(w) or {}).get("in_use")
                cells.append(f" {v if v is not None else '-':>7}")
            for v in (x["writing"], x["backlog"]):
                cells.append(f" {v if v is not None else '-':>7}")
            for p in pids[1:]:
                cells.append(f" {x['mysql'].get(p, '-'):>6}")
            n = x["requests"]
            done = (n - base) if n is not None and base is not None else 0
            out.append(f"{x['t']:>6.0f} {done:>9}" + "".join(cells))
        out.append("")

        warm_t = a.soak_warmup
        tail_s = min(a.soak_tail, max(60.0, self.total_secs / 2))
        end_t = self.samples[-1]["t"] if self.samples else 0
        out.append(f"per process, kB: start; warm = first sample at >= "
                   f"{warm_t:g}s; end; max; slope = least squares over the "
                   f"last {tail_s:.0f}s of every sample, floor = of the "
                   f"lowest sample of each minute (in-flight requests lift "
                   f"single samples, a leak lifts the floor); idle = "
                   f"{a.soak_idle:g}s after the load; trim = after "
                   f"malloc_trim(0) in the worker (gdb): what malloc kept "
                   f"on its free lists goes back, memory in use stays")
        out.append(f"{'':<14} {'field':<8} {'start':>6} {'warm':>6} "
                   f"{'end':>6} {'max':>6} {'end-warm':>8} {'slope/min':>9} "
                   f"{'floor/min':>9} {'idle':>6} {'trim':>6}  verdict")
        flagged, plateau, short = [], [], []
        reqs_per_min = reqs / busy * 60 if busy else 0
        for p in pids:
            series = [(x["t"], x["mem"][p]) for x in self.samples
                      if x["mem"].get(p)]
            if not series:
                continue
            gone = self.samples[-1]["mem"].get(p) is None
            for field in ("VmRSS", "RssAnon"):
                vals = [(t, m[field]) for t, m in series]
                start = vals[0][1]
                warm = next((v for t, v in vals if t >= warm_t), vals[-1][1])
                end = vals[-1][1]
                mx = max(v for _, v in vals)
                recent = [(t, v) for t, v in vals if t >= end_t - tail_s]
                sl = slope_kb_min(recent)
                floors = minute_floors(vals, end_t, tail_s)
                fl = slope_kb_min(floors)
                idle = (self.idle.get(p) or {}).get(field)
                trim = (self.trimmed.get(p) or {}).get(field)
                who = f"{names[p]} {p}"
                if gone:
                    verdict = "EXITED during the run"
                    flagged.append(f"{who} exited")
                elif len(floors) < 3:
                    verdict = "too short to judge (< 3 minutes of floors)"
                    short.append(who)
                elif fl > a.soak_max_slope:
                    verdict = (f"GROWS: the floor rises (bound "
                               f"{a.soak_max_slope:g} kB/min)")
                    flagged.append(f"{who} {field}")
                elif end - warm > a.soak_max_growth:
                    verdict = (f"plateau: +{end - warm} kB after the warm-up "
                               f"(bound {a.soak_max_growth}), floor flat "
                               f"over the last {tail_s:.0f}s")
                    plateau.append(f"{who} {field}")
                else:
                    verdict = "flat"
                if reqs_per_min and names[p] != "master":
                    verdict += f" ({fl * 1024 / reqs_per_min:+.2f} B/req)"
                out.append(f"{who:<14} {field:<8} {start:>6} {warm:>6} "
                           f"{end:>6} {mx:>6} {end - warm:>+8} {sl:>+9.1f} "
                           f"{fl:>+9.1f} {idle if idle else '-':>6} "
                           f"{trim if trim else '-':>6}  {verdict}")
        out.append("")
        out.append(heap_lines(self.samples, names, warm_t))
        out.append(malloc_lines(self.samples, warm_t, tail_s,
                                self.malloc_idle))
        out.append(backlog_line(self.samples, warm_t, self.backlog_idle))
        rest, rest_flagged = rest_lines(self.samples, names, warm_t, tail_s,
                                        a)
        out.append(rest)
        if self.late:
            rss, heap, conns = self.late
            out.append(f"{a.soak_idle_long:g}s after the load (RssAnon, "
                       f"malloc in use, MySQL connections; kB): " + "; ".join(
                           f"{names[p]} {m['RssAnon']}"
                           f" {conns.get(p, '-')} conns"
                           for p, m in rss.items() if m and p in names)
                       + "; " + "; ".join(
                           f"{w} in use {v.get('in_use')}"
                           for w, v in sorted(heap.items())) + "\n")
        workers = [p for p in pids if p != self.procs.master]
        if flagged:
            out.append("RESULT: memory GROWS: " + ", ".join(flagged))
        elif short:
            out.append("RESULT: too short to judge (run >= 5 minutes)")
        elif plateau:
            out.append(f"RESULT: no steady growth (every floor within "
                       f"{a.soak_max_slope:g} kB/min over the last "
                       f"{tail_s:.0f}s), but a plateau above the warm-up "
                       f"value: " + ", ".join(plateau))
        else:
            out.append(f"RESULT: flat: {len(workers)} workers and the "
                       f"master within {a.soak_max_growth} kB after the "
                       f"warm-up and {a.soak_max_slope:g} kB/min over the "
                       f"last {tail_s:.0f}s")
        if rest_flagged:
            out.append("RESULT at rest: not flat: " + ", ".join(rest_flagged))
        elif any(x.get("rest") for x in self.samples):
            out.append(f"RESULT at rest: flat: every worker within "
                       f"{a.soak_max_growth} kB of its first rest sample "
                       f"after the warm-up and {a.soak_max_slope:g} kB/min")
        for n in self.notes:
            out.append("note: " + n)
        return "\n".join(out) + "\n"


def heap_lines(samples, names, warm_t):
    """the workers' [heap]: its extent and resident part over the run."""
    out = [f"malloc's [heap] per worker, kB (extent = the mapping's Size, "
           f"resident = its Rss; an extent that keeps growing while the "
           f"resident part does not is fragmentation, not a leak):",
           f"{'':<14} {'extent: start':>13} {'warm':>6} {'end':>6} "
           f"{'max':>6} {'end-warm':>8}   {'resident: warm':>14} "
           f"{'end':>6} {'max':>6}"]
    for p, who in names.items():
        if who == "master":
            continue
        ser = [(x["t"], x["mem"][p]) for x in samples
               if x["mem"].get(p) and "HeapSize" in x["mem"][p]]
        if not ser:
            continue
        ext = [(t, m["HeapSize"]) for t, m in ser]
        res = [(t, m["HeapRss"]) for t, m in ser]
        warm = next((v for t, v in ext if t >= warm_t), ext[-1][1])
        rwarm = next((v for t, v in res if t >= warm_t), res[-1][1])
        out.append(f"{who + ' ' + str(p):<14} {ext[0][1]:>13} {warm:>6} "
                   f"{ext[-1][1]:>6} {max(v for _, v in ext):>6} "
                   f"{ext[-1][1] - warm:>+8}   {rwarm:>14} "
                   f"{res[-1][1]:>6} {max(v for _, v in res):>6}")
    out.append("")
    return "\n".join(out)


def malloc_lines(samples, warm_t, tail_s, idle):
    """each worker's malloc figures over the run (paygw_worker_heap_bytes):
    in use rising is a leak; free rising while in use stays is
    fragmentation; neither, with RSS rising, is pages touched between
    trims."""
    labels = sorted({w for x in samples for w in x["malloc"]})
    if not labels:
        return ("malloc in use per worker: not published "
                "(paygw_worker_heap_bytes absent)\n")
    end_t = samples[-1]["t"]
    out = [f"malloc per worker, kB (paygw_worker_heap_bytes, after each "
           f"trim): in use = the arena's blocks in use, free = free in the "
           f"arena, mapped = blocks mapped on their own; floor/min = least "
           f"squares of each minute's lowest in-use value over the last "
           f"{tail_s:.0f}s; idle = after the load, as the RSS idle (in use "
           f"back at its start is nothing kept)",
           f"{'':<10} {'in use: start':>13} {'warm':>6} {'end':>6} "
           f"{'max':>6} {'end-warm':>8} {'floor/min':>9} {'idle':>6}   "
           f"{'free: warm':>10} {'end':>6} {'max':>6}   {'mapped: max':>11}"]
    for w in labels:
        ser = [(x["t"], x["malloc"][w]) for x in samples if w in x["malloc"]]
        use = [(t, m.get("in_use", 0)) for t, m in ser]
        free = [(t, m.get("free", 0)) for t, m in ser]
        mapped = [m.get("mapped", 0) for _, m in ser]
        warm = next((v for t, v in use if t >= warm_t), use[-1][1])
        fwarm = next((v for t, v in free if t >= warm_t), free[-1][1])
        fl = slope_kb_min(minute_floors(use, end_t, tail_s))
        iu = (idle.get(w) or {}).get("in_use")
        out.append(f"{w:<10} {use[0][1]:>13} {warm:>6} {use[-1][1]:>6} "
                   f"{max(v for _, v in use):>6} {use[-1][1] - warm:>+8} "
                   f"{fl:>+9.1f} {iu if iu is not None else '-':>6}   "
                   f"{fwarm:>10} {free[-1][1]:>6} "
                   f"{max(v for _, v in free):>6}   {max(mapped):>11}")
    busy = [x["writing"] for x in samples
            if x["writing"] is not None and x["t"] >= warm_t]
    if busy:
        out.append(f"requests in progress (stub_status Writing, every "
                   f"sample after the warm-up): min {min(busy)} max "
                   f"{max(busy)} mean {sum(busy) / len(busy):.1f}")
    out.append("")
    return "\n".join(out)


def rest_lines(samples, names, warm_t, tail_s, a):
    """the samples taken at rest: after each segment the load pauses
    --soak-rest seconds, so no request is in flight and each worker has
    trimmed since.  In-flight work lifts a busy sample however long the
    run; what a worker keeps (a leak, a cache, its MySQL connections'
    buffers) lifts the rest samples.  Returns (text, [who field] whose
    rest samples rise faster than --soak-max-slope or end more than
    --soak-max-growth above the first rest sample after the warm-up)."""
    rest = [x for x in samples if x.get("rest")]
    if not rest:
        return "rest samples: none (--soak-rest 0)\n", []
    labels = sorted({w for x in rest for w in x["malloc"]})
    workers = [p for p, who in names.items() if who != "master"]
    out = [f"at rest ({a.soak_rest:g}s after each segment, no request in "
           f"flight, trimmed since), kB: RssAnon per worker, malloc in use "
           f"per worker label, the workers' MySQL connections:",
           f"{'t s':>6}" + "".join(f" {names[p]:>7}" for p in workers)
           + "".join(f" {'use ' + w.split()[-1]:>7}" for w in labels)
           + f" {'Writing':>7}" + "".join(f" {'my ' + names[p]:>6}"
                                          for p in workers)]
    for x in rest:
        out.append(f"{x['t']:>6.0f}" + "".join(
            f" {(x['mem'].get(p) or {}).get('RssAnon', '-'):>7}"
            for p in workers) + "".join(
            f" {(x['malloc'].get(w) or {}).get('in_use', '-'):>7}"
            for w in labels)
            + f" {x['writing'] if x['writing'] is not None else '-':>7}"
            + "".join(f" {x['mysql'].get(p, '-'):>6}" for p in workers))
    end_t = rest[-1]["t"]
    flagged = []
    out.append(f"{'':<14} {'field':<8} {'warm':>6} {'end':>6} {'max':>6} "
               f"{'end-warm':>8} {'slope/min':>9}  verdict (slope over the "
               f"rest samples of the last {tail_s:.0f}s)")
    series = [(f"{names[p]} {p}", f, [(x["t"], x["mem"][p][f]) for x in rest
                                      if x["mem"].get(p)])
              for p in workers for f in ("VmRSS", "RssAnon")]
    series += [(w, "in use", [(x["t"], x["malloc"][w]["in_use"]) for x in rest
                              if "in_use" in x["malloc"].get(w, {})])
               for w in labels]
    for who, field, vals in series:
        after = [(t, v) for t, v in vals if t >= warm_t]
        if len(after) < 3:
            out.append(f"{who:<14} {field:<8} too few rest samples")
            continue
        warm, end = after[0][1], after[-1][1]
        sl = slope_kb_min([(t, v) for t, v in after if t >= end_t - tail_s])
        if sl > a.soak_max_slope:
            verdict = f"GROWS (bound {a.soak_max_slope:g} kB/min)"
        elif end - warm > a.soak_max_growth:
            verdict = f"plateau (bound {a.soak_max_growth} kB)"
        else:
            verdict = "flat"
        if verdict != "flat" and field != "in use":
            flagged.append(f"{who} {field}")
        out.append(f"{who:<14} {field:<8} {warm:>6} {end:>6} "
                   f"{max(v for _, v in after):>6} {end - warm:>+8} "
                   f"{sl:>+9.1f}  {verdict}")
    for p in workers:
        per = per_conn_kb([(x["mysql"].get(p), x["mem"][p]["RssAnon"])
                           for x in rest if x["t"] >= warm_t
                           and x["mem"].get(p)
                           and x["mysql"].get(p) is not None])
        if per is not None:
            out.append(f"{names[p]} {p}: RssAnon at rest moves {per:+.0f} kB "
                       f"per MySQL connection open (least squares over "
                       f"the rest samples after the warm-up)")
    out.append("")
    return "\n".join(out), flagged


def per_conn_kb(points):
    """least-squares kB per connection of [(connections, kB)], or None
    when the count never changed."""
    return least_squares(points) if len(points) >= 3 else None


def backlog_line(samples, warm_t, idle):
    """the webhook backlog over the run: a delivery round holds each
    event's subrequest until the round ends, so a backlog that grows keeps
    full rounds in flight, and their memory shows as in use."""
    due = [(x["t"], x["backlog"]) for x in samples
           if x["backlog"] is not None and x["t"] >= warm_t]
    if not due:
        return "webhook backlog: not published (paygw_webhook_backlog)\n"
    return (f"webhook backlog (events due, paygw_webhook_backlog) after the "
            f"warm-up: first {due[0][1]} last {due[-1][1]} max "
            f"{max(b for _, b in due)} slope {slope_kb_min(due):+.0f}/min; "
            f"{'-' if idle is None else idle} after the load\n")


def main():
    p = pb.parser()
    p.add_argument("--soak-seconds", type=float, default=600)
    p.add_argument("--soak-conns", type=int, default=16)
    p.add_argument("--soak-segment", type=int, default=30)
    p.add_argument("--soak-interval", type=float, default=2)
    p.add_argument("--soak-mix", default="3:6:1")
    p.add_argument("--soak-rate", type=float, default=2500,
                   help="req/s the first segment's requests are sized for")
    p.add_argument("--soak-warmup", type=float, default=120)
    p.add_argument("--soak-tail", type=float, default=300)
    p.add_argument("--soak-max-growth", type=int, default=1024)
    p.add_argument("--soak-max-slope", type=float, default=64)
    p.add_argument("--soak-idle", type=float, default=10)
    p.add_argument("--soak-idle-long", type=float, default=0,
                   help="seconds after the load for a second look, past "
                        "the MySQL pool's idle_timeout (0: none)")
    p.add_argument("--soak-trim", type=int, default=1)
    p.add_argument("--soak-rest", type=float, default=2,
                   help="seconds the load pauses after each segment before "
                        "a rest sample (0: no pause)")
    a = p.parse_args()
    if not a.webhook_port:
        raise SystemExit("the soak needs the webhook receiver "
                         "(BENCH_WEBHOOKS=1)")

    signal.signal(signal.SIGTERM, pb.on_signal)
    signal.signal(signal.SIGINT, pb.on_signal)

    s = Soak(a)
    s.run()
    text = s.report(a.header)
    with open(a.out, "w") as f:
        f.write(text)
    # every sample, so that a change of the verdicts can be tried on
    # earlier runs (the report shows a row per 10 s)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(s.raw(), f, separators=(",", ":"))
    print()
    print(text, end="")


if __name__ == "__main__":
    main()
