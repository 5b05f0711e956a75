package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"sonolive/link"
)

// boxFlags collects repeated --box NAME=TOKEN_FILE flags.
type boxFlags map[string]string

func (b boxFlags) String() string { return fmt.Sprint(map[string]string(b)) }

func (b boxFlags) Set(v string) error {
	name, file, ok := strings.Cut(v, "=")
	if !ok || name == "" || file == "" || strings.ContainsAny(name, "./: ") {
		return fmt.Errorf("--box %q: want NAME=TOKEN_FILE (a name without dots)", v)
	}
	tok, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	t := strings.TrimSpace(string(tok))
	if len(t) < 16 {
		return fmt.Errorf("--box %s: the token in %s is shorter than 16 characters", name, file)
	}
	b[name] = t
	return nil
}

func hubCmd(args []string) error {
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: sonolive hub --tls-cert C --tls-key K --box NAME=TOKEN_FILE [flags]

Runs a hub outside the clinics' networks (a small cloud machine, the regional
hospital's DMZ) for boxes whose firewall lets nothing in: each box opens one
TLS connection to the hub (config: link.*), and experts reach the box's
pages and WHEP through the hub at https://NAME.DOMAIN (or at any address, for
--default). The hub carries signalling only: video goes through TURN.

Flags:
`)
		fs.PrintDefaults()
	}
	boxes := boxFlags{}
	fs.Var(boxes, "box", "a box the hub accepts: NAME=TOKEN_FILE (repeat for each box)")
	var (
		listen   = fs.String("listen", ":443", "address for boxes and experts")
		cert     = fs.String("tls-cert", "", "TLS certificate (for DOMAIN and *.DOMAIN)")
		key      = fs.String("tls-key", "", "TLS key")
		domain   = fs.String("domain", "", "experts reach box NAME at NAME.DOMAIN")
		def      = fs.String("default", "", "the box for any other host name")
		insecure = fs.Bool("insecure-http", false, "plain HTTP (tests, or behind a TLS proxy on the same host)")
		logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if len(boxes) == 0 {
		return errors.New("hub: no --box")
	}
	if (*cert == "" || *key == "") && !*insecure {
		return errors.New("hub: needs --tls-cert and --tls-key (experts' browsers allow WebRTC pages on https only)")
	}
	if *def != "" && boxes[*def] == "" {
		return fmt.Errorf("hub: --default %q is not a --box", *def)
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	h := link.NewHub(link.HubConfig{Tokens: boxes, Domain: *domain, Default: *def, Logger: log})
	defer h.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// Headers only are bounded: the links, WebSockets and downloads are
	// long-lived, and the boxes bound their own requests.
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: zap.NewStdLog(log.Named("http"))}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() {
		if *insecure {
			errc <- hs.Serve(ln)
		} else {
			errc <- hs.ServeTLS(ln, *cert, *key)
		}
	}()
	log.Info("hub listening", zap.String("addr", ln.Addr().String()), zap.Int("boxes", len(boxes)))
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hs.Shutdown(shut)
}
