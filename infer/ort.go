package infer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	ort "github.com/yalue/onnxruntime_go"
	"gocv.io/x/gocv"

	"sonolive/frame"
)

// ErrBadModel: the file is not a detector sonolive can run (wrong input
// shape, unknown output layout, unreadable ONNX).
var ErrBadModel = errors.New("unusable model")

// ErrNoRuntime: the ONNX Runtime shared library could not be found or loaded.
var ErrNoRuntime = errors.New("ONNX Runtime library not available")

// ortVersion is the ONNX Runtime release scripts/setup.sh provides.
const ortVersion = "1.29.0"

// The onnxruntime_go environment is process-wide (a C singleton), so its
// initialisation is too.
var ortEnv struct {
	sync.Mutex
	path string
	err  error
}

// FindLibrary returns the ONNX Runtime shared library to load: explicit, then
// $ORT_LIB, then the project cache next to the executable or the working
// directory (where scripts/setup.sh puts it), then the system's.
func FindLibrary(explicit string) (string, error) {
	var candidates []string
	if explicit != "" {
		candidates = append(candidates, explicit)
	} else if env := os.Getenv("ORT_LIB"); env != "" {
		candidates = append(candidates, env)
	} else {
		rel := filepath.Join(".cache", "onnxruntime-"+ortVersion, "libonnxruntime.so")
		if exe, err := os.Executable(); err == nil {
			dir := filepath.Dir(exe)
			candidates = append(candidates, filepath.Join(dir, rel), filepath.Join(dir, "..", rel))
		}
		if wd, err := os.Getwd(); err == nil {
			for d := wd; ; d = filepath.Dir(d) {
				candidates = append(candidates, filepath.Join(d, rel))
				if filepath.Dir(d) == d {
					break
				}
			}
		}
		candidates = append(candidates, "/usr/local/lib/libonnxruntime.so", "/usr/lib/libonnxruntime.so", "/usr/lib/x86_64-linux-gnu/libonnxruntime.so")
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	if explicit != "" || os.Getenv("ORT_LIB") != "" {
		return "", fmt.Errorf("%w: %s does not exist", ErrNoRuntime, candidates[0])
	}
	return "", fmt.Errorf("%w: run `make setup` or set ORT_LIB", ErrNoRuntime)
}

// InitRuntime loads the ONNX Runtime library once per process. Later calls
// with another path fail: the runtime cannot be swapped while loaded.
func InitRuntime(libPath string) error {
	ortEnv.Lock()
	defer ortEnv.Unlock()
	if ortEnv.path != "" || ortEnv.err != nil {
		if ortEnv.err == nil && libPath != "" && libPath != ortEnv.path {
			return fmt.Errorf("%w: already loaded from %s", ErrNoRuntime, ortEnv.path)
		}
		return ortEnv.err
	}
	path, err := FindLibrary(libPath)
	if err != nil {
		return err
	}
	ort.SetSharedLibraryPath(path)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		ortEnv.err = fmt.Errorf("%w: %s: %w", ErrNoRuntime, path, err)
		return ortEnv.err
	}
	ortEnv.path = path
	return nil
}

// Options configure an ONNX model session.
type Options struct {
	// LibPath is the ONNX Runtime library; empty searches (FindLibrary).
	LibPath string
	// Threads is ORT's intra-op thread count (default 1). With more than
	// one, spinning is off: a spinning pool would eat the cores the video
	// path needs between inferences.
	Threads int
	// Threshold is the minimum score for a detection (default: the model's
	// operating threshold from its metadata, else 0.3).
	Threshold float32
	// NMSIoU is the overlap above which the weaker box is dropped (default 0.5).
	NMSIoU float32
}

func (o Options) withDefaults() Options {
	if o.Threads <= 0 {
		o.Threads = 1
	}
	if o.NMSIoU <= 0 {
		o.NMSIoU = 0.5
	}
	return o
}

// Model is a detector backed by an ONNX Runtime session. Detect is not safe
// for concurrent use: a Model owns one input tensor; run one per goroutine.
type Model struct {
	meta    Metadata
	opts    Options
	session *ort.DynamicAdvancedSession
	input   *ort.Tensor[float32]
	outputs []ort.Value // nil entries are allocated by ORT per run
	outDims []ort.Shape
	pre     *preprocessor
	decode  func(outs []ort.Value) []frame.Detection
	// refs[i] is what the decoder needs again for detection i after NMS
	// (a segmentation's candidate); nil when it needs nothing.
	refs []int
	// outline traces a kept detection's lesion (box and ref in model
	// input terms); nil for a model that does not segment.
	outline     func(outs []ort.Value, b frame.Box, ref int) []frame.Point
	perClassNMS bool
	// seg outlines the detections the model itself does not (nil: none).
	seg *Segmenter
}

// UseSegmenter has s outline every detection the model does not outline
// itself; the model closes it. Its time counts in Result.Decode.
func (m *Model) UseSegmenter(s *Segmenter) {
	if m.seg != nil {
		m.seg.Close()
	}
	m.seg = s
}

// Result is one inference: detections in source pixels and how long each
// part took.
type Result struct {
	Detections []frame.Detection
	Preprocess time.Duration
	Infer      time.Duration
	Decode     time.Duration
}

// OpenModel loads an ONNX detector from a file.
func OpenModel(path string, opts Options) (*Model, error) {
	return openFile("model", path, func(b []byte) (*Model, error) { return NewModel(b, opts) })
}

// NewModel loads an ONNX detector from its bytes.
func NewModel(data []byte, opts Options) (*Model, error) {
	opts = opts.withDefaults()
	if err := InitRuntime(opts.LibPath); err != nil {
		return nil, err
	}
	inputs, outputs, err := ort.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return nil, fmt.Errorf("%w: not a readable ONNX model: %w", ErrBadModel, err)
	}
	raw, err := readMetadata(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadModel, err)
	}
	meta, err := parseMetadata(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: metadata: %w", ErrBadModel, err)
	}
	if len(inputs) != 1 {
		return nil, fmt.Errorf("%w: want 1 input, model has %d", ErrBadModel, len(inputs))
	}
	in := inputs[0]
	if in.DataType != ort.TensorElementDataTypeFloat || len(in.Dimensions) != 4 {
		return nil, fmt.Errorf("%w: input %s must be float32 NCHW", ErrBadModel, in)
	}
	d := in.Dimensions
	if d[1] > 0 {
		meta.Channels = int(d[1])
	}
	if d[2] > 0 && d[3] > 0 {
		meta.InputH, meta.InputW = int(d[2]), int(d[3])
	}
	if meta.Channels != 1 && meta.Channels != 3 {
		return nil, fmt.Errorf("%w: input %s must have 1 or 3 channels", ErrBadModel, in)
	}
	if meta.InputH <= 0 || meta.InputW <= 0 {
		return nil, fmt.Errorf("%w: input size is dynamic and metadata has no imgsz", ErrBadModel)
	}

	if opts.Threshold <= 0 {
		opts.Threshold = meta.OperatingThreshold
	}
	if opts.Threshold <= 0 {
		opts.Threshold = 0.3
	}
	m := &Model{meta: meta, opts: opts}
	outNames := make([]string, len(outputs))
	for i, o := range outputs {
		outNames[i] = o.Name
	}
	pad := float32(0)
	if meta.Format == "" {
		meta.Format = FormatUltralytics
	}
	switch meta.Format {
	case FormatCNet:
		err = m.setupCNet(outputs)
	case FormatUltralytics:
		pad = 114.0 / 255
		err = m.setupYOLO(outputs)
	default:
		err = fmt.Errorf("%w: unknown format %q (want %s or %s)", ErrBadModel, meta.Format, FormatCNet, FormatUltralytics)
	}
	if err != nil {
		return nil, err
	}
	m.meta = meta

	so, err := sessionOptions(opts.Threads)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	m.input, err = ort.NewTensor(ort.NewShape(1, int64(meta.Channels), int64(meta.InputH), int64(meta.InputW)), make([]float32, meta.Channels*meta.InputH*meta.InputW))
	if err != nil {
		return nil, fmt.Errorf("input tensor: %w", err)
	}
	m.session, err = ort.NewDynamicAdvancedSessionWithONNXData(data, []string{in.Name}, outNames, so)
	if err != nil {
		m.input.Destroy()
		return nil, fmt.Errorf("%w: session: %w", ErrBadModel, err)
	}
	m.outputs = make([]ort.Value, len(outputs))
	for i, shape := range m.outDims {
		t, err := ort.NewEmptyTensor[float32](shape)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("output tensor: %w", err)
		}
		m.outputs[i] = t
	}
	m.pre = newPreprocessor(meta.InputW, meta.InputH, meta.Channels, pad)
	return m, nil
}

// sessionOptions are every model's: threads intra-op threads, one
// inter-op, and no spinning (a spinning pool would eat the cores the video
// path needs between inferences). The caller destroys them.
func sessionOptions(threads int) (*ort.SessionOptions, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	err = so.SetIntraOpNumThreads(threads)
	if err == nil {
		err = so.SetInterOpNumThreads(1)
	}
	for _, kv := range [][2]string{{"session.intra_op.allow_spinning", "0"}, {"session.inter_op.allow_spinning", "0"}} {
		if err == nil {
			err = so.AddSessionConfigEntry(kv[0], kv[1])
		}
	}
	if err != nil {
		so.Destroy()
		return nil, fmt.Errorf("session options: %w", err)
	}
	return so, nil
}

// squareModel loads the runtime and reads the metadata of a helper model
// (segmenter, organ classifier) of the given format whose input is one
// square of side S (imgsz [S, S]).
func squareModel(data []byte, opts Options, format string) (raw map[string]string, side int, err error) {
	if err := InitRuntime(opts.LibPath); err != nil {
		return nil, 0, err
	}
	if raw, err = readMetadata(data); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadModel, err)
	}
	if raw["format"] != format {
		return nil, 0, fmt.Errorf("%w: format %q, want %s", ErrBadModel, raw["format"], format)
	}
	var sz [2]int
	if err := json.Unmarshal([]byte(raw["imgsz"]), &sz); err != nil || sz[0] <= 0 || sz[0] != sz[1] || sz[0] > 1024 {
		return nil, 0, fmt.Errorf("%w: imgsz %q: want [S, S]", ErrBadModel, raw["imgsz"])
	}
	return raw, sz[0], nil
}

// openFile reads a model file and loads it with load, naming the file
// (as what) in its errors.
func openFile[T any](what, path string, load func([]byte) (T, error)) (T, error) {
	var zero T
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("%s %s: %w", what, path, err)
	}
	m, err := load(data)
	if err != nil {
		return zero, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return m, nil
}

func readMetadata(data []byte) (map[string]string, error) {
	md, err := ort.GetModelMetadataWithONNXData(data)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	defer md.Destroy()
	keys, err := md.GetCustomMetadataMapKeys()
	if err != nil {
		return nil, fmt.Errorf("metadata keys: %w", err)
	}
	raw := make(map[string]string, len(keys))
	for _, k := range keys {
		v, _, err := md.LookupCustomMetadataMap(k)
		if err != nil {
			return nil, fmt.Errorf("metadata %s: %w", k, err)
		}
		raw[k] = v
	}
	return raw, nil
}

func (m *Model) setupCNet(outputs []ort.InputOutputInfo) error {
	meta := &m.meta
	if meta.Stride <= 0 {
		meta.Stride = 8
	}
	idx := map[string]int{"heatmap": -1, "boxes": -1, "malignancy": -1, "mask": -1}
	for i, o := range outputs {
		if _, ok := idx[o.Name]; ok {
			idx[o.Name] = i
		}
	}
	if idx["heatmap"] < 0 || idx["boxes"] < 0 {
		return fmt.Errorf("%w: %s needs outputs heatmap and boxes", ErrBadModel, FormatCNet)
	}
	gh, gw := meta.InputH/meta.Stride, meta.InputW/meta.Stride
	classes := len(meta.Names)
	if hd := outputs[idx["heatmap"]].Dimensions; len(hd) == 4 && hd[1] > 0 {
		classes = int(hd[1])
	}
	if classes == 0 {
		return fmt.Errorf("%w: no classes", ErrBadModel)
	}
	want := map[string]ort.Shape{
		"heatmap":    ort.NewShape(1, int64(classes), int64(gh), int64(gw)),
		"boxes":      ort.NewShape(1, 4, int64(gh), int64(gw)),
		"malignancy": ort.NewShape(1, 1, int64(gh), int64(gw)),
	}
	m.outDims = make([]ort.Shape, len(outputs))
	for i, o := range outputs {
		shape, ok := want[o.Name]
		if !ok {
			// An extra output we do not read still needs a buffer.
			shape = o.Dimensions
		}
		if o.Name == "mask" {
			// A lesion probability map at any stride that divides the input.
			d := o.Dimensions
			if len(d) != 4 || d[1] != 1 || d[2] <= 0 || d[3] <= 0 || int64(meta.InputH)%d[2] != 0 || int64(meta.InputW)%d[3] != 0 ||
				int64(meta.InputH)/d[2] != int64(meta.InputW)/d[3] {
				return fmt.Errorf("%w: output mask %v is not [1, 1, H/s, W/s]", ErrBadModel, d)
			}
			shape = d
		}
		if err := compatible(o.Dimensions, shape); err != nil {
			return fmt.Errorf("%w: output %s: %w", ErrBadModel, o.Name, err)
		}
		m.outDims[i] = shape
	}
	hi, bi, mi := idx["heatmap"], idx["boxes"], idx["malignancy"]
	if k := idx["mask"]; k >= 0 {
		mh, mw := int(m.outDims[k][2]), int(m.outDims[k][3])
		cell := float32(meta.InputH) / float32(mh)
		m.outline = func(outs []ort.Value, b frame.Box, _ int) []frame.Point {
			mask := outs[k].(*ort.Tensor[float32]).GetData()
			return maskOutline(func(i, j int) float32 { return mask[i*mw+j] }, mh, mw, cell, b)
		}
	}
	names := meta.Names
	boxPool := meta.MalignancyPool == PoolBox
	m.decode = func(outs []ort.Value) []frame.Detection {
		var malig []float32
		if mi >= 0 {
			malig = outs[mi].(*ort.Tensor[float32]).GetData()
		}
		return decodeCNet(outs[hi].(*ort.Tensor[float32]).GetData(), outs[bi].(*ort.Tensor[float32]).GetData(), malig, classes, gh, gw, meta.Stride, m.opts.Threshold, names, boxPool)
	}
	return nil
}

func (m *Model) setupYOLO(outputs []ort.InputOutputInfo) error {
	if len(outputs) == 2 {
		return m.setupYOLOSeg(outputs)
	}
	if len(outputs) != 1 || len(outputs[0].Dimensions) != 3 {
		return fmt.Errorf("%w: an Ultralytics export has one output [1, 4+nc, N] (detection) or two, [1, 4+nc+nm, N] and [1, nm, H/4, W/4] (segmentation); this model has %d outputs (set metadata format=%s for the project's layout)", ErrBadModel, len(outputs), FormatCNet)
	}
	d := outputs[0].Dimensions
	if d[1] <= 4 || d[2] <= 0 {
		return fmt.Errorf("%w: output %s is not [1, 4+nc, N] with a fixed N", ErrBadModel, outputs[0])
	}
	nc, n := int(d[1])-4, int(d[2])
	if len(m.meta.Names) > 0 && len(m.meta.Names) != nc {
		return fmt.Errorf("%w: metadata names %d classes, output has %d", ErrBadModel, len(m.meta.Names), nc)
	}
	m.outDims = []ort.Shape{ort.NewShape(1, int64(nc+4), int64(n))}
	m.perClassNMS = true
	names := m.meta.Names
	m.decode = func(outs []ort.Value) []frame.Detection {
		return decodeYOLO(outs[0].(*ort.Tensor[float32]).GetData(), nc, n, m.opts.Threshold, names)
	}
	return nil
}

// setupYOLOSeg reads an Ultralytics segmentation export: output0
// [1, 4+nc+nm, N] (boxes, class scores, nm mask coefficients) and output1
// [1, nm, mh, mw] (the mask prototypes). A detection's mask is
// sigmoid(coefficients · prototypes), cut to its box.
func (m *Model) setupYOLOSeg(outputs []ort.InputOutputInfo) error {
	det, pro := 0, 1
	if len(outputs[0].Dimensions) == 4 {
		det, pro = 1, 0
	}
	d, p := outputs[det].Dimensions, outputs[pro].Dimensions
	if len(d) != 3 || len(p) != 4 || d[2] <= 0 || p[1] <= 0 || p[2] <= 0 || p[3] <= 0 || d[1] <= 4+p[1] {
		return fmt.Errorf("%w: a segmentation export has [1, 4+nc+nm, N] and [1, nm, mh, mw]; this model has %v and %v", ErrBadModel, outputs[det], outputs[pro])
	}
	nm, mh, mw := int(p[1]), int(p[2]), int(p[3])
	nc, n := int(d[1])-4-nm, int(d[2])
	if len(m.meta.Names) > 0 && len(m.meta.Names) != nc {
		return fmt.Errorf("%w: metadata names %d classes, output has %d", ErrBadModel, len(m.meta.Names), nc)
	}
	if m.meta.InputH%mh != 0 || m.meta.InputW%mw != 0 || m.meta.InputH/mh != m.meta.InputW/mw {
		return fmt.Errorf("%w: prototypes %dx%d do not divide the input %dx%d", ErrBadModel, mh, mw, m.meta.InputH, m.meta.InputW)
	}
	m.outDims = make([]ort.Shape, 2)
	m.outDims[det] = ort.NewShape(1, int64(4+nc+nm), int64(n))
	m.outDims[pro] = ort.NewShape(1, int64(nm), int64(mh), int64(mw))
	m.perClassNMS = true
	names := m.meta.Names
	m.decode = func(outs []ort.Value) []frame.Detection {
		var dets []frame.Detection
		dets, m.refs = decodeYOLOSeg(outs[det].(*ort.Tensor[float32]).GetData(), nc, nm, n, m.opts.Threshold, names, m.refs[:0])
		return dets
	}
	cell := float32(m.meta.InputH) / float32(mh)
	m.outline = func(outs []ort.Value, b frame.Box, a int) []frame.Point {
		out := outs[det].(*ort.Tensor[float32]).GetData()
		protos := outs[pro].(*ort.Tensor[float32]).GetData()
		coef := make([]float32, nm)
		for k := range coef {
			coef[k] = out[(4+nc+k)*n+a]
		}
		plane := mh * mw
		return maskOutline(func(i, j int) float32 {
			var v float32
			for k, c := range coef {
				v += c * protos[k*plane+i*mw+j]
			}
			return float32(1 / (1 + math.Exp(-float64(v))))
		}, mh, mw, cell, b)
	}
	return nil
}

func compatible(have, want ort.Shape) error {
	if len(have) != len(want) {
		return fmt.Errorf("shape %v, want %v", have, want)
	}
	for i := range have {
		if have[i] > 0 && have[i] != want[i] {
			return fmt.Errorf("shape %v, want %v", have, want)
		}
	}
	return nil
}

// Threshold is the detection score threshold in force.
func (m *Model) Threshold() float32 { return m.opts.Threshold }

// Metadata returns what the model says about itself.
func (m *Model) Metadata() Metadata { return m.meta }

// Detect runs the model on a BGR frame and returns detections in the
// frame's pixels.
func (m *Model) Detect(img gocv.Mat) (Result, error) {
	var r Result
	t0 := time.Now()
	lb, err := m.pre.Fill(img, m.input.GetData())
	if err != nil {
		return r, err
	}
	t1 := time.Now()
	if err := m.session.Run([]ort.Value{m.input}, m.outputs); err != nil {
		return r, fmt.Errorf("inference: %w", err)
	}
	t2 := time.Now()
	all := m.decode(m.outputs)
	keep := nmsKeep(all, m.opts.NMSIoU, m.perClassNMS)
	dets := make([]frame.Detection, len(keep))
	for i, k := range keep {
		d := all[k]
		if m.outline != nil {
			ref := k
			if m.refs != nil {
				ref = m.refs[k]
			}
			d.Outline = m.outline(m.outputs, d.Box, ref)
			for j, p := range d.Outline {
				d.Outline[j] = lb.PointToSource(p)
			}
		}
		d.Box = lb.ToSource(d.Box)
		dets[i] = d
	}
	if m.seg != nil {
		if err := m.seg.outlineAll(img, dets); err != nil {
			return r, err
		}
	}
	t3 := time.Now()
	r.Detections = dets
	r.Preprocess, r.Infer, r.Decode = t1.Sub(t0), t2.Sub(t1), t3.Sub(t2)
	return r, nil
}

// RunRaw runs the session on whatever the input tensor holds: bare ORT,
// for benchmarks that compare the full path against it.
func (m *Model) RunRaw() error {
	return m.session.Run([]ort.Value{m.input}, m.outputs)
}

// Close frees the session and its tensors.
func (m *Model) Close() error {
	if m.seg != nil {
		m.seg.Close()
	}
	if m.pre != nil {
		m.pre.Close()
	}
	for _, o := range m.outputs {
		if o != nil {
			o.Destroy()
		}
	}
	if m.input != nil {
		m.input.Destroy()
	}
	if m.session != nil {
		return m.session.Destroy()
	}
	return nil
}
