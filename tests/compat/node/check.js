// Compatibility checks for Node.js mysql2 through portcullis.
//
// Connection details come from the COMPAT_* environment variables that scripts/compat sets;
// every check prints `CHECK <name> <PASS|FAIL|NA> <detail>`. mysql2 is installed by
// scripts/compat (npm ci) into target/compat/node and found through NODE_PATH.
'use strict';

const fs = require('fs');
const mysql = require('mysql2/promise');

const PATTERN = '0123456789abcdef';
const env = (k) => {
  if (process.env[k] === undefined) throw new Error(`${k} is not set`);
  return process.env[k];
};
let failed = false;

function connect(user, password, port, cert, key) {
  return mysql.createConnection({
    host: env('COMPAT_HOST'),
    port,
    user,
    password,
    database: env('COMPAT_DB'),
    connectTimeout: 30000,
    ssl: {
      ca: fs.readFileSync(env('COMPAT_CA')),
      cert: fs.readFileSync(cert),
      key: fs.readFileSync(key),
      rejectUnauthorized: true,
    },
  });
}

const port = Number(env('COMPAT_PORT'));
const app = () => connect(env('COMPAT_USER'), env('COMPAT_PASSWORD'), port, env('COMPAT_CERT'), env('COMPAT_KEY'));
const oneLine = (s) => String(s).replace(/\s+/g, ' ');
const describe = (e) => (e.errno !== undefined ? `${e.errno} ${e.message}` : `client error: ${e.code || ''} ${e.message}`);

async function report(name, fn, naReason) {
  try {
    console.log(`CHECK ${name} PASS ${oneLine(await fn())}`);
  } catch (e) {
    if (naReason) {
      console.log(`CHECK ${name} NA ${oneLine(describe(e))} (${naReason})`);
    } else {
      failed = true;
      console.log(`CHECK ${name} FAIL ${oneLine(describe(e))}`);
    }
  }
}

// With: runs fn(conn) on a new connection and closes it.
async function withApp(fn) {
  const c = await app();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

function refused(code, ...args) {
  return async () => {
    let c;
    try {
      c = await connect(...args);
    } catch (e) {
      const text = describe(e);
      if (code !== undefined && !text.startsWith(`${code} `)) throw new Error(`expected error ${code}, got: ${text}`);
      return text;
    }
    await c.end();
    throw new Error('connected, but the connection must be refused');
  };
}

async function main() {
  console.log(`VERSION mysql2 ${require('mysql2/package.json').version} (Node.js ${process.version})`);
  const cert = env('COMPAT_CERT');
  const key = env('COMPAT_KEY');
  await report('query', () => withApp(async (c) => {
    const [rows] = await c.query({ sql: 'SELECT 1 + 1, CURRENT_USER()', rowsAsArray: true });
    if (Number(rows[0][0]) !== 2) throw new Error(`SELECT 1 + 1 gave ${rows[0][0]}`);
    return `SELECT 1 + 1 = 2 as ${rows[0][1]}`;
  }));
  // mysql2's built-in plugins: mysql_native_password, caching_sha2_password, sha256_password,
  // mysql_clear_password; client_ed25519 needs a user-supplied authPlugins entry.
  await report('ed25519', async () => {
    const c = await connect(env('COMPAT_ED_USER'), env('COMPAT_ED_PASSWORD'), port, cert, key);
    const [rows] = await c.query({ sql: 'SELECT CURRENT_USER()', rowsAsArray: true });
    await c.end();
    return `logged in as ${rows[0][0]}`;
  }, 'mysql2 has no built-in client_ed25519');
  await report('prepared', () => withApp(async (c) => {
    const [rows] = await c.execute({ sql: "SELECT ? + ?, CONCAT(?, '!')", rowsAsArray: true }, [40, 2, 'hé']);
    if (Number(rows[0][0]) !== 42 || rows[0][1] !== 'hé!') throw new Error(`unexpected row ${JSON.stringify(rows[0])}`);
    return 'server-side prepared (execute: COM_STMT_PREPARE/EXECUTE)';
  }));
  await report('transaction', () => withApp(async (c) => {
    await c.query('CREATE OR REPLACE TABLE compat_mysql2 (id INT PRIMARY KEY) ENGINE=InnoDB');
    await c.beginTransaction();
    await c.query('INSERT INTO compat_mysql2 VALUES (1)');
    await c.rollback();
    await c.beginTransaction();
    await c.query('INSERT INTO compat_mysql2 VALUES (2)');
    await c.commit();
    const [rows] = await c.query({ sql: 'SELECT GROUP_CONCAT(id) FROM compat_mysql2', rowsAsArray: true });
    if (String(rows[0][0]) !== '2') throw new Error(`rows after rollback+commit: ${rows[0][0]}, expected 2`);
    return 'rolled-back row absent, committed row present';
  }));
  await report('big_result', () => withApp(async (c) => {
    const n = Math.floor(Number(env('COMPAT_BIG_BYTES')) / PATTERN.length);
    const [rows] = await c.query({ sql: `SELECT REPEAT('${PATTERN}', ${n})`, rowsAsArray: true });
    const v = String(rows[0][0]);
    if (v !== PATTERN.repeat(n)) throw new Error(`got ${v.length} bytes, expected ${n * PATTERN.length}`);
    return `${v.length} bytes in one row, content as expected`;
  }));
  await report('revoked', refused(undefined, env('COMPAT_USER'), env('COMPAT_PASSWORD'), port, env('COMPAT_REVOKED_CERT'), env('COMPAT_REVOKED_KEY')));
  await report('wrong_password', refused(1045, env('COMPAT_USER'), 'not-the-password', port, cert, key));
  await report('redirect', refused(4196, env('COMPAT_USER'), env('COMPAT_PASSWORD'), Number(env('COMPAT_REDIRECT_PORT')), cert, key));
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.log(`CHECK internal FAIL ${oneLine(e.stack || e)}`);
  process.exitCode = 1;
});
