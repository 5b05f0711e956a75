package server

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"sonolive/auth"
)

// A session publishes its stream to another sonolive's WHIP ingest (as it
// would to LiveKit's ingress or MediaMTX): the receiving box's source goes
// live with the frames, the sender's stats say live, and when the
// receiver drops the publisher the egress reconnects by itself.
func TestWHIPEgressToSonolive(t *testing.T) {
	rcfg := Default()
	rcfg.Record.Enabled = false
	rcfg.Audit.Path = ""
	rcfg.Sources = []Source{{ID: "remote", URL: "whip://"}}
	recv, rbase := runServer(t, rcfg)
	pub, _, err := recv.access.Issue(auth.Claims{}, auth.Publisher, "remote", time.Hour, "clinic box")
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "egress.token")
	os.WriteFile(tokFile, []byte(pub+"\n"), 0o600)

	scfg := Default()
	scfg.Record.Enabled = false
	scfg.Audit.Path = ""
	scfg.Sources = []Source{{ID: "phantom", URL: "phantom://?width=320&height=240&fps=15",
		Egress: []Egress{{WHIP: rbase + "/whip/remote", TokenFile: tokFile}}}}
	send, _ := runServer(t, scfg)
	sender, _ := send.sessions.get("phantom")
	remote, _ := recv.sessions.get("remote")

	waitLive := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st := remote.stats()
			if st.State == "live" && st.Publisher != nil && st.Publisher.Frames >= 30 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the receiving source is %s, publisher %+v; egress %+v", what, st.State, st.Publisher, sender.stats().Egress)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitLive("first connection")
	if eg := sender.stats().Egress; len(eg) != 1 || eg[0].State != "live" || eg[0].Sent < 30 {
		t.Fatalf("egress %+v", eg)
	}
	// The receiver drops its publisher (as a restart would): the egress
	// comes back on its own.
	remote.feed.Close()
	time.Sleep(time.Second)
	waitLive("after the drop")
	if eg := sender.stats().Egress[0]; eg.Reconnects < 1 {
		t.Errorf("egress %+v", eg)
	}
}
