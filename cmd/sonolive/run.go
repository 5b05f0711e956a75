package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"sonolive/capture"
	"sonolive/infer"
	"sonolive/models"
	"sonolive/pipeline"
	"sonolive/replay"
)

// maskList collects repeated x,y,w,h (pixels or percent) flags.
type maskList []capture.Mask

func (r *maskList) String() string { return fmt.Sprint(*r) }
func (r *maskList) Set(s string) error {
	m, err := capture.ParseMask(s)
	if err != nil {
		return err
	}
	*r = append(*r, m)
	return nil
}

// modelFlags are shared by every command that loads a detector.
type modelFlags struct {
	model, preset, ortLib string
	threads               int
	threshold             float64
	// segmenter outlines the lesions: a sonolive-boxseg/1 file, "" for the
	// embedded one (when the build has it), "none" for boxes only.
	segmenter string
}

func (m *modelFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.model, "model", "", "ONNX detector file (sonolive-cnet/1 or Ultralytics YOLOv8/11 export); empty: the embedded model of --preset; 'none': no AI")
	fs.StringVar(&m.preset, "preset", models.DefaultPreset, "exam preset whose embedded model to load when --model is empty: "+strings.Join(models.Names(), ", "))
	fs.StringVar(&m.ortLib, "ort-lib", "", "ONNX Runtime shared library (default: $ORT_LIB, then .cache/onnxruntime-*/ from `make setup`, then the system's)")
	fs.IntVar(&m.threads, "threads", 1, "ONNX Runtime intra-op threads (spinning is always off)")
	fs.Float64Var(&m.threshold, "threshold", 0, "minimum detection score (0: the model's operating threshold from its metadata, else 0.3)")
	fs.StringVar(&m.segmenter, "segmenter", "", "lesion segmenter for outlines and calipers (sonolive-boxseg/1 file); empty: the embedded one; 'none': boxes only")
}

func (m *modelFlags) open() (*infer.Model, string, error) {
	opts := infer.Options{LibPath: m.ortLib, Threads: m.threads, Threshold: float32(m.threshold)}
	if m.model == "none" {
		return nil, "", nil
	}
	var (
		mod  *infer.Model
		name string
		err  error
	)
	if m.model != "" {
		mod, err = infer.OpenModel(m.model, opts)
		name = m.model
	} else {
		var data []byte
		if name, data, err = models.Load(m.preset); err != nil {
			return nil, "", err
		}
		if mod, err = infer.NewModel(data, opts); err != nil {
			err = fmt.Errorf("embedded model %s: %w", name, err)
		}
		name = "embedded:" + name
	}
	if err != nil {
		return nil, "", err
	}
	seg, err := m.openSegmenter(opts)
	if err != nil {
		mod.Close()
		return nil, "", err
	}
	if seg != nil {
		mod.UseSegmenter(seg)
	}
	return mod, name, nil
}

// openSegmenter loads the lesion segmenter the flags name (nil: none).
func (m *modelFlags) openSegmenter(opts infer.Options) (*infer.Segmenter, error) {
	switch m.segmenter {
	case "none":
		return nil, nil
	case "":
		data, ok := models.Segmenter()
		if !ok {
			return nil, nil
		}
		seg, err := infer.NewSegmenter(data, opts)
		if err != nil {
			return nil, fmt.Errorf("embedded segmenter: %w", err)
		}
		return seg, nil
	default:
		return infer.OpenSegmenter(m.segmenter, opts)
	}
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: sonolive run [flags]

Runs the live pipeline on one source: capture -> per-frame inference within
the latency budget (tracker boxes when late) -> overlay -> outputs.

Sources (--source):
`)
		for _, k := range capture.Kinds() {
			fmt.Fprintf(fs.Output(), "  %-8s %s\n", k.Name, k.Usage)
		}
		fmt.Fprint(fs.Output(), "\nFlags:\n")
		fs.PrintDefaults()
	}
	var (
		source      = fs.String("source", "phantom://", "frame source (see above)")
		budget      = fs.Duration("budget", 0, "longest a frame waits for its own inference (default: one frame interval of the source)")
		frames      = fs.Int("frames", 0, "stop after this many frames (0: until the source ends or Ctrl-C)")
		realtime    = fs.Bool("realtime", false, "pace files and the phantom at their frame rate (devices and streams are always live)")
		loop        = fs.Bool("loop", false, "restart a video file at its end")
		out         = fs.String("out", "", "write the annotated video to this file (.mp4, .avi)")
		meta        = fs.String("metadata", "", "write per-frame detection metadata as JSON Lines to this file (docs/metadata.md)")
		report      = fs.String("report", "", "write the run report as JSON to this file (docs/report.md); '-' for stdout")
		noOverlay   = fs.Bool("no-overlay", false, "do not burn boxes and HUD into the frames")
		hudTiming   = fs.Bool("hud", true, "show fps and latency in the burned-in HUD")
		openTimeout = fs.Duration("open-timeout", 5*time.Second, "give up opening a device or stream after this long")
		readTimeout = fs.Duration("read-timeout", 5*time.Second, "a stream read that takes longer counts as a lost stream")
		reconnect   = fs.Bool("reconnect", true, "reopen a device or stream that drops, with backoff")
		crop        = fs.String("crop", "", "crop every frame to x,y,w,h (the image area of the scanner's screen)")
		statsEvery  = fs.Duration("stats-interval", 5*time.Second, "log pipeline stats this often (0: never)")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		minHits     = fs.Int("min-hits", 2, "inferences that must see a lesion before it is shown")
		recordDir   = fs.String("record", "", "record the annotated run into this teaching library directory (docs/recording.md)")
		recordAs    = fs.String("record-source", "", "file the recording under this source id (so `serve`'s library for that source lists it); default: from --source")
		examDir     = fs.String("exam", "", "make the run an exam in this directory (serve's: <record dir>/exams): key images of the lesions, findings, report.html/json")
		organ       = fs.String("organ", "", "the exam's organ (default: --preset)")
		examDICOM   = fs.Bool("exam-dicom", false, "also export the exam as DICOM (key images, the recording as cine, TID 1500 report) into its dicom/ directory")
		masks       maskList
		mf          modelFlags
	)
	fs.Var(&masks, "mask", "fill x,y,w,h (pixels, or x%,y%,w%,h% of the frame) black before anything else sees the frame (PHI); repeatable. A frame a mask does not fit is blanked whole")
	mf.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected argument %q", fs.Arg(0))
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	defer log.Sync()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	region := capture.Region{Masks: masks}
	if *crop != "" {
		if region.Crop, err = capture.ParseRect(*crop); err != nil {
			return fmt.Errorf("--crop: %w", err)
		}
	}
	src, err := capture.Open(ctx, *source, capture.Options{
		Realtime: *realtime, Loop: *loop, Frames: *frames,
		OpenTimeout: *openTimeout, ReadTimeout: *readTimeout,
		Reconnect: *reconnect, Region: region, Logger: log,
	})
	if err != nil {
		return err
	}
	model, modelName, err := mf.open()
	if err != nil {
		src.Close()
		return err
	}
	cfg := pipeline.Config{
		Source: src, ModelName: modelName, Budget: *budget,
		Tracker: infer.TrackerConfig{MinHits: *minHits},
		Overlay: !*noOverlay, HUDTiming: *hudTiming,
		StatsInterval: *statsEvery, Logger: log,
	}
	if model != nil {
		defer model.Close()
		cfg.Detector = model
		md := model.Metadata()
		log.Info("model loaded", zap.String("model", modelName), zap.String("format", md.Format),
			zap.Strings("names", md.Names), zap.Int("input", md.InputW), zap.String("organ", md.Organ), zap.String("version", md.Version))
	}
	if *out != "" {
		cfg.Sinks = append(cfg.Sinks, pipeline.NewVideoFileSink(*out, src.Info().FPS))
	}
	if *meta != "" {
		ms, err := pipeline.NewMetadataSink(*meta)
		if err != nil {
			src.Close()
			return err
		}
		cfg.Sinks = append(cfg.Sinks, ms)
	}
	var ex *runExam
	if *examDir != "" {
		o := *organ
		if o == "" {
			o = mf.preset
		}
		as := *recordAs
		if as == "" {
			as = replay.SourceID(src.Info().ID)
		}
		if ex, err = startRunExam(*examDir, as, o, modelName, model, src.Info(), log); err != nil {
			src.Close()
			return err
		}
		defer ex.close()
		cfg.Observers = append(cfg.Observers, ex.picker)
	}
	var rs *recordSink
	if *recordDir != "" {
		examID := ""
		if ex != nil {
			examID = ex.exam.ID
		}
		if rs, err = newRecordSink(*recordDir, *recordAs, modelName, examID, src.Info(), log); err != nil {
			src.Close()
			return err
		}
		cfg.Sinks = append(cfg.Sinks, rs)
	}
	p, err := pipeline.New(cfg)
	if err != nil {
		src.Close()
		return err
	}
	info := src.Info()
	log.Info("pipeline starting", zap.String("source", info.ID), zap.Float64("fps", info.FPS), zap.Bool("live", info.Live), zap.Duration("budget", p.Budget()))
	rep, runErr := p.Run(ctx)
	log.Info("pipeline done", zap.Int("frames", rep.Frames), zap.Float64("fps", rep.FPS),
		zap.Float64("total_p99_ms", rep.LatencyMS["total"].P99), zap.Uint64("deadline_misses", rep.DeadlineMisses))
	if *report != "" {
		if err := writeJSON(*report, rep); err != nil {
			return err
		}
	}
	if ex != nil {
		var ids, cines []string
		if rs != nil {
			ids, cines = rs.recorded()
		}
		if err := ex.finish(ids, cines, *examDICOM); err != nil {
			return err
		}
	}
	return runErr
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}
