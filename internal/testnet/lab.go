package testnet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// NS is a network namespace a test made; it is deleted when the test
// ends.
type NS struct {
	Name string
	t    testing.TB
}

// NewNS makes namespace name (replacing one left over) with loopback up.
func NewNS(t testing.TB, name string) *NS {
	t.Helper()
	exec.Command("ip", "netns", "del", name).Run()
	n := &NS{Name: name, t: t}
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n.IP("link", "set", "lo", "up")
	return n
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// IP runs ip(8) in the namespace.
func (n *NS) IP(args ...string) {
	n.t.Helper()
	run(n.t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Command is name run inside the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs name in the namespace and fails the test on an error.
func (n *NS) Run(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Command(context.Background(), name, args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("in %s: %s %s: %v\n%s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Nft loads an nftables ruleset into the namespace.
func (n *NS) Nft(ruleset string) {
	n.t.Helper()
	cmd := n.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("nft in %s: %v\n%s\n%s", n.Name, err, out, ruleset)
	}
}

// WaitTCP waits until addr accepts TCP connections from inside the
// namespace.
func (n *NS) WaitTCP(addr string, within time.Duration) {
	n.t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	deadline := time.Now().Add(within)
	for {
		err := n.Command(context.Background(), "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port)).Run()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("in %s: %s does not accept connections after %v", n.Name, addr, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Veth joins namespaces a and b with a veth pair: interface aIf with
// aCIDR in a, bIf with bCIDR in b.
func Veth(t testing.TB, a *NS, aIf, aCIDR string, b *NS, bIf, bCIDR string) {
	t.Helper()
	run(t, "ip", "-n", a.Name, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	a.IP("addr", "add", aCIDR, "dev", aIf)
	b.IP("addr", "add", bCIDR, "dev", bIf)
	a.IP("link", "set", aIf, "up")
	b.IP("link", "set", bIf, "up")
}

// RequireNftables is RequireNetAdmin plus nft(8).
func RequireNftables(t testing.TB) {
	t.Helper()
	RequireNetAdmin(t)
	if _, err := exec.LookPath("nft"); err != nil {
		if strings.EqualFold(os.Getenv("CI"), "true") {
			t.Fatal("network namespaces: no nft(8) (make setup-peers installs nftables)")
		}
		t.Skip("network namespaces: no nft(8) (make setup-peers installs nftables)")
	}
}
