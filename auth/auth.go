// Package auth issues and checks the invite tokens that let a viewer into a
// live session: an HMAC-signed, expiring, role- and source-scoped claim. No
// accounts and no database: whoever holds a valid link may watch until it
// expires, which is what a sonographer handing a link to a radiologist
// expects.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Role is what a token lets its holder do.
type Role string

const (
	// Sonographer is the local operator: watches, creates invites and
	// switches the burned-in overlay.
	Sonographer Role = "sonographer"
	// Expert watches and consults.
	Expert Role = "expert"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == Sonographer || r == Expert }

// Errors callers test for. The first three mean 401, ErrForbidden 403.
var (
	ErrNoToken   = errors.New("missing token")
	ErrInvalid   = errors.New("invalid token")
	ErrExpired   = errors.New("token expired")
	ErrForbidden = errors.New("token not valid here")
)

// Claims are what a token says.
type Claims struct {
	Role    Role   `json:"role"`
	Source  string `json:"src"`
	Expires int64  `json:"exp"` // unix seconds
	ID      string `json:"id"`
}

// ExpiresAt is Expires as a time.
func (c Claims) ExpiresAt() time.Time { return time.Unix(c.Expires, 0) }

// Signer issues and verifies tokens with one secret.
type Signer struct {
	secret []byte
	now    func() time.Time
}

// MinSecretLen is the shortest secret accepted, in bytes.
const MinSecretLen = 16

// NewSigner returns a signer. An empty secret means a random one: links
// then die with the process, the safe default for a box nobody configured.
func NewSigner(secret string) (*Signer, error) {
	s := &Signer{secret: []byte(secret), now: time.Now}
	if secret == "" {
		s.secret = make([]byte, 32)
		if _, err := rand.Read(s.secret); err != nil {
			return nil, fmt.Errorf("auth: random secret: %w", err)
		}
	} else if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("auth: secret must be at least %d bytes", MinSecretLen)
	}
	return s, nil
}

// Issue signs a token for role on source, valid for ttl.
func (s *Signer) Issue(role Role, source string, ttl time.Duration) (string, Claims, error) {
	if !role.Valid() {
		return "", Claims{}, fmt.Errorf("auth: unknown role %q", role)
	}
	if ttl <= 0 {
		return "", Claims{}, errors.New("auth: ttl must be positive")
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return "", Claims{}, fmt.Errorf("auth: token id: %w", err)
	}
	c := Claims{Role: role, Source: source, Expires: s.now().Add(ttl).Unix(), ID: hex.EncodeToString(id)}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", Claims{}, err
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(payload) + "." + enc.EncodeToString(s.mac(payload)), c, nil
}

func (s *Signer) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write(payload)
	return m.Sum(nil)
}

// Verify checks a token's signature and expiry.
func (s *Signer) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrNoToken
	}
	p, sig, ok := strings.Cut(token, ".")
	if !ok {
		return Claims{}, ErrInvalid
	}
	enc := base64.RawURLEncoding
	payload, err1 := enc.DecodeString(p)
	mac, err2 := enc.DecodeString(sig)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.mac(payload)) {
		return Claims{}, ErrInvalid
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil || !c.Role.Valid() {
		return Claims{}, ErrInvalid
	}
	if s.now().Unix() >= c.Expires {
		return Claims{}, ErrExpired
	}
	return c, nil
}

// Check verifies the request's token and that it grants one of roles on
// source.
func (s *Signer) Check(r *http.Request, source string, roles ...Role) (Claims, error) {
	c, err := s.Verify(FromRequest(r))
	if err != nil {
		return c, err
	}
	if c.Source != source {
		return c, fmt.Errorf("%w: issued for source %q", ErrForbidden, c.Source)
	}
	for _, r := range roles {
		if c.Role == r {
			return c, nil
		}
	}
	return c, fmt.Errorf("%w: role %s may not do this", ErrForbidden, c.Role)
}

// FromRequest takes the token from "Authorization: Bearer" (WHEP players)
// or the token query parameter (links and WebSockets, which cannot set
// headers in a browser).
func FromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return r.URL.Query().Get("token")
}

// Status is the HTTP status for a Check error.
func Status(err error) int {
	if errors.Is(err, ErrForbidden) {
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}

// Deny writes the status and a one-line reason for a Check error.
func Deny(w http.ResponseWriter, err error) {
	code := Status(err)
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sonolive"`)
	}
	http.Error(w, err.Error(), code)
}
