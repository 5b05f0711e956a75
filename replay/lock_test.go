package replay

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The scenario: `serve` records into a library while `run --record`
// opens the same library. The second opener used to "recover" serve's live
// recording (cutting it), and serve's own finish then found no segments and
// deleted the directory. Now the second process records beside the owner,
// and neither it nor a later owner touches a recording whose writer lives.
func TestSecondProcessNeverDamagesALiveRecording(t *testing.T) {
	dir := t.TempDir()
	serve, err := OpenLibrary(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !serve.Owner() {
		t.Fatal("first opener does not own the library")
	}
	live := newFeed(t, serve)
	live.feed(90) // 3 s recorded, still going

	run, err := OpenLibrary(dir, nil) // flock conflicts between two opens in one process too
	if err != nil {
		t.Fatal(err)
	}
	if run.Owner() {
		t.Fatal("second opener owns the library too")
	}
	m, err := run.Get(live.rec.ID())
	if err != nil || m.Status != "recording" {
		t.Fatalf("live recording after a second open: %+v, %v", m, err)
	}
	if m.DurationS < 1 || m.Bytes == 0 {
		t.Fatalf("a live recording in another process shows no progress: %+v", m)
	}
	// Neither delete nor retention may touch it, from either process.
	for name, lib := range map[string]*Library{"owner": serve, "guest": run} {
		if err := lib.Delete(live.rec.ID()); !errors.Is(err, ErrRecording) {
			t.Fatalf("%s: Delete of a live recording: %v", name, err)
		}
	}
	if removed, err := serve.Enforce(0, 1); err != nil || len(removed) != 0 {
		t.Fatalf("retention removed %v (%v) while everything is live", removed, err)
	}
	// The second process records its own case and finishes it.
	caseRec := newFeed(t, run)
	caseRec.feed(60)
	caseMeta := caseRec.close()
	if caseMeta.Status != "complete" || caseMeta.Frames != 60 {
		t.Fatalf("case recorded beside the owner: %+v", caseMeta)
	}
	run.Close()

	// serve goes on and stops: its recording has every frame.
	live.feed(90)
	m = live.close()
	if m.Status != "complete" || m.Frames != 180 || m.DurationS < 5.95 || m.DurationS > 6.05 {
		t.Fatalf("live recording at its end: %+v", m)
	}
	serve.Close()

	// A restarted server lists both, whole.
	again, err := OpenLibrary(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	list, err := again.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("after restart: %+v, %v", list, err)
	}
	for _, m := range list {
		if m.Status != "complete" {
			t.Fatalf("after restart: %+v", m)
		}
		video, _ := again.File(m.ID, "video.mp4")
		if _, frames := ffprobe(t, video); frames != m.Frames {
			t.Fatalf("%s: ffprobe %d frames, meta %d", m.ID, frames, m.Frames)
		}
	}
}

// A guest's live recording survives the owner stopping and a new owner's
// recovery pass: recovery only finishes recordings whose writer died.
func TestNewOwnerLeavesGuestsRecordingAlone(t *testing.T) {
	dir := t.TempDir()
	owner, err := OpenLibrary(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	guest, err := OpenLibrary(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	fd := newFeed(t, guest)
	fd.feed(60)
	owner.Close()
	next, err := OpenLibrary(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if !next.Owner() {
		t.Fatal("the lock did not pass to the next opener")
	}
	if m, err := next.Get(fd.rec.ID()); err != nil || m.Status != "recording" {
		t.Fatalf("guest's recording after the new owner's recovery: %+v %v", m, err)
	}
	fd.feed(30)
	if m := fd.close(); m.Frames != 90 {
		t.Fatalf("guest's recording: %+v", m)
	}
}

// Recordings hold patient images: no file or directory is readable by
// other local users.
func TestLibraryFilesArePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lib")
	lib, err := OpenLibrary(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	_, m := record(t, lib, 45, true)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s is %v: readable by others", p, fi.Mode().Perm())
		}
		return nil
	})
	if m.Frames != 45 {
		t.Fatalf("%+v", m)
	}
}

func TestSourceIDKeepsConfiguredIDs(t *testing.T) {
	for in, want := range map[string]string{"cart-": "cart-", "cart": "cart", "a_b-c": "a_b-c", "file:Clip.MP4": "file-clip-mp4", "--": "source"} {
		if got := SourceID(in); got != want {
			t.Errorf("SourceID(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Source("20261123T170102Z-cart--abcd"); got != "cart-" {
		t.Errorf("Source of a cart- recording = %q", got)
	}
}

// Events racing Close used to send on a closed channel (a panic that
// kills the process); now they are dropped once Close has begun.
func TestEventsRacingClose(t *testing.T) {
	lib, err := OpenLibrary(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	fd := newFeed(t, lib)
	fd.feed(35)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				fd.rec.Event("viewer_joined", map[string]string{"viewer": "v1"})
			}
		}
	}()
	fd.close()
	close(stop)
	<-done
}
