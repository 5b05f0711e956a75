// Package auth issues and checks the invite tokens that let a viewer into a
// live session or the teaching library: an HMAC-signed, expiring, role- and
// source-scoped claim. No accounts and no database: whoever holds a valid
// link may use it until it expires or is revoked, which is what a
// sonographer handing a link to a radiologist expects. The Registry
// (registry.go) keeps what this process issued, revokes, and binds every
// live connection to its token so that it ends when the token does.
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
	"sync"
	"time"
)

// Role is what a token lets its holder do.
type Role string

const (
	// Sonographer is the local operator: watches, creates invites and
	// switches the burned-in overlay.
	Sonographer Role = "sonographer"
	// Expert watches and consults the live session; a live-view invite
	// does not open the archive.
	Expert Role = "expert"
	// Teacher opens the source's teaching library: lists, replays and
	// deletes recordings.
	Teacher Role = "teacher"
	// Student lists and replays the source's recordings.
	Student Role = "student"
	// Publisher sends a source's video over WHIP: a tablet or laptop
	// sharing the probe app's window, OBS. It watches nothing.
	Publisher Role = "publisher"
	// Admin runs the box: adds and removes sources while it serves. Its
	// token names no source (AllSources) and opens no page; nobody can
	// invite one.
	Admin Role = "admin"
)

// AllSources is the source of an Admin token.
const AllSources = "*"

// Roles lists the roles a link can be issued for by invite.
var Roles = []Role{Sonographer, Expert, Teacher, Student, Publisher}

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	if r == Admin {
		return true
	}
	for _, k := range Roles {
		if r == k {
			return true
		}
	}
	return false
}

// Errors callers test for. ErrForbidden means 403, the others 401.
var (
	ErrNoToken   = errors.New("missing token")
	ErrInvalid   = errors.New("invalid token")
	ErrExpired   = errors.New("token expired")
	ErrRevoked   = errors.New("token revoked")
	ErrForbidden = errors.New("token not valid here")
)

// Issuer is every token's iss.
const Issuer = "sonolive"

// DefaultAudience is the aud of tokens when the deployment names none.
const DefaultAudience = "sonolive"

// Claims are what a token says.
type Claims struct {
	Role    Role   `json:"role"`
	Source  string `json:"src"`
	Expires int64  `json:"exp"` // unix seconds
	ID      string `json:"id"`
	// Issuer and Audience keep a token to the deployment that made it,
	// should two share a secret.
	Issuer   string `json:"iss"`
	Audience string `json:"aud"`
	// Parent is the id of the token that asked for this one (an invite's
	// sonographer): revoking the parent revokes it too.
	Parent string `json:"by,omitempty"`
}

// ExpiresAt is Expires as a time.
func (c Claims) ExpiresAt() time.Time { return time.Unix(c.Expires, 0) }

// Signer issues and verifies tokens with one secret.
type Signer struct {
	secret   []byte
	audience string
	now      func() time.Time

	mu      sync.Mutex
	revoked map[string]int64 // token id -> its expiry (unix s), kept until then
}

// MinSecretLen is the shortest secret accepted, in bytes.
const MinSecretLen = 16

// NewSigner returns a signer. An empty secret means a random one: links
// then die with the process, the safe default for a box nobody configured.
func NewSigner(secret string) (*Signer, error) {
	s := &Signer{secret: []byte(secret), audience: DefaultAudience, now: time.Now, revoked: map[string]int64{}}
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

// SetAudience names the deployment: tokens are issued for it and only
// its tokens are accepted.
func (s *Signer) SetAudience(aud string) {
	if aud != "" {
		s.audience = aud
	}
}

// Issue signs a token for role on source, valid for ttl.
func (s *Signer) Issue(role Role, source string, ttl time.Duration) (string, Claims, error) {
	return s.IssueUnder(Claims{}, role, source, ttl)
}

// IssueUnder signs a token asked for by the holder of parent: it expires
// no later than parent does, and revoking parent revokes it. A zero
// parent issues a root token.
func (s *Signer) IssueUnder(parent Claims, role Role, source string, ttl time.Duration) (string, Claims, error) {
	if !role.Valid() {
		return "", Claims{}, fmt.Errorf("auth: unknown role %q", role)
	}
	if (role == Admin) != (source == AllSources) {
		return "", Claims{}, fmt.Errorf("auth: role %s cannot be issued for source %q", role, source)
	}
	if ttl <= 0 {
		return "", Claims{}, errors.New("auth: ttl must be positive")
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return "", Claims{}, fmt.Errorf("auth: token id: %w", err)
	}
	c := Claims{Role: role, Source: source, Expires: s.now().Add(ttl).Unix(), ID: hex.EncodeToString(id),
		Issuer: Issuer, Audience: s.audience, Parent: parent.ID}
	if parent.ID != "" && parent.Expires < c.Expires {
		c.Expires = parent.Expires
	}
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
	if err := json.Unmarshal(payload, &c); err != nil || !c.Role.Valid() || c.ID == "" || (c.Role == Admin) != (c.Source == AllSources) {
		return Claims{}, ErrInvalid
	}
	if c.Issuer != Issuer || c.Audience != s.audience {
		return Claims{}, fmt.Errorf("%w: issued for %q by %q", ErrInvalid, c.Audience, c.Issuer)
	}
	if s.now().Unix() >= c.Expires {
		return Claims{}, ErrExpired
	}
	if s.IsRevoked(c) {
		return Claims{}, ErrRevoked
	}
	return c, nil
}

// Revoke makes every later Verify of the token id (and of the tokens it
// asked for) fail with ErrRevoked; expires is when it would have expired,
// after which the entry is forgotten.
func (s *Signer) Revoke(id string, expires int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	for k, exp := range s.revoked {
		if exp <= now {
			delete(s.revoked, k)
		}
	}
	s.revoked[id] = expires
}

// IsRevoked reports whether c or its parent was revoked.
func (s *Signer) IsRevoked(c Claims) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, a := s.revoked[c.ID]
	_, b := s.revoked[c.Parent]
	return a || (c.Parent != "" && b)
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

// Status is the HTTP status for a Check or Bind error.
func Status(err error) int {
	switch {
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrTooMany):
		return http.StatusTooManyRequests
	}
	return http.StatusUnauthorized
}

// Deny writes the status and a one-line reason for a Check error. The
// connection is closed after it: a refused client's body is not read (the
// server would otherwise drain up to 256 KiB of it to reuse the connection).
func Deny(w http.ResponseWriter, err error) {
	code := Status(err)
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sonolive"`)
	}
	w.Header().Set("Connection", "close")
	http.Error(w, err.Error(), code)
}
