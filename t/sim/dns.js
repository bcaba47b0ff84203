#!/usr/bin/env node
// A tiny DNS server for the tests (Node, built-in modules only): answers
// A queries from a fixed map, nothing for other types, NXDOMAIN for
// unknown names.
//
//   node dns.js --port P --map name=1.2.3.4,5.6.7.8 [--map ...]
'use strict';

const dgram = require('dgram');

const args = process.argv.slice(2);
let port = 0;
const map = {};
for (let i = 0; i < args.length; i++) {
    if (args[i] === '--port') port = +args[++i];
    else if (args[i] === '--map') {
        const [name, ips] = args[++i].split('=');
        map[name.toLowerCase()] = ips.split(',');
    }
}

const sock = dgram.createSocket('udp4');
sock.on('message', (msg, rinfo) => {
    if (msg.length < 12) return;
    let off = 12;
    const labels = [];
    while (off < msg.length && msg[off] !== 0) {
        const n = msg[off];
        labels.push(msg.slice(off + 1, off + 1 + n).toString());
        off += n + 1;
    }
    off++;
    const qtype = msg.readUInt16BE(off);
    const question = msg.slice(12, off + 4);
    const name = labels.join('.').toLowerCase();
    const ips = map[name];
    const answers = [];
    if (ips && qtype === 1) {
        for (const ip of ips) {
            const a = Buffer.alloc(16);
            a.writeUInt16BE(0xc00c, 0);     // the name in the question
            a.writeUInt16BE(1, 2);          // A
            a.writeUInt16BE(1, 4);          // IN
            a.writeUInt32BE(5, 6);          // TTL
            a.writeUInt16BE(4, 10);
            ip.split('.').forEach((b, i) => { a[12 + i] = +b; });
            answers.push(a);
        }
    }
    const h = Buffer.alloc(12);
    msg.copy(h, 0, 0, 2);                   // id
    h.writeUInt16BE(0x8180 | (ips ? 0 : 3), 2);
    h.writeUInt16BE(1, 4);
    h.writeUInt16BE(answers.length, 6);
    sock.send(Buffer.concat([h, question, ...answers]), rinfo.port, rinfo.address);
});
sock.bind(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
