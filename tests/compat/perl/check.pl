#!/usr/bin/perl
# Compatibility checks for Perl DBI + DBD::MariaDB (on libmariadb) through portcullis.
# Connection details come from the COMPAT_* environment variables that scripts/compat sets;
# every check prints `CHECK <name> <PASS|FAIL|NA> <detail>`.
use strict;
use warnings;
use utf8;
use DBI;
use DBD::MariaDB;

binmode STDOUT, ':encoding(UTF-8)';
my $PATTERN = '0123456789abcdef';
my $failed = 0;
sub env { my $v = $ENV{ $_[0] }; defined $v or die "$_[0] is not set\n"; $v }

# connect_as(user, password, port, cert, key): a handle; dies with "<code> <message>".
sub connect_as {
    my ($user, $pass, $port, $cert, $key) = @_;
    my $dsn = sprintf(
        'DBI:MariaDB:database=%s;host=[%s];port=%d;mariadb_connect_timeout=30;'
          . 'mariadb_ssl=1;mariadb_ssl_verify_server_cert=1;mariadb_ssl_ca_file=%s;'
          . 'mariadb_ssl_client_cert=%s;mariadb_ssl_client_key=%s;mariadb_server_prepare=1',
        env('COMPAT_DB'), env('COMPAT_HOST'), $port, env('COMPAT_CA'), $cert, $key);
    my $dbh = DBI->connect($dsn, $user, $pass, { PrintError => 0, RaiseError => 0 });
    die(($DBI::err // 0) . " $DBI::errstr\n") unless $dbh;
    $dbh->{RaiseError} = 1;
    $dbh->{HandleError} = sub { die(($_[1]->err // 0) . ' ' . $_[1]->errstr . "\n") };
    return $dbh;
}

sub app { connect_as(env('COMPAT_USER'), env('COMPAT_PASSWORD'), env('COMPAT_PORT'), env('COMPAT_CERT'), env('COMPAT_KEY')) }

# A check dies with "NA: <reason>" for what the connector does not implement.
sub report {
    my ($name, $fn) = @_;
    my $detail = eval { $fn->() };
    if (defined $detail) {
        print "CHECK $name PASS $detail\n";
    } elsif ($@ =~ /^NA: (.*)/s) {
        (my $e = $1) =~ s/\s+/ /g;
        print "CHECK $name NA $e\n";
    } else {
        (my $e = $@) =~ s/\s+/ /g;
        print "CHECK $name FAIL $e\n";
        $failed = 1;
    }
}

sub refused {
    my ($code, @args) = @_;
    return sub {
        my $dbh = eval { connect_as(@args) };
        die "connected, but the connection must be refused\n" if $dbh;
        (my $e = $@) =~ s/\s+/ /g;
        die "expected error $code, got: $e\n" if defined $code && $e !~ /^$code /;
        return $e;
    };
}

print "VERSION DBD::MariaDB $DBD::MariaDB::VERSION (DBI $DBI::VERSION, on libmariadb)\n";

report('query', sub {
    my ($n, $u) = app()->selectrow_array('SELECT 1 + 1, CURRENT_USER()');
    die "SELECT 1 + 1 gave $n\n" unless $n == 2;
    "SELECT 1 + 1 = 2 as $u";
});
report('ed25519', sub {
    my $dbh = connect_as(env('COMPAT_ED_USER'), env('COMPAT_ED_PASSWORD'), env('COMPAT_PORT'), env('COMPAT_CERT'), env('COMPAT_KEY'));
    'logged in as ' . ($dbh->selectrow_array('SELECT CURRENT_USER()'))[0];
});
report('prepared', sub {
    my $sth = app()->prepare(q{SELECT ? + ?, CONCAT(?, '!')});
    $sth->bind_param(1, 40, DBI::SQL_INTEGER);
    $sth->bind_param(2, 2, DBI::SQL_INTEGER);
    $sth->bind_param(3, 'hé');
    $sth->execute;
    my ($n, $s) = $sth->fetchrow_array;
    die "unexpected row ($n, $s)\n" unless $n == 42 && $s eq 'hé!';
    'server-side prepared (mariadb_server_prepare=1)';
});
report('transaction', sub {
    my $dbh = app();
    $dbh->do('CREATE OR REPLACE TABLE compat_perl (id INT PRIMARY KEY) ENGINE=InnoDB');
    $dbh->begin_work;
    $dbh->do('INSERT INTO compat_perl VALUES (1)');
    $dbh->rollback;
    $dbh->begin_work;
    $dbh->do('INSERT INTO compat_perl VALUES (2)');
    $dbh->commit;
    my ($ids) = $dbh->selectrow_array('SELECT GROUP_CONCAT(id) FROM compat_perl');
    die "rows after rollback+commit: $ids, expected 2\n" unless $ids eq '2';
    'rolled-back row absent, committed row present';
});
report('big_result', sub {
    my $n = int(env('COMPAT_BIG_BYTES') / length $PATTERN);
    my ($v) = app()->selectrow_array("SELECT REPEAT('$PATTERN', $n)");
    my $want = $PATTERN x $n;
    die sprintf("got %d bytes, expected %d\n", length $v, length $want) unless $v eq $want;
    length($v) . ' bytes in one row, content as expected';
});
report('revoked', refused(undef, env('COMPAT_USER'), env('COMPAT_PASSWORD'), env('COMPAT_PORT'), env('COMPAT_REVOKED_CERT'), env('COMPAT_REVOKED_KEY')));
report('wrong_password', refused(1045, env('COMPAT_USER'), 'not-the-password', env('COMPAT_PORT'), env('COMPAT_CERT'), env('COMPAT_KEY')));
report('redirect', refused(4196, env('COMPAT_USER'), env('COMPAT_PASSWORD'), env('COMPAT_REDIRECT_PORT'), env('COMPAT_CERT'), env('COMPAT_KEY')));
# DBI defines no change-user method; look for one among DBD::MariaDB's own database-handle
# methods (mysql_change_user in libmariadb is not reachable from Perl without one).
report('change_user', sub {
    my $dbh = app();
    no strict 'refs';
    my @methods = sort grep { defined &{"DBD::MariaDB::db::$_"} } keys %DBD::MariaDB::db::;
    my @found = grep { /change_?user/i } @methods, keys %DBI::db::;
    die 'DBD::MariaDB now has ' . join(', ', @found) . ": extend this check\n" if @found;
    $dbh->disconnect;
    die "NA: DBD::MariaDB $DBD::MariaDB::VERSION has no change-user API: neither DBI nor the driver"
      . ' has a change-user method (its database-handle methods: '
      . join(' ', grep { !/^(SQL_|_)/ && !/^[A-Z]+$/ } @methods) . ")\n";
});
exit $failed;
