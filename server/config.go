package server

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"io"
	"net/url"
	"os"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"

	"sonolive/capture"
	"sonolive/ice"
)

// Config is `sonolive serve`'s configuration. sonolive.example.yaml shows
// every field with its default; keep the two together.
type Config struct {
	// Listen is the HTTP(S) address.
	Listen string `yaml:"listen"`
	// PublicURL is the base of the links we print and hand out
	// (default: http(s)://localhost<port>). Set it to the address
	// experts reach, e.g. https://scanner-3.clinic.example:8443.
	PublicURL string    `yaml:"public_url"`
	TLS       TLSConfig `yaml:"tls"`
	HTTP      HTTP      `yaml:"http"`
	Auth      Auth      `yaml:"auth"`
	Audit     Audit     `yaml:"audit"`
	WebRTC    WebRTC    `yaml:"webrtc"`
	Stream    Stream    `yaml:"stream"`
	AI        AI        `yaml:"ai"`
	Record    Record    `yaml:"record"`
	Exams     Exams     `yaml:"exams"`
	Link      Link      `yaml:"link"`
	LiveKit   LiveKit   `yaml:"livekit"`
	Sources   []Source  `yaml:"sources"`
	LogLevel  string    `yaml:"log_level"`
}

// TLSConfig enables HTTPS when both files are set. Browsers only allow
// WebRTC pages on https or localhost, so a remote expert needs this (or a
// TLS proxy in front).
type TLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// SelfSignedDir keeps the certificate the server makes for itself
	// when it listens beyond loopback with no cert given; "" refuses
	// to start instead.
	SelfSignedDir string `yaml:"self_signed_dir"`
	// InsecureHTTP allows plain HTTP beyond loopback (behind a TLS proxy
	// on the same host, say). Tokens then cross the network in clear.
	InsecureHTTP bool `yaml:"insecure_http"`
}

// HTTP bounds every request in time, so an idle or slow client cannot hold
// a connection. WebSockets and recording downloads set their own deadlines
// (per message; up to the token's expiry).
type HTTP struct {
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing a reply.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// Audit is the append-only, hash-chained access log (package audit).
type Audit struct {
	// Path of the log (JSON lines); "" turns it off.
	Path string `yaml:"path"`
}

// Auth sets the invite tokens.
type Auth struct {
	// Secret signs tokens; empty: random per start (links die with the
	// process).
	Secret string `yaml:"secret"`
	// SonographerTTL is the lifetime of the sonographer's link printed
	// at start-up.
	SonographerTTL time.Duration `yaml:"sonographer_ttl"`
	// InviteTTL is the default lifetime of an expert invite.
	InviteTTL time.Duration `yaml:"invite_ttl"`
	// MaxInviteTTL caps what the page may ask for; an invite never
	// outlives the link that made it either.
	MaxInviteTTL time.Duration `yaml:"max_invite_ttl"`
	// Audience names this deployment in its tokens: a token made by
	// another box with the same secret is refused.
	Audience string `yaml:"audience"`
	// MaxPerToken caps the connections of each kind (viewers, WebSockets,
	// downloads) one link may hold at once.
	MaxPerToken int `yaml:"max_per_token"`
}

// WebRTC sets the ICE side.
type WebRTC struct {
	// UDPPort multiplexes all peers on one UDP port; 0: ephemeral ports.
	UDPPort int `yaml:"udp_port"`
	// TCPPort takes ICE over TCP on this port (passive candidates), for
	// viewers whose network passes TCP only; 0: none.
	TCPPort int `yaml:"tcp_port"`
	// NAT1To1IPs: public IPs to advertise behind a static NAT.
	NAT1To1IPs []string `yaml:"nat_1to1_ips"`
	// ICEServers: STUN/TURN servers handed to the server's peers, the
	// pages and WHEP clients (Link headers); a TURN server with a
	// secret_file gets credentials minted per link (TURN REST).
	ICEServers []ice.Server `yaml:"ice_servers"`
	// TURN runs a TURN server inside serve, for a site without one.
	TURN ice.TURNConfig `yaml:"turn"`
	// IncludeLoopback offers 127.0.0.1 candidates (same-host viewers).
	IncludeLoopback bool `yaml:"include_loopback"`
}

// Link opens this box's API to experts through a hub outside the
// clinic's network (`sonolive hub`), over one outbound TLS connection: for
// a firewall that lets nothing in. Set public_url to the hub's address, so
// the links handed out point there; media goes through TURN (ice_servers).
type Link struct {
	// Hub is the hub's URL, e.g. https://hub.example (port 443).
	Hub string `yaml:"hub"`
	// Name is this box's name at the hub; TokenFile holds its token.
	Name      string `yaml:"name"`
	TokenFile string `yaml:"token_file"`
	// CAFile verifies the hub's certificate (default: the system's roots).
	CAFile string `yaml:"ca_file"`
}

// Enabled says whether a hub is configured.
func (l Link) Enabled() bool { return l.Hub != "" }

// LiveKit scales the audience out on a LiveKit server (one node, or many
// sharing Redis): every source publishes its annotated video and metadata
// into room "sonolive-<source>" once, and viewers beyond what one box's
// uplink and CPU carry join there with tokens sonolive mints for its own
// invites (GET /api/sources/{source}/livekit).
type LiveKit struct {
	// URL is where the box publishes (ws:// or wss://).
	URL string `yaml:"url"`
	// ViewerURL is what viewers connect to (default: URL), e.g. another
	// node of the same cluster, or its public name.
	ViewerURL string `yaml:"viewer_url"`
	// APIKey and the file holding its secret: a key pair of the server.
	APIKey        string `yaml:"api_key"`
	APISecretFile string `yaml:"api_secret_file"`
}

// Enabled says whether a LiveKit server is configured.
func (l LiveKit) Enabled() bool { return l.URL != "" }

// Stream sets the encoder and the fan-out.
type Stream struct {
	// BitrateKbps is the delivered H.264 bitrate target.
	BitrateKbps int `yaml:"bitrate_kbps"`
	// KeyframeInterval is the longest gap between keyframes.
	KeyframeInterval time.Duration `yaml:"keyframe_interval"`
	// ViewerQueue is each viewer's send queue, in frames.
	ViewerQueue int `yaml:"viewer_queue"`
	// MaxViewers per source.
	MaxViewers int `yaml:"max_viewers"`
	// BurnIn draws boxes and the HUD into the video at start; the
	// sonographer's page switches it per session. Off by default: our
	// pages draw the boxes from the metadata, and recordings stay clean
	// so a replay can hide the marks for a quiz. Turn it on for
	// third-party players.
	BurnIn bool `yaml:"burn_in"`
	// VP8Fallback encodes VP8 for browsers that offer no H.264 (Firefox
	// without its OpenH264 plugin, which a clinic network without internet
	// never lets it fetch), only while such a viewer is connected. Off:
	// those browsers are refused with a message naming the fix.
	VP8Fallback bool `yaml:"vp8_fallback"`
	// VP8MaxHeight caps the fallback's rows: VP8 costs more CPU per pixel
	// than the H.264 encode it runs beside.
	VP8MaxHeight int `yaml:"vp8_max_height"`
	// Adaptive moves a viewer whose link cannot carry the stream (its
	// bandwidth estimated from the browser's feedback, with packets lost)
	// to a small H.264 layer, encoded only while someone takes it: frame
	// rate is kept, resolution given up. SmallHeight and SmallKbps set
	// that layer.
	Adaptive    bool `yaml:"adaptive"`
	SmallHeight int  `yaml:"small_height"`
	SmallKbps   int  `yaml:"small_kbps"`
}

// Record sets the teaching library (docs/recording.md).
type Record struct {
	// Enabled records every live session.
	Enabled bool `yaml:"enabled"`
	// Dir holds the recordings.
	Dir string `yaml:"dir"`
	// Segment is the fragment length: a crash loses at most about this.
	Segment time.Duration `yaml:"segment"`
	// MaxPart is the longest recording: a longer session is recorded in
	// parts, chained in the library (a frame size change starts one too).
	MaxPart time.Duration `yaml:"max_part"`
	// MaxAge and MaxGB bound the library; the oldest finished
	// recordings go first. 0: no limit.
	MaxAge time.Duration `yaml:"max_age"`
	MaxGB  float64       `yaml:"max_gb"`
	// BetweenExams records a source also while no exam is open. Off by
	// default: a recording is a patient's, so it starts and ends with
	// the exam.
	BetweenExams bool `yaml:"between_exams"`
	// Voices records the session's voices (each person's microphone) and
	// mixes them into the video when it ends. Off by default: the people
	// in a consultation must agree to it, and every page says so while it
	// is on.
	Voices bool `yaml:"voices"`
}

// Exams sets where exams (key images, findings, reports) are kept and
// where they are sent.
type Exams struct {
	// Dir holds the exams (default: exams/ in record.dir, or ./exams
	// when recording is off).
	Dir string `yaml:"dir"`
	// PACS receives an ended exam as DICOM over DICOMweb STOW-RS.
	PACS PACS `yaml:"pacs"`
}

// PACS is a DICOMweb endpoint (Orthanc: http://host:8042/dicom-web).
type PACS struct {
	// URL is the DICOMweb base; "" sends nothing.
	URL string `yaml:"url"`
	// Username and PasswordFile are HTTP basic credentials; the password
	// is read from a file so it stays out of the config.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// AutoSend sends each exam when it ends (otherwise from the report's
	// Send button).
	AutoSend bool `yaml:"auto_send"`
}

// AI selects the detector, shared by all sources unless a source says
// otherwise.
type AI struct {
	// Preset is the embedded model to use when Model is empty.
	Preset string `yaml:"preset" json:"preset,omitempty"`
	// Model is an ONNX file; "none" runs without AI.
	Model string `yaml:"model"`
	// ORTLib is the ONNX Runtime library (default: $ORT_LIB, .cache, system).
	ORTLib string `yaml:"ort_lib"`
	// Threads for ONNX Runtime's intra-op pool.
	Threads int `yaml:"threads"`
	// Threshold: minimum score; 0 takes the model's operating point.
	Threshold float64 `yaml:"threshold"`
	// Segmenter outlines the lesions in the boxes (outline and calipers
	// in the metadata and overlays): a sonolive-boxseg/1 file, "" for the
	// embedded one when the build has it, "none" for boxes only.
	Segmenter string `yaml:"segmenter"`
	// OrganGuard warns when the frames show another organ than the
	// preset's (the wrong model running): a sonolive-organ/1 file, "" for
	// the embedded classifier when the build has it, "none" for no guard.
	OrganGuard string `yaml:"organ_guard"`
	// Budget: longest a frame waits for its own inference; 0: one frame
	// interval.
	Budget time.Duration `yaml:"budget"`
	// MinHits: inferences that must see a lesion before it is shown.
	MinHits int `yaml:"min_hits"`
}

// Source is one live input; each runs its own pipeline and relay.
type Source struct {
	// ID names the source in URLs, metrics and logs ([a-z0-9_-]).
	ID string `yaml:"id" json:"id"`
	// URL is a capture spec (see `sonolive run --help`).
	URL string `yaml:"url" json:"url"`
	// Crop is x,y,w,h of the scanner's image area; empty: whole frame.
	Crop string `yaml:"crop" json:"crop,omitempty"`
	// Masks are x,y,w,h areas filled black first (PHI), in pixels or
	// as x%,y%,w%,h% of the frame. A frame a mask does not fit is blanked.
	Masks []string `yaml:"masks" json:"masks,omitempty"`
	// MaskSize is the frame size (WxH) pixel masks were drawn for; empty:
	// the first frame's size. A frame of another size is blanked.
	MaskSize string `yaml:"mask_size" json:"mask_size,omitempty"`
	// Preset overrides ai.preset for this source (e.g. thyroid).
	Preset string `yaml:"preset" json:"preset,omitempty"`
	// Egress publishes the session's stream to other servers too.
	Egress []Egress `yaml:"egress" json:"egress,omitempty"`
}

// Egress is a server the session's annotated stream is published to.
type Egress struct {
	// WHIP is a WHIP endpoint (LiveKit ingress, MediaMTX, another
	// sonolive's /whip/{source}).
	WHIP string `yaml:"whip" json:"whip"`
	// TokenFile holds its bearer token (kept out of the config).
	TokenFile string `yaml:"token_file" json:"token_file,omitempty"`
}

// check validates a source on its own: its id, and that its spec, crop
// and masks parse (a source's open errors come later, from the device).
func (s Source) check() error {
	if !idRE.MatchString(s.ID) {
		return fmt.Errorf("source id %q: want 1-32 of [a-z0-9_-]", s.ID)
	}
	if s.URL == "" {
		return fmt.Errorf("source %q has no url", s.ID)
	}
	if err := capture.Check(s.URL); err != nil {
		return fmt.Errorf("source %q: %w", s.ID, err)
	}
	if _, err := s.region(); err != nil {
		return fmt.Errorf("source %q: %w", s.ID, err)
	}
	for _, e := range s.Egress {
		if u, err := url.Parse(e.WHIP); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("source %q: egress whip %q: want an http(s) URL", s.ID, e.WHIP)
		}
	}
	return nil
}

// region is the source's crop and PHI masks.
func (s Source) region() (capture.Region, error) {
	var region capture.Region
	if s.MaskSize != "" {
		var w, h int
		if _, err := fmt.Sscanf(s.MaskSize, "%dx%d", &w, &h); err != nil || w <= 0 || h <= 0 {
			return region, fmt.Errorf("mask_size %q: want WxH", s.MaskSize)
		}
		region.Size = image.Pt(w, h)
	}
	if s.Crop != "" {
		r, err := capture.ParseRect(s.Crop)
		if err != nil {
			return region, fmt.Errorf("crop: %w", err)
		}
		region.Crop = r
	}
	for _, m := range s.Masks {
		r, err := capture.ParseMask(m)
		if err != nil {
			return region, fmt.Errorf("mask: %w", err)
		}
		region.Masks = append(region.Masks, r)
	}
	return region, nil
}

// Default is the configuration with nothing set: the phantom at 720p30,
// the shipped breast model, http://localhost:8080.
func Default() Config {
	return Config{
		Listen: "127.0.0.1:8080",
		TLS:    TLSConfig{SelfSignedDir: "tls"},
		HTTP:   HTTP{ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute},
		Auth:   Auth{SonographerTTL: 12 * time.Hour, InviteTTL: time.Hour, MaxInviteTTL: 12 * time.Hour, Audience: "sonolive", MaxPerToken: 4},
		Audit:  Audit{Path: "audit.jsonl"},
		WebRTC: WebRTC{IncludeLoopback: true},
		Stream: Stream{BitrateKbps: 2500, KeyframeInterval: 2 * time.Second, ViewerQueue: 15, MaxViewers: 100,
			VP8Fallback: true, VP8MaxHeight: 480, Adaptive: true, SmallHeight: 360, SmallKbps: 600},
		AI:     AI{Preset: "breast", Threads: 1, MinHits: 2},
		Record: Record{Enabled: true, Dir: "recordings", Segment: time.Second, MaxPart: time.Hour, MaxAge: 30 * 24 * time.Hour, MaxGB: 20},
		Sources: []Source{{
			ID: "phantom", URL: "phantom://?seed=1&lesions=2&width=1280&height=720&fps=30",
		}},
		LogLevel: "info",
	}
}

// Load reads a YAML file over the defaults. Unknown keys are errors: a
// typo in a clinic's config should not silently do nothing.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Default(), fmt.Errorf("config: %w", err)
	}
	return Parse(b, path)
}

// Parse reads a YAML config over the defaults; name is for messages.
func Parse(b []byte, path string) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file means all defaults.
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, cfg.Validate()
}

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// Validate checks what would otherwise fail later and obscurely.
func (c *Config) Validate() error {
	if len(c.Sources) == 0 {
		return errors.New("config: no sources")
	}
	seen := map[string]bool{}
	for _, s := range c.Sources {
		if err := s.check(); err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if seen[s.ID] {
			return fmt.Errorf("config: source id %q twice", s.ID)
		}
		seen[s.ID] = true
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("config: tls needs both cert and key")
	}
	if c.Auth.Secret != "" && len(c.Auth.Secret) < 16 {
		return errors.New("config: auth.secret must be at least 16 characters")
	}
	if c.Stream.BitrateKbps < 100 {
		return fmt.Errorf("config: stream.bitrate_kbps %d is too low", c.Stream.BitrateKbps)
	}
	if c.Stream.VP8Fallback && (c.Stream.VP8MaxHeight < 120 || c.Stream.VP8MaxHeight > 1080) {
		return fmt.Errorf("config: stream.vp8_max_height %d is outside 120..1080", c.Stream.VP8MaxHeight)
	}
	if c.Stream.Adaptive && (c.Stream.SmallHeight < 120 || c.Stream.SmallHeight > 1080 || c.Stream.SmallKbps < 100) {
		return fmt.Errorf("config: stream.small_height %d must be 120..1080 and stream.small_kbps %d at least 100",
			c.Stream.SmallHeight, c.Stream.SmallKbps)
	}
	if c.Record.Enabled && (c.Record.Dir == "" || c.Record.Segment < 500*time.Millisecond) {
		return errors.New("config: record needs a dir and a segment of at least 500ms")
	}
	if c.Record.Enabled && (c.Record.MaxPart < time.Minute || c.Record.MaxPart > 12*time.Hour) {
		return errors.New("config: record.max_part must be between 1m and 12h")
	}
	if c.Auth.InviteTTL <= 0 || c.Auth.MaxInviteTTL < c.Auth.InviteTTL || c.Auth.SonographerTTL <= 0 {
		return errors.New("config: auth ttls must be positive and invite_ttl ≤ max_invite_ttl")
	}
	if c.Auth.MaxPerToken < 1 || c.Auth.Audience == "" {
		return errors.New("config: auth.max_per_token must be at least 1 and auth.audience set")
	}
	for _, srv := range c.WebRTC.ICEServers {
		if err := srv.Check(); err != nil {
			return fmt.Errorf("config: webrtc.ice_servers: %w", err)
		}
	}
	if t := c.WebRTC.TURN; t.Enabled() && t.PublicIP == "" {
		return errors.New("config: webrtc.turn needs public_ip: the address experts reach this box at")
	}
	if c.WebRTC.TCPPort < 0 || c.WebRTC.TCPPort > 65535 || c.WebRTC.UDPPort < 0 || c.WebRTC.UDPPort > 65535 {
		return errors.New("config: webrtc ports must be 0..65535")
	}
	if l := c.LiveKit; l.Enabled() {
		for name, v := range map[string]string{"url": l.URL, "viewer_url": l.ViewerURL} {
			if u, err := url.Parse(v); v != "" && (err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "") {
				return fmt.Errorf("config: livekit.%s %q: want ws:// or wss://", name, v)
			}
		}
		if l.APIKey == "" || l.APISecretFile == "" {
			return errors.New("config: livekit needs api_key and api_secret_file")
		}
	}
	if l := c.Link; l.Enabled() && (l.Name == "" || l.TokenFile == "") {
		return errors.New("config: link needs a name and a token_file")
	}
	if c.HTTP.ReadTimeout <= 0 || c.HTTP.WriteTimeout <= 0 || c.HTTP.IdleTimeout <= 0 {
		return errors.New("config: http timeouts must be positive")
	}
	return nil
}
