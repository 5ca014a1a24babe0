package sip

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// TestLinphoneInterop drives a second, independent SIP stack — Debian's
// linphone-cli (linphonec: liblinphone and belle-sip, nothing shared with
// sipgo or baresip's libre) — headless over its stdin, over UDP and over
// TCP:
//   - it registers with digest auth (the binding carries its User-Agent and
//     transport);
//   - it calls a registered baresip (auto-answer) through dialtone: both sides
//     report the call established, linphone hangs up, baresip sees the BYE,
//     and the call record says answered;
//   - it dials a disabled extension: 407, then 183 with the announcement as
//     early media (linphone counts the RTP packets it received), then 486;
//   - on quit it unregisters and the binding is gone.
//
// Skipped without linphonec or baresip, unless CI=true (.ci/run installs
// both). No sound card: linphonec plays and records files ("soundcard use
// files").
func TestLinphoneInterop(t *testing.T) {
	lbin := linphoneBinary(t)
	bbin := baresipBinary(t)
	t.Parallel()
	e := newCallEnv(t, withAnnouncer(AnnouncerConfig{Announcement: shortAnnouncement(t)}))
	off, _ := e.addUser("1002")
	e.disable(off)
	for i, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			callee, calleePW := e.addUser(fmt.Sprintf("34%d2", i))
			caller, callerPW := e.addUser(fmt.Sprintf("34%d1", i))

			bout := startBaresipCallee(t, bbin, e, callee.Extension, calleePW)
			if _, ok := waitBinding(t, e.env, callee, 10*time.Second, nil); !ok {
				t.Fatal("baresip (callee) did not register within 10 s")
			}

			lp := startLinphone(t, lbin, e.env, transport, caller.Extension, callerPW)
			b, ok := waitBinding(t, e.env, caller, 10*time.Second, lp.done)
			if !ok {
				t.Fatal("linphone did not register within 10 s")
			}
			if !strings.Contains(b.UserAgent, "Linphone") || b.Transport != strings.ToLower(transport) {
				t.Errorf("linphone's binding = %+v, want a Linphone user agent over %s", b, transport)
			}

			// linphone → dialtone → baresip, answered, then hung up by linphone.
			callee1 := "sip:" + callee.Extension + "@" + testDomain
			lp.send("call " + callee1)
			lp.waitOutput(t, "linphone's call to baresip connected", regexp.MustCompile(`Call \d+ with `+regexp.QuoteMeta(callee1)+` connected`))
			bout.awaitText(t, 20*time.Second, "baresip reports the call established", "Call established")
			lp.send("terminate")
			bout.awaitText(t, 20*time.Second, "baresip sees linphone's BYE", "session closed")
			waitFor(t, "dialtone forgets the dialog", func() bool { return e.proxy.dialogs.len() == 0 })
			rec := lastCallFrom(t, e, caller.Extension, callee.Extension)
			if rec.Outcome != store.OutcomeAnswered || rec.Transport != strings.ToLower(transport) {
				t.Errorf("call record %+v, want answered over %s", rec, strings.ToLower(transport))
			}

			// linphone → a disabled extension: 183 + announcement, then 486.
			disabled := "sip:1002@" + testDomain
			lp.send("call " + disabled)
			lp.waitOutput(t, "linphone reports early media", regexp.MustCompile(`Call \d+ with `+regexp.QuoteMeta(disabled)+` early media`))
			lp.waitOutput(t, "linphone reports the call failed", regexp.MustCompile(`Call \d+ with `+regexp.QuoteMeta(disabled)+` (error|ended)`))
			rec = lastCallFrom(t, e, caller.Extension, "1002")
			if rec.Outcome != store.OutcomeAnnouncedBusy || rec.Status != 486 {
				t.Errorf("call record %+v, want announced_busy 486", rec)
			}
			// Only what follows the INVITE to the disabled extension counts
			// (the call to baresip had its own 407 and RTP).
			log := lp.log()
			i := strings.Index(log, "INVITE "+disabled)
			if i < 0 {
				t.Fatalf("linphone's log has no INVITE to %s", disabled)
			}
			log = log[i:]
			for _, want := range []string{"SIP/2.0 407 ", "SIP/2.0 183 ", "SIP/2.0 486 Busy Here"} {
				if !strings.Contains(log, want) {
					t.Errorf("linphone's log has no %q", want)
				}
			}
			if n := rtpReceived(log); n == 0 {
				t.Errorf("linphone received no RTP packets of the announcement")
			} else {
				t.Logf("linphone received %d RTP packets of the announcement", n)
			}

			// On quit linphone unregisters (Expires: 0).
			lp.quit(t)
			if bs := e.bindings(caller); len(bs) != 0 {
				t.Errorf("bindings after linphone's unregister = %+v, want none", bs)
			}
		})
	}
}

// linphone is a running linphonec fed commands over its stdin.
type linphone struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *lockedBuffer
	dir   string
	done  chan error
}

// startLinphone starts linphonec registering ext over transport ("UDP" or
// "TCP") to e, with random SIP and RTP ports, no sound card, no video and no
// media encryption; every request goes through dialtone (reg_route).
func startLinphone(t *testing.T, bin string, e *env, transport, ext, password string) *linphone {
	t.Helper()
	dir := t.TempDir()
	// liblinphone keeps a database under $HOME; without the directory the
	// core never leaves its start-up state (and never opens a SIP port).
	if err := os.MkdirAll(filepath.Join(dir, ".local", "share", "linphone"), 0o700); err != nil {
		t.Fatal(err)
	}
	udpPort, tcpPort := -1, 0
	if transport == "TCP" {
		udpPort, tcpPort = 0, -1
	}
	proxy := e.addr(transport) + ";transport=" + strings.ToLower(transport)
	rc := fmt.Sprintf(`[sip]
sip_port=%d
sip_tcp_port=%d
sip_tls_port=0
default_proxy=0
register_only_when_network_is_up=0
media_encryption=none
ipv6=0
[net]
mtu=1300
[sound]
echocancellation=0
[rtp]
audio_rtp_port=-1
video_rtp_port=-1
text_rtp_port=-1
[video]
automatically_initiate=0
automatically_accept=0
capture=0
display=0
[proxy_0]
reg_proxy=<sip:%s>
reg_route=<sip:%s;lr>
reg_identity=sip:%s@%s
reg_expires=600
reg_sendregister=1
publish=0
[auth_info_0]
username=%s
passwd=%s
realm=%s
domain=%s
`, udpPort, tcpPort, proxy, proxy, ext, testDomain, ext, password, testDomain, testDomain)
	rcPath := filepath.Join(dir, "linphonerc")
	if err := os.WriteFile(rcPath, []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	// -d 6 -l: the full log (SIP messages, RTP statistics) goes to a file
	// the test reads; stdout has linphonec's call state lines.
	cmd := exec.Command(bin, "-c", rcPath, "-d", "6", "-l", filepath.Join(dir, "linphone.log"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, ".local", "share"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, ".config"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	lp := &linphone{cmd: cmd, stdin: stdin, out: &lockedBuffer{}, dir: dir, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = lp.out, lp.out
	cmd.WaitDelay = 3 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { lp.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-lp.done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-lp.done
			}
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("linphonec output:\n%s", lp.out.String())
		}
		if t.Failed() {
			t.Logf("linphone log (SIP and media), last 12 KiB:\n%s", lastBytes(lp.log(), 12<<10))
		}
	})
	lp.send("soundcard use files")
	return lp
}

func (lp *linphone) send(line string) {
	_, _ = io.WriteString(lp.stdin, line+"\n")
}

func (lp *linphone) log() string {
	b, _ := os.ReadFile(filepath.Join(lp.dir, "linphone.log"))
	return string(b)
}

// waitOutput waits until linphonec's stdout matches re (checked on each
// write; 20 s at most).
func (lp *linphone) waitOutput(t *testing.T, what string, re *regexp.Regexp) {
	t.Helper()
	lp.out.await(t, 20*time.Second, what, func(out string) bool {
		select {
		case err := <-lp.done:
			lp.done <- err
			t.Fatalf("linphonec exited while waiting for: %s (%v)", what, err)
		default:
		}
		return re.MatchString(out)
	})
}

// quit asks linphonec to exit (it unregisters first) and waits for it.
func (lp *linphone) quit(t *testing.T) {
	t.Helper()
	lp.send("quit")
	select {
	case err := <-lp.done:
		lp.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("linphonec did not exit within 10 s of quit")
	}
}

// startBaresipCallee starts a baresip that registers ext over UDP and
// answers every call (no sound card: file source and player).
func startBaresipCallee(t *testing.T, bin string, e *callEnv, ext, password string) *lockedBuffer {
	t.Helper()
	dir := t.TempDir()
	config := "module_path /usr/lib/baresip/modules\nsip_listen 127.0.0.1:0\n" +
		"audio_source aufile," + filepath.Join(dir, "tone.wav") + "\naudio_player aufile," + filepath.Join(dir, "play.wav") + "\n" +
		"module g711.so\nmodule aufile.so\nmodule_app account.so\nmodule_app menu.so\n"
	account := "<sip:" + ext + "@" + testDomain + ">;auth_pass=" + password + ";outbound=\"sip:" + e.udpAddr +
		"\";regint=600;audio_codecs=PCMU,PCMA;answermode=auto\n"
	for n, content := range map[string]string{"config": config, "accounts": account, "tone.wav": string(toneWAV(2 * time.Second))} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-f", dir)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 3 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("baresip (callee) output:\n%s", out.String())
		}
	})
	return out
}

// lastCallFrom polls for the newest call record from → to (records are
// written after the final response).
func lastCallFrom(t *testing.T, e *callEnv, from, to string) store.CallRecord {
	t.Helper()
	var rec store.CallRecord
	waitFor(t, "call record "+from+" → "+to, func() bool {
		for _, r := range e.callRecords() { // newest first
			if r.From == from && r.To == to && r.Outcome != "" {
				rec = r
				return true
			}
		}
		return false
	})
	return rec
}

var rtpReceivedRE = regexp.MustCompile(`ortp-message-received\s+(\d+) packets`)

// rtpReceived sums the RTP packets oRTP reports received in its end-of-
// stream statistics.
func rtpReceived(log string) int {
	n := 0
	for _, m := range rtpReceivedRE.FindAllStringSubmatch(log, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// linphoneBinary returns the path of Debian's linphonec (package
// linphone-cli), skipping the test when it is missing — except in CI
// (CI=true), where .ci/run installs it and its absence is a failure.
func linphoneBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("linphonec")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("linphonec not installed (CI=true): %v", err)
		}
		t.Skip("linphonec not installed; apt-get install linphone-cli")
	}
	return bin
}
