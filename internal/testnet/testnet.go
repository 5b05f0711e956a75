// Package testnet has network fixtures for tests: servers that misbehave the
// way real cameras and encoders do.
package testnet

import (
	"net"
	"sync"
	"testing"
)

// BlackHole listens on loopback, accepts connections and never answers —
// an RTSP camera that hangs mid-handshake. It closes when the test ends.
func BlackHole(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln
}
