package sfu

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
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

// ViewerIdentity is a viewer's identity in the room: its role, the id of
// the sonolive link it came with, and a random part (a class shares one
// link).
func ViewerIdentity(role, linkID, random string) string { return role + "-" + linkID + "-" + random }

// Evict removes from room the viewers that came with any of the links
// (revoked ones): a LiveKit token stays good for its life, so revoking a
// link must also end what it already joined. It returns how many left.
func (t Tokens) Evict(ctx context.Context, url, room string, links []string) (int, error) {
	rs := lksdk.NewRoomServiceClient(url, t.Key, t.Secret)
	res, err := rs.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: room})
	if err != nil {
		return 0, fmt.Errorf("sfu: listing %s: %w", room, err)
	}
	gone := map[string]bool{}
	for _, id := range links {
		gone[id] = true
	}
	n := 0
	var errs []error
	for _, p := range res.Participants {
		parts := strings.SplitN(p.Identity, "-", 3)
		if len(parts) != 3 || !gone[parts[1]] {
			continue
		}
		if _, err := rs.RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: room, Identity: p.Identity}); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
