#!/usr/bin/env bash
# soak.sh DURATION OUTDIR: the soak the hardening issue asks for, by hand.
# Builds sonolive with -tags matprofile (so /metrics counts live gocv Mats),
# serves the phantom at 720p30 with the shipped model and recording on, and
# keeps 10 viewers joining and leaving for DURATION (default 30m) with
# `sonolive bench soak`; the report (start, end and slope of RSS,
# goroutines, open files, Mats and p99 latency) goes to OUTDIR/soak.json.
# Heap profiles at the start and the end (OUTDIR/heap-{start,end}.pb.gz)
# show what grew: go tool pprof -base heap-start.pb.gz sonolive heap-end.pb.gz
set -euo pipefail
dur=${1:-30m}
out=${2:-out}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
bin="$out/sonolive-matprofile"
go build -tags gocv_specific_modules,gocv_videoio,matprofile -o "$bin" "$root/cmd/sonolive"
port=${PORT:-8098}
links=$(mktemp)
"$bin" serve --listen "127.0.0.1:$port" --link-file "$links" --record-dir "$out/soak-recordings" \
  --audit "$out/soak-audit.jsonl" --log-level warn --pprof "127.0.0.1:$((port + 1))" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$links"' EXIT
for _ in $(seq 1 100); do [ -s "$links" ] && break; sleep 0.2; done
token=$(sed -n 's/.*token=\([^& ]*\).*/\1/p' "$links" | head -1)
heap() { curl -sf -o "$out/heap-$1.pb.gz" "http://127.0.0.1:$((port + 1))/debug/pprof/heap?gc=1"; }
(sleep 60; heap start) &
"$bin" bench soak --url "http://127.0.0.1:$port/whep/phantom" --token "$token" --viewers 10 \
  --duration "$dur" --report "$out/soak.json"
heap end
cat "$out/soak.json"
