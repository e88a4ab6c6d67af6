#!/usr/bin/env bash
# The otaguard demo: the end-to-end story, told by the real CLI on local files.
# Each chapter lives in scripts/demo.d/NN-name.sh and is run in order, in one
# shell, sharing $WORK (a scratch directory) and the helpers below.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT="${DEMO_DIR:-$ROOT/demo-out}"
rm -rf "$OUT" && mkdir -p "$OUT"
# Chapters write under $WORK; the demo runs inside it so that commands stay short.
cd "$OUT"
WORK=.
export WORK

bold=$'\e[1m'; dim=$'\e[2m'; green=$'\e[32m'; red=$'\e[31m'; reset=$'\e[0m'
[ -t 1 ] || { bold=""; dim=""; green=""; red=""; reset=""; }

chapter() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$reset"; }
# run: show the command, then run it; it must succeed.
run() { printf '%s$ %s%s\n' "$dim" "$*" "$reset"; "$@"; }
# refuse: show the command; it must FAIL with exit code $1 (the rejection is the point).
refuse() {
  local want=$1; shift
  printf '%s$ %s%s\n' "$dim" "$*" "$reset"
  local rc=0; "$@" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    printf '%sdemo failed: expected exit %s, got %s%s\n' "$red" "$want" "$rc" "$reset"; exit 1
  fi
  printf '%s-> refused as expected (exit %s)%s\n' "$green" "$rc" "$reset"
}

# server_url LOG: the URL `otaguard server run` printed into LOG. It listens before it
# prints, so a client may connect at once (it waits in the backlog until uvicorn runs).
server_url() {
  local _
  for _ in $(seq 200); do grep -q "listening on" "$1" && break; sleep 0.1; done
  sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$1" | head -1
}

for part in "$ROOT"/scripts/demo.d/*.sh; do
  # shellcheck source=/dev/null
  source "$part"
done
printf '\n%sDemo finished: every step above ran the real otaguard code (files in %s).%s\n' "$bold" "$OUT" "$reset"
