package capture

import "testing"

func BenchmarkPhantomRender(b *testing.B) {
	for _, geom := range []string{"linear", "sector"} {
		b.Run(geom, func(b *testing.B) {
			cfg := DefaultPhantom()
			cfg.Geometry = geom
			p := NewPhantom(cfg)
			defer p.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.Render(uint64(i + 1)).Close()
			}
		})
	}
}
