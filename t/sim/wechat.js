// WeChat Pay API v3 for the provider simulator: WECHATPAY2-SHA256-RSA2048
// requests, signed responses, Native pay, query, close, refunds, trade bill,
// encrypted TRANSACTION callbacks and platform key rotation. The protocol is
// described in the header of t/sim/sim.js; this file is required from there.
'use strict';

const crypto = require('crypto');
const zlib = require('zlib');
const c = require('./common');

const AUTH_SCHEME = 'WECHATPAY2-SHA256-RSA2048';
const AUTH_FIELDS = ['mchid', 'nonce_str', 'timestamp', 'serial_no', 'signature'];
const MAX_SKEW_S = 300;
const PAID = ['SUCCESS', 'REFUND'];
const STATE_DESC = {
    NOTPAY: '未支付', SUCCESS: '支付成功', CLOSED: '已关闭', REFUND: '转入退款',
    PAYERROR: '支付失败(其他原因，如银行返回失败)',
};
const STATES = Object.keys(STATE_DESC);
const TAMPERS = ['signature', 'amount', 'mchid', 'body', 'serial', 'apiv3_key', 'currency'];
const BILL_COLUMNS = ['type', 'out_trade_no', 'out_refund_no', 'provider_id',
                      'amount_fen', 'status', 'time'];
const RFC3339_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const WRONG_MCHID = '1900009999';

// env: what sim.js shares (opts, keys or null, json, parseJson, isObject,
// validDay, csvField, postCallback, nowSec, KEY_RE).
module.exports = function createWechat(env) {
    const {opts, keys} = env;
    const orders = new Map();      // out_trade_no -> order
    const refunds = new Map();     // out_refund_no -> refund
    const counters = {trades: new Map(), refunds: new Map()};
    let platform = keys ? keys.platforms[0] : null;    // signs answers, callbacks

    const error = (status, code, message) => ({status, obj: {code, message}});

    function counter(kind, key) {
        const map = counters[kind];
        if (!map.has(key)) {
            map.set(key, {requests: 0, duplicates: 0, queries: 0});
        }
        return map.get(key);
    }

    // ---- authentication and signed answers -------------------------------------

    // 'k1="v1",k2="v2"' in any order: an object, or null when malformed.
    function parseAuthFields(text) {
        const re = /\s*([A-Za-z_]+)="([^"]*)"\s*(,|$)/y;
        const fields = Object.create(null);
        let m;
        while (re.lastIndex < text.length && (m = re.exec(text)) !== null) {
            if (m[1] in fields) {
                return null;
            }
            fields[m[1]] = m[2];
            if (m[3] === '') {
                break;
            }
        }
        return re.lastIndex === text.length ? fields : null;
    }

    // null when the request is authentic, else the 401 answer.
    function authenticate(ctx) {
        const signError = (message) => error(401, 'SIGN_ERROR', message);
        const auth = String(ctx.req.headers.authorization || '');
        if (!auth.startsWith(`${AUTH_SCHEME} `)) {
            return signError(`Authorization must be ${AUTH_SCHEME} mchid="..",...`);
        }
        const f = parseAuthFields(auth.slice(AUTH_SCHEME.length + 1));
        if (!f) {
            return signError('Authorization: malformed key="value" list');
        }
        const missing = AUTH_FIELDS.find((k) => !f[k]);
        if (missing) {
            return signError(`Authorization: missing ${missing}`);
        }
        if (f.mchid !== opts.wechatMchid) {
            return signError(`unknown mchid ${f.mchid}`);
        }
        if (f.serial_no !== keys.wechatMerchantSerial) {
            return signError(`serial_no ${f.serial_no} is not the merchant certificate's`);
        }
        if (!/^\d{1,12}$/.test(f.timestamp) ||
            Math.abs(env.nowSec() - Number(f.timestamp)) > MAX_SKEW_S) {
            return signError('timestamp is not within 300 s of now');
        }
        const message = `${ctx.req.method}\n${ctx.req.url}\n${f.timestamp}\n` +
            `${f.nonce_str}\n${ctx.body.toString('utf8')}\n`;
        return c.rsaVerify(keys.wechatMerchantPublic, message, f.signature) ? null
            : signError('signature does not verify');
    }

    function withAmountPlusOne(obj) {
        if (!env.isObject(obj.amount) || !Number.isSafeInteger(obj.amount.total)) {
            return obj;
        }
        return Object.assign({}, obj, {amount: Object.assign({}, obj.amount,
                                                             {total: obj.amount.total + 1})});
    }

    // Every answer is signed with the current platform key, 204s too.
    function reply(ctx, answer) {
        const headers = {};
        let body = '';
        if (answer.obj !== undefined) {
            const obj = ctx.mode === 'amount_mismatch' ? withAmountPlusOne(answer.obj)
                : answer.obj;
            body = JSON.stringify(obj);
            headers['Content-Type'] = 'application/json';
        }
        const ts = String(env.nowSec());
        const nonce = c.randomAlnum(32);
        const key = ctx.mode === 'bad_signature' ? keys.wrongKey : platform.privateKey;
        return {status: answer.status, body, headers: Object.assign(headers, {
            'Request-ID': c.randomHexUpper(32),
            'Wechatpay-Nonce': nonce,
            'Wechatpay-Serial': platform.serial,
            'Wechatpay-Signature': c.rsaSign(key, `${ts}\n${nonce}\n${body}\n`),
            'Wechatpay-Timestamp': ts,
        })};
    }

    // ---- validation ----------------------------------------------------------------

    const paramError = (message) => error(400, 'PARAM_ERROR', message);

    function needKey(obj, name) {
        return typeof obj[name] === 'string' && env.KEY_RE.test(obj[name]) ? null
            : paramError(`${name} must be 1-64 characters of A-Z a-z 0-9 _ . : -`);
    }

    function needFen(obj, name) {
        return Number.isSafeInteger(obj[name]) && obj[name] > 0 ? null
            : paramError(`amount.${name} must be a positive integer (fen)`);
    }

    function needCny(amount) {
        return amount.currency === undefined || amount.currency === 'CNY' ? null
            : paramError('amount.currency must be CNY');
    }

    function needUrl(obj, name, optional) {
        if (optional && obj[name] === undefined) {
            return null;
        }
        return typeof obj[name] === 'string' && /^https?:\/\/[^/]+/.test(obj[name]) ? null
            : paramError(`${name} must be an http(s) URL`);
    }

    function jsonBody(ctx) {
        const req = env.parseJson(ctx.body);
        return env.isObject(req) ? {req} : {bad: paramError('body must be a JSON object')};
    }

    function queryParams(ctx) {
        const q = ctx.req.url.indexOf('?');
        return new URLSearchParams(q < 0 ? '' : ctx.req.url.slice(q + 1));
    }

    function decodeSegment(segment) {
        try {
            return decodeURIComponent(segment);
        } catch (e) {
            return null;
        }
    }

    const orderNotExist = () => error(404, 'ORDER_NOT_EXIST', '订单不存在');

    // ---- orders --------------------------------------------------------------------

    function newOrder(req) {
        return {appid: req.appid || opts.wechatAppid, mchid: req.mchid || opts.wechatMchid,
                out_trade_no: req.out_trade_no, description: req.description || '',
                notify_url: req.notify_url || null, time_expire: req.time_expire || null,
                total: req.amount.total, currency: req.amount.currency || 'CNY',
                trade_state: 'NOTPAY',
                code_url: `weixin://wxpay/bizpayurl?pr=${c.randomAlnum(9)}`,
                transaction_id: null, successAt: null, openid: null,
                createdAt: Date.now(), refundedFen: 0};
    }

    // Sets an order's state; a first payment gets its transaction and payer.
    function setState(order, state, now) {
        order.trade_state = state;
        if (PAID.includes(state) && !order.transaction_id) {
            order.transaction_id = '4200' + c.randomDigits(24);
            order.successAt = now;
            order.openid = 'oUpF8u' + c.randomAlnum(22);
        }
    }

    // The order as the query answers it (and callbacks carry it).
    function transaction(order) {
        const paid = order.transaction_id !== null;
        return Object.assign(
            {appid: order.appid, mchid: order.mchid, out_trade_no: order.out_trade_no},
            paid ? {transaction_id: order.transaction_id} : {},
            {trade_type: 'NATIVE', trade_state: order.trade_state,
             trade_state_desc: STATE_DESC[order.trade_state]},
            paid ? {bank_type: 'OTHERS', success_time: c.rfc3339Cst(order.successAt)} : {},
            {amount: Object.assign({total: order.total},
                                   paid ? {payer_total: order.total} : {},
                                   {currency: order.currency,
                                    payer_currency: order.currency})},
            paid ? {payer: {openid: order.openid}} : {});
    }

    function validateNative(req) {
        if (req.mchid !== opts.wechatMchid) {
            return error(400, 'MCH_NOT_EXISTS', '商户号不存在');
        }
        if (req.appid !== opts.wechatAppid) {
            return paramError('appid和mch_id不匹配');
        }
        if (typeof req.description !== 'string' || req.description === '' ||
            Buffer.byteLength(req.description) > 127) {
            return paramError('description must be 1-127 bytes');
        }
        if (req.time_expire !== undefined &&
            !(typeof req.time_expire === 'string' && RFC3339_RE.test(req.time_expire) &&
              !Number.isNaN(Date.parse(req.time_expire)))) {
            return paramError('time_expire must be RFC 3339, like 2024-05-01T12:00:00+08:00');
        }
        if (!env.isObject(req.amount)) {
            return paramError('amount must be an object');
        }
        return needKey(req, 'out_trade_no') || needUrl(req, 'notify_url') ||
            needFen(req.amount, 'total') || needCny(req.amount);
    }

    function native(ctx) {
        const {req, bad} = jsonBody(ctx);
        const invalid = bad || validateNative(req);
        if (invalid) {
            return invalid;
        }
        let order = orders.get(req.out_trade_no);
        if (order) {
            if (PAID.includes(order.trade_state)) {
                return error(400, 'ORDERPAID', '该订单已支付');
            }
            if (order.trade_state === 'CLOSED') {
                return error(400, 'ORDER_CLOSED', '订单已关闭');
            }
            if (order.total !== req.amount.total) {
                return error(400, 'INVALID_REQUEST', '201 商户订单号重复');
            }
            counter('trades', order.out_trade_no).duplicates++;
            return {status: 200, obj: {code_url: order.code_url}};
        }
        if (ctx.mode === 'decline') {
            return error(403, 'TRADE_ERROR', '交易错误');
        }
        order = newOrder(req);
        orders.set(order.out_trade_no, order);
        return {status: 200, obj: {code_url: order.code_url}};
    }

    function query(ctx, segment) {
        if (queryParams(ctx).get('mchid') !== opts.wechatMchid) {
            return paramError('mchid missing or not yours');
        }
        const order = orders.get(decodeSegment(segment));
        if (!order) {
            return orderNotExist();
        }
        counter('trades', order.out_trade_no).queries++;
        return {status: 200, obj: transaction(order)};
    }

    function close(ctx, segment) {
        const {req, bad} = jsonBody(ctx);
        if (bad) {
            return bad;
        }
        if (req.mchid !== opts.wechatMchid) {
            return paramError('mchid missing or not yours');
        }
        const order = orders.get(decodeSegment(segment));
        if (!order) {
            return orderNotExist();
        }
        if (PAID.includes(order.trade_state)) {
            return error(400, 'ORDERPAID', '该订单已支付');
        }
        order.trade_state = 'CLOSED';
        return {status: 204};
    }

    // ---- refunds -------------------------------------------------------------------

    function refundObject(r) {
        return Object.assign(
            {refund_id: r.refund_id, out_refund_no: r.out_refund_no,
             transaction_id: r.transaction_id, out_trade_no: r.out_trade_no,
             channel: 'ORIGINAL', user_received_account: '支付用户零钱',
             status: r.status, create_time: c.rfc3339Cst(r.createdAt)},
            r.successAt ? {success_time: c.rfc3339Cst(r.successAt)} : {},
            {amount: {total: r.total, refund: r.refund, payer_total: r.total,
                      payer_refund: r.refund, currency: r.currency}});
    }

    function validateRefund(req) {
        if (!env.isObject(req.amount)) {
            return paramError('amount must be an object');
        }
        return needKey(req, 'out_trade_no') || needKey(req, 'out_refund_no') ||
            needFen(req.amount, 'refund') || needFen(req.amount, 'total') ||
            (req.amount.currency === 'CNY' ? null : paramError('amount.currency must be CNY')) ||
            needUrl(req, 'notify_url', true) ||
            (req.reason !== undefined && typeof req.reason !== 'string'
                ? paramError('reason must be a string') : null);
    }

    function createRefund(ctx) {
        const {req, bad} = jsonBody(ctx);
        const invalid = bad || validateRefund(req);
        if (invalid) {
            return invalid;
        }
        const existing = refunds.get(req.out_refund_no);
        if (existing) {
            if (existing.out_trade_no !== req.out_trade_no ||
                existing.refund !== req.amount.refund) {
                return error(400, 'INVALID_REQUEST', '同一退款单号的退款信息不一致');
            }
            counter('refunds', existing.out_refund_no).duplicates++;
            return {status: 200, obj: refundObject(existing)};
        }
        const order = orders.get(req.out_trade_no);
        if (!order) {
            return orderNotExist();
        }
        if (!PAID.includes(order.trade_state)) {
            return error(400, 'INVALID_REQUEST', '订单状态不正确，不能退款');
        }
        if (req.amount.total !== order.total) {
            return paramError('amount.total does not match the order total');
        }
        if (order.refundedFen + req.amount.refund > order.total) {
            return error(403, 'NOT_ENOUGH', '可退金额不足');
        }
        const now = Date.now();
        const processing = ctx.mode === 'refund_processing';
        const r = {refund_id: '50' + c.randomDigits(27), out_refund_no: req.out_refund_no,
                   transaction_id: order.transaction_id, out_trade_no: order.out_trade_no,
                   refund: req.amount.refund, total: order.total, currency: order.currency,
                   reason: req.reason || null, notify_url: req.notify_url || null,
                   status: processing ? 'PROCESSING' : 'SUCCESS',
                   createdAt: now, successAt: processing ? null : now};
        refunds.set(r.out_refund_no, r);
        order.refundedFen += r.refund;
        order.trade_state = 'REFUND';   // as real WeChat: "转入退款"
        return {status: 200, obj: refundObject(r)};
    }

    function getRefund(ctx, segment) {
        const r = refunds.get(decodeSegment(segment));
        if (!r) {
            return error(404, 'RESOURCE_NOT_EXISTS', '退款单不存在');
        }
        counter('refunds', r.out_refund_no).queries++;
        if (r.status === 'PROCESSING') {    // a refund_processing refund completes
            r.status = 'SUCCESS';
            r.successAt = Date.now();
        }
        return {status: 200, obj: refundObject(r)};
    }

    // ---- bills -----------------------------------------------------------------------

    function billCsv(day) {
        const rows = [];
        for (const o of orders.values()) {
            rows.push({at: o.createdAt, cols: ['trade', o.out_trade_no, '',
                                               o.transaction_id || '', o.total,
                                               o.trade_state]});
        }
        for (const r of refunds.values()) {
            rows.push({at: r.createdAt, cols: ['refund', r.out_trade_no, r.out_refund_no,
                                               r.refund_id, r.refund, r.status]});
        }
        // large-mode lines: a fixed time, so that the bill the hash was
        // computed over and the bill downloaded are the same bytes
        const now = `${day}T12:00:00+08:00`;
        const dayRows = rows.filter((r) => c.cstDay(r.at) === day)
            .sort((a, b) => a.at - b.at)
            .map((r) => ({key: r.cols[2] || r.cols[1],
                          cols: [...r.cols, c.rfc3339Cst(r.at)]}));
        const lines = env.tweakStatement('wechat', dayRows, 4, 5,
            (i) => ['trade', `LARGE${String(i).padStart(7, '0')}`, '',
                    `42000${String(i).padStart(23, '0')}`, 100 + (i % 900), 'SUCCESS', now]);
        return env.finishStatement('wechat', BILL_COLUMNS, lines);
    }

    function tradeBill(ctx) {
        const day = queryParams(ctx).get('bill_date');
        if (!day || !env.validDay(day)) {
            return paramError('bill_date must be YYYY-MM-DD');
        }
        const t = env.statementTweaks('wechat');
        // tar_type=GZIP: the file is gzip-ed, and the hash is the gzip's
        const gz = queryParams(ctx).get('tar_type') === 'GZIP';
        const file = gz ? zlib.gzipSync(billCsv(day)) : billCsv(day);
        const hash = crypto.createHash('sha1').update(file).digest('hex');
        return {status: 200, obj: {
            hash_type: 'SHA1',
            hash_value: t.bad_hash ? hash.replace(/^./, (ch) => (ch === '0' ? '1' : '0'))
                                   : hash,
            download_url: `http://127.0.0.1:${opts.port}/_sim/wechat/bill/${day}` +
                (gz ? '?tar_type=GZIP' : ''),
        }};
    }

    function bill(ctx, day) {
        if (!keys) {
            return env.json(503, {error: 'not configured'});
        }
        if (!env.validDay(day)) {
            return env.json(400, {error: 'date must be YYYY-MM-DD'});
        }
        const gz = queryParams(ctx).get('tar_type') === 'GZIP';
        const body = gz ? zlib.gzipSync(billCsv(day)) : billCsv(day);
        const answer = {status: 200, headers: {'Content-Type': gz ? 'application/gzip'
                                                              : 'text/csv; charset=utf-8'},
                        body};
        if (env.statementTweaks('wechat').truncate) {
            answer.truncateAt = Math.floor(Buffer.byteLength(body) * 0.6);
        }
        return answer;
    }

    // Counts an authentic Native order per out_trade_no and refund per
    // out_refund_no as it arrives, whatever the fault mode does with it.
    function countArrival(ctx) {
        const req = env.parseJson(ctx.body);
        if (!env.isObject(req)) {
            return;
        }
        if (ctx.path === '/v3/pay/transactions/native' && typeof req.out_trade_no === 'string') {
            counter('trades', req.out_trade_no).requests++;
        } else if (ctx.path === '/v3/refund/domestic/refunds' &&
                   typeof req.out_refund_no === 'string') {
            counter('refunds', req.out_refund_no).requests++;
        }
    }

    // ---- control: callbacks, platform keys, listing -----------------------------------

    function platformBySerial(serial) {
        return keys.platforms.find((p) => p.serial === serial) || null;
    }

    function getPlatform() {
        if (!keys) {
            return env.json(503, {error: 'not configured'});
        }
        return env.json(200, {serial: platform.serial,
                              serials: keys.platforms.map((p) => p.serial)});
    }

    function setPlatform(ctx) {
        if (!keys) {
            return env.json(503, {error: 'not configured'});
        }
        const req = env.parseJson(ctx.body);
        const p = env.isObject(req) && platformBySerial(req.serial);
        if (!p) {
            return env.json(400, {error: 'serial must be one of ' +
                                  keys.platforms.map((x) => x.serial).join(', ')});
        }
        platform = p;
        return getPlatform();
    }

    function validateNotify(req) {
        const common = c.notifyRequestError(req, 'trade_state', STATES, TAMPERS);
        if (common) {
            return common;
        }
        if (req.timestamp !== undefined && !Number.isInteger(req.timestamp)) {
            return 'timestamp must be an integer (unix seconds)';
        }
        if (req.serial !== undefined && !platformBySerial(req.serial)) {
            return 'serial must be a platform serial (GET /_sim/wechat/platform)';
        }
        if (req.total !== undefined && !(Number.isSafeInteger(req.total) && req.total > 0)) {
            return 'total must be a positive integer (fen)';
        }
        return null;
    }

    // The callback body and headers for one notify request; tampers applied.
    function buildCallback(req, view, now) {
        const tamper = req.tamper || null;
        const plain = transaction(view);
        if (req.total !== undefined) {
            plain.amount.total = req.total;
            if (plain.amount.payer_total !== undefined) {
                plain.amount.payer_total = req.total;
            }
        }
        if (tamper === 'amount') {
            plain.amount.total += 1;
            if (plain.amount.payer_total !== undefined) {
                plain.amount.payer_total += 1;
            }
        } else if (tamper === 'mchid') {
            plain.mchid = WRONG_MCHID;
        } else if (tamper === 'currency') {
            plain.amount.currency = 'USD';
            plain.amount.payer_currency = 'USD';
        }
        const nonce = c.randomAlnum(12);
        const aesKey = tamper === 'apiv3_key' ? Buffer.from(c.randomAlnum(32)) : keys.apiv3Key;
        const state = view.trade_state;
        const envelope = {
            id: crypto.randomUUID(),
            create_time: c.rfc3339Cst(now),
            resource_type: 'encrypt-resource',
            event_type: `TRANSACTION.${state}`,
            summary: state === 'SUCCESS' ? '支付成功' : STATE_DESC[state],
            resource: {
                original_type: 'transaction', algorithm: 'AEAD_AES_256_GCM',
                ciphertext: c.aesGcmEncrypt(aesKey, nonce, 'transaction',
                                            JSON.stringify(plain)),
                associated_data: 'transaction', nonce,
            },
        };
        let body = JSON.stringify(envelope);
        const signer = req.serial === undefined ? platform : platformBySerial(req.serial);
        const ts = String(req.timestamp === undefined ? env.nowSec() : req.timestamp);
        const hdrNonce = c.randomAlnum(32);
        const key = tamper === 'signature' ? keys.wrongKey : signer.privateKey;
        const headers = {
            'Content-Type': 'application/json',
            'Wechatpay-Nonce': hdrNonce,
            'Wechatpay-Serial': tamper === 'serial' ? c.randomHexUpper(40) : signer.serial,
            'Wechatpay-Signature': c.rsaSign(key, `${ts}\n${hdrNonce}\n${body}\n`),
            'Wechatpay-Signature-Type': AUTH_SCHEME,
            'Wechatpay-Timestamp': ts,
        };
        if (tamper === 'body') {    // altered after signing
            body = JSON.stringify(Object.assign({}, envelope, {summary: '支付成功 (altered)'}));
        }
        return {headers, body, plaintext: plain};
    }

    // POST an encrypted, signed TRANSACTION callback to the gateway.
    async function notify(ctx) {
        if (!keys) {
            return env.json(503, {error: 'not configured'});
        }
        const req = env.parseJson(ctx.body);
        const bad = validateNotify(req);
        if (bad) {
            return env.json(400, {error: bad});
        }
        const order = orders.get(req.out_trade_no);
        const url = req.url || (order && order.notify_url);
        if (!url) {
            return env.json(400, {error: 'url required (no notify_url known for the order)'});
        }
        if (!order && req.total === undefined) {
            return env.json(400, {error: 'total required (no such order)'});
        }
        const state = req.trade_state || 'SUCCESS';
        const apply = req.apply === undefined ? !req.tamper : req.apply;
        const now = Date.now();
        // The order as this callback reports it: the stored one when
        // applied, else a copy (an unknown order is never stored).
        let view = order;
        if (!order || !apply) {
            view = Object.assign({}, order || newOrder({
                out_trade_no: req.out_trade_no, description: 'simulated order',
                amount: {total: req.total}}));
        }
        setState(view, state, now);
        const {headers, body} = buildCallback(req, view, now);
        try {
            const answer = await env.postCallback(url, headers, body);
            console.log(`${new Date().toISOString()} wechat notify ${url} ` +
                        `${req.out_trade_no} ${state} -> ${answer.status}`);
            return env.json(200, {status: answer.status, body: answer.body,
                                  sent: {headers, body}});
        } catch (e) {
            console.log(`${new Date().toISOString()} wechat notify ${url} failed: ${e.message}`);
            return env.json(502, {error: `callback failed: ${e.message}`,
                                  sent: {headers, body}});
        }
    }

    // POST /_sim/wechat/refund_notify {out_refund_no, url?}: a signed,
    // encrypted REFUND.SUCCESS callback for that refund (a PROCESSING
    // refund completes first, as it would at WeChat Pay).
    async function refundNotify(ctx) {
        if (!keys) {
            return env.json(503, {error: 'not configured'});
        }
        const req = env.parseJson(ctx.body);
        const r = req && refunds.get(req.out_refund_no);
        if (!r) {
            return env.json(400, {error: 'out_refund_no: no such refund'});
        }
        const order = orders.get(r.out_trade_no);
        const url = req.url || (order && order.notify_url);
        if (!url) {
            return env.json(400, {error: 'url required'});
        }
        if (r.status === 'PROCESSING') {
            r.status = 'SUCCESS';
            r.successAt = Date.now();
        }
        const plain = {mchid: (order && order.mchid) || opts.wechatMchid, out_trade_no: r.out_trade_no,
                       transaction_id: r.transaction_id, out_refund_no: r.out_refund_no,
                       refund_id: r.refund_id, refund_status: r.status,
                       success_time: c.rfc3339Cst(r.successAt || Date.now()),
                       user_received_account: '支付用户零钱',
                       amount: {total: r.total, refund: r.refund,
                                payer_total: r.total, payer_refund: r.refund}};
        const nonce = c.randomAlnum(12);
        const envelope = {
            id: crypto.randomUUID(), create_time: c.rfc3339Cst(Date.now()),
            resource_type: 'encrypt-resource', event_type: `REFUND.${r.status}`,
            summary: '退款成功',
            resource: {original_type: 'refund', algorithm: 'AEAD_AES_256_GCM',
                       ciphertext: c.aesGcmEncrypt(keys.apiv3Key, nonce, 'refund',
                                                   JSON.stringify(plain)),
                       associated_data: 'refund', nonce},
        };
        const body = JSON.stringify(envelope);
        const ts = String(env.nowSec());
        const hdrNonce = c.randomAlnum(32);
        const headers = {
            'Content-Type': 'application/json',
            'Wechatpay-Nonce': hdrNonce,
            'Wechatpay-Serial': platform.serial,
            'Wechatpay-Signature': c.rsaSign(platform.privateKey, `${ts}\n${hdrNonce}\n${body}\n`),
            'Wechatpay-Signature-Type': AUTH_SCHEME,
            'Wechatpay-Timestamp': ts,
        };
        try {
            const answer = await env.postCallback(url, headers, body);
            return env.json(200, {status: answer.status, body: answer.body,
                                  sent: {headers, body}});
        } catch (e) {
            return env.json(502, {error: `callback failed: ${e.message}`});
        }
    }

    function list() {
        return [...orders.values()].map((o) => Object.assign({
            out_trade_no: o.out_trade_no, transaction_id: o.transaction_id,
            total: o.total, currency: o.currency, trade_state: o.trade_state,
            notify_url: o.notify_url, code_url: o.code_url, refunded: o.refundedFen,
        }, counter('trades', o.out_trade_no), {
            refunds: [...refunds.values()].filter((r) => r.out_trade_no === o.out_trade_no)
                .map((r) => Object.assign({
                    out_refund_no: r.out_refund_no, refund_id: r.refund_id,
                    refund: r.refund, status: r.status, reason: r.reason,
                }, counter('refunds', r.out_refund_no))),
        }));
    }

    function reset() {
        orders.clear();
        refunds.clear();
        counters.trades.clear();
        counters.refunds.clear();
        platform = keys ? keys.platforms[0] : null;
    }

    const provider = keys ? {
        prefix: '/v3/',
        routes: [
            {method: 'POST', path: /^\/v3\/pay\/transactions\/native$/, handler: native,
             counts: countArrival},
            {method: 'GET', path: /^\/v3\/pay\/transactions\/out-trade-no\/([^/]+)$/,
             handler: query},
            {method: 'POST', path: /^\/v3\/pay\/transactions\/out-trade-no\/([^/]+)\/close$/,
             handler: close},
            {method: 'POST', path: /^\/v3\/refund\/domestic\/refunds$/, handler: createRefund,
             counts: countArrival},
            {method: 'GET', path: /^\/v3\/refund\/domestic\/refunds\/([^/]+)$/,
             handler: getRefund},
            {method: 'GET', path: /^\/v3\/bill\/tradebill$/, handler: tradeBill},
        ],
        authenticate,
        reply,
        notFound: () => error(404, 'NOT_FOUND', 'no such API'),
        internalError: () => error(500, 'SYSTEM_ERROR', '系统错误'),
        tooLarge: () => error(413, 'PARAM_ERROR', 'body too large'),
    } : {prefix: '/v3/', disabled: true};

    return {
        provider, list, reset,
        control: {
            'POST /_sim/wechat/notify': notify,
            'POST /_sim/wechat/refund_notify': refundNotify,
            'GET /_sim/wechat/platform': getPlatform,
            'POST /_sim/wechat/platform': setPlatform,
        },
        controlPatterns: [{method: 'GET', path: /^\/_sim\/wechat\/bill\/([^/]+)$/,
                           handler: bill}],
    };
};
