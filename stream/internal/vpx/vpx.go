// Package vpx is a minimal binding to libvpx's VP8 encoder, tuned the way
// WebRTC senders tune it: one pass, no look-ahead, constant bitrate, error
// resilient, speed set for real time. It exists for the browsers that
// decode no H.264 (Firefox before it has fetched its OpenH264 plugin).
// mediadevices' wrapper sets neither the speed nor the thread count, and
// the speed is what makes VP8 affordable beside the H.264 encode.
package vpx

/*
#cgo pkg-config: vpx
#include <stdlib.h>
#include <string.h>
#include <vpx/vpx_encoder.h>
#include <vpx/vp8cx.h>

typedef struct {
	vpx_codec_ctx_t ctx;
	vpx_image_t img;
	int open;
} sl_vp8;

static int sl_vp8_open(sl_vp8 *e, unsigned w, unsigned h, unsigned kbps, unsigned fps, unsigned kf_dist, int speed, unsigned threads) {
	vpx_codec_enc_cfg_t cfg;
	if (vpx_codec_enc_config_default(vpx_codec_vp8_cx(), &cfg, 0)) return -1;
	cfg.g_w = w;
	cfg.g_h = h;
	cfg.g_timebase.num = 1;
	cfg.g_timebase.den = fps;
	cfg.g_threads = threads;
	cfg.g_lag_in_frames = 0;
	cfg.g_error_resilient = VPX_ERROR_RESILIENT_DEFAULT;
	cfg.g_pass = VPX_RC_ONE_PASS;
	cfg.rc_end_usage = VPX_CBR;
	cfg.rc_target_bitrate = kbps;
	cfg.rc_min_quantizer = 2;
	cfg.rc_max_quantizer = 56;
	cfg.rc_undershoot_pct = 100;
	cfg.rc_overshoot_pct = 15;
	cfg.rc_buf_initial_sz = 500;
	cfg.rc_buf_optimal_sz = 600;
	cfg.rc_buf_sz = 1000;
	cfg.rc_dropframe_thresh = 0;
	cfg.rc_resize_allowed = 0;
	cfg.kf_mode = VPX_KF_AUTO;
	cfg.kf_min_dist = 0;
	cfg.kf_max_dist = kf_dist;
	if (vpx_codec_enc_init(&e->ctx, vpx_codec_vp8_cx(), &cfg, 0)) return -2;
	e->open = 1;
	// Negative speeds let libvpx adapt within the real-time deadline.
	vpx_codec_control(&e->ctx, VP8E_SET_CPUUSED, speed);
	vpx_codec_control(&e->ctx, VP8E_SET_NOISE_SENSITIVITY, 0);
	vpx_codec_control(&e->ctx, VP8E_SET_STATIC_THRESHOLD, 1);
	vpx_codec_control(&e->ctx, VP8E_SET_TOKEN_PARTITIONS, VP8_ONE_TOKENPARTITION);
	vpx_codec_control(&e->ctx, VP8E_SET_MAX_INTRA_BITRATE_PCT, 300);
	return 0;
}

// sl_vp8_encode encodes one I420 image held in buf and gathers the frame
// packets into out (cap bytes). It returns the frame's size, -1 on an
// encoder error, or -(needed) when out is too small.
static long sl_vp8_encode(sl_vp8 *e, unsigned char *buf, unsigned w, unsigned h, long pts, int force_kf,
		unsigned char *out, long cap, int *key) {
	vpx_img_wrap(&e->img, VPX_IMG_FMT_I420, w, h, 1, buf);
	if (vpx_codec_encode(&e->ctx, &e->img, pts, 1, force_kf ? VPX_EFLAG_FORCE_KF : 0, VPX_DL_REALTIME)) return -1;
	long n = 0;
	*key = 0;
	vpx_codec_iter_t it = NULL;
	const vpx_codec_cx_pkt_t *p;
	while ((p = vpx_codec_get_cx_data(&e->ctx, &it)) != NULL) {
		if (p->kind != VPX_CODEC_CX_FRAME_PKT) continue;
		if (p->data.frame.flags & VPX_FRAME_IS_KEY) *key = 1;
		if (n + (long)p->data.frame.sz <= cap) memcpy(out + n, p->data.frame.buf, p->data.frame.sz);
		n += (long)p->data.frame.sz;
	}
	return n <= cap ? n : -n;
}

static const char *sl_vp8_error(sl_vp8 *e) { return vpx_codec_error_detail(&e->ctx) ? vpx_codec_error_detail(&e->ctx) : vpx_codec_error(&e->ctx); }

static void sl_vp8_close(sl_vp8 *e) {
	if (e->open) vpx_codec_destroy(&e->ctx);
	e->open = 0;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// ErrEncode wraps libvpx failures.
var ErrEncode = errors.New("vpx")

// Config sets up an encoder.
type Config struct {
	Width, Height int
	Bitrate       int // bits per second
	FPS           int
	KeyframeDist  int // frames; libvpx also places keyframes on request
	// Speed is VP8E_SET_CPUUSED: -16..16, higher is faster and coarser;
	// negative lets libvpx adapt it to the real-time deadline.
	Speed   int
	Threads int
}

// Encoder is one VP8 encoder. Not safe for concurrent use.
type Encoder struct {
	cfg Config
	c   *C.sl_vp8
	pts int64
	out []byte
}

// New opens an encoder for cfg.
func New(cfg Config) (*Encoder, error) {
	if cfg.Width < 16 || cfg.Height < 16 || cfg.Width%2 != 0 || cfg.Height%2 != 0 {
		return nil, fmt.Errorf("%w: size %dx%d (even, at least 16)", ErrEncode, cfg.Width, cfg.Height)
	}
	if cfg.FPS <= 0 {
		cfg.FPS = 30
	}
	if cfg.Threads <= 0 {
		cfg.Threads = 1
	}
	if cfg.KeyframeDist <= 0 {
		cfg.KeyframeDist = 2 * cfg.FPS
	}
	c := (*C.sl_vp8)(C.calloc(1, C.size_t(unsafe.Sizeof(C.sl_vp8{}))))
	if c == nil {
		return nil, fmt.Errorf("%w: out of memory", ErrEncode)
	}
	if rc := C.sl_vp8_open(c, C.uint(cfg.Width), C.uint(cfg.Height), C.uint(max(1, cfg.Bitrate/1000)), C.uint(cfg.FPS),
		C.uint(cfg.KeyframeDist), C.int(cfg.Speed), C.uint(cfg.Threads)); rc != 0 {
		C.free(unsafe.Pointer(c))
		return nil, fmt.Errorf("%w: opening VP8 %dx%d failed (%d)", ErrEncode, cfg.Width, cfg.Height, int(rc))
	}
	return &Encoder{cfg: cfg, c: c, out: make([]byte, cfg.Width*cfg.Height)}, nil
}

// Encode compresses one I420 image (Y, then U, then V, tightly packed) and
// returns the frame, which the caller owns.
func (e *Encoder) Encode(i420 []byte, forceKey bool) (frame []byte, key bool, err error) {
	w, h := e.cfg.Width, e.cfg.Height
	if e.c == nil {
		return nil, false, fmt.Errorf("%w: encoder closed", ErrEncode)
	}
	if len(i420) < w*h*3/2 {
		return nil, false, fmt.Errorf("%w: %d bytes for a %dx%d I420 image", ErrEncode, len(i420), w, h)
	}
	fk := C.int(0)
	if forceKey {
		fk = 1
	}
	var ckey C.int
	// The image is read during the call only (cgo pins it); out is
	// written during the call only.
	n := C.sl_vp8_encode(e.c, (*C.uchar)(unsafe.Pointer(&i420[0])), C.uint(w), C.uint(h), C.long(e.pts), fk,
		(*C.uchar)(unsafe.Pointer(&e.out[0])), C.long(len(e.out)), &ckey)
	e.pts++
	switch {
	case n == -1:
		return nil, false, fmt.Errorf("%w: encode: %s", ErrEncode, C.GoString(C.sl_vp8_error(e.c)))
	case n < 0:
		// Larger than the raw image: possible only at absurd bitrates.
		// The frame is lost; the caller must ask for a keyframe.
		e.out = make([]byte, -int(n))
		return nil, false, fmt.Errorf("%w: frame of %d bytes overflowed the buffer", ErrEncode, -int(n))
	}
	return append([]byte(nil), e.out[:n]...), ckey != 0, nil
}

// Close frees the encoder.
func (e *Encoder) Close() {
	if e.c != nil {
		C.sl_vp8_close(e.c)
		C.free(unsafe.Pointer(e.c))
		e.c = nil
	}
}
