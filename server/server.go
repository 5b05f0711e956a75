// Package server is `sonolive serve`: one live session per configured
// source (pipeline → relay), the HTTP surface around them (WHEP, the
// WebSocket session events, the invite and overlay API, the web UI,
// /metrics and /healthz) and the tokens that guard it. Protocol details
// live in docs/streaming.md.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"sonolive/audit"
	"sonolive/auth"
	"sonolive/exam"
	"sonolive/ice"
	"sonolive/infer"
	"sonolive/metrics"
	"sonolive/replay"
	"sonolive/sfu"
	"sonolive/stream"
	"sonolive/ui"
)

// DetectorOpener loads the detector for a source; nil detector means no AI.
// The server closes what it returns that implements io.Closer.
type DetectorOpener func(src Source) (det infer.Detector, name string, err error)

// Server holds the sessions and serves them.
type Server struct {
	cfg      Config
	log      *zap.Logger
	signer   *auth.Signer
	access   *auth.Registry
	audit    *audit.Log // nil when off
	api      *stream.API
	apiClose func() error
	// ice hands out the STUN/TURN servers, credentials minted per peer
	// (the embedded TURN server joins it when Run starts it).
	ice *ice.Provider
	// livekit mints LiveKit tokens (nil: no LiveKit server configured).
	livekit     *sfu.Tokens
	metrics     *metrics.Metrics
	hub         *hub
	lib         *replay.Library // nil when recording is off
	exams       *exam.Store
	sender      *exam.Sender   // nil without a PACS
	open        DetectorOpener // for sources added at run time
	sessions    *sessionSet
	base        string // public base URL, set when listening
	addrSet     bool
	tlsConfig   *tls.Config // nil: plain HTTP (loopback, or insecure_http)
	fingerprint string
	baseMu      sync.RWMutex
}

// New builds the server and its sessions; Run starts them.
func New(cfg Config, log *zap.Logger, open DetectorOpener) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	signer, err := auth.NewSigner(cfg.Auth.Secret)
	if err != nil {
		return nil, err
	}
	signer.SetAudience(cfg.Auth.Audience)
	api, apiClose, err := stream.NewAPI(stream.APIConfig{
		UDPPort: cfg.WebRTC.UDPPort, TCPPort: cfg.WebRTC.TCPPort, NAT1To1IPs: cfg.WebRTC.NAT1To1IPs, IncludeLoopback: cfg.WebRTC.IncludeLoopback,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, signer: signer, api: api, apiClose: apiClose,
		access: auth.NewRegistry(signer, map[string]int{
			connWHEP: cfg.Auth.MaxPerToken, connWS: cfg.Auth.MaxPerToken, connDownload: cfg.Auth.MaxPerToken, connWHIP: 2}), // WHIP: a reconnect overlaps the old connection for a moment
		metrics: metrics.New(), hub: newHub(log), sessions: newSessionSet(), open: open}
	if cfg.Audit.Path != "" {
		// A broken chain stops the start: appending to it would hide
		// what was done to it.
		if s.audit, err = audit.Open(cfg.Audit.Path, log.Named("audit")); err != nil {
			apiClose()
			return nil, fmt.Errorf("%w (check it with `sonolive audit verify %s`; move it aside to start a new log)", err, cfg.Audit.Path)
		}
	}
	if cfg.Record.Enabled {
		// Opening recovers what a crash left unfinished. A library that
		// cannot be opened (a read-only or full disk) turns recording off:
		// the live view matters more.
		if s.lib, err = replay.OpenLibrary(cfg.Record.Dir, log.Named("record")); err != nil {
			log.Error("recording is off: cannot open the library", zap.String("dir", cfg.Record.Dir), zap.Error(err))
			s.lib = nil
		}
	}
	// Exams keep patient images: they live beside the recordings, or
	// where exams.dir says; with neither there are no exams.
	examDir := cfg.Exams.Dir
	if examDir == "" && s.lib != nil {
		examDir = filepath.Join(s.lib.Dir(), "exams")
	}
	if examDir != "" {
		if s.exams, err = exam.OpenStore(examDir); err != nil {
			log.Error("exams are off: cannot open their directory", zap.String("dir", examDir), zap.Error(err))
			s.exams = nil
		}
	}
	if p := cfg.Exams.PACS; p.URL != "" && s.exams != nil {
		pacs := exam.PACS{URL: p.URL, Username: p.Username}
		if p.PasswordFile != "" {
			b, err := os.ReadFile(p.PasswordFile)
			if err != nil {
				apiClose()
				return nil, fmt.Errorf("exams.pacs.password_file: %w", err)
			}
			pacs.Password = strings.TrimRight(string(b), "\r\n")
		}
		s.sender = exam.NewSender(s.exams, exam.SenderConfig{PACS: pacs, Export: s.exportDICOM, Logger: log.Named("pacs"),
			OnChange: func(e exam.Exam) {
				s.hub.broadcast(e.Source, examEvent{Type: "exam", Change: "pacs", Exam: summarise(e)})
			}})
	}
	if s.ice, err = ice.NewProvider(cfg.WebRTC.ICEServers); err != nil {
		apiClose()
		return nil, fmt.Errorf("config: webrtc.ice_servers: %w", err)
	}
	if lk := cfg.LiveKit; lk.Enabled() {
		b, err := os.ReadFile(lk.APISecretFile)
		if err != nil {
			apiClose()
			return nil, fmt.Errorf("config: livekit.api_secret_file: %w", err)
		}
		s.livekit = &sfu.Tokens{Key: lk.APIKey, Secret: strings.TrimSpace(string(b))}
	}
	for _, src := range cfg.Sources {
		if _, err := s.addSession(src); err != nil {
			s.closeDetectors()
			apiClose()
			return nil, err
		}
	}
	if err := s.metrics.Register(metrics.NewSessionCollector(s.snapshots)); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) snapshots() []metrics.Snapshot {
	list := s.sessions.list()
	out := make([]metrics.Snapshot, 0, len(list))
	for _, ses := range list {
		out = append(out, ses.snapshot())
	}
	return out
}

// addSession opens the source's detector and builds its session; once
// the server runs, the session starts at once.
func (s *Server) addSession(src Source) (*Session, error) {
	if _, ok := s.sessions.get(src.ID); ok {
		return nil, fmt.Errorf("source %s: %w", src.ID, errSourceExists)
	}
	var det infer.Detector
	var name string
	if s.open != nil {
		var err error
		if det, name, err = s.open(src); err != nil {
			return nil, fmt.Errorf("source %s: %w", src.ID, err)
		}
	}
	ses, err := newSession(s, src, det, name)
	if err == nil {
		err = s.sessions.add(ses)
	}
	if err != nil {
		closeDetector(det)
		return nil, err
	}
	return ses, nil
}

// removeSession stops a session: its recording is finished, its viewers
// and pages are closed, its detector freed.
func (s *Server) removeSession(id string) bool {
	ses, ok := s.sessions.remove(id)
	if !ok {
		return false
	}
	s.hub.closeSource(id)
	ses.models.close()
	return true
}

// Handler is the whole HTTP surface.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /whep/{source}", cors(http.HandlerFunc(s.whepOffer)))
	mux.Handle("PATCH /whep/{source}/{id}", cors(http.HandlerFunc(s.whepPatch)))
	mux.Handle("DELETE /whep/{source}/{id}", cors(http.HandlerFunc(s.whepDelete)))
	mux.Handle("OPTIONS /whep/", cors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	mux.Handle("POST /whip/{source}", cors(http.HandlerFunc(s.whipPublish)))
	mux.Handle("DELETE /whip/{source}/{id}", cors(http.HandlerFunc(s.whipUnpublish)))
	mux.Handle("OPTIONS /whip/", cors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	mux.HandleFunc("POST /api/publishers", s.createPublisherLink)
	mux.HandleFunc("GET /ws/{source}", s.serveWS)
	mux.HandleFunc("POST /api/sources/{source}/invites", s.createInvite)
	mux.HandleFunc("GET /api/sources/{source}/invites", s.listInvites)
	mux.HandleFunc("DELETE /api/sources/{source}/invites/{id}", s.revokeInvite)
	mux.HandleFunc("PUT /api/sources/{source}/overlay", s.setOverlay)
	mux.HandleFunc("GET /api/sources/{source}/still.jpg", s.getStill)
	mux.HandleFunc("GET /api/sources", s.listSources)
	mux.HandleFunc("POST /api/sources", s.addSource)
	mux.HandleFunc("DELETE /api/sources/{source}", s.removeSource)
	mux.HandleFunc("GET /api/sources/{source}/ice", s.iceServers)
	mux.HandleFunc("GET /api/sources/{source}/livekit", s.liveKitJoin)
	mux.HandleFunc("POST /api/sources/{source}/exams", s.startExamHandler)
	mux.HandleFunc("GET /api/sources/{source}/exams", s.listExamsHandler)
	mux.HandleFunc("GET /api/exams/{id}", s.getExamHandler)
	mux.HandleFunc("POST /api/exams/{id}/end", s.endExamHandler)
	mux.HandleFunc("PUT /api/exams/{id}/calibration", s.calibrateExamHandler)
	mux.HandleFunc("PUT /api/exams/{id}/tags", s.tagExamHandler)
	mux.HandleFunc("POST /api/exams/{id}/findings", s.captureFindingHandler)
	mux.HandleFunc("PUT /api/exams/{id}/findings/{n}/location", s.locateFindingHandler)
	mux.HandleFunc("DELETE /api/exams/{id}/findings/{n}", s.deleteFindingHandler)
	mux.HandleFunc("GET /api/exams/{id}/findings/{n}/{file}", s.findingPictureHandler)
	mux.HandleFunc("POST /api/exams/{id}/send", s.sendExamHandler)
	mux.HandleFunc("GET /api/exams/{id}/{file}", s.examFileHandler)
	mux.HandleFunc("GET /api/recordings", s.listRecordings)
	mux.HandleFunc("GET /api/recordings/{id}", s.getRecording)
	mux.HandleFunc("GET /api/recordings/{id}/{file}", s.recordingFile)
	mux.HandleFunc("DELETE /api/recordings/{id}", s.deleteRecording)
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("/", ui.Handler())
	return securityHeaders(mux, s.liveKitOrigins()...)
}

// securityHeaders are on every response: the pages load only their own
// scripts and styles, connect only to this server, and cannot be framed
// (a framed page could be overlaid to trick a click on "invite").
func securityHeaders(h http.Handler, connect ...string) http.Handler {
	csp := "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
		"media-src 'self' blob:; connect-src " + strings.Join(append([]string{"'self'"}, connect...), " ") +
		"; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		// Microphone and capture for this origin only (the voice, a
		// publishing page), never for anything it might embed.
		hd.Set("Permissions-Policy", "microphone=(self), camera=(self), display-capture=(self), geolocation=()")
		h.ServeHTTP(w, r)
	})
}

// cors lets WHEP players served from other origins in: the token is a
// bearer header, not a cookie, so no credentials are exposed.
func cors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		hd.Set("Access-Control-Allow-Methods", "POST, PATCH, DELETE, OPTIONS")
		hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
		hd.Set("Access-Control-Expose-Headers", "Location, ETag, Link")
		h.ServeHTTP(w, r)
	})
}

// authorize finds the request's {source} session and checks that its
// token grants one of roles there; otherwise it writes the 404, 401 or 403.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, roles ...auth.Role) (*Session, auth.Claims, bool) {
	ses, ok := s.sessions.get(r.PathValue("source"))
	if !ok {
		http.Error(w, fmt.Sprintf("%v %q", errUnknownSource, r.PathValue("source")), http.StatusNotFound)
		return nil, auth.Claims{}, false
	}
	c, err := s.signer.Check(r, ses.id, roles...)
	if err != nil {
		auth.Deny(w, err)
		return nil, c, false
	}
	return ses, c, true
}

// Run serves on ln until ctx ends, then stops the sessions and closes
// everything. The links for the sonographers are logged once listening.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	s.baseMu.RLock()
	set := s.addrSet
	s.baseMu.RUnlock()
	if !set {
		if err := s.SetAddr(ln.Addr()); err != nil {
			ln.Close()
			return err
		}
	}
	s.baseMu.RLock()
	tc := s.tlsConfig
	s.baseMu.RUnlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if t := s.cfg.WebRTC.TURN; t.Enabled() {
		// Before the sessions: their first peers get its relays.
		srv, err := ice.StartTURN(t, tc)
		if err != nil {
			ln.Close()
			return err
		}
		defer srv.Close()
		s.ice.Add(srv.Server, srv.Secret())
		s.log.Info("TURN server running", zap.Strings("urls", srv.Server.URLs))
	}
	var wg sync.WaitGroup
	s.sessions.run(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.tickStats(ctx)
	}()
	if s.lib != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.retain(ctx)
		}()
	}
	if s.sender != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.sender.Run(ctx)
		}()
	}

	// Every request is bounded in time: a slow or idle client cannot hold
	// a connection. The long-lived routes set their own deadlines: the
	// WebSocket (hijacked) its per-message ones, downloads theirs up to
	// the token's expiry (recordings.go).
	newHTTP := func() *http.Server {
		return &http.Server{Handler: s.Handler(), ErrorLog: zap.NewStdLog(s.log.Named("http")),
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: s.cfg.HTTP.ReadTimeout,
			WriteTimeout: s.cfg.HTTP.WriteTimeout, IdleTimeout: s.cfg.HTTP.IdleTimeout, MaxHeaderBytes: 16 << 10}
	}
	hs := newHTTP()
	if s.cfg.Link.Enabled() {
		box, err := s.newLink(newHTTP)
		if err != nil {
			ln.Close()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			box.Run(ctx)
		}()
	}
	errc := make(chan error, 1)
	go func() {
		var err error
		if tc != nil {
			hs.TLSConfig = tc
			err = hs.ServeTLS(ln, "", "")
		} else {
			err = hs.Serve(ln)
		}
		errc <- err
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	}
	cancel()
	shutCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	hs.Shutdown(shutCtx)
	s.hub.closeAll()
	wg.Wait()
	s.sessions.wait()
	for _, ses := range s.sessions.list() {
		ses.close()
	}
	s.closeDetectors()
	if s.lib != nil {
		s.lib.Close()
	}
	s.audit.Close()
	if cerr := s.apiClose(); cerr != nil {
		s.log.Warn("closing WebRTC UDP port", zap.Error(cerr))
	}
	return err
}

func (s *Server) closeDetectors() {
	for _, ses := range s.sessions.list() {
		ses.models.close()
	}
}

func closeDetector(d infer.Detector) {
	if c, ok := d.(interface{ Close() error }); ok {
		c.Close()
	}
}

// tickStats pushes every session's HUD numbers to its pages once a second.
func (s *Server) tickStats(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, ses := range s.sessions.list() {
				s.hub.broadcast(ses.id, ses.stats())
			}
		}
	}
}

// SetAddr settles how the server speaks on the listening address (TLS,
// tls.go) and sets the base of the links from it, unless public_url is
// configured.
func (s *Server) SetAddr(addr net.Addr) error {
	tc, err := s.setupTLS(addr)
	if err != nil {
		return err
	}
	s.baseMu.Lock()
	s.tlsConfig, s.addrSet = tc, true
	s.baseMu.Unlock()
	base := s.cfg.PublicURL
	if base == "" {
		scheme := "http"
		if tc != nil {
			scheme = "https"
		}
		port := ""
		if ta, ok := addr.(*net.TCPAddr); ok {
			port = fmt.Sprintf(":%d", ta.Port)
		}
		base = scheme + "://localhost" + port
	}
	s.baseMu.Lock()
	s.base = strings.TrimRight(base, "/")
	s.baseMu.Unlock()
	return nil
}

// Link issues a root token and returns the page URL for it.
func (s *Server) Link(source string, role auth.Role, ttl time.Duration) (string, auth.Claims, error) {
	return s.linkUnder(auth.Claims{}, source, role, ttl, "", "")
}

// linkUnder issues a token asked for by parent's holder and returns the
// page URL for its role: the live page, the expert's, or the library.
// page overrides the role's page ("watch": through LiveKit).
func (s *Server) linkUnder(parent auth.Claims, source string, role auth.Role, ttl time.Duration, label, page string) (string, auth.Claims, error) {
	if _, ok := s.sessions.get(source); !ok {
		return "", auth.Claims{}, fmt.Errorf("%w %q", errUnknownSource, source)
	}
	tok, c, err := s.access.Issue(parent, role, source, ttl, label)
	if err != nil {
		return "", c, err
	}
	if page == "" {
		page = map[auth.Role]string{auth.Sonographer: "live", auth.Expert: "expert", auth.Teacher: "library", auth.Student: "library", auth.Publisher: "publish"}[role]
	}
	s.baseMu.RLock()
	base := s.base
	s.baseMu.RUnlock()
	return fmt.Sprintf("%s/%s/%s?token=%s", base, page, url.PathEscape(source), url.QueryEscape(tok)), c, nil
}

// Sources lists the source ids in the order they were added.
func (s *Server) Sources() []string {
	var out []string
	for _, ses := range s.sessions.list() {
		out = append(out, ses.id)
	}
	return out
}

// SonographerTTL is how long the start-up links live.
func (s *Server) SonographerTTL() time.Duration { return s.cfg.Auth.SonographerTTL }
