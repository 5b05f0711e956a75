#!/usr/bin/env bash
# setup.sh installs everything sonolive needs on a fresh Debian 12 machine.
# It is idempotent: a second run only checks what is already there.
#
#   scripts/setup.sh            system packages + ONNX Runtime library
#   SETUP_TRAIN=1 scripts/setup.sh   also the Python training stack
#   SETUP_BROWSER=1 scripts/setup.sh Debian's Chromium and Firefox ESR and the
#                                    e2e scripts' npm packages (playwright-core
#                                    drives /usr/bin/chromium, puppeteer-core
#                                    /usr/bin/firefox-esr; neither downloads
#                                    a browser)
#   SETUP_PEERS=1 scripts/setup.sh   the real peers the capture tests feed
#                                    sonolive from: pydicom and dcmtk/
#                                    dicom3tools (DICOM cines, checked by
#                                    dciodvfy), the OpenIGTLink library, and
#                                    Orthanc with DICOMweb (the PACS exams
#                                    are sent to), coturn (a real TURN
#                                    server), nftables and curl (the
#                                    firewalled-clinic namespace test) and
#                                    Redis (multi-node LiveKit); tests
#                                    start their own
#
# ORT_LIB=/path/libonnxruntime.so skips the download when that file exists.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
ort_version=1.29.0
ort_sha256=89688f5cf51c7e31befbb7b9101bc027799009b18d1baa9a5b1146a72e69538d
ort_dir="$root/.cache/onnxruntime-$ort_version"

log() { printf 'setup: %s\n' "$*" >&2; }

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

pkgs=(build-essential pkg-config libopencv-dev libx264-dev libvpx-dev ffmpeg gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav ca-certificates)
# npm fetches the ONNX Runtime tarball; use Debian's only when none is on PATH.
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
if [ "${SETUP_TRAIN:-0}" = 1 ]; then
  pkgs+=(python3-torch python3-torchvision python3-onnx python3-numpy python3-pil libopenblas0-pthread)
fi
if [ "${SETUP_BROWSER:-0}" = 1 ]; then
  pkgs+=(chromium chromium-driver firefox-esr)
fi
if [ "${SETUP_PEERS:-0}" = 1 ]; then
  pkgs+=(python3-pydicom dcmtk dicom3tools libopenigtlink-dev orthanc orthanc-dicomweb coturn nftables curl redis-server)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ONNX Runtime CPU library. onnxruntime-node ships the shared library inside
# its npm tarball; we unpack it ourselves and never run its install script.
if [ -n "${ORT_LIB:-}" ] && [ -f "$ORT_LIB" ]; then
  log "using ORT_LIB=$ORT_LIB"
elif [ -f "$ort_dir/libonnxruntime.so" ]; then
  :
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  log "fetching onnxruntime-node@$ort_version from npm"
  (cd "$tmp" && npm pack --silent "onnxruntime-node@$ort_version" >/dev/null)
  tar -xzf "$tmp"/onnxruntime-node-"$ort_version".tgz -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
  got=$(sha256sum "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" | cut -d' ' -f1)
  if [ "$got" != "$ort_sha256" ]; then
    log "libonnxruntime.so.1 sha256 mismatch: got $got, want $ort_sha256"
    exit 1
  fi
  mkdir -p "$ort_dir"
  install -m 0644 "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$ort_dir/libonnxruntime.so"
  log "ONNX Runtime $ort_version cached in $ort_dir"
fi

# livekit-client's ES module for the watch page (ui/static/vendor), from
# its npm tarball, checked; embedded in the binary at build time.
lkc_version=2.23.0
lkc_sha256=053820ce316a0d9881e54d4745eeb45b96575c05d3591a214f318168336e1367
lkc_dir="$root/ui/static/vendor"
if [ ! -f "$lkc_dir/livekit-client.esm.mjs" ] || ! echo "$lkc_sha256  $lkc_dir/livekit-client.esm.mjs" | sha256sum -c --status; then
  tmp_lkc=$(mktemp -d)
  log "fetching livekit-client@$lkc_version from npm"
  (cd "$tmp_lkc" && npm pack --silent "livekit-client@$lkc_version" >/dev/null)
  tar -xzf "$tmp_lkc/livekit-client-$lkc_version.tgz" -C "$tmp_lkc" package/dist/livekit-client.esm.mjs package/LICENSE
  got=$(sha256sum "$tmp_lkc/package/dist/livekit-client.esm.mjs" | cut -d' ' -f1)
  if [ "$got" != "$lkc_sha256" ]; then
    log "livekit-client.esm.mjs sha256 mismatch: got $got, want $lkc_sha256"
    rm -rf "$tmp_lkc"
    exit 1
  fi
  mkdir -p "$lkc_dir"
  install -m 0644 "$tmp_lkc/package/dist/livekit-client.esm.mjs" "$lkc_dir/livekit-client.esm.mjs"
  install -m 0644 "$tmp_lkc/package/LICENSE" "$lkc_dir/livekit-client.LICENSE"
  rm -rf "$tmp_lkc"
fi

# Browser tests: npm packages pinned by e2e/package-lock.json. npm ci does not
# fetch browsers (playwright-core has no install script).
if [ "${SETUP_BROWSER:-0}" = 1 ]; then
  if [ ! -d "$root/e2e/node_modules/playwright-core" ] || [ ! -d "$root/e2e/node_modules/puppeteer-core" ] || [ "$root/e2e/package-lock.json" -nt "$root/e2e/node_modules/.package-lock.json" ]; then
    log "installing e2e npm packages"
    (cd "$root/e2e" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  fi
fi

# LiveKit, the real SFU the scale-out tests publish into: built from source
# at a pinned release (newer ones need forks the module proxy does not
# serve), outside this module so its dependencies never mix with ours.
if [ "${SETUP_PEERS:-0}" = 1 ]; then
  lk_dir="$root/.cache/livekit-1.9.11"
  if [ ! -x "$lk_dir/server" ]; then
    log "building livekit-server v1.9.11"
    mkdir -p "$lk_dir"
    (cd "$lk_dir" && GOFLAGS= GOBIN="$lk_dir" go install github.com/livekit/livekit-server/cmd/server@v1.9.11)
  fi
fi
