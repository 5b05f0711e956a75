// Package audit is the append-only access log a hospital's privacy officer
// asks for: who was given a link, who joined and left with which role and
// from where, which recordings were viewed, downloaded or deleted. Each line
// is JSON carrying the hash of the line before it, so a removed, reordered
// or edited line breaks the chain and `sonolive audit verify` names it.
// Token ids are logged, never tokens.
//
// The chain proves the log's order and integrity up to its last line; to
// catch the removal of lines at the end, keep the head hash elsewhere too
// (the server logs it at every start and stop).
package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Event is one audited action.
type Event struct {
	Time    time.Time         `json:"time"`
	Action  string            `json:"action"` // invite_issued, invite_revoked, viewer_joined, ...
	Source  string            `json:"source,omitempty"`
	Role    string            `json:"role,omitempty"`
	TokenID string            `json:"token_id,omitempty"`
	Addr    string            `json:"addr,omitempty"`
	Subject string            `json:"subject,omitempty"` // a viewer, recording or invite id
	Detail  map[string]string `json:"detail,omitempty"`
}

// line is what is written: the event, its place and the chain.
type line struct {
	Seq   uint64 `json:"seq"`
	Prev  string `json:"prev"`
	Event Event  `json:"event"`
	Hash  string `json:"hash"`
}

// genesis is the prev of the first line.
var genesis = hex.EncodeToString(make([]byte, sha256.Size))

// hashOf is the line's hash: SHA-256 over its JSON without the hash field.
func hashOf(l line) (string, error) {
	l.Hash = ""
	b, err := json.Marshal(l)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// ErrBroken: the chain does not verify.
var ErrBroken = errors.New("audit log chain broken")

// Log appends events from any goroutine without blocking it: a bounded
// queue feeds one writer that fsyncs every line.
type Log struct {
	f       *os.File
	log     *zap.Logger
	q       chan Event
	done    chan struct{}
	dropped atomic.Uint64

	closeMu sync.RWMutex
	closed  bool

	// writer goroutine state
	seq  uint64
	head string
}

// Open opens (creating) the log at path for appending. A torn last line (a
// crash mid-write) is cut off, and the cut is itself logged.
func Open(path string, log *zap.Logger) (*Log, error) {
	if log == nil {
		log = zap.NewNop()
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	n, head, good, err := scan(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit %s: %w", path, err)
	}
	l := &Log{f: f, log: log, q: make(chan Event, 1024), done: make(chan struct{}), seq: n, head: head}
	end, _ := f.Seek(0, io.SeekEnd)
	if good < end {
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, fmt.Errorf("audit: %w", err)
		}
		l.write(Event{Time: time.Now().UTC(), Action: "audit_torn_line_removed", Detail: map[string]string{"bytes": fmt.Sprint(end - good)}})
	}
	log.Info("audit log open", zap.String("path", path), zap.Uint64("entries", l.seq), zap.String("head", l.head))
	go l.run()
	return l, nil
}

// scan verifies r from the start and returns the entries, the head hash
// and the offset after the last complete line. A chain error is returned;
// a torn last line is not (good stops before it).
func scan(r io.ReadSeeker) (n uint64, head string, good int64, err error) {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return 0, "", 0, err
	}
	head = genesis
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, rerr := br.ReadBytes('\n')
		if len(b) > 0 && b[len(b)-1] == '\n' {
			var l line
			if err := json.Unmarshal(bytes.TrimSpace(b), &l); err != nil {
				return n, head, good, fmt.Errorf("%w: line %d: %v", ErrBroken, n+1, err)
			}
			want, err := hashOf(l)
			if err != nil {
				return n, head, good, err
			}
			switch {
			case l.Seq != n+1:
				return n, head, good, fmt.Errorf("%w: line %d has seq %d", ErrBroken, n+1, l.Seq)
			case l.Prev != head:
				return n, head, good, fmt.Errorf("%w: line %d does not follow line %d (a line removed or reordered)", ErrBroken, n+1, n)
			case l.Hash != want:
				return n, head, good, fmt.Errorf("%w: line %d was edited (hash mismatch)", ErrBroken, n+1)
			}
			n, head = l.Seq, l.Hash
			good += int64(len(b))
		}
		if rerr == io.EOF {
			return n, head, good, nil
		}
		if rerr != nil {
			return n, head, good, rerr
		}
	}
}

// Verify checks the log at path: the number of entries and the head hash,
// or which line breaks the chain. A torn last line is reported too.
func Verify(path string) (entries uint64, head string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	n, head, good, err := scan(f)
	if err != nil {
		return n, head, err
	}
	if end, _ := f.Seek(0, io.SeekEnd); end > good {
		return n, head, fmt.Errorf("%w: %d bytes after line %d are not a complete line", ErrBroken, end-good, n)
	}
	return n, head, nil
}

// Log queues e. It never blocks: should the disk stall long enough to fill
// the queue, the event is counted as dropped and logged as an error.
func (l *Log) Log(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return
	}
	select {
	case l.q <- e:
	default:
		l.dropped.Add(1)
		l.log.Error("audit queue full; event lost", zap.String("action", e.Action), zap.String("token_id", e.TokenID))
	}
}

func (l *Log) run() {
	defer close(l.done)
	for e := range l.q {
		l.write(e)
	}
}

func (l *Log) write(e Event) {
	ln := line{Seq: l.seq + 1, Prev: l.head, Event: e}
	h, err := hashOf(ln)
	if err != nil {
		l.log.Error("audit event", zap.Error(err))
		return
	}
	ln.Hash = h
	b, _ := json.Marshal(ln)
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		l.log.Error("audit write failed", zap.String("action", e.Action), zap.Error(err))
		return
	}
	if err := l.f.Sync(); err != nil {
		l.log.Error("audit fsync failed", zap.Error(err))
	}
	l.seq, l.head = ln.Seq, ln.Hash
}

// Dropped counts events lost to a full queue.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Close writes what is queued and closes the file; it returns the head.
func (l *Log) Close() (string, error) {
	if l == nil {
		return "", nil
	}
	l.closeMu.Lock()
	if !l.closed {
		l.closed = true
		close(l.q)
	}
	l.closeMu.Unlock()
	<-l.done
	l.log.Info("audit log closed", zap.Uint64("entries", l.seq), zap.String("head", l.head))
	return l.head, l.f.Close()
}
