package replay

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Two processes may open one library: `serve` records into it while
// `run --record` turns a clip into a case. Advisory locks (flock) keep them
// from hurting each other's work:
//
//   - the library lock (.library.lock) makes one process the owner; only
//     the owner recovers crashed recordings and enforces retention;
//   - every recording holds its own writer lock (.writer.lock in its
//     directory) from creation until it is finished, so recovery, deletion
//     and retention leave alone any recording whose writer is still alive,
//     whichever process it is in.
//
// flock locks belong to the open file, so they conflict between two opens
// in one process too, and the kernel drops them when a process dies: a
// crashed writer's recording becomes recoverable at once.

// ErrLocked: the lock is held by a live writer or owner.
var ErrLocked = errors.New("locked by another writer")

const (
	libraryLock = ".library.lock"
	writerLock  = ".writer.lock"
)

// fileLock is one held flock.
type fileLock struct{ f *os.File }

// tryLock takes an exclusive lock on path without waiting, creating the
// file. It writes our pid into it so the holder can be named in messages.
func tryLock(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &fileLock{f: f}, nil
}

// holder is the pid written in a lock file, for messages ("" if unknown).
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// release drops the lock. The file stays: removing it would race with a
// process that has just opened it and is about to lock it.
func (l *fileLock) release() {
	if l == nil || l.f == nil {
		return
	}
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
	l.f = nil
}
