package exam

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"sonolive/internal/durable"
)

// Store keeps exams on disk, one directory each:
//
//	<id>/exam.json                 the exam (rewritten whole on each change)
//	<id>/finding-NNN.json          a finding; written after its pictures
//	<id>/finding-NNN.jpg           its key image as the machine showed it
//	<id>/finding-NNN-annotated.jpg the same with the box and size drawn
//
// Every file is replaced atomically and fsynced, so after a crash each
// finding is whole (its last saved key image) or absent, and an exam open
// at the crash is open again at the next start.
type Store struct {
	dir string
	mu  sync.Mutex
}

// fileMode: exams hold patient images, for the service's user only.
const fileMode = 0o640

// maxFindings bounds one exam (a stuck capture button must not fill the
// disk).
const maxFindings = 200

// ErrDeleted: the finding was deleted by the sonographer; its track is
// not picked again.
var ErrDeleted = errors.New("the finding was deleted")

// OpenStore opens (creating) the exam directory.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("exams: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Dir is where the exams are.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(id, file string) (string, error) {
	if !ValidID(id) {
		return "", ErrNotFound
	}
	return filepath.Join(s.dir, id, file), nil
}

func newID(source string, at time.Time) string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return at.UTC().Format("20060102T150405Z") + "-" + source + "-" + hex.EncodeToString(b[:])
}

// Model is the detector an exam runs.
type Model struct {
	Name, Version string
	Calibrated    bool
}

// Create starts an exam on source. It fails with ErrOpen while the source
// has an open exam.
func (s *Store) Create(source string, st Start, m Model, at time.Time) (Exam, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all, err := s.list()
	if err != nil {
		return Exam{}, err
	}
	for _, e := range all {
		if e.Source == source && e.Open() {
			return e, ErrOpen
		}
	}
	e := Exam{ID: newID(source, at), Source: source, Organ: st.Organ, Side: st.Side, Label: st.Label,
		Accession: st.Accession, Share: st.Share, Model: m.Name, ModelVersion: m.Version, ModelCalibrated: m.Calibrated,
		Started: at.UTC(), Recordings: []string{}}
	if !ValidID(e.ID) {
		return Exam{}, fmt.Errorf("%w: source id %q", ErrBad, source)
	}
	if err := os.Mkdir(filepath.Join(s.dir, e.ID), 0o750); err != nil {
		return Exam{}, fmt.Errorf("exams: %w", err)
	}
	return e, s.write(e)
}

func (s *Store) write(e Exam) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	p, err := s.path(e.ID, "exam.json")
	if err != nil {
		return err
	}
	if err := durable.WriteFile(p, append(b, '\n'), fileMode); err != nil {
		return fmt.Errorf("exams: %w", err)
	}
	return nil
}

// Get reads one exam.
func (s *Store) Get(id string) (Exam, error) {
	p, err := s.path(id, "exam.json")
	if err != nil {
		return Exam{}, err
	}
	return readExam(p)
}

func readExam(path string) (Exam, error) {
	var e Exam
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return e, ErrNotFound
	}
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%s: %w", path, err)
	}
	if e.Recordings == nil {
		e.Recordings = []string{}
	}
	return e, nil
}

// List is every exam, newest first.
func (s *Store) List() ([]Exam, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.list()
}

func (s *Store) list() ([]Exam, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("exams: %w", err)
	}
	out := []Exam{}
	for _, d := range ents {
		if !d.IsDir() || !ValidID(d.Name()) {
			continue
		}
		e, err := readExam(filepath.Join(s.dir, d.Name(), "exam.json"))
		if err != nil {
			continue // a directory whose exam.json never landed
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.After(out[j].Started) })
	return out, nil
}

// Current is source's open exam.
func (s *Store) Current(source string) (Exam, bool) {
	all, err := s.List()
	if err != nil {
		return Exam{}, false
	}
	for _, e := range all {
		if e.Source == source && e.Open() {
			return e, true
		}
	}
	return Exam{}, false
}

// Update changes an exam under the store's lock. change may refuse by
// returning an error; open says whether the exam must still be open.
func (s *Store) Update(id string, open bool, change func(*Exam) error) (Exam, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.Get(id)
	if err != nil {
		return e, err
	}
	if open && !e.Open() {
		return e, ErrEnded
	}
	if err := change(&e); err != nil {
		return e, err
	}
	return e, s.write(e)
}

// End ends an open exam.
func (s *Store) End(id string, at time.Time) (Exam, error) {
	return s.Update(id, true, func(e *Exam) error {
		t := at.UTC()
		e.Ended = &t
		return nil
	})
}

// AddRecording notes a library recording made during the exam.
func (s *Store) AddRecording(id, rec string) error {
	_, err := s.Update(id, false, func(e *Exam) error {
		for _, r := range e.Recordings {
			if r == rec {
				return nil
			}
		}
		e.Recordings = append(e.Recordings, rec)
		return nil
	})
	return err
}

var findingRE = regexp.MustCompile(`^finding-([0-9]{3})\.json$`)

func findingFile(n int, ext string) string { return fmt.Sprintf("finding-%03d%s", n, ext) }

// storedFinding is a finding's file: a deleted one keeps a tombstone so
// its tracks are not picked again.
type storedFinding struct {
	Finding
	Deleted bool `json:"deleted,omitempty"`
}

// SaveFinding writes a finding with its key image (picture: JPEG as the
// machine showed it; annotated: with the box drawn). N 0 adds a new
// finding; otherwise the finding N is replaced (a better key image). The
// pictures land before the finding's file, so a crash leaves the previous
// state or the new one.
func (s *Store) SaveFinding(id string, f Finding, picture, annotated []byte) (Finding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.Get(id)
	if err != nil {
		return f, err
	}
	if !e.Open() {
		return f, ErrEnded
	}
	all, err := s.findings(id, true)
	if err != nil {
		return f, err
	}
	if f.N == 0 {
		if len(all) >= maxFindings {
			return f, fmt.Errorf("%w: this exam has %d findings already", ErrBad, maxFindings)
		}
		f.N = 1
		for _, o := range all {
			f.N = max(f.N, o.N+1)
		}
	} else {
		found := false
		for _, o := range all {
			if o.N == f.N {
				if o.Deleted {
					return f, ErrDeleted
				}
				found = true
				// Keep what people set on it.
				f.Location, f.Verdict = o.Location, o.Verdict
			}
		}
		if !found {
			return f, fmt.Errorf("%w: finding %d", ErrNotFound, f.N)
		}
	}
	f.Updated = time.Now().UTC()
	dir := filepath.Join(s.dir, id)
	if err := durable.WriteFile(filepath.Join(dir, findingFile(f.N, ".jpg")), picture, fileMode); err != nil {
		return f, fmt.Errorf("exams: %w", err)
	}
	if err := durable.WriteFile(filepath.Join(dir, findingFile(f.N, "-annotated.jpg")), annotated, fileMode); err != nil {
		return f, fmt.Errorf("exams: %w", err)
	}
	return f, s.writeFinding(id, storedFinding{Finding: f})
}

func (s *Store) writeFinding(id string, f storedFinding) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.WriteFile(filepath.Join(s.dir, id, findingFile(f.N, ".json")), append(b, '\n'), fileMode); err != nil {
		return fmt.Errorf("exams: %w", err)
	}
	return nil
}

// Findings lists an exam's findings in order (deleted ones left out).
func (s *Store) Findings(id string) ([]Finding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all, err := s.findings(id, false)
	if err != nil {
		return nil, err
	}
	out := make([]Finding, len(all))
	for i, f := range all {
		out[i] = f.Finding
	}
	return out, nil
}

func (s *Store) findings(id string, deleted bool) ([]storedFinding, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	dir := filepath.Join(s.dir, id)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := []storedFinding{}
	for _, d := range ents {
		m := findingRE.FindStringSubmatch(d.Name())
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		b, err := os.ReadFile(filepath.Join(dir, d.Name()))
		if err != nil {
			continue
		}
		var f storedFinding
		if json.Unmarshal(b, &f) != nil || f.N != n {
			continue
		}
		if f.Deleted && !deleted {
			continue
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].N < out[j].N })
	return out, nil
}

// Finding reads one finding.
func (s *Store) Finding(id string, n int) (Finding, error) {
	fs, err := s.Findings(id)
	if err != nil {
		return Finding{}, err
	}
	for _, f := range fs {
		if f.N == n {
			return f, nil
		}
	}
	return Finding{}, fmt.Errorf("%w: finding %d", ErrNotFound, n)
}

// changeFinding rewrites finding n of an open exam.
func (s *Store) changeFinding(id string, n int, change func(*storedFinding)) (Finding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.Get(id)
	if err != nil {
		return Finding{}, err
	}
	if !e.Open() {
		return Finding{}, ErrEnded
	}
	all, err := s.findings(id, false)
	if err != nil {
		return Finding{}, err
	}
	for _, f := range all {
		if f.N == n {
			change(&f)
			return f.Finding, s.writeFinding(id, f)
		}
	}
	return Finding{}, fmt.Errorf("%w: finding %d", ErrNotFound, n)
}

// DeleteFinding removes a finding and its pictures; a tombstone stays so
// the picker does not bring its lesion back from the same track.
func (s *Store) DeleteFinding(id string, n int) error {
	_, err := s.changeFinding(id, n, func(f *storedFinding) { f.Deleted = true })
	if err != nil {
		return err
	}
	dir := filepath.Join(s.dir, id)
	for _, ext := range []string{".jpg", "-annotated.jpg"} {
		if err := os.Remove(filepath.Join(dir, findingFile(n, ext))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("exams: %w", err)
		}
	}
	return nil
}

// SetLocation notes where a finding is.
func (s *Store) SetLocation(id string, n int, l Location) (Finding, error) {
	if err := l.Check(); err != nil {
		return Finding{}, err
	}
	return s.changeFinding(id, n, func(f *storedFinding) { f.Location = l })
}

// SetVerdict gives every finding that gathers track the expert's verdict;
// it reports whether one did.
func (s *Store) SetVerdict(id string, track uint64, v Verdict) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.Get(id)
	if err != nil {
		return false, err
	}
	if !e.Open() {
		return false, ErrEnded
	}
	all, err := s.findings(id, false)
	if err != nil {
		return false, err
	}
	hit := false
	for _, f := range all {
		for _, t := range f.Tracks {
			if t == track {
				f.Verdict = &v
				if err := s.writeFinding(id, f); err != nil {
					return hit, err
				}
				hit = true
				break
			}
		}
	}
	return hit, nil
}

// Picture is the path of a finding's key image.
func (s *Store) Picture(id string, n int, annotated bool) (string, error) {
	if _, err := s.Finding(id, n); err != nil {
		return "", err
	}
	ext := ".jpg"
	if annotated {
		ext = "-annotated.jpg"
	}
	return s.path(id, findingFile(n, ext))
}
