// Alipay open API (RSA2) for the provider simulator: POST /gateway.do with
// precreate, query, close, refund, refund query and bill URL, and the
// asynchronous trade_status_sync notify. The protocol is described in the
// header of t/sim/sim.js; this file is required from there.
'use strict';

const c = require('./common');

const PAID = ['TRADE_SUCCESS', 'TRADE_FINISHED'];
const STATUSES = ['WAIT_BUYER_PAY', 'TRADE_SUCCESS', 'TRADE_CLOSED', 'TRADE_FINISHED'];
const TAMPERS = ['signature', 'amount', 'app_id', 'body', 'out_trade_no'];
const MAX_TIMESTAMP_SKEW_MS = 15 * 60 * 1000;
const BILL_COLUMNS = ['type', 'out_trade_no', 'out_request_no', 'trade_no',
                      'amount_yuan', 'status', 'time'];
const WRONG_APP_ID = '2021000000009999';
const ALIPAY_BILL_COLUMNS = ['支付宝交易号', '商户订单号', '业务类型', '商品名称', '创建时间',
                             '完成时间', '订单金额（元）', '退款批次号/请求号', '交易状态'];

// GBK for the characters of the bill's fixed text (Node has no GBK
// encoder); others become "?".
const GBK = {
    '业': 'd2b5', '交': 'bdbb', '付': 'b8b6', '元': 'd4aa', '出': 'b3f6', '列': 'c1d0',
    '创': 'b4b4', '务': 'cef1', '单': 'b5a5', '号': 'bac5', '合': 'bacf', '名': 'c3fb',
    '咖': 'bfa7', '品': 'c6b7', '商': 'c9cc', '啡': 'b7c8', '型': 'd0cd', '始': 'cabc',
    '完': 'cdea', '宝': 'b1a6', '导': 'b5bc', '年': 'c4ea', '建': 'bda8', '态': 'ccac',
    '总': 'd7dc', '成': 'b3c9', '户': 'bba7', '批': 'c5fa', '支': 'd6a7', '日': 'c8d5',
    '时': 'cab1', '明': 'c3f7', '易': 'd2d7', '月': 'd4c2', '期': 'c6da', '束': 'caf8',
    '查': 'b2e9', '次': 'b4ce', '款': 'bfee', '止': 'd6b9', '求': 'c7f3', '汇': 'bbe3',
    '状': 'd7b4', '称': 'b3c6', '笔': 'b1ca', '类': 'c0e0', '细': 'cfb8', '终': 'd6d5',
    '结': 'bde1', '茶': 'b2e8', '表': 'b1ed', '计': 'bcc6', '订': 'b6a9', '询': 'd1af',
    '请': 'c7eb', '账': 'd5cb', '起': 'c6f0', '退': 'cdcb', '金': 'bdf0', '间': 'bce4',
    '额': 'b6ee', '（': 'a3a8', '）': 'a3a9', '：': 'a3ba',
};

function gbk(s) {
    const out = [];
    for (const ch of s) {
        const cp = ch.codePointAt(0);
        if (cp < 0x80) {
            out.push(cp);
        } else {
            const hex = GBK[ch] || '3f';
            for (let i = 0; i < hex.length; i += 2) {
                out.push(parseInt(hex.slice(i, i + 2), 16));
            }
        }
    }
    return Buffer.from(out);
}

// A zip of deflated files: [[name, data, damage]...].
function zipEntries(entries) {
    const parts = [];
    const centrals = [];
    let offset = 0;
    for (const [name, data, damage] of entries) {
        const one = zipOne(name, data, damage, offset);
        parts.push(one.local);
        centrals.push(one.central);
        offset += one.local.length;
    }
    const dir = Buffer.concat(centrals);
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(entries.length, 8);
    end.writeUInt16LE(entries.length, 10);
    end.writeUInt32LE(dir.length, 12);
    end.writeUInt32LE(offset, 16);
    return Buffer.concat([...parts, dir, end]);
}

// One deflated entry: {local: header + name + data, central: its record}.
function zipOne(name, data, damage, offset) {
    const zlib = require('zlib');
    const body = Buffer.from(zlib.deflateRawSync(data));
    if (damage) {
        for (let i = Math.floor(body.length / 2); i < body.length - 4; i += 7) {
            body[i] ^= 0x5a;
        }
    }
    const crc = zlib.crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0, 6);
    local.writeUInt16LE(8, 8);
    local.writeUInt32LE(0, 10);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt32LE(0, 12);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(body.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    return {local: Buffer.concat([local, name, body]),
            central: Buffer.concat([central, name])};
}

// env: what sim.js shares (opts, keys or null, json, parseJson, isObject,
// validDay, csvField, postCallback, KEY_RE).
module.exports = function createAlipay(env) {
    const {opts, keys} = env;
    const trades = new Map();      // out_trade_no -> trade
    const counters = {trades: new Map(), refunds: new Map()};
    // Constant per run, like a real merchant's seller id.
    const sellerId = '2088' + c.randomDigits(12);

    // ---- answers -----------------------------------------------------------

    // Business results are HTTP 200 whatever the code, as on real Alipay.
    const success = (fields) => ({status: 200, obj: Object.assign(
        {code: '10000', msg: 'Success'}, fields)});
    const invalid = (subCode, subMsg) => ({status: 200, obj: {
        code: '40002', msg: 'Invalid Arguments', sub_code: subCode, sub_msg: subMsg}});
    const failed = (subCode, subMsg) => ({status: 200, obj: {
        code: '40004', msg: 'Business Failed', sub_code: subCode, sub_msg: subMsg}});

    function counter(kind, key) {
        const map = counters[kind];
        if (!map.has(key)) {
            map.set(key, {requests: 0, duplicates: 0, queries: 0});
        }
        return map.get(key);
    }

    // out_request_no is unique per trade only, so refunds count per pair.
    const refundKey = (outTradeNo, outRequestNo) => `${outTradeNo}\n${outRequestNo}`;

    // ---- request parameters and authentication -------------------------------

    // The parameters of the query string and the form body together,
    // decoded once per request (authenticate, counting and the handler all
    // need them): {params} or {error: answer}.
    function requestParams(ctx) {
        if (!ctx.alipay) {
            ctx.alipay = decodeRequest(ctx);
        }
        return ctx.alipay;
    }

    function decodeRequest(ctx) {
        const q = ctx.req.url.indexOf('?');
        const query = q < 0 ? '' : ctx.req.url.slice(q + 1);
        const body = ctx.body ? ctx.body.toString('utf8') : '';
        const type = String(ctx.req.headers['content-type'] || '').toLowerCase();
        if (body !== '' && !type.startsWith('application/x-www-form-urlencoded')) {
            return {error: invalid('isv.invalid-content-type',
                                   'Content-Type must be application/x-www-form-urlencoded')};
        }
        let pairs;
        try {
            pairs = c.formDecode(query).concat(c.formDecode(body));
        } catch (e) {
            return {error: invalid('isv.invalid-parameter', e.message)};
        }
        const params = Object.create(null);
        for (const [k, v] of pairs) {
            // Which of two values was signed would be a guess: refuse.
            if (k in params) {
                return {error: invalid('isv.invalid-parameter', `duplicate parameter ${k}`)};
            }
            params[k] = v;
        }
        return {params};
    }

    const REQUIRED = {app_id: 'isv.missing-app-id', method: 'isv.missing-method',
                      charset: 'isv.missing-charset', sign_type: 'isv.missing-signature-type',
                      sign: 'isv.missing-signature', timestamp: 'isv.missing-timestamp',
                      version: 'isv.missing-version'};

    // null when the request is authentic, else the 40002 answer.
    function authenticate(ctx) {
        const {params, error} = requestParams(ctx);
        if (error) {
            return error;
        }
        for (const [name, subCode] of Object.entries(REQUIRED)) {
            if (!params[name]) {
                return invalid(subCode, `missing ${name}`);
            }
        }
        if (params.app_id !== opts.alipayAppId) {
            return invalid('isv.invalid-app-id', `unknown app_id ${params.app_id}`);
        }
        if (params.sign_type !== 'RSA2') {
            return invalid('isv.invalid-signature-type', 'sign_type must be RSA2');
        }
        if (params.charset.toLowerCase() !== 'utf-8') {
            return invalid('isv.invalid-charset', 'charset must be utf-8');
        }
        if (params.format !== undefined && params.format.toUpperCase() !== 'JSON') {
            return invalid('isv.invalid-format', 'format must be JSON');
        }
        if (params.version !== '1.0') {
            return invalid('isv.invalid-version', 'version must be 1.0');
        }
        // sign_type is part of the signed string on requests (not on notifies).
        if (!c.rsaVerify(keys.alipayAppPublic, c.canonical(params, ['sign']), params.sign)) {
            return invalid('isv.invalid-signature', 'signature does not verify');
        }
        const ts = c.parseCstDateTime(params.timestamp);
        if (Number.isNaN(ts) || Math.abs(Date.now() - ts) > MAX_TIMESTAMP_SKEW_MS) {
            return invalid('isv.invalid-timestamp',
                           'timestamp must be yyyy-MM-dd HH:mm:ss (UTC+8) within 15 minutes');
        }
        return null;
    }

    // The biz_content object, or an answer when it is not one.
    function bizContent(params) {
        if (params.biz_content === undefined) {
            return {error: invalid('isv.missing-biz-content', 'missing biz_content')};
        }
        const biz = env.parseJson(params.biz_content);
        return env.isObject(biz) ? {biz}
            : {error: invalid('isv.invalid-biz-content', 'biz_content must be a JSON object')};
    }

    // ---- validation ------------------------------------------------------------

    function needKey(biz, name) {
        return typeof biz[name] === 'string' && env.KEY_RE.test(biz[name]) ? null
            : invalid('isv.invalid-parameter',
                      `${name} must be 1-64 characters of A-Z a-z 0-9 _ . : -`);
    }

    function needYuan(biz, name) {
        return c.parseYuan(biz[name]) > 0 ? null
            : invalid('isv.invalid-parameter',
                      `${name} must be a positive yuan amount with 2 decimals, like "19.99"`);
    }

    function needText(biz, name) {
        return typeof biz[name] === 'string' && biz[name] !== '' ? null
            : invalid('isv.invalid-parameter', `${name} must be a non-empty string`);
    }

    function validNotifyUrl(url) {
        return url === undefined || /^https?:\/\/[^/]+/.test(url);
    }

    // A trade by out_trade_no, or by trade_no as Alipay also allows.
    function findTrade(biz) {
        if (typeof biz.out_trade_no === 'string') {
            return trades.get(biz.out_trade_no);
        }
        if (typeof biz.trade_no === 'string') {
            return [...trades.values()].find((t) => t.trade_no === biz.trade_no);
        }
        return undefined;
    }

    function needTradeKey(biz) {
        return typeof biz.out_trade_no === 'string' || typeof biz.trade_no === 'string'
            ? null : invalid('isv.missing-out-trade-no', 'out_trade_no or trade_no required');
    }

    const notExist = () => failed('ACQ.TRADE_NOT_EXIST', '交易不存在');

    // ---- trades ----------------------------------------------------------------

    // 28 digits like real trade numbers: the CST day, then random digits.
    function newTradeNo() {
        return c.cstDay(Date.now()).replace(/-/g, '') + c.randomDigits(20);
    }

    function newTrade(outTradeNo, fen, subject, notifyUrl) {
        return {out_trade_no: outTradeNo, trade_no: newTradeNo(), fen, subject,
                status: 'WAIT_BUYER_PAY', notify_url: notifyUrl || null,
                qr_code: 'https://qr.alipay.com/bax0' +
                    c.randomAlnum(20).toLowerCase(),
                createdAt: Date.now(), paidAt: null, buyer_id: null,
                buyer_logon_id: null, refunds: new Map(), refundedFen: 0};
    }

    // Sets a trade's status; a first payment gets its buyer and time.
    function setStatus(trade, status, now) {
        trade.status = status;
        if (PAID.includes(status) && !trade.paidAt) {
            trade.paidAt = now;
            trade.buyer_id = '2088' + c.randomDigits(12);
            trade.buyer_logon_id = c.randomAlnum(3).toLowerCase() + '***@example.com';
        }
    }

    function precreate(ctx, biz, params) {
        const bad = needKey(biz, 'out_trade_no') || needYuan(biz, 'total_amount') ||
            needText(biz, 'subject') ||
            (biz.timeout_express !== undefined &&
             !(typeof biz.timeout_express === 'string' &&
               /^\d{1,4}[mhdc]$/.test(biz.timeout_express))
                ? invalid('isv.invalid-parameter', 'timeout_express must be like "15m"')
                : null) ||
            (validNotifyUrl(params.notify_url) ? null
                : invalid('isv.invalid-notify-url', 'notify_url must be an http(s) URL'));
        if (bad) {
            return bad;
        }
        const fen = c.parseYuan(biz.total_amount);
        const answer = (trade) => success(Object.assign(
            {out_trade_no: trade.out_trade_no, qr_code: trade.qr_code},
            // Real answers carry no amount; in amount_mismatch mode one is
            // added so that reply() can report it wrong.
            ctx.mode === 'amount_mismatch' ? {total_amount: c.formatYuan(trade.fen)} : {}));
        let trade = trades.get(biz.out_trade_no);
        if (trade) {
            if (PAID.includes(trade.status)) {
                return failed('ACQ.TRADE_HAS_SUCCESS', '交易已被支付');
            }
            if (trade.status === 'TRADE_CLOSED') {
                return failed('ACQ.TRADE_HAS_CLOSE', '交易已经关闭');
            }
            if (trade.fen !== fen) {
                return failed('ACQ.CONTEXT_INCONSISTENT', '交易信息被篡改');
            }
            counter('trades', trade.out_trade_no).duplicates++;
            return answer(trade);
        }
        if (ctx.mode === 'decline') {
            return failed('ACQ.TOTAL_FEE_EXCEED', '订单金额超过限额');
        }
        trade = newTrade(biz.out_trade_no, fen, biz.subject, params.notify_url);
        trades.set(trade.out_trade_no, trade);
        return answer(trade);
    }

    function query(ctx, biz) {
        const bad = needTradeKey(biz);
        if (bad) {
            return bad;
        }
        const trade = findTrade(biz);
        if (!trade) {
            return notExist();
        }
        counter('trades', trade.out_trade_no).queries++;
        return success(Object.assign(
            {trade_no: trade.trade_no, out_trade_no: trade.out_trade_no,
             trade_status: trade.status, total_amount: c.formatYuan(trade.fen)},
            trade.paidAt ? {buyer_logon_id: trade.buyer_logon_id,
                            buyer_user_id: trade.buyer_id,
                            send_pay_date: c.cstDateTime(trade.paidAt)} : {}));
    }

    function close(ctx, biz) {
        const bad = needTradeKey(biz);
        if (bad) {
            return bad;
        }
        const trade = findTrade(biz);
        if (!trade) {
            return notExist();
        }
        if (PAID.includes(trade.status)) {
            return failed('ACQ.TRADE_STATUS_ERROR', '交易状态不合法');
        }
        trade.status = 'TRADE_CLOSED';
        return success({trade_no: trade.trade_no, out_trade_no: trade.out_trade_no});
    }

    function refund(ctx, biz) {
        const outRequestNo = biz.out_request_no === undefined ? biz.out_trade_no
            : biz.out_request_no;
        const bad = needKey(biz, 'out_trade_no') || needYuan(biz, 'refund_amount') ||
            needKey({out_request_no: outRequestNo}, 'out_request_no') ||
            (biz.refund_reason !== undefined && typeof biz.refund_reason !== 'string'
                ? invalid('isv.invalid-parameter', 'refund_reason must be a string') : null);
        if (bad) {
            return bad;
        }
        const fen = c.parseYuan(biz.refund_amount);
        const trade = trades.get(biz.out_trade_no);
        if (!trade) {
            return notExist();
        }
        const existing = trade.refunds.get(outRequestNo);
        if (existing) {
            if (existing.fen !== fen) {
                return failed('ACQ.CONTEXT_INCONSISTENT', '退款请求信息不一致');
            }
            counter('refunds', refundKey(trade.out_trade_no, outRequestNo)).duplicates++;
            return success(Object.assign({}, existing.answer, {fund_change: 'N'}));
        }
        if (trade.status !== 'TRADE_SUCCESS') {
            return failed('ACQ.TRADE_STATUS_ERROR', '交易状态不合法');
        }
        if (trade.refundedFen + fen > trade.fen) {
            return failed('ACQ.REFUND_AMT_NOT_EQUAL_TOTAL', '退款金额超限');
        }
        const now = Date.now();
        trade.refundedFen += fen;
        const rec = {out_request_no: outRequestNo, fen, reason: biz.refund_reason || null,
                     createdAt: now};
        rec.answer = {trade_no: trade.trade_no, out_trade_no: trade.out_trade_no,
                      buyer_logon_id: trade.buyer_logon_id, fund_change: 'Y',
                      refund_fee: c.formatYuan(trade.refundedFen),
                      gmt_refund_pay: c.cstDateTime(now)};
        trade.refunds.set(outRequestNo, rec);
        return success(rec.answer);
    }

    function refundQuery(ctx, biz) {
        const bad = needTradeKey(biz) || needKey(biz, 'out_request_no');
        if (bad) {
            return bad;
        }
        const trade = findTrade(biz);
        if (!trade) {
            return notExist();
        }
        const rec = trade.refunds.get(biz.out_request_no);
        const ids = {out_trade_no: trade.out_trade_no, out_request_no: biz.out_request_no};
        if (!rec) {
            return success(ids);    // what real Alipay answers: no refund_status
        }
        counter('refunds', refundKey(trade.out_trade_no, rec.out_request_no)).queries++;
        return success(Object.assign({trade_no: trade.trade_no}, ids, {
            refund_amount: c.formatYuan(rec.fen), total_amount: c.formatYuan(trade.fen),
            refund_status: 'REFUND_SUCCESS', gmt_refund_pay: c.cstDateTime(rec.createdAt),
        }));
    }

    function billUrl(ctx, biz) {
        if (!['trade', 'signcustomer'].includes(biz.bill_type)) {
            return invalid('isv.invalid-parameter', 'bill_type must be trade');
        }
        if (typeof biz.bill_date !== 'string' || !env.validDay(biz.bill_date)) {
            return invalid('isv.invalid-parameter', 'bill_date must be YYYY-MM-DD');
        }
        return success({bill_download_url:
            `http://127.0.0.1:${opts.port}/_sim/alipay/bill/${biz.bill_date}.zip`});
    }

    const HANDLERS = {
        'alipay.trade.precreate': precreate,
        'alipay.trade.query': query,
        'alipay.trade.close': close,
        'alipay.trade.refund': refund,
        'alipay.trade.fastpay.refund.query': refundQuery,
        'alipay.data.dataservice.bill.downloadurl.query': billUrl,
    };

    function gateway(ctx) {
        const {params} = requestParams(ctx);
        const handler = Object.prototype.hasOwnProperty.call(HANDLERS, params.method)
            ? HANDLERS[params.method] : null;
        if (!handler) {
            return failed('isv.invalid-method', `unknown method ${params.method}`);
        }
        const {biz, error} = bizContent(params);
        return error || handler(ctx, biz, params);
    }

    // Counts an authentic precreate per out_trade_no and refund per
    // out_request_no as it arrives, whatever the fault mode does with it.
    function countArrival(ctx) {
        const {params} = requestParams(ctx);
        const {biz} = bizContent(params);
        if (!biz || typeof biz.out_trade_no !== 'string') {
            return;
        }
        if (params.method === 'alipay.trade.precreate') {
            counter('trades', biz.out_trade_no).requests++;
        } else if (params.method === 'alipay.trade.refund') {
            counter('refunds', refundKey(biz.out_trade_no,
                                         biz.out_request_no || biz.out_trade_no)).requests++;
        }
    }

    // ---- responses ---------------------------------------------------------------

    // "<method with _>_response" for known methods, else "error_response".
    function responseName(ctx) {
        const {params} = requestParams(ctx);
        const m = params && params.method;
        return typeof m === 'string' && Object.prototype.hasOwnProperty.call(HANDLERS, m)
            ? `${m.replace(/\./g, '_')}_response` : 'error_response';
    }

    // {"<name>":INNER,"sign":"..."}, signed over the exact INNER text.
    function reply(ctx, answer) {
        let obj = answer.obj;
        if (ctx.mode === 'amount_mismatch' && c.parseYuan(obj.total_amount) !== null) {
            obj = Object.assign({}, obj, {
                total_amount: c.formatYuan(c.parseYuan(obj.total_amount) + 1)});
        }
        const inner = JSON.stringify(obj);
        const key = ctx.mode === 'bad_signature' ? keys.wrongKey : keys.alipayPrivate;
        return {status: answer.status,
                body: `{"${responseName(ctx)}":${inner},"sign":"${c.rsaSign(key, inner)}"}`,
                headers: {'Content-Type': 'application/json;charset=utf-8'}};
    }

    const systemError = (status, subCode, subMsg) => ({status, obj: {
        code: '20000', msg: 'Service Currently Unavailable', sub_code: subCode,
        sub_msg: subMsg}});

    // ---- control: bill file, notify, listing ----------------------------------------

    // The day's (CST) trades and refunds, unsigned text/csv.
    function bill(ctx, day) {
        if (!keys) {
            return env.json(503, {error: 'not configured'});
        }
        if (!env.validDay(day)) {
            return env.json(400, {error: 'date must be YYYY-MM-DD'});
        }
        const rows = [];
        for (const t of trades.values()) {
            rows.push({at: t.createdAt, cols: ['trade', t.out_trade_no, '', t.trade_no,
                                               c.formatYuan(t.fen), t.status]});
            for (const r of t.refunds.values()) {
                rows.push({at: r.createdAt, cols: ['refund', t.out_trade_no, r.out_request_no,
                                                   t.trade_no, c.formatYuan(r.fen),
                                                   'REFUND_SUCCESS']});
            }
        }
        const lines = rows.filter((r) => c.cstDay(r.at) === day)
            .sort((a, b) => a.at - b.at)
            .map((r) => [...r.cols, c.cstDateTime(r.at)].map(env.csvField).join(','));
        return {status: 200, headers: {'Content-Type': 'text/csv; charset=utf-8'},
                body: [BILL_COLUMNS.join(','), ...lines].map((l) => `${l}\n`).join('')};
    }

    // The real trade bill: a zip of one GBK CSV (业务明细), "#" lines
    // around the table; amounts in yuan, refunds negative.  Tweaks from
    // POST /_sim/statement {"provider":"alipay",...}: the common ones, and
    // bad_zip (deflate data damaged), bad_gbk (bytes that are not GBK).
    function billZip(ctx, day) {
        if (!keys) {
            return env.json(503, {error: 'not configured'});
        }
        if (!env.validDay(day)) {
            return env.json(400, {error: 'date must be YYYY-MM-DD'});
        }
        const rows = [];
        for (const t of trades.values()) {
            rows.push({at: t.createdAt, key: t.out_trade_no,
                       cols: [t.trade_no, t.out_trade_no, '交易', t.subject || '',
                              c.cstDateTime(t.createdAt), c.cstDateTime(t.createdAt),
                              t.fen, '', t.status]});
            for (const r of t.refunds.values()) {
                rows.push({at: r.createdAt, key: r.out_request_no,
                           cols: [t.trade_no, t.out_trade_no, '退款', t.subject || '',
                                  c.cstDateTime(r.createdAt), c.cstDateTime(r.createdAt),
                                  -r.fen, r.out_request_no, 'REFUND_SUCCESS']});
            }
        }
        const now = `${day} 12:00:00`;     // large mode: the same bytes each time
        const dayRows = rows.filter((r) => c.cstDay(r.at) === day).sort((a, b) => a.at - b.at);
        const lines = env.tweakStatement('alipay', dayRows, 6, 8,
            (i) => [`2026${String(i).padStart(24, '0')}`, `LARGE${String(i).padStart(7, '0')}`,
                    '交易', 'Tea', now, now, 100 + (i % 900), '', 'TRADE_SUCCESS']);
        const t = env.statementTweaks('alipay');
        const header = ALIPAY_BILL_COLUMNS.slice();
        if (t.columns === 'wrong') {
            header.reverse();
        }
        const yuan = (v) => (typeof v === 'number'
            ? (v < 0 ? '-' : '') + c.formatYuan(Math.abs(v)) : v);
        const text = [
            '#支付宝业务明细查询',
            `#账号：[${sellerId}0156]`,
            `#起始日期：[${day} 00:00:00]   终止日期：[${day} 23:59:59]`,
            '#-----------------------------------------业务明细列表----------------------------------------',
            header.join(','),
            ...lines.map((cols) => cols.map((v, i) => env.csvField(i === 6 ? yuan(v) : v)).join(',')),
            '#-----------------------------------------业务明细列表结束------------------------------------',
            `#交易合计：${lines.length}笔`,
            `#导出时间：[${now}]`,
        ].map((l) => `${l}\r\n`).join('');
        let data = gbk(text);
        if (t.bad_gbk) {
            const i = data.indexOf(0x0a) + 1;
            data = Buffer.concat([data.subarray(0, i), Buffer.from([0xff, 0xff, 0x0d, 0x0a]),
                                  data.subarray(i)]);
        }
        // as on real Alipay, a summary (汇总) entry besides the details;
        // first here, so that a reader must skip it
        const base = `${sellerId}0156_${day.replace(/-/g, '')}`;
        const summary = gbk(`#支付宝业务明细查询(汇总)\r\n交易合计：${lines.length}笔\r\n`);
        const zip = zipEntries([[gbk(`${base}_业务明细(汇总).csv`), summary, false],
                                [gbk(`${base}_业务明细.csv`), data, t.bad_zip]]);
        const answer = {status: 200, headers: {'Content-Type': 'application/zip'}, body: zip};
        if (t.truncate) {
            answer.truncateAt = Math.floor(zip.length * 0.6);
        }
        return answer;
    }

    function validateNotify(req) {
        const common = c.notifyRequestError(req, 'trade_status', STATUSES, TAMPERS);
        if (common) {
            return common;
        }
        if (req.total_amount !== undefined && c.parseYuan(req.total_amount) === null) {
            return 'total_amount must be a yuan string with 2 decimals, like "19.99"';
        }
        return null;
    }

    // POST a trade_status_sync notify, form-encoded and RSA2-signed like
    // real Alipay's, to the gateway; resolves to its answer.
    async function notify(ctx) {
        if (!keys) {
            return env.json(503, {error: 'not configured'});
        }
        const req = env.parseJson(ctx.body);
        const bad = validateNotify(req);
        if (bad) {
            return env.json(400, {error: bad});
        }
        const trade = trades.get(req.out_trade_no);
        const url = req.url || (trade && trade.notify_url);
        if (!url) {
            return env.json(400, {error: 'url required (no notify_url known for the trade)'});
        }
        if (!trade && req.total_amount === undefined) {
            return env.json(400, {error: 'total_amount required (no such trade)'});
        }
        const status = req.trade_status || 'TRADE_SUCCESS';
        const tamper = req.tamper || null;
        const apply = req.apply === undefined ? !tamper : req.apply;
        const now = Date.now();
        // The trade as this notify reports it: the stored one when applied,
        // else a copy (an unknown trade is never stored).
        let view = trade;
        if (!trade || !apply) {
            view = Object.assign(trade ? {} : newTrade(req.out_trade_no,
                                                       c.parseYuan(req.total_amount),
                                                       'simulated trade', null),
                                 trade || {});
        }
        setStatus(view, status, now);
        const paid = PAID.includes(status);
        let amount = req.total_amount === undefined ? c.formatYuan(view.fen) : req.total_amount;
        if (tamper === 'amount') {
            amount = c.formatYuan(c.parseYuan(amount) + 100);
        }
        const appId = tamper === 'app_id' ? WRONG_APP_ID : opts.alipayAppId;
        const pairs = [
            ['gmt_create', c.cstDateTime(view.createdAt)],
            ['charset', 'utf-8'],
            ['notify_time', c.cstDateTime(now)],
            ['notify_type', 'trade_status_sync'],
            ['notify_id', c.cstDay(now).replace(/-/g, '') + c.randomDigits(26)],
            ['app_id', appId],
            ['auth_app_id', appId],
            ['trade_no', view.trade_no],
            ['out_trade_no', tamper === 'out_trade_no'
                ? `UNKNOWN-${c.randomAlnum(12)}` : view.out_trade_no],
            ['total_amount', amount],
            ...(paid ? [['receipt_amount', amount], ['buyer_pay_amount', amount],
                        ['buyer_id', view.buyer_id]] : []),
            ['seller_id', sellerId],
            ['trade_status', status],
            ['subject', view.subject],
            ...(paid ? [['gmt_payment', c.cstDateTime(view.paidAt)]] : []),
            ['version', '1.0'],
        ];
        const params = Object.fromEntries(pairs);
        const key = tamper === 'signature' ? keys.wrongKey : keys.alipayPrivate;
        // Notifies are signed WITHOUT sign_type (unlike requests).
        const sign = c.rsaSign(key, c.canonical(params, ['sign', 'sign_type']));
        pairs.push(['sign_type', 'RSA2'], ['sign', sign]);
        if (tamper === 'body') {    // altered after signing
            pairs.find((p) => p[0] === 'total_amount')[1] =
                c.formatYuan(c.parseYuan(amount) + 100);
        }
        const body = c.formEncode(pairs);
        const headers = {'Content-Type': 'application/x-www-form-urlencoded;charset=utf-8'};
        try {
            const answer = await env.postCallback(url, headers, body);
            console.log(`${new Date().toISOString()} alipay notify ${url} ` +
                        `${req.out_trade_no} ${status} -> ${answer.status}`);
            return env.json(200, {status: answer.status, body: answer.body,
                                  sent: {headers, body}});
        } catch (e) {
            console.log(`${new Date().toISOString()} alipay notify ${url} failed: ${e.message}`);
            return env.json(502, {error: `callback failed: ${e.message}`,
                                  sent: {headers, body}});
        }
    }

    function list() {
        return [...trades.values()].map((t) => Object.assign({
            out_trade_no: t.out_trade_no, trade_no: t.trade_no,
            total_amount: c.formatYuan(t.fen), subject: t.subject, trade_status: t.status,
            notify_url: t.notify_url, qr_code: t.qr_code,
            refunded_amount: c.formatYuan(t.refundedFen),
        }, counter('trades', t.out_trade_no), {
            refunds: [...t.refunds.values()].map((r) => Object.assign({
                out_request_no: r.out_request_no, refund_amount: c.formatYuan(r.fen),
                refund_reason: r.reason, refund_status: 'REFUND_SUCCESS',
            }, counter('refunds', refundKey(t.out_trade_no, r.out_request_no)))),
        }));
    }

    function reset() {
        trades.clear();
        counters.trades.clear();
        counters.refunds.clear();
    }

    const provider = keys ? {
        prefix: '/gateway.do',
        routes: [
            {method: 'POST', path: /^\/gateway\.do$/, handler: gateway, counts: countArrival},
        ],
        authenticate,
        reply,
        notFound: () => systemError(404, 'isp.invalid-path', 'POST /gateway.do only'),
        internalError: () => systemError(500, 'isp.unknow-error', '系统繁忙'),
        tooLarge: () => systemError(413, 'isv.invalid-parameter', 'body too large'),
    } : {prefix: '/gateway.do', disabled: true};

    return {
        provider, list, reset,
        control: {'POST /_sim/alipay/notify': notify},
        controlPatterns: [{method: 'GET', path: /^\/_sim\/alipay\/bill\/([^/]+)\.zip$/,
                           handler: billZip},
                          {method: 'GET', path: /^\/_sim\/alipay\/bill\/([^/]+)$/,
                           handler: bill}],
    };
};
