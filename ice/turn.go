package ice

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// TURNConfig runs a TURN server inside serve, for a site without one: on
// UDP and TCP at Listen, and TURN over TLS at TLSListen (443 passes the
// strictest hospital firewalls) with serve's certificate.
type TURNConfig struct {
	// Listen enables it: host:port for TURN over UDP and TCP, e.g. ":3478".
	Listen string `yaml:"listen"`
	// TLSListen adds TURN over TLS, e.g. ":5349" or ":443".
	TLSListen string `yaml:"tls_listen"`
	// PublicIP is the address experts reach this box and its relays at
	// (required).
	PublicIP string `yaml:"public_ip"`
	// Host names the box in the turns: URL (the certificate's name;
	// default PublicIP).
	Host string `yaml:"host"`
	// Realm (default "sonolive").
	Realm string `yaml:"realm"`
	// SecretFile holds the TURN REST secret, to share it with other
	// boxes; empty: a random one, known only to this process.
	SecretFile string `yaml:"secret_file"`
}

// Enabled reports whether the embedded server should run.
func (c TURNConfig) Enabled() bool { return c.Listen != "" || c.TLSListen != "" }

// TURN is the running embedded server.
type TURN struct {
	srv    *turn.Server
	secret string
	// Server is how peers reach it, to hand out (no credentials).
	Server Server
}

// StartTURN starts the embedded TURN server; cert is serve's TLS
// certificate (needed for TLSListen).
func StartTURN(cfg TURNConfig, cert *tls.Config) (*TURN, error) {
	ip := net.ParseIP(cfg.PublicIP)
	if ip == nil {
		return nil, fmt.Errorf("%w: webrtc.turn.public_ip %q is not an IP address", ErrBadServer, cfg.PublicIP)
	}
	realm := cfg.Realm
	if realm == "" {
		realm = "sonolive"
	}
	secret, err := turnSecret(cfg.SecretFile)
	if err != nil {
		return nil, err
	}
	host := cfg.Host
	if host == "" {
		host = cfg.PublicIP
	}
	relay := func() turn.RelayAddressGenerator {
		return &turn.RelayAddressGeneratorStatic{RelayAddress: ip, Address: "0.0.0.0"}
	}
	// It relays to this box only: a TURN server open to any peer would let
	// whoever holds a page's credentials reach the hospital's network.
	own, err := ownAddresses(ip)
	if err != nil {
		return nil, err
	}
	permit := func(_ net.Addr, peer net.IP) bool { return own[peer.String()] }
	sc := turn.ServerConfig{Realm: realm, LoggerFactory: logging.NewDefaultLoggerFactory()}
	sc.AuthHandler = turn.LongTermTURNRESTAuthHandler(secret, sc.LoggerFactory.NewLogger("turn"))
	t := &TURN{secret: secret}
	var closers []func() error
	fail := func(err error) (*TURN, error) {
		for _, c := range closers {
			c()
		}
		return nil, err
	}
	if cfg.Listen != "" {
		pc, err := net.ListenPacket("udp4", cfg.Listen)
		if err != nil {
			return fail(fmt.Errorf("TURN UDP %s: %w", cfg.Listen, err))
		}
		closers = append(closers, pc.Close)
		ln, err := net.Listen("tcp4", cfg.Listen)
		if err != nil {
			return fail(fmt.Errorf("TURN TCP %s: %w", cfg.Listen, err))
		}
		closers = append(closers, ln.Close)
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{PacketConn: pc, RelayAddressGenerator: relay(), PermissionHandler: permit})
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{Listener: ln, RelayAddressGenerator: relay(), PermissionHandler: permit})
		port := pc.LocalAddr().(*net.UDPAddr).Port
		tport := ln.Addr().(*net.TCPAddr).Port
		t.Server.URLs = append(t.Server.URLs,
			fmt.Sprintf("turn:%s:%d?transport=udp", cfg.PublicIP, port),
			fmt.Sprintf("turn:%s:%d?transport=tcp", cfg.PublicIP, tport))
	}
	if cfg.TLSListen != "" {
		if cert == nil {
			return fail(fmt.Errorf("%w: webrtc.turn.tls_listen needs serve's TLS certificate (tls.cert and tls.key)", ErrBadServer))
		}
		ln, err := tls.Listen("tcp4", cfg.TLSListen, cert)
		if err != nil {
			return fail(fmt.Errorf("TURN TLS %s: %w", cfg.TLSListen, err))
		}
		closers = append(closers, ln.Close)
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{Listener: ln, RelayAddressGenerator: relay(), PermissionHandler: permit})
		t.Server.URLs = append(t.Server.URLs, fmt.Sprintf("turns:%s:%d?transport=tcp", host, ln.Addr().(*net.TCPAddr).Port))
	}
	if t.srv, err = turn.NewServer(sc); err != nil {
		return fail(fmt.Errorf("TURN: %w", err))
	}
	return t, nil
}

// Secret is the shared secret its credentials are minted with.
func (t *TURN) Secret() string { return t.secret }

// Close stops it.
func (t *TURN) Close() error { return t.srv.Close() }

// ownAddresses are the IPs of this box's interfaces and its public IP:
// the only peers the embedded server relays to (where sonolive's own ICE
// candidates are).
func ownAddresses(public net.IP) (map[string]bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("TURN: interface addresses: %w", err)
	}
	own := map[string]bool{public.String(): true}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			own[n.IP.String()] = true
		}
	}
	return own, nil
}

func turnSecret(file string) (string, error) {
	if file == "" {
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		return hex.EncodeToString(b[:]), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%w: webrtc.turn.secret_file: %w", ErrBadServer, err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("%w: the secret in %s is shorter than 16 characters", ErrBadServer, file)
	}
	return s, nil
}
