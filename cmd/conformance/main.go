// Command conformance sends the SIP conformance message set
// (sip/testdata/conformance) over UDP and TCP, with and without digest
// credentials, to one or more running SIP servers and prints one table:
// each message, the answer the RFC requires, each server's answer, and the
// clause that decides where they differ (`make conformance` runs it against
// dialtone and Kamailio).
//
//	conformance -target name=dialtone,udp=127.0.0.1:5060,tcp=127.0.0.1:5060,users-file=users.csv \
//	            -target name=kamailio,udp=127.0.0.1:5070,tcp=127.0.0.1:5070,domain=bench.test,user=3001,password=pw-3001
//
// A target's user comes from user=/password=/domain= or from the first row
// of a users-file (CSV user,password,domain as written by `sipload
// provision`), which keeps a real password out of process listings. The
// exit status is 1 when the target named by -fail-on answers any message
// other than the RFC requires.
package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/dialtone-voip/dialtone/internal/conformance"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	code, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		if code == 0 {
			code = 2
		}
	}
	os.Exit(code)
}

type targetFlags []conformance.Target

func (f *targetFlags) String() string { return fmt.Sprint(len(*f), " targets") }

func (f *targetFlags) Set(s string) error {
	t, err := parseTarget(s)
	if err != nil {
		return err
	}
	*f = append(*f, t)
	return nil
}

func parseTarget(s string) (conformance.Target, error) {
	var t conformance.Target
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return t, fmt.Errorf("target %q: %q is not key=value", s, kv)
		}
		switch k {
		case "name":
			t.Name = v
		case "udp":
			t.UDP = v
		case "tcp":
			t.TCP = v
		case "addr":
			t.UDP, t.TCP = v, v
		case "domain":
			t.Domain = v
		case "user":
			t.User = v
		case "password":
			t.Password = v
		case "contact":
			t.Contact = v
		case "users-file":
			if err := readUsersFile(v, &t); err != nil {
				return t, err
			}
		default:
			return t, fmt.Errorf("target %q: unknown key %q", s, k)
		}
	}
	switch {
	case t.Name == "":
		return t, fmt.Errorf("target %q: no name=", s)
	case t.UDP == "" && t.TCP == "":
		return t, fmt.Errorf("target %q: no udp=, tcp= or addr=", s)
	case t.Domain == "" || t.User == "":
		return t, fmt.Errorf("target %q: no domain= and user= (or users-file=)", s)
	}
	return t, nil
}

// readUsersFile takes the first user of a CSV with the header
// user,password,domain.
func readUsersFile(path string, t *conformance.Target) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(rows) < 2 || len(rows[1]) < 3 {
		return fmt.Errorf("%s: want a header user,password,domain and at least one row", path)
	}
	t.User, t.Password, t.Domain = rows[1][0], rows[1][1], rows[1][2]
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var targets targetFlags
	fs.Var(&targets, "target", "a server to test: name=N,udp=HOST:PORT,tcp=HOST:PORT (or addr=),domain=D,user=U,password=P (or users-file=CSV); repeatable")
	dir := fs.String("dir", "sip/testdata/conformance", "directory of the *.sip cases")
	only := fs.String("run", "", "only cases whose name contains this")
	parallel := fs.Int("parallel", 16, "exchanges in flight")
	timeout := fs.Duration("timeout", 2*time.Second, "wait for a final answer")
	silence := fs.Duration("silence", 500*time.Millisecond, "how long a case that expects no answer listens")
	wait := fs.Duration("wait", 0, "first wait up to this long for every target to answer an OPTIONS over UDP and TCP")
	failOn := fs.String("fail-on", "", "exit 1 if this target answers any case other than the RFC requires")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	if len(targets) == 0 {
		return 2, errors.New("no -target")
	}
	cases, err := conformance.Load(*dir)
	if err != nil {
		return 2, err
	}
	if *only != "" {
		var keep []conformance.Case
		for _, c := range cases {
			if strings.Contains(c.Name, *only) {
				keep = append(keep, c)
			}
		}
		cases = keep
	}
	names := make([]string, len(targets))
	failIdx := -1
	for i := range targets {
		targets[i].Timeout, targets[i].Silence = *timeout, *silence
		names[i] = targets[i].Name
		if targets[i].Name == *failOn {
			failIdx = i
		}
	}
	if *failOn != "" && failIdx < 0 {
		return 2, fmt.Errorf("-fail-on %q names no target", *failOn)
	}

	if *wait > 0 {
		if err := waitAlive(ctx, targets, *wait); err != nil {
			return 2, err
		}
	}
	rows := conformance.RunAll(ctx, targets, cases, *parallel)
	if err := conformance.WriteTable(stdout, names, rows); err != nil {
		return 2, err
	}
	for i, t := range targets {
		for _, tr := range []string{"udp", "tcp"} {
			if !t.Serves(tr) {
				continue
			}
			if err := conformance.Alive(ctx, t, tr); err != nil {
				fmt.Fprintf(stdout, "%s: NOT ALIVE after the set: %v\n", names[i], err)
			}
		}
	}
	for i, n := range names {
		bad := conformance.Mismatches(rows, i)
		if len(bad) == 0 {
			continue
		}
		fmt.Fprintf(stdout, "\n%s answers other than the RFC requires:\n", n)
		for _, r := range bad {
			res := r.Results[i]
			cred := "without credentials"
			if r.Mode.Auth {
				cred = "with credentials"
			}
			fmt.Fprintf(stdout, "  %s over %s %s: got %q, want %s (%s)\n", r.Case.Name, strings.ToUpper(r.Mode.Transport), cred,
				res.Answer(), strings.Join(res.Expected(), "|"), r.Case.RFC)
		}
	}
	if failIdx >= 0 && len(conformance.Mismatches(rows, failIdx)) > 0 {
		return 1, nil
	}
	return 0, nil
}

// waitAlive polls every target until it answers on each of its transports.
func waitAlive(ctx context.Context, targets []conformance.Target, d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, t := range targets {
		t.Timeout = 200 * time.Millisecond
		for _, tr := range []string{"udp", "tcp"} {
			if !t.Serves(tr) {
				continue
			}
			for {
				err := conformance.Alive(ctx, t, tr)
				if err == nil {
					break
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					return fmt.Errorf("%s over %s did not answer within %v: %v", t.Name, tr, d, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	return nil
}
