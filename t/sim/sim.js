#!/usr/bin/env node
// paygw provider simulator: plays the payment providers (bank-card acquirer,
// Alipay open API, WeChat Pay API v3) on 127.0.0.1 for `make run` and tests.
// Alipay lives in t/sim/alipay.js, WeChat Pay in t/sim/wechat.js, helpers
// they share in t/sim/common.js.
//
//   node t/sim/sim.js --port 8091 [--acquirer-secret S]
//                     [--acquirer-merchant M] [--pidfile F]
//                     [--keys DIR] [--alipay-app-id ID (2021000000000001)]
//                     [--wechat-mchid ID (1900000001)]
//                     [--wechat-appid ID (wxd678efh567hg6787)]
//                     [--tls-port N --tls-cert PEM --tls-key PEM
//                      [--tls-client-ca PEM]]
//
// --tls-port: the same simulator also serves HTTPS on 127.0.0.1:N with that
// certificate and key (Node's https, for nginx's proxy_ssl_* tests); with
// --tls-client-ca it requires a client certificate issued by that CA and
// refuses the handshake otherwise (mutual TLS). /_sim/requests then says
// for each request "tls": null (plain HTTP) or {"client": subject CN of
// the client certificate, or null}.
// --keys DIR: the key files of scripts/provider-keys.sh DIR. Without it the
// Alipay and WeChat endpoints (and their control routes) answer 503
// {"error":"not configured"}; the acquirer works either way.
//
// Control API (never subject to fault modes, never signed):
//   GET  /health          200 {"status":"ok"}
//   POST /_sim/mode       {"mode":"...","delay_ms":15000,"times":N,
//                          "path_prefix":"/acquirer/v1/refunds"}
//                         fault mode for the next N provider requests whose
//                         path starts with path_prefix (default: all provider
//                         requests; without "times": until changed)
//   GET  /_sim/mode       the current mode
//   GET  /_sim/requests   provider requests received: method, path, headers,
//                         body (card numbers and CVCs masked), mode
//   GET  /_sim/charges    acquirer charges and refunds with request counters
//   GET  /_sim/trades     {"alipay":[trade...],"wechat":[order...]}: each with
//                         requests (create requests that arrived, authentic),
//                         duplicates (idempotent repeats), queries, and its
//                         refunds (with the same counters)
//   POST /_sim/reset      forget requests, charges, refunds, trades and
//                         orders; mode "normal"; WeChat platform key 1
//   POST /_sim/notify     {"url","out_trade_no","status","amount","currency",
//                          "tamper":"signature"|"amount"|"body"|"merchant"|null,
//                          "timestamp":T}: POST a signed acquirer callback to
//                         url; answers {"status","body","sent"}
//   POST /_sim/alipay/notify   see Alipay below
//   POST /_sim/wechat/notify   see WeChat Pay below
//   GET  /_sim/wechat/platform  {"serial":current,"serials":[s1,s2]}
//   POST /_sim/wechat/platform  {"serial":S}: sign answers and callbacks
//                         with that platform key from now on (400 unless S
//                         is platform 1's or 2's serial)
//   GET  /_sim/alipay/bill/<YYYY-MM-DD>, GET /_sim/wechat/bill/<YYYY-MM-DD>
//                         the bill files the bill APIs point at (text/csv)
//
// Fault modes (POST /_sim/mode):
//   normal
//   error500        answer 500 without processing: acquirer {"error":
//                   "internal"}, Alipay code 20000 (signed), WeChat
//                   SYSTEM_ERROR (signed)
//   error500_after  process, then answer that 500
//   slow            process, then answer after delay_ms (default 15000)
//   slow_before     wait delay_ms, then process and answer (processes even
//                   if the client gave up meanwhile: a late charge)
//   reset           drop the connection without processing
//   reset_after     process, then drop the connection
//   bad_signature   process, answer with a wrong response signature (Alipay,
//                   WeChat: signed with an RSA key that is not the provider's)
//   amount_mismatch process, report amount + 1 in the answer (signed):
//                   acquirer "amount", Alipay "total_amount" + 0.01 (query,
//                   refund query; precreate answers then carry one too),
//                   WeChat "amount.total"
//   decline         acquirer: card_declined; Alipay precreate: 40004
//                   ACQ.TOTAL_FEE_EXCEED; WeChat native: 403 TRADE_ERROR
//                   (new charges/trades only)
//   refuse401, refuse429  acquirer: answer 401 unauthorized / 429
//                   rate_limited (signed) without processing: a refusal
//                   that says nothing of the charge or refund asked about
//   refund_processing  WeChat: new refunds answer status PROCESSING; such a
//                   refund is SUCCESS from its next GET on
// Use path_prefix "/gateway.do" (Alipay) or "/v3/" (WeChat) to aim a mode.
//
// Bank-card acquirer (HMAC-SHA256 with the shared secret, lowercase hex):
//   request headers  X-Acquirer-Merchant, X-Acquirer-Timestamp (unix s),
//                    X-Acquirer-Signature = HMAC(ts "\n" METHOD "\n" path
//                    (with query) "\n" raw body); |now - ts| <= 300
//   response headers X-Acquirer-Timestamp, X-Acquirer-Signature =
//                    HMAC(ts "\n" raw body), on every answer
//   POST /acquirer/v1/charges                 GET /acquirer/v1/charges/<out_trade_no>
//   POST /acquirer/v1/refunds                 GET /acquirer/v1/refunds/<out_refund_no>
//   GET  /acquirer/v1/settlements/<YYYY-MM-DD>  (text/csv)
//
// Alipay open API (RSA2 = SHA256withRSA, PKCS#1 v1.5, base64):
//   POST /gateway.do, application/x-www-form-urlencoded;charset=utf-8; the
//   parameters in the body and/or the query string (a name twice: 40002):
//   app_id, method, format=JSON, charset=utf-8, sign_type=RSA2, timestamp
//   ("yyyy-MM-dd HH:mm:ss" UTC+8, within 15 min), version=1.0, notify_url,
//   biz_content (JSON text), sign. sign is over every parameter but sign
//   (sign_type included), empty values dropped, sorted by name, "k=v"
//   joined by "&", raw decoded values; verified with alipay_app_public.pem.
//   Answers: HTTP 200 (500/404/413 for faults) with exactly
//   {"<method, . as _>_response":INNER,"sign":"<RSA2 over INNER's bytes
//   with alipay_private.pem>"} ("error_response" for unknown methods);
//   application/json;charset=utf-8. INNER: {"code":"10000","msg":"Success",
//   ...} | {"code":"40002","msg":"Invalid Arguments","sub_code":
//   "isv.invalid-signature"|"isv.invalid-app-id"|"isv.invalid-timestamp"|
//   "isv.missing-..."|"isv.invalid-parameter"|...} | {"code":"40004","msg":
//   "Business Failed","sub_code":"ACQ....","sub_msg":...}. Amounts are yuan
//   strings with 2 decimals ("19.99").
//   alipay.trade.precreate {out_trade_no,total_amount,subject,
//     timeout_express?} -> {out_trade_no,qr_code}; trade WAIT_BUYER_PAY;
//     repeat with the same amount: the same answer; other amount:
//     ACQ.CONTEXT_INCONSISTENT; paid: ACQ.TRADE_HAS_SUCCESS; closed:
//     ACQ.TRADE_HAS_CLOSE
//   alipay.trade.query {out_trade_no|trade_no} -> {trade_no (28 digits),
//     out_trade_no,trade_status,total_amount,buyer_logon_id (paid)};
//     unknown: ACQ.TRADE_NOT_EXIST
//   alipay.trade.close {out_trade_no} -> {out_trade_no,trade_no} (also when
//     closed already); paid: ACQ.TRADE_STATUS_ERROR
//   alipay.trade.refund {out_trade_no,refund_amount,out_request_no,
//     refund_reason?} -> {trade_no,out_trade_no,buyer_logon_id,fund_change
//     "Y" ("N" on a repeat),refund_fee (cumulative),gmt_refund_pay};
//     TRADE_SUCCESS only (else ACQ.TRADE_STATUS_ERROR); repeat with another
//     amount: ACQ.CONTEXT_INCONSISTENT; over the total:
//     ACQ.REFUND_AMT_NOT_EQUAL_TOTAL. Refunds succeed at once; the trade
//     stays TRADE_SUCCESS.
//   alipay.trade.fastpay.refund.query {out_trade_no,out_request_no} ->
//     {...,refund_amount,total_amount,refund_status:"REFUND_SUCCESS"}, or
//     without refund_status when there is no such refund
//   alipay.data.dataservice.bill.downloadurl.query {bill_type:"trade",
//     bill_date} -> {bill_download_url: /_sim/alipay/bill/<day>} (columns
//     type,out_trade_no,out_request_no,trade_no,amount_yuan,status,time)
//   unknown method: 40004 isv.invalid-method
// POST /_sim/alipay/notify {"out_trade_no","trade_status" (TRADE_SUCCESS),
//   "url" (the trade's notify_url),"apply" (true unless tamper: store the
//   status first),"tamper":null|"signature"|"amount"|"app_id"|"body"|
//   "out_trade_no","total_amount" (override; required for unknown trades)}:
//   POSTs a form-encoded trade_status_sync notify like real Alipay's,
//   signed over all parameters but sign AND sign_type. Tampers: signature
//   (another RSA key), amount (total_amount + 1.00, signed), app_id (another
//   app_id, signed), body (total_amount + 1.00 after signing), out_trade_no
//   (an unknown one, signed). Answers {"status","body","sent":{"headers",
//   "body"}}, or 502 {"error","sent"} when the POST failed.
//
// WeChat Pay API v3:
//   request header Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",
//   nonce_str="..",timestamp="..",serial_no="..",signature=".." (any order);
//   signature = RSA2 over "METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n" (URL with
//   its query as sent) with the merchant key; mchid = --wechat-mchid,
//   serial_no = wechat_merchant_serial, |now - timestamp| <= 300; else 401
//   {"code":"SIGN_ERROR","message":...}. Every answer (errors and 204s too)
//   has Wechatpay-Timestamp, Wechatpay-Nonce, Wechatpay-Serial (current
//   platform key), Wechatpay-Signature = RSA2 over "TS\nNONCE\nBODY\n", and
//   Request-ID. Errors: {"code","message"}. Amounts: integer fen.
//   POST /v3/pay/transactions/native {appid,mchid,description,out_trade_no,
//     time_expire?,notify_url,amount:{total,currency?}} -> 200 {code_url};
//     order NOTPAY; repeat with the same amount: the same code_url; other
//     amount: 400 INVALID_REQUEST "201 商户订单号重复"; paid: 400 ORDERPAID;
//     closed: 400 ORDER_CLOSED; wrong mchid: 400 MCH_NOT_EXISTS; wrong
//     appid: 400 PARAM_ERROR
//   GET  /v3/pay/transactions/out-trade-no/<otn>?mchid=M -> 200 {appid,
//     mchid,out_trade_no,transaction_id (paid),trade_type:"NATIVE",
//     trade_state,trade_state_desc,success_time (paid),amount:{total,
//     payer_total (paid),currency,payer_currency},payer:{openid} (paid)};
//     unknown: 404 ORDER_NOT_EXIST. trade_state NOTPAY|SUCCESS|CLOSED|
//     REFUND (after a refund, as on real WeChat)|PAYERROR
//   POST /v3/pay/transactions/out-trade-no/<otn>/close {mchid} -> 204 (also
//     when closed already); paid: 400 ORDERPAID; unknown: 404
//   POST /v3/refund/domestic/refunds {out_trade_no,out_refund_no,reason?,
//     notify_url?,amount:{refund,total,currency}} -> 200 {refund_id,
//     out_refund_no,transaction_id,out_trade_no,channel,
//     user_received_account,status,create_time,success_time,amount:{total,
//     refund,payer_total,payer_refund,currency}}; repeat: the same refund;
//     unpaid order: 400 INVALID_REQUEST; unknown: 404 ORDER_NOT_EXIST;
//     total not the order's: 400 PARAM_ERROR; over the total: 403 NOT_ENOUGH
//   GET  /v3/refund/domestic/refunds/<out_refund_no> -> 200 the refund;
//     unknown: 404 RESOURCE_NOT_EXISTS
//   GET  /v3/bill/tradebill?bill_date=D -> 200 {hash_type:"SHA1",
//     hash_value,download_url: /_sim/wechat/bill/<day>} (columns type,
//     out_trade_no,out_refund_no,provider_id,amount_fen,status,time)
// POST /_sim/wechat/notify {"out_trade_no","trade_state" (SUCCESS),"url"
//   (the order's notify_url),"apply" (as for Alipay),"tamper":null|
//   "signature"|"amount"|"mchid"|"body"|"serial"|"apiv3_key"|"currency",
//   "timestamp" (unix s, still signed),"serial" (sign with that platform
//   key),"total" (override; required for unknown orders)}: POSTs a
//   TRANSACTION.<state> callback: {"id","create_time","resource_type":
//   "encrypt-resource","event_type","summary","resource":{"original_type":
//   "transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":base64(ct ||
//   16-byte tag),"associated_data":"transaction","nonce":12 alphanumerics}}
//   (AES-256-GCM, key wechat_apiv3.key, plaintext = the query's object),
//   Wechatpay-* headers signed by the platform key. Tampers: signature
//   (another RSA key), amount (total + 1), mchid, currency ("USD"), body
//   (altered after signing), serial (an unknown Wechatpay-Serial), apiv3_key
//   (encrypted with another key). Answers like /_sim/alipay/notify.
//
// Full card numbers and CVCs are never stored nor logged.
// Only Node built-ins: no npm dependencies.
'use strict';

const http = require('http');
const https = require('https');
const crypto = require('crypto');
const fs = require('fs');
const {URL} = require('url');

const common = require('./common');
const createAlipay = require('./alipay');
const createWechat = require('./wechat');

const MODES = ['normal', 'error500', 'error500_after', 'slow', 'slow_before',
               'reset', 'reset_after', 'bad_signature', 'amount_mismatch',
               'decline', 'refund_processing', 'refuse401', 'refuse429'];
const DEFAULT_DELAY_MS = 15000;
const MAX_BODY = 1024 * 1024;
const MAX_RECORDED = 1000;
const MAX_LOGGED_BODY = 400;
const MAX_SKEW_S = 300;
const NOTIFY_TIMEOUT_MS = 10000;
// out_trade_no / out_refund_no: also a URL path segment in queries.
const KEY_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const CURRENCY_RE = /^[A-Z]{3}$/;
const TAMPERS = ['signature', 'amount', 'body', 'merchant'];

function parseArgs(argv) {
    const opts = {port: 8091, acquirerSecret: 'acq-demo-secret',
                  acquirerMerchant: 'ACQ-M100', pidfile: null, keys: null,
                  alipayAppId: '2021000000000001', wechatMchid: '1900000001',
                  wechatAppid: 'wxd678efh567hg6787', tlsPort: null,
                  tlsCert: null, tlsKey: null, tlsClientCa: null};
    const names = {'--port': 'port', '--acquirer-secret': 'acquirerSecret',
                   '--acquirer-merchant': 'acquirerMerchant',
                   '--pidfile': 'pidfile', '--keys': 'keys',
                   '--alipay-app-id': 'alipayAppId', '--wechat-mchid': 'wechatMchid',
                   '--wechat-appid': 'wechatAppid', '--tls-port': 'tlsPort',
                   '--tls-cert': 'tlsCert', '--tls-key': 'tlsKey',
                   '--tls-client-ca': 'tlsClientCa'};
    for (let i = 0; i < argv.length; i++) {
        const key = names[argv[i]];
        if (!key || i + 1 >= argv.length) {
            console.error(`usage: sim.js --port N [--acquirer-secret S] ` +
                          `[--acquirer-merchant M] [--pidfile F] [--keys DIR] ` +
                          `[--alipay-app-id ID] [--wechat-mchid ID] ` +
                          `[--wechat-appid ID] [--tls-port N --tls-cert F ` +
                          `--tls-key F [--tls-client-ca F]] ` +
                          `(bad argument ${argv[i]})`);
            process.exit(2);
        }
        opts[key] = argv[++i];
    }
    opts.port = Number(opts.port);
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
        console.error(`sim.js: bad --port ${opts.port}`);
        process.exit(2);
    }
    if (opts.tlsPort !== null) {
        opts.tlsPort = Number(opts.tlsPort);
        if (!Number.isInteger(opts.tlsPort) || opts.tlsPort < 1
            || opts.tlsPort > 65535 || !opts.tlsCert || !opts.tlsKey)
        {
            console.error('sim.js: --tls-port needs a port, --tls-cert and --tls-key');
            process.exit(2);
        }
    }
    return opts;
}

const opts = parseArgs(process.argv.slice(2));

// Alipay and WeChat Pay need the key files of scripts/provider-keys.sh;
// without --keys they answer 503 and only the acquirer works.
function loadKeys(dir) {
    if (!dir) {
        return null;
    }
    try {
        return common.loadKeys(dir);
    } catch (e) {
        console.error(`sim.js: --keys ${dir}: ${e.message}`);
        return process.exit(2);
    }
}

const keys = loadKeys(opts.keys);

const state = {
    mode: 'normal',
    delayMs: DEFAULT_DELAY_MS,
    remaining: null,        // provider requests left in this mode; null: all
    pathPrefix: null,       // mode applies to these paths only; null: all
    requests: [],
    charges: new Map(),     // out_trade_no -> {charge, createdAt}
    refunds: new Map(),     // out_refund_no -> {refund, createdAt}
    counters: {charges: new Map(), refunds: new Map()},
    statements: {},         // provider -> tweaks (POST /_sim/statement)
};

// ---- helpers ---------------------------------------------------------------

function nowSec() {
    return Math.floor(Date.now() / 1000);
}

function isoSeconds(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function hmacHex(secret, ...parts) {
    const h = crypto.createHmac('sha256', secret);
    for (const p of parts) {
        h.update(p);
    }
    return h.digest('hex');
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

const {isObject} = common;

function isPositiveAmount(v) {
    return Number.isSafeInteger(v) && v > 0;
}

function randomId(prefix) {
    return prefix + crypto.randomBytes(12).toString('hex');
}

// A control answer: {status, body (string), headers}.
function json(status, obj, headers) {
    return {status, body: JSON.stringify(obj), headers: Object.assign(
        {'Content-Type': 'application/json'}, headers || {})};
}

// ---- card data -------------------------------------------------------------

function luhnValid(digits) {
    let sum = 0;
    for (let i = 0; i < digits.length; i++) {
        let d = digits.charCodeAt(digits.length - 1 - i) - 48;
        if (i % 2 === 1) {
            d *= 2;
            if (d > 9) {
                d -= 9;
            }
        }
        sum += d;
    }
    return sum % 10 === 0;
}

function cardBrand(digits) {
    const two = Number(digits.slice(0, 2));
    if (digits[0] === '4') {
        return 'visa';
    }
    if (two >= 51 && two <= 55) {
        return 'mastercard';
    }
    if (two === 34 || two === 37) {
        return 'amex';
    }
    if (two === 62) {
        return 'unionpay';
    }
    return 'unknown';
}

// 4242424242424242 -> 424242******4242
function maskPan(digits) {
    if (digits.length < 12) {
        return '*'.repeat(digits.length);
    }
    return digits.slice(0, 6) + '*'.repeat(digits.length - 10) + digits.slice(-4);
}

// Masks card data in any text (JSON, broken JSON, a URL, a log line): the
// values of card-number keys, CVC keys, and every standalone Luhn-valid run
// of 12-19 digits.
function redact(text) {
    return text
        .replace(/("(?:number|pan|card_number)"\s*:\s*"?)(\d[\d -]*\d|\d)/g,
                 (m, key, v) => key + maskPan(v.replace(/\D/g, '')))
        .replace(/("(?:cvc|cvv|cvc2|cvv2)"\s*:\s*)("(?:[^"\\]|\\.)*"|-?\d+)/g,
                 '$1"***"')
        .replace(/(^|[^0-9A-Za-z])(\d{12,19})(?![0-9A-Za-z])/g,
                 (m, pre, d) => (luhnValid(d) ? pre + maskPan(d) : m));
}

// ---- fault modes -----------------------------------------------------------

function modeApplies(path) {
    return state.pathPrefix === null || path.startsWith(state.pathPrefix);
}

// The fault mode for one provider request, counting down "times".
function takeMode(path) {
    const taken = {mode: 'normal', delayMs: state.delayMs};
    if (state.mode === 'normal' || !modeApplies(path)) {
        return taken;
    }
    taken.mode = state.mode;
    if (state.remaining !== null && --state.remaining <= 0) {
        setModeState('normal', DEFAULT_DELAY_MS, null, null);
    }
    return taken;
}

function setModeState(mode, delayMs, remaining, pathPrefix) {
    state.mode = mode;
    state.delayMs = delayMs;
    state.remaining = remaining;
    state.pathPrefix = pathPrefix;
}

// ---- control API -----------------------------------------------------------

function health() {
    return json(200, {status: 'ok'});
}

function setMode(ctx) {
    const req = parseJson(ctx.body);
    if (!isObject(req) || !MODES.includes(req.mode)) {
        return json(400, {error: `mode must be one of ${MODES.join(', ')}`});
    }
    if (req.delay_ms !== undefined &&
        !(Number.isInteger(req.delay_ms) && req.delay_ms >= 0)) {
        return json(400, {error: 'delay_ms must be a non-negative integer'});
    }
    if (req.times !== undefined && req.times !== null &&
        !(Number.isInteger(req.times) && req.times > 0)) {
        return json(400, {error: 'times must be a positive integer'});
    }
    if (req.path_prefix !== undefined && req.path_prefix !== null &&
        !(typeof req.path_prefix === 'string' && req.path_prefix.startsWith('/'))) {
        return json(400, {error: 'path_prefix must be a path starting with /'});
    }
    setModeState(req.mode,
                 req.delay_ms === undefined ? DEFAULT_DELAY_MS : req.delay_ms,
                 req.times === undefined ? null : req.times,
                 req.path_prefix === undefined ? null : req.path_prefix);
    return getMode();
}

function getMode() {
    return json(200, {mode: state.mode, delay_ms: state.delayMs,
                      times: state.remaining, path_prefix: state.pathPrefix});
}

function listRequests() {
    return json(200, state.requests);
}

function counter(kind, key) {
    const map = state.counters[kind];
    if (!map.has(key)) {
        map.set(key, {requests: 0, duplicates: 0, queries: 0});
    }
    return map.get(key);
}

function listCharges() {
    const charges = [...state.charges.values()].map(({charge}) => Object.assign({
        out_trade_no: charge.out_trade_no, charge_id: charge.charge_id,
        amount: charge.amount, currency: charge.currency, status: charge.status,
    }, charge.decline_code ? {decline_code: charge.decline_code} : {},
       counter('charges', charge.out_trade_no)));
    const refunds = [...state.refunds.values()].map(({refund}) => Object.assign({
        out_refund_no: refund.out_refund_no, refund_id: refund.refund_id,
        out_trade_no: refund.out_trade_no, amount: refund.amount,
        currency: refund.currency, status: refund.status,
    }, refund.failure_code ? {failure_code: refund.failure_code} : {},
       counter('refunds', refund.out_refund_no)));
    return json(200, {charges, refunds});
}

function resetSim() {
    state.requests = [];
    state.charges.clear();
    state.refunds.clear();
    state.counters.charges.clear();
    state.counters.refunds.clear();
    state.statements = {};
    alipay.reset();
    wechat.reset();
    setModeState('normal', DEFAULT_DELAY_MS, null, null);
    return json(200, {status: 'ok'});
}

// POST a signed acquirer callback to the gateway; resolves to the answer.
async function notify(ctx) {
    const req = parseJson(ctx.body);
    const bad = validateNotify(req);
    if (bad) {
        return json(400, {error: bad});
    }
    const stored = state.charges.get(req.out_trade_no);
    const charge = stored ? Object.assign({}, stored.charge) : {
        charge_id: randomId('ch_'), out_trade_no: req.out_trade_no,
        status: 'approved', amount: null, currency: null,
        card_brand: 'visa', card_last4: '4242',
    };
    for (const f of ['status', 'amount', 'currency', 'decline_code']) {
        if (req[f] !== undefined && req[f] !== null) {
            charge[f] = req[f];
        }
    }
    if (charge.status !== 'declined') {
        delete charge.decline_code;
    }
    if (!Number.isSafeInteger(charge.amount) || typeof charge.currency !== 'string') {
        return json(400, {error: 'amount and currency required (no such charge)'});
    }
    if (req.tamper === 'amount') {
        charge.amount += 1;
    }
    const ts = String(req.timestamp === undefined ? nowSec() : req.timestamp);
    let body = JSON.stringify({event: 'charge.updated', charge});
    const secret = req.tamper === 'signature' ? wrongSecret() : opts.acquirerSecret;
    const headers = {
        'Content-Type': 'application/json',
        'X-Acquirer-Merchant': req.tamper === 'merchant' ? 'ACQ-WRONG'
            : opts.acquirerMerchant,
        'X-Acquirer-Timestamp': ts,
        'X-Acquirer-Signature': hmacHex(secret, `${ts}\n`, body),
    };
    if (req.tamper === 'body') {    // altered after signing
        body = JSON.stringify({event: 'charge.updated',
                               charge: Object.assign({}, charge,
                                                     {amount: charge.amount + 1})});
    }
    try {
        const answer = await postCallback(req.url, headers, body);
        console.log(`${new Date().toISOString()} notify ${req.url} ` +
                    `${req.out_trade_no} -> ${answer.status}`);
        return json(200, {status: answer.status, body: answer.body,
                          sent: {headers, body}});
    } catch (e) {
        console.log(`${new Date().toISOString()} notify ${req.url} failed: ${e.message}`);
        return json(502, {error: `callback failed: ${e.message}`,
                          sent: {headers, body}});
    }
}

function validateNotify(req) {
    if (!isObject(req)) {
        return 'body must be a JSON object';
    }
    if (typeof req.url !== 'string' || !/^http:\/\/[^/]+/.test(req.url)) {
        return 'url must be an http:// URL';
    }
    if (typeof req.out_trade_no !== 'string' || req.out_trade_no === '') {
        return 'out_trade_no required';
    }
    if (req.tamper !== undefined && req.tamper !== null && !TAMPERS.includes(req.tamper)) {
        return `tamper must be one of ${TAMPERS.join(', ')} or null`;
    }
    if (req.timestamp !== undefined && !Number.isInteger(req.timestamp)) {
        return 'timestamp must be an integer';
    }
    return null;
}

function postCallback(url, headers, body) {
    return new Promise((resolve, reject) => {
        const req = http.request(new URL(url), {
            method: 'POST',
            headers: Object.assign({'Content-Length': Buffer.byteLength(body)},
                                   headers),
        }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => resolve({
                status: res.statusCode,
                body: Buffer.concat(chunks).toString('utf8'),
            }));
            res.on('error', reject);
        });
        req.setTimeout(NOTIFY_TIMEOUT_MS, () => req.destroy(new Error('timeout')));
        req.on('error', reject);
        req.end(body);
    });
}

// ---- bank-card acquirer ----------------------------------------------------

// Handlers return {status, obj} (JSON) or {status, text, contentType}.
function acqError(status, code, message) {
    return {status, obj: message === undefined ? {error: code}
                                               : {error: code, message}};
}

function invalid(message) {
    return acqError(400, 'invalid_request', message);
}

function wrongSecret() {
    return opts.acquirerSecret + '-wrong';
}

// null when the request is authentic, else the 401 answer.
function acquirerAuthenticate(ctx) {
    const h = ctx.req.headers;
    if (h['x-acquirer-merchant'] !== opts.acquirerMerchant) {
        return acqError(401, 'unknown_merchant');
    }
    const ts = h['x-acquirer-timestamp'];
    const sig = h['x-acquirer-signature'];
    if (typeof ts !== 'string' || !/^\d{1,12}$/.test(ts) ||
        Math.abs(nowSec() - Number(ts)) > MAX_SKEW_S || typeof sig !== 'string') {
        return acqError(401, 'bad_signature');
    }
    const expected = hmacHex(opts.acquirerSecret,
                             `${ts}\n${ctx.req.method}\n${ctx.req.url}\n`, ctx.body);
    return safeEqualHex(sig, expected) ? null : acqError(401, 'bad_signature');
}

// A handler's answer as signed HTTP, with the output fault modes applied.
function acquirerReply(ctx, answer) {
    let body;
    let type;
    if (answer.obj !== undefined) {
        let obj = answer.obj;
        if (ctx.mode === 'amount_mismatch' && Number.isSafeInteger(obj.amount)) {
            obj = Object.assign({}, obj, {amount: obj.amount + 1});
        }
        body = JSON.stringify(obj);
        type = 'application/json';
    } else {
        body = answer.text;
        type = answer.contentType;
    }
    const ts = String(nowSec());
    const secret = ctx.mode === 'bad_signature' ? wrongSecret() : opts.acquirerSecret;
    return {status: answer.status, body, truncateAt: answer.truncateAt, headers: {
        'Content-Type': type,
        'X-Acquirer-Timestamp': ts,
        'X-Acquirer-Signature': hmacHex(secret, `${ts}\n`, body),
    }};
}

function validateCard(card) {
    if (!isObject(card)) {
        return 'card must be an object';
    }
    if (typeof card.number !== 'string' || !/^\d{12,19}$/.test(card.number)) {
        return 'card.number must be a string of 12-19 digits';
    }
    if (!luhnValid(card.number)) {
        return 'card.number fails the Luhn check';
    }
    if (!Number.isInteger(card.exp_month) || card.exp_month < 1 || card.exp_month > 12) {
        return 'card.exp_month must be an integer 1-12';
    }
    if (!Number.isInteger(card.exp_year) || card.exp_year < 1000 || card.exp_year > 9999) {
        return 'card.exp_year must be a 4-digit integer';
    }
    if (typeof card.cvc !== 'string' || !/^\d{3,4}$/.test(card.cvc)) {
        return 'card.cvc must be a string of 3-4 digits';
    }
    return null;
}

function validateMoney(req) {
    if (!isPositiveAmount(req.amount)) {
        return 'amount must be a positive integer (minor units)';
    }
    if (typeof req.currency !== 'string' || !CURRENCY_RE.test(req.currency)) {
        return 'currency must be an ISO 4217 code like CNY';
    }
    return null;
}

function validateKey(req, name) {
    return typeof req[name] === 'string' && KEY_RE.test(req[name]) ? null
        : `${name} must be 1-64 characters of A-Z a-z 0-9 _ . : -`;
}

function validateCharge(req) {
    if (!isObject(req)) {
        return 'body must be a JSON object';
    }
    return validateKey(req, 'out_trade_no') || validateMoney(req) ||
        validateCard(req.card) ||
        (req.description !== undefined && typeof req.description !== 'string'
            ? 'description must be a string' : null);
}

function validateRefund(req) {
    if (!isObject(req)) {
        return 'body must be a JSON object';
    }
    return validateKey(req, 'out_trade_no') || validateKey(req, 'out_refund_no') ||
        validateMoney(req) ||
        (req.reason !== undefined && typeof req.reason !== 'string'
            ? 'reason must be a string' : null);
}

function cardExpired(card) {
    const now = new Date();
    const year = now.getUTCFullYear();
    const month = now.getUTCMonth() + 1;
    return card.exp_year < year || (card.exp_year === year && card.exp_month < month);
}

const DECLINING_CARDS = {
    '4000000000000002': 'card_declined',
    '4000000000009995': 'insufficient_funds',
};

function declineCode(ctx, card) {
    if (ctx.mode === 'decline') {
        return 'card_declined';
    }
    if (DECLINING_CARDS[card.number]) {
        return DECLINING_CARDS[card.number];
    }
    return cardExpired(card) ? 'expired_card' : null;
}

function createCharge(ctx) {
    const req = parseJson(ctx.body);
    const bad = validateCharge(req);
    if (bad) {
        return invalid(bad);
    }
    const existing = state.charges.get(req.out_trade_no);
    if (existing) {
        if (existing.charge.amount !== req.amount ||
            existing.charge.currency !== req.currency) {
            return acqError(409, 'conflicting_request');
        }
        counter('charges', req.out_trade_no).duplicates++;
        return {status: 200, obj: existing.charge};
    }
    const decline = declineCode(ctx, req.card);
    const charge = Object.assign(
        {charge_id: randomId('ch_'), out_trade_no: req.out_trade_no,
         status: decline ? 'declined' : 'approved'},
        decline ? {decline_code: decline} : {},
        {amount: req.amount, currency: req.currency,
         card_brand: cardBrand(req.card.number),
         card_last4: req.card.number.slice(-4)});
    state.charges.set(charge.out_trade_no, {charge, createdAt: Date.now()});
    return {status: 200, obj: charge};
}

function decodeKey(segment) {
    try {
        return decodeURIComponent(segment);
    } catch (e) {
        return null;
    }
}

function getCharge(ctx, segment) {
    const key = decodeKey(segment);
    const rec = key === null ? undefined : state.charges.get(key);
    if (!rec) {
        return acqError(404, 'not_found');
    }
    counter('charges', key).queries++;
    return {status: 200, obj: rec.charge};
}

function refundedAmount(outTradeNo) {
    let sum = 0;
    for (const {refund} of state.refunds.values()) {
        if (refund.out_trade_no === outTradeNo && refund.status === 'succeeded') {
            sum += refund.amount;
        }
    }
    return sum;
}

function refundFailure(req) {
    const rec = state.charges.get(req.out_trade_no);
    if (!rec || rec.charge.status !== 'approved') {
        return 'charge_not_refundable';
    }
    if (refundedAmount(req.out_trade_no) + req.amount > rec.charge.amount) {
        return 'amount_exceeds_charge';
    }
    return null;
}

function createRefund(ctx) {
    const req = parseJson(ctx.body);
    const bad = validateRefund(req);
    if (bad) {
        return invalid(bad);
    }
    const existing = state.refunds.get(req.out_refund_no);
    if (existing) {
        const r = existing.refund;
        if (r.out_trade_no !== req.out_trade_no || r.amount !== req.amount ||
            r.currency !== req.currency) {
            return acqError(409, 'conflicting_request');
        }
        counter('refunds', req.out_refund_no).duplicates++;
        return {status: 200, obj: r};
    }
    const charge = state.charges.get(req.out_trade_no);
    if (charge && charge.charge.currency !== req.currency) {
        return invalid('currency does not match the charge');
    }
    const failure = refundFailure(req);
    const refund = Object.assign(
        {refund_id: randomId('re_'), out_refund_no: req.out_refund_no,
         out_trade_no: req.out_trade_no,
         status: failure ? 'failed' : 'succeeded'},
        failure ? {failure_code: failure} : {},
        {amount: req.amount, currency: req.currency});
    state.refunds.set(refund.out_refund_no, {refund, createdAt: Date.now()});
    return {status: 200, obj: refund};
}

function getRefund(ctx, segment) {
    const key = decodeKey(segment);
    const rec = key === null ? undefined : state.refunds.get(key);
    if (!rec) {
        return acqError(404, 'not_found');
    }
    counter('refunds', key).queries++;
    return {status: 200, obj: rec.refund};
}

const SETTLEMENT_COLUMNS = ['type', 'out_trade_no', 'out_refund_no', 'provider_id',
                            'amount', 'currency', 'status', 'created_at'];

function csvField(v) {
    const s = v === undefined || v === null ? '' : String(v);
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function validDay(day) {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) {
        return false;
    }
    const d = new Date(`${day}T00:00:00Z`);
    return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === day;
}

// ---- statements: what the provider charged and refunded, with tweaks ------
//
// POST /_sim/statement {"provider":"acquirer|alipay|wechat", "drop":[KEY],
//   "add":[[COLUMN...]], "amount":{KEY:DELTA}, "status":{KEY:STATUS},
//   "large":N, "columns":"wrong", "truncate":true, "bad_utf8":true}
// KEY: out_refund_no for a refund line, else out_trade_no.  Differences
// a reconciliation must find: drop a line (missing_remote), add a foreign
// one (missing_local), change an amount or a status; and broken files:
// N foreign lines more (large), another header (columns), cut short with
// the full Content-Length (truncate), a byte that is not UTF-8 (bad_utf8).
// The tweaks stay until POST /_sim/reset or the next POST for the provider.
function setStatement(ctx) {
    const req = parseJson(ctx.body);
    if (!isObject(req) || !['acquirer', 'alipay', 'wechat'].includes(req.provider)) {
        return json(400, {error: 'provider must be acquirer, alipay or wechat'});
    }
    state.statements[req.provider] = req;
    return json(200, {status: 'ok'});
}

// rows: [{at, key, cols}]; amountAt/statusAt: column indexes; foreign(i):
// the columns of a large-mode line.  Returns the lines, tweaks applied.
function tweakStatement(provider, rows, amountAt, statusAt, foreign) {
    const t = state.statements[provider] || {};
    const drop = new Set(Array.isArray(t.drop) ? t.drop : []);
    const lines = [];
    for (const r of rows) {
        if (drop.has(r.key)) {
            continue;
        }
        const cols = r.cols.slice();
        if (isObject(t.amount) && t.amount[r.key] !== undefined) {
            cols[amountAt] = typeof t.amount[r.key] === 'string' ? t.amount[r.key]
                : Number(cols[amountAt]) + t.amount[r.key];
        }
        if (isObject(t.status) && t.status[r.key] !== undefined) {
            cols[statusAt] = t.status[r.key];
        }
        lines.push(cols);
    }
    for (const cols of Array.isArray(t.add) ? t.add : []) {
        lines.push(cols);
    }
    for (let i = 0; i < (Number.isSafeInteger(t.large) ? t.large : 0); i++) {
        lines.push(foreign(i));
    }
    return lines;
}

function statementTweaks(provider) {
    return state.statements[provider] || {};
}

function finishStatement(provider, header, lines) {
    const t = statementTweaks(provider);
    const head = t.columns === 'wrong' ? header.slice().reverse() : header;
    let text = [head.join(','), ...lines.map((cols) => cols.map(csvField).join(','))]
        .map((l) => l + '\n').join('');
    if (t.bad_utf8) {
        const i = text.indexOf('\n') + 1;
        return Buffer.concat([Buffer.from(text.slice(0, i)), Buffer.from([0xff, 0xfe]),
                              Buffer.from(text.slice(i))]);
    }
    return text;
}

function getSettlement(ctx, day) {
    if (!validDay(day)) {
        return invalid('date must be YYYY-MM-DD');
    }
    const rows = [];
    for (const {charge, createdAt} of state.charges.values()) {
        rows.push({createdAt, cols: ['charge', charge.out_trade_no, '', charge.charge_id,
                                     charge.amount, charge.currency, charge.status]});
    }
    for (const {refund, createdAt} of state.refunds.values()) {
        rows.push({createdAt, cols: ['refund', refund.out_trade_no, refund.out_refund_no,
                                     refund.refund_id, refund.amount, refund.currency,
                                     refund.status]});
    }
    const now = `${day}T12:00:00Z`;     // large mode: the same bytes each time
    const day_rows = rows
        .filter((r) => isoSeconds(r.createdAt).slice(0, 10) === day)
        .sort((a, b) => a.createdAt - b.createdAt)
        .map((r) => ({key: r.cols[2] || r.cols[1],
                      cols: [...r.cols, isoSeconds(r.createdAt)]}));
    const lines = tweakStatement('acquirer', day_rows, 4, 6,
        (i) => ['charge', `LARGE${String(i).padStart(7, '0')}`, '', `ch_large_${i}`,
                100 + (i % 900), 'CNY', 'approved', now]);
    const text = finishStatement('acquirer', SETTLEMENT_COLUMNS, lines);
    const answer = {status: 200, contentType: 'text/csv', text};
    if (statementTweaks('acquirer').truncate) {
        answer.truncateAt = Math.floor(Buffer.byteLength(text) * 0.6);
    }
    return answer;
}

const acquirer = {
    prefix: '/acquirer/',
    routes: [
        {method: 'POST', path: /^\/acquirer\/v1\/charges$/, handler: createCharge,
         counts: {kind: 'charges', key: 'out_trade_no'}},
        {method: 'GET', path: /^\/acquirer\/v1\/charges\/([^/]+)$/, handler: getCharge},
        {method: 'POST', path: /^\/acquirer\/v1\/refunds$/, handler: createRefund,
         counts: {kind: 'refunds', key: 'out_refund_no'}},
        {method: 'GET', path: /^\/acquirer\/v1\/refunds\/([^/]+)$/, handler: getRefund},
        {method: 'GET', path: /^\/acquirer\/v1\/settlements\/([^/]+)$/,
         handler: getSettlement},
    ],
    authenticate: acquirerAuthenticate,
    reply: acquirerReply,
    notFound: () => acqError(404, 'not_found'),
    internalError: () => acqError(500, 'internal'),
    refused: (status) => acqError(status, status === 401 ? 'unauthorized'
                                                         : 'rate_limited'),
    tooLarge: () => acqError(413, 'invalid_request', 'body too large'),
};

// Alipay and WeChat Pay live in their own files; they get what they share
// with the acquirer through env.
const env = {opts, keys, json, parseJson, isObject, validDay, csvField, nowSec,
             postCallback, KEY_RE, tweakStatement, finishStatement, statementTweaks};
const alipay = createAlipay(env);
const wechat = createWechat(env);

const PROVIDERS = [acquirer, alipay.provider, wechat.provider];

function listTrades() {
    return json(200, {alipay: alipay.list(), wechat: wechat.list()});
}

// ---- routing ---------------------------------------------------------------

const controlRoutes = {
    'GET /health':         health,
    'GET /_sim/mode':      getMode,
    'POST /_sim/mode':     setMode,
    'GET /_sim/requests':  listRequests,
    'GET /_sim/charges':   listCharges,
    'POST /_sim/reset':    resetSim,
    'POST /_sim/statement': setStatement,
    'POST /_sim/notify':   notify,
    'GET /_sim/trades':    listTrades,
    ...alipay.control,
    ...wechat.control,
};

// Control routes with a parameter in the path: [{method, path, handler}].
const controlPatterns = [...alipay.controlPatterns, ...wechat.controlPatterns];

function matchControl(method, path) {
    const handler = controlRoutes[`${method} ${path}`];
    if (handler) {
        return {handler, params: []};
    }
    for (const route of controlPatterns) {
        const m = route.method === method && route.path.exec(path);
        if (m) {
            return {handler: route.handler, params: m.slice(1)};
        }
    }
    return null;
}

function log(ctx, status) {
    const {req} = ctx;
    let line = `${new Date().toISOString()} ${req.method} ${redact(req.url)} ` +
        `${status} ${Date.now() - ctx.started}ms mode=${ctx.mode}`;
    if (ctx.provider && ctx.body && ctx.body.length) {
        let body = redact(ctx.body.toString('utf8')).replace(/\s*[\r\n]+\s*/g, ' ');
        if (body.length > MAX_LOGGED_BODY) {
            body = body.slice(0, MAX_LOGGED_BODY) + '...';
        }
        line += ` body=${body}`;
    }
    console.log(line);
}

function respond(ctx, answer) {
    const {res} = ctx;
    if (res.destroyed || res.writableEnded) {
        log(ctx, `${answer.status}-client-gone`);
        return;
    }
    const body = answer.body === undefined ? '' : answer.body;
    // A 204 must not carry Content-Length (RFC 9110 8.6).
    const headers = Object.assign(answer.status === 204 ? {}
                                      : {'Content-Length': Buffer.byteLength(body)},
                                  answer.headers || {});
    res.writeHead(answer.status, headers);
    if (answer.truncateAt !== undefined) {
        // the full Content-Length, part of the body, then the connection
        // goes: a statement cut short
        const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
        res.write(buf.subarray(0, answer.truncateAt));
        setTimeout(() => res.socket && res.socket.destroy(), 50);
        log(ctx, `${answer.status}-truncated`);
        return;
    }
    res.end(body);
    log(ctx, answer.status);
}

function dropConnection(ctx) {
    log(ctx, 'reset');
    const sock = ctx.req.socket;
    if (typeof sock.resetAndDestroy === 'function') {
        sock.resetAndDestroy();
    } else {
        sock.destroy();
    }
}

function tlsInfo(req) {
    if (!req.socket.encrypted) {
        return null;
    }
    const cert = req.socket.getPeerCertificate();
    return {client: (cert && cert.subject && cert.subject.CN) || null};
}

function recordRequest(ctx) {
    state.requests.push({method: ctx.req.method, path: redact(ctx.req.url),
                         headers: ctx.req.headers,
                         body: redact(ctx.body.toString('utf8')),
                         mode: ctx.mode, tls: tlsInfo(ctx.req)});
    if (state.requests.length > MAX_RECORDED) {
        state.requests.shift();
    }
}

function matchRoute(provider, method, path) {
    for (const route of provider.routes) {
        const m = route.method === method && route.path.exec(path);
        if (m) {
            return {route, params: m.slice(1)};
        }
    }
    return null;
}

// Counts an authentic create request for its key as soon as it arrives,
// whether or not a fault mode lets it be processed. counts is {kind, key}
// (a field of the JSON body) or a function that does the counting.
function countArrival(ctx, provider, match) {
    const counts = match && match.route.counts;
    if (!counts || provider.authenticate(ctx) !== null) {
        return;
    }
    if (typeof counts === 'function') {
        counts(ctx);
        return;
    }
    const req = parseJson(ctx.body);
    if (isObject(req) && typeof req[counts.key] === 'string') {
        counter(counts.kind, req[counts.key]).requests++;
    }
}

function processRequest(ctx, provider, match) {
    const unauthorized = provider.authenticate(ctx);
    if (unauthorized) {
        return unauthorized;
    }
    return match ? match.route.handler(ctx, ...match.params) : provider.notFound();
}

function dispatchProvider(ctx, provider) {
    const match = matchRoute(provider, ctx.req.method, ctx.path);
    const taken = takeMode(ctx.path);
    ctx.mode = taken.mode;
    recordRequest(ctx);
    countArrival(ctx, provider, match);

    const reply = (answer) => respond(ctx, provider.reply(ctx, answer));
    const work = () => processRequest(ctx, provider, match);
    switch (ctx.mode) {
    case 'error500':
        return reply(provider.internalError());
    case 'refuse401':
    case 'refuse429':
        if (provider.refused) {
            return reply(provider.refused(ctx.mode === 'refuse401' ? 401 : 429));
        }
        break;
    case 'reset':
        return dropConnection(ctx);
    case 'slow_before':
        setTimeout(() => reply(work()), taken.delayMs);
        return undefined;
    default:
        break;
    }

    const answer = work();
    switch (ctx.mode) {
    case 'error500_after':
        return reply(provider.internalError());
    case 'reset_after':
        return dropConnection(ctx);
    case 'slow': {
        const timer = setTimeout(() => reply(answer), taken.delayMs);
        ctx.res.on('close', () => {
            if (!ctx.res.writableEnded) {
                clearTimeout(timer);
                log(ctx, `${answer.status}-client-gone`);
            }
        });
        return undefined;
    }
    default:
        return reply(answer);
    }
}

function providerFor(path) {
    return PROVIDERS.find((p) => path.startsWith(p.prefix)) || null;
}

function dispatch(ctx) {
    if (ctx.provider && ctx.provider.disabled) {
        return respond(ctx, json(503, {error: 'not configured'}));
    }
    if (ctx.provider) {
        return dispatchProvider(ctx, ctx.provider);
    }
    const route = matchControl(ctx.req.method, ctx.path);
    if (!route) {
        return respond(ctx, json(404, {error: `no route ${ctx.req.method} ${ctx.path}`}));
    }
    return Promise.resolve(route.handler(ctx, ...route.params)).then(
        (answer) => respond(ctx, answer),
        (e) => {
            console.error(e);
            respond(ctx, json(500, {error: 'simulator bug: ' + e.message}));
        });
}

function handle(req, res) {
    const path = req.url.split('?')[0];
    const ctx = {req, res, path, provider: providerFor(path), body: null,
                 mode: 'normal', started: Date.now()};
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk) => {
        if (tooLarge) {
            return;
        }
        size += chunk.length;
        if (size > MAX_BODY) {
            tooLarge = true;
            ctx.body = Buffer.alloc(0);
            res.setHeader('Connection', 'close');
            respond(ctx, ctx.provider && !ctx.provider.disabled
                ? ctx.provider.reply(ctx, ctx.provider.tooLarge())
                : json(413, {error: 'body too large'}));
            return;
        }
        chunks.push(chunk);
    });
    req.on('end', () => {
        if (tooLarge) {
            return;
        }
        ctx.body = Buffer.concat(chunks);
        try {
            dispatch(ctx);
        } catch (e) {
            console.error(e);
            respond(ctx, json(500, {error: 'simulator bug: ' + e.message}));
        }
    });
}

const servers = [http.createServer(handle)];
const server = servers[0];
if (opts.tlsPort !== null) {
    const tls = {cert: fs.readFileSync(opts.tlsCert),
                 key: fs.readFileSync(opts.tlsKey)};
    if (opts.tlsClientCa) {
        tls.ca = fs.readFileSync(opts.tlsClientCa);
        tls.requestCert = true;
        tls.rejectUnauthorized = true;
    }
    servers.push(https.createServer(tls, handle));
}

// Longer than nginx's upstream keepalive_timeout (60 s), so nginx never
// reuses a connection that we are closing.
for (const s of servers) {
    s.keepAliveTimeout = 65000;
    s.headersTimeout = 66000;
}

function shutdown() {
    if (opts.pidfile) {
        try { fs.unlinkSync(opts.pidfile); } catch (e) { /* gone already */ }
    }
    process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

function listenPlain() {
    server.listen(opts.port, '127.0.0.1', () => {
        if (opts.pidfile) {
            fs.writeFileSync(opts.pidfile, `${process.pid}\n`);
        }
        console.log(`${new Date().toISOString()} sim listening on ` +
                    `http://127.0.0.1:${opts.port}`);
    });
}

// HTTPS first: once the plain port answers, both are up.
if (servers.length > 1) {
    servers[1].listen(opts.tlsPort, '127.0.0.1', () => {
        console.log(`${new Date().toISOString()} sim listening on ` +
                    `https://127.0.0.1:${opts.tlsPort}` +
                    (opts.tlsClientCa ? ' (client certificate required)' : ''));
        listenPlain();
    });
} else {
    listenPlain();
}
