package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"sonolive/internal/stats"
	"sonolive/internal/whepclient"
)

func benchCmd(args []string) error {
	if len(args) > 0 && args[0] == "soak" {
		return soakCmd(args[1:])
	}
	if len(args) == 0 || args[0] != "viewers" {
		return errors.New("usage: sonolive bench viewers|soak [flags] (see --help)")
	}
	fs := flag.NewFlagSet("bench viewers", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: sonolive bench viewers --url http://host:8080/whep/phantom --token T [flags]

Connects N WebRTC viewers (pion, video + metadata DataChannel) to a running
'sonolive serve' in another process, measures a window with no viewers and a
window with all of them, and reports frames received per viewer, the relay's
CPU per viewer and its memory (from the server's /metrics). The viewers run in
this process: on a small machine they compete with the server for CPU, which
the report shows as bench_cpu.

Flags:
`)
		fs.PrintDefaults()
	}
	var (
		endpoint = fs.String("url", "http://localhost:8080/whep/phantom", "WHEP endpoint of the source")
		token    = fs.String("token", "", "viewer token (the token= part of a sonographer or expert link)")
		n        = fs.Int("n", 50, "viewers")
		window   = fs.Duration("window", 20*time.Second, "measurement window (each of: baseline, loaded)")
		slow     = fs.Int("slow", 0, "of the viewers, this many read every packet late (a throttled client)")
		slowBy   = fs.Duration("slow-delay", 5*time.Millisecond, "how late a throttled viewer reads each packet")
		out      = fs.String("report", "-", "write the JSON report here ('-': stdout)")
	)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	metricsURL, err := metricsURLFor(*endpoint)
	if err != nil {
		return err
	}
	rep, err := benchViewers(ctx, *endpoint, metricsURL, *token, *n, *slow, *slowBy, *window)
	if err != nil {
		return err
	}
	return writeJSON(*out, rep)
}

// metricsURLFor finds /metrics on the same server as the WHEP endpoint.
func metricsURLFor(endpoint string) (string, error) {
	i := strings.Index(endpoint, "/whep/")
	if i < 0 {
		return "", fmt.Errorf("--url %q is not a /whep/{source} endpoint", endpoint)
	}
	return endpoint[:i] + "/metrics", nil
}

type serverSample struct {
	at          time.Time
	cpuSeconds  float64
	rssBytes    float64
	frames      float64
	viewerDrops float64
	openFDs     float64
	goroutines  float64
	heapInuse   float64 // Go heap in use: tells a Go leak from RSS the allocator keeps
	mats        float64 // -1: the server was built without matprofile
	// totalLE is the cumulative count of frames by total pipeline
	// latency bucket (upper bound in seconds), summed over sources.
	totalLE map[float64]float64
}

// scrape reads the few metrics the bench needs from the server.
func scrape(ctx context.Context, u string) (serverSample, error) {
	s := serverSample{at: time.Now(), mats: -1, totalLE: map[float64]float64{}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("scraping %s: %w", u, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch {
		case name == "process_cpu_seconds_total":
			s.cpuSeconds = v
		case name == "process_resident_memory_bytes":
			s.rssBytes = v
		case strings.HasPrefix(name, "sonolive_frames_total{"):
			s.frames += v
		case strings.HasPrefix(name, "sonolive_viewer_dropped_frames_total{"):
			s.viewerDrops += v
		case name == "process_open_fds":
			s.openFDs = v
		case name == "go_goroutines":
			s.goroutines = v
		case name == "go_memstats_heap_inuse_bytes":
			s.heapInuse = v
		case name == "sonolive_gocv_mats":
			s.mats = v
		case strings.HasPrefix(name, "sonolive_stage_latency_seconds_bucket{") && strings.Contains(name, `stage="total"`):
			if i := strings.Index(name, `le="`); i >= 0 {
				le := name[i+4:]
				le = le[:strings.IndexByte(le, '"')]
				if b, err := strconv.ParseFloat(le, 64); err == nil {
					s.totalLE[b] += v
				}
			}
		}
	}
	return s, sc.Err()
}

// benchReport is what `sonolive bench viewers` prints.
type benchReport struct {
	Viewers      int     `json:"viewers"`
	Throttled    int     `json:"throttled"`
	WindowS      float64 `json:"window_s"`
	SourceFrames int     `json:"source_frames"`
	// Frames received per (unthrottled) viewer in the loaded window, as a
	// share of the frames its RTP timestamps span.
	ReceivedMin       float64 `json:"received_ratio_min"`
	ReceivedMedian    float64 `json:"received_ratio_median"`
	ViewersAt99       int     `json:"viewers_at_99pct"`
	FPSMin            float64 `json:"fps_min"`
	FPSMedian         float64 `json:"fps_median"`
	ThrottledFPS      float64 `json:"throttled_fps,omitempty"`
	MetadataMin       float64 `json:"metadata_ratio_min"`
	FirstKeyframeP50  float64 `json:"first_keyframe_ms_p50"`
	FirstKeyframeMax  float64 `json:"first_keyframe_ms_max"`
	ServerCPUIdle     float64 `json:"server_cpu_cores_no_viewers"`
	ServerCPULoaded   float64 `json:"server_cpu_cores_loaded"`
	CPUPerViewerMilli float64 `json:"server_cpu_millicores_per_viewer"`
	RSSIdleMB         float64 `json:"server_rss_mb_no_viewers"`
	RSSLoadedMB       float64 `json:"server_rss_mb_loaded"`
	RSSPerViewerMB    float64 `json:"server_rss_mb_per_viewer"`
	ViewerDrops       float64 `json:"server_viewer_dropped_frames"`
	BenchCPU          float64 `json:"bench_cpu_cores"`
}

func benchViewers(ctx context.Context, endpoint, metricsURL, token string, n, slow int, slowBy, window time.Duration) (benchReport, error) {
	rep := benchReport{Viewers: n, Throttled: slow, WindowS: window.Seconds()}
	// Baseline: the server with no viewers of ours.
	a, err := scrape(ctx, metricsURL)
	if err != nil {
		return rep, err
	}
	if err := sleepCtx(ctx, window); err != nil {
		return rep, err
	}
	b, err := scrape(ctx, metricsURL)
	if err != nil {
		return rep, err
	}
	rep.ServerCPUIdle = (b.cpuSeconds - a.cpuSeconds) / b.at.Sub(a.at).Seconds()
	rep.RSSIdleMB = b.rssBytes / 1e6

	sessions := make([]*whepclient.Session, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8) // do not stampede ICE gathering
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			sessions[i], errs[i] = whepclient.Dial(ctx, endpoint, whepclient.Options{Token: token})
		}()
	}
	wg.Wait()
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.Close(context.Background())
			}
		}
	}()
	if err := errors.Join(errs...); err != nil {
		return rep, fmt.Errorf("connecting viewers: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var firstKey stats.Samples
	for _, s := range sessions {
		for s.Stats().Keyframes == 0 {
			if time.Now().After(deadline) {
				return rep, fmt.Errorf("a viewer got no keyframe within 30 s: %+v", s.Stats())
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return rep, err
			}
		}
		firstKey.Add(s.Stats().FirstKeyframe)
	}
	kp := firstKey.Percentiles()
	rep.FirstKeyframeP50, rep.FirstKeyframeMax = kp.P50, kp.Max
	for i := 0; i < slow && i < n; i++ {
		sessions[i].SetReadDelay(slowBy)
	}
	for _, s := range sessions {
		s.Reset()
	}
	cpu0 := selfCPU()
	c, err := scrape(ctx, metricsURL)
	if err != nil {
		return rep, err
	}
	if err := sleepCtx(ctx, window); err != nil {
		return rep, err
	}
	d, err := scrape(ctx, metricsURL)
	if err != nil {
		return rep, err
	}
	// Let the last frames of the window land.
	sleepCtx(ctx, 300*time.Millisecond)
	dt := d.at.Sub(c.at).Seconds()
	rep.BenchCPU = (selfCPU() - cpu0) / dt
	rep.ServerCPULoaded = (d.cpuSeconds - c.cpuSeconds) / dt
	rep.RSSLoadedMB = d.rssBytes / 1e6
	rep.SourceFrames = int(d.frames - c.frames)
	rep.ViewerDrops = d.viewerDrops - c.viewerDrops
	if n > 0 {
		rep.CPUPerViewerMilli = stats.Round3((rep.ServerCPULoaded - rep.ServerCPUIdle) / float64(n) * 1000)
		rep.RSSPerViewerMB = stats.Round3((rep.RSSLoadedMB - rep.RSSIdleMB) / float64(n))
	}
	var ratios, fps, metas []float64
	for i, s := range sessions {
		st := s.Stats()
		if i < slow {
			rep.ThrottledFPS = stats.Round3(st.FPS)
			continue
		}
		r := float64(st.Frames) / float64(max(1, st.Expected))
		ratios = append(ratios, r)
		fps = append(fps, st.FPS)
		metas = append(metas, float64(st.Matched)/float64(max(1, st.Expected)))
		if r >= 0.99 {
			rep.ViewersAt99++
		}
	}
	rep.ReceivedMin, rep.ReceivedMedian = minMedian(ratios)
	rep.FPSMin, rep.FPSMedian = minMedian(fps)
	rep.MetadataMin, _ = minMedian(metas)
	for _, p := range []*float64{&rep.ServerCPUIdle, &rep.ServerCPULoaded, &rep.RSSIdleMB, &rep.RSSLoadedMB, &rep.BenchCPU} {
		*p = stats.Round3(*p)
	}
	return rep, nil
}

func minMedian(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	sort.Float64s(v)
	return stats.Round3(v[0]), stats.Round3(v[len(v)/2])
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// selfCPU is this process's user+system CPU seconds.
func selfCPU() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may contain spaces).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}
