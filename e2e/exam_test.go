package e2e

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sonolive/internal/testpeer"
)

// The exam, end to end: a thyroid exam on the phantom, started in
// Chromium, scanned 30 s and ended there; the report has one key image per
// phantom lesion in view for a second or more, each sized within 10% of
// the phantom's ground truth in mm (its extent, and its long and short axis
// measured with calipers on the AI's outline); the exam goes to a real Orthanc over
// STOW-RS by itself (QIDO-RS shows its three series); its DICOM download
// passes dciodvfy; the teacher's library shows it as one case.
func TestExamInChromium(t *testing.T) {
	chromium := browser(t)
	testpeer.Need(t, "dciodvfy")
	orthanc := testpeer.StartOrthanc(t)
	out := outDir(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pacs.password")
	os.WriteFile(pw, []byte(orthanc.Password+"\n"), 0o600)
	cfg := filepath.Join(dir, "sonolive.yaml")
	yaml := fmt.Sprintf(`record: {dir: %q}
exams:
  pacs: {url: %q, username: %q, password_file: %q, auto_send: true}
sources:
  - id: phantom
    url: "phantom://?seed=3&lesions=2&width=640&height=480&fps=20"
`, filepath.Join(dir, "library"), orthanc.DICOMweb, orthanc.Username, pw)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := startServeStop(t, "--config", cfg)
	teacher := s.inviteRole(t, "teacher")
	res := node(t, "exam.js", 180*time.Second, "CHROMIUM="+chromium, "LIVE_URL="+s.liveURL, "OUT_DIR="+out,
		"LIBRARY_URL="+teacher, "SECONDS=30")
	t.Logf("calibration: %v; panel at the end: %v; report page: %v; library: %v; screenshots and the PDF in %s", res["calibration"], lastPanel(res), res["report"], res["library"], out)
	// Two clicks 50 px apart on the depth scale, 5 mm: 0.1 mm/px, within
	// a pixel's error of where the clicks land.
	var mmpx float64
	if _, err := fmt.Sscanf(fmt.Sprint(res["calibration"]), "Calibrated %f mm/px", &mmpx); err != nil || math.Abs(mmpx-0.1) > 0.005 {
		t.Errorf("calibration by clicks: %v", res["calibration"])
	}

	// The exam, as the API has it.
	var exams struct {
		Exams []struct {
			ID string `json:"id"`
		} `json:"exams"`
	}
	getJSON(t, s.base+"/api/sources/phantom/exams", s.token, &exams)
	if len(exams.Exams) != 1 {
		t.Fatalf("%d exams", len(exams.Exams))
	}
	id := exams.Exams[0].ID
	var rep struct {
		Exam struct {
			Organ       string `json:"organ"`
			Model       string `json:"model"`
			Recordings  []string
			GroundTruth []struct {
				Lesion int     `json:"lesion"`
				SeenS  float64 `json:"seen_s"`
			} `json:"ground_truth"`
			StudyUID string `json:"study_uid"`
			PACS     *struct {
				State     string `json:"state"`
				LastError string `json:"last_error"`
			} `json:"pacs"`
		} `json:"exam"`
		Findings []struct {
			N        int          `json:"n"`
			Auto     bool         `json:"auto"`
			Box      [4]float64   `json:"box"`
			SizeMM   *[2]float64  `json:"size_mm"`
			Measured string       `json:"measured"`
			Calipers *calipersMM  `json:"calipers"`
			Truth    []truthBoxMM `json:"truth"`
		} `json:"findings"`
	}
	getJSON(t, s.base+"/api/exams/"+id+"/report.json", s.token, &rep)
	if rep.Exam.Organ != "thyroid" || !strings.HasSuffix(rep.Exam.Model, "thyroid.onnx") || len(rep.Exam.Recordings) == 0 {
		t.Errorf("exam %+v", rep.Exam)
	}
	perLesion := map[int]int{}
	for _, f := range rep.Findings {
		lesion, tb := matchTruth(f.Box, f.Truth)
		if lesion == 0 {
			t.Errorf("finding %d (%v) is on no phantom lesion", f.N, f.Box)
			continue
		}
		perLesion[lesion]++
		if f.SizeMM == nil || tb.SizeMM == nil {
			t.Errorf("finding %d has no size in mm", f.N)
			continue
		}
		for i := range 2 {
			if math.Abs(f.SizeMM[i]-tb.SizeMM[i]) > 0.1*tb.SizeMM[i] {
				t.Errorf("finding %d: %v mm, ground truth %v mm", f.N, *f.SizeMM, *tb.SizeMM)
				break
			}
		}
		if f.Measured != "outline" || !f.Calipers.ok() || !tb.Calipers.ok() {
			t.Errorf("finding %d: measured on the %s, calipers %v, ground truth's %v", f.N, f.Measured, f.Calipers, tb.Calipers)
		} else if math.Abs(*f.Calipers.LongMM / *tb.Calipers.LongMM - 1) > 0.1 || math.Abs(*f.Calipers.ShortMM / *tb.Calipers.ShortMM - 1) > 0.1 {
			t.Errorf("finding %d: calipers %s, ground truth %s (more than 10%% off)", f.N, f.Calipers, tb.Calipers)
		}
		t.Logf("finding %d: lesion %d, %v mm, calipers %s (ground truth %v mm, calipers %s)", f.N, lesion, *f.SizeMM, f.Calipers, *tb.SizeMM, tb.Calipers)
	}
	shown := 0
	for _, g := range rep.Exam.GroundTruth {
		if g.SeenS < 1 {
			continue
		}
		shown++
		if perLesion[g.Lesion] != 1 {
			t.Errorf("lesion %d, in view %.1f s: %d key images, want 1", g.Lesion, g.SeenS, perLesion[g.Lesion])
		}
	}
	if shown == 0 {
		t.Errorf("no phantom lesion was in view: %+v", rep.Exam.GroundTruth)
	}

	// The PACS (the report is the exam as it ended; the exam itself
	// follows the send).
	var state string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		getJSON(t, s.base+"/api/exams/"+id, s.token, &rep.Exam)
		if p := rep.Exam.PACS; p != nil {
			if state = p.State + " " + p.LastError; p.State == "sent" {
				break
			}
		}
	}
	if !strings.HasPrefix(state, "sent") {
		t.Fatalf("PACS: %q", state)
	}
	counts := map[string]float64{}
	for _, se := range orthanc.QIDO(t, "/studies/"+rep.Exam.StudyUID+"/series?includefield=00201209") {
		mod, _ := se["00080060"].Value[0].(string)
		n, _ := se["00201209"].Value[0].(float64)
		counts[mod] += n
	}
	if counts["US"] != float64(len(rep.Findings)+len(rep.Exam.Recordings)) || counts["SR"] != 1 {
		t.Errorf("Orthanc holds %v for %d key images, %d cines and the report", counts, len(rep.Findings), len(rep.Exam.Recordings))
	}

	// The download, through dciodvfy.
	req, _ := http.NewRequest("GET", s.base+"/api/exams/"+id+"/dicom.zip", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	zr, err := zip.NewReader(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatalf("dicom.zip: %d: %v", resp.StatusCode, err)
	}
	errLine := regexp.MustCompile(`(?m)^Error - .*$`)
	for _, f := range zr.File {
		rc, _ := f.Open()
		b, _ := io.ReadAll(rc)
		rc.Close()
		p := filepath.Join(t.TempDir(), filepath.Base(f.Name))
		os.WriteFile(p, b, 0o600)
		o, _ := exec.Command("dciodvfy", "-new", p).CombinedOutput()
		if errs := errLine.FindAllString(string(o), -1); len(errs) > 0 {
			t.Errorf("%s: dciodvfy: %s", f.Name, strings.Join(errs, "; "))
		}
	}
	t.Logf("DICOM: %d objects, %.1f MB; Orthanc series: %v", len(zr.File), float64(len(body))/1e6, counts)
}

type truthBoxMM struct {
	Lesion   int         `json:"lesion"`
	Box      [4]float64  `json:"box"`
	SizeMM   *[2]float64 `json:"size_mm"`
	Calipers *calipersMM `json:"calipers"`
}

// calipersMM are a lesion's long and short axis in mm.
type calipersMM struct {
	LongMM  *float64 `json:"long_mm"`
	ShortMM *float64 `json:"short_mm"`
}

func (c *calipersMM) ok() bool {
	return c != nil && c.LongMM != nil && c.ShortMM != nil && *c.LongMM > 0 && *c.ShortMM > 0
}

func (c *calipersMM) String() string {
	if !c.ok() {
		return "none"
	}
	return fmt.Sprintf("%.1f×%.1f mm", *c.LongMM, *c.ShortMM)
}

// matchTruth is the ground-truth lesion box overlaps most (IoU ≥ 0.3).
func matchTruth(box [4]float64, truth []truthBoxMM) (int, truthBoxMM) {
	best, bestIoU := truthBoxMM{}, 0.3
	for _, tb := range truth {
		ix := math.Min(box[0]+box[2], tb.Box[0]+tb.Box[2]) - math.Max(box[0], tb.Box[0])
		iy := math.Min(box[1]+box[3], tb.Box[1]+tb.Box[3]) - math.Max(box[1], tb.Box[1])
		if ix <= 0 || iy <= 0 {
			continue
		}
		in := ix * iy
		if v := in / (box[2]*box[3] + tb.Box[2]*tb.Box[3] - in); v >= bestIoU {
			best, bestIoU = tb, v
		}
	}
	return best.Lesion, best
}

func lastPanel(res map[string]any) any {
	p, _ := res["panel"].([]any)
	if len(p) == 0 {
		return nil
	}
	return p[len(p)-1]
}

func getJSON(t *testing.T, u, tok string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, v) != nil {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
}
