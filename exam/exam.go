// Package exam is the unit a sonographer works in: one patient's scan with
// an organ preset, from Start to End. The recording, the key images (picked
// from the detector's persistent tracks, or captured by hand), the experts'
// verdicts and the report belong to an exam. Exams live on disk beside the
// library, written so that a crash or restart mid-exam loses no finished key
// image and the exam can still be ended afterwards.
package exam

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"sonolive/overlay"
)

// Errors callers map to HTTP statuses.
var (
	ErrNotFound = errors.New("no such exam")
	// ErrOpen: the source already has an open exam.
	ErrOpen = errors.New("an exam is already open on this source")
	// ErrEnded: the exam has ended and takes no more changes.
	ErrEnded = errors.New("the exam has ended")
	ErrBad   = errors.New("bad exam request")
)

// Exam is one patient's scan on one source.
type Exam struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	// Organ is the preset the exam runs (breast, thyroid): it chose the
	// model.
	Organ string `json:"organ"`
	// Side is the breast scanned (left, right); empty for other organs.
	Side string `json:"side,omitempty"`
	// Label and Accession identify the patient locally. They are never
	// drawn into the video and reach experts only when Share is set.
	Label     string `json:"label,omitempty"`
	Accession string `json:"accession,omitempty"`
	Share     bool   `json:"share,omitempty"`
	// Model is the detector that ran, name and version.
	Model        string `json:"model,omitempty"`
	ModelVersion string `json:"model_version,omitempty"`
	// ModelCalibrated: the model's malignancy output is a calibrated
	// probability; only then is an AI risk shown.
	ModelCalibrated bool       `json:"model_calibrated,omitempty"`
	Started         time.Time  `json:"started"`
	Ended           *time.Time `json:"ended,omitempty"`
	// Recordings are the library recordings (parts) made during the exam.
	Recordings []string `json:"recordings"`
	// CalibrationMM is the pixel size set by hand on the page (two marks
	// of the machine's depth scale), for sources that do not carry one.
	CalibrationMM float64 `json:"calibration_mm,omitempty"`
	// StudyUID is the exam's DICOM study, set at its first export.
	StudyUID string `json:"study_uid,omitempty"`
	// PACS is where sending the exam to the PACS stands.
	PACS *PACSState `json:"pacs,omitempty"`
	// Tags are the teacher's (organ, finding type, difficulty).
	Tags []string `json:"tags,omitempty"`
	// GroundTruth is, for a source that knows it (the phantom), how long
	// each lesion was in view during the exam: what the findings are
	// judged against.
	GroundTruth []LesionSeen `json:"ground_truth,omitempty"`
}

// LesionSeen is one ground-truth lesion's time in view.
type LesionSeen struct {
	Lesion int     `json:"lesion"`
	SeenS  float64 `json:"seen_s"`
}

// Open reports whether the exam is still going.
func (e Exam) Open() bool { return e.Ended == nil }

// Shared is e as experts may see it: without the patient's label unless
// the sonographer allowed it.
func (e Exam) Shared() Exam {
	if !e.Share {
		e.Label, e.Accession = "", ""
	}
	e.Recordings = append([]string(nil), e.Recordings...)
	return e
}

// Start is what a sonographer gives when starting an exam.
type Start struct {
	Organ     string `json:"organ"`
	Side      string `json:"side,omitempty"`
	Label     string `json:"label,omitempty"`
	Accession string `json:"accession,omitempty"`
	Share     bool   `json:"share,omitempty"`
}

// maxText bounds free text (labels, notes), in runes.
const maxText = 200

// Check validates a start request against the organs on offer.
func (s Start) Check(organs []string) error {
	ok := false
	for _, o := range organs {
		ok = ok || o == s.Organ
	}
	if !ok {
		return fmt.Errorf("%w: organ %q (have %s)", ErrBad, s.Organ, strings.Join(organs, ", "))
	}
	switch {
	case s.Side != "" && s.Organ != "breast":
		return fmt.Errorf("%w: side is for breast exams", ErrBad)
	case s.Side != "" && s.Side != "left" && s.Side != "right":
		return fmt.Errorf("%w: side %q (left or right)", ErrBad, s.Side)
	}
	for _, t := range []string{s.Label, s.Accession} {
		if err := checkText(t); err != nil {
			return err
		}
	}
	// The accession goes to the PACS as it is: DICOM's AccessionNumber
	// (SH) holds 16 characters, and a cut one could name another order.
	if utf8.RuneCountInString(s.Accession) > 16 || strings.Contains(s.Accession, "\\") {
		return fmt.Errorf("%w: accession: at most 16 characters, no backslash", ErrBad)
	}
	return nil
}

func checkText(t string) error {
	if !utf8.ValidString(t) || utf8.RuneCountInString(t) > maxText || strings.ContainsAny(t, "\x00\r\n") {
		return fmt.Errorf("%w: text must be one line of at most %d characters", ErrBad, maxText)
	}
	return nil
}

// Finding is one lesion of the exam with its key image: picked by the
// AI from a persistent track, or captured by hand.
type Finding struct {
	// N numbers the exam's findings from 1, in the order they were made.
	N int `json:"n"`
	// Auto: picked from the detector's tracks; By says who captured it
	// otherwise.
	Auto bool   `json:"auto"`
	By   string `json:"by,omitempty"`
	// Tracks are the detector's track ids this finding gathers (a lesion
	// scanned past again gets a new track).
	Tracks []uint64 `json:"tracks,omitempty"`
	// At is the key image's capture time, Seq its frame number.
	At     time.Time `json:"at"`
	Seq    uint64    `json:"seq"`
	Width  int       `json:"width"`
	Height int       `json:"height"`
	// The finding on the key image: its box, class, score, malignancy
	// output and size (mm, when the pixel size is known).
	Box        overlay.BoxMeta `json:"box"`
	Class      string          `json:"class,omitempty"`
	Score      float64         `json:"score,omitempty"`
	Malignancy *float64        `json:"malignancy,omitempty"`
	// SizeMM is the lesion's width and depth in millimetres: the extent
	// (MeasuredBox) of its outline (Measured "outline"), else of its own
	// boundary found around the box ("boundary"), else of the detector's
	// box ("box").
	SizeMM      *[2]float64      `json:"size_mm,omitempty"`
	Measured    string           `json:"measured,omitempty"`
	MeasuredBox *overlay.BoxMeta `json:"measured_box,omitempty"`
	// Calipers are the long and short axis on the outline (Measured
	// "outline"), with taller-than-wide and solidity: what the report gives
	// as the lesion's size.
	Calipers *overlay.CalipersMeta `json:"calipers,omitempty"`
	// SpacingMM is the pixel size the size was measured with, and where
	// it came from: the source (DICOM, OpenIGTLink, phantom) or a
	// calibration on the page.
	SpacingMM   *[2]float64 `json:"spacing_mm,omitempty"`
	SpacingFrom string      `json:"spacing_from,omitempty"`
	Location    Location    `json:"location"`
	// Verdict is the expert's latest read (agree, disagree, unsure) and
	// category, when one was given on a track of this finding.
	Verdict *Verdict `json:"verdict,omitempty"`
	// Truth is the ground truth on the key image when the source knows it
	// (the phantom): how tests judge the pick and the size.
	Truth []TruthBox `json:"truth,omitempty"`
	// Updated is when the key image was last replaced by a better one.
	Updated time.Time `json:"updated"`
}

// TruthBox is a ground-truth lesion on a key image.
type TruthBox struct {
	Lesion int             `json:"lesion"`
	Box    overlay.BoxMeta `json:"box"`
	SizeMM *[2]float64     `json:"size_mm,omitempty"`
	// Calipers are the lesion's own, when the source knows its outline.
	Calipers *overlay.CalipersMeta `json:"calipers,omitempty"`
}

// Location is where the sonographer says the lesion is.
type Location struct {
	// Breast: clock position (1..12) and distance from the nipple (cm).
	Clock    int     `json:"clock,omitempty"`
	NippleCM float64 `json:"nipple_cm,omitempty"`
	// Thyroid: lobe (left, right, isthmus) and third (upper, middle,
	// lower).
	Lobe  string `json:"lobe,omitempty"`
	Third string `json:"third,omitempty"`
	Note  string `json:"note,omitempty"`
}

// Check validates a location.
func (l Location) Check() error {
	switch {
	case l.Clock < 0 || l.Clock > 12:
		return fmt.Errorf("%w: clock %d (1 to 12)", ErrBad, l.Clock)
	case !(l.NippleCM >= 0 && l.NippleCM <= 30):
		return fmt.Errorf("%w: distance from the nipple %v cm (0 to 30)", ErrBad, l.NippleCM)
	case !oneOf(l.Lobe, "", "left", "right", "isthmus"):
		return fmt.Errorf("%w: lobe %q (left, right or isthmus)", ErrBad, l.Lobe)
	case !oneOf(l.Third, "", "upper", "middle", "lower"):
		return fmt.Errorf("%w: third %q (upper, middle or lower)", ErrBad, l.Third)
	}
	return checkText(l.Note)
}

// String is the location as a report line ("10 o'clock, 3 cm from the
// nipple"; "left lobe, lower third").
func (l Location) String() string {
	var parts []string
	if l.Clock > 0 {
		parts = append(parts, fmt.Sprintf("%d o'clock", l.Clock))
	}
	if l.NippleCM > 0 {
		parts = append(parts, fmt.Sprintf("%g cm from the nipple", l.NippleCM))
	}
	if l.Lobe != "" {
		if l.Lobe == "isthmus" {
			parts = append(parts, "isthmus")
		} else {
			parts = append(parts, l.Lobe+" lobe")
		}
	}
	if l.Third != "" {
		parts = append(parts, l.Third+" third")
	}
	if l.Note != "" {
		parts = append(parts, l.Note)
	}
	return strings.Join(parts, ", ")
}

func oneOf(s string, set ...string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}

// Verdict is an expert's read of a finding.
type Verdict struct {
	Verdict  string    `json:"verdict"`
	Category string    `json:"category,omitempty"`
	Note     string    `json:"note,omitempty"`
	By       string    `json:"by,omitempty"`
	At       time.Time `json:"at"`
}

var idRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[a-z0-9_-]{1,32}-[0-9a-f]{4}$`)

// ValidID reports whether id is an exam id (and so safe in a path).
func ValidID(id string) bool { return idRE.MatchString(id) }

// SourceOf is the source id an exam id names, "" for no exam id.
func SourceOf(id string) string {
	if !ValidID(id) {
		return ""
	}
	rest := id[strings.IndexByte(id, '-')+1:]
	return rest[:strings.LastIndexByte(rest, '-')]
}

var tagRE = regexp.MustCompile(`^[a-z0-9][a-z0-9 _:/.-]{0,39}$`)

// CleanTags checks a case's teaching tags (organ, finding type,
// difficulty: "thyroid", "finding:cyst", "difficulty:easy"): lower case,
// at most 20 of 40 characters, duplicates dropped.
func CleanTags(tags []string) ([]string, error) {
	if len(tags) > 20 {
		return nil, fmt.Errorf("%w: at most 20 tags", ErrBad)
	}
	out := []string{}
	seen := map[string]bool{}
	for _, t := range tags {
		t = strings.TrimSpace(strings.ToLower(t))
		if !tagRE.MatchString(t) {
			return nil, fmt.Errorf("%w: tag %q (letters, digits, space and _:/.-, at most 40)", ErrBad, t)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}
