package server

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"gocv.io/x/gocv"

	"sonolive/audit"
	"sonolive/auth"
	"sonolive/exam"
	"sonolive/frame"
	"sonolive/models"
	"sonolive/overlay"
)

// An exam is one patient's scan (package exam): the sonographer starts it
// with an organ preset, the session switches to that organ's model and
// records, the picker keeps key images, and End exam writes the report.
// Pages hear about it on the WebSocket ("exam" events, which never carry
// the patient's label).

// examEvent is the WebSocket message for an exam change.
type examEvent struct {
	Type    string        `json:"type"` // exam
	Change  string        `json:"change"`
	Exam    examSummary   `json:"exam"`
	Finding *exam.Finding `json:"finding,omitempty"`
	N       int           `json:"n,omitempty"`
}

// examSummary is an exam without the patient's label.
type examSummary struct {
	ID      string     `json:"id"`
	Organ   string     `json:"organ"`
	Side    string     `json:"side,omitempty"`
	Model   string     `json:"model,omitempty"`
	Started time.Time  `json:"started"`
	Ended   *time.Time `json:"ended,omitempty"`
	// CalibrationMM is the hand-set pixel size, 0 for none.
	CalibrationMM float64 `json:"calibration_mm,omitempty"`
	// PACS is where sending it to the PACS stands.
	PACS *exam.PACSState `json:"pacs,omitempty"`
}

func summarise(e exam.Exam) examSummary {
	return examSummary{ID: e.ID, Organ: e.Organ, Side: e.Side, Model: e.Model, Started: e.Started, Ended: e.Ended,
		CalibrationMM: e.CalibrationMM, PACS: e.PACS}
}

// examOrgans are the organs an exam may be started for: the embedded
// presets a clinic scans (the phantom preset is for benchmarks).
func examOrgans() []string {
	var out []string
	for _, n := range models.Names() {
		if n != "phantom" {
			out = append(out, n)
		}
	}
	return out
}

// currentExam is the session's open exam (a copy), nil when none.
func (s *Session) currentExam() *exam.Exam {
	s.examMu.Lock()
	defer s.examMu.Unlock()
	if s.exam == nil {
		return nil
	}
	e := *s.exam
	return &e
}

// resumeExam picks up the exam a restart interrupted: its model, its
// calibration and its findings so far.
func (s *Session) resumeExam() {
	e, ok := s.deps.exams.Current(s.id)
	if !ok {
		return
	}
	if _, err := s.models.use(e.Organ); err != nil {
		s.log.Error("resuming the exam with the running model", zap.String("exam", e.ID), zap.Error(err))
	}
	fs, _ := s.deps.exams.Findings(e.ID)
	// Track ids go on from the exam's findings: a verdict on a new track
	// must not land on an old finding.
	for _, f := range fs {
		for _, id := range f.Tracks {
			if id+1 > s.nextTrack.Load() {
				s.nextTrack.Store(id + 1)
			}
		}
	}
	s.examMu.Lock()
	s.exam = &e
	s.examMu.Unlock()
	if s.picker != nil {
		s.picker.SetExam(e.ID, e.CalibrationMM, fs)
	}
	s.log.Info("exam resumed", zap.String("exam", e.ID), zap.String("organ", e.Organ), zap.Int("findings", len(fs)))
}

// startExam opens an exam: the organ's model is switched in, recording
// starts, the picker starts keeping key images.
func (s *Session) startExam(st exam.Start) (exam.Exam, error) {
	if err := st.Check(examOrgans()); err != nil {
		return exam.Exam{}, err
	}
	s.examMu.Lock()
	if s.exam != nil {
		e := *s.exam
		s.examMu.Unlock()
		return e, exam.ErrOpen
	}
	before, _ := s.models.current()
	name, err := s.models.use(st.Organ)
	if err != nil {
		s.examMu.Unlock()
		return exam.Exam{}, err
	}
	m := exam.Model{Name: name, Version: s.models.version()}
	if md, ok := s.models.metadata(); ok {
		m.Calibrated = md.Calibrated
	}
	e, err := s.deps.exams.Create(s.id, st, m, time.Now())
	if err != nil {
		s.models.use(before) // no exam: the model it ran before
		s.examMu.Unlock()
		return e, err
	}
	s.exam = &e
	s.examMu.Unlock()
	if s.picker != nil {
		s.picker.SetExam(e.ID, 0, nil)
	}
	s.syncRecording()
	s.recordEvent("exam_started", map[string]string{"exam": e.ID, "organ": e.Organ})
	s.deps.hub.broadcast(s.id, examEvent{Type: "exam", Change: "started", Exam: summarise(e)})
	s.log.Info("exam started", zap.String("exam", e.ID), zap.String("organ", e.Organ), zap.String("model", name))
	return e, nil
}

// endExam keeps the key images of the lesions still on screen, ends the
// exam and its recording, and writes the report.
func (s *Session) endExam(ctx context.Context, id string) (exam.Exam, error) {
	s.examMu.Lock()
	open := s.exam != nil && s.exam.ID == id
	s.examMu.Unlock()
	if open && s.picker != nil {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.picker.Flush(fctx); err != nil {
			s.log.Warn("ending the exam before every key image was saved", zap.String("exam", id), zap.Error(err))
		}
		cancel()
	}
	var truth []exam.LesionSeen
	if open && s.picker != nil {
		truth = s.picker.GroundTruth()
	}
	e, err := s.deps.exams.Finish(id, truth, time.Now())
	if err != nil && !errors.Is(err, exam.ErrReport) {
		return e, err // not ended: the page still shows it open
	}
	if err != nil {
		// Ended, but the report did not write: say so, keep going.
		s.log.Error("writing the exam report", zap.String("exam", id), zap.Error(err))
	}
	if open {
		s.recordEvent("exam_ended", map[string]string{"exam": id})
		s.examMu.Lock()
		s.exam = nil
		s.examMu.Unlock()
		if s.picker != nil {
			s.picker.SetExam("", 0, nil)
		}
		s.syncRecording() // finishes the exam's recording
		if e2, err := s.deps.exams.Get(id); err == nil {
			e = e2 // with its last recording noted
		}
	}
	if open {
		// The report again, with the recording that just finished.
		if err := s.deps.exams.WriteReportFiles(id); err != nil {
			s.log.Error("writing the exam report", zap.String("exam", id), zap.Error(err))
		}
	}
	e = s.deps.examEnded(e)
	s.log.Info("exam ended", zap.String("exam", id), zap.Strings("recordings", e.Recordings))
	return e, nil
}

// examEnded does what follows an exam's end, with or without its
// session: the PACS send (exams.pacs.auto_send) and the pages' event.
func (s *Server) examEnded(e exam.Exam) exam.Exam {
	if s.sender != nil && s.cfg.Exams.PACS.AutoSend {
		if queued, err := s.sender.Queue(e.ID); err != nil {
			s.log.Error("queueing the exam for the PACS", zap.String("exam", e.ID), zap.Error(err))
		} else {
			e = queued
		}
	}
	s.hub.broadcast(e.Source, examEvent{Type: "exam", Change: "ended", Exam: summarise(e)})
	return e
}

// findingChanged tells the pages about a finding.
func (s *Session) findingChanged(id string, f exam.Finding, change string) {
	e, err := s.deps.exams.Get(id)
	if err != nil {
		return
	}
	s.deps.hub.broadcast(s.id, examEvent{Type: "exam", Change: "finding_" + change, Exam: summarise(e), Finding: &f, N: f.N})
}

// noteVerdict gives the open exam's finding on track the expert's verdict.
func (s *Session) noteVerdict(m consultMsg) {
	e := s.currentExam()
	if e == nil || m.TrackID == nil {
		return
	}
	v := exam.Verdict{Verdict: m.Verdict, Category: m.Category, Note: m.Note, At: time.Now().UTC()}
	if m.From != nil {
		v.By = m.From.Name
		if v.By == "" {
			v.By = m.From.Role
		}
	}
	hit, err := s.deps.exams.SetVerdict(e.ID, *m.TrackID, v)
	if err != nil {
		s.log.Warn("verdict not kept with the exam", zap.String("exam", e.ID), zap.Error(err))
		return
	}
	if hit {
		fs, _ := s.deps.exams.Findings(e.ID)
		for _, f := range fs {
			if slices.Contains(f.Tracks, *m.TrackID) {
				s.findingChanged(e.ID, f, "verdict")
			}
		}
	}
}

// captureFinding keeps the frame on screen (the newest the relay sent, or
// the one with RTP time ts) as a finding of the open exam, by hand.
func (s *Session) captureFinding(id string, ts uint32, by string) (exam.Finding, error) {
	e := s.currentExam()
	if e == nil || e.ID != id {
		return exam.Finding{}, exam.ErrEnded
	}
	img, ts, err := s.stills.at(ts)
	if err != nil {
		return exam.Finding{}, fmt.Errorf("capture: %w", err)
	}
	defer img.Close()
	return s.saveManualFinding(*e, img, s.stills.meta(ts), by)
}

// saveManualFinding saves img (with its metadata, if any) as a finding
// captured by hand: the box is the most confident detection on it.
func (s *Session) saveManualFinding(e exam.Exam, img gocv.Mat, meta *overlay.Metadata, by string) (exam.Finding, error) {
	f := exam.Finding{By: by, At: time.Now().UTC(), Width: img.Cols(), Height: img.Rows()}
	var geom frame.Geometry
	var dets []frame.Detection
	burned := false
	if meta != nil {
		f.At, f.Seq, burned = meta.CaptureTime, meta.Seq, meta.BurnedIn
		geom = meta.Geometry.Frame()
		for _, d := range meta.Detections {
			if f.Class == "" || d.Score > f.Score {
				f.Box, f.Class, f.Score, f.Malignancy, f.Tracks = d.Box, d.Class, d.Score, d.Malignancy, []uint64{d.TrackID}
				dets = []frame.Detection{overlay.Detections([]overlay.DetMeta{d})[0]}
			}
		}
	}
	from := "source"
	if !geom.Known() && e.CalibrationMM > 0 {
		geom.SpacingMM = [2]float64{e.CalibrationMM, e.CalibrationMM}
		from = "calibration"
	}
	switch {
	case len(dets) > 0:
		// Measured as the picker measures, and drawn with that extent.
		dets[0].Box = f.Measure(img, dets[0], geom, from)
	case geom.Known():
		f.SpacingMM, f.SpacingFrom = &[2]float64{geom.SpacingMM[0], geom.SpacingMM[1]}, from
	}
	picture, err := encodeJPEG(img)
	if err != nil {
		return f, err
	}
	drawn := img.Clone()
	defer drawn.Close()
	if !burned {
		overlay.NewDrawer(overlay.DefaultStyle()).DrawFindings(&drawn, dets, geom)
	}
	annotated, err := encodeJPEG(drawn)
	if err != nil {
		return f, err
	}
	f, err = s.deps.exams.SaveFinding(e.ID, f, picture, annotated)
	if err == nil {
		s.findingChanged(e.ID, f, "saved")
	}
	return f, err
}

// exportDICOM exports an exam with its recordings as cines.
func (s *Server) exportDICOM(id string) ([]exam.DICOMObject, error) {
	return s.exportDICOMWith(id, exam.ExportOptions{})
}

func (s *Server) exportDICOMWith(id string, opts exam.ExportOptions) ([]exam.DICOMObject, error) {
	e, err := s.exams.Get(id)
	if err != nil {
		return nil, err
	}
	var cines []string
	if s.lib != nil {
		for _, rec := range e.Recordings {
			if p, err := s.lib.File(rec, "video.mp4"); err == nil {
				cines = append(cines, p)
			}
		}
	}
	opts.Cines, opts.Station = cines, e.Source
	opts.OnSkip = func(err error) {
		s.log.Error("exam exported without a recording it could not read", zap.String("exam", id), zap.Error(err))
	}
	return s.exams.ExportDICOM(id, opts)
}

// HTTP surface.

// examAccess checks the token against the exam's source and roles; it
// writes the 4xx itself.
func (s *Server) examAccess(w http.ResponseWriter, r *http.Request, roles ...auth.Role) (string, auth.Claims, bool) {
	if !s.examsOn(w) {
		return "", auth.Claims{}, false
	}
	return s.idAccess(w, r, exam.SourceOf, exam.ErrNotFound, roles...)
}

// errExamsOff: no place to keep exams (recording off and no exams.dir).
var errExamsOff = errors.New("exams are off on this server: recording is off and exams.dir is not set")

// examsOn writes the 404 when exams are off.
func (s *Server) examsOn(w http.ResponseWriter) bool {
	if s.exams == nil {
		http.Error(w, errExamsOff.Error(), http.StatusNotFound)
		return false
	}
	return true
}

// Who may do what with exams: the sonographer runs them; an expert in the
// consultation and the library's people read them, without the patient's
// label unless the sonographer shared it.
var (
	examRunRoles  = []auth.Role{auth.Sonographer}
	examReadRoles = []auth.Role{auth.Sonographer, auth.Expert, auth.Teacher, auth.Student}
)

// examError writes err as the HTTP status it means.
func (s *Server) examError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, exam.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, exam.ErrOpen), errors.Is(err, exam.ErrEnded), errors.Is(err, exam.ErrDeleted):
		code = http.StatusConflict
	case errors.Is(err, exam.ErrBad):
		code = http.StatusBadRequest
	}
	if code == http.StatusInternalServerError {
		s.log.Error("exam request", zap.Error(err))
	}
	http.Error(w, err.Error(), code)
}

// examView is an exam with its findings, as the API returns it.
type examView struct {
	exam.Exam
	Findings []exam.Finding `json:"findings"`
	Organs   []string       `json:"organs,omitempty"`
}

func (s *Server) viewExam(e exam.Exam, role auth.Role) (examView, error) {
	fs, err := s.exams.Findings(e.ID)
	if err != nil {
		return examView{}, err
	}
	if role != auth.Sonographer {
		e = e.Shared()
	}
	return examView{Exam: e, Findings: fs}, nil
}

// startExamHandler: POST /api/sources/{source}/exams.
func (s *Server) startExamHandler(w http.ResponseWriter, r *http.Request) {
	ses, c, ok := s.authorize(w, r, examRunRoles...)
	if !ok || !s.examsOn(w) {
		return
	}
	var st exam.Start
	if !decodeJSON(w, r, &st) {
		return
	}
	e, err := ses.startExam(st)
	if err != nil {
		s.examError(w, err)
		return
	}
	s.audit.Log(auditEvent(r, c, "exam_started", e.Organ, e.ID))
	v, err := s.viewExam(e, c.Role)
	if err != nil {
		s.examError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

// listExamsHandler: GET /api/sources/{source}/exams, newest first, with
// the organs an exam may be started for.
func (s *Server) listExamsHandler(w http.ResponseWriter, r *http.Request) {
	ses, c, ok := s.authorize(w, r, examReadRoles...)
	if !ok || !s.examsOn(w) {
		return
	}
	all, err := s.exams.List()
	if err != nil {
		s.examError(w, err)
		return
	}
	out := []exam.Exam{}
	for _, e := range all {
		if e.Source != ses.id {
			continue
		}
		if c.Role != auth.Sonographer {
			e = e.Shared()
		}
		out = append(out, e)
	}
	writeJSON(w, http.StatusOK, map[string]any{"exams": out, "organs": examOrgans()})
}

func (s *Server) getExamHandler(w http.ResponseWriter, r *http.Request) {
	id, c, ok := s.examAccess(w, r, examReadRoles...)
	if !ok {
		return
	}
	e, err := s.exams.Get(id)
	if err != nil {
		s.examError(w, err)
		return
	}
	v, err := s.viewExam(e, c.Role)
	if err != nil {
		s.examError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// endExamHandler: POST /api/exams/{id}/end. An exam left open by a
// restart whose source is gone can still be ended.
func (s *Server) endExamHandler(w http.ResponseWriter, r *http.Request) {
	id, c, ok := s.examAccess(w, r, examRunRoles...)
	if !ok {
		return
	}
	var (
		e   exam.Exam
		err error
	)
	if ses, live := s.sessions.get(exam.SourceOf(id)); live {
		e, err = ses.endExam(r.Context(), id)
	} else if e, err = s.exams.Finish(id, nil, time.Now()); err == nil || errors.Is(err, exam.ErrReport) {
		if err != nil {
			s.log.Error("writing the exam report", zap.String("exam", id), zap.Error(err))
		}
		e, err = s.examEnded(e), nil
	}
	if err != nil {
		s.examError(w, err)
		return
	}
	s.audit.Log(auditEvent(r, c, "exam_ended", e.Organ, e.ID))
	v, err := s.viewExam(e, c.Role)
	if err != nil {
		s.examError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// calibrationRequest sets the pixel size by hand: two points on the
// machine's depth scale and the distance between them.
type calibrationRequest struct {
	A          [2]float64 `json:"a"`
	B          [2]float64 `json:"b"`
	DistanceMM float64    `json:"distance_mm"`
}

func (s *Server) calibrateExamHandler(w http.ResponseWriter, r *http.Request) {
	id, _, ok := s.examAccess(w, r, examRunRoles...)
	if !ok {
		return
	}
	var req calibrationRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	px := math.Hypot(req.B[0]-req.A[0], req.B[1]-req.A[1])
	if !(px >= 10 && px < 1e5) || !(req.DistanceMM > 0 && req.DistanceMM <= 500) {
		http.Error(w, "calibration: the marks must be at least 10 pixels apart and the distance between 0 and 500 mm", http.StatusBadRequest)
		return
	}
	mm := req.DistanceMM / px
	e, err := s.exams.Update(id, true, func(e *exam.Exam) error {
		e.CalibrationMM = mm
		return nil
	})
	if err != nil {
		s.examError(w, err)
		return
	}
	if ses, live := s.sessions.get(e.Source); live {
		ses.examMu.Lock()
		own := ses.exam != nil && ses.exam.ID == id
		if own {
			ses.exam.CalibrationMM = mm
		}
		ses.examMu.Unlock()
		if own && ses.picker != nil {
			fs, _ := s.exams.Findings(id)
			ses.picker.SetExam(id, mm, fs)
		}
		s.hub.broadcast(e.Source, examEvent{Type: "exam", Change: "calibrated", Exam: summarise(e)})
	}
	writeJSON(w, http.StatusOK, map[string]float64{"calibration_mm": mm})
}

type captureRequest struct {
	RTPTS uint32 `json:"rtp_ts"`
}

// captureFindingHandler: POST /api/exams/{id}/findings keeps the frame
// on screen (rtp_ts, or the newest) as a finding.
func (s *Server) captureFindingHandler(w http.ResponseWriter, r *http.Request) {
	id, c, ok := s.examAccess(w, r, examRunRoles...)
	if !ok {
		return
	}
	var req captureRequest
	if r.ContentLength != 0 && !decodeJSON(w, r, &req) {
		return
	}
	ses, live := s.sessions.get(exam.SourceOf(id))
	if !live {
		s.examError(w, fmt.Errorf("%w: its source is gone", exam.ErrEnded))
		return
	}
	f, err := ses.captureFinding(id, req.RTPTS, string(c.Role))
	if err != nil {
		s.examError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, f)
}

func findingNumber(w http.ResponseWriter, r *http.Request) (int, bool) {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 1 || n > 999 {
		http.Error(w, "no such finding", http.StatusNotFound)
		return 0, false
	}
	return n, true
}

func (s *Server) locateFindingHandler(w http.ResponseWriter, r *http.Request) {
	id, _, ok := s.examAccess(w, r, examRunRoles...)
	if !ok {
		return
	}
	n, ok := findingNumber(w, r)
	if !ok {
		return
	}
	var l exam.Location
	if !decodeJSON(w, r, &l) {
		return
	}
	f, err := s.exams.SetLocation(id, n, l)
	if err != nil {
		s.examError(w, err)
		return
	}
	if ses, live := s.sessions.get(exam.SourceOf(id)); live {
		ses.findingChanged(id, f, "located")
	}
	writeJSON(w, http.StatusOK, f)
}

func (s *Server) deleteFindingHandler(w http.ResponseWriter, r *http.Request) {
	id, c, ok := s.examAccess(w, r, examRunRoles...)
	if !ok {
		return
	}
	n, ok := findingNumber(w, r)
	if !ok {
		return
	}
	if err := s.exams.DeleteFinding(id, n); err != nil {
		s.examError(w, err)
		return
	}
	s.audit.Log(audit.Event{Action: "finding_deleted", Source: c.Source, Role: string(c.Role), TokenID: c.ID, Addr: r.RemoteAddr,
		Subject: id, Detail: map[string]string{"n": strconv.Itoa(n)}})
	if e, err := s.exams.Get(id); err == nil {
		s.hub.broadcast(e.Source, examEvent{Type: "exam", Change: "finding_deleted", Exam: summarise(e), N: n})
	}
	w.WriteHeader(http.StatusNoContent)
}

// findingPictureHandler: GET /api/exams/{id}/findings/{n}/{file}, file
// key.jpg (as the machine showed it) or annotated.jpg.
func (s *Server) findingPictureHandler(w http.ResponseWriter, r *http.Request) {
	id, _, ok := s.examAccess(w, r, examReadRoles...)
	if !ok {
		return
	}
	n, ok := findingNumber(w, r)
	if !ok {
		return
	}
	var annotated bool
	switch r.PathValue("file") {
	case "key.jpg":
	case "annotated.jpg":
		annotated = true
	default:
		http.Error(w, "no such file", http.StatusNotFound)
		return
	}
	p, err := s.exams.Picture(id, n, annotated)
	if err != nil {
		s.examError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "private, no-cache")
	http.ServeFile(w, r, p)
}

// examFileHandler: GET /api/exams/{id}/{file}: report.json and
// report.html (written at the end; a preview while the exam runs).
func (s *Server) examFileHandler(w http.ResponseWriter, r *http.Request) {
	id, c, ok := s.examAccess(w, r, examReadRoles...)
	if !ok {
		return
	}
	name := r.PathValue("file")
	if name == "dicom.zip" || name == "teaching.zip" {
		s.dicomZip(w, r, id, c, name == "teaching.zip")
		return
	}
	if name != "report.json" && name != "report.html" {
		http.Error(w, "no such file", http.StatusNotFound)
		return
	}
	rep, err := s.exams.BuildReport(id, time.Now())
	if err != nil {
		s.examError(w, err)
		return
	}
	if c.Role != auth.Sonographer {
		rep = rep.Shared()
	} else if p, err := s.exams.ReportFile(id, name); err == nil && rep.Exam.Ended != nil {
		// The ended exam's report as written at its end.
		w.Header().Set("Cache-Control", "private, no-cache")
		http.ServeFile(w, r, p)
		return
	}
	w.Header().Set("Cache-Control", "private, no-store")
	if name == "report.json" {
		writeJSON(w, http.StatusOK, rep)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.exams.RenderHTML(w, rep); err != nil {
		s.log.Error("report page", zap.String("exam", id), zap.Error(err))
	}
}

// tagsRequest sets a case's teaching tags.
type tagsRequest struct {
	Tags []string `json:"tags"`
}

func (s *Server) tagExamHandler(w http.ResponseWriter, r *http.Request) {
	id, _, ok := s.examAccess(w, r, curatorRoles...)
	if !ok {
		return
	}
	var req tagsRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	tags, err := exam.CleanTags(req.Tags)
	if err != nil {
		s.examError(w, err)
		return
	}
	e, err := s.exams.Update(id, false, func(e *exam.Exam) error {
		e.Tags = tags
		return nil
	})
	if err != nil {
		s.examError(w, err)
		return
	}
	sort.Strings(e.Tags)
	writeJSON(w, http.StatusOK, map[string][]string{"tags": e.Tags})
}

// dicomZip: GET /api/exams/{id}/dicom.zip, the exam's DICOM objects for a
// CD or a PACS without DICOMweb (sonographer only: it names the patient);
// teaching.zip, the same de-identified for teaching outside the clinic
// (sonographer and teacher): no label or accession, the top mask percent
// (default 8) of every picture — the scanner's header — black.
func (s *Server) dicomZip(w http.ResponseWriter, r *http.Request, id string, c auth.Claims, teaching bool) {
	// The clinical export names the patient: the sonographer's. The
	// teaching copy does not: the library's curators too.
	if !teaching && c.Role != auth.Sonographer || teaching && !slices.Contains(curatorRoles, c.Role) {
		auth.Deny(w, fmt.Errorf("%w: role %s may not export this", auth.ErrForbidden, c.Role))
		return
	}
	opts := exam.ExportOptions{Deidentify: teaching}
	kind := "dicom"
	if teaching {
		kind, opts.MaskTop = "teaching", 0.08
		if v := r.URL.Query().Get("mask"); v != "" {
			pct, err := strconv.ParseFloat(v, 64)
			if err != nil || pct < 0 || pct > 50 {
				http.Error(w, "mask: a percent of the height, 0 to 50", http.StatusBadRequest)
				return
			}
			opts.MaskTop = pct / 100
		}
	}
	objs, err := s.exportDICOMWith(id, opts)
	if err != nil {
		s.examError(w, err)
		return
	}
	s.audit.Log(auditEvent(r, c, "exam_exported", kind, id))
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.zip"`, id, kind))
	w.Header().Set("Cache-Control", "private, no-store")
	zw := zip.NewWriter(w)
	for _, o := range objs {
		// DICOM objects are mostly pixels already compressed or raw:
		// stored, not deflated, so the download starts at once.
		f, err := zw.CreateHeader(&zip.FileHeader{Name: "DICOM/" + strings.ToUpper(strings.TrimSuffix(o.Name, ".dcm")), Method: zip.Store})
		if err == nil {
			_, err = f.Write(o.Data)
		}
		if err != nil {
			s.log.Warn("DICOM download cut", zap.String("exam", id), zap.Error(err))
			return
		}
	}
	zw.Close()
}

// sendExamHandler: POST /api/exams/{id}/send queues the ended exam for
// the PACS (again); the send state follows on the exam and the pages.
func (s *Server) sendExamHandler(w http.ResponseWriter, r *http.Request) {
	id, c, ok := s.examAccess(w, r, curatorRoles...)
	if !ok {
		return
	}
	if s.sender == nil {
		http.Error(w, "no PACS is configured (exams.pacs.url)", http.StatusConflict)
		return
	}
	e, err := s.sender.Queue(id)
	if err != nil {
		s.examError(w, err)
		return
	}
	s.audit.Log(auditEvent(r, c, "exam_sent", "pacs", id))
	writeJSON(w, http.StatusAccepted, e.PACS)
}
