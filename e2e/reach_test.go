package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sonolive/internal/testnet"
	"sonolive/internal/testpeer"
)

// The clinic's box, a TURN server in a DMZ, a hub and an expert, each in
// its own network namespace joined through a router namespace ("inet")
// whose nftables rules are the clinic's firewall:
//
//	clinic 10.71.1.2 ─┐
//	dmz    10.71.2.2 ─┼─ inet (router; the hub on 198.51.100.10:443)
//	expert 203.0.113.2┘
//
// Nothing new may enter the clinic. The box opens its link to the hub
// (signalling) and reaches the TURN server (media); the expert reaches the
// box's pages and WHEP through the hub, and the video through TURN.
const (
	hubIP    = "198.51.100.10"
	turnIP   = "10.71.2.2"
	boxName  = "clinic1"
	hubToken = "hub-link-token-for-clinic1-0123456789"
)

type reachScenario struct {
	name string
	// clinicOut is what the clinic may send out (an nft match; "": all).
	clinicOut string
	// expertNAT puts the expert behind a symmetric NAT too.
	expertNAT bool
	// turnURL is the TURN server the box and the pages use.
	turnURL string
}

func TestExpertReachesAClinicBehindAFirewall(t *testing.T) {
	testnet.RequireNftables(t)
	testpeer.Need(t, "turnserver", "curl")
	for _, sc := range []reachScenario{
		// A hospital network whose only way out is TCP 443.
		{name: "tcp443-only", clinicOut: "tcp dport 443", turnURL: "turn:" + turnIP + ":443?transport=tcp"},
		// UDP allowed, but box and expert each behind a symmetric NAT
		// (random source ports per destination): STUN cannot pair them.
		{name: "symmetric-nat", expertNAT: true, turnURL: "turn:" + turnIP + ":443?transport=udp"},
	} {
		t.Run(sc.name, func(t *testing.T) { reach(t, sc) })
	}
}

func reach(t *testing.T, sc reachScenario) {
	dir := t.TempDir()
	inet := testnet.NewNS(t, "sl-inet")
	clinic := testnet.NewNS(t, "sl-clinic")
	dmz := testnet.NewNS(t, "sl-dmz")
	expert := testnet.NewNS(t, "sl-expert")
	testnet.Veth(t, inet, "to-clinic", "10.71.1.1/24", clinic, "eth0", "10.71.1.2/24")
	testnet.Veth(t, inet, "to-dmz", "10.71.2.1/24", dmz, "eth0", turnIP+"/24")
	testnet.Veth(t, inet, "to-expert", "203.0.113.1/24", expert, "eth0", "203.0.113.2/24")
	inet.IP("addr", "add", hubIP+"/32", "dev", "lo")
	clinic.IP("route", "add", "default", "via", "10.71.1.1")
	dmz.IP("route", "add", "default", "via", "10.71.2.1")
	expert.IP("route", "add", "default", "via", "203.0.113.1")
	inet.Run("sysctl", "-qw", "net.ipv4.ip_forward=1")
	natted, private := "10.71.1.0/24", `"to-clinic"`
	if sc.expertNAT {
		natted, private = "10.71.1.0/24, 203.0.113.0/24", `"to-clinic", "to-expert"`
	}
	inet.Nft(fmt.Sprintf(`table inet lab {
  chain routed {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    oifname { %[1]s } drop
    iifname "to-clinic" %[2]s accept
    iifname { "to-dmz", "to-expert" } accept
  }
  chain inbound {
    type filter hook input priority 0; policy accept;
    iifname "to-clinic" ct state established,related accept
    iifname "to-clinic" %[2]s accept
    iifname "to-clinic" drop
  }
  chain outbound {
    type filter hook output priority 0; policy accept;
    oifname { %[1]s } ct state new drop
  }
  chain natout {
    type nat hook postrouting priority 100;
    ip saddr { %[3]s } masquerade random
  }
}
`, private, sc.clinicOut, natted))

	// The TURN server in the DMZ, on 443 for UDP and TCP.
	turn := testpeer.StartCoturnAt(t, testpeer.CoturnAt{NetNS: dmz.Name, IP: turnIP, Port: 443})

	// The hub, with a certificate the box and the expert trust.
	ca, cert, key := writeCerts(t, dir, hubIP)
	tokFile := filepath.Join(dir, "hub.token")
	os.WriteFile(tokFile, []byte(hubToken+"\n"), 0o600)
	startIn(t, inet, "hub", "--listen", hubIP+":443", "--tls-cert", cert, "--tls-key", key,
		"--box", boxName+"="+tokFile, "--default", boxName, "--log-level", "warn")
	inet.WaitTCP(hubIP+":443", 20*time.Second)

	// The box: the phantom and the shipped model, its own listener on the
	// clinic's loopback, links handed out pointing at the hub.
	cfg := filepath.Join(dir, "box.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: 127.0.0.1:8080
public_url: https://%[1]s
webrtc:
  ice_servers:
    - urls: [%[2]q]
      secret_file: %[3]s
link:
  hub: https://%[1]s
  name: %[4]s
  token_file: %[5]s
  ca_file: %[6]s
sources:
  - id: phantom
    url: "phantom://?width=640&height=480&fps=15&seed=1&lesions=2"
`, hubIP, sc.turnURL, turn.SecretFile, boxName, tokFile, ca)), 0o644)
	links := filepath.Join(dir, "links")
	startIn(t, clinic, "serve", "--config", cfg, "--no-record", "--audit", filepath.Join(dir, "audit.jsonl"),
		"--link-file", links, "--log-level", "warn")
	var sono string
	waitFor(t, 60*time.Second, "the box's link file", func() bool {
		b, _ := os.ReadFile(links)
		_, sono, _ = strings.Cut(strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)[0], " ")
		return strings.Contains(sono, "token=")
	})
	sonoTok := sono[strings.Index(sono, "token=")+len("token="):]
	waitFor(t, 60*time.Second, "the box healthy", func() bool {
		return strings.TrimSpace(clinic.Run("curl", "-s", "http://127.0.0.1:8080/healthz")) == "ok"
	})
	// The sonographer invites the expert on the box itself.
	out := clinic.Run("curl", "-sf", "-H", "Authorization: Bearer "+sonoTok, "-H", "Content-Type: application/json",
		"-d", `{"role":"expert","ttl_s":900}`, "http://127.0.0.1:8080/api/sources/phantom/invites")
	var inv struct{ URL string }
	if json.Unmarshal([]byte(out), &inv) != nil || !strings.HasPrefix(inv.URL, "https://"+hubIP+"/") {
		t.Fatalf("invite: %s", out)
	}
	expertTok := inv.URL[strings.Index(inv.URL, "token=")+len("token="):]

	// Nothing reaches the box but through its link: the expert cannot open
	// its address, and the hub's page is the box's.
	if err := expert.Command(context.Background(), "curl", "-s", "--max-time", "3", "http://10.71.1.2:8080/healthz").Run(); err == nil {
		t.Fatal("the expert reached the box's address directly")
	}
	page := expert.Run("curl", "-sf", "--cacert", ca, inv.URL)
	if !strings.Contains(page, "<html") {
		t.Fatalf("the expert's page through the hub: %.200s", page)
	}

	// The expert's viewer, gathering with the ICE servers the page gets.
	rep := bench(t, expert, "--url", "https://"+hubIP+"/whep/phantom", "--token", expertTok, "--ca", ca,
		"--ice", "--metrics", "none", "--n", "1", "--window", "10s")
	// The same viewer on the clinic's own network, for the added delay.
	direct := bench(t, clinic, "--url", "http://127.0.0.1:8080/whep/phantom", "--token", sonoTok,
		"--metrics", "none", "--n", "1", "--window", "10s")
	t.Logf("%s: path %s, %.1f%% of frames, %.1f%% with metadata, connect to first keyframe %.0f ms; capture to arrival p50 %.0f ms / p95 %.0f ms (on the clinic's network: p50 %.0f ms / p95 %.0f ms, path %s)",
		sc.name, rep.Path, rep.ReceivedMin*100, rep.MetadataMin*100, rep.FirstKeyframeP50, rep.ArrivalP50, rep.ArrivalP95,
		direct.ArrivalP50, direct.ArrivalP95, direct.Path)
	if rep.ReceivedMin < 0.99 || rep.MetadataMin < 0.99 {
		t.Errorf("the expert got %.1f%% of frames, %.1f%% with metadata; want ≥ 99%%", rep.ReceivedMin*100, rep.MetadataMin*100)
	}
	if !strings.Contains(rep.Path, "relay") {
		t.Errorf("path %q: want a TURN relay on one side", rep.Path)
	}
}

// benchReport is the part of `sonolive bench viewers`' report the test
// reads.
type reachReport struct {
	Path             string  `json:"path"`
	ReceivedMin      float64 `json:"received_ratio_min"`
	MetadataMin      float64 `json:"metadata_ratio_min"`
	FirstKeyframeP50 float64 `json:"first_keyframe_ms_p50"`
	ArrivalP50       float64 `json:"capture_to_arrival_ms_p50"`
	ArrivalP95       float64 `json:"capture_to_arrival_ms_p95"`
}

func bench(t *testing.T, ns *testnet.NS, args ...string) reachReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, binary, append([]string{"bench", "viewers"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench in %s: %v\n%s", ns.Name, err, stderr.String())
	}
	var rep reachReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("bench report: %v\n%s", err, stdout.String())
	}
	return rep
}

// startIn runs a sonolive command in a namespace until the test ends
// (stopped as Ctrl-C does), showing its log when the test fails.
func startIn(t *testing.T, ns *testnet.NS, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, binary, args...)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() || os.Getenv("SONOLIVE_E2E_LOGS") != "" {
			t.Logf("%s in %s:\n%s", args[0], ns.Name, logs.String())
		}
	})
}

// syncBuffer is a bytes.Buffer a process's two pipes write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !ok(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, within)
		}
	}
}

// writeCerts makes a CA and a certificate for ip signed by it; it returns
// the CA's file and the certificate's and key's.
func writeCerts(t *testing.T, dir, ip string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sonolive test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(ip)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(leafKey)
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "hub.pem"), filepath.Join(dir, "hub-key.pem")
	for f, b := range map[string]*pem.Block{ca: {Type: "CERTIFICATE", Bytes: caDER}, cert: {Type: "CERTIFICATE", Bytes: leafDER},
		key: {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}
