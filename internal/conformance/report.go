package conformance

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
)

// Row is one case in one mode, answered by every target.
type Row struct {
	Case    *Case
	Mode    Mode
	Results []Result // one per target, in the order of the targets
}

// RunAll runs every case in every mode against every target, parallel
// exchanges at a time, and returns the rows in case order.
func RunAll(ctx context.Context, targets []Target, cases []Case, parallel int) []Row {
	if parallel < 1 {
		parallel = 1
	}
	var rows []Row
	for i := range cases {
		for _, m := range Modes(&cases[i]) {
			rows = append(rows, Row{Case: &cases[i], Mode: m, Results: make([]Result, len(targets))})
		}
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for ri := range rows {
		for ti := range targets {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				r := &rows[ri]
				r.Results[ti] = Run(ctx, targets[ti], r.Case, r.Mode.Transport, r.Mode.Auth)
			}()
		}
	}
	wg.Wait()
	return rows
}

// Mismatches returns the rows where target ti's answer is not allowed.
func Mismatches(rows []Row, ti int) []Row {
	var out []Row
	for _, r := range rows {
		if !r.Results[ti].OK {
			out = append(out, r)
		}
	}
	return out
}

// WriteTable prints one line per row: the case, the mode, the answers the
// RFC allows, each target's answer (marked ✗ when not allowed) and, where
// the targets disagree or one is wrong, the clause that decides.
func WriteTable(w io.Writer, names []string, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"case", "tr", "cred", "expected"}
	head = append(head, names...)
	head = append(head, "decides")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range rows {
		cred := "no"
		if r.Mode.Auth {
			cred = "yes"
		}
		cols := []string{r.Case.Name, r.Mode.Transport, cred, strings.Join(r.Results[0].Expected(), "|")}
		differ, wrong := false, false
		for _, res := range r.Results {
			a := clip(res.Answer(), 34)
			if !res.OK {
				a = "✗ " + a
				wrong = true
			}
			if res.Got != r.Results[0].Got {
				differ = true
			}
			cols = append(cols, a)
		}
		decide := ""
		if differ || wrong {
			decide = r.Case.RFC
		}
		cols = append(cols, decide)
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i, n := range names {
		fmt.Fprintf(w, "%s: %d of %d answers as the RFC requires\n", n, len(rows)-len(Mismatches(rows, i)), len(rows))
	}
	return nil
}

func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
