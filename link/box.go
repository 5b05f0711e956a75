package link

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"sonolive/internal/retry"
)

// BoxConfig is the box's end of a link.
type BoxConfig struct {
	// Hub is the hub's base URL: https://hub.example (port 443 unless
	// given). http:// is for tests on loopback.
	Hub string
	// Name and Token are what the hub knows this box by.
	Name, Token string
	// TLS verifies the hub (nil: the system's roots).
	TLS *tls.Config
	// Server makes the HTTP server the box runs on the link: the same
	// handler and timeouts as its own listener. Called once per link.
	Server func() *http.Server
	Logger *zap.Logger
}

// BoxStats say how the link is doing.
type BoxStats struct {
	State     string `json:"state"` // connecting, up, retrying
	Connects  uint64 `json:"connects"`
	LastError string `json:"last_error,omitempty"`
}

// Box keeps a link to the hub open, redialling with backoff, until its
// Run's context ends.
type Box struct {
	cfg      BoxConfig
	hub      *url.URL
	log      *zap.Logger
	connects atomic.Uint64

	mu             sync.Mutex
	state, lastErr string
}

// NewBox checks the configuration; Run opens the link.
func NewBox(cfg BoxConfig) (*Box, error) {
	u, err := url.Parse(cfg.Hub)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("link: hub %q is not an https:// URL", cfg.Hub)
	}
	if cfg.Name == "" || cfg.Token == "" {
		return nil, errors.New("link: the box needs a name and a token")
	}
	if cfg.Server == nil {
		return nil, errors.New("link: no server to run on the link")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Box{cfg: cfg, hub: u, log: cfg.Logger.With(zap.String("hub", u.Host), zap.String("box", cfg.Name)), state: "connecting"}, nil
}

// Stats returns the link's state.
func (b *Box) Stats() BoxStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BoxStats{State: b.state, Connects: b.connects.Load(), LastError: b.lastErr}
}

func (b *Box) setState(state string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state = state
	if err != nil {
		b.lastErr = err.Error()
	}
}

// Run links until ctx ends: a lost link is redialled after 1 s, doubling
// to 30 s while the hub cannot be reached.
func (b *Box) Run(ctx context.Context) {
	retry.Loop(ctx, retry.Default, b.session, func(err error, wait time.Duration) {
		b.setState("retrying", err)
		b.log.Warn("link down, redialling", zap.Error(err), zap.Duration("in", wait))
	})
}

// session dials the hub, upgrades, and serves the box's handler on the
// streams the hub opens until the link or ctx ends.
func (b *Box) session(ctx context.Context) error {
	conn, err := b.dial(ctx)
	if err != nil {
		return err
	}
	mux, err := yamux.Server(conn, muxConfig())
	if err != nil {
		conn.Close()
		return err
	}
	defer mux.Close()
	b.connects.Add(1)
	b.setState("up", nil)
	b.log.Info("link up")
	hs := b.cfg.Server()
	hs.Handler = fromHub(hs.Handler)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(mux) }()
	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(shut)
		return ctx.Err()
	case <-mux.CloseChan():
		hs.Close()
		<-errc
		return errors.New("link: the hub closed the link")
	case err := <-errc:
		return fmt.Errorf("link: serving: %w", err)
	}
}

// dial opens the connection and asks for the upgrade.
func (b *Box) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	addr := b.hub.Host
	if b.hub.Port() == "" {
		addr = net.JoinHostPort(b.hub.Hostname(), map[string]string{"https": "443", "http": "80"}[b.hub.Scheme])
	}
	var (
		conn net.Conn
		err  error
	)
	if b.hub.Scheme == "https" {
		tc := b.cfg.TLS.Clone()
		if tc == nil {
			tc = &tls.Config{}
		}
		if tc.ServerName == "" {
			tc.ServerName = b.hub.Hostname()
		}
		conn, err = (&tls.Dialer{Config: tc}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("link: dialling the hub: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	u := *b.hub
	u.Path, u.RawQuery = Path, url.Values{"box": {b.cfg.Name}}.Encode()
	req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", Protocol)
	req.Header.Set("Authorization", "Bearer "+b.cfg.Token)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("link: asking for the link: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("link: reading the hub's answer: %w", err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		conn.Close()
		return nil, ErrUnauthorized
	case resp.StatusCode != http.StatusSwitchingProtocols:
		conn.Close()
		return nil, fmt.Errorf("link: the hub answered %s", resp.Status)
	}
	if !stop() {
		conn.Close()
		return nil, ctx.Err()
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

// bufferedConn reads what the upgrade's reader already buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// fromHub takes the expert's address from the hub's header: every request
// on the link comes from the hub, which the box dialled and trusts.
func fromHub(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get(ClientAddrHeader); a != "" {
			if _, _, err := net.SplitHostPort(a); err == nil {
				r.RemoteAddr = a
			}
			r.Header.Del(ClientAddrHeader)
		}
		h.ServeHTTP(w, r)
	})
}
