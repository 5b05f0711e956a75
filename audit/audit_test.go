package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeLog(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		l.Log(Event{Action: "viewer_joined", Source: "phantom", Role: "expert", TokenID: "abc123", Subject: "v1"})
	}
	if _, err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVerifyCatchesTampering(t *testing.T) {
	path := writeLog(t, 5)
	if n, _, err := Verify(path); err != nil || n != 5 {
		t.Fatalf("untouched log: %d entries, %v", n, err)
	}
	orig, _ := os.ReadFile(path)
	lines := bytes.SplitAfter(orig, []byte("\n"))
	lines = lines[:len(lines)-1] // the empty tail after the last \n
	for _, tc := range []struct {
		name string
		edit func() []byte
		want string
	}{
		{"line removed", func() []byte { return bytes.Join(append(append([][]byte{}, lines[:2]...), lines[3:]...), nil) }, "line 3"},
		{"lines swapped", func() []byte {
			l := append([][]byte{}, lines...)
			l[1], l[2] = l[2], l[1]
			return bytes.Join(l, nil)
		}, "line 2"},
		{"role edited", func() []byte {
			l := append([][]byte{}, lines...)
			l[3] = bytes.Replace(l[3], []byte(`"role":"expert"`), []byte(`"role":"sonographer"`), 1)
			return bytes.Join(l, nil)
		}, "line 4 was edited"},
		{"first line removed", func() []byte { return bytes.Join(lines[1:], nil) }, "line 1"},
		{"garbage", func() []byte { return append(append([]byte{}, orig...), []byte("{not json}\n")...) }, "line 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "a.jsonl")
			os.WriteFile(p, tc.edit(), 0o600)
			_, _, err := Verify(p)
			if !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBroken naming %q", err, tc.want)
			}
			// A server must not start appending to a broken chain.
			if l, err := Open(p, nil); err == nil {
				l.Close()
				t.Fatal("Open accepted a broken log")
			}
		})
	}
}

// A crash mid-write leaves a torn last line: the next open cuts it, logs
// the cut, and the chain goes on verifying.
func TestTornLastLineIsCutAndNoted(t *testing.T) {
	path := writeLog(t, 3)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":4,"prev":"ab`)
	f.Close()
	if _, _, err := Verify(path); !errors.Is(err, ErrBroken) {
		t.Fatalf("torn line not reported: %v", err)
	}
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Event{Action: "invite_issued"})
	l.Close()
	n, _, err := Verify(path)
	if err != nil || n != 5 {
		t.Fatalf("after repair: %d entries, %v", n, err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "audit_torn_line_removed") {
		t.Fatal("the cut is not in the log")
	}
}

// Reopening continues the chain.
func TestReopenAppends(t *testing.T) {
	path := writeLog(t, 2)
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Event{Action: "recording_deleted", Subject: "x"})
	head, _ := l.Close()
	n, h, err := Verify(path)
	if err != nil || n != 3 || h != head {
		t.Fatalf("%d entries, head %s (Close said %s), %v", n, h, head, err)
	}
}
