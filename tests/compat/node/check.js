// Compatibility checks for the Node.js connectors mysql2 and mariadb through portcullis.
//
// Usage: node check.js mysql2|mariadb-node. Connection details come from the COMPAT_*
// environment variables that scripts/compat sets; every check prints
// `CHECK <name> <PASS|FAIL|NA> <detail>`. Both packages are installed by scripts/compat (npm ci
// from package-lock.json) into target/compat/node and found through NODE_PATH.
'use strict';

const fs = require('fs');

const PATTERN = '0123456789abcdef';
const env = (k) => {
  if (process.env[k] === undefined) throw new Error(`${k} is not set`);
  return process.env[k];
};
let failed = false;

// The connector: connect(options) and the few calls whose shape differs. mysql2's promise API
// answers [rows, fields]; mariadb's answers the rows (with a `meta` property).
function driver(name) {
  if (name === 'mysql2') {
    const mysql = require('mysql2/promise');
    return {
      version: `mysql2 ${require('mysql2/package.json').version} (Node.js ${process.version})`,
      connect: (o) => mysql.createConnection(o),
      rows: async (p) => (await p)[0],
      // mysql2's built-in plugins: mysql_native_password, caching_sha2_password,
      // sha256_password, mysql_clear_password; client_ed25519 needs a user-supplied
      // authPlugins entry.
      noEd25519: 'mysql2 has no built-in client_ed25519',
    };
  }
  if (name === 'mariadb-node') {
    const mariadb = require('mariadb');
    return {
      // permitRedirect as the connector defaults it for the TLS options the checks use (see
      // docs/compatibility.md: it follows a `redirect_url` session tracker when true).
      version: `mariadb ${mariadb.version} (Node.js ${process.version}; permitRedirect default with ` +
        `ssl.rejectUnauthorized: ${mariadb.defaultOptions({ ssl: { rejectUnauthorized: true } }).permitRedirect})`,
      connect: (o) => mariadb.createConnection(o),
      rows: async (p) => p,
      noEd25519: null,
    };
  }
  console.error(`usage: node check.js mysql2|mariadb-node (got '${name}')`);
  process.exit(2);
}

const d = driver(process.argv[2] || '');

function connect(user, password, port, cert, key, extra = {}) {
  return d.connect({
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
    ...extra,
  });
}

const port = Number(env('COMPAT_PORT'));
const app = () => connect(env('COMPAT_USER'), env('COMPAT_PASSWORD'), port, env('COMPAT_CERT'), env('COMPAT_KEY'));
const oneLine = (s) => String(s).replace(/\s+/g, ' ');
// `<code> <server message>` for a server error (mariadb's `message` adds a connection prefix,
// `sqlMessage` is the server's text), `client error: <code> <message>` for a driver or TLS
// error, the message of a failed expectation.
const describe = (e) => {
  if (e.errno !== undefined && e.sqlMessage !== undefined) return `${e.errno} ${e.sqlMessage}`;
  if (e.code) return `client error: ${e.code} ${e.message}`;
  return e.message;
};
const query = (c, sql, values) => d.rows(c.query({ sql, rowsAsArray: true }, values));
const first = async (c, sql) => (await query(c, sql))[0][0];

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

// Runs fn(conn) on a new connection and closes it.
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

// The redirect_url form (mariadb only): connect to portcullis A's `redirect_url` listener
// (failover_style = "redirect_url"), whose OK that ends authentication carries
// redirect_url=mariadb://localhost:<port of portcullis B>. With permitRedirect at its default
// (on: TLS that verifies the server) the connector opens a connection to B itself, verifying B's
// certificate for `localhost`, and quits the one to A: the connection must end up on B's port.
// Then a query. Versions 3.4.x to 3.5.4 hand back a connection that cannot run one: its answer
// goes to the connector's internal connection object, which has no command waiting and emits
// ER_UNEXPECTED_PACKET (45011) as an 'error' event nobody can listen to (an uncaught exception),
// while the query itself never settles. That is what this check expects of this version
// (docs/compatibility.md), so that it fails when a version that works arrives: then portcullis's
// follower table (src/config/failover.rs) and the docs should take it in.
const AFTER_REDIRECT_LIMIT_MS = 10000;
async function followRedirectUrl() {
  const a = Number(env('COMPAT_REDIRECT_URL_PORT'));
  const b = Number(env('COMPAT_REDIRECT_B_PORT'));
  const logged = [];
  const c = await connect(env('COMPAT_USER'), env('COMPAT_PASSWORD'), a, env('COMPAT_CERT'), env('COMPAT_KEY'), {
    logger: { error: (e) => logged.push(oneLine(e && e.cause ? `${e.message}: ${e.cause.message}` : e)) },
  });
  let uncaught;
  const onUncaught = (e) => {
    uncaught = e;
  };
  process.on('uncaughtException', onUncaught);
  try {
    if (c.info.port !== b) {
      throw new Error(`connected to [${env('COMPAT_HOST')}]:${a}, still on port ${c.info.port}, not on localhost:${b}` +
        (logged.length ? ` (connector logged: ${logged.join('; ')})` : ''));
    }
    const followed = `followed redirect_url from [${env('COMPAT_HOST')}]:${a} to localhost:${b} (TLS verified for localhost)`;
    let timer;
    const outcome = await Promise.race([
      first(c, 'SELECT 40 + 2').then((v) => ({ value: v }), (e) => ({ error: e })),
      new Promise((resolve) => {
        const poll = () => (uncaught ? resolve({ uncaught }) : (timer = setTimeout(poll, 10)));
        poll();
        setTimeout(() => resolve({ hung: true }), AFTER_REDIRECT_LIMIT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (outcome.value !== undefined) {
      throw new Error(`${followed} and SELECT 40 + 2 gave ${outcome.value} there: this version works after a redirect; ` +
        'add it to BUILTIN_FOLLOWERS (src/config/failover.rs) and update docs/compatibility.md and docs/failover.md');
    }
    const e = outcome.uncaught || outcome.error;
    if (!e || e.errno !== 45011) {
      throw new Error(`${followed}, then SELECT 40 + 2 ${e ? `failed with ${describe(e)}` : `did not settle in ${AFTER_REDIRECT_LIMIT_MS} ms`}` +
        ', not with the known ER_UNEXPECTED_PACKET (45011)');
    }
    return `${followed}; the connection it hands back cannot run a query (known connector bug): ` +
      `${outcome.uncaught ? 'uncaught ' : ''}${e.code} ${oneLine(e.message).replace(/ conn:.*$/, '')}`;
  } finally {
    c.destroy();
    // The internal connection may still report; give it a moment, then stop listening.
    await new Promise((resolve) => setTimeout(resolve, 100));
    process.removeListener('uncaughtException', onUncaught);
  }
}

// COM_CHANGE_USER on one connection: app_native -> app_ed (ed25519) -> app_native, each checked
// with CURRENT_USER(), then app_native with a wrong password, which must give the server's
// 1045. A connector without client_ed25519 must fail the ed25519 step naming that plugin; the
// rest then runs on a new connection.
async function changeUser() {
  const db = env('COMPAT_DB');
  const steps = [];
  let c = await app();
  try {
    const to = async (user, password) => {
      await c.changeUser({ user, password, database: db });
      const got = await first(c, 'SELECT CURRENT_USER()');
      if (got !== `${user}@%`) throw new Error(`after changeUser to ${user}, CURRENT_USER() is ${got}`);
      steps.push(got);
    };
    try {
      await to(env('COMPAT_ED_USER'), env('COMPAT_ED_PASSWORD'));
    } catch (e) {
      if (!d.noEd25519 || !describe(e).includes('client_ed25519')) throw e;
      steps.push(`${env('COMPAT_ED_USER')} not possible (${d.noEd25519}: ${describe(e)})`);
      c.destroy();
      c = await app();
    }
    await to(env('COMPAT_USER'), env('COMPAT_PASSWORD'));
    try {
      await c.changeUser({ user: env('COMPAT_USER'), password: 'not-the-password', database: db });
    } catch (e) {
      const text = describe(e);
      if (!text.startsWith('1045 ')) throw new Error(`wrong password: expected error 1045, got: ${text}`);
      return `changeUser: ${steps.join(', then ')}; wrong password: ${text}`;
    }
    throw new Error('changeUser with a wrong password succeeded');
  } finally {
    c.destroy();
  }
}

async function main() {
  console.log(`VERSION ${d.version}`);
  const cert = env('COMPAT_CERT');
  const key = env('COMPAT_KEY');
  const table = `compat_${process.argv[2].replace('-', '_')}`;
  await report('query', () => withApp(async (c) => {
    const rows = await query(c, 'SELECT 1 + 1, CURRENT_USER()');
    if (Number(rows[0][0]) !== 2) throw new Error(`SELECT 1 + 1 gave ${rows[0][0]}`);
    return `SELECT 1 + 1 = 2 as ${rows[0][1]}`;
  }));
  await report('ed25519', async () => {
    const c = await connect(env('COMPAT_ED_USER'), env('COMPAT_ED_PASSWORD'), port, cert, key);
    const u = await first(c, 'SELECT CURRENT_USER()');
    await c.end();
    return `logged in as ${u}`;
  }, d.noEd25519);
  await report('prepared', () => withApp(async (c) => {
    const rows = await d.rows(c.execute({ sql: "SELECT ? + ?, CONCAT(?, '!')", rowsAsArray: true }, [40, 2, 'hé']));
    if (Number(rows[0][0]) !== 42 || rows[0][1] !== 'hé!') throw new Error(`unexpected row ${JSON.stringify(rows[0], (k, v) => (typeof v === 'bigint' ? String(v) : v))}`);
    return 'server-side prepared (execute: COM_STMT_PREPARE/EXECUTE)';
  }));
  await report('transaction', () => withApp(async (c) => {
    await c.query(`CREATE OR REPLACE TABLE ${table} (id INT PRIMARY KEY) ENGINE=InnoDB`);
    await c.beginTransaction();
    await c.query(`INSERT INTO ${table} VALUES (1)`);
    await c.rollback();
    await c.beginTransaction();
    await c.query(`INSERT INTO ${table} VALUES (2)`);
    await c.commit();
    const ids = await first(c, `SELECT GROUP_CONCAT(id) FROM ${table}`);
    if (String(ids) !== '2') throw new Error(`rows after rollback+commit: ${ids}, expected 2`);
    return 'rolled-back row absent, committed row present';
  }));
  await report('big_result', () => withApp(async (c) => {
    const n = Math.floor(Number(env('COMPAT_BIG_BYTES')) / PATTERN.length);
    const v = String(await first(c, `SELECT REPEAT('${PATTERN}', ${n})`));
    if (v !== PATTERN.repeat(n)) throw new Error(`got ${v.length} bytes, expected ${n * PATTERN.length}`);
    return `${v.length} bytes in one row, content as expected`;
  }));
  await report('revoked', refused(undefined, env('COMPAT_USER'), env('COMPAT_PASSWORD'), port, env('COMPAT_REVOKED_CERT'), env('COMPAT_REVOKED_KEY')));
  await report('wrong_password', refused(1045, env('COMPAT_USER'), 'not-the-password', port, cert, key));
  await report('redirect', async () => {
    const shown = await refused(4196, env('COMPAT_USER'), env('COMPAT_PASSWORD'), Number(env('COMPAT_REDIRECT_PORT')), cert, key)();
    if (process.argv[2] !== 'mariadb-node') return shown;
    return `error form: ${shown}; redirect_url form: ${await followRedirectUrl()}`;
  });
  await report('change_user', changeUser);
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.log(`CHECK internal FAIL ${oneLine(e.stack || e)}`);
  process.exitCode = 1;
});
