package auth

import (
	"strings"
	"testing"
	"time"
)

// FuzzVerify: any string as a token is refused with a named error, never
// a panic; only a token this signer made verifies.
func FuzzVerify(f *testing.F) {
	s, _ := NewSigner("0123456789abcdef-fuzz")
	good, _, _ := s.Issue(Expert, "phantom", time.Hour)
	f.Add(good)
	f.Add("")
	f.Add(".")
	f.Add("eyJyb2xlIjoiZXhwZXJ0In0.AAAA")
	f.Add(strings.Repeat("A", 100) + "." + strings.Repeat("B", 43))
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := s.Verify(tok)
		// The seed's token is made anew in every fuzz worker, so "it is
		// good" cannot be tested by equality: a token that verifies must
		// carry whole, current claims of this deployment.
		if err == nil && (!c.Role.Valid() || c.ID == "" || c.Issuer != Issuer || c.Audience != DefaultAudience || time.Now().Unix() >= c.Expires) {
			t.Fatalf("%q verified as %+v", tok, c)
		}
		if err != nil && Status(err) != 401 {
			t.Fatalf("status %d for %v", Status(err), err)
		}
	})
}
