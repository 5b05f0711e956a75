package eval

import (
	"strings"
	"testing"
)

// FuzzCOCO: any annotations file loads into boxes that are finite and
// non-empty with file names inside the data set, or is refused.
func FuzzCOCO(f *testing.F) {
	f.Add([]byte(`{"images":[{"id":1,"file_name":"a.png","label":"benign"}],"annotations":[{"image_id":1,"category_id":1,"bbox":[1,2,3,4]}],"categories":[{"id":1,"name":"lesion"}]}`))
	f.Add([]byte(`{"images":[{"id":1,"file_name":"../../etc/passwd"}]}`))
	f.Add([]byte(`{"images":[{"id":1,"file_name":"a"},{"id":1,"file_name":"b"}]}`))
	f.Add([]byte(`{"images":[{"id":1,"file_name":"a.png","mask_file":"../m.png"}]}`))
	f.Add([]byte(`{"images":[],"annotations":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := ParseCOCO(b, "fuzz.json")
		if err != nil {
			return
		}
		for _, im := range ds.Images {
			for _, name := range []string{im.FileName, im.MaskFile} {
				if strings.HasPrefix(name, "/") || strings.Contains("/"+name+"/", "/../") {
					t.Fatalf("file name %q", name)
				}
			}
			for _, tr := range im.Truth {
				if !(tr.Box.X2 > tr.Box.X1 && tr.Box.Y2 > tr.Box.Y1) {
					t.Fatalf("box %+v", tr.Box)
				}
			}
		}
	})
}
