package main

import (
	"errors"

	"go.uber.org/zap"

	"sonolive/capture"
	"sonolive/frame"
	"sonolive/overlay"
	"sonolive/replay"
	"sonolive/stream"
)

// recordSink records a `run` into the teaching library the way `serve`
// does: one encode (the relay, with no viewers) and the recorder as its
// tap.
type recordSink struct {
	lib   *replay.Library
	relay *stream.Relay
	rec   *replay.Series
	log   *zap.Logger
}

func newRecordSink(dir, as, model string, info capture.Info, log *zap.Logger) (*recordSink, error) {
	lib, err := replay.OpenLibrary(dir, log)
	if err != nil {
		return nil, err
	}
	source := as
	if source == "" {
		source = info.ID
	}
	relay, err := stream.New(stream.Config{
		Source: source, Encoder: stream.EncoderConfig{FPS: info.FPS},
		// A file read faster than real time still records at its pace.
		FrameClock: !info.Live, Logger: log,
	})
	if err != nil {
		lib.Close()
		return nil, err
	}
	rec, err := lib.NewSeries(replay.SeriesConfig{
		Recorder: replay.RecorderConfig{Source: source, Model: model, Block: !info.Live, RequestKeyframe: relay.RequestKeyframe, Logger: log},
		OnPartEnd: func(m replay.Meta, err error) {
			if err == nil {
				log.Info("recorded part", zap.String("recording", m.ID), zap.Int("part", m.Part), zap.Float64("duration_s", m.DurationS))
			}
		},
	})
	if err != nil {
		relay.Close()
		lib.Close()
		return nil, err
	}
	relay.AddTap(rec)
	return &recordSink{lib: lib, relay: relay, rec: rec, log: log}, nil
}

func (s *recordSink) Write(f *frame.Frame, m *overlay.Metadata) error { return s.relay.Write(f, m) }

func (s *recordSink) Close() error {
	s.relay.RemoveTap(s.rec)
	m, err := s.rec.Close()
	s.relay.Close()
	s.lib.Close()
	if errors.Is(err, replay.ErrNotFound) {
		s.log.Warn("nothing recorded")
		return nil
	}
	if err != nil {
		return err
	}
	s.log.Info("recorded", zap.String("recording", m.ID), zap.Float64("duration_s", m.DurationS),
		zap.Int("frames", m.Frames), zap.Int("lesion_events", len(m.LesionEvents)))
	return nil
}
