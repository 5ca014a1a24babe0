package sip

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// TestBaresipCallsDisabledExtension has Debian's baresip dial a disabled
// extension through dialtone: it must authenticate (407), get the 183 with
// early media, then 486 Busy Here. Skipped without baresip (unless CI=true).
func TestBaresipCallsDisabledExtension(t *testing.T) {
	bin := baresipBinary(t)
	t.Parallel()
	e := newCallEnv(t, withAnnouncer(AnnouncerConfig{Announcement: shortAnnouncement(t)}))
	off, _ := e.addUser("1002")
	e.disable(off)
	u, pw := e.addUser("3101")
	for _, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			dir := t.TempDir()
			// No sound card: a sine source, a file player, G.711 only.
			config := "module_path /usr/lib/baresip/modules\nsip_listen 127.0.0.1:0\n" +
				"audio_source ausine,440\naudio_player aufile," + filepath.Join(dir, "play.wav") + "\naudio_alert aufile," + filepath.Join(dir, "alert.wav") + "\n" +
				"module g711.so\nmodule ausine.so\nmodule aufile.so\nmodule_app account.so\nmodule_app menu.so\n"
			outbound := "sip:" + e.addr(transport)
			if transport == "TCP" {
				outbound += ";transport=tcp"
			}
			account := "<sip:3101@" + testDomain + ">;auth_pass=" + pw + ";outbound=\"" + outbound + "\";regint=600;audio_codecs=PCMU,PCMA\n"
			for name, content := range map[string]string{"config": config, "accounts": account} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-f", dir, "-e", "/dial sip:1002@"+testDomain)
			var out lockedBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
			cmd.WaitDelay = 3 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				cancel()
				<-done
				if t.Failed() || testing.Verbose() {
					t.Logf("baresip output:\n%s", out.String())
				}
			}()
			var rec store.CallRecord
			waitFor(t, "a call from baresip recorded", func() bool {
				for _, r := range e.callRecords() {
					if r.From == "3101" && r.Transport == strings.ToLower(transport) {
						rec = r
					}
				}
				return rec.ID != ""
			})
			if rec.Outcome != store.OutcomeAnnouncedBusy || rec.Status != 486 || rec.FromUserID != u.ID {
				t.Errorf("record %+v, want announced_busy 486", rec)
			}
			out.awaitText(t, 20*time.Second, "baresip reports the busy response", "486 Busy Here")
			if s := out.String(); !strings.Contains(s, "183 Session Progress") || !strings.Contains(s, "incoming rtp for 'audio' established") {
				t.Errorf("baresip did not report the 183 Session Progress and the early media")
			}
		})
	}
}

// TestBaresipCallsBaresip: two baresip instances register; one calls the
// other through dialtone (the callee answers automatically), then hangs up
// on exit. Skipped without baresip (unless CI=true).
func TestBaresipCallsBaresip(t *testing.T) {
	bin := baresipBinary(t)
	t.Parallel()
	e := newCallEnv(t)
	ub, pwB := e.addUser("3202")
	_, pwA := e.addUser("3201")
	start := func(name, ext, pw, extra string, args ...string) (*lockedBuffer, *exec.Cmd, chan error) {
		dir := t.TempDir()
		config := "module_path /usr/lib/baresip/modules\nsip_listen 127.0.0.1:0\n" +
			"audio_source aufile," + filepath.Join(dir, "none.wav") + "\naudio_player aufile," + filepath.Join(dir, "play.wav") + "\n" +
			"module g711.so\nmodule aufile.so\nmodule_app account.so\nmodule_app menu.so\n"
		account := "<sip:" + ext + "@" + testDomain + ">;auth_pass=" + pw + ";outbound=\"sip:" + e.udpAddr + "\";regint=600;audio_codecs=PCMU" + extra + "\n"
		for n, content := range map[string]string{"config": config, "accounts": account, "none.wav": string(toneWAV(2 * time.Second))} {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(bin, append([]string{"-f", dir}, args...)...)
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.WaitDelay = 3 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("%s output:\n%s", name, out.String())
			}
		})
		return out, cmd, done
	}
	outB, _, _ := start("callee", "3202", pwB, ";answermode=auto")
	if _, ok := waitBinding(t, e.env, ub, 10*time.Second, nil); !ok {
		t.Fatal("callee did not register")
	}
	outA, cmdA, doneA := start("caller", "3201", pwA, "", "-e", "/dial sip:3202@"+testDomain)
	outA.awaitText(t, 20*time.Second, "caller's call established", "Call established")
	outB.awaitText(t, 20*time.Second, "callee's call established", "Call established")
	// On SIGTERM the caller hangs up (BYE through dialtone) and unregisters.
	cmdA.Process.Signal(syscall.SIGTERM)
	select {
	case <-doneA:
		doneA <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("caller did not exit")
	}
	outB.awaitText(t, 20*time.Second, "callee sees the hang-up", "session closed")
	// The BYE went through dialtone: the dialog is forgotten.
	waitFor(t, "dialog ended in dialtone", func() bool { return e.proxy.dialogs.len() == 0 })
	var rec store.CallRecord
	for _, r := range e.callRecords() {
		if r.From == "3201" {
			rec = r
		}
	}
	if rec.Outcome != store.OutcomeAnswered || rec.To != "3202" {
		t.Errorf("call record %+v, want answered", rec)
	}
}
