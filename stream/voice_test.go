package stream

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"sonolive/internal/whepclient"
)

// Three pages with microphones and one without: each voice reaches every
// other page on the slot the relay names for it, never its own sender;
// the speaker shows as speaking; a page that leaves frees its slots.
func TestVoiceForwardedToTheOthers(t *testing.T) {
	r := newTestRelay(t)
	stop := newFeeder(t, r.Relay).start()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(slots int) *whepclient.Session {
		s, err := whepclient.Dial(ctx, r.url, whepclient.Options{VoiceSlots: slots})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close(context.Background()) })
		return s
	}
	a, b, c := dial(3), dial(3), dial(3)
	mute := dial(0) // no microphone, no audio sections: still watches
	views := []*whepclient.Session{a, b, c, mute}
	id := func(s *whepclient.Session) string { return s.Resource()[strings.LastIndex(s.Resource(), "/")+1:] }
	viewer := func(s *whepclient.Session) *Viewer {
		v, ok := r.Viewer(id(s))
		if !ok {
			t.Fatalf("no viewer %s", id(s))
		}
		return v
	}
	for _, s := range views {
		slots := viewer(s).VoiceSlots()
		if slices.Contains(slots, id(s)) {
			t.Fatalf("%s hears itself: %v", id(s), slots)
		}
		if s != mute {
			for _, o := range []*whepclient.Session{a, b, c} {
				if o != s && !slices.Contains(slots, id(o)) {
					t.Fatalf("%s has no slot for %s: %v", id(s), id(o), slots)
				}
			}
		}
	}
	if n := len(viewer(mute).VoiceSlots()); n != 0 {
		t.Fatalf("page without audio sections has %d slots", n)
	}

	// a speaks for 2 s: 100 packets.
	payload := []byte{0xfc, 0xff, 0xfe} // an Opus packet's TOC and a few bytes; not decoded on the way
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if err := a.SendVoice(payload, 20); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !viewer(a).Speaking() {
		t.Errorf("a is not shown speaking: %+v", viewer(a).Stats().Voice)
	}
	total := func(s *whepclient.Session) int {
		n := 0
		for _, k := range s.Stats().Voice {
			n += k
		}
		return n
	}
	waitFor(t, 5*time.Second, func() bool { return total(b) >= 50 && total(c) >= 50 })
	if n := total(a); n != 0 {
		t.Errorf("a heard itself: %d packets", n)
	}
	if n := total(mute); n != 0 {
		t.Errorf("the page without audio sections got %d voice packets", n)
	}
	for _, s := range []*whepclient.Session{b, c} {
		if got := s.Stats().Voice; len(got) != 1 {
			t.Errorf("%s got voice on %d sections, want 1: %v", id(s), len(got), got)
		}
	}

	// a leaves: its slot on b is free again.
	aID := id(a)
	if err := r.RemoveViewer(aID, "left"); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(viewer(b).VoiceSlots(), aID) {
		t.Errorf("b still hears a after a left: %v", viewer(b).VoiceSlots())
	}
}

func TestVoiceSlotRewriteKeepsOneStream(t *testing.T) {
	var s voiceSlot
	seqs := []struct {
		from     string
		seq      uint16
		ts       uint32
		wantSeq  uint16
		wantTSGE uint32
	}{
		{"a", 1000, 5000, 1000, 5000},
		{"a", 1001, 5960, 1001, 5960},
		{"b", 7, 123, 1002, 5960 + 960}, // a new speaker follows on
		{"b", 8, 1083, 1003, 5960 + 1920},
	}
	for i, p := range seqs {
		pkt := voicePkt(p.seq, p.ts)
		s.rewrite(p.from, pkt)
		if pkt.SequenceNumber != p.wantSeq || pkt.Timestamp < p.wantTSGE {
			t.Fatalf("packet %d: seq %d ts %d; want seq %d, ts ≥ %d", i, pkt.SequenceNumber, pkt.Timestamp, p.wantSeq, p.wantTSGE)
		}
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func voicePkt(seq uint16, ts uint32) *rtp.Packet {
	return &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts}}
}
