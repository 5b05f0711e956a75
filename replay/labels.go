package replay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
)

// Labels turn the expert's verdicts kept in a recording's timeline into a
// COCO data set, for training on what the experts said: one image per
// finding read (the recording's frame where the box was, by its media
// time), one annotation with the box and the expert's read. The last
// verdict on a track is the one kept.

// LabelSet is the COCO document; images name their frame by media time in
// the recording's video.mp4.
type LabelSet struct {
	Info        LabelInfo         `json:"info"`
	Images      []LabelImage      `json:"images"`
	Annotations []LabelAnnotation `json:"annotations"`
	Categories  []LabelCategory   `json:"categories"`
}

// LabelInfo says where the labels come from.
type LabelInfo struct {
	Description string `json:"description"`
	Recording   string `json:"recording"`
	Source      string `json:"source"`
}

// LabelImage is one frame of the recording.
type LabelImage struct {
	ID         int     `json:"id"`
	FileName   string  `json:"file_name"` // video.mp4
	FrameTimeS float64 `json:"frame_time_s"`
	Width      int     `json:"width"`
	Height     int     `json:"height"`
}

// LabelAnnotation is one finding with the expert's read.
type LabelAnnotation struct {
	ID         int             `json:"id"`
	ImageID    int             `json:"image_id"`
	CategoryID int             `json:"category_id"`
	BBox       [4]float64      `json:"bbox"`
	Area       float64         `json:"area"`
	IsCrowd    int             `json:"iscrowd"`
	Attributes LabelAttributes `json:"attributes"`
}

// LabelAttributes carry the expert's read and what the AI said.
type LabelAttributes struct {
	TrackID      uint64   `json:"track_id"`
	Verdict      string   `json:"verdict"`
	Category     string   `json:"category,omitempty"`
	Note         string   `json:"note,omitempty"`
	By           string   `json:"by"`
	VerdictTimeS float64  `json:"verdict_time_s"`
	AIClass      string   `json:"ai_class"`
	AIScore      float64  `json:"ai_score"`
	AIMalignancy *float64 `json:"ai_malignancy,omitempty"`
}

// LabelCategory is a detector class.
type LabelCategory struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// lookBackS is how far before a verdict the track's box is looked for: an
// expert may give the read just after the finding left the screen.
const lookBackS = 10

// Labels reads a timeline and builds the label set of meta's recording.
func Labels(timeline io.Reader, meta Meta) (*LabelSet, error) {
	type verdict struct {
		t                        float64
		track                    uint64
		verdict, cat, note, role string
	}
	var frames []Entry
	last := map[uint64]verdict{}
	sc := bufio.NewScanner(timeline)
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	for sc.Scan() {
		var e Entry
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue // a torn line
		}
		if e.Event == "" {
			if len(e.Detections) > 0 {
				frames = append(frames, e)
			}
			continue
		}
		if e.Event != "consult" {
			continue
		}
		var m struct {
			Type     string  `json:"type"`
			TrackID  *uint64 `json:"track_id"`
			Verdict  string  `json:"verdict"`
			Category string  `json:"category"`
			Note     string  `json:"note"`
			From     struct {
				Role string `json:"role"`
			} `json:"from"`
		}
		if json.Unmarshal([]byte(e.Data["msg"]), &m) != nil || m.Type != "verdict" || m.TrackID == nil {
			continue
		}
		last[*m.TrackID] = verdict{e.T, *m.TrackID, m.Verdict, m.Category, m.Note, m.From.Role}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("labels: reading the timeline: %w", err)
	}
	sort.Slice(frames, func(i, j int) bool { return frames[i].T < frames[j].T })
	vs := make([]verdict, 0, len(last))
	for _, v := range last {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].t < vs[j].t })

	set := &LabelSet{Info: LabelInfo{Description: "expert verdicts on sonolive AI findings", Recording: meta.ID, Source: meta.Source},
		Images: []LabelImage{}, Annotations: []LabelAnnotation{}}
	classes := map[string]int{}
	for _, v := range vs {
		// The newest frame at or before the verdict that has the track.
		i := sort.Search(len(frames), func(i int) bool { return frames[i].T > v.t })
		var f *Entry
		var d int
		for j := i - 1; j >= 0 && v.t-frames[j].T <= lookBackS && f == nil; j-- {
			for k, det := range frames[j].Detections {
				if det.TrackID == v.track {
					f, d = &frames[j], k
					break
				}
			}
		}
		if f == nil {
			continue // the finding is not in the recording near the verdict
		}
		det := f.Detections[d]
		cid, ok := classes[det.Class]
		if !ok {
			cid = len(classes) + 1
			classes[det.Class] = cid
			set.Categories = append(set.Categories, LabelCategory{ID: cid, Name: det.Class})
		}
		img := LabelImage{ID: len(set.Images) + 1, FileName: "video.mp4", FrameTimeS: f.T, Width: meta.Width, Height: meta.Height}
		set.Images = append(set.Images, img)
		set.Annotations = append(set.Annotations, LabelAnnotation{
			ID: len(set.Annotations) + 1, ImageID: img.ID, CategoryID: cid, BBox: det.Box, Area: det.Box[2] * det.Box[3],
			Attributes: LabelAttributes{TrackID: v.track, Verdict: v.verdict, Category: v.cat, Note: v.note, By: v.role,
				VerdictTimeS: v.t, AIClass: det.Class, AIScore: det.Score, AIMalignancy: det.Malignancy},
		})
	}
	if set.Categories == nil {
		set.Categories = []LabelCategory{}
	}
	return set, nil
}
