//go:build matprofile

package metrics

import "gocv.io/x/gocv"

// liveMats is the number of gocv Mats alive, in a binary built with the
// matprofile tag (a leak shows as a count that only grows).
func liveMats() (int, bool) { return gocv.MatProfile.Count(), true }
