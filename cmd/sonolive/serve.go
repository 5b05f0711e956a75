package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"sonolive/auth"
	"sonolive/infer"
	"sonolive/server"
	"sonolive/sfu"
)

func serveCmd(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: sonolive serve [flags]

Serves the live annotated stream: one session per configured source
(capture -> AI within the budget -> overlay -> H.264 once -> WebRTC to every
viewer), the sonographer's and the experts' pages, WHEP, /metrics, /healthz.
With no config it runs the phantom at 720p30 with the shipped breast model on
http://localhost:8080 and prints the sonographer's link. Flags override the
config file; sonolive.example.yaml documents every setting.

Flags:
`)
		fs.PrintDefaults()
	}
	var (
		cfgPath   = fs.String("config", "", "YAML config file (default: built-in defaults, see sonolive.example.yaml)")
		listen    = fs.String("listen", "", "address (config: listen, default 127.0.0.1:8080); beyond loopback it serves HTTPS (tls.*)")
		source    = fs.String("source", "", "run this one source instead of the configured ones (capture spec as in `sonolive run`)")
		preset    = fs.String("preset", "", "embedded model preset (config: ai.preset)")
		model     = fs.String("model", "", "ONNX model file, or 'none' (config: ai.model)")
		ortLib    = fs.String("ort-lib", "", "ONNX Runtime library (config: ai.ort_lib)")
		publicURL = fs.String("public-url", "", "base URL for links (config: public_url)")
		tlsCert   = fs.String("tls-cert", "", "TLS certificate file (config: tls.cert)")
		tlsKey    = fs.String("tls-key", "", "TLS key file (config: tls.key)")
		logLevel  = fs.String("log-level", "", "debug, info, warn or error (config: log_level)")
		linkFile  = fs.String("link-file", "", "also write the sonographer links to this file (for scripts and tests)")
		recordDir = fs.String("record-dir", "", "teaching library directory (config: record.dir, default ./recordings)")
		noRecord  = fs.Bool("no-record", false, "do not record the live sessions (config: record.enabled)")
		voices    = fs.Bool("record-voices", false, "record the people's voices with the video; they must agree (config: record.voices)")
		always    = fs.Bool("record-between-exams", false, "record the sources also while no exam is open (config: record.between_exams)")
		insecure  = fs.Bool("insecure-http", false, "allow plain HTTP beyond loopback, e.g. behind a TLS proxy (config: tls.insecure_http)")
		pprofAddr = fs.String("pprof", "", "serve Go profiles (heap, goroutines, CPU) on this loopback address, e.g. 127.0.0.1:6060")
		auditPath = fs.String("audit", "", "access log file, hash-chained (config: audit.path, default audit.jsonl)")
		adminFile = fs.String("admin-token-file", "", "write a token for the source API (POST/DELETE /api/sources: sources added while serving) to this file, mode 0600")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	cfg := server.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = server.Load(*cfgPath); err != nil {
			return err
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Listen, *listen)
	set(&cfg.AI.Preset, *preset)
	set(&cfg.AI.Model, *model)
	set(&cfg.AI.ORTLib, *ortLib)
	set(&cfg.PublicURL, *publicURL)
	set(&cfg.TLS.Cert, *tlsCert)
	set(&cfg.TLS.Key, *tlsKey)
	set(&cfg.LogLevel, *logLevel)
	set(&cfg.Record.Dir, *recordDir)
	set(&cfg.Audit.Path, *auditPath)
	if *voices {
		cfg.Record.Voices = true
	}
	if *always {
		cfg.Record.BetweenExams = true
	}
	if *noRecord {
		cfg.Record.Enabled = false
	}
	if *insecure {
		cfg.TLS.InsecureHTTP = true
	}
	if *source != "" {
		id := "live"
		if strings.HasPrefix(*source, "phantom://") {
			id = "phantom"
		}
		cfg.Sources = []server.Source{{ID: id, URL: *source}}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	if cfg.LiveKit.Enabled() {
		if err := sfu.UseLogger(log); err != nil {
			return err
		}
	}

	srv, err := server.New(cfg, log, func(src server.Source) (infer.Detector, string, error) {
		mf := modelFlags{model: cfg.AI.Model, preset: cfg.AI.Preset, ortLib: cfg.AI.ORTLib, threads: cfg.AI.Threads, threshold: cfg.AI.Threshold,
			segmenter: cfg.AI.Segmenter}
		if src.Preset != "" {
			mf.preset = src.Preset
		}
		m, name, err := mf.open()
		if err != nil || m == nil {
			return nil, name, err
		}
		md := m.Metadata()
		log.Info("model loaded", zap.String("source", src.ID), zap.String("model", name), zap.String("organ", md.Organ), zap.String("version", md.Version))
		return m, name, nil
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *pprofAddr != "" {
		addr, err := servePprof(ctx, *pprofAddr)
		if err != nil {
			ln.Close()
			return err
		}
		fmt.Fprintf(os.Stderr, "profiles on http://%s/debug/pprof/\n", addr)
	}

	// The sonographer's links, on stdout for the person who started us.
	if err := srv.SetAddr(ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	if fp := srv.TLSFingerprint(); fp != "" {
		fmt.Printf("HTTPS certificate SHA-256 fingerprint: %s\n", fp)
	}
	var links []byte
	for _, id := range srv.Sources() {
		link, _, err := srv.Link(id, auth.Sonographer, srv.SonographerTTL())
		if err != nil {
			ln.Close()
			return err
		}
		fmt.Printf("sonographer page for %s: %s\n", id, link)
		links = append(links, fmt.Sprintf("%s %s\n", id, link)...)
	}
	if *linkFile != "" {
		if err := os.WriteFile(*linkFile, links, 0o600); err != nil {
			ln.Close()
			return fmt.Errorf("link file: %w", err)
		}
	}
	// The admin token is never printed: it adds sources that read local
	// files and devices, so it goes only where the operator asked.
	if *adminFile != "" {
		tok, c, err := srv.AdminToken(srv.SonographerTTL())
		if err == nil {
			err = os.WriteFile(*adminFile, []byte(tok+"\n"), 0o600)
		}
		if err != nil {
			ln.Close()
			return fmt.Errorf("admin token file: %w", err)
		}
		fmt.Printf("admin token (source API) in %s, valid until %s\n", *adminFile, c.ExpiresAt().Format(time.RFC3339))
	}
	return srv.Run(ctx, ln)
}
