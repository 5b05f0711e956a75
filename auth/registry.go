package auth

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// ErrTooMany: the token already holds as many connections of that kind as
// it may.
var ErrTooMany = errors.New("too many connections for this link")

// Registry is what this process issued and who is connected with it. Every
// live connection (a WebRTC viewer, a WebSocket, a download) is bound to
// its token: when the token expires or is revoked, the connection's close
// function is called with ErrExpired or ErrRevoked.
type Registry struct {
	signer *Signer
	// limits is the most connections of one kind one token may hold.
	limits map[string]int

	mu     sync.Mutex
	grants map[string]*grant // by token id
}

type grant struct {
	claims  Claims
	label   string
	created time.Time
	revoked bool
	conns   map[*Binding]struct{}
}

// Binding is one live connection bound to a token.
type Binding struct {
	Kind  string // "whep", "ws", "download"
	Addr  string
	Since time.Time
	ID    string // the connection's own id, e.g. the viewer id

	reg    *Registry
	claims Claims
	timer  *time.Timer
	close  func(reason error)
	once   sync.Once
}

// NewRegistry keeps grants for signer. limits caps the connections of each
// kind one token may hold (a kind not listed: no cap).
func NewRegistry(signer *Signer, limits map[string]int) *Registry {
	return &Registry{signer: signer, limits: limits, grants: map[string]*grant{}}
}

// Issue signs a token under parent (zero: a root token) and remembers it.
func (r *Registry) Issue(parent Claims, role Role, source string, ttl time.Duration, label string) (string, Claims, error) {
	tok, c, err := r.signer.IssueUnder(parent, role, source, ttl)
	if err != nil {
		return "", c, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune()
	r.grants[c.ID] = &grant{claims: c, label: label, created: r.signer.now(), conns: map[*Binding]struct{}{}}
	return tok, c, nil
}

// prune forgets expired grants that hold no connection. r.mu is held.
func (r *Registry) prune() {
	now := r.signer.now().Unix()
	for id, g := range r.grants {
		if g.claims.Expires <= now && len(g.conns) == 0 {
			delete(r.grants, id)
		}
	}
}

// grantFor returns the grant of c, recording one for a token a previous
// run of this process (with the same secret) issued. r.mu is held.
func (r *Registry) grantFor(c Claims) *grant {
	g, ok := r.grants[c.ID]
	if !ok {
		g = &grant{claims: c, created: r.signer.now(), conns: map[*Binding]struct{}{}}
		r.grants[c.ID] = g
	}
	return g
}

// Check reports whether c may open one more connection of kind now (not
// revoked, under its limit): a cheap test before costly work such as a
// WebRTC negotiation. Bind decides for good.
func (r *Registry) Check(c Claims, kind string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.signer.IsRevoked(c) {
		return ErrRevoked
	}
	g, ok := r.grants[c.ID]
	if !ok {
		return nil
	}
	return r.underLimit(g, kind)
}

// underLimit is nil while g holds fewer than the limit of kind. r.mu is held.
func (r *Registry) underLimit(g *grant, kind string) error {
	max, ok := r.limits[kind]
	if !ok {
		return nil
	}
	n := 0
	for o := range g.conns {
		if o.Kind == kind {
			n++
		}
	}
	if n >= max {
		return fmt.Errorf("%w: %d %s connections", ErrTooMany, n, kind)
	}
	return nil
}

// Bind ties a live connection to the token c: close is called once, from
// its own goroutine, when the token expires or is revoked. The caller
// calls Release when the connection ends for any other reason.
func (r *Registry) Bind(c Claims, kind, id, addr string, close func(reason error)) (*Binding, error) {
	b := &Binding{Kind: kind, Addr: addr, Since: r.signer.now(), ID: id, reg: r, claims: c, close: close}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.signer.IsRevoked(c) {
		return nil, ErrRevoked
	}
	g := r.grantFor(c)
	if err := r.underLimit(g, kind); err != nil {
		return nil, err
	}
	g.conns[b] = struct{}{}
	left := time.Until(c.ExpiresAt())
	b.timer = time.AfterFunc(max(left, 0), func() { b.end(ErrExpired) })
	return b, nil
}

// end closes the connection for reason and forgets it.
func (b *Binding) end(reason error) {
	b.once.Do(func() {
		b.detach()
		if b.close != nil {
			b.close(reason)
		}
	})
}

// Release forgets the connection without closing it: it ended on its own.
func (b *Binding) Release() {
	if b == nil {
		return
	}
	b.once.Do(b.detach)
}

func (b *Binding) detach() {
	// Under the lock: Bind sets b.timer while holding it, and a timer
	// already due may fire before that assignment.
	b.reg.mu.Lock()
	b.timer.Stop()
	if g, ok := b.reg.grants[b.claims.ID]; ok {
		delete(g.conns, b)
	}
	b.reg.mu.Unlock()
}

// Claims are the token the connection is bound to.
func (b *Binding) Claims() Claims { return b.claims }

// Revoke revokes the token id and every token issued under it (as far as
// this process knows), and closes their connections. It returns the ids
// revoked.
func (r *Registry) Revoke(id string) ([]string, error) {
	r.mu.Lock()
	g, ok := r.grants[id]
	if !ok {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: no such link", ErrInvalid)
	}
	ids := []string{}
	var ending []*Binding
	var walk func(g *grant)
	walk = func(g *grant) {
		if !g.revoked {
			g.revoked = true
			r.signer.Revoke(g.claims.ID, g.claims.Expires)
		}
		ids = append(ids, g.claims.ID)
		for b := range g.conns {
			ending = append(ending, b)
		}
		for _, child := range r.grants {
			if child.claims.Parent == g.claims.ID && child != g {
				walk(child)
			}
		}
	}
	walk(g)
	r.mu.Unlock()
	for _, b := range ending {
		go b.end(ErrRevoked)
	}
	return ids, nil
}

// Grant describes an issued token for the sonographer's page: never the
// token itself.
type Grant struct {
	ID          string       `json:"id"`
	Role        Role         `json:"role"`
	Source      string       `json:"source"`
	Label       string       `json:"label,omitempty"`
	Parent      string       `json:"by,omitempty"`
	Created     time.Time    `json:"created"`
	Expires     time.Time    `json:"expires"`
	Revoked     bool         `json:"revoked"`
	Connections []Connection `json:"connections"`
}

// Connection is one live connection of a grant.
type Connection struct {
	Kind  string    `json:"kind"`
	ID    string    `json:"id,omitempty"`
	Addr  string    `json:"addr"`
	Since time.Time `json:"since"`
}

// Grants lists the unexpired tokens for source, newest first.
func (r *Registry) Grants(source string) []Grant {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prune()
	now := r.signer.now().Unix()
	out := []Grant{}
	for _, g := range r.grants {
		if g.claims.Source != source || (g.claims.Expires <= now && len(g.conns) == 0) {
			continue
		}
		e := Grant{ID: g.claims.ID, Role: g.claims.Role, Source: source, Label: g.label, Parent: g.claims.Parent,
			Created: g.created.UTC(), Expires: g.claims.ExpiresAt().UTC(), Revoked: g.revoked, Connections: []Connection{}}
		for b := range g.conns {
			e.Connections = append(e.Connections, Connection{Kind: b.Kind, ID: b.ID, Addr: b.Addr, Since: b.Since.UTC()})
		}
		sort.Slice(e.Connections, func(i, j int) bool { return e.Connections[i].Since.Before(e.Connections[j].Since) })
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}

// Label is the name given when token id was issued ("" if none or
// unknown): who an invite was for, as the pages show it.
func (r *Registry) Label(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g, ok := r.grants[id]; ok {
		return g.label
	}
	return ""
}

// Lookup returns the grant of token id.
func (r *Registry) Lookup(id string) (Claims, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g, ok := r.grants[id]
	if !ok {
		return Claims{}, false
	}
	return g.claims, true
}
