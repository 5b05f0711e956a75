package exam

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
	"gocv.io/x/gocv"

	"sonolive/capture"
	"sonolive/internal/testpeer"
	"sonolive/overlay"
)

// phantomExam is an ended breast exam with two findings whose key images
// are phantom frames, and a 3 s cine of the phantom.
func phantomExam(t *testing.T) (*Store, Exam, string) {
	t.Helper()
	return organExam(t, Start{Organ: "breast", Side: "left", Label: "Doe^Jane \\ test", Accession: "ACC-1"})
}

// organExam is phantomExam for another start.
func organExam(t *testing.T, st Start) (*Store, Exam, string) {
	t.Helper()
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := store.Create("phantom", st, Model{Name: "breast.onnx", Version: "0.2.0"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := capture.NewPhantom(capture.DefaultPhantom())
	defer p.Close()
	for i, seq := range []uint64{30, 90} {
		f := p.Render(seq)
		buf, err := gocv.IMEncode(gocv.JPEGFileExt, f.Image)
		if err != nil {
			t.Fatal(err)
		}
		pic := append([]byte(nil), buf.GetBytes()...)
		buf.Close()
		fd := Finding{Auto: i == 0, By: "sonographer", At: time.Now(), Seq: seq, Width: 640, Height: 480,
			Box: overlay.BoxMeta{100, 120, 40, 30}, Class: "lesion", Score: 0.8, SizeMM: &[2]float64{4, 3},
			SpacingMM: &[2]float64{0.1, 0.1}, SpacingFrom: "source", Tracks: []uint64{uint64(i + 1)}}
		if i == 1 {
			// Measured with calipers on the AI's outline: the SR gives its axes.
			long, short := 5.2, 2.9
			fd.Measured, fd.Calipers = "outline", &overlay.CalipersMeta{LongMM: &long, ShortMM: &short, LongPX: 52, ShortPX: 29, TallerThanWide: true}
		}
		if _, err := store.SaveFinding(e.ID, fd, pic, pic); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if _, err := store.SetVerdict(e.ID, 1, Verdict{Verdict: "agree", Category: "BI-RADS 4a", By: "Dr M", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cine := filepath.Join(t.TempDir(), "video.mp4")
	w, err := gocv.VideoWriterFile(cine, "mp4v", 30, 640, 480, true)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 90; seq++ {
		f := p.Render(seq)
		w.Write(f.Image)
		f.Close()
	}
	w.Close()
	if e, err = store.End(e.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	return store, e, cine
}

// The export is valid DICOM as dicom3tools and DCMTK read it: dciodvfy
// finds no error in any object, the key images and the cine decode, the
// cine carries the pixel size, and the report holds each finding's size.
func TestExportDICOM(t *testing.T) {
	testpeer.Need(t, "dciodvfy", "dcmdump")
	// An unpaired organ without a label: valid too.
	ts, te, tc := organExam(t, Start{Organ: "thyroid"})
	tobjs, err := ts.ExportDICOM(te.ID, ExportOptions{Cines: []string{tc}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range tobjs {
		out, _ := exec.Command("dciodvfy", "-new", filepath.Join(ts.Dir(), te.ID, "dicom", o.Name)).CombinedOutput()
		if errs := dciodvfyErrors(string(out)); len(errs) > 0 {
			t.Errorf("thyroid %s: dciodvfy:\n%s", o.Name, strings.Join(errs, "\n"))
		}
	}
	store, e, cine := phantomExam(t)
	objs, err := store.ExportDICOM(e.ID, ExportOptions{Cines: []string{cine}})
	if err != nil {
		t.Fatal(err)
	}
	var classes []string
	for _, o := range objs {
		classes = append(classes, o.Name)
		path := filepath.Join(store.Dir(), e.ID, "dicom", o.Name)
		out, _ := exec.Command("dciodvfy", "-new", path).CombinedOutput()
		if errs := dciodvfyErrors(string(out)); len(errs) > 0 {
			t.Errorf("%s: dciodvfy:\n%s", o.Name, strings.Join(errs, "\n"))
		}
		if out, err := exec.Command("dcmdump", "+E", path).CombinedOutput(); err != nil {
			t.Errorf("%s: dcmdump: %v\n%s", o.Name, err, out)
		}
		ds, err := dicom.Parse(bytes.NewReader(o.Data), int64(len(o.Data)), nil)
		if err != nil {
			t.Errorf("%s: does not parse back: %v", o.Name, err)
			continue
		}
		switch o.SOPClass {
		case sopUSMultiframe:
			n, _ := ds.FindElementByTag(tag.NumberOfFrames)
			if n == nil || dicom.MustGetStrings(n.Value)[0] != "30" {
				t.Errorf("cine frames: %v (3 s at 10 fps)", n)
			}
			if _, err := ds.FindElementByTag(tag.SequenceOfUltrasoundRegions); err != nil {
				t.Errorf("cine without its pixel size: %v", err)
			}
		case sopComprehensiveSR:
			dump, _ := exec.Command("dcmdump", "+L", path).CombinedOutput()
			for _, want := range []string{"Imaging Measurement Report", "Long Axis", "4.0", "5.2", "2.9", "5.2 x 2.9 mm (long x short axis, calipers on the AI outline), taller than wide",
				"width x depth of the detector's box", "BI-RADS 4a", "Breast structure"} {
				if !strings.Contains(string(dump), want) {
					t.Errorf("the report lacks %q\n%s", want, dump)
				}
			}
		}
	}
	if strings.Join(classes, " ") != "sc-001.dcm sc-002.dcm us-001.dcm sr.dcm" {
		t.Errorf("objects %v", classes)
	}
	// Exported again: the same instances.
	again, err := store.ExportDICOM(e.ID, ExportOptions{Cines: []string{cine}})
	if err != nil || len(again) != len(objs) || again[0].SOPUID != objs[0].SOPUID {
		t.Errorf("a second export has other UIDs: %v", err)
	}
	os.Remove(cine)
}

var dciodvfyError = regexp.MustCompile(`(?m)^Error - .*$`)

// dciodvfyErrors are dciodvfy's error lines (warnings are not failures).
func dciodvfyErrors(out string) []string { return dciodvfyError.FindAllString(out, -1) }

// The exam goes to a real Orthanc over STOW-RS: with a wrong password the
// send fails, is kept with its error and retried; with the right one the
// study shows up in Orthanc's QIDO-RS with its three series and their
// instance counts.
func TestSendToOrthanc(t *testing.T) {
	orthanc := testpeer.StartOrthanc(t)
	store, e, cine := phantomExam(t)
	export := func(id string) ([]DICOMObject, error) {
		return store.ExportDICOM(id, ExportOptions{Cines: []string{cine}})
	}
	changes := make(chan Exam, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := func(password string) *Sender {
		s := NewSender(store, SenderConfig{PACS: PACS{URL: orthanc.DICOMweb, Username: orthanc.Username, Password: password},
			Export: export, OnChange: func(e Exam) { changes <- e }, Backoff: []time.Duration{200 * time.Millisecond}})
		return s
	}
	bad := run("wrong")
	bctx, bcancel := context.WithCancel(ctx)
	go bad.Run(bctx)
	if _, err := bad.Queue(e.ID); err != nil {
		t.Fatal(err)
	}
	var got Exam
	for got.PACS == nil || got.PACS.State != "failed" {
		select {
		case got = <-changes:
		case <-ctx.Done():
			t.Fatal("no failure reported")
		}
	}
	if !strings.Contains(got.PACS.LastError, "401") {
		t.Errorf("failure %+v", got.PACS)
	}
	bcancel()
	// A restart with the right password picks the failed send up.
	good := run(orthanc.Password)
	go good.Run(ctx)
	for got.PACS.State != "sent" {
		select {
		case got = <-changes:
		case <-ctx.Done():
			t.Fatalf("not sent: %+v", got.PACS)
		}
	}
	if got.PACS.Instances != 4 || got.PACS.Attempts < 2 {
		t.Errorf("sent %+v", got.PACS)
	}
	studies := orthanc.QIDO(t, "/studies?StudyInstanceUID="+got.StudyUID)
	if len(studies) != 1 {
		t.Fatalf("QIDO-RS: %d studies", len(studies))
	}
	series := orthanc.QIDO(t, "/studies/"+got.StudyUID+"/series?includefield=00201209")
	counts := map[string]float64{}
	for _, s := range series {
		mod, _ := s["00080060"].Value[0].(string)
		if n := s["00201209"].Value; len(n) > 0 {
			counts[mod+" "+s["0020000E"].Value[0].(string)[len(got.StudyUID):]], _ = n[0].(float64)
		}
	}
	want := map[string]float64{"US .1.1": 2, "US .1.2": 1, "SR .1.3": 1}
	if len(counts) != 3 || counts["US .1.1"] != 2 || counts["US .1.2"] != 1 || counts["SR .1.3"] != 1 {
		t.Errorf("series and instances in Orthanc: %v, want %v", counts, want)
	}
}

// A teaching copy has no label or accession, another study, and the top
// of every picture black.
func TestExportDeidentified(t *testing.T) {
	testpeer.Need(t, "dciodvfy")
	store, e, cine := phantomExam(t)
	clinical, err := store.ExportDICOM(e.ID, ExportOptions{Cines: []string{cine}})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := store.ExportDICOM(e.ID, ExportOptions{Cines: []string{cine}, Deidentify: true, MaskTop: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range objs {
		if strings.Contains(string(o.Data), "Doe") || strings.Contains(string(o.Data), "ACC-1") {
			t.Errorf("%s still names the patient", o.Name)
		}
		if o.SOPUID == clinical[i].SOPUID {
			t.Errorf("%s has the clinical copy's UID", o.Name)
		}
		path := filepath.Join(store.Dir(), e.ID, "teaching", o.Name)
		out, _ := exec.Command("dciodvfy", "-new", path).CombinedOutput()
		if errs := dciodvfyErrors(string(out)); len(errs) > 0 {
			t.Errorf("%s: dciodvfy:\n%s", o.Name, strings.Join(errs, "\n"))
		}
	}
	ds, err := dicom.Parse(bytes.NewReader(objs[0].Data), int64(len(objs[0].Data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	pd, _ := ds.FindElementByTag(tag.PixelData)
	px := dicom.MustGetPixelDataInfo(pd.Value)
	raw := px.UnprocessedValueData
	if raw == nil && len(px.Frames) > 0 {
		if f, err := px.Frames[0].GetNativeFrame(); err == nil {
			for _, v := range f.RawDataSlice().([]uint8) {
				raw = append(raw, v)
			}
		}
	}
	rowBytes := 640 * 3
	if len(raw) < 48*rowBytes {
		t.Fatalf("pixel data %d bytes", len(raw))
	}
	for i, v := range raw[:48*rowBytes] {
		if v != 0 {
			t.Fatalf("masked band has a non-black byte at %d (row %d)", i, i/rowBytes)
		}
	}
	if nonzero := bytes.Count(raw[48*rowBytes:], []byte{0}); nonzero == len(raw)-48*rowBytes {
		t.Error("below the band the picture is black too")
	}
}
