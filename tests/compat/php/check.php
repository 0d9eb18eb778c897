<?php
// Compatibility checks for PHP's mysqli and PDO_MySQL (both on mysqlnd) through portcullis.
//
// Usage: php check.php mysqli|pdo_mysql. Connection details come from the COMPAT_* environment
// variables that scripts/compat sets; every check prints `CHECK <name> <PASS|FAIL|NA> <detail>`.

const PATTERN = '0123456789abcdef';
$api = $argv[1] ?? '';
$e = fn (string $k): string => getenv($k) !== false ? getenv($k) : exit("$k is not set\n");
$failed = false;

// mysqlnd splits "host:port" at the first ':', so an IPv6 literal must be in brackets. PHP
// 8.2 then checks the server certificate against the name "[::1]", brackets included, which
// no certificate can match (and mysqlnd has no peer-name option): with an IPv6 literal the
// server certificate cannot be verified, only presented. The checks therefore run over [::1]
// with server verification off (the client certificate is still sent and checked by
// portcullis), and `query` also connects with full verification to the 127.0.0.1 listener,
// whose certificate carries IP:127.0.0.1. In production, use a DNS name.
function host(): string
{
    $h = getenv('COMPAT_HOST');
    return str_contains($h, ':') ? "[$h]" : $h;
}
$verify_server = false;

// connect(user, password, port, cert, key): a connected handle; throws on failure.
if ($api === 'mysqli') {
    mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
    $connect = function (string $user, string $pass, int $port, string $cert, string $key) use ($e, &$verify_server, &$host) {
        $m = mysqli_init();
        $m->options(MYSQLI_OPT_CONNECT_TIMEOUT, 30);
        $m->options(MYSQLI_OPT_SSL_VERIFY_SERVER_CERT, $verify_server);
        $m->ssl_set($key, $cert, $e('COMPAT_CA'), null, null);
        $flags = MYSQLI_CLIENT_SSL | ($verify_server ? 0 : MYSQLI_CLIENT_SSL_DONT_VERIFY_SERVER_CERT);
        $m->real_connect($host, $user, $pass, $e('COMPAT_DB'), $port, null, $flags);
        return $m;
    };
    $one = fn ($c, string $sql) => $c->query($sql)->fetch_row();
    $exec = fn ($c, string $sql) => $c->query($sql);
    $prepared = function ($c) {
        $st = $c->prepare("SELECT ? + ?, CONCAT(?, '!')");
        $a = 40;
        $b = 2;
        $s = 'hé';
        $st->bind_param('iis', $a, $b, $s);
        $st->execute();
        return $st->get_result()->fetch_row();
    };
    $begin = fn ($c) => $c->begin_transaction();
    $commit = fn ($c) => $c->commit();
    $rollback = fn ($c) => $c->rollback();
    $version = 'mysqli (mysqlnd ' . mysqli_get_client_info() . ', PHP ' . PHP_VERSION . ')';
    $error_class = mysqli_sql_exception::class;
    // COM_CHANGE_USER (mysqli::change_user; throws under MYSQLI_REPORT_STRICT).
    $change_user = fn ($c, string $user, string $pass) => $c->change_user($user, $pass, $e('COMPAT_DB'));
} elseif ($api === 'pdo_mysql') {
    $connect = function (string $user, string $pass, int $port, string $cert, string $key) use ($e, &$verify_server, &$host) {
        return new PDO(
            sprintf('mysql:host=%s;port=%d;dbname=%s', $host, $port, $e('COMPAT_DB')),
            $user,
            $pass,
            [
                PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
                PDO::ATTR_TIMEOUT => 30,
                PDO::ATTR_EMULATE_PREPARES => false,
                PDO::MYSQL_ATTR_SSL_CA => $e('COMPAT_CA'),
                PDO::MYSQL_ATTR_SSL_CERT => $cert,
                PDO::MYSQL_ATTR_SSL_KEY => $key,
                PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT => $verify_server,
            ]
        );
    };
    $one = fn ($c, string $sql) => $c->query($sql)->fetch(PDO::FETCH_NUM);
    $exec = fn ($c, string $sql) => $c->exec($sql);
    $prepared = function ($c) {
        $st = $c->prepare("SELECT ? + ?, CONCAT(?, '!')");
        $st->bindValue(1, 40, PDO::PARAM_INT);
        $st->bindValue(2, 2, PDO::PARAM_INT);
        $st->bindValue(3, 'hé', PDO::PARAM_STR);
        $st->execute();
        return $st->fetch(PDO::FETCH_NUM);
    };
    $begin = fn ($c) => $c->beginTransaction();
    $commit = fn ($c) => $c->commit();
    $rollback = fn ($c) => $c->rollBack();
    $version = 'PDO_MySQL (mysqlnd ' . mysqli_get_client_info() . ', PHP ' . PHP_VERSION . ')';
    $error_class = PDOException::class;
    $change_user = null;
} else {
    fwrite(STDERR, "usage: php check.php mysqli|pdo_mysql (got '$api')\n");
    exit(2);
}

// "<code> <message>" of a driver error.
function describe(Throwable $t): string
{
    if ($t instanceof PDOException) {
        // PDO's message is "SQLSTATE[28000] [1045] Access denied ..."; the driver code is in
        // errorInfo[1] when set, else in the "[nnnn]" of the message.
        $code = $t->errorInfo[1] ?? (preg_match('/\] \[(\d+)\]/', $t->getMessage(), $m) ? $m[1] : 0);
        return $code . ' ' . $t->getMessage();
    }
    return $t->getCode() . ' ' . $t->getMessage();
}

// What the connector does not implement: reported as NA with its message.
class NotImplemented extends Exception
{
}

function report(string $name, callable $fn, ?string $na_reason = null): void
{
    global $failed;
    try {
        $detail = $fn();
        echo "CHECK $name PASS $detail\n";
    } catch (NotImplemented $t) {
        echo "CHECK $name NA " . $t->getMessage() . "\n";
    } catch (Throwable $t) {
        $text = preg_replace('/\s+/', ' ', describe($t));
        if ($na_reason !== null) {
            echo "CHECK $name NA $text ($na_reason)\n";
        } else {
            echo "CHECK $name FAIL $text\n";
            $failed = true;
        }
    }
}

// The connection must fail (with error $code when given).
function refused(callable $connect, ?int $code): callable
{
    return function () use ($connect, $code) {
        error_clear_last();
        try {
            // mysqlnd reports TLS failures as PHP warnings, with more detail than the
            // exception: the warning text is added to the detail.
            $c = @$connect();
        } catch (Throwable $t) {
            $text = describe($t);
            $warning = error_get_last()['message'] ?? '';
            if ($warning !== '' && !str_contains($text, $warning)) {
                $text .= " (PHP warning: $warning)";
            }
            if ($code !== null && !str_starts_with($text, "$code ")) {
                throw new RuntimeException("expected error $code, got: $text");
            }
            return preg_replace('/\s+/', ' ', $text);
        }
        throw new RuntimeException('connected, but the connection must be refused');
    };
}

echo "VERSION $version\n";
$port = (int) $e('COMPAT_PORT');
$user = $e('COMPAT_USER');
$pass = $e('COMPAT_PASSWORD');
$cert = $e('COMPAT_CERT');
$key = $e('COMPAT_KEY');
$app = fn () => $connect($user, $pass, $port, $cert, $key);
$table = "compat_$api";
$host = host();

report('query', function () use ($app, $one, $e, &$verify_server, &$host) {
    [$n, $u] = $one($app(), 'SELECT 1 + 1, CURRENT_USER()');
    if ((int) $n !== 2) {
        throw new RuntimeException("SELECT 1 + 1 gave $n");
    }
    // The same with the server certificate verified, over IPv4 (see host() above).
    [$host, $verify_server] = ['127.0.0.1', true];
    try {
        [$n4] = $one(($GLOBALS['connect'])($e('COMPAT_USER'), $e('COMPAT_PASSWORD'), (int) $e('COMPAT_PORT4'), $e('COMPAT_CERT'), $e('COMPAT_KEY')), 'SELECT 1 + 1');
    } finally {
        [$host, $verify_server] = [host(), false];
    }
    return "SELECT 1 + 1 = 2 as $u over [::1] (server certificate not verifiable, see docs); $n4 over 127.0.0.1 with the server certificate verified";
});
// mysqlnd implements mysql_native_password, mysql_clear_password, sha256_password and
// caching_sha2_password, not client_ed25519.
report('ed25519', function () use ($connect, $e, $port, $cert, $key, $one) {
    $c = $connect($e('COMPAT_ED_USER'), $e('COMPAT_ED_PASSWORD'), $port, $cert, $key);
    return 'logged in as ' . $one($c, 'SELECT CURRENT_USER()')[0];
}, 'mysqlnd has no client_ed25519');
report('prepared', function () use ($app, $prepared) {
    $row = $prepared($app());
    if ((int) $row[0] !== 42 || $row[1] !== 'hé!') {
        throw new RuntimeException('unexpected row ' . json_encode($row));
    }
    return 'server-side prepared (COM_STMT_PREPARE/EXECUTE, emulation off)';
});
report('transaction', function () use ($app, $exec, $one, $begin, $commit, $rollback, $table) {
    $c = $app();
    $exec($c, "CREATE OR REPLACE TABLE $table (id INT PRIMARY KEY) ENGINE=InnoDB");
    $begin($c);
    $exec($c, "INSERT INTO $table VALUES (1)");
    $rollback($c);
    $begin($c);
    $exec($c, "INSERT INTO $table VALUES (2)");
    $commit($c);
    $ids = $one($c, "SELECT GROUP_CONCAT(id) FROM $table")[0];
    if ($ids !== '2') {
        throw new RuntimeException("rows after rollback+commit: $ids, expected 2");
    }
    return 'rolled-back row absent, committed row present';
});
report('big_result', function () use ($app, $one, $e) {
    $want = str_repeat(PATTERN, intdiv((int) $e('COMPAT_BIG_BYTES'), strlen(PATTERN)));
    $v = $one($app(), sprintf("SELECT REPEAT('%s', %d)", PATTERN, strlen($want) / strlen(PATTERN)))[0];
    if ($v !== $want) {
        throw new RuntimeException(sprintf('got %d bytes, expected %d', strlen($v), strlen($want)));
    }
    return strlen($v) . ' bytes in one row, content as expected';
});
report('revoked', refused(fn () => $connect($user, $pass, $port, $e('COMPAT_REVOKED_CERT'), $e('COMPAT_REVOKED_KEY')), null));
report('wrong_password', refused(fn () => $connect($user, 'not-the-password', $port, $cert, $key), 1045));
report('redirect', refused(fn () => $connect($user, $pass, (int) $e('COMPAT_REDIRECT_PORT'), $cert, $key), 4196));
// COM_CHANGE_USER on one connection: app_native -> app_ed (ed25519) -> app_native, each checked
// with CURRENT_USER(), then app_native with a wrong password, which must give the server's
// 1045. mysqlnd has no client_ed25519: the ed25519 step must fail naming that plugin, and the
// rest runs on a new connection.
report('change_user', function () use ($app, $one, $e, $change_user, $user, $pass, $version) {
    $c = $app();
    if ($change_user === null) {
        $found = preg_grep('/change.?user/i', get_class_methods($c));
        if ($found) {
            throw new RuntimeException(get_class($c) . ' now has ' . implode(', ', $found) . ': extend this check');
        }
        throw new NotImplemented("$version has no change-user API: the " . get_class($c) . ' class has no such method and never sends COM_CHANGE_USER');
    }
    $steps = [];
    $to = function (string $u, string $p) use (&$c, $one, $change_user, &$steps) {
        $change_user($c, $u, $p);
        $got = $one($c, 'SELECT CURRENT_USER()')[0];
        if ($got !== "$u@%") {
            throw new RuntimeException("after change_user to $u, CURRENT_USER() is $got");
        }
        $steps[] = $got;
    };
    try {
        $to($e('COMPAT_ED_USER'), $e('COMPAT_ED_PASSWORD'));
    } catch (mysqli_sql_exception $t) {
        if (!str_contains(describe($t), 'client_ed25519')) {
            throw $t;
        }
        $steps[] = $e('COMPAT_ED_USER') . ' not possible (mysqlnd has no client_ed25519: ' . describe($t) . ')';
        $c = $app();
    }
    $to($user, $pass);
    try {
        $change_user($c, $user, 'not-the-password');
    } catch (mysqli_sql_exception $t) {
        $text = describe($t);
        if (!str_starts_with($text, '1045 ')) {
            throw new RuntimeException("wrong password: expected error 1045, got: $text");
        }
        return 'change_user: ' . implode(', then ', $steps) . "; wrong password: $text";
    }
    throw new RuntimeException('change_user with a wrong password succeeded');
});
exit($failed ? 1 : 0);
