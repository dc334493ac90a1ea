package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeSeries(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s.tps")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDraw draws two series: one polyline each with a point per parsed
// line (other lines skipped), a legend entry per name (escaped) and axes
// that reach the largest value.
func TestDraw(t *testing.T) {
	a, err := read("stock", writeSeries(t, "1 100\n2 250.5\nprogress garbage\n3 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := read("a<b", writeSeries(t, "1 90\n2 95\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.points) != 3 || a.points[1] != (point{2, 250.5}) {
		t.Fatalf("parsed %v", a.points)
	}
	var out strings.Builder
	if err := draw(&out, "t & t", "sub", "tps", []series{a, b}); err != nil {
		t.Fatal(err)
	}
	svg := out.String()
	if n := strings.Count(svg, "<polyline"); n != 2 {
		t.Fatalf("%d polylines, want 2", n)
	}
	first := svg[strings.Index(svg, `points="`)+8:]
	first = first[:strings.Index(first, `"`)]
	if n := len(strings.Fields(first)); n != 3 {
		t.Fatalf("first polyline has %d points, want 3: %q", n, first)
	}
	for _, want := range []string{">stock</text>", ">a&lt;b</text>", ">t &amp; t</text>", ">300</text>"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

// TestReadRejectsEmpty: a series without a single "<second> <value>" line
// is an error naming the file, not an empty chart.
func TestReadRejectsEmpty(t *testing.T) {
	p := writeSeries(t, "no numbers here\n")
	if _, err := read("x", p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("read of an empty series: %v", err)
	}
}

func TestNiceStep(t *testing.T) {
	for _, c := range []struct {
		span float64
		n    int
		want float64
	}{{90, 8, 20}, {694, 6, 200}, {1, 8, 0.2}, {0, 8, 1}} {
		if got := niceStep(c.span, c.n); got != c.want {
			t.Errorf("niceStep(%v, %d) = %v, want %v", c.span, c.n, got, c.want)
		}
	}
}
