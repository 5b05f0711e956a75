# sonolive — see README.md. Every target that needs system packages runs
# scripts/setup.sh first; it is idempotent and quick when all is installed.

TAGS    := gocv_specific_modules,gocv_videoio
export GOFLAGS := -tags=$(TAGS)
export ORT_LIB ?= $(CURDIR)/.cache/onnxruntime-1.29.0/libonnxruntime.so
export SONOLIVE_DATA ?= $(abspath $(CURDIR)/../shared/data)
PY      := /usr/bin/python3
SOURCE  ?= phantom://?seed=1&lesions=2
OUT     ?= out

.PHONY: setup setup-train setup-browser setup-peers build run run-offline test test-race test-train fuzz fuzz-smoke soak vet bench bench-viewers train train-phantom testmodels clean

setup:
	bash scripts/setup.sh

setup-train:
	SETUP_TRAIN=1 bash scripts/setup.sh

setup-browser:
	SETUP_BROWSER=1 bash scripts/setup.sh

setup-peers:
	SETUP_PEERS=1 bash scripts/setup.sh

build: setup
	go build -o bin/sonolive ./cmd/sonolive

# The live demo on the embedded default: the phantom at 720p30 and the
# shipped breast model, served on http://localhost:8080. It prints the
# sonographer's link; that page makes invite links for experts. Ctrl-C stops.
run: build
	./bin/sonolive serve $(if $(CONFIG),--config $(CONFIG))

# The same pipeline offline, no server: annotated video, metadata and report
# under $(OUT)/.
run-offline: build
	mkdir -p $(OUT)
	./bin/sonolive run --source '$(SOURCE)' --realtime --out $(OUT)/annotated.mp4 --metadata $(OUT)/metadata.jsonl --report $(OUT)/report.json

vet:
	gofmt -l . | tee /dev/stderr | (! read)
	go vet ./...

# All tests. matprofile lets the tests count live gocv Mats. The soak and
# the browser suite judge frame rates and voice delay on a 2-core machine,
# so they run one after the other, never beside each other. Then the
# concurrent packages again under the race detector, and every fuzz target
# briefly (its committed seeds plus a few seconds of new inputs).
HEAVY_PKGS := sonolive/cmd/sonolive sonolive/e2e
test: setup-train setup-browser setup-peers vet test-train
	mkdir -p $(OUT)/e2e
	SONOLIVE_SMOKE_MODEL=$(CURDIR)/$(OUT)/smoke.onnx go test -tags $(TAGS),matprofile -count=1 -timeout 30m $$(go list ./... | grep -v -x $(HEAVY_PKGS:%=-e %))
	SONOLIVE_SMOKE_MODEL=$(CURDIR)/$(OUT)/smoke.onnx SONOLIVE_E2E_OUT=$(CURDIR)/$(OUT)/e2e go test -p 1 -tags $(TAGS),matprofile -count=1 -timeout 45m $(HEAVY_PKGS)
	$(MAKE) --no-print-directory test-race fuzz-smoke

RACE_PKGS := ./server/... ./stream/... ./replay/... ./capture/... ./ingest/... ./pipeline/... ./infer/... ./auth/... ./audit/... ./organ/...
test-race: setup
	go test -race -tags $(TAGS),matprofile -count=1 -timeout 30m $(RACE_PKGS)
	# The exam store, picker and PACS sender under the race detector; -short
	# skips the real-time phantom scans (the race detector slows the
	# phantom's Go rendering below its frame rate).
	go test -race -short -tags $(TAGS),matprofile -count=1 -timeout 10m ./exam/... ./ice/... ./link/...

# Every fuzz target for FUZZTIME (CI: 10 s each); `make fuzz` runs them for
# 5 minutes each and writes the executions to $(OUT)/fuzz.txt.
FUZZTIME ?= 5m
fuzz-smoke: setup
	bash scripts/fuzz.sh 10s

fuzz: setup
	mkdir -p $(OUT)
	rm -f $(OUT)/fuzz.txt
	bash scripts/fuzz.sh $(FUZZTIME) $(OUT)/fuzz.txt

# The training code must not rot: unit tests, then a few steps and an export.
test-train: setup-train
	mkdir -p $(OUT)
	$(PY) -m unittest discover -s train -t .
	$(PY) -m train.train --smoke --out $(OUT)/smoke.onnx

# Reproduces the shipped breast and thyroid models (about 40 minutes each on
# 2 cores; the runs are time-budgeted, so weights vary a little by machine).
# The breast detector (v0.1.0) then gets its malignancy read-out refitted on
# its frozen features (train.malhead, under a minute): that is breast v0.2.0.
# The thyroid run starts from the breast run's weights.
# Real-data metrics come from the committed splits; phantom frames are
# training-only.
train: build setup-train
	./bin/sonolive phantom --out $(OUT)/phantom-train --frames 480 --every 4 --seeds 8 --first-seed 101
	$(PY) -m train.train --coco busi --coco-train $(OUT)/phantom-train --coco-train-share 0.22 --names lesion \
		--malignancy benign:malignant --organ breast --split-file train/splits/busi.json \
		--minutes 38 --seed 1 --version 0.1.0 --out $(OUT)/breast-v010.onnx --ckpt $(OUT)/breast.pt
	$(PY) -m train.malhead --base $(OUT)/breast.pt --coco busi --split-file train/splits/busi.json \
		--malignancy benign:malignant --views 4 --l2 0.01 --seed 1 --version 0.2.0 \
		--out models/breast.onnx --ckpt $(OUT)/breast-v020.pt
	$(PY) -m train.train --coco ddti --coco-train $(OUT)/phantom-train --coco-train-share 0.22 --names nodule \
		--organ thyroid --split-file train/splits/ddti.json --init $(OUT)/breast.pt \
		--minutes 38 --seed 1 --version 0.2.0 --out models/thyroid.onnx --ckpt $(OUT)/thyroid.pt

# Reproduces models/phantom-interim.onnx (the phantom preset): phantom frames
# from the Go generator, then training.
train-phantom: build setup-train
	./bin/sonolive phantom --out $(OUT)/phantom-train --frames 480 --every 4 --seeds 8 --first-seed 101
	./bin/sonolive phantom --out $(OUT)/phantom-val --frames 300 --every 5 --seeds 2 --first-seed 1
	$(PY) -m train.train --coco $(OUT)/phantom-train --val-coco $(OUT)/phantom-val --names lesion \
		--organ phantom --minutes 9 --seed 1 --out models/phantom-interim.onnx

bench: setup
	mkdir -p $(OUT)
	go test -run '^$$' -bench . -benchmem -count 6 ./infer/ ./overlay/ ./capture/ ./stream/ | tee $(OUT)/bench.txt

# N pion viewers against a server started here (720p30 phantom, shipped
# model): frames per viewer, relay CPU and memory per viewer.
VIEWERS ?= 50
bench-viewers: build
	mkdir -p $(OUT)
	bash scripts/bench-viewers.sh $(VIEWERS) $(OUT)

testmodels: setup-train
	$(PY) train/export_testmodels.py

clean:
	rm -rf bin $(OUT)
