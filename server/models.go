package server

import (
	"fmt"
	"sync"

	"go.uber.org/zap"

	"sonolive/infer"
)

// sessionModels are a session's detectors, one per organ preset, behind
// the infer.Switch the pipeline runs: an exam with another organ loads its
// model beside the one running and switches at the next inference, without
// reopening the source. Models stay loaded until the session ends (an
// inference may still be running on the old one, and the next exam likely
// wants it back).
type sessionModels struct {
	src  Source
	open DetectorOpener
	// fixed: the config names a model file (or none), not a preset, so
	// every organ runs it.
	fixed bool
	log   *zap.Logger

	mu       sync.Mutex
	sw       *infer.Switch // nil when the session runs without AI
	byPreset map[string]loadedModel
	preset   string
}

type loadedModel struct {
	det  infer.Detector
	name string
}

func newSessionModels(src Source, preset string, det infer.Detector, name string, open DetectorOpener, fixed bool, log *zap.Logger) *sessionModels {
	m := &sessionModels{src: src, open: open, fixed: fixed || det == nil, log: log,
		byPreset: map[string]loadedModel{}, preset: preset}
	if det != nil {
		m.sw = infer.NewSwitch(det)
		m.byPreset[preset] = loadedModel{det, name}
	}
	return m
}

// detector is what the pipeline runs: nil for no AI.
func (m *sessionModels) detector() infer.Detector {
	if m.sw == nil {
		return nil
	}
	return m.sw
}

// current is the running preset and model name.
func (m *sessionModels) current() (preset, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.preset, m.byPreset[m.preset].name
}

// use switches to preset's model, loading it the first time. With a fixed
// model it only notes the preset.
func (m *sessionModels) use(preset string) (name string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fixed {
		return m.byPreset[m.preset].name, nil
	}
	lm, ok := m.byPreset[preset]
	if !ok {
		src := m.src
		src.Preset = preset
		det, name, err := m.open(src)
		if err != nil {
			return "", fmt.Errorf("loading the %s model: %w", preset, err)
		}
		if det == nil {
			return "", fmt.Errorf("loading the %s model: none", preset)
		}
		lm = loadedModel{det, name}
		m.byPreset[preset] = lm
		m.log.Info("model loaded for the exam", zap.String("preset", preset), zap.String("model", name))
	}
	m.sw.Set(lm.det)
	m.preset = preset
	return lm.name, nil
}

// organ is the organ the running model is for: the preset's, or with a
// fixed model file the organ its metadata names (a hospital's own thyroid
// model runs whatever ai.preset says).
func (m *sessionModels) organ() string {
	m.mu.Lock()
	fixed, preset := m.fixed, m.preset
	m.mu.Unlock()
	if !fixed {
		return preset
	}
	md, _ := m.metadata()
	return md.Organ
}

// version is the running model's version, from its metadata.
func (m *sessionModels) version() string {
	md, _ := m.metadata()
	return md.Version
}

// metadata is the running model's metadata, when it has any.
func (m *sessionModels) metadata() (infer.Metadata, bool) {
	if m.sw == nil {
		return infer.Metadata{}, false
	}
	if md, ok := m.sw.Current().(interface{ Metadata() infer.Metadata }); ok {
		return md.Metadata(), true
	}
	return infer.Metadata{}, false
}

func (m *sessionModels) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, lm := range m.byPreset {
		closeDetector(lm.det)
		delete(m.byPreset, k)
	}
}
