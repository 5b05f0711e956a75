package testpeer

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Coturn is a running coturn (Debian's turnserver) with the TURN REST
// scheme: credentials minted from Secret.
type Coturn struct {
	Port   int    // TURN over UDP and TCP on 127.0.0.1
	Secret string // its static-auth-secret
	// SecretFile holds Secret, for sonolive's config.
	SecretFile string
}

// StartCoturn runs coturn on loopback, use-auth-secret, no TLS, relaying
// to loopback peers, until the test ends.
func StartCoturn(t testing.TB) *Coturn {
	t.Helper()
	Need(t, "turnserver")
	dir := t.TempDir()
	c := &Coturn{Port: freePort(t), Secret: "coturn-test-shared-secret-0123"}
	c.SecretFile = filepath.Join(dir, "turn.secret")
	if err := os.WriteFile(c.SecretFile, []byte(c.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command("turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
		"--listening-port="+strconv.Itoa(c.Port), "--min-port=49152", "--max-port=65000", "--allow-loopback-peers",
		"--use-auth-secret", "--static-auth-secret="+c.Secret, "--realm=sonolive", "--fingerprint",
		"--log-file=stdout", "--simple-log", "--pidfile="+filepath.Join(dir, "turn.pid"), "--userdb="+filepath.Join(dir, "turn.db"))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("coturn:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port)); err == nil {
			conn.Close()
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("coturn did not start:\n%s", logs.String())
		}
	}
}
