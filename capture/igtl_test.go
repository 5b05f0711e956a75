package capture

import (
	"context"
	"errors"
	"math"
	"net"
	"testing"
	"time"

	"sonolive/capture/internal/igtl"
	"sonolive/internal/testpeer"
)

// Frames from a server built on the OpenIGTLink library arrive in order,
// pixel for pixel, with the spacing it sent; its TRANSFORM messages are
// skipped. A second client is served after the first leaves.
func TestIGTLFromLibraryServer(t *testing.T) {
	srv := testpeer.StartIGTLServer(t, 30, 0.2, 0.25)
	frameSize := srv.Width * srv.Height
	for round := 0; round < 2; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		src, err := Open(ctx, "igtl://"+srv.Addr+"?device=Image_Reference", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if id := src.Info().ID; id != "igtl:"+srv.Addr {
			t.Errorf("id %q", id)
		}
		for i := 0; i < 10; i++ {
			f, err := src.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if f.Image.Cols() != srv.Width || f.Image.Rows() != srv.Height {
				t.Fatalf("frame %d is %dx%d", i, f.Image.Cols(), f.Image.Rows())
			}
			if d := meanAbsDiff(t, f.Image, srv.Raw[i*frameSize:(i+1)*frameSize]); d != 0 {
				t.Fatalf("frame %d differs from the one sent by %.2f levels on average", i, d)
			}
			if g := f.Geometry.SpacingMM; math.Abs(g[0]-0.2) > 1e-6 || math.Abs(g[1]-0.25) > 1e-6 {
				t.Fatalf("spacing %v", g)
			}
			f.Close()
		}
		if st := src.(interface{ Stats() Stats }).Stats(); st.Frames != 10 || st.Corrupt != 0 {
			t.Errorf("stats %+v", st)
		}
		src.Close()
		cancel()
	}
}

// A peer that sends a corrupt image is skipped and counted; one that
// sends garbage framing, or nothing, is a lost source.
func TestIGTLBadPeer(t *testing.T) {
	img := igtl.AppendImage(nil, 32, 32, 1, 0.1, 0.1, make([]byte, 32*32))
	for _, tc := range []struct {
		name string
		send func(c net.Conn)
		want error
	}{
		{"corrupt then good", func(c net.Conn) {
			bad := &crcBreaker{Conn: c}
			igtl.WriteMessage(bad, "IMAGE", "x", 0, img)
			igtl.WriteMessage(c, "IMAGE", "x", 0, img)
			igtl.WriteMessage(c, "IMAGE", "x", 0, img)
		}, nil},
		{"garbage", func(c net.Conn) { c.Write(make([]byte, 200)) }, ErrDisconnected},
		{"silent", func(c net.Conn) {}, ErrDisconnected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				// A first good image lets the open succeed.
				igtl.WriteMessage(c, "IMAGE", "x", 0, img)
				tc.send(c)
				time.Sleep(3 * time.Second)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			src, err := Open(ctx, "igtl://"+l.Addr().String(), Options{ReadTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			var last error
			for i := 0; i < 3 && last == nil; i++ {
				f, err := src.Next(ctx)
				if err == nil {
					f.Close()
				}
				last = err
			}
			if tc.want == nil {
				if last != nil {
					t.Fatal(last)
				}
				if st := src.(interface{ Stats() Stats }).Stats(); st.Corrupt != 1 || st.Frames != 3 {
					t.Fatalf("stats %+v", st)
				}
				return
			}
			if !errors.Is(last, tc.want) {
				t.Fatalf("got %v, want %v", last, tc.want)
			}
		})
	}
}

// crcBreaker flips a bit in the last byte written: the body no longer
// matches the header's CRC.
type crcBreaker struct{ net.Conn }

func (c *crcBreaker) Write(b []byte) (int, error) {
	if len(b) > igtl.HeaderSize {
		b = append([]byte(nil), b...)
		b[len(b)-1] ^= 1
	}
	return c.Conn.Write(b)
}
