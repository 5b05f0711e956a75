package stream

import (
	"errors"
	"fmt"
	"strings"

	"github.com/pion/sdp/v3"
)

// ErrNoCodec: the offer's video takes neither H.264 nor (where the fallback
// is on) VP8. Its message names the fix, for the page to show.
var ErrNoCodec = errors.New("this browser offers no video codec sonolive sends")

// offerInfo is what checkOffer learnt of an offer.
type offerInfo struct {
	hasApp bool   // an application section: the DataChannels
	codec  string // the video MIME type to send
	audio  int    // audio sections offering Opus: the voice slots
}

// checkOffer rejects what is not SDP or offers no video we can send before
// any WebRTC state is made, with a reason a client developer can act on.
// The codec is H.264 when offered, else VP8 when the fallback is allowed.
func checkOffer(offer string, allowVP8 bool) (o offerInfo, err error) {
	if strings.TrimSpace(offer) == "" {
		return o, fmt.Errorf("%w: empty body", ErrBadOffer)
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offer); err != nil {
		return o, fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	hasH264, hasVP8 := false, false
	// A browser that does not trickle repeats its candidates in every
	// bundled section (a page with its voice slots has six): what is
	// bounded is the addresses it names, each counted once.
	cands := map[string]bool{}
	for _, m := range sd.MediaDescriptions {
		for _, a := range m.Attributes {
			if a.Key == "candidate" {
				cands[a.Value] = true
			}
		}
		switch m.MediaName.Media {
		case "application":
			o.hasApp = true
		case "audio":
			for _, a := range m.Attributes {
				if a.Key == "rtpmap" && strings.Contains(strings.ToUpper(a.Value), "OPUS/48000") {
					o.audio++
					break
				}
			}
		case "video":
			for _, a := range m.Attributes {
				if a.Key != "rtpmap" {
					continue
				}
				v := strings.ToUpper(a.Value)
				hasH264 = hasH264 || strings.Contains(v, "H264/90000")
				hasVP8 = hasVP8 || strings.Contains(v, "VP8/90000")
			}
		}
	}
	if len(cands) > MaxCandidates {
		return offerInfo{}, fmt.Errorf("%w: %d ICE candidates (at most %d)", ErrBadOffer, len(cands), MaxCandidates)
	}
	if len(sd.MediaDescriptions) > 8 {
		return offerInfo{}, fmt.Errorf("%w: %d media sections (at most 8)", ErrBadOffer, len(sd.MediaDescriptions))
	}
	switch {
	case hasH264:
		o.codec = h264Codec.MimeType
		return o, nil
	case hasVP8 && allowVP8:
		o.codec = vp8Codec.MimeType
		return o, nil
	case hasVP8:
		return offerInfo{}, fmt.Errorf("%w: %w: no H.264 in the offer and the VP8 fallback is off on this server; "+
			"use Chrome, Edge or Safari, or enable Firefox's OpenH264 plugin (about:addons, Plugins)", ErrBadOffer, ErrNoCodec)
	}
	return offerInfo{}, fmt.Errorf("%w: %w: no H.264 or VP8 video section; use Chrome, Edge, Firefox or Safari", ErrBadOffer, ErrNoCodec)
}
