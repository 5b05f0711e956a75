// Package ui serves the embedded web pages: the sonographer's live page
// and the expert's consultation page, plain HTML/CSS/JS with no build step.
// static/vendor holds livekit-client's ES module, which scripts/setup.sh
// fetches from npm (checked by its sha256), for the watch page.
// The pages talk to the server over WHEP, the WebSocket and the JSON API
// (docs/streaming.md, docs/recording.md); they carry no secrets, so serving them needs no
// token: every call they make does.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Handler serves /live/{source}, /expert/{source}, /watch/{source} (through
// LiveKit), /publish/{source}, /library/{source},
// /replay/{id}, /static/* and a short index page.
func Handler() http.Handler {
	static, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			// Pages change with the binary; never serve a stale one
			// after an upgrade.
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("Referrer-Policy", "no-referrer") // the token is in the URL
			http.ServeFileFS(w, r, static, name)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /live/{source}", page("live.html"))
	mux.HandleFunc("GET /expert/{source}", page("expert.html"))
	mux.HandleFunc("GET /watch/{source}", page("watch.html"))
	mux.HandleFunc("GET /publish/{source}", page("publish.html"))
	mux.HandleFunc("GET /library/{source}", page("library.html"))
	mux.HandleFunc("GET /replay/{id}", page("replay.html"))
	mux.HandleFunc("GET /{$}", page("index.html"))
	return mux
}
