package pipeline

import (
	"sonolive/frame"
)

// Report summarises a run. Its JSON layout is documented in docs/report.md.
type Report struct {
	Source   string  `json:"source"`
	Model    string  `json:"model,omitempty"`
	BudgetMS float64 `json:"budget_ms"`
	Frames   int     `json:"frames"`
	Seconds  float64 `json:"duration_s"`
	FPS      float64 `json:"fps"`
	// LatencyMS has one entry per stage, and "total" for the added latency
	// from capture to overlay done.
	LatencyMS      map[string]Percentiles `json:"latency_ms"`
	DeadlineMisses uint64                 `json:"deadline_misses"`
	MissRate       float64                `json:"deadline_miss_rate"`
	Inferences     uint64                 `json:"inferences"`
	Skipped        uint64                 `json:"skipped"`
	StaleFrames    uint64                 `json:"stale_frames"`
	InferErrors    uint64                 `json:"inference_errors"`
	Dropped        uint64                 `json:"dropped"`
	DroppedBy      map[string]uint64      `json:"dropped_by_stage"`
	CorruptFrames  uint64                 `json:"corrupt_frames"`
	Reconnects     uint64                 `json:"reconnects"`
	Detections     DetectionCounts        `json:"detections"`
	Phantom        *Accuracy              `json:"phantom,omitempty"`
	Error          string                 `json:"error,omitempty"`
}

// DetectionCounts count what reached the overlay.
type DetectionCounts struct {
	Total               int    `json:"total"`
	Fresh               int    `json:"fresh"`
	Stale               int    `json:"stale"`
	FramesWithDetection int    `json:"frames_with_detections"`
	Tracks              uint64 `json:"tracks"`
	// ShownTracks counts the tracks that persisted long enough to be
	// shown (the tracker's MinHits): new boxes appearing on the screen.
	ShownTracks uint64 `json:"shown_tracks"`
}

// Accuracy compares shown boxes with the phantom's ground truth, frame by
// frame, at an IoU threshold.
type Accuracy struct {
	IoU       float64 `json:"iou"`
	Truth     int     `json:"truth_boxes"`
	Shown     int     `json:"shown_boxes"`
	Matched   int     `json:"matched"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	// TrueTracks and FalseTracks split the shown tracks: a true one
	// matched ground truth on at least one frame, a false one never did
	// (a false alarm the sonographer saw, however briefly).
	TrueTracks  int `json:"true_tracks"`
	FalseTracks int `json:"false_tracks"`

	tracks map[uint64]*trackTruth
	frames uint64
}

// trackTruth is what Accuracy knows of one shown track.
type trackTruth struct {
	last    uint64 // the frame it was last shown on
	matched bool
}

// trackLinger is how many frames after it was last shown a track is
// judged: the tracker has long dropped it by then, and a server's phantom
// runs for days, so tracks cannot be kept.
const trackLinger = 600

func (a *Accuracy) add(truth []frame.Box, dets []frame.Detection) {
	a.frames++
	if a.tracks == nil {
		a.tracks = map[uint64]*trackTruth{}
	}
	for _, d := range dets {
		if d.TrackID == 0 {
			continue
		}
		tt := a.tracks[d.TrackID]
		if tt == nil {
			tt = &trackTruth{}
			a.tracks[d.TrackID] = tt
		}
		tt.last = a.frames
	}
	if a.frames%trackLinger == 0 {
		a.settle(a.frames - trackLinger)
	}
	a.Truth += len(truth)
	a.Shown += len(dets)
	used := make([]bool, len(dets))
	for _, t := range truth {
		best, bi := float32(a.IoU), -1
		for i, d := range dets {
			if used[i] {
				continue
			}
			if iou := d.Box.IoU(t); iou >= best {
				best, bi = iou, i
			}
		}
		if bi >= 0 {
			used[bi] = true
			a.Matched++
			if tt := a.tracks[dets[bi].TrackID]; tt != nil {
				tt.matched = true
			}
		}
	}
}

// settle counts the tracks last shown at or before frame n and forgets
// them.
func (a *Accuracy) settle(n uint64) {
	for id, tt := range a.tracks {
		if tt.last > n {
			continue
		}
		if tt.matched {
			a.TrueTracks++
		} else {
			a.FalseTracks++
		}
		delete(a.tracks, id)
	}
}

// finish fills the ratios and counts every track; it works on a copy
// (the report's), so the running one keeps its tracks.
func (a *Accuracy) finish() {
	tracks := a.tracks
	a.tracks = nil
	for _, tt := range tracks {
		if tt.matched {
			a.TrueTracks++
		} else {
			a.FalseTracks++
		}
	}
	if a.Shown > 0 {
		a.Precision = round3(float64(a.Matched) / float64(a.Shown))
	}
	if a.Truth > 0 {
		a.Recall = round3(float64(a.Matched) / float64(a.Truth))
	}
}
