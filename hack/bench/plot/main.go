// Command plot draws per-second throughput series as one SVG line chart:
// the benchmarks under hack/bench use it to show each arm's transactions
// per second over a run (the dips after every checkpoint).
//
//	plot -title "pgbench" -o out.svg stock=stock.tps direct=direct.tps
//
// Each series file holds "<second> <tps>" lines (other lines are skipped).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

type point struct{ t, v float64 }

type series struct {
	name   string
	points []point
}

// colors for the arms in order: distinguishable, and readable in grey.
var colors = []string{"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

func main() {
	title := flag.String("title", "", "chart title")
	subtitle := flag.String("subtitle", "", "a smaller second title line")
	out := flag.String("o", "", "output SVG file (default: stdout)")
	ylabel := flag.String("ylabel", "transactions per second", "y axis label")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "plot: give one or more NAME=FILE series")
		os.Exit(2)
	}
	var all []series
	for _, arg := range flag.Args() {
		name, path, ok := strings.Cut(arg, "=")
		if !ok || name == "" || path == "" {
			fmt.Fprintf(os.Stderr, "plot: %q is not NAME=FILE\n", arg)
			os.Exit(2)
		}
		s, err := read(name, path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "plot:", err)
			os.Exit(1)
		}
		all = append(all, s)
	}
	w := io.Writer(os.Stdout)
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "plot:", err)
			os.Exit(1)
		}
		defer f.Close()
		w = f
	}
	if err := draw(w, *title, *subtitle, *ylabel, all); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

// read parses the "<second> <value>" lines of path.
func read(name, path string) (series, error) {
	f, err := os.Open(path)
	if err != nil {
		return series{}, err
	}
	defer f.Close()
	s := series{name: name}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 2 {
			continue
		}
		t, err1 := strconv.ParseFloat(fl[0], 64)
		v, err2 := strconv.ParseFloat(fl[1], 64)
		if err1 != nil || err2 != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		s.points = append(s.points, point{t, v})
	}
	if err := sc.Err(); err != nil {
		return series{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(s.points) == 0 {
		return series{}, fmt.Errorf("%s: no \"<second> <value>\" lines", path)
	}
	return s, nil
}

// niceStep is a 1, 2 or 5 times a power of ten step that cuts span into
// about n intervals.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func draw(w io.Writer, title, subtitle, ylabel string, all []series) error {
	const width, height = 900.0, 440.0
	const left, right, top, bottom = 70.0, 150.0, 60.0, 50.0
	pw, ph := width-left-right, height-top-bottom
	var tmax, vmax float64
	for _, s := range all {
		for _, p := range s.points {
			tmax = math.Max(tmax, p.t)
			vmax = math.Max(vmax, p.v)
		}
	}
	xstep, ystep := niceStep(tmax, 8), niceStep(vmax, 6)
	tmax = math.Ceil(tmax/xstep) * xstep
	vmax = math.Ceil(vmax/ystep) * ystep
	if tmax == 0 {
		tmax = 1
	}
	if vmax == 0 {
		vmax = 1
	}
	x := func(t float64) float64 { return left + t/tmax*pw }
	y := func(v float64) float64 { return top + ph - v/vmax*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="15">%s</text>`+"\n", left, html.EscapeString(title))
	if subtitle != "" {
		fmt.Fprintf(&b, `<text x="%.0f" y="42" fill="#444">%s</text>`+"\n", left, html.EscapeString(subtitle))
	}
	for v := 0.0; v <= vmax+ystep/2; v += ystep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), left+pw, y(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, strconv.FormatFloat(v, 'f', -1, 64))
	}
	for t := 0.0; t <= tmax+xstep/2; t += xstep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", x(t), top, x(t), top+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x(t), top+ph+16, strconv.FormatFloat(t, 'f', -1, 64))
	}
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">seconds</text>`+"\n", left+pw/2, height-12)
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+ph/2, html.EscapeString(ylabel))
	for i, s := range all {
		c := colors[i%len(colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="`, c)
		for j, p := range s.points {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", x(p.t), y(p.v))
		}
		b.WriteString(`"/>` + "\n")
		ly := top + 10 + float64(i)*20
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", left+pw+12, ly, left+pw+36, ly, c)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", left+pw+42, ly+4, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
