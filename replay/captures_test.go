package replay

import (
	"os"
	"path/filepath"
	"testing"
)

// The index after a crash or damage: only lines that parse, once each,
// whose two pictures are on disk.
func TestReadCaptures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		index    string
		pictures []int // captures whose two pictures exist
		want     []int
	}{
		{"none", "", nil, nil},
		{"two", `{"n":1,"rtp_ts":9}` + "\n" + `{"n":2}` + "\n", []int{1, 2}, []int{1, 2}},
		{"torn last line", `{"n":1}` + "\n" + `{"n":2,"rtp`, []int{1, 2}, []int{1}},
		{"pictures missing", `{"n":1}` + "\n" + `{"n":2}` + "\n", []int{2}, []int{2}},
		{"twice", `{"n":1}` + "\n" + `{"n":1,"t":3}` + "\n", []int{1}, []int{1}},
		{"out of range", `{"n":0}` + "\n" + `{"n":1000}` + "\n" + `{"n":-1}` + "\n", nil, nil},
		{"garbage", "\x00\xff\n{}\n[1]\n", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.index != "" {
				if err := os.WriteFile(filepath.Join(dir, "captures.jsonl"), []byte(tc.index), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range tc.pictures {
				for _, a := range []bool{false, true} {
					if err := os.WriteFile(filepath.Join(dir, capturePicture(n, a)), []byte{0xff, 0xd8}, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := readCaptures(filepath.Join(dir, "captures.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %v", got, tc.want)
			}
			for i, c := range got {
				if c.N != tc.want[i] {
					t.Fatalf("got %+v, want %v", got, tc.want)
				}
			}
		})
	}
	if !captureFile.MatchString("capture-007-annotated.jpg") || captureFile.MatchString("capture-7.jpg") || captureFile.MatchString("../capture-001.jpg") {
		t.Fatal("capture file names")
	}
}
