package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"sonolive/capture"
	"sonolive/exam"
	"sonolive/frame"
	"sonolive/infer"
	"sonolive/models"
)

// runExam is `sonolive run --exam`: the run as one exam, its key images
// picked as in serve, ended with its report when the source ends.
type runExam struct {
	store  *exam.Store
	exam   exam.Exam
	picker *exam.Picker
	stop   context.CancelFunc
	done   chan struct{}
	log    *zap.Logger
}

func startRunExam(dir, source, organ, modelName string, model *infer.Model, info capture.Info, log *zap.Logger) (*runExam, error) {
	st := exam.Start{Organ: organ}
	if err := st.Check(models.Names()); err != nil {
		return nil, fmt.Errorf("--organ: %w", err)
	}
	store, err := exam.OpenStore(dir)
	if err != nil {
		return nil, err
	}
	m := exam.Model{Name: modelName}
	if model != nil {
		md := model.Metadata()
		m.Version, m.Calibrated = md.Version, md.Calibrated
	}
	e, err := store.Create(source, st, m, time.Now())
	if err != nil {
		return nil, err
	}
	cfg := exam.PickerConfig{Logger: log.Named("exam")}
	if !info.Live && info.FPS > 0 {
		// A file is read as fast as the model allows: a track's second is
		// the clip's second, not the wall clock's.
		start := time.Now()
		cfg.Clock = func(f *frame.Frame) time.Time {
			return start.Add(time.Duration(float64(f.Seq-1) / info.FPS * float64(time.Second)))
		}
	}
	r := &runExam{store: store, exam: e, picker: exam.NewPicker(store, cfg), done: make(chan struct{}), log: log}
	r.picker.SetExam(e.ID, 0, nil)
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go func() {
		defer close(r.done)
		r.picker.Run(ctx)
	}()
	log.Info("exam started", zap.String("exam", e.ID), zap.String("organ", organ), zap.String("dir", dir))
	return r, nil
}

// finish keeps the key images still pending, ends the exam with its
// recordings and writes the report (and the DICOM export when asked).
func (r *runExam) finish(recordings, cines []string, dicom bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.picker.Flush(ctx); err != nil {
		r.log.Warn("key images still pending at the end", zap.Error(err))
	}
	for _, id := range recordings {
		if err := r.store.AddRecording(r.exam.ID, id); err != nil {
			return err
		}
	}
	e, err := r.store.Finish(r.exam.ID, r.picker.GroundTruth(), time.Now())
	if err != nil {
		return err
	}
	fs, _ := r.store.Findings(e.ID)
	dir := filepath.Join(r.store.Dir(), e.ID)
	fmt.Printf("exam %s: %d findings; report %s\n", e.ID, len(fs), filepath.Join(dir, "report.html"))
	if dicom {
		objs, err := r.store.ExportDICOM(e.ID, exam.ExportOptions{Cines: cines})
		if err != nil {
			return err
		}
		fmt.Printf("DICOM: %d objects in %s\n", len(objs), filepath.Join(dir, "dicom"))
	}
	return nil
}

func (r *runExam) close() {
	r.stop()
	<-r.done
	r.picker.Close()
}
