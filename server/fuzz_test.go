package server

import (
	"errors"
	"os"
	"testing"
)

// FuzzClientMessage: whatever a hostile page sends over the WebSocket is
// refused with errBadMessage or comes out within bounds.
func FuzzClientMessage(f *testing.F) {
	f.Add([]byte(`{"type":"g2g","samples_ms":[31.5,40.2]}`))
	f.Add([]byte(`{"type":"quality","viewer":"v1-abcd","fps":30,"rtt_ms":2,"jitter_ms":1,"packets_lost":0}`))
	f.Add([]byte(`{"type":"nope"}`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte(`{"type":"g2g","samples_ms":[1e309]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseClientMessage(b)
		if err != nil {
			if !errors.Is(err, errBadMessage) {
				t.Fatalf("unnamed error: %v", err)
			}
			return
		}
		if len(m.SamplesMS) > maxG2GSamples || len(m.Viewer) > 64 || (m.Type != "g2g" && m.Type != "quality") {
			t.Fatalf("out of bounds: %+v", m)
		}
	})
}

// FuzzConfig: any YAML either parses into a configuration that passes
// Validate, or is refused; never a panic.
func FuzzConfig(f *testing.F) {
	if b, err := os.ReadFile("../sonolive.example.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("sources:\n  - id: cart\n    url: rtsp://cam/x\n    masks: [\"0%,0%,100%,8%\"]\n"))
	f.Add([]byte("auth: {secret: short}\n"))
	f.Add([]byte("listen: [\n"))
	f.Add([]byte("record: {max_part: 1s}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := Parse(b, "fuzz.yaml")
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted what Validate refuses: %v", verr)
			}
		}
	})
}

// FuzzConsult: whatever a hostile page sends on the consult channel is
// refused with ErrBadConsult or comes out inside the frame and within
// bounds, without the server's own fields.
func FuzzConsult(f *testing.F) {
	f.Add([]byte(`{"type":"pointer","x":100,"y":50.5,"rtp_ts":12345}`))
	f.Add([]byte(`{"type":"mark","id":"m1","shape":"arrow","points":[[10,10],[200,120]],"rtp_ts":1}`))
	f.Add([]byte(`{"type":"mark","id":"f","shape":"freehand","points":[[1,1],[2,2],[3,3]]}`))
	f.Add([]byte(`{"type":"clear"}`))
	f.Add([]byte(`{"type":"chat","text":"can you freeze?"}`))
	f.Add([]byte(`{"type":"freeze","rtp_ts":0}`))
	f.Add([]byte(`{"type":"verdict","track_id":3,"verdict":"agree","category":"TI-RADS TR4","note":"taller than wide"}`))
	f.Add([]byte(`{"type":"pointer","x":1e309,"y":-1,"from":{"viewer":"x","role":"sonographer"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseConsult(b, 640, 480)
		if err != nil {
			if !errors.Is(err, ErrBadConsult) {
				t.Fatalf("unnamed error: %v", err)
			}
			return
		}
		if m.From != nil || m.At != 0 || len(m.Points) > maxMarkPoints || len(m.ID) > 32 || len([]rune(m.Note)) > maxNote || len([]rune(m.Text)) > maxNote || m.Still != "" || m.People != nil ||
			(m.Category != "" && !categories[m.Category]) || (m.Type != "verdict" && (m.TrackID != nil || m.Verdict != "")) {
			t.Fatalf("out of bounds: %+v", m)
		}
		pts := m.Points
		if m.X != nil {
			pts = append(pts, [2]float64{*m.X, *m.Y})
		}
		for _, p := range pts {
			if !(p[0] >= 0 && p[0] <= 640 && p[1] >= 0 && p[1] <= 480) {
				t.Fatalf("point %v outside the frame: %+v", p, m)
			}
		}
	})
}
