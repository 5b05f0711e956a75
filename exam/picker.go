package exam

import (
	"context"
	"errors"
	"image"
	"math"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/frame"
	"sonolive/overlay"
)

// Picker keeps a key image for every lesion track that persists while an
// exam is open: of the frames the detector itself saw the lesion on (not
// the tracker's carried boxes), the one with the best quality (score,
// larger cross-section, sharpness, box not cut by the image edge). It sits
// on the pipeline as an Observer, so it sees clean pixels; it copies a
// frame only when the quality improves, at most every MinInterval per
// track, and hands saving to its own goroutine through a mailbox that keeps
// the newest candidate per track: the video never waits for the disk, and
// a track's last candidate is never dropped.
//
// A lesion scanned past again comes back on a new track. Tracks that never
// overlapped in time and look alike (depth, size, the lesion's appearance)
// are gathered into one finding, which keeps the better key image.
type Picker struct {
	cfg   PickerConfig
	store *Store
	log   *zap.Logger

	mu       sync.Mutex
	exam     string  // the open exam; "" when none
	calib    float64 // the exam's calibration (mm per pixel), 0: none
	epoch    int     // bumped when the tracker restarts (ids start over)
	tracks   map[trackKey]*track
	pending  map[trackKey]*candidate // for the writer, newest per track
	deleted  map[trackKey]bool       // tracks whose finding was deleted
	writing  int                     // candidates being saved
	idle     *sync.Cond              // signalled when pending empties and writing is 0
	wake     chan struct{}
	findings []findingRef // this exam's findings, for gathering tracks
	// seen is each ground-truth lesion's time in view during the exam
	// (sources with truth only); lastAt is the previous frame's time.
	seen   map[int]time.Duration
	lastAt time.Time
}

// PickerConfig tunes the picker.
type PickerConfig struct {
	// MinDuration: a track seen at least this long (default 1 s) is a
	// lesion worth a key image.
	MinDuration time.Duration
	// MinFresh: ...and the detector itself found it on this many frames
	// (default 3).
	MinFresh int
	// MinInterval between frame copies of one track (default 200 ms).
	MinInterval time.Duration
	// SaveEvery: a qualified track's better key image is saved at most
	// this often (default 2 s), and when the track ends.
	SaveEvery time.Duration
	// EndAfter: a track not seen for this long has ended (default 1 s).
	EndAfter time.Duration
	// OnFinding hears about each finding saved or replaced.
	OnFinding func(exam string, f Finding)
	// Clock is a frame's time for the durations above (default: its
	// capture time). An offline run faster than real time gives media
	// time instead.
	Clock  func(*frame.Frame) time.Time
	Logger *zap.Logger
}

type trackKey struct {
	epoch int
	id    uint64
}

type track struct {
	first, last time.Time
	fresh       int
	bestQ       float64    // quality of the best frame so far
	best        *candidate // a better frame not yet handed to the writer
	cloned      time.Time
	sentAt      time.Time
	qualified   bool
	// with are the tracks seen on the same frames: other lesions.
	with map[trackKey]bool
}

// candidate is one key image in waiting; it owns img.
type candidate struct {
	key   trackKey
	exam  string
	calib float64
	img   gocv.Mat
	det   frame.Detection
	geom  frame.Geometry
	truth []frame.Box
	ids   []int
	// truthOutlines are the truth lesions' outlines, when the source
	// knows them.
	truthOutlines [][]frame.Point
	seq           uint64
	at            time.Time
	q             float64
	with          []trackKey // tracks seen together with it: other lesions
	// cut: the box touches the image's edge, so its size and shape are
	// not the lesion's.
	cut bool
}

func (c *candidate) close() { c.img.Close() }

// findingRef is what the writer knows of a finding to gather tracks into
// it.
type findingRef struct {
	n        int
	q        float64
	desc     []float32
	cy, size float64 // box centre depth and size, as fractions of the frame height
	aspect   float64 // box width over height
	cut      bool    // its key image's box touches the edge
	tracks   []trackKey
	apart    map[trackKey]bool // tracks seen together with its tracks
}

// NewPicker returns a picker saving into store. Run its writer.
func NewPicker(store *Store, cfg PickerConfig) *Picker {
	if cfg.MinDuration <= 0 {
		cfg.MinDuration = time.Second
	}
	if cfg.MinFresh <= 0 {
		cfg.MinFresh = 3
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 200 * time.Millisecond
	}
	if cfg.SaveEvery <= 0 {
		cfg.SaveEvery = 2 * time.Second
	}
	if cfg.EndAfter <= 0 {
		cfg.EndAfter = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Clock == nil {
		cfg.Clock = func(f *frame.Frame) time.Time { return f.Captured }
	}
	p := &Picker{cfg: cfg, store: store, log: cfg.Logger, tracks: map[trackKey]*track{},
		pending: map[trackKey]*candidate{}, deleted: map[trackKey]bool{}, wake: make(chan struct{}, 1)}
	p.idle = sync.NewCond(&p.mu)
	return p
}

// SetExam starts picking for exam (its calibration in mm per pixel, 0 for
// none); "" stops. Tracks of the exam before are let go: call Flush first
// to keep them.
func (p *Picker) SetExam(id string, calibrationMM float64, existing []Finding) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if id != p.exam {
		p.releaseTracks()
		p.findings = nil
		p.seen, p.lastAt = map[int]time.Duration{}, time.Time{}
		// A restarted server resumes an exam: its findings stay, and new
		// tracks may gather into them.
		for _, f := range existing {
			h := float64(max(f.Height, 1))
			size := math.Sqrt(f.Box[2]*f.Box[3]) / h
			p.findings = append(p.findings, findingRef{n: f.N, q: f.Score * (0.5 + size), cy: (f.Box[1] + f.Box[3]/2) / h, size: size})
		}
	}
	p.exam, p.calib = id, calibrationMM
}

// GroundTruth is how long each ground-truth lesion was in view during the
// open exam (nil for sources without truth).
func (p *Picker) GroundTruth() []LesionSeen {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []LesionSeen
	for id, d := range p.seen {
		out = append(out, LesionSeen{Lesion: id, SeenS: round1(d.Seconds())})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Lesion < out[j].Lesion })
	return out
}

// Restart tells the picker the tracker starts over (a new pipeline run):
// track ids from now on are new lesions.
func (p *Picker) Restart() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endTracks(time.Time{}, true)
	p.epoch++
}

func (p *Picker) releaseTracks() {
	for k, t := range p.tracks {
		if t.best != nil {
			t.best.close()
		}
		delete(p.tracks, k)
	}
}

// Observe implements pipeline.Observer.
func (p *Picker) Observe(f *frame.Frame) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exam == "" {
		return
	}
	now := p.cfg.Clock(f)
	type placed struct {
		k   trackKey
		box frame.Box
	}
	if len(f.TruthIDs) > 0 && !p.lastAt.IsZero() {
		// A frame stands for the time since the one before, capped: a
		// stall must not count as time in view.
		dt := min(now.Sub(p.lastAt), 200*time.Millisecond)
		for _, id := range f.TruthIDs {
			p.seen[id] += dt
		}
	}
	p.lastAt = now
	var here []placed
	for _, d := range f.Detections {
		if d.TrackID == 0 {
			continue
		}
		k := trackKey{p.epoch, d.TrackID}
		if p.deleted[k] {
			continue
		}
		t := p.tracks[k]
		if t == nil {
			t = &track{first: now}
			p.tracks[k] = t
		}
		t.last = now
		here = append(here, placed{k, d.Box})
		if d.StaleAge == 0 {
			t.fresh++
			if q, cut := quality(f, d); q > t.bestQ*1.03 && now.Sub(t.cloned) >= p.cfg.MinInterval {
				if t.best != nil {
					t.best.close()
				}
				d.Outline = append([]frame.Point(nil), d.Outline...)
				t.best = &candidate{key: k, exam: p.exam, calib: p.calib, img: f.Image.Clone(), det: d, geom: f.Geometry,
					truth: append([]frame.Box(nil), f.Truth...), ids: append([]int(nil), f.TruthIDs...), truthOutlines: append([][]frame.Point(nil), f.TruthOutlines...),
					seq: f.Seq, at: now, q: q, cut: cut}
				t.bestQ, t.cloned = q, now
			}
		}
		if !t.qualified && t.last.Sub(t.first) >= p.cfg.MinDuration && t.fresh >= p.cfg.MinFresh {
			t.qualified = true
		}
		// A view cut by the edge waits: a whole one may follow (it is
		// still saved when the track ends).
		if t.qualified && t.best != nil && !t.best.cut && now.Sub(t.sentAt) >= p.cfg.SaveEvery {
			p.send(t, now)
		}
	}
	// Tracks shown apart on one frame are two lesions; two tracks on one
	// place are the tracker doubling one lesion, not two.
	for _, a := range here {
		for _, b := range here {
			if a.k == b.k || a.box.IoU(b.box) > 0.1 {
				continue
			}
			t := p.tracks[a.k]
			if t.with == nil {
				t.with = map[trackKey]bool{}
			}
			t.with[b.k] = true
		}
	}
	p.endTracks(now, false)
}

// endTracks hands over the last candidate of tracks not seen for EndAfter
// (all of them when all is set) and forgets them.
func (p *Picker) endTracks(now time.Time, all bool) {
	for k, t := range p.tracks {
		if !all && now.Sub(t.last) < p.cfg.EndAfter {
			continue
		}
		if t.qualified && t.best != nil {
			p.send(t, now)
		} else if t.best != nil {
			t.best.close()
		}
		delete(p.tracks, k)
	}
}

func (p *Picker) send(t *track, now time.Time) {
	c := t.best
	t.best, t.sentAt = nil, now
	c.with = c.with[:0]
	for k := range t.with {
		c.with = append(c.with, k)
	}
	if old := p.pending[c.key]; old != nil {
		old.close()
	}
	p.pending[c.key] = c
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Flush hands over every qualified track's best frame and waits until all
// are saved (or ctx ends): End exam calls it so the lesion on screen at the
// end is in the report.
func (p *Picker) Flush(ctx context.Context) error {
	p.mu.Lock()
	for _, t := range p.tracks {
		if t.qualified && t.best != nil {
			p.send(t, time.Now())
		}
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.mu.Lock()
		defer p.mu.Unlock()
		for (len(p.pending) > 0 || p.writing > 0) && ctx.Err() == nil {
			p.idle.Wait()
		}
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		p.idle.Broadcast()
		p.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Drain saves, on the caller's goroutine, the best frames of the tracks
// that qualified and what waits for the writer: a session stopped in the
// middle of an exam (a server shutdown) keeps the key images it had. Call
// it after Run has returned, before Close.
func (p *Picker) Drain() {
	p.mu.Lock()
	p.endTracks(time.Now(), true)
	var cs []*candidate
	for k, c := range p.pending {
		cs = append(cs, c)
		delete(p.pending, k)
	}
	p.mu.Unlock()
	for _, c := range cs {
		p.save(c)
		c.close()
	}
}

// Close lets go of every frame copy; call it after Run has returned.
func (p *Picker) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseTracks()
	for k, c := range p.pending {
		c.close()
		delete(p.pending, k)
	}
	p.idle.Broadcast()
}

// Run saves candidates until ctx ends.
func (p *Picker) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for {
			p.mu.Lock()
			var c *candidate
			for k, v := range p.pending {
				c = v
				delete(p.pending, k)
				break
			}
			if c == nil {
				p.idle.Broadcast()
				p.mu.Unlock()
				break
			}
			p.writing++
			p.mu.Unlock()
			p.save(c)
			c.close()
			p.mu.Lock()
			p.writing--
			p.mu.Unlock()
		}
	}
}

// save turns a candidate into a finding (a new one, or a better key image
// for the finding its track or a look-alike track already has).
func (p *Picker) save(c *candidate) {
	desc := describe(c.img, c.det.Box)
	h := float64(max(c.img.Rows(), 1))
	cy := float64(c.det.Box.Y1+c.det.Box.Y2) / 2 / h
	size := math.Sqrt(float64(c.det.Box.Area())) / h
	aspect := float64(c.det.Box.W()) / math.Max(1, float64(c.det.Box.H()))

	p.mu.Lock()
	if c.exam != p.exam {
		p.mu.Unlock()
		return // the exam ended while it waited
	}
	ref := p.match(c, desc, cy, size, aspect)
	n := 0
	if ref != nil {
		if c.q <= ref.q && !containsKey(ref.tracks, c.key) {
			// A look-alike track's frame is no better: only note the track.
			ref.add(c)
			p.mu.Unlock()
			return
		}
		if c.q <= ref.q {
			p.mu.Unlock()
			return
		}
		n = ref.n
	}
	p.mu.Unlock()

	f, extent := p.finding(c, n, ref)
	picture, annotated, err := c.pictures(extent)
	if err == nil {
		f, err = p.store.SaveFinding(c.exam, f, picture, annotated)
	}
	p.mu.Lock()
	notify := false
	defer func() {
		p.mu.Unlock()
		// Outside the lock: the callback may read the disk, and Observe
		// on the video path takes this lock.
		if notify && p.cfg.OnFinding != nil {
			p.cfg.OnFinding(c.exam, f)
		}
	}()
	if c.exam != p.exam {
		return // the exam ended while this one was saved
	}
	switch {
	case errors.Is(err, ErrDeleted):
		p.deleted[c.key] = true
		if ref != nil {
			for _, k := range ref.tracks {
				p.deleted[k] = true
			}
		}
		return
	case err != nil:
		p.log.Warn("key image not saved", zap.String("exam", c.exam), zap.Uint64("track", c.key.id), zap.Error(err))
		return
	}
	if ref == nil {
		p.findings = append(p.findings, findingRef{n: f.N})
		ref = &p.findings[len(p.findings)-1]
	}
	ref.q, ref.desc, ref.cy, ref.size, ref.aspect, ref.cut = c.q, desc, cy, size, aspect, c.cut
	ref.add(c)
	notify = true
}

// match is the finding c's lesion already has: the one holding its track,
// or one never seen together with it that looks alike (depth, size,
// shape, appearance).
func (p *Picker) match(c *candidate, desc []float32, cy, size, aspect float64) *findingRef {
	for i := range p.findings {
		if containsKey(p.findings[i].tracks, c.key) {
			return &p.findings[i]
		}
	}
	var best *findingRef
	bestSim := float32(0)
	for i := range p.findings {
		r := &p.findings[i]
		if r.desc == nil || r.apart[c.key] || r.seenWith(c.with) {
			p.log.Debug("not gathered: seen together", zap.Uint64("track", c.key.id), zap.Int("finding", r.n))
			continue // seen together: two lesions
		}
		// A view cut by the edge has the lesion's depth but not its
		// size or shape.
		shapeOff := !c.cut && !r.cut && (size > r.size*3.5 || r.size > size*3.5 || math.Abs(math.Log(aspect/r.aspect)) > 0.25)
		if math.Abs(cy-r.cy) > 0.08 || shapeOff {
			p.log.Debug("not gathered: depth, size or shape", zap.Uint64("track", c.key.id), zap.Int("finding", r.n),
				zap.Float64("depth", cy), zap.Float64("their_depth", r.cy), zap.Float64("size", size), zap.Float64("their_size", r.size),
				zap.Float64("aspect", aspect), zap.Float64("their_aspect", r.aspect))
			continue
		}
		s := similarity(desc, r.desc)
		if s >= 0.55 && s > bestSim {
			best, bestSim = r, s
		}
		if s < 0.55 {
			p.log.Debug("not gathered: looks different", zap.Uint64("track", c.key.id), zap.Int("finding", r.n), zap.Float32("similarity", s))
		}
	}
	if best != nil {
		p.log.Debug("track gathered into a finding", zap.Uint64("track", c.key.id), zap.Int("finding", best.n),
			zap.Float32("similarity", bestSim), zap.Float64("depth", cy), zap.Float64("size", size))
	}
	return best
}

// add notes that c's track is this finding's lesion.
func (r *findingRef) add(c *candidate) {
	if !containsKey(r.tracks, c.key) {
		r.tracks = append(r.tracks, c.key)
	}
	if r.apart == nil {
		r.apart = map[trackKey]bool{}
	}
	for _, k := range c.with {
		r.apart[k] = true
	}
}

func (r *findingRef) seenWith(keys []trackKey) bool {
	for _, k := range keys {
		if containsKey(r.tracks, k) {
			return true
		}
	}
	return false
}

// finding describes c as finding n (0: new).
func (p *Picker) finding(c *candidate, n int, ref *findingRef) (Finding, frame.Box) {
	d := c.det
	f := Finding{N: n, Auto: true, At: c.at.UTC(), Seq: c.seq, Width: c.img.Cols(), Height: c.img.Rows(),
		Box:   overlay.BoxMeta{round1(float64(d.Box.X1)), round1(float64(d.Box.Y1)), round1(float64(d.Box.W())), round1(float64(d.Box.H()))},
		Class: d.Class, Score: round3(float64(d.Score))}
	if d.Malignancy >= 0 {
		v := round3(float64(d.Malignancy))
		f.Malignancy = &v
	}
	if ref != nil {
		for _, k := range ref.tracks {
			f.Tracks = append(f.Tracks, k.id)
		}
	}
	if !containsID(f.Tracks, c.key.id) {
		f.Tracks = append(f.Tracks, c.key.id)
	}
	g, from := c.spacing()
	extent := f.Measure(c.img, d, g, from)
	for i, b := range c.truth {
		tb := TruthBox{Box: overlay.BoxMeta{float64(b.X1), float64(b.Y1), float64(b.W()), float64(b.H())}}
		if i < len(c.ids) {
			tb.Lesion = c.ids[i]
		}
		if w, h, ok := g.SizeMM(b); ok {
			tb.SizeMM = &[2]float64{round1(w), round1(h)}
		}
		if len(c.truthOutlines) == len(c.truth) {
			tb.Calipers = outlineCalipers(c.truthOutlines[i], g)
		}
		f.Truth = append(f.Truth, tb)
	}
	return f, extent
}

// measure is the lesion's extent on the key image: its boundary when one
// is found, else the detector's box.
// spacing is the geometry sizes are measured with: the source's, else the
// exam's calibration.
func (c *candidate) spacing() (frame.Geometry, string) {
	if c.geom.Known() {
		return c.geom, "source"
	}
	if c.calib > 0 {
		g := c.geom
		g.SpacingMM = [2]float64{c.calib, c.calib}
		return g, "calibration"
	}
	return c.geom, ""
}

// pictures encodes the key image clean and annotated, the lesion drawn
// with the extent it was measured on.
func (c *candidate) pictures(extent frame.Box) (clean, annotated []byte, err error) {
	if clean, err = encodeJPEG(c.img); err != nil {
		return nil, nil, err
	}
	drawn := c.img.Clone()
	defer drawn.Close()
	g, _ := c.spacing()
	d := c.det
	d.Box = extent
	overlay.NewDrawer(overlay.DefaultStyle()).DrawFindings(&drawn, []frame.Detection{d}, g)
	annotated, err = encodeJPEG(drawn)
	return clean, annotated, err
}

func encodeJPEG(img gocv.Mat) ([]byte, error) {
	buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, img, []int{gocv.IMWriteJpegQuality, 92})
	if err != nil {
		if buf != nil {
			buf.Close()
		}
		return nil, err
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), nil
}

// quality ranks a track's frames: the detector's score, a larger
// cross-section (the plane a sonographer measures on), sharpness, and a
// heavy penalty for a box cut by the image's edge.
func quality(f *frame.Frame, d frame.Detection) (q float64, cut bool) {
	bounds := image.Rect(0, 0, f.Image.Cols(), f.Image.Rows())
	if r := f.Geometry.Region; !r.Empty() {
		bounds = r.Intersect(bounds)
	}
	box := image.Rect(int(d.Box.X1), int(d.Box.Y1), int(math.Ceil(float64(d.Box.X2))), int(math.Ceil(float64(d.Box.Y2))))
	edge := 1.0
	const margin = 3
	if box.Min.X <= bounds.Min.X+margin || box.Min.Y <= bounds.Min.Y+margin || box.Max.X >= bounds.Max.X-margin || box.Max.Y >= bounds.Max.Y-margin {
		edge, cut = 0.3, true
	}
	box = box.Intersect(bounds)
	if box.Dx() < 4 || box.Dy() < 4 {
		return 0, cut
	}
	size := math.Sqrt(float64(box.Dx()*box.Dy())) / float64(max(bounds.Dy(), 1))
	return float64(d.Score) * edge * (0.5 + size) * (0.8 + 0.2*sharpness(f.Image, box)), cut
}

// sharpness is 0..1: the variance of the Laplacian over the box, saturating.
func sharpness(img gocv.Mat, r image.Rectangle) float64 {
	roi := img.Region(r)
	defer roi.Close()
	gray := gocv.NewMat()
	defer gray.Close()
	gocv.CvtColor(roi, &gray, gocv.ColorBGRToGray)
	lap := gocv.NewMat()
	defer lap.Close()
	gocv.Laplacian(gray, &lap, gocv.MatTypeCV32F, 1, 1, 0, gocv.BorderDefault)
	mean, std := gocv.NewMat(), gocv.NewMat()
	defer mean.Close()
	defer std.Close()
	gocv.MeanStdDev(lap, &mean, &std)
	v := std.GetDoubleAt(0, 0)
	v *= v
	return v / (v + 400)
}

// describe is the lesion's appearance: its box with a margin, 16x16
// grey, zero mean and unit norm.
func describe(img gocv.Mat, b frame.Box) []float32 {
	mw, mh := b.W()/4, b.H()/4
	r := image.Rect(int(b.X1-mw), int(b.Y1-mh), int(b.X2+mw), int(b.Y2+mh)).Intersect(image.Rect(0, 0, img.Cols(), img.Rows()))
	if r.Dx() < 4 || r.Dy() < 4 {
		return nil
	}
	roi := img.Region(r)
	defer roi.Close()
	gray, small := gocv.NewMat(), gocv.NewMat()
	defer gray.Close()
	defer small.Close()
	gocv.CvtColor(roi, &gray, gocv.ColorBGRToGray)
	gocv.Resize(gray, &small, image.Pt(16, 16), 0, 0, gocv.InterpolationArea)
	px, err := small.DataPtrUint8()
	if err != nil || len(px) != 256 {
		return nil
	}
	out := make([]float32, 256)
	var mean float64
	for _, v := range px {
		mean += float64(v)
	}
	mean /= 256
	var norm float64
	for i, v := range px {
		d := float64(v) - mean
		out[i] = float32(d)
		norm += d * d
	}
	if norm == 0 {
		return nil
	}
	k := float32(1 / math.Sqrt(norm))
	for i := range out {
		out[i] *= k
	}
	return out
}

// similarity is the normalised cross-correlation of two descriptors.
func similarity(a, b []float32) float32 {
	if len(a) != len(b) {
		return 0
	}
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func containsKey(ks []trackKey, k trackKey) bool {
	for _, v := range ks {
		if v == k {
			return true
		}
	}
	return false
}

func containsID(ids []uint64, id uint64) bool {
	for _, v := range ids {
		if v == id {
			return true
		}
	}
	return false
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
func round3(v float64) float64 { return math.Round(v*1e3) / 1e3 }
