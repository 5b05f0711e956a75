package testnet

import (
	"net"
	"os/exec"
	"testing"
	"time"
)

// A UDP echo in the namespace seen through the wire: the round trip takes
// the two delays, and the rate holds a burst back.
func TestWire(t *testing.T) {
	RequireNetAdmin(t)
	w := NewWire(t, "sltestwire", 197, Link{Delay: 40 * time.Millisecond, RateBPS: 1_000_000}, Link{Delay: 40 * time.Millisecond})
	// The echo: python3 is on every machine these tests run on.
	echo := exec.Command("ip", "netns", "exec", w.NS, "python3", "-c", `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("`+w.NSIP+`", 7000))
while True:
    b, a = s.recvfrom(65535)
    s.sendto(b, a)
`)
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Process.Kill(); echo.Wait() })
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(w.HostIP)}, &net.UDPAddr{IP: net.ParseIP(w.NSIP), Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2000)
	var rtt time.Duration
	for try := 0; try < 50; try++ { // the echo takes a moment to start
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		t0 := time.Now()
		c.Write([]byte("ping"))
		if _, err := c.Read(buf); err == nil {
			rtt = time.Since(t0)
			break
		}
	}
	if rtt < 80*time.Millisecond || rtt > 400*time.Millisecond {
		t.Fatalf("round trip %v through 2×40 ms", rtt)
	}
	// 20 packets of 1250 bytes at 1 Mbit/s: the last comes back about
	// 200 ms after the first.
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for i := 0; i < 20; i++ {
		c.Write(make([]byte, 1250))
	}
	var first, last time.Time
	for i := 0; i < 20; i++ {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if i == 0 {
			first = time.Now()
		}
		last = time.Now()
	}
	if spread := last.Sub(first); spread < 150*time.Millisecond {
		t.Fatalf("20 × 1250 bytes at 1 Mbit/s arrived within %v", spread)
	}
	down, up := w.Stats()
	t.Logf("round trip %v; burst spread %v; down %+v, up %+v", rtt, last.Sub(first), down, up)
}
