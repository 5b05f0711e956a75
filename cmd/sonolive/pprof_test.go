package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestServePprof(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:0", true},
		{"localhost:0", true},
		{"0.0.0.0:6060", false},
		{":6060", false},
		{"192.168.1.20:6060", false},
		{"no-port", false},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			addr, err := servePprof(ctx, tc.addr)
			if (err == nil) != tc.ok {
				t.Fatalf("servePprof(%q) = %v, %v", tc.addr, addr, err)
			}
			if err != nil {
				return
			}
			resp, err := http.Get("http://" + addr.String() + "/debug/pprof/heap?debug=1")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(b), "heap profile") {
				t.Fatalf("HTTP %d: %.200s", resp.StatusCode, b)
			}
		})
	}
}
