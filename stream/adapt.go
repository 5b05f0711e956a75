package stream

import (
	"time"

	"github.com/pion/rtp/codecs"
	"go.uber.org/zap"
)

// A viewer on a poor link (an expert on 4G, a clinic's thin uplink) keeps
// its frame rate and loses resolution first: supervisors in tele-ultrasound
// studies rate frame rate highest. Each H.264 viewer's bandwidth is
// estimated from its browser's transport-wide feedback (Google congestion
// control, api.go); while the estimate stays below what the main encode
// really sends (measured: easy pictures take far less than its target, and
// the estimate follows what the link carried, not the target), the viewer
// and packets are being lost on the way, the viewer is moved to a small
// H.264 layer (640×360 by default),
// encoded only while someone takes it. The move waits for the layer's next
// keyframe. Loss is the second witness because a busy machine (the
// server's or the browser's CPU starved) also makes the delays vary and
// the estimate fall, and moving a viewer on loopback to 360p would help
// nobody; a link that cannot carry the stream fills its queue and drops
// within seconds. RTP timestamps are shared and each viewer numbers its own
// packets, so the browser sees one stream that changes size. Voices are
// forwarded as before: at 40 kbit/s they are the first thing the smaller
// video leaves room for.
//
// Back up: once the estimate says the main encode fits again (on a clean
// link it keeps rising while the viewer takes less; on a lossy one the
// loss holds it down), the main encode is tried after a while (probeFirst,
// doubling after each try that fails, up to probeMax): a try that holds
// probeHold is kept.

// AdaptConfig sets the small layer.
type AdaptConfig struct {
	// Disabled keeps every viewer on the main encode whatever its link.
	Disabled bool
	// MaxHeight is the small layer's height at most (default 360 rows).
	MaxHeight int
	// Bitrate is the small layer's target in bits per second (default
	// 600 kbit/s).
	Bitrate int
}

func (c *AdaptConfig) defaults() {
	if c.MaxHeight <= 0 {
		c.MaxHeight = 360
	}
	if c.Bitrate <= 0 {
		c.Bitrate = 600_000
	}
}

const (
	// downShare: below this share of the main encode's bitrate the
	// estimate says the link cannot carry it (one overuse signal puts it
	// at 0.85 of what arrived)...
	downShare = 0.8
	// ...for downHold: one dip of the estimate is not a poor link...
	downHold = time.Second
	// ...and lossShare of the packets are lost meanwhile (the
	// estimator's average, from the browser's feedback).
	lossShare  = 0.01
	probeFirst = 30 * time.Second
	probeMax   = 160 * time.Second
	probeHold  = 5 * time.Second
	adaptTick  = 250 * time.Millisecond
)

// rateChoice decides, from a viewer's estimates over time, whether it
// takes the small layer. Pure: the tests drive it with made-up estimates.
type rateChoice struct {
	small   bool
	below   time.Time     // when the estimate went below downShare; zero when above
	tryAt   time.Time     // when to try the main encode again (on small)
	backoff time.Duration // the next wait before a try
	trying  time.Time     // when the current try began; zero when not trying
}

func newRateChoice() *rateChoice {
	return &rateChoice{backoff: probeFirst}
}

// next takes the estimate and the loss at now and the main encode's
// bitrate, and says whether the viewer should take the small layer, and
// whether that changed.
func (c *rateChoice) next(now time.Time, estimate int, loss float64, main int) (small, changed bool) {
	if !c.small {
		if float64(estimate) >= downShare*float64(main) || loss < lossShare {
			c.below = time.Time{}
			if !c.trying.IsZero() && now.Sub(c.trying) >= probeHold {
				c.trying, c.backoff = time.Time{}, probeFirst // the link carries it
			}
			return false, false
		}
		if c.below.IsZero() {
			c.below = now
		}
		if now.Sub(c.below) < downHold {
			return false, false
		}
		if !c.trying.IsZero() {
			c.backoff = min(2*c.backoff, probeMax) // a failed try
		}
		c.small, c.below, c.trying = true, time.Time{}, time.Time{}
		c.tryAt = now.Add(c.backoff)
		return true, true
	}
	if now.Before(c.tryAt) || float64(estimate) < downShare*float64(main) {
		return true, false
	}
	c.small, c.trying = false, now
	return false, true
}

// rateMeter is the main encode's bitrate over the last rateWindow, from
// the relay's byte count.
type rateMeter struct {
	at    [rateSamples]time.Time
	bytes [rateSamples]uint64
	n     int
}

const (
	rateWindow  = 2 * time.Second
	rateSamples = int(rateWindow/adaptTick) + 1
)

// add takes the byte count at now; ok once a whole window is measured.
func (m *rateMeter) add(now time.Time, bytes uint64) (bps int, ok bool) {
	i := m.n % rateSamples
	m.at[i], m.bytes[i] = now, bytes
	m.n++
	if m.n < rateSamples {
		return 0, false
	}
	old := m.n % rateSamples // the oldest sample kept
	d := now.Sub(m.at[old]).Seconds()
	if d <= 0 {
		return 0, false
	}
	return int(float64(bytes-m.bytes[old]) * 8 / d), true
}

// newSmallLayer is the small H.264 layer's encoder.
func newSmallLayer(r *Relay) *layer {
	enc := NewEncoder(EncoderConfig{Bitrate: r.cfg.Adapt.Bitrate, KeyframeInterval: r.enc.cfg.KeyframeInterval, FPS: r.enc.cfg.FPS})
	return newLayer(r, "h264-small", enc, &codecs.H264Payloader{}, r.cfg.Adapt.MaxHeight)
}

// adaptLoop moves the viewer between the main encode and the small layer
// as its estimate says, until the viewer closes.
func (v *Viewer) adaptLoop() {
	defer v.wg.Done()
	choice := newRateChoice()
	rate := rateMeter{}
	t := time.NewTicker(adaptTick)
	defer t.Stop()
	for {
		select {
		case <-v.ctx.Done():
			return
		case now := <-t.C:
			v.relay.smu.Lock()
			sent := v.relay.bytes
			v.relay.smu.Unlock()
			main, ok := rate.add(now, sent)
			est := v.bwe.GetTargetBitrate()
			loss, _ := v.bwe.GetStats()["averageLoss"].(float64)
			v.estimate.Store(int64(est))
			if !ok {
				continue
			}
			if small, changed := choice.next(now, est, loss, main); changed {
				v.relay.setSmall(v, small)
				v.relay.log.Info("viewer layer", zap.String("viewer", v.id), zap.Bool("small", small), zap.Int("estimate_bps", est),
					zap.Float64("loss", loss), zap.Int("main_bps", main))
			}
		}
	}
}

// setSmall moves v to the small layer (started for it) or back to the
// main encode (stopping the small layer when nobody takes it), from the
// new source's next keyframe.
func (r *Relay) setSmall(v *Viewer, small bool) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	var idle *layer
	if small {
		if r.small == nil {
			r.small = newSmallLayer(r)
		}
		v.layer.Store(r.small)
	} else {
		v.layer.Store(nil)
		if r.small != nil && !r.layerInUse(r.small) {
			idle, r.small = r.small, nil
		}
	}
	v.waitKey.Store(true)
	v.switches.Add(1)
	r.mu.Unlock()
	if idle != nil {
		idle.close()
	}
	v.requestKeyframe()
}
