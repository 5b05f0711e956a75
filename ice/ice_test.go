package ice

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The TURN REST scheme as coturn checks it (use-auth-secret): the username
// is expiry:user, the password base64(HMAC-SHA1(secret, username)). The
// expected password was computed apart, with Python's hmac module.
func TestCredentials(t *testing.T) {
	u, p := Credentials("0123456789abcdef-north", "alice", 0, time.Unix(1700000000, 0))
	if u != "1700000000:alice" || p != "0reAfUrcnsglnMEZtyXvHySJfx0=" {
		t.Fatalf("got %q %q", u, p)
	}
	u, _ = Credentials("0123456789abcdef-north", "", time.Hour, time.Unix(1700000000, 0))
	if u != "1700003600" {
		t.Fatalf("no user: %q", u)
	}
}

func TestServerConfig(t *testing.T) {
	var got []Server
	src := "- stun:stun.example:3478\n- urls: [\"turn:t.example:3478?transport=udp\", \"turns:t.example:443?transport=tcp\"]\n  secret_file: /run/secret\n  ttl: 2h\n"
	if err := yaml.Unmarshal([]byte(src), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].URLs[0] != "stun:stun.example:3478" || len(got[1].URLs) != 2 || got[1].SecretFile != "/run/secret" || got[1].TTL != 2*time.Hour {
		t.Fatalf("%+v", got)
	}
	for _, tc := range []struct {
		s  Server
		ok bool
	}{
		{Server{URLs: []string{"stun:stun.example:3478"}}, true},
		{Server{URLs: []string{"turn:t:3478?transport=tcp"}, Username: "u", Credential: "c"}, true},
		{Server{URLs: []string{"turn:t:3478"}, SecretFile: "/s"}, true},
		{Server{URLs: []string{"turn:t:3478"}}, false}, // no credentials
		{Server{URLs: []string{"turn:t:3478?transport=sctp"}, SecretFile: "/s"}, false},
		{Server{URLs: []string{"http://t:3478"}}, false},
		{Server{URLs: []string{"turn:t:3478"}, SecretFile: "/s", Username: "u"}, false},
		{Server{}, false},
	} {
		if err := tc.s.Check(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadServer)) {
			t.Errorf("%+v: %v", tc.s, err)
		}
	}
}

// A provider mints fresh credentials per peer for REST servers and hands
// static ones as they are; the Link headers carry them as WHEP says.
func TestProvider(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("a-long-enough-shared-secret\n"), 0o600)
	p, err := NewProvider([]Server{
		{URLs: []string{"stun:s.example:3478"}},
		{URLs: []string{"turn:t.example:3478?transport=tcp"}, SecretFile: secret, TTL: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := p.For("link1")
	if len(got) != 2 || got[0].Username != "" || !strings.HasSuffix(got[1].Username, ":link1") || got[1].SecretFile != "" {
		t.Fatalf("%+v", got)
	}
	u, pw := Credentials("a-long-enough-shared-secret", "link1", time.Hour, time.Now())
	if got[1].Username != u || got[1].Credential != pw {
		t.Errorf("minted %q %q, want %q %q", got[1].Username, got[1].Credential, u, pw)
	}
	links := LinkHeaders(got)
	if len(links) != 2 || links[0] != `<stun:s.example:3478>; rel="ice-server"` ||
		!strings.HasPrefix(links[1], `<turn:t.example:3478?transport=tcp>; rel="ice-server"; username="`) || !strings.HasSuffix(links[1], `credential-type="password"`) {
		t.Errorf("%q", links)
	}
	if ws := WebRTC(got); ws[1].Username != got[1].Username || ws[1].Credential != got[1].Credential {
		t.Errorf("%+v", ws)
	}
	os.WriteFile(secret, []byte("short"), 0o600)
	if _, err := NewProvider([]Server{{URLs: []string{"turn:t:1"}, SecretFile: secret}}); err == nil {
		t.Error("a short secret was taken")
	}
}
