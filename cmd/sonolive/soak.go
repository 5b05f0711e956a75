package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sonolive/internal/whepclient"
)

// soakCmd is `sonolive bench soak`: viewers joining and leaving a running
// server for a long time while its resources are sampled, to show that
// nothing grows.
func soakCmd(args []string) error {
	fs := flag.NewFlagSet("bench soak", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: sonolive bench soak --url http://host:8080/whep/phantom --token T [flags]

Keeps N WebRTC viewers on a running 'sonolive serve', each leaving after a
random time around --churn and replaced by a new one, for --duration. Every
--sample it reads the server's /metrics: resident memory, goroutines, open
files, live gocv Mats (servers built with -tags matprofile) and the p99 of
the per-frame pipeline latency over the interval. The report gives each at
the start and at the end (the mean of the first and last fifth) and its
least-squares slope per minute: flat means no leak.

Flags:
`)
		fs.PrintDefaults()
	}
	var (
		endpoint = fs.String("url", "http://localhost:8080/whep/phantom", "WHEP endpoint of the source")
		token    = fs.String("token", "", "viewer token")
		n        = fs.Int("viewers", 10, "viewers kept connected")
		duration = fs.Duration("duration", 30*time.Minute, "how long")
		churn    = fs.Duration("churn", 20*time.Second, "mean life of a viewer")
		sample   = fs.Duration("sample", 10*time.Second, "sampling interval")
		warmup   = fs.Duration("warmup", 30*time.Second, "left out of the figures (caches, pools and the first part filling)")
		out      = fs.String("report", "-", "write the JSON report here ('-': stdout)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *n < 1 || *duration <= *warmup || *sample <= 0 || *churn <= 0 {
		return errors.New("bench soak: need viewers ≥ 1, duration > warmup, positive sample and churn")
	}
	metricsURL, err := metricsURLFor(*endpoint)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := soak(ctx, *endpoint, metricsURL, *token, *n, *duration, *churn, *sample, *warmup)
	if err != nil {
		return err
	}
	return writeJSON(*out, rep)
}

// soakReport is what `sonolive bench soak` prints.
type soakReport struct {
	DurationS  float64                `json:"duration_s"`
	Viewers    int                    `json:"viewers"`
	Joins      int64                  `json:"joins"`
	JoinErrors int64                  `json:"join_errors"`
	Samples    int                    `json:"samples"`
	Metrics    map[string]soakFigures `json:"metrics"`
	// FramesReceived is the share of the frames their RTP timestamps span
	// that the viewers that left received (median, min).
	FramesMedian float64 `json:"frames_received_median"`
	FramesMin    float64 `json:"frames_received_min"`
	// PacketsReceived is the share of the packets the server sent (by
	// their sequence numbers) that arrived (median, min): frames missing
	// with every packet arrived were never sent, which is the source or
	// the encoder falling behind on a busy machine, not the viewer path.
	PacketsMedian float64 `json:"packets_received_median"`
	PacketsMin    float64 `json:"packets_received_min"`
}

// soakFigures summarise one metric over the run.
type soakFigures struct {
	Start         float64 `json:"start"`
	End           float64 `json:"end"`
	SlopePerMin   float64 `json:"slope_per_min"`
	SlopePctPerHr float64 `json:"slope_pct_of_start_per_hour"`
	// SlopeLateHalf is the slope over the second half of the run: what
	// fills once to a bound (caches, capped sample reservoirs) shows in
	// the whole run's slope but not here; a leak shows in both.
	SlopeLateHalf float64 `json:"slope_second_half_per_min"`
}

func soak(ctx context.Context, endpoint, metricsURL, token string, n int, duration, churn, sample, warmup time.Duration) (soakReport, error) {
	rep := soakReport{Viewers: n, Metrics: map[string]soakFigures{}}
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	// Each viewer slot joins with a link of its own, as experts do (one
	// link holds at most auth.max_per_token viewers): a sonographer's
	// token mints them; any other token is shared.
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = token
		if tok, err := mintInvite(ctx, endpoint, token, duration+5*time.Minute); err == nil {
			tokens[i] = tok
		} else if i == 0 {
			fmt.Fprintf(os.Stderr, "bench soak: using the given token for every viewer (%v)\n", err)
		}
	}
	var joins, joinErrs atomic.Int64
	var mu sync.Mutex
	var received, packets []float64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				v, err := whepclient.Dial(ctx, endpoint, whepclient.Options{Token: tokens[i]})
				if err != nil {
					if ctx.Err() == nil {
						joinErrs.Add(1)
						sleepCtx(ctx, time.Second)
					}
					continue
				}
				joins.Add(1)
				life := time.Duration(float64(churn) * (0.5 + rand.Float64()))
				sleepCtx(ctx, life)
				st := v.Stats()
				closeCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
				v.Close(closeCtx)
				done()
				if ctx.Err() == nil && st.Expected > 0 {
					mu.Lock()
					received = append(received, float64(st.Frames)/float64(st.Expected))
					if st.Packets > 0 {
						packets = append(packets, float64(st.Packets)/float64(st.Packets+st.Lost))
					}
					mu.Unlock()
				}
			}
		}()
	}

	type point struct {
		t    float64 // minutes since the warm-up ended
		vals map[string]float64
	}
	var points []point
	start := time.Now()
	var prev serverSample
	t := time.NewTicker(sample)
	defer t.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		if ctx.Err() != nil {
			break
		}
		s, err := scrape(ctx, http.DefaultClient, metricsURL)
		if err != nil {
			continue
		}
		if time.Since(start) > warmup && prev.totalLE != nil {
			vals := map[string]float64{
				"rss_mb":     s.rssBytes / 1e6,
				"go_heap_mb": s.heapInuse / 1e6,
				"goroutines": s.goroutines,
				"open_fds":   s.openFDs,
				"p99_ms":     p99Between(prev.totalLE, s.totalLE) * 1000,
			}
			if s.mats >= 0 {
				vals["gocv_mats"] = s.mats
			}
			points = append(points, point{t: time.Since(start).Minutes() - warmup.Minutes(), vals: vals})
		}
		prev = s
	}
	cancel()
	wg.Wait()
	rep.DurationS = time.Since(start).Seconds()
	rep.Joins, rep.JoinErrors, rep.Samples = joins.Load(), joinErrs.Load(), len(points)
	if len(points) < 5 {
		return rep, fmt.Errorf("bench soak: only %d samples after the warm-up", len(points))
	}
	for name := range points[0].vals {
		var xs, ys []float64
		for _, p := range points {
			if v, ok := p.vals[name]; ok && !math.IsNaN(v) {
				xs, ys = append(xs, p.t), append(ys, v)
			}
		}
		if len(ys) < 5 {
			continue
		}
		k := max(1, len(ys)/5)
		h := len(ys) / 2
		f := soakFigures{Start: round3(mean(ys[:k])), End: round3(mean(ys[len(ys)-k:])), SlopePerMin: round3(slope(xs, ys)),
			SlopeLateHalf: round3(slope(xs[h:], ys[h:]))}
		if f.Start != 0 {
			f.SlopePctPerHr = round3(f.SlopePerMin * 60 / f.Start * 100)
		}
		rep.Metrics[name] = f
	}
	sort.Float64s(received)
	if len(received) > 0 {
		rep.FramesMin, rep.FramesMedian = round3(received[0]), round3(received[len(received)/2])
	}
	sort.Float64s(packets)
	if len(packets) > 0 {
		rep.PacketsMin, rep.PacketsMedian = round3(packets[0]), round3(packets[len(packets)/2])
	}
	return rep, nil
}

// mintInvite asks the server for an expert invite with the sonographer's
// token (the sonographer page's own call).
func mintInvite(ctx context.Context, endpoint, token string, ttl time.Duration) (string, error) {
	i := strings.Index(endpoint, "/whep/")
	if i < 0 {
		return "", fmt.Errorf("%q is not a /whep/{source} endpoint", endpoint)
	}
	u := endpoint[:i] + "/api/sources/" + endpoint[i+len("/whep/"):] + "/invites"
	body := fmt.Sprintf(`{"role":"expert","ttl_s":%d,"label":"soak"}`, int(ttl.Seconds()))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var inv struct{ Token string }
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&inv) != nil || inv.Token == "" {
		return "", fmt.Errorf("invite: HTTP %d", resp.StatusCode)
	}
	return inv.Token, nil
}

// p99Between is the 99th percentile of the frames counted between two
// scrapes of a cumulative histogram, interpolated within its bucket (NaN
// when no frame was counted).
func p99Between(a, b map[float64]float64) float64 {
	les := make([]float64, 0, len(b))
	for le := range b {
		les = append(les, le)
	}
	sort.Float64s(les)
	total := b[math.Inf(1)] - a[math.Inf(1)]
	if total <= 0 {
		return math.NaN()
	}
	want := 0.99 * total
	lo, loCount := 0.0, 0.0
	for _, le := range les {
		c := b[le] - a[le]
		if c >= want {
			if math.IsInf(le, 1) {
				return lo
			}
			return lo + (le-lo)*(want-loCount)/math.Max(c-loCount, 1e-9)
		}
		lo, loCount = le, c
	}
	return lo
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// slope is the least-squares slope of y over x.
func slope(x, y []float64) float64 {
	mx, my := mean(x), mean(y)
	var num, den float64
	for i := range x {
		num += (x[i] - mx) * (y[i] - my)
		den += (x[i] - mx) * (x[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
