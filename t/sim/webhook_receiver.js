#!/usr/bin/env node
// A merchant's webhook endpoint for the tests (Node, built-in modules only).
//
//   node webhook_receiver.js --port P --secret whsec_... [--secret ...]
//                            [--tls-cert PEM --tls-key PEM --query-port Q]
// (https on P; /health and /deliveries also in plain http on Q)
//
// Every POST is checked per Standard Webhooks: webhook-id, -timestamp and
// -signature ("v1,<base64 HMAC-SHA256(key, id.ts.body)>", one or more,
// space separated; the key is the base64 after "whsec_").  The path picks
// the behaviour, so one receiver serves every case of a test:
//
//   /hook/ok            200
//   /hook/one-per-conn  200 to a connection's first request; a second one
//                       on the same connection is dropped unanswered
//   /hook/fail/N        500 for the first N attempts of each webhook-id
//   /hook/status/S      answers S (e.g. 410)
//   /hook/redirect      302 to /hook/ok (a sender must not follow it)
//   /hook/timeout       never answers
//   /hook/reset         closes the connection without an answer
//   /hook/slow/MS       200 after MS milliseconds
//   /hook/big           200 with a 1 MB body
//
// GET /deliveries: {"requests":[{id, path, status, sig_ok, type, at,
// parallel, host, conn, sni}], "counts": {webhook-id: attempts}, "parallel": N}
// (parallel: requests that arrived while another with the same
// webhook-id was still being answered; connections: TCP connections
// accepted, the queries' own included; max_inflight: the most webhooks
// being answered at once).  DELETE /deliveries clears it.
'use strict';

const http = require('http');
const https = require('https');
const fs = require('fs');
const crypto = require('crypto');

const args = process.argv.slice(2);
let port = 0;
let tlsCert = null;
let tlsKey = null;
let queryPort = 0;
const secrets = [];
for (let i = 0; i < args.length; i++) {
    if (args[i] === '--port') port = +args[++i];
    else if (args[i] === '--secret') secrets.push(args[++i]);
    else if (args[i] === '--tls-cert') tlsCert = args[++i];
    else if (args[i] === '--tls-key') tlsKey = args[++i];
    else if (args[i] === '--query-port') queryPort = +args[++i];
}
const keys = secrets.map((s) => Buffer.from(s.replace(/^whsec_/, ''), 'base64'));

let requests = [];
let counts = {};
let inflight = {};
let parallel = 0;
let connections = 0;
let inflightAll = 0;
let maxInflight = 0;

function verify(id, ts, sigs, body) {
    if (!id || !ts || !sigs) return false;
    const content = Buffer.concat([Buffer.from(`${id}.${ts}.`), body]);
    const expected = keys.map((k) =>
        crypto.createHmac('sha256', k).update(content).digest('base64'));
    // every signature sent must verify with one of our secrets, and at
    // least one must be there
    const got = sigs.split(' ').filter((s) => s.length);
    return got.length > 0 && got.every((s) =>
        s.startsWith('v1,') && expected.includes(s.slice(3)));
}

const handler = (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
        const url = new URL(req.url, 'http://x');
        if (url.pathname === '/health') { res.end('ok'); return; }
        if (url.pathname === '/deliveries') {
            if (req.method === 'DELETE') {
                requests = []; counts = {}; parallel = 0; connections = 0;
                maxInflight = 0;
            }
            res.setHeader('Content-Type', 'application/json');
            res.end(JSON.stringify({requests, counts, parallel, connections,
                                    max_inflight: maxInflight}));
            return;
        }
        const body = Buffer.concat(chunks);
        const id = req.headers['webhook-id'];
        const ts = req.headers['webhook-timestamp'];
        const sig = req.headers['webhook-signature'];
        let type = null;
        try { type = JSON.parse(body.toString()).type; } catch (e) { type = null; }
        const rec = {id, path: url.pathname, sig_ok: verify(id, ts, sig, body),
                     type, at: Date.now(), parallel: false, status: 0,
                     ts_ok: Math.abs(Date.now() / 1000 - +ts) < 300,
                     content_type: req.headers['content-type'] || null,
                     host: req.headers.host || null,
                     conn: req.socket.paygwConn,
                     sni: req.socket.servername || null};
        requests.push(rec);
        counts[id] = (counts[id] || 0) + 1;
        if (inflight[id]) { rec.parallel = true; parallel++; }
        inflight[id] = (inflight[id] || 0) + 1;
        inflightAll++;
        if (inflightAll > maxInflight) maxInflight = inflightAll;
        let done = false;
        const finish = (status, extra) => {
            if (done) return;
            done = true;
            inflight[id]--;
            inflightAll--;
            rec.status = status;
            if (status === 0) { req.socket.destroy(); return; }
            res.writeHead(status, extra || {});
            res.end(status === 200 ? '{"ok":true}' : 'no');
        };
        res.on('close', () => {
            if (!done) { done = true; inflight[id]--; inflightAll--; }
        });
        const p = url.pathname.split('/').filter((x) => x.length);
        // p[0] == 'hook'
        switch (p[1]) {
        case 'ok': finish(200); break;
        case 'one-per-conn':
            // a server that drops a kept connection it was asked to reuse
            req.socket.paygwRequests = (req.socket.paygwRequests || 0) + 1;
            finish(req.socket.paygwRequests > 1 ? 0 : 200); break;
        case 'fail':
            finish(counts[id] <= +p[2] ? 500 : 200); break;
        case 'status': finish(+p[2]); break;
        case 'redirect': finish(302, {Location: '/hook/ok'}); break;
        case 'timeout': break;
        case 'reset': finish(0); break;
        case 'slow': setTimeout(() => finish(200), +p[2]); break;
        case 'big':
            done = true; inflight[id]--; inflightAll--; rec.status = 200;
            res.writeHead(200, {'Content-Type': 'text/plain'});
            res.end('x'.repeat(1024 * 1024));
            break;
        default: finish(404);
        }
    });
};

const server = tlsCert
    ? https.createServer({cert: fs.readFileSync(tlsCert),
                          key: fs.readFileSync(tlsKey)}, handler)
    : http.createServer(handler);

// TCP connections accepted (the sender's kept connections are reused)
server.on(tlsCert ? 'secureConnection' : 'connection', (sock) => {
    sock.paygwConn = ++connections;
});
server.keepAliveTimeout = 1000;
server.listen(port, '127.0.0.1');
if (tlsCert && queryPort) http.createServer(handler).listen(queryPort, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
