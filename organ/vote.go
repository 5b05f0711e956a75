package organ

// Rule is when the guard warns: the mean probability of one organ other
// than the preset's, over the last Window samples, reaches Warn with at
// least MinSamples taken since the preset was set; the warning clears when
// that mean falls below Clear (hysteresis, so a warning does not flicker
// while the probe moves).
type Rule struct {
	Window     int
	MinSamples int
	Warn       float64
	Clear      float64
}

// DefaultRule is the rule measured on held-out clips and frames
// (models/README.md, "Organ guard"): at one sample a second, a sonographer
// who starts a breast exam on a thyroid is told within about five seconds.
func DefaultRule() Rule { return Rule{Window: 5, MinSamples: 5, Warn: 0.8, Clear: 0.5} }

// vote is the running decision over recent samples for one preset.
type vote struct {
	rule    Rule
	names   []string
	preset  string
	samples [][]float32 // ring of the last rule.Window samples
	next    int
	taken   int
	warned  string // the organ warned about, "" when none
}

func newVote(rule Rule, names []string, preset string) *vote {
	return &vote{rule: rule, names: names, preset: preset, samples: make([][]float32, 0, max(1, rule.Window))}
}

func (v *vote) add(p []float32) {
	if len(p) != len(v.names) {
		return
	}
	if len(v.samples) < cap(v.samples) {
		v.samples = append(v.samples, p)
	} else {
		v.samples[v.next] = p
		v.next = (v.next + 1) % len(v.samples)
	}
	v.taken++
	v.decide()
}

// mean is each organ's mean probability over the window.
func (v *vote) mean() []float64 {
	m := make([]float64, len(v.names))
	for _, p := range v.samples {
		for i, x := range p {
			m[i] += float64(x)
		}
	}
	for i := range m {
		if len(v.samples) > 0 {
			m[i] /= float64(len(v.samples))
		}
	}
	return m
}

// decide updates warned. Only an organ the guard knows a preset for can be
// warned about: "other" (a phantom, a lung, an empty probe) is no reason to
// change the preset.
func (v *vote) decide() {
	m := v.mean()
	if v.warned != "" {
		if i := v.index(v.warned); i < 0 || m[i] < v.rule.Clear {
			v.warned = ""
		}
		if v.warned != "" {
			return
		}
	}
	if v.taken < v.rule.MinSamples || v.index(v.preset) < 0 {
		return
	}
	for i, name := range v.names {
		if name != v.preset && name != Other && m[i] >= v.rule.Warn {
			v.warned = name
		}
	}
}

func (v *vote) index(name string) int {
	for i, n := range v.names {
		if n == name {
			return i
		}
	}
	return -1
}

// seen is the organ with the highest mean probability and that mean.
func (v *vote) seen() (string, float64) {
	m := v.mean()
	best, bi := -1.0, -1
	for i, x := range m {
		if x > best {
			best, bi = x, i
		}
	}
	if bi < 0 || len(v.samples) == 0 {
		return "", 0
	}
	return v.names[bi], best
}
