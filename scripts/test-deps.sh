#!/usr/bin/env bash
# What `cargo test` and the fuzzers need besides Rust, on Debian: C and C++ compilers (aws-lc-sys builds C,
# libFuzzer C++) and Chromium
# (the status page is rendered headless in tests/status_page.rs) and SoftHSM2 (tests/hsm.rs) with OpenSC's pkcs11-spy. Idempotent; run as root or with sudo.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# libFuzzer (scripts/fuzz.sh) is C++.
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Keys in an HSM are tested on SoftHSM2, real PKCS#11 software (tests/hsm.rs).
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
# OpenSC's pkcs11-spy counts the PKCS#11 logins the HSM tests make (a wrong PIN is tried once).
ls /usr/lib/*/pkcs11/pkcs11-spy.so /usr/lib/*/pkcs11-spy.so >/dev/null 2>&1 || need+=(opensc-pkcs11)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# check-jsonschema from PyPI (tests/schema.rs validates the configuration's JSON Schema and every
# shipped configuration with it), pinned, in a virtualenv under target/ so the machine stays untouched.
venv="$(cd "$(dirname "$0")/.." && pwd)/target/check-jsonschema"
if ! "$venv/bin/check-jsonschema" --version 2>/dev/null | grep -q "0.33.0"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "check-jsonschema==0.33.0"
fi
