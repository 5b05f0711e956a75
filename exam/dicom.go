package exam

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/frame"
	"github.com/suyashkumar/dicom/pkg/tag"
	"gocv.io/x/gocv"

	"sonolive/internal/durable"
)

// DICOM export of an exam, for the PACS: one study with three series —
// the key images as Secondary Capture (annotated, RGB), each recording of
// the exam as a US Multi-frame cine (JPEG baseline, at most CineFPS and
// CineFrames), and the findings as a Comprehensive SR following TID 1500
// (Measurement Report): one measurement group per finding with its size,
// site, the AI's score and the expert's verdict as text. UIDs derive from
// the exam's study UID, so sending an exam again sends the same instances.

// SOP classes and transfer syntaxes written.
const (
	sopSecondaryCapture = "1.2.840.10008.5.1.4.1.1.7"
	sopUSMultiframe     = "1.2.840.10008.5.1.4.1.1.3.1"
	sopComprehensiveSR  = "1.2.840.10008.5.1.4.1.1.88.33"
	tsExplicitLE        = "1.2.840.10008.1.2.1"
	tsJPEGBaseline      = "1.2.840.10008.1.2.4.50"
	// implementationUID names sonolive as the writer (a UUID-derived UID).
	implementationUID = "2.25.186040478960185417346512367207421387245"
)

// DICOMObject is one exported instance.
type DICOMObject struct {
	Name      string // file name: sc-001.dcm, us-001.dcm, sr.dcm
	SOPClass  string
	SOPUID    string
	SeriesUID string
	Data      []byte
}

// ExportOptions bound the export.
type ExportOptions struct {
	// Cines are the exam's recordings (video files), in order.
	Cines []string
	// CineFPS and CineFrames bound each cine object (default 10 fps and
	// 300 frames; a longer recording is sampled more sparsely).
	CineFPS    float64
	CineFrames int
	// CineWidth: cine frames wider than this are scaled down (default 640).
	CineWidth int
	// Station names the box in the PACS (default "sonolive").
	Station string
	// Deidentify makes a teaching copy: no label or accession, a new
	// study UID, and the top MaskTop of every picture (the scanner's
	// burned-in header: name, id, date) painted black.
	Deidentify bool
	MaskTop    float64
	// OnSkip hears about recordings left out (unreadable).
	OnSkip func(error)
}

func (o ExportOptions) withDefaults() ExportOptions {
	if o.CineFPS <= 0 {
		o.CineFPS = 10
	}
	if o.CineFrames <= 0 {
		o.CineFrames = 300
	}
	if o.CineWidth <= 0 {
		o.CineWidth = 640
	}
	if o.Station == "" {
		o.Station = "sonolive"
	}
	return o
}

// newStudyUID is a UUID-derived UID (2.25.<128-bit decimal>).
func newStudyUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80
	return "2.25." + new(big.Int).SetBytes(b[:]).String()
}

// studyUID gives the exam its study UID the first time it is exported.
func (s *Store) studyUID(id string) (Exam, error) {
	return s.Update(id, false, func(e *Exam) error {
		if e.StudyUID == "" {
			e.StudyUID = newStudyUID()
		}
		return nil
	})
}

// ExportDICOM writes the exam as DICOM. The objects are also kept in the
// exam's dicom/ directory (teaching/ for a de-identified copy).
func (s *Store) ExportDICOM(id string, opts ExportOptions) ([]DICOMObject, error) {
	opts = opts.withDefaults()
	if !(opts.MaskTop >= 0 && opts.MaskTop <= 0.5) {
		return nil, fmt.Errorf("%w: mask %.2f of the height (0 to 0.5)", ErrBad, opts.MaskTop)
	}
	e, err := s.studyUID(id)
	if err != nil {
		return nil, err
	}
	sub := "dicom"
	if opts.Deidentify {
		e.Label, e.Accession, e.StudyUID = "", "", newStudyUID()
		sub = "teaching"
	}
	fs, err := s.Findings(id)
	if err != nil {
		return nil, err
	}
	x := exporter{e: e, opts: opts, now: time.Now()}
	var out []DICOMObject
	for _, f := range fs {
		// Numbered by the finding, so a UID names one image even after
		// another finding was deleted.
		o, err := x.keyImage(filepath.Join(s.dir, id, findingFile(f.N, "-annotated.jpg")), f, f.N)
		if err != nil {
			return nil, fmt.Errorf("DICOM key image %d: %w", f.N, err)
		}
		out = append(out, o)
	}
	var cineErr error
	for i, path := range opts.Cines {
		o, err := x.cine(path, i+1, fs)
		if err != nil {
			// One unreadable recording must not keep the exam from the
			// PACS for ever: the rest goes, the caller hears why.
			cineErr = errors.Join(cineErr, fmt.Errorf("DICOM cine %s: %w", filepath.Base(filepath.Dir(path)), err))
			continue
		}
		if o.Data != nil {
			out = append(out, o)
		}
	}
	if cineErr != nil && opts.OnSkip != nil {
		opts.OnSkip(cineErr)
	}
	sr, err := x.report(fs, out)
	if err != nil {
		return nil, fmt.Errorf("DICOM report: %w", err)
	}
	out = append(out, sr)
	dir := filepath.Join(s.dir, id, sub)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	for _, o := range out {
		if err := durable.WriteFile(filepath.Join(dir, o.Name), o.Data, fileMode); err != nil {
			return nil, fmt.Errorf("exams: %w", err)
		}
	}
	return out, nil
}

type exporter struct {
	e    Exam
	opts ExportOptions
	now  time.Time
}

// Series numbers and their UIDs.
const (
	seriesKeyImages = 1
	seriesCine      = 2
	seriesReport    = 3
)

func (x exporter) seriesUID(n int) string { return fmt.Sprintf("%s.1.%d", x.e.StudyUID, n) }
func (x exporter) instanceUID(series, n int) string {
	return fmt.Sprintf("%s.2.%d.%d", x.e.StudyUID, series, n)
}

// elems builds a data set, keeping the first error.
type elems struct {
	list []*dicom.Element
	err  error
}

func (d *elems) add(t tag.Tag, v any) *dicom.Element {
	if d.err != nil {
		return nil
	}
	e, err := dicom.NewElement(t, v)
	if err != nil {
		d.err = fmt.Errorf("element %v: %w", t, err)
		return nil
	}
	d.list = append(d.list, e)
	return e
}

func (d *elems) str(t tag.Tag, v ...string) { d.add(t, v) }
func (d *elems) num(t tag.Tag, v ...int)    { d.add(t, v) }
func (d *elems) seq(t tag.Tag, items ...[]*dicom.Element) {
	if items == nil {
		items = [][]*dicom.Element{}
	}
	for _, it := range items {
		sortElems(it)
	}
	d.add(t, items)
}

// sortElems puts a data set in tag order, as DICOM requires.
func sortElems(list []*dicom.Element) {
	sort.SliceStable(list, func(i, j int) bool {
		a, b := list[i].Tag, list[j].Tag
		return a.Group < b.Group || a.Group == b.Group && a.Element < b.Element
	})
}

// code is a coded concept: (value, scheme, meaning).
type code struct{ value, scheme, meaning string }

func (c code) item() []*dicom.Element {
	var d elems
	d.str(tag.CodeValue, c.value)
	d.str(tag.CodingSchemeDesignator, c.scheme)
	d.str(tag.CodeMeaning, c.meaning)
	return d.list
}

// header is what every object shares: SOP common, patient, study,
// series and equipment.
func (x exporter) header(d *elems, sopClass, sopUID, ts string, series int, modality, seriesDesc string) {
	e := x.e
	d.add(tag.FileMetaInformationVersion, []byte{0, 1})
	d.str(tag.MediaStorageSOPClassUID, sopClass)
	d.str(tag.MediaStorageSOPInstanceUID, sopUID)
	d.str(tag.TransferSyntaxUID, ts)
	d.str(tag.ImplementationClassUID, implementationUID)
	d.str(tag.SpecificCharacterSet, "ISO_IR 192")
	d.str(tag.SOPClassUID, sopClass)
	d.str(tag.SOPInstanceUID, sopUID)
	d.str(tag.InstanceCreationDate, x.now.Format("20060102"))
	d.str(tag.InstanceCreationTime, x.now.Format("150405"))
	// Patient: sonolive keeps only the sonographer's label and the
	// accession; the PACS gets them (its own records say the rest).
	d.str(tag.PatientName, personName(e.Label))
	pid := e.Accession
	switch {
	case x.opts.Deidentify:
		pid = "TEACH-" + e.StudyUID[len(e.StudyUID)-8:]
		d.str(tag.PatientIdentityRemoved, "YES")
		d.str(tag.DeidentificationMethod, fmt.Sprintf("sonolive: no label or accession; top %.0f%% masked", 100*x.opts.MaskTop))
	case pid == "":
		pid = "SL-" + e.ID[:15]
	}
	d.str(tag.PatientID, dicomText(pid, 64))
	d.str(tag.PatientBirthDate)
	d.str(tag.PatientSex)
	// Study.
	d.str(tag.StudyInstanceUID, e.StudyUID)
	d.str(tag.StudyDate, e.Started.Local().Format("20060102"))
	d.str(tag.StudyTime, e.Started.Local().Format("150405"))
	d.str(tag.ReferringPhysicianName)
	d.str(tag.StudyID, dicomText(strings.ReplaceAll(e.ID[:15], "T", ""), 16))
	d.str(tag.AccessionNumber, dicomText(e.Accession, 16))
	desc := "US " + strings.ToUpper(e.Organ)
	if e.Side != "" {
		desc += " " + strings.ToUpper(e.Side)
	}
	d.str(tag.StudyDescription, desc)
	// Series.
	d.str(tag.Modality, modality)
	d.str(tag.SeriesInstanceUID, x.seriesUID(series))
	d.str(tag.SeriesNumber, strconv.Itoa(series))
	d.str(tag.SeriesDescription, seriesDesc)
	if modality != "SR" {
		// Type 2C: present (empty when unknown) for a paired organ, absent
		// for others.
		if e.Organ == "breast" {
			d.str(tag.Laterality, map[string]string{"left": "L", "right": "R"}[e.Side])
		}
		if part := map[string]string{"breast": "BREAST", "thyroid": "THYROID"}[e.Organ]; part != "" {
			d.str(tag.BodyPartExamined, part)
		}
	}
	// Equipment.
	d.str(tag.Manufacturer, "sonolive")
	d.str(tag.StationName, dicomText(x.opts.Station, 16))
	d.str(tag.SoftwareVersions, "sonolive")
}

// keyImage is a finding's annotated key image as Secondary Capture.
func (x exporter) keyImage(path string, f Finding, n int) (DICOMObject, error) {
	img := gocv.IMRead(path, gocv.IMReadColor)
	defer img.Close()
	if img.Empty() {
		return DICOMObject{}, fmt.Errorf("cannot read %s", path)
	}
	x.mask(&img)
	rgb := gocv.NewMat()
	defer rgb.Close()
	gocv.CvtColor(img, &rgb, gocv.ColorBGRToRGB)
	uid := x.instanceUID(seriesKeyImages, n)
	var d elems
	x.header(&d, sopSecondaryCapture, uid, tsExplicitLE, seriesKeyImages, "US", "Key images (sonolive)")
	d.str(tag.ConversionType, "WSD")
	d.str(tag.InstanceNumber, strconv.Itoa(n))
	d.str(tag.PatientOrientation)
	d.str(tag.ContentDate, f.At.Local().Format("20060102"))
	d.str(tag.ContentTime, f.At.Local().Format("150405.000"))
	d.str(tag.ImageType, "DERIVED", "SECONDARY")
	d.str(tag.BurnedInAnnotation, "YES")
	d.str(tag.ImageComments, dicomText(x.findingText(f), 10240))
	x.pixelModule(&d, rgb.Rows(), rgb.Cols(), "RGB")
	px := rgb.ToBytes()
	if len(px)%2 == 1 {
		px = append(px, 0) // values have even length
	}
	if pd := d.add(tag.PixelData, dicom.PixelDataInfo{IntentionallyUnprocessed: true, UnprocessedValueData: px}); pd != nil {
		pd.RawValueRepresentation = "OB"
	}
	b, err := x.write(&d)
	return DICOMObject{Name: fmt.Sprintf("sc-%03d.dcm", n), SOPClass: sopSecondaryCapture, SOPUID: uid, SeriesUID: x.seriesUID(seriesKeyImages), Data: b}, err
}

// mask paints the top MaskTop of img black (de-identified copies).
func (x exporter) mask(img *gocv.Mat) {
	if !x.opts.Deidentify || x.opts.MaskTop <= 0 {
		return
	}
	h := int(math.Ceil(float64(img.Rows()) * x.opts.MaskTop))
	gocv.Rectangle(img, image.Rect(0, 0, img.Cols(), h), color.RGBA{}, -1)
}

func (x exporter) pixelModule(d *elems, rows, cols int, photometric string) {
	d.num(tag.SamplesPerPixel, 3)
	d.str(tag.PhotometricInterpretation, photometric)
	d.num(tag.PlanarConfiguration, 0)
	d.num(tag.Rows, rows)
	d.num(tag.Columns, cols)
	d.num(tag.BitsAllocated, 8)
	d.num(tag.BitsStored, 8)
	d.num(tag.HighBit, 7)
	d.num(tag.PixelRepresentation, 0)
}

// findingText describes a finding in words (image comments, SR text).
func (x exporter) findingText(f Finding) string {
	var parts []string
	parts = append(parts, fmt.Sprintf("Finding %d", f.N))
	if f.SizeMM != nil {
		parts = append(parts, f.SizeText("x"))
	}
	if f.Auto {
		parts = append(parts, fmt.Sprintf("found by AI (%s %s), score %.2f", x.e.Model, x.e.ModelVersion, f.Score))
	} else {
		parts = append(parts, "captured by "+f.By)
	}
	if l := f.Location.String(); l != "" {
		parts = append(parts, l)
	}
	if v := f.Verdict; v != nil {
		parts = append(parts, "expert: "+strings.TrimSpace(v.Verdict+" "+v.Category+" "+v.Note))
	}
	parts = append(parts, Disclaimer)
	return strings.Join(parts, "; ")
}

// cine turns one recording into a US Multi-frame object: frames sampled
// at most CineFPS, at most CineFrames, scaled to CineWidth, JPEG
// baseline. A recording that yields no frame gives an empty object.
func (x exporter) cine(path string, n int, fs []Finding) (DICOMObject, error) {
	vc, err := gocv.VideoCaptureFile(path)
	if err != nil {
		return DICOMObject{}, err
	}
	defer vc.Close()
	srcFPS := vc.Get(gocv.VideoCaptureFPS)
	count := vc.Get(gocv.VideoCaptureFrameCount)
	if !(srcFPS > 0 && srcFPS < 1000) {
		srcFPS = 30
	}
	fps := x.opts.CineFPS
	if count > 0 {
		// A long recording is sampled more sparsely to fit CineFrames.
		fps = math.Min(fps, float64(x.opts.CineFrames)*srcFPS/count)
	}
	step := math.Max(1, srcFPS/fps)
	var jpegs [][]byte
	var size image.Point
	var origW int
	m, small := gocv.NewMat(), gocv.NewMat()
	defer m.Close()
	defer small.Close()
	next := 0.0
	for i := 0; len(jpegs) < x.opts.CineFrames && vc.Read(&m); i++ {
		if m.Empty() || float64(i) < next {
			continue
		}
		next += step
		x.mask(&m)
		img := m
		if origW == 0 {
			origW = m.Cols()
		}
		if m.Cols() > x.opts.CineWidth {
			h := int(math.Round(float64(m.Rows()) * float64(x.opts.CineWidth) / float64(m.Cols())))
			gocv.Resize(m, &small, image.Pt(x.opts.CineWidth, h&^1), 0, 0, gocv.InterpolationArea)
			img = small
		}
		if size == (image.Point{}) {
			size = image.Pt(img.Cols(), img.Rows())
		} else if size != image.Pt(img.Cols(), img.Rows()) {
			break // one object, one frame size
		}
		buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, img, []int{gocv.IMWriteJpegQuality, 85})
		if err != nil {
			if buf != nil {
				buf.Close()
			}
			return DICOMObject{}, err
		}
		jpegs = append(jpegs, append([]byte(nil), buf.GetBytes()...))
		buf.Close()
	}
	if len(jpegs) == 0 {
		return DICOMObject{}, nil
	}
	frameMS := 1000 * step / srcFPS
	uid := x.instanceUID(seriesCine, n)
	var d elems
	x.header(&d, sopUSMultiframe, uid, tsJPEGBaseline, seriesCine, "US", "Cine (sonolive)")
	d.str(tag.InstanceNumber, strconv.Itoa(n))
	d.str(tag.PatientOrientation)
	d.str(tag.ContentDate, x.e.Started.Local().Format("20060102"))
	d.str(tag.ContentTime, x.e.Started.Local().Format("150405"))
	d.str(tag.ImageType, "DERIVED", "PRIMARY")
	d.str(tag.LossyImageCompression, "01")
	d.str(tag.LossyImageCompressionMethod, "ISO_10918_1")
	// The scanner's screen, its header included (and the boxes when
	// burn-in was on): de-identification tools must look.
	d.str(tag.BurnedInAnnotation, "YES")
	d.str(tag.NumberOfFrames, strconv.Itoa(len(jpegs)))
	d.add(tag.FrameIncrementPointer, []int{int(tag.FrameTime.Group), int(tag.FrameTime.Element)})
	d.str(tag.FrameTime, strconv.FormatFloat(frameMS, 'f', 3, 64))
	d.str(tag.CineRate, strconv.Itoa(int(math.Round(1000/frameMS))))
	x.pixelModule(&d, size.Y, size.X, "YBR_FULL_422")
	if sp := cineSpacing(x.e, fs); sp > 0 && origW > 0 {
		mmPerPx := sp * float64(origW) / float64(size.X)
		var r elems
		r.num(tag.RegionSpatialFormat, 1)
		r.num(tag.RegionDataType, 1)
		r.add(tag.RegionFlags, []int{0})
		r.add(tag.RegionLocationMinX0, []int{0})
		r.add(tag.RegionLocationMinY0, []int{0})
		r.add(tag.RegionLocationMaxX1, []int{size.X - 1})
		r.add(tag.RegionLocationMaxY1, []int{size.Y - 1})
		r.num(tag.PhysicalUnitsXDirection, 3)
		r.num(tag.PhysicalUnitsYDirection, 3)
		r.add(tag.PhysicalDeltaX, []float64{mmPerPx / 10})
		r.add(tag.PhysicalDeltaY, []float64{mmPerPx / 10})
		if r.err != nil {
			return DICOMObject{}, r.err
		}
		d.seq(tag.SequenceOfUltrasoundRegions, r.list)
	}
	frames := make([]*frame.Frame, len(jpegs))
	for i, j := range jpegs {
		if len(j)%2 == 1 {
			j = append(j, 0) // items have even length
		}
		frames[i] = &frame.Frame{Encapsulated: true, EncapsulatedData: frame.EncapsulatedFrame{Data: j}}
	}
	if pd := d.add(tag.PixelData, dicom.PixelDataInfo{IsEncapsulated: true, Frames: frames}); pd != nil {
		pd.RawValueRepresentation = "OB"
		pd.ValueLength = tag.VLUndefinedLength
	}
	b, err := x.write(&d)
	return DICOMObject{Name: fmt.Sprintf("us-%03d.dcm", n), SOPClass: sopUSMultiframe, SOPUID: uid, SeriesUID: x.seriesUID(seriesCine), Data: b}, err
}

// cineSpacing is the pixel size (mm) of the exam's frames: the source's,
// as its findings carry it, or the exam's calibration; 0 when unknown.
func cineSpacing(e Exam, fs []Finding) float64 {
	for _, f := range fs {
		if f.SpacingMM != nil && f.SpacingFrom == "source" && f.SpacingMM[0] == f.SpacingMM[1] {
			return f.SpacingMM[0]
		}
	}
	return e.CalibrationMM
}

// SR content item helpers.

func (x exporter) item(rel, valueType string, name code, fill func(*elems)) []*dicom.Element {
	var d elems
	if rel != "" {
		d.str(tag.RelationshipType, rel)
	}
	d.str(tag.ValueType, valueType)
	d.seq(tag.ConceptNameCodeSequence, name.item())
	if fill != nil {
		fill(&d)
	}
	if d.err != nil {
		x.fail(d.err)
	}
	return d.list
}

// fail carries an element error out of the SR builders (they run on
// fixed tags, so an error is a programming mistake caught by the tests).
func (x exporter) fail(err error) { panic(err) }

func (x exporter) container(rel string, name code, kids ...[]*dicom.Element) []*dicom.Element {
	return x.item(rel, "CONTAINER", name, func(d *elems) {
		d.str(tag.ContinuityOfContent, "SEPARATE")
		d.seq(tag.ContentSequence, kids...)
	})
}

func (x exporter) text(rel string, name code, v string) []*dicom.Element {
	return x.item(rel, "TEXT", name, func(d *elems) { d.str(tag.TextValue, dicomText(v, 10240)) })
}

func (x exporter) codeItem(rel string, name, value code) []*dicom.Element {
	return x.item(rel, "CODE", name, func(d *elems) { d.seq(tag.ConceptCodeSequence, value.item()) })
}

func (x exporter) uidItem(rel string, name code, uid string) []*dicom.Element {
	return x.item(rel, "UIDREF", name, func(d *elems) { d.str(tag.UID, uid) })
}

func (x exporter) imageItem(rel string, o DICOMObject) []*dicom.Element {
	return x.item(rel, "IMAGE", code{"260753009", "SCT", "Source"}, func(d *elems) {
		var r elems
		r.str(tag.ReferencedSOPClassUID, o.SOPClass)
		r.str(tag.ReferencedSOPInstanceUID, o.SOPUID)
		d.seq(tag.ReferencedSOPSequence, r.list)
	})
}

func (x exporter) numItem(rel string, name code, v float64, unit code, kids ...[]*dicom.Element) []*dicom.Element {
	return x.item(rel, "NUM", name, func(d *elems) {
		var m elems
		m.str(tag.NumericValue, strconv.FormatFloat(v, 'f', 1, 64))
		m.seq(tag.MeasurementUnitsCodeSequence, unit.item())
		d.seq(tag.MeasuredValueSequence, m.list)
		if len(kids) > 0 {
			d.seq(tag.ContentSequence, kids...)
		}
	})
}

var (
	codeFinding = code{"121071", "DCM", "Finding"}
	codeSite    = code{"363698007", "SCT", "Finding Site"}
	codeMM      = code{"mm", "UCUM", "millimeter"}
)

// report is the findings as a Comprehensive SR, TID 1500.
func (x exporter) report(fs []Finding, objs []DICOMObject) (o DICOMObject, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	site := map[string]code{"breast": {"76752008", "SCT", "Breast structure"}, "thyroid": {"69748006", "SCT", "Thyroid structure"}}[x.e.Organ]
	lesion := map[string]code{"breast": {"4147007", "SCT", "Mass"}, "thyroid": {"27925004", "SCT", "Nodule"}}[x.e.Organ]
	if site.value == "" {
		site, lesion = code{"123037004", "SCT", "Body structure"}, code{"27925004", "SCT", "Nodule"}
	}
	keyByN := map[int]DICOMObject{}
	var library [][]*dicom.Element
	for i, f := range fs {
		if i < len(objs) && objs[i].SOPClass == sopSecondaryCapture {
			keyByN[f.N] = objs[i]
			library = append(library, x.imageItem("CONTAINS", objs[i]))
		}
	}
	var groups [][]*dicom.Element
	for _, f := range fs {
		kids := [][]*dicom.Element{
			x.text("HAS OBS CONTEXT", code{"112039", "DCM", "Tracking Identifier"}, fmt.Sprintf("Finding %d", f.N)),
			x.uidItem("HAS OBS CONTEXT", code{"112040", "DCM", "Tracking Unique Identifier"}, fmt.Sprintf("%s.3.%d", x.e.StudyUID, f.N)),
			x.codeItem("CONTAINS", codeFinding, lesion),
			x.codeItem("HAS CONCEPT MOD", codeSite, site),
		}
		if f.SizeMM != nil {
			var src [][]*dicom.Element
			if k, ok := keyByN[f.N]; ok {
				src = append(src, x.imageItem("INFERRED FROM", k))
			}
			long, short := math.Max(f.SizeMM[0], f.SizeMM[1]), math.Min(f.SizeMM[0], f.SizeMM[1])
			if c := f.Calipers; c != nil && c.LongMM != nil && c.ShortMM != nil {
				long, short = *c.LongMM, *c.ShortMM
			}
			kids = append(kids,
				x.numItem("CONTAINS", code{"103339001", "SCT", "Long Axis"}, long, codeMM, src...),
				x.numItem("CONTAINS", code{"103340004", "SCT", "Short Axis"}, short, codeMM, src...))
		}
		kids = append(kids, x.text("CONTAINS", code{"121106", "DCM", "Comment"}, x.findingText(f)))
		groups = append(groups, x.container("CONTAINS", code{"125007", "DCM", "Measurement Group"}, kids...))
	}
	procedure := code{"363679005", "SCT", "Imaging"}
	root := [][]*dicom.Element{
		x.codeItem("HAS CONCEPT MOD", code{"121049", "DCM", "Language of Content Item and Descendants"}, code{"en", "RFC5646", "English"}),
		x.codeItem("HAS OBS CONTEXT", code{"121005", "DCM", "Observer Type"}, code{"121007", "DCM", "Device"}),
		x.uidItem("HAS OBS CONTEXT", code{"121012", "DCM", "Device Observer UID"}, implementationUID),
		x.text("HAS OBS CONTEXT", code{"121013", "DCM", "Device Observer Name"}, "sonolive "+x.e.Model+" "+x.e.ModelVersion),
		x.codeItem("HAS CONCEPT MOD", code{"121058", "DCM", "Procedure reported"}, procedure),
		x.container("CONTAINS", code{"111028", "DCM", "Image Library"}, x.container("CONTAINS", code{"126200", "DCM", "Image Library Group"}, library...)),
		x.container("CONTAINS", code{"126010", "DCM", "Imaging Measurements"}, groups...),
	}
	uid := x.instanceUID(seriesReport, 1)
	var d elems
	x.header(&d, sopComprehensiveSR, uid, tsExplicitLE, seriesReport, "SR", "Findings (sonolive, TID 1500)")
	d.seq(tag.ReferencedPerformedProcedureStepSequence)
	d.str(tag.InstanceNumber, "1")
	d.str(tag.ContentDate, x.now.Local().Format("20060102"))
	d.str(tag.ContentTime, x.now.Local().Format("150405"))
	complete := "PARTIAL"
	if x.e.Ended != nil {
		complete = "COMPLETE"
	}
	d.str(tag.CompletionFlag, complete)
	d.str(tag.VerificationFlag, "UNVERIFIED")
	d.seq(tag.PerformedProcedureCodeSequence)
	if ev := x.evidence(objs); ev != nil {
		d.seq(tag.CurrentRequestedProcedureEvidenceSequence, ev)
	}
	d.str(tag.ValueType, "CONTAINER")
	d.seq(tag.ConceptNameCodeSequence, code{"126000", "DCM", "Imaging Measurement Report"}.item())
	d.str(tag.ContinuityOfContent, "SEPARATE")
	var tmpl elems
	tmpl.str(tag.MappingResource, "DCMR")
	tmpl.str(tag.TemplateIdentifier, "1500")
	d.seq(tag.ContentTemplateSequence, tmpl.list)
	d.seq(tag.ContentSequence, root...)
	b, err := x.write(&d)
	return DICOMObject{Name: "sr.dcm", SOPClass: sopComprehensiveSR, SOPUID: uid, SeriesUID: x.seriesUID(seriesReport), Data: b}, err
}

// evidence lists the instances the report refers to, by series.
func (x exporter) evidence(objs []DICOMObject) []*dicom.Element {
	bySeries := map[string][][]*dicom.Element{}
	var order []string
	for _, o := range objs {
		if o.SOPClass != sopSecondaryCapture {
			continue
		}
		var r elems
		r.str(tag.ReferencedSOPClassUID, o.SOPClass)
		r.str(tag.ReferencedSOPInstanceUID, o.SOPUID)
		if _, ok := bySeries[o.SeriesUID]; !ok {
			order = append(order, o.SeriesUID)
		}
		bySeries[o.SeriesUID] = append(bySeries[o.SeriesUID], r.list)
	}
	if len(order) == 0 {
		return nil
	}
	sort.Strings(order)
	var series [][]*dicom.Element
	for _, uid := range order {
		var s elems
		s.str(tag.SeriesInstanceUID, uid)
		s.seq(tag.ReferencedSOPSequence, bySeries[uid]...)
		series = append(series, s.list)
	}
	var st elems
	st.str(tag.StudyInstanceUID, x.e.StudyUID)
	st.seq(tag.ReferencedSeriesSequence, series...)
	return st.list
}

func (x exporter) write(d *elems) ([]byte, error) {
	if d.err != nil {
		return nil, d.err
	}
	sortElems(d.list)
	var buf bytes.Buffer
	if err := dicom.Write(&buf, dicom.Dataset{Elements: d.list}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// personName is a label as a DICOM person name: free text goes in the
// family-name component, without the component separator.
func personName(label string) string {
	return dicomText(strings.ReplaceAll(label, "^", " "), 64)
}

// dicomText cuts s to n runes and drops characters DICOM text may not
// carry (backslash separates values).
func dicomText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\\' || r < 0x20 && r != '\n' {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > n {
		s = string(r[:n])
	}
	return s
}
