package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"sonolive/stream"
)

// The consult channel carries what the people in a session show each
// other on the image (docs/streaming.md, "DataChannel consult"): the
// pointer and simple marks, in source pixels, keyed to the frame they
// were drawn on by its RTP timestamp. The server checks each message,
// stamps who sent it and when, forwards it to everyone else and keeps the
// marks in the recording's timeline so a replay shows them in time.

// The expert's read of an AI finding travels the same way: a verdict on a
// track (agree, disagree, unsure), optionally a category and a note, shown
// next to the box on every page, kept in the timeline and exportable as
// labels. The latest verdict per track is also kept here, for a page that
// joins later.

// ErrBadConsult: a consult message that is not one we forward.
var ErrBadConsult = errors.New("bad consult message")

// consultMsg is one message, as received and as forwarded.
type consultMsg struct {
	Type   string       `json:"type"` // pointer, mark, clear, verdict, freeze, unfreeze, capture, chat, voice; presence and speaking from the server
	ID     string       `json:"id,omitempty"`
	Shape  string       `json:"shape,omitempty"` // arrow, circle, caliper, freehand
	X      *float64     `json:"x,omitempty"`
	Y      *float64     `json:"y,omitempty"`
	Points [][2]float64 `json:"points,omitempty"`
	RTPTS  uint32       `json:"rtp_ts,omitempty"`
	// A verdict: the track it is about, agree|disagree|unsure, a category
	// from categories (or none) and a short note.
	TrackID  *uint64 `json:"track_id,omitempty"`
	Verdict  string  `json:"verdict,omitempty"`
	Category string  `json:"category,omitempty"`
	Note     string  `json:"note,omitempty"`
	// Text is a chat message (for when audio fails).
	Text string `json:"text,omitempty"`
	// Mic is a page's microphone state (a voice message): open, ptt
	// (push to talk, not pressed), talking (push to talk, pressed),
	// muted, or none (no microphone).
	Mic string `json:"mic,omitempty"`
	// People is the server's presence list: who is connected now. Slots
	// (to each page its own) names whose voice each of the page's audio
	// sections carries, in offer order; VoicesRecorded says the voices go
	// into the recording (record.voices: every page shows it).
	People         []consultFrom `json:"people,omitempty"`
	Slots          []string      `json:"slots,omitempty"`
	VoicesRecorded bool          `json:"voices_recorded,omitempty"`
	// Speaking lists the viewers whose microphones carry speech now.
	Speaking []string `json:"speaking,omitempty"`
	// Still is set by the server on a freeze: the URL of the frozen
	// frame's picture, the same for every page.
	Still string `json:"still,omitempty"`
	// SentAt is the sender's clock at the input (unix ms), passed on so a
	// test on one machine can time input to drawing; never trusted.
	SentAt int64 `json:"sent_at,omitempty"`
	// Set by the server: the sender and the time it was forwarded.
	From *consultFrom `json:"from,omitempty"`
	At   int64        `json:"at,omitempty"` // unix ms
}

type consultFrom struct {
	Viewer string `json:"viewer"`
	Role   string `json:"role"`
	// Name is the label the invite was made with ("" for none).
	Name string `json:"name,omitempty"`
	// Mic is the microphone state the page last gave (presence only).
	Mic string `json:"mic,omitempty"`
}

// micStates are what a page may say of its microphone.
var micStates = map[string]bool{"open": true, "ptt": true, "talking": true, "muted": true, "none": true}

// maxMarkPoints bounds a freehand stroke (a few seconds of drawing).
const maxMarkPoints = 512

var markID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// categories an expert may give a finding: BI-RADS assessment categories
// for a breast lesion, ACR TI-RADS levels for a thyroid nodule.
var categories = map[string]bool{
	"BI-RADS 2": true, "BI-RADS 3": true, "BI-RADS 4a": true, "BI-RADS 4b": true, "BI-RADS 4c": true, "BI-RADS 5": true,
	"TI-RADS TR1": true, "TI-RADS TR2": true, "TI-RADS TR3": true, "TI-RADS TR4": true, "TI-RADS TR5": true,
}

// maxNote bounds a verdict's note, in runes.
const maxNote = 280

// cleanNote drops control characters (a note is shown as text, and goes
// into JSON lines) and says whether what is left fits.
func cleanNote(s string) (string, bool) {
	if !utf8.ValidString(s) {
		return "", false
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	return strings.TrimSpace(s), utf8.RuneCountInString(s) <= maxNote
}

// parseConsult reads and checks one message against the frame size w×h
// (coordinates may sit on the edge, not beyond it). The server's fields
// (from, at) are never taken from the sender.
func parseConsult(b []byte, w, h int) (consultMsg, error) {
	var m consultMsg
	if len(b) > stream.MaxConsultMessage {
		return m, fmt.Errorf("%w: %d bytes", ErrBadConsult, len(b))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: %v", ErrBadConsult, err)
	}
	m.From, m.At, m.Still, m.People, m.Slots, m.VoicesRecorded, m.Speaking = nil, 0, "", nil, nil, false, nil
	if m.Type != "voice" {
		m.Mic = ""
	}
	if m.Type != "chat" {
		m.Text = ""
	}
	if m.Type != "verdict" {
		m.TrackID, m.Verdict, m.Category, m.Note = nil, "", "", ""
	}
	in := func(x, y float64) bool {
		return !math.IsNaN(x) && !math.IsNaN(y) && x >= 0 && y >= 0 && x <= float64(w) && y <= float64(h)
	}
	if (m.Type == "pointer" || m.Type == "mark") && (w <= 0 || h <= 0) {
		return m, fmt.Errorf("%w: no frame yet to point at", ErrBadConsult)
	}
	switch m.Type {
	case "pointer":
		if m.X == nil || m.Y == nil || !in(*m.X, *m.Y) {
			return m, fmt.Errorf("%w: pointer needs x, y inside the %dx%d frame", ErrBadConsult, w, h)
		}
		m.ID, m.Shape, m.Points = "", "", nil
	case "mark":
		if !markID.MatchString(m.ID) {
			return m, fmt.Errorf("%w: mark id must be 1-32 of [A-Za-z0-9_-]", ErrBadConsult)
		}
		want := map[string][2]int{"arrow": {2, 2}, "circle": {2, 2}, "caliper": {2, 2}, "freehand": {2, maxMarkPoints}}
		n, ok := want[m.Shape]
		if !ok {
			return m, fmt.Errorf("%w: shape %q (arrow, circle, caliper or freehand)", ErrBadConsult, m.Shape)
		}
		if len(m.Points) < n[0] || len(m.Points) > n[1] {
			return m, fmt.Errorf("%w: %s takes %d to %d points, got %d", ErrBadConsult, m.Shape, n[0], n[1], len(m.Points))
		}
		for _, p := range m.Points {
			if !in(p[0], p[1]) {
				return m, fmt.Errorf("%w: point (%g, %g) outside the %dx%d frame", ErrBadConsult, p[0], p[1], w, h)
			}
		}
		m.X, m.Y = nil, nil
	case "clear":
		// Without an id: all of the sender's marks.
		if m.ID != "" && !markID.MatchString(m.ID) {
			return m, fmt.Errorf("%w: mark id must be 1-32 of [A-Za-z0-9_-]", ErrBadConsult)
		}
		m.Shape, m.X, m.Y, m.Points = "", nil, nil, nil
	case "verdict":
		if m.TrackID == nil {
			return m, fmt.Errorf("%w: verdict needs a track_id", ErrBadConsult)
		}
		if m.Verdict != "agree" && m.Verdict != "disagree" && m.Verdict != "unsure" {
			return m, fmt.Errorf("%w: verdict %q (agree, disagree or unsure)", ErrBadConsult, m.Verdict)
		}
		if m.Category != "" && !categories[m.Category] {
			return m, fmt.Errorf("%w: category %q (BI-RADS 2-5 or TI-RADS TR1-TR5)", ErrBadConsult, m.Category)
		}
		note, ok := cleanNote(m.Note)
		if !ok {
			return m, fmt.Errorf("%w: note longer than %d characters or not UTF-8", ErrBadConsult, maxNote)
		}
		m.Note = note
		m.ID, m.Shape, m.X, m.Y, m.Points = "", "", nil, nil, nil
	case "freeze", "capture":
		// rtp_ts names the frame the sender had on screen (0 is a real
		// timestamp, so it is required, not defaulted).
		if !hasRTPTS(b) {
			return m, fmt.Errorf("%w: %s needs the rtp_ts of the frame on screen", ErrBadConsult, m.Type)
		}
		m.ID, m.Shape, m.X, m.Y, m.Points = "", "", nil, nil, nil
	case "chat":
		text, ok := cleanNote(m.Text)
		if !ok || text == "" {
			return m, fmt.Errorf("%w: chat text must be 1 to %d characters of UTF-8", ErrBadConsult, maxNote)
		}
		m.Text = text
		m.ID, m.Shape, m.X, m.Y, m.Points, m.RTPTS = "", "", nil, nil, nil, 0
	case "unfreeze":
		m.ID, m.Shape, m.X, m.Y, m.Points, m.RTPTS = "", "", nil, nil, nil, 0
	case "voice":
		if !micStates[m.Mic] {
			return m, fmt.Errorf("%w: mic %q (open, ptt, talking, muted or none)", ErrBadConsult, m.Mic)
		}
		m.ID, m.Shape, m.X, m.Y, m.Points, m.RTPTS = "", "", nil, nil, nil, 0
	default:
		return m, fmt.Errorf("%w: type %q (pointer, mark, clear, verdict, freeze, unfreeze, capture, chat or voice)", ErrBadConsult, m.Type)
	}
	return m, nil
}

// hasRTPTS reports whether the message gives rtp_ts at all.
func hasRTPTS(b []byte) bool {
	var probe struct {
		RTPTS *uint32 `json:"rtp_ts"`
	}
	return json.Unmarshal(b, &probe) == nil && probe.RTPTS != nil
}

// consultRelay checks, stamps, forwards and records a session's consult
// messages.
type consultRelay struct {
	ses *Session
	// pointerRec limits the pointer positions kept in the recording to
	// 10 a second per sender; the live forward is not limited.
	mu         sync.Mutex
	pointerRec map[string]time.Time
	bad        uint64
	// verdicts holds the latest verdict per track (as forwarded), for
	// pages that join later; the oldest go beyond maxVerdicts.
	verdicts     map[uint64][]byte
	verdictOrder []uint64
	// frozen is the freeze in force (its forwarded message and picture),
	// nil when live.
	frozen *freezeState
	// freezing is set while a freeze's frame is being decoded: a second
	// request meanwhile is refused, not queued.
	freezing bool
	// mics is each viewer's microphone state as its page last said;
	// speaking the viewers last announced as speaking.
	mics     map[string]string
	speaking []string
	// capturing is set while a key frame is being saved.
	capturing bool
	// marks are the marks on the pages now, for key frames.
	marks marksOnImage
}

// maxVerdicts bounds the verdicts kept for late joiners.
const maxVerdicts = 256

func (c *consultRelay) handle(v *stream.Viewer, b []byte) {
	w, h := c.ses.relay.FrameSize()
	m, err := parseConsult(b, w, h)
	if err != nil {
		c.mu.Lock()
		c.bad++
		n := c.bad
		c.mu.Unlock()
		if n == 1 || n%100 == 0 {
			c.ses.log.Warn("consult message refused", zap.String("viewer", v.ID()), zap.Uint64("refused", n), zap.Error(err))
		}
		return
	}
	now := time.Now()
	m.From = &consultFrom{Viewer: v.ID(), Role: v.Role(), Name: c.ses.viewerName(v.ID())}
	m.At = now.UnixMilli()
	switch m.Type {
	case "freeze":
		c.freeze(m)
		return
	case "unfreeze":
		c.unfreeze(m)
		return
	case "capture":
		c.capture(v, m)
		return
	case "voice":
		c.setMic(v.ID(), m.Mic)
		return
	}
	out, err := json.Marshal(m)
	if err != nil {
		return
	}
	c.ses.relay.Broadcast(v.ID(), out)
	switch m.Type {
	case "mark":
		c.mu.Lock()
		frozen := c.frozen != nil
		c.mu.Unlock()
		c.marks.add(v.ID(), m, out, frozen, now)
	case "clear":
		c.marks.clear(v.ID(), m.ID)
	}
	if m.Type == "verdict" {
		c.keepVerdict(*m.TrackID, out)
		go c.ses.noteVerdict(m)
		c.ses.log.Info("verdict", zap.String("viewer", v.ID()), zap.String("role", v.Role()), zap.Uint64("track", *m.TrackID),
			zap.String("verdict", m.Verdict), zap.String("category", m.Category))
	}
	if m.Type == "pointer" {
		c.mu.Lock()
		if c.pointerRec == nil {
			c.pointerRec = map[string]time.Time{}
		}
		last := c.pointerRec[v.ID()]
		keep := now.Sub(last) >= 100*time.Millisecond
		if keep {
			c.pointerRec[v.ID()] = now
		}
		c.mu.Unlock()
		if !keep {
			return
		}
	}
	c.ses.recordEvent("consult", map[string]string{"msg": string(out), "rtp_ts": strconv.FormatUint(uint64(m.RTPTS), 10)})
}

func (c *consultRelay) keepVerdict(track uint64, msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.verdicts == nil {
		c.verdicts = map[uint64][]byte{}
	}
	if _, ok := c.verdicts[track]; !ok {
		c.verdictOrder = append(c.verdictOrder, track)
		if len(c.verdictOrder) > maxVerdicts {
			delete(c.verdicts, c.verdictOrder[0])
			c.verdictOrder = c.verdictOrder[1:]
		}
	}
	c.verdicts[track] = msg
}

// opened sends a page whose consult channel just opened the state so far:
// the verdicts given and the freeze in force.
func (c *consultRelay) opened(v *stream.Viewer) {
	c.mu.Lock()
	msgs := make([][]byte, 0, len(c.verdictOrder)+1)
	for _, t := range c.verdictOrder {
		msgs = append(msgs, c.verdicts[t])
	}
	if c.frozen != nil {
		msgs = append(msgs, c.frozen.msg)
	}
	c.mu.Unlock()
	for _, m := range msgs {
		v.SendConsult(m)
	}
	c.presenceTo(v, c.people())
}

// people is who is connected now, with their microphones' state.
func (c *consultRelay) people() []consultFrom {
	var people []consultFrom
	c.mu.Lock()
	mics := maps.Clone(c.mics)
	c.mu.Unlock()
	for _, vs := range c.ses.relay.ViewerStats() {
		people = append(people, consultFrom{Viewer: vs.ID, Role: vs.Role, Name: c.ses.viewerName(vs.ID), Mic: mics[vs.ID]})
	}
	sort.Slice(people, func(i, j int) bool { return people[i].Viewer < people[j].Viewer })
	return people
}

// presence tells every page who is connected now (on each join and
// leave, a microphone's change, and to a page when its consult channel
// opens), each with whose voice its audio slots carry.
func (c *consultRelay) presence() {
	people := c.people()
	for _, v := range c.ses.relay.Viewers() {
		c.presenceTo(v, people)
	}
}

func (c *consultRelay) presenceTo(v *stream.Viewer, people []consultFrom) {
	b, err := json.Marshal(consultMsg{Type: "presence", People: people, Slots: v.VoiceSlots(),
		VoicesRecorded: c.ses.recordsVoices(), At: time.Now().UnixMilli()})
	if err == nil {
		v.SendConsult(b)
	}
}

// setMic keeps a page's microphone state and tells everyone.
func (c *consultRelay) setMic(id, mic string) {
	c.mu.Lock()
	if c.mics == nil {
		c.mics = map[string]string{}
	}
	same := c.mics[id] == mic
	c.mics[id] = mic
	c.mu.Unlock()
	if !same {
		c.presence()
	}
}

// watchSpeaking announces who speaks until ctx ends: often enough that the
// indicator follows a word, rarely enough to cost nothing.
func (c *consultRelay) watchSpeaking(ctx context.Context) {
	t := time.NewTicker(150 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.announceSpeaking()
		}
	}
}

// announceSpeaking tells every page who is speaking, when that changed
// since the last call. The session calls it a few times a second.
func (c *consultRelay) announceSpeaking() {
	var now []string
	for _, v := range c.ses.relay.Viewers() {
		if v.Speaking() {
			now = append(now, v.ID())
		}
	}
	sort.Strings(now)
	c.mu.Lock()
	changed := !slices.Equal(now, c.speaking)
	c.speaking = now
	c.mu.Unlock()
	if !changed {
		return
	}
	if now == nil {
		now = []string{}
	}
	b, err := json.Marshal(struct {
		Type     string   `json:"type"`
		Speaking []string `json:"speaking"`
		At       int64    `json:"at"`
	}{"speaking", now, time.Now().UnixMilli()})
	if err == nil {
		c.ses.relay.Broadcast("", b)
	}
}

// forget drops what is kept for a viewer that left.
func (c *consultRelay) forget(id string) {
	c.mu.Lock()
	delete(c.pointerRec, id)
	delete(c.mics, id)
	c.mu.Unlock()
}
