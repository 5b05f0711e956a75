#!/usr/bin/env bash
# bench-viewers.sh N OUTDIR: starts `sonolive serve` (defaults: 720p30
# phantom, shipped model) in its own process, connects N viewers with
# `sonolive bench viewers`, then again with one of them throttled, and writes
# the reports to OUTDIR/bench-viewers-N.json and ...-throttled.json.
set -euo pipefail
n=${1:-50}
out=${2:-out}
port=${PORT:-8097}
root=$(cd "$(dirname "$0")/.." && pwd)
links=$(mktemp)
"$root/bin/sonolive" serve --listen "127.0.0.1:$port" --link-file "$links" --audit "$out/audit.jsonl" --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$links"' EXIT
for _ in $(seq 100); do [ -s "$links" ] && break; sleep 0.1; done
token=$(sed -n 's/.*token=//p' "$links" | head -1)
sleep 3 # let the model warm up before the baseline window
"$root/bin/sonolive" bench viewers --url "http://127.0.0.1:$port/whep/phantom" --token "$token" \
  --n "$n" --window "${WINDOW:-20s}" --report "$out/bench-viewers-$n.json"
"$root/bin/sonolive" bench viewers --url "http://127.0.0.1:$port/whep/phantom" --token "$token" \
  --n "$n" --slow 1 --window "${WINDOW:-20s}" --report "$out/bench-viewers-$n-throttled.json"
cat "$out/bench-viewers-$n.json" "$out/bench-viewers-$n-throttled.json"
