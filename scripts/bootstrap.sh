#!/usr/bin/env bash
# Installs the Debian packages med3d needs (idempotent; as root or through sudo).
set -euo pipefail
packages=(build-essential cmake libeigen3-dev catch2 nlohmann-json3-dev zlib1g-dev libnifti2-dev libpng-dev libcli11-dev libboost-context-dev python3 python3-numpy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all packages present"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "bootstrap: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
