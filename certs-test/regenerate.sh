#!/usr/bin/env bash
# Regenerates the committed DEMO PKI in this directory with the openssl CLI.
#
# DEMO ONLY: every private key written here is committed to a public repository. Never use
# these files, or any certificate issued by this CA, outside tests, examples and the quickstart.
#
# Idempotent: each run replaces every file with a fresh, self-consistent set (new keys, new
# serials). Everything is built in a temporary directory first and moved into place only once
# all of it, including the verification at the end, has succeeded, so a failed run leaves the
# previous set untouched. Runs from any working directory.
#
# What it makes (see README.md):
#   ca.pem / ca-key.pem            demo CA (basicConstraints CA:TRUE critical; keyCertSign, cRLSign)
#   server.pem / server-key.pem    server: DNS:localhost, IP:127.0.0.1, IP:::1; serverAuth
#   app.pem / app-key.pem          client CN=app; clientAuth
#   repl.pem / repl-key.pem        client CN=repl; clientAuth
#   revoked.pem / revoked-key.pem  client CN=revoked; clientAuth; listed in crl.pem
#   crl.pem                        CRL (v2, with CRL number) revoking `revoked`, next update in 3650 days
set -euo pipefail

# Validity. The CA outlives every certificate it issues, so no chain ever has a leaf that
# outlives its issuer.
readonly CA_DAYS=7300
readonly LEAF_DAYS=3650
readonly CRL_DAYS=3650

out_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-pki.XXXXXX")"
trap 'rm -rf "$work"' EXIT

command -v openssl >/dev/null || {
    echo "regenerate.sh: openssl not found; install it (Debian: apt-get install openssl)" >&2
    exit 1
}

# ECDSA P-256 key, written as unencrypted PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----").
genkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# A random positive 128-bit serial: unique without keeping a serial file around.
serial() {
    echo "0x$(openssl rand -hex 16)"
}

# X.509 v3 extensions for every certificate this script issues.
cat >"$work/ext.cnf" <<'EOF'
[ca_ext]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash

[server_ext]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[client_ext]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
EOF

# --- CA ------------------------------------------------------------------------------------
genkey "$work/ca-key.pem"
openssl req -new -x509 -sha256 -days "$CA_DAYS" -set_serial "$(serial)" \
    -key "$work/ca-key.pem" -subj "/O=portcullis demo/CN=portcullis demo CA" \
    -config "$work/ext.cnf" -extensions ca_ext -out "$work/ca.pem"

# --- leaves --------------------------------------------------------------------------------
# issue NAME SUBJECT EXTENSION_SECTION
issue() {
    local name="$1" subject="$2" section="$3"
    genkey "$work/$name-key.pem"
    openssl req -new -sha256 -key "$work/$name-key.pem" -subj "$subject" -out "$work/$name.csr"
    openssl x509 -req -sha256 -days "$LEAF_DAYS" -set_serial "$(serial)" \
        -in "$work/$name.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
        -extfile "$work/ext.cnf" -extensions "$section" -out "$work/$name.pem" 2>/dev/null
    rm -f "$work/$name.csr"
}

issue server "/O=portcullis demo/CN=localhost" server_ext
issue app "/O=portcullis demo/CN=app" client_ext
issue repl "/O=portcullis demo/CN=repl" client_ext
issue revoked "/O=portcullis demo/CN=revoked" client_ext

# --- CRL -----------------------------------------------------------------------------------
# `openssl ca` needs a CA database; a throwaway one in the temp dir is enough. The crlnumber
# file makes the CRL carry a CRL number, and crl_extensions an authority key identifier: both
# make it a v2 CRL, which is what webpki (rustls) accepts.
db="$work/ca-db"
mkdir -p "$db"
: >"$db/index.txt"
echo 1000 >"$db/crlnumber"
cat >"$db/ca.cnf" <<EOF
[ca]
default_ca = demo_ca

[demo_ca]
database         = $db/index.txt
crlnumber        = $db/crlnumber
certificate      = $work/ca.pem
private_key      = $work/ca-key.pem
default_md       = sha256
default_crl_days = $CRL_DAYS
crl_extensions   = crl_ext

[crl_ext]
authorityKeyIdentifier = keyid:always
EOF
openssl ca -config "$db/ca.cnf" -revoke "$work/revoked.pem" -crl_reason keyCompromise 2>/dev/null
openssl ca -config "$db/ca.cnf" -gencrl -crldays "$CRL_DAYS" -out "$work/crl.pem" 2>/dev/null

# --- verify before installing --------------------------------------------------------------
for name in server app repl; do
    openssl verify -CAfile "$work/ca.pem" -crl_check -CRLfile "$work/crl.pem" "$work/$name.pem" >/dev/null
done
if openssl verify -CAfile "$work/ca.pem" -crl_check -CRLfile "$work/crl.pem" "$work/revoked.pem" >/dev/null 2>&1; then
    echo "regenerate.sh: revoked.pem verified despite the CRL" >&2
    exit 1
fi
openssl verify -CAfile "$work/ca.pem" -purpose sslserver "$work/server.pem" >/dev/null
openssl verify -CAfile "$work/ca.pem" -purpose sslclient "$work/app.pem" >/dev/null

# --- install -------------------------------------------------------------------------------
files=(ca.pem ca-key.pem server.pem server-key.pem app.pem app-key.pem repl.pem repl-key.pem
    revoked.pem revoked-key.pem crl.pem)
for f in "${files[@]}"; do
    # Demo keys are public anyway; 0644 lets tests and a non-root mariadb client read them.
    chmod 0644 "$work/$f"
    mv -f "$work/$f" "$out_dir/$f"
done
echo "demo PKI written to $out_dir: ${files[*]}"
