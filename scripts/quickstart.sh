#!/usr/bin/env bash
# Quickstart: install safehold, create a local vault, register this machine, back up a folder and list
# its recovery points. Usage: bash scripts/quickstart.sh [FOLDER]   (default: this repository's src/)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FOLDER=$(realpath "${1:-src}")
DEMO=$(pwd)/demo
export SAFEHOLD_HOME="$DEMO/agent"
sh=.venv/bin/safehold
if [ ! -f "$SAFEHOLD_HOME/registration.json" ]; then
  mkdir -p "$DEMO"
  if [ -f "$DEMO/vault/vault.json" ]; then
    $sh vault credentials "$DEMO/vault" --out "$DEMO/demo.vaultcredentials"
  else
    $sh vault init "$DEMO/vault" --name demo --credentials-out "$DEMO/demo.vaultcredentials"
  fi
  rm -f "$DEMO/passphrase"
  $sh register --credentials "$DEMO/demo.vaultcredentials" --generate-passphrase "$DEMO/passphrase"
fi
$sh backup "$FOLDER"
$sh recovery-points
echo
echo "Next: SAFEHOLD_HOME=$SAFEHOLD_HOME $sh restore latest --target /tmp/safehold-restore"
