package server

import (
	"encoding/json"
	"sync"
	"time"

	"sonolive/overlay"
)

// marksOnImage are the consult marks now on the pages' picture, so a key
// frame carries what the people were pointing at. A mark lives as long as
// the pages show it: until its sender clears it, until markLife after it
// was drawn on the live picture (the pages fade it then), or, drawn during
// a freeze, until the unfreeze.
type marksOnImage struct {
	mu    sync.Mutex
	marks []markOnImage // oldest first, at most maxMarksOnImage
}

type markOnImage struct {
	viewer, id string
	msg        json.RawMessage // as forwarded
	mark       overlay.Mark
	at         time.Time
	frozen     bool // drawn on a frozen picture
}

const (
	markLife        = 20 * time.Second
	maxMarksOnImage = 64
)

// add keeps a forwarded mark; a mark with the same sender and id replaces
// it (the pages do the same).
func (k *marksOnImage) add(viewer string, m consultMsg, msg []byte, frozen bool, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.drop(func(o markOnImage) bool { return o.viewer == viewer && o.id == m.ID })
	role := ""
	if m.From != nil {
		role = m.From.Role
	}
	k.marks = append(k.marks, markOnImage{viewer: viewer, id: m.ID, msg: append(json.RawMessage(nil), msg...),
		mark: overlay.Mark{Shape: m.Shape, Points: m.Points, Role: role}, at: now, frozen: frozen})
	if len(k.marks) > maxMarksOnImage {
		k.marks = k.marks[len(k.marks)-maxMarksOnImage:]
	}
}

// clear removes one of the sender's marks, or all of them (id "").
func (k *marksOnImage) clear(viewer, id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.drop(func(o markOnImage) bool { return o.viewer == viewer && (id == "" || o.id == id) })
}

// unfreeze removes the marks drawn on the frozen picture, with it.
func (k *marksOnImage) unfreeze() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.drop(func(o markOnImage) bool { return o.frozen })
}

// now is the marks on the pages at t: those drawn on a frozen picture and
// the live ones not yet faded, oldest first.
func (k *marksOnImage) now(t time.Time) []markOnImage {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.drop(func(o markOnImage) bool { return !o.frozen && t.Sub(o.at) > markLife })
	return append([]markOnImage(nil), k.marks...)
}

func (k *marksOnImage) drop(gone func(markOnImage) bool) {
	kept := k.marks[:0]
	for _, o := range k.marks {
		if !gone(o) {
			kept = append(kept, o)
		}
	}
	clear(k.marks[len(kept):])
	k.marks = kept
}
