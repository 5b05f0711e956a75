package replay

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Recover finishes what recovery finds now: recordings whose writer died,
// or whose own finish failed (a full disk) and whose lock is free again.
// Only the owner recovers; the server calls it with retention.
func (l *Library) Recover() error {
	if !l.Owner() {
		return nil
	}
	return l.recoverAll()
}

// recoverAll finishes the recordings whose writer died: those marked
// "recording" whose writer lock is free. A recording another process is
// writing keeps its lock and is left alone. Staging directories a crash
// left behind are removed.
func (l *Library) recoverAll() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(l.dir, e.Name())
		if strings.HasPrefix(e.Name(), stagingPrefix) {
			if lock, err := tryLock(filepath.Join(dir, writerLock)); err == nil {
				os.RemoveAll(dir)
				lock.release()
			}
			continue
		}
		if !idRE.MatchString(e.Name()) {
			continue
		}
		m, err := readMeta(filepath.Join(dir, "meta.json"))
		if err == nil && m.Status != "recording" {
			continue
		}
		l.recoverOne(dir, e.Name(), m, err)
	}
	return nil
}

func (l *Library) recoverOne(dir, id string, m Meta, metaErr error) {
	l.mu.Lock()
	_, ours := l.active[id]
	l.mu.Unlock()
	if ours {
		return // being written by this process
	}
	lock, err := tryLock(filepath.Join(dir, writerLock))
	if errors.Is(err, ErrLocked) {
		l.log.Info("recording in progress in another process; left alone", zap.String("recording", id),
			zap.String("writer_pid", holder(filepath.Join(dir, writerLock))))
		return
	}
	if err != nil {
		l.log.Error("recovering recording", zap.String("recording", id), zap.Error(err))
		return
	}
	defer lock.release()
	if metaErr != nil {
		m = Meta{}
	}
	m.ID = id
	rm, err := finish(dir, m, "recovered", l.log)
	if errors.Is(err, errEmpty) {
		if _, serr := os.Stat(filepath.Join(dir, "video.mp4")); serr == nil {
			l.log.Error("recording has a video but no meta; left for a person to look at", zap.String("recording", id))
			return
		}
		l.log.Warn("unfinished recording had no complete segment; removed", zap.String("recording", id))
		os.RemoveAll(dir)
		return
	}
	if err != nil {
		l.log.Error("recovering recording", zap.String("recording", id), zap.Error(err))
		return
	}
	l.log.Info("recording recovered", zap.String("recording", rm.ID), zap.Float64("duration_s", rm.DurationS))
}

var errEmpty = errors.New("no complete segment")

// maxSidxEntries is what sidx's 16-bit reference_count holds.
const maxSidxEntries = 1<<16 - 1

// finish assembles video.mp4 from init.mp4 and the finished segments,
// cuts the timeline at the video's end, computes the lesion events and
// writes meta.json. It is the end of a recording and of a recovery.
func finish(dir string, base Meta, status string, log *zap.Logger) (Meta, error) {
	m := Meta{ID: base.ID, Source: base.Source, Status: status, Start: base.Start, Model: base.Model,
		Part: base.Part, Previous: base.Previous, Exam: base.Exam, LesionEvents: []LesionEvent{}}
	tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	for _, t := range tmps {
		os.Remove(t)
	}
	segs, err := readSegments(filepath.Join(dir, "segments.jsonl"))
	if err != nil {
		return m, err
	}
	// Only segments whose file made it to disk count, each once, in
	// order, with the size on disk (the index may be torn or damaged).
	var ok []segmentLine
	seen := map[int]bool{}
	for _, s := range segs {
		if s.N <= 0 || seen[s.N] || s.Duration == 0 || (len(ok) > 0 && s.N < ok[len(ok)-1].N) {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, fmt.Sprintf("seg-%05d.m4s", s.N)))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 || fi.Size() > 1<<31-1 {
			continue
		}
		seen[s.N] = true
		s.Bytes = int(fi.Size())
		ok = append(ok, s)
	}
	initPath := filepath.Join(dir, "init.mp4")
	// Segments and their index go only after meta.json is final, so an
	// interrupted finish is simply redone.
	if len(ok) == 0 {
		return m, errEmpty
	}
	if err := assemble(dir, initPath, ok); err != nil {
		return m, err
	}
	var dur uint64
	for _, s := range ok {
		dur += uint64(s.Duration)
	}
	m.DurationS = math.Round(float64(dur)/timescale*1e3) / 1e3
	t0 := time.Now()
	if n, err := mixVoices(dir, m.DurationS); err != nil {
		log.Warn("the voices are not in the video", zap.String("recording", m.ID), zap.Error(err))
	} else if n > 0 {
		m.Voices = n
		log.Info("voices mixed into the video", zap.String("recording", m.ID), zap.Int("voices", n),
			zap.Float64("duration_s", m.DurationS), zap.Duration("took", time.Since(t0)))
	}
	if err := cutTimeline(filepath.Join(dir, "timeline.jsonl"), m.DurationS, &m); err != nil {
		return m, err
	}
	if fi, err := os.Stat(filepath.Join(dir, "video.mp4")); err == nil {
		m.Bytes = fi.Size()
	}
	if w, h, err := videoSize(initPath); err == nil {
		m.Width, m.Height = w, h
	}
	m.Captures = countCaptures(dir)
	if m.Start.IsZero() {
		if fi, err := os.Stat(dir); err == nil {
			m.Start = fi.ModTime().UTC()
		}
	}
	if err := writeMeta(dir, m); err != nil {
		return m, err
	}
	for _, s := range ok {
		os.Remove(filepath.Join(dir, fmt.Sprintf("seg-%05d.m4s", s.N)))
	}
	os.Remove(filepath.Join(dir, "segments.jsonl"))
	return m, nil
}

// assemble writes video.mp4 = init (with the duration) + sidx + fragments.
func assemble(dir, initPath string, segs []segmentLine) error {
	initB, err := os.ReadFile(initPath)
	if err != nil {
		return fmt.Errorf("init segment: %w", err)
	}
	info, err := parseInit(initB)
	if err != nil {
		return err
	}
	var total uint64
	entries := make([]sidxEntry, len(segs))
	for i, s := range segs {
		entries[i] = sidxEntry{size: uint32(s.Bytes), duration: s.Duration, sap: s.Key}
		total += uint64(s.Duration)
	}
	info.duration = total
	initB, err = initSegment(info)
	if err != nil {
		return err
	}
	return writeSync(filepath.Join(dir, "video.mp4"), func(w io.Writer) error {
		if _, err := w.Write(initB); err != nil {
			return err
		}
		// sidx counts its references in 16 bits: a longer recording (parts
		// keep them far shorter, see Series) goes without the index,
		// which players only use to seek faster, rather than wrap.
		if len(entries) <= maxSidxEntries {
			if _, err := w.Write(sidx(entries)); err != nil {
				return err
			}
		}
		for _, s := range segs {
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("seg-%05d.m4s", s.N)))
			if err != nil {
				return err
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
}

func readSegments(path string) ([]segmentLine, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseSegments(f)
}

// parseSegments reads segments.jsonl up to its first torn or bad line.
func parseSegments(r io.Reader) ([]segmentLine, error) {
	var out []segmentLine
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var s segmentLine
		if json.Unmarshal(sc.Bytes(), &s) != nil {
			break // a torn last line
		}
		out = append(out, s)
	}
	return out, nil
}

// cutTimeline keeps the entries inside the video, rewrites the file when
// it held more (a crash), and fills m's counts and lesion events. Memory
// stays bounded whatever the timeline's length: one pass counts and finds
// whether a cut is needed, a second (only then) streams the kept lines
// into the replacement.
func cutTimeline(path string, durationS float64, m *Meta) error {
	events := map[uint64]*LesionEvent{}
	cut := false
	err := scanTimeline(path, durationS, func(_ []byte, e *Entry) error {
		if e == nil {
			cut = true
			return nil
		}
		if e.Event != "" {
			return nil
		}
		m.Frames++
		m.Detections += len(e.Detections)
		for _, d := range e.Detections {
			ev, ok := events[d.TrackID]
			if !ok {
				ev = &LesionEvent{TrackID: d.TrackID, Class: d.Class, FirstS: e.T}
				events[d.TrackID] = ev
			}
			ev.LastS = e.T
			ev.Frames++
			ev.MaxScore = max(ev.MaxScore, d.Score)
			if d.Malignancy != nil && (ev.MaxMalignancy == nil || *d.Malignancy > *ev.MaxMalignancy) {
				v := *d.Malignancy
				ev.MaxMalignancy = &v
			}
		}
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, ev := range events {
		m.LesionEvents = append(m.LesionEvents, *ev)
	}
	sort.Slice(m.LesionEvents, func(i, j int) bool { return m.LesionEvents[i].FirstS < m.LesionEvents[j].FirstS })
	if !cut {
		return nil
	}
	return writeSync(path, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 64<<10)
		err := scanTimeline(path, durationS, func(line []byte, e *Entry) error {
			if e == nil {
				return nil
			}
			_, err := bw.Write(line)
			return err
		})
		if err != nil {
			return err
		}
		return bw.Flush()
	})
}

// scanTimeline calls fn for every line of the timeline: with the entry
// when it is whole and inside the video, with nil when it is to be cut (a
// torn or unparsable line, or one past durationS).
func scanTimeline(path string, durationS float64, fn func(line []byte, e *Entry) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return scanLines(f, durationS, fn)
}

// scanLines is scanTimeline over any reader.
func scanLines(rd io.Reader, durationS float64, fn func(line []byte, e *Entry) error) error {
	r := bufio.NewReaderSize(rd, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			var e Entry
			switch {
			case line[len(line)-1] != '\n', json.Unmarshal(line, &e) != nil, e.T >= durationS-5e-4: // at or past the end: a frame still pending when the video stopped
				if ferr := fn(line, nil); ferr != nil {
					return ferr
				}
			default:
				if ferr := fn(line, &e); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
