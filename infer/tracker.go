package infer

import (
	"sort"

	"sonolive/frame"
	"sonolive/shape"
)

// TrackerConfig tunes how boxes are carried between inferences.
type TrackerConfig struct {
	// MatchIoU is the overlap a detection needs with a track's predicted box
	// to continue it (default 0.25).
	MatchIoU float32
	// MinHits: a track is shown once the detector has seen it this many
	// times (default 2). A single-frame false positive never reaches the
	// screen; a real lesion appears one inference later.
	MinHits int
	// MaxMisses: a track ends after the detector missed it this many
	// inferences in a row (default 3).
	MaxMisses int
	// MaxCoast: a track is hidden when its newest detection is more than
	// this many frames old (default 15, half a second at 30 fps).
	MaxCoast int
	// Alpha and Beta are the alpha-beta filter gains for position and
	// velocity (defaults 0.7, 0.3): a light constant-velocity Kalman filter.
	Alpha, Beta float32
	// FirstID is the first track id (default 1). A session numbers its
	// tracks on across pipeline runs, so an id (which verdicts and exam
	// findings refer to) names one lesion for the session's whole life.
	FirstID uint64
}

func (c TrackerConfig) withDefaults() TrackerConfig {
	if c.MatchIoU <= 0 {
		c.MatchIoU = 0.25
	}
	if c.MinHits <= 0 {
		c.MinHits = 2
	}
	if c.MaxMisses <= 0 {
		c.MaxMisses = 3
	}
	if c.MaxCoast <= 0 {
		c.MaxCoast = 15
	}
	if c.Alpha <= 0 {
		c.Alpha = 0.7
	}
	if c.Beta <= 0 {
		c.Beta = 0.3
	}
	return c
}

type track struct {
	id      uint64
	box     [4]float32 // smoothed x1, y1, x2, y2 at seq
	vel     [4]float32 // per frame
	seq     uint64     // frame of the newest detection
	hits    int
	misses  int
	det     frame.Detection // class, score, malignancy of the newest detection
	matched bool
	// radial is the smoothed outline, relative to the box (nil: the model
	// does not segment, or the outline is not star-shaped from the box's
	// centre, when the newest one is shown as it came).
	radial shape.Radial
}

// Outlines are smoothed on outlineRays rays, half-way toward each new one.
const (
	outlineRays  = 32
	outlineAlpha = 0.5
)

// boxRadial is d's outline on rays from its box's centre, in units of the
// box's half width and half height, so it follows the box as it moves
// and grows.
func boxRadial(d frame.Detection) shape.Radial {
	b := d.Box
	if len(d.Outline) < 3 || b.W() <= 0 || b.H() <= 0 {
		return nil
	}
	cx, cy, hw, hh := (b.X1+b.X2)/2, (b.Y1+b.Y2)/2, b.W()/2, b.H()/2
	pts := make([]shape.Point, len(d.Outline))
	for i, p := range d.Outline {
		pts[i] = shape.Point{X: float64((p.X - cx) / hw), Y: float64((p.Y - cy) / hh)}
	}
	return shape.ToRadial(pts, shape.Point{}, outlineRays)
}

// radialOutline places r on box b.
func radialOutline(r shape.Radial, b frame.Box) []frame.Point {
	cx, cy, hw, hh := (b.X1+b.X2)/2, (b.Y1+b.Y2)/2, b.W()/2, b.H()/2
	pts := r.Points(shape.Point{})
	out := make([]frame.Point, len(pts))
	for i, p := range pts {
		out[i] = frame.Point{X: cx + float32(p.X)*hw, Y: cy + float32(p.Y)*hh}
	}
	return out
}

func (t *track) predict(seq uint64) [4]float32 {
	// Extrapolate at most a few frames: ultrasound motion is not ballistic,
	// and a coasting box should stay near where the lesion was last seen.
	dt := float32(min(int64(seq)-int64(t.seq), 5))
	var p [4]float32
	for i := range p {
		p[i] = t.box[i] + t.vel[i]*dt
	}
	return p
}

func toBox(b [4]float32) frame.Box   { return frame.Box{X1: b[0], Y1: b[1], X2: b[2], Y2: b[3]} }
func fromBox(b frame.Box) [4]float32 { return [4]float32{b.X1, b.Y1, b.X2, b.Y2} }

// Tracker keeps lesion tracks across frames with stable ids, so boxes can be
// shown on frames whose own inference is late or skipped. Not safe for
// concurrent use.
type Tracker struct {
	cfg    TrackerConfig
	tracks []*track
	nextID uint64
	// confirmed counts tracks that reached MinHits: the tracks ever
	// shown, the live view's "boxes per minute".
	confirmed uint64
}

// NewTracker returns an empty tracker.
func NewTracker(cfg TrackerConfig) *Tracker {
	return &Tracker{cfg: cfg.withDefaults(), nextID: max(1, cfg.FirstID)}
}

// Update feeds the detections the model found on frame seq.
func (tr *Tracker) Update(seq uint64, dets []frame.Detection) {
	type pair struct {
		t   *track
		d   int
		iou float32
	}
	var pairs []pair
	for _, t := range tr.tracks {
		t.matched = false
		p := toBox(t.predict(seq))
		for i, d := range dets {
			if iou := p.IoU(d.Box); iou >= tr.cfg.MatchIoU {
				pairs = append(pairs, pair{t, i, iou})
			}
		}
	}
	sort.Slice(pairs, func(a, b int) bool { return pairs[a].iou > pairs[b].iou })
	used := make([]bool, len(dets))
	for _, p := range pairs {
		if p.t.matched || used[p.d] {
			continue
		}
		p.t.matched, used[p.d] = true, true
		tr.correct(p.t, seq, dets[p.d])
	}
	kept := tr.tracks[:0]
	for _, t := range tr.tracks {
		if !t.matched {
			t.misses++
			if t.misses >= tr.cfg.MaxMisses || int(seq-min(seq, t.seq)) > tr.cfg.MaxCoast {
				continue
			}
		}
		kept = append(kept, t)
	}
	tr.tracks = kept
	for i, d := range dets {
		if used[i] {
			continue
		}
		tr.tracks = append(tr.tracks, &track{id: tr.nextID, box: fromBox(d.Box), seq: seq, hits: 1, det: d, radial: boxRadial(d)})
		tr.nextID++
		if tr.cfg.MinHits <= 1 {
			tr.confirmed++
		}
	}
}

// Confirmed is how many tracks have reached MinHits so far: every track
// that was ever shown.
func (tr *Tracker) Confirmed() uint64 { return tr.confirmed }

func (tr *Tracker) correct(t *track, seq uint64, d frame.Detection) {
	dt := float32(int64(seq) - int64(t.seq))
	pred := t.predict(seq)
	z := fromBox(d.Box)
	for i := range pred {
		r := z[i] - pred[i]
		t.box[i] = pred[i] + tr.cfg.Alpha*r
		if dt > 0 {
			t.vel[i] += tr.cfg.Beta * r / dt
		}
	}
	t.seq = seq
	t.hits++
	if t.hits == tr.cfg.MinHits {
		tr.confirmed++
	}
	t.misses = 0
	t.det = d
	switch r := boxRadial(d); {
	case r == nil:
		t.radial = nil
	case t.radial == nil:
		t.radial = r
	default:
		t.radial = shape.Blend(t.radial, r, outlineAlpha)
	}
}

// Output returns the confirmed tracks as they should appear on frame seq:
// predicted boxes, with StaleAge = frames since the detector last saw them.
func (tr *Tracker) Output(seq uint64) []frame.Detection {
	var out []frame.Detection
	for _, t := range tr.tracks {
		age := int(int64(seq) - int64(t.seq))
		if t.hits < tr.cfg.MinHits || age > tr.cfg.MaxCoast {
			continue
		}
		d := t.det
		d.Box = toBox(t.predict(seq))
		switch {
		case t.radial != nil:
			d.Outline = radialOutline(t.radial, d.Box)
		case len(d.Outline) > 0:
			// As it came, moved with the box.
			dx, dy := (d.Box.X1+d.Box.X2-t.det.Box.X1-t.det.Box.X2)/2, (d.Box.Y1+d.Box.Y2-t.det.Box.Y1-t.det.Box.Y2)/2
			moved := make([]frame.Point, len(d.Outline))
			for i, p := range d.Outline {
				moved[i] = frame.Point{X: p.X + dx, Y: p.Y + dy}
			}
			d.Outline = moved
		}
		d.TrackID = t.id
		d.StaleAge = max(age, 0)
		out = append(out, d)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].TrackID < out[b].TrackID })
	return out
}
