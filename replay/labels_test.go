package replay

import (
	"strings"
	"testing"
)

func TestLabels(t *testing.T) {
	verdict := func(tm, track, v, cat string) string {
		return `{"t":` + tm + `,"event":"consult","data":{"msg":"{\"type\":\"verdict\",\"track_id\":` + track +
			`,\"verdict\":\"` + v + `\",\"category\":\"` + cat + `\",\"from\":{\"viewer\":\"v2\",\"role\":\"expert\"}}"}}`
	}
	timeline := strings.Join([]string{
		`{"t":1.0,"seq":30,"detections":[{"box":[10,20,30,40],"class":"lesion","score":0.8,"track_id":3}]}`,
		`{"t":1.5,"seq":45,"detections":[{"box":[12,22,30,40],"class":"lesion","score":0.9,"track_id":3},{"box":[100,100,10,10],"class":"lesion","score":0.4,"track_id":4}]}`,
		verdict("1.6", "3", "agree", "BI-RADS 4a"),
		`{"t":2.0,"seq":60,"detections":[]}`,
		verdict("2.5", "3", "disagree", "BI-RADS 3"), // the later read wins
		verdict("2.6", "4", "unsure", ""),
		verdict("30", "4", "agree", ""),                                                           // the last read of track 4 comes 28 s after its box: no label
		verdict("2.7", "9", "agree", ""),                                                          // a track never recorded
		`{"t":3.0,"seq":90,"detections":[{"box":[1,1,1,1],"class":"lesion","score":0.5,"track_id`, // torn
	}, "\n")
	set, err := Labels(strings.NewReader(timeline), Meta{ID: "r1", Source: "phantom", Width: 640, Height: 480})
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Annotations) != 1 || len(set.Images) != 1 || len(set.Categories) != 1 {
		t.Fatalf("labels %+v", set)
	}
	a, img := set.Annotations[0], set.Images[0]
	if a.Attributes.TrackID != 3 || a.Attributes.Verdict != "disagree" || a.Attributes.Category != "BI-RADS 3" || a.Attributes.By != "expert" ||
		a.BBox != [4]float64{12, 22, 30, 40} || a.Area != 1200 || img.FrameTimeS != 1.5 || img.Width != 640 || a.Attributes.AIScore != 0.9 {
		t.Fatalf("annotation %+v on %+v", a, img)
	}
}
