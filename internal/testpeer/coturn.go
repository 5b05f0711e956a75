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
	Port   int    // TURN over UDP and TCP
	Secret string // its static-auth-secret
	// SecretFile holds Secret, for sonolive's config.
	SecretFile string
}

// StartCoturn runs coturn on loopback, use-auth-secret, no TLS, relaying
// to loopback peers, until the test ends.
func StartCoturn(t testing.TB) *Coturn {
	t.Helper()
	return StartCoturnAt(t, CoturnAt{IP: "127.0.0.1", Port: freePort(t)})
}

// CoturnAt places a coturn: in network namespace NetNS ("" this one), on
// IP:Port (UDP and TCP), relaying from IP.
type CoturnAt struct {
	NetNS string
	IP    string
	Port  int
}

// StartCoturnAt runs coturn where at says until the test ends.
func StartCoturnAt(t testing.TB, at CoturnAt) *Coturn {
	t.Helper()
	Need(t, "turnserver")
	dir := t.TempDir()
	c := &Coturn{Port: at.Port, Secret: "coturn-test-shared-secret-0123"}
	c.SecretFile = filepath.Join(dir, "turn.secret")
	if err := os.WriteFile(c.SecretFile, []byte(c.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	args := []string{"-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip=" + at.IP, "--relay-ip=" + at.IP,
		"--listening-port=" + strconv.Itoa(c.Port), "--min-port=49152", "--max-port=65000",
		"--use-auth-secret", "--static-auth-secret=" + c.Secret, "--realm=sonolive", "--fingerprint",
		"--log-file=stdout", "--simple-log", "--pidfile=" + filepath.Join(dir, "turn.pid"), "--userdb=" + filepath.Join(dir, "turn.db")}
	if at.IP == "127.0.0.1" {
		args = append(args, "--allow-loopback-peers")
	}
	cmd := exec.Command("turnserver", args...)
	if at.NetNS != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", at.NetNS, "turnserver"}, args...)...)
	}
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
	addr := net.JoinHostPort(at.IP, strconv.Itoa(c.Port))
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var err error
		if at.NetNS == "" {
			var conn net.Conn
			if conn, err = net.Dial("tcp", addr); err == nil {
				conn.Close()
			}
		} else {
			err = exec.Command("ip", "netns", "exec", at.NetNS, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", at.IP, c.Port)).Run()
		}
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("coturn did not start:\n%s", logs.String())
		}
	}
}
