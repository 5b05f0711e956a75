// Package igtl reads and writes OpenIGTLink messages: the 58-byte header
// of protocol versions 1–3, the extended header and metadata of version 3,
// and the IMAGE message body. Only what a frame source needs is here; it
// knows nothing of frames or sources.
package igtl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// HeaderSize is the size of every message's header.
const HeaderSize = 58

// MaxBody bounds a message body: a 4K RGB frame is 25 MB; anything far
// bigger is a broken or hostile peer, not an image.
const MaxBody = 64 << 20

// Errors callers test for.
var (
	// ErrCRC: the body does not match the header's checksum.
	ErrCRC = errors.New("igtl: body CRC mismatch")
	// ErrMalformed: a header or body that cannot be what it claims.
	ErrMalformed = errors.New("igtl: malformed message")
)

// Header is a message header.
type Header struct {
	Version   uint16 // 1 or 2: header version (protocol v1–2 use 1, v3 uses 2)
	Type      string // "IMAGE", "STATUS", …
	Device    string
	Timestamp uint64 // seconds since 1970 in 32.32 fixed point; 0: none
	BodySize  uint64
	CRC       uint64
}

// Message is a header and its body.
type Message struct {
	Header
	// Content is the body without the version-2 extended header and
	// metadata.
	Content []byte
	// Meta are the version-2 metadata key/value pairs.
	Meta map[string]string
}

func cstr(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// ReadMessage reads one message, checking its CRC. A body over MaxBody is
// refused before it is read.
func ReadMessage(r io.Reader) (*Message, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	m := &Message{Header: Header{
		Version:   binary.BigEndian.Uint16(h[0:]),
		Type:      cstr(h[2:14]),
		Device:    cstr(h[14:34]),
		Timestamp: binary.BigEndian.Uint64(h[34:]),
		BodySize:  binary.BigEndian.Uint64(h[42:]),
		CRC:       binary.BigEndian.Uint64(h[50:]),
	}}
	if m.Version < 1 || m.Version > 2 {
		return nil, fmt.Errorf("%w: header version %d", ErrMalformed, m.Version)
	}
	if m.BodySize > MaxBody {
		return nil, fmt.Errorf("%w: %s body of %d bytes", ErrMalformed, m.Type, m.BodySize)
	}
	body := make([]byte, m.BodySize)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	if CRC64(body) != m.CRC {
		return m, fmt.Errorf("%w (%s from %q)", ErrCRC, m.Type, m.Device)
	}
	m.Content = body
	if m.Version == 2 {
		if err := m.splitExtended(body); err != nil {
			return m, err
		}
	}
	return m, nil
}

// splitExtended takes the version-2 extended header off the front of the
// body and the metadata off its end.
func (m *Message) splitExtended(body []byte) error {
	if len(body) < 12 {
		return fmt.Errorf("%w: extended header in %d bytes", ErrMalformed, len(body))
	}
	extSize := int(binary.BigEndian.Uint16(body[0:]))
	metaHeaderSize := int(binary.BigEndian.Uint16(body[2:]))
	metaSize := int(binary.BigEndian.Uint32(body[4:]))
	if extSize < 12 || extSize+metaHeaderSize+metaSize > len(body) {
		return fmt.Errorf("%w: extended header %d, metadata %d+%d in a %d-byte body", ErrMalformed, extSize, metaHeaderSize, metaSize, len(body))
	}
	end := len(body) - metaHeaderSize - metaSize
	m.Content = body[extSize:end]
	meta := body[end:]
	if metaHeaderSize < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(meta))
	if 2+8*n > metaHeaderSize {
		return fmt.Errorf("%w: %d metadata entries in a %d-byte index", ErrMalformed, n, metaHeaderSize)
	}
	vals := meta[metaHeaderSize:]
	m.Meta = make(map[string]string, n)
	for i := 0; i < n; i++ {
		e := meta[2+8*i:]
		kl, vl := int(binary.BigEndian.Uint16(e)), int(binary.BigEndian.Uint32(e[4:]))
		if kl+vl > len(vals) {
			return fmt.Errorf("%w: metadata entry %d runs past the body", ErrMalformed, i)
		}
		m.Meta[string(vals[:kl])] = string(vals[kl : kl+vl])
		vals = vals[kl+vl:]
	}
	return nil
}

// WriteMessage writes a header-version-1 message with its CRC.
func WriteMessage(w io.Writer, typ, device string, timestamp uint64, body []byte) error {
	var h [HeaderSize]byte
	binary.BigEndian.PutUint16(h[0:], 1)
	copy(h[2:14], typ)
	copy(h[14:34], device)
	binary.BigEndian.PutUint64(h[34:], timestamp)
	binary.BigEndian.PutUint64(h[42:], uint64(len(body)))
	binary.BigEndian.PutUint64(h[50:], CRC64(body))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// Scalar types of IMAGE pixels.
const (
	Int8    = 2
	Uint8   = 3
	Int16   = 4
	Uint16  = 5
	Int32   = 6
	Uint32  = 7
	Float32 = 10
	Float64 = 11
)

func scalarSize(t uint8) int {
	switch t {
	case Int8, Uint8:
		return 1
	case Int16, Uint16:
		return 2
	case Int32, Uint32, Float32:
		return 4
	case Float64:
		return 8
	}
	return 0
}

// imageHeaderSize is the IMAGE body's fixed part before the pixels.
const imageHeaderSize = 72

// Image is an IMAGE message body.
type Image struct {
	Components int   // samples per pixel: 1 grey, 3 RGB, 4 RGBA
	Scalar     uint8 // Uint8, …
	BigEndian  bool
	// Size is the whole image in pixels (i, j, k); Offset and SubSize the
	// part these pixels cover.
	Size, Offset, SubSize [3]int
	// Matrix is the image-to-patient transform: columns are the i, j, k
	// directions scaled by the pixel spacing in mm, then the origin.
	Matrix [12]float32
	Pixels []byte
}

// SpacingMM is the size of one pixel along i and j (across and down), in
// millimetres: the lengths of the matrix's first two direction vectors.
func (im *Image) SpacingMM() (x, y float64) {
	n := func(a, b, c float32) float64 {
		return math.Sqrt(float64(a)*float64(a) + float64(b)*float64(b) + float64(c)*float64(c))
	}
	return n(im.Matrix[0], im.Matrix[1], im.Matrix[2]), n(im.Matrix[3], im.Matrix[4], im.Matrix[5])
}

// ParseImage reads an IMAGE body (message content).
func ParseImage(b []byte) (*Image, error) {
	if len(b) < imageHeaderSize {
		return nil, fmt.Errorf("%w: IMAGE body of %d bytes", ErrMalformed, len(b))
	}
	im := &Image{Components: int(b[2]), Scalar: b[3], BigEndian: b[4] == 1}
	if v := binary.BigEndian.Uint16(b); v != 1 && v != 2 {
		return nil, fmt.Errorf("%w: IMAGE version %d", ErrMalformed, v)
	}
	// The fixed part is big-endian whatever the pixels' endianness.
	for i := 0; i < 3; i++ {
		im.Size[i] = int(binary.BigEndian.Uint16(b[6+2*i:]))
		im.Offset[i] = int(binary.BigEndian.Uint16(b[60+2*i:]))
		im.SubSize[i] = int(binary.BigEndian.Uint16(b[66+2*i:]))
	}
	for i := range im.Matrix {
		im.Matrix[i] = math.Float32frombits(binary.BigEndian.Uint32(b[12+4*i:]))
	}
	ss := scalarSize(im.Scalar)
	if ss == 0 || im.Components < 1 || im.Components > 4 {
		return nil, fmt.Errorf("%w: scalar type %d with %d components", ErrMalformed, im.Scalar, im.Components)
	}
	want := im.SubSize[0] * im.SubSize[1] * im.SubSize[2] * im.Components * ss
	if want == 0 || len(b)-imageHeaderSize != want {
		return nil, fmt.Errorf("%w: %dx%dx%d sub-volume of %d×%d-byte pixels in %d bytes", ErrMalformed,
			im.SubSize[0], im.SubSize[1], im.SubSize[2], im.Components, ss, len(b)-imageHeaderSize)
	}
	for i := 0; i < 3; i++ {
		if im.Offset[i]+im.SubSize[i] > im.Size[i] {
			return nil, fmt.Errorf("%w: sub-volume %v+%v outside %v", ErrMalformed, im.Offset, im.SubSize, im.Size)
		}
	}
	im.Pixels = b[imageHeaderSize:]
	return im, nil
}

// AppendImage encodes a whole 2D 8-bit image (width×height, components
// samples per pixel) with the given pixel spacing, as a PLUS server sends
// one. It is for tests and tools.
func AppendImage(dst []byte, width, height, components int, spacingX, spacingY float32, pixels []byte) []byte {
	b := make([]byte, imageHeaderSize)
	binary.BigEndian.PutUint16(b, 1)
	b[2], b[3], b[4], b[5] = byte(components), Uint8, 2, 2 // little endian, LPS
	size := [3]int{width, height, 1}
	for i := 0; i < 3; i++ {
		binary.BigEndian.PutUint16(b[6+2*i:], uint16(size[i]))
		binary.BigEndian.PutUint16(b[66+2*i:], uint16(size[i]))
	}
	m := [12]float32{spacingX, 0, 0, 0, spacingY, 0, 0, 0, 1, 0, 0, 0}
	for i, v := range m {
		binary.BigEndian.PutUint32(b[12+4*i:], math.Float32bits(v))
	}
	return append(append(dst, b...), pixels...)
}

// crcTable is CRC-64/ECMA-182 as OpenIGTLink computes it: MSB first, no
// reflection, zero initial value and no final xor (Go's hash/crc64 is the
// reflected variant).
var crcTable = func() (t [256]uint64) {
	const poly = 0x42F0E1EBA9EA3693
	for i := range t {
		c := uint64(i) << 56
		for k := 0; k < 8; k++ {
			if c&(1<<63) != 0 {
				c = c<<1 ^ poly
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// CRC64 is the checksum OpenIGTLink puts in a header.
func CRC64(b []byte) uint64 {
	var c uint64
	for _, x := range b {
		c = crcTable[byte(c>>56)^x] ^ c<<8
	}
	return c
}
