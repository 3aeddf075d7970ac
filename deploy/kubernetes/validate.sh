#!/usr/bin/env bash
# Checks every manifest here against the Kubernetes API schemas (strict: unknown fields fail),
# with kubernetes-validate from PyPI, installed into target/ so the machine stays untouched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
venv="$root/target/kubernetes-validate"
version="1.37.0"
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version"
fi
# The oldest Kubernetes these manifests target: native sidecars need 1.29.
for k8s in 1.29.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s" "$here"/*.yaml
done
echo "deploy/kubernetes: $(ls "$here"/*.yaml | wc -l) files valid for Kubernetes 1.29 and 1.37"
