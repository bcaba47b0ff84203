#!/usr/bin/env python3
"""paygw benchmark driver, started by bench/run.sh once the stack is up.

For every scenario: generate pre-signed requests (fresh nonces, ts = now),
run wrk with bench/paygw.lua, and around each measured run sample
  - CPU time of every process of the stack (/proc/<pid>/stat) and of the
    whole machine (/proc/stat), so the table says who used the 2 cores;
  - MariaDB status counters (SHOW GLOBAL STATUS) and Redis INFO, so the
    table says how many queries / commands one API request costs;
  - VmRSS of the nginx workers.
Nothing here asserts a timing: it measures and prints.  The exit status is
non-zero only when the benchmark itself could not run.
"""

import argparse
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

KEY_ID = "demo"
SECRET = b"demo-secret"
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030,
        "cvc": "123"}
CLK_TCK = os.sysconf("SC_CLK_TCK")

# what the table reports against (from the issue)
TARGET_CREATE_RPS = 8000
TARGET_GET_RPS = 45000
TARGET_P99_MS = 15.0

wrk_proc = None


def log(msg):
    print(f"bench: {msg}", flush=True)


# ---- signing and request generation ---------------------------------------

EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def authorization(method, path, body, ts, nonce):
    body_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA
    sts = f"{method}\n{path}\n{ts}\n{nonce}\n{body_hash}".encode()
    sig = hmac.new(SECRET, sts, hashlib.sha256).hexdigest()
    return f"PAYGW-HMAC-SHA256 key={KEY_ID},ts={ts},nonce={nonce},sig={sig}"


class Nonces:
    """Unique nonces: a random prefix per benchmark run plus a counter."""

    def __init__(self):
        self.prefix = "bn" + secrets.token_hex(6)
        self.n = 0

    def next(self):
        self.n += 1
        return f"{self.prefix}{self.n:012d}"


class BusinessNos:
    def __init__(self):
        self.prefix = "B-" + secrets.token_hex(4) + "-"
        self.n = 0

    def next(self):
        self.n += 1
        return f"{self.prefix}{self.n}"


def create_body(business_no, channel="bank_card", notify_url=None):
    doc = {"business_no": business_no, "amount": 1999, "currency": "CNY",
           "channel": channel}
    if notify_url:
        doc["notify_url"] = notify_url
    if channel == "bank_card":
        doc["card"] = CARD
    return json.dumps(doc, separators=(",", ":")).encode()


def raw_request(host, method, path, headers, body=b""):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def signed_create(host, nonces, bnos, channel="bank_card", notify_url=None):
    bno = bnos.next()
    body = create_body(bno, channel, notify_url)
    ts = int(time.time())
    hdrs = [("Authorization", authorization("POST", "/v1/payments", body, ts,
                                            nonces.next())),
            ("Idempotency-Key", "idem-" + bno),
            ("Content-Type", "application/json")]
    return raw_request(host, "POST", "/v1/payments", hdrs, body)


def signed_get(host, nonces, payment_no):
    path = "/v1/payments/" + payment_no
    ts = int(time.time())
    hdrs = [("Authorization", authorization("GET", path, b"", ts,
                                            nonces.next()))]
    return raw_request(host, "GET", path, hdrs)


def write_requests(prefix, threads, total, make):
    """Writes PREFIX.1 .. PREFIX.threads, total requests split evenly."""
    per = (total + threads - 1) // threads
    for t in range(1, threads + 1):
        with open(f"{prefix}.{t}", "wb") as f:
            f.write(b"\0".join(make(i) for i in range(per)))
    return per * threads


# ---- talking to the stack directly (seeding, counters) ---------------------

def api_call(port, method, path, body=b"", idem=None, nonces=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        hdrs = {"Authorization": authorization(method, path, body,
                                               int(time.time()),
                                               nonces.next())}
        if body:
            hdrs["Content-Type"] = "application/json"
        if idem:
            hdrs["Idempotency-Key"] = idem
        conn.request(method, path, body=body or None, headers=hdrs)
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


def seed_payments(port, n, nonces, bnos, workers=8):
    """Creates n payments; returns (payment_nos, [failures])."""
    jobs = [(bnos.next(), nonces.next()) for _ in range(n)]

    def one(job):
        bno, nonce = job
        body = create_body(bno)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/v1/payments", body=body, headers={
                "Authorization": authorization("POST", "/v1/payments", body,
                                               int(time.time()), nonce),
                "Content-Type": "application/json",
                "Idempotency-Key": "seed-" + bno})
            res = conn.getresponse()
            return res.status, res.read()
        finally:
            conn.close()

    nos, failures = [], []
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        for st, data in ex.map(one, jobs):
            try:
                doc = json.loads(data)
            except ValueError:
                doc = {}
            if st == 201 and doc.get("payment_no"):
                nos.append(doc["payment_no"])
            else:
                failures.append((st, data[:300]))
    return nos, failures


def nginx_requests(port):
    """stub_status' request counter (client requests, not subrequests);
    reading it counts one more."""
    return nginx_accepts_requests(port)[1]


def nginx_accepts_requests(port):
    """stub_status' accepted connections and requests."""
    st = nginx_status(port)
    return st["accepts"], st["requests"]


def nginx_status(port):
    """stub_status' counters: accepts, requests, and writing (client
    requests in progress); OSError when nginx does not answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/nginx_status")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    lines = text.splitlines()
    accepts, _, requests = lines[2].split()
    writing = re.search(r"Writing: (\d+)", lines[3])
    return {"accepts": int(accepts), "requests": int(requests),
            "writing": int(writing.group(1)) if writing else None}


class MysqlStatus:
    """SHOW GLOBAL STATUS through one long-lived `mariadb` client, so that
    a sample costs a round trip, not a fork+exec (slow on a busy machine,
    which would skew the counter windows)."""

    def __init__(self, defaults_file):
        self.p = subprocess.Popen(
            ["mariadb", f"--defaults-file={defaults_file}", "-N", "-B",
             "--unbuffered"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)

    def __call__(self):
        self.p.stdin.write("SHOW GLOBAL STATUS; SELECT '__end__';\n")
        self.p.stdin.flush()
        st = {}
        for line in self.p.stdout:
            line = line.rstrip("\n")
            if line == "__end__":
                break
            k, _, v = line.partition("\t")
            try:
                st[k] = int(v)
            except ValueError:
                pass
        return st

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def redis_info(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"INFO all\r\n")
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(65536)
        head, _, rest = buf.partition(b"\r\n")
        size = int(head[1:])
        while len(rest) < size + 2:
            rest += s.recv(65536)
    finally:
        s.close()
    info = {}
    for line in rest[:size].decode().splitlines():
        if ":" not in line or line.startswith("#"):
            continue
        k, _, v = line.partition(":")
        if k.startswith("cmdstat_"):
            m = re.search(r"calls=(\d+)", v)
            if m:
                info[k] = int(m.group(1))
        elif v.isdigit():
            info[k] = int(v)
    return info


def local_get(port, path):
    """the body of GET http://127.0.0.1:port/path, or None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    except OSError:
        return None
    finally:
        conn.close()


def paygw_round_trips(port):
    """paygw_backend_round_trips_total by backend from paygw's /metrics
    (requests the gateway wrote: a Redis pipeline, a MySQL query or
    multi-statement batch); {} when the module does not count them."""
    text = local_get(port, "/metrics")
    if text is None:
        return {}
    rt = {}
    for m in re.finditer(r'^paygw_backend_round_trips_total'
                         r'\{backend="(\w+)"\} (\d+)$', text, re.M):
        rt[m.group(1)] = int(m.group(2))
    return rt


# ---- processes: CPU and RSS -----------------------------------------------

def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        pass
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def cpu_ticks(pid):
    """utime + stime of a whole process (all threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]), idle          # total (without guest), idle+iowait


def vm_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Procs:
    def __init__(self, a):
        self.master = a.nginx_pid
        self.fixed = {"mariadbd": a.mysql_pid, "redis": a.redis_pid,
                      "sim(node)": a.sim_pid}
        if a.acquirer_pid:
            self.fixed["acquirer"] = a.acquirer_pid

    def workers(self):
        return sorted(children(self.master))

    def snapshot(self, extra=None):
        snap = {"_t": time.monotonic(), "_machine": machine_ticks()}
        for i, w in enumerate(self.workers(), 1):
            snap[f"nginx w{i}"] = (w, cpu_ticks(w))
        snap["nginx master"] = (self.master, cpu_ticks(self.master))
        for name, pid in self.fixed.items():
            snap[name] = (pid, cpu_ticks(pid))
        for name, pid in (extra or {}).items():
            snap[name] = (pid, cpu_ticks(pid))
        return snap


def cpu_delta(a, b):
    """{name: percent of one core} plus 'other' and 'idle' (machine)."""
    secs = b["_t"] - a["_t"]
    res = {}
    ours = 0.0
    for k, v in a.items():
        if k.startswith("_"):
            continue
        pid, t0 = v
        if k not in b or b[k][0] != pid or t0 is None or b[k][1] is None:
            continue
        ticks = b[k][1] - t0
        res[k] = 100.0 * ticks / CLK_TCK / secs
        ours += ticks
    tot0, idle0 = a["_machine"]
    tot1, idle1 = b["_machine"]
    ncpu = os.cpu_count() or 1
    busy = (tot1 - tot0) - (idle1 - idle0)
    # /proc/stat counts USER_HZ for all CPUs together
    res["other"] = max(0.0, 100.0 * (busy - ours) / CLK_TCK / secs)
    res["idle"] = 100.0 * (idle1 - idle0) / CLK_TCK / secs
    res["_capacity"] = 100.0 * ncpu
    res["_secs"] = secs
    return res


def perf_summary(data):
    """perf-<run>.txt beside the data: CPU by process and binary, then the
    hottest symbols of the nginx workers (self time)."""
    base = data[:-5]
    with open(base + ".txt", "w") as f:
        for args in (["--sort", "comm,dso"],
                     ["--comms", "nginx", "--sort", "dso,sym"]):
            r = subprocess.run(["perf", "report", "-i", data, "--stdio",
                                "--no-children", "-g", "none",
                                "--percent-limit", "0.7"] + args,
                               capture_output=True, text=True)
            f.write(r.stdout)
    log(f"perf profile: {base}.txt")


# ---- wrk -------------------------------------------------------------------

def run_wrk(a, port, conns, duration, prefix, expect, repeat=False,
            sampler=None):
    """Runs wrk; returns the parsed BENCH line plus sampled data."""
    global wrk_proc
    cmd = ["wrk", f"-t{a.threads}", f"-c{conns}", f"-d{duration}s",
           "--timeout", "5s", "-s", a.lua, f"http://127.0.0.1:{port}", "--",
           prefix, str(expect)] + (["repeat"] if repeat else [])
    wrk_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    sampled = sampler(wrk_proc) if sampler else None
    out, _ = wrk_proc.communicate()
    rc = wrk_proc.returncode
    wrk_proc = None
    res = {"raw": out, "rc": rc, "sampled": sampled}
    for line in out.splitlines():
        if line.startswith("BENCH "):
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                res[k] = float(v)
        elif line.startswith("BENCHSAMPLES "):
            res["samples"] = [s for s in line[13:].split("|") if s.strip()]
    if "requests" not in res:
        raise RuntimeError(f"wrk failed (rc {rc}):\n{out}")
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["sock_errors"] = int(res["err_connect"] + res["err_read"]
                             + res["err_write"] + res["err_timeout"])
    return res


class Bench:
    def __init__(self, a):
        self.a = a
        self.procs = Procs(a)
        self.nonces = Nonces()
        self.bnos = BusinessNos()
        self.host = f"127.0.0.1:{a.port}"
        self.mysql_status = MysqlStatus(a.mysql_defaults)
        self.results = []       # dicts, one per measured run
        self.notes = []
        self.rss = {}
        os.makedirs(a.req_dir, exist_ok=True)

    # a sampler runs while wrk runs: waits for wrk to load its requests,
    # then samples CPU over the middle of the run (and one `top`).
    def sampler(self, top_file=None, perf_file=None):
        a = self.a

        def run(proc):
            warm = min(a.settle, max(0.5, a.duration / 4))
            time.sleep(warm)
            extra = {"wrk": proc.pid}
            n0 = nginx_requests(a.baseline_port)
            my0, rd0 = self.mysql_status(), redis_info(a.redis_port)
            rt0 = paygw_round_trips(a.port)
            s0 = self.procs.snapshot(extra)
            window = max(1.0, a.duration - warm - 1.0)
            perf = None
            if perf_file:
                # system-wide, or (profile mode) only the nginx workers
                who = (["-p", ",".join(str(w) for w in self.procs.workers())]
                       if getattr(a, "perf_workers", False) else ["-a"])
                perf = subprocess.Popen(
                    ["perf", "record", "-q"] + who + ["-g", "-F",
                     str(getattr(a, "perf_freq", 499)),
                     "-e", "cpu-clock", "-o", perf_file, "--", "sleep",
                     f"{window:.1f}"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
            time.sleep(window / 2)
            if top_file:
                top = subprocess.run(["top", "-b", "-n1", "-w", "200"],
                                     capture_output=True, text=True).stdout
                with open(top_file, "w") as f:
                    f.write("\n".join(top.splitlines()[:25]) + "\n")
            time.sleep(window / 2)
            if perf:
                perf.wait()
            rt1 = paygw_round_trips(a.port)
            n1 = nginx_requests(a.baseline_port)
            my1, rd1 = self.mysql_status(), redis_info(a.redis_port)
            s1 = self.procs.snapshot(extra)
            return {"cpu": cpu_delta(s0, s1), "my": (my0, my1),
                    "redis": (rd0, rd1), "rt": (rt0, rt1),
                    "secs": s1["_t"] - s0["_t"],
                    "requests": n1 - n0 - 3}
        return run

    @staticmethod
    def all_ticks():
        ticks = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        head, _, rest = f.read().rpartition(")")
                    v = rest.split()
                    ticks[int(d)] = (head.partition("(")[2],
                                     int(v[11]) + int(v[12]))
                except (OSError, ValueError, IndexError):
                    pass
        return ticks

    def top_others(self, t0, t1, secs):
        ours = {self.procs.master, os.getpid(), *self.procs.fixed.values(),
                *self.procs.workers()}
        busy = sorted(((t1[p][1] - t0[p][1], t1[p][0], p) for p in t1
                       if p in t0 and p not in ours), reverse=True)[:3]
        return ", ".join(f"{name}[{pid}] {100 * t / CLK_TCK / secs:.0f}%"
                         for t, name, pid in busy if t > 0)

    def quiet(self, what):
        """Waits (up to --quiet-wait s) until processes other than the
        stack use less than --quiet-max % of one core; returns that %."""
        a = self.a
        deadline = time.monotonic() + a.quiet_wait
        said = False
        while True:
            t0 = self.all_ticks()
            s0 = self.procs.snapshot()
            time.sleep(1)
            s1 = self.procs.snapshot()
            other = cpu_delta(s0, s1)["other"]
            if other <= a.quiet_max or time.monotonic() >= deadline:
                break
            if not said:
                top = self.top_others(t0, self.all_ticks(),
                                      s1["_t"] - s0["_t"])
                log(f"{what}: other processes use {other:.0f}% of a core "
                    f"({top}); waiting up to {a.quiet_wait:.0f}s for a "
                    f"quiet machine")
                said = True
        if said:
            log(f"{what}: going ahead after "
                f"{a.quiet_wait - (deadline - time.monotonic()):.0f}s "
                f"(other processes: {other:.0f}%)")
        if other > a.quiet_max:
            self.notes.append(f"{what} started while other processes used "
                              f"{other:.0f}% of one core")
        return other

    def gen(self, name, total, make):
        prefix = os.path.join(self.a.req_dir, name)
        t0 = time.monotonic()
        n = write_requests(prefix, self.a.threads, total, make)
        log(f"{name}: generated {n} signed requests in "
            f"{time.monotonic() - t0:.1f}s")
        return prefix, n

    def wanted(self, name):
        """BENCH_ONLY (--only): the scenarios to run, for experiments."""
        only = [o for o in self.a.only.split(",") if o]
        return not only or name in only or (
            name.startswith("create_hook_") and "webhooks" in only)

    def size_for(self, rate, duration, conns):
        return int(rate * duration * self.a.headroom) + conns * 8 + 1000

    def scenario(self, name, label, port, expect, make=None, repeat=None,
                 warm_rate=20000, target=None):
        """warm-up at the throughput concurrency, then the measured runs."""
        a = self.a
        if not self.wanted(name):
            return
        rate = warm_rate
        if make:
            prefix, n = self.gen(f"{name}-warm", self.size_for(
                warm_rate, a.warmup, a.conns), make)
        else:
            prefix, n = self.gen(f"{name}-static", 1, lambda i: repeat)
        if a.warmup > 0:
            w = run_wrk(a, port, a.conns, a.warmup, prefix, expect,
                        repeat=not make)
            rate = w["rps"]
            if w["exhausted"]:
                rate = max(rate, n / a.warmup) * 2
            log(f"{name}: warm-up {w['rps']:.0f} req/s "
                f"(non-2xx {int(w['non2xx'])})")
        for conns in a.conn_list:
            for attempt in (1, 2):
                if make:
                    prefix, n = self.gen(f"{name}-c{conns}", self.size_for(
                        rate, a.duration, conns), make)
                top = os.path.join(a.log_dir, f"top-{name}-c{conns}.txt")
                perf = (os.path.join(a.log_dir, f"perf-{name}-c{conns}.data")
                        if a.perf and conns == a.conns else None)
                self.quiet(f"{name} c{conns}")
                rss0 = {w: vm_rss_kb(w) for w in self.procs.workers()}
                r = run_wrk(a, port, conns, a.duration, prefix, expect,
                            repeat=not make, sampler=self.sampler(top, perf))
                rss1 = {w: vm_rss_kb(w) for w in self.procs.workers()}
                if not r["exhausted"]:
                    break
                log(f"{name} c{conns}: ran out of pre-signed requests at "
                    f"{r['rps']:.0f} req/s; regenerating more")
                rate = max(rate, r["rps"], n / a.duration) * 2
            if perf and os.path.exists(perf):
                perf_summary(perf)
            r.update(name=name, label=label, conns=conns, expect=expect,
                     target=target, rss0=rss0, rss1=rss1)
            rate = max(rate, r["rps"])
            log(f"{name} c{conns}: {r['rps']:.0f} req/s p50 "
                f"{r['p50_us'] / 1000:.2f} ms p99 {r['p99_us'] / 1000:.2f} ms"
                f" non-2xx {int(r['non2xx'])} other {int(r['unexpected'])}"
                f" socket errors {r['sock_errors']}")
            for s in r.get("samples", []):
                log(f"  sample answer: {s}")
            self.results.append(r)

    def functional_check(self):
        st, body = api_call(self.a.port, "POST", "/v1/payments",
                            create_body(self.bnos.next()), "check-1",
                            self.nonces)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        line = (f"create -> {st} status={doc.get('status')} "
                f"payment_no={doc.get('payment_no')}")
        ok = st == 201 and doc.get("status") == "succeeded"
        if doc.get("payment_no"):
            st2, body2 = api_call(self.a.port, "GET",
                                  "/v1/payments/" + doc["payment_no"],
                                  nonces=self.nonces)
            doc2 = json.loads(body2) if body2[:1] == b"{" else {}
            line += f"; get -> {st2} status={doc2.get('status')}"
            ok = ok and st2 == 200
        if not ok:
            line += f"  UNEXPECTED: {body[:400]!r}"
        log("functional check: " + line)
        return line

    def run(self):
        a = self.a
        host = self.host
        self.rss["start"] = {w: vm_rss_kb(w) for w in self.procs.workers()}
        self.background = self.quiet("start")
        log(f"background CPU (not the stack) before the runs: "
            f"{self.background:.0f}% of one core")
        self.check = self.functional_check()

        def make_create(_):
            return signed_create(host, self.nonces, self.bnos)

        self.scenario("create", "create  POST /v1/payments", a.port, 201,
                      make=make_create, warm_rate=12000,
                      target=TARGET_CREATE_RPS)

        if a.webhook_port and self.wanted("webhooks"):
            self.webhooks()

        # a QR create: precreate signed with RSA2 (2048-bit private key
        # operation per payment), the answer verified
        def make_alipay(_):
            return signed_create(host, self.nonces, self.bnos, "alipay")

        self.scenario("create_alipay", "create  POST /v1/payments (alipay)",
                      a.port, 201, make=make_alipay, warm_rate=12000)

        if self.wanted("get"):
            self.gets()
        self.baselines()
        self.rss["end"] = {w: vm_rss_kb(w) for w in self.procs.workers()}

    def gets(self):
        a = self.a
        host = self.host
        t0 = time.monotonic()
        nos, fails = seed_payments(a.port, a.seed, self.nonces, self.bnos)
        log(f"seeded {len(nos)} payments for GETs in "
            f"{time.monotonic() - t0:.1f}s ({len(fails)} failed)")
        for st, body in fails[:3]:
            log(f"  seed failure: {st} {body!r}")
        if fails:
            self.notes.append(f"seeding: {len(fails)} of {a.seed} creates "
                              f"failed, e.g. {fails[0][0]} {fails[0][1]!r}")
        if not nos:
            raise RuntimeError("no payment could be created for the GETs")

        def make_get(i):
            return signed_get(host, self.nonces, nos[i % len(nos)])

        self.scenario("get", "get     GET /v1/payments/{no}", a.port, 200,
                      make=make_get, warm_rate=50000, target=TARGET_GET_RPS)

    def baselines(self):
        a = self.a
        bhost = f"127.0.0.1:{a.baseline_port}"
        self.scenario("baseline", "proxy   proxy_pass -> sim GET /health",
                      a.baseline_port, 200,
                      repeat=raw_request(bhost, "GET", "/health", []))
        if a.static:
            self.scenario("static", "static  nginx return 200 (ceiling)",
                          a.baseline_port, 200,
                          repeat=raw_request(bhost, "GET", "/static", []))

    # ---- webhooks: create with delivery off vs on, and the drain rate -----

    def sql1(self, query):
        out = subprocess.run(["mariadb", f"--defaults-file={self.a.mysql_defaults}",
                              "-N", "-B", "paygw", "-e", query],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def nginx_conf(self, which):
        """nginx.conf with webhook delivery on or off, then a reload."""
        a = self.a
        shutil.copyfile(a.nginx_conf + "." + which, a.nginx_conf)
        os.kill(a.nginx_pid, signal.SIGHUP)
        time.sleep(3)

    def pending(self):
        return int(self.sql1("SELECT COUNT(*) FROM outbox_events "
                             "WHERE status = 'pending'"))

    def drain(self, backlog):
        """reload with delivery on, then time the backlog's drain."""
        t0 = time.monotonic()
        self.nginx_conf("hooks-on")
        left = backlog
        while left > 0 and time.monotonic() - t0 < 600:
            time.sleep(0.2)
            left = self.pending()
        secs = time.monotonic() - t0
        note = (f"webhooks: a backlog of {backlog} events drained in "
                f"{secs:.1f}s from the reload = {backlog / secs:.0f} "
                f"events/s at least (delivered to a local receiver; "
                f"{left} left)")
        log(note)
        self.notes.append(note)

    def history_len(self):
        """InnoDB's purge backlog: old row versions not yet purged."""
        out = self.sql1("SHOW ENGINE INNODB STATUS")
        m = re.search(r"History list length (\d+)", out)
        return int(m.group(1)) if m else 0

    def settle(self, why):
        """
        Wait (up to 60 s) for InnoDB to purge what the run before left,
        so that no run pays for the purge of the one before (a drain
        updates tens of thousands of outbox rows).  Measured in 1306Z:
        at most 3,600 entries, purged within 0.5 s: a guard, not a
        correction.
        """
        t0 = time.monotonic()
        n = h0 = self.history_len()
        while n > 2000 and time.monotonic() - t0 < 60:
            time.sleep(0.5)
            n = self.history_len()
        log(f"purge: history list {h0} -> {n} in "
            f"{time.monotonic() - t0:.1f}s ({why})")

    def webhooks(self):
        """
        Creates with a notify_url, delivery off and on, --hook-pairs
        pairs in the order off, on, on, off, off, on, ...: the tables
        grow during a run (MariaDB's CPU per create rises from pair to
        pair), and alternating the order charges that growth to neither
        side (with an even number of pairs, exactly).  Before each run
        InnoDB purges what the previous one left (settle).  The note
        gives each pair and the median.
        """
        a = self.a
        host = self.host
        url = f"http://127.0.0.1:{a.webhook_port}/hook/ok"

        def make_hook(_):
            return signed_create(host, self.nonces, self.bnos,
                                 notify_url=url)

        # the nginx receiver counts its connections (the gateway keeps
        # them: upstream paygw_webhook); the Node one has no stub_status
        try:
            rx0 = nginx_accepts_requests(a.webhook_port)
        except (OSError, ValueError, IndexError):
            rx0 = None

        state = ["on"]     # nginx.conf.example: delivery on

        def switch(which):
            if which == state[0]:
                return
            if which == "off":
                self.nginx_conf("hooks-off")
            else:
                # the backlog of the off runs before: delivered, timed
                self.drain(self.pending())
            state[0] = which

        for k in range(1, max(1, a.hook_pairs) + 1):
            tag = "" if k == 1 else str(k)
            for which in (("off", "on") if k % 2 else ("on", "off")):
                switch(which)
                self.settle(f"before delivery {which} #{k}")
                self.scenario(f"create_hook_{which}" + tag,
                              f"create  + notify_url, delivery {which} #{k}",
                              a.port, 201, make=make_hook, warm_rate=12000)

        # the rest of the bench runs with delivery on, nothing pending
        switch("on")

        def rps(name):
            return [r["rps"] for r in self.results
                    if r["name"].rstrip("0123456789") == name
                    and r["conns"] == a.conns]

        if rx0:
            rx1 = nginx_accepts_requests(a.webhook_port)
            conns, reqs = rx1[0] - rx0[0], rx1[1] - rx0[1]
            note = (f"webhooks: the receiver took {reqs} requests over "
                    f"{conns} connections ({reqs / max(conns, 1):.1f} "
                    f"requests a connection)")
            log(note)
            self.notes.append(note)

        off, on = rps("create_hook_off"), rps("create_hook_on")
        if len(off) == len(on) and off and all(off):
            pairs = [100 * (1 - n / f) for f, n in zip(off, on)]
            note = (f"webhooks: create with delivery on "
                    f"{', '.join(f'{x:.0f}' for x in on)} req/s vs off "
                    f"{', '.join(f'{x:.0f}' for x in off)} req/s at "
                    f"-c{a.conns} (off, on, on, off, ... in turn): "
                    f"{100 * (1 - sum(on) / sum(off)):.1f} % lower over all; "
                    f"by pair {', '.join(f'{x:.1f}' for x in pairs)} %, "
                    f"median {sorted(pairs)[len(pairs) // 2]:.1f} %")
            log(note)
            self.notes.append(note)

    # ---- the report --------------------------------------------------------

    def report(self, header):
        a = self.a
        out = [header + f"; other processes' CPU before the runs: "
               f"{self.background:.0f}% of one core", ""]
        base = {r["conns"]: r for r in self.results if r["name"] == "baseline"}
        out.append(f"{'scenario':<38} {'conns':>5} {'req/s':>8} "
                   f"{'p50 ms':>7} {'p99 ms':>7} {'non2xx':>6} {'other':>5} "
                   f"{'sockerr':>7} {'vs proxy':>8}  target")
        for r in self.results:
            b = base.get(r["conns"])
            ratio = (f"{r['rps'] / b['rps']:.2f}x" if b and r["name"] != "baseline"
                     else "-")
            tgt = ""
            if r["target"]:
                p99 = r["p99_us"] / 1000
                met = r["rps"] >= r["target"] and p99 <= TARGET_P99_MS
                tgt = (f">={r['target']}/s p99<={TARGET_P99_MS:g}ms: "
                       f"{'met' if met else 'MISSED'}")
            flag = " EXHAUSTED(invalid)" if r["exhausted"] else ""
            out.append(f"{r['label']:<38} {r['conns']:>5} {r['rps']:>8.0f} "
                       f"{r['p50_us'] / 1000:>7.2f} {r['p99_us'] / 1000:>7.2f} "
                       f"{int(r['non2xx']):>6} {int(r['unexpected']):>5} "
                       f"{r['sock_errors']:>7} {ratio:>8}  {tgt}{flag}")
        out.append("")
        out.append("non2xx: answers outside 200-299 (wrk Lua response hook); "
                   "other: 2xx but not the expected status (201 create, "
                   "200 get); sockerr: wrk connect/read/write/timeout errors")

        # CPU: where the 2 cores went, measured runs at the throughput conns
        names = ["nginx w1", "nginx w2", "mariadbd", "redis", "sim(node)",
                 "wrk", "other", "idle"]
        if a.acquirer_pid:
            names.insert(5, "acquirer")
        extra_workers = sorted({k for r in self.results
                                for k in r["sampled"]["cpu"]
                                if k.startswith("nginx w")} - set(names))
        names = names[:2] + extra_workers + names[2:]
        out.append("")
        out.append(f"CPU during the -c{a.conns} runs, % of one core "
                   f"({os.cpu_count()} cores = {100 * (os.cpu_count() or 1)}%)"
                   f", and CPU microseconds per request:")
        out.append(f"{'scenario':<10}" + "".join(f"{n:>11}" for n in names))
        for r in self.results:
            if r["conns"] != a.conns:
                continue
            c = r["sampled"]["cpu"]
            out.append(f"{r['name']:<10}" + "".join(
                f"{c.get(n, 0):>10.0f}%" for n in names))
            # CPU % * 1e4 / rate = microseconds per request
            rps = r["sampled"]["requests"] / r["sampled"]["secs"]
            out.append(f"{'  us/req':<10}" + "".join(
                (f"{c.get(n, 0) * 1e4 / rps:>11.1f}" if n != "idle" else
                 f"{'':>11}") for n in names))

        # backend work per request
        out.append("")
        out.append(f"Backend work per API request (-c{a.conns} runs, "
                   f"counter deltas / requests in the same window):")
        for r in self.results:
            if r["conns"] != a.conns or r["name"] not in ("create", "get"):
                continue
            s = r["sampled"]
            my0, my1 = s["my"]
            rd0, rd1 = s["redis"]
            reqs = s["requests"]
            if reqs <= 0:
                continue

            def d(m0, m1, k):
                return (m1.get(k, 0) - m0.get(k, 0)) / reqs
            mq = [("queries", "Questions"), ("BEGIN", "Com_begin"),
                  ("INSERT", "Com_insert"), ("UPDATE", "Com_update"),
                  ("SELECT", "Com_select"), ("COMMIT", "Com_commit")]
            mys = " ".join(f"{n} {d(my0, my1, k):.2f}" for n, k in mq)
            cmds = sorted(((k[8:], d(rd0, rd1, k)) for k in rd1
                           if k.startswith("cmdstat_")
                           and d(rd0, rd1, k) >= 0.01),
                          key=lambda x: -x[1])
            rds = " ".join(f"{k} {v:.2f}" for k, v in cmds)
            conns = d(my0, my1, "Connections")
            out.append(f"  {r['name']:<7} MariaDB: {mys} (new conns "
                       f"{conns:.4f})")
            out.append(f"  {'':<7} Redis:   commands "
                       f"{d(rd0, rd1, 'total_commands_processed'):.2f} "
                       f"({rds}); new conns "
                       f"{d(rd0, rd1, 'total_connections_received'):.4f}")
            rt0, rt1 = s.get("rt", ({}, {}))
            if rt1:
                out.append(f"  {'':<7} round trips (paygw_backend_round_"
                           f"trips_total): redis {d(rt0, rt1, 'redis'):.2f} "
                           f"mysql {d(rt0, rt1, 'mysql'):.2f}")
            else:
                out.append(f"  {'':<7} round trips: this module does not "
                           f"count them (no paygw_backend_round_trips_total)"
                           f"; MySQL: one per statement (queries above)")

        # RSS
        out.append("")
        start, end = self.rss.get("start", {}), self.rss.get("end", {})
        parts = []
        for i, w in enumerate(sorted(set(start) | set(end)), 1):
            parts.append(f"w{i} (pid {w}) {start.get(w)} -> {end.get(w)}")
        out.append("nginx worker VmRSS kB, before the first run -> after the "
                   "last: " + "; ".join(parts))
        per = []
        for r in self.results:
            g0 = sum(v for v in r["rss0"].values() if v)
            g1 = sum(v for v in r["rss1"].values() if v)
            per.append(f"{r['name']}/c{r['conns']} {g1 - g0:+d}")
        out.append("  growth of the workers' sum per run, kB: "
                   + ", ".join(per))
        out.append("")
        out.append("functional check: " + self.check)
        for n in self.notes:
            out.append("note: " + n)
        return "\n".join(out) + "\n"


def parser():
    """the arguments run.sh passes (also to paygw_soak.py and
    paygw_profile.py, which add their own)"""
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--baseline-port", type=int, required=True)
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--mysql-defaults", required=True)
    p.add_argument("--nginx-pid", type=int, required=True)
    p.add_argument("--mysql-pid", type=int, required=True)
    p.add_argument("--redis-pid", type=int, required=True)
    p.add_argument("--sim-pid", type=int, required=True)
    p.add_argument("--acquirer-pid", type=int, default=0,
                   help="the C stand-in acquirer (bank_card), 0: none")
    p.add_argument("--lua", required=True)
    p.add_argument("--req-dir", required=True)
    p.add_argument("--log-dir", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--lat-conns", type=int, default=16)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--headroom", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--static", type=int, default=1)
    p.add_argument("--only", default="")
    p.add_argument("--perf", type=int, default=0)
    p.add_argument("--quiet-wait", type=float, default=60)
    p.add_argument("--quiet-max", type=float, default=25)
    p.add_argument("--webhook-port", type=int, default=0)
    p.add_argument("--hook-pairs", type=int, default=4)
    p.add_argument("--nginx-conf", default="")
    p.add_argument("--header", default="")
    p.add_argument("--out", required=True)
    return p


def on_signal(signum, _frame):
    if wrk_proc is not None:
        wrk_proc.terminate()
    sys.exit(128 + signum)


def main():
    a = parser().parse_args()
    a.conn_list = [a.conns] + ([a.lat_conns] if a.lat_conns else [])

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    b = Bench(a)
    b.run()
    text = b.report(a.header)
    with open(a.out, "w") as f:
        f.write(text)
    print()
    print(text, end="")


if __name__ == "__main__":
    main()
