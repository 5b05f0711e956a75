package exam

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sonolive/internal/durable"
)

// Disclaimer is printed on every report and page that shows AI output.
const Disclaimer = "AI assists a clinician; it is not a diagnosis. Every finding must be confirmed by a qualified clinician."

// Report is an ended (or running) exam as handed to the patient and the
// PACS: report.json, and report.html, which prints cleanly to PDF.
type Report struct {
	Exam     Exam      `json:"exam"`
	Findings []Finding `json:"findings"`
	// DurationS is Started to Ended (to now while open).
	DurationS  float64   `json:"duration_s"`
	Generated  time.Time `json:"generated"`
	Disclaimer string    `json:"disclaimer"`
	// AIRisk says whether the model gives a calibrated risk; without one
	// the report says "AI risk: not available".
	AIRisk string `json:"ai_risk"`
}

// BuildReport gathers an exam's report from the store.
func (s *Store) BuildReport(id string, now time.Time) (Report, error) {
	e, err := s.Get(id)
	if err != nil {
		return Report{}, err
	}
	fs, err := s.Findings(id)
	if err != nil {
		return Report{}, err
	}
	end := now
	if e.Ended != nil {
		end = *e.Ended
	}
	r := Report{Exam: e, Findings: fs, DurationS: round1(end.Sub(e.Started).Seconds()), Generated: now.UTC(),
		Disclaimer: Disclaimer, AIRisk: "not available"}
	if e.ModelCalibrated {
		r.AIRisk = "calibrated malignancy probability"
	}
	return r, nil
}

// Shared is the report without the patient's label unless the exam
// allows it (for experts, teachers and students).
func (r Report) Shared() Report {
	r.Exam = r.Exam.Shared()
	return r
}

// ErrReport: the exam ended, but its report files were not written.
var ErrReport = errors.New("the exam ended but its report was not written")

// Finish ends an open exam, notes the ground truth seen during it (nil
// for sources without truth), and writes its report files. An error
// wrapping ErrReport means the exam did end.
func (s *Store) Finish(id string, truth []LesionSeen, at time.Time) (Exam, error) {
	e, err := s.Update(id, true, func(e *Exam) error {
		t := at.UTC()
		e.Ended = &t
		if truth != nil {
			e.GroundTruth = truth
		}
		return nil
	})
	if err != nil {
		return e, err
	}
	if err := s.WriteReportFiles(id); err != nil {
		return e, fmt.Errorf("%w: %w", ErrReport, err)
	}
	return e, nil
}

// WriteReportFiles writes an exam's report.json and report.html as it
// stands.
func (s *Store) WriteReportFiles(id string) error {
	r, err := s.BuildReport(id, time.Now())
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return s.WriteReport(r, append(b, '\n'))
}

// WriteReport writes report.json and report.html into the exam's
// directory (End exam does, so the ended exam's report is a file).
func (s *Store) WriteReport(r Report, js []byte) error {
	dir := filepath.Join(s.dir, r.Exam.ID)
	if err := durable.WriteFile(filepath.Join(dir, "report.json"), js, fileMode); err != nil {
		return fmt.Errorf("exams: %w", err)
	}
	return durable.Write(filepath.Join(dir, "report.html"), fileMode, func(w io.Writer) error {
		return s.RenderHTML(w, r)
	})
}

// ReportFile is the path of a written report file (report.json or
// report.html), ErrNotFound before the exam has ended.
func (s *Store) ReportFile(id, name string) (string, error) {
	if name != "report.json" && name != "report.html" {
		return "", ErrNotFound
	}
	p, err := s.path(id, name)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", ErrNotFound
	}
	return p, nil
}

// SizeText says how big the finding is and how it was measured: the long
// and short axis of the calipers on the lesion's outline when it has one,
// else the width and depth of its boundary or box. times is the
// multiplication sign ("x" where text must stay ASCII, as in DICOM).
func (f Finding) SizeText(times string) string {
	if f.SizeMM == nil {
		return "not measured (no pixel size: calibrate on the page)"
	}
	var s string
	switch c := f.Calipers; {
	case c != nil && c.LongMM != nil && c.ShortMM != nil:
		s = fmt.Sprintf("%.1f %s %.1f mm (long %s short axis, calipers on the AI outline)", *c.LongMM, times, *c.ShortMM, times)
		if c.TallerThanWide {
			s += ", taller than wide"
		}
	case f.Measured == "boundary":
		s = fmt.Sprintf("%.1f %s %.1f mm (width %s depth of the lesion's boundary)", f.SizeMM[0], times, f.SizeMM[1], times)
	default:
		s = fmt.Sprintf("%.1f %s %.1f mm (width %s depth of the detector's box)", f.SizeMM[0], times, f.SizeMM[1], times)
	}
	if f.SpacingFrom == "calibration" {
		s += ", calibrated by hand"
	}
	return s
}

// RenderHTML writes the report as one self-contained page: the key
// images are inlined, so the file prints, mails and archives alone.
func (s *Store) RenderHTML(w io.Writer, r Report) error {
	type row struct {
		Finding
		Image    template.URL
		Size     string
		Location string
		Verdict  string
	}
	rows := make([]row, 0, len(r.Findings))
	for _, f := range r.Findings {
		rw := row{Finding: f, Size: f.SizeText("×"), Location: f.Location.String()}
		if rw.Location == "" {
			rw.Location = "not noted"
		}
		if v := f.Verdict; v != nil {
			rw.Verdict = v.Verdict
			if v.Category != "" {
				rw.Verdict += ", " + v.Category
			}
			if v.By != "" {
				rw.Verdict += " (" + v.By + ")"
			}
			if v.Note != "" {
				rw.Verdict += ": " + v.Note
			}
		}
		if b, err := os.ReadFile(filepath.Join(s.dir, r.Exam.ID, findingFile(f.N, "-annotated.jpg"))); err == nil {
			rw.Image = template.URL("data:image/jpeg;base64," + base64.StdEncoding.EncodeToString(b))
		}
		rows = append(rows, rw)
	}
	organ := r.Exam.Organ
	if organ == "" {
		organ = "ultrasound"
	}
	if r.Exam.Side != "" {
		organ += " (" + r.Exam.Side + ")"
	}
	return reportTemplate.Execute(w, map[string]any{"R": r, "Rows": rows, "Organ": strings.ToUpper(organ[:1]) + organ[1:],
		"Start": r.Exam.Started.Local().Format("2006-01-02 15:04"), "Minutes": fmt.Sprintf("%.0f", r.DurationS/60)})
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"deref": func(p *float64) float64 { return *p },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Ultrasound report — {{.Organ}} — {{.Start}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#111}
h1{font-size:1.5em;margin:0 0 .2em}
table{border-collapse:collapse;width:100%;margin:1em 0}
td,th{border:1px solid #bbb;padding:.4em;vertical-align:top;text-align:left}
th{background:#eee}
img{max-width:320px;display:block}
.meta td{border:none;padding:.1em .8em .1em 0}
.disclaimer{border:2px solid #a00;padding:.6em;font-weight:bold}
.muted{color:#555}
@media print{body{margin:1cm}tr{page-break-inside:avoid}a{color:inherit;text-decoration:none}}
</style></head><body>
<h1>Ultrasound examination: {{.Organ}}</h1>
<table class="meta">
{{if .R.Exam.Label}}<tr><td>Patient</td><td>{{.R.Exam.Label}}</td></tr>{{end}}
{{if .R.Exam.Accession}}<tr><td>Accession</td><td>{{.R.Exam.Accession}}</td></tr>{{end}}
<tr><td>Started</td><td>{{.Start}} ({{.Minutes}} min)</td></tr>
<tr><td>Status</td><td>{{if .R.Exam.Ended}}ended{{else}}in progress{{end}}</td></tr>
<tr><td>Source</td><td>{{.R.Exam.Source}}</td></tr>
<tr><td>AI model</td><td>{{if .R.Exam.Model}}{{.R.Exam.Model}}{{if .R.Exam.ModelVersion}} v{{.R.Exam.ModelVersion}}{{end}}{{else}}none{{end}}</td></tr>
<tr><td>Exam id</td><td class="muted">{{.R.Exam.ID}}</td></tr>
</table>
<p class="disclaimer">{{.R.Disclaimer}}</p>
<h2>Findings ({{len .Rows}})</h2>
{{if .Rows}}<table>
<tr><th>#</th><th>Key image</th><th>Size</th><th>Location</th><th>AI</th><th>Expert</th></tr>
{{range .Rows}}<tr>
<td>{{.N}}</td>
<td>{{if .Image}}<img src="{{.Image}}" alt="finding {{.N}}">{{end}}</td>
<td>{{.Size}}</td>
<td>{{.Location}}</td>
<td>{{if .Auto}}found by AI{{else}}captured by {{.By}}{{end}}{{if .Class}}<br>{{.Class}}{{end}}{{if .Score}}, score {{printf "%.2f" .Score}}{{end}}<br>AI risk: {{if and $.R.Exam.ModelCalibrated .Malignancy}}{{printf "%.2f" (deref .Malignancy)}}{{else}}not available{{end}}</td>
<td>{{if .Verdict}}{{.Verdict}}{{else}}<span class="muted">none</span>{{end}}</td>
</tr>{{end}}
</table>{{else}}<p>No findings were kept.</p>{{end}}
<p class="muted">Generated {{.R.Generated.Format "2006-01-02 15:04 MST"}} by sonolive.</p>
</body></html>
`))
