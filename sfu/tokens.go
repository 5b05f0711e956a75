package sfu

import (
	"errors"
	"time"

	"github.com/livekit/protocol/auth"
)

// Tokens mints LiveKit access tokens with a server's API key pair.
type Tokens struct {
	Key, Secret string
}

// RoomFor is the room a source publishes into.
func RoomFor(source string) string { return "sonolive-" + source }

// Viewer is a token that may join room and watch, nothing more: it cannot
// publish media or data, so a viewer through LiveKit can do less than one
// on sonolive's own relay, never more.
func (t Tokens) Viewer(room, identity, name string, ttl time.Duration) (string, error) {
	if t.Key == "" || t.Secret == "" {
		return "", errors.New("sfu: no LiveKit API key")
	}
	no, yes := false, true
	return auth.NewAccessToken(t.Key, t.Secret).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: room, CanSubscribe: &yes, CanPublish: &no, CanPublishData: &no}).
		SetIdentity(identity).SetName(name).SetValidFor(ttl).ToJWT()
}
