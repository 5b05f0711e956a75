package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// ErrPlainHTTP: plain HTTP was asked for beyond loopback without saying so.
var ErrPlainHTTP = errors.New("plain HTTP beyond loopback")

// Tokens travel in URLs and headers: on a clinic network they must not
// cross in clear text. So the server speaks HTTPS whenever it listens
// beyond loopback: with the configured certificate, else with a
// self-signed one it makes once and keeps (its fingerprint is printed, for
// the IT person to check or pin). Plain HTTP beyond loopback needs
// tls.insecure_http, and says so loudly.

// setupTLS decides how the server listening on addr speaks: it returns
// nil for plain HTTP (loopback, or insecure_http), else the TLS config.
func (s *Server) setupTLS(addr net.Addr) (*tls.Config, error) {
	c := s.cfg.TLS
	if c.Cert != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		s.fingerprint = fingerprint(cert)
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
	}
	if isLoopback(addr) {
		return nil, nil
	}
	if c.InsecureHTTP {
		s.log.Warn("serving plain HTTP beyond loopback: links and tokens cross the network in clear text", zap.String("addr", addr.String()))
		return nil, nil
	}
	if c.SelfSignedDir == "" {
		return nil, fmt.Errorf("%w on %s: give tls.cert and tls.key, keep tls.self_signed_dir, or set tls.insecure_http (--insecure-http)", ErrPlainHTTP, addr)
	}
	cert, made, err := selfSigned(c.SelfSignedDir)
	if err != nil {
		return nil, fmt.Errorf("tls: self-signed certificate in %s: %w", c.SelfSignedDir, err)
	}
	s.fingerprint = fingerprint(cert)
	s.log.Info("HTTPS with a self-signed certificate: browsers warn until it is trusted; check its fingerprint",
		zap.String("dir", c.SelfSignedDir), zap.Bool("new", made), zap.String("sha256", s.fingerprint))
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// TLSFingerprint is the SHA-256 of the served certificate ("" for HTTP).
func (s *Server) TLSFingerprint() string { return s.fingerprint }

func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// fingerprint is the certificate's SHA-256 as colon-separated hex, as
// browsers show it.
func fingerprint(c tls.Certificate) string {
	if len(c.Certificate) == 0 {
		return ""
	}
	sum := sha256.Sum256(c.Certificate[0])
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// selfSigned loads dir/cert.pem and dir/key.pem, making them first if
// they are not there: ECDSA P-256, valid for two years, for this host's
// name, its addresses and localhost.
func selfSigned(dir string) (tls.Certificate, bool, error) {
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if cert, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		return cert, false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return tls.Certificate{}, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, false, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, false, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "sonolive " + host, Organization: []string{"sonolive (self-signed)"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(2 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if host != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ipn.IP)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return tls.Certificate{}, false, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, false, err
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	return cert, true, err
}
