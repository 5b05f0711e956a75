package replay

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"sonolive/capture"
	"sonolive/stream"
)

// opusTone is 2 s of a 1 kHz tone as a browser would send it: Opus, 20 ms
// packets, as FFmpeg's libopus encodes it.
func opusTone(t *testing.T) [][]byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tone.ogg")
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=1000:duration=2:sample_rate=48000",
		"-c:a", "libopus", "-b:a", "32k", "-frame_duration", "20", path).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Ogg pages (RFC 3533): a 27-byte header, the segment table, then the
	// packets, each the sum of its lacing values up to one below 255.
	var out [][]byte
	var pkt []byte
	for len(b) >= 27 && string(b[:4]) == "OggS" {
		nseg := int(b[26])
		table := b[27 : 27+nseg]
		body := b[27+nseg:]
		for _, l := range table {
			pkt = append(pkt, body[:l]...)
			body = body[l:]
			if l < 255 {
				if !strings.HasPrefix(string(pkt), "Opus") {
					out = append(out, pkt)
				}
				pkt = nil
			}
		}
		b = body
	}
	if len(out) < 90 {
		t.Fatalf("%d Opus packets in 2 s", len(out))
	}
	return out
}

// A voice that starts 1 s into the recording, with 500 ms lost in the
// middle, is mixed into the video at its time: the video keeps its frames,
// gains an AAC track, and the tone is heard from 1 s on, not before.
func TestVoicesMixedIntoVideo(t *testing.T) {
	lib, err := OpenLibrary(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	relay, err := stream.New(stream.Config{Source: "phantom", Encoder: stream.EncoderConfig{Bitrate: 500_000, FPS: 30, KeyframeInterval: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	rec, err := lib.NewRecorder(RecorderConfig{Source: "phantom", RequestKeyframe: relay.RequestKeyframe, Voices: true})
	if err != nil {
		t.Fatal(err)
	}
	relay.AddTap(rec)
	tone := opusTone(t)
	src := capture.NewPhantom(capture.PhantomConfig{Seed: 5, Width: 320, Height: 240})
	t0 := time.Now()
	const frames = 4 * 30
	next := 0 // the next voice packet
	for i := 0; i < frames; i++ {
		f, err := src.Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		f.Captured = t0.Add(time.Duration(i) * time.Second / 30)
		relay.Write(f, nil)
		f.Close()
		for len(rec.q) > 30 {
			time.Sleep(time.Millisecond)
		}
		// Voice from 1 s on, 50 packets a second, packets 40-64 lost.
		for ; next < len(tone) && time.Duration(next)*20*time.Millisecond+time.Second <= time.Duration(i)*time.Second/30; next++ {
			if next >= 40 && next < 65 {
				continue
			}
			pkt := &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(next), Timestamp: 1000 + uint32(next)*960}, Payload: tone[next]}
			at := t0.Add(time.Second + time.Duration(next)*20*time.Millisecond)
			rec.WriteVoice("v2-ab12", "expert", "Dr Ada", pkt, at)
		}
		if i == 10 {
			// The queue is served meanwhile: let the first packets meet a
			// recording that has started.
			time.Sleep(50 * time.Millisecond)
		}
	}
	relay.RemoveTap(rec)
	m, err := rec.Close()
	if err != nil {
		t.Fatal(err)
	}
	if m.Voices != 1 {
		t.Fatalf("meta: %d voices", m.Voices)
	}
	dir := filepath.Join(lib.Dir(), m.ID)
	vs := readVoices(dir)
	if len(vs) != 1 || vs[0].Role != "expert" || vs[0].Name != "Dr Ada" || vs[0].StartS < 0.9 || vs[0].StartS > 1.1 {
		t.Fatalf("voices.jsonl: %+v", vs)
	}
	video := filepath.Join(dir, "video.mp4")
	if _, n := ffprobe(t, video); n != m.Frames {
		t.Fatalf("video: %d frames, timeline %d", n, m.Frames)
	}
	// Copied, the video keeps its clock: the timeline's t is media time.
	if out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=start_time", "-of", "csv=p=0", video).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "0.000000" {
		t.Fatalf("video start time %q (%v)", out, err)
	}
	// The voice file keeps the RTP clock: 2 s of tone, the lost 500 ms
	// filled with silence.
	if d := probeDuration(t, filepath.Join(dir, vs[0].File)); d < 1.9 || d > 2.1 {
		t.Fatalf("voice file: %.3f s", d)
	}
	before, during := meanVolume(t, video, 0, 0.8), meanVolume(t, video, 1.1, 0.6)
	gap := meanVolume(t, video, 1.9, 0.3) // packets 40-64: 1.8 s to 2.3 s
	t.Logf("mean volume: %.1f dB before the voice, %.1f dB in it, %.1f dB in its lost packets", before, during, gap)
	if during < -30 || before > -60 || gap > during-20 {
		t.Fatalf("mean volume %.1f dB before the voice, %.1f dB in it, %.1f dB in the gap", before, during, gap)
	}
}

func probeDuration(t *testing.T, path string) float64 {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, out)
	}
	d, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	return d
}

var meanRE = regexp.MustCompile(`mean_volume: (-?[0-9.]+|-inf) dB`)

// meanVolume is the video's audio level over [from, from+d) s.
func meanVolume(t *testing.T, path string, from, d float64) float64 {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-ss", strconv.FormatFloat(from, 'f', 3, 64), "-t", strconv.FormatFloat(d, 'f', 3, 64),
		"-i", path, "-map", "0:a", "-af", "volumedetect", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg volumedetect: %v\n%s", err, out)
	}
	m := meanRE.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no mean volume:\n%s", out)
	}
	if m[1] == "-inf" {
		return -200
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
