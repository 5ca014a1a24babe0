package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	dir := t.TempDir()
	csv := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(csv, []byte("user,password,domain\n7000,s3cret,example.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg, err := parseTarget("name=d,udp=127.0.0.1:1,tcp=127.0.0.1:2,users-file=" + csv)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Name != "d" || tg.UDP != "127.0.0.1:1" || tg.TCP != "127.0.0.1:2" || tg.User != "7000" || tg.Password != "s3cret" || tg.Domain != "example.test" {
		t.Errorf("parseTarget = %+v", tg)
	}
	tg, err = parseTarget("name=k,addr=127.0.0.1:3,domain=a.test,user=1,password=pw-1")
	if err != nil || tg.UDP != "127.0.0.1:3" || tg.TCP != tg.UDP {
		t.Errorf("parseTarget(addr=) = %+v, %v", tg, err)
	}
	for _, bad := range []string{"udp=127.0.0.1:1,domain=a,user=1", "name=x,domain=a,user=1", "name=x,addr=h:1", "name=x,addr=h:1,domain=a,user=1,colour=red", "name=x,addr"} {
		if _, err := parseTarget(bad); err == nil {
			t.Errorf("parseTarget(%q) accepted", bad)
		}
	}
}

// A target nobody listens on: every case gets no answer, the table says
// so, and -fail-on makes the exit status 1.
func TestRunNoServer(t *testing.T) {
	var out, errb bytes.Buffer
	code, err := run(context.Background(), []string{"-dir", "../../sip/testdata/conformance", "-run", "217-", "-timeout", "200ms",
		"-target", "name=nobody,udp=127.0.0.1:9,domain=a.test,user=1,password=p", "-fail-on", "nobody"}, &out, &errb)
	if err != nil || code != 1 {
		t.Fatalf("run = %d, %v (stderr %s)", code, err, errb.String())
	}
	if s := out.String(); !strings.Contains(s, "217-cseq-method-mismatch") || !strings.Contains(s, "✗ none") || !strings.Contains(s, "nobody: 0 of") {
		t.Errorf("table:\n%s", s)
	}
}
