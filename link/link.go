// Package link carries a box's web API over one connection the box opens
// to a hub outside its network, for clinics whose firewall lets nothing in
// and only TCP 443 out. Experts reach the hub; the hub reaches the box
// through the link. Only signalling and the pages travel this way: the
// media goes through TURN (package ice), so the hub never carries video.
//
// The box dials the hub over TLS and asks for an HTTP upgrade to
// "sonolive-link/1" at /link/v1 with its name and token; on "101" the two
// run yamux over the connection, the hub opening one stream per HTTP
// connection of an expert (WebSockets included) and the box serving its
// usual handler on them. The hub is a plain reverse proxy: sonolive's own
// tokens still decide what an expert may do.
package link

import (
	"errors"
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	// Path is where boxes ask the hub for a link.
	Path = "/link/v1"
	// Protocol is the Upgrade token.
	Protocol = "sonolive-link/1"
	// ClientAddrHeader carries the expert's address (as the hub saw it)
	// to the box, which uses it as the request's RemoteAddr: audit logs
	// and bindings name the expert, not the hub. The hub overwrites
	// whatever a client sends in it.
	ClientAddrHeader = "Sonolive-Client-Addr"
)

// ErrUnauthorized is the hub refusing a box's name or token.
var ErrUnauthorized = errors.New("link: hub refused the box's name or token")

// muxConfig is yamux's configuration on both ends: keep-alives often
// enough that a link a firewall silently dropped is seen, and redialled,
// within half a minute.
func muxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.LogOutput = io.Discard
	return c
}
