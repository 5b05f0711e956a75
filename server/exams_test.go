package server

import (
	"archive/zip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sonolive/auth"
	"sonolive/exam"
	"sonolive/infer"
	"sonolive/models"
)

// presetOpener loads a source's embedded preset model, as serve does.
func presetOpener(t *testing.T) DetectorOpener {
	return func(src Source) (infer.Detector, string, error) {
		p := src.Preset
		if p == "" {
			p = "breast"
		}
		name, data, err := models.Load(p)
		if err != nil {
			return nil, "", err
		}
		m, err := infer.NewModel(data, infer.Options{})
		if err != nil {
			t.Fatalf("ONNX Runtime: %v", err)
		}
		return m, name, nil
	}
}

func examGet(t *testing.T, base, id, tok string) examView {
	t.Helper()
	code, body := do(t, "GET", base+"/api/exams/"+id, "", tok, "")
	if code != http.StatusOK {
		t.Fatalf("GET exam: %d %s", code, body)
	}
	var v examView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// An exam from start to end, across a restart: the organ's model is
// switched in, nothing is recorded before the exam, the picker keeps key
// images of the phantom's lesions in mm, the sonographer captures, notes
// a location and deletes; an expert reads the exam without the patient's
// label; the server stops mid-exam and starts again: the exam is open,
// nothing saved is lost, and it ends with its report and recordings.
func TestExamLifecycle(t *testing.T) {
	dir := t.TempDir()
	cfg := Default()
	cfg.Record.Dir = dir
	cfg.Audit.Path = ""
	cfg.Auth.Secret = "exam-test-secret-0123456789"
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?seed=3&lesions=2&fps=20"}}
	srv, base, stop := runServerWith(t, cfg, presetOpener(t))
	sono, expert := token(t, srv, auth.Sonographer, time.Hour), token(t, srv, auth.Expert, time.Hour)

	time.Sleep(time.Second)
	if all, _ := srv.lib.List(); len(all) != 0 {
		t.Fatalf("recorded before any exam: %+v", all)
	}
	for _, tc := range []struct {
		body string
		code int
	}{
		{`{"organ":"liver"}`, http.StatusBadRequest},
		{`{"organ":"thyroid","side":"left"}`, http.StatusBadRequest},
		{`{"organ":"thyroid","label":"line\nbreak"}`, http.StatusBadRequest},
		{`{"organ":"thyroid","accession":"12345678901234567"}`, http.StatusBadRequest},
	} {
		if code, body := do(t, "POST", base+"/api/sources/phantom/exams", "application/json", sono, tc.body); code != tc.code {
			t.Errorf("start %s: %d %s, want %d", tc.body, code, body, tc.code)
		}
	}
	if code, _ := do(t, "POST", base+"/api/sources/phantom/exams", "application/json", expert, `{"organ":"thyroid"}`); code != http.StatusForbidden {
		t.Errorf("an expert started an exam: %d", code)
	}
	code, body := do(t, "POST", base+"/api/sources/phantom/exams", "application/json", sono, `{"organ":"thyroid","label":"Jane Doe 1970","accession":"A-17"}`)
	if code != http.StatusCreated {
		t.Fatalf("start: %d %s", code, body)
	}
	var started examView
	json.Unmarshal([]byte(body), &started)
	id := started.ID
	if started.Model != "thyroid.onnx" || started.Organ != "thyroid" || !started.Open() {
		t.Fatalf("started %+v", started)
	}
	ses, _ := srv.sessions.get("phantom")
	if _, name := ses.models.current(); name != "thyroid.onnx" {
		t.Fatalf("model running: %s", name)
	}
	if code, _ := do(t, "POST", base+"/api/sources/phantom/exams", "application/json", sono, `{"organ":"breast"}`); code != http.StatusConflict {
		t.Errorf("second exam while one is open: %d", code)
	}

	// Scan: the phantom sweeps every 8 s; wait for both lesions.
	var v examView
	for deadline := time.Now().Add(25 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if v = examGet(t, base, id, sono); len(v.Findings) >= 2 {
			break
		}
	}
	if len(v.Findings) < 2 {
		t.Fatalf("after 25 s of scanning: %d findings", len(v.Findings))
	}
	for _, f := range v.Findings {
		if !f.Auto || f.SizeMM == nil || f.SpacingFrom != "source" || len(f.Truth) == 0 {
			t.Errorf("finding %+v", f)
		}
	}
	if v.Label != "Jane Doe 1970" {
		t.Errorf("the sonographer sees label %q", v.Label)
	}
	if ev := examGet(t, base, id, expert); ev.Label != "" || ev.Accession != "" || len(ev.Findings) != len(v.Findings) {
		t.Errorf("the expert sees %q %q and %d findings", ev.Label, ev.Accession, len(ev.Findings))
	}

	// One tap: the frame on screen.
	code, body = do(t, "POST", base+"/api/exams/"+id+"/findings", "", sono, "")
	if code != http.StatusCreated {
		t.Fatalf("capture: %d %s", code, body)
	}
	var manual exam.Finding
	json.Unmarshal([]byte(body), &manual)
	if manual.Auto || manual.By != "sonographer" {
		t.Errorf("capture %+v", manual)
	}
	loc := `{"lobe":"left","third":"lower","note":"posterior"}`
	if code, body := do(t, "PUT", base+"/api/exams/"+id+"/findings/1/location", "application/json", sono, loc); code != http.StatusOK {
		t.Errorf("location: %d %s", code, body)
	}
	if code, _ := do(t, "PUT", base+"/api/exams/"+id+"/findings/1/location", "application/json", sono, `{"lobe":"middle"}`); code != http.StatusBadRequest {
		t.Errorf("bad lobe: %d", code)
	}
	if code, _ := do(t, "DELETE", base+"/api/exams/"+id+"/findings/"+strconv.Itoa(manual.N), "", sono, ""); code != http.StatusNoContent {
		t.Errorf("delete: %d", code)
	}
	for _, file := range []string{"key.jpg", "annotated.jpg"} {
		if code, body := do(t, "GET", base+"/api/exams/"+id+"/findings/1/"+file, "", expert, ""); code != http.StatusOK || !strings.HasPrefix(body, "\xff\xd8") {
			t.Errorf("%s: %d", file, code)
		}
	}
	// The expert's read of a finding's track lands on the finding.
	vctx, vcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer vcancel()
	ev := consultViewer(t, vctx, base, expert)
	track := v.Findings[0].Tracks[0]
	if err := ev.SendConsult(vctx, []byte(fmt.Sprintf(`{"type":"verdict","track_id":%d,"verdict":"agree","category":"TI-RADS TR3"}`, track))); err != nil {
		t.Fatal(err)
	}
	for {
		f := examGet(t, base, id, sono).Findings[0]
		if f.Verdict != nil {
			if f.Verdict.Verdict != "agree" || f.Verdict.Category != "TI-RADS TR3" {
				t.Errorf("verdict %+v", f.Verdict)
			}
			break
		}
		if vctx.Err() != nil {
			t.Fatal("the verdict never reached the finding")
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := examGet(t, base, id, sono)

	// Restart mid-exam.
	stop()
	srv2, base2, _ := runServerWith(t, cfg, presetOpener(t))
	after := examGet(t, base2, id, sono)
	if !after.Open() || len(after.Findings) < len(before.Findings) {
		t.Fatalf("after the restart: open %v, %d findings (had %d)", after.Open(), len(after.Findings), len(before.Findings))
	}
	if after.Findings[0].Location.Lobe != "left" {
		t.Errorf("the location was lost: %+v", after.Findings[0].Location)
	}
	ses2, _ := srv2.sessions.get("phantom")
	if _, name := ses2.models.current(); name != "thyroid.onnx" {
		t.Errorf("resumed with model %s", name)
	}
	time.Sleep(2 * time.Second)
	code, body = do(t, "POST", base2+"/api/exams/"+id+"/end", "", sono, "")
	if code != http.StatusOK {
		t.Fatalf("end: %d %s", code, body)
	}
	var ended examView
	json.Unmarshal([]byte(body), &ended)
	if ended.Open() || len(ended.Recordings) < 2 {
		t.Fatalf("ended %+v", ended.Exam)
	}
	if code, _ := do(t, "POST", base2+"/api/exams/"+id+"/end", "", sono, ""); code != http.StatusConflict {
		t.Errorf("ended twice: %d", code)
	}
	for _, rec := range ended.Recordings {
		m, err := srv2.lib.Get(rec)
		if err != nil || m.Exam != id {
			t.Errorf("recording %s: %+v %v", rec, m, err)
		}
	}
	for _, f := range []string{"report.json", "report.html"} {
		if _, err := os.Stat(filepath.Join(dir, "exams", id, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	code, body = do(t, "GET", base2+"/api/exams/"+id+"/report.html", "", sono, "")
	if code != http.StatusOK || !strings.Contains(body, exam.Disclaimer) || !strings.Contains(body, "Jane Doe 1970") ||
		strings.Count(body, "data:image/jpeg;base64,") != len(ended.Findings) || !strings.Contains(body, "left lobe, lower third") {
		t.Errorf("report: %d, %d images for %d findings", code, strings.Count(body, "data:image/jpeg"), len(ended.Findings))
	}
	if _, body := do(t, "GET", base2+"/api/exams/"+id+"/report.html", "", expert, ""); strings.Contains(body, "Jane Doe") {
		t.Error("the expert's report shows the patient's label")
	}
	// Nothing recorded after the exam.
	time.Sleep(1500 * time.Millisecond)
	all, _ := srv2.lib.List()
	for _, m := range all {
		if m.Exam != id {
			t.Errorf("recording %s outside the exam", m.ID)
		}
	}
}

// A machine that does not send its pixel size: findings have no mm until
// the sonographer calibrates on the depth scale (the phantom's ticks are
// 50 px apart, 5 mm at 0.1 mm/px); after that they do. A teacher tags the
// ended exam and downloads it de-identified; without a PACS, sending says
// so.
func TestExamCalibrationAndTeaching(t *testing.T) {
	cfg := Default()
	cfg.Record.Dir = t.TempDir()
	cfg.Audit.Path = ""
	cfg.Sources = []Source{{ID: "phantom", URL: "phantom://?seed=1&lesions=2&fps=20&spacing=0"}}
	srv, base, _ := runServerWith(t, cfg, presetOpener(t))
	sono, teacher := token(t, srv, auth.Sonographer, time.Hour), token(t, srv, auth.Teacher, time.Hour)
	code, body := do(t, "POST", base+"/api/sources/phantom/exams", "application/json", sono, `{"organ":"breast","side":"right","label":"Mrs X"}`)
	if code != http.StatusCreated {
		t.Fatalf("start: %d %s", code, body)
	}
	var e examView
	json.Unmarshal([]byte(body), &e)
	for _, bad := range []string{`{"a":[0,0],"b":[2,0],"distance_mm":5}`, `{"a":[0,0],"b":[50,0],"distance_mm":-1}`, `{"a":[0,0]}`} {
		if code, _ := do(t, "PUT", base+"/api/exams/"+e.ID+"/calibration", "application/json", sono, bad); code != http.StatusBadRequest {
			t.Errorf("calibration %s: %d", bad, code)
		}
	}
	code, body = do(t, "PUT", base+"/api/exams/"+e.ID+"/calibration", "application/json", sono, `{"a":[630,86],"b":[630,136],"distance_mm":5}`)
	if code != http.StatusOK || !strings.Contains(body, `"calibration_mm":0.1`) {
		t.Fatalf("calibration: %d %s", code, body)
	}
	var v examView
	for deadline := time.Now().Add(25 * time.Second); time.Now().Before(deadline) && len(v.Findings) == 0; time.Sleep(time.Second) {
		v = examGet(t, base, e.ID, sono)
	}
	if len(v.Findings) == 0 {
		t.Fatal("no findings")
	}
	for _, f := range v.Findings {
		if f.SizeMM == nil || f.SpacingFrom != "calibration" || (*f.SpacingMM)[0] != 0.1 {
			t.Errorf("finding %d: size %v from %q", f.N, f.SizeMM, f.SpacingFrom)
		}
	}
	if code, _ := do(t, "PUT", base+"/api/exams/"+e.ID+"/tags", "application/json", teacher, `{"tags":["Breast","finding:cyst","breast"]}`); code != http.StatusOK {
		t.Errorf("tags: %d", code)
	}
	if code, _ := do(t, "PUT", base+"/api/exams/"+e.ID+"/tags", "application/json", teacher, `{"tags":["<script>"]}`); code != http.StatusBadRequest {
		t.Errorf("bad tag: %d", code)
	}
	if code, _ := do(t, "POST", base+"/api/exams/"+e.ID+"/end", "", sono, ""); code != http.StatusOK {
		t.Fatalf("end: %d", code)
	}
	if got := examGet(t, base, e.ID, teacher); strings.Join(got.Tags, ",") != "breast,finding:cyst" || got.Label != "" {
		t.Errorf("the teacher sees tags %v, label %q", got.Tags, got.Label)
	}
	if code, _ := do(t, "POST", base+"/api/exams/"+e.ID+"/send", "", sono, ""); code != http.StatusConflict {
		t.Errorf("send without a PACS: %d", code)
	}
	if code, _ := do(t, "GET", base+"/api/exams/"+e.ID+"/teaching.zip", "", token(t, srv, auth.Student, time.Hour), ""); code != http.StatusForbidden {
		t.Errorf("a student downloaded the case: %d", code)
	}
	if code, _ := do(t, "GET", base+"/api/exams/"+e.ID+"/dicom.zip", "", teacher, ""); code != http.StatusForbidden {
		t.Errorf("a teacher downloaded the clinical export (it names the patient): %d", code)
	}
	code, body = do(t, "GET", base+"/api/exams/"+e.ID+"/teaching.zip?mask=10", "", teacher, "")
	zr, err := zip.NewReader(strings.NewReader(body), int64(len(body)))
	if code != http.StatusOK || err != nil {
		t.Fatalf("teaching.zip: %d %v", code, err)
	}
	if len(zr.File) != len(v.Findings)+len(examGet(t, base, e.ID, sono).Recordings)+1 {
		t.Errorf("teaching.zip holds %d files", len(zr.File))
	}
	if strings.Contains(body, "Mrs X") {
		t.Error("the teaching copy names the patient")
	}
}
