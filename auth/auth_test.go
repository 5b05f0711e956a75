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
	s2 := *s
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
		{"expired", &s2, expired, ErrExpired},
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
	if _, _, err := s.Issue("admin", "phantom", time.Hour); err == nil {
		t.Fatal("unknown role issued")
	}
}
