// An application in a loop of short transactions, for tests/takeover.rs: each round opens a
// connection with the Node.js mariadb connector (mutual TLS, server verified), runs
// BEGIN; INSERT INTO takeover.t (n, server_id) VALUES (n, @@server_id); COMMIT, and closes it.
// A failed round is retried on a new connection. When the server answers with the
// instant-failover error (4196, message `|text|host:port`), the loop connects to that host:port
// from then on, as an application that follows the error form does (the connector itself does
// not; docs/failover.md). It runs until its standard input is closed.
//
// Output, one line per event, times in ms since the start:
//   COMMIT <n> <server_id> <t>      round n committed, on the server with that @@server_id
//   FAILED <n> <t> <errno|code> <message>
//   FOLLOW <host:port> <t>          the error form named a new target
//   DONE <rounds>
//
// Environment: TAKEOVER_HOST, TAKEOVER_PORT, TAKEOVER_CA, TAKEOVER_CERT, TAKEOVER_KEY,
// TAKEOVER_USER, TAKEOVER_PASSWORD, TAKEOVER_DB. The connector comes from NODE_PATH
// (target/compat/node/node_modules, installed from package-lock.json).
'use strict';

const fs = require('fs');
const mariadb = require('mariadb');

const env = (k) => {
  if (process.env[k] === undefined) throw new Error(`${k} is not set`);
  return process.env[k];
};
const oneLine = (s) => String(s).replace(/\s+/g, ' ');
const started = process.hrtime.bigint();
const now = () => Number((process.hrtime.bigint() - started) / 1000n) / 1000;
// Pause before retrying a failed round: short against the gap being measured, long enough not
// to spin on a refusing server.
const RETRY_MS = 5;

const ssl = {
  ca: fs.readFileSync(env('TAKEOVER_CA')),
  cert: fs.readFileSync(env('TAKEOVER_CERT')),
  key: fs.readFileSync(env('TAKEOVER_KEY')),
  rejectUnauthorized: true,
};
let target = { host: env('TAKEOVER_HOST'), port: Number(env('TAKEOVER_PORT')) };
let stopping = false;
process.stdin.on('end', () => {
  stopping = true;
});
process.stdin.resume();

async function round(n) {
  const c = await mariadb.createConnection({
    ...target,
    user: env('TAKEOVER_USER'),
    password: env('TAKEOVER_PASSWORD'),
    database: env('TAKEOVER_DB'),
    connectTimeout: 10000,
    ssl,
  });
  try {
    await c.beginTransaction();
    await c.query('INSERT INTO t (n, server_id) VALUES (?, @@server_id)', [n]);
    await c.commit();
    const [row] = await c.query('SELECT server_id FROM t WHERE n = ?', [n]);
    return row.server_id;
  } finally {
    await c.end().catch(() => c.destroy());
  }
}

async function main() {
  let n = 0;
  while (!stopping) {
    n += 1;
    try {
      const server = await round(n);
      console.log(`COMMIT ${n} ${server} ${now()}`);
    } catch (e) {
      console.log(`FAILED ${n} ${now()} ${e.errno || e.code} ${oneLine(e.sqlMessage || e.message)}`);
      const m = e.errno === 4196 && /\|([^|:]+):(\d+)$/.exec(e.sqlMessage || '');
      if (m) {
        target = { host: m[1], port: Number(m[2]) };
        console.log(`FOLLOW ${m[1]}:${m[2]} ${now()}`);
      }
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }
  console.log(`DONE ${n}`);
}

main().catch((e) => {
  console.log(`FATAL ${oneLine(e.stack || e)}`);
  process.exitCode = 1;
});
