// Package ice is how peers find a path to sonolive: the STUN and TURN
// servers handed to the server's own peer connections, to the pages and to
// WHEP clients, with short-lived TURN credentials minted from a shared
// secret (the TURN REST scheme coturn implements with use-auth-secret), and
// an embedded TURN server (pion/turn) for a site without one.
package ice

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	"gopkg.in/yaml.v3"
)

// Server is one configured STUN or TURN server. A plain string in the
// config is a server with that one URL.
type Server struct {
	// URLs: stun:host:3478, turn:host:3478?transport=udp|tcp,
	// turns:host:443?transport=tcp.
	URLs []string `yaml:"urls" json:"urls"`
	// Username and Credential are static TURN credentials.
	Username   string `yaml:"username" json:"username,omitempty"`
	Credential string `yaml:"credential" json:"credential,omitempty"`
	// SecretFile holds a TURN REST shared secret (coturn's
	// static-auth-secret with use-auth-secret): each peer gets its own
	// credentials, valid for TTL.
	SecretFile string `yaml:"secret_file" json:"-"`
	// TTL of minted credentials (default 12 h: a long consultation must
	// not lose its relay).
	TTL time.Duration `yaml:"ttl" json:"-"`
}

// UnmarshalYAML takes a plain URL string or the full form.
func (s *Server) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.URLs = []string{n.Value}
		return nil
	}
	type plain Server
	return n.Decode((*plain)(s))
}

// ErrBadServer: a configured server cannot be used.
var ErrBadServer = errors.New("ice server")

// Check validates the URLs and credentials.
func (s Server) Check() error {
	if len(s.URLs) == 0 {
		return fmt.Errorf("%w: no urls", ErrBadServer)
	}
	turn := false
	for _, u := range s.URLs {
		p, err := url.Parse(u)
		if err != nil || p.Opaque == "" {
			return fmt.Errorf("%w: %q is not a stun:, turn: or turns: URL", ErrBadServer, u)
		}
		switch p.Scheme {
		case "stun", "stuns":
		case "turn", "turns":
			turn = true
			if tr := p.Query().Get("transport"); tr != "" && tr != "udp" && tr != "tcp" {
				return fmt.Errorf("%w: %q: transport must be udp or tcp", ErrBadServer, u)
			}
		default:
			return fmt.Errorf("%w: %q is not a stun:, turn: or turns: URL", ErrBadServer, u)
		}
	}
	if turn && s.SecretFile == "" && (s.Username == "" || s.Credential == "") {
		return fmt.Errorf("%w: %v needs a secret_file (TURN REST) or a username and credential", ErrBadServer, s.URLs)
	}
	if s.SecretFile != "" && s.Username != "" {
		return fmt.Errorf("%w: %v: secret_file and a static username exclude each other", ErrBadServer, s.URLs)
	}
	return nil
}

// Credentials mints TURN REST credentials: the username is the expiry
// (Unix seconds) and a user id, the password the base64 HMAC-SHA1 of the
// username under the shared secret.
func Credentials(secret, user string, ttl time.Duration, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10)
	if user != "" {
		username += ":" + user
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Provider hands out the servers with fresh credentials.
type Provider struct {
	mu      sync.RWMutex
	servers []Server
	secrets []string // per server; "" for none
}

// NewProvider reads the servers' secrets.
func NewProvider(servers []Server) (*Provider, error) {
	p := &Provider{}
	for _, s := range servers {
		if err := s.Check(); err != nil {
			return nil, err
		}
		secret := ""
		if s.SecretFile != "" {
			b, err := os.ReadFile(s.SecretFile)
			if err != nil {
				return nil, fmt.Errorf("%w: secret_file: %w", ErrBadServer, err)
			}
			if secret = strings.TrimSpace(string(b)); len(secret) < 16 {
				return nil, fmt.Errorf("%w: the secret in %s is shorter than 16 characters", ErrBadServer, s.SecretFile)
			}
		}
		if s.TTL <= 0 {
			s.TTL = 12 * time.Hour
		}
		p.servers = append(p.servers, s)
		p.secrets = append(p.secrets, secret)
	}
	return p, nil
}

// Add appends a server with its secret (the embedded TURN server).
func (p *Provider) Add(s Server, secret string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.TTL <= 0 {
		s.TTL = 12 * time.Hour
	}
	p.servers = append(p.servers, s)
	p.secrets = append(p.secrets, secret)
}

// For is the servers for one peer (user names it in the TURN server's
// logs), credentials minted now.
func (p *Provider) For(user string) []Server {
	if p == nil {
		return nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]Server, 0, len(p.servers))
	now := time.Now()
	for i, s := range p.servers {
		s.SecretFile = ""
		if p.secrets[i] != "" {
			s.Username, s.Credential = Credentials(p.secrets[i], user, s.TTL, now)
		}
		out = append(out, s)
	}
	return out
}

// WebRTC converts servers for a pion peer connection.
func WebRTC(servers []Server) []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(servers))
	for _, s := range servers {
		w := webrtc.ICEServer{URLs: s.URLs}
		if s.Username != "" {
			w.Username, w.Credential, w.CredentialType = s.Username, s.Credential, webrtc.ICECredentialTypePassword
		}
		out = append(out, w)
	}
	return out
}

// LinkHeaders are the servers as WHEP's Link headers (RFC 9725,
// section 4.6): one per URL.
func LinkHeaders(servers []Server) []string {
	var out []string
	for _, s := range servers {
		for _, u := range s.URLs {
			h := fmt.Sprintf("<%s>; rel=\"ice-server\"", u)
			if s.Username != "" {
				h += fmt.Sprintf("; username=%q; credential=%q; credential-type=\"password\"", s.Username, s.Credential)
			}
			out = append(out, h)
		}
	}
	return out
}
