package link

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"
)

// HubConfig names the boxes a hub serves.
type HubConfig struct {
	// Tokens are the boxes' tokens by name.
	Tokens map[string]string
	// Domain routes by host name: NAME.Domain reaches box NAME.
	Domain string
	// Default is the box for any other host ("": none).
	Default string
	Logger  *zap.Logger
}

// Hub accepts boxes' links and proxies experts' requests to them. It is an
// http.Handler: serve it on TLS port 443.
type Hub struct {
	cfg HubConfig
	log *zap.Logger

	mu    sync.Mutex
	boxes map[string]*boxLink
}

// boxLink is one linked box and the proxy that reaches it.
type boxLink struct {
	mux   *yamux.Session
	proxy *httputil.ReverseProxy
	since time.Time
}

// NewHub returns a hub with no box linked yet.
func NewHub(cfg HubConfig) *Hub {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Hub{cfg: cfg, log: cfg.Logger, boxes: map[string]*boxLink{}}
}

// Linked names the boxes linked now.
func (h *Hub) Linked() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.boxes))
	for name := range h.boxes {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Close drops every link.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, l := range h.boxes {
		l.mux.Close()
		delete(h.boxes, name)
	}
}

func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == Path && strings.EqualFold(r.Header.Get("Upgrade"), Protocol) {
		h.accept(w, r)
		return
	}
	name := h.route(r.Host)
	h.mu.Lock()
	l := h.boxes[name]
	h.mu.Unlock()
	if l == nil {
		http.Error(w, "sonolive hub: this box is not linked now", http.StatusBadGateway)
		return
	}
	l.proxy.ServeHTTP(w, r)
}

// route finds the box a host name asks for.
func (h *Hub) route(host string) string {
	if hh, _, err := net.SplitHostPort(host); err == nil {
		host = hh
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if d := strings.ToLower(h.cfg.Domain); d != "" {
		if name, ok := strings.CutSuffix(host, "."+d); ok && name != "" && !strings.Contains(name, ".") {
			return name
		}
	}
	return h.cfg.Default
}

// accept checks a box's name and token and takes its connection over.
func (h *Hub) accept(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("box")
	want, known := h.cfg.Tokens[name]
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	// Compare even for an unknown name, so timing tells nothing.
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 || !known || want == "" {
		h.log.Warn("link refused", zap.String("box", name), zap.String("addr", r.RemoteAddr))
		http.Error(w, "unknown box or wrong token", http.StatusUnauthorized)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot take the connection over", http.StatusInternalServerError)
		return
	}
	// The server's request deadlines must not end the link.
	conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", Protocol); err == nil {
		err = brw.Flush()
	}
	if err != nil {
		conn.Close()
		return
	}
	mux, err := yamux.Client(&bufferedConn{Conn: conn, r: brw.Reader}, muxConfig())
	if err != nil {
		conn.Close()
		return
	}
	l := &boxLink{mux: mux, proxy: h.proxy(name, mux), since: time.Now()}
	h.mu.Lock()
	old := h.boxes[name]
	h.boxes[name] = l
	h.mu.Unlock()
	if old != nil {
		// A box that redialled before its old link was seen dead.
		old.mux.Close()
	}
	h.log.Info("box linked", zap.String("box", name), zap.String("addr", r.RemoteAddr))
	go func() {
		<-mux.CloseChan()
		h.mu.Lock()
		if h.boxes[name] == l {
			delete(h.boxes, name)
		}
		h.mu.Unlock()
		h.log.Info("box link closed", zap.String("box", name), zap.Duration("after", time.Since(l.since).Round(time.Second)))
	}()
}

// proxy reaches one box: each HTTP connection is a new stream on the link.
func (h *Hub) proxy(name string, mux *yamux.Session) *httputil.ReverseProxy {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return mux.Open()
		},
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     60 * time.Second,
	}
	return &httputil.ReverseProxy{
		Transport: tr,
		// Answers stream as they come: WebSockets, downloads, events.
		FlushInterval: -1,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: name})
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			pr.Out.Header.Set(ClientAddrHeader, pr.In.RemoteAddr)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			h.log.Warn("proxying to box", zap.String("box", name), zap.String("path", r.URL.Path), zap.Error(err))
			http.Error(w, "sonolive hub: the box did not answer", http.StatusBadGateway)
		},
	}
}
