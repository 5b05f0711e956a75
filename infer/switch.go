package infer

import (
	"errors"
	"sync/atomic"

	"gocv.io/x/gocv"
)

// ErrNoModel: a Switch was asked to detect before it was given a model.
var ErrNoModel = errors.New("no model loaded")

// Switch is a Detector whose model can be changed while a pipeline runs:
// starting a thyroid exam after a breast one loads the thyroid model
// without reopening the source. The scheduler's next inference uses the new
// model; one already running finishes on the old, so the caller keeps old
// models open until it closes the pipeline.
type Switch struct {
	cur atomic.Pointer[switchModel]
}

type switchModel struct{ det Detector }

// NewSwitch starts with det.
func NewSwitch(det Detector) *Switch {
	s := &Switch{}
	s.Set(det)
	return s
}

// Set makes det the model for the next inference.
func (s *Switch) Set(det Detector) { s.cur.Store(&switchModel{det}) }

// Current is the model in use.
func (s *Switch) Current() Detector {
	if m := s.cur.Load(); m != nil {
		return m.det
	}
	return nil
}

// Detect implements Detector.
func (s *Switch) Detect(img gocv.Mat) (Result, error) {
	det := s.Current()
	if det == nil {
		return Result{}, ErrNoModel
	}
	return det.Detect(img)
}
