// Helpers shared by the Alipay and WeChat Pay simulators (t/sim/alipay.js,
// t/sim/wechat.js): the key directory, RSA signatures, random ids, China
// Standard Time formats, form encoding and yuan amounts.
// Only Node built-ins: no npm dependencies.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

// Both providers write their times in China Standard Time (UTC+8, no DST).
const CST_OFFSET_MS = 8 * 3600 * 1000;
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const SERIAL_RE = /^[0-9A-F]{40}$/;
const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

// The files of scripts/provider-keys.sh DIR, parsed once at start; throws
// with the file name when one is missing or malformed.
function loadKeys(dir) {
    const read = (name) => {
        try {
            return fs.readFileSync(path.join(dir, name));
        } catch (e) {
            throw new Error(`${path.join(dir, name)}: ${e.code || e.message} ` +
                            `(run scripts/provider-keys.sh ${dir})`);
        }
    };
    const privateKey = (name) => crypto.createPrivateKey(read(name));
    const publicKey = (name) => crypto.createPublicKey(read(name));
    const serial = (name) => {
        const s = read(name).toString('utf8').trim();
        if (!SERIAL_RE.test(s)) {
            throw new Error(`${name}: not 40 upper-case hex characters`);
        }
        return s;
    };
    const apiv3Key = read('wechat_apiv3.key');
    if (apiv3Key.length !== 32) {
        throw new Error('wechat_apiv3.key: must be exactly 32 bytes');
    }
    return {
        alipayAppPublic: publicKey('alipay_app_public.pem'),
        alipayPrivate: privateKey('alipay_private.pem'),
        wechatMerchantPublic: publicKey('wechat_merchant_public.pem'),
        wechatMerchantSerial: serial('wechat_merchant_serial'),
        platforms: [1, 2].map((n) => ({
            serial: serial(`wechat_platform${n}_serial`),
            privateKey: privateKey(`wechat_platform${n}_private.pem`),
        })),
        apiv3Key,
        // Signs "bad_signature" answers and "signature" tampers: a valid
        // RSA key, so the signature is well-formed, that is nobody's.
        wrongKey: crypto.generateKeyPairSync('rsa', {modulusLength: 2048}).privateKey,
    };
}

// SHA256withRSA (RSASSA-PKCS1-v1_5) over the UTF-8 bytes, base64.
function rsaSign(key, data) {
    return crypto.sign('sha256', Buffer.from(data, 'utf8'), key).toString('base64');
}

function rsaVerify(publicKey, data, sigB64) {
    if (typeof sigB64 !== 'string' || !BASE64_RE.test(sigB64)) {
        return false;
    }
    try {
        return crypto.verify('sha256', Buffer.from(data, 'utf8'), publicKey,
                             Buffer.from(sigB64, 'base64'));
    } catch (e) {
        return false;
    }
}

// AEAD_AES_256_GCM as WeChat uses it: base64(ciphertext || 16-byte tag).
function aesGcmEncrypt(key, nonce, aad, plaintext) {
    const cipher = crypto.createCipheriv('aes-256-gcm', key, Buffer.from(nonce, 'utf8'));
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return Buffer.concat([ct, cipher.getAuthTag()]).toString('base64');
}

function randomFrom(alphabet, n) {
    let s = '';
    for (let i = 0; i < n; i++) {
        s += alphabet[crypto.randomInt(alphabet.length)];
    }
    return s;
}

const randomAlnum = (n) => randomFrom(ALNUM, n);
const randomDigits = (n) => randomFrom('0123456789', n);
const randomHexUpper = (n) => randomFrom('0123456789ABCDEF', n);

// "2024-05-01 12:00:00" (CST): Alipay's timestamps.
function cstDateTime(ms) {
    return new Date(ms + CST_OFFSET_MS).toISOString().slice(0, 19).replace('T', ' ');
}

function cstDay(ms) {
    return new Date(ms + CST_OFFSET_MS).toISOString().slice(0, 10);
}

// "2024-05-01T12:00:00+08:00": WeChat's times.
function rfc3339Cst(ms) {
    return new Date(ms + CST_OFFSET_MS).toISOString().slice(0, 19) + '+08:00';
}

// Alipay's "yyyy-MM-dd HH:mm:ss" (CST) to epoch ms; NaN when malformed.
function parseCstDateTime(s) {
    const m = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})$/.exec(s);
    if (!m) {
        return NaN;
    }
    const [y, mo, d, h, mi, se] = m.slice(1).map(Number);
    const ms = Date.UTC(y, mo - 1, d, h, mi, se);
    // Date.UTC rolls 2024-02-30 over to March: only exact dates pass.
    return cstDateTime(ms - CST_OFFSET_MS) === s ? ms - CST_OFFSET_MS : NaN;
}

// application/x-www-form-urlencoded to [[name, value], ...]: '+' is a
// space, %XX are UTF-8 bytes. Throws on malformed escapes (rather than
// guessing, as URLSearchParams does with U+FFFD).
function formDecode(text) {
    if (text === '') {
        return [];
    }
    return text.split('&').filter((part) => part !== '').map((part) => {
        const eq = part.indexOf('=');
        const raw = eq < 0 ? [part, ''] : [part.slice(0, eq), part.slice(eq + 1)];
        return raw.map((s) => {
            try {
                return decodeURIComponent(s.replace(/\+/g, ' '));
            } catch (e) {
                throw new Error(`malformed form encoding in ${JSON.stringify(part)}`);
            }
        });
    });
}

function formEncode(pairs) {
    const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
    return pairs.map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
}

// Alipay's string to sign: params without the excluded names and without
// empty values, sorted by name (byte order), "k=v" joined by "&", values
// raw (not URL-encoded).
function canonical(params, exclude) {
    return Object.keys(params)
        .filter((k) => !exclude.includes(k) && params[k] !== '' &&
                params[k] !== undefined && params[k] !== null)
        .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
        .map((k) => `${k}=${params[k]}`)
        .join('&');
}

// "19.99" -> 1999 (fen); null unless exactly 2 decimals. Integers in fen
// so that sums and comparisons are exact.
function parseYuan(s) {
    if (typeof s !== 'string' || !/^\d{1,10}\.\d{2}$/.test(s)) {
        return null;
    }
    const [yuan, fen] = s.split('.');
    return Number(yuan) * 100 + Number(fen);
}

function formatYuan(fen) {
    return `${Math.floor(fen / 100)}.${String(fen % 100).padStart(2, '0')}`;
}

// The checks every /_sim/<provider>/notify request shares: null when they
// pass, else the reason.  statusField names the provider's status field
// (trade_status, trade_state), statuses and tampers its allowed values.
function isObject(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function notifyRequestError(req, statusField, statuses, tampers) {
    if (!isObject(req)) {
        return 'body must be a JSON object';
    }
    if (typeof req.out_trade_no !== 'string' || req.out_trade_no === '') {
        return 'out_trade_no required';
    }
    if (req[statusField] !== undefined && !statuses.includes(req[statusField])) {
        return `${statusField} must be one of ${statuses.join(', ')}`;
    }
    if (req.url !== undefined && !(typeof req.url === 'string' &&
                                   /^http:\/\/[^/]+/.test(req.url))) {
        return 'url must be an http:// URL';
    }
    if (req.apply !== undefined && typeof req.apply !== 'boolean') {
        return 'apply must be true or false';
    }
    if (req.tamper !== undefined && req.tamper !== null && !tampers.includes(req.tamper)) {
        return `tamper must be one of ${tampers.join(', ')} or null`;
    }
    return null;
}

module.exports = {
    loadKeys, rsaSign, rsaVerify, aesGcmEncrypt, randomAlnum, randomDigits,
    randomHexUpper, cstDateTime, cstDay, rfc3339Cst, parseCstDateTime,
    formDecode, formEncode, canonical, parseYuan, formatYuan,
    isObject, notifyRequestError,
};
