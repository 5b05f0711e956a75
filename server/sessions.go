package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Errors the source API answers with.
var (
	errSourceExists = errors.New("a source with this id exists")
	errShuttingDown = errors.New("the server is shutting down")
)

// sessionSet holds the live sessions, in the order they were added, and
// runs them: the configured ones when the server starts, others as they
// are added while it serves. A removed session is stopped and its viewers
// closed before Remove returns.
type sessionSet struct {
	mu    sync.RWMutex
	byID  map[string]*Session
	order []string
	// ctx is the server's run context once Run has started (nil before):
	// a session added then starts at once.
	ctx context.Context
	wg  sync.WaitGroup
}

func newSessionSet() *sessionSet { return &sessionSet{byID: map[string]*Session{}} }

// get returns the session with id.
func (ss *sessionSet) get(id string) (*Session, bool) {
	ss.mu.RLock()
	defer ss.mu.RUnlock()
	ses, ok := ss.byID[id]
	return ses, ok
}

// list returns the sessions in order.
func (ss *sessionSet) list() []*Session {
	ss.mu.RLock()
	defer ss.mu.RUnlock()
	out := make([]*Session, 0, len(ss.order))
	for _, id := range ss.order {
		out = append(out, ss.byID[id])
	}
	return out
}

// add registers ses and, once the set runs, starts it.
func (ss *sessionSet) add(ses *Session) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, ok := ss.byID[ses.id]; ok {
		return fmt.Errorf("%w: %q", errSourceExists, ses.id)
	}
	if ss.ctx != nil && ss.ctx.Err() != nil {
		return errShuttingDown
	}
	ss.byID[ses.id] = ses
	ss.order = append(ss.order, ses.id)
	if ss.ctx != nil {
		ss.start(ses)
	}
	return nil
}

// run starts every session and any added later, until ctx ends.
func (ss *sessionSet) run(ctx context.Context) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.ctx = ctx
	for _, id := range ss.order {
		ss.start(ss.byID[id])
	}
}

// start runs ses on its own context, a child of the set's. ss.mu is held.
func (ss *sessionSet) start(ses *Session) {
	ctx, cancel := context.WithCancel(ss.ctx)
	ses.stop, ses.done = cancel, make(chan struct{})
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		defer close(ses.done)
		ses.run(ctx)
	}()
}

// remove takes the session out and stops it: its pipeline and recording
// end, then its viewers are closed. It returns false for an unknown id.
func (ss *sessionSet) remove(id string) (*Session, bool) {
	ss.mu.Lock()
	ses, ok := ss.byID[id]
	if ok {
		delete(ss.byID, id)
		for i, o := range ss.order {
			if o == id {
				ss.order = append(ss.order[:i], ss.order[i+1:]...)
				break
			}
		}
	}
	ss.mu.Unlock()
	if !ok {
		return nil, false
	}
	if ses.stop != nil {
		ses.stop()
		<-ses.done
	}
	ses.close()
	return ses, true
}

// wait blocks until every session started has stopped (after the run
// context ends).
func (ss *sessionSet) wait() { ss.wg.Wait() }
