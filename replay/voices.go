package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4/pkg/media/oggwriter"
	"go.uber.org/zap"
)

// The session's voices, when the deployment records them (record.voices,
// off by default: the people in a consultation must agree). Each person's
// microphone is written as it arrives, Opus as sent, to an Ogg file of its
// own (voice-NN.ogg, indexed in voices.jsonl with the person and where the
// file starts on the video's clock); packets lost or never sent (a
// microphone that went quiet) become Opus silence, so the file keeps the
// RTP clock. When the recording ends (or is recovered), FFmpeg mixes the
// files, each at its start, into the video as one AAC track — every
// browser's replay plays it — copying the video as it is. A mix that fails
// leaves the video without sound and the Ogg files in place, never a
// broken video.

var voiceFile = regexp.MustCompile(`^voice-[0-9]{2}\.ogg$`)

// VoiceFile is one line of voices.jsonl.
type VoiceFile struct {
	File   string  `json:"file"`
	Viewer string  `json:"viewer"`
	Role   string  `json:"role"`
	Name   string  `json:"name,omitempty"`
	StartS float64 `json:"start_s"` // on the video's clock
}

// voicePacket is one packet of someone's voice, as received.
type voicePacket struct {
	from, role, name string
	pkt              *rtp.Packet
	at               time.Time
}

const (
	voiceQueue = 256 // packets: ~1 s of five people talking
	// opusFrame is a browser's packet: 20 ms at 48 kHz.
	opusFrame = 960
	// maxSilence bounds the silence written for one gap (a paused
	// microphone, a long loss): 10 minutes of 20 ms frames.
	maxSilence = 10 * 60 * 50
	maxVoices  = 64 // files in one recording
)

// opusSilence is a 20 ms Opus frame of silence (CELT, mono): what WebRTC
// stacks send for a muted microphone.
var opusSilence = []byte{0xf8, 0xff, 0xfe}

// WriteVoice queues a packet of viewer from's voice (role and name say who
// it is). Never blocks: dropped (counted) when the queue is full, or when
// the recording takes no voices.
func (r *Recorder) WriteVoice(from, role, name string, pkt *rtp.Packet, at time.Time) {
	if r.voiceQ == nil {
		return
	}
	r.closeMu.RLock()
	defer r.closeMu.RUnlock()
	if r.closed {
		return
	}
	select {
	case r.voiceQ <- voicePacket{from: from, role: role, name: name, pkt: pkt, at: at}:
	default:
		r.voiceDropped.Add(1)
	}
}

// voiceTrack is one person's file being written: next is the RTP time
// its written audio reaches.
type voiceTrack struct {
	w    *oggwriter.OggWriter
	next uint32
}

// runVoices writes the queued voices until the queue closes.
func (r *Recorder) runVoices() {
	defer close(r.voiceDone)
	tracks := map[string]*voiceTrack{}
	defer func() {
		for _, tr := range tracks {
			if tr.w != nil {
				tr.w.Close()
			}
		}
	}()
	failed := false
	for p := range r.voiceQ {
		if failed {
			continue
		}
		tr, ok := tracks[p.from]
		dur := opusSamples(p.pkt.Payload)
		if dur == 0 {
			continue // not Opus
		}
		if !ok {
			first := r.firstCaptured.Load()
			if first == 0 || len(tracks) >= maxVoices {
				continue // no video yet to put it on, or too many people
			}
			var err error
			if tr, err = r.openVoice(len(tracks)+1, p, time.Unix(0, first)); err != nil {
				r.log.Error("voice recording failed; the rest of the voices are not recorded", zap.Error(err))
				failed = true
				continue
			}
			tracks[p.from] = tr
		} else if err := tr.fill(p.pkt.Timestamp); err != nil {
			r.log.Warn("voice recording", zap.String("viewer", p.from), zap.Error(err))
			continue
		}
		if int32(p.pkt.Timestamp-tr.next) < -opusFrame/2 {
			continue // late: its time was filled already
		}
		if err := tr.w.WriteRTP(p.pkt); err != nil {
			r.log.Warn("voice recording", zap.String("viewer", p.from), zap.Error(err))
			continue
		}
		tr.next = p.pkt.Timestamp + uint32(dur)
	}
}

// openVoice starts the file of the recording's n-th voice and indexes it.
func (r *Recorder) openVoice(n int, p voicePacket, videoStart time.Time) (*voiceTrack, error) {
	name := fmt.Sprintf("voice-%02d.ogg", n)
	f, err := createFile(filepath.Join(r.dir, name))
	if err != nil {
		return nil, err
	}
	w, err := oggwriter.NewWith(f, 48000, 2)
	if err != nil {
		f.Close()
		return nil, err
	}
	line, _ := json.Marshal(VoiceFile{File: name, Viewer: p.from, Role: p.role, Name: p.name,
		StartS: max(0, float64(p.at.Sub(videoStart).Microseconds())/1e6)})
	if err := appendLineSync(filepath.Join(r.dir, "voices.jsonl"), line); err != nil {
		w.Close()
		return nil, err
	}
	return &voiceTrack{w: w, next: p.pkt.Timestamp}, nil
}

// fill writes silence for the time missing before timestamp ts (packets
// lost, or not sent: a browser's discontinuous transmission).
func (tr *voiceTrack) fill(ts uint32) error {
	for n := 0; int32(ts-tr.next) >= opusFrame/2 && n < maxSilence; n++ {
		if err := tr.w.WriteRTP(&rtp.Packet{Header: rtp.Header{Timestamp: tr.next}, Payload: opusSilence}); err != nil {
			return err
		}
		tr.next += opusFrame
	}
	return nil
}

// opusSamples is the length of an Opus packet at 48 kHz, from its TOC byte
// (RFC 6716, 3.1); 0 when it is not one.
func opusSamples(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	config := int(p[0] >> 3)
	var frame int // in 1/400 s (2.5 ms)
	switch {
	case config < 12: // SILK: 10, 20, 40, 60 ms
		frame = []int{4, 8, 16, 24}[config%4]
	case config < 16: // hybrid: 10, 20 ms
		frame = []int{4, 8}[config%2]
	default: // CELT: 2.5, 5, 10, 20 ms
		frame = []int{1, 2, 4, 8}[config%4]
	}
	frames := 1
	switch p[0] & 3 {
	case 1, 2:
		frames = 2
	case 3:
		if len(p) < 2 {
			return 0
		}
		frames = int(p[1] & 0x3f)
	}
	if n := frame * frames; n > 0 && n <= 48 { // at most 120 ms
		return n * 120
	}
	return 0
}

// readVoices reads voices.jsonl, keeping the files that are on disk.
func readVoices(dir string) []VoiceFile {
	b, err := os.ReadFile(filepath.Join(dir, "voices.jsonl"))
	if err != nil {
		return nil
	}
	var out []VoiceFile
	for _, line := range strings.Split(string(b), "\n") {
		var v VoiceFile
		if json.Unmarshal([]byte(line), &v) != nil || !voiceFile.MatchString(v.File) || v.StartS < 0 {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, v.File)); err != nil || !fi.Mode().IsRegular() || fi.Size() < 100 {
			continue
		}
		out = append(out, v)
	}
	return out
}

// errNoFFmpeg: voices are kept as Ogg files but not mixed in.
var errNoFFmpeg = errors.New("ffmpeg is not installed: the voices are kept as Ogg files beside the video")

// mixVoices puts the voices into video.mp4 as one AAC track, the video
// copied as it is; it returns how many were mixed.
func mixVoices(dir string, durationS float64) (int, error) {
	voices := readVoices(dir)
	if len(voices) == 0 {
		return 0, nil
	}
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		return 0, errNoFFmpeg
	}
	video := filepath.Join(dir, "video.mp4")
	out := filepath.Join(dir, "video.mix.mp4.tmp")
	defer os.Remove(out)
	args := []string{"-v", "error", "-nostdin", "-y", "-i", video}
	var filter []string
	for i, v := range voices {
		args = append(args, "-i", filepath.Join(dir, v.File))
		filter = append(filter, fmt.Sprintf("[%d:a]aresample=48000,adelay=delays=%d:all=1[v%d]", i+1, int(v.StartS*1000), i))
	}
	mix := ""
	for i := range voices {
		mix += fmt.Sprintf("[v%d]", i)
	}
	// Summed, not averaged (people take turns; one voice must not be
	// halved because another is quiet), with a limiter for when they talk
	// at once.
	filter = append(filter, mix+fmt.Sprintf("amix=inputs=%d:duration=longest:normalize=0,alimiter=limit=0.9[voices]", len(voices)))
	args = append(args, "-filter_complex", strings.Join(filter, ";"), "-map", "0:v", "-map", "[voices]",
		"-c:v", "copy", "-c:a", "aac", "-b:a", "64k", "-ac", "1",
		"-t", strconv.FormatFloat(durationS, 'f', 3, 64), "-movflags", "+faststart", "-f", "mp4", out)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+time.Duration(durationS/10*float64(time.Second)))
	defer cancel()
	if b, err := exec.CommandContext(ctx, ffmpeg, args...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("mixing the voices: %v: %s", err, strings.TrimSpace(string(b)))
	}
	if err := syncFile(out); err != nil {
		return 0, err
	}
	if err := os.Rename(out, video); err != nil {
		return 0, err
	}
	return len(voices), syncDir(dir)
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
