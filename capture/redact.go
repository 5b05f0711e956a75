package capture

import (
	"net/url"
	"strings"
)

// Redact hides credentials in a source spec before it reaches a log, an
// error or a page: the user info (a password may itself hold '@') and the
// values of query parameters that carry secrets. A spec that does not parse
// as a URL loses its user info and its whole query.
func Redact(spec string) string {
	i := strings.Index(spec, "://")
	if i < 0 {
		return spec
	}
	scheme, rest := spec[:i+3], spec[i+3:]
	// The authority ends at the first '/', '?' or '#'; the user info is
	// everything before its last '@'.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		rest = "***@" + rest[at+1:]
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	if !hasQuery {
		return scheme + rest
	}
	query, frag, hasFrag := strings.Cut(query, "#")
	q, err := url.ParseQuery(query)
	if err != nil {
		return scheme + path + "?***"
	}
	for k := range q {
		if secretParam(k) {
			q[k] = []string{"***"}
		}
	}
	out := scheme + path + "?" + strings.ReplaceAll(q.Encode(), "%2A%2A%2A", "***")
	if hasFrag {
		out += "#" + frag
	}
	return out
}

// secretParam reports whether a query parameter's name says it carries a
// credential (camera URLs put them in many spellings).
func secretParam(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"pass", "pwd", "token", "secret", "key", "auth", "sig", "cred", "session"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return k == "user" || k == "username" || k == "login"
}
