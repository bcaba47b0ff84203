#!/usr/bin/env python3
"""Ask paygw to reconcile yesterday's statement of each channel.

POST /v1/reconciliations (SPEC section 7, docs/api.md) once per channel, for
the previous day of the providers (Asia/Shanghai). This is the CronJob
alternative (reconcile-cronjob.yaml, suspended) to the in-nginx schedule,
paygw_reconcile_schedule, which the shipped nginx.conf.template runs: use one
of the two. Exits 1 if any report did not complete (HTTP error, or a report
whose status is not "completed").

The request is signed like scripts/paygw-curl does (PAYGW-HMAC-SHA256 over
METHOD, PATH, timestamp, nonce and the body's SHA-256) with an admin key
from the environment: PAYGW_KEY_ID, PAYGW_SECRET; PAYGW_URL is the gateway.
Standard library only.
"""
import datetime
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request


def signed_post(url, path, body, key_id, secret):
    ts = str(int(time.time()))
    nonce = secrets.token_hex(16)
    body_hash = hashlib.sha256(body).hexdigest()
    canonical = "\n".join(["POST", path, ts, nonce, body_hash]).encode()
    sig = hmac.new(secret.encode(), canonical, hashlib.sha256).hexdigest()
    req = urllib.request.Request(url + path, data=body, method="POST")
    req.add_header("Authorization",
                   f"PAYGW-HMAC-SHA256 key={key_id},ts={ts},nonce={nonce},sig={sig}")
    req.add_header("Content-Type", "application/json")
    req.add_header("Idempotency-Key", secrets.token_hex(12))
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    url = os.environ.get("PAYGW_URL", "http://paygw.paygw.svc.cluster.local")
    key_id = os.environ["PAYGW_KEY_ID"]
    secret = os.environ["PAYGW_SECRET"]
    channels = os.environ.get("PAYGW_CHANNELS", "alipay,wechat,bank_card")
    # the providers' day is Asia/Shanghai (UTC+8, no DST)
    day = (datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8)))
           - datetime.timedelta(days=1)).date().isoformat()
    failed = 0
    for channel in channels.split(","):
        body = json.dumps({"channel": channel, "date": day},
                          separators=(",", ":")).encode()
        status, text = signed_post(url, "/v1/reconciliations", body, key_id, secret)
        print(f"reconcile {channel} {day}: HTTP {status} {text[:500]}")
        if status >= 300:
            failed += 1
            continue
        try:
            report = json.loads(text)
        except ValueError:
            report = {}
        if report.get("status") != "completed":
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
