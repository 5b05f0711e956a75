package auth

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	s, err := NewSigner("0123456789abcdef-test")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSigner("another-secret-0123456")
	good, claims, err := s.Issue(Expert, "phantom", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forged, _, _ := other.Issue(Expert, "phantom", time.Hour)
	expired, _, _ := s.Issue(Expert, "phantom", time.Second)
	s2, _ := NewSigner("0123456789abcdef-test")
	s2.now = func() time.Time { return time.Now().Add(2 * time.Second) }
	payload, sig, _ := strings.Cut(good, ".")
	tampered := payload[:len(payload)-2] + "xy." + sig

	for _, tc := range []struct {
		name  string
		s     *Signer
		token string
		want  error
	}{
		{"good", s, good, nil},
		{"empty", s, "", ErrNoToken},
		{"no dot", s, "abc", ErrInvalid},
		{"bad base64", s, "!!!.???", ErrInvalid},
		{"other secret", s, forged, ErrInvalid},
		{"tampered", s, tampered, ErrInvalid},
		{"expired", s2, expired, ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.s.Verify(tc.token)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want == nil && c != claims {
				t.Fatalf("claims = %+v, want %+v", c, claims)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	s, _ := NewSigner("")
	expert, _, _ := s.Issue(Expert, "phantom", time.Hour)
	for _, tc := range []struct {
		name, target, source string
		roles                []Role
		code                 int // 0: allowed
	}{
		{"query token", "/x?token=" + expert, "phantom", []Role{Expert}, 0},
		{"other source", "/x?token=" + expert, "probe2", []Role{Expert}, 403},
		{"wrong role", "/x?token=" + expert, "phantom", []Role{Sonographer}, 403},
		{"no token", "/x", "phantom", []Role{Expert}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.target, nil)
			_, err := s.Check(r, tc.source, tc.roles...)
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			w := httptest.NewRecorder()
			Deny(w, err)
			if w.Code != tc.code {
				t.Fatalf("code %d, want %d (%v)", w.Code, tc.code, err)
			}
		})
	}
	r := httptest.NewRequest("POST", "/whep/phantom", nil)
	r.Header.Set("Authorization", "Bearer "+expert)
	if _, err := s.Check(r, "phantom", Expert); err != nil {
		t.Fatalf("bearer: %v", err)
	}
}

func TestSignerRejects(t *testing.T) {
	if _, err := NewSigner("short"); err == nil {
		t.Fatal("short secret accepted")
	}
	s, _ := NewSigner("")
	if _, _, err := s.Issue("root", "phantom", time.Hour); err == nil {
		t.Fatal("unknown role issued")
	}
	// An admin token is for every source or none; no other role is.
	if _, _, err := s.Issue(Admin, "phantom", time.Hour); err == nil {
		t.Fatal("admin issued for one source")
	}
	if _, _, err := s.Issue(Sonographer, AllSources, time.Hour); err == nil {
		t.Fatal("sonographer issued for every source")
	}
}

// A token is for one deployment, and an invite never outlives the link
// that made it.
func TestAudienceAndParent(t *testing.T) {
	a, _ := NewSigner("0123456789abcdef-shared")
	b, _ := NewSigner("0123456789abcdef-shared")
	b.SetAudience("clinic-2")
	tok, sono, _ := a.Issue(Sonographer, "phantom", time.Hour)
	if _, err := b.Verify(tok); !errors.Is(err, ErrInvalid) {
		t.Fatalf("another deployment's token: %v", err)
	}
	_, inv, err := a.IssueUnder(sono, Expert, "phantom", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Expires != sono.Expires || inv.Parent != sono.ID {
		t.Fatalf("invite %+v outlives or does not name its parent %+v", inv, sono)
	}
}

func TestRegistryRevokesAndExpires(t *testing.T) {
	s, _ := NewSigner("")
	reg := NewRegistry(s, map[string]int{"ws": 2})
	sonoTok, sono, _ := reg.Issue(Claims{}, Sonographer, "phantom", time.Hour, "")
	invTok, inv, _ := reg.Issue(sono, Sonographer, "phantom", time.Hour, "second screen")
	expTok, exp, _ := reg.Issue(inv, Expert, "phantom", time.Hour, "Dr A")
	closed := make(chan error, 4)
	for _, c := range []Claims{inv, exp} {
		if _, err := reg.Bind(c, "ws", "", "127.0.0.1:1", func(err error) { closed <- err }); err != nil {
			t.Fatal(err)
		}
	}
	// The per-token cap.
	reg.Bind(exp, "ws", "", "", nil)
	if _, err := reg.Bind(exp, "ws", "", "", nil); !errors.Is(err, ErrTooMany) {
		t.Fatalf("third ws on one token: %v", err)
	}
	ids, err := reg.Revoke(inv.ID)
	if err != nil || len(ids) != 2 {
		t.Fatalf("revoke: %v %v (want the invite and the one it made)", ids, err)
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-closed:
			if !errors.Is(err, ErrRevoked) {
				t.Fatalf("closed with %v", err)
			}
		case <-time.After(time.Second):
			t.Fatal("a revoked token's connection stayed open")
		}
	}
	for _, tok := range []string{invTok, expTok} {
		if _, err := s.Verify(tok); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked token verifies: %v", err)
		}
	}
	if _, err := s.Verify(sonoTok); err != nil {
		t.Fatalf("the parent was revoked too: %v", err)
	}
	if _, err := reg.Bind(exp, "ws", "", "", nil); !errors.Is(err, ErrRevoked) {
		t.Fatalf("bind on a revoked token: %v", err)
	}
	// Expiry closes a bound connection at once when it is due.
	_, short, _ := reg.Issue(Claims{}, Expert, "phantom", time.Second, "")
	if _, err := reg.Bind(short, "ws", "", "", func(err error) { closed <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, ErrExpired) {
			t.Fatalf("closed with %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("an expired token's connection stayed open")
	}
	if g := reg.Grants("phantom"); len(g) != 3 {
		t.Fatalf("grants listed: %+v", g)
	}
}
