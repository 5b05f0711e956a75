package capture

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// serveHTTP streams clip as MPEG-TS over HTTP with ffmpeg in listen mode, in
// real time, looping: a stand-in for an encoder box on the network.
func serveHTTP(t *testing.T, clip, addr string) *exec.Cmd {
	t.Helper()
	cmd, err := startHTTPServer(clip, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// startHTTPServer is serveHTTP for goroutines other than the test's, which
// must not call t.Fatal.
func startHTTPServer(clip, addr string) (*exec.Cmd, error) {
	cmd := exec.Command("ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
		"-c:v", "mpeg2video", "-q:v", "5", "-f", "mpegts", "-listen", "1", "http://"+addr+"/live.ts")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ffmpeg: %w", err)
	}
	return cmd, nil
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A real network stream: frames arrive, the server dies, the source reports
// the loss and reconnects when the server is back, with seq unbroken.
func TestHTTPStreamReconnects(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	writeClip(t, clip, 60)
	addr := freeAddr(t)
	srv := serveHTTP(t, clip, addr)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var src Source
	var err error
	// ffmpeg needs a moment to start listening.
	for i := 0; i < 50; i++ {
		src, err = Open(ctx, "http://"+addr+"/live.ts", Options{OpenTimeout: 3 * time.Second, ReadTimeout: time.Second, Reconnect: true})
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	defer src.Close()
	r := src.(*reconnecting)
	r.minBackoff = 100 * time.Millisecond

	restartErr := make(chan error, 1)
	next := func() uint64 {
		f, err := src.Next(ctx)
		if err != nil {
			select {
			case rerr := <-restartErr:
				t.Fatalf("next: %v (restarting the server: %v)", err, rerr)
			default:
			}
			t.Fatalf("next: %v", err)
		}
		defer f.Close()
		if f.Image.Cols() != 160 {
			t.Fatalf("frame %dx%d", f.Image.Cols(), f.Image.Rows())
		}
		return f.Seq
	}
	var seq uint64
	for i := 0; i < 10; i++ {
		seq = next()
	}
	srv.Process.Kill()
	srv.Wait()
	restarted := make(chan *exec.Cmd, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		cmd, err := startHTTPServer(clip, addr)
		if err != nil {
			restartErr <- err
			cancel()
			return
		}
		restarted <- cmd
	}()
	t.Cleanup(func() {
		select {
		case cmd := <-restarted:
			cmd.Process.Kill()
			cmd.Wait()
		default:
		}
	})
	for r.Stats().Reconnects == 0 {
		s := next()
		if s != seq+1 {
			t.Fatalf("seq %d after %d", s, seq)
		}
		seq = s
	}
	for i := 0; i < 5; i++ {
		if s := next(); s != seq+1 {
			t.Fatalf("seq %d after %d across the reconnect", s, seq)
		} else {
			seq = s
		}
	}
	t.Log(fmt.Sprintf("%d frames, %d reconnects", seq, r.Stats().Reconnects))
}
