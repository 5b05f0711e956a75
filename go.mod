module sonolive

go 1.26.8

require (
	github.com/yalue/onnxruntime_go v1.36.0
	go.uber.org/zap v1.28.0
	gocv.io/x/gocv v0.43.0
)

require go.uber.org/multierr v1.10.0 // indirect
