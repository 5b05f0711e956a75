package replay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// A minimal fragmented-MP4 (ISO BMFF) writer for one H.264 video track:
// just what browsers, ffprobe and ffmpeg need, so the recorder stores the
// relay's access units without re-encoding.

const timescale = 90000 // the RTP clock: sample durations come straight from it

// box writes an ISO BMFF box: size, type, payload built by fill.
func box(w *bytes.Buffer, typ string, fill func(b *bytes.Buffer)) {
	start := w.Len()
	w.Write([]byte{0, 0, 0, 0})
	w.WriteString(typ)
	fill(w)
	binary.BigEndian.PutUint32(w.Bytes()[start:], uint32(w.Len()-start))
}

// fullBox is a box with version and flags.
func fullBox(w *bytes.Buffer, typ string, version byte, flags uint32, fill func(b *bytes.Buffer)) {
	box(w, typ, func(b *bytes.Buffer) {
		b.WriteByte(version)
		b.Write([]byte{byte(flags >> 16), byte(flags >> 8), byte(flags)})
		fill(b)
	})
}

func u16(b *bytes.Buffer, v uint16) { binary.Write(b, binary.BigEndian, v) }
func u32(b *bytes.Buffer, v uint32) { binary.Write(b, binary.BigEndian, v) }
func u64(b *bytes.Buffer, v uint64) { binary.Write(b, binary.BigEndian, v) }

var unityMatrix = []uint32{0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000}

// trackInfo is what the init segment describes.
type trackInfo struct {
	sps, pps      []byte
	width, height int
	// duration of the whole recording in timescale units, 0 while unknown
	// (fragmented files need none; a finished file carries it in mehd so
	// players show the length at once).
	duration uint64
}

// initSegment is ftyp + moov.
func initSegment(t trackInfo) ([]byte, error) {
	if len(t.sps) < 4 || len(t.pps) == 0 {
		return nil, errors.New("replay: no SPS/PPS for the init segment")
	}
	var w bytes.Buffer
	box(&w, "ftyp", func(b *bytes.Buffer) {
		b.WriteString("iso5")
		u32(b, 512)
		b.WriteString("iso5iso6avc1mp41")
	})
	box(&w, "moov", func(b *bytes.Buffer) {
		fullBox(b, "mvhd", 0, 0, func(b *bytes.Buffer) {
			u32(b, 0)
			u32(b, 0)
			u32(b, 1000) // movie timescale: ms
			u32(b, 0)
			u32(b, 0x00010000)
			u16(b, 0x0100)
			b.Write(make([]byte, 10))
			for _, m := range unityMatrix {
				u32(b, m)
			}
			b.Write(make([]byte, 24))
			u32(b, 2) // next track id
		})
		box(b, "trak", func(b *bytes.Buffer) {
			fullBox(b, "tkhd", 0, 3, func(b *bytes.Buffer) {
				u32(b, 0)
				u32(b, 0)
				u32(b, 1) // track id
				u32(b, 0)
				u32(b, 0) // duration: see mehd
				b.Write(make([]byte, 8))
				u16(b, 0)
				u16(b, 0)
				u16(b, 0)
				u16(b, 0)
				for _, m := range unityMatrix {
					u32(b, m)
				}
				u32(b, uint32(t.width)<<16)
				u32(b, uint32(t.height)<<16)
			})
			box(b, "mdia", func(b *bytes.Buffer) {
				fullBox(b, "mdhd", 0, 0, func(b *bytes.Buffer) {
					u32(b, 0)
					u32(b, 0)
					u32(b, timescale)
					u32(b, 0)
					u16(b, 0x55c4) // "und"
					u16(b, 0)
				})
				fullBox(b, "hdlr", 0, 0, func(b *bytes.Buffer) {
					u32(b, 0)
					b.WriteString("vide")
					b.Write(make([]byte, 12))
					b.WriteString("sonolive video\x00")
				})
				box(b, "minf", func(b *bytes.Buffer) {
					fullBox(b, "vmhd", 0, 1, func(b *bytes.Buffer) { b.Write(make([]byte, 8)) })
					box(b, "dinf", func(b *bytes.Buffer) {
						fullBox(b, "dref", 0, 0, func(b *bytes.Buffer) {
							u32(b, 1)
							fullBox(b, "url ", 0, 1, func(*bytes.Buffer) {})
						})
					})
					box(b, "stbl", func(b *bytes.Buffer) {
						fullBox(b, "stsd", 0, 0, func(b *bytes.Buffer) {
							u32(b, 1)
							avc1(b, t)
						})
						for _, typ := range []string{"stts", "stsc", "stco"} {
							fullBox(b, typ, 0, 0, func(b *bytes.Buffer) { u32(b, 0) })
						}
						fullBox(b, "stsz", 0, 0, func(b *bytes.Buffer) { u32(b, 0); u32(b, 0) })
					})
				})
			})
		})
		box(b, "mvex", func(b *bytes.Buffer) {
			if t.duration > 0 {
				fullBox(b, "mehd", 1, 0, func(b *bytes.Buffer) { u64(b, t.duration*1000/timescale) })
			}
			fullBox(b, "trex", 0, 0, func(b *bytes.Buffer) {
				u32(b, 1)
				u32(b, 1)
				u32(b, 0)
				u32(b, 0)
				u32(b, 0)
			})
		})
	})
	return w.Bytes(), nil
}

func avc1(w *bytes.Buffer, t trackInfo) {
	box(w, "avc1", func(b *bytes.Buffer) {
		b.Write(make([]byte, 6))
		u16(b, 1) // data reference index
		b.Write(make([]byte, 16))
		u16(b, uint16(t.width))
		u16(b, uint16(t.height))
		u32(b, 0x00480000)
		u32(b, 0x00480000)
		u32(b, 0)
		u16(b, 1)
		name := make([]byte, 32)
		copy(name[1:], "sonolive H.264")
		name[0] = byte(len("sonolive H.264"))
		b.Write(name)
		u16(b, 0x0018)
		u16(b, 0xffff)
		box(b, "avcC", func(b *bytes.Buffer) {
			b.Write([]byte{1, t.sps[1], t.sps[2], t.sps[3], 0xff, 0xe1})
			u16(b, uint16(len(t.sps)))
			b.Write(t.sps)
			b.WriteByte(1)
			u16(b, uint16(len(t.pps)))
			b.Write(t.pps)
		})
	})
}

// sample is one access unit in AVCC form (4-byte lengths).
type sample struct {
	data     []byte
	duration uint32
	key      bool
}

// fragment is moof + mdat for samples starting at decode time base.
func fragment(seq uint32, base uint64, samples []sample) []byte {
	var w bytes.Buffer
	var dataOffsetAt int
	box(&w, "moof", func(b *bytes.Buffer) {
		fullBox(b, "mfhd", 0, 0, func(b *bytes.Buffer) { u32(b, seq) })
		box(b, "traf", func(b *bytes.Buffer) {
			fullBox(b, "tfhd", 0, 0x020000, func(b *bytes.Buffer) { u32(b, 1) }) // default-base-is-moof
			fullBox(b, "tfdt", 1, 0, func(b *bytes.Buffer) { u64(b, base) })
			fullBox(b, "trun", 0, 0x000701, func(b *bytes.Buffer) {
				u32(b, uint32(len(samples)))
				dataOffsetAt = b.Len()
				u32(b, 0) // data offset, patched below
				for _, s := range samples {
					u32(b, s.duration)
					u32(b, uint32(len(s.data)))
					if s.key {
						u32(b, 0x02000000) // depends on nothing
					} else {
						u32(b, 0x01010000) // depends on others, not a sync sample
					}
				}
			})
		})
	})
	moofLen := w.Len()
	binary.BigEndian.PutUint32(w.Bytes()[dataOffsetAt:], uint32(moofLen+8))
	box(&w, "mdat", func(b *bytes.Buffer) {
		for _, s := range samples {
			b.Write(s.data)
		}
	})
	return w.Bytes()
}

// sidxEntry is one fragment in the segment index.
type sidxEntry struct {
	size     uint32
	duration uint32
	sap      bool // starts with a keyframe
}

// sidx indexes the fragments that follow it, so players seek without
// reading the whole file.
func sidx(entries []sidxEntry) []byte {
	var w bytes.Buffer
	fullBox(&w, "sidx", 1, 0, func(b *bytes.Buffer) {
		u32(b, 1) // reference id: the track
		u32(b, timescale)
		u64(b, 0) // earliest presentation time
		u64(b, 0) // first offset: fragments follow immediately
		u16(b, 0)
		u16(b, uint16(len(entries)))
		for _, e := range entries {
			u32(b, e.size&0x7fffffff)
			u32(b, e.duration)
			if e.sap {
				u32(b, 0x90000000) // starts with a SAP of type 1
			} else {
				u32(b, 0)
			}
		}
	})
	return w.Bytes()
}

// annexBToAVCC splits an Annex B access unit into NAL units, returns the
// sample in AVCC form without parameter sets and delimiters (those live in
// avcC), and the SPS and PPS it carried.
func annexBToAVCC(au []byte) (avcc, sps, pps []byte, err error) {
	nals := splitAnnexB(au)
	if len(nals) == 0 {
		return nil, nil, nil, fmt.Errorf("replay: access unit without NAL units (%d bytes)", len(au))
	}
	out := make([]byte, 0, len(au)+4*len(nals))
	for _, n := range nals {
		switch n[0] & 0x1f {
		case 7:
			sps = n
			continue
		case 8:
			pps = n
			continue
		case 9: // access unit delimiter
			continue
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(n)))
		out = append(out, n...)
	}
	return out, sps, pps, nil
}

func splitAnnexB(b []byte) [][]byte {
	var nals [][]byte
	start := -1
	for i := 0; i+2 < len(b); {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				end := i
				for end > start && b[end-1] == 0 { // trailing zero of a 4-byte start code
					end--
				}
				if end > start {
					nals = append(nals, b[start:end])
				}
			}
			i += 3
			start = i
			continue
		}
		i++
	}
	if start >= 0 && start < len(b) {
		nals = append(nals, b[start:])
	}
	return nals
}

// parseInit reads back the track of an init segment we wrote.
func parseInit(b []byte) (trackInfo, error) {
	var t trackInfo
	// After stsd: ftyp lists "avc1" as a brand too.
	s := bytes.Index(b, []byte("stsd"))
	i := bytes.Index(b[max(s, 0):], []byte("avc1")) + max(s, 0)
	if s < 0 || i < s || i+4+28 > len(b) {
		return t, errors.New("replay: init segment without avc1")
	}
	p := b[i+4:]
	t.width = int(binary.BigEndian.Uint16(p[24:]))
	t.height = int(binary.BigEndian.Uint16(p[26:]))
	j := bytes.Index(b, []byte("avcC"))
	if j < 0 || j+4+8 > len(b) {
		return t, errors.New("replay: init segment without avcC")
	}
	c := b[j+4:]
	n := int(binary.BigEndian.Uint16(c[6:]))
	if 8+n+3 > len(c) {
		return t, errors.New("replay: truncated avcC")
	}
	t.sps = append([]byte(nil), c[8:8+n]...)
	c = c[8+n:]
	m := int(binary.BigEndian.Uint16(c[1:]))
	if 3+m > len(c) {
		return t, errors.New("replay: truncated avcC")
	}
	t.pps = append([]byte(nil), c[3:3+m]...)
	return t, nil
}

// videoSize is the coded size an init segment declares.
func videoSize(initPath string) (int, int, error) {
	b, err := os.ReadFile(initPath)
	if err != nil {
		return 0, 0, err
	}
	t, err := parseInit(b)
	return t.width, t.height, err
}
