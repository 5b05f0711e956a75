package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sonolive/exam"
	"sonolive/internal/testpeer"
)

// `run --exam` makes an exam of a clip in serve's library: a key image per
// lesion, the recording linked to the exam, the report, and a DICOM export
// dciodvfy accepts. The clip is read faster than real time; the picker
// counts the clip's seconds.
func TestRunExam(t *testing.T) {
	testpeer.Need(t, "dciodvfy")
	lib := t.TempDir()
	stdout, stderr, err := sonolive(t, 3*time.Minute, "run", "--source", "phantom://?seed=1&lesions=2&fps=20",
		"--frames", "480", "--preset", "thyroid", "--record", lib, "--record-source", "phantom",
		"--exam", filepath.Join(lib, "exams"), "--exam-dicom", "--log-level", "warn")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	m := regexp.MustCompile(`exam (\S+): (\d+) findings`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("stdout: %s", stdout)
	}
	dir := filepath.Join(lib, "exams", m[1])
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep exam.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Exam.Organ != "thyroid" || rep.Exam.Open() || len(rep.Exam.Recordings) != 1 || len(rep.Findings) != 2 {
		t.Fatalf("exam %+v with %d findings", rep.Exam, len(rep.Findings))
	}
	for _, f := range rep.Findings {
		if f.SizeMM == nil || len(f.Truth) == 0 {
			t.Errorf("finding %+v", f)
		}
	}
	objs, _ := filepath.Glob(filepath.Join(dir, "dicom", "*.dcm"))
	if len(objs) != 4 {
		t.Fatalf("DICOM objects %v", objs)
	}
	for _, o := range objs {
		out, _ := exec.Command("dciodvfy", "-new", o).CombinedOutput()
		if strings.Contains(string(out), "Error - ") {
			t.Errorf("%s: %s", filepath.Base(o), out)
		}
	}
}
