package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
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

	"github.com/pion/webrtc/v4"

	"sonolive/ice"
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
		useICE   = fs.Bool("ice", false, "gather with the server's STUN/TURN servers (GET /api/sources/{source}/ice), as the pages do")
		relay    = fs.Bool("relay-only", false, "use TURN relays only (with --ice): checks the TURN path from this network")
		caFile   = fs.String("ca", "", "trust this CA (PEM) for an https:// server")
		metrics  = fs.String("metrics", "", "the server's /metrics (default: beside --url; 'none': not reachable from here, e.g. through a hub)")
	)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	o := benchOptions{endpoint: *endpoint, metricsURL: *metrics, token: *token, n: *n, slow: *slow, slowBy: *slowBy, window: *window,
		relayOnly: *relay, client: &http.Client{Timeout: 10 * time.Second}}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca %s: no PEM certificate", *caFile)
		}
		o.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	if o.metricsURL == "" {
		u, err := metricsURLFor(*endpoint)
		if err != nil {
			return err
		}
		o.metricsURL = u
	} else if o.metricsURL == "none" {
		o.metricsURL = ""
	}
	if *useICE {
		servers, err := fetchICE(ctx, o.client, *endpoint, *token)
		if err != nil {
			return err
		}
		o.iceServers = servers
	} else if *relay {
		return errors.New("--relay-only needs --ice")
	}
	rep, err := benchViewers(ctx, o)
	if err != nil {
		return err
	}
	return writeJSON(*out, rep)
}

// fetchICE gets the STUN/TURN servers the server hands its pages for the
// source of a /whep/{source} endpoint.
func fetchICE(ctx context.Context, client *http.Client, endpoint, token string) ([]webrtc.ICEServer, error) {
	i := strings.Index(endpoint, "/whep/")
	if i < 0 {
		return nil, fmt.Errorf("--url %q is not a /whep/{source} endpoint", endpoint)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpoint[:i]+"/api/sources/"+endpoint[i+len("/whep/"):]+"/ice", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching ICE servers: %w", err)
	}
	defer resp.Body.Close()
	var got struct {
		ICEServers []ice.Server `json:"ice_servers"`
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching ICE servers: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		return nil, fmt.Errorf("fetching ICE servers: %w", err)
	}
	return ice.WebRTC(got.ICEServers), nil
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

// scrape reads the few metrics the bench needs from the server; with no
// URL (not reachable from here) it reads nothing.
func scrape(ctx context.Context, client *http.Client, u string) (serverSample, error) {
	s := serverSample{at: time.Now(), mats: -1, totalLE: map[float64]float64{}}
	if u == "" {
		return s, nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := client.Do(req)
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
	// Path is how the first viewer's media arrives: local/remote
	// candidate types and protocol, e.g. "relay/host/tcp".
	Path string `json:"path"`
	// ArrivalP50/P95: capture to a frame's last packet at the viewer
	// (median over viewers of each one's percentile).
	ArrivalP50 float64 `json:"capture_to_arrival_ms_p50"`
	ArrivalP95 float64 `json:"capture_to_arrival_ms_p95"`
}

// benchOptions are a bench run's settings.
type benchOptions struct {
	endpoint, metricsURL, token string
	n, slow                     int
	slowBy, window              time.Duration
	iceServers                  []webrtc.ICEServer
	relayOnly                   bool
	client                      *http.Client
}

func benchViewers(ctx context.Context, o benchOptions) (benchReport, error) {
	endpoint, metricsURL, token, n, slow, slowBy, window := o.endpoint, o.metricsURL, o.token, o.n, o.slow, o.slowBy, o.window
	if o.client == nil {
		o.client = &http.Client{Timeout: 10 * time.Second}
	}
	rep := benchReport{Viewers: n, Throttled: slow, WindowS: window.Seconds()}
	// Baseline: the server with no viewers of ours (none to take when its
	// metrics are out of reach).
	a, err := scrape(ctx, o.client, metricsURL)
	if err != nil {
		return rep, err
	}
	if metricsURL != "" {
		if err := sleepCtx(ctx, window); err != nil {
			return rep, err
		}
	}
	b, err := scrape(ctx, o.client, metricsURL)
	if err != nil {
		return rep, err
	}
	rep.ServerCPUIdle = (b.cpuSeconds - a.cpuSeconds) / max(1e-9, b.at.Sub(a.at).Seconds())
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
			sessions[i], errs[i] = whepclient.Dial(ctx, endpoint, whepclient.Options{Token: token, HTTP: o.client,
				ICEServers: o.iceServers, RelayOnly: o.relayOnly})
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
	c, err := scrape(ctx, o.client, metricsURL)
	if err != nil {
		return rep, err
	}
	if err := sleepCtx(ctx, window); err != nil {
		return rep, err
	}
	d, err := scrape(ctx, o.client, metricsURL)
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
	var p50s, p95s []float64
	for _, s := range sessions[min(slow, n):] {
		if st := s.Stats(); st.ArrivalP50 > 0 {
			p50s = append(p50s, float64(st.ArrivalP50.Microseconds())/1000)
			p95s = append(p95s, float64(st.ArrivalP95.Microseconds())/1000)
		}
	}
	_, rep.ArrivalP50 = minMedian(p50s)
	_, rep.ArrivalP95 = minMedian(p95s)
	if n > 0 {
		local, remote, proto := sessions[0].Path()
		rep.Path = local + "/" + remote + "/" + proto
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
