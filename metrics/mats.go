//go:build !matprofile

package metrics

// liveMats is unknown without the matprofile build tag.
func liveMats() (int, bool) { return 0, false }
