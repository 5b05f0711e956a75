package capture

import (
	"context"
	"fmt"
)

func init() {
	register(Kind{
		Name:    "whip",
		Schemes: []string{"whip"},
		Usage:   "whip://: what a WHIP publisher (a tablet or laptop sharing the probe's app, OBS) sends to serve's POST /whip/{source}",
		Retry:   true,
		Open: func(ctx context.Context, t Target, opts Options) (Source, error) {
			if opts.Feed == nil {
				return nil, fmt.Errorf("%w %q: whip:// sources are published to `sonolive serve`", ErrBadSpec, t.Spec)
			}
			return opts.Feed.Open(ctx, opts)
		},
	})
}
