package main

import (
	"errors"
	"sync"

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

	mu    sync.Mutex    // parts end on the series' goroutines
	parts []replay.Meta // the recording's finished parts
	cines []string      // their videos, once closed
}

// recorded is the finished parts' ids and videos (after Close).
func (s *recordSink) recorded() (ids, videos []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.parts {
		ids = append(ids, m.ID)
	}
	return ids, s.cines
}

func newRecordSink(dir, as, model, examID string, info capture.Info, log *zap.Logger) (*recordSink, error) {
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
	rs := &recordSink{lib: lib, relay: relay, log: log}
	rec, err := lib.NewSeries(replay.SeriesConfig{
		Recorder: replay.RecorderConfig{Source: source, Model: model, Exam: examID, Block: !info.Live, RequestKeyframe: relay.RequestKeyframe, Logger: log},
		OnPartEnd: func(m replay.Meta, err error) {
			if err == nil {
				rs.mu.Lock()
				rs.parts = append(rs.parts, m)
				rs.mu.Unlock()
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
	rs.rec = rec
	return rs, nil
}

func (s *recordSink) Write(f *frame.Frame, m *overlay.Metadata) error { return s.relay.Write(f, m) }

func (s *recordSink) Close() error {
	s.relay.RemoveTap(s.rec)
	m, err := s.rec.Close()
	s.relay.Close()
	s.mu.Lock()
	if err == nil {
		s.parts = append(s.parts, m)
	}
	for _, p := range s.parts {
		if v, err := s.lib.File(p.ID, "video.mp4"); err == nil {
			s.cines = append(s.cines, v)
		}
	}
	s.mu.Unlock()
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
