package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"sonolive/auth"
	"sonolive/organ"
	"sonolive/stream"
)

// event is a WebSocket message other than stats.
type event struct {
	Type   string              `json:"type"`
	Viewer *stream.ViewerEvent `json:"viewer,omitempty"`
	BurnIn *bool               `json:"burn_in,omitempty"`
	// Recording events: the id and its status.
	Recording string `json:"recording,omitempty"`
	Status    string `json:"status,omitempty"`
	// Access events: the page's link ended ("expired" or "revoked").
	Reason string `json:"reason,omitempty"`
	// Organ events: the wrong-preset guard's warning started or ended.
	Organ *organ.State `json:"organ,omitempty"`
}

// MarshalJSON flattens the viewer event into the message, as
// docs/streaming.md shows it.
func (e event) MarshalJSON() ([]byte, error) {
	if e.Viewer != nil {
		return json.Marshal(struct {
			Type string `json:"type"`
			stream.ViewerEvent
		}{e.Type, *e.Viewer})
	}
	type plain event
	return json.Marshal(plain(e))
}

// hub fans session events out to the pages' WebSockets. Each client has a
// bounded queue; a client that cannot keep up loses messages (counted),
// never the others' or the broadcaster's time.
type hub struct {
	log     *zap.Logger
	mu      sync.Mutex
	clients map[*wsClient]struct{}
}

type wsClient struct {
	source  string
	role    auth.Role
	conn    *websocket.Conn
	send    chan []byte
	dropped atomic.Uint64

	mu      sync.Mutex
	closing bool
}

func newHub(log *zap.Logger) *hub { return &hub{log: log, clients: map[*wsClient]struct{}{}} }

func (h *hub) broadcast(source string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.log.Error("ws message", zap.Error(err))
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if c.source != source {
			continue
		}
		select {
		case c.send <- b:
		default:
			c.dropped.Add(1)
		}
	}
}

func (h *hub) add(c *wsClient) {
	h.mu.Lock()
	h.clients[c] = struct{}{}
	h.mu.Unlock()
}

func (h *hub) remove(c *wsClient) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	c.close()
}

// close closes the socket, or marks it to be closed as soon as it is
// upgraded (a token may end while the upgrade is in progress).
func (c *wsClient) close() {
	c.mu.Lock()
	c.closing = true
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// attach sets the upgraded connection; false when close came first.
func (c *wsClient) attach(conn *websocket.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	return !c.closing
}

// count is the number of sockets open on source.
func (h *hub) count(source string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for c := range h.clients {
		if c.source == source {
			n++
		}
	}
	return n
}

// closeSource closes the pages of one source (removed at run time).
func (h *hub) closeSource(source string) {
	h.mu.Lock()
	var cs []*wsClient
	for c := range h.clients {
		if c.source == source {
			cs = append(cs, c)
		}
	}
	h.mu.Unlock()
	for _, c := range cs {
		h.remove(c)
	}
}

func (h *hub) closeAll() {
	h.mu.Lock()
	cs := make([]*wsClient, 0, len(h.clients))
	for c := range h.clients {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		h.remove(c)
	}
}

// The token is in the URL: browsers cannot set headers on a WebSocket, and
// the same token already sits in the page's URL. Origins are not checked
// for the same reason: the token is the credential, not a cookie.
var upgrader = websocket.Upgrader{
	ReadBufferSize: 4096, WriteBufferSize: 16384,
	CheckOrigin: func(*http.Request) bool { return true },
}

// clientMessage is what pages send.
type clientMessage struct {
	Type      string    `json:"type"`
	SamplesMS []float64 `json:"samples_ms"`
	Viewer    string    `json:"viewer"`
	FPS       float64   `json:"fps"`
	RTTMS     float64   `json:"rtt_ms"`
	JitterMS  float64   `json:"jitter_ms"`
	Lost      int64     `json:"packets_lost"`
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ses, claims, ok := s.authorize(w, r, liveRoles...)
	if !ok {
		return
	}
	if n := s.hub.count(ses.id); n >= s.cfg.Stream.MaxViewers*2 {
		http.Error(w, fmt.Sprintf("too many pages open on this source (%d)", n), http.StatusServiceUnavailable)
		return
	}
	c := &wsClient{source: ses.id, role: claims.Role, send: make(chan []byte, 16)}
	// The socket lives as long as its token: at expiry or revocation the
	// page is told why, then the socket closes.
	bind, err := s.access.Bind(claims, connWS, "", r.RemoteAddr, func(reason error) {
		s.hub.broadcastTo(c, event{Type: "access", Reason: reasonWord(reason)})
		time.AfterFunc(200*time.Millisecond, c.close) // let the writer send it
	})
	if err != nil {
		auth.Deny(w, err)
		return
	}
	defer bind.Release()
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader wrote the 4xx
	}
	if !c.attach(conn) {
		conn.Close()
		return
	}
	s.hub.add(c)
	log := s.log.With(zap.String("source", ses.id), zap.String("role", string(claims.Role)), zap.String("token_id", claims.ID))
	log.Debug("ws connected")
	// Prime the page with the current state instead of a second's blank.
	s.hub.broadcastTo(c, ses.stats())
	go s.wsWriter(c)
	s.wsReader(c, ses, log)
	s.hub.remove(c)
	log.Debug("ws closed", zap.Uint64("dropped", c.dropped.Load()))
}

func (h *hub) broadcastTo(c *wsClient, v any) {
	if b, err := json.Marshal(v); err == nil {
		select {
		case c.send <- b:
		default:
			c.dropped.Add(1)
		}
	}
}

func (s *Server) wsWriter(c *wsClient) {
	ping := time.NewTicker(20 * time.Second)
	defer ping.Stop()
	defer c.close()
	for {
		var err error
		select {
		case b := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			err = c.conn.WriteMessage(websocket.TextMessage, b)
		case <-ping.C:
			err = c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second))
		}
		if err != nil {
			return
		}
	}
}

// wsReader handles what the page reports until the connection ends.
// Malformed messages are logged and skipped; the page stays connected.
func (s *Server) wsReader(c *wsClient, ses *Session, log *zap.Logger) {
	c.conn.SetReadLimit(64 << 10)
	c.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	})
	for {
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		c.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		m, err := parseClientMessage(b)
		if err != nil {
			log.Warn("ws: malformed message", zap.Error(err))
			continue
		}
		switch m.Type {
		case "g2g":
			ses.addG2G(m.SamplesMS)
		case "quality":
			log.Debug("viewer quality", zap.String("viewer", m.Viewer), zap.Float64("fps", m.FPS),
				zap.Float64("rtt_ms", m.RTTMS), zap.Float64("jitter_ms", m.JitterMS), zap.Int64("packets_lost", m.Lost))
		}
	}
}

// errBadMessage: a page sent what no page of ours sends.
var errBadMessage = errors.New("bad client message")

// maxG2GSamples bounds one g2g report (a page sends about 30 a second).
const maxG2GSamples = 300

// parseClientMessage reads and checks one page message: a known type,
// bounded sizes, and only the numbers a real page could report.
func parseClientMessage(b []byte) (clientMessage, error) {
	var m clientMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: %v", errBadMessage, err)
	}
	switch m.Type {
	case "g2g":
		if len(m.SamplesMS) > maxG2GSamples {
			m.SamplesMS = m.SamplesMS[:maxG2GSamples]
		}
	case "quality":
		if len(m.Viewer) > 64 {
			return m, fmt.Errorf("%w: viewer id of %d bytes", errBadMessage, len(m.Viewer))
		}
	default:
		return m, fmt.Errorf("%w: unknown type %.32q", errBadMessage, m.Type)
	}
	return m, nil
}
