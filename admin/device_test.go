package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dialtone-voip/dialtone/store"
)

// with returns a copy of e served by a second handler over the same store,
// built from e's options changed by f (e.g. to add a FetchWaiter).
func (e *env) with(f func(*Options)) *env {
	e.t.Helper()
	o := Options{DB: e.db, Log: slog.New(slog.NewJSONHandler(e.logs, nil)), Registry: e.reg, Notifier: e.notifier, Version: "test"}
	f(&o)
	h, err := NewHandler(o)
	if err != nil {
		e.t.Fatalf("NewHandler: %v", err)
	}
	e2 := *e
	e2.handler = h
	e2.srv = httptest.NewServer(h)
	e.t.Cleanup(e2.srv.Close)
	return &e2
}

// fakeWaiter stands in for the provisioning server: when fetch is set, the
// phone "fetches" at once (recorded on the device as the real server does);
// otherwise it never does and the wait times out.
type fakeWaiter struct {
	db    *store.DB
	fetch bool
	mu    sync.Mutex
	calls []string
}

func (w *fakeWaiter) WaitForFetch(ctx context.Context, acct, mac string, since time.Time) error {
	w.mu.Lock()
	w.calls = append(w.calls, acct+"/"+mac+"@"+since.UTC().Format(time.RFC3339))
	w.mu.Unlock()
	if w.fetch {
		return w.db.RecordFetch(store.Fetch{MAC: mac, Source: "192.0.2.7", UserAgent: "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc", Firmware: "66.86.0.15", Hash: "c0ffee"})
	}
	<-ctx.Done()
	return ctx.Err()
}

func (w *fakeWaiter) Calls() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.calls...)
}

// failingNotifier cannot deliver a check-sync.
type failingNotifier struct{}

func (failingNotifier) CheckSync(context.Context, string, string) error {
	return errors.New("no flow to the phone")
}

const yealinkUA = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc"

func TestDeviceCRUD(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	viewer := e.token("default", "viewer")
	ada := e.createUser("1002", "Ada Lovelace")
	grace := e.createUser("1003", "Grace Hopper")

	var d deviceJSON
	e.call("POST", base+"/devices", admin, map[string]any{"mac": "80:5E:C0:AA:BB:CC", "model": "sip-t31g", "label": "Front desk",
		"lines": []map[string]any{{"line": 2, "user_id": grace.ID}, {"line": 1, "user_id": ada.ID}}}, 201, &d)
	want := deviceJSON{MAC: "805ec0aabbcc", Model: "T31G", Label: "Front desk",
		Lines:     []deviceLineJSON{{Line: 1, UserID: ada.ID}, {Line: 2, UserID: grace.ID}},
		CreatedAt: "2026-11-23T09:00:00Z", UpdatedAt: "2026-11-23T09:00:00Z"}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Fatalf("created device (-want +got):\n%s", diff)
	}
	// Never provisioned: the last_* fields are null, not "".
	raw := string(e.call("GET", base+"/devices/805ec0aabbcc", viewer, nil, 200, nil))
	for _, f := range []string{`"last_provisioned_at":null`, `"last_source":null`, `"firmware":null`, `"last_user_agent":null`, `"last_config_hash":null`} {
		if !strings.Contains(raw, f) {
			t.Errorf("GET device %s lacks %s", raw, f)
		}
	}

	// Refusals name the field and change nothing.
	er := e.callErr("POST", base+"/devices", admin, `{"mac": "80:5e:c0:zz:bb:cd", "model": "T54W"}`, 400, "invalid")
	if er.Error.Field != "mac" || !strings.Contains(er.Error.Message, "mac") {
		t.Errorf("bad MAC: field %q message %q", er.Error.Field, er.Error.Message)
	}
	er = e.callErr("POST", base+"/devices", admin, map[string]any{"mac": "805ec0aabbcd", "model": "T31G",
		"lines": []map[string]any{{"line": 3, "user_id": ada.ID}}}, 400, "invalid")
	if er.Error.Field != "lines" || !strings.Contains(er.Error.Message, "lines") {
		t.Errorf("too many lines for a T31G: field %q message %q", er.Error.Field, er.Error.Message)
	}
	er = e.callErr("POST", base+"/devices", admin, `{"mac": "805ec0aabbcd", "model": "T99X"}`, 400, "invalid")
	if er.Error.Field != "model" {
		t.Errorf("unknown model: field %q", er.Error.Field)
	}
	e.callErr("POST", base+"/devices", admin, `{"mac": "805EC0AABBCC", "model": "T54W"}`, 409, "exists")
	e.callErr("POST", base+"/devices", viewer, `{"mac": "805ec0aabbcd", "model": "T54W"}`, 403, "forbidden")
	er = e.callErr("PATCH", base+"/devices/805ec0aabbcc", admin, map[string]any{"lines": []map[string]any{{"line": 1, "user_id": "u-nobody"}}}, 400, "invalid")
	if er.Error.Field != "lines" {
		t.Errorf("unknown user on a line: field %q", er.Error.Field)
	}

	var list deviceList
	e.call("GET", base+"/devices", viewer, nil, 200, &list)
	if len(list.Devices) != 1 || list.Devices[0].MAC != "805ec0aabbcc" {
		t.Errorf("list = %+v", list)
	}

	e.clock.Advance(time.Minute)
	e.call("PATCH", base+"/devices/80-5e-c0-aa-bb-cc", admin, `{"label": "Reception", "lines": [{"line": 1, "user_id": "`+grace.ID+`"}]}`, 200, &d)
	if d.Label != "Reception" || d.Model != "T31G" || len(d.Lines) != 1 || d.Lines[0].UserID != grace.ID || d.UpdatedAt != "2026-11-23T09:01:00Z" {
		t.Errorf("PATCH = %+v", d)
	}
	// A T30 has one line: line 2 does not fit.
	er = e.callErr("PATCH", base+"/devices/805ec0aabbcc", admin, `{"model": "T30", "lines": [{"line": 1, "user_id": "`+ada.ID+`"}, {"line": 2, "user_id": "`+grace.ID+`"}]}`, 400, "invalid")
	if er.Error.Field != "lines" {
		t.Errorf("model change with too many lines: field %q", er.Error.Field)
	}
	e.call("PATCH", base+"/devices/805ec0aabbcc", admin, `{}`, 200, &d)
	if d.Label != "Reception" {
		t.Errorf("empty PATCH changed the device: %+v", d)
	}

	// What the provisioning server records shows up.
	if err := e.db.RecordFetch(store.Fetch{MAC: "805ec0aabbcc", Source: "192.0.2.7", UserAgent: yealinkUA, Firmware: "66.86.0.15", Hash: "c0ffee"}); err != nil {
		t.Fatal(err)
	}
	e.call("GET", base+"/devices/805ec0aabbcc", viewer, nil, 200, &d)
	if d.LastProvisionedAt == nil || *d.LastProvisionedAt != "2026-11-23T09:01:00Z" || *d.LastSource != "192.0.2.7" ||
		*d.Firmware != "66.86.0.15" || *d.LastUserAgent != yealinkUA || *d.LastConfigHash != "c0ffee" {
		t.Errorf("after a fetch = %+v", d)
	}

	if status, body := e.do("DELETE", base+"/devices/805ec0aabbcc", admin, nil); status != 204 || len(body) != 0 {
		t.Fatalf("DELETE = %d %s", status, body)
	}
	e.callErr("GET", base+"/devices/805ec0aabbcc", viewer, nil, 404, "not_found")
	e.callErr("DELETE", base+"/devices/805ec0aabbcc", admin, nil, 404, "not_found")
	e.callErr("GET", base+"/devices/not-a-mac", viewer, nil, 404, "not_found")
}

func TestDeviceResync(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	ada := e.createUser("1002", "Ada Lovelace")
	e.call("POST", base+"/devices", admin, map[string]any{"mac": "001565aabbcc", "model": "T46S", "lines": []map[string]any{{"line": 1, "user_id": ada.ID}}}, 201, nil)
	path := base + "/devices/001565aabbcc/resync"

	// No SIP side: 503; no registration to NOTIFY: 409.
	e.with(func(o *Options) { o.Notifier = nil }).callErr("POST", path, admin, nil, 503, "sip_unavailable")
	er := e.callErr("POST", path, admin, nil, 409, "device_not_registered")
	if !strings.Contains(er.Error.Message, "001565aabbcc") {
		t.Errorf("message %q does not name the device", er.Error.Message)
	}
	e.callErr("POST", base+"/devices/001565aabbdd/resync", admin, nil, 404, "not_found")
	e.callErr("POST", path+"?timeout=61", admin, nil, 400, "invalid")
	e.callErr("POST", path, e.token("default", "viewer"), nil, 403, "forbidden")
	if calls := e.notifier.Calls(); len(calls) != 0 {
		t.Fatalf("check-syncs sent by refused resyncs: %v", calls)
	}

	e.register(ada.ID, "sip:1002@192.0.2.7:5062", yealinkUA)

	// Without a FetchWaiter: sent, not waited for.
	var r resyncJSON
	e.call("POST", path, admin, nil, 200, &r)
	if !r.Sent || r.Waited || r.Fetched || r.Registrations != 1 || r.Device.MAC != "001565aabbcc" {
		t.Errorf("resync = %+v", r)
	}
	if diff := cmp.Diff([]string{"default/001565aabbcc"}, e.notifier.Calls()); diff != "" {
		t.Errorf("check-syncs (-want +got):\n%s", diff)
	}

	// The phone fetches: fetched, and the device shows it.
	w := &fakeWaiter{db: e.db, fetch: true}
	e.with(func(o *Options) { o.FetchWaiter = w }).call("POST", path, admin, nil, 200, &r)
	if !r.Sent || !r.Waited || !r.Fetched || r.TimeoutS != 10 || r.Device.LastProvisionedAt == nil || *r.Device.LastConfigHash != "c0ffee" {
		t.Errorf("resync with a fetch = %+v", r)
	}
	if diff := cmp.Diff([]string{"default/001565aabbcc@2026-11-23T09:00:00Z"}, w.Calls()); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}

	// The phone never fetches: the wait ends at the timeout.
	silent := e.with(func(o *Options) { o.FetchWaiter = &fakeWaiter{db: e.db} })
	silent.call("POST", path+"?timeout=0.05", admin, nil, 200, &r)
	if !r.Sent || !r.Waited || r.Fetched || r.TimeoutS != 0.05 {
		t.Errorf("resync without a fetch = %+v", r)
	}
	silent.call("POST", path+"?timeout=0", admin, nil, 200, &r)
	if !r.Sent || r.Waited || r.Fetched {
		t.Errorf("resync with timeout=0 = %+v", r)
	}

	// The SIP side cannot send it: 502.
	e.with(func(o *Options) { o.Notifier = failingNotifier{} }).callErr("POST", path, admin, nil, 502, "check_sync_failed")
}
