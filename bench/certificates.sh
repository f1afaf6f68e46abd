#!/usr/bin/env bash
# Makes a CA (ca.pem) and a certificate for 127.0.0.1 signed by it (server.pem, server.key) in
# the current folder, for the benchmarks' TLS cases: clients that verify (rustls, psql
# verify-full) refuse a self-signed CA certificate as a server's.
set -euo pipefail
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
  -subj "/CN=vibelux bench CA" 2> /dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
  -subj /CN=127.0.0.1 2> /dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
  -days 2 -extfile server.ext 2> /dev/null
