package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"

	"sonolive/link"
)

// newLink makes the box's end of the outbound link to a hub. It serves
// the same handler as the box's own listener, less /metrics: the clinic's
// monitoring stays on its own network.
func (s *Server) newLink(newHTTP func() *http.Server) (*link.Box, error) {
	lc := s.cfg.Link
	tok, err := os.ReadFile(lc.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("link: token_file: %w", err)
	}
	var tc *tls.Config
	if lc.CAFile != "" {
		pem, err := os.ReadFile(lc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("link: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("link: ca_file %s holds no PEM certificate", lc.CAFile)
		}
		tc = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return link.NewBox(link.BoxConfig{Hub: lc.Hub, Name: lc.Name, Token: strings.TrimSpace(string(tok)), TLS: tc,
		Logger: s.log.Named("link"),
		Server: func() *http.Server {
			hs := newHTTP()
			h := hs.Handler
			hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/metrics" {
					http.NotFound(w, r)
					return
				}
				h.ServeHTTP(w, r)
			})
			return hs
		}})
}
