package ingest

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/capture"
	"sonolive/internal/testpeer"
	"sonolive/stream"
)

// encodeClip encodes the shared clip's first n frames with FFmpeg, as a
// browser's encoder would send them: H.264 constrained baseline in Annex
// B, or VP8 in IVF. extra are FFmpeg output options (a scale, a bitrate).
func encodeClip(t testing.TB, codec string, n int, extra ...string) string {
	t.Helper()
	testpeer.Need(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "clip")
	args := append([]string{"-v", "error", "-i", testpeer.Clip(t), "-frames:v", strconv.Itoa(n), "-pix_fmt", "yuv420p", "-g", "30"}, extra...)
	if codec == "H264" {
		out += ".h264"
		args = append(args, "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-f", "h264", out)
	} else {
		out += ".ivf"
		args = append(args, "-c:v", "libvpx", "-deadline", "realtime", "-f", "ivf", out)
	}
	if b, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	return out
}

// accessUnits reads the encoded file as one sample per frame (H.264: the
// NAL units up to and including each picture's slice).
func accessUnits(t testing.TB, codec, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	if codec == "VP8" {
		r, _, err := ivfreader.NewWith(f)
		if err != nil {
			t.Fatal(err)
		}
		for {
			fr, _, err := r.ParseNextFrame()
			if err != nil {
				break
			}
			out = append(out, fr)
		}
		return out
	}
	r, err := h264reader.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var au []byte
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		au = append(append(au, 0, 0, 0, 1), nal.Data...)
		if nal.UnitType == h264reader.NalUnitTypeCodedSliceNonIdr || nal.UnitType == h264reader.NalUnitTypeCodedSliceIdr {
			out = append(out, au)
			au = nil
		}
	}
	return out
}

// A pion peer publishing a real clip (FFmpeg's H.264 and VP8, as a
// browser's encoder sends them) through NewPublisher and a Point comes
// out as decoded frames of the clip's size whose pixels are the clip's.
func TestPublishDecodes(t *testing.T) {
	const n = 90
	raw, w, h := testpeer.RawFrames(t, n)
	api, closeAPI, err := stream.NewAPI(stream.APIConfig{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAPI()
	for _, codec := range []string{"H264", "VP8"} {
		t.Run(codec, func(t *testing.T) {
			aus := accessUnits(t, codec, encodeClip(t, codec, n, "-b:v", "1M"))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			sender, err := webrtc.NewPeerConnection(webrtc.Configuration{})
			if err != nil {
				t.Fatal(err)
			}
			defer sender.Close()
			mime := webrtc.MimeTypeH264
			if codec == "VP8" {
				mime = webrtc.MimeTypeVP8
			}
			track, _ := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: mime}, "video", "probe")
			if _, err := sender.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
				t.Fatal(err)
			}
			offer, _ := sender.CreateOffer(nil)
			gathered := webrtc.GatheringCompletePromise(sender)
			sender.SetLocalDescription(offer)
			<-gathered
			pub, answer, err := NewPublisher(ctx, api.Receiver(), webrtc.Configuration{}, "p1", sender.LocalDescription().SDP, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			if err := sender.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
				t.Fatal(err)
			}
			pt := NewPoint(zap.NewNop())
			if err := pt.Attach(pub); err != nil {
				t.Fatal(err)
			}
			if err := pt.Attach(pub); !errors.Is(err, ErrBusy) {
				t.Fatalf("second publisher: %v", err)
			}
			go func() {
				// The clip, looped, at 30 fps.
				tick := time.NewTicker(time.Second / 30)
				defer tick.Stop()
				for i := 0; ctx.Err() == nil; i++ {
					track.WriteSample(media.Sample{Data: aus[i%len(aus)], Duration: time.Second / 30})
					<-tick.C
				}
			}()
			src, err := pt.Open(ctx, capture.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			for i := 0; i < 30; i++ {
				f, err := src.Next(ctx)
				if err != nil {
					t.Fatalf("frame %d: %v (publisher %+v)", i, err, pub.Stats())
				}
				if f.Image.Cols() != w || f.Image.Rows() != h {
					t.Fatalf("frame %d is %dx%d, the clip %dx%d", i, f.Image.Cols(), f.Image.Rows(), w, h)
				}
				// Lossy both ways: the frame is within a few grey levels
				// of one of the clip's frames.
				best := math.Inf(1)
				for k := 0; k < n; k++ {
					best = math.Min(best, meanAbsDiff(f.Image, raw[k*w*h:(k+1)*w*h]))
				}
				if best > 6 {
					t.Fatalf("frame %d is %.1f grey levels from every frame of the clip", i, best)
				}
				f.Close()
			}
			st := pub.Stats()
			if st.Codec != codec || st.Keyframes == 0 || st.Frames < 30 {
				t.Fatalf("publisher stats %+v", st)
			}
			t.Logf("%s: %+v", codec, st)
		})
	}
}

func meanAbsDiff(img gocv.Mat, gray []byte) float64 {
	g := gocv.NewMat()
	defer g.Close()
	gocv.CvtColor(img, &g, gocv.ColorBGRToGray)
	b := g.ToBytes()
	if len(b) != len(gray) {
		return math.Inf(1)
	}
	var sum float64
	for i := range b {
		sum += math.Abs(float64(b[i]) - float64(gray[i]))
	}
	return sum / float64(len(b))
}

// An offer with no video it can take is refused by name.
func TestPublishRefusesAudioOnly(t *testing.T) {
	api, closeAPI, err := stream.NewAPI(stream.APIConfig{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAPI()
	pc, _ := webrtc.NewPeerConnection(webrtc.Configuration{})
	defer pc.Close()
	pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	offer, _ := pc.CreateOffer(nil)
	if _, _, err := NewPublisher(context.Background(), api.Receiver(), webrtc.Configuration{}, "p", offer.SDP, zap.NewNop()); !errors.Is(err, ErrNoVideo) {
		t.Fatalf("audio-only offer: %v", err)
	}
	if _, _, err := NewPublisher(context.Background(), api.Receiver(), webrtc.Configuration{}, "p", "v=0\r\nnonsense", zap.NewNop()); err == nil {
		t.Fatal("garbage offer accepted")
	}
}
