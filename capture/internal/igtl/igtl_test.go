package igtl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// The CRC is CRC-64/ECMA-182 as OpenIGTLink computes it: its published
// check value.
func TestCRC64(t *testing.T) {
	if got := CRC64([]byte("123456789")); got != 0x6C40DF5F0B497347 {
		t.Fatalf("CRC64(123456789) = %#x", got)
	}
}

func TestImageRoundTrip(t *testing.T) {
	px := make([]byte, 32*24)
	for i := range px {
		px[i] = byte(i)
	}
	var buf bytes.Buffer
	if err := WriteMessage(&buf, "IMAGE", "Image_Reference", 0, AppendImage(nil, 32, 24, 1, 0.2, 0.25, px)); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "IMAGE" || m.Device != "Image_Reference" || m.Version != 1 {
		t.Fatalf("header %+v", m.Header)
	}
	im, err := ParseImage(m.Content)
	if err != nil {
		t.Fatal(err)
	}
	sx, sy := im.SpacingMM()
	if im.SubSize != [3]int{32, 24, 1} || im.Components != 1 || im.Scalar != Uint8 || !bytes.Equal(im.Pixels, px) ||
		float32(sx) != 0.2 || float32(sy) != 0.25 {
		t.Fatalf("image %+v spacing %v %v", im, sx, sy)
	}
}

// Version 2 headers (protocol v3) put an extended header before the
// content and metadata after it.
func TestExtendedHeader(t *testing.T) {
	content := AppendImage(nil, 16, 16, 1, 0.1, 0.1, make([]byte, 256))
	key, val := "Probe", "L14-5"
	var body []byte
	body = binary.BigEndian.AppendUint16(body, 12)                   // extended header size
	body = binary.BigEndian.AppendUint16(body, 2+8)                  // metadata index size
	body = binary.BigEndian.AppendUint32(body, uint32(len(key+val))) // metadata size
	body = binary.BigEndian.AppendUint32(body, 7)                    // message id
	body = append(body, content...)
	body = binary.BigEndian.AppendUint16(body, 1)
	body = binary.BigEndian.AppendUint16(body, uint16(len(key)))
	body = binary.BigEndian.AppendUint16(body, 3) // US-ASCII
	body = binary.BigEndian.AppendUint32(body, uint32(len(val)))
	body = append(body, key+val...)
	var buf bytes.Buffer
	WriteMessage(&buf, "IMAGE", "Image_Reference", 0, body)
	b := buf.Bytes()
	binary.BigEndian.PutUint16(b, 2)
	m, err := ReadMessage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Content, content) || m.Meta[key] != val {
		t.Fatalf("content %d bytes (want %d), meta %v", len(m.Content), len(content), m.Meta)
	}
}

func TestMalformed(t *testing.T) {
	good := func() []byte {
		var buf bytes.Buffer
		WriteMessage(&buf, "IMAGE", "d", 0, AppendImage(nil, 16, 16, 1, 1, 1, make([]byte, 256)))
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
		want error
	}{
		{"header version 9", func(b []byte) []byte { binary.BigEndian.PutUint16(b, 9); return b }, ErrMalformed},
		{"body of 1 TB", func(b []byte) []byte { binary.BigEndian.PutUint64(b[42:], 1<<40); return b }, ErrMalformed},
		{"flipped pixel", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, ErrCRC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ReadMessage(bytes.NewReader(tc.edit(good()))); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"short", make([]byte, 10)},
		{"pixels missing", AppendImage(nil, 16, 16, 1, 1, 1, make([]byte, 100))},
		{"5 components", func() []byte { b := AppendImage(nil, 16, 16, 1, 1, 1, make([]byte, 256)); b[2] = 5; return b }()},
		{"sub-volume outside", func() []byte {
			b := AppendImage(nil, 16, 16, 1, 1, 1, make([]byte, 256))
			binary.BigEndian.PutUint16(b[60:], 8)
			return b
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseImage(tc.body); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

// FuzzReadMessage: any byte stream gives a message or a named error, and
// never a panic or an image whose pixels do not fit its size.
func FuzzReadMessage(f *testing.F) {
	var buf bytes.Buffer
	WriteMessage(&buf, "IMAGE", "Image_Reference", 0, AppendImage(nil, 16, 16, 1, 0.1, 0.1, make([]byte, 256)))
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadMessage(bytes.NewReader(b))
		if err != nil {
			return
		}
		im, err := ParseImage(m.Content)
		if err != nil {
			return
		}
		if len(im.Pixels) != im.SubSize[0]*im.SubSize[1]*im.SubSize[2]*im.Components*scalarSize(im.Scalar) {
			t.Fatalf("%d pixel bytes for %+v", len(im.Pixels), im.SubSize)
		}
	})
}
