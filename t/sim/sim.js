#!/usr/bin/env node
// paygw provider simulator: plays the payment providers (bank-card acquirer
// now; Alipay and WeChat Pay later) on 127.0.0.1 for `make run` and tests.
//
//   node t/sim/sim.js --port 8091 [--acquirer-secret S] [--pidfile F]
//
// Control API (never subject to fault modes):
//   GET  /health          200 {"status":"ok"}
//   POST /_sim/mode       {"mode":"...","delay_ms":15000,"times":N}
//                         fault mode for the next N provider requests
//                         (all of them when "times" is absent)
//   GET  /_sim/mode       the current mode
//   GET  /_sim/requests   provider requests received: method, path, headers, body
//   POST /_sim/reset      forget recorded requests, back to mode "normal"
//
// Modes: normal, error500, slow (waits delay_ms, then answers normally),
// reset (drops the connection without answering), bad_signature, decline,
// amount_mismatch (the last three are interpreted by each provider handler).
//
// Only Node built-ins: no npm dependencies.
'use strict';

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');

const MODES = ['normal', 'error500', 'slow', 'reset', 'bad_signature',
               'decline', 'amount_mismatch'];
const MAX_BODY = 1024 * 1024;
const MAX_RECORDED = 1000;

function parseArgs(argv) {
    const opts = {port: 8091, acquirerSecret: 'acq-demo-secret', pidfile: null};
    const names = {'--port': 'port', '--acquirer-secret': 'acquirerSecret',
                   '--pidfile': 'pidfile'};
    for (let i = 0; i < argv.length; i++) {
        const key = names[argv[i]];
        if (!key || i + 1 >= argv.length) {
            console.error(`usage: sim.js --port N [--acquirer-secret S] ` +
                          `[--pidfile F] (bad argument ${argv[i]})`);
            process.exit(2);
        }
        opts[key] = argv[++i];
    }
    opts.port = Number(opts.port);
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
        console.error(`sim.js: bad --port ${opts.port}`);
        process.exit(2);
    }
    return opts;
}

const opts = parseArgs(process.argv.slice(2));

const state = {
    mode: 'normal',
    delayMs: 15000,
    remaining: null,        // provider requests left in this mode; null: all
    requests: [],
};

// ---- helpers ---------------------------------------------------------------

function hmacHex(secret, data) {
    return crypto.createHmac('sha256', secret).update(data).digest('hex');
}

function safeEqualHex(a, b) {
    const x = Buffer.from(String(a || ''));
    const y = Buffer.from(String(b || ''));
    return x.length === y.length && crypto.timingSafeEqual(x, y);
}

function parseJson(body) {
    try {
        return JSON.parse(body.toString('utf8'));
    } catch (e) {
        return undefined;
    }
}

function randomId(prefix) {
    return prefix + crypto.randomBytes(12).toString('hex');
}

// A handler's answer: {status, body (object or string), headers}.
function json(status, obj, headers) {
    return {status, body: JSON.stringify(obj), headers: Object.assign(
        {'Content-Type': 'application/json'}, headers || {})};
}

// Picks the fault mode for one provider request, counting down "times".
function takeMode() {
    const mode = state.mode;
    if (state.remaining !== null && mode !== 'normal') {
        if (--state.remaining <= 0) {
            state.mode = 'normal';
            state.remaining = null;
        }
    }
    return mode;
}

// ---- control API -----------------------------------------------------------

function health() {
    return json(200, {status: 'ok'});
}

function setMode(ctx) {
    const req = parseJson(ctx.body);
    if (!req || typeof req !== 'object' || !MODES.includes(req.mode)) {
        return json(400, {error: `mode must be one of ${MODES.join(', ')}`});
    }
    if (req.delay_ms !== undefined &&
        !(Number.isInteger(req.delay_ms) && req.delay_ms >= 0)) {
        return json(400, {error: 'delay_ms must be a non-negative integer'});
    }
    if (req.times !== undefined && !(Number.isInteger(req.times) && req.times > 0)) {
        return json(400, {error: 'times must be a positive integer'});
    }
    state.mode = req.mode;
    state.delayMs = req.delay_ms === undefined ? 15000 : req.delay_ms;
    state.remaining = req.times === undefined ? null : req.times;
    return getMode();
}

function getMode() {
    return json(200, {mode: state.mode, delay_ms: state.delayMs,
                      times: state.remaining});
}

function listRequests() {
    return json(200, state.requests);
}

function resetSim() {
    state.requests = [];
    state.mode = 'normal';
    state.delayMs = 15000;
    state.remaining = null;
    return json(200, {status: 'ok'});
}

// ---- providers -------------------------------------------------------------

// Bank-card acquirer: JSON bodies, X-Acquirer-Signature = hex HMAC-SHA256
// of the raw body with the shared secret, on requests and on responses.
function acquirerAnswer(ctx, status, obj) {
    const body = JSON.stringify(obj);
    const secret = ctx.mode === 'bad_signature'
        ? opts.acquirerSecret + '-wrong' : opts.acquirerSecret;
    return {status, body, headers: {'Content-Type': 'application/json',
                                    'X-Acquirer-Signature': hmacHex(secret, body)}};
}

function acquirerCharge(ctx) {
    const sig = ctx.req.headers['x-acquirer-signature'];
    if (!safeEqualHex(sig, hmacHex(opts.acquirerSecret, ctx.body))) {
        return acquirerAnswer(ctx, 401, {error: {code: 'invalid_signature',
                                                 message: 'bad X-Acquirer-Signature'}});
    }
    const req = parseJson(ctx.body);
    if (!req || !Number.isInteger(req.amount) || typeof req.currency !== 'string') {
        return acquirerAnswer(ctx, 400, {error: {code: 'invalid_request',
                                                 message: 'amount and currency required'}});
    }
    return acquirerAnswer(ctx, 200, {
        charge_id: randomId('ch_'),
        merchant_ref: req.merchant_ref === undefined ? null : req.merchant_ref,
        status: ctx.mode === 'decline' ? 'declined' : 'approved',
        amount: ctx.mode === 'amount_mismatch' ? req.amount + 1 : req.amount,
        currency: req.currency,
    });
}

// ---- routing ---------------------------------------------------------------

// provider: true routes are recorded and subject to the fault modes.
const routes = {
    'GET /health':                 {handler: health},
    'GET /_sim/mode':              {handler: getMode},
    'POST /_sim/mode':             {handler: setMode},
    'GET /_sim/requests':          {handler: listRequests},
    'POST /_sim/reset':            {handler: resetSim},
    'POST /acquirer/v1/charges':   {handler: acquirerCharge, provider: true},
};

function log(req, status, started, mode) {
    const ms = Date.now() - started;
    console.log(`${new Date().toISOString()} ${req.method} ${req.url} ` +
                `${status} ${ms}ms mode=${mode}`);
}

function respond(ctx, answer) {
    const {res} = ctx;
    if (res.destroyed || res.writableEnded) {
        return;
    }
    const body = answer.body === undefined ? '' : answer.body;
    const headers = Object.assign({'Content-Length': Buffer.byteLength(body)},
                                  answer.headers || {});
    res.writeHead(answer.status, headers);
    res.end(body);
    log(ctx.req, answer.status, ctx.started, ctx.mode);
}

function dispatch(ctx) {
    const path = ctx.req.url.split('?')[0];
    const route = routes[`${ctx.req.method} ${path}`];
    if (!route) {
        return respond(ctx, json(404, {error: `no route ${ctx.req.method} ${path}`}));
    }
    if (!route.provider) {
        return respond(ctx, route.handler(ctx));
    }

    state.requests.push({method: ctx.req.method, path: ctx.req.url,
                         headers: ctx.req.headers,
                         body: ctx.body.toString('utf8')});
    if (state.requests.length > MAX_RECORDED) {
        state.requests.shift();
    }

    ctx.mode = takeMode();
    switch (ctx.mode) {
    case 'error500':
        return respond(ctx, json(500, {error: 'simulated provider failure'}));
    case 'reset':
        log(ctx.req, 'reset', ctx.started, ctx.mode);
        if (typeof ctx.req.socket.resetAndDestroy === 'function') {
            ctx.req.socket.resetAndDestroy();
        } else {
            ctx.req.socket.destroy();
        }
        return undefined;
    case 'slow': {
        const timer = setTimeout(() => respond(ctx, route.handler(ctx)),
                                 state.delayMs);
        ctx.res.on('close', () => clearTimeout(timer));
        return undefined;
    }
    default:
        return respond(ctx, route.handler(ctx));
    }
}

const server = http.createServer((req, res) => {
    const ctx = {req, res, body: null, mode: 'normal', started: Date.now()};
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
        size += chunk.length;
        if (size > MAX_BODY) {
            respond(ctx, json(413, {error: 'body too large'}));
            req.destroy();
            return;
        }
        chunks.push(chunk);
    });
    req.on('end', () => {
        ctx.body = Buffer.concat(chunks);
        try {
            dispatch(ctx);
        } catch (e) {
            console.error(e);
            respond(ctx, json(500, {error: 'simulator bug: ' + e.message}));
        }
    });
});

function shutdown() {
    if (opts.pidfile) {
        try { fs.unlinkSync(opts.pidfile); } catch (e) { /* gone already */ }
    }
    process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(opts.port, '127.0.0.1', () => {
    if (opts.pidfile) {
        fs.writeFileSync(opts.pidfile, `${process.pid}\n`);
    }
    console.log(`${new Date().toISOString()} sim listening on ` +
                `http://127.0.0.1:${opts.port}`);
});
