#!/usr/bin/env bash
# Installs the Debian packages the tests use, on a fresh Debian machine, as root: Chromium for the report's browser
# tests (driven by the playwright Python package declared in setup.py, so `playwright install` is never needed) and
# Fashion-MNIST's original files (dataset-fashion-mnist, in /usr/share/datasets/fashion-mnist) and WordNet 3.0's database
# (wordnet-base, in /usr/share/wordnet: the test rebuilds pie's ImageNet class groups from it). Idempotent: installs
# only what is missing. Only Debian's packages are used.
set -euo pipefail

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium chromium-driver)
[[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]] || missing+=(dataset-fashion-mnist)
[[ -f /usr/share/wordnet/data.noun ]] || missing+=(wordnet-base)

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_debian_packages: everything present ($(/usr/bin/chromium --version 2>/dev/null || echo chromium); fashion-mnist; wordnet)"
  exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
  echo "install_debian_packages: must run as root to apt-get install ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y "${missing[@]}"

if [[ ! -x /usr/bin/chromium ]]; then
  echo "install_debian_packages: apt-get finished but /usr/bin/chromium is missing" >&2
  exit 1
fi
if [[ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]]; then
  echo "install_debian_packages: apt-get finished but /usr/share/datasets/fashion-mnist is missing" >&2
  exit 1
fi
if [[ ! -f /usr/share/wordnet/data.noun ]]; then
  echo "install_debian_packages: apt-get finished but /usr/share/wordnet/data.noun is missing" >&2
  exit 1
fi
echo "install_debian_packages: installed ${missing[*]}"
