package capture

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
)

// Kind is one kind of source: the schemes its specs use and how to open
// one. Each kind registers itself from its own file, so a new kind is one
// new file; what every kind shares (the common query parameters, retrying
// a dropped live source, the region crop, the name) is applied around it
// by Open.
type Kind struct {
	// Name is what errors and the help call the kind.
	Name string
	// Schemes are the spec schemes it answers to ("v4l2" for v4l2://…).
	Schemes []string
	// Usage is one line of help: an example spec and what it opens.
	Usage string
	// Sniff claims a plain file path by what the file holds (a DICOM file
	// needs no extension); nil when only the schemes reach the kind.
	Sniff func(path string) bool
	// RemoteQuery: the spec's query belongs to the far end (a camera's
	// stream URL) and is passed on untouched, not read as options.
	RemoteQuery bool
	// Retry: a live source that can drop (a device, a network peer);
	// with Options.Reconnect it is reopened with backoff when it does.
	Retry bool
	// Open opens one source. The first open's error is the caller's: a
	// missing device is reported at once, never retried.
	Open func(ctx context.Context, t Target, opts Options) (Source, error)
}

// Target is a spec taken apart for the kind that opens it.
type Target struct {
	// Spec is the spec as given; it may hold credentials (Redact it).
	Spec string
	// URL is the parsed spec; nil for plain paths and gst: pipelines.
	URL *url.URL
	// Path is the file, device or pipeline: the URL's host and path, a
	// plain path as given, or what follows "gst:".
	Path string
	// Query holds the parameters the kind reads itself (the common ones
	// are already in Options).
	Query url.Values
}

// registry maps schemes to kinds. It is filled by the kinds' init
// functions, before main runs, and only read after.
var registry = struct {
	byScheme map[string]*Kind
	sniffers []*Kind
}{byScheme: map[string]*Kind{}}

// register adds a kind; a scheme taken twice is a programming error.
func register(k Kind) {
	if k.Name == "" || k.Open == nil || (len(k.Schemes) == 0 && k.Sniff == nil) {
		panic("capture: incomplete source kind " + k.Name)
	}
	kp := &k
	for _, s := range k.Schemes {
		if prev, ok := registry.byScheme[s]; ok {
			panic(fmt.Sprintf("capture: scheme %q registered by %s and %s", s, prev.Name, k.Name))
		}
		registry.byScheme[s] = kp
	}
	if k.Sniff != nil {
		registry.sniffers = append(registry.sniffers, kp)
	}
}

// Kinds lists the registered kinds by name, for help text.
func Kinds() []Kind {
	seen := map[*Kind]bool{}
	var out []Kind
	for _, k := range registry.byScheme {
		if !seen[k] {
			seen[k] = true
			out = append(out, *k)
		}
	}
	for _, k := range registry.sniffers {
		if !seen[k] {
			seen[k] = true
			out = append(out, *k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// parseSpec finds the kind a spec names. Besides scheme://… specs it
// takes the short forms people type: a plain file path (a kind that
// sniffs the file may claim it, else it is a video file), /dev/videoN and
// gst:pipeline.
func parseSpec(spec string) (*Kind, Target, error) {
	spec = strings.TrimSpace(spec)
	t := Target{Spec: spec, Query: url.Values{}}
	switch {
	case spec == "":
		return nil, t, fmt.Errorf("%w: empty", ErrBadSpec)
	case strings.HasPrefix(spec, "gst:"):
		t.Path = strings.TrimSpace(strings.TrimPrefix(spec, "gst:"))
		return kindFor("gst", spec, t)
	case strings.HasPrefix(spec, "/dev/video"):
		t.Path = spec
		return kindFor("v4l2", spec, t)
	}
	if !strings.Contains(spec, "://") {
		path, q, err := parsePlainPath(spec)
		if err != nil {
			return nil, t, err
		}
		t.Path, t.Query = path, q
		for _, k := range registry.sniffers {
			if k.Sniff(path) {
				return k, t, nil
			}
		}
		return kindFor("file", spec, t)
	}
	u, err := url.Parse(spec)
	if err != nil {
		// url.Error repeats the raw URL, credentials and all: keep only
		// what is wrong with it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, t, fmt.Errorf("%w %q: %w", ErrBadSpec, Redact(spec), err)
	}
	k, ok := registry.byScheme[u.Scheme]
	if !ok {
		return nil, t, fmt.Errorf("%w %q: unknown scheme %q", ErrBadSpec, Redact(spec), u.Scheme)
	}
	t.URL, t.Path = u, u.Host+u.Path
	if !k.RemoteQuery {
		t.Query = u.Query()
	}
	return k, t, nil
}

func kindFor(scheme, spec string, t Target) (*Kind, Target, error) {
	k, ok := registry.byScheme[scheme]
	if !ok {
		return nil, t, fmt.Errorf("%w %q: no %s support in this build", ErrBadSpec, Redact(spec), scheme)
	}
	return k, t, nil
}

// parsePlainPath reads "clip.mp4?loop=1" as the file clip.mp4 with its
// query, as the doc of Open promises for every spec, unless a file of that
// whole name exists: a name may really contain "?".
func parsePlainPath(spec string) (string, url.Values, error) {
	i := strings.LastIndexByte(spec, '?')
	if i < 0 {
		return spec, url.Values{}, nil
	}
	if _, err := os.Stat(spec); err == nil {
		return spec, url.Values{}, nil
	}
	q, err := url.ParseQuery(spec[i+1:])
	if err != nil {
		return "", nil, fmt.Errorf("%w %q: query: %w", ErrBadSpec, Redact(spec), err)
	}
	return spec[:i], q, nil
}
